//! Is the master dead? A pure verdict over the sidecars' recent reports.
//!
//! Dead means either the master's own sidecar says its mysqld is down, or a majority
//! of all sidecars failed `probe_failures` probes in a row, none reached it on its last
//! probe, and no replica's IO thread is still connected to it (orchestrator's
//! DeadMaster). A master that any sidecar still reaches, or that still feeds a replica,
//! is alive as far as failover is concerned: a network problem between one sidecar and
//! the master is not a reason to take the master away from everyone else.
//!
//! On the coordinator, a dead master runs the pre-failover hook, and the failover
//! begins (`failover/`) when the hook does not veto it and the master is still dead.

use crate::cluster::{ClusterSpec, NodeId};
use crate::command::{Command, CommandId};
use crate::engine::{Engine, Pending};
use crate::event::Event;
use crate::hook::{HookCall, HookPoint};
use crate::message::{LocalView, Report};
use crate::time::Time;
use std::collections::BTreeMap;

/// The coordinator's detection state between a dead master and a begun failover.
#[derive(Debug, Default)]
pub(crate) struct Detection {
    /// The pre-failover hook under way: (its command, when to stop waiting for it).
    pre_hook: Option<(CommandId, Time)>,
    /// A vetoed failover is not tried again before this.
    vetoed_until: Option<Time>,
    /// The failover epoch whose block was last reported (one event per block).
    blocked_reported: Option<u64>,
}

impl Detection {
    /// When the engine must look again (some may have passed already).
    pub fn deadlines(&self) -> impl Iterator<Item = Time> {
        [self.pre_hook.map(|(_, d)| d), self.vetoed_until]
            .into_iter()
            .flatten()
    }

    /// The pre-failover hook has not answered by its deadline.
    pub fn hook_overdue(&self, now: Time) -> bool {
        self.pre_hook.is_some_and(|(_, deadline)| now >= deadline)
    }

    /// `id` is the pre-failover hook this detection waits for.
    pub fn is_pre_hook(&self, id: CommandId) -> bool {
        self.pre_hook.is_some_and(|(want, _)| want == id)
    }

    /// This sidecar is no longer the coordinator: its hook and veto are moot.
    pub fn deposed(&mut self) {
        self.pre_hook = None;
        self.vetoed_until = None;
    }
}

/// Returns why the master is dead, or `None` when it must not be failed over.
/// `reports` holds only fresh reports (the caller drops stale ones), the caller's own
/// included.
pub fn dead_master_reason(
    spec: &ClusterSpec,
    master: NodeId,
    reports: &BTreeMap<NodeId, &Report>,
) -> Option<String> {
    let about_master: BTreeMap<NodeId, &Report> = reports
        .iter()
        .filter(|(_, r)| r.master == Some(master))
        .map(|(k, v)| (*k, *v))
        .collect();
    if let Some(own) = about_master.get(&master) {
        if matches!(own.local, Some(LocalView::Down)) {
            return Some(format!("{master}'s own sidecar reports its mysqld down"));
        }
        if matches!(own.local, Some(LocalView::Up(_))) {
            return None;
        }
    }
    if about_master
        .values()
        .any(|r| r.master_reachable == Some(true))
    {
        return None;
    }
    if about_master
        .values()
        .any(|r| r.local.as_ref().is_some_and(|l| l.receives_from(master)))
    {
        return None;
    }
    let failing = about_master
        .values()
        .filter(|r| {
            r.master_reachable == Some(false) && r.master_failures >= spec.timing.probe_failures
        })
        .count();
    (failing >= spec.majority()).then(|| {
        format!(
            "{failing} of {} sidecars failed {} probes of {master} in a row and no replica receives from it",
            spec.nodes.len(),
            spec.timing.probe_failures
        )
    })
}

impl Engine {
    pub(crate) fn failover_blocked_until(&self) -> Option<u64> {
        self.record
            .failover_blocked_until(self.spec.timing.failover_block_ms, self.wall_ms())
    }

    /// Why the master is dead, if it is (and the cluster may fail it over).
    pub(crate) fn master_dead(&self) -> Option<(NodeId, String)> {
        if self.record.paused || self.record.failover.is_some() {
            return None;
        }
        let master = self.record.master?;
        dead_master_reason(&self.spec, master, &self.fresh_reports()).map(|r| (master, r))
    }

