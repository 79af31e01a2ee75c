//! Authenticated peer frames: HMAC-SHA256 over each frame with the cluster key, and
//! replay protection.
//!
//! A sealed frame is `body | tag`, where `body` is the JSON of a [`Sealed`] and `tag`
//! its 32-byte HMAC. Each sender numbers its frames within a boot (`boot` is its start
//! time in Unix milliseconds, so a restarted sender's boot is larger); a receiver accepts
//! a frame only if it is newer than every frame it accepted from that sender. A frame
//! signed with another key, altered, or replayed is refused with a reason — never a
//! panic — and the reason never contains the key.

use crate::frame::Envelope;
use hmac::{Hmac, Mac};
use multiaz_engine::{NodeId, PeerMessage};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::BTreeMap;

type HmacSha256 = Hmac<Sha256>;
const TAG: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub from: NodeId,
    pub boot: u64,
    pub seq: u64,
    pub message: PeerMessage,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("frame too short to carry a tag")]
    Short,
    #[error("bad signature: not signed with this cluster's key, or altered")]
    BadTag,
    #[error("undecodable frame: {0}")]
    Decode(String),
    #[error("replayed or stale frame from {from} (boot {boot}, seq {seq})")]
    Replay { from: NodeId, boot: u64, seq: u64 },
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

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
    }
}

/// Signs this sidecar's outgoing frames.
pub struct Sealer {
    key: ClusterKey,
    from: NodeId,
    boot: u64,
    seq: u64,
}

impl Sealer {
    pub fn new(key: ClusterKey, from: NodeId, boot_unix_ms: u64) -> Self {
        Sealer {
            key,
            from,
            boot: boot_unix_ms,
            seq: 0,
        }
    }

    pub fn seal(&mut self, message: PeerMessage) -> Vec<u8> {
        self.seq += 1;
        let sealed = Sealed {
            from: self.from,
            boot: self.boot,
            seq: self.seq,
            message,
        };
        let mut body = serde_json::to_vec(&sealed).expect("peer messages always serialize");
        let mut mac = self.key.mac();
        mac.update(&body);
        body.extend_from_slice(&mac.finalize().into_bytes());
        body
    }
}

/// Checks incoming frames from every peer.
pub struct Opener {
    key: ClusterKey,
    /// Newest (boot, seq) accepted from each sender.
    newest: BTreeMap<NodeId, (u64, u64)>,
}

impl Opener {
    pub fn new(key: ClusterKey) -> Self {
        Opener {
            key,
            newest: BTreeMap::new(),
        }
    }

    pub fn open(&mut self, frame: &[u8]) -> Result<Envelope, AuthError> {
        if frame.len() < TAG {
            return Err(AuthError::Short);
        }
        let (body, tag) = frame.split_at(frame.len() - TAG);
        let mut mac = self.key.mac();
        mac.update(body);
        mac.verify_slice(tag).map_err(|_| AuthError::BadTag)?;
        let s: Sealed =
            serde_json::from_slice(body).map_err(|e| AuthError::Decode(e.to_string()))?;
        let newest = self.newest.get(&s.from).copied().unwrap_or((0, 0));
        if (s.boot, s.seq) <= newest {
            return Err(AuthError::Replay {
                from: s.from,
                boot: s.boot,
                seq: s.seq,
            });
        }
        self.newest.insert(s.from, (s.boot, s.seq));
        Ok(Envelope {
            from: s.from,
            message: s.message,
        })
    }
}

/// A liveness challenge for `multiaz check`: `PING | nonce | tag`. It never reaches the
/// engine and does not touch the replay state of [`Opener`]; the answer
/// `PONG | tag(nonce)` proves the peer holds the cluster key for this very nonce.
const PING: &[u8; 8] = b"MAZPING1";
const PONG: &[u8; 8] = b"MAZPONG1";
pub const NONCE: usize = 16;

