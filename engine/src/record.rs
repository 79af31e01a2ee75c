//! The replicated cluster record and the raft log entries that change it.
//!
//! Every sidecar applies the same committed entries in the same order, so every
//! sidecar holds the same record. `apply` checks each entry against the record and
//! ignores one that no longer fits (a proposal from a coordinator that was overtaken):
//! this is what makes "one candidate per epoch" hold even when two coordinators race.

use crate::cluster::{ClusterSpec, NodeId};
use crate::command::SalvageReport;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Journal entries kept in the record; older ones are dropped.
pub const JOURNAL_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// The fencing token: bumped when a failover begins.
    pub epoch: u64,
    /// The master of record; `None` after a failover aborted (the cluster is fenced and
    /// waits for an operator).
    pub master: Option<NodeId>,
    /// A failover that began and has not ended.
    pub failover: Option<FailoverState>,
    pub paused: bool,
    pub journal: Vec<JournalEntry>,
    /// Servers kept out of replication and never promoted, with why: every failed
    /// master until it is checked for errant transactions, and any server found with
    /// some. Released when a check finds it clean.
    #[serde(default)]
    pub quarantined: BTreeMap<NodeId, String>,
    /// The epoch of the last automatic failover an operator acknowledged: the block
    /// on further automatic failovers is lifted for it.
    #[serde(default)]
    pub acked_epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverState {
    pub epoch: u64,
    /// Nodes that may still think they are master: the old master, and the candidate of
    /// any attempt this one superseded. All are fenced before anyone is promoted.
    pub suspects: Vec<NodeId>,
    pub reason: String,
    pub begun_wall_ms: u64,
    /// Set once, by the first committed choice; never changed within the epoch.
    pub candidate: Option<NodeId>,
    /// A planned switchover to this node (the old master is alive and is demoted, not
    /// failed over).
    #[serde(default)]
    pub planned: Option<NodeId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub epoch: u64,
    pub old_master: Option<NodeId>,
    pub new_master: Option<NodeId>,
    pub reason: String,
    pub begun_wall_ms: u64,
    pub ended_wall_ms: u64,
    pub outcome: Outcome,
    /// An operator's switchover, not an automatic failover.
    #[serde(default)]
    pub planned: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Completed(FailoverReport),
    Superseded {
        by_epoch: u64,
    },
    /// A switchover that stopped before its target was committed: the old master stays.
    Cancelled {
        why: String,
    },
}

/// What the coordinator saw while it carried the failover out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverReport {
    /// Coordinator's measure from the decision to the promotion being complete.
    pub duration_ms: u64,
    /// Replicas left out (unreachable, failed to repoint), with why.
    pub skipped: Vec<(NodeId, String)>,
    /// The candidate was behind and caught up from this replica first.
    pub caught_up_from: Option<NodeId>,
    /// `None` when no salvage was possible (the old master's host was gone).
    pub salvage: Option<Result<SalvageReport, String>>,
    /// Whose binlog the salvage read (the old master's, or an earlier failed
    /// master's when the old master's host was gone).
    #[serde(default)]
    pub salvaged_from: Option<NodeId>,
    /// Route tables not yet confirmed pointing at the new master (still being retried).
    pub routes_pending: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogEntry {
    FailoverBegin {
        epoch: u64,
        suspects: Vec<NodeId>,
        reason: String,
        wall_ms: u64,
        /// A planned switchover to this node; the only suspect is the live master.
        #[serde(default)]
        planned: Option<NodeId>,
    },
    CandidateChosen {
        epoch: u64,
        candidate: NodeId,
    },
    FailoverComplete {
        epoch: u64,
        new_master: NodeId,
        report: FailoverReport,
        wall_ms: u64,
    },
    /// A switchover that could not demote the old master or catch its target up ends
    /// here, before its target was committed: the master of record stays.
    SwitchoverCancelled {
        epoch: u64,
        why: String,
        wall_ms: u64,
    },
    SetPaused {
        paused: bool,
    },
    /// An operator acknowledged the automatic failover of `epoch`.
    Ack {
        epoch: u64,
    },
    /// `Some(why)` keeps `node` out; `None` lets it back in.
    Quarantine {
        node: NodeId,
        why: Option<String>,
    },
}

