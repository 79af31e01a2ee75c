//! The simulation in `cargo test`: a short sweep of every scenario, determinism, and
//! every seed that once failed.

use multiaz_engine::Flavour;
use multiaz_sim::{run, RunConfig, RunReport, Scenario};
use std::time::Duration;

fn sim(scenario: Scenario, seed: u64) -> RunReport {
    run(&RunConfig {
        scenario,
        seed,
        flavour: Flavour::Mariadb,
        duration: Duration::from_secs(120),
        sabotage: None,
        log_limit: None,
        vip_mode: multiaz_engine::VipMode::Route,
    })
}

fn assert_ok(r: &RunReport) {
    assert!(
        r.verdicts.passes(r.unsafe_config.is_empty()),
        "{} seed {} failed: {:?}\nprofile: {}\nreproduce: multiaz-sim run --scenario {} --seed {}",
        r.scenario,
        r.seed,
        r.verdicts,
        r.profile,
        r.scenario,
        r.seed
    );
}

#[test]
fn master_kill_fails_over_fast_and_salvages_the_binlog_tail() {
    for seed in 1..=2 {
        let r = sim(Scenario::MasterKill, seed);
        assert_ok(&r);
        assert_eq!(r.final_epoch, 2);
        let ms = r.failover_ms.expect("a failover");
        assert!(ms <= 5_000, "failover took {ms} ms");
        assert!(
            r.timeline
                .iter()
                .any(|(_, l)| l.contains("salvaged") && !l.contains("salvaged 0")),
            "the unreplicated tail was salvaged"
        );
    }
}

#[test]
fn host_crash_fails_over() {
    for seed in 1..=2 {
        let r = sim(Scenario::HostCrash, seed);
        assert_ok(&r);
        assert!(r.final_epoch >= 2);
    }
}

#[test]
fn az_partition_fails_over_within_15_seconds() {
    for seed in 1..=2 {
        let r = sim(Scenario::AzPartition, seed);
        assert_ok(&r);
        assert!(r.failover_ms.expect("a failover") <= 15_000);
    }
}

#[test]
fn api_throttle_fails_over_within_10_seconds() {
    for seed in 1..=2 {
        let r = sim(Scenario::ApiThrottle, seed);
        assert_ok(&r);
        assert!(r.failover_ms.expect("a failover") <= 10_000);
    }
}

#[test]
fn api_outage_completes_within_5_seconds_of_the_api_returning() {
    for seed in 1..=2 {
        let r = sim(Scenario::ApiOutage, seed);
        assert_ok(&r);
        // The outage lasts 30 s from the failure.
        assert!(
            r.failover_ms.expect("a failover") <= 35_000,
            "{:?}",
            r.failover_ms
        );
    }
}

#[test]
fn mixed_faults_short_sweep() {
    for seed in 1..=6 {
        assert_ok(&sim(Scenario::Mixed, seed));
    }
}

#[test]
fn a_switchover_moves_the_master_with_a_short_write_block_and_everyone_follows() {
    for seed in 1..=3 {
        let r = sim(Scenario::Switchover, seed);
        assert_ok(&r);
        assert_eq!(r.final_epoch, 2, "one planned master change");
        let block = r.write_block_ms.expect("both masters acknowledged writes");
        // The VIP route reaches the clients up to 500 ms after the API answered (the
        // hostile world): ci/targets.toml's 1 s, as for the sweep.
        assert!(block <= 1000, "write block {block} ms");
        assert!(r.timeline.iter().any(|(_, l)| l.contains("demoted")));
    }
}

