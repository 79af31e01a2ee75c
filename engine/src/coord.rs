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
use crate::storage::{
    DurableState, HardState, PersistBatch, SnapshotWrite, StoredEntry, StoredSnapshot,
};
use crate::time::Time;
use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, EntryType, Message, MessageType, Snapshot};
use raft::storage::{MemStorage, RaftState, Storage};
use raft::{Config, GetEntriesContext, RawNode, SnapshotStatus, StateRole};
use std::time::Duration;

/// How many applied entries the log keeps before they are folded into a snapshot of
/// the record. A failover writes three or four; a new coordinator one.
pub const LOG_LIMIT: u64 = 256;

/// What raft committed, in order: a leader's snapshot (the record, as JSON) that
/// replaces everything before it, then entries' data.
pub(crate) enum Committed {
    Snapshot { index: u64, record: Vec<u8> },
    Entry(Vec<u8>),
}

/// raft-rs's `MemStorage` holds the log; its own snapshot carries no data, so the
/// snapshot raft sends a follower that is missing compacted entries is kept here: the
/// record as of the last compaction (or the last snapshot installed).
#[derive(Clone, Default)]
pub(crate) struct Log {
    mem: MemStorage,
    snapshot: Option<Snapshot>,
}

impl Storage for Log {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }
    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }
    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }
    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }
    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        match &self.snapshot {
            Some(s) if s.get_metadata().index >= request_index => Ok(s.clone()),
            _ => Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            )),
        }
    }
}

fn raft_snapshot(s: &StoredSnapshot) -> Snapshot {
    let mut snap = Snapshot::default();
    let meta = snap.mut_metadata();
    meta.index = s.index;
    meta.term = s.term;
    meta.set_conf_state(ConfState::from((s.voters.clone(), vec![])));
    snap.set_data(s.record.clone().into());
    snap
}

fn stored_snapshot(s: &Snapshot) -> StoredSnapshot {
    let meta = s.get_metadata();
    StoredSnapshot {
        index: meta.index,
        term: meta.term,
        voters: meta.get_conf_state().voters.clone(),
        record: s.get_data().to_vec(),
    }
}

/// A failover begin entry and its place in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryAt {
    pub epoch: u64,
    pub index: u64,
    pub term: u64,
}

