//! The failover, run by the coordinator as a state machine over commands.
//!
//! Decisions that must survive the coordinator (the failover began; who the candidate
//! is; how it ended) are committed to the raft log before anything acts on them. All
//! else is redone by the next coordinator: every step is idempotent, so a coordinator
//! that takes over half-way runs the procedure again from the fence, with the
//! committed candidate if there is one.
//!
//! Steps of an unplanned failover: fence (stop IO threads, read_only on suspects,
//! optional instance stop) → choose (and catch up a behind candidate) → commit the
//! candidate (the VIP routes move from here on) → relay log applied → salvage from the
//! old master's host → wait out the old master's lease unless it is confirmed fenced →
//! promote → repoint → commit. [`prepare`] holds the steps up to the committed
//! candidate, [`promote`] the rest, [`switchover`] the planned run's own first steps.
//!
//! A run is a value: each step takes it, acts through a [`Cx`] (the engine's small
//! window: time, spec, record, issue/emit/propose) and returns the run that follows —
//! the same one in a new phase, a new epoch's run, or none. The candidate lives in the
//! phases that have one, so no step can reach for a candidate that is not chosen yet.

mod cx;
mod prepare;
mod promote;
pub(crate) mod switchover;

pub(crate) use cx::Cx;

use crate::choose::Choice;
use crate::cluster::NodeId;
use crate::command::{
    Command, CommandId, CommandResult, MysqlOp, MysqlReply, Positions, SalvageReport,
};
use crate::coord::EntryAt;
use crate::engine::{Engine, Pending};
use crate::event::Event;
use crate::hook::{HookCall, HookPoint};
use crate::record::{FailoverReport, LogEntry};
use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet};

/// A failover run on this coordinator: what the run has learned so far, and the
/// phase it is in (with what that phase waits for).
#[derive(Debug)]
pub(crate) struct FailoverRun {
    run: Run,
    phase: Phase,
}

/// What a run carries from phase to phase.
#[derive(Debug)]
struct Run {
    epoch: u64,
    /// When this coordinator took the failover on.
    started: Time,
    /// When this coordinator saw the epoch's begin entry applied (the lease wait runs
    /// from here).
    begun_at: Option<Time>,
    positions: BTreeMap<NodeId, Positions>,
    fenced: BTreeSet<NodeId>,
    skipped: BTreeMap<NodeId, String>,
    tried: BTreeSet<NodeId>,
    caught_up_from: Option<NodeId>,
    /// Whose binlog was read, and how that went.
    salvage: Option<(NodeId, Result<SalvageReport, String>)>,
    /// A planned switchover to this node, run in order (see `switchover.rs`) until its
    /// target is committed. `None` also when a new coordinator finishes a switchover
    /// whose target was already committed: that is done as a failover.
    planned: Option<NodeId>,
    /// Where the epoch's committed begin entry stands in the log, once looked up (the
    /// lease wait matches the sidecars' reports against it after every input).
    begin_entry: Option<EntryAt>,
}

#[derive(Debug)]
enum Phase {
    /// Switchover: the pre-switchover hook runs.
    SwitchoverHook {
        id: CommandId,
        deadline: Time,
        from: NodeId,
        to: NodeId,
    },
    /// Switchover: the old master is being demoted.
    Demoting {
        id: CommandId,
        deadline: Time,
        to: NodeId,
    },
    ProposingBegin {
        deadline: Time,
    },
    Fencing {
        waiting: BTreeSet<NodeId>,
        deadline: Time,
    },
    CatchingUp {
        id: CommandId,
        deadline: Time,
        choice: Choice,
    },
    ProposingCandidate {
        deadline: Time,
        choice: Choice,
    },
    WaitingApplied {
        id: CommandId,
        deadline: Time,
        choice: Choice,
    },
    Salvaging {
        id: CommandId,
        deadline: Time,
        /// Whose binlog is read.
        from: NodeId,
        candidate: NodeId,
    },
    WaitingLease {
        /// The old writer's lease has run out by then (unless it is confirmed fenced
        /// sooner); grants reported later may bring it forward.
        until: Time,
        /// The candidate holds no write lease of its own by then: the failover is
        /// retried.
        give_up: Time,
        /// When to look again: `until`, or `give_up` once `until` has passed.
        wake: Time,
        candidate: NodeId,
    },
    Promoting {
        id: CommandId,
        deadline: Time,
        candidate: NodeId,
    },
    Repointing {
        waiting: BTreeSet<NodeId>,
        deadline: Time,
        candidate: NodeId,
    },
    /// Promoted and repointed; the VIP routes are still being replaced.
    AwaitingRoutes {
        deadline: Time,
        candidate: NodeId,
    },
    ProposingEnd {
        entry: LogEntry,
        deadline: Time,
    },
    /// The attempt failed; a new epoch starts at `until`.
    Retrying {
        until: Time,
        why: String,
        suspect: Option<NodeId>,
    },
}

