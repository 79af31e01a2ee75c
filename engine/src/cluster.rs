//! The cluster description every sidecar is started with: nodes, the VIP, timing.
//!
//! It is validated once, here, so that the rest of the engine can rely on it: a
//! [`ClusterSpec`] value always has a database master of record that may be promoted, at
//! least three voters, unique ids and names, and timing that makes sense.

use crate::gtid::Flavour;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

/// A member's id; also its raft id, so never 0.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Runs a mysqld next to its sidecar.
    Database,
    /// A sidecar without mysqld: a raft voter and prober in a third AZ.
    Witness,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromotionRule {
    /// Chosen first when it has, or can be caught up to, the newest data.
    Prefer,
    #[default]
    Neutral,
    /// Never made master (a delayed or reporting replica, a backup host).
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub id: NodeId,
    pub name: String,
    pub az: String,
    pub kind: NodeKind,
    #[serde(default)]
    pub promotion: PromotionRule,
}

impl NodeSpec {
    pub fn is_database(&self) -> bool {
        self.kind == NodeKind::Database
    }

    pub fn may_be_promoted(&self) -> bool {
        self.is_database() && self.promotion != PromotionRule::Never
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vip {
    pub address: Ipv4Addr,
    /// Every VPC route table that carries the VIP's /32 route.
    pub route_tables: Vec<String>,
    /// A host the routes have not left yet forwards VIP traffic to the writer of
    /// record (`forward.rs`): clients reach a new master before the EC2 API moves a
    /// route. On unless turned off.
    #[serde(default = "forward_default")]
    pub forward: bool,
    /// Where the route tables point: at the master (`route`, the default), or each at
    /// a database host in its clients' AZ that forwards to the master (`anchored`): a
    /// master change then needs no EC2 call at all.
    #[serde(default)]
    pub mode: VipMode,
    /// The AZ of each route table's clients (`anchored` needs one per table).
    #[serde(default)]
    pub table_azs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VipMode {
    #[default]
    Route,
    Anchored,
}

impl VipMode {
    pub const ALL: [VipMode; 2] = [VipMode::Route, VipMode::Anchored];

    pub fn name(self) -> &'static str {
        match self {
            VipMode::Route => "route",
            VipMode::Anchored => "anchored",
        }
    }

    /// The mode [`Self::name`] names.
    pub fn parse(name: &str) -> Option<VipMode> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }
}

fn forward_default() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    /// How often each sidecar probes its own mysqld and the master's.
    pub probe_interval_ms: u64,
    /// Consecutive failed probes before a sidecar calls the master unreachable.
    pub probe_failures: u32,
    /// How long a master's sidecar stays writable without hearing a majority.
    pub lease_ms: u64,
    /// Upper bound of each failover step (fence, catch-up, relay apply, promote, ...).
    pub step_timeout_ms: u64,
    /// Upper bound of the salvage step: a stuck salvage cannot hold the failover longer.
    pub salvage_timeout_ms: u64,
    /// Raft's tick; elections take 10 + (position of the node) ticks.
    pub raft_tick_ms: u64,
    /// Stop the old master's instance through the EC2 API when it is unreachable.
    pub stonith: bool,
    /// After an automatic failover, no other automatic failover for this long unless
    /// an operator acknowledges it (`multiaz ack`): a cluster that fails over, and
    /// fails over again, needs a human (anti-flapping). 0 turns the block off.
    pub failover_block_ms: u64,
    /// A planned switchover is refused when its target has not applied this many of
    /// the master's transactions: they would all have to be applied while writes are
    /// blocked.
    pub switchover_max_lag: u64,
    /// How long a switchover waits for writes running on the old master to finish
    /// after it is set read_only, before it kills them.
    pub switchover_grace_ms: u64,
}

