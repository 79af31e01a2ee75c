//! The simulated world's state that outlives any host's software: each database host's
//! disk (binlog, relay log) and mysqld process state, the VPC's route tables (the data
//! plane), every acknowledged write, and the timeline.
//!
//! Software on the hosts reaches other hosts' state only over the simulated network;
//! the shared state here stands for what is on a host's own disk or in its own process.

use crate::hostile::{Hostility, ServerConfig};
use multiaz_engine::gtid::Uuid;
use multiaz_engine::{
    ClusterSpec, DurableState, Event, Flavour, GtidSet, LogEntry, NodeId, OperatorRequest,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::Notify;

pub fn host_name(n: NodeId) -> String {
    format!("db{}", n.0)
}

/// The network interface and instance ids the model EC2 knows a node by.
pub fn eni_id(n: NodeId) -> String {
    format!("eni-{}", n.0)
}

pub fn instance_id(n: NodeId) -> String {
    format!("i-{}", n.0)
}

/// The node behind an interface or instance id (`eni-3`, `i-3`).
pub fn node_of(id: &str) -> Option<NodeId> {
    let n = id.strip_prefix("eni-").or_else(|| id.strip_prefix("i-"))?;
    n.parse().ok().map(NodeId)
}

pub const MYSQL_PORT: u16 = 3306;
/// The VIP's port on a database host: a connection to it is what reaches the host
/// through a route table (`mysqld::vip`), where the host's forwarding applies.
pub const VIP_PORT: u16 = 3307;
pub const PEER_PORT: u16 = 7001;
pub const SALVAGE_PORT: u16 = 7100;
pub const EC2_PORT: u16 = 443;
pub const EC2_HOST: &str = "ec2";
/// How long replication tolerates silence from the other end (the replica's
/// slave_net_timeout, and the source's wait for heartbeat replies).
pub const REPLICATION_TIMEOUT: Duration = Duration::from_secs(2);

pub use multiaz_engine::gtid::Gtid;

/// The UUID of model server `source` (MySQL flavour).
pub fn server_uuid(source: u8) -> Uuid {
    let mut b = [0x5au8; 16];
    b[15] = source;
    Uuid(b)
}

/// In `set` as this very transaction, not merely its sequence number: the server
/// that wrote it had written up to here in `set`'s history (binlog-state check).
pub fn in_history(gtid: &Gtid, set: &GtidSet) -> bool {
    match (gtid, set) {
        (
            Gtid::Mariadb {
                domain,
                server,
                seq,
            },
            GtidSet::Mariadb(s),
        ) => s.domain(*domain).is_some_and(|d| {
            d.seqs.contains(*seq) && d.servers.get(server).is_some_and(|last| last >= seq)
        }),
        _ => gtid.is_in(set),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub gtid: Gtid,
    /// Which client wrote it and its own sequence number.
    pub client: u32,
    pub n: u64,
}

/// A model mysqld: its process state and its disk.
#[derive(Debug)]
pub struct Mysqld {
    pub flavour: Flavour,
    pub server_id: u32,
    pub alive: bool,
    /// Bumped whenever the process dies or starts: connections of an older
    /// incarnation close.
    pub incarnation: u64,
    pub read_only: bool,
    pub semi_sync_source: bool,
    /// The binlog: every executed transaction in order (log_slave_updates on).
    pub binlog: Vec<Txn>,
    pub executed: GtidSet,
    /// Received, not yet applied: (arrival, txn).
    pub relay: VecDeque<(Duration, Txn)>,
    pub source: Option<NodeId>,
    /// The IO thread is configured to run (START SLAVE).
    pub io_running: bool,
    /// The IO thread is connected to its source right now.
    pub io_connected: bool,
    /// Transactions a replica acknowledged receiving (semi-sync).
    pub acked: BTreeSet<Gtid>,
    /// Its settings (durability, semi-sync timeout, lag).
    pub config: ServerConfig,
    /// Binlog entries on disk for sure: all of them when the binlog is synced at each
    /// commit, otherwise those written before the OS last wrote it out.
    pub synced: usize,
    /// Semi-sync gave up waiting (its timeout) and acknowledges without a replica
    /// until one acknowledges again.
    pub async_fallback: bool,
    /// The SQL thread stopped on this error (gtid_strict_mode: a transaction whose
    /// sequence number its domain is already past) until the replica is pointed at a
    /// source again.
    pub sql_error: Option<String>,
}

impl Mysqld {
    pub fn new(flavour: Flavour, server_id: u32, master: Option<NodeId>) -> Self {
        Mysqld {
            flavour,
            server_id,
            alive: true,
            incarnation: 1,
            read_only: master.is_some(),
            semi_sync_source: master.is_none(),
            binlog: Vec::new(),
            executed: GtidSet::empty(flavour),
            relay: VecDeque::new(),
            source: master,
            io_running: master.is_some(),
            io_connected: false,
            acked: BTreeSet::new(),
            config: ServerConfig::recommended(),
            synced: 0,
            async_fallback: false,
            sql_error: None,
        }
    }

    /// The OS writes out what the server wrote (about once a second).
    pub fn os_flush(&mut self) {
        self.synced = self.binlog.len();
    }

    /// The host crashes: what was not on disk is gone (see `hostile`), and so is the
    /// relay log. Returns the transactions lost.
    pub fn crash(&mut self) -> Vec<Txn> {
        let lost = if self.config.durable() {
            Vec::new()
        } else {
            self.binlog.split_off(self.synced.min(self.binlog.len()))
        };
        if !lost.is_empty() {
            let mut executed = GtidSet::empty(self.flavour);
            for t in &self.binlog {
                t.gtid.add_to(&mut executed);
            }
            self.executed = executed;
        }
        self.relay.clear();
        self.sql_error = None;
        self.kill();
        lost
    }

    pub fn received(&self) -> GtidSet {
        let mut r = self.executed.clone();
        for (_, t) in &self.relay {
            t.gtid.add_to(&mut r);
        }
        r
    }

    /// Holds this very transaction (same server, not merely the same sequence number),
    /// executed or in the relay log.
    pub fn has_exactly(&self, g: &Gtid) -> bool {
        in_history(g, &self.executed) || self.relay.iter().any(|(_, t)| t.gtid == *g)
    }

    /// The SQL thread applies the next relay log transaction: skipped when this very
    /// transaction is executed already; stopped with an error, as gtid_strict_mode
    /// stops it, when its sequence number is not above its domain's last.
    pub fn apply_relayed(&mut self, txn: Txn) -> Result<(), Txn> {
        if in_history(&txn.gtid, &self.executed) {
            return Ok(());
        }
        // Strict mode refuses a sequence number at or below the domain's last, whether
        // or not that very number is taken (MySQL's GTIDs have no such order).
        let out_of_order = match (&txn.gtid, &self.executed) {
            (Gtid::Mariadb { domain, seq, .. }, GtidSet::Mariadb(s)) => *seq <= s.seq(*domain),
            _ => false,
        };
        if out_of_order {
            self.sql_error = Some(format!(
                "gtid_strict_mode: {} is out of order: its domain is past its sequence number",
                txn.gtid
            ));
            return Err(txn);
        }
        self.apply(txn);
        Ok(())
    }

    /// Appends a transaction to the binlog unless it is already executed.
    pub fn apply(&mut self, txn: Txn) -> bool {
        if txn.gtid.is_in(&self.executed) {
            return false;
        }
        txn.gtid.add_to(&mut self.executed);
        self.binlog.push(txn);
        true
    }

    /// The GTID this server gives its next own transaction.
    pub fn next_gtid(&self) -> Gtid {
        match &self.executed {
            GtidSet::Mariadb(s) => Gtid::Mariadb {
                domain: 0,
                server: self.server_id,
                seq: s.seq(0) + 1,
            },
            GtidSet::Mysql(s) => {
                let uuid = server_uuid(self.server_id as u8);
                let last = s
                    .sources()
                    .find(|((u, t), _)| *u == uuid && t.is_untagged())
                    .and_then(|(_, i)| i.last())
                    .unwrap_or(0);
                Gtid::mysql(uuid, last + 1)
            }
        }
    }

    pub fn kill(&mut self) {
        self.alive = false;
        self.incarnation += 1;
        self.io_connected = false;
    }

    /// mysqld starts again with the configuration multiaz asks for: `read_only=ON` and
    /// `skip_slave_start` (the sidecars decide whom it replicates from: its old source
    /// may be a failed master with errant transactions). The relay log is applied.
    pub fn start(&mut self) {
        if !self.alive {
            self.alive = true;
            self.incarnation += 1;
            self.read_only = true;
            self.semi_sync_source = false;
            self.async_fallback = false;
            self.io_running = false;
            // relay_log_recovery (MySQL), GTID reconnect (MariaDB): the relay log is
            // fetched again from the source, not applied as it was.
            self.relay.clear();
            self.sql_error = None;
        }
    }
}

/// One of the account's EC2 token buckets (docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html):
/// `size` tokens, `refill` more each second; a call that finds none is answered
/// RequestLimitExceeded.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub size: f64,
    pub refill: f64,
    /// Tokens as of `refilled_at`.
    pub tokens: f64,
    pub refilled_at: Duration,
}

impl Bucket {
    /// A mutating action (ReplaceRoute, CreateRoute, StopInstances): 50, 5 a second.
    pub fn mutating() -> Self {
        Bucket::full(50.0, 5.0)
    }

    /// A non-mutating action (DescribeRouteTables, DescribeInstanceAttribute): 100, 20
    /// a second.
    pub fn non_mutating() -> Self {
        Bucket::full(100.0, 20.0)
    }

    fn full(size: f64, refill: f64) -> Self {
        Bucket {
            size,
            refill,
            tokens: size,
            refilled_at: Duration::ZERO,
        }
    }

    /// Refills for the time since the last call, of which others take `others`.
    fn refill(&mut self, now: Duration, others: f64) {
        let dt = now.saturating_sub(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + self.refill * (1.0 - others) * dt).min(self.size);
        self.refilled_at = now;
    }

    fn take(&mut self, now: Duration, others: f64) -> bool {
        self.refill(now, others);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The EC2 actions the model API serves, each with its own token bucket.
pub const EC2_ACTIONS: [(&str, bool); 5] = [
    ("ReplaceRoute", true),
    ("CreateRoute", true),
    ("StopInstances", true),
    ("DescribeRouteTables", false),
    ("DescribeInstanceAttribute", false),
];

/// Counts of the hostile world's events in a run: evidence that the model's
/// hostility happens, not only that it exists.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostileEvents {
    /// A replica's SQL thread stopped on an out-of-order GTID.
    pub sql_thread_stops: u64,
    pub ec2_calls: u64,
    pub ec2_throttled: u64,
    /// DescribeRouteTables answers that showed an older target than the last applied.
    pub ec2_stale_route_reads: u64,
    /// Applied calls whose answer was lost.
    pub ec2_lost_answers: u64,
}

impl HostileEvents {
    pub fn add(&mut self, o: &HostileEvents) {
        self.sql_thread_stops += o.sql_thread_stops;
        self.ec2_calls += o.ec2_calls;
        self.ec2_throttled += o.ec2_throttled;
        self.ec2_stale_route_reads += o.ec2_stale_route_reads;
        self.ec2_lost_answers += o.ec2_lost_answers;
    }
}

/// The model EC2 API's behaviour, changed by faults.
#[derive(Debug, Clone)]
pub struct Ec2State {
    /// The account's bucket for each action: AWS gives every API action a bucket of its
    /// own, sized by the action's category (mutating or non-mutating).
    pub buckets: BTreeMap<&'static str, Bucket>,
    /// The share of each bucket's refill that other clusters in the same account use
    /// (an AZ outage: everyone fails over at once).
    pub others: f64,
    /// Every call fails with ServiceUnavailable.
    pub outage: bool,
}

impl Default for Ec2State {
    fn default() -> Self {
        Ec2State {
            buckets: EC2_ACTIONS
                .iter()
                .map(|&(action, mutating)| {
                    let bucket = if mutating {
                        Bucket::mutating()
                    } else {
                        Bucket::non_mutating()
                    };
                    (action, bucket)
                })
                .collect(),
            others: 0.0,
            outage: false,
        }
    }
}

impl Ec2State {
    /// Other clusters in the account take `share` of the refill from now on; when they
    /// start, their burst has emptied the buckets.
    pub fn set_others(&mut self, share: f64, now: Duration) {
        for b in self.buckets.values_mut() {
            b.refill(now, self.others);
            if share > 0.0 && self.others == 0.0 {
                b.tokens = 0.0;
            }
        }
        self.others = share.clamp(0.0, 1.0);
    }

    /// One call of `action` at `now`: a token from its bucket, or throttled.
    pub fn take(&mut self, action: &str, now: Duration) -> bool {
        let others = self.others;
        self.buckets
            .get_mut(action)
            .is_some_and(|b| b.take(now, others))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Acked {
    pub at: Duration,
    pub client: u32,
    /// The client's own sequence number of this write.
    pub n: u64,
    pub server: NodeId,
    pub gtid: Gtid,
}

impl std::fmt::Display for Acked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (client {} write {}, acked by {} at {:?})",
            self.gtid, self.client, self.n, self.server, self.at
        )
    }
}

/// What each sidecar last believed, for invariants and the timeline.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub epoch: u64,
    pub master: Option<NodeId>,
    pub failover: bool,
    pub coordinator: bool,
    /// Servers the record keeps out of replication.
    pub quarantined: BTreeSet<NodeId>,
}

