//! What the driver tells the engine.

use crate::cluster::NodeId;
use crate::command::{CommandId, CommandResult};
use crate::message::PeerMessage;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// Time has passed. `wall_unix_ms` only stamps the failover journal; decisions use
    /// the monotonic `now` given with every input.
    Tick { wall_unix_ms: u64 },
    /// A message from a peer sidecar, already authenticated by the transport.
    Peer { from: NodeId, message: PeerMessage },
    /// A command issued earlier has finished.
    Done {
        id: CommandId,
        result: CommandResult,
    },
    /// An operator's request (through the admin API).
    Operator(OperatorRequest),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorRequest {
    /// No automatic failover until resumed (maintenance windows).
    Pause,
    Resume,
    /// Lift the block on automatic failover that follows a failover (anti-flapping).
    Ack,
    /// A planned master change to `to`. Checked against this sidecar's view first
    /// (refused with [`crate::Event::SwitchoverRefused`]), then committed; the
    /// coordinator carries it out.
    Switchover {
        to: NodeId,
    },
}