impl ClusterKey {
    /// The tag of the challenge frames (ping, pong, call, reply): over the frame's
    /// kind, the nonce and the body (empty for ping and pong).
    fn tag(&self, domain: &[u8], nonce: &[u8], body: &[u8]) -> Vec<u8> {
        let mut mac = self.mac();
        mac.update(domain);
        mac.update(nonce);
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }

    fn verify(&self, domain: &[u8], nonce: &[u8], body: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.mac();
        mac.update(domain);
        mac.update(nonce);
        mac.update(body);
        mac.verify_slice(tag).is_ok()
    }

    pub fn ping(&self, nonce: &[u8; NONCE]) -> Vec<u8> {
        let mut f = PING.to_vec();
        f.extend_from_slice(nonce);
        f.extend_from_slice(&self.tag(PING, nonce, &[]));
        f
    }

    /// `Some(Ok(pong))` for a ping signed with this key, `Some(Err)` for a forged one,
    /// `None` when the frame is not a ping at all.
    pub fn answer(&self, frame: &[u8]) -> Option<Result<Vec<u8>, AuthError>> {
        let rest = frame.strip_prefix(PING.as_slice())?;
        if rest.len() != NONCE + TAG {
            return Some(Err(AuthError::Short));
        }
        let (nonce, tag) = rest.split_at(NONCE);
        if !self.verify(PING, nonce, &[], tag) {
            return Some(Err(AuthError::BadTag));
        }
        let mut f = PONG.to_vec();
        f.extend_from_slice(&self.tag(PONG, nonce, &[]));
        Some(Ok(f))
    }

    pub fn pong_is_valid(&self, nonce: &[u8; NONCE], frame: &[u8]) -> bool {
        let Some(tag) = frame.strip_prefix(PONG.as_slice()) else {
            return false;
        };
        self.verify(PONG, nonce, &[], tag)
    }
}

/// A request to a peer's sidecar that wants an answer (binlog salvage): `CALL | nonce |
/// tag(nonce, body) | body`, answered by `REPLY | tag(nonce, body) | body`. The answer
/// is bound to the nonce, so a recorded answer cannot stand in for a fresh one. A
/// replayed call is harmless: what it asks for (applying transactions the target does
/// not have yet) is idempotent.
const CALL: &[u8; 8] = b"MAZCALL1";
const REPLY: &[u8; 8] = b"MAZRPLY1";

impl ClusterKey {
    pub fn call(&self, nonce: &[u8; NONCE], body: &[u8]) -> Vec<u8> {
        let mut f = CALL.to_vec();
        f.extend_from_slice(nonce);
        f.extend_from_slice(&self.tag(CALL, nonce, body));
        f.extend_from_slice(body);
        f
    }

    /// `Some(Ok((nonce, body)))` for a call signed with this key, `Some(Err)` for a
    /// forged or cut one, `None` when the frame is not a call.
    #[allow(clippy::type_complexity)]
    pub fn open_call(&self, frame: &[u8]) -> Option<Result<([u8; NONCE], Vec<u8>), AuthError>> {
        let rest = frame.strip_prefix(CALL.as_slice())?;
        if rest.len() < NONCE + TAG {
            return Some(Err(AuthError::Short));
        }
        let (nonce, rest) = rest.split_at(NONCE);
        let (tag, body) = rest.split_at(TAG);
        if !self.verify(CALL, nonce, body, tag) {
            return Some(Err(AuthError::BadTag));
        }
        Some(Ok((nonce.try_into().expect("NONCE bytes"), body.to_vec())))
    }

    pub fn reply(&self, nonce: &[u8; NONCE], body: &[u8]) -> Vec<u8> {
        let mut f = REPLY.to_vec();
        f.extend_from_slice(&self.tag(REPLY, nonce, body));
        f.extend_from_slice(body);
        f
    }