/// What a step leaves behind: the run to keep (this one in its next phase, or a new
/// epoch's), or none.
type Next = Option<FailoverRun>;

impl FailoverRun {
    pub fn epoch(&self) -> u64 {
        self.run.epoch
    }

    pub fn deadline(&self) -> Time {
        self.phase.deadline()
    }

    /// The candidate holds every transaction it will have as master (its relay log
    /// applied, the old master's tail salvaged; it may still wait out the old master's
    /// lease, read_only): the VIP may lead clients to it.
    pub fn routes_may_move(&self) -> bool {
        matches!(
            self.phase,
            Phase::WaitingLease { .. }
                | Phase::Promoting { .. }
                | Phase::Repointing { .. }
                | Phase::AwaitingRoutes { .. }
                | Phase::ProposingEnd { .. }
        )
    }

    pub fn phase_name(&self) -> &'static str {
        match self.phase {
            Phase::ProposingBegin { .. } => "begin",
            Phase::SwitchoverHook { .. } => "pre-switchover-hook",
            Phase::Demoting { .. } => "demote",
            Phase::Fencing { .. } => "fence",
            Phase::CatchingUp { .. } => "catch-up",
            Phase::ProposingCandidate { .. } => "choose",
            Phase::WaitingApplied { .. } => "relay-apply",
            Phase::Salvaging { .. } => "salvage",
            Phase::WaitingLease { .. } => "lease-wait",
            Phase::Promoting { .. } => "promote",
            Phase::Repointing { .. } => "repoint",
            Phase::AwaitingRoutes { .. } => "routes",
            Phase::ProposingEnd { .. } => "commit",
            Phase::Retrying { .. } => "retry-wait",
        }
    }

    /// Commits "failover to epoch E+1 begins" (the decision comes before any action).
    fn begin(cx: &mut Cx, suspects: Vec<NodeId>, reason: String) -> FailoverRun {
        let epoch = cx.record().epoch + 1;
        cx.emit(Event::FailoverBegun {
            epoch,
            suspects: suspects.clone(),
            reason: reason.clone(),
        });
        let deadline = cx.step_deadline();
        let wall_ms = cx.wall_ms();
        cx.propose(LogEntry::FailoverBegin {
            epoch,
            suspects,
            reason,
            wall_ms,
            planned: None,
        });
        FailoverRun {
            run: Run::new(epoch, cx.now()),
            phase: Phase::ProposingBegin { deadline },
        }
    }

    /// A committed failover that has no run on this coordinator (it took over, or the
    /// begin entry came from another): start it here, from the fence.
    fn resume(cx: &mut Cx, epoch: u64) -> Next {
        cx.emit(Event::FailoverResumed { epoch });
        let mut run = Run::new(epoch, cx.now());
        run.begun_at = Some(cx.now());
        run.start_fence(cx)
    }

    /// Runs after every input on the coordinator: moves on when what a phase waits for
    /// is already true, and handles the phase's deadline.
    fn progress(self, cx: &mut Cx) -> Next {
        let FailoverRun { run, phase } = self;
        match phase {
            Phase::WaitingLease {
                until,
                give_up,
                candidate,
                ..
            } => run.wait_lease(cx, until, give_up, candidate),
            Phase::AwaitingRoutes { candidate, .. } if cx.routes_pending().is_empty() => {
                run.commit_completion(cx, candidate)
            }
            phase if cx.now() >= phase.deadline() => run.timed_out(cx, phase),
            phase => run.enter(phase),
        }
    }

    /// A committed entry was applied on this coordinator.
    fn on_applied(self, cx: &mut Cx, entry: &LogEntry) -> Next {
        let FailoverRun { mut run, phase } = self;
        let this_epoch = run.epoch;
        match (entry, phase) {
            (LogEntry::FailoverBegin { epoch, .. }, Phase::ProposingBegin { .. })
                if *epoch == this_epoch =>
            {
                run.begun_at = Some(cx.now());
                run.start_fence(cx)
            }
            (LogEntry::CandidateChosen { epoch, .. }, Phase::ProposingCandidate { choice, .. })
                if *epoch == this_epoch =>
            {
                run.candidate_committed(cx, choice)
            }
            (
                LogEntry::FailoverComplete {
                    epoch,
                    new_master,
                    report,
                    ..
                },
                _,
            ) if *epoch == this_epoch => {
                cx.emit(Event::FailoverCompleted {
                    epoch: *epoch,
                    new_master: *new_master,
                    report: report.clone(),
                });
                run.post_hook(cx, Some(*new_master), None, report.salvage.clone());
                None
            }
            (LogEntry::SwitchoverCancelled { epoch, why, .. }, _) if *epoch == this_epoch => {
                cx.emit(Event::SwitchoverCancelled {
                    epoch: *epoch,
                    why: why.clone(),
                });
                run.post_hook(cx, None, Some(why.clone()), None);
                None
            }
            (_, phase) => run.enter(phase),
        }
    }

    /// The result of a failover step (a command issued for this run's epoch).
    fn on_step_result(
        self,
        cx: &mut Cx,
        id: CommandId,
        node: NodeId,
        result: CommandResult,
    ) -> Next {
        let FailoverRun { mut run, phase } = self;
        if let Phase::Demoting { id: want, to, .. } = phase {
            if want == id {
                return match result {
                    CommandResult::Mysql(r) => run.on_demoted(cx, node, to, r),
                    _ => run.enter(phase),
                };
            }
        }
        let suspect = cx.suspects().contains(&node);
        let late_phase = matches!(phase, Phase::Promoting { .. } | Phase::Repointing { .. });
        match result {
            CommandResult::Mysql(r) if suspect && !late_phase => {
                run.on_suspect_fenced(cx, phase, node, r)
            }
            CommandResult::Done(r) => {
                // StopInstance on a suspect.
                if r.is_ok() {
                    run.fenced.insert(node);
                    let epoch = run.epoch;
                    cx.emit(Event::Fenced { epoch, node });
                }
                run.enter(phase)
            }
            CommandResult::Mysql(r) => run.on_mysql_step(cx, phase, id, node, r),
            CommandResult::Salvage(r) => run.on_salvaged(cx, phase, id, r),
            CommandResult::Probe(_) => run.enter(phase),
        }
    }
}

