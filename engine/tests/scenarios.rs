//! Multi-node scenarios on the in-process harness.

use multiaz_engine::*;
use multiaz_testkit::harness::{spec, spec_with, spec_witness, Sim};
use std::time::Duration;

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);

fn all_agree_master(sim: &Sim, m: NodeId) -> bool {
    sim.ids().into_iter().all(|id| {
        sim.nodes[&id]
            .engine
            .as_ref()
            .is_none_or(|e| e.record().master == Some(m) && e.record().failover.is_none())
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
    assert!(
        sim.run_until(Duration::from_secs(20), |s| all_agree_master(s, N2)),
        "no failover"
    );
    sim.hold_io(N3, false);
    sim.run_for(Duration::from_secs(3));
    let promos = sim.promotions();
    assert_eq!(promos.len(), 1, "{promos:?}");
    assert_eq!(promos[0].2, N2);
    assert!(
        promos[0].0.since(t0) < Duration::from_secs(5),
        "took {:?}",
        promos[0].0.since(t0)
    );
    assert_eq!(sim.writable(), vec![N2]);
    assert_eq!(sim.record(N3).epoch, 2);
    assert!(sim.routes.values().all(|t| *t == N2), "{:?}", sim.routes);
    assert_eq!(sim.nodes[&N3].mysqld.source, Some(N2));
    assert!(sim.lost_acked(N2).is_empty());
    assert!(
        sim.lost_acked(N3).is_empty(),
        "n3 replicates from the new master: lost {:?}, n3 {:?}, n2 {:?}",
        sim.lost_acked(N3),
        sim.nodes[&N3].mysqld.executed,
        sim.nodes[&N2].mysqld.executed
    );
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
        assert!(
            !sim.write_through_vip(),
            "no replica: semi-sync cannot acknowledge"
        );
    }
    let binlog = sim.nodes[&N1].mysqld.executed.clone();
    sim.kill_mysqld(N1);
    sim.hold_io(N2, false);
    sim.hold_io(N3, false);
    assert!(
        sim.run_until(Duration::from_secs(20), |s| all_agree_master(s, N2)
            || all_agree_master(s, N3))
    );
    let m = sim.record(N2).master.unwrap();
    assert!(
        sim.nodes[&m].mysqld.executed.is_superset(&binlog),
        "binlog events lost"
    );
    assert!(
        sim.has_event(|e| matches!(e, Event::Salvaged { outcome: Ok(r), .. } if r.recovered == 5))
    );
}

fn any_record(sim: &Sim) -> ClusterRecord {
    let id = sim
        .ids()
        .into_iter()
        .find(|id| sim.nodes[id].engine.is_some())
        .unwrap();
    sim.record(id).clone()
}

/// N1 writes three transactions no replica receives, then its whole host goes away (no
/// salvage possible): they are errant when it returns. The cluster fails over to N2 or
/// N3, which goes on writing. Returns the new master.
fn fail_over_from_a_master_with_an_unsalvageable_tail(sim: &mut Sim) -> NodeId {
    sim.hold_io(N2, true);
    sim.hold_io(N3, true);
    sim.write_every = None;
    for _ in 0..3 {
        assert!(!sim.write_through_vip());
    }
    sim.crash_host(N1);
    sim.hold_io(N2, false);
    sim.hold_io(N3, false);
    sim.write_every = Some(Duration::from_millis(50));
    assert!(
        sim.run_until(Duration::from_secs(30), |s| all_agree_master(s, N2)
            || all_agree_master(s, N3))
    );
    any_record(sim).master.unwrap()
}

/// At most one distinct node promoted per epoch, and never two writable at once.
fn assert_safe(sim: &Sim) {
    assert!(
        sim.two_writers.is_empty(),
        "two writers: {:?}",
        sim.two_writers
    );
    let targets: std::collections::BTreeSet<NodeId> =
        sim.promotions().iter().map(|p| p.2).collect();
    let epochs = any_record(sim).epoch - 1;
    assert!(
        targets.len() as u64 <= epochs.max(1),
        "promoted {targets:?} over {epochs} failover epoch(s)"
    );
}

#[test]
fn coordinator_dying_after_the_candidate_is_committed_does_not_promote_a_second_node() {
    let mut sim = Sim::started(spec());
    let coordinator = sim.coordinator().unwrap();
    sim.kill_mysqld(N1);
    assert!(sim.run_until(Duration::from_secs(10), |s| {
        s.nodes[&coordinator].engine.as_ref().is_some_and(|e| {
            e.record()
                .failover
                .as_ref()
                .is_some_and(|f| f.candidate.is_some())
        })
    }));
    let candidate = sim
        .record(coordinator)
        .failover
        .as_ref()
        .unwrap()
        .candidate
        .unwrap();
    sim.crash_sidecar(coordinator);
    assert!(
        sim.run_until(Duration::from_secs(30), |s| all_agree_master(s, candidate)),
        "the next coordinator did not finish: {:?}",
        any_record(&sim)
    );
    assert_ne!(sim.coordinator(), Some(coordinator));
    assert!(sim.has_event(|e| matches!(e, Event::FailoverResumed { epoch: 2 })));
    assert_eq!(any_record(&sim).epoch, 2, "finished in the same epoch");
    assert!(
        sim.promotions().iter().all(|p| p.2 == candidate),
        "{:?}",
        sim.promotions()
    );
    assert_eq!(sim.writable(), vec![candidate]);
    assert_safe(&sim);
    assert!(sim.lost_acked(candidate).is_empty());
}

#[test]
fn coordinator_dying_right_after_promote_is_finished_by_the_next_one() {
    let mut sim = Sim::started(spec());
    let coordinator = sim.coordinator().unwrap();
    sim.kill_mysqld(N1);
    assert!(sim.run_until(Duration::from_secs(10), |s| !s.promotions().is_empty()));
    let candidate = sim.promotions()[0].2;
    sim.crash_sidecar(coordinator);
    assert!(sim.run_until(Duration::from_secs(30), |s| all_agree_master(s, candidate)));
    assert!(sim.promotions().iter().all(|p| p.2 == candidate));
    let record = any_record(&sim);
    assert_eq!(record.epoch, 2);
    assert!(matches!(
        record.journal.last().unwrap().outcome,
        Outcome::Completed(_)
    ));
    assert_safe(&sim);
}

#[test]
fn master_az_partitioned_away_majority_promotes_and_old_master_self_fences() {
    let mut sim = Sim::started(spec());
    sim.isolate(N1);
    let t0 = sim.now;
    assert!(
        sim.run_until(Duration::from_secs(30), |s| {
            [N2, N3].iter().all(|n| {
                s.record(*n).failover.is_none() && s.record(*n).master.is_some_and(|m| m != N1)
            })
        }),
        "majority did not fail over"
    );
    let new_master = sim.record(N2).master.unwrap();
    let promoted_at = sim.promotions()[0].0;
    assert!(
        promoted_at.since(t0) < Duration::from_secs(15),
        "{:?}",
        promoted_at.since(t0)
    );
    sim.run_for(Duration::from_secs(2));
    assert!(
        sim.nodes[&N1].mysqld.read_only,
        "old master did not fence itself"
    );
    assert!(sim.has_event(|e| matches!(e, Event::SelfFenced { .. })));
    assert_eq!(sim.writable(), vec![new_master]);
    assert_safe(&sim);
    assert!(
        sim.lost_acked(new_master).is_empty(),
        "acknowledged writes lost: {:?}",
        sim.lost_acked(new_master)
    );
    // After the partition heals the old master learns the new epoch and stays fenced.
    sim.heal();
    assert!(
        sim.run_until(Duration::from_secs(10), |s| s.record(N1).epoch == 2
            && s.record(N1).master == Some(new_master))
    );
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.writable(), vec![new_master]);
    assert_safe(&sim);
}

