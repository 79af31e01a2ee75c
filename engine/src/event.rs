//! Events the engine emits for logs, metrics and timelines. They change nothing.

use crate::cluster::NodeId;
use crate::command::{CommandId, SalvageReport};
use crate::gtid::GtidSet;
use crate::record::{FailoverReport, LogEntry};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    BecameCoordinator {
        term: u64,
    },
    LostCoordination {
        term: u64,
    },
    MasterUnreachable {
        master: NodeId,
        failures: u32,
    },
    MasterDead {
        master: NodeId,
        reason: String,
    },
    FailoverBegun {
        epoch: u64,
        suspects: Vec<NodeId>,
        reason: String,
    },
    FailoverResumed {
        epoch: u64,
    },
    Fenced {
        epoch: u64,
        node: NodeId,
    },
    FenceFailed {
        epoch: u64,
        node: NodeId,
        error: String,
    },
    Skipped {
        epoch: u64,
        node: NodeId,
        why: String,
    },
    CandidateChosen {
        epoch: u64,
        candidate: NodeId,
        catch_up_from: Option<NodeId>,
        target: GtidSet,
    },
    CaughtUp {
        epoch: u64,
        candidate: NodeId,
    },
    RelayApplied {
        epoch: u64,
        candidate: NodeId,
    },
    Salvaged {
        epoch: u64,
        from: NodeId,
        outcome: Result<SalvageReport, String>,
    },
    WaitingForLease {
        epoch: u64,
        until_ms: u64,
    },
    /// A majority of sidecars reported their last grant to the old writer: its lease
    /// runs out sooner than the wait from the commit assumed.
    LeaseEndsFromGrants {
        epoch: u64,
        until_ms: u64,
    },
    Promoted {
        epoch: u64,
        node: NodeId,
    },
    Repointed {
        epoch: u64,
        node: NodeId,
        source: NodeId,
    },
    RouteReplaced {
        route_table: String,
        target: NodeId,
    },
    RouteFailed {
        route_table: String,
        target: NodeId,
        error: String,
    },
    /// VIP traffic reaching this host now goes to `to`'s mysqld (`None`: its own).
    ForwardingSet {
        to: Option<NodeId>,
    },
    ForwardingFailed {
        to: Option<NodeId>,
        error: String,
    },
    FailoverCompleted {
        epoch: u64,
        new_master: NodeId,
        report: FailoverReport,
    },
    /// An attempt could not finish; the cluster stays fenced and tries again in a new
    /// epoch.
    FailoverAttemptFailed {
        epoch: u64,
        why: String,
    },
    /// A server holds transactions the master lacks; it is kept out of replication.
    ErrantTransactions {
        node: NodeId,
        master: NodeId,
        gtids: GtidSet,
    },
    /// A planned switchover was committed and the coordinator starts it.
    SwitchoverBegun {
        epoch: u64,
        from: NodeId,
        to: NodeId,
    },
    /// A switchover request this sidecar refused (its view of the cluster says why).
    SwitchoverRefused {
        to: NodeId,
        why: String,
    },
    /// The old master is read_only and its writes have ended: its position is final.
    Demoted {
        epoch: u64,
        node: NodeId,
        executed: GtidSet,
    },
    /// The switchover stopped before its target was committed; the master stays.
    SwitchoverCancelled {
        epoch: u64,
        why: String,
    },
    /// The master is dead, but an automatic failover completed recently and was not
    /// acknowledged: no failover until `until_wall_ms` or `multiaz ack`.
    FailoverBlocked {
        master: NodeId,
        until_wall_ms: u64,
    },
    /// A pre-failover or pre-switchover hook failed and vetoes are configured.
    Vetoed {
        what: String,
        why: String,
    },
    SelfFenced {
        why: String,
    },
    Unfenced,
    /// This sidecar could not change its own mysqld's read_only (`writable`: making
    /// the master of record writable, which needs semi-sync source on first; otherwise
    /// the self-fence). Tried again on a later probe.
    LocalReadOnlyFailed {
        writable: bool,
        why: String,
    },
    Paused(bool),
    // What the engine could not use: each is logged, none is fatal.
    /// A peer message from a node that is not a peer (or claims to be this one).
    NotAPeer {
        from: NodeId,
    },
    /// A raft message raft-rs refused.
    RaftRejected {
        from: NodeId,
        why: String,
    },
    /// A result for a command this engine has no record of (answered twice, or
    /// issued before a restart).
    UnknownResult {
        id: CommandId,
    },
    /// A result of the wrong kind for its command: a driver bug.
    ResultMismatch {
        why: String,
    },
    /// Raft refused a proposal from this sidecar (no leader known yet); the request is
    /// not retried, the operator asks again.
    ProposalRefused {
        entry: LogEntry,
    },
    /// A committed entry the record did not apply (it no longer fits: a stale
    /// proposal from a deposed coordinator, or one that lost a race).
    EntryIgnored {
        why: String,
    },
    /// A committed entry that does not decode: a log written by an incompatible
    /// version.
    EntryUndecodable {
        why: String,
    },
    /// This node folded its log up to `index` into a snapshot of the record.
    LogCompacted {
        index: u64,
    },
    /// This node was too far behind the coordinator's log: it took the coordinator's
    /// snapshot of the record at `index` in place of the entries it missed.
    SnapshotInstalled {
        index: u64,
    },
    /// A snapshot that does not decode (a log written by an incompatible version): the
    /// record stays as it was.
    SnapshotUndecodable {
        why: String,
    },
}