#[test]
fn a_returning_master_rejoins_when_clean_and_stays_out_with_errant_transactions() {
    let (mut clean, mut errant) = (0, 0);
    for seed in 1..=8 {
        let r = sim(Scenario::Rejoin, seed);
        assert_ok(&r);
        match r.returned_clean.expect("the old master came back") {
            true => {
                clean += 1;
                assert!(r
                    .timeline
                    .iter()
                    .any(|(_, l)| l.contains("n1 replicates from")));
            }
            false => {
                errant += 1;
                assert!(
                    r.timeline.iter().any(|(_, l)| l.contains("errant")),
                    "seed {seed}: errant transactions reported"
                );
            }
        }
    }
    assert!(
        clean > 0 && errant > 0,
        "both cases drawn: {clean} clean, {errant} errant"
    );
}

#[test]
fn mysql_flavour_fails_over_too() {
    let r = run(&RunConfig {
        scenario: Scenario::MasterKill,
        seed: 1,
        flavour: Flavour::Mysql,
        duration: Duration::from_secs(120),
        sabotage: None,
        log_limit: None,
        vip_mode: multiaz_engine::VipMode::Route,
    });
    assert_ok(&r);
    assert_eq!(r.final_epoch, 2);
}

#[test]
fn the_same_seed_gives_the_same_timeline() {
    for (scenario, seed) in [
        (Scenario::Mixed, 3),
        (Scenario::AzPartition, 7),
        (Scenario::Switchover, 2),
        (Scenario::Rejoin, 5),
    ] {
        let a = sim(scenario, seed);
        let b = sim(scenario, seed);
        assert_eq!(a.timeline, b.timeline, "{scenario} seed {seed}");
        assert_eq!(a.trace_hash, b.trace_hash);
        assert_eq!(a.acked_writes, b.acked_writes);
    }
    assert_ne!(
        sim(Scenario::Mixed, 3).trace_hash,
        sim(Scenario::Mixed, 4).trace_hash
    );
}

/// Seeds the simulation found failing, each fixed at its cause:
/// - az-partition 1: MariaDB errant transactions hidden behind the new master's own
///   sequence numbers (the set now keeps each server's last write).
/// - mixed 54: a restarted replica resumed from its failed master (skip_slave_start),
///   and the errant check ignored the relay log.
/// - mixed 40, 152: a candidate died during promotion and the failover gave up
///   (now: retried in a new epoch).
/// - mixed 32, 214: a lost segment stalled a replication stream and the peer streams
///   for good (now: heartbeat replies, and datagrams for peers).
/// - mixed 160: every replica ended with errant transactions (now reported as
///   diverged; writes wait for an operator).
/// - mixed 335, 452: a failed master with errant transactions was repointed by the next
///   failover (now quarantined until checked).
/// - api-outage 1: a route retry deadline in the past made the driver spin.
/// - mixed 758: salvage into a candidate that had already written its own
///   transactions spliced two histories (now: exact-history filter, stop at a conflict).
/// - mixed 999: errant transactions of a server the master never heard from went
///   unnoticed (now: every server's last write counts).
#[test]
fn regression_seeds() {
    assert_ok(&sim(Scenario::AzPartition, 1));
    assert_ok(&sim(Scenario::ApiOutage, 1));
    for seed in [32, 40, 54, 152, 160, 214, 219, 335, 452, 758, 999] {
        assert_ok(&sim(Scenario::Mixed, seed));
    }
    // Issue 14, found on the hostile world: the candidate of a failover died and the
    // only other live servers were the fenced old master and a quarantined one; every
    // new epoch kept the fenced old master a suspect, so none ever had a candidate.
    // 76: a replica crashed right after acknowledging (the semi-sync promise is judged
    // when the server acknowledges, not when the client hears of it).
    for seed in [76, 749, 931] {
        assert_ok(&sim(Scenario::Mixed, seed));
    }
    // 2, 4: the VIP moved to the candidate when it was committed, before it had applied
    // its relay log (seconds of lag): clients read stale data through it.
    for seed in [2, 4] {
        assert_ok(&sim(Scenario::Mixed, seed));
    }
    // 549: a coordinator lost its role with a route call outstanding (EC2 answers
    // slowly on the hostile world); the call's late failure scheduled a retry only a
    // coordinator makes, the engine's deadline stayed in the past and the driver spun
    // at that instant (the run never ended; a real sidecar would burn a core).
    assert_ok(&sim(Scenario::Mixed, 549));
}

