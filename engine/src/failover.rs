//! The unplanned failover, run by the coordinator as a state machine over commands.
//!
//! Decisions that must survive the coordinator (the failover began; who the candidate
//! is; how it ended) are committed to the raft log before anything acts on them. All
//! else is redone by the next coordinator: every step is idempotent, so a coordinator
//! that takes over half-way runs the procedure again from the fence, with the
//! committed candidate if there is one.
//!
//! Steps: fence (stop IO threads, read_only on suspects, optional instance stop) →
//! choose (and catch up a behind candidate) → commit the candidate (the VIP routes move
//! from here on) → relay log applied → salvage from the old master's host → wait out the
//! old master's lease unless it is confirmed fenced → promote → repoint → commit.

use crate::choose::{choose, most_advanced, Choice};
use crate::cluster::NodeId;
use crate::command::{
    Command, CommandId, CommandResult, MysqlOp, MysqlReply, Positions, SalvageReport,
};
use crate::engine::{Engine, Pending};
use crate::event::Event;
use crate::hook::{HookCall, HookPoint};
use crate::message::LocalView;
use crate::record::{FailoverReport, LogEntry};
use crate::sabotage::Sabotage;
use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug)]
pub(crate) struct FailoverRun {
    epoch: u64,
    /// When this coordinator took the failover on.
    started: Time,
    /// When this coordinator saw the epoch's begin entry applied (the lease wait runs
    /// from here).
    begun_at: Option<Time>,
    phase: Phase,
    positions: BTreeMap<NodeId, Positions>,
    fenced: BTreeSet<NodeId>,
    skipped: BTreeMap<NodeId, String>,
    tried: BTreeSet<NodeId>,
    choice: Option<Choice>,
    caught_up_from: Option<NodeId>,
    /// Whose binlog was read, and how that went.
    salvage: Option<(NodeId, Result<SalvageReport, String>)>,
    /// A planned switchover to this node, run in order (see `switchover.rs`) until its
    /// target is committed. `None` also when a new coordinator finishes a switchover
    /// whose target was already committed: that is done as a failover.
    planned: Option<NodeId>,
}

