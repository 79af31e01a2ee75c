//! The hostile parts of the simulated world, drawn per seed: each server's durability
//! and semi-sync settings and its replication lag, and how the EC2 data plane lags the
//! API. Drawn from a stream of their own, so that a seed's fault plan is the same with
//! and without them.
//!
//! What the model does with them:
//! - `sync_binlog` / `innodb_flush_log_at_trx_commit` other than 1: the OS writes the
//!   binlog out about once a second; a host crash loses what was written since (the
//!   server's binlog and executed set both lose that tail — with the binlog as the XA
//!   coordinator, a prepared InnoDB transaction whose binlog event was lost rolls
//!   back, and one whose redo was lost is not there either: either way the tail is
//!   gone from that server).
//! - a semi-sync source timeout: a commit that waited that long for a replica is
//!   acknowledged anyway, and the source stays asynchronous until a replica
//!   acknowledges again (MariaDB's and MySQL's fallback).
//! - replication lag: the SQL thread applies a received transaction only after the
//!   server's lag (slow disks, large transactions).
//! - the VIP route reaches the data plane some time after ReplaceRoute answered, and
//!   DescribeRouteTables shows the old target for a time of its own (eventual
//!   consistency); an applied call's answer may be lost (the caller retries).
//!
//! A server whose settings `multiaz check` would fail is recorded as such: what the
//! product promises holds on a configuration that passes the check; on one that does
//! not, what was lost is reported apart, as the proof of why the check fails it.

use multiaz_engine::NodeId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerConfig {
    pub sync_binlog: bool,
    pub flush_at_commit: bool,
    /// `None`: longer than any run (the recommended day).
    pub semi_sync_timeout_ms: Option<u64>,
    pub apply_lag_ms: u64,
}

impl ServerConfig {
    /// `sidecar/examples/mariadb.cnf`, with a 2 ms apply lag.
    pub fn recommended() -> Self {
        ServerConfig {
            sync_binlog: true,
            flush_at_commit: true,
            semi_sync_timeout_ms: None,
            apply_lag_ms: 2,
        }
    }

    /// How long a received transaction waits before the SQL thread applies it.
    pub fn apply_lag(&self) -> Duration {
        Duration::from_millis(self.apply_lag_ms)
    }

    /// A crash loses nothing this server wrote.
    pub fn durable(&self) -> bool {
        self.sync_binlog && self.flush_at_commit
    }

    /// What `multiaz check` fails on this server (its `check_durability`).
    pub fn check_failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.sync_binlog {
            out.push("sync_binlog = 0".to_string());
        }
        if !self.flush_at_commit {
            out.push("innodb_flush_log_at_trx_commit = 2".to_string());
        }
        if let Some(ms) = self.semi_sync_timeout_ms {
            out.push(format!("semi-sync source timeout {ms} ms"));
        }
        out
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Hostility {
    pub servers: BTreeMap<NodeId, ServerConfig>,
    /// How long a route change takes to reach the data plane, drawn per change in
    /// this range (ms). AWS documents no figure (its API is eventually consistent:
    /// docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html); this range
    /// is this project's assumption.
    pub route_delay_ms: (u64, u64),
    /// How long DescribeRouteTables keeps answering the old target after a change,
    /// drawn per change in this range (ms). AWS gives no bound ("might not be
    /// immediately visible"; its advice is to retry reads with backoff from "a couple of
    /// seconds"): this range is this project's assumption too.
    pub describe_delay_ms: (u64, u64),
    /// Share of applied EC2 calls whose answer is lost (the caller times out).
    pub lost_answer: f64,
}

impl Hostility {
    /// The world every named scenario runs in: recommended settings, a short apply
    /// lag, route changes that take up to half a second to reach the data plane and up
    /// to a second to show in reads, and a few lost answers.
    pub fn baseline(servers: impl Iterator<Item = NodeId>) -> Hostility {
        Hostility {
            servers: servers.map(|n| (n, ServerConfig::recommended())).collect(),
            route_delay_ms: (50, 500),
            describe_delay_ms: (0, 1_000),
            lost_answer: 0.02,
        }
    }

    /// `mixed`: per server, a replication lag from 2 ms to 3 s (log-uniform), and with
    /// a chance of one in twelve one setting that `multiaz check` fails; EC2 lags as in
    /// the baseline, or up to 2 s (its reads up to 4 s), and loses up to one answer in
    /// ten.
    pub fn draw(seed: u64, servers: impl Iterator<Item = NodeId>) -> Hostility {
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0xa076_1d64_78bd_642f) ^ 0x4057);
        let servers = servers
            .map(|n| {
                let mut c = ServerConfig::recommended();
                c.apply_lag_ms = (2.0 * 1500f64.powf(rng.random::<f64>())) as u64;
                if rng.random::<f64>() < 1.0 / 12.0 {
                    match rng.random_range(0..3) {
                        0 => c.sync_binlog = false,
                        1 => c.flush_at_commit = false,
                        _ => c.semi_sync_timeout_ms = Some(rng.random_range(1_000..10_000)),
                    }
                }
                (n, c)
            })
            .collect();
        let slow = rng.random::<bool>();
        Hostility {
            servers,
            route_delay_ms: if slow { (100, 2_000) } else { (50, 500) },
            describe_delay_ms: if slow { (0, 4_000) } else { (0, 1_000) },
            lost_answer: rng.random::<f64>() * 0.1,
        }
    }

    /// Every setting `multiaz check` would fail, by server.
    pub fn check_failures(&self) -> Vec<String> {
        self.servers
            .iter()
            .flat_map(|(n, c)| {
                c.check_failures()
                    .into_iter()
                    .map(move |f| format!("{n}: {f}"))
            })
            .collect()
    }

    pub fn route_delay(&self, unit: f64) -> Duration {
        within(self.route_delay_ms, unit)
    }

    pub fn describe_delay(&self, unit: f64) -> Duration {
        within(self.describe_delay_ms, unit)
    }
}

/// The point `unit` of the way through a range of milliseconds.
fn within((lo, hi): (u64, u64), unit: f64) -> Duration {
    Duration::from_millis(lo + ((hi - lo) as f64 * unit) as u64)
}
