//! Where a route is moved: every VIP route table is kept pointing at the writer of
//! record (`vip.mode = "route"`), or at its anchor, a live database host of its
//! clients' AZ which forwards to the writer (`"anchored"`: a master change moves no
//! route; only an anchor's loss does). Run by the coordinator only; a new coordinator
//! knows nothing confirmed and re-issues every route (the call is idempotent), which
//! also repairs a route someone changed by hand.

use crate::cluster::{NodeId, VipMode};
use crate::command::{Command, CommandId};
use crate::engine::{Engine, Pending};
use crate::event::Event;
use crate::forward::VipPath;
use crate::sabotage::Sabotage;
use crate::time::Time;
use std::collections::BTreeMap;
use std::time::Duration;

const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(5);

impl Engine {
    pub(crate) fn reconcile_routes(&mut self) {
        let Some(writer) = self.record.writer() else {
            return;
        };
        // A coordinator that hears from no majority is likely the one cut off: raft's
        // check_quorum deposes it only after up to two election timeouts, and as the
        // other members' reports age out it takes their anchors for gone. Anchored, it
        // moved the other AZs' tables to itself — with the EC2 API still in reach —
        // and stranded their clients behind the cut (the anchored az-partition chaos
        // run); in the route mode it has nothing to move that is not its own already.
        if self.fresh_reports().len() < self.spec.majority() {
            return;
        }
        // A committed candidate gets the VIP only once it holds everything (relay log
        // applied, binlog salvaged) and is being promoted: before that, a client
        // reading through the VIP would miss its own acknowledged writes. (An anchor
        // that is not the writer forwards, and only to a writer whose failover is
        // over: it may take a table at any time.)
        let writer_gated = self.record.failover.is_some()
            && !self.run.as_ref().is_some_and(|r| r.routes_may_move())
            && !self.sabotaged(Sabotage::VipEarly);
        let tables = self.spec.vip.route_tables.clone();
        for table in tables {
            let Some(target) = self.route_target(&table) else {
                continue;
            };
            if target == writer && writer_gated {
                continue;
            }
            if !self.routes.is_due(&table, target, self.now) {
                continue;
            }
            let t = table.clone();
            let id = self.issue(
                Pending::Route {
                    table: table.clone(),
                    target,
                },
                |id| Command::ReplaceRoute {
                    id,
                    route_table: t,
                    target,
                },
            );
            self.routes.issued(table, id, target);
        }
    }

    /// Route tables not confirmed at their target (`route_target`).
    pub(crate) fn routes_pending(&self) -> Vec<String> {
        self.spec
            .vip
            .route_tables
            .iter()
            .filter(|t| {
                let target = self.route_target(t);
                target.is_none() || self.routes.confirmed(t) != target
            })
            .cloned()
            .collect()
    }

    /// Where `table` should point: the writer of record, or (anchored) its anchor.
    /// `None`: not known yet (no call).
    pub(crate) fn route_target(&self, table: &str) -> Option<NodeId> {
        let writer = self.record.writer()?;
        match self.spec.vip.mode {
            VipMode::Route => Some(writer),
            VipMode::Anchored => match self.anchor(table) {
                Anchor::Node(n) => Some(n),
                // Not to a writer that is gone too (its host crashed with its AZ's
                // anchor, itself): the failover names the one to call for.
                Anchor::Gone => self.fit_anchor(writer).then_some(writer),
                Anchor::Unknown => None,
            },
        }
    }

