//! The failover from a committed candidate on: its relay log applied, the old master's
//! binlog tail salvaged, the old master's lease waited out unless it is confirmed
//! fenced (see `fence.rs`), the promotion, the repoint of the other replicas, and the
//! completion once the VIP routes follow (see `routes.rs`).

use super::{Cx, Next, Phase, Run};
use crate::choose::Choice;
use crate::cluster::NodeId;
use crate::command::{Command, CommandId, MysqlOp, MysqlReply, SalvageReport};
use crate::engine::Pending;
use crate::event::Event;
use crate::fence;
use crate::sabotage::Sabotage;
use crate::time::Time;

impl Run {
    pub(super) fn on_relay_applied(
        mut self,
        cx: &mut Cx,
        node: NodeId,
        choice: Choice,
        r: Result<MysqlReply, String>,
    ) -> Next {
        match r.map(MysqlReply::positions) {
            Ok(p) => {
                if let Some(p) = p {
                    self.positions.insert(node, p);
                }
                let epoch = self.epoch;
                cx.emit(Event::RelayApplied {
                    epoch,
                    candidate: node,
                });
                if self.planned.is_some() {
                    // The old master was demoted first: nothing to salvage.
                    self.propose_candidate(cx, choice)
                } else {
                    self.salvage(cx, choice.candidate)
                }
            }
            Err(why) => self.retry(
                cx,
                format!("waiting for {node} to apply its relay log failed: {why}"),
                None,
            ),
        }
    }

    /// Ships the old master's binlog tail when its host's sidecar is alive: a suspect's,
    /// or the master of record's (a retried epoch may no longer count it a suspect once
    /// it was fenced). When none of theirs is alive, an earlier failed master's binlog is
    /// read, if it is known to hold nothing but the cluster's history (see
    /// [`crate::ClusterRecord::salvaged_whole`]): a transaction it wrote and got
    /// acknowledged may have reached only the old master, which is now gone too.
    pub(super) fn salvage(self, cx: &mut Cx, candidate: NodeId) -> Next {
        if cx.sabotaged(Sabotage::Salvage) {
            return self.after_salvage(cx, candidate);
        }
        let live = cx.live_sidecars();
        let record = cx.record();
        let earlier = record
            .quarantined
            .keys()
            .copied()
            .filter(|q| record.salvaged_whole(*q));
        let source = cx
            .suspects()
            .into_iter()
            .chain(record.master)
            .chain(earlier)
            .filter(|n| *n != candidate)
            .find(|n| live.contains(n));
        let after = self.positions.get(&candidate).map(|p| p.executed.clone());
        let (Some(old), Some(after)) = (source, after) else {
            return self.after_salvage(cx, candidate);
        };
        let epoch = self.epoch;
        let deadline = cx.now() + cx.spec().timing.salvage_timeout();
        let id = cx.issue(Pending::Step { epoch, node: old }, |id| Command::Salvage {
            id,
            epoch,
            from: old,
            to: candidate,
            after,
            deadline,
        });
        self.enter(Phase::Salvaging {
            id,
            deadline,
            from: old,
            candidate,
        })
    }

    pub(super) fn on_salvaged(
        mut self,
        cx: &mut Cx,
        phase: Phase,
        id: CommandId,
        r: Result<SalvageReport, String>,
    ) -> Next {
        let Phase::Salvaging {
            id: want,
            from,
            candidate,
            ..
        } = phase
        else {
            return self.enter(phase);
        };
        if want != id {
            return self.enter(phase);
        }
        let epoch = self.epoch;
        cx.emit(Event::Salvaged {
            epoch,
            from,
            outcome: r.clone(),
        });
        self.salvage = Some((from, r));
        self.after_salvage(cx, candidate)
    }

    /// Suspects not known to be fenced (see [`fence::unconfirmed_suspects`]).
    pub(super) fn unconfirmed(&self, cx: &Cx) -> Vec<NodeId> {
        fence::unconfirmed_suspects(
            &cx.suspects(),
            &self.fenced,
            &cx.fresh_reports(),
            self.epoch,
        )
    }

    /// Promotes once the old master is fenced — every suspect confirmed, or its lease
    /// run out (see [`fence::old_writer_fenced_by`] and
    /// [`crate::Engine::lease_over_by_grants`]) — and the candidate holds its own
    /// lease (a writer without one fences itself at once).
    pub(super) fn after_salvage(self, cx: &mut Cx, candidate: NodeId) -> Next {
        let begun = self.begun_at.unwrap_or(cx.now());
        let until = fence::old_writer_fenced_by(begun, &cx.spec().timing);
        if !self.unconfirmed(cx).is_empty() && cx.now() < until {
            let epoch = self.epoch;
            cx.emit(Event::WaitingForLease {
                epoch,
                until_ms: until.as_millis(),
            });
        }
        let give_up = until.max(cx.now()) + cx.spec().timing.step_timeout();
        self.wait_lease(cx, until, give_up, candidate)
    }