    /// The body of an answer to the call made with `nonce`, if it is one.
    pub fn open_reply(&self, nonce: &[u8; NONCE], frame: &[u8]) -> Result<Vec<u8>, AuthError> {
        let rest = frame
            .strip_prefix(REPLY.as_slice())
            .ok_or(AuthError::Short)?;
        if rest.len() < TAG {
            return Err(AuthError::Short);
        }
        let (tag, body) = rest.split_at(TAG);
        if !self.verify(REPLY, nonce, body, tag) {
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

    #[test]
    fn a_ping_is_answered_only_with_the_right_key() {
        let nonce = [7u8; NONCE];
        let ping = key(1).ping(&nonce);
        let pong = key(1).answer(&ping).unwrap().unwrap();
        assert!(key(1).pong_is_valid(&nonce, &pong));
        assert!(
            !key(1).pong_is_valid(&[8u8; NONCE], &pong),
            "bound to the nonce"
        );
        assert!(!key(2).pong_is_valid(&nonce, &pong));
        assert_eq!(key(2).answer(&ping).unwrap(), Err(AuthError::BadTag));
        assert_eq!(
            key(1).answer(b"MAZPING1short").unwrap(),
            Err(AuthError::Short)
        );
        assert!(key(1).answer(b"not a ping").is_none());
    }

    #[test]
    fn a_sealed_frame_opens_once() {
        let mut s = Sealer::new(key(1), NodeId(2), 1_000);
        let mut o = Opener::new(key(1));
        let f = s.seal(msg());
        assert_eq!(
            o.open(&f).unwrap(),
            Envelope {
                from: NodeId(2),
                message: msg()
            }
        );
        assert!(
            matches!(o.open(&f), Err(AuthError::Replay { .. })),
            "a replay is refused"
        );
        assert!(o.open(&s.seal(msg())).is_ok(), "the next one is fine");
    }

    #[test]
    fn a_frame_signed_with_the_wrong_key_is_rejected() {
        let mut s = Sealer::new(key(9), NodeId(2), 1_000);
        let mut o = Opener::new(key(1));
        assert_eq!(o.open(&s.seal(msg())), Err(AuthError::BadTag));
    }

    #[test]
    fn an_altered_or_short_frame_is_rejected() {
        let mut s = Sealer::new(key(1), NodeId(2), 1_000);
        let mut o = Opener::new(key(1));
        let mut f = s.seal(msg());
        f[3] ^= 1;
        assert_eq!(o.open(&f), Err(AuthError::BadTag));
        assert_eq!(o.open(b"tiny"), Err(AuthError::Short));
    }

    #[test]
    fn a_restarted_sender_is_accepted_and_its_old_frames_are_not() {
        let mut o = Opener::new(key(1));
        let mut old = Sealer::new(key(1), NodeId(3), 1_000);
        let stale = old.seal(msg());
        let mut new = Sealer::new(key(1), NodeId(3), 2_000);
        assert!(o.open(&new.seal(msg())).is_ok());
        assert!(matches!(o.open(&stale), Err(AuthError::Replay { .. })));
    }

    #[test]
    fn a_call_and_its_reply_open_only_with_the_key_and_the_nonce() {
        let nonce = [3u8; NONCE];
        let call = key(1).call(&nonce, b"body");
        assert_eq!(
            key(1).open_call(&call).unwrap().unwrap(),
            (nonce, b"body".to_vec())
        );
        assert_eq!(key(2).open_call(&call).unwrap(), Err(AuthError::BadTag));
        let mut altered = call.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(key(1).open_call(&altered).unwrap(), Err(AuthError::BadTag));
        assert!(key(1).open_call(b"not a call").is_none());
        let reply = key(1).reply(&nonce, b"answer");
        assert_eq!(
            key(1).open_reply(&nonce, &reply).unwrap(),
            b"answer".to_vec()
        );
        assert_eq!(
            key(1).open_reply(&[4u8; NONCE], &reply),
            Err(AuthError::BadTag)
        );
        assert_eq!(key(2).open_reply(&nonce, &reply), Err(AuthError::BadTag));
    }

    #[test]
    fn the_key_never_prints() {
        let k = ClusterKey::new(b"super-secret-cluster-key".to_vec()).unwrap();
        assert!(!format!("{k:?}").contains("secret"));
        assert!(ClusterKey::new(b"short".to_vec()).is_err());
    }
}
