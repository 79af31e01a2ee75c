//! The forwarding fallback (`engine/src/forward.rs`) on the in-process harness: a host
//! the VIP's routes still lead to forwards to the new master while the EC2 API is
//! down, stops once the routes have moved, and the coordinator reports each route
//! table's state. Each test has its negative control beside it: without forwarding
//! the same clients reach no master until the API is back.

use multiaz_engine::*;
use multiaz_testkit::harness::{spec, Sim};
use std::time::Duration;

const N1: NodeId = NodeId(1);

fn route_states(sim: &Sim) -> Vec<Option<RouteState>> {
    let coord = sim.coordinator().expect("a coordinator");
    sim.engine(coord)
        .status()
        .routes
        .iter()
        .map(|r| r.state)
        .collect()
}

/// The master's mysqld dies while the EC2 API is down: how long until a client whose
/// route still leads to the old master's host gets a write acknowledged.
fn dead_mysqld_with_the_api_down(forward: bool) -> (Sim, Option<Duration>) {
    let mut spec = spec();
    spec.vip.forward = forward;
    let mut sim = Sim::started(spec);
    assert_eq!(sim.routes["rtb-a"], N1);
    sim.api_down = true;
    let killed = sim.now;
    sim.kill_mysqld(N1);
    let reached = sim.run_until(Duration::from_secs(20), |s| {
        s.vip_server().is_some_and(|n| n != N1) && s.writable().iter().any(|n| *n != N1)
    });
    let took = reached.then(|| sim.now.since(killed));
    (sim, took)
}

#[test]
fn the_old_masters_host_forwards_to_the_new_master_while_the_api_is_down() {
    let (mut sim, took) = dead_mysqld_with_the_api_down(true);
    let took =
        took.unwrap_or_else(|| panic!("no master reachable through the VIP\n{}", sim.trace()));
    assert!(took < Duration::from_secs(5), "{took:?}\n{}", sim.trace());
    let new = sim.vip_server().expect("a server");
    assert_eq!(sim.record(N1).master, Some(new));
    assert_eq!(
        sim.routes["rtb-a"], N1,
        "the route has not moved: the API is down"
    );
    assert_eq!(sim.forward.get(&N1), Some(&new));
    assert!(
        sim.write_through_vip(),
        "a write through the VIP is acknowledged"
    );
    // The coordinator's word: no table has moved, and where they point is forwarded.
    sim.run_for(Duration::from_secs(2));
    assert_eq!(
        route_states(&sim),
        vec![Some(RouteState::Forwarding); 3],
        "{}",
        sim.trace()
    );
    let forwarder = sim.engine(N1).status();
    assert_eq!(forwarder.forwarding, Some(VipPath::To(new)));

    // The API comes back: the routes move, and the old host stops forwarding.
    sim.api_down = false;
    let stopped = sim.run_until(Duration::from_secs(30), |s| {
        s.routes.values().all(|n| *n == new) && !s.forward.contains_key(&N1)
    });
    assert!(stopped, "{}", sim.trace());
    sim.run_for(Duration::from_millis(100));
    assert_eq!(route_states(&sim), vec![Some(RouteState::Moved); 3]);
    assert_eq!(sim.engine(N1).status().forwarding, Some(VipPath::Local));
    assert!(sim.lost_acked(new).is_empty());
}

/// The negative control: the same fault without forwarding leaves the VIP's clients
/// at the dead mysqld for as long as the API is down.
#[test]
fn without_forwarding_the_clients_wait_for_the_api() {
    let (sim, took) = dead_mysqld_with_the_api_down(false);
    assert_eq!(
        took,
        None,
        "reached a master with the API down:\n{}",
        sim.trace()
    );
    assert!(sim.forward.is_empty());
    assert_eq!(route_states(&sim), vec![Some(RouteState::Stuck); 3]);
}

/// A host that is gone forwards nothing: with the old master's host crashed and the
/// API down, the coordinator says the routes are stuck.
#[test]
fn a_crashed_host_leaves_its_routes_stuck() {
    let mut sim = Sim::started(spec());
    sim.api_down = true;
    sim.crash_host(N1);
    let settled = sim.run_until(Duration::from_secs(30), |s| {
        s.coordinator().is_some_and(|c| {
            s.record(c).master.is_some_and(|m| m != N1) && s.record(c).failover.is_none()
        })
    });
    assert!(settled, "{}", sim.trace());
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.vip_server(), None);
    assert_eq!(route_states(&sim), vec![Some(RouteState::Stuck); 3]);
}

