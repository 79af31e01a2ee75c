//! Keeps every healthy replica attached to the master of record (coordinator only).
//!
//! A replica left out of a failover (unreachable at the time), one whose IO thread was
//! stopped by a fence that did not complete, or a returning old master, is repointed
//! at the master — but only when it holds no transaction the master lacks. A server
//! with errant transactions is left alone, read_only, and reported: replicating it into
//! the cluster as is would spread or hide a divergence.

use crate::cluster::NodeId;
use crate::command::{Command, MysqlOp};
use crate::engine::{Engine, Pending};
use crate::event::Event;
use crate::message::LocalView;
use crate::record::LogEntry;
use crate::sabotage::Sabotage;

impl Engine {
    pub(crate) fn reconcile_replicas(&mut self) {
        if self.record.failover.is_some() || self.run.is_some() {
            return;
        }
        let Some(master) = self.record.master else {
            return;
        };
        // Act only on a master whose sidecar is up and reports it up, and compare each
        // replica with a master status taken after the replica's own: a detached replica
        // does not move, so anything it has that such a status lacks is errant.
        if !self.live_sidecars().contains(&master) {
            return;
        }
        let Some((master_at, master_report)) = self.reports.get(&master) else {
            return;
        };
        let Some(LocalView::Up(Some(ms))) = master_report.local.as_ref() else {
            return;
        };
        // Only a master seen writable: a new master becomes writable when it is
        // promoted, after its relay log is applied, and a status from before that
        // (read_only, relay log pending) would make every transaction still in its
        // relay log look errant on the other replicas.
        if ms.read_only {
            return;
        }
        let (master_at, master_executed) = (*master_at, ms.executed.clone());
        let mut to_repoint = Vec::new();
        let mut to_release = Vec::new();
        let mut errant = Vec::new();
        for id in self.spec.database_ids().filter(|id| *id != master) {
            let Some((at, report)) = self.reports.get(&id) else {
                continue;
            };
            let Some(LocalView::Up(Some(st))) = report.local.as_ref() else {
                continue;
            };
            if !st.read_only
                || *at > master_at
                || self.now.since(*at) > self.spec.timing.report_ttl()
            {
                continue;
            }
            let attached = st
                .replication
                .as_ref()
                .is_some_and(|r| r.source == Some(master) && r.io_running);
            // What it received counts too: its SQL thread will apply the relay log.
            // A quarantine stands only while the facts behind it do: a quarantined
            // server found clean is released, attached or not. An attached replica is
            // never called errant here: it moves, and a status of it read after the
            // master's but delivered first would show writes the master's lacks.
            let mut extra = st.received.difference(&master_executed);
            if self.sabotaged(Sabotage::ErrantCheck) {
                extra = crate::gtid::GtidSet::empty(self.spec.flavour);
            }
            let quarantined = self.record.quarantined.contains_key(&id);
            match (extra.is_empty(), quarantined) {
                (true, true) => to_release.push(id),
                (true, false) if !attached => to_repoint.push(id),
                (false, _) if !attached => errant.push((id, extra)),
                _ => {}
            }
        }
        let epoch = self.record.epoch;
        let retry = self.spec.timing.step_timeout();
        for id in to_repoint {
            if self
                .repointing
                .get(&id)
                .is_some_and(|t| self.now.since(*t) < retry)
            {
                continue;
            }
            self.repointing.insert(id, self.now);
            self.issue(
                Pending::Rejoin {
                    node: id,
                    source: master,
                },
                |cid| Command::Mysql {
                    id: cid,
                    node: id,
                    op: MysqlOp::Repoint { source: master },
                },
            );
        }
        // Checked clean: let it back in (it is repointed on a later round).
        for node in to_release {
            if self
                .repointing
                .get(&node)
                .is_some_and(|t| self.now.since(*t) < retry)
            {
                continue;
            }
            self.repointing.insert(node, self.now);
            // Reported again if it turns errant again.
            self.errant_reported.retain(|(n, _)| *n != node);
            self.propose(LogEntry::Quarantine { node, why: None });
        }
        for (node, gtids) in errant {
            if self.errant_reported.insert((node, epoch)) {
                let why = format!("errant transactions {gtids}, not on master {master}");
                self.emit(Event::ErrantTransactions {
                    node,
                    master,
                    gtids,
                });
                self.propose(LogEntry::Quarantine {
                    node,
                    why: Some(why),
                });
            }
        }
    }

    pub(crate) fn on_rejoin_result(&mut self, node: NodeId, source: NodeId, r: Result<(), String>) {
        let epoch = self.record.epoch;
        match r {
            Ok(()) => self.emit(Event::Repointed {
                epoch,
                node,
                source,
            }),
            Err(why) => self.emit(Event::Skipped {
                epoch,
                node,
                why: format!("repoint to {source} failed: {why}"),
            }),
        }
    }
}