pub struct WorldState {
    pub spec: ClusterSpec,
    pub mysqld: BTreeMap<NodeId, Mysqld>,
    /// Route table → node whose interface the VIP route points at.
    pub routes: BTreeMap<String, NodeId>,
    /// Host → node its sidecar forwards VIP traffic to (the kernel's rules; a reboot
    /// clears them).
    pub forward: BTreeMap<NodeId, NodeId>,
    pub durable: BTreeMap<NodeId, DurableState>,
    pub ec2: Ec2State,
    /// Instances the EC2 API was asked to stop; the simulation loop crashes them.
    pub stop_requests: Vec<NodeId>,
    pub acked: Vec<Acked>,
    pub views: BTreeMap<NodeId, View>,
    pub timeline: Vec<(Duration, String)>,
    pub events: Vec<(Duration, NodeId, Event)>,
    pub rng: ChaCha8Rng,
    /// Operator requests waiting for a sidecar's admin API to pick them up.
    pub operator: Vec<(NodeId, OperatorRequest)>,
    pub hostility: Hostility,
    /// A safety mechanism switched off in this run (negative controls).
    pub sabotage: Option<multiaz_engine::Sabotage>,
    /// The raft log limit of this run's sidecars (`RunConfig::log_limit`).
    pub log_limit: Option<u64>,
    /// Read-backs through the VIP that did not see the client's newest acknowledged
    /// write: (when, client, server read, newest seen, newest acknowledged).
    pub stale_reads: Vec<(Duration, u32, NodeId, u64, u64)>,
    /// Transactions a server acknowledged while no other server had received them.
    pub unreplicated: BTreeSet<Gtid>,
    /// Route changes per table so far: a delayed data-plane update lands only if no
    /// later change overtook it.
    pub route_changes: BTreeMap<String, u64>,
    /// Route table → node DescribeRouteTables answers: the control plane's view, which
    /// lags ReplaceRoute as the data plane does (eventual consistency).
    pub described: BTreeMap<String, NodeId>,
    /// Route table → node ReplaceRoute last set (what the reads and the data plane
    /// converge to).
    pub applied: BTreeMap<String, NodeId>,
    /// How often the hostile parts of the world struck.
    pub hostile: HostileEvents,
    /// Sidecars whose peer messages are all dropped (fault `CutPeers`).
    pub peers_cut: BTreeSet<NodeId>,
    /// Promotions carried out while no majority of sidecars held the decision on disk
    /// (acting on a decision raft had not committed).
    pub uncommitted_promotions: Vec<String>,
}

