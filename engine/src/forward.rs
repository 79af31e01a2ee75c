//! Where VIP traffic that reaches this host goes when this host is not the writer.
//!
//! A route table can go on pointing the VIP at a host that no longer holds the writer:
//! a dead mysqld's host, a demoted master, while the EC2 API is down or throttled. That
//! host forwards the VIP's traffic to the writer of record until the coordinator says
//! every route has moved, then serves it locally again (a replica's read_only mysqld).
//! Forwarding is armed as soon as the writer is promoted, whatever the API is doing: a
//! route call that will succeed in a second costs nothing to race, and one that will
//! not is the case this exists for.
//!
//! Safety does not rest on it: only the writer of record holding its lease accepts
//! writes (`fence.rs`, `lease.rs`), so a forwarder that is out of date (partitioned,
//! behind on the record) leads clients to a read_only server at worst. Nor do reads
//! lose anything: a host forwards only to a writer whose failover is over, which
//! holds every acknowledged write (the same rule the routes follow, `routes.rs`).

use crate::cluster::{NodeId, VipMode};
use crate::command::{Command, CommandId};
use crate::engine::{Engine, Pending};
use crate::event::Event;
use crate::sabotage::Sabotage;
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A failed change is tried again after this (the adapter's tools may be missing or
/// its rules refused; again at once would only fail again).
const RETRY: Duration = Duration::from_secs(1);

/// Where VIP traffic arriving at a host goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VipPath {
    /// To this host's own mysqld.
    Local,
    /// To this node's mysqld.
    To(NodeId),
}

