//! The operator's days: planned switchover, anti-flapping block and ack, hooks and
//! their vetoes — on the in-process harness.

use multiaz_engine::*;
use multiaz_testkit::harness::{spec, spec_with, Sim};
use std::time::Duration;

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);

fn settled_on(sim: &Sim, m: NodeId) -> bool {
    sim.ids().into_iter().all(|id| {
        sim.nodes[&id]
            .engine
            .as_ref()
            .is_none_or(|e| e.record().master == Some(m) && e.record().failover.is_none())
    })
}

fn follower(sim: &Sim) -> NodeId {
    let c = sim.coordinator().unwrap();
    *sim.ids().iter().find(|n| **n != c).unwrap()
}

fn refusals(sim: &Sim) -> Vec<String> {
    sim.events
        .iter()
        .filter_map(|(_, _, e)| match e {
            Event::SwitchoverRefused { why, .. } => Some(why.clone()),
            _ => None,
        })
        .collect()
}

fn no_split_brain(sim: &Sim) {
    assert!(sim.two_writers.is_empty(), "{:?}", sim.two_writers);
    assert!(sim.two_ackers.is_empty(), "{:?}", sim.two_ackers);
}

/// Lets every sidecar report a few times so that lag and liveness are known.
fn warm(sim: &mut Sim) {
    sim.run_for(Duration::from_secs(3));
}

#[test]
fn a_switchover_moves_the_master_and_the_old_one_replicates_from_the_new() {
    let mut sim = Sim::started(spec());
    warm(&mut sim);
    let acked_before = sim.acked.len();
    // Asked of a follower: the coordinator carries it out.
    let asked = follower(&sim);
    sim.operator(asked, OperatorRequest::Switchover { to: N2 });
    assert!(
        sim.run_until(Duration::from_secs(10), |s| settled_on(s, N2)),
        "switchover did not complete: {:?}",
        sim.record(N1)
    );
    assert!(
        sim.run_until(Duration::from_secs(5), |s| s.nodes[&N1].mysqld.source
            == Some(N2)
            && s.nodes[&N3].mysqld.source == Some(N2))
    );
    assert!(
        sim.nodes[&N1].mysqld.read_only,
        "the old master is a replica"
    );
    assert!(sim.routes.values().all(|t| *t == N2), "{:?}", sim.routes);
    let record = sim.record(N3).clone();
    let last = record.journal.last().unwrap();
    assert!(last.planned, "{last:?}");
    assert!(matches!(last.outcome, Outcome::Completed(_)), "{last:?}");
    assert!(
        record.quarantined.is_empty(),
        "a demoted master is not a failed one"
    );
    assert_eq!(record.epoch, 2);
    // Writes went on, none lost.
    let acked_at = sim.acked.len();
    sim.run_for(Duration::from_secs(2));
    assert!(sim.acked.len() > acked_at && acked_at > acked_before);
    assert!(sim.lost_acked(N2).is_empty(), "{:?}", sim.lost_acked(N2));
    no_split_brain(&sim);
    // The hooks ran on the coordinator, before and after, with the details.
    let points: Vec<HookPoint> = sim.hooks.iter().map(|h| h.2.point).collect();
    assert_eq!(
        points,
        [HookPoint::PreSwitchover, HookPoint::PostSwitchover],
        "{:?}",
        sim.hooks
    );
    let post = &sim.hooks[1].2;
    assert_eq!(
        (post.epoch, post.old_master, post.new_master, post.success),
        (2, Some(N1), Some(N2), Some(true))
    );
    assert!(post.positions.contains_key(&N2), "{post:?}");
    assert!(post.duration_ms.is_some());
    // No automatic failover block after a planned switchover.
    assert_eq!(sim.engine(N2).status().failover_blocked_until_wall_ms, None);
}

