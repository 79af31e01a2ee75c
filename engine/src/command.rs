//! What the engine asks its driver to do: a closed set of commands, and their results.

use crate::cluster::NodeId;
use crate::event::Event;
use crate::gtid::GtidSet;
use crate::hook::HookCall;
use crate::message::PeerMessage;
use crate::storage::PersistBatch;
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Names a command whose result comes back as [`crate::Input::Done`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CommandId(pub u64);

impl fmt::Debug for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Look at a mysqld: this node's own, or the master's. Result: [`CommandResult::Probe`].
    Probe { id: CommandId, node: NodeId },
    /// An operation on one node's mysqld. Result: [`CommandResult::Mysql`].
    Mysql {
        id: CommandId,
        node: NodeId,
        op: MysqlOp,
    },
    /// Ask the sidecar on `from` (the old master's host) to read its local binlog after
    /// `after` and apply every complete transaction to `to`, keeping their GTIDs.
    /// Result: [`CommandResult::Salvage`].
    Salvage {
        id: CommandId,
        /// The failover this salvage belongs to: the old host serves it only while its
        /// own record shows this failover, with `from` failed and `to` its candidate.
        epoch: u64,
        from: NodeId,
        to: NodeId,
        after: GtidSet,
        /// When the engine stops waiting for the answer (its clock): the salvage must
        /// be over by then, however late the driver starts it.
        deadline: Time,
    },
    /// Point the VIP's /32 route in one route table at `target`'s network interface.
    /// The driver retries throttling with backoff within its own deadline.
    /// Result: [`CommandResult::Done`].
    ReplaceRoute {
        id: CommandId,
        route_table: String,
        target: NodeId,
    },
    /// Send the VIP traffic that reaches this host to `to`'s mysqld (`None`: to this
    /// host's own), replacing what was set before. Changes apply in the order asked.
    /// Result: [`CommandResult::Done`].
    Forward { id: CommandId, to: Option<NodeId> },
    /// Stop `node`'s EC2 instance (STONITH, only when `timing.stonith` is on).
    /// Result: [`CommandResult::Done`].
    StopInstance { id: CommandId, node: NodeId },
    /// Run the configured hook for `call.point` (if any) with `call` as its details.
    /// Result: [`CommandResult::Done`]; an error from a pre-hook is a veto, so the
    /// driver answers `Ok` for a failed hook unless vetoes are configured.
    Hook { id: CommandId, call: HookCall },
    /// Send a message to a peer sidecar; best effort, no result.
    Send { to: NodeId, message: PeerMessage },
    /// Durably store raft state, then send the messages it carries. A barrier: the
    /// driver must finish it before executing any later command. Failure is fatal.
    Persist(PersistBatch),
    /// Something happened worth a log line, a metric or a timeline entry.
    Emit(Event),
}

/// Operations on a mysqld. Each is idempotent, so a coordinator that takes over a
/// failover half-way can issue them again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MysqlOp {
    /// `read_only = ON` (and `super_read_only` on MySQL): the node accepts no writes.
    SetReadOnly,
    /// Semi-sync source on, then `read_only = OFF`, on the master of record only. The
    /// server stays read_only when semi-sync cannot be turned on (unless the driver is
    /// configured to accept asynchronous replication): a writable master without it
    /// acknowledges writes no replica has.
    SetWritable,
    /// Stop the IO thread and report positions: a semi-sync master can then acknowledge
    /// nothing more through this replica. Result: [`MysqlReply::Positions`].
    FenceReplica,
    /// Replicate from `source` until `until` is executed, then stop replication.
    /// Result: [`MysqlReply::Positions`].
    CatchUp { source: NodeId, until: GtidSet },
    /// Wait until the SQL thread has applied `until` (its relay log).
    /// Result: [`MysqlReply::Positions`].
    WaitApplied { until: GtidSet },
    /// The planned switchover's demotion of the master: `read_only = ON`, let running
    /// writes finish for up to `grace_ms`, kill those still running, and report the
    /// final positions. Result: [`MysqlReply::Positions`].
    Demote { grace_ms: u64 },
    /// Stop and reset replication, then as [`MysqlOp::SetWritable`]: semi-sync source
    /// on, `read_only = OFF`.
    Promote,
    /// Replicate from `source` with GTID auto-positioning (semi-sync replica on).
    Repoint { source: NodeId },
}

/// Where a replica stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Positions {
    /// Every transaction it has received: executed plus relay log.
    pub received: GtidSet,
    /// Every transaction it has applied.
    pub executed: GtidSet,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MysqlReply {
    Done,
    Positions(Positions),
}

impl MysqlReply {
    pub fn positions(self) -> Option<Positions> {
        match self {
            MysqlReply::Positions(p) => Some(p),
            MysqlReply::Done => None,
        }
    }
}

/// What a probe saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeResult {
    /// The server answered (errors such as "too many connections" count as alive too;
    /// the driver then reports what it could read, `status` may be `None`).
    Alive(Option<MysqlStatus>),
    /// No answer within the probe timeout, connection refused, or the host is gone.
    Down(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MysqlStatus {
    pub read_only: bool,
    pub executed: GtidSet,
    pub received: GtidSet,
    /// Present when the server is configured as a replica.
    pub replication: Option<ReplicationStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationStatus {
    /// The member it replicates from, when the driver recognises the address.
    pub source: Option<NodeId>,
    /// The IO thread is connected and receiving.
    pub io_running: bool,
    pub sql_running: bool,
}

/// How a salvage went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalvageReport {
    /// Whole transactions applied to the new master with their original GTIDs.
    pub recovered: u64,
    /// GTIDs found in the binlog but not applied (torn, or failed to apply).
    pub not_recovered: Vec<String>,
    /// Why it stopped before the end, if it did (a transaction the new master
    /// refused, the deadline, damage in the binlog).
    #[serde(default)]
    pub stopped: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Probe(ProbeResult),
    Mysql(Result<MysqlReply, String>),
    Salvage(Result<SalvageReport, String>),
    Done(Result<(), String>),
}
