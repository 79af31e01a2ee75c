//! What travels between sidecars: a message and who sent it. On the wire it is sealed
//! (`auth.rs`) and length-prefixed (`peers.rs`); the simulation sends it as datagrams.

use multiaz_engine::{NodeId, PeerMessage};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: NodeId,
    pub message: PeerMessage,
}