#[test]
fn master_unreachable_from_one_sidecar_only_is_not_failed_over() {
    let mut sim = Sim::started(spec());
    sim.cut_both(N3, N1);
    sim.run_for(Duration::from_secs(20));
    assert!(
        sim.has_event(|e| matches!(e, Event::MasterUnreachable { master: N1, .. })),
        "n3 should see it down"
    );
    assert!(!sim.has_event(|e| matches!(e, Event::FailoverBegun { .. })));
    assert_eq!(any_record(&sim).epoch, 1);
    assert_eq!(sim.writable(), vec![N1]);
    assert!(sim.promotions().is_empty());
}

#[test]
fn a_never_candidate_is_never_promoted_even_when_most_advanced() {
    let mut sim = Sim::started(spec_with(
        [
            PromotionRule::Neutral,
            PromotionRule::Never,
            PromotionRule::Neutral,
        ],
        None,
    ));
    sim.hold_io(N3, true);
    sim.run_for(Duration::from_secs(1));
    sim.kill_mysqld(N1);
    sim.hold_io(N3, false);
    assert!(sim.run_until(Duration::from_secs(20), |s| all_agree_master(s, N3)));
    assert!(sim.promotions().iter().all(|p| p.2 == N3));
    assert!(sim.count_commands(|c| matches!(c, Command::Mysql { node, op: MysqlOp::CatchUp { source, .. }, .. } if *node == N3 && *source == N2)) >= 1,
        "n3 was behind n2 and had to catch up from it");
    assert!(sim.lost_acked(N3).is_empty());
    assert_safe(&sim);
}

