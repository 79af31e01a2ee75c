//! The failover up to a committed candidate: fence the suspects and the replicas
//! (collecting every replica's position), choose the candidate (see `choose.rs`),
//! catch it up when it is behind, and commit it.

use super::{Cx, Next, Phase, Run};
use crate::choose::{choose, most_advanced, Choice};
use crate::cluster::NodeId;
use crate::command::{Command, MysqlOp, MysqlReply};
use crate::engine::Pending;
use crate::event::Event;
use crate::record::LogEntry;
use crate::sabotage::Sabotage;
use std::collections::BTreeSet;

impl Run {
    /// Fences every suspect (read_only; the instance stopped too with `stonith` when
    /// its sidecar is silent) and stops every replica's IO thread, which answers with
    /// its positions.
    pub(super) fn start_fence(mut self, cx: &mut Cx) -> Next {
        let suspects = cx.suspects();
        let epoch = self.epoch;
        let fresh: BTreeSet<NodeId> = cx.fresh_reports().keys().copied().collect();
        for s in &suspects {
            if cx.sabotaged(Sabotage::FenceBeforePromote) {
                // Counted as fenced, never made read_only.
                self.fenced.insert(*s);
                continue;
            }
            self.step(cx, *s, MysqlOp::SetReadOnly);
            if cx.spec().timing.stonith && !fresh.contains(s) {
                let node = *s;
                cx.issue(Pending::Step { epoch, node }, |id| Command::StopInstance {
                    id,
                    node,
                });
            }
        }
        // Quarantined servers are read_only and attached to nobody: neither fenced,
        // nor candidates, nor a source of transactions for the new master.
        let replicas: Vec<NodeId> = cx
            .spec()
            .database_ids()
            .filter(|id| !suspects.contains(id) && !cx.record().quarantined.contains_key(id))
            .collect();
        for r in &replicas {
            self.step(cx, *r, MysqlOp::FenceReplica);
        }
        if replicas.is_empty() {
            return self.after_fence(cx);
        }
        let deadline = cx.step_deadline();
        self.enter(Phase::Fencing {
            waiting: replicas.into_iter().collect(),
            deadline,
        })
    }

    /// A suspect's read_only fence answered: a confirmation, never a blocker.
    pub(super) fn on_suspect_fenced(
        mut self,
        cx: &mut Cx,
        phase: Phase,
        node: NodeId,
        r: Result<MysqlReply, String>,
    ) -> Next {
        let epoch = self.epoch;
        match r {
            Ok(_) => {
                self.fenced.insert(node);
                cx.emit(Event::Fenced { epoch, node });
                match phase {
                    Phase::WaitingLease {
                        until,
                        give_up,
                        candidate,
                        ..
                    } => self.wait_lease(cx, until, give_up, candidate),
                    phase => self.enter(phase),
                }
            }
            Err(error) => {
                cx.emit(Event::FenceFailed { epoch, node, error });
                self.enter(phase)
            }
        }
    }

    /// A replica's fence answered with its positions (or could not).
    pub(super) fn on_replica_fenced(
        mut self,
        cx: &mut Cx,
        phase: Phase,
        node: NodeId,
        r: Result<MysqlReply, String>,
    ) -> Next {
        match r.map(MysqlReply::positions) {
            Ok(Some(p)) => {
                self.positions.insert(node, p);
            }
            Ok(None) => {
                self.skipped.insert(node, "fence gave no positions".into());
            }
            Err(why) => {
                let epoch = self.epoch;
                cx.emit(Event::Skipped {
                    epoch,
                    node,
                    why: why.clone(),
                });
                self.skipped.insert(node, why);
            }
        }
        match phase {
            Phase::Fencing { waiting, .. } if waiting.is_empty() => self.after_fence(cx),
            phase => self.enter(phase),
        }
    }

