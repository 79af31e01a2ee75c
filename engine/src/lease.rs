//! Where the write lease is granted and checked: the master (or the promoted
//! candidate) stays writable only while a majority of sidecars keeps answering its
//! lease rounds. What follows when it is not held is decided in `fence.rs`.
//!
//! Safety argument, in short: a sidecar that has appended a failover entry for a newer
//! epoch grants no more leases for the old one. Once that entry is committed, a
//! majority holds it, so every majority of grants for a round sent after the commit
//! includes a refusal; a lease runs `lease` from the moment its round was *sent* (on
//! the writer's own clock). A coordinator that waits `lease` (plus a margin for clock
//! rate and the time to set read_only) after it saw the commit therefore knows that an
//! unreachable old master has fenced itself.

use crate::cluster::NodeId;
use crate::engine::Engine;
use crate::message::PeerMessage;
use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

impl Engine {
    /// The writer asks every peer for the lease (once per probe interval, and at once
    /// when it is committed as the candidate).
    pub(crate) fn start_lease_round(&mut self) {
        let epoch = self.record.epoch;
        let seq = self
            .lease
            .start_round(self.me, epoch, self.now, self.spec.timing.lease());
        self.broadcast(PeerMessage::LeaseRequest { epoch, seq });
    }

    /// Grants the lease only to the writer of record, and only while no newer epoch has
    /// reached this node's log (committed or not).
    pub(crate) fn on_lease_request(&mut self, from: NodeId, epoch: u64, seq: u64) {
        if self.record.writer() == Some(from)
            && self.record.epoch == epoch
            && self.coord.highest_logged_epoch() <= epoch
        {
            self.send(from, PeerMessage::LeaseGrant { epoch, seq });
        }
    }

    /// A peer's grant; a majority of them makes the lease valid (and may unfence).
    pub(crate) fn on_lease_grant(&mut self, from: NodeId, epoch: u64, seq: u64) {
        let majority = self.spec.majority();
        if self
            .lease
            .grant(from, epoch, seq, majority, self.spec.timing.lease())
        {
            self.maybe_unfence();
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Lease {
    /// The epoch this lease is for; rounds of other epochs are forgotten.
    epoch: u64,
    seq: u64,
    rounds: BTreeMap<u64, Round>,
    /// The lease is valid until this instant.
    valid_until: Option<Time>,
    /// When the newest granted round was sent.
    granted_round_sent: Option<Time>,
    /// When this node became the writer for `epoch`: the grace before a first lease.
    writer_since: Option<Time>,
}

#[derive(Debug)]
struct Round {
    sent: Time,
    granted: BTreeSet<NodeId>,
}

impl Lease {
    /// No round yet; the first is numbered `base + 1` (see
    /// [`crate::DurableState::lease_round_base`]).
    pub fn numbered_from(base: u64) -> Self {
        Lease {
            seq: base,
            ..Lease::default()
        }
    }

    /// Starts a round for `epoch`; returns its sequence number. `me` grants itself.
    pub fn start_round(&mut self, me: NodeId, epoch: u64, now: Time, lease: Duration) -> u64 {
        self.reset_if_epoch_changed(epoch, now);
        self.seq += 1;
        self.rounds.retain(|_, r| now.since(r.sent) < lease);
        self.rounds.insert(
            self.seq,
            Round {
                sent: now,
                granted: BTreeSet::from([me]),
            },
        );
        self.seq
    }

    /// Records a grant; returns true when it completed a majority.
    pub fn grant(
        &mut self,
        from: NodeId,
        epoch: u64,
        seq: u64,
        majority: usize,
        lease: Duration,
    ) -> bool {
        if epoch != self.epoch {
            return false;
        }
        let Some(round) = self.rounds.get_mut(&seq) else {
            return false;
        };
        let had = round.granted.len() >= majority;
        round.granted.insert(from);
        if had || round.granted.len() < majority {
            return false;
        }
        let sent = round.sent;
        self.valid_until = self.valid_until.max(Some(sent + lease));
        self.granted_round_sent = self.granted_round_sent.max(Some(sent));
        true
    }

    fn reset_if_epoch_changed(&mut self, epoch: u64, now: Time) {
        if epoch != self.epoch || self.writer_since.is_none() {
            *self = Lease {
                epoch,
                seq: self.seq,
                writer_since: Some(now),
                ..Lease::default()
            };
        }
    }

    /// Forget everything: this node is not the writer.
    pub fn clear(&mut self) {
        *self = Lease {
            seq: self.seq,
            ..Lease::default()
        };
    }

    /// Holds a lease granted by a majority for `epoch`, valid at `now`.
    pub fn is_valid(&self, epoch: u64, now: Time) -> bool {
        self.epoch == epoch && self.valid_until.is_some_and(|t| now < t)
    }

    /// The writer must fence itself: no valid lease, and the grace after becoming the
    /// writer (time to collect a first majority) is over.
    pub fn expired(&self, epoch: u64, now: Time, lease: Duration) -> bool {
        if self.is_valid(epoch, now) {
            return false;
        }
        match self.writer_since {
            Some(since) if self.epoch == epoch => now.since(since) >= lease,
            _ => true,
        }
    }

    /// A round sent after `t` was granted: a proof of quorum newer than `t`.
    pub fn granted_after(&self, epoch: u64, t: Time) -> bool {
        self.epoch == epoch && self.granted_round_sent.is_some_and(|s| s > t)
    }
}
