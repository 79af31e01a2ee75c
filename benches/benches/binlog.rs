//! Binlog framing (CRC32 of every event) and GTID scan throughput in bytes per second,
//! on a 64 MiB binlog generated from the MariaDB fixture. The 1 GiB comparison with
//! `mariadb-binlog` is `cargo bench -p multiaz-sidecar --bench binlog_tail`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use multiaz_binlog::{count, synth, Framer, ScanOptions};
use std::path::Path;

const SIZE: u64 = 64 << 20;

fn binlog(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("multiaz-bench-binlog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("binlog.000001");
    let template = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sidecar/tests/fixtures/mariadb-10.11.000001");
    let mut out = Vec::with_capacity(SIZE as usize + (1 << 20));
    synth::write(&template, SIZE, &mut out).unwrap();
    std::fs::write(&file, &out).unwrap();
    let mut g = c.benchmark_group("binlog");
    g.throughput(Throughput::Bytes(out.len() as u64));
    g.sample_size(20);
    g.bench_function("framing + CRC32 (in memory)", |b| {
        b.iter(|| {
            let mut f = Framer::new(out.as_slice()).unwrap();
            let mut n = 0u64;
            while let Some(frame) = f.next_frame().unwrap() {
                n += frame.bytes.len() as u64;
            }
            n
        })
    });
    g.bench_function("transactions scan (file)", |b| {
        b.iter(|| {
            let (n, end) = count(std::slice::from_ref(&file), &ScanOptions::default());
            assert!(end.damage.is_none());
            n
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, binlog);
criterion_main!(benches);
