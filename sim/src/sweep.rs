//! A sweep's tally: what many seeds' runs add up to, as one JSON object or a summary.

use crate::run::{percentiles, FenceFailures, RunReport};
use crate::scenario::Scenario;
use crate::world::HostileEvents;
use multiaz_engine::{Sabotage, VipMode};
use serde_json::{json, Value};

#[derive(Debug)]
pub struct Tally {
    pub scenario: Scenario,
    pub vip_mode: VipMode,
    pub seeds: u64,
    pub sabotage: Option<Sabotage>,
    pub failed: Vec<u64>,
    /// The first seed that caught the sabotage, and the invariants that did.
    pub caught: Option<(u64, Vec<&'static str>)>,
    failover: Vec<u64>,
    acked: usize,
    lost_acked: usize,
    lost_binlog: usize,
    split: usize,
    sim_s: f64,
    diverged: Vec<Value>,
    /// Seeds whose settings `multiaz check` fails: what went wrong there is the proof
    /// of why the check fails them, not a failure of the product.
    unsafe_seeds: Vec<Value>,
    write_block: Vec<u64>,
    /// Each run's timeline fingerprint, in seed order: a refactoring that claims to
    /// change no behaviour must leave every one of them as it was.
    trace_hashes: Vec<String>,
    returned_clean: u64,
    returned_errant: u64,
    hostile: HostileEvents,
    fence_failures: FenceFailures,
}

impl Tally {
    pub fn new(
        scenario: Scenario,
        vip_mode: VipMode,
        seeds: u64,
        sabotage: Option<Sabotage>,
    ) -> Self {
        Tally {
            scenario,
            vip_mode,
            seeds,
            sabotage,
            failed: Vec::new(),
            caught: None,
            failover: Vec::new(),
            acked: 0,
            lost_acked: 0,
            lost_binlog: 0,
            split: 0,
            sim_s: 0.0,
            diverged: Vec::new(),
            unsafe_seeds: Vec::new(),
            write_block: Vec::new(),
            trace_hashes: Vec::new(),
            returned_clean: 0,
            returned_errant: 0,
            hostile: HostileEvents::default(),
            fence_failures: FenceFailures::default(),
        }
    }

    /// Counts one run; returns whether it failed.
    pub fn add(&mut self, r: &RunReport) -> bool {
        let seed = r.seed;
        self.acked += r.acked_writes;
        if r.unsafe_config.is_empty() {
            self.lost_acked += r.verdicts.lost_acked_writes.len();
            self.lost_binlog += r.verdicts.lost_binlog_events.len();
            self.split += r.verdicts.split_brain_ms.len();
        }
        self.sim_s += r.sim_seconds;
        self.hostile.add(&r.hostile_events);
        self.fence_failures.add(&r.fence_failures);
        if r.diverged {
            self.diverged.push(json!({
                "seed": seed,
                "kept_out": r.errant_kept_out,
            }));
        }
        if !r.unsafe_config.is_empty() {
            let v = &r.verdicts;
            self.unsafe_seeds.push(json!({
                "seed": seed,
                "settings": r.unsafe_config,
                "ok": v.ok(),
                "lost_acked_writes": v.lost_acked_writes.len(),
                "unreplicated_acks": v.unreplicated_acks.len(),
                "lost_binlog_events": v.lost_binlog_events.len(),
            }));
        }
        self.failover.extend(r.failover_ms);
        self.write_block.extend(r.write_block_ms);
        self.trace_hashes.push(format!("{:016x}", r.trace_hash));
        match r.returned_clean {
            Some(true) => self.returned_clean += 1,
            Some(false) => self.returned_errant += 1,
            None => {}
        }
        let failed = !r.verdicts.passes(r.unsafe_config.is_empty());
        if failed {
            self.failed.push(seed);
            if self.sabotage.is_some() && self.caught.is_none() {
                self.caught = Some((seed, r.verdicts.broken()));
            }
        }
        failed
    }