/// How loud an event is, for logs and for readers of a timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Something failed or was refused that a person (or an alert) should see: the
    /// safety mechanisms' failures among them (a fence or unfence that did not work).
    Warning,
    /// The failover's story: detection, each step, the routes, the roles.
    Info,
    /// Expected noise: a stale entry or a late result that changes nothing.
    Debug,
}

impl Event {
    pub fn severity(&self) -> Severity {
        match self {
            Event::FenceFailed { .. }
            | Event::RouteFailed { .. }
            | Event::ForwardingFailed { .. }
            | Event::FailoverAttemptFailed { .. }
            | Event::ErrantTransactions { .. }
            | Event::SelfFenced { .. }
            | Event::LocalReadOnlyFailed { .. }
            | Event::SwitchoverRefused { .. }
            | Event::SwitchoverCancelled { .. }
            | Event::FailoverBlocked { .. }
            | Event::Vetoed { .. }
            | Event::MasterDead { .. }
            | Event::NotAPeer { .. }
            | Event::RaftRejected { .. }
            | Event::ResultMismatch { .. }
            | Event::EntryUndecodable { .. }
            | Event::SnapshotUndecodable { .. }
            | Event::ProposalRefused { .. } => Severity::Warning,
            Event::UnknownResult { .. }
            | Event::EntryIgnored { .. }
            | Event::LogCompacted { .. } => Severity::Debug,
            Event::BecameCoordinator { .. }
            | Event::LostCoordination { .. }
            | Event::MasterUnreachable { .. }
            | Event::FailoverBegun { .. }
            | Event::FailoverResumed { .. }
            | Event::Fenced { .. }
            | Event::Skipped { .. }
            | Event::CandidateChosen { .. }
            | Event::CaughtUp { .. }
            | Event::RelayApplied { .. }
            | Event::Salvaged { .. }
            | Event::WaitingForLease { .. }
            | Event::LeaseEndsFromGrants { .. }
            | Event::Promoted { .. }
            | Event::Repointed { .. }
            | Event::RouteReplaced { .. }
            | Event::ForwardingSet { .. }
            | Event::FailoverCompleted { .. }
            | Event::SwitchoverBegun { .. }
            | Event::Demoted { .. }
            | Event::Unfenced
            | Event::SnapshotInstalled { .. }
            | Event::Paused(_) => Severity::Info,
        }
    }
}
