//! The raft log folded into snapshots of the record: a node cut off while the others
//! compact catches up from the coordinator's snapshot, and a node restarts from a
//! stored snapshot and the entries after it — on the in-process harness, with a log
//! limit of four entries.

use multiaz_engine::*;
use multiaz_testkit::harness::{spec, Sim};
use std::time::Duration;

const LIMIT: u64 = 4;

fn limit_logs(sim: &mut Sim) {
    for node in sim.nodes.values_mut() {
        if let Some(e) = node.engine.as_mut() {
            e.set_log_limit(LIMIT);
        }
    }
}

fn compacted(sim: &Sim, n: NodeId) -> bool {
    sim.events
        .iter()
        .any(|(_, by, e)| *by == n && matches!(e, Event::LogCompacted { .. }))
}

#[test]
fn a_node_cut_off_while_the_log_is_compacted_catches_up_from_a_snapshot_and_restarts_from_its_own()
{
    let mut sim = Sim::started(spec());
    limit_logs(&mut sim);
    let coordinator = sim.coordinator().expect("a coordinator");
    let master = sim.record(coordinator).master;
    let away = sim
        .ids()
        .into_iter()
        .find(|n| *n != coordinator && Some(*n) != master)
        .expect("a third node");
    sim.isolate(away);
    // Eleven entries while it is away, ending paused: its record then differs.
    for i in 0..11 {
        let req = match i % 2 {
            0 => OperatorRequest::Pause,
            _ => OperatorRequest::Resume,
        };
        sim.operator(coordinator, req);
        sim.run_for(Duration::from_millis(300));
    }
    assert!(sim.record(coordinator).paused);
    assert!(
        !sim.record(away).paused,
        "the node cut off has not seen the entries"
    );
    assert!(compacted(&sim, coordinator), "{}", sim.trace());
    let snapshot = sim.nodes[&coordinator]
        .durable
        .snapshot
        .clone()
        .expect("the coordinator's state holds its snapshot");
    let kept = sim.nodes[&coordinator].durable.entries.len() as u64;
    assert!(
        kept <= LIMIT,
        "{kept} entries kept past the snapshot at {}",
        snapshot.index
    );
    assert!(snapshot.index > LIMIT, "{snapshot:?}");

    // The first snapshot sent is lost: the coordinator sends it again, in its term.
    sim.lose_snapshots = 1;
    let term = sim.engine(coordinator).status().term;
    sim.heal();
    let caught_up = sim.run_until(Duration::from_secs(10), |s| {
        s.record(away) == s.record(coordinator)
    });
    assert_eq!(sim.lose_snapshots, 0, "a snapshot was sent and lost");
    assert_eq!(
        sim.engine(coordinator).status().term,
        term,
        "no new election"
    );
    assert!(caught_up, "{}", sim.trace());
    assert!(
        sim.events
            .iter()
            .any(|(_, by, e)| *by == away && matches!(e, Event::SnapshotInstalled { .. })),
        "it caught up from a snapshot, not from entries: {}",
        sim.trace()
    );
    assert!(
        sim.nodes[&away].durable.snapshot.is_some(),
        "and wrote the snapshot down"
    );

    // Both restart from what they wrote: a snapshot and the entries after it.
    for n in [away, coordinator] {
        sim.crash_sidecar(n);
        sim.run_for(Duration::from_millis(200));
        sim.restart_sidecar(n);
    }
    let same = sim.run_until(Duration::from_secs(10), |s| {
        s.ids()
            .into_iter()
            .all(|n| s.record(n) == s.record(coordinator) && s.record(n).paused)
            // A restarted master is writable again once a round is granted.
            && s.writable().len() == 1
    });
    assert!(same, "{}", sim.trace());
    assert!(sim.two_writers_fenceable.is_empty());
    assert!(sim.writable().len() == 1, "{:?}", sim.writable());
}

#[test]
fn a_stored_snapshot_past_the_commit_index_is_refused() {
    let sim = Sim::started(spec());
    let mut state = sim.nodes[&NodeId(1)].durable.clone();
    state.snapshot = Some(StoredSnapshot {
        index: state.hard_state.commit + 1,
        term: state.hard_state.term,
        voters: vec![1, 2, 3],
        record: serde_json::to_vec(sim.record(NodeId(1))).unwrap(),
    });
    state.entries.clear();
    let e = Engine::new(spec(), NodeId(1), Some(&state), Time::ZERO)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("past the commit index"), "{e}");
    // The control: the same snapshot at the commit index starts.
    state.snapshot.as_mut().unwrap().index = state.hard_state.commit;
    assert!(Engine::new(spec(), NodeId(1), Some(&state), Time::ZERO).is_ok());
}