/// Upper bounds of the timing values: far past any sensible setting, and low enough
/// that no sum or product of them overflows a clock.
const MAX_STEP_MS: u64 = 86_400_000;
const MAX_BLOCK_MS: u64 = 30 * MAX_STEP_MS;
/// The shortest lease: its eighth (`fence_lead`) must cover the sidecar's read_only,
/// which waits 200 ms for running writes before it kills them.
const MIN_LEASE_MS: u64 = 2_000;

impl Default for Timing {
    fn default() -> Self {
        Timing {
            probe_interval_ms: 1000,
            probe_failures: 3,
            lease_ms: 4000,
            step_timeout_ms: 10_000,
            salvage_timeout_ms: 5_000,
            raft_tick_ms: 100,
            stonith: false,
            failover_block_ms: 3_600_000,
            switchover_max_lag: 1000,
            switchover_grace_ms: 200,
        }
    }
}

impl Timing {
    pub fn probe_interval(&self) -> Duration {
        Duration::from_millis(self.probe_interval_ms)
    }
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }
    /// How long before its lease runs out the writer makes its mysqld read_only: the
    /// time `SET GLOBAL read_only` may take to hold (an eighth of the lease: 500 ms at
    /// the default 4 s).
    pub fn fence_lead(&self) -> Duration {
        self.lease() / 8
    }
    /// How long the writer counts a granted round as its lease, from the moment it sent
    /// the round.
    pub fn writable_span(&self) -> Duration {
        self.lease() - self.fence_lead()
    }
    /// What the coordinator adds to the lease when it times the old writer's lease from
    /// the grants it was given: the old writer's clock may run slower than the
    /// coordinator's (a twenty-fifth of the lease, 160 ms at 4 s: 4 %, twice the 1 % the
    /// coordinator allows each clock, see `fence.rs`).
    pub fn lease_margin(&self) -> Duration {
        self.lease() / 25
    }
    pub fn step_timeout(&self) -> Duration {
        Duration::from_millis(self.step_timeout_ms)
    }
    pub fn salvage_timeout(&self) -> Duration {
        Duration::from_millis(self.salvage_timeout_ms)
    }
    pub fn raft_tick(&self) -> Duration {
        Duration::from_millis(self.raft_tick_ms)
    }
    pub fn switchover_grace(&self) -> Duration {
        Duration::from_millis(self.switchover_grace_ms)
    }
    /// A peer's report older than this is ignored by detection.
    pub fn report_ttl(&self) -> Duration {
        self.probe_interval() * 3
    }
}

/// The validated description of a cluster. Build it with [`ClusterSpec::from_toml`] or
/// [`ClusterSpec::validate`]; both refuse a description that would be unsafe to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub name: String,
    pub flavour: Flavour,
    /// The master when the cluster is first started; afterwards the raft record rules.
    pub initial_master: NodeId,
    /// Prefer a new master in this AZ (where most clients are), among equally advanced ones.
    #[serde(default)]
    pub client_az: Option<String>,
    pub vip: Vip,
    #[serde(default)]
    pub timing: Timing,
    pub nodes: Vec<NodeSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("cluster description is not valid TOML or has a wrong key: {0}")]
    Toml(String),
    #[error("{field}: {why}")]
    Invalid { field: String, why: String },
}

fn invalid(field: impl Into<String>, why: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        why: why.into(),
    }
}

