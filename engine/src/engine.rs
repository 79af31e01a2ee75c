//! The engine: one per sidecar. Probing, reports, the lease, self-fencing, and (on the
//! coordinator) detection, the failover procedure and the VIP routes.

use crate::cluster::{ClusterSpec, NodeId};
use crate::command::{Command, CommandId, CommandResult, ProbeResult};
use crate::coord::Coordination;
use crate::detect::dead_master_reason;
use crate::event::Event;
use crate::failover::FailoverRun;
use crate::hook::{HookCall, HookPoint};
use crate::input::Input;
use crate::lease::Lease;
use crate::message::{LocalView, PeerMessage, Report};
use crate::record::{ClusterRecord, LogEntry};
use crate::routes::Routes;
use crate::sabotage::Sabotage;
use crate::storage::DurableState;
use crate::time::Time;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("node {0} is not in the cluster description")]
    UnknownNode(NodeId),
    #[error("cannot start coordination: {0}")]
    Coordination(String),
}

/// What an issued command was for, so that its result reaches the right place.
#[derive(Debug, Clone)]
pub(crate) enum Pending {
    LocalProbe,
    MasterProbe {
        master: NodeId,
    },
    /// A read_only change on the local mysqld (`writable`: made writable).
    Enforce {
        writable: bool,
    },
    /// A failover step on `node`, for the run of `epoch`.
    Step {
        epoch: u64,
        node: NodeId,
    },
    Route {
        table: String,
        target: NodeId,
    },
    /// Reattaching a replica to the master outside a failover.
    Rejoin {
        node: NodeId,
        source: NodeId,
    },
    /// The pre-failover hook; its veto stops the failover from beginning.
    PreFailoverHook,
    /// The pre-switchover hook of a planned run.
    SwitchoverHook,
    /// A post hook: its result changes nothing.
    PostHook,
}

#[derive(Debug, Default)]
pub(crate) struct Probing {
    pub next_at: Time,
    pub local_in_flight: Option<Time>,
    pub master_in_flight: Option<Time>,
    pub probed_master: Option<NodeId>,
    pub master_failures: u32,
    pub master_reachable: Option<bool>,
}

#[derive(Debug)]
pub(crate) struct Local {
    pub view: LocalView,
    /// When the local mysqld was last seen read_only (reset when seen writable).
    pub read_only_seen: Option<Time>,
    pub enforcing: bool,
    /// When the last read_only change this sidecar made finished: a probe sent before
    /// then shows the server as it was, and must not undo it (an unfence followed by a
    /// stale "read_only" would unfence a second time).
    pub enforced_at: Option<Time>,
}

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

pub struct Engine {
    pub(crate) spec: ClusterSpec,
    pub(crate) me: NodeId,
    pub(crate) coord: Coordination,
    pub(crate) record: ClusterRecord,
    pub(crate) now: Time,
    /// The wall clock as of the last tick, and `now` then: between ticks the wall clock
    /// is carried forward by `now`, so that journal times are as fine as `now` is.
    wall_at_tick: (u64, Time),
    next_id: u64,
    out: Vec<Command>,
    pub(crate) pending: BTreeMap<CommandId, Pending>,
    was_coordinator: bool,
    pub(crate) probing: Probing,
    pub(crate) reports: BTreeMap<NodeId, (Time, Report)>,
    reported_epoch: u64,
    pub(crate) lease: Lease,
    pub(crate) local: Local,
    pub(crate) run: Option<FailoverRun>,
    pub(crate) routes: Routes,
    /// When each replica was last repointed outside a failover (rate limit).
    pub(crate) repointing: BTreeMap<NodeId, Time>,
    pub(crate) errant_reported: BTreeSet<(NodeId, u64)>,
    /// The pre-failover hook under way: (its command, when to stop waiting for it).
    pub(crate) pre_hook: Option<(CommandId, Time)>,
    /// A vetoed failover is not tried again before this.
    pub(crate) vetoed_until: Option<Time>,
    /// The failover epoch whose block was last reported (one event per block).
    blocked_reported: Option<u64>,
    /// The safety mechanism switched off, in a negative-control run.
    #[cfg(feature = "sabotage")]
    sabotage: Option<Sabotage>,
}