impl LogEntry {
    pub fn encode(&self) -> Vec<u8> {
        // Invariant: a log entry is plain data (no maps with non-string keys, no
        // custom serializer that can fail), so serde_json cannot refuse it.
        serde_json::to_vec(self).expect("log entries always serialize")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("undecodable log entry: {e}"))
    }
}

/// Why an entry was not applied (it is still in the log; it just changes nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored(pub String);

impl ClusterRecord {
    /// `q` failed as master, and the salvage of that failover read its whole binlog
    /// into the cluster (nothing stopped, nothing refused): everything its binlog held
    /// then is the cluster's history, and a server kept out (read_only, replicating
    /// from nobody) has written nothing since. A failed master whose tail was never
    /// salvaged may hold transactions no client was told of — errant — and is never
    /// read again.
    pub fn salvaged_whole(&self, q: NodeId) -> bool {
        let last = self
            .journal
            .iter()
            .rev()
            .find(|j| j.old_master == Some(q) && !j.planned);
        matches!(
            last.map(|j| &j.outcome),
            Some(Outcome::Completed(FailoverReport {
                salvaged_from: Some(from),
                salvage: Some(Ok(r)),
                ..
            })) if *from == q && r.stopped.is_none() && r.not_recovered.is_empty()
        )
    }

    pub fn initial(spec: &ClusterSpec) -> Self {
        ClusterRecord {
            epoch: 1,
            master: Some(spec.initial_master),
            failover: None,
            paused: false,
            journal: Vec::new(),
            quarantined: BTreeMap::new(),
            acked_epoch: 0,
        }
    }

    /// The last automatic (not planned) failover that completed.
    pub fn last_automatic_failover(&self) -> Option<&JournalEntry> {
        self.journal
            .iter()
            .rev()
            .find(|j| !j.planned && matches!(j.outcome, Outcome::Completed(_)))
    }

    /// Until when (wall clock, ms) automatic failover is blocked after the last one,
    /// unless acknowledged. Wall time, because the block must survive a sidecar
    /// restart; it decides availability only, never safety.
    pub fn failover_blocked_until(&self, block_ms: u64, wall_ms: u64) -> Option<u64> {
        let last = self.last_automatic_failover()?;
        let until = last.ended_wall_ms.saturating_add(block_ms);
        (block_ms > 0 && last.epoch > self.acked_epoch && wall_ms < until).then_some(until)
    }

    /// The one node allowed to accept writes: the master, or during a failover the
    /// chosen candidate (which is promoted before the failover is recorded complete).
    pub fn writer(&self) -> Option<NodeId> {
        match &self.failover {
            Some(f) => f.candidate,
            None => self.master,
        }
    }