    /// The database host of `table`'s AZ that carries its clients' VIP traffic: the one
    /// it points at while that one is fit, else the first fit one. Fit: its sidecar
    /// was heard from within the reports' lifetime (three probe intervals: one late
    /// report must not move a table, and its connections, away and back) and its
    /// forwarding is set (a host whose `nft` fails would leave its AZ's clients at a
    /// read_only replica).
    fn anchor(&self, table: &str) -> Anchor {
        let Some(az) = self.spec.vip.table_azs.get(table) else {
            return Anchor::Gone;
        };
        let live: Vec<NodeId> = self
            .spec
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|n| self.fit_anchor(*n))
            .collect();
        let in_az: Vec<NodeId> = self
            .spec
            .nodes
            .iter()
            .filter(|n| n.is_database() && &n.az == az)
            .map(|n| n.id)
            .collect();
        // The anchor of the moment keeps its table while it is heard from with its
        // forwarding set: the old master serves the VIP itself until it hears of the
        // new one, a report's time, and moving its table away and back for that would
        // cost two calls per failover. A new anchor must be fit.
        let current = self.routes.confirmed(table);
        let keeps = |c: &NodeId| self.path_of(*c).is_some();
        if let Some(c) = current.filter(|c| in_az.contains(c) && keeps(c)) {
            return Anchor::Node(c);
        }
        if let Some(first) = in_az.iter().find(|n| live.contains(n)) {
            return Anchor::Node(*first);
        }
        // Heard from before and silent since: gone. Never heard from (this sidecar
        // has just started, or just become the coordinator after a restart): a report
        // that has not arrived yet says nothing, and a call made on it would be wasted.
        if !in_az.iter().any(|n| self.reports.contains_key(n)) {
            return Anchor::Unknown;
        }
        // Gone, as far as this coordinator can tell: only while it hears a majority
        // now. Cut off, it stops hearing every other member within a report interval
        // and a half, before the first of their reports ages out (three intervals),
        // with the others' reports ageing out one by one: judged then, the anchors
        // it no longer hears would be gone and their tables its own.
        let recent = self.spec.timing.probe_interval() * 3 / 2;
        if self.reports_within(recent).len() < self.spec.majority() {
            return Anchor::Unknown;
        }
        Anchor::Gone
    }

    /// Heard from within the reports' lifetime, with its forwarding set, and serving
    /// the VIP itself only as the writer of record. A host that boots again after a
    /// crash as the old master serves it itself until its record catches up with the
    /// others': made its AZ's anchor then, it would take that AZ's clients to a stale,
    /// read_only server (the anchored host-kill chaos run). One that forwards to an
    /// earlier writer is fit: every anchor does, until it hears of the new one.
    fn fit_anchor(&self, n: NodeId) -> bool {
        match self.path_of(n) {
            None => false,
            Some(VipPath::Local) => self.record.writer() == Some(n),
            Some(VipPath::To(_)) => true,
        }
    }

    /// A `ReplaceRoute` answered.
    pub(crate) fn on_route_result(
        &mut self,
        id: CommandId,
        table: String,
        target: NodeId,
        r: Result<(), String>,
    ) {
        match r {
            Ok(()) => {
                self.routes.succeeded(&table, id, target);
                self.emit(Event::RouteReplaced {
                    route_table: table,
                    target,
                });
            }
            Err(error) => {
                self.routes.failed(&table, id, self.now);
                self.emit(Event::RouteFailed {
                    route_table: table,
                    target,
                    error,
                });
            }
        }
    }
}

/// A route table's anchor (`vip.mode = "anchored"`).
enum Anchor {
    Node(NodeId),
    /// No database host of its AZ is heard from: the writer takes the table.
    Gone,
    /// None heard from yet.
    Unknown,
}

#[derive(Debug, Default)]
pub(crate) struct Routes {
    confirmed: BTreeMap<String, NodeId>,
    /// The call under way per table, and the target it sets. A call for another target
    /// supersedes it at once (the driver stops the older one, see
    /// `driver/src/vip_routes.rs`): a failover's route must not wait out a call that
    /// points the VIP at the old master, whose answer may be lost.
    in_flight: BTreeMap<String, (CommandId, NodeId)>,
    /// When a failed table may be tried again; removed once it is.
    retry_at: BTreeMap<String, Time>,
    /// Failures in a row per table, for the backoff.
    failures: BTreeMap<String, u32>,
}

