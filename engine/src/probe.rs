//! Probing: every sidecar probes its own mysqld and the master's once per probe
//! interval, and after each probe sends every peer a report of what it saw. The
//! reports are what detection (`detect.rs`) and the coordinator's view of the cluster
//! are made of.

use crate::cluster::NodeId;
use crate::command::Command;
use crate::engine::{Engine, Pending};
use crate::event::Event;
use crate::message::{LeaseHeld, LocalView, PeerMessage, Report};
use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default)]
pub(crate) struct Probing {
    pub next_at: Time,
    pub local_in_flight: Option<Time>,
    pub master_in_flight: Option<Time>,
    pub probed_master: Option<NodeId>,
    pub master_failures: u32,
    pub master_reachable: Option<bool>,
    /// The epoch this sidecar's last report carried: a newer one known is reported at
    /// once.
    pub reported_epoch: u64,
    /// The epoch of the lease the last report said this node holds: a change is
    /// reported at once.
    pub reported_lease: Option<u64>,
}

impl Engine {
    pub(crate) fn is_database(&self) -> bool {
        self.spec.node(self.me).is_some_and(|n| n.is_database())
    }

    pub(crate) fn probe_round(&mut self) {
        if self.now < self.probing.next_at {
            return;
        }
        let interval = self.spec.timing.probe_interval();
        self.probing.next_at = self.now + interval;
        // A probe that never came back counts as failed, so a lost result cannot stop
        // probing for good.
        let stale = |t: Option<Time>, now: Time| t.is_some_and(|t| now.since(t) >= interval * 2);
        if stale(self.probing.local_in_flight, self.now) {
            self.probing.local_in_flight = None;
            self.local.view = LocalView::Down;
        }
        if stale(self.probing.master_in_flight, self.now) {
            self.probing.master_in_flight = None;
            self.note_master_probe(false);
        }
        if self.is_database() && self.probing.local_in_flight.is_none() {
            self.probing.local_in_flight = Some(self.now);
            let me = self.me;
            self.issue(Pending::LocalProbe, |id| Command::Probe { id, node: me });
        }
        let master = self.record.master.filter(|m| *m != self.me);
        if self.probing.probed_master != master {
            self.probing.probed_master = master;
            self.probing.master_failures = 0;
            self.probing.master_reachable = None;
        }
        if let Some(m) = master {
            if self.probing.master_in_flight.is_none() {
                self.probing.master_in_flight = Some(self.now);
                self.issue(Pending::MasterProbe { master: m }, |id| Command::Probe {
                    id,
                    node: m,
                });
            }
        }
        // The writer renews its lease once per probe interval.
        if self.is_database() && self.record.writer() == Some(self.me) {
            self.start_lease_round();
        }
    }

    pub(crate) fn note_master_probe(&mut self, reachable: bool) {
        if reachable {
            self.probing.master_failures = 0;
        } else {
            self.probing.master_failures += 1;
            if self.probing.master_failures == self.spec.timing.probe_failures {
                if let Some(master) = self.probing.probed_master {
                    let failures = self.probing.master_failures;
                    self.emit(Event::MasterUnreachable { master, failures });
                }
            }
        }
        self.probing.master_reachable = Some(reachable);
    }

    pub(crate) fn known_epoch(&self) -> u64 {
        self.record.epoch.max(self.coord.highest_logged_epoch())
    }

    pub(crate) fn send_report(&mut self) {
        self.probing.reported_epoch = self.known_epoch();
        self.probing.reported_lease = self.held_lease();
        let report = Report {
            epoch: self.probing.reported_epoch,
            master: self.record.master,
            master_failures: self.probing.master_failures,
            master_reachable: if self.record.master == Some(self.me) {
                None
            } else {
                self.probing.master_reachable
            },
            local: self.is_database().then(|| self.local.view.clone()),
            lease: self.held_lease().map(|epoch| LeaseHeld {
                epoch,
                left_ms: self
                    .lease
                    .left(epoch, self.now)
                    .map_or(0, |left| left.as_millis() as u64),
            }),
            grants_ended: self.grants_ended(),
            routes_at: if self.coord.is_coordinator() {
                self.routes_confirmed_at()
            } else {
                None
            },
            forwarding: self.forwarding.applied(),
        };
        self.reports.insert(self.me, (self.now, report.clone()));
        self.broadcast(PeerMessage::Report(report));
    }

    /// `node`'s report, if young enough to act on (one lookup, no map built).
    pub(crate) fn fresh_report(&self, node: NodeId) -> Option<&Report> {
        self.reports
            .get(&node)
            .filter(|(at, _)| self.now.since(*at) <= self.spec.timing.report_ttl())
            .map(|(_, r)| r)
    }

    /// Reports young enough to act on, this node's own included.
    pub(crate) fn fresh_reports(&self) -> BTreeMap<NodeId, &Report> {
        self.reports_within(self.spec.timing.report_ttl())
    }

    pub(crate) fn reports_within(&self, age: std::time::Duration) -> BTreeMap<NodeId, &Report> {
        self.reports
            .iter()
            .filter(|(_, (at, _))| self.now.since(*at) <= age)
            .map(|(id, (_, r))| (*id, r))
            .collect()
    }

    /// Sidecars heard from within one and a half probe intervals (each sends a report
    /// after every probe): the ones that are up now, this one included.
    pub(crate) fn live_sidecars(&self) -> BTreeSet<NodeId> {
        self.reports_within(self.spec.timing.probe_interval() * 3 / 2)
            .into_keys()
            .chain(std::iter::once(self.me))
            .collect()
    }

    /// Each database server's executed set, as last reported.
    pub(crate) fn known_positions(&self) -> BTreeMap<NodeId, String> {
        self.node_views()
            .into_iter()
            .filter_map(|(id, v)| match v.mysqld {
                Some(LocalView::Up(Some(s))) => Some((id, s.executed.to_string())),
                _ => None,
            })
            .collect()
    }
}
