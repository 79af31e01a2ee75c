//! Peer frames sealed with the cluster key: encrypted and authenticated
//! (ChaCha20-Poly1305), and bound to the connection they travel on.
//!
//! Replay protection rests on a challenge, not on stored state: the receiving sidecar
//! opens every inbound connection by sending a fresh random [`Challenge`]; the sender
//! answers with a random nonce of its own, and every frame on the connection is sealed
//! under a key derived from the cluster key, the challenge and that nonce
//! (HMAC-SHA256 as the key derivation). A frame recorded on one connection therefore
//! fails to open on any other — after a receiver restart, from another address, at any
//! later time — and within a connection frames are numbered (the number is the AEAD
//! nonce), so one cannot be played twice or out of order. Nothing needs to survive a
//! restart and no clock is trusted (an earlier design numbered frames by the sender's
//! boot time and kept the high-water marks in memory: a restarted receiver took old
//! frames again, and a boot value of 2^64−1 shut a sender out). The sender's own nonce
//! keeps a key from ever being used twice even by a sender that is handed a recorded
//! challenge.
//!
//! Why encrypt at all, when no password crosses the peer port: the frames carry the
//! cluster's state — GTID sets, the failover journal, which server is fenced — and
//! salvage calls name the transactions a failover is about to apply. Why not TLS: the
//! members share one key and no certificates; sealing each frame with it costs one
//! small dependency (ring, already used by rustls) and keeps the challenge binding the
//! replay protection rests on.
//!
//! A stream frame is `FRAME | sender nonce (16) | seq (8) | ciphertext + tag (16)`,
//! the plaintext the JSON of a [`Sealed`]. A frame sealed with another key, altered,
//! replayed or sent on another connection is refused with a reason — never a panic —
//! and the reason never contains the key.

use hmac::{Hmac, Mac};
use multiaz_driver::frame::Envelope;
use multiaz_engine::{NodeId, PeerMessage};
use ring::aead::{Aad, LessSafeKey, Nonce as AeadNonce, UnboundKey, CHACHA20_POLY1305};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;
const TAG: usize = 32;
/// The AEAD's tag.
const SEAL_TAG: usize = 16;
pub const NONCE: usize = 16;
pub type Nonce = [u8; NONCE];

const FRAME: &[u8; 8] = b"MAZFRAM3";
/// Key-derivation labels: a connection's stream, a call and its reply.
const STREAM_KEY: &[u8; 8] = b"MAZKEYS1";
const CALL_KEY: &[u8; 8] = b"MAZKEYC1";
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
    pub message: PeerMessage,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("frame too short to carry a tag")]
    Short,
    #[error("bad signature: not sealed with this cluster's key for this connection, or altered")]
    BadTag,
    #[error("undecodable frame: {0}")]
    Decode(String),
    #[error("replayed or reordered frame (seq {seq} after {newest})")]
    Replay { seq: u64, newest: u64 },
    #[error("frame from {from} on a connection that {first} opened")]
    SenderChanged { from: NodeId, first: NodeId },
    #[error("frame with another sender nonce than the connection's first")]
    NonceChanged,
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

/// One sealing key: for a connection's stream, or for one call and its reply.
struct SealKey(LessSafeKey);

impl SealKey {
    /// `label | challenge | nonce` through HMAC-SHA256 with the cluster key: fixed-length
    /// inputs, a fresh challenge and a fresh nonce, so a fresh key every time.
    fn derive(key: &ClusterKey, label: &[u8; 8], challenge: &Challenge, nonce: &Nonce) -> Self {
        let bytes = key
            .mac(label, challenge, nonce, &[])
            .finalize()
            .into_bytes();
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
            .expect("HMAC-SHA256 gives the 32 bytes ChaCha20-Poly1305 takes");
        SealKey(LessSafeKey::new(unbound))
    }

    fn aead_nonce(n: u64) -> AeadNonce {
        let mut b = [0u8; 12];
        b[4..].copy_from_slice(&n.to_be_bytes());
        AeadNonce::assume_unique_for_key(b)
    }