impl WorldState {
    /// `node` is being promoted: the newest candidate decision a majority of sidecars
    /// hold on disk (raft's condition for committed, as near as the world can see it
    /// without knowing which leader issued the promotion) must name it. Recorded when
    /// it does not: the promotion acted on a decision raft had not committed, or on one
    /// a newer committed decision superseded.
    pub fn check_promotion(&mut self, node: NodeId, now: Duration) {
        // (epoch, candidate) → how many sidecars hold that decision on disk.
        let mut held: BTreeMap<(u64, NodeId), usize> = BTreeMap::new();
        let first_epoch = multiaz_engine::ClusterRecord::initial(&self.spec).epoch;
        for d in self.durable.values() {
            let mut decisions: BTreeSet<(u64, NodeId)> = d
                .entries
                .iter()
                .filter_map(|e| match e.log_entry()? {
                    LogEntry::CandidateChosen { epoch, candidate } => Some((epoch, candidate)),
                    _ => None,
                })
                .collect();
            // Entries folded into a snapshot are committed: the record it holds names
            // the newest decision among them (the candidate of a failover under way,
            // or the master a finished one chose).
            let folded = d.snapshot.as_ref().and_then(|s| {
                serde_json::from_slice::<multiaz_engine::ClusterRecord>(&s.record).ok()
            });
            if let Some(r) = folded {
                match (&r.failover, r.master) {
                    (Some(f), _) => decisions.extend(f.candidate.map(|c| (f.epoch, c))),
                    (None, Some(m)) if r.epoch > first_epoch => {
                        decisions.insert((r.epoch, m));
                    }
                    _ => {}
                }
            }
            for k in decisions {
                *held.entry(k).or_default() += 1;
            }
        }
        let members = self.spec.ids().count();
        let newest = held
            .iter()
            .filter(|(_, n)| **n > members / 2)
            .map(|(k, _)| *k)
            .max();
        if newest.map(|(_, c)| c) != Some(node) {
            let proposed: Vec<String> = held
                .iter()
                .filter(|((_, c), _)| *c == node)
                .map(|((e, _), n)| format!("epoch {e} on {n} of {members} disks"))
                .collect();
            self.uncommitted_promotions.push(format!(
                "{node} promoted at {now:?}: newest committed decision {newest:?}; deciding {node}: {proposed:?}"
            ));
        }
    }
}