impl ClusterSpec {
    /// Parses and validates a cluster description (unknown keys are refused).
    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        let spec: ClusterSpec = toml::from_str(text).map_err(|e| SpecError::Toml(e.to_string()))?;
        spec.validate()
    }

    /// Checks every rule the engine relies on and returns the spec unchanged if it holds.
    pub fn validate(self) -> Result<Self, SpecError> {
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        let mut ids = BTreeSet::new();
        let mut names = BTreeSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let at = format!("nodes[{i}]");
            if n.id.0 == 0 {
                return Err(invalid(
                    format!("{at}.id"),
                    "must be 1 or more (0 is not a valid raft id)",
                ));
            }
            if !ids.insert(n.id) {
                return Err(invalid(
                    format!("{at}.id"),
                    format!("{} is used by two nodes", n.id.0),
                ));
            }
            if n.name.trim().is_empty() {
                return Err(invalid(format!("{at}.name"), "must not be empty"));
            }
            if !names.insert(n.name.as_str()) {
                return Err(invalid(
                    format!("{at}.name"),
                    format!("{:?} is used by two nodes", n.name),
                ));
            }
            if n.az.trim().is_empty() {
                return Err(invalid(format!("{at}.az"), "must not be empty"));
            }
            if n.kind == NodeKind::Witness && n.promotion != PromotionRule::Neutral {
                return Err(invalid(
                    format!("{at}.promotion"),
                    "a witness has no mysqld and cannot be promoted; leave promotion out",
                ));
            }
        }
        if self.nodes.len() < 3 {
            return Err(invalid(
                "nodes",
                format!(
                    "{} node(s) given; at least 3 are needed so that a majority survives one loss (add a witness in a third AZ)",
                    self.nodes.len()
                ),
            ));
        }
        if self.nodes.iter().filter(|n| n.is_database()).count() < 2 {
            return Err(invalid(
                "nodes",
                "at least two database nodes are needed for failover",
            ));
        }
        match self.nodes.iter().find(|n| n.id == self.initial_master) {
            None => {
                return Err(invalid(
                    "initial_master",
                    format!("{} is not one of the nodes", self.initial_master.0),
                ))
            }
            Some(n) if !n.is_database() => {
                return Err(invalid(
                    "initial_master",
                    format!("{} is a witness, not a database", n.name),
                ))
            }
            Some(n) if n.promotion == PromotionRule::Never => {
                return Err(invalid(
                    "initial_master",
                    format!("{} is marked promotion = \"never\"", n.name),
                ))
            }
            Some(_) => {}
        }
        if !self
            .nodes
            .iter()
            .any(|n| n.id != self.initial_master && n.may_be_promoted())
        {
            return Err(invalid(
                "nodes",
                "no replica may be promoted: every other database node is marked never",
            ));
        }
        if let Some(az) = &self.client_az {
            if !self.nodes.iter().any(|n| &n.az == az) {
                return Err(invalid(
                    "client_az",
                    format!("{az:?} is not the AZ of any node"),
                ));
            }
        }
        if self.vip.route_tables.is_empty() {
            return Err(invalid(
                "vip.route_tables",
                "at least one route table must carry the VIP route",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, t) in self.vip.route_tables.iter().enumerate() {
            if t.trim().is_empty() || !seen.insert(t) {
                return Err(invalid(
                    format!("vip.route_tables[{i}]"),
                    "empty or repeated route table id",
                ));
            }
        }
        for (table, az) in &self.vip.table_azs {
            if !self.vip.route_tables.contains(table) {
                return Err(invalid(
                    format!("vip.table_azs.{table}"),
                    "is not one of vip.route_tables",
                ));
            }
            if !self.nodes.iter().any(|n| n.is_database() && &n.az == az) {
                return Err(invalid(
                    format!("vip.table_azs.{table}"),
                    format!("no database node is in {az:?}"),
                ));
            }
        }
        if self.vip.mode == VipMode::Anchored {
            if !self.vip.forward {
                return Err(invalid(
                    "vip.mode",
                    "\"anchored\" needs vip.forward = true: the anchors forward to the master",
                ));
            }
            if let Some(t) = self
                .vip
                .route_tables
                .iter()
                .find(|t| !self.vip.table_azs.contains_key(*t))
            {
                return Err(invalid(
                    "vip.table_azs",
                    format!("\"anchored\" needs the AZ of every route table; {t} has none"),
                ));
            }
        }
        let t = &self.timing;
        for (field, v) in [
            ("timing.probe_interval_ms", t.probe_interval_ms),
            ("timing.lease_ms", t.lease_ms),
            ("timing.step_timeout_ms", t.step_timeout_ms),
            ("timing.salvage_timeout_ms", t.salvage_timeout_ms),
            ("timing.raft_tick_ms", t.raft_tick_ms),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be more than 0"));
            }
            if v > MAX_STEP_MS {
                return Err(invalid(field, "must be at most 86400000 (a day)"));
            }
        }
        for (field, v) in [
            ("timing.failover_block_ms", t.failover_block_ms),
            ("timing.switchover_grace_ms", t.switchover_grace_ms),
        ] {
            if v > MAX_BLOCK_MS {
                return Err(invalid(field, "must be at most 2592000000 (30 days)"));
            }
        }
        if t.probe_failures == 0 || t.probe_failures > 1000 {
            return Err(invalid("timing.probe_failures", "must be from 1 to 1000"));
        }
        if t.lease_ms < 2 * t.probe_interval_ms {
            return Err(invalid(
                "timing.lease_ms",
                "must be at least twice probe_interval_ms: the master renews its lease once per probe interval",
            ));
        }
        if t.lease_ms < MIN_LEASE_MS {
            return Err(invalid(
                "timing.lease_ms",
                "must be at least 2000: the master makes itself read_only an eighth of the lease before it ends, and a read_only blocked by running writes takes 200 ms and a kill",
            ));
        }
        Ok(self)
    }

    pub fn node(&self, id: NodeId) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.iter().map(|n| n.id)
    }

    pub fn database_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.iter().filter(|n| n.is_database()).map(|n| n.id)
    }

    /// Votes needed for a majority of all members.
    pub fn majority(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    /// Each node's fixed election timeout in raft ticks: 10, 13, 16, ... by id order, so
    /// that elections never tie and runs are deterministic (raft-rs would otherwise draw
    /// the timeout from `thread_rng`).
    pub fn election_ticks(&self) -> BTreeMap<NodeId, usize> {
        let ids: BTreeSet<NodeId> = self.ids().collect();
        ids.into_iter()
            .enumerate()
            .map(|(i, id)| (id, 10 + 3 * i))
            .collect()
    }
}