#[test]
fn a_preferred_candidate_that_is_behind_is_caught_up_before_promotion() {
    let mut sim = Sim::started(spec_with(
        [
            PromotionRule::Neutral,
            PromotionRule::Neutral,
            PromotionRule::Prefer,
        ],
        None,
    ));
    sim.hold_io(N3, true);
    sim.run_for(Duration::from_secs(1));
    let n2_before = sim.nodes[&N2].mysqld.executed.clone();
    assert!(!sim.nodes[&N3].mysqld.executed.is_superset(&n2_before));
    sim.kill_mysqld(N1);
    assert!(sim.run_until(Duration::from_secs(20), |s| all_agree_master(s, N3)));
    let catch_up = sim
        .commands
        .iter()
        .position(|(_, _, c)| {
            matches!(
                c,
                Command::Mysql {
                    node: N3,
                    op: MysqlOp::CatchUp { source: N2, .. },
                    ..
                }
            )
        })
        .expect("catch-up issued");
    let promote = sim
        .commands
        .iter()
        .position(|(_, _, c)| {
            matches!(
                c,
                Command::Mysql {
                    node: N3,
                    op: MysqlOp::Promote,
                    ..
                }
            )
        })
        .expect("promote issued");
    assert!(catch_up < promote);
    assert!(sim.nodes[&N3].mysqld.executed.is_superset(&n2_before));
    let j = any_record(&sim).journal.last().cloned().unwrap();
    assert!(
        matches!(&j.outcome, Outcome::Completed(r) if r.caught_up_from == Some(N2)),
        "{j:?}"
    );
    assert!(sim.lost_acked(N3).is_empty());
    assert_safe(&sim);
}

#[test]
fn client_az_preference_picks_the_replica_next_to_the_clients() {
    let mut sim = Sim::started(spec_with([PromotionRule::Neutral; 3], Some("az-c")));
    sim.kill_mysqld(N1);
    assert!(sim.run_until(Duration::from_secs(20), |s| all_agree_master(s, N3)));
    assert_safe(&sim);
}

#[test]
fn pause_and_resume_sent_to_a_follower_reach_the_record() {
    let mut sim = Sim::started(spec());
    let coordinator = sim.coordinator().unwrap();
    let follower = *sim.ids().iter().find(|n| **n != coordinator).unwrap();
    sim.operator(follower, OperatorRequest::Pause);
    assert!(sim.run_until(Duration::from_secs(2), |s| s
        .ids()
        .iter()
        .all(|n| s.record(*n).paused)));
    sim.operator(follower, OperatorRequest::Resume);
    assert!(sim.run_until(Duration::from_secs(2), |s| s
        .ids()
        .iter()
        .all(|n| !s.record(*n).paused)));
}