pub(crate) struct Coordination {
    node: RawNode<Log>,
    me: NodeId,
    tick: Duration,
    next_tick: Time,
    /// Applied entries kept before the log is compacted (`None`: never, once the record
    /// no longer follows the log).
    log_limit: Option<u64>,
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
        let mut storage = Log {
            mem: MemStorage::new_with_conf_state(ConfState::from((voters, vec![]))),
            snapshot: None,
        };
        if let Some(state) = restored {
            state
                .check()
                .map_err(|e| format!("stored raft state: {e}"))?;
            if let Some(s) = &state.snapshot {
                let snap = raft_snapshot(s);
                storage
                    .mem
                    .wl()
                    .apply_snapshot(snap.clone())
                    .map_err(|e| format!("stored raft snapshot: {e}"))?;
                storage.snapshot = Some(snap);
            }
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
            let mut core = storage.mem.wl();
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
            log_limit: Some(LOG_LIMIT),
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

    /// The newest failover begin entry in this node's log (whatever raft-rs holds in
    /// storage has been handed to the driver to persist, so a message that follows it
    /// leaves only once it is durable).
    pub fn latest_failover_begin(&self) -> Option<EntryAt> {
        let store = self.node.store();
        let (first, last) = (store.first_index().ok()?, store.last_index().ok()?);
        (first..=last).rev().find_map(|i| self.failover_begin_at(i))
    }

    /// Where the committed begin entry of failover `epoch` stands in the log, if it is
    /// still there (not folded into a snapshot).
    pub fn committed_failover_begin(&self, epoch: u64) -> Option<EntryAt> {
        let store = self.node.store();
        let first = store.first_index().ok()?;
        let commit = self.node.raft.raft_log.committed;
        (first..=commit)
            .filter_map(|i| self.failover_begin_at(i))
            .find(|b| b.epoch == epoch)
    }

    fn failover_begin_at(&self, index: u64) -> Option<EntryAt> {
        let store = self.node.store();
        let entry = store
            .entries(index, index + 1, None, GetEntriesContext::empty(false))
            .ok()?
            .pop()?;
        match LogEntry::decode(&entry.data) {
            Ok(LogEntry::FailoverBegin { epoch, .. }) => Some(EntryAt {
                epoch,
                index,
                term: entry.term,
            }),
            _ => None,
        }
    }

    /// Sets how many applied entries the log keeps before it is compacted.
    pub fn set_log_limit(&mut self, entries: u64) {
        self.log_limit = Some(entries.max(1));
    }

    /// No more compaction: the record no longer follows the log, and must not be
    /// folded into a snapshot and handed on.
    pub fn stop_compacting(&mut self) {
        self.log_limit = None;
    }

    /// Folds the applied log into a snapshot of the record after the last applied
    /// entry (`record` encodes it, asked only when the limit of applied entries has
    /// piled up): the entries not yet applied stay. A `Persist` for the driver, or
    /// `None`.
    pub fn compact(&mut self, record: impl FnOnce() -> Option<Vec<u8>>) -> Option<(u64, Command)> {
        let applied = self.node.raft.raft_log.applied;
        let store = self.node.store();
        let folded = store.first_index().ok()?.saturating_sub(1);
        if applied.saturating_sub(folded) < self.log_limit? {
            return None;
        }
        let record = record()?;
        let term = store.term(applied).ok()?;
        let voters = store.initial_state().ok()?.conf_state.voters;
        let last = store.last_index().ok()?;
        let keep = store
            .entries(applied + 1, last + 1, None, GetEntriesContext::empty(false))
            .ok()?;
        let stored = StoredSnapshot {
            index: applied,
            term,
            voters,
            record,
        };
        let snap = raft_snapshot(&stored);
        let log = self.node.mut_store();
        {
            // MemStorage compacts only by taking a snapshot in place of its whole log
            // (which also sets its commit index to the snapshot's): the entries after
            // it and the commit index are put back.
            let mut core = log.mem.wl();
            let commit = core.hard_state().commit;
            core.apply_snapshot(snap.clone()).ok()?;
            core.append(&keep).ok()?;
            core.mut_hard_state().commit = commit;
        }
        log.snapshot = Some(snap);
        Some((
            applied,
            Command::Persist(PersistBatch {
                hard_state: None,
                snapshot: Some(SnapshotWrite::Compacted(stored)),
                entries: Vec::new(),
                then_send: Vec::new(),
            }),
        ))
    }

    /// Runs raft's ready cycle: appends commands to `out`, returns what was newly
    /// committed, in log order.
    pub fn drain(&mut self, out: &mut Vec<Command>) -> Vec<Committed> {
        let mut committed = Vec::new();
        if !self.node.has_ready() {
            return committed;
        }
        let mut rd = self.node.ready();
        let mut snapshots_sent = Vec::new();
        for m in rd.take_messages() {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                snapshots_sent.push(m.to);
            }
            out.push(self.send(m));
        }
        // A leader's snapshot: this node was missing entries the leader has compacted.
        let installed = (!rd.snapshot().is_empty()).then(|| rd.snapshot().clone());
        if let Some(snap) = &installed {
            let log = self.node.mut_store();
            // raft-rs hands out a snapshot only past this node's commit index, which
            // is at or past its first index: MemStorage accepts it.
            if log.mem.wl().apply_snapshot(snap.clone()).is_ok() {
                log.snapshot = Some(snap.clone());
            }
            committed.push(Committed::Snapshot {
                index: snap.get_metadata().index,
                record: snap.get_data().to_vec(),
            });
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
        // An installed snapshot moved the commit index: the hard state is written too.
        let mut hs_changed = installed.is_some();
        {
            let store = self.node.mut_store();
            let mut core = store.mem.wl();
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
            self.node.mut_store().mem.wl().mut_hard_state().commit = commit;
            hs_changed = true;
        }
        then_send.extend(light.take_messages());
        take_data(light.take_committed_entries(), &mut committed);
        self.node.advance_apply();
        // raft-rs holds a follower it sent a snapshot to until told how the send went;
        // the transport says nothing (it may drop it). Reported sent: the follower is
        // probed from the snapshot on, and one that never got it refuses the probe and
        // is sent the snapshot again.
        for to in snapshots_sent {
            self.node.report_snapshot(to, SnapshotStatus::Finish);
        }
        if hs_changed || installed.is_some() || !entries.is_empty() || !then_send.is_empty() {
            let hard_state = hs_changed.then(|| {
                let hs = self.node.store().mem.rl().hard_state().clone();
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
                snapshot: installed
                    .as_ref()
                    .map(|s| SnapshotWrite::Installed(stored_snapshot(s))),
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

fn take_data(entries: Vec<Entry>, into: &mut Vec<Committed>) {
    for e in entries {
        // Empty normal entries are the no-ops a new leader commits; there are no
        // configuration changes (membership is fixed by the cluster description).
        if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
            into.push(Committed::Entry(e.data.to_vec()));
        }
    }
}