    pub(crate) fn detect(&mut self) {
        if self.detection.pre_hook.is_some()
            || self.detection.vetoed_until.is_some_and(|t| self.now < t)
        {
            return;
        }
        self.detection.vetoed_until = None;
        let Some((master, reason)) = self.master_dead() else {
            return;
        };
        if let Some(until_wall_ms) = self.failover_blocked_until() {
            let epoch = self.record.epoch;
            if self.detection.blocked_reported != Some(epoch) {
                self.detection.blocked_reported = Some(epoch);
                self.emit(Event::FailoverBlocked {
                    master,
                    until_wall_ms,
                });
            }
            return;
        }
        self.emit(Event::MasterDead {
            master,
            reason: reason.clone(),
        });
        // The pre-failover hook runs first (the driver answers at once when none is
        // configured); the failover begins when it comes back without a veto.
        let call = HookCall {
            point: HookPoint::PreFailover,
            epoch: self.record.epoch + 1,
            old_master: Some(master),
            new_master: None,
            reason,
            success: None,
            why: None,
            duration_ms: None,
            positions: self.known_positions(),
            salvage: None,
        };
        let id = self.issue(Pending::PreFailoverHook, |id| Command::Hook { id, call });
        self.detection.pre_hook = Some((id, self.now + self.spec.timing.step_timeout()));
    }

    /// The pre-failover hook answered (or was given up on): begin, unless it vetoed or
    /// the master has come back meanwhile.
    pub(crate) fn after_pre_failover_hook(&mut self, veto: Option<String>) {
        self.detection.pre_hook = None;
        if let Some(why) = veto {
            self.emit(Event::Vetoed {
                what: "failover".into(),
                why,
            });
            self.detection.vetoed_until = Some(self.now + self.spec.timing.step_timeout());
            return;
        }
        if !self.coord.is_coordinator() || self.run.is_some() {
            return;
        }
        if let Some((master, reason)) = self.master_dead() {
            self.begin_failover(vec![master], reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::test_cluster::{spec, N1, N2, N3};
    use crate::command::{MysqlStatus, ReplicationStatus};
    use crate::gtid::{Flavour, GtidSet};

    fn report(master_failures: u32, reachable: Option<bool>, local: Option<LocalView>) -> Report {
        Report {
            epoch: 1,
            master: Some(N1),
            master_failures,
            master_reachable: reachable,
            local,
            lease: None,
            grants_ended: None,
            routes_at: None,
            forwarding: None,
        }
    }

    fn status_replicating(io: bool) -> LocalView {
        LocalView::Up(Some(MysqlStatus {
            read_only: true,
            executed: GtidSet::empty(Flavour::Mariadb),
            received: GtidSet::empty(Flavour::Mariadb),
            replication: Some(ReplicationStatus {
                source: Some(N1),
                io_running: io,
                sql_running: true,
            }),
        }))
    }

    #[test]
    fn detection_rules() {
        let s = spec();
        let check = |reports: Vec<(NodeId, Report)>| {
            let reports: Vec<(NodeId, Report)> = reports;
            let map: BTreeMap<NodeId, &Report> = reports.iter().map(|(k, v)| (*k, v)).collect();
            dead_master_reason(&s, N1, &map)
        };
        // The master's own sidecar says its mysqld is down: dead at once.
        assert!(check(vec![(N1, report(0, None, Some(LocalView::Down)))]).is_some());
        // The master's own sidecar sees it up: alive, whatever the others say.
        assert!(check(vec![
            (N1, report(0, None, Some(LocalView::Up(None)))),
            (N2, report(5, Some(false), Some(status_replicating(false)))),
            (N3, report(5, Some(false), Some(status_replicating(false)))),
        ])
        .is_none());
        // A majority failing, nobody reaching, no replica receiving: dead.
        assert!(check(vec![
            (N2, report(3, Some(false), Some(status_replicating(false)))),
            (N3, report(3, Some(false), Some(status_replicating(false)))),
        ])
        .is_some());
        // Too few failures yet.
        assert!(check(vec![
            (N2, report(2, Some(false), Some(status_replicating(false)))),
            (N3, report(3, Some(false), Some(status_replicating(false)))),
        ])
        .is_none());
        // Reachable from one sidecar: alive.
        assert!(check(vec![
            (N2, report(0, Some(true), Some(status_replicating(false)))),
            (N3, report(3, Some(false), Some(status_replicating(false)))),
        ])
        .is_none());
        // Unreachable from every sidecar but still feeding a replica: alive.
        assert!(check(vec![
            (N2, report(3, Some(false), Some(status_replicating(true)))),
            (N3, report(3, Some(false), Some(status_replicating(false)))),
        ])
        .is_none());
        // One failing sidecar alone is no majority.
        assert!(check(vec![(
            N3,
            report(9, Some(false), Some(status_replicating(false)))
        )])
        .is_none());
    }
}