#[test]
fn paused_cluster_master_self_fences_when_isolated_and_unfences_after_heal() {
    let mut sim = Sim::started(spec());
    let coordinator = sim.coordinator().unwrap();
    sim.operator(coordinator, OperatorRequest::Pause);
    assert!(sim.run_until(Duration::from_secs(2), |s| s
        .ids()
        .iter()
        .all(|n| s.record(*n).paused)));
    sim.isolate(N1);
    assert!(
        sim.run_until(Duration::from_secs(10), |s| s.nodes[&N1].mysqld.read_only),
        "no self-fence"
    );
    sim.run_for(Duration::from_secs(10));
    assert!(
        !sim.has_event(|e| matches!(e, Event::FailoverBegun { .. })),
        "paused: no failover"
    );
    assert!(sim.writable().is_empty());
    sim.heal();
    let acked = sim.acked.len();
    assert!(
        sim.run_until(Duration::from_secs(10), |s| s.writable() == vec![N1]
            && s.acked.len() > acked + 5)
    );
    assert!(sim.has_event(|e| matches!(e, Event::Unfenced)));
    assert_safe(&sim);
}

#[test]
fn with_no_promotable_replica_the_cluster_stays_fenced_and_retries_until_one_is_back() {
    let mut sim = Sim::started(spec_with(
        [
            PromotionRule::Neutral,
            PromotionRule::Never,
            PromotionRule::Neutral,
        ],
        None,
    ));
    sim.isolate(N3);
    sim.run_for(Duration::from_secs(1));
    sim.kill_mysqld(N1);
    sim.run_for(Duration::from_secs(20));
    assert!(sim.has_event(
        |e| matches!(e, Event::FailoverAttemptFailed { why, .. } if why.contains("may be promoted"))
    ));
    assert!(sim.promotions().is_empty());
    assert!(sim.writable().is_empty(), "fenced: nobody writable");
    let r = sim.record(N2).clone();
    assert_eq!(r.writer(), None);
    assert!(r.epoch > 2, "each attempt is its own epoch: {}", r.epoch);
    assert!(r
        .journal
        .iter()
        .all(|j| matches!(j.outcome, Outcome::Superseded { .. })));
    // n3 comes back: the next attempt promotes it.
    sim.heal();
    assert!(sim.run_until(Duration::from_secs(20), |s| all_agree_master(s, N3)));
    assert!(sim.lost_acked(N3).is_empty());
    assert_safe(&sim);
}

#[test]
fn a_restarted_sidecar_rebuilds_the_record_from_its_durable_log() {
    let mut sim = Sim::started(spec());
    sim.kill_mysqld(N1);
    assert!(
        sim.run_until(Duration::from_secs(20), |s| all_agree_master(s, N2)
            || all_agree_master(s, N3))
    );
    let before = sim.record(N3).clone();
    sim.crash_sidecar(N3);
    sim.run_for(Duration::from_secs(1));
    sim.restart_sidecar(N3);
    sim.run_for(Duration::from_secs(3));
    assert_eq!(sim.record(N3), &before);
    assert_safe(&sim);
}

#[test]
fn host_crash_of_the_master_fails_over_without_salvage() {
    let mut sim = Sim::started(spec());
    sim.crash_host(N1);
    assert!(
        sim.run_until(Duration::from_secs(30), |s| all_agree_master(s, N2)
            || all_agree_master(s, N3))
    );
    let m = any_record(&sim).master.unwrap();
    assert!(sim.lost_acked(m).is_empty());
    assert!(
        sim.count_commands(|c| matches!(c, Command::Salvage { .. })) == 0,
        "no sidecar on the dead host to salvage from"
    );
    assert_safe(&sim);
}

#[test]
fn two_databases_and_a_witness_fail_over() {
    let mut sim = Sim::started(spec_witness());
    assert!(
        sim.nodes[&N3].mysqld.source.is_none(),
        "the witness has no mysqld"
    );
    sim.kill_mysqld(N1);
    assert!(sim.run_until(Duration::from_secs(20), |s| all_agree_master(s, N2)));
    assert_eq!(sim.writable(), vec![N2]);
    assert!(sim.lost_acked(N2).is_empty());
    assert!(
        sim.count_commands(|c| matches!(
            c,
            Command::Mysql { node: N3, .. } | Command::Probe { node: N3, .. }
        )) == 0,
        "nothing is asked of the witness's (absent) mysqld"
    );
    assert_safe(&sim);
}