    /// `plaintext` encrypted, with its tag; `n` is never used twice with this key.
    fn seal(&self, n: u64, plaintext: &[u8]) -> Vec<u8> {
        let mut out = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(Self::aead_nonce(n), Aad::empty(), &mut out)
            .expect("ChaCha20-Poly1305 seals any message under 256 GiB");
        out
    }

    fn open(&self, n: u64, sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
        if sealed.len() < SEAL_TAG {
            return Err(AuthError::Short);
        }
        let mut buf = sealed.to_vec();
        let plain = self
            .0
            .open_in_place(Self::aead_nonce(n), Aad::empty(), &mut buf)
            .map_err(|_| AuthError::BadTag)?;
        Ok(plain.to_vec())
    }
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
    }
}

/// Seals this sidecar's frames on one outgoing connection.
pub struct Sealer {
    from: NodeId,
    to: NodeId,
    /// This sender's nonce for the connection, sent with every frame.
    nonce: Nonce,
    key: SealKey,
    seq: u64,
}

impl Sealer {
    /// For the connection to `to` whose receiver sent `challenge`.
    pub fn new(key: ClusterKey, from: NodeId, to: NodeId, challenge: Challenge) -> Self {
        let nonce: Nonce = rand::random();
        Sealer {
            from,
            to,
            nonce,
            key: SealKey::derive(&key, STREAM_KEY, &challenge, &nonce),
            seq: 0,
        }
    }

    pub fn seal(&mut self, message: PeerMessage) -> Vec<u8> {
        self.seq += 1;
        let sealed = Sealed {
            from: self.from,
            to: self.to,
            message,
        };
        let plain = serde_json::to_vec(&sealed).expect("peer messages always serialize");
        let mut frame = FRAME.to_vec();
        frame.extend_from_slice(&self.nonce);
        frame.extend_from_slice(&self.seq.to_be_bytes());
        frame.extend_from_slice(&self.key.seal(self.seq, &plain));
        frame
    }
}