#[test]
fn a_switchover_is_refused_with_a_reason_and_changes_nothing() {
    let mut sim = Sim::started(spec_with(
        [
            PromotionRule::Neutral,
            PromotionRule::Neutral,
            PromotionRule::Never,
        ],
        None,
    ));
    warm(&mut sim);
    let cases = [
        (N1, "already the master"),
        (N3, "never"),
        (NodeId(9), "not a member"),
    ];
    for (to, why) in cases {
        let before = refusals(&sim).len();
        sim.operator(N2, OperatorRequest::Switchover { to });
        sim.run_for(Duration::from_millis(100));
        let r = refusals(&sim);
        assert_eq!(r.len(), before + 1, "{to}: {r:?}");
        assert!(r.last().unwrap().contains(why), "{to}: {r:?}");
    }
    // A lagging target (the harness's replicas keep up; the snapshot says 50 behind).
    let mut status = sim.engine(N1).status();
    status.nodes.get_mut(&N2).unwrap().lag_transactions = Some(50);
    let mut tight = sim.spec.clone();
    tight.timing.switchover_max_lag = 10;
    let why = plan_switchover(&tight, &status, N2).unwrap_err();
    assert!(why.contains("50 transactions behind"), "{why}");
    // A target whose IO thread is stopped.
    sim.hold_io(N2, true);
    sim.run_for(Duration::from_secs(2));
    let spec = sim.spec.clone();
    let why = plan_switchover(&spec, &sim.engine(N1).status(), N2).unwrap_err();
    assert!(why.contains("not replicating"), "{why}");
    sim.hold_io(N2, false);
    sim.run_for(Duration::from_secs(2));
    let ok = plan_switchover(&spec, &sim.engine(N1).status(), N2).unwrap();
    assert_eq!((ok.from, ok.to, ok.epoch), (N1, N2, 2));
    assert_eq!(ok.repoint, vec![N1, N3]);
    assert!(ok.to_string().contains("read_only"), "{ok}");
    sim.kill_mysqld(N2);
    sim.run_for(Duration::from_secs(2));
    status = sim.engine(N1).status();
    let why = plan_switchover(&spec, &status, N2).unwrap_err();
    assert!(why.contains("not up"), "{why}");
    assert_eq!(sim.record(N1).epoch, 1, "nothing was proposed");
    no_split_brain(&sim);
}

#[test]
fn a_switchover_whose_target_cannot_catch_up_is_cancelled_and_the_master_writes_again() {
    let mut sim = Sim::started(spec());
    warm(&mut sim);
    // Its IO thread is held after the check passed: the wait for the old master's
    // final position cannot be met.
    sim.operator(N1, OperatorRequest::Switchover { to: N2 });
    sim.hold_io(N2, true);
    assert!(
        sim.write_through_vip(),
        "one more write, which n2 never receives"
    );
    assert!(
        sim.run_until(Duration::from_secs(20), |s| s
            .record(N3)
            .journal
            .last()
            .is_some_and(|j| matches!(j.outcome, Outcome::Cancelled { .. }))),
        "{:?}",
        sim.record(N3)
    );
    assert!(settled_on(&sim, N1));
    let acked = sim.acked.len();
    assert!(
        sim.run_until(Duration::from_secs(10), |s| s.acked.len() > acked + 5),
        "the old master must take writes again"
    );
    assert_eq!(sim.writable(), vec![N1]);
    assert!(sim.has_event(|e| matches!(e, Event::SwitchoverCancelled { .. })));
    let post = sim.hooks.last().unwrap();
    assert_eq!(post.2.point, HookPoint::PostSwitchover);
    assert_eq!(post.2.success, Some(false));
    no_split_brain(&sim);
}

#[test]
fn a_vetoing_pre_switchover_hook_cancels_before_anything_is_touched() {
    let mut sim = Sim::started(spec());
    warm(&mut sim);
    sim.veto.insert(HookPoint::PreSwitchover);
    sim.operator(N1, OperatorRequest::Switchover { to: N2 });
    assert!(sim.run_until(Duration::from_secs(5), |s| s
        .record(N1)
        .journal
        .last()
        .is_some_and(
            |j| matches!(&j.outcome, Outcome::Cancelled { why } if why.contains("vetoed"))
        )));
    assert!(
        !sim.commands.iter().any(|(_, _, c)| matches!(
            c,
            Command::Mysql {
                op: MysqlOp::Demote { .. },
                ..
            }
        )),
        "nothing demoted"
    );
    let acked = sim.acked.len();
    assert!(sim.run_until(Duration::from_secs(10), |s| s.acked.len() > acked + 5));
    no_split_brain(&sim);
}

