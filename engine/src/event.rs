//! Events the engine emits for logs, metrics and timelines. They change nothing.

use crate::cluster::NodeId;
use crate::command::SalvageReport;
use crate::gtid::GtidSet;
use crate::record::FailoverReport;
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
    FailoverAborted {
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
    /// A message, result or entry the engine could not use (logged, never fatal).
    Dropped {
        why: String,
    },
}
