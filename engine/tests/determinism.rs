//! Same inputs, same commands: the engine is a function of what it is fed.

use multiaz_engine::*;
use multiaz_testkit::harness::{spec, Sim};
use std::time::Duration;

fn failover_run() -> Sim {
    let mut sim = Sim::started(spec());
    sim.hold_io(NodeId(3), true);
    sim.run_for(Duration::from_millis(700));
    sim.isolate(NodeId(1));
    sim.run_for(Duration::from_secs(15));
    sim.heal();
    sim.hold_io(NodeId(3), false);
    sim.run_for(Duration::from_secs(3));
    sim
}

#[test]
fn the_same_scenario_twice_gives_the_same_trace() {
    let a = failover_run();
    let b = failover_run();
    assert!(
        a.promotions().len() == 1,
        "the scenario must contain a failover"
    );
    assert_eq!(a.trace(), b.trace());
    assert_eq!(a.acked, b.acked);
}

#[test]
fn a_recorded_input_sequence_fed_twice_gives_identical_commands() {
    let sim = failover_run();
    for id in sim.ids() {
        let node = &sim.nodes[&id];
        let recorded: Vec<String> = sim
            .commands
            .iter()
            .filter(|(_, by, _)| *by == id)
            .map(|(t, _, c)| format!("{t:?} {c:?}"))
            .collect();
        assert!(recorded.len() > 100, "{id} issued too little to compare");
        for _ in 0..2 {
            let mut engine = Engine::new(sim.spec.clone(), id, None, Time::ZERO).unwrap();
            let mut replayed = Vec::new();
            for (t, input) in &node.inputs {
                engine.handle(*t, input.clone());
                replayed.extend(
                    engine
                        .take_commands()
                        .into_iter()
                        .map(|c| format!("{t:?} {c:?}")),
                );
            }
            assert_eq!(replayed, recorded, "{id} replayed differently");
        }
    }
}
