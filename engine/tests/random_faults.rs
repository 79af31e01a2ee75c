//! Random fault plans against the in-process cluster: safety always, liveness after heal.
//! proptest draws the plan, so a failure shrinks to a small plan and prints it.

use multiaz_engine::*;
use multiaz_testkit::harness::{spec, Sim};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use std::time::Duration;

#[derive(Debug, Clone)]
enum Fault {
    KillMysqld(u64),
    CrashHost(u64),
    RestartMysqld(u64),
    CrashSidecar(u64),
    RestartSidecar(u64),
    Isolate(u64),
    CutBoth(u64, u64),
    Heal,
    HoldIo(u64, bool),
}

fn fault() -> impl Strategy<Value = Fault> {
    let n = 1u64..=3;
    prop_oneof![
        3 => n.clone().prop_map(Fault::KillMysqld),
        1 => n.clone().prop_map(Fault::CrashHost),
        1 => n.clone().prop_map(Fault::RestartMysqld),
        2 => n.clone().prop_map(Fault::CrashSidecar),
        2 => n.clone().prop_map(Fault::RestartSidecar),
        2 => n.clone().prop_map(Fault::Isolate),
        2 => (n.clone(), n.clone()).prop_filter("two nodes", |(a, b)| a != b).prop_map(|(a, b)| Fault::CutBoth(a, b)),
        2 => Just(Fault::Heal),
        2 => (n, any::<bool>()).prop_map(|(a, b)| Fault::HoldIo(a, b)),
    ]
}

fn plan() -> impl Strategy<Value = Vec<(u64, Fault)>> {
    prop::collection::vec((0u64..8000, fault()), 1..5)
}

