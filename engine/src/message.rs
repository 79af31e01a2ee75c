//! What sidecars say to each other. The driver carries these opaquely (it frames and
//! authenticates them); only the engine reads them.

use crate::cluster::NodeId;
use crate::command::MysqlStatus;
use crate::forward::VipPath;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// A raft-rs message, protobuf-encoded.
    Raft(Vec<u8>),
    /// A sidecar's view, sent to every peer each probe interval.
    Report(Report),
    /// The writer of record asks for its write lease for `epoch`.
    LeaseRequest { epoch: u64, seq: u64 },
    /// A peer grants the lease round `seq` of `epoch`.
    LeaseGrant { epoch: u64, seq: u64 },
}

impl PeerMessage {
    /// A raft message carrying a snapshot of the record (for tests that lose one).
    pub fn is_raft_snapshot(&self) -> bool {
        use protobuf::Message as _;
        match self {
            PeerMessage::Raft(bytes) => raft::prelude::Message::parse_from_bytes(bytes)
                .is_ok_and(|m| m.get_msg_type() == raft::prelude::MessageType::MsgSnapshot),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The highest epoch this sidecar knows of, including failovers not yet committed.
    pub epoch: u64,
    /// The master this report is about.
    pub master: Option<NodeId>,
    /// Consecutive failed probes of the master's mysqld (0 when it answered last).
    pub master_failures: u32,
    /// The last probe of the master answered. `None` when this sidecar does not probe it.
    pub master_reachable: Option<bool>,
    /// This host's own mysqld; `None` on a witness.
    pub local: Option<LocalView>,
    /// The write lease this sidecar holds (it is that epoch's writer).
    #[serde(default)]
    pub lease: Option<LeaseHeld>,
    /// While a failover is under way: this sidecar grants no lease for an older epoch
    /// any more, and when it last did.
    #[serde(default)]
    pub grants_ended: Option<GrantsEnded>,
    /// From the coordinator: every VIP route is confirmed pointing at this writer
    /// (hosts the routes have left stop forwarding).
    #[serde(default)]
    pub routes_at: Option<NodeId>,
    /// Where VIP traffic reaching this host goes, as last set (`None`: not known).
    #[serde(default)]
    pub forwarding: Option<VipPath>,
}

/// A writer's lease as its report tells it: the epoch, and how much of it was left
/// when the report was sent (on the writer's own clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHeld {
    pub epoch: u64,
    pub left_ms: u64,
}

/// A sidecar's word that it has durably logged the begin entry of failover `epoch` (at
/// raft `index` in `term`: the coordinator counts it only for the entry it saw
/// committed, which no log ever drops), so it grants no lease for an older epoch again,
/// and that the last one it granted was `last_grant_ago_ms` before it sent this (on its
/// own clock; its start stands for grants before a restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantsEnded {
    pub epoch: u64,
    pub index: u64,
    pub term: u64,
    pub last_grant_ago_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LocalView {
    /// Not probed yet.
    Unknown,
    Down,
    Up(Option<MysqlStatus>),
}

impl LocalView {
    /// This replica's IO thread is connected to `master`: the master still feeds it.
    pub fn receives_from(&self, master: NodeId) -> bool {
        matches!(self, LocalView::Up(Some(s)) if s.replication.as_ref()
            .is_some_and(|r| r.io_running && r.source == Some(master)))
    }
}