    pub fn apply(&mut self, entry: &LogEntry) -> Result<(), Ignored> {
        match entry {
            LogEntry::FailoverBegin {
                epoch,
                suspects,
                reason,
                wall_ms,
                planned,
            } => {
                if *epoch != self.epoch + 1 {
                    return Err(Ignored(format!(
                        "failover for epoch {epoch} but the record is at epoch {}",
                        self.epoch
                    )));
                }
                if let Some(to) = planned {
                    // A switchover starts only from a settled cluster, away from its
                    // master of record (which is then the one suspect).
                    let fits = match self.master {
                        Some(m) => m != *to && suspects.as_slice() == [m],
                        None => false,
                    };
                    if self.failover.is_some() || !fits {
                        return Err(Ignored(format!(
                            "switchover to {to} does not fit the record (master {:?}, failover in progress: {})",
                            self.master,
                            self.failover.is_some()
                        )));
                    }
                }
                if let Some(old) = self.failover.take() {
                    let candidate = old.candidate;
                    let outcome = Outcome::Superseded { by_epoch: *epoch };
                    self.close(old, candidate, *wall_ms, outcome);
                }
                self.epoch = *epoch;
                self.failover = Some(FailoverState {
                    epoch: *epoch,
                    suspects: suspects.clone(),
                    reason: reason.clone(),
                    begun_wall_ms: *wall_ms,
                    candidate: None,
                    planned: *planned,
                });
                Ok(())
            }
            LogEntry::CandidateChosen { epoch, candidate } => match &mut self.failover {
                Some(f) if f.epoch == *epoch && f.candidate.is_none() => {
                    f.candidate = Some(*candidate);
                    Ok(())
                }
                Some(f) if f.epoch == *epoch => Err(Ignored(format!(
                    "epoch {epoch} already has candidate {:?}",
                    f.candidate
                ))),
                _ => Err(Ignored(format!(
                    "no failover in progress for epoch {epoch}"
                ))),
            },
            LogEntry::FailoverComplete {
                epoch,
                new_master,
                report,
                wall_ms,
            } => match self.failover.take() {
                Some(f) if f.epoch == *epoch && f.candidate == Some(*new_master) => {
                    let (suspects, planned) = (f.suspects.clone(), f.planned);
                    let outcome = Outcome::Completed(report.clone());
                    self.close(f, Some(*new_master), *wall_ms, outcome);
                    // A failed master may hold transactions nobody else has: it
                    // rejoins only once checked. A switchover's old master was
                    // demoted in order, its target caught up with it: nothing to check.
                    let failed = suspects.iter().filter(|s| *s != new_master);
                    for s in failed.filter(|_| planned.is_none()) {
                        self.quarantined
                            .entry(*s)
                            .or_insert_with(|| format!("failed master of epoch {}; not yet checked for errant transactions", epoch - 1));
                    }
                    self.master = Some(*new_master);
                    Ok(())
                }
                other => {
                    self.failover = other;
                    Err(Ignored(format!(
                        "completion of epoch {epoch} with {new_master} does not match the failover in progress"
                    )))
                }
            },
            LogEntry::SwitchoverCancelled {
                epoch,
                why,
                wall_ms,
            } => match self.failover.take() {
                Some(f) if f.epoch == *epoch && f.planned.is_some() && f.candidate.is_none() => {
                    self.close(f, None, *wall_ms, Outcome::Cancelled { why: why.clone() });
                    Ok(())
                }
                other => {
                    self.failover = other;
                    Err(Ignored(format!(
                        "no switchover of epoch {epoch} that can still be cancelled"
                    )))
                }
            },
            LogEntry::Ack { epoch } => {
                self.acked_epoch = self.acked_epoch.max(*epoch);
                Ok(())
            }
            LogEntry::Quarantine { node, why } => {
                match why {
                    Some(w) => {
                        self.quarantined.insert(*node, w.clone());
                    }
                    None => {
                        self.quarantined.remove(node);
                    }
                }
                Ok(())
            }
            LogEntry::SetPaused { paused } => {
                self.paused = *paused;
                Ok(())
            }
        }
    }

    /// Ends the failover `f` (already taken out of the record) in the journal.
    fn close(
        &mut self,
        f: FailoverState,
        new_master: Option<NodeId>,
        ended: u64,
        outcome: Outcome,
    ) {
        self.push_journal(JournalEntry {
            epoch: f.epoch,
            old_master: self.master,
            new_master,
            reason: f.reason,
            begun_wall_ms: f.begun_wall_ms,
            ended_wall_ms: ended,
            outcome,
            planned: f.planned.is_some(),
        });
    }

    fn push_journal(&mut self, entry: JournalEntry) {
        self.journal.push(entry);
        if self.journal.len() > JOURNAL_LEN {
            let extra = self.journal.len() - JOURNAL_LEN;
            self.journal.drain(..extra);
        }
    }
}
