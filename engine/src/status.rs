//! What this sidecar knows, as `multiaz status` shows it: the record, the coordinator,
//! the lease, the failover's phase, and every member's role and mysqld.

use crate::cluster::NodeId;
use crate::engine::Engine;
use crate::forward::{RouteView, VipPath};
use crate::message::LocalView;
use crate::record::ClusterRecord;
use serde::Serialize;
use std::collections::BTreeMap;

/// A snapshot of what this sidecar knows, for `multiaz status` and tests.
#[derive(Debug, Clone, Serialize)]
pub struct EngineStatus {
    pub me: NodeId,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub coordinator: bool,
    pub record: ClusterRecord,
    pub local: LocalView,
    pub lease_valid: bool,
    pub failover_phase: Option<String>,
    /// Automatic failover is blocked until then (wall clock, ms) after the last one,
    /// unless an operator acknowledges it (`multiaz ack`).
    pub failover_blocked_until_wall_ms: Option<u64>,
    /// Consecutive failed probes of the master by this sidecar.
    pub master_failures: u32,
    /// Every member as this sidecar sees it: its own mysqld from its probes, the
    /// others' from their latest reports.
    pub nodes: BTreeMap<NodeId, NodeView>,
    /// Where VIP traffic reaching this host goes, as last set (`None`: not set yet,
    /// or forwarding is off).
    pub forwarding: Option<VipPath>,
    /// Every VIP route table's state, on the coordinator once a master is settled.
    pub routes: Vec<RouteView>,
}

/// One member in [`EngineStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub name: String,
    pub az: String,
    pub role: Role,
    /// Its sidecar was heard from within one and a half probe intervals.
    pub sidecar_live: bool,
    /// Its mysqld, as last reported (`None`: no report, or a witness).
    pub mysqld: Option<LocalView>,
    /// Transactions the master has executed that this node has not (replicas with a
    /// known position, while the master's position is known).
    pub lag_transactions: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    /// Committed as the next master by a failover in progress.
    Candidate,
    Replica,
    /// Kept out of replication until checked (or found with errant transactions).
    Quarantined,
    Witness,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Master,
        Role::Candidate,
        Role::Replica,
        Role::Quarantined,
        Role::Witness,
    ];

    /// The name `multiaz status` and the metrics use (as serialized).
    pub fn name(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Candidate => "candidate",
            Role::Replica => "replica",
            Role::Quarantined => "quarantined",
            Role::Witness => "witness",
        }
    }
}

impl Engine {
    pub fn status(&self) -> EngineStatus {
        EngineStatus {
            me: self.me,
            term: self.coord.term(),
            leader: self.coord.leader(),
            coordinator: self.coord.is_coordinator(),
            record: self.record.clone(),
            local: self.local.view.clone(),
            lease_valid: self.lease.is_valid(self.record.epoch, self.now),
            failover_phase: self.run.as_ref().map(|r| r.phase_name().to_string()),
            failover_blocked_until_wall_ms: self.failover_blocked_until(),
            master_failures: self.probing.master_failures,
            nodes: self.node_views(),
            forwarding: self.forwarding.applied(),
            routes: self.route_views(),
        }
    }

    pub(crate) fn node_views(&self) -> BTreeMap<NodeId, NodeView> {
        let live = self.live_sidecars();
        let reports = self.fresh_reports();
        let mysqld = |id: NodeId| -> Option<LocalView> {
            if id == self.me {
                Some(self.local.view.clone())
            } else {
                reports.get(&id).and_then(|r| r.local.clone())
            }
        };
        let executed = |id: NodeId| match mysqld(id) {
            Some(LocalView::Up(Some(s))) => Some(s.executed),
            _ => None,
        };
        let master_executed = self.record.master.and_then(executed);
        let candidate = self.record.failover.as_ref().and_then(|f| f.candidate);
        self.spec
            .nodes
            .iter()
            .map(|n| {
                let role = if !n.is_database() {
                    Role::Witness
                } else if self.record.quarantined.contains_key(&n.id) {
                    Role::Quarantined
                } else if self.record.master == Some(n.id) {
                    Role::Master
                } else if candidate == Some(n.id) {
                    Role::Candidate
                } else {
                    Role::Replica
                };
                let lag_transactions = match (&master_executed, role) {
                    (Some(m), Role::Replica) => executed(n.id).map(|e| m.difference(&e).count()),
                    _ => None,
                };
                let view = NodeView {
                    name: n.name.clone(),
                    az: n.az.clone(),
                    role,
                    sidecar_live: live.contains(&n.id),
                    mysqld: if n.is_database() { mysqld(n.id) } else { None },
                    lag_transactions,
                };
                (n.id, view)
            })
            .collect()
    }
}
