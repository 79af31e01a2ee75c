//! Engine input throughput: every input one node's engine received during a recorded
//! failover (the in-process harness of the engine's tests: a partition isolates the
//! master, a replica takes over, everything heals), fed again to a fresh engine.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use multiaz_engine::{Engine, NodeId, Time};
use multiaz_testkit::harness::{spec, Sim};
use std::time::Duration;

fn recorded_failover() -> Sim {
    let mut sim = Sim::started(spec());
    sim.run_for(Duration::from_millis(700));
    sim.isolate(NodeId(1));
    sim.run_for(Duration::from_secs(15));
    sim.heal();
    sim.run_for(Duration::from_secs(3));
    assert_eq!(sim.promotions().len(), 1, "the trace must hold a failover");
    sim
}

fn replay(c: &mut Criterion) {
    let sim = recorded_failover();
    // The new master's inputs: it took part in the whole failover.
    let id = sim.promotions()[0].2;
    let inputs = sim.nodes[&id].inputs.clone();
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(inputs.len() as u64));
    g.bench_function("replay a failover trace (inputs/s)", |b| {
        b.iter(|| {
            let mut engine = Engine::new(sim.spec.clone(), id, None, Time::ZERO).unwrap();
            let mut commands = 0usize;
            for (t, input) in &inputs {
                engine.handle(*t, input.clone());
                commands += engine.take_commands().len();
            }
            commands
        })
    });
    g.finish();
}

criterion_group!(benches, replay);
criterion_main!(benches);
