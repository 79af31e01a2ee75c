//! Where the fence is decided. Two sides of one rule — only the writer of record,
//! holding its lease (see `lease.rs`), may be writable:
//!
//! - each sidecar keeps its own mysqld read_only whenever that rule says so
//!   ([`Engine::fence_if_needed`]) and makes the master of record writable again only
//!   after a lease round newer than the fence was granted ([`Engine::maybe_unfence`]);
//! - the coordinator, before it promotes a new master, knows the old one is fenced:
//!   confirmed (read_only succeeded, the instance was stopped, or its own sidecar
//!   reports its mysqld down in the new epoch), or by waiting until its lease must have
//!   run out ([`unconfirmed_suspects`], [`old_writer_fenced_by`]).

use crate::cluster::{NodeId, Timing};
use crate::command::{Command, MysqlOp};
use crate::coord::EntryAt;
use crate::engine::{Engine, Pending};
use crate::event::Event;
use crate::message::{LocalView, Report};
use crate::sabotage::Sabotage;
use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Suspects not known to be fenced: read_only did not succeed, the instance was not
/// stopped (`fenced` holds those that were), and their own sidecar has not reported
/// mysqld down from `epoch` on.
pub(crate) fn unconfirmed_suspects(
    suspects: &[NodeId],
    fenced: &BTreeSet<NodeId>,
    reports: &BTreeMap<NodeId, &Report>,
    epoch: u64,
) -> Vec<NodeId> {
    suspects
        .iter()
        .copied()
        .filter(|s| !fenced.contains(s))
        .filter(|s| {
            !reports
                .get(s)
                .is_some_and(|r| r.epoch >= epoch && matches!(r.local, Some(LocalView::Down)))
        })
        .collect()
}

/// When an unconfirmed old writer must have fenced itself, for a failover whose begin
/// entry this coordinator saw applied at `begun`: no lease round it sends after the
/// commit is granted (a majority holds the new epoch and refuses), and a lease lasts
/// `lease` from its round's sending; a probe interval more covers the clock-rate margin
/// and the time its sidecar takes to set read_only.
pub(crate) fn old_writer_fenced_by(begun: Time, timing: &Timing) -> Time {
    begun + timing.lease() + timing.probe_interval()
}

/// Durations another host measured are trusted to within a hundredth (a clock-rate
/// difference of 1 %, twenty times what NTP may slew a clock by).
const RATE_SLACK: u32 = 100;

impl Engine {
    /// When the lease of the writer before the failover whose committed begin entry is
    /// `begin` has run out, judged from the grants (see `lease.rs`): each sidecar that
    /// durably logged that entry reported when it last granted a lease; every majority that
    /// granted the old writer a round contains one of them, and that round was sent
    /// before the grant. So the lease ends `lease` after the latest grant of the
    /// majority whose latest grant is earliest, plus the margin for clock rates. `None`
    /// until a majority (this node included) has reported.
    pub(crate) fn lease_over_by_grants(&self, begin: EntryAt) -> Option<Time> {
        let epoch = begin.epoch;
        let mut last: Vec<Time> = self
            .spec
            .ids()
            .filter_map(|n| {
                if n == self.me {
                    return Some(self.grants.last_before(epoch, self.started));
                }
                let (at, report) = self.reports.get(&n)?;
                let g = report.grants_ended.filter(|g| {
                    (g.epoch, g.index, g.term) == (begin.epoch, begin.index, begin.term)
                })?;
                // Measured on the reporter's clock, and it was sent before it arrived:
                // `at` less a little less than the time since the grant is no earlier.
                let ago = Duration::from_millis(g.last_grant_ago_ms);
                Some(*at - (ago - ago / RATE_SLACK))
            })
            .collect();
        last.sort();
        let quickest = *last.get(self.spec.majority().checked_sub(1)?)?;
        let timing = &self.spec.timing;
        Some(quickest + timing.lease() + timing.lease_margin())
    }

    /// Keeps the local mysqld's read_only in line with the record: only the writer of
    /// record, holding its lease, may be writable.
    pub(crate) fn enforce_local(&mut self) {
        let LocalView::Up(Some(status)) = &self.local.view else {
            return;
        };
        if status.read_only {
            self.local.read_only_seen.get_or_insert(self.now);
            self.maybe_unfence();
            return;
        }
        self.local.read_only_seen = None;
        if !self.local.enforcing {
            self.fence_if_needed();
        }
    }