#[test]
fn stonith_stops_an_unreachable_master_and_skips_the_lease_wait() {
    let mut s = spec();
    s.timing.stonith = true;
    let mut sim = Sim::started(s);
    sim.isolate(N1);
    let t0 = sim.now;
    assert!(
        sim.run_until(Duration::from_secs(20), |s| all_agree_master(s, N2)
            || all_agree_master(s, N3))
    );
    assert!(sim.count_commands(|c| matches!(c, Command::StopInstance { node: N1, .. })) >= 1);
    assert!(!sim.nodes[&N1].host_up, "the instance was stopped");
    assert!(!sim.has_event(|e| matches!(e, Event::WaitingForLease { .. })));
    let promoted = sim.promotions()[0].0;
    assert!(
        promoted.since(t0) < Duration::from_secs(5),
        "{:?}",
        promoted.since(t0)
    );
    assert_safe(&sim);
}

#[test]
fn a_returning_old_master_without_errant_transactions_rejoins_as_a_replica() {
    let mut sim = Sim::started(spec());
    sim.kill_mysqld(N1);
    assert!(sim.run_until(Duration::from_secs(20), |s| all_agree_master(s, N2)));
    sim.restart_mysqld(N1);
    assert!(
        sim.run_until(Duration::from_secs(20), |s| s.nodes[&N1].mysqld.source
            == Some(N2)
            && s.nodes[&N1].mysqld.io_running),
        "old master did not rejoin"
    );
    assert!(sim.nodes[&N1].mysqld.read_only);
    assert!(
        any_record(&sim).quarantined.is_empty(),
        "checked clean, released"
    );
    assert_safe(&sim);
}

#[test]
fn a_returning_old_master_with_errant_transactions_is_kept_out() {
    let mut sim = Sim::started(spec());
    // The master writes a transaction nobody receives, then its whole host goes away
    // (no salvage possible): that transaction is errant when the host returns.
    // The new master goes on writing past those sequence numbers: the errant ones
    // must still be told apart (by the per-server state, as gtid_binlog_state has it).
    fail_over_from_a_master_with_an_unsalvageable_tail(&mut sim);
    sim.run_for(Duration::from_secs(2));
    let m = any_record(&sim).master.unwrap();
    assert!(sim.nodes[&m].mysqld.executed.seq(0) > sim.nodes[&N1].mysqld.executed.seq(0));
    let node = sim.nodes.get_mut(&N1).unwrap();
    node.host_up = true;
    sim.restart_sidecar(N1);
    sim.restart_mysqld(N1);
    sim.run_for(Duration::from_secs(15));
    assert!(sim.has_event(|e| matches!(e, Event::ErrantTransactions { node: N1, .. })));
    assert_ne!(
        sim.nodes[&N1].mysqld.source,
        Some(m),
        "must not replicate into the cluster as is"
    );
    let why = any_record(&sim)
        .quarantined
        .get(&N1)
        .cloned()
        .expect("quarantined in the record");
    assert!(why.contains("errant"), "{why}");
    assert!(sim.nodes[&N1].mysqld.read_only);
    assert_safe(&sim);
}

#[test]
fn routes_are_retried_through_an_api_outage() {
    let mut sim = Sim::started(spec());
    sim.api_down = true;
    sim.kill_mysqld(N1);
    assert!(
        sim.run_until(Duration::from_secs(20), |s| all_agree_master(s, N2)),
        "failover completes without the API"
    );
    assert!(
        sim.routes.values().all(|t| *t == N1),
        "the API is down: routes unchanged"
    );
    let j = any_record(&sim).journal.last().cloned().unwrap();
    assert!(
        matches!(&j.outcome, Outcome::Completed(r) if r.routes_pending.len() == 3),
        "{j:?}"
    );
    sim.run_for(Duration::from_secs(10));
    sim.api_down = false;
    assert!(
        sim.run_until(Duration::from_secs(8), |s| s
            .routes
            .values()
            .all(|t| *t == N2)),
        "routes follow once the API is back"
    );
    assert_safe(&sim);
}

