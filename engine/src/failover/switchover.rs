//! Planned switchover: whether one may start, and the plan an operator is shown.
//!
//! The check is a pure function of the cluster description and a status snapshot, so
//! that the admin API can answer `--dry-run` and refuse with a reason before anything
//! is proposed, and the engine checks the same thing again with its own view.
//!
//! The procedure is a planned run of the failover machinery (its own first steps are
//! here; the rest is the failover's): commit the switchover (epoch E+1) → pre-switchover hook → demote the old master
//! (read_only, running writes end or are killed, final position) → wait until the
//! target has applied that position → commit the target (the VIP routes move from
//! here) → promote it → repoint the other replicas and the old master → commit. Until
//! the target is committed any failure cancels the switchover and the old master
//! becomes writable again; after it, a failure is handled as a failover.

use super::{Cx, FailoverRun, Next, Phase, Run};
use crate::choose::Choice;
use crate::cluster::{ClusterSpec, NodeId, PromotionRule};
use crate::command::{Command, CommandId, MysqlOp, MysqlReply};
use crate::engine::Pending;
use crate::event::Event;
use crate::hook::HookPoint;
use crate::message::LocalView;
use crate::record::LogEntry;
use crate::status::{EngineStatus, Role};
use serde::Serialize;
use std::fmt;

/// What a switchover would do, for `multiaz switchover --dry-run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwitchoverPlan {
    pub epoch: u64,
    pub from: NodeId,
    pub to: NodeId,
    /// Master transactions the target had not applied in the snapshot.
    pub target_lag: u64,
    /// Servers that will replicate from the target afterwards (the old master too).
    pub repoint: Vec<NodeId>,
    pub route_tables: Vec<String>,
    pub grace_ms: u64,
}

impl fmt::Display for SwitchoverPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[NodeId]| {
            v.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            f,
            "switchover {} -> {} (epoch {}); {} is {} transaction(s) behind",
            self.from, self.to, self.epoch, self.to, self.target_lag
        )?;
        writeln!(
            f,
            "  1. {}: read_only; running writes get {} ms to finish, then are killed",
            self.from, self.grace_ms
        )?;
        writeln!(
            f,
            "  2. {}: wait until it has applied everything {} wrote",
            self.to, self.from
        )?;
        writeln!(
            f,
            "  3. commit {} as the writer; VIP route in {} moves to it",
            self.to,
            self.route_tables.join(", ")
        )?;
        writeln!(
            f,
            "  4. {}: promote (replication reset, semi-sync source, writable)",
            self.to
        )?;
        writeln!(f, "  5. repoint to {}: {}", self.to, list(&self.repoint))?;
        write!(
            f,
            "  until step 3 any failure cancels it and {} is writable again",
            self.from
        )
    }
}

/// Checks that a switchover to `to` may start, given a status snapshot; returns the
/// plan, or why not in words an operator can act on.
pub fn plan_switchover(
    spec: &ClusterSpec,
    status: &EngineStatus,
    to: NodeId,
) -> Result<SwitchoverPlan, String> {
    let record = &status.record;
    if let Some(f) = &record.failover {
        let what = if f.planned.is_some() {
            "a switchover"
        } else {
            "a failover"
        };
        return Err(format!("{what} (epoch {}) is in progress", f.epoch));
    }
    let Some(from) = record.master else {
        return Err("the cluster has no master (a failover was aborted)".into());
    };
    let Some(node) = spec.node(to) else {
        return Err(format!("{to} is not a member of the cluster"));
    };
    let name = &node.name;
    if to == from {
        return Err(format!("{name} ({to}) is already the master"));
    }
    if !node.is_database() {
        return Err(format!("{name} ({to}) is a witness: it has no mysqld"));
    }
    if node.promotion == PromotionRule::Never {
        return Err(format!("{name} ({to}) is marked promotion = \"never\""));
    }
    if let Some(why) = record.quarantined.get(&to) {
        return Err(format!("{name} ({to}) is quarantined: {why}"));
    }
    let view = status
        .nodes
        .get(&to)
        .ok_or_else(|| format!("{to}: no view"))?;
    if !view.sidecar_live {
        return Err(format!("{name} ({to}): its sidecar is not heard from"));
    }
    let Some(LocalView::Up(Some(st))) = &view.mysqld else {
        return Err(format!(
            "{name} ({to}): its mysqld is not up (or did not report a status)"
        ));
    };
    let attached = st
        .replication
        .as_ref()
        .is_some_and(|r| r.source == Some(from) && r.io_running && r.sql_running);
    if !attached {
        return Err(format!(
            "{name} ({to}) is not replicating from the master {from} with both threads running"
        ));
    }
    let master_view = status.nodes.get(&from);
    if !master_view.is_some_and(|m| m.sidecar_live) {
        return Err(format!(
            "the master {from}'s sidecar is not heard from (a failover, not a switchover, handles a lost master)"
        ));
    }
    if !matches!(
        master_view.and_then(|m| m.mysqld.as_ref()),
        Some(LocalView::Up(Some(_)))
    ) {
        return Err(format!("the master {from}'s mysqld is not up"));
    }
    let Some(lag) = view.lag_transactions else {
        return Err(format!("{name} ({to}): its lag is not known yet"));
    };
    if lag > spec.timing.switchover_max_lag {
        return Err(format!(
            "{name} ({to}) is {lag} transactions behind (timing.switchover_max_lag = {})",
            spec.timing.switchover_max_lag
        ));
    }
    let repoint = status
        .nodes
        .iter()
        .filter(|(id, v)| **id != to && matches!(v.role, Role::Master | Role::Replica))
        .map(|(id, _)| *id)
        .collect();
    Ok(SwitchoverPlan {
        epoch: record.epoch + 1,
        from,
        to,
        target_lag: lag,
        repoint,
        route_tables: spec.vip.route_tables.clone(),
        grace_ms: spec.timing.switchover_grace_ms,
    })
}

