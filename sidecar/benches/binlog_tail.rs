//! `multiaz binlog tail` against `mariadb-binlog` on the same large binlog (1 GiB by
//! default; MULTIAZ_BENCH_BINLOG_BYTES to change it), both as processes writing to
//! /dev/null, plus the reader as a library call (framing, CRC32 of every event, GTID
//! scan): throughput in bytes per second.
//!
//! The binlog is made from the MariaDB 10.11 fixture (sidecar/tests/fixtures) by
//! repeating its transactions, renumbered, with positions and checksums recomputed;
//! it is written once under target/bench-data/. Run: `cargo bench -p multiaz-sidecar
//! --bench binlog_tail` (needs `mariadb-binlog`, from Debian's mariadb-client).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use multiaz_binlog::{count, synth, ScanOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn binlog(bytes: u64) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data");
    let dir = root.join(format!("binlog-{bytes}"));
    let file = dir.join("binlog.000001");
    if std::fs::metadata(&file).is_ok_and(|m| m.len() >= bytes) {
        return dir;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let template =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mariadb-10.11.000001");
    eprintln!("writing a {bytes}-byte binlog to {} ...", file.display());
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    let n = synth::write(&template, bytes, &mut out).unwrap();
    drop(out);
    std::fs::write(dir.join("binlog.index"), "./binlog.000001\n").unwrap();
    eprintln!("{n} transactions");
    dir
}

fn find(program: &str) -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/bin"])
    {
        let p = Path::new(dir).join(program);
        if p.is_file() {
            return p;
        }
    }
    panic!("{program} not found: install Debian's mariadb-client");
}

fn run(cmd: &mut Command) {
    let status = cmd.stdout(Stdio::null()).status().expect("runs");
    assert!(status.success(), "{cmd:?}: {status}");
}

fn tail_vs_mariadb_binlog(c: &mut Criterion) {
    let bytes: u64 = std::env::var("MULTIAZ_BENCH_BINLOG_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let dir = binlog(bytes);
    let file = dir.join("binlog.000001");
    let len = std::fs::metadata(&file).unwrap().len();
    let mariadb_binlog = find("mariadb-binlog");
    let mut g = c.benchmark_group(format!("binlog_tail_{}MiB", len >> 20));
    g.throughput(Throughput::Bytes(len));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.bench_function("multiaz binlog tail", |b| {
        b.iter(|| {
            run(Command::new(env!("CARGO_BIN_EXE_multiaz"))
                .args(["binlog", "tail", "--after", ""])
                .arg("--dir")
                .arg(&dir))
        })
    });
    g.bench_function("mariadb-binlog", |b| {
        b.iter(|| run(Command::new(&mariadb_binlog).arg(&file)))
    });
    g.bench_function("scan (library)", |b| {
        b.iter(|| {
            let (n, end) = count(std::slice::from_ref(&file), &ScanOptions::default());
            assert!(end.damage.is_none());
            n
        })
    });
    g.finish();
}

criterion_group!(benches, tail_vs_mariadb_binlog);
criterion_main!(benches);
