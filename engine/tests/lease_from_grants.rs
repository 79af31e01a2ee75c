//! The old writer's lease timed from the last grant it was given (`lease.rs`,
//! `fence::lease_over_by_grants`), and what that rests on: a writer is never writable
//! without a granted round — not after a sidecar restart, not after its promotion.

use multiaz_engine::*;
use multiaz_testkit::harness::{spec, Sim};
use std::time::Duration;

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);

fn event_times(sim: &Sim, node: Option<NodeId>, f: impl Fn(&Event) -> bool) -> Vec<Time> {
    sim.events
        .iter()
        .filter(|(_, n, e)| node.is_none_or(|want| *n == want) && f(e))
        .map(|(t, _, _)| *t)
        .collect()
}

/// The `until_ms` of every event `pick` finds one in, in order.
fn untils(sim: &Sim, pick: impl Fn(&Event) -> Option<u64>) -> Vec<u64> {
    sim.events.iter().filter_map(|(_, _, e)| pick(e)).collect()
}

/// A cluster that has run long enough for the master to hold a lease.
fn settled() -> Sim {
    let mut sim = Sim::started(spec());
    sim.run_for(Duration::from_millis(2_500));
    sim
}

fn failed_over(sim: &Sim) -> bool {
    [N2, N3].iter().all(|n| {
        sim.record(*n).failover.is_none() && sim.record(*n).master.is_some_and(|m| m != N1)
    })
}

#[test]
fn an_isolated_masters_lease_is_timed_from_its_last_grant_not_from_the_commit() {
    let mut sim = settled();
    let timing = sim.spec.timing.clone();
    sim.isolate(N1);
    let t0 = sim.now;
    assert!(sim.run_until(Duration::from_secs(30), failed_over));

    let promoted = sim.promotions()[0].0;
    let from_commit = untils(&sim, |e| match e {
        Event::WaitingForLease { until_ms, .. } => Some(*until_ms),
        _ => None,
    });
    let from_grants = untils(&sim, |e| match e {
        Event::LeaseEndsFromGrants { until_ms, .. } => Some(*until_ms),
        _ => None,
    });
    assert!(
        !from_commit.is_empty(),
        "the coordinator waited for the lease"
    );
    let (commit_bound, grants_bound) = (from_commit[0], *from_grants.first().expect("reported"));
    assert!(
        grants_bound < commit_bound,
        "{grants_bound} vs {commit_bound}"
    );
    // Promoted once the grants' bound had passed, before the bound from the commit.
    assert!(promoted.as_millis() >= grants_bound, "{promoted:?}");
    assert!(promoted.as_millis() < commit_bound, "{promoted:?}");
    // The last grant came at most one renewal before the cut: the bound is a lease,
    // its margin and that renewal after it (plus message delays).
    let most = timing.lease() + timing.lease_margin() + timing.probe_interval();
    assert!(
        promoted.since(t0) <= most + Duration::from_millis(200),
        "promoted {:?} after the cut",
        promoted.since(t0)
    );
    // The old master made itself read_only before that: never two writers.
    let fenced = event_times(&sim, Some(N1), |e| matches!(e, Event::SelfFenced { .. }));
    assert!(
        fenced.first().is_some_and(|f| *f < promoted),
        "{fenced:?} {promoted:?}"
    );
    assert!(sim.two_writers.is_empty(), "{:?}", sim.two_writers);
    assert!(sim.two_ackers.is_empty(), "{:?}", sim.two_ackers);
}

#[test]
fn a_restarted_masters_sidecar_cut_off_from_its_peers_fences_at_once() {
    let mut sim = settled();
    sim.isolate(N1);
    sim.crash_sidecar(N1);
    sim.restart_sidecar(N1);
    // With no grant it may not be writable: a grace of a lease after a start would keep
    // it writable for 4 s, beyond any bound the others time from their grants.
    let lease = sim.spec.timing.lease();
    assert!(
        sim.run_until(lease / 4, |s| s.nodes[&N1].mysqld.read_only),
        "the restarted sidecar left its mysqld writable without a lease"
    );
    assert!(sim.run_until(Duration::from_secs(30), failed_over));
    sim.run_for(Duration::from_secs(2));
    assert!(sim.two_writers.is_empty(), "{:?}", sim.two_writers);
}

#[test]
fn a_restarted_masters_sidecar_with_its_peers_keeps_writes_flowing() {
    let mut sim = settled();
    sim.crash_sidecar(N1);
    sim.restart_sidecar(N1);
    let restarted = sim.now;
    sim.run_for(Duration::from_secs(3));
    assert_eq!(sim.writable(), vec![N1]);
    // Fenced for a round trip at most (a round asked within a raft tick after the fence).
    let acks: Vec<Time> = std::iter::once(restarted)
        .chain(
            sim.ack_log
                .iter()
                .map(|(t, _)| *t)
                .filter(|t| *t >= restarted),
        )
        .collect();
    let gaps = acks.windows(2).map(|w| w[1].since(w[0])).max();
    assert!(
        gaps.is_some_and(|g| g < Duration::from_millis(500)),
        "writes stalled {gaps:?} after the sidecar restart"
    );
    assert!(sim.record(N2).epoch == 1, "no failover");
}

#[test]
fn the_new_master_is_promoted_only_once_it_holds_its_lease() {
    let mut sim = settled();
    sim.kill_mysqld(N1);
    // No grant reaches anyone for 3 s: the candidate is ready long before it has a
    // lease (promoted without one, it would fence itself on its next probe and stay
    // read_only until the failover completes).
    let grants_back = sim.now + Duration::from_secs(3);
    sim.lose_lease_grants_until = Some(grants_back);
    assert!(sim.run_until(Duration::from_secs(30), failed_over));
    let (promoted, _, new_master) = sim.promotions()[0];
    assert!(promoted >= grants_back, "{promoted:?}");
    sim.run_for(Duration::from_secs(3));
    let fenced_after = event_times(&sim, Some(new_master), |e| {
        matches!(e, Event::SelfFenced { .. })
    })
    .into_iter()
    .filter(|t| *t >= promoted)
    .count();
    assert_eq!(
        fenced_after, 0,
        "the new master fenced itself after its promotion"
    );
    assert_eq!(sim.writable(), vec![new_master]);
}