impl FailoverRun {
    /// Starts a committed switchover from `from` to `to` on this coordinator: the
    /// pre-switchover hook first, then the demotion.
    pub(super) fn start_switchover(cx: &mut Cx, epoch: u64, from: NodeId, to: NodeId) -> Self {
        cx.emit(Event::SwitchoverBegun { epoch, from, to });
        let mut run = Run::new(epoch, cx.now());
        run.begun_at = Some(cx.now());
        run.planned = Some(to);
        let call = run.hook_call(cx, HookPoint::PreSwitchover, Some(to), None, None);
        let id = cx.issue(Pending::SwitchoverHook, |id| Command::Hook { id, call });
        let deadline = cx.step_deadline();
        FailoverRun {
            run,
            phase: Phase::SwitchoverHook {
                id,
                deadline,
                from,
                to,
            },
        }
    }

    /// The pre-switchover hook answered: demote the old master, unless it vetoed.
    pub(super) fn after_switchover_hook(
        self,
        cx: &mut Cx,
        id: CommandId,
        veto: Option<String>,
    ) -> Next {
        let FailoverRun { run, phase } = self;
        let Phase::SwitchoverHook {
            id: want, from, to, ..
        } = phase
        else {
            return run.enter(phase);
        };
        if want != id {
            return run.enter(phase);
        }
        if let Some(why) = veto {
            cx.emit(Event::Vetoed {
                what: "switchover".into(),
                why: why.clone(),
            });
            return run.cancel(cx, format!("vetoed by the pre-switchover hook: {why}"));
        }
        let grace_ms = cx.spec().timing.switchover_grace_ms;
        let id = run.step(cx, from, MysqlOp::Demote { grace_ms });
        let deadline = cx.step_deadline();
        run.enter(Phase::Demoting { id, deadline, to })
    }
}

impl Run {
    /// The old master is read_only with its final position: wait for the target `to`
    /// to apply it (it still replicates from the old master).
    pub(super) fn on_demoted(
        mut self,
        cx: &mut Cx,
        node: NodeId,
        to: NodeId,
        r: Result<MysqlReply, String>,
    ) -> Next {
        let epoch = self.epoch;
        let p = match r.map(MysqlReply::positions) {
            Ok(Some(p)) => p,
            Ok(None) => return self.cancel(cx, format!("demoting {node} gave no position")),
            Err(why) => return self.cancel(cx, format!("demoting {node} failed: {why}")),
        };
        cx.emit(Event::Demoted {
            epoch,
            node,
            executed: p.executed.clone(),
        });
        self.fenced.insert(node);
        self.positions.insert(node, p.clone());
        let choice = Choice {
            candidate: to,
            catch_up_from: None,
            target: p.executed.clone(),
        };
        let id = self.step(cx, to, MysqlOp::WaitApplied { until: p.executed });
        let deadline = cx.step_deadline();
        self.enter(Phase::WaitingApplied {
            id,
            deadline,
            choice,
        })
    }

    /// Ends a switchover before its target was committed; the old master regains its
    /// lease and becomes writable again.
    pub(super) fn cancel(self, cx: &mut Cx, why: String) -> Next {
        let entry = LogEntry::SwitchoverCancelled {
            epoch: self.epoch,
            why,
            wall_ms: cx.wall_ms(),
        };
        self.end_with(cx, entry)
    }
}
