//! Where the write lease is granted and checked: the master (or the promoted
//! candidate) stays writable only while a majority of sidecars keeps answering its
//! lease rounds. What follows when it is not held is decided in `fence.rs`.
//!
//! Safety argument, in short: a sidecar that has appended a failover entry for a newer
//! epoch grants no more leases for the old one. A lease runs from the moment its round
//! was *sent* (on the writer's own clock), and the writer makes its mysqld read_only
//! `fence_lead` before it runs out. A writer is never writable without a granted round
//! (no grace after a start or a promotion: it asks again every raft tick until one is
//! granted). So the old writer's lease ends no later than `lease` after the last grant
//! any member of a majority gave it: every majority of grants for a round includes a
//! member of every other majority, and a round is sent before any grant of it. Each
//! sidecar reports, once it has durably logged the newer epoch's begin entry, how long
//! ago it last granted a lease (`Grants`); the coordinator waits for the last grant of
//! the quickest majority plus `lease` and a margin for clock rates
//! (`fence::lease_over_by_grants`), or, without such reports, `lease` plus one probe
//! interval after it saw the begin entry committed (`fence::old_writer_fenced_by`).

use crate::cluster::NodeId;
use crate::engine::Engine;
use crate::message::{GrantsEnded, PeerMessage};
use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

impl Engine {
    /// The writer asks every peer for the lease (once per probe interval, at once when
    /// it is committed as the candidate, and every raft tick while it holds none). A
    /// writer whose log holds a newer epoch asks no more: its own share of a majority
    /// would be a grant given after it reported its grants ended.
    pub(crate) fn start_lease_round(&mut self) {
        let epoch = self.record.epoch;
        if self.coord.highest_logged_epoch() > epoch {
            return;
        }
        self.grants.given(epoch, self.now);
        let seq = self
            .lease
            .start_round(self.me, epoch, self.now, self.spec.timing.lease());
        self.broadcast(PeerMessage::LeaseRequest { epoch, seq });
    }

    /// A writer of record without a valid lease asks again once a raft tick has passed
    /// since its last round: it may not be writable until one is granted.
    pub(crate) fn retry_lease_round(&mut self) {
        if let Some(at) = self.lease_retry_at() {
            if self.now >= at {
                self.start_lease_round();
            }
        }
    }

    /// When [`Engine::retry_lease_round`] asks again, if it will: the writer holds no
    /// lease, or the master of record fenced itself and no round sent since was granted
    /// (one is what makes it writable again, see `fence::maybe_unfence`).
    pub(crate) fn lease_retry_at(&self) -> Option<Time> {
        let epoch = self.record.epoch;
        if !self.is_database()
            || self.record.writer() != Some(self.me)
            || self.coord.highest_logged_epoch() > epoch
        {
            return None;
        }
        // No round of this epoch yet (a switchover was cancelled, say): one now.
        let Some(last) = self.lease.last_round_sent(epoch) else {
            return Some(self.now);
        };
        let unfence = self.local.read_only_seen.is_some_and(|seen| {
            self.record.master == Some(self.me)
                && self.record.failover.is_none()
                && !self.lease.granted_after(epoch, seen)
        });
        if self.lease.is_valid(epoch, self.now) && !unfence {
            return None;
        }
        Some(last + self.spec.timing.raft_tick())
    }

    /// Grants the lease only to the writer of record, and only while no newer epoch has
    /// reached this node's log (committed or not).
    pub(crate) fn on_lease_request(&mut self, from: NodeId, epoch: u64, seq: u64) {
        if self.record.writer() == Some(from)
            && self.record.epoch == epoch
            && self.coord.highest_logged_epoch() <= epoch
        {
            self.grants.given(epoch, self.now);
            self.send(from, PeerMessage::LeaseGrant { epoch, seq });
        }
    }

    /// A peer's grant; a majority of them makes the lease valid (and may unfence).
    pub(crate) fn on_lease_grant(&mut self, from: NodeId, epoch: u64, seq: u64) {
        let majority = self.spec.majority();
        if self
            .lease
            .grant(from, epoch, seq, majority, self.spec.timing.writable_span())
        {
            self.maybe_unfence();
            // The coordinator promotes a candidate only once it holds its lease: say so
            // now rather than after the next probe.
            if self.probing.reported_lease != self.held_lease() {
                self.send_report();
            }
        }
    }

