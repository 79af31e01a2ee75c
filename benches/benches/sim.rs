//! Simulation speed: simulated seconds per wall second for the `mixed` scenario.
//! Criterion times whole runs; the ratio is printed from the runs' own reports.

use criterion::{criterion_group, criterion_main, Criterion};
use multiaz_engine::Flavour;
use multiaz_sim::run::{run, RunConfig};
use multiaz_sim::scenario::Scenario;
use std::time::Duration;

fn sim(c: &mut Criterion) {
    let config = |seed| RunConfig {
        scenario: Scenario::Mixed,
        seed,
        flavour: Flavour::Mariadb,
        duration: Duration::from_secs(120),
        sabotage: None,
        log_limit: None,
        vip_mode: multiaz_engine::VipMode::Route,
    };
    let (mut sim_s, mut wall_s) = (0.0, 0.0);
    let mut seed = 0u64;
    let mut g = c.benchmark_group("sim");
    g.sample_size(10);
    g.bench_function("mixed scenario, one seed", |b| {
        b.iter(|| {
            seed += 1;
            let r = run(&config(seed));
            sim_s += r.sim_seconds;
            wall_s += r.wall_seconds;
            r.trace_hash
        })
    });
    g.finish();
    if wall_s > 0.0 {
        println!(
            "sim: {:.1} simulated seconds per wall second (mixed, {seed} runs)",
            sim_s / wall_s
        );
    }
}

criterion_group!(benches, sim);
criterion_main!(benches);