#[test]
fn a_vetoing_pre_failover_hook_holds_the_failover_until_it_passes() {
    let mut sim = Sim::started(spec());
    warm(&mut sim);
    sim.veto.insert(HookPoint::PreFailover);
    sim.kill_mysqld(N1);
    sim.run_for(Duration::from_secs(15));
    assert_eq!(sim.record(N2).epoch, 1, "vetoed: no failover began");
    assert!(sim.has_event(|e| matches!(e, Event::Vetoed { .. })));
    sim.veto.clear();
    assert!(sim.run_until(Duration::from_secs(30), |s| settled_on(s, N2)
        || settled_on(s, N3)));
    let post = sim.hooks.last().unwrap();
    assert_eq!(post.2.point, HookPoint::PostFailover);
    assert_eq!(post.2.success, Some(true));
    assert_eq!(post.2.old_master, Some(N1));
    assert!(post.2.salvage.is_some(), "{post:?}");
    no_split_brain(&sim);
}

#[test]
fn a_second_automatic_failover_waits_for_the_block_or_an_ack() {
    let mut s = spec();
    s.timing.failover_block_ms = 600_000;
    let mut sim = Sim::started(s);
    warm(&mut sim);
    sim.kill_mysqld(N1);
    assert!(sim.run_until(Duration::from_secs(20), |s| settled_on(s, N2)));
    let until = sim.engine(N3).status().failover_blocked_until_wall_ms;
    assert!(until.is_some(), "status shows the block");
    // The old master comes back and rejoins; then the new master dies too.
    sim.restart_mysqld(N1);
    assert!(
        sim.run_until(Duration::from_secs(20), |s| s.nodes[&N1].mysqld.source
            == Some(N2))
    );
    sim.kill_mysqld(N2);
    sim.run_for(Duration::from_secs(20));
    assert_eq!(
        sim.record(N3).master,
        Some(N2),
        "blocked: no second automatic failover"
    );
    assert!(sim.has_event(|e| matches!(e, Event::FailoverBlocked { master: N2, .. })));
    // A pause and a switchover are still the operator's to make; an ack lets the
    // failover go.
    sim.operator(N3, OperatorRequest::Ack);
    assert!(
        sim.run_until(Duration::from_secs(20), |s| settled_on(s, N1)
            || settled_on(s, N3)),
        "{:?}",
        sim.record(N3)
    );
    assert_eq!(sim.record(N3).acked_epoch, 2);
    no_split_brain(&sim);
}

#[test]
fn the_block_ends_by_itself_after_its_period() {
    let mut s = spec();
    s.timing.failover_block_ms = 30_000;
    let mut sim = Sim::started(s);
    warm(&mut sim);
    sim.kill_mysqld(N1);
    assert!(sim.run_until(Duration::from_secs(20), |s| settled_on(s, N2)));
    sim.restart_mysqld(N1);
    assert!(
        sim.run_until(Duration::from_secs(20), |s| s.nodes[&N1].mysqld.source
            == Some(N2))
    );
    sim.kill_mysqld(N2);
    assert!(sim.run_until(Duration::from_secs(60), |s| settled_on(s, N1)
        || settled_on(s, N3)));
    no_split_brain(&sim);
}

#[test]
fn a_coordinator_deposed_after_a_veto_keeps_its_deadlines_ahead() {
    // The harness checks on every tick that each engine's next deadline lies ahead
    // (one in the past makes a driver spin): a veto's retry time left behind by a
    // coordinator that lost its role must not count.
    let mut sim = Sim::started(spec());
    warm(&mut sim);
    sim.veto.insert(HookPoint::PreFailover);
    sim.kill_mysqld(N1);
    assert!(sim.run_until(Duration::from_secs(15), |s| s
        .has_event(|e| matches!(e, Event::Vetoed { .. }))));
    let c = sim.coordinator().unwrap();
    sim.isolate(c);
    sim.run_for(Duration::from_secs(5));
    sim.heal();
    sim.run_for(Duration::from_secs(20));
    sim.veto.clear();
    assert!(sim.run_until(Duration::from_secs(30), |s| settled_on(s, N2)
        || settled_on(s, N3)));
    no_split_brain(&sim);
}