/// Shared by every host's software (turmoil runs them all on one thread).
#[derive(Clone)]
pub struct World {
    pub state: Rc<RefCell<WorldState>>,
    /// Woken whenever a binlog grows or an acknowledgement arrives.
    pub changed: Rc<Notify>,
}

impl World {
    pub fn new(spec: ClusterSpec, seed: u64, hostility: Hostility) -> World {
        let master = spec.initial_master;
        let mysqld = spec
            .nodes
            .iter()
            .filter(|n| n.is_database())
            .map(|n| {
                let mut m = Mysqld::new(
                    spec.flavour,
                    n.id.0 as u32,
                    (n.id != master).then_some(master),
                );
                if let Some(c) = hostility.servers.get(&n.id) {
                    m.config = c.clone();
                }
                (n.id, m)
            })
            .collect();
        let routes: BTreeMap<String, NodeId> = spec
            .vip
            .route_tables
            .iter()
            .map(|t| (t.clone(), master))
            .collect();
        World {
            state: Rc::new(RefCell::new(WorldState {
                spec,
                mysqld,
                described: routes.clone(),
                applied: routes.clone(),
                hostile: HostileEvents::default(),
                peers_cut: BTreeSet::new(),
                uncommitted_promotions: Vec::new(),
                routes,
                forward: BTreeMap::new(),
                durable: BTreeMap::new(),
                ec2: Ec2State::default(),
                stop_requests: Vec::new(),
                acked: Vec::new(),
                views: BTreeMap::new(),
                timeline: Vec::new(),
                events: Vec::new(),
                rng: ChaCha8Rng::seed_from_u64(seed ^ 0x005e_ed0f_3a1d),
                operator: Vec::new(),
                hostility,
                sabotage: None,
                log_limit: None,
                stale_reads: Vec::new(),
                unreplicated: BTreeSet::new(),
                route_changes: BTreeMap::new(),
            })),
            changed: Rc::new(Notify::new()),
        }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut WorldState) -> R) -> R {
        f(&mut self.state.borrow_mut())
    }

    pub fn mysqld<R>(&self, n: NodeId, f: impl FnOnce(&mut Mysqld) -> R) -> R {
        f(self
            .state
            .borrow_mut()
            .mysqld
            .get_mut(&n)
            .expect("database node"))
    }

    /// A number in [0, 1) from the world's seeded generator.
    pub fn random(&self) -> f64 {
        self.state.borrow_mut().rng.random::<f64>()
    }

    pub fn note(&self, text: impl Into<String>) {
        let now = turmoil::sim_elapsed().unwrap_or_default();
        self.state.borrow_mut().timeline.push((now, text.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(server: u32, seq: u64) -> Txn {
        Txn {
            gtid: Gtid::Mariadb {
                domain: 0,
                server,
                seq,
            },
            client: 0,
            n: seq,
        }
    }

    /// gtid_strict_mode: the SQL thread skips a transaction it holds already, and stops
    /// on one whose sequence number its domain is already past.
    #[test]
    fn the_sql_thread_stops_on_an_out_of_order_gtid() {
        let mut m = Mysqld::new(Flavour::Mariadb, 3, Some(NodeId(1)));
        assert!(m.apply(txn(1, 1)));
        assert_eq!(m.apply_relayed(txn(1, 1)), Ok(()), "a duplicate is skipped");
        assert_eq!(m.sql_error, None);
        assert_eq!(m.apply_relayed(txn(2, 1)), Err(txn(2, 1)));
        assert!(
            m.sql_error.as_deref().is_some_and(|e| e.contains("0-2-1")),
            "{:?}",
            m.sql_error
        );
        assert_eq!(m.binlog.len(), 1, "nothing applied past the error");
        // Below the domain's last, in a gap: refused too.
        let mut m = Mysqld::new(Flavour::Mariadb, 3, Some(NodeId(1)));
        assert!(m.apply(txn(1, 3)));
        assert_eq!(m.apply_relayed(txn(2, 2)), Err(txn(2, 2)));
    }
}
