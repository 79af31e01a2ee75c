//! Multi-node scenarios on the in-process harness.

mod harness;

use harness::{spec, spec_with, Sim};
use multiaz_engine::*;
use std::time::Duration;

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);

fn all_agree_master(sim: &Sim, m: NodeId) -> bool {
    sim.ids().into_iter().all(|id| {
        sim.nodes[&id].engine.as_ref().is_none_or(|e| e.record().master == Some(m) && e.record().failover.is_none())
    })
}

#[test]
fn cluster_starts_with_one_writable_master() {
    let mut sim = Sim::started(spec());
    sim.write_every = None;
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.writable(), vec![N1]);
    assert!(sim.coordinator().is_some());
    assert!(sim.two_writers.is_empty());
    assert!(sim.lost_acked(N2).is_empty());
}

#[test]
fn dead_master_mysqld_gives_exactly_one_promotion_to_the_most_advanced_replica() {
    let mut sim = Sim::started(spec());
    // n3 falls behind: n2 is the most advanced replica when the master dies.
    sim.hold_io(N3, true);
    sim.run_for(Duration::from_secs(1));
    sim.kill_mysqld(N1);
    let t0 = sim.now;
    assert!(sim.run_until(Duration::from_secs(20), |s| all_agree_master(s, N2)), "no failover");
    sim.hold_io(N3, false);
    sim.run_for(Duration::from_secs(3));
    let promos = sim.promotions();
    assert_eq!(promos.len(), 1, "{promos:?}");
    assert_eq!(promos[0].2, N2);
    assert!(promos[0].0.since(t0) < Duration::from_secs(5), "took {:?}", promos[0].0.since(t0));
    assert_eq!(sim.writable(), vec![N2]);
    assert_eq!(sim.record(N3).epoch, 2);
    assert!(sim.routes.values().all(|t| *t == N2), "{:?}", sim.routes);
    assert_eq!(sim.nodes[&N3].mysqld.source, Some(N2));
    assert!(sim.lost_acked(N2).is_empty());
    assert!(sim.lost_acked(N3).is_empty(), "n3 replicates from the new master");
    assert!(sim.two_writers.is_empty());
    let j = sim.record(N2).journal.last().unwrap();
    assert!(matches!(j.outcome, Outcome::Completed(_)), "{j:?}");
}

#[test]
fn binlog_tail_of_a_dead_master_is_salvaged() {
    let mut sim = Sim::started(spec());
    // The master writes transactions no replica receives, then its mysqld dies.
    sim.hold_io(N2, true);
    sim.hold_io(N3, true);
    sim.write_every = None;
    for _ in 0..5 {
        assert!(!sim.write_through_vip(), "no replica: semi-sync cannot acknowledge");
    }
    let binlog = sim.nodes[&N1].mysqld.executed.clone();
    sim.kill_mysqld(N1);
    sim.hold_io(N2, false);
    sim.hold_io(N3, false);
    assert!(sim.run_until(Duration::from_secs(20), |s| all_agree_master(s, N2) || all_agree_master(s, N3)));
    let m = sim.record(N2).master.unwrap();
    assert!(sim.nodes[&m].mysqld.executed.is_superset(&binlog), "binlog events lost");
    assert!(sim.has_event(|e| matches!(e, Event::Salvaged { outcome: Ok(r), .. } if r.recovered == 5)));
}

#[test]
fn debug_timeline() {
    let mut sim = Sim::started(spec());
    sim.hold_io(N3, true);
    sim.run_for(Duration::from_secs(1));
    sim.kill_mysqld(N1);
    let t0 = sim.now;
    sim.run_for(Duration::from_secs(10));
    for (t, n, e) in &sim.events { if *t >= t0 { println!("{t:?} {n} {e:?}"); } }
    for (t, n, c) in &sim.commands { if *t >= t0 && matches!(c, Command::Mysql{..}|Command::Salvage{..}) { println!("{t:?} {n} {c:?}"); } }
    panic!();
}