    /// The lease wait: promotes when the old writer is fenced and the candidate holds
    /// its lease; retries the failover when the candidate has none by `give_up`.
    pub(super) fn wait_lease(
        mut self,
        cx: &mut Cx,
        until: Time,
        give_up: Time,
        candidate: NodeId,
    ) -> Next {
        let epoch = self.epoch;
        if self.begin_entry.is_none() {
            self.begin_entry = cx.committed_failover_begin(epoch);
        }
        let by_grants = self.begin_entry.and_then(|b| cx.lease_over_by_grants(b));
        let until = match by_grants {
            Some(by) if by < until => {
                cx.emit(Event::LeaseEndsFromGrants {
                    epoch,
                    until_ms: by.as_millis(),
                });
                by
            }
            _ => until,
        };
        let now = cx.now();
        let old_fenced =
            self.unconfirmed(cx).is_empty() || now >= until || cx.sabotaged(Sabotage::LeaseWait);
        let leased = cx.holds_lease(candidate, epoch) || cx.sabotaged(Sabotage::ActBeforeCommit);
        if old_fenced && leased {
            return self.promote(cx, candidate);
        }
        if now >= give_up {
            return self.retry(
                cx,
                format!("{candidate} was granted no write lease within the step timeout"),
                None,
            );
        }
        let wake = if old_fenced { give_up } else { until };
        self.enter(Phase::WaitingLease {
            until,
            give_up,
            wake,
            candidate,
        })
    }

    pub(super) fn promote(self, cx: &mut Cx, candidate: NodeId) -> Next {
        let id = self.step(cx, candidate, MysqlOp::Promote);
        let deadline = cx.step_deadline();
        self.enter(Phase::Promoting {
            id,
            deadline,
            candidate,
        })
    }

    pub(super) fn on_promoted(
        self,
        cx: &mut Cx,
        node: NodeId,
        candidate: NodeId,
        r: Result<MysqlReply, String>,
    ) -> Next {
        match r {
            Ok(_) => {
                let epoch = self.epoch;
                cx.emit(Event::Promoted { epoch, node });
                self.repoint(cx, candidate)
            }
            // It may have become writable before the error: a suspect from now on.
            Err(why) => self.retry(cx, format!("promotion of {node} failed: {why}"), Some(node)),
        }
    }

    fn repoint(self, cx: &mut Cx, candidate: NodeId) -> Next {
        let suspects = cx.suspects();
        let others: Vec<NodeId> = if self.planned.is_some() {
            // Every server but the new master, the demoted one included.
            cx.spec()
                .database_ids()
                .filter(|n| *n != candidate && !cx.record().quarantined.contains_key(n))
                .collect()
        } else {
            self.positions
                .keys()
                .copied()
                .filter(|n| *n != candidate && !suspects.contains(n))
                .collect()
        };
        for n in &others {
            self.step(cx, *n, MysqlOp::Repoint { source: candidate });
            cx.repointing(*n);
        }
        if others.is_empty() {
            return self.complete(cx, candidate);
        }
        let deadline = cx.step_deadline();
        self.enter(Phase::Repointing {
            waiting: others.into_iter().collect(),
            deadline,
            candidate,
        })
    }

    pub(super) fn on_repointed(
        mut self,
        cx: &mut Cx,
        phase: Phase,
        node: NodeId,
        candidate: NodeId,
        r: Result<MysqlReply, String>,
        last: bool,
    ) -> Next {
        let epoch = self.epoch;
        match r {
            Ok(_) => cx.emit(Event::Repointed {
                epoch,
                node,
                source: candidate,
            }),
            Err(why) => {
                cx.emit(Event::Skipped {
                    epoch,
                    node,
                    why: why.clone(),
                });
                self.skipped.insert(node, format!("repoint failed: {why}"));
            }
        }
        if last {
            return self.complete(cx, candidate);
        }
        self.enter(phase)
    }

    /// Promoted and repointed: wait (at most a step) for the routes, then commit. With
    /// forwarding on, commit at once: the hosts the routes still lead to forward to
    /// the new master once the record names it (`forward.rs`), and the routes go on
    /// being moved after the failover is over (`routes.rs`).
    pub(super) fn complete(self, cx: &mut Cx, candidate: NodeId) -> Next {
        if cx.spec().vip.forward || cx.routes_pending().is_empty() {
            return self.commit_completion(cx, candidate);
        }
        let deadline = cx.step_deadline();
        self.enter(Phase::AwaitingRoutes {
            deadline,
            candidate,
        })
    }
}
