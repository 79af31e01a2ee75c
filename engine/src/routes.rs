//! Where a route is moved: every VIP route table is kept pointing at the writer of
//! record. Run by the coordinator only; a new coordinator knows nothing confirmed and re-issues every route (the call
//! is idempotent), which also repairs a route someone changed by hand.

use crate::cluster::NodeId;
use crate::command::{Command, CommandId};
use crate::engine::{Engine, Pending};
use crate::event::Event;
use crate::sabotage::Sabotage;
use crate::time::Time;
use std::collections::BTreeMap;
use std::time::Duration;

const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(5);

impl Engine {
    pub(crate) fn reconcile_routes(&mut self) {
        let Some(target) = self.record.writer() else {
            return;
        };
        // A committed candidate gets the VIP only once it holds everything (relay log
        // applied, binlog salvaged) and is being promoted: before that, a client
        // reading through the VIP would miss its own acknowledged writes.
        if self.record.failover.is_some()
            && !self.run.as_ref().is_some_and(|r| r.routes_may_move())
            && !self.sabotaged(Sabotage::VipEarly)
        {
            return;
        }
        let due = self
            .routes
            .due(&self.spec.vip.route_tables, target, self.now);
        for table in due {
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

    pub(crate) fn routes_pending(&self, target: NodeId) -> Vec<String> {
        self.routes.pending(&self.spec.vip.route_tables, target)
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

    /// Tables that need a `ReplaceRoute` to `target` now.
    pub fn due(&self, tables: &[String], target: NodeId, now: Time) -> Vec<String> {
        tables
            .iter()
            .filter(|t| self.confirmed.get(*t) != Some(&target))
            .filter(|t| self.in_flight.get(*t).is_none_or(|(_, to)| *to != target))
            .filter(|t| self.retry_at.get(*t).is_none_or(|at| *at <= now))
            .cloned()
            .collect()
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

    pub fn pending(&self, tables: &[String], target: NodeId) -> Vec<String> {
        tables
            .iter()
            .filter(|t| self.confirmed.get(*t) != Some(&target))
            .cloned()
            .collect()
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
        assert_eq!(
            r.pending(&["rtb-a".into()], NodeId(2)),
            vec!["rtb-a".to_string()]
        );
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
        let tables = ["rtb-a".to_string()];
        let now = Time::from_millis(0);
        r.issued("rtb-a".into(), CommandId(1), NodeId(1));
        assert!(r.due(&tables, NodeId(1), now).is_empty());
        assert_eq!(r.due(&tables, NodeId(2), now), tables.to_vec());
        r.issued("rtb-a".into(), CommandId(2), NodeId(2));
        r.succeeded("rtb-a", CommandId(1), NodeId(1));
        assert_eq!(r.pending(&tables, NodeId(2)), tables.to_vec());
        r.succeeded("rtb-a", CommandId(2), NodeId(2));
        assert!(r.pending(&tables, NodeId(2)).is_empty());
    }
}
