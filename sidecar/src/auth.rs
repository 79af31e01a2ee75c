//! Authenticated peer frames: HMAC-SHA256 with the cluster key over each frame, bound to
//! the connection it travels on.
//!
//! Replay protection rests on a challenge, not on stored state: the receiving sidecar
//! opens every inbound connection by sending a fresh random [`Challenge`], and every
//! frame the other side sends on that connection carries it inside its tag. A frame
//! recorded on one connection therefore fails the tag check on any other — after a
//! receiver restart, from another address, at any later time — and within a
//! connection frames are numbered, so one cannot be played twice or out of order.
//! Nothing needs to survive a restart and no clock is trusted (an earlier design
//! numbered frames by the sender's boot time and kept the high-water marks in memory:
//! a restarted receiver took old frames again, and a boot value of 2^64−1 shut a
//! sender out).
//!
//! A sealed frame is `body | tag`, where `body` is the JSON of a [`Sealed`] and `tag`
//! its 32-byte HMAC over `FRAME | challenge | body`. A frame signed with another key,
//! altered, replayed or sent on another connection is refused with a reason — never a
//! panic — and the reason never contains the key.

use crate::frame::Envelope;
use hmac::{Hmac, Mac};
use multiaz_engine::{NodeId, PeerMessage};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;
const TAG: usize = 32;
pub const NONCE: usize = 16;
pub type Nonce = [u8; NONCE];

const FRAME: &[u8; 8] = b"MAZFRAM2";
const CHALLENGE: &[u8; 8] = b"MAZCHAL1";

/// The receiver's fresh random value for one connection (`CHALLENGE | nonce`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge(pub Nonce);

impl Challenge {
    pub fn random() -> Self {
        Challenge(rand::random())
    }

    pub fn to_frame(self) -> Vec<u8> {
        let mut f = CHALLENGE.to_vec();
        f.extend_from_slice(&self.0);
        f
    }

    pub fn from_frame(frame: &[u8]) -> Result<Self, AuthError> {
        let rest = frame
            .strip_prefix(CHALLENGE.as_slice())
            .ok_or(AuthError::NoChallenge)?;
        Ok(Challenge(
            rest.try_into().map_err(|_| AuthError::NoChallenge)?,
        ))
    }

    /// The largest frame a challenge is.
    pub const FRAME_LEN: usize = 8 + NONCE;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub from: NodeId,
    /// The node it is for: a frame cannot be turned to another receiver, or back.
    pub to: NodeId,
    /// Numbered from 1 within the connection.
    pub seq: u64,
    pub message: PeerMessage,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("frame too short to carry a tag")]
    Short,
    #[error("bad signature: not signed with this cluster's key for this connection, or altered")]
    BadTag,
    #[error("undecodable frame: {0}")]
    Decode(String),
    #[error("replayed or reordered frame from {from} (seq {seq} after {newest})")]
    Replay { from: NodeId, seq: u64, newest: u64 },
    #[error("frame from {from} on a connection that {first} opened")]
    SenderChanged { from: NodeId, first: NodeId },
    #[error("frame from {from} for {to}, not for this node")]
    Misaddressed { from: NodeId, to: NodeId },
    #[error("the other side did not open with a challenge")]
    NoChallenge,
}

/// The cluster key. Its `Debug` does not print it.
#[derive(Clone)]
pub struct ClusterKey(Vec<u8>);

impl ClusterKey {
    /// At least 16 bytes; read from a file or the environment, never from the logs.
    pub fn new(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() < 16 {
            return Err(format!(
                "the cluster key has {} bytes; at least 16 are needed",
                bytes.len()
            ));
        }
        Ok(ClusterKey(bytes))
    }

    /// The tag of a frame of kind `domain`. Every part but the body has a fixed length
    /// (8-byte kind, 16-byte challenge and nonce), so the concatenation is unambiguous.
    fn tag(&self, domain: &[u8; 8], challenge: &Challenge, nonce: &[u8], body: &[u8]) -> Vec<u8> {
        self.mac(domain, challenge, nonce, body)
            .finalize()
            .into_bytes()
            .to_vec()
    }

    fn verify(
        &self,
        domain: &[u8; 8],
        challenge: &Challenge,
        nonce: &[u8],
        body: &[u8],
        tag: &[u8],
    ) -> bool {
        self.mac(domain, challenge, nonce, body)
            .verify_slice(tag)
            .is_ok()
    }

    fn mac(
        &self,
        domain: &[u8; 8],
        challenge: &Challenge,
        nonce: &[u8],
        body: &[u8],
    ) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(domain);
        mac.update(&challenge.0);
        mac.update(nonce);
        mac.update(body);
        mac
    }
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
    }
}

/// Signs this sidecar's frames on one outgoing connection.
pub struct Sealer {
    key: ClusterKey,
    from: NodeId,
    to: NodeId,
    challenge: Challenge,
    seq: u64,
}