    /// The writer's lease runs out: its mysqld is made read_only at that very moment,
    /// not at the next probe (the coordinator times the old writer's lease to the
    /// grants it was given, `fence_lead` after it ends here).
    pub(crate) fn fence_on_expiry(&mut self) {
        if self.local.enforcing || self.fence_due_at().is_none_or(|t| self.now < t) {
            return;
        }
        self.fence_if_needed();
    }

    /// When this node's mysqld must be made read_only, if it may be writable then: the
    /// writer of record's lease end, whatever its last probe said — a candidate is made
    /// writable by the coordinator, a probe may fail or be stale — unless it was made
    /// read_only since; a writer never granted a lease in this epoch, now, unless it is
    /// seen read_only (a candidate before its first grant is read_only, and fencing it
    /// then could land after its promotion); another node's mysqld that its last probe
    /// saw writable, now. A failed attempt waits a probe interval before the next.
    pub(crate) fn fence_due_at(&self) -> Option<Time> {
        let (writable_seen, read_only_seen) = match &self.local.view {
            LocalView::Up(Some(s)) => (!s.read_only, s.read_only),
            _ => (false, false),
        };
        let writer = self.is_database() && self.record.writer() == Some(self.me);
        let due = match self.lease.valid_until(self.record.epoch) {
            Some(end) if writer => {
                let fenced_since = self.local.read_only_made.is_some_and(|t| t >= end);
                (writable_seen || !fenced_since).then_some(end)
            }
            None if writer => (!read_only_seen).then_some(self.now),
            _ => writable_seen.then_some(self.now),
        }?;
        Some(due.max(self.local.fence_retry_at.unwrap_or(Time::ZERO)))
    }

    /// Makes the local mysqld read_only when it must not be writable now.
    pub(crate) fn fence_if_needed(&mut self) {
        let Some(why) = self.fence_reason() else {
            return;
        };
        if self.sabotaged(Sabotage::SelfFence) {
            return;
        }
        self.emit(Event::SelfFenced { why });
        self.set_local_read_only(MysqlOp::SetReadOnly);
    }

    /// Why the local mysqld must not be writable now, if it must not.
    fn fence_reason(&self) -> Option<String> {
        let epoch = self.record.epoch;
        if self.record.writer() != Some(self.me) {
            Some(format!(
                "local mysqld is writable but the writer of epoch {epoch} is {:?}",
                self.record.writer()
            ))
        } else if self.coord.highest_logged_epoch() > epoch {
            Some("a failover to a newer epoch is in the log".to_string())
        } else if !self.lease.is_valid(epoch, self.now) {
            Some("lost the write lease: no majority of sidecars answered in time".to_string())
        } else {
            None
        }
    }

    /// The master of record that fenced itself (or started read_only) becomes writable
    /// again once a lease round sent after it was last seen read_only is granted.
    pub(crate) fn maybe_unfence(&mut self) {
        let Some(seen) = self.local.read_only_seen else {
            return;
        };
        let epoch = self.record.epoch;
        if self.local.enforcing
            || self.record.master != Some(self.me)
            || self.record.failover.is_some()
            || self.coord.highest_logged_epoch() > epoch
            || !self.lease_left_at_least(self.spec.timing.probe_interval())
            || !self.lease.granted_after(epoch, seen)
        {
            return;
        }
        self.emit(Event::Unfenced);
        self.local.read_only_seen = None;
        self.set_local_read_only(MysqlOp::SetWritable);
    }

    /// This node holds its lease for at least `d` more: time for a read_only change to
    /// land well before the lease's end (a late one would leave the server writable
    /// past it until the fence at the end).
    pub(crate) fn lease_left_at_least(&self, d: Duration) -> bool {
        self.lease
            .left(self.record.epoch, self.now)
            .is_some_and(|left| left >= d)
    }

    /// The driver asks before it runs a `SetWritable` it held behind a state write: the
    /// lease must still be held, with time to spare (`fence_lead`).
    pub fn may_make_writable(&self, now: Time) -> bool {
        self.record.master == Some(self.me)
            && self
                .lease
                .left(self.record.epoch, now)
                .is_some_and(|left| left >= self.spec.timing.fence_lead())
    }

    fn set_local_read_only(&mut self, op: MysqlOp) {
        self.local.enforcing = true;
        let me = self.me;
        let writable = op == MysqlOp::SetWritable;
        self.issue(Pending::Enforce { writable }, |id| Command::Mysql {
            id,
            node: me,
            op,
        });
    }
}