impl Phase {
    /// When the phase gives up waiting (or, for the lease wait and the retry pause,
    /// when it is over).
    fn deadline(&self) -> Time {
        match self {
            Phase::ProposingBegin { deadline }
            | Phase::SwitchoverHook { deadline, .. }
            | Phase::Demoting { deadline, .. }
            | Phase::Fencing { deadline, .. }
            | Phase::CatchingUp { deadline, .. }
            | Phase::ProposingCandidate { deadline, .. }
            | Phase::WaitingApplied { deadline, .. }
            | Phase::Salvaging { deadline, .. }
            | Phase::Promoting { deadline, .. }
            | Phase::Repointing { deadline, .. }
            | Phase::AwaitingRoutes { deadline, .. }
            | Phase::ProposingEnd { deadline, .. } => *deadline,
            Phase::WaitingLease { wake, .. } => *wake,
            Phase::Retrying { until, .. } => *until,
        }
    }
}

impl Run {
    fn new(epoch: u64, now: Time) -> Self {
        Run {
            epoch,
            started: now,
            begun_at: None,
            positions: BTreeMap::new(),
            fenced: BTreeSet::new(),
            skipped: BTreeMap::new(),
            tried: BTreeSet::new(),
            caught_up_from: None,
            salvage: None,
            planned: None,
            begin_entry: None,
        }
    }