/// The hostile world is drawn per seed, apart from the faults; seeds whose settings
/// `multiaz check` fails are recognised as such.
#[test]
fn mixed_seeds_draw_server_settings_and_some_fail_the_check() {
    let unsafe_seeds = (1..=40)
        .filter(|s| {
            !multiaz_sim::scenario::Plan::draw(Scenario::Mixed, *s)
                .hostility
                .check_failures()
                .is_empty()
        })
        .count();
    assert!((2..=25).contains(&unsafe_seeds), "{unsafe_seeds} of 40");
    let plan = multiaz_sim::scenario::Plan::draw(Scenario::MasterKill, 1);
    assert!(
        plan.hostility.check_failures().is_empty(),
        "named scenarios run on the recommended settings"
    );
}

/// Regression (issue 14): a master whose mysqld restarted with its configured settings
/// (semi-sync source off) and stayed master (failover paused) was made writable with
/// read_only off only, and acknowledged writes no replica had.
#[test]
fn a_restarted_master_is_made_writable_with_semi_sync_on() {
    for seed in 1..=3 {
        let r = sim(Scenario::PausedRestart, seed);
        assert_ok(&r);
        assert_eq!(r.final_epoch, 1, "paused: no failover");
        assert!(
            r.timeline.iter().any(|(_, l)| l.contains("writable again")),
            "the restarted master was made writable again"
        );
    }
}

/// The coordinator loses its peers as its mysqld dies: the failover it begins cannot be
/// committed, so it must not act on it; the other two sidecars fail over.
#[test]
fn a_coordinator_without_peers_does_not_act_on_its_failover() {
    let mut began_alone = 0;
    for seed in 1..=4 {
        let r = sim(Scenario::PeerCut, seed);
        assert_ok(&r);
        // Not vacuous: n1 did decide on a failover while cut off from its peers.
        let cut = r
            .timeline
            .iter()
            .find(|(_, l)| l.contains("loses every peer"))
            .map(|(t, _)| *t);
        if r.timeline.iter().any(|(t, l)| {
            cut.is_some_and(|c| *t >= c)
                && l.starts_with("n1 failover to epoch")
                && l.contains("begins")
        }) {
            began_alone += 1;
        }
        assert_ne!(r.final_master.map(|m| m.0), Some(1), "seed {seed}");
        let cut_off_acts = r.timeline.iter().any(|(_, l)| {
            l.starts_with("n1 ") && (l.contains(" promoted") || l.contains(" candidate "))
        });
        assert!(
            !cut_off_acts,
            "seed {seed}: n1 acted without its peers:\n{:#?}",
            r.timeline
        );
    }
    assert!(began_alone > 0, "n1 never began a failover while cut off");
}

/// The EC2 model is as hostile as README says: reads of a route lag its change, answers
/// are lost, and throttling comes from the account's token buckets; the sidecar's own
/// route code (retry, read-back) runs against it and still moves every route.
#[test]
fn the_ec2_model_lags_loses_answers_and_throttles() {
    let (mut stale, mut lost) = (0, 0);
    for seed in 1..=6 {
        let r = sim(Scenario::MasterKill, seed);
        assert_ok(&r);
        stale += r.hostile_events.ec2_stale_route_reads;
        lost += r.hostile_events.ec2_lost_answers;
    }
    assert!(stale > 0, "no DescribeRouteTables answer was stale");
    assert!(lost > 0, "no applied call lost its answer");
    let r = sim(Scenario::ApiThrottle, 1);
    assert_ok(&r);
    assert!(r.hostile_events.ec2_throttled > 0, "{:?}", r.hostile_events);
}
