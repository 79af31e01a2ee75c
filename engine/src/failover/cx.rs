//! The failover run's window on the engine: the clock, the cluster description, the
//! committed record and what the sidecars report, and the three ways a run acts —
//! issue a command, emit an event, propose a log entry.

use crate::cluster::{ClusterSpec, NodeId};
use crate::command::{Command, CommandId};
use crate::coord::EntryAt;
use crate::engine::{Engine, Pending};
use crate::event::Event;
use crate::message::Report;
use crate::record::{ClusterRecord, LogEntry};
use crate::sabotage::Sabotage;
use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet};

pub(crate) struct Cx<'a> {
    engine: &'a mut Engine,
    /// Proposed once the run is back in its place (see `Engine::with_run`).
    proposals: Vec<LogEntry>,
}

impl<'a> Cx<'a> {
    pub fn new(engine: &'a mut Engine) -> Self {
        Cx {
            engine,
            proposals: Vec::new(),
        }
    }

    pub fn into_proposals(self) -> Vec<LogEntry> {
        self.proposals
    }

    pub fn now(&self) -> Time {
        self.engine.now
    }

    pub fn wall_ms(&self) -> u64 {
        self.engine.wall_ms()
    }

    pub fn spec(&self) -> &ClusterSpec {
        &self.engine.spec
    }

    pub fn record(&self) -> &ClusterRecord {
        &self.engine.record
    }

    /// When a step issued now is given up on.
    pub fn step_deadline(&self) -> Time {
        self.engine.now + self.engine.spec.timing.step_timeout()
    }

    /// The suspects of the committed failover (none when there is none).
    pub fn suspects(&self) -> Vec<NodeId> {
        self.engine
            .record
            .failover
            .as_ref()
            .map(|f| f.suspects.clone())
            .unwrap_or_default()
    }

    /// The candidate the committed failover names, once one is committed.
    pub fn committed_candidate(&self) -> Option<NodeId> {
        self.engine
            .record
            .failover
            .as_ref()
            .and_then(|f| f.candidate)
    }

    pub fn fresh_reports(&self) -> BTreeMap<NodeId, &Report> {
        self.engine.fresh_reports()
    }

    pub fn live_sidecars(&self) -> BTreeSet<NodeId> {
        self.engine.live_sidecars()
    }

    pub fn known_positions(&self) -> BTreeMap<NodeId, String> {
        self.engine.known_positions()
    }

    /// Route tables not confirmed where they should point.
    pub fn routes_pending(&self) -> Vec<String> {
        self.engine.routes_pending()
    }

    /// Where the committed begin entry of failover `epoch` stands in the log.
    pub fn committed_failover_begin(&self, epoch: u64) -> Option<EntryAt> {
        self.engine.coord.committed_failover_begin(epoch)
    }

    /// When the old writer's lease has run out, judged from the grants the sidecars
    /// report against the failover's begin entry (see [`Engine::lease_over_by_grants`]).
    pub fn lease_over_by_grants(&self, begin: EntryAt) -> Option<Time> {
        self.engine.lease_over_by_grants(begin)
    }

    /// `node` holds the write lease of `epoch` for at least a probe interval more (time
    /// for its promotion to land well before the lease's end): this node's own, or as
    /// its last report said (what was left then, less the time since, on this clock,
    /// trusting the writer's clock to a hundredth).
    pub fn holds_lease(&self, node: NodeId, epoch: u64) -> bool {
        let e = &self.engine;
        let need = e.spec.timing.probe_interval();
        if node == e.me {
            return e.held_lease() == Some(epoch) && e.lease_left_at_least(need);
        }
        e.reports.get(&node).is_some_and(|(at, r)| {
            r.lease.is_some_and(|l| {
                let left = std::time::Duration::from_millis(l.left_ms - l.left_ms / 100);
                l.epoch == epoch && e.now + need <= *at + left
            })
        })
    }

    pub fn sabotaged(&self, s: Sabotage) -> bool {
        self.engine.sabotaged(s)
    }

    /// The replica reconciler leaves `node` alone until its reports catch up with the
    /// repoint issued now.
    pub fn repointing(&mut self, node: NodeId) {
        let now = self.engine.now;
        self.engine.repointing.insert(node, now);
    }

    pub fn issue(
        &mut self,
        pending: Pending,
        make: impl FnOnce(CommandId) -> Command,
    ) -> CommandId {
        self.engine.issue(pending, make)
    }

    pub fn emit(&mut self, event: Event) {
        self.engine.emit(event);
    }

    pub fn propose(&mut self, entry: LogEntry) {
        self.proposals.push(entry);
    }
}