    /// Keeps the run, in `phase`.
    fn enter(self, phase: Phase) -> Next {
        Some(FailoverRun { run: self, phase })
    }

    fn step(&self, cx: &mut Cx, node: NodeId, op: MysqlOp) -> CommandId {
        let epoch = self.epoch;
        cx.issue(Pending::Step { epoch, node }, |id| Command::Mysql {
            id,
            node,
            op,
        })
    }

    fn timed_out(mut self, cx: &mut Cx, phase: Phase) -> Next {
        match phase {
            // Not committed in time: this coordinator's proposal was lost. Let detection
            // decide again.
            Phase::ProposingBegin { .. } => None,
            Phase::SwitchoverHook { .. } => {
                self.cancel(cx, "the pre-switchover hook did not answer in time".into())
            }
            Phase::Demoting { .. } => {
                let who = cx.suspects().first().map_or("-".into(), |n| n.to_string());
                let why = format!("demoting {who} did not finish within the step timeout");
                self.cancel(cx, why)
            }
            Phase::Fencing { .. } => self.after_fence(cx),
            Phase::CatchingUp { choice, .. } => {
                self.catch_up_failed(cx, choice, "catch-up timed out".into())
            }
            Phase::ProposingCandidate { choice, .. } => {
                let (epoch, candidate) = (self.epoch, choice.candidate);
                let deadline = cx.step_deadline();
                cx.propose(LogEntry::CandidateChosen { epoch, candidate });
                self.enter(Phase::ProposingCandidate { deadline, choice })
            }
            Phase::WaitingApplied { .. } => self.retry(
                cx,
                "the candidate did not apply its relay log within the step timeout".into(),
                None,
            ),
            Phase::Salvaging {
                from, candidate, ..
            } => {
                self.salvage = Some((from, Err("salvage timed out".into())));
                self.after_salvage(cx, candidate)
            }
            Phase::WaitingLease {
                until,
                give_up,
                candidate,
                ..
            } => self.wait_lease(cx, until, give_up, candidate),
            Phase::Promoting { candidate, .. } => self.retry(
                cx,
                "promotion did not finish within the step timeout".into(),
                Some(candidate),
            ),
            Phase::Retrying { why, suspect, .. } => {
                let why = format!("retry after: {why}");
                let suspects = self.next_suspects(cx, suspect);
                Some(FailoverRun::begin(cx, suspects, why))
            }
            Phase::Repointing {
                waiting, candidate, ..
            } => {
                for n in waiting {
                    self.skipped.insert(n, "repoint timed out".into());
                }
                self.complete(cx, candidate)
            }
            Phase::AwaitingRoutes { candidate, .. } => self.commit_completion(cx, candidate),
            Phase::ProposingEnd { entry, .. } => {
                let deadline = cx.step_deadline();
                cx.propose(entry.clone());
                self.enter(Phase::ProposingEnd { entry, deadline })
            }
        }
    }

