//! Coordination through raft-rs: one coordinator (the raft leader) at a time, and the
//! replicated log that carries the cluster record.
//!
//! raft-rs is sans-IO already; this wraps its `RawNode`/`Ready` cycle into engine
//! commands: messages raft may send at once become `Send`, the rest ride inside
//! `Persist` so that they leave only after the driver has made the state durable.

use crate::cluster::{ClusterSpec, NodeId};
use crate::command::Command;
use crate::message::PeerMessage;
use crate::record::LogEntry;
use crate::storage::{DurableState, HardState, PersistBatch, StoredEntry};
use crate::time::Time;
use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, EntryType, Message};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole};
use std::time::Duration;

pub(crate) struct Coordination {
    node: RawNode<MemStorage>,
    me: NodeId,
    tick: Duration,
    next_tick: Time,
}

impl Coordination {
    pub fn new(
        spec: &ClusterSpec,
        me: NodeId,
        restored: Option<&DurableState>,
        now: Time,
    ) -> Result<Self, String> {
        let election = spec.election_ticks()[&me];
        let config = Config {
            id: me.0,
            election_tick: election,
            heartbeat_tick: 2,
            // Fixed per node: raft-rs draws from [min, max), so max = min + 1 leaves no
            // randomness, and distinct values per node keep elections from tying.
            min_election_tick: election,
            max_election_tick: election + 1,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            applied: 0,
            ..Default::default()
        };
        config.validate().map_err(|e| format!("raft config: {e}"))?;
        let voters: Vec<u64> = spec.ids().map(|id| id.0).collect();
        let storage = MemStorage::new_with_conf_state(ConfState::from((voters, vec![])));
        if let Some(state) = restored {
            state
                .check()
                .map_err(|e| format!("stored raft state: {e}"))?;
            let mut entries = Vec::with_capacity(state.entries.len());
            for e in &state.entries {
                let entry = Entry::parse_from_bytes(&e.bytes)
                    .map_err(|err| format!("stored raft entry {}: {err}", e.index))?;
                if entry.index != e.index || entry.term != e.term {
                    return Err(format!(
                        "stored raft entry {} does not match its header",
                        e.index
                    ));
                }
                entries.push(entry);
            }
            let mut core = storage.wl();
            core.append(&entries)
                .map_err(|e| format!("stored raft log: {e}"))?;
            let hs = core.mut_hard_state();
            hs.term = state.hard_state.term;
            hs.vote = state.hard_state.vote;
            hs.commit = state.hard_state.commit;
        }
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let node = RawNode::new(&config, storage, &logger).map_err(|e| format!("raft: {e}"))?;
        let tick = spec.timing.raft_tick();
        Ok(Coordination {
            node,
            me,
            tick,
            next_tick: now + tick,
        })
    }

    /// Feeds raft the ticks that elapsed up to `now`.
    pub fn advance_time(&mut self, now: Time) {
        while self.next_tick <= now {
            self.node.tick();
            self.next_tick = self.next_tick + self.tick;
        }
    }

    pub fn next_deadline(&self) -> Time {
        self.next_tick
    }

    /// A raft message from `from`. Refuses one whose header names another sender.
    pub fn step(&mut self, from: NodeId, bytes: &[u8]) -> Result<(), String> {
        let msg = Message::parse_from_bytes(bytes).map_err(|e| format!("bad raft message: {e}"))?;
        if msg.from != from.0 || msg.to != self.me.0 {
            return Err(format!(
                "raft message from {} to {} arrived from {from}",
                msg.from, msg.to
            ));
        }
        self.node
            .step(msg)
            .map_err(|e| format!("raft refused message: {e}"))
    }

    pub fn propose(&mut self, entry: &LogEntry) -> bool {
        self.node.propose(vec![], entry.encode()).is_ok()
    }

    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    pub fn leader(&self) -> Option<NodeId> {
        match self.node.raft.leader_id {
            0 => None,
            id => Some(NodeId(id)),
        }
    }