/// Opens the frames of one inbound connection.
pub struct Opener {
    key: ClusterKey,
    challenge: Challenge,
    /// This node: every frame must be addressed to it, and none may claim to be from it.
    me: NodeId,
    /// Fixed by the connection's first frame: the sender's nonce and the key it gives.
    stream: Option<(Nonce, SealKey)>,
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
            stream: None,
            newest: None,
        }
    }

    pub fn open(&mut self, frame: &[u8]) -> Result<Envelope, AuthError> {
        let rest = frame
            .strip_prefix(FRAME.as_slice())
            .ok_or(AuthError::BadTag)?;
        if rest.len() < NONCE + 8 + SEAL_TAG {
            return Err(AuthError::Short);
        }
        let (nonce, rest) = rest.split_at(NONCE);
        let (seq, sealed) = rest.split_at(8);
        let mut n = [0u8; NONCE];
        n.copy_from_slice(nonce);
        let mut s8 = [0u8; 8];
        s8.copy_from_slice(seq);
        let seq = u64::from_be_bytes(s8);
        let newest = self.newest.map_or(0, |(_, q)| q);
        // Checked before anything is decrypted: a replay costs no work.
        if seq <= newest {
            return Err(AuthError::Replay { seq, newest });
        }
        let plain = match &self.stream {
            Some((first, _)) if *first != n => return Err(AuthError::NonceChanged),
            Some((_, key)) => key.open(seq, sealed)?,
            None => {
                let key = SealKey::derive(&self.key, STREAM_KEY, &self.challenge, &n);
                let plain = key.open(seq, sealed)?;
                self.stream = Some((n, key));
                plain
            }
        };
        let s: Sealed =
            serde_json::from_slice(&plain).map_err(|e| AuthError::Decode(e.to_string()))?;
        if s.to != self.me || s.from == self.me {
            return Err(AuthError::Misaddressed {
                from: s.from,
                to: s.to,
            });
        }
        if let Some((first, _)) = self.newest {
            if first != s.from {
                return Err(AuthError::SenderChanged {
                    from: s.from,
                    first,
                });
            }
        }
        self.newest = Some((s.from, seq));
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
/// sealed body`, answered by `REPLY | sealed body`, both sealed under a key derived
/// from the receiver's challenge and the caller's nonce. A recorded call is refused on
/// any other connection, and a recorded answer cannot stand in for a fresh one.
const CALL: &[u8; 8] = b"MAZCALL3";
const REPLY: &[u8; 8] = b"MAZRPLY3";
/// The AEAD nonces of the call and of its reply under their one key.
const CALL_SEQ: u64 = 1;
const REPLY_SEQ: u64 = 2;

impl ClusterKey {
    pub fn call(&self, challenge: &Challenge, nonce: &Nonce, body: &[u8]) -> Vec<u8> {
        let mut f = CALL.to_vec();
        f.extend_from_slice(nonce);
        f.extend_from_slice(
            &SealKey::derive(self, CALL_KEY, challenge, nonce).seal(CALL_SEQ, body),
        );
        f
    }

    /// `Some(Ok((nonce, body)))` for a call sealed with this key on this connection,
    /// `Some(Err)` for a forged, cut or replayed one, `None` when the frame is not a
    /// call.
    #[allow(clippy::type_complexity)]
    pub fn open_call(
        &self,
        challenge: &Challenge,
        frame: &[u8],
    ) -> Option<Result<(Nonce, Vec<u8>), AuthError>> {
        let rest = frame.strip_prefix(CALL.as_slice())?;
        if rest.len() < NONCE + SEAL_TAG {
            return Some(Err(AuthError::Short));
        }
        let (nonce, sealed) = rest.split_at(NONCE);
        let mut n = [0u8; NONCE];
        n.copy_from_slice(nonce);
        Some(
            SealKey::derive(self, CALL_KEY, challenge, &n)
                .open(CALL_SEQ, sealed)
                .map(|body| (n, body)),
        )
    }

    pub fn reply(&self, challenge: &Challenge, nonce: &Nonce, body: &[u8]) -> Vec<u8> {
        let mut f = REPLY.to_vec();
        f.extend_from_slice(
            &SealKey::derive(self, CALL_KEY, challenge, nonce).seal(REPLY_SEQ, body),
        );
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
        let sealed = frame
            .strip_prefix(REPLY.as_slice())
            .ok_or(AuthError::Short)?;
        SealKey::derive(self, CALL_KEY, challenge, nonce).open(REPLY_SEQ, sealed)
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
        // Another sender's frames carry its own nonce.
        assert_eq!(o.open(&b.seal(msg())), Err(AuthError::NonceChanged));
    }

    #[test]
    fn what_a_frame_or_a_call_carries_cannot_be_read_on_the_wire() {
        let mut s = Sealer::new(key(1), NodeId(2), ME, C1);
        let frame = s.seal(PeerMessage::LeaseGrant {
            epoch: 424242,
            seq: 7,
        });
        let shown = String::from_utf8_lossy(&frame);
        assert!(
            !shown.contains("LeaseGrant") && !shown.contains("424242"),
            "{shown}"
        );
        let call = key(1).call(&C1, &[3; NONCE], b"{\"after\":\"0-1-99\"}");
        assert!(!String::from_utf8_lossy(&call).contains("0-1-99"));
        let reply = key(1).reply(&C1, &[3; NONCE], b"recovered 12");
        assert!(!String::from_utf8_lossy(&reply).contains("recovered"));
        // And yet they open, with the key, on their connection.
        assert!(Opener::new(key(1), C1, ME).open(&frame).is_ok());
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
        let mut g = s.seal(msg());
        let last = g.len() - 1;
        g[last] ^= 1;
        assert_eq!(o.open(&g), Err(AuthError::BadTag));
        assert_eq!(o.open(b"tiny"), Err(AuthError::BadTag));
        assert_eq!(o.open(b"MAZFRAM3short"), Err(AuthError::Short));
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