impl VipPath {
    pub fn target(self) -> Option<NodeId> {
        match self {
            VipPath::Local => None,
            VipPath::To(n) => Some(n),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Forwarding {
    /// What the driver last set. `None` until it has set something: rules an earlier
    /// run of this sidecar left behind must be replaced at start, not trusted.
    applied: Option<VipPath>,
    in_flight: Option<(CommandId, VipPath)>,
    retry_at: Option<Time>,
}

impl Forwarding {
    /// What this host does with VIP traffic now, as far as the driver has confirmed.
    pub fn applied(&self) -> Option<VipPath> {
        self.applied
    }

    pub fn next_retry(&self) -> Option<Time> {
        self.retry_at
    }
}

/// A VIP route table in the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteView {
    pub route_table: String,
    /// Known on the coordinator once a master is settled; `None` elsewhere (only the
    /// coordinator knows which calls were confirmed) and during a failover.
    pub state: Option<RouteState>,
    /// Where the table was last confirmed to point, when this coordinator knows.
    pub points_at: Option<NodeId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteState {
    /// Confirmed pointing at the master (anchored: at its anchor, which forwards to
    /// the master or is the master).
    Moved,
    /// Not moved yet, but wherever it may point, that host forwards to the master.
    Forwarding,
    /// Not moved, and its clients may be reaching a host that does not forward (or is
    /// gone): they see no master until the route call succeeds.
    Stuck,
}

impl RouteState {
    pub const ALL: [RouteState; 3] = [RouteState::Moved, RouteState::Forwarding, RouteState::Stuck];

    pub fn name(self) -> &'static str {
        match self {
            RouteState::Moved => "moved",
            RouteState::Forwarding => "forwarding",
            RouteState::Stuck => "stuck",
        }
    }
}

impl Engine {
    /// What this host should do with the VIP traffic that reaches it.
    fn wanted_path(&self) -> Option<VipPath> {
        if !self.spec.vip.forward || !self.is_database() {
            return None;
        }
        // During a failover the candidate holds nothing yet that a client may read,
        // and the old writer may have been the one forwarded to: leave things as they
        // are until the record names a master again.
        if let Some(f) = &self.record.failover {
            if self.sabotaged(Sabotage::ForwardEarly) {
                return f.candidate.filter(|c| *c != self.me).map(VipPath::To);
            }
            return None;
        }
        let Some(writer) = self.record.master else {
            return Some(VipPath::Local);
        };
        if writer == self.me {
            return Some(VipPath::Local);
        }
        // Route mode: forwarding is a bridge until the routes move. Anchored: for good.
        if self.spec.vip.mode == VipMode::Route && self.routes_moved_to() == Some(writer) {
            return Some(VipPath::Local);
        }
        Some(VipPath::To(writer))
    }

    /// The writer every VIP route is confirmed to point at, in the coordinator's word
    /// (its own routes when it is the coordinator, else its latest report).
    pub(crate) fn routes_moved_to(&self) -> Option<NodeId> {
        if self.coord.is_coordinator() {
            return self.routes_confirmed_at();
        }
        self.fresh_report(self.coord.leader()?)?.routes_at
    }

    /// Where VIP traffic reaching `node` goes, as last set there: this host's own
    /// forwarding, or a peer's fresh report (`None`: not set, or not known).
    pub(crate) fn path_of(&self, node: NodeId) -> Option<VipPath> {
        if node == self.me {
            return self.forwarding.applied;
        }
        self.fresh_report(node)?.forwarding
    }

    /// The master of record when no failover is under way.
    fn settled_master(&self) -> Option<NodeId> {
        self.record
            .master
            .filter(|_| self.record.failover.is_none())
    }

    /// As the coordinator: the writer every route table is confirmed to point at
    /// (route mode; anchored tables point at their anchors, which forward for good).
    pub(crate) fn routes_confirmed_at(&self) -> Option<NodeId> {
        if self.spec.vip.mode == VipMode::Anchored {
            return None;
        }
        let writer = self.settled_master()?;
        self.routes_pending().is_empty().then_some(writer)
    }

    /// Every route table, with its state as the coordinator knows it.
    pub(crate) fn route_views(&self) -> Vec<RouteView> {
        let settled = self
            .settled_master()
            .filter(|_| self.coord.is_coordinator());
        let Some(writer) = settled else {
            return self
                .spec
                .vip
                .route_tables
                .iter()
                .map(|table| RouteView {
                    route_table: table.clone(),
                    state: None,
                    points_at: None,
                })
                .collect();
        };
        let forwards_to_writer =
            |node: NodeId| node == writer || self.path_of(node) == Some(VipPath::To(writer));
        self.spec
            .vip
            .route_tables
            .iter()
            .map(|table| {
                let points_at = self.routes.confirmed(table);
                let target = self.route_target(table);
                let state = if points_at == target && points_at.is_some_and(forwards_to_writer) {
                    RouteState::Moved
                } else if match points_at {
                    Some(node) => forwards_to_writer(node),
                    // Not known where it points: any database host might be it.
                    None => self
                        .spec
                        .nodes
                        .iter()
                        .filter(|n| n.is_database())
                        .all(|n| forwards_to_writer(n.id)),
                } {
                    RouteState::Forwarding
                } else {
                    RouteState::Stuck
                };
                RouteView {
                    route_table: table.clone(),
                    state: Some(state),
                    points_at,
                }
            })
            .collect()
    }

    /// Asks the driver for the path wanted, unless that is set or being set.
    pub(crate) fn reconcile_forwarding(&mut self) {
        let Some(want) = self.wanted_path() else {
            return;
        };
        let f = &self.forwarding;
        if f.applied == Some(want) && f.in_flight.is_none() {
            return;
        }
        if f.in_flight.is_some_and(|(_, p)| p == want) {
            return;
        }
        if f.in_flight.is_none() && f.retry_at.is_some_and(|at| at > self.now) {
            return;
        }
        let id = self.issue(Pending::Forward { path: want }, |id| Command::Forward {
            id,
            to: want.target(),
        });
        // A call for another path supersedes one under way: its answer is ignored, and
        // the driver applies changes in the order they were asked for.
        self.forwarding.in_flight = Some((id, want));
        self.forwarding.retry_at = None;
    }

    pub(crate) fn on_forward_result(
        &mut self,
        id: CommandId,
        path: VipPath,
        r: Result<(), String>,
    ) {
        if self.forwarding.in_flight.map(|(want, _)| want) != Some(id) {
            return;
        }
        self.forwarding.in_flight = None;
        match r {
            Ok(()) => {
                self.forwarding.applied = Some(path);
                self.emit(Event::ForwardingSet { to: path.target() });
            }
            Err(error) => {
                // What the host does now is not known: set it again even if the same
                // path is wanted.
                self.forwarding.applied = None;
                self.forwarding.retry_at = Some(self.now + RETRY);
                self.emit(Event::ForwardingFailed {
                    to: path.target(),
                    error,
                });
            }
        }
    }
}