impl Routes {
    pub fn clear(&mut self) {
        *self = Routes::default();
    }

    /// Whether `table` needs a `ReplaceRoute` to `target` now.
    pub fn is_due(&self, table: &str, target: NodeId, now: Time) -> bool {
        self.confirmed.get(table) != Some(&target)
            && self
                .in_flight
                .get(table)
                .is_none_or(|(_, to)| *to != target)
            && self.retry_at.get(table).is_none_or(|at| *at <= now)
    }

    pub fn issued(&mut self, table: String, id: CommandId, target: NodeId) {
        self.retry_at.remove(&table);
        self.in_flight.insert(table, (id, target));
    }

    /// Takes `id` off the table's in-flight call; false when it was not that call (it
    /// was issued before a [`Routes::clear`]: a deposed coordinator's late answer, which
    /// must not schedule a retry nobody will make).
    fn landed(&mut self, table: &str, id: CommandId) -> bool {
        if self.in_flight.get(table).map(|(want, _)| *want) != Some(id) {
            return false;
        }
        self.in_flight.remove(table);
        true
    }

    pub fn succeeded(&mut self, table: &str, id: CommandId, target: NodeId) {
        if !self.landed(table, id) {
            return;
        }
        self.retry_at.remove(table);
        self.failures.remove(table);
        self.confirmed.insert(table.to_string(), target);
    }

    pub fn failed(&mut self, table: &str, id: CommandId, now: Time) {
        if !self.landed(table, id) {
            return;
        }
        let tries = self.failures.entry(table.to_string()).or_insert(0);
        let wait = (RETRY_FIRST * 2u32.saturating_pow((*tries).min(8))).min(RETRY_MAX);
        *tries += 1;
        self.retry_at.insert(table.to_string(), now + wait);
    }

    pub fn next_retry(&self) -> Option<Time> {
        self.retry_at.values().copied().min()
    }

    /// Where `table` was last confirmed to point by this coordinator.
    pub fn confirmed(&self, table: &str) -> Option<NodeId> {
        self.confirmed.get(table).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (mixed seed 549): a route call issued by a coordinator that lost its
    /// role answered afterwards; its failure scheduled a retry that only a coordinator
    /// makes, so the deadline stayed in the past and the driver spun at that instant.
    #[test]
    fn a_late_answer_after_clear_schedules_nothing() {
        let mut r = Routes::default();
        let id = CommandId(7);
        r.issued("rtb-a".into(), id, NodeId(1));
        r.clear();
        r.failed("rtb-a", id, Time::from_millis(1_000));
        assert_eq!(r.next_retry(), None);
        r.succeeded("rtb-a", id, NodeId(2));
        assert_ne!(r.confirmed("rtb-a"), Some(NodeId(2)));
        // The call in flight now is what counts.
        r.issued("rtb-a".into(), CommandId(8), NodeId(2));
        r.failed("rtb-a", CommandId(8), Time::from_millis(1_000));
        assert!(r.next_retry().is_some());
    }

    /// A call for a new target is due at once while one for the old target is under
    /// way (host-crash seed 4: a new coordinator's call re-pointing the VIP at the old
    /// master lost its answer and held the table for the attempt timeout); the older
    /// call's answer then counts for nothing.
    #[test]
    fn a_new_target_supersedes_a_call_in_flight() {
        let mut r = Routes::default();
        let now = Time::from_millis(0);
        r.issued("rtb-a".into(), CommandId(1), NodeId(1));
        assert!(!r.is_due("rtb-a", NodeId(1), now));
        assert!(r.is_due("rtb-a", NodeId(2), now));
        r.issued("rtb-a".into(), CommandId(2), NodeId(2));
        r.succeeded("rtb-a", CommandId(1), NodeId(1));
        assert_eq!(r.confirmed("rtb-a"), None);
        r.succeeded("rtb-a", CommandId(2), NodeId(2));
        assert_eq!(r.confirmed("rtb-a"), Some(NodeId(2)));
    }
}
