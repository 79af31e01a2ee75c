//! Raft's durable state as plain data: what the driver writes to disk, and gives back on
//! restart. The engine keeps the working copy in raft-rs's `MemStorage`.

use crate::cluster::NodeId;
use crate::message::PeerMessage;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
}

/// The highest term a stored state may hold: an election a second for a hundred
/// million years stays below it.
pub const MAX_TERM: u64 = 1 << 52;

/// One raft log entry: its position and its protobuf encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEntry {
    pub index: u64,
    pub term: u64,
    pub bytes: Vec<u8>,
}

impl StoredEntry {
    /// The cluster-record entry this raft entry carries, if it carries one (raft's own
    /// entries, such as a new leader's empty one, carry none; so does damage).
    pub fn log_entry(&self) -> Option<crate::record::LogEntry> {
        use protobuf::Message as _;
        use raft::prelude::Entry;
        let entry = Entry::parse_from_bytes(&self.bytes).ok()?;
        crate::record::LogEntry::decode(&entry.data).ok()
    }
}

/// The log up to `index` folded into the cluster record it built: what raft keeps of
/// the entries it has compacted, and what a leader sends a follower that is missing
/// them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSnapshot {
    /// The last entry it folds in, and that entry's term.
    pub index: u64,
    pub term: u64,
    /// Raft's voters at that point (membership is fixed: every node of the spec).
    pub voters: Vec<u64>,
    /// The cluster record after entry `index`, as JSON.
    pub record: Vec<u8>,
}

/// How a snapshot reaches the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotWrite {
    /// This node folded its own log up to the snapshot's index; what follows stays.
    Compacted(StoredSnapshot),
    /// A leader's snapshot replaces this node's whole log.
    Installed(StoredSnapshot),
}

/// One step of durable writes. Messages that raft may only send once these writes are
/// durable (votes, append acknowledgements) travel inside it, so a driver cannot send
/// them first: it gets them back from [`DurableState::apply`] after writing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistBatch {
    pub hard_state: Option<HardState>,
    /// A snapshot, applied before `entries`.
    #[serde(default)]
    pub snapshot: Option<SnapshotWrite>,
    /// Entries to append; the first one's index truncates any older suffix from there.
    pub entries: Vec<StoredEntry>,
    pub then_send: Vec<(NodeId, PeerMessage)>,
}

/// Everything raft needs to restart: the hard state, the latest snapshot, and the log
/// after it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableState {
    pub hard_state: HardState,
    /// The log before `entries`, folded into the record (`None`: the log is whole from
    /// entry 1, as in every state file written before compaction existed).
    #[serde(default)]
    pub snapshot: Option<StoredSnapshot>,
    pub entries: Vec<StoredEntry>,
    /// How many times this node has started with this state: the driver counts each
    /// start before the engine sends anything. The writer's lease rounds of a start
    /// are numbered from `boots << LEASE_ROUND_BITS`, so no round number repeats across
    /// restarts (a grant for a round of an earlier start can never count toward a
    /// later one).
    ///
    /// A state file from before this count existed reads as one start: its rounds
    /// were numbered from zero.
    #[serde(default = "one_earlier_start")]
    pub boots: u64,
}

fn one_earlier_start() -> u64 {
    1
}

/// Lease rounds one start may number (2^36: centuries at a hundred rounds a second).
pub const LEASE_ROUND_BITS: u32 = 36;
/// Starts a state may record: past it the lease round numbers would overflow.
pub const MAX_BOOTS: u64 = (1 << (63 - LEASE_ROUND_BITS)) - 1;

impl DurableState {
    /// The first lease round number of this start (rounds count up from one past it).
    pub fn lease_round_base(&self) -> u64 {
        self.boots.min(MAX_BOOTS) << LEASE_ROUND_BITS
    }

    /// Applies a batch in memory. The driver writes the result (fsync, atomic rename)
    /// and only then sends the returned messages.
    pub fn apply(&mut self, batch: PersistBatch) -> Vec<(NodeId, PeerMessage)> {
        match batch.snapshot {
            Some(SnapshotWrite::Compacted(snapshot)) => {
                self.entries.retain(|e| e.index > snapshot.index);
                self.snapshot = Some(snapshot);
            }
            Some(SnapshotWrite::Installed(snapshot)) => {
                self.entries.clear();
                self.snapshot = Some(snapshot);
            }
            None => {}
        }
        if let Some(hs) = batch.hard_state {
            self.hard_state = hs;
        }
        if let Some(first) = batch.entries.first() {
            self.entries.retain(|e| e.index < first.index);
            self.entries.extend(batch.entries);
        }
        batch.then_send
    }

    /// Checks that the log is contiguous from index 1 and the commit index lies in it.
    pub fn check(&self) -> Result<(), String> {
        // Raft adds one to a term at each election: a term near the top of u64 would
        // overflow inside raft-rs. No real cluster gets past this bound.
        if self.hard_state.term > MAX_TERM {
            return Err(format!(
                "term {} is implausible (at most {MAX_TERM})",
                self.hard_state.term
            ));
        }
        if self.boots > MAX_BOOTS {
            return Err(format!(
                "{} starts recorded (at most {MAX_BOOTS})",
                self.boots
            ));
        }
        if let Some(e) = self.entries.iter().find(|e| e.term > self.hard_state.term) {
            return Err(format!(
                "log entry {} has term {}, past the current term {}",
                e.index, e.term, self.hard_state.term
            ));
        }
        let folded = match &self.snapshot {
            None => 0,
            Some(s) => {
                if s.term > self.hard_state.term {
                    return Err(format!(
                        "the snapshot at entry {} has term {}, past the current term {}",
                        s.index, s.term, self.hard_state.term
                    ));
                }
                if s.index > self.hard_state.commit {
                    return Err(format!(
                        "the snapshot folds in entry {}, past the commit index {}",
                        s.index, self.hard_state.commit
                    ));
                }
                s.index
            }
        };
        for (i, e) in self.entries.iter().enumerate() {
            let expected = folded + i as u64 + 1;
            if e.index != expected {
                return Err(format!(
                    "log entry {i} after the snapshot has index {} (expected {expected})",
                    e.index,
                ));
            }
        }
        let last = folded + self.entries.len() as u64;
        if self.hard_state.commit > last {
            return Err(format!(
                "commit index {} is past the last log entry {last}",
                self.hard_state.commit,
            ));
        }
        Ok(())
    }
}