fn run(plan: &[(u64, Fault)]) -> Result<(), TestCaseError> {
    let mut sim = Sim::started(spec());
    let mut plan = plan.to_vec();
    plan.sort_by_key(|(t, _)| *t);
    let start = sim.now;
    for (at, f) in &plan {
        let when = start + Duration::from_millis(*at);
        if when > sim.now {
            sim.run_for(when.since(sim.now));
        }
        match *f {
            Fault::KillMysqld(n) => sim.kill_mysqld(NodeId(n)),
            Fault::CrashHost(n) => sim.crash_host(NodeId(n)),
            Fault::RestartMysqld(n) => sim.restart_mysqld(NodeId(n)),
            Fault::CrashSidecar(n) => sim.crash_sidecar(NodeId(n)),
            Fault::RestartSidecar(n) => {
                if sim.nodes[&NodeId(n)].engine.is_none() && sim.nodes[&NodeId(n)].host_up {
                    sim.restart_sidecar(NodeId(n))
                }
            }
            Fault::Isolate(n) => sim.isolate(NodeId(n)),
            Fault::CutBoth(a, b) => sim.cut_both(NodeId(a), NodeId(b)),
            Fault::Heal => sim.heal(),
            Fault::HoldIo(n, h) => sim.hold_io(NodeId(n), h),
        }
    }
    sim.run_for(Duration::from_secs(20));
    // Heal: the network, every sidecar, every IO thread. Dead mysqlds stay dead.
    sim.heal();
    for id in sim.ids() {
        sim.hold_io(id, false);
        if sim.nodes[&id].engine.is_none() && sim.nodes[&id].host_up {
            sim.restart_sidecar(id);
        }
    }
    let acked_at_heal = sim.acked.len();
    let live = sim.run_until(Duration::from_secs(40), |s| {
        s.acked.len() > acked_at_heal + 10
    });
    // A master whose sidecar is down (or just restarted) cannot fence itself yet, so
    // two servers may be writable at once then; what must never happen is two that can
    // acknowledge writes, two writable while both sidecars have run long enough to
    // fence, or acknowledgements from two servers taking turns.
    prop_assert!(
        sim.two_ackers.is_empty(),
        "split brain: {:?}",
        &sim.two_ackers[..1]
    );
    prop_assert!(
        sim.two_writers_fenceable.is_empty(),
        "two writable with running sidecars: {:?}",
        &sim.two_writers_fenceable[..1]
    );
    let interleaved = sim.interleaved_acks();
    prop_assert!(
        interleaved.is_empty(),
        "acknowledgements from two servers taking turns at {:?}",
        &interleaved[..1]
    );
    // Every host crashed for good: nothing left to judge but safety, checked above.
    let Some(witness) = sim
        .ids()
        .into_iter()
        .find(|id| sim.nodes[id].engine.is_some())
    else {
        return Ok(());
    };
    let record = sim.record(witness).clone();
    if let Some(m) = record.master {
        if sim.nodes[&m].mysqld.alive {
            let lost = sim.lost_acked(m);
            if !lost.is_empty() && std::env::var("MULTIAZ_TRACE").is_ok() {
                for (t, n, e) in &sim.events {
                    eprintln!("{t:?} {n} {e:?}");
                }
                for (t, n, c) in &sim.commands {
                    if matches!(c, Command::Mysql { .. } | Command::Salvage { .. }) {
                        eprintln!("{t:?} {n} {c:?}");
                    }
                }
            }
            prop_assert!(
                lost.is_empty(),
                "acknowledged writes lost on {}: {:?}",
                m,
                lost
            );
        }
    }
    // No errant transaction on any live server the record does not keep out, attached
    // to the master or not.
    if let Some(m) = record.master.filter(|m| sim.nodes[m].mysqld.alive) {
        let master = &sim.nodes[&m].mysqld.executed;
        for id in sim.ids() {
            let node = &sim.nodes[&id];
            if id == m || !node.mysqld.alive || record.quarantined.contains_key(&id) {
                continue;
            }
            let errant = multiaz_testkit::harness::errant(&node.mysqld.executed, master);
            prop_assert!(
                errant.is_empty(),
                "{} holds transactions not in master {}'s history: {:?}",
                id,
                m,
                errant
            );
        }
    }
    // Writes are acknowledged only with a replica attached (semi-sync, no async
    // fallback), and a server with errant transactions rightly stays out: liveness is
    // owed when two live servers without errant transactions remain.
    let errant: Vec<NodeId> = sim
        .events
        .iter()
        .filter_map(|(_, _, e)| match e {
            Event::ErrantTransactions { node, .. } => Some(*node),
            _ => None,
        })
        .collect();
    let usable = sim
        .ids()
        .into_iter()
        .filter(|id| sim.nodes[id].mysqld.alive && !errant.contains(id))
        .count();
    if usable >= 2 {
        prop_assert!(
            live,
            "no writes within 40 s after heal; record {:?}, writable {:?}",
            record,
            sim.writable()
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("MULTIAZ_FAULT_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96), failure_persistence: None,
        // A fixed seed keeps CI repeatable; PROPTEST_RNG_SEED=<n> explores other plans.
        rng_seed: RngSeed::Fixed(std::env::var("PROPTEST_RNG_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x006d_756c_7469_617a)),
        ..ProptestConfig::default() })]

    #[test]
    fn safety_always_and_writes_resume_after_heal(plan in plan()) {
        run(&plan)?;
    }
}

// Plans that once failed, kept as regression tests.

#[test]
fn regression_old_master_restarted_after_two_mysqlds_died() {
    run(&[
        (0, Fault::KillMysqld(2)),
        (0, Fault::KillMysqld(1)),
        (1006, Fault::RestartMysqld(1)),
    ])
    .unwrap();
}

#[test]
fn regression_candidate_sidecar_dead_then_candidate_isolated() {
    // Promoted while its sidecar was down, then cut off: writable but unable to
    // acknowledge; never two servers that can acknowledge.
    run(&[
        (0, Fault::KillMysqld(1)),
        (0, Fault::CrashSidecar(2)),
        (1031, Fault::Isolate(2)),
    ])
    .unwrap();
}

#[test]
fn regression_replica_skipped_by_the_failover_is_reattached_after_heal() {
    run(&[(0, Fault::Isolate(2)), (0, Fault::KillMysqld(1))]).unwrap();
}

// Negative controls: each split-brain check above fires when its condition holds.

#[test]
fn control_two_writable_with_running_sidecars_is_caught() {
    let mut sim = Sim::started(spec());
    sim.run_for(Duration::from_secs(5));
    assert!(sim.two_writers_fenceable.is_empty());
    // A replica made writable behind its sidecar's back, both sidecars long running:
    // the check fires at once, before the sidecar's next probe fences it.
    sim.nodes.get_mut(&NodeId(2)).unwrap().mysqld.read_only = false;
    sim.run_for(Duration::from_millis(20));
    assert!(
        !sim.two_writers_fenceable.is_empty(),
        "{:?}",
        sim.writable()
    );
}

#[test]
fn control_errant_transactions_are_caught() {
    let mut sim = Sim::started(spec());
    sim.run_for(Duration::from_secs(5));
    let master = sim.nodes[&NodeId(1)].mysqld.executed.clone();
    assert!(
        multiaz_testkit::harness::errant(&sim.nodes[&NodeId(2)].mysqld.executed, &master)
            .is_empty()
    );
    // A transaction n2 wrote itself, which the master never had.
    let seq = sim.nodes[&NodeId(2)].mysqld.executed.seq(0) + 1;
    let mine = &mut sim.nodes.get_mut(&NodeId(2)).unwrap().mysqld.executed;
    mine.insert(0, 2, seq, seq);
    let errant = multiaz_testkit::harness::errant(&sim.nodes[&NodeId(2)].mysqld.executed, &master);
    assert_eq!(errant, vec![(2, seq)]);
}

#[test]
fn control_acknowledgements_taking_turns_are_caught() {
    let mut sim = Sim::started(spec());
    sim.run_for(Duration::from_secs(5));
    assert!(sim.interleaved_acks().is_empty(), "one writer so far");
    // n2 acknowledges one write among n1's: two writers taking turns.
    let i = sim.ack_log.len() - 3;
    let (t, first) = sim.ack_log[i];
    sim.ack_log[i].1 = NodeId(if first == NodeId(2) { 1 } else { 2 });
    assert_eq!(
        sim.interleaved_acks().len(),
        1,
        "one write at {t:?} by another server"
    );
}

// Known limitation, found by wider searches (PROPTEST_RNG_SEED=11 and 12, 300 cases):
// semi-sync keeps an acknowledged write on two servers, so losing both at once can
// lose it. Here the replica that acknowledged it loses its mysqld (its host and disk
// live on) while the master is lost too; the write is then on no server the failover
// can reach. MHA reads such a replica's relay log from its disk; multiaz does not yet.
// These tests fail when that changes, so that the limitation is not kept by mistake.

#[test]
#[should_panic(expected = "acknowledged writes lost")]
fn known_limitation_acker_mysqld_dies_then_master_host_crashes() {
    run(&[
        (0, Fault::Isolate(2)),
        (46, Fault::KillMysqld(3)),
        (991, Fault::CrashHost(1)),
    ])
    .unwrap();
}

#[test]
#[should_panic(expected = "acknowledged writes lost")]
fn known_limitation_acker_mysqld_dies_as_master_is_isolated() {
    run(&[
        (0, Fault::HoldIo(3, true)),
        (0, Fault::KillMysqld(2)),
        (0, Fault::Isolate(1)),
    ])
    .unwrap();
}
