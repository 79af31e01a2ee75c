//! The engine: one per sidecar. Probing, reports, the lease, self-fencing, and (on the
//! coordinator) detection, the failover procedure and the VIP routes.

use crate::cluster::{ClusterSpec, NodeId};
use crate::command::{Command, CommandId, CommandResult, ProbeResult};
use crate::coord::{Committed, Coordination};
use crate::detect::Detection;
use crate::event::Event;
use crate::failover::FailoverRun;
use crate::forward::{Forwarding, VipPath};
use crate::input::Input;
use crate::lease::{Grants, Lease};
use crate::message::{LocalView, PeerMessage, Report};
use crate::probe::Probing;
use crate::record::{ClusterRecord, LogEntry};
use crate::routes::Routes;
use crate::sabotage::Sabotage;
use crate::storage::DurableState;
use crate::time::Time;
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
    /// Where this host's VIP traffic goes.
    Forward {
        path: VipPath,
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
    /// When this sidecar last made its mysqld read_only (the command succeeded).
    pub read_only_made: Option<Time>,
    /// A failed read_only is tried again no sooner than this.
    pub fence_retry_at: Option<Time>,
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
    pending: BTreeMap<CommandId, Pending>,
    was_coordinator: bool,
    pub(crate) probing: Probing,
    pub(crate) reports: BTreeMap<NodeId, (Time, Report)>,
    pub(crate) lease: Lease,
    /// The leases this node granted, for its reports once it grants no more.
    pub(crate) grants: Grants,
    /// When this engine started: every grant an earlier run of this sidecar gave came
    /// before.
    pub(crate) started: Time,
    pub(crate) local: Local,
    pub(crate) run: Option<FailoverRun>,
    pub(crate) routes: Routes,
    pub(crate) forwarding: Forwarding,
    /// When each replica was last repointed outside a failover (rate limit).
    pub(crate) repointing: BTreeMap<NodeId, Time>,
    pub(crate) errant_reported: BTreeSet<(NodeId, u64)>,
    pub(crate) detection: Detection,
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
        // The log before the snapshot is folded into it: the record starts from there.
        let record = match restored.and_then(|r| r.snapshot.as_ref()) {
            None => ClusterRecord::initial(&spec),
            Some(s) => serde_json::from_slice(&s.record).map_err(|e| {
                EngineError::Coordination(format!("stored snapshot at entry {}: {e}", s.index))
            })?,
        };
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
            lease: Lease::numbered_from(restored.map_or(0, |r| r.lease_round_base())),
            grants: Grants::default(),
            started: now,
            local: Local {
                view: if is_db {
                    LocalView::Unknown
                } else {
                    LocalView::Down
                },
                read_only_seen: None,
                enforcing: false,
                enforced_at: None,
                read_only_made: None,
                fence_retry_at: None,
            },
            run: None,
            routes: Routes::default(),
            forwarding: Forwarding::default(),
            repointing: BTreeMap::new(),
            errant_reported: BTreeSet::new(),
            detection: Detection::default(),
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
        if let Some(d) = self.run.as_ref().map(|r| r.deadline()) {
            t = t.min(d);
        }
        // A retry whose table is no longer due (its target gone meanwhile) stays in
        // the past until the next call: it must not make the driver spin.
        if let Some(d) = self.routes.next_retry().filter(|d| *d > self.now) {
            t = t.min(d);
        }
        if let Some(d) = self.forwarding.next_retry().filter(|d| *d > self.now) {
            t = t.min(d);
        }
        if let Some(d) = self.lease_retry_at() {
            t = t.min(d);
        }
        if let Some(d) = self.fence_due_at().filter(|d| *d > self.now) {
            t = t.min(d);
        }
        // Only deadlines still ahead: one already passed and not acted on (this sidecar
        // is no longer the coordinator) must not make the driver spin.
        for d in self.detection.deadlines() {
            t = t.min(Some(d).filter(|d| *d > self.now).unwrap_or(t));
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
        if committed.is_empty() {
            return;
        }
        for c in committed {
            match c {
                Committed::Snapshot { index, record } => {
                    match serde_json::from_slice::<ClusterRecord>(&record) {
                        Ok(record) => {
                            self.record = record;
                            self.emit(Event::SnapshotInstalled { index });
                            self.on_snapshot();
                        }
                        Err(e) => {
                            // The record no longer follows the log: this node must not
                            // fold it into a snapshot of its own and hand it on.
                            self.coord.stop_compacting();
                            self.emit(Event::SnapshotUndecodable {
                                why: format!("snapshot at entry {index}: {e}"),
                            })
                        }
                    }
                }
                Committed::Entry(data) => match LogEntry::decode(&data) {
                    Ok(entry) => {
                        if let Err(ignored) = self.record.apply(&entry) {
                            self.emit(Event::EntryIgnored { why: ignored.0 });
                        } else {
                            self.on_applied(&entry);
                        }
                    }
                    Err(why) => self.emit(Event::EntryUndecodable { why }),
                },
            }
        }
        // The record now stands at the last applied entry: what a snapshot holds.
        let record = &self.record;
        if let Some((index, persist)) = self.coord.compact(|| serde_json::to_vec(record).ok()) {
            self.out.push(persist);
            self.emit(Event::LogCompacted { index });
        }
    }

    /// What [`Engine::on_applied`] does for the entries a leader's snapshot folded in,
    /// judged from the record they built.
    fn on_snapshot(&mut self) {
        if self.record.writer() == Some(self.me) {
            // Made the writer (candidate or master) by entries it never saw one by one:
            // a read_only seen before is stale, and a lease round starts at once rather
            // than at the next probe.
            self.local.read_only_seen = None;
            self.start_lease_round();
        } else {
            self.lease.clear();
        }
    }

    /// Sets how many applied entries the raft log keeps before they are folded into a
    /// snapshot of the record ([`crate::LOG_LIMIT`] unless set; tests lower it).
    pub fn set_log_limit(&mut self, entries: u64) {
        self.coord.set_log_limit(entries);
    }

    /// Everything that follows from time passing or state changing. Runs after every
    /// input; each part is idempotent.
    fn pump(&mut self) {
        self.drain_raft();
        // Peers learn at once that this sidecar knows a newer epoch: a suspect's sidecar
        // saying so (with its mysqld down) confirms the suspect is fenced.
        if self.known_epoch() > self.probing.reported_epoch {
            self.send_report();
        }
        self.leadership_changes();
        self.probe_round();
        self.retry_lease_round();
        self.fence_on_expiry();
        if self.coord.is_coordinator() {
            self.coordinate();
        }
        self.reconcile_forwarding();
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
                self.detection.deposed();
                self.routes.clear();
            }
        }
    }

    fn coordinate(&mut self) {
        if self.detection.hook_overdue(self.now) {
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
                    Err(why) => {
                        if !writable {
                            // Again at the next probe's pace: a mysqld that is
                            // down fails every attempt.
                            self.local.fence_retry_at =
                                Some(self.now + self.spec.timing.probe_interval());
                        }
                        self.emit(Event::LocalReadOnlyFailed { writable, why })
                    }
                    // Made writable: if the lease ran out (or a newer epoch came) while
                    // that was under way, fence again at once rather than at the next
                    // probe (a probe sent before now is not trusted, see above).
                    Ok(_) if writable => {
                        if let LocalView::Up(Some(s)) = &mut self.local.view {
                            s.read_only = false;
                        }
                        self.fence_if_needed()
                    }
                    // Read_only from now on: a lease round sent after this may make it
                    // writable again (the writer asks within a raft tick).
                    Ok(_) => {
                        self.local.read_only_seen = Some(self.now);
                        self.local.read_only_made = Some(self.now);
                        self.local.fence_retry_at = None;
                        if let LocalView::Up(Some(s)) = &mut self.local.view {
                            s.read_only = true;
                        }
                    }
                }
            }
            (Pending::Rejoin { node, source }, CommandResult::Mysql(r)) => {
                self.on_rejoin_result(node, source, r.map(|_| ()))
            }
            (Pending::PreFailoverHook, CommandResult::Done(r)) => {
                if self.detection.is_pre_hook(id) {
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
            (Pending::Forward { path }, CommandResult::Done(r)) => {
                self.on_forward_result(id, path, r)
            }
            (p, r) => self.emit(Event::ResultMismatch {
                why: format!("result {r:?} does not fit command {p:?}"),
            }),
        }
    }
}