impl Sealer {
    /// For the connection to `to` whose receiver sent `challenge`.
    pub fn new(key: ClusterKey, from: NodeId, to: NodeId, challenge: Challenge) -> Self {
        Sealer {
            key,
            from,
            to,
            challenge,
            seq: 0,
        }
    }

    pub fn seal(&mut self, message: PeerMessage) -> Vec<u8> {
        self.seq += 1;
        let sealed = Sealed {
            from: self.from,
            to: self.to,
            seq: self.seq,
            message,
        };
        let mut body = serde_json::to_vec(&sealed).expect("peer messages always serialize");
        let tag = self.key.tag(FRAME, &self.challenge, &[], &body);
        body.extend_from_slice(&tag);
        body
    }
}

/// Checks the frames of one inbound connection.
pub struct Opener {
    key: ClusterKey,
    challenge: Challenge,
    /// This node: every frame must be addressed to it, and none may claim to be from it.
    me: NodeId,
    /// Who sent the first frame, and the newest number accepted.
    newest: Option<(NodeId, u64)>,
}

impl Opener {
    /// For the connection this sidecar (`me`) opened with `challenge`.
    pub fn new(key: ClusterKey, challenge: Challenge, me: NodeId) -> Self {
        Opener {
            key,
            challenge,
            me,
            newest: None,
        }
    }

    pub fn open(&mut self, frame: &[u8]) -> Result<Envelope, AuthError> {
        if frame.len() < TAG {
            return Err(AuthError::Short);
        }
        let (body, tag) = frame.split_at(frame.len() - TAG);
        if !self.key.verify(FRAME, &self.challenge, &[], body, tag) {
            return Err(AuthError::BadTag);
        }
        let s: Sealed =
            serde_json::from_slice(body).map_err(|e| AuthError::Decode(e.to_string()))?;
        if s.to != self.me || s.from == self.me {
            return Err(AuthError::Misaddressed {
                from: s.from,
                to: s.to,
            });
        }
        match self.newest {
            Some((first, _)) if first != s.from => {
                return Err(AuthError::SenderChanged {
                    from: s.from,
                    first,
                })
            }
            Some((_, newest)) if s.seq <= newest => {
                return Err(AuthError::Replay {
                    from: s.from,
                    seq: s.seq,
                    newest,
                })
            }
            _ => {}
        }
        self.newest = Some((s.from, s.seq));
        Ok(Envelope {
            from: s.from,
            message: s.message,
        })
    }
}

/// A liveness challenge for `multiaz check`: `PING | nonce | tag`, answered by
/// `PONG | tag`. It never reaches the engine. Both tags cover the receiver's challenge
/// (so a recorded ping is refused on a new connection) and the caller's nonce (so a
/// recorded pong cannot stand in for a fresh one).
const PING: &[u8; 8] = b"MAZPING2";
const PONG: &[u8; 8] = b"MAZPONG2";

impl ClusterKey {
    pub fn ping(&self, challenge: &Challenge, nonce: &Nonce) -> Vec<u8> {
        let mut f = PING.to_vec();
        f.extend_from_slice(nonce);
        f.extend_from_slice(&self.tag(PING, challenge, nonce, &[]));
        f
    }

    /// `Some(Ok(pong))` for a ping signed with this key on this connection, `Some(Err)`
    /// for a forged or replayed one, `None` when the frame is not a ping at all.
    pub fn answer(
        &self,
        challenge: &Challenge,
        frame: &[u8],
    ) -> Option<Result<Vec<u8>, AuthError>> {
        let rest = frame.strip_prefix(PING.as_slice())?;
        if rest.len() != NONCE + TAG {
            return Some(Err(AuthError::Short));
        }
        let (nonce, tag) = rest.split_at(NONCE);
        if !self.verify(PING, challenge, nonce, &[], tag) {
            return Some(Err(AuthError::BadTag));
        }
        let mut f = PONG.to_vec();
        f.extend_from_slice(&self.tag(PONG, challenge, nonce, &[]));
        Some(Ok(f))
    }

    pub fn pong_is_valid(&self, challenge: &Challenge, nonce: &Nonce, frame: &[u8]) -> bool {
        let Some(tag) = frame.strip_prefix(PONG.as_slice()) else {
            return false;
        };
        self.verify(PONG, challenge, nonce, &[], tag)
    }
}

/// A request to a peer's sidecar that wants an answer (binlog salvage): `CALL | nonce |
/// tag | body`, answered by `REPLY | tag | body`; both tags cover the receiver's
/// challenge, the caller's nonce and the body. A recorded call is refused on any other
/// connection, and a recorded answer cannot stand in for a fresh one.
const CALL: &[u8; 8] = b"MAZCALL2";
const REPLY: &[u8; 8] = b"MAZRPLY2";