    /// Every replica answered the fence (or the fence timed out): take the committed
    /// candidate, or choose one.
    pub(super) fn after_fence(self, cx: &mut Cx) -> Next {
        let epoch = self.epoch;
        if let Some(c) = cx.committed_candidate() {
            let (Some(pos), Some((best, target))) =
                (self.positions.get(&c), most_advanced(&self.positions))
            else {
                // The committed candidate is out of reach and may have been promoted:
                // supersede this epoch, with the candidate among the suspects.
                let suspects = self.next_suspects(cx, Some(c));
                let why = format!("candidate {c} of epoch {epoch} is unreachable");
                return Some(super::FailoverRun::begin(cx, suspects, why));
            };
            let choice = Choice {
                candidate: c,
                catch_up_from: (!pos.received.contains(target)).then_some(best),
                target: target.clone(),
            };
            return match choice.catch_up_from {
                Some(source) => self.start_catch_up(cx, choice, source),
                None => self.candidate_committed(cx, choice),
            };
        }
        let mut excluded: BTreeSet<NodeId> = cx.suspects().into_iter().collect();
        excluded.extend(self.tried.iter().copied());
        // A node whose sidecar is silent cannot fence itself if it is cut off later:
        // never make it the writer.
        let live = cx.live_sidecars();
        excluded.extend(
            self.positions
                .keys()
                .filter(|id| !live.contains(id))
                .copied(),
        );
        match choose(cx.spec(), &self.positions, &excluded) {
            Ok(mut choice) => {
                if cx.sabotaged(Sabotage::CatchUp) {
                    // The candidate as it is: what it lacks is left behind.
                    if let Some(p) = self.positions.get(&choice.candidate) {
                        choice.catch_up_from = None;
                        choice.target = p.received.clone();
                    }
                }
                cx.emit(Event::CandidateChosen {
                    epoch,
                    candidate: choice.candidate,
                    catch_up_from: choice.catch_up_from,
                    target: choice.target.clone(),
                });
                match choice.catch_up_from {
                    Some(source) => self.start_catch_up(cx, choice, source),
                    None => self.propose_candidate(cx, choice),
                }
            }
            Err(why) => self.retry(cx, why, None),
        }
    }

    fn start_catch_up(self, cx: &mut Cx, choice: Choice, source: NodeId) -> Next {
        let until = choice.target.clone();
        let id = self.step(cx, choice.candidate, MysqlOp::CatchUp { source, until });
        let deadline = cx.step_deadline();
        self.enter(Phase::CatchingUp {
            id,
            deadline,
            choice,
        })
    }

    pub(super) fn on_caught_up(
        mut self,
        cx: &mut Cx,
        node: NodeId,
        choice: Choice,
        r: Result<MysqlReply, String>,
    ) -> Next {
        match r.map(MysqlReply::positions) {
            Ok(Some(p)) if p.executed.contains(&choice.target) => {
                self.caught_up_from = choice.catch_up_from;
                self.positions.insert(node, p);
                let epoch = self.epoch;
                cx.emit(Event::CaughtUp {
                    epoch,
                    candidate: node,
                });
                self.propose_candidate(cx, choice)
            }
            Ok(_) => self.catch_up_failed(cx, choice, "catch-up ended short of the target".into()),
            Err(why) => self.catch_up_failed(cx, choice, why),
        }
    }

    /// The candidate could not catch up: another is chosen — unless it was already
    /// committed, when the attempt is retried in a new epoch.
    pub(super) fn catch_up_failed(mut self, cx: &mut Cx, choice: Choice, why: String) -> Next {
        let c = choice.candidate;
        let epoch = self.epoch;
        cx.emit(Event::Skipped {
            epoch,
            node: c,
            why: format!("catch-up failed: {why}"),
        });
        if cx.committed_candidate() == Some(c) {
            let why = format!("committed candidate {c} could not catch up: {why}");
            return self.retry(cx, why, None);
        }
        self.tried.insert(c);
        self.skipped.insert(c, format!("catch-up failed: {why}"));
        self.after_fence(cx)
    }

    /// Commits the candidate (the decision before the promotion).
    pub(super) fn propose_candidate(self, cx: &mut Cx, choice: Choice) -> Next {
        let (epoch, candidate) = (self.epoch, choice.candidate);
        if cx.committed_candidate() == Some(candidate) {
            return self.candidate_committed(cx, choice);
        }
        let deadline = cx.step_deadline();
        cx.propose(LogEntry::CandidateChosen { epoch, candidate });
        self.enter(Phase::ProposingCandidate { deadline, choice })
    }

    /// The candidate is in the record: the routes follow it from now on (the
    /// reconciler reads the writer of record), overlapping promotion with API latency.
    pub(super) fn candidate_committed(self, cx: &mut Cx, choice: Choice) -> Next {
        let candidate = choice.candidate;
        if cx.committed_candidate() != Some(candidate) {
            // Another coordinator's choice won: adopt it.
            return self.after_fence(cx);
        }
        if self.planned.is_some() {
            // Demoted, caught up, committed: the old master is fenced by its demotion.
            return self.promote(cx, candidate);
        }
        match self.positions.get(&candidate) {
            Some(p) if p.executed.contains(&p.received) && p.executed.contains(&choice.target) => {
                self.salvage(cx, candidate)
            }
            Some(p) => {
                let until = p
                    .received
                    .union(&choice.target)
                    .unwrap_or_else(|_| p.received.clone());
                let id = self.step(cx, candidate, MysqlOp::WaitApplied { until });
                let deadline = cx.step_deadline();
                self.enter(Phase::WaitingApplied {
                    id,
                    deadline,
                    choice,
                })
            }
            None => self.retry(cx, format!("no positions for candidate {candidate}"), None),
        }
    }
}
