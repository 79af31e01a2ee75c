//! Keeps every VIP route table pointing at the writer of record. Run by the coordinator
//! only; a new coordinator knows nothing confirmed and re-issues every route (the call
//! is idempotent), which also repairs a route someone changed by hand.

use crate::cluster::NodeId;
use crate::command::CommandId;
use crate::time::Time;
use std::collections::BTreeMap;
use std::time::Duration;

const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub(crate) struct Routes {
    confirmed: BTreeMap<String, NodeId>,
    in_flight: BTreeMap<String, CommandId>,
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
            .filter(|t| !self.in_flight.contains_key(*t))
            .filter(|t| self.retry_at.get(*t).is_none_or(|at| *at <= now))
            .cloned()
            .collect()
    }

    pub fn issued(&mut self, table: String, id: CommandId) {
        self.retry_at.remove(&table);
        self.in_flight.insert(table, id);
    }

    pub fn succeeded(&mut self, table: &str, target: NodeId) {
        self.in_flight.remove(table);
        self.retry_at.remove(table);
        self.failures.remove(table);
        self.confirmed.insert(table.to_string(), target);
    }

    pub fn failed(&mut self, table: &str, now: Time) {
        self.in_flight.remove(table);
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
}