impl Engine {
    /// Starts a node. `restored` is what the driver persisted before a restart (`None`
    /// on first start); the record is rebuilt by replaying the committed log.
    pub fn new(
        spec: ClusterSpec,
        me: NodeId,
        restored: Option<&DurableState>,
        now: Time,
    ) -> Result<Self, EngineError> {
        if spec.node(me).is_none() {
            return Err(EngineError::UnknownNode(me));
        }
        let coord =
            Coordination::new(&spec, me, restored, now).map_err(EngineError::Coordination)?;
        let record = ClusterRecord::initial(&spec);
        let is_db = spec.node(me).is_some_and(|n| n.is_database());
        let mut engine = Engine {
            spec,
            me,
            coord,
            record,
            now,
            wall_at_tick: (0, Time::ZERO),
            next_id: 0,
            out: Vec::new(),
            pending: BTreeMap::new(),
            was_coordinator: false,
            probing: Probing {
                next_at: now,
                ..Probing::default()
            },
            reports: BTreeMap::new(),
            reported_epoch: 0,
            lease: Lease::numbered_from(restored.map_or(0, |r| r.lease_round_base())),
            local: Local {
                view: if is_db {
                    LocalView::Unknown
                } else {
                    LocalView::Down
                },
                read_only_seen: None,
                enforcing: false,
                enforced_at: None,
            },
            run: None,
            routes: Routes::default(),
            repointing: BTreeMap::new(),
            errant_reported: BTreeSet::new(),
            pre_hook: None,
            vetoed_until: None,
            blocked_reported: None,
            #[cfg(feature = "sabotage")]
            sabotage: None,
        };
        engine.pump();
        Ok(engine)
    }

    /// Switches one safety mechanism off (negative controls; the simulation only).
    #[cfg(feature = "sabotage")]
    pub fn sabotage(&mut self, s: Option<Sabotage>) {
        self.sabotage = s;
    }

    /// Whether `s` is switched off: never, without the `sabotage` feature.
    #[cfg(feature = "sabotage")]
    pub(crate) fn sabotaged(&self, s: Sabotage) -> bool {
        self.sabotage == Some(s)
    }

    #[cfg(not(feature = "sabotage"))]
    #[inline(always)]
    pub(crate) fn sabotaged(&self, _: Sabotage) -> bool {
        false
    }

    /// Feeds one input at `now` (monotonic; an earlier `now` than before counts as the
    /// same instant). Commands it produces are collected for [`Engine::take_commands`].
    pub fn handle(&mut self, now: Time, input: Input) {
        self.now = self.now.max(now);
        self.coord.advance_time(self.now);
        match input {
            Input::Tick { wall_unix_ms } => {
                self.wall_at_tick = (self.wall_ms().max(wall_unix_ms), self.now)
            }
            Input::Peer { from, message } => self.on_peer(from, message),
            Input::Done { id, result } => self.on_done(id, result),
            Input::Operator(req) => self.on_operator(req),
        }
        self.pump();
    }

    /// Unix milliseconds: the last tick's wall clock plus the monotonic time since it
    /// (0 before the first tick).
    pub(crate) fn wall_ms(&self) -> u64 {
        let (wall, at) = self.wall_at_tick;
        if wall == 0 {
            return 0;
        }
        wall + self.now.since(at).as_millis() as u64
    }