/// The cluster the engine's unit tests run on: the example description with every
/// node's promotion rule given and no client AZ.
#[cfg(test)]
pub(crate) mod test_cluster {
    use super::{ClusterSpec, NodeId, PromotionRule};

    pub const N1: NodeId = NodeId(1);
    pub const N2: NodeId = NodeId(2);
    pub const N3: NodeId = NodeId(3);

    pub fn spec_with(promotions: [PromotionRule; 3]) -> ClusterSpec {
        let mut s = ClusterSpec::from_toml(include_str!("../examples/cluster.toml")).unwrap();
        s.client_az = None;
        for (n, p) in s.nodes.iter_mut().zip(promotions) {
            n.promotion = p;
        }
        s.validate().unwrap()
    }

    pub fn spec() -> ClusterSpec {
        spec_with([PromotionRule::Neutral; 3])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../examples/cluster.toml");

    fn err(text: &str) -> String {
        ClusterSpec::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn the_example_parses() {
        let spec = ClusterSpec::from_toml(EXAMPLE).unwrap();
        assert_eq!(spec.nodes.len(), 3);
        assert_eq!(spec.majority(), 2);
        assert_eq!(
            spec.node(NodeId(3)).unwrap().promotion,
            PromotionRule::Never
        );
        let ticks = spec.election_ticks();
        assert_eq!(
            ticks.values().collect::<BTreeSet<_>>().len(),
            3,
            "distinct election ticks"
        );
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let e = err(&EXAMPLE.replace("probe_failures = 3", "probe_failure = 3"));
        assert!(e.contains("probe_failure"), "{e}");
        let e = err(&format!("colour = \"red\"\n{EXAMPLE}"));
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases = [
            (EXAMPLE.replace("id = 2", "id = 1"), "nodes[1].id"),
            (EXAMPLE.replace("id = 1\n", "id = 0\n"), "nodes[0].id"),
            (
                EXAMPLE.replace("name = \"db-b\"", "name = \"db-a\""),
                "nodes[1].name",
            ),
            (
                EXAMPLE.replace("initial_master = 1", "initial_master = 7"),
                "initial_master",
            ),
            (
                EXAMPLE.replace("initial_master = 1", "initial_master = 3"),
                "initial_master",
            ),
            (
                EXAMPLE.replace("lease_ms = 4000", "lease_ms = 1500"),
                "timing.lease_ms",
            ),
            (
                EXAMPLE
                    .replace("lease_ms = 4000", "lease_ms = 1500")
                    .replace("probe_interval_ms = 1000", "probe_interval_ms = 500"),
                "timing.lease_ms",
            ),
            (
                EXAMPLE.replace("probe_failures = 3", "probe_failures = 0"),
                "timing.probe_failures",
            ),
            (
                EXAMPLE.replace(
                    "probe_interval_ms = 1000",
                    "probe_interval_ms = 9223372036854775807",
                ),
                "timing.probe_interval_ms",
            ),
            (
                EXAMPLE.replace("lease_ms = 4000", "lease_ms = 86400001"),
                "timing.lease_ms",
            ),
            (
                EXAMPLE.replace("raft_tick_ms = 100", "raft_tick_ms = 0"),
                "timing.raft_tick_ms",
            ),
            (
                EXAMPLE.replace("client_az = \"us-east-1a\"", "client_az = \"mars-1a\""),
                "client_az",
            ),
            (
                EXAMPLE.replace("[\"rtb-0a1\", \"rtb-0b2\", \"rtb-0c3\"]", "[]"),
                "vip.route_tables",
            ),
            (
                EXAMPLE.replace(
                    "[\"rtb-0a1\", \"rtb-0b2\", \"rtb-0c3\"]",
                    "[\"rtb-1\", \"rtb-1\"]",
                ),
                "vip.route_tables[1]",
            ),
        ];
        for (text, field) in cases {
            let e = err(&text);
            assert!(e.starts_with(field), "expected {field}: {e}");
        }
    }

    #[test]
    fn structural_mistakes_are_explained() {
        let e = err(&EXAMPLE.replace("address = \"10.0.100.10\"", "address = \"10.0.100\""));
        assert!(e.contains("address"), "{e}");
        let db_b = "name = \"db-b\"\naz = \"us-east-1b\"\nkind = \"database\"";
        let witness_b = "name = \"db-b\"\naz = \"us-east-1b\"\nkind = \"witness\"";
        let e = err(&EXAMPLE.replace(db_b, witness_b));
        assert!(e.contains("no replica may be promoted"), "{e}");
        let both_witnesses = EXAMPLE.replace(db_b, witness_b).replace(
            "kind = \"database\"\npromotion = \"never\"",
            "kind = \"witness\"",
        );
        assert!(err(&both_witnesses).contains("at least two database"));
        let two_nodes = EXAMPLE
            .split("[[nodes]]")
            .take(3)
            .collect::<Vec<_>>()
            .join("[[nodes]]");
        assert!(err(&two_nodes).contains("at least 3"));
        let e = err(&EXAMPLE.replace(
            "kind = \"database\"\npromotion = \"never\"",
            "kind = \"witness\"\npromotion = \"prefer\"",
        ));
        assert!(e.starts_with("nodes[2].promotion"), "{e}");
        let e = err(&EXAMPLE.replace("promotion = \"never\"", "promotion = \"sometimes\""));
        assert!(e.contains("sometimes"), "{e}");
        assert!(err("this is [not toml").contains("TOML"));
    }

    #[test]
    fn a_witness_counts_as_a_voter() {
        let text = EXAMPLE.replace(
            "kind = \"database\"\npromotion = \"never\"",
            "kind = \"witness\"",
        );
        let text = text.replace("client_az = \"us-east-1a\"", "");
        let spec = ClusterSpec::from_toml(&text).unwrap();
        assert_eq!(spec.database_ids().count(), 2);
        assert_eq!(spec.majority(), 2);
    }
}