    pub fn json(&self, wall_s: f64) -> Value {
        let mut out = json!({
            "scenario": self.scenario.to_string(),
            "vip_mode": self.vip_mode.name(),
            "seeds": self.seeds,
            "failed_seeds": self.failed,
            "failover_ms": percentiles(self.failover.clone()),
            // Every run's failover time (runs with a failover, in seed order).
            "failover_ms_each": self.failover,
            "acked_writes": self.acked,
            "lost_acked_writes": self.lost_acked,
            "lost_binlog_events": self.lost_binlog,
            "split_brain": self.split,
            "diverged_seeds": self.diverged,
            "unsafe_config_seeds": self.unsafe_seeds,
            // How often the hostile world struck, over all seeds.
            "hostile_events": self.hostile,
            // read_only changes that failed, over all seeds (each one a warning and a
            // `multiaz_fence_failures` count on a real sidecar).
            "fence_failures": self.fence_failures,
            "trace_hashes": self.trace_hashes,
            "sim_seconds": self.sim_s,
            "wall_seconds": wall_s,
        });
        if let Some(s) = self.sabotage {
            out["sabotage"] = json!(s.name());
            out["caught"] = json!(self.caught.is_some());
            if let Some((seed, by)) = &self.caught {
                out["caught_at_seed"] = json!(seed);
                out["caught_by"] = json!(by);
            }
        }
        if self.scenario == Scenario::Switchover {
            // No write could be acknowledged in this window, per run.
            out["write_block_ms"] = json!(percentiles(self.write_block.clone()));
            out["write_block_ms_each"] = json!(self.write_block);
        }
        if self.scenario == Scenario::Rejoin {
            out["returned_clean"] = json!(self.returned_clean);
            out["returned_errant"] = json!(self.returned_errant);
        }
        out
    }

    pub fn summary(&self, wall_s: f64) -> String {
        let (scenario, seeds) = (self.scenario, self.seeds);
        let mut lines = vec![format!(
            "scenario {scenario}: {seeds} seeds, {} failed {:?}",
            self.failed.len(),
            self.failed
        )];
        if let Some(s) = self.sabotage {
            lines.push(match &self.caught {
                Some((seed, by)) => format!(
                    "sabotage {}: caught at seed {seed} by {}",
                    s.name(),
                    by.join(", ")
                ),
                None => format!("sabotage {}: NOT caught", s.name()),
            });
        }
        let p = percentiles(self.failover.clone());
        lines.push(format!("failover (fault to first acknowledged write), over {} runs with a failover: p50 {} ms, p99 {} ms, max {} ms", self.failover.len(), p["p50"], p["p99"], p["max"]));
        lines.push(format!(
            "acknowledged writes {}, lost {}; lost binlog events {}; split-brain instants {}",
            self.acked, self.lost_acked, self.lost_binlog, self.split
        ));
        if scenario == Scenario::Switchover {
            let w = percentiles(self.write_block.clone());
            lines.push(format!("write block (no write acknowledged), over {} runs: p50 {} ms, p99 {} ms, max {} ms", self.write_block.len(), w["p50"], w["p99"], w["max"]));
        }
        if scenario == Scenario::Rejoin {
            lines.push(format!(
                "old master returned clean (rejoined) {}, with errant transactions (kept out) {}",
                self.returned_clean, self.returned_errant
            ));
        }
        lines.push(format!("runs that ended with every replica holding errant transactions (writes wait for an operator): {}", json!(self.diverged)));
        let broke = self
            .unsafe_seeds
            .iter()
            .filter(|u| u["ok"] == false)
            .count();
        lines.push(format!("runs on settings `multiaz check` fails: {}, of which {broke} broke a promise (not counted as failed)", self.unsafe_seeds.len()));
        lines.push(format!(
            "{:.0} simulated seconds in {wall_s:.1} s ({:.0}x)",
            self.sim_s,
            self.sim_s / wall_s.max(1e-9)
        ));
        lines.join("\n")
    }
}