    /// The epoch whose write lease this node holds now, if any.
    pub(crate) fn held_lease(&self) -> Option<u64> {
        let epoch = self.record.epoch;
        (self.record.writer() == Some(self.me) && self.lease.is_valid(epoch, self.now))
            .then_some(epoch)
    }

    /// What this node's reports say about the grants it gave: once its log holds a
    /// failover's begin entry, how long ago it last granted a lease for an older epoch.
    /// Only while that failover is under way (the coordinator's lease wait).
    pub(crate) fn grants_ended(&self) -> Option<GrantsEnded> {
        let known = self.known_epoch();
        if self.record.failover.is_none() && known <= self.record.epoch {
            return None;
        }
        let begin = self.coord.latest_failover_begin()?;
        let last = self.grants.last_before(begin.epoch, self.started);
        Some(GrantsEnded {
            epoch: begin.epoch,
            index: begin.index,
            term: begin.term,
            last_grant_ago_ms: self.now.since(last).as_millis() as u64,
        })
    }
}

/// When this node last granted a lease (to a peer, or to itself by starting a round as
/// the writer), per epoch: what it reports once it grants no more (see
/// [`Engine::grants_ended`]). Kept in memory only: after a restart, the start stands for
/// every grant given before it.
#[derive(Debug, Default)]
pub(crate) struct Grants {
    last: BTreeMap<u64, Time>,
    /// The latest grant of the epochs no longer kept.
    forgotten: Option<Time>,
}

impl Grants {
    /// Epochs kept one by one: a failover concerns the epoch before it, a retried one
    /// the few before that.
    const KEPT: usize = 4;

    pub fn given(&mut self, epoch: u64, now: Time) {
        self.last.insert(epoch, now);
        while self.last.len() > Self::KEPT {
            if let Some((_, t)) = self.last.pop_first() {
                self.forgotten = self.forgotten.max(Some(t));
            }
        }
    }

    /// No grant for an epoch older than `epoch` was given after this (`started`: the
    /// grants of an earlier run of this sidecar all came before it).
    pub fn last_before(&self, epoch: u64, started: Time) -> Time {
        self.last
            .range(..epoch)
            .map(|(_, t)| *t)
            .chain(self.forgotten)
            .fold(started, Time::max)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Lease {
    /// The epoch this lease is for; rounds of other epochs are forgotten.
    epoch: u64,
    seq: u64,
    rounds: BTreeMap<u64, Round>,
    /// The lease is valid until this instant (the writer's own end of it: `fence_lead`
    /// before the lease its peers granted runs out).
    valid_until: Option<Time>,
    /// When the newest granted round was sent.
    granted_round_sent: Option<Time>,
    /// When the newest round of `epoch` was sent.
    last_sent: Option<Time>,
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
    /// Rounds older than `lease` can no longer make a lease and are dropped.
    pub fn start_round(&mut self, me: NodeId, epoch: u64, now: Time, lease: Duration) -> u64 {
        if epoch != self.epoch || self.last_sent.is_none() {
            *self = Lease {
                epoch,
                seq: self.seq,
                ..Lease::default()
            };
        }
        self.seq += 1;
        self.last_sent = Some(now);
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

    /// Records a grant; returns true when it completed a majority. The lease then runs
    /// `span` from the moment the round was sent.
    pub fn grant(
        &mut self,
        from: NodeId,
        epoch: u64,
        seq: u64,
        majority: usize,
        span: Duration,
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
        self.valid_until = self.valid_until.max(Some(sent + span));
        self.granted_round_sent = self.granted_round_sent.max(Some(sent));
        true
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
        self.left(epoch, now).is_some()
    }

    /// When the lease of `epoch` runs out (on this node's clock), if one was granted.
    pub fn valid_until(&self, epoch: u64) -> Option<Time> {
        self.valid_until.filter(|_| self.epoch == epoch)
    }

    /// How much of the lease of `epoch` is left at `now`, if it is valid.
    pub fn left(&self, epoch: u64, now: Time) -> Option<Duration> {
        self.valid_until(epoch)
            .filter(|t| now < *t)
            .map(|t| t.since(now))
    }

    /// When the newest round of `epoch` was sent, if one was.
    pub fn last_round_sent(&self, epoch: u64) -> Option<Time> {
        self.last_sent.filter(|_| self.epoch == epoch)
    }

    /// A round sent after `t` was granted: a proof of quorum newer than `t`.
    pub fn granted_after(&self, epoch: u64, t: Time) -> bool {
        self.epoch == epoch && self.granted_round_sent.is_some_and(|s| s > t)
    }
}