    /// The suspects of the epoch that supersedes this one: this epoch's, but those it
    /// fenced (made read_only, or stopped), which are replicas again — fenced like any
    /// replica, and candidates — plus `more`. Otherwise a cluster whose every live
    /// server was once a suspect (an old master back from a partition, the others dead
    /// or quarantined) would find no candidate, epoch after epoch, for good.
    fn next_suspects(&self, cx: &Cx, more: Option<NodeId>) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = cx
            .suspects()
            .into_iter()
            .filter(|s| !self.fenced.contains(s))
            .collect();
        out.extend(more.filter(|m| !out.contains(m)));
        out
    }

    /// A MySQL step's answer, matched to the phase that waits for it; a stale result
    /// (an earlier phase's) answers none.
    fn on_mysql_step(
        self,
        cx: &mut Cx,
        phase: Phase,
        id: CommandId,
        node: NodeId,
        r: Result<MysqlReply, String>,
    ) -> Next {
        match phase {
            Phase::Fencing {
                mut waiting,
                deadline,
            } if waiting.contains(&node) => {
                waiting.remove(&node);
                self.on_replica_fenced(cx, Phase::Fencing { waiting, deadline }, node, r)
            }
            Phase::CatchingUp {
                id: want, choice, ..
            } if want == id => self.on_caught_up(cx, node, choice, r),
            Phase::WaitingApplied {
                id: want, choice, ..
            } if want == id => self.on_relay_applied(cx, node, choice, r),
            Phase::Promoting {
                id: want,
                candidate,
                ..
            } if want == id => self.on_promoted(cx, node, candidate, r),
            Phase::Repointing {
                mut waiting,
                deadline,
                candidate,
            } if waiting.contains(&node) => {
                waiting.remove(&node);
                let last = waiting.is_empty();
                let phase = Phase::Repointing {
                    waiting,
                    deadline,
                    candidate,
                };
                self.on_repointed(cx, phase, node, candidate, r, last)
            }
            phase => self.enter(phase),
        }
    }

    /// This attempt cannot finish; the cluster stays fenced (no writer). After a pause
    /// the failover starts over in a new epoch, with `suspect` (a candidate that may
    /// have become writable) fenced like the old master. Nothing is given up for good:
    /// a replica that was unreachable may be back by then.
    fn retry(self, cx: &mut Cx, why: String, suspect: Option<NodeId>) -> Next {
        if self.planned.is_some() && cx.committed_candidate().is_none() {
            return self.cancel(cx, why);
        }
        let epoch = self.epoch;
        cx.emit(Event::FailoverAttemptFailed {
            epoch,
            why: why.clone(),
        });
        let until = cx.now() + cx.spec().timing.probe_interval() * 2;
        self.enter(Phase::Retrying {
            until,
            why,
            suspect,
        })
    }

    fn commit_completion(self, cx: &mut Cx, candidate: NodeId) -> Next {
        let report = FailoverReport {
            duration_ms: cx.now().since(self.started).as_millis() as u64,
            skipped: self.skipped.iter().map(|(k, v)| (*k, v.clone())).collect(),
            caught_up_from: self.caught_up_from,
            salvage: self.salvage.as_ref().map(|(_, r)| r.clone()),
            salvaged_from: self.salvage.as_ref().map(|(from, _)| *from),
            routes_pending: cx.routes_pending(),
        };
        let entry = LogEntry::FailoverComplete {
            epoch: self.epoch,
            new_master: candidate,
            report,
            wall_ms: cx.wall_ms(),
        };
        self.end_with(cx, entry)
    }

    fn end_with(self, cx: &mut Cx, entry: LogEntry) -> Next {
        let deadline = cx.step_deadline();
        cx.propose(entry.clone());
        self.enter(Phase::ProposingEnd { entry, deadline })
    }

    fn hook_call(
        &self,
        cx: &Cx,
        point: HookPoint,
        new_master: Option<NodeId>,
        why: Option<String>,
        salvage: Option<Result<SalvageReport, String>>,
    ) -> HookCall {
        let post = !point.is_pre();
        let mut positions = cx.known_positions();
        for (n, p) in &self.positions {
            positions.insert(*n, p.executed.to_string());
        }
        // A post hook runs once the end is applied: the journal holds the attempt.
        let (epoch, old_master, reason) = match (post, cx.record().journal.last()) {
            (true, Some(j)) => (j.epoch, j.old_master, j.reason.clone()),
            _ => (
                self.epoch,
                cx.suspects().first().copied(),
                cx.record()
                    .failover
                    .as_ref()
                    .map(|f| f.reason.clone())
                    .unwrap_or_default(),
            ),
        };
        HookCall {
            point,
            epoch,
            old_master,
            new_master,
            reason,
            success: post.then_some(why.is_none()),
            why,
            duration_ms: post.then(|| cx.now().since(self.started).as_millis() as u64),
            positions,
            salvage,
        }
    }

    /// Runs the post hook of the run that just ended (called before the run is
    /// dropped, while the record still names the failover).
    fn post_hook(
        &self,
        cx: &mut Cx,
        new_master: Option<NodeId>,
        why: Option<String>,
        salvage: Option<Result<SalvageReport, String>>,
    ) {
        let planned =
            self.planned.is_some() || cx.record().journal.last().is_some_and(|j| j.planned);
        let point = if planned {
            HookPoint::PostSwitchover
        } else {
            HookPoint::PostFailover
        };
        let call = self.hook_call(cx, point, new_master, why, salvage);
        cx.issue(Pending::PostHook, |id| Command::Hook { id, call });
    }
}