impl ClusterKey {
    pub fn call(&self, challenge: &Challenge, nonce: &Nonce, body: &[u8]) -> Vec<u8> {
        let mut f = CALL.to_vec();
        f.extend_from_slice(nonce);
        f.extend_from_slice(&self.tag(CALL, challenge, nonce, body));
        f.extend_from_slice(body);
        f
    }

    /// `Some(Ok((nonce, body)))` for a call signed with this key on this connection,
    /// `Some(Err)` for a forged, cut or replayed one, `None` when the frame is not a
    /// call.
    #[allow(clippy::type_complexity)]
    pub fn open_call(
        &self,
        challenge: &Challenge,
        frame: &[u8],
    ) -> Option<Result<(Nonce, Vec<u8>), AuthError>> {
        let rest = frame.strip_prefix(CALL.as_slice())?;
        if rest.len() < NONCE + TAG {
            return Some(Err(AuthError::Short));
        }
        let (nonce, rest) = rest.split_at(NONCE);
        let (tag, body) = rest.split_at(TAG);
        if !self.verify(CALL, challenge, nonce, body, tag) {
            return Some(Err(AuthError::BadTag));
        }
        let mut n = [0u8; NONCE];
        n.copy_from_slice(nonce);
        Some(Ok((n, body.to_vec())))
    }

    pub fn reply(&self, challenge: &Challenge, nonce: &Nonce, body: &[u8]) -> Vec<u8> {
        let mut f = REPLY.to_vec();
        f.extend_from_slice(&self.tag(REPLY, challenge, nonce, body));
        f.extend_from_slice(body);
        f
    }

