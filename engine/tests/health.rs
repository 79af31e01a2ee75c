//! The answers a proxy or load balancer gets (`/primary`, `/replica?max_lag=N`), on
//! the in-process harness: only the master holding its lease is primary, a replica
//! behind its bound is refused, and the answers follow a failover.

use multiaz_engine::*;
use multiaz_testkit::harness::{spec, Sim};
use std::time::Duration;

const N1: NodeId = NodeId(1);
const N3: NodeId = NodeId(3);

#[test]
fn only_the_master_holding_its_lease_is_primary_and_the_answers_follow_a_failover() {
    let mut sim = Sim::started(spec());
    assert_eq!(sim.record(N1).master, Some(N1));
    assert_eq!(sim.engine(N1).status().primary(), Ok(()));
    assert!(sim.engine(N1).status().replica(None).is_err());
    for r in [NodeId(2), N3] {
        let status = sim.engine(r).status();
        assert!(status.primary().unwrap_err().contains("not the master"));
        assert_eq!(status.replica(None), Ok(()));
    }

    // A replica whose SQL thread is held falls behind: a tight bound refuses it, a
    // loose one does not.
    sim.hold_sql(N3, true);
    sim.run_for(Duration::from_secs(2));
    let status = sim.engine(N3).status();
    let lag = status.nodes[&N3].lag_transactions.expect("lag known");
    assert!(lag > 0, "{lag}");
    assert!(status.replica(Some(0)).unwrap_err().contains("behind"));
    assert_eq!(status.replica(Some(lag)), Ok(()));
    sim.hold_sql(N3, false);

    // The master's mysqld dies: it is no longer primary; the new master is, once it
    // holds its lease and is writable.
    sim.kill_mysqld(N1);
    let moved = sim.run_until(Duration::from_secs(20), |s| {
        s.record(NodeId(2))
            .master
            .is_some_and(|m| m != N1 && s.engine(m).status().primary().is_ok())
    });
    assert!(moved, "{}", sim.trace());
    assert!(sim.engine(N1).status().primary().is_err());
    let new = sim.record(NodeId(2)).master.unwrap();
    let others: Vec<NodeId> = sim.ids().into_iter().filter(|n| *n != new).collect();
    for n in others {
        if let Some(e) = sim.nodes[&n].engine.as_ref() {
            assert!(e.status().primary().is_err(), "{n} answers primary too");
        }
    }
}
