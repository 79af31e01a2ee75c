//! GTID set parse, union and contains on large sets: MySQL with 1,000 intervals under
//! one source, MariaDB with 100 domains.

use criterion::{criterion_group, criterion_main, Criterion};
use multiaz_engine::GtidSet;
use std::hint::black_box;

fn mysql_text(offset: u64) -> String {
    let runs: Vec<String> = (0..1000)
        .map(|i| format!("{}-{}", i * 10 + 1 + offset, i * 10 + 5 + offset))
        .collect();
    format!("3e11fa47-71ca-11e1-9e33-c80aa9429563:{}", runs.join(":"))
}

fn mariadb_text(extra: u64) -> String {
    (0..100)
        .map(|d| format!("{d}-{}-{}", d + 1, 1000 + d * 7 + extra))
        .collect::<Vec<_>>()
        .join(",")
}

fn gtid(c: &mut Criterion) {
    let (m1, m2) = (mysql_text(0), mysql_text(3));
    let (d1, d2) = (mariadb_text(0), mariadb_text(5));
    let mut g = c.benchmark_group("gtid");
    g.bench_function("mysql parse 1000 intervals", |b| {
        b.iter(|| GtidSet::parse_any(black_box(&m1)).unwrap())
    });
    g.bench_function("mariadb parse 100 domains", |b| {
        b.iter(|| GtidSet::parse_any(black_box(&d1)).unwrap())
    });
    let (a, b2) = (
        GtidSet::parse_any(&m1).unwrap(),
        GtidSet::parse_any(&m2).unwrap(),
    );
    g.bench_function("mysql union 1000 intervals", |b| {
        b.iter(|| black_box(&a).union(black_box(&b2)).unwrap())
    });
    let u = a.union(&b2).unwrap();
    g.bench_function("mysql contains 1000 intervals", |b| {
        b.iter(|| black_box(&u).contains(black_box(&a)))
    });
    let (x, y) = (
        GtidSet::parse_any(&d1).unwrap(),
        GtidSet::parse_any(&d2).unwrap(),
    );
    g.bench_function("mariadb union 100 domains", |b| {
        b.iter(|| black_box(&x).union(black_box(&y)).unwrap())
    });
    g.bench_function("mariadb contains 100 domains", |b| {
        b.iter(|| black_box(&y).contains(black_box(&x)))
    });
    g.finish();
}

criterion_group!(benches, gtid);
criterion_main!(benches);