    /// The body of an answer to the call made with `nonce` on the connection opened
    /// with `challenge`, if it is one.
    pub fn open_reply(
        &self,
        challenge: &Challenge,
        nonce: &Nonce,
        frame: &[u8],
    ) -> Result<Vec<u8>, AuthError> {
        let rest = frame
            .strip_prefix(REPLY.as_slice())
            .ok_or(AuthError::Short)?;
        if rest.len() < TAG {
            return Err(AuthError::Short);
        }
        let (tag, body) = rest.split_at(TAG);
        if !self.verify(REPLY, challenge, nonce, body, tag) {
            return Err(AuthError::BadTag);
        }
        Ok(body.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> ClusterKey {
        ClusterKey::new(vec![b; 32]).unwrap()
    }

    fn msg() -> PeerMessage {
        PeerMessage::LeaseRequest { epoch: 2, seq: 7 }
    }

    const C1: Challenge = Challenge([1; NONCE]);
    /// The receiver in these tests.
    const ME: NodeId = NodeId(1);
    const C2: Challenge = Challenge([2; NONCE]);

    #[test]
    fn a_ping_is_answered_only_with_the_right_key_on_its_own_connection() {
        let nonce = [7u8; NONCE];
        let ping = key(1).ping(&C1, &nonce);
        let pong = key(1).answer(&C1, &ping).unwrap().unwrap();
        assert!(key(1).pong_is_valid(&C1, &nonce, &pong));
        assert!(
            !key(1).pong_is_valid(&C1, &[8u8; NONCE], &pong),
            "bound to the nonce"
        );
        assert!(
            !key(1).pong_is_valid(&C2, &nonce, &pong),
            "bound to the connection"
        );
        assert!(!key(2).pong_is_valid(&C1, &nonce, &pong));
        assert_eq!(key(2).answer(&C1, &ping).unwrap(), Err(AuthError::BadTag));
        assert_eq!(
            key(1).answer(&C2, &ping).unwrap(),
            Err(AuthError::BadTag),
            "a recorded ping is refused on another connection"
        );
        assert_eq!(
            key(1).answer(&C1, b"MAZPING2short").unwrap(),
            Err(AuthError::Short)
        );
        assert!(key(1).answer(&C1, b"not a ping").is_none());
    }

    #[test]
    fn a_sealed_frame_opens_once_in_order() {
        let mut s = Sealer::new(key(1), NodeId(2), ME, C1);
        let mut o = Opener::new(key(1), C1, ME);
        let first = s.seal(msg());
        let second = s.seal(msg());
        assert_eq!(
            o.open(&first).unwrap(),
            Envelope {
                from: NodeId(2),
                message: msg()
            }
        );
        assert!(
            matches!(o.open(&first), Err(AuthError::Replay { .. })),
            "a replay is refused"
        );
        assert!(o.open(&second).is_ok(), "the next one is fine");
        assert!(
            matches!(o.open(&first), Err(AuthError::Replay { .. })),
            "an older one is refused"
        );
    }

    #[test]
    fn a_frame_recorded_on_one_connection_is_refused_on_any_other() {
        let mut s = Sealer::new(key(1), NodeId(2), ME, C1);
        let recorded = s.seal(msg());
        // The receiver restarted, or the attacker opened a connection of their own:
        // either way the challenge is new.
        let mut fresh = Opener::new(key(1), C2, ME);
        assert_eq!(fresh.open(&recorded), Err(AuthError::BadTag));
        // The same bytes did open on the connection they were made for.
        assert!(Opener::new(key(1), C1, ME).open(&recorded).is_ok());
    }

    #[test]
    fn a_connection_carries_one_sender() {
        let mut o = Opener::new(key(1), C1, ME);
        let mut a = Sealer::new(key(1), NodeId(2), ME, C1);
        let mut b = Sealer::new(key(1), NodeId(3), ME, C1);
        assert!(o.open(&a.seal(msg())).is_ok());
        b.seal(msg());
        assert_eq!(
            o.open(&b.seal(msg())),
            Err(AuthError::SenderChanged {
                from: NodeId(3),
                first: NodeId(2)
            })
        );
    }

    #[test]
    fn a_frame_for_another_node_or_back_to_its_sender_is_refused() {
        // Node 2's frame for node 3, delivered to node 1 on node 3's challenge.
        let mut for_3 = Sealer::new(key(1), NodeId(2), NodeId(3), C1);
        assert_eq!(
            Opener::new(key(1), C1, ME).open(&for_3.seal(msg())),
            Err(AuthError::Misaddressed {
                from: NodeId(2),
                to: NodeId(3)
            })
        );
        // Node 1's own frame, reflected back to it.
        let mut own = Sealer::new(key(1), ME, ME, C1);
        assert!(matches!(
            Opener::new(key(1), C1, ME).open(&own.seal(msg())),
            Err(AuthError::Misaddressed { .. })
        ));
    }

    #[test]
    fn a_frame_signed_with_the_wrong_key_is_rejected() {
        let mut s = Sealer::new(key(9), NodeId(2), ME, C1);
        let mut o = Opener::new(key(1), C1, ME);
        assert_eq!(o.open(&s.seal(msg())), Err(AuthError::BadTag));
    }

    #[test]
    fn an_altered_or_short_frame_is_rejected() {
        let mut s = Sealer::new(key(1), NodeId(2), ME, C1);
        let mut o = Opener::new(key(1), C1, ME);
        let mut f = s.seal(msg());
        f[3] ^= 1;
        assert_eq!(o.open(&f), Err(AuthError::BadTag));
        assert_eq!(o.open(b"tiny"), Err(AuthError::Short));
    }

    #[test]
    fn a_challenge_round_trips_and_anything_else_is_refused() {
        assert_eq!(Challenge::from_frame(&C1.to_frame()), Ok(C1));
        assert_eq!(C1.to_frame().len(), Challenge::FRAME_LEN);
        assert_eq!(
            Challenge::from_frame(b"MAZCHAL1short"),
            Err(AuthError::NoChallenge)
        );
        assert_eq!(
            Challenge::from_frame(b"something else entirely"),
            Err(AuthError::NoChallenge)
        );
        assert_ne!(Challenge::random(), Challenge::random());
    }

    #[test]
    fn a_call_and_its_reply_open_only_with_the_key_the_nonce_and_the_connection() {
        let nonce = [3u8; NONCE];
        let call = key(1).call(&C1, &nonce, b"body");
        assert_eq!(
            key(1).open_call(&C1, &call).unwrap().unwrap(),
            (nonce, b"body".to_vec())
        );
        assert_eq!(
            key(2).open_call(&C1, &call).unwrap(),
            Err(AuthError::BadTag)
        );
        assert_eq!(
            key(1).open_call(&C2, &call).unwrap(),
            Err(AuthError::BadTag),
            "a recorded call is refused on another connection"
        );
        let mut altered = call.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(
            key(1).open_call(&C1, &altered).unwrap(),
            Err(AuthError::BadTag)
        );
        assert!(key(1).open_call(&C1, b"not a call").is_none());
        let reply = key(1).reply(&C1, &nonce, b"answer");
        assert_eq!(
            key(1).open_reply(&C1, &nonce, &reply).unwrap(),
            b"answer".to_vec()
        );
        assert_eq!(
            key(1).open_reply(&C1, &[4u8; NONCE], &reply),
            Err(AuthError::BadTag)
        );
        assert_eq!(
            key(1).open_reply(&C2, &nonce, &reply),
            Err(AuthError::BadTag)
        );
        assert_eq!(
            key(2).open_reply(&C1, &nonce, &reply),
            Err(AuthError::BadTag)
        );
    }

    #[test]
    fn the_key_never_prints() {
        let k = ClusterKey::new(b"super-secret-cluster-key".to_vec()).unwrap();
        assert!(!format!("{k:?}").contains("secret"));
        assert!(ClusterKey::new(b"short".to_vec()).is_err());
    }
}