#[derive(Debug)]
enum Phase {
    /// Switchover: the pre-switchover hook runs.
    SwitchoverHook {
        id: CommandId,
        deadline: Time,
    },
    /// Switchover: the old master is being demoted.
    Demoting {
        id: CommandId,
        deadline: Time,
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
    },
    ProposingCandidate {
        deadline: Time,
    },
    WaitingApplied {
        id: CommandId,
        deadline: Time,
    },
    Salvaging {
        id: CommandId,
        deadline: Time,
        /// Whose binlog is read.
        from: NodeId,
    },
    WaitingLease {
        until: Time,
    },
    Promoting {
        id: CommandId,
        deadline: Time,
    },
    Repointing {
        waiting: BTreeSet<NodeId>,
        deadline: Time,
    },
    /// Promoted and repointed; the VIP routes are still being replaced.
    AwaitingRoutes {
        deadline: Time,
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

impl FailoverRun {
    fn new(epoch: u64, now: Time, phase: Phase) -> Self {
        FailoverRun {
            epoch,
            started: now,
            begun_at: None,
            phase,
            positions: BTreeMap::new(),
            fenced: BTreeSet::new(),
            skipped: BTreeMap::new(),
            tried: BTreeSet::new(),
            choice: None,
            caught_up_from: None,
            salvage: None,
            planned: None,
        }
    }

    pub fn deadline(&self) -> Option<Time> {
        Some(match &self.phase {
            Phase::ProposingBegin { deadline }
            | Phase::SwitchoverHook { deadline, .. }
            | Phase::Demoting { deadline, .. }
            | Phase::Fencing { deadline, .. }
            | Phase::CatchingUp { deadline, .. }
            | Phase::ProposingCandidate { deadline }
            | Phase::WaitingApplied { deadline, .. }
            | Phase::Salvaging { deadline, .. }
            | Phase::Promoting { deadline, .. }
            | Phase::Repointing { deadline, .. }
            | Phase::AwaitingRoutes { deadline }
            | Phase::ProposingEnd { deadline, .. } => *deadline,
            Phase::WaitingLease { until } | Phase::Retrying { until, .. } => *until,
        })
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

    fn candidate(&self) -> Option<NodeId> {
        self.choice.as_ref().map(|c| c.candidate)
    }
}

impl Engine {
    fn step_deadline(&self) -> Time {
        self.now + self.spec.timing.step_timeout()
    }

    /// Commits "failover to epoch E+1 begins" (the decision comes before any action).
    pub(crate) fn begin_failover(&mut self, suspects: Vec<NodeId>, reason: String) {
        let epoch = self.record.epoch + 1;
        let deadline = self.step_deadline();
        self.emit(Event::FailoverBegun {
            epoch,
            suspects: suspects.clone(),
            reason: reason.clone(),
        });
        self.run = Some(FailoverRun::new(
            epoch,
            self.now,
            Phase::ProposingBegin { deadline },
        ));
        let wall_ms = self.wall_ms();
        self.propose(LogEntry::FailoverBegin {
            epoch,
            suspects,
            reason,
            wall_ms,
            planned: None,
        });
    }

    /// Called on the coordinator after every input: resumes a committed failover that
    /// has no run here, ends a run the record has moved past, and handles deadlines.
    pub(crate) fn failover_progress(&mut self) {
        let committed = self.record.failover.as_ref().map(|f| f.epoch);
        match (&self.run, committed) {
            (None, Some(epoch)) => {
                let f = self.record.failover.as_ref().expect("committed");
                if let (Some(to), None) = (f.planned, f.candidate) {
                    // A switchover is always started here, by whichever sidecar is
                    // the coordinator when it is committed.
                    return self.start_switchover(epoch, to);
                }
                self.emit(Event::FailoverResumed { epoch });
                let mut run = FailoverRun::new(
                    epoch,
                    self.now,
                    Phase::ProposingBegin { deadline: self.now },
                );
                run.begun_at = Some(self.now);
                self.run = Some(run);
                self.start_fence();
                return;
            }
            (Some(run), Some(epoch)) if run.epoch < epoch => {
                self.run = None;
                return;
            }
            (Some(run), None) if !matches!(run.phase, Phase::ProposingBegin { .. }) => {
                self.run = None;
                return;
            }
            _ => {}
        }
        let Some(run) = &self.run else { return };
        let waiting_lease = matches!(run.phase, Phase::WaitingLease { .. });
        if waiting_lease && self.unconfirmed().is_empty() {
            return self.promote();
        }
        let Some(run) = &self.run else { return };
        if let (Phase::AwaitingRoutes { .. }, Some(c)) = (&run.phase, run.candidate()) {
            if self.routes_pending(c).is_empty() {
                return self.commit_completion();
            }
        }
        let Some(run) = &self.run else { return };
        let now = self.now;
        if run.deadline().is_none_or(|d| now < d) {
            return;
        }
        match &run.phase {
            Phase::ProposingBegin { .. } => {
                // Not committed in time: this coordinator's proposal was lost. Let
                // detection decide again.
                self.run = None;
            }
            Phase::SwitchoverHook { .. } => {
                self.cancel("the pre-switchover hook did not answer in time".into())
            }
            Phase::Demoting { .. } => self.cancel(format!(
                "demoting {} did not finish within the step timeout",
                self.suspects()
                    .first()
                    .map_or("-".into(), |n| n.to_string())
            )),
            Phase::Fencing { .. } => self.after_fence(),
            Phase::CatchingUp { .. } => self.catch_up_failed("catch-up timed out".into()),
            Phase::ProposingCandidate { .. } => {
                if let Some(c) = run.candidate() {
                    let epoch = run.epoch;
                    self.set_phase(Phase::ProposingCandidate {
                        deadline: self.step_deadline(),
                    });
                    self.propose(LogEntry::CandidateChosen {
                        epoch,
                        candidate: c,
                    });
                }
            }
            Phase::WaitingApplied { .. } => self.retry(
                "the candidate did not apply its relay log within the step timeout".into(),
                None,
            ),
            Phase::Salvaging { from, .. } => {
                let from = *from;
                self.run_mut().salvage = Some((from, Err("salvage timed out".into())));
                self.after_salvage();
            }
            Phase::WaitingLease { .. } => self.promote(),
            Phase::Promoting { .. } => {
                let c = run.candidate();
                self.retry("promotion did not finish within the step timeout".into(), c)
            }
            Phase::Retrying { why, suspect, .. } => {
                let why = format!("retry after: {why}");
                let suspects = self.next_suspects(*suspect);
                self.begin_failover(suspects, why);
            }
            Phase::Repointing { waiting, .. } => {
                let late: Vec<NodeId> = waiting.iter().copied().collect();
                for n in late {
                    self.run_mut().skipped.insert(n, "repoint timed out".into());
                }
                self.complete();
            }
            Phase::AwaitingRoutes { .. } => self.commit_completion(),
            Phase::ProposingEnd { entry, .. } => {
                let entry = entry.clone();
                self.set_phase(Phase::ProposingEnd {
                    entry: entry.clone(),
                    deadline: self.step_deadline(),
                });
                self.propose(entry);
            }
        }
    }

    /// The suspects of the epoch that supersedes this one: this epoch's, but those it
    /// fenced (made read_only, or stopped), which are replicas again — fenced like any
    /// replica, and candidates — plus `more`. Otherwise a cluster whose every live
    /// server was once a suspect (an old master back from a partition, the others dead
    /// or quarantined) would find no candidate, epoch after epoch, for good.
    fn next_suspects(&self, more: Option<NodeId>) -> Vec<NodeId> {
        let fenced = self.run.as_ref().map(|r| &r.fenced);
        let mut out: Vec<NodeId> = self
            .suspects()
            .into_iter()
            .filter(|s| !fenced.is_some_and(|f| f.contains(s)))
            .collect();
        out.extend(more.filter(|m| !out.contains(m)));
        out
    }

    fn run_mut(&mut self) -> &mut FailoverRun {
        self.run.as_mut().expect("a failover run is active")
    }

    fn set_phase(&mut self, phase: Phase) {
        self.run_mut().phase = phase;
    }

    fn step(&mut self, node: NodeId, op: MysqlOp) -> CommandId {
        let epoch = self.run_mut().epoch;
        self.issue(Pending::Step { epoch, node }, |id| Command::Mysql {
            id,
            node,
            op,
        })
    }

    pub(crate) fn on_applied_failover(&mut self, entry: &LogEntry) {
        let Some(run) = &self.run else { return };
        if !self.coord.is_coordinator() {
            return;
        }
        match entry {
            LogEntry::FailoverBegin { epoch, .. } if *epoch == run.epoch => {
                if matches!(run.phase, Phase::ProposingBegin { .. }) {
                    self.run_mut().begun_at = Some(self.now);
                    self.start_fence();
                }
            }
            LogEntry::CandidateChosen { epoch, .. } if *epoch == run.epoch => {
                if matches!(run.phase, Phase::ProposingCandidate { .. }) {
                    self.candidate_committed();
                }
            }
            LogEntry::FailoverComplete {
                epoch,
                new_master,
                report,
                ..
            } if *epoch == run.epoch => {
                self.emit(Event::FailoverCompleted {
                    epoch: *epoch,
                    new_master: *new_master,
                    report: report.clone(),
                });
                self.post_hook(Some(*new_master), None, report.salvage.clone());
                self.run = None;
            }
            LogEntry::FailoverAborted { epoch, why, .. } if *epoch == run.epoch => {
                self.emit(Event::FailoverAborted {
                    epoch: *epoch,
                    why: why.clone(),
                });
                self.post_hook(None, Some(why.clone()), None);
                self.run = None;
            }
            LogEntry::SwitchoverCancelled { epoch, why, .. } if *epoch == run.epoch => {
                self.emit(Event::SwitchoverCancelled {
                    epoch: *epoch,
                    why: why.clone(),
                });
                self.post_hook(None, Some(why.clone()), None);
                self.run = None;
            }
            _ => {}
        }
    }

    fn suspects(&self) -> Vec<NodeId> {
        self.record
            .failover
            .as_ref()
            .map(|f| f.suspects.clone())
            .unwrap_or_default()
    }

    fn start_fence(&mut self) {
        let suspects = self.suspects();
        let epoch = self.run_mut().epoch;
        let fresh: BTreeSet<NodeId> = self.fresh_reports().keys().copied().collect();
        for s in &suspects {
            if self.sabotaged(Sabotage::FenceBeforePromote) {
                // Counted as fenced, never made read_only.
                self.run_mut().fenced.insert(*s);
                continue;
            }
            self.step(*s, MysqlOp::SetReadOnly);
            if self.spec.timing.stonith && !fresh.contains(s) {
                let node = *s;
                self.issue(Pending::Step { epoch, node }, |id| Command::StopInstance {
                    id,
                    node,
                });
            }
        }
        // Quarantined servers are read_only and attached to nobody: neither fenced,
        // nor candidates, nor a source of transactions for the new master.
        let replicas: Vec<NodeId> = self
            .spec
            .database_ids()
            .filter(|id| !suspects.contains(id) && !self.record.quarantined.contains_key(id))
            .collect();
        for r in &replicas {
            self.step(*r, MysqlOp::FenceReplica);
        }
        let deadline = self.step_deadline();
        let nothing_to_wait_for = replicas.is_empty();
        self.set_phase(Phase::Fencing {
            waiting: replicas.into_iter().collect(),
            deadline,
        });
        if nothing_to_wait_for {
            self.after_fence();
        }
    }

    pub(crate) fn on_step_result(
        &mut self,
        id: CommandId,
        epoch: u64,
        node: NodeId,
        result: CommandResult,
    ) {
        let Some(run) = &self.run else { return };
        if run.epoch != epoch {
            return;
        }
        if matches!(run.phase, Phase::Demoting { id: want, .. } if want == id) {
            if let CommandResult::Mysql(r) = result {
                self.on_demoted(node, r);
            }
            return;
        }
        let suspect = self.suspects().contains(&node);
        let late_phase = matches!(
            run.phase,
            Phase::Promoting { .. } | Phase::Repointing { .. }
        );
        match result {
            CommandResult::Mysql(r) if suspect && !late_phase => {
                // The read_only fence of a suspect: a confirmation, never a blocker.
                match r {
                    Ok(_) => {
                        self.run_mut().fenced.insert(node);
                        self.emit(Event::Fenced { epoch, node });
                        if matches!(self.run_mut().phase, Phase::WaitingLease { .. })
                            && self.unconfirmed().is_empty()
                        {
                            self.promote();
                        }
                    }
                    Err(error) => self.emit(Event::FenceFailed { epoch, node, error }),
                }
            }
            CommandResult::Done(r) => {
                // StopInstance on a suspect.
                if r.is_ok() {
                    self.run_mut().fenced.insert(node);
                    self.emit(Event::Fenced { epoch, node });
                }
            }
            CommandResult::Mysql(r) => self.on_mysql_step(id, node, r),
            CommandResult::Salvage(r) => {
                if let Phase::Salvaging { id: want, from, .. } = run.phase {
                    if want != id {
                        return;
                    }
                    self.emit(Event::Salvaged {
                        epoch,
                        from,
                        outcome: r.clone(),
                    });
                    self.run_mut().salvage = Some((from, r));
                    self.after_salvage();
                }
            }
            CommandResult::Probe(_) => {}
        }
    }

    fn on_mysql_step(&mut self, id: CommandId, node: NodeId, r: Result<MysqlReply, String>) {
        let epoch = self.run_mut().epoch;
        // Which step this result answers; a stale result (an earlier phase's) answers none.
        enum Answers {
            Fence { last: bool },
            CatchUp,
            Applied,
            Promote,
            Repoint { last: bool },
        }
        let answers = match &mut self.run_mut().phase {
            Phase::Fencing { waiting, .. } if waiting.contains(&node) => {
                waiting.remove(&node);
                Answers::Fence {
                    last: waiting.is_empty(),
                }
            }
            Phase::CatchingUp { id: want, .. } if *want == id => Answers::CatchUp,
            Phase::WaitingApplied { id: want, .. } if *want == id => Answers::Applied,
            Phase::Promoting { id: want, .. } if *want == id => Answers::Promote,
            Phase::Repointing { waiting, .. } if waiting.contains(&node) => {
                waiting.remove(&node);
                Answers::Repoint {
                    last: waiting.is_empty(),
                }
            }
            _ => return,
        };
        match answers {
            Answers::Fence { last } => {
                match r.map(MysqlReply::positions) {
                    Ok(Some(p)) => {
                        self.run_mut().positions.insert(node, p);
                    }
                    Ok(None) => {
                        self.run_mut()
                            .skipped
                            .insert(node, "fence gave no positions".into());
                    }
                    Err(why) => {
                        self.emit(Event::Skipped {
                            epoch,
                            node,
                            why: why.clone(),
                        });
                        self.run_mut().skipped.insert(node, why);
                    }
                }
                if last {
                    self.after_fence();
                }
            }
            Answers::CatchUp => match r.map(MysqlReply::positions) {
                Ok(Some(p))
                    if self
                        .run_mut()
                        .choice
                        .as_ref()
                        .is_some_and(|c| p.executed.contains(&c.target)) =>
                {
                    let run = self.run_mut();
                    run.caught_up_from = run.choice.as_ref().and_then(|c| c.catch_up_from);
                    run.positions.insert(node, p);
                    self.emit(Event::CaughtUp {
                        epoch,
                        candidate: node,
                    });
                    self.propose_candidate();
                }
                Ok(_) => self.catch_up_failed("catch-up ended short of the target".into()),
                Err(why) => self.catch_up_failed(why),
            },
            Answers::Applied => match r.map(MysqlReply::positions) {
                Ok(p) => {
                    if let Some(p) = p {
                        self.run_mut().positions.insert(node, p);
                    }
                    self.emit(Event::RelayApplied {
                        epoch,
                        candidate: node,
                    });
                    if self.run_mut().planned.is_some() {
                        // The old master was demoted first: nothing to salvage.
                        self.propose_candidate();
                    } else {
                        self.salvage();
                    }
                }
                Err(why) => self.retry(
                    format!("waiting for {node} to apply its relay log failed: {why}"),
                    None,
                ),
            },
            Answers::Promote => match r {
                Ok(_) => {
                    self.emit(Event::Promoted { epoch, node });
                    self.repoint();
                }
                // It may have become writable before the error: a suspect from now on.
                Err(why) => self.retry(format!("promotion of {node} failed: {why}"), Some(node)),
            },
            Answers::Repoint { last } => {
                match r {
                    Ok(_) => {
                        let source = self.run_mut().candidate().unwrap_or(node);
                        self.emit(Event::Repointed {
                            epoch,
                            node,
                            source,
                        });
                    }
                    Err(why) => {
                        self.emit(Event::Skipped {
                            epoch,
                            node,
                            why: why.clone(),
                        });
                        self.run_mut()
                            .skipped
                            .insert(node, format!("repoint failed: {why}"));
                    }
                }
                if last {
                    self.complete();
                }
            }
        }
    }

    fn after_fence(&mut self) {
        let epoch = self.run_mut().epoch;
        let committed = self.record.failover.as_ref().and_then(|f| f.candidate);
        let positions = self.run_mut().positions.clone();
        if let Some(c) = committed {
            let Some(pos) = positions.get(&c) else {
                // The committed candidate is out of reach and may have been promoted:
                // supersede this epoch, with the candidate among the suspects.
                let suspects = self.next_suspects(Some(c));
                self.begin_failover(
                    suspects,
                    format!("candidate {c} of epoch {epoch} is unreachable"),
                );
                return;
            };
            let (best, target) = most_advanced(&positions).expect("the candidate answered");
            let choice = Choice {
                candidate: c,
                catch_up_from: (!pos.received.contains(target)).then_some(best),
                target: target.clone(),
            };
            self.run_mut().choice = Some(choice);
            if self
                .run_mut()
                .choice
                .as_ref()
                .is_some_and(|c| c.catch_up_from.is_some())
            {
                self.start_catch_up();
            } else {
                self.candidate_committed();
            }
            return;
        }
        let mut excluded: BTreeSet<NodeId> = self.suspects().into_iter().collect();
        excluded.extend(self.run_mut().tried.iter().copied());
        // A node whose sidecar is silent cannot fence itself if it is cut off later:
        // never make it the writer.
        let live = self.live_sidecars();
        excluded.extend(positions.keys().filter(|id| !live.contains(id)).copied());
        match choose(&self.spec, &positions, &excluded) {
            Ok(mut choice) => {
                if self.sabotaged(Sabotage::CatchUp) {
                    // The candidate as it is: what it lacks is left behind.
                    if let Some(p) = positions.get(&choice.candidate) {
                        choice.catch_up_from = None;
                        choice.target = p.received.clone();
                    }
                }
                self.emit(Event::CandidateChosen {
                    epoch,
                    candidate: choice.candidate,
                    catch_up_from: choice.catch_up_from,
                    target: choice.target.clone(),
                });
                let needs_catch_up = choice.catch_up_from.is_some();
                self.run_mut().choice = Some(choice);
                if needs_catch_up {
                    self.start_catch_up();
                } else {
                    self.propose_candidate();
                }
            }
            Err(why) => self.retry(why, None),
        }
    }

    fn start_catch_up(&mut self) {
        let choice = self.run_mut().choice.clone().expect("chosen");
        let source = choice.catch_up_from.expect("behind");
        let id = self.step(
            choice.candidate,
            MysqlOp::CatchUp {
                source,
                until: choice.target,
            },
        );
        let deadline = self.step_deadline();
        self.set_phase(Phase::CatchingUp { id, deadline });
    }

    fn catch_up_failed(&mut self, why: String) {
        let Some(c) = self.run_mut().candidate() else {
            return;
        };
        let epoch = self.run_mut().epoch;
        self.emit(Event::Skipped {
            epoch,
            node: c,
            why: format!("catch-up failed: {why}"),
        });
        if self.record.failover.as_ref().and_then(|f| f.candidate) == Some(c) {
            self.retry(
                format!("committed candidate {c} could not catch up: {why}"),
                None,
            );
            return;
        }
        let run = self.run_mut();
        run.tried.insert(c);
        run.skipped.insert(c, format!("catch-up failed: {why}"));
        run.choice = None;
        self.after_fence();
    }

    fn propose_candidate(&mut self) {
        let run = self.run_mut();
        let (epoch, candidate) = (run.epoch, run.candidate().expect("chosen"));
        if self.record.failover.as_ref().and_then(|f| f.candidate) == Some(candidate) {
            self.candidate_committed();
            return;
        }
        let deadline = self.step_deadline();
        self.set_phase(Phase::ProposingCandidate { deadline });
        self.propose(LogEntry::CandidateChosen { epoch, candidate });
    }

    /// The candidate is in the record: the routes follow it from now on (the
    /// reconciler reads the writer of record), overlapping promotion with API latency.
    fn candidate_committed(&mut self) {
        let committed = self.record.failover.as_ref().and_then(|f| f.candidate);
        if committed != self.run_mut().candidate() {
            // Another coordinator's choice won: adopt it.
            self.run_mut().choice = None;
            self.after_fence();
            return;
        }
        if self.run_mut().planned.is_some() {
            // Demoted, caught up, committed: the old master is fenced by its demotion.
            return self.promote();
        }
        let choice = self.run_mut().choice.clone().expect("chosen");
        let pos = self.run_mut().positions.get(&choice.candidate).cloned();
        match pos {
            Some(p) if p.executed.contains(&p.received) && p.executed.contains(&choice.target) => {
                self.salvage()
            }
            Some(p) => {
                let until = p.received.union(&choice.target).unwrap_or(p.received);
                let id = self.step(choice.candidate, MysqlOp::WaitApplied { until });
                let deadline = self.step_deadline();
                self.set_phase(Phase::WaitingApplied { id, deadline });
            }
            None => self.retry(
                format!("no positions for candidate {}", choice.candidate),
                None,
            ),
        }
    }

    /// Ships the old master's binlog tail when its host's sidecar is alive: a suspect's,
    /// or the master of record's (a retried epoch may no longer count it a suspect once
    /// it was fenced). When none of theirs is alive, an earlier failed master's binlog is
    /// read, if it is known to hold nothing but the cluster's history (see
    /// [`Engine::salvaged_whole`]): a transaction it wrote and got acknowledged may have
    /// reached only the old master, which is now gone too.
    fn salvage(&mut self) {
        if self.sabotaged(Sabotage::Salvage) {
            return self.after_salvage();
        }
        let candidate = self.run_mut().candidate().expect("chosen");
        let live = self.live_sidecars();
        let earlier: Vec<NodeId> = self
            .record
            .quarantined
            .keys()
            .copied()
            .filter(|q| self.salvaged_whole(*q))
            .collect();
        let source = self
            .suspects()
            .into_iter()
            .chain(self.record.master)
            .chain(earlier)
            .filter(|n| *n != candidate)
            .find(|n| live.contains(n));
        let Some(old) = source else {
            return self.after_salvage();
        };
        let after = self
            .run_mut()
            .positions
            .get(&candidate)
            .map(|p| p.executed.clone());
        match after {
            Some(after) => {
                let epoch = self.run_mut().epoch;
                let id = self.issue(Pending::Step { epoch, node: old }, |id| Command::Salvage {
                    id,
                    epoch,
                    from: old,
                    to: candidate,
                    after,
                });
                let deadline = self.now + self.spec.timing.salvage_timeout();
                self.set_phase(Phase::Salvaging {
                    id,
                    deadline,
                    from: old,
                });
            }
            None => self.after_salvage(),
        }
    }

    /// See [`ClusterRecord::salvaged_whole`].
    fn salvaged_whole(&self, q: NodeId) -> bool {
        self.record.salvaged_whole(q)
    }

    /// Suspects not known to be fenced: read_only did not succeed, the instance was not
    /// stopped, and their own sidecar has not reported mysqld down from the new epoch.
    fn unconfirmed(&self) -> Vec<NodeId> {
        let Some(run) = &self.run else {
            return Vec::new();
        };
        let epoch = run.epoch;
        let reports = self.fresh_reports();
        self.suspects()
            .into_iter()
            .filter(|s| !run.fenced.contains(s))
            .filter(|s| {
                !reports
                    .get(s)
                    .is_some_and(|r| r.epoch >= epoch && matches!(r.local, Some(LocalView::Down)))
            })
            .collect()
    }

    fn after_salvage(&mut self) {
        if self.unconfirmed().is_empty() || self.sabotaged(Sabotage::LeaseWait) {
            return self.promote();
        }
        let begun = self.run_mut().begun_at.unwrap_or(self.now);
        let until = begun + self.spec.timing.lease() + self.spec.timing.probe_interval();
        if self.now >= until {
            return self.promote();
        }
        let epoch = self.run_mut().epoch;
        self.emit(Event::WaitingForLease {
            epoch,
            until_ms: until.as_millis(),
        });
        self.set_phase(Phase::WaitingLease { until });
    }

    fn promote(&mut self) {
        let c = self.run_mut().candidate().expect("chosen");
        let id = self.step(c, MysqlOp::Promote);
        let deadline = self.step_deadline();
        self.set_phase(Phase::Promoting { id, deadline });
    }

    fn repoint(&mut self) {
        let c = self.run_mut().candidate().expect("chosen");
        let suspects = self.suspects();
        let others: Vec<NodeId> = if self.run_mut().planned.is_some() {
            // Every server but the new master, the demoted one included.
            self.spec
                .database_ids()
                .filter(|n| *n != c && !self.record.quarantined.contains_key(n))
                .collect()
        } else {
            self.run_mut()
                .positions
                .keys()
                .copied()
                .filter(|n| *n != c && !suspects.contains(n))
                .collect()
        };
        for n in &others {
            self.step(*n, MysqlOp::Repoint { source: c });
            // The replica reconciler leaves these alone until their reports catch up.
            self.repointing.insert(*n, self.now);
        }
        if others.is_empty() {
            return self.complete();
        }
        let deadline = self.step_deadline();
        self.set_phase(Phase::Repointing {
            waiting: others.into_iter().collect(),
            deadline,
        });
    }

    /// Promoted and repointed: wait (at most a step) for the routes, then commit.
    fn complete(&mut self) {
        let c = self.run_mut().candidate().expect("chosen");
        if self.routes_pending(c).is_empty() {
            return self.commit_completion();
        }
        let deadline = self.step_deadline();
        self.set_phase(Phase::AwaitingRoutes { deadline });
    }

    fn commit_completion(&mut self) {
        let c = self.run_mut().candidate().expect("chosen");
        let routes_pending = self.routes_pending(c);
        let now = self.now;
        let run = self.run_mut();
        let report = FailoverReport {
            duration_ms: now.since(run.started).as_millis() as u64,
            skipped: run.skipped.iter().map(|(k, v)| (*k, v.clone())).collect(),
            caught_up_from: run.caught_up_from,
            salvage: run.salvage.as_ref().map(|(_, r)| r.clone()),
            salvaged_from: run.salvage.as_ref().map(|(from, _)| *from),
            routes_pending,
        };
        let entry = LogEntry::FailoverComplete {
            epoch: run.epoch,
            new_master: c,
            report,
            wall_ms: self.wall_ms(),
        };
        self.end_with(entry);
    }

    /// This attempt cannot finish; the cluster stays fenced (no writer). After a pause
    /// the failover starts over in a new epoch, with `suspect` (a candidate that may
    /// have become writable) fenced like the old master. Nothing is given up for good:
    /// a replica that was unreachable may be back by then.
    fn retry(&mut self, why: String, suspect: Option<NodeId>) {
        let committed = self.record.failover.as_ref().and_then(|f| f.candidate);
        if self.run_mut().planned.is_some() && committed.is_none() {
            return self.cancel(why);
        }
        let epoch = self.run_mut().epoch;
        self.emit(Event::FailoverAttemptFailed {
            epoch,
            why: why.clone(),
        });
        let until = self.now + self.spec.timing.probe_interval() * 2;
        self.set_phase(Phase::Retrying {
            until,
            why,
            suspect,
        });
    }

    fn end_with(&mut self, entry: LogEntry) {
        let deadline = self.step_deadline();
        self.set_phase(Phase::ProposingEnd {
            entry: entry.clone(),
            deadline,
        });
        self.propose(entry);
    }
}

impl Engine {
    /// Starts a committed switchover on this coordinator: the pre-switchover hook
    /// first, then the demotion.
    fn start_switchover(&mut self, epoch: u64, to: NodeId) {
        let from = self
            .suspects()
            .first()
            .copied()
            .expect("a switchover has its master");
        self.emit(Event::SwitchoverBegun { epoch, from, to });
        let mut run = FailoverRun::new(
            epoch,
            self.now,
            Phase::ProposingBegin { deadline: self.now },
        );
        run.begun_at = Some(self.now);
        run.planned = Some(to);
        run.choice = Some(Choice {
            candidate: to,
            catch_up_from: None,
            target: crate::gtid::GtidSet::empty(self.spec.flavour),
        });
        self.run = Some(run);
        let call = self.hook_call(HookPoint::PreSwitchover, Some(to), None, None);
        let id = self.issue(Pending::SwitchoverHook, |id| Command::Hook { id, call });
        let deadline = self.step_deadline();
        self.set_phase(Phase::SwitchoverHook { id, deadline });
    }

    pub(crate) fn after_switchover_hook(&mut self, id: CommandId, veto: Option<String>) {
        let Some(run) = &self.run else { return };
        if !matches!(run.phase, Phase::SwitchoverHook { id: want, .. } if want == id) {
            return;
        }
        if let Some(why) = veto {
            self.emit(Event::Vetoed {
                what: "switchover".into(),
                why: why.clone(),
            });
            return self.cancel(format!("vetoed by the pre-switchover hook: {why}"));
        }
        let from = self
            .suspects()
            .first()
            .copied()
            .expect("a switchover has its master");
        let grace_ms = self.spec.timing.switchover_grace_ms;
        let id = self.step(from, MysqlOp::Demote { grace_ms });
        let deadline = self.step_deadline();
        self.set_phase(Phase::Demoting { id, deadline });
    }

    /// The old master is read_only with its final position: wait for the target to
    /// apply it (it still replicates from the old master).
    fn on_demoted(&mut self, node: NodeId, r: Result<MysqlReply, String>) {
        let epoch = self.run_mut().epoch;
        let p = match r.map(MysqlReply::positions) {
            Ok(Some(p)) => p,
            Ok(None) => return self.cancel(format!("demoting {node} gave no position")),
            Err(why) => return self.cancel(format!("demoting {node} failed: {why}")),
        };
        self.emit(Event::Demoted {
            epoch,
            node,
            executed: p.executed.clone(),
        });
        let run = self.run_mut();
        run.fenced.insert(node);
        run.positions.insert(node, p.clone());
        let to = run.planned.expect("a planned run");
        if let Some(c) = run.choice.as_mut() {
            c.target = p.executed.clone();
        }
        let id = self.step(to, MysqlOp::WaitApplied { until: p.executed });
        let deadline = self.step_deadline();
        self.set_phase(Phase::WaitingApplied { id, deadline });
    }

    /// Ends a switchover before its target was committed; the old master regains its
    /// lease and becomes writable again.
    fn cancel(&mut self, why: String) {
        let epoch = self.run_mut().epoch;
        let entry = LogEntry::SwitchoverCancelled {
            epoch,
            why,
            wall_ms: self.wall_ms(),
        };
        self.end_with(entry);
    }

    fn hook_call(
        &self,
        point: HookPoint,
        new_master: Option<NodeId>,
        why: Option<String>,
        salvage: Option<Result<SalvageReport, String>>,
    ) -> HookCall {
        let run = self.run.as_ref();
        let post = !point.is_pre();
        let mut positions = self.known_positions();
        if let Some(run) = run {
            for (n, p) in &run.positions {
                positions.insert(*n, p.executed.to_string());
            }
        }
        // A post hook runs once the end is applied: the journal holds the attempt.
        let (epoch, old_master, reason) = match (post, self.record.journal.last()) {
            (true, Some(j)) => (j.epoch, j.old_master, j.reason.clone()),
            _ => (
                run.map_or(self.record.epoch, |r| r.epoch),
                self.suspects().first().copied(),
                self.record
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
            duration_ms: run
                .filter(|_| post)
                .map(|r| self.now.since(r.started).as_millis() as u64),
            positions,
            salvage,
        }
    }

    /// Runs the post hook of the run that just ended (called before the run is
    /// dropped, while the record still names the failover).
    fn post_hook(
        &mut self,
        new_master: Option<NodeId>,
        why: Option<String>,
        salvage: Option<Result<SalvageReport, String>>,
    ) {
        let planned = self.run.as_ref().is_some_and(|r| r.planned.is_some())
            || self.record.journal.last().is_some_and(|j| j.planned);
        let point = if planned {
            HookPoint::PostSwitchover
        } else {
            HookPoint::PostFailover
        };
        let call = self.hook_call(point, new_master, why, salvage);
        self.issue(Pending::PostHook, |id| Command::Hook { id, call });
    }
}