    /// The commands to execute, in order. See the crate docs for the contract.
    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.out)
    }

    /// Call [`Engine::handle`] with a `Tick` no later than this.
    pub fn next_deadline(&self) -> Time {
        let mut t = self.coord.next_deadline().min(self.probing.next_at);
        if let Some(d) = self.run.as_ref().and_then(|r| r.deadline()) {
            t = t.min(d);
        }
        if let Some(d) = self.routes.next_retry() {
            t = t.min(d);
        }
        // Only deadlines still ahead: one already passed and not acted on (this sidecar
        // is no longer the coordinator) must not make the driver spin.
        for d in [self.pre_hook.map(|(_, d)| d), self.vetoed_until] {
            t = t.min(d.filter(|d| *d > self.now).unwrap_or(t));
        }
        t.max(self.now)
    }

    pub fn record(&self) -> &ClusterRecord {
        &self.record
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    pub fn is_coordinator(&self) -> bool {
        self.coord.is_coordinator()
    }

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
        }
    }

    fn node_views(&self) -> BTreeMap<NodeId, NodeView> {
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

    // ---- plumbing -------------------------------------------------------------------

    pub(crate) fn issue(
        &mut self,
        pending: Pending,
        make: impl FnOnce(CommandId) -> Command,
    ) -> CommandId {
        self.next_id += 1;
        let id = CommandId(self.next_id);
        self.pending.insert(id, pending);
        self.out.push(make(id));
        id
    }

    pub(crate) fn emit(&mut self, event: Event) {
        self.out.push(Command::Emit(event));
    }

    pub(crate) fn send(&mut self, to: NodeId, message: PeerMessage) {
        if to != self.me {
            self.out.push(Command::Send { to, message });
        }
    }

    pub(crate) fn broadcast(&mut self, message: PeerMessage) {
        let peers: Vec<NodeId> = self.spec.ids().filter(|id| *id != self.me).collect();
        for p in peers {
            self.send(p, message.clone());
        }
    }

    pub(crate) fn propose(&mut self, entry: LogEntry) {
        // Negative control only: a decision acted on as proposed.
        if self.sabotaged(Sabotage::ActBeforeCommit)
            && matches!(
                entry,
                LogEntry::FailoverBegin { .. } | LogEntry::CandidateChosen { .. }
            )
            && self.record.apply(&entry).is_ok()
        {
            self.on_applied(&entry);
        }
        if !self.coord.propose(&entry) {
            self.emit(Event::ProposalRefused { entry });
        }
        self.drain_raft();
    }

    fn drain_raft(&mut self) {
        let committed = self.coord.drain(&mut self.out);
        for data in committed {
            match LogEntry::decode(&data) {
                Ok(entry) => {
                    if let Err(ignored) = self.record.apply(&entry) {
                        self.emit(Event::EntryIgnored { why: ignored.0 });
                    } else {
                        self.on_applied(&entry);
                    }
                }
                Err(why) => self.emit(Event::EntryUndecodable { why }),
            }
        }
    }

    /// Everything that follows from time passing or state changing. Runs after every
    /// input; each part is idempotent.
    fn pump(&mut self) {
        self.drain_raft();
        // Peers learn at once that this sidecar knows a newer epoch: a suspect's sidecar
        // saying so (with its mysqld down) confirms the suspect is fenced.
        if self.known_epoch() > self.reported_epoch {
            self.send_report();
        }
        self.leadership_changes();
        self.probe_round();
        if self.coord.is_coordinator() {
            self.coordinate();
        }
        self.drain_raft();
    }

    fn leadership_changes(&mut self) {
        let now_coord = self.coord.is_coordinator();
        if now_coord != self.was_coordinator {
            self.was_coordinator = now_coord;
            let term = self.coord.term();
            if now_coord {
                self.emit(Event::BecameCoordinator { term });
            } else {
                self.emit(Event::LostCoordination { term });
                // A deposed coordinator drops its failover run at once: the next one
                // resumes from the committed record.
                self.run = None;
                self.pre_hook = None;
                self.vetoed_until = None;
                self.routes.clear();
            }
        }
    }

    fn coordinate(&mut self) {
        if self
            .pre_hook
            .is_some_and(|(_, deadline)| self.now >= deadline)
        {
            // The driver bounds hooks by their own timeout; a lost answer must not
            // hold the failover back.
            self.after_pre_failover_hook(None);
        }
        self.failover_progress();
        if self.run.is_none() {
            self.detect();
        }
        self.reconcile_routes();
        self.reconcile_replicas();
    }

    fn on_applied(&mut self, entry: &LogEntry) {
        match entry {
            // A newer epoch: this node is no longer the writer it may have been.
            LogEntry::FailoverBegin { .. } if self.record.writer() != Some(self.me) => {
                self.lease.clear();
            }
            LogEntry::SetPaused { paused } => self.emit(Event::Paused(*paused)),
            LogEntry::FailoverComplete { new_master, .. } if *new_master == self.me => {
                // Promoted: a read_only seen before the promotion is stale; the next
                // probe tells.
                self.local.read_only_seen = None;
            }
            LogEntry::CandidateChosen { candidate, .. } if *candidate == self.me => {
                // Ask for the lease at once: the coordinator may promote this node
                // before the next probe round, and a writer without a lease round
                // under way would fence itself on its next probe.
                self.start_lease_round();
            }
            _ => {}
        }
        self.on_applied_failover(entry);
    }

    // ---- probing and reports --------------------------------------------------------

    fn is_database(&self) -> bool {
        self.spec.node(self.me).is_some_and(|n| n.is_database())
    }

    fn probe_round(&mut self) {
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

    fn note_master_probe(&mut self, reachable: bool) {
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

    fn known_epoch(&self) -> u64 {
        self.record.epoch.max(self.coord.highest_logged_epoch())
    }

    fn send_report(&mut self) {
        self.reported_epoch = self.known_epoch();
        let report = Report {
            epoch: self.reported_epoch,
            master: self.record.master,
            master_failures: self.probing.master_failures,
            master_reachable: if self.record.master == Some(self.me) {
                None
            } else {
                self.probing.master_reachable
            },
            local: self.is_database().then(|| self.local.view.clone()),
        };
        self.reports.insert(self.me, (self.now, report.clone()));
        self.broadcast(PeerMessage::Report(report));
    }

    /// Reports young enough to act on, this node's own included.
    pub(crate) fn fresh_reports(&self) -> BTreeMap<NodeId, &Report> {
        self.reports_within(self.spec.timing.report_ttl())
    }

    fn reports_within(&self, age: std::time::Duration) -> BTreeMap<NodeId, &Report> {
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

    pub(crate) fn failover_blocked_until(&self) -> Option<u64> {
        self.record
            .failover_blocked_until(self.spec.timing.failover_block_ms, self.wall_ms())
    }

    /// Why the master is dead, if it is (and the cluster may fail it over).
    fn master_dead(&self) -> Option<(NodeId, String)> {
        if self.record.paused || self.record.failover.is_some() {
            return None;
        }
        let master = self.record.master?;
        dead_master_reason(&self.spec, master, &self.fresh_reports()).map(|r| (master, r))
    }

    fn detect(&mut self) {
        if self.pre_hook.is_some() || self.vetoed_until.is_some_and(|t| self.now < t) {
            return;
        }
        self.vetoed_until = None;
        let Some((master, reason)) = self.master_dead() else {
            return;
        };
        if let Some(until_wall_ms) = self.failover_blocked_until() {
            let epoch = self.record.epoch;
            if self.blocked_reported != Some(epoch) {
                self.blocked_reported = Some(epoch);
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
        self.pre_hook = Some((id, self.now + self.spec.timing.step_timeout()));
    }

    /// The pre-failover hook answered (or was given up on): begin, unless it vetoed or
    /// the master has come back meanwhile.
    fn after_pre_failover_hook(&mut self, veto: Option<String>) {
        self.pre_hook = None;
        if let Some(why) = veto {
            self.emit(Event::Vetoed {
                what: "failover".into(),
                why,
            });
            self.vetoed_until = Some(self.now + self.spec.timing.step_timeout());
            return;
        }
        if !self.coord.is_coordinator() || self.run.is_some() {
            return;
        }
        if let Some((master, reason)) = self.master_dead() {
            self.begin_failover(vec![master], reason);
        }
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

    // ---- inputs ---------------------------------------------------------------------

    fn on_peer(&mut self, from: NodeId, message: PeerMessage) {
        if from == self.me || self.spec.node(from).is_none() {
            self.emit(Event::NotAPeer { from });
            return;
        }
        match message {
            PeerMessage::Raft(bytes) => {
                if let Err(why) = self.coord.step(from, &bytes) {
                    self.emit(Event::RaftRejected { from, why });
                }
            }
            PeerMessage::Report(report) => {
                self.reports.insert(from, (self.now, report));
            }
            PeerMessage::LeaseRequest { epoch, seq } => self.on_lease_request(from, epoch, seq),
            PeerMessage::LeaseGrant { epoch, seq } => self.on_lease_grant(from, epoch, seq),
        }
    }

    fn on_done(&mut self, id: CommandId, result: CommandResult) {
        let Some(pending) = self.pending.remove(&id) else {
            self.emit(Event::UnknownResult { id });
            return;
        };
        match (pending, result) {
            (Pending::LocalProbe, CommandResult::Probe(p)) => {
                let sent = self.probing.local_in_flight.take();
                self.local.view = match p {
                    ProbeResult::Alive(status) => LocalView::Up(status),
                    ProbeResult::Down(_) => LocalView::Down,
                };
                // A change under way, or finished after the probe was sent: the probe may
                // show the server as it was before.
                let stale = self.local.enforcing
                    || sent.zip(self.local.enforced_at).is_some_and(|(s, e)| s < e);
                if !stale {
                    self.enforce_local();
                }
                self.send_report();
            }
            (Pending::MasterProbe { master }, CommandResult::Probe(p)) => {
                self.probing.master_in_flight = None;
                if self.probing.probed_master == Some(master) {
                    self.note_master_probe(matches!(p, ProbeResult::Alive(_)));
                    self.send_report();
                }
            }
            (Pending::Enforce { writable }, CommandResult::Mysql(r)) => {
                self.local.enforcing = false;
                self.local.enforced_at = Some(self.now);
                match r {
                    Err(why) => self.emit(Event::LocalReadOnlyFailed { writable, why }),
                    // Made writable: if the lease ran out (or a newer epoch came) while
                    // that was under way, fence again at once rather than at the next
                    // probe (a probe sent before now is not trusted, see above).
                    Ok(_) if writable => self.fence_if_needed(),
                    Ok(_) => {}
                }
            }
            (Pending::Rejoin { node, source }, CommandResult::Mysql(r)) => {
                self.on_rejoin_result(node, source, r.map(|_| ()))
            }
            (Pending::PreFailoverHook, CommandResult::Done(r)) => {
                if self.pre_hook.is_some_and(|(want, _)| want == id) {
                    self.after_pre_failover_hook(r.err());
                }
            }
            (Pending::SwitchoverHook, CommandResult::Done(r)) => {
                self.after_switchover_hook(id, r.err())
            }
            (Pending::PostHook, CommandResult::Done(_)) => {}
            (Pending::Step { epoch, node }, result) => self.on_step_result(id, epoch, node, result),
            (Pending::Route { table, target }, CommandResult::Done(r)) => {
                self.on_route_result(id, table, target, r)
            }
            (p, r) => self.emit(Event::ResultMismatch {
                why: format!("result {r:?} does not fit command {p:?}"),
            }),
        }
    }
}
