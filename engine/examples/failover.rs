//! A failover you can watch: three database hosts in three AZs, run in-process on
//! simulated time, with a client writing through the VIP.
//!
//!     cargo run -p multiaz-engine --example failover -- [master-kill|az-partition|coordinator-crash]

use multiaz_engine::{Event, NodeId, Severity};
use multiaz_testkit::harness::{spec, Sim};
use std::process::ExitCode;
use std::time::Duration;

const SCENARIOS: &str = "master-kill, az-partition, coordinator-crash";

fn main() -> ExitCode {
    let scenario = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "master-kill".into());
    if matches!(scenario.as_str(), "-h" | "--help") {
        println!("usage: failover [SCENARIO]\n\nScenarios: {SCENARIOS} (default master-kill).");
        return ExitCode::SUCCESS;
    }
    let mut sim = Sim::started(spec());
    let master = NodeId(1);
    let t0 = sim.now;
    println!(
        "cluster up: master {master}, replicas n2 n3, {} writes acknowledged",
        sim.acked.len()
    );
    match scenario.as_str() {
        "master-kill" => {
            println!("{t0:?} FAULT mysqld on {master} killed (host and sidecar live)");
            sim.kill_mysqld(master);
        }
        "az-partition" => {
            println!("{t0:?} FAULT the AZ of {master} is cut off from the others");
            sim.isolate(master);
        }
        "coordinator-crash" => {
            println!(
                "{t0:?} FAULT mysqld on {master} killed; the coordinator will die mid-failover"
            );
            sim.kill_mysqld(master);
            let coordinator = sim.coordinator().expect("a coordinator");
            sim.run_until(Duration::from_secs(10), |s| !s.promotions().is_empty());
            println!(
                "{:?} FAULT coordinator {coordinator}'s sidecar crashes",
                sim.now
            );
            sim.crash_sidecar(coordinator);
        }
        other => {
            eprintln!("unknown scenario {other:?}; choose one of: {SCENARIOS}");
            return ExitCode::from(2);
        }
    }
    let acked_before = sim.acked.len();
    sim.run_for(Duration::from_secs(20));
    for (t, n, e) in &sim.events {
        if *t < t0 || e.severity() == Severity::Debug {
            continue;
        }
        println!("{t:?} {n} {}", describe(e));
    }
    // Heal the network and read the record where the cluster now stands.
    sim.heal();
    sim.run_for(Duration::from_secs(5));
    let record = sim
        .record(sim.coordinator().expect("a coordinator"))
        .clone();
    let new_master = record.master;
    let first_write_after = sim.acked.get(acked_before).map(|_| ());
    println!();
    println!(
        "epoch {}, master {:?}, writable now {:?}",
        record.epoch,
        new_master,
        sim.writable()
    );
    let lost = new_master.map(|m| sim.lost_acked(m)).unwrap_or_default();
    println!(
        "acknowledged writes: {} ({} after the fault); lost: {}; moments with two writable servers: {}",
        sim.acked.len(),
        sim.acked.len() - acked_before,
        lost.len(),
        sim.two_writers.len()
    );
    if let Some(j) = record.journal.last() {
        println!("journal: {:?}", j.outcome);
    }
    let ok = lost.is_empty() && sim.two_ackers.is_empty() && first_write_after.is_some();
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn describe(e: &Event) -> String {
    match e {
        Event::FailoverCompleted { epoch, new_master, report } => format!(
            "FailoverCompleted epoch {epoch}: new master {new_master} in {} ms (skipped {:?}, salvage {:?})",
            report.duration_ms, report.skipped, report.salvage
        ),
        other => format!("{other:?}"),
    }
}