    /// Leader, and every entry of earlier terms is applied: the record is current, so
    /// decisions taken from it are safe to act on.
    pub fn is_coordinator(&self) -> bool {
        self.node.raft.state == StateRole::Leader && self.node.raft.apply_to_current_term()
    }

    /// The highest failover epoch anywhere in this node's log, committed or not. A node
    /// that has appended a failover entry refuses the old master's lease from then on.
    pub fn highest_logged_epoch(&self) -> u64 {
        let log = &self.node.raft.raft_log;
        let (first, last) = (log.applied + 1, log.last_index());
        if first > last {
            return 0;
        }
        let entries = log
            .entries(first, u64::MAX, raft::GetEntriesContext::empty(false))
            .unwrap_or_default();
        entries
            .iter()
            .filter_map(|e| match LogEntry::decode(&e.data) {
                Ok(LogEntry::FailoverBegin { epoch, .. }) => Some(epoch),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// Runs raft's ready cycle: appends commands to `out`, returns the data of newly
    /// committed entries in log order.
    pub fn drain(&mut self, out: &mut Vec<Command>) -> Vec<Vec<u8>> {
        let mut committed = Vec::new();
        if !self.node.has_ready() {
            return committed;
        }
        let mut rd = self.node.ready();
        for m in rd.take_messages() {
            out.push(self.send(m));
        }
        take_data(rd.take_committed_entries(), &mut committed);
        let entries: Vec<StoredEntry> = rd
            .entries()
            .iter()
            .map(|e| StoredEntry {
                index: e.index,
                term: e.term,
                bytes: encode(e),
            })
            .collect();
        let mut hs_changed = false;
        {
            let store = self.node.mut_store();
            let mut core = store.wl();
            if !rd.entries().is_empty() {
                // Invariant: raft-rs hands out entries that continue the log it keeps
                // in this storage (that is what `Ready` means); `append` refuses only a
                // gap or an entry before the snapshot.
                core.append(rd.entries())
                    .expect("raft hands out appendable entries");
            }
            if let Some(hs) = rd.hs() {
                core.set_hardstate(hs.clone());
                hs_changed = true;
            }
        }
        let mut then_send: Vec<Message> = rd.take_persisted_messages();
        let mut light = self.node.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().wl().mut_hard_state().commit = commit;
            hs_changed = true;
        }
        then_send.extend(light.take_messages());
        take_data(light.take_committed_entries(), &mut committed);
        self.node.advance_apply();
        if hs_changed || !entries.is_empty() || !then_send.is_empty() {
            let hard_state = hs_changed.then(|| {
                let hs = self.node.store().rl().hard_state().clone();
                HardState {
                    term: hs.term,
                    vote: hs.vote,
                    commit: hs.commit,
                }
            });
            let then_send = then_send
                .into_iter()
                .map(|m| (NodeId(m.to), PeerMessage::Raft(encode(&m))))
                .collect();
            out.push(Command::Persist(PersistBatch {
                hard_state,
                entries,
                then_send,
            }));
        }
        committed
    }

    fn send(&self, m: Message) -> Command {
        Command::Send {
            to: NodeId(m.to),
            message: PeerMessage::Raft(encode(&m)),
        }
    }
}

/// Invariant: raft's messages and entries are built by raft-rs with every required
/// field set, and are far below protobuf's 2 GiB limit, so encoding cannot fail.
fn encode(m: &impl protobuf::Message) -> Vec<u8> {
    m.write_to_bytes()
        .expect("raft messages and entries always encode")
}

fn take_data(entries: Vec<Entry>, into: &mut Vec<Vec<u8>>) {
    for e in entries {
        // Empty normal entries are the no-ops a new leader commits; there are no
        // configuration changes (membership is fixed by the cluster description).
        if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
            into.push(e.data.to_vec());
        }
    }
}