/// Rules an earlier run left in the kernel are not trusted: a sidecar's first act on
/// its forwarding is to set it, even to what it wants by default.
#[test]
fn a_starting_sidecar_sets_its_forwarding() {
    let mut sim = Sim::started(spec());
    sim.forward.insert(N1, NodeId(2));
    sim.crash_sidecar(N1);
    sim.restart_sidecar(N1);
    let cleared = sim.run_until(Duration::from_secs(5), |s| !s.forward.contains_key(&N1));
    assert!(
        cleared,
        "a stale rule on the master's host stayed:\n{}",
        sim.trace()
    );
}

/// Route tables issued a `ReplaceRoute` since `from`.
fn route_calls_since(sim: &Sim, from: Time) -> usize {
    sim.commands
        .iter()
        .filter(|(at, _, c)| *at >= from && matches!(c, Command::ReplaceRoute { .. }))
        .count()
}

/// The anchored mode: each table points at its own AZ's database host, which forwards
/// to the master. A dead mysqld's failover, with the EC2 API down, makes no route call
/// at all, and the clients reach the new master through their anchor.
fn anchored_failover(mode: VipMode) -> (Sim, usize) {
    let mut spec = spec();
    spec.vip.mode = mode;
    let mut sim = Sim::started(spec);
    if mode == VipMode::Anchored {
        let anchored = sim.run_until(Duration::from_secs(20), |s| {
            s.routes["rtb-a"] == N1
                && s.routes["rtb-b"] == NodeId(2)
                && s.routes["rtb-c"] == NodeId(3)
        });
        assert!(
            anchored,
            "every table on its own AZ's host:\n{}",
            sim.trace()
        );
    }
    sim.run_for(Duration::from_secs(3));
    sim.api_down = true;
    let fault = sim.now;
    sim.kill_mysqld(N1);
    let reached = sim.run_until(Duration::from_secs(20), |s| {
        s.vip_server().is_some_and(|n| n != N1) && s.writable().iter().any(|n| *n != N1)
    });
    assert!(reached, "{}", sim.trace());
    sim.run_for(Duration::from_secs(5));
    let calls = route_calls_since(&sim, fault);
    (sim, calls)
}

#[test]
fn anchored_a_master_change_makes_no_route_call() {
    let (sim, calls) = anchored_failover(VipMode::Anchored);
    assert_eq!(calls, 0, "{}", sim.trace());
    let new = sim.vip_server().unwrap();
    // Every anchor but the new master forwards to it.
    for n in [N1, NodeId(2), NodeId(3)].into_iter().filter(|n| *n != new) {
        assert_eq!(sim.forward.get(&n), Some(&new), "{n}");
    }
    assert_eq!(
        route_states(&sim),
        vec![Some(RouteState::Moved); 3],
        "anchored tables at live anchors are where they belong"
    );
}

/// The control: in the route mode the same failover calls the API for every table.
#[test]
fn the_route_mode_calls_the_api_for_the_same_failover() {
    let (sim, calls) = anchored_failover(VipMode::Route);
    assert!(calls >= 3, "{calls}\n{}", sim.trace());
}

/// An anchor that is gone gives its table to the writer (one call), once the API
/// answers.
#[test]
fn anchored_a_lost_anchor_hands_its_table_to_the_writer() {
    let mut spec = spec();
    spec.vip.mode = VipMode::Anchored;
    let mut sim = Sim::started(spec);
    let anchored = sim.run_until(Duration::from_secs(20), |s| s.routes["rtb-c"] == NodeId(3));
    assert!(anchored, "{}", sim.trace());
    sim.run_for(Duration::from_secs(3));
    sim.crash_host(NodeId(3));
    let moved = sim.run_until(Duration::from_secs(20), |s| s.routes["rtb-c"] == N1);
    assert!(moved, "{}", sim.trace());
    assert_eq!(sim.routes["rtb-a"], N1);
    assert_eq!(
        sim.routes["rtb-b"],
        NodeId(2),
        "a live anchor keeps its table"
    );
}