/// Regression (chaos, epoch 3): the candidate's relay log is applied only during the
/// failover; judging the other replica against the candidate's executed set from
/// before that called every transaction still in the candidate's relay log errant,
/// and kept a healthy replica out for good.
#[test]
fn a_replica_is_not_called_errant_against_the_candidate_before_its_relay_log_is_applied() {
    let mut sim = Sim::started(spec());
    // N2's SQL thread falls behind: what it received waits in its relay log. N3 applies
    // everything, but misses the very last writes so that N2 is the candidate.
    sim.hold_sql(N2, true);
    sim.run_for(Duration::from_secs(3));
    sim.hold_io(N3, true);
    sim.run_for(Duration::from_millis(300));
    let n2 = &sim.nodes[&N2].mysqld;
    assert!(
        !n2.executed.is_superset(&n2.received),
        "N2 must have an unapplied relay log"
    );
    sim.kill_mysqld(N1);
    sim.hold_io(N3, false);
    assert!(sim.run_until(Duration::from_secs(20), |s| all_agree_master(s, N2)));
    sim.run_for(Duration::from_secs(5));
    assert!(
        !sim.has_event(|e| matches!(e, Event::ErrantTransactions { node: N3, .. })),
        "N3 holds nothing N2 lacks"
    );
    assert!(
        !any_record(&sim).quarantined.contains_key(&N3),
        "{:?}",
        any_record(&sim).quarantined
    );
    assert_eq!(sim.nodes[&N3].mysqld.source, Some(N2));
    assert!(sim.lost_acked(N2).is_empty());
    assert_safe(&sim);
}

/// A quarantine is judged again when the facts change: once the master holds the
/// transactions a returning old master was kept out for (an operator replayed them),
/// it rejoins by itself.
#[test]
fn a_quarantine_is_lifted_when_the_master_gets_the_errant_transactions() {
    let mut sim = Sim::started(spec());
    let m = fail_over_from_a_master_with_an_unsalvageable_tail(&mut sim);
    sim.nodes.get_mut(&N1).unwrap().host_up = true;
    sim.restart_sidecar(N1);
    sim.restart_mysqld(N1);
    sim.run_for(Duration::from_secs(10));
    assert!(any_record(&sim).quarantined.contains_key(&N1));
    // The operator replays N1's tail on the master under its original GTIDs.
    let tail = sim.nodes[&N1].mysqld.executed.clone();
    let master = &mut sim.nodes.get_mut(&m).unwrap().mysqld;
    master.executed = master.executed.union(&tail);
    assert!(
        sim.run_until(Duration::from_secs(15), |s| s.nodes[&N1].mysqld.source
            == Some(m)
            && !any_record(s).quarantined.contains_key(&N1)),
        "N1 is clean now and must rejoin: {:?}",
        any_record(&sim).quarantined
    );
    assert_safe(&sim);
}

/// Salvage reads an earlier failed master only when its own failover read its whole
/// binlog into the cluster: one that came back with errant transactions (its tail never
/// salvaged, its host had crashed) is never read, whoever dies next.
#[test]
fn an_errant_old_master_is_never_a_salvage_source() {
    let mut sim = Sim::started(spec());
    let m = fail_over_from_a_master_with_an_unsalvageable_tail(&mut sim);
    let errant_top = sim.nodes[&N1].mysqld.executed.seq(0);
    sim.nodes.get_mut(&N1).unwrap().host_up = true;
    sim.restart_sidecar(N1);
    sim.restart_mysqld(N1);
    sim.run_for(Duration::from_secs(10));
    assert!(any_record(&sim).quarantined.contains_key(&N1));
    // The new master's host dies too: the third server takes over, with N1 live and
    // quarantined beside it.
    sim.crash_host(m);
    let third = if m == N2 { N3 } else { N2 };
    assert!(sim.run_until(Duration::from_secs(30), |s| {
        s.nodes[&third]
            .engine
            .as_ref()
            .is_some_and(|e| e.record().master == Some(third) && e.record().failover.is_none())
    }));
    let read_n1 = sim.count_commands(|c| matches!(c, Command::Salvage { from: N1, .. }));
    assert_eq!(read_n1, 0, "N1's errant tail must never be salvaged");
    for seq in errant_top - 2..=errant_top {
        assert!(
            !multiaz_testkit::harness::in_history(&sim.nodes[&third].mysqld.executed, 1, seq),
            "errant 0-1-{seq} reached the new master"
        );
    }
    assert_safe(&sim);
}