impl Engine {
    /// Hands the failover run (if any) to `f` with the run's context, and keeps what
    /// it returns. Proposals made in `f` go to raft once the run is back in place, so
    /// that an entry applied at once (a single voter, or the act-before-commit negative
    /// control) finds the run it belongs to.
    fn with_run(&mut self, f: impl FnOnce(Option<FailoverRun>, &mut Cx) -> Next) {
        let run = self.run.take();
        let mut cx = Cx::new(self);
        let next = f(run, &mut cx);
        let proposals = cx.into_proposals();
        self.run = next;
        for entry in proposals {
            self.propose(entry);
        }
    }

    /// Commits "failover to epoch E+1 begins", suspecting `suspects`.
    pub(crate) fn begin_failover(&mut self, suspects: Vec<NodeId>, reason: String) {
        self.with_run(|_, cx| Some(FailoverRun::begin(cx, suspects, reason)));
    }

    /// Called on the coordinator after every input: resumes a committed failover that
    /// has no run here, ends a run the record has moved past, and handles deadlines.
    pub(crate) fn failover_progress(&mut self) {
        let committed = self
            .record
            .failover
            .as_ref()
            .map(|f| (f.epoch, f.planned, f.candidate, f.suspects.first().copied()));
        self.with_run(|run, cx| match (run, committed) {
            (None, None) => None,
            // A switchover is always started here, by whichever sidecar is the
            // coordinator when it is committed.
            (None, Some((epoch, Some(to), None, Some(from)))) => {
                Some(FailoverRun::start_switchover(cx, epoch, from, to))
            }
            (None, Some((epoch, ..))) => FailoverRun::resume(cx, epoch),
            (Some(run), Some((epoch, ..))) if run.epoch() < epoch => None,
            (Some(run), None) if !matches!(run.phase, Phase::ProposingBegin { .. }) => None,
            (Some(run), _) => run.progress(cx),
        });
    }

    pub(crate) fn on_applied_failover(&mut self, entry: &LogEntry) {
        if self.run.is_none() || !self.coord.is_coordinator() {
            return;
        }
        self.with_run(|run, cx| run.and_then(|run| run.on_applied(cx, entry)));
    }

    pub(crate) fn on_step_result(
        &mut self,
        id: CommandId,
        epoch: u64,
        node: NodeId,
        result: CommandResult,
    ) {
        if self.run.as_ref().is_none_or(|r| r.epoch() != epoch) {
            return;
        }
        self.with_run(|run, cx| run.and_then(|run| run.on_step_result(cx, id, node, result)));
    }

    pub(crate) fn after_switchover_hook(&mut self, id: CommandId, veto: Option<String>) {
        self.with_run(|run, cx| run.and_then(|run| run.after_switchover_hook(cx, id, veto)));
    }
}