/// A host whose forwarding cannot be set anchors nothing: its AZ's table goes to the
/// writer instead of leading its clients to a read_only replica.
#[test]
fn anchored_a_host_that_cannot_forward_anchors_nothing() {
    let mut spec = spec();
    spec.vip.mode = VipMode::Anchored;
    let mut sim = Sim::new(spec);
    sim.forward_broken.insert(NodeId(3));
    sim.run_for(Duration::from_secs(15));
    assert_eq!(sim.routes["rtb-b"], NodeId(2), "{}", sim.trace());
    assert_eq!(sim.routes["rtb-c"], N1, "{}", sim.trace());
    assert!(sim.has_event(|e| matches!(e, Event::ForwardingFailed { .. })));
}

/// A host that boots again after its crash as the old master — its record still names
/// it the master until it catches up with the others, so it serves the VIP itself —
/// is not made its AZ's anchor again until its forwarding leads to the writer of
/// record: its clients would reach a stale, read_only server (seen in the anchored
/// host-kill chaos run: writes refused as read_only for a second and a read-back 212
/// rows behind).
#[test]
fn anchored_a_returning_old_master_anchors_nothing_before_it_forwards_to_the_writer() {
    let mut spec = spec();
    spec.vip.mode = VipMode::Anchored;
    let mut sim = Sim::started(spec);
    let anchored = sim.run_until(Duration::from_secs(20), |s| {
        s.routes["rtb-a"] == N1 && s.routes["rtb-b"] == NodeId(2) && s.routes["rtb-c"] == NodeId(3)
    });
    assert!(anchored, "{}", sim.trace());
    sim.run_for(Duration::from_secs(3));
    sim.crash_host(N1);
    let failed_over = sim.run_until(Duration::from_secs(30), |s| {
        s.routes["rtb-a"] != N1 && s.writable().iter().any(|n| *n != N1)
    });
    assert!(failed_over, "{}", sim.trace());
    let writer = sim.writable()[0];
    sim.boot_host(N1);
    // It is slow to hear from the others (what it sends gets through): its record
    // stays stale for a while, as a sidecar's that is just starting.
    for n in [NodeId(2), NodeId(3)] {
        sim.cut.insert((n, N1));
    }
    let mut stale = Vec::new();
    let mut back = false;
    for step in 0..600 {
        if step == 100 {
            sim.heal();
        }
        sim.run_for(Duration::from_millis(50));
        if sim.routes["rtb-a"] == N1 {
            if sim.forward.get(&N1) == Some(&writer) {
                back = true;
                break;
            }
            stale.push(sim.now);
        }
    }
    assert!(
        stale.is_empty(),
        "rtb-a led to the returning host while it served the VIP itself, at {stale:?}\n{}",
        sim.trace()
    );
    assert!(
        back,
        "the returning host anchors its AZ again once it forwards\n{}",
        sim.trace()
    );
}

/// The coordinator cut off from the others, the EC2 API still in its reach: it must not
/// take the other AZs' tables, whose anchors it no longer hears, for itself — their
/// clients would be stranded behind the cut (seen in the anchored az-partition chaos
/// run: the old master's sidecar, still raft leader 2.2 s into the partition, moved
/// two tables to itself after the new coordinator had confirmed them).
#[test]
fn anchored_a_cut_off_coordinator_takes_no_other_azs_table() {
    let mut spec = spec();
    spec.vip.mode = VipMode::Anchored;
    // Reports age out (three probe intervals) before raft deposes the cut-off leader
    // (one to two election timeouts: 1 s for n1, 1.6 s for n3 as in that run).
    spec.timing.probe_interval_ms = 400;
    let spec = spec.validate().expect("valid");
    let mut sim = Sim::started(spec);
    let anchored = sim.run_until(Duration::from_secs(20), |s| {
        s.routes["rtb-a"] == N1 && s.routes["rtb-b"] == NodeId(2) && s.routes["rtb-c"] == NodeId(3)
    });
    assert!(anchored, "{}", sim.trace());
    sim.run_for(Duration::from_secs(3));
    let c = sim.coordinator().expect("a coordinator");
    let own = ["rtb-a", "rtb-b", "rtb-c"][c.0 as usize - 1];
    sim.isolate(c);
    let mut taken = Vec::new();
    for _ in 0..400 {
        sim.run_for(Duration::from_millis(50));
        for (table, to) in &sim.routes {
            if table != own && *to == c {
                taken.push((sim.now, table.clone()));
            }
        }
    }
    assert!(
        taken.is_empty(),
        "the cut-off coordinator {c} took {taken:?}\n{}",
        sim.trace()
    );
}
