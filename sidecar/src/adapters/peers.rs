//! The real peer transport: TCP with length-prefixed frames sealed with the cluster key
//! (encrypted and authenticated, `auth.rs`).
//!
//! One outgoing connection per peer, re-established with backoff; messages queued while
//! a peer is unreachable are dropped beyond a small bound (raft and the lease tolerate
//! loss). The receiver opens every connection with a fresh challenge, and the frames
//! sent on it are sealed for that challenge (`auth.rs`): a frame recorded on one
//! connection is refused on every other. Incoming frames that are oversized,
//! unauthenticated, altered or replayed are dropped with a log line, and the connection
//! they came on is closed.
//!
//! The listener is reachable by strangers, so it spends nothing on them it cannot bound
//! ([`InboundLimits`]): a connection from an address that is no member's is closed
//! before anything is read; the number of open inbound connections is capped; a
//! connection must send its first frame within a short deadline and then keep sending
//! (peers talk several times a second) or be closed; a frame's buffer grows with the
//! bytes that arrive, not with the length its prefix announces; an accept error (out
//! of descriptors) backs off instead of spinning; and the log lines all this causes
//! are rate-limited.

use crate::adapters::auth::{Challenge, ClusterKey, Nonce, Opener, Sealer};
use crate::adapters::throttle::{with_held_back, Throttle};
use multiaz_driver::adapters::PeerTransport;
use multiaz_engine::{NodeId, PeerMessage};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Largest frame accepted (a raft append of the whole log fits many times over).
pub const MAX_FRAME: usize = 1 << 20;
const QUEUE: usize = 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// A ping or call must follow the challenge within this.
const CALL_WITHIN: Duration = Duration::from_secs(1);

/// Something the transport reports: a frame refused (counted in the metrics) or a
/// connection being re-established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerNote {
    Dropped(String),
    Reconnecting(String),
}

impl std::fmt::Display for PeerNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerNote::Dropped(why) => write!(f, "{why}; dropped, connection closed"),
            PeerNote::Reconnecting(why) => write!(f, "{why}; reconnecting"),
        }
    }
}

pub type LogLine = Rc<dyn Fn(PeerNote)>;

/// Answers a signed call (binlog salvage) with the body of the reply.
pub type CallHandler = Rc<dyn Fn(Vec<u8>) -> Pin<Box<dyn Future<Output = Vec<u8>>>>>;

/// Messages are queued unsealed: each is sealed for the connection that carries it.
pub struct TcpPeers {
    queues: BTreeMap<NodeId, mpsc::Sender<PeerMessage>>,
}

/// The receiving side: where peers connect, where their authenticated messages go,
/// and who answers signed calls (none: calls are refused).
pub struct Inbound {
    pub listener: TcpListener,
    pub inbox: mpsc::UnboundedSender<(NodeId, PeerMessage)>,
    pub calls: Option<CallHandler>,
    pub limits: InboundLimits,
}

/// What the listener grants a connection before it has proved anything.
#[derive(Debug, Clone)]
pub struct InboundLimits {
    /// Connections are accepted from these addresses only (the members'); `None`: any.
    pub allowed: Option<BTreeSet<IpAddr>>,
    /// Open inbound connections at most; more are closed at once.
    pub max_connections: usize,
    /// A new connection's first frame must have arrived within this.
    pub first_frame: Duration,
    /// Then each next frame must arrive within this.
    pub idle: Duration,
    /// A connection is closed this long after it opened; the sender opens another.
    pub max_age: Duration,
}

impl Default for InboundLimits {
    /// For three to five members: each opens one connection, plus the short-lived ones
    /// of pings and salvage calls.
    fn default() -> Self {
        InboundLimits {
            allowed: None,
            max_connections: 64,
            first_frame: Duration::from_secs(2),
            idle: Duration::from_secs(10),
            max_age: Duration::from_secs(60),
        }
    }
}

impl InboundLimits {
    /// Only the members' addresses may connect; idle after three probe intervals.
    pub fn for_members(members: impl IntoIterator<Item = SocketAddr>, probe: Duration) -> Self {
        InboundLimits {
            allowed: Some(members.into_iter().map(|a| a.ip().to_canonical()).collect()),
            // Each sidecar sends a report every probe interval.
            first_frame: (probe * 2).max(Duration::from_secs(2)),
            idle: (probe * 3).max(Duration::from_secs(3)),
            ..InboundLimits::default()
        }
    }

    fn admits(&self, ip: IpAddr) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|a| a.contains(&ip.to_canonical()))
    }
}

impl TcpPeers {
    /// Starts the listener and one sender per peer, as local tasks.
    pub fn start(
        me: NodeId,
        key: ClusterKey,
        inbound: Inbound,
        peers: BTreeMap<NodeId, SocketAddr>,
        log: LogLine,
    ) -> Self {
        tokio::task::spawn_local(listen(me, inbound, key.clone(), log.clone()));
        let mut queues = BTreeMap::new();
        let from = peers.get(&me).map(|a| a.ip());
        for (peer, addr) in peers.into_iter().filter(|(p, _)| *p != me) {
            let (tx, rx) = mpsc::channel(QUEUE);
            queues.insert(peer, tx);
            let sender = Sender {
                me,
                key: key.clone(),
                peer,
                addr,
                from,
            };
            tokio::task::spawn_local(sender.run(rx, log.clone()));
        }
        TcpPeers { queues }
    }
}

impl PeerTransport for TcpPeers {
    fn send(&self, to: NodeId, message: PeerMessage) {
        if let Some(q) = self.queues.get(&to) {
            // Full queue: the peer is unreachable or slow; drop rather than block.
            let _ = q.try_send(message);
        }
    }
}

/// Sends one peer's messages over one connection at a time.
struct Sender {
    me: NodeId,
    key: ClusterKey,
    peer: NodeId,
    addr: SocketAddr,
    /// This node's own peer address, to connect from.
    from: Option<IpAddr>,
}

impl Sender {
    /// Connects only once there is a message to send (the receiver closes a connection
    /// whose first frame is late), from this node's own peer address when it has one
    /// (the receiver admits members' addresses only), takes the receiver's challenge,
    /// and seals each message for it. A message whose write failed is sent again on
    /// the next connection, sealed for that one.
    async fn run(self, mut rx: mpsc::Receiver<PeerMessage>, log: LogLine) {
        let mut backoff = Duration::from_millis(100);
        let mut pending: Option<PeerMessage> = None;
        loop {
            let message = match pending.take() {
                Some(m) => m,
                None => match rx.recv().await {
                    Some(m) => m,
                    None => return,
                },
            };
            let (mut stream, mut sealer) = match self.connect().await {
                Ok(c) => c,
                Err(()) => {
                    // Raft and the lease tolerate loss: the message is dropped, not
                    // queued behind an unreachable peer.
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            let mut message = message;
            loop {
                let frame = sealer.seal(message.clone());
                if write_frame(&mut stream, &frame).await.is_err() {
                    log(PeerNote::Reconnecting(format!(
                        "peer {} at {}: connection lost",
                        self.peer, self.addr
                    )));
                    pending = Some(message);
                    break;
                }
                match rx.recv().await {
                    Some(m) => message = m,
                    None => return,
                }
            }
        }
    }

    /// A connection and the sealer for its challenge.
    async fn connect(&self) -> Result<(TcpStream, Sealer), ()> {
        let open = async {
            let mut stream = connect_from(self.from, self.addr).await.map_err(|_| ())?;
            let _ = stream.set_nodelay(true);
            let challenge = read_challenge(&mut stream).await.map_err(|_| ())?;
            Ok((stream, challenge))
        };
        let (stream, challenge) = tokio::time::timeout(CONNECT_TIMEOUT, open)
            .await
            .map_err(|_| ())??;
        Ok((
            stream,
            Sealer::new(self.key.clone(), self.me, self.peer, challenge),
        ))
    }
}

/// The challenge the receiver opens a connection with.
async fn read_challenge(stream: &mut TcpStream) -> Result<Challenge, String> {
    let frame = read_frame(stream, Challenge::FRAME_LEN)
        .await
        .map_err(|e| match e {
            ReadError::Closed => "closed the connection at once".to_string(),
            ReadError::Cut(e) => format!("challenge cut short: {e}"),
            ReadError::TooLarge(len) => format!("opened with a {len}-byte frame, not a challenge"),
        })?;
    Challenge::from_frame(&frame).map_err(|e| e.to_string())
}

/// A connection to `addr` from `from` (any local address when `None`, or when `from`
/// is not one of this host's).
async fn connect_from(from: Option<IpAddr>, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    if let Some(ip) = from.filter(|ip| !ip.is_unspecified() && ip.is_ipv4() == addr.is_ipv4()) {
        // Not bound (the kernel chooses) when the configured address is not local.
        let _ = socket.bind(SocketAddr::new(ip, 0));
    }
    socket.connect(addr).await
}

/// Logs at most one line a second per kind of refusal, with how many were not logged.
struct Throttled {
    log: LogLine,
    gate: RefCell<Throttle>,
}

impl Throttled {
    fn new(log: &LogLine) -> Self {
        Throttled {
            log: log.clone(),
            gate: RefCell::new(Throttle::new()),
        }
    }

    fn note(&self, note: PeerNote) {
        let Some(n) = self.gate.borrow_mut().pass() else {
            return;
        };
        (self.log)(match note {
            PeerNote::Dropped(why) => PeerNote::Dropped(with_held_back(why, n)),
            PeerNote::Reconnecting(why) => PeerNote::Reconnecting(with_held_back(why, n)),
        });
    }
}

/// What every inbound connection shares.
struct Receiving {
    /// This node: frames must be addressed to it.
    me: NodeId,
    key: ClusterKey,
    inbox: mpsc::UnboundedSender<(NodeId, PeerMessage)>,
    calls: Option<CallHandler>,
    limits: InboundLimits,
    log: LogLine,
}

async fn listen(me: NodeId, inbound: Inbound, key: ClusterKey, log: LogLine) {
    let Inbound {
        listener,
        inbox,
        calls,
        limits,
    } = inbound;
    let (strangers, crowd, errors) = (
        Throttled::new(&log),
        Throttled::new(&log),
        Throttled::new(&log),
    );
    let shared = Rc::new(Receiving {
        me,
        key,
        inbox,
        calls,
        limits,
        log,
    });
    let limits = &shared.limits;
    let open = Rc::new(Cell::new(0usize));
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors, most likely: retrying at once would spin.
                errors.note(PeerNote::Dropped(format!(
                    "peer listener: accept failed: {e}"
                )));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !limits.admits(addr.ip()) {
            strangers.note(PeerNote::Dropped(format!(
                "connection from {addr}: not a member's address"
            )));
            continue;
        }
        if open.get() >= limits.max_connections {
            crowd.note(PeerNote::Dropped(format!(
                "connection from {addr}: {} peer connections open already",
                limits.max_connections
            )));
            continue;
        }
        open.set(open.get() + 1);
        let guard = OpenConnection(open.clone());
        let shared = shared.clone();
        tokio::task::spawn_local(async move {
            let _guard = guard;
            serve(stream, addr, &shared).await;
        });
    }
}

/// Counts an open inbound connection until dropped.
struct OpenConnection(Rc<Cell<usize>>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// One inbound connection: a fresh challenge, then frames sealed for it until one is
/// refused, the peer goes quiet, or the connection ends.
async fn serve(mut stream: TcpStream, addr: SocketAddr, shared: &Receiving) {
    let Receiving {
        me,
        key,
        inbox,
        calls,
        limits,
        log,
    } = shared;
    let challenge = Challenge::random();
    if write_frame(&mut stream, &challenge.to_frame())
        .await
        .is_err()
    {
        return;
    }
    let opened = tokio::time::Instant::now();
    let Some(first) = next_frame(&mut stream, addr, limits.first_frame, log).await else {
        return;
    };
    // A ping or a call is a connection's first and only frame, sent at once: a call
    // held back by someone on the path, to be let through later, is refused.
    let prompt = opened.elapsed() <= CALL_WITHIN;
    match key.answer(&challenge, &first) {
        Some(Ok(pong)) => {
            let _ = write_frame(&mut stream, &pong).await;
            return;
        }
        Some(Err(e)) => return log(PeerNote::Dropped(format!("ping from {addr}: {e}"))),
        None => {}
    }
    match (key.open_call(&challenge, &first), calls) {
        (Some(Ok(_)), _) if !prompt => {
            return log(PeerNote::Dropped(format!(
                "call from {addr}: came {:?} after the challenge (at most {CALL_WITHIN:?})",
                opened.elapsed()
            )))
        }
        (Some(Ok((nonce, body))), Some(handle)) => {
            let answer = handle(body).await;
            let _ = write_frame(&mut stream, &key.reply(&challenge, &nonce, &answer)).await;
            return;
        }
        (Some(Ok(_)), None) => {
            return log(PeerNote::Dropped(format!(
                "call from {addr}: this sidecar takes no calls"
            )))
        }
        (Some(Err(e)), _) => return log(PeerNote::Dropped(format!("call from {addr}: {e}"))),
        (None, _) => {}
    }
    // A stream of sealed frames, until one is refused, the peer goes quiet, or the
    // connection is old: it is closed then, and the sender opens a new one (a
    // connection kept forever would let someone on the path hold frames back at
    // leisure).
    let mut opener = Opener::new(key.clone(), challenge, *me);
    let mut frame = first;
    loop {
        match opener.open(&frame) {
            Ok(env) => {
                if inbox.send((env.from, env.message)).is_err() {
                    return;
                }
            }
            Err(e) => return log(PeerNote::Dropped(format!("peer frame from {addr}: {e}"))),
        }
        let left = limits.max_age.saturating_sub(opened.elapsed());
        if left.is_zero() {
            return;
        }
        match next_frame(&mut stream, addr, limits.idle.min(left), log).await {
            Some(f) => frame = f,
            None => return,
        }
    }
}

/// The next frame within `within`; `None` (logged when oversized) ends the connection.
async fn next_frame(
    stream: &mut TcpStream,
    addr: SocketAddr,
    within: Duration,
    log: &LogLine,
) -> Option<Vec<u8>> {
    match tokio::time::timeout(within, read_frame(stream, MAX_FRAME)).await {
        Ok(Ok(f)) => Some(f),
        Ok(Err(ReadError::TooLarge(len))) => {
            log(PeerNote::Dropped(format!(
                "peer frame from {addr}: {len} bytes is over the {MAX_FRAME}-byte limit"
            )));
            None
        }
        // Closed, cut, silent, or too slow to finish a frame.
        Ok(Err(_)) | Err(_) => None,
    }
}

async fn write_frame(stream: &mut TcpStream, frame: &[u8]) -> std::io::Result<()> {
    let write = async {
        stream
            .write_all(&(frame.len() as u32).to_be_bytes())
            .await?;
        stream.write_all(frame).await
    };
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Why a frame could not be read.
enum ReadError {
    /// The connection ended before a frame began.
    Closed,
    /// It ended inside the frame.
    Cut(std::io::Error),
    TooLarge(usize),
}

/// One length-prefixed frame of at most `max` bytes.
async fn read_frame(stream: &mut TcpStream, max: usize) -> Result<Vec<u8>, ReadError> {
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|_| ReadError::Closed)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(ReadError::TooLarge(len));
    }
    // Grown as the bytes arrive: a length prefix alone reserves little.
    let mut frame = Vec::with_capacity(len.min(64 << 10));
    let got = (&mut *stream)
        .take(len as u64)
        .read_to_end(&mut frame)
        .await
        .map_err(ReadError::Cut)?;
    if got < len {
        return Err(ReadError::Cut(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(frame)
}

/// Opens a connection to `addr` (from `from`, see [`connect_from`]), takes its challenge, sends the frame `make` builds
/// for it and reads the one frame that answers it (ping and call). `closed` says what a
/// connection closed without an answer means. Errors do not name `addr`: the caller
/// does.
async fn exchange(
    from: Option<IpAddr>,
    addr: SocketAddr,
    make: impl FnOnce(&Challenge) -> Vec<u8>,
    max_answer: usize,
    closed: &str,
) -> Result<(Challenge, Vec<u8>), String> {
    let mut stream = connect_from(from, addr)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let challenge = read_challenge(&mut stream).await?;
    let frame = make(&challenge);
    if frame.len() > MAX_FRAME {
        return Err(format!("a {}-byte frame is too large to send", frame.len()));
    }
    write_frame(&mut stream, &frame)
        .await
        .map_err(|e| format!("cannot send: {e}"))?;
    let answer = read_frame(&mut stream, max_answer)
        .await
        .map_err(|e| match e {
            ReadError::Closed => closed.to_string(),
            ReadError::Cut(e) => format!("answer cut short: {e}"),
            ReadError::TooLarge(len) => format!("answered with a {len}-byte frame"),
        })?;
    Ok((challenge, answer))
}

/// Sends a signed call to the sidecar at `addr`, from this node's own peer address
/// `from` when it has one, and waits up to `limit` for its signed answer.
pub async fn call(
    from: Option<IpAddr>,
    addr: SocketAddr,
    key: &ClusterKey,
    body: &[u8],
    limit: Duration,
) -> Result<Vec<u8>, String> {
    let nonce: Nonce = rand::random();
    let work = async {
        let (challenge, answer) = exchange(
            from,
            addr,
            |c| key.call(c, &nonce, body),
            MAX_FRAME,
            "closed the connection without an answer",
        )
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
        key.open_reply(&challenge, &nonce, &answer)
            .map_err(|e| format!("{addr}: answer refused: {e}"))
    };
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err(format!("no answer from {addr} within {limit:?}")))
}

/// Asks the sidecar at `addr` to prove it holds the cluster key (`multiaz check`).
/// Returns the round-trip time.
pub async fn ping(
    from: Option<IpAddr>,
    addr: SocketAddr,
    key: &ClusterKey,
) -> Result<Duration, String> {
    let start = tokio::time::Instant::now();
    let nonce: Nonce = rand::random();
    let work = async {
        let (challenge, pong) = exchange(
            from,
            addr,
            |c| key.ping(c, &nonce),
            1024,
            "closed the connection: it does not hold this cluster key",
        )
        .await?;
        if key.pong_is_valid(&challenge, &nonce, &pong) {
            Ok(start.elapsed())
        } else {
            Err("answered, but not with this cluster's key".to_string())
        }
    };
    tokio::time::timeout(Duration::from_secs(3), work)
        .await
        .unwrap_or_else(|_| Err("no answer within 3 s".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn key(b: u8) -> ClusterKey {
        ClusterKey::new(vec![b; 32]).unwrap()
    }

    #[tokio::test]
    async fn authenticated_messages_arrive_and_forged_ones_do_not() {
        in_local(async {
            let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let l3 = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addrs = BTreeMap::from([
                (NodeId(1), l1.local_addr().unwrap()),
                (NodeId(2), l2.local_addr().unwrap()),
                (NodeId(3), l3.local_addr().unwrap()),
            ]);
            let (log, lines) = collecting_log();
            let (in1, _rx1) = mpsc::unbounded_channel();
            let (in2, mut rx2) = mpsc::unbounded_channel();
            let (in3, _rx3) = mpsc::unbounded_channel();
            let p1 = TcpPeers::start(
                NodeId(1),
                key(7),
                Inbound {
                    listener: l1,
                    inbox: in1,
                    calls: None,
                    limits: InboundLimits::default(),
                },
                addrs.clone(),
                log.clone(),
            );
            let _p2 = TcpPeers::start(
                NodeId(2),
                key(7),
                Inbound {
                    listener: l2,
                    inbox: in2,
                    calls: None,
                    limits: InboundLimits::default(),
                },
                addrs.clone(),
                log.clone(),
            );
            // Node 3 has the wrong key.
            let p3 = TcpPeers::start(
                NodeId(3),
                key(8),
                Inbound {
                    listener: l3,
                    inbox: in3,
                    calls: None,
                    limits: InboundLimits::default(),
                },
                addrs,
                log,
            );
            p1.send(NodeId(2), PeerMessage::LeaseGrant { epoch: 1, seq: 1 });
            let got = tokio::time::timeout(Duration::from_secs(5), rx2.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                got,
                (NodeId(1), PeerMessage::LeaseGrant { epoch: 1, seq: 1 })
            );
            p3.send(NodeId(2), PeerMessage::LeaseGrant { epoch: 9, seq: 9 });
            let forged = tokio::time::timeout(Duration::from_millis(500), rx2.recv()).await;
            assert!(
                forged.is_err(),
                "a frame with the wrong key must not arrive: {forged:?}"
            );
            assert!(
                lines.borrow().iter().any(|l| l.contains("bad signature")),
                "{:?}",
                lines.borrow()
            );
        })
        .await;
    }

    #[tokio::test]
    async fn an_oversized_frame_closes_the_connection() {
        in_local(async {
            let (addr, _rx, lines, _p) = receiver(InboundLimits::default()).await;
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes())
                .await
                .unwrap();
            assert!(
                closed_within(&mut s, Duration::from_secs(5)).await,
                "closed"
            );
            assert!(lines.borrow().iter().any(|l| l.contains("over the")));
        })
        .await;
    }

    /// A receiver (node 2) with these limits; returns its address, inbox and log.
    async fn receiver(
        limits: InboundLimits,
    ) -> (
        SocketAddr,
        mpsc::UnboundedReceiver<(NodeId, PeerMessage)>,
        Rc<RefCell<Vec<String>>>,
        TcpPeers,
    ) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (log, lines) = collecting_log();
        let (inbox, rx) = mpsc::unbounded_channel();
        let p = TcpPeers::start(
            NodeId(2),
            key(7),
            Inbound {
                listener: l,
                inbox,
                calls: None,
                limits,
            },
            BTreeMap::new(),
            log,
        );
        (addr, rx, lines, p)
    }

    /// A log that keeps every line, for the assertions.
    fn collecting_log() -> (LogLine, Rc<RefCell<Vec<String>>>) {
        let lines: Rc<RefCell<Vec<String>>> = Rc::default();
        let kept = lines.clone();
        let log: LogLine = Rc::new(move |l: PeerNote| kept.borrow_mut().push(l.to_string()));
        (log, lines)
    }

    /// Connects from `from` (any 127/8 address is loopback on Linux).
    async fn connect_from_ip(from: &str, to: SocketAddr) -> TcpStream {
        connect_from(Some(from.parse().unwrap()), to).await.unwrap()
    }

    use crate::test_io::closed_within;

    /// Runs `f` where the transport's local tasks can be spawned.
    async fn in_local<F: Future>(f: F) -> F::Output {
        tokio::task::LocalSet::new().run_until(f).await
    }

    /// Server-side connections established on `port` (from /proc/net/tcp: local port
    /// = `port`, state 01), whoever opened them: what the listener holds.
    fn established_on(port: u16) -> usize {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        table
            .lines()
            .skip(1)
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3
                    && f[1].rsplit(':').next() == Some(&format!("{port:04X}"))
                    && f[3] == "01"
            })
            .count()
    }

    #[tokio::test]
    async fn strangers_are_turned_away_before_anything_is_read_and_members_get_through() {
        in_local(async {
            let limits = InboundLimits {
                allowed: Some(BTreeSet::from(["127.0.0.1".parse().unwrap()])),
                ..InboundLimits::default()
            };
            let (addr, mut rx, lines, _p) = receiver(limits).await;
            // 300 strangers that connect and announce a frame one byte short of
            // the limit, then say nothing more.
            let mut flood = Vec::new();
            for _ in 0..300 {
                let mut s = connect_from_ip("127.0.0.2", addr).await;
                let _ = s.write_all(&(MAX_FRAME as u32 - 1).to_be_bytes()).await;
                flood.push(s);
            }
            for s in flood.iter_mut().take(5) {
                assert!(
                    closed_within(s, Duration::from_secs(2)).await,
                    "stranger kept"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let kept = established_on(addr.port());
            assert_eq!(kept, 0, "connections held for 300 strangers");
            assert!(
                lines
                    .borrow()
                    .iter()
                    .any(|l| l.contains("not a member's address")),
                "{:?}",
                lines.borrow()
            );
            assert!(
                lines.borrow().len() < 10,
                "rate-limited: {:?}",
                lines.borrow()
            );
            // A member's frames still arrive.
            let mut s = connect_from_ip("127.0.0.1", addr).await;
            let challenge = read_challenge(&mut s).await.unwrap();
            let mut sealer = Sealer::new(key(7), NodeId(1), NodeId(2), challenge);
            write_frame(
                &mut s,
                &sealer.seal(PeerMessage::LeaseGrant { epoch: 1, seq: 1 }),
            )
            .await
            .unwrap();
            let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got.0, NodeId(1));
        })
        .await;
    }

    #[tokio::test]
    async fn a_silent_or_slow_connection_is_closed_and_the_cap_holds() {
        in_local(async {
            let limits = InboundLimits {
                max_connections: 4,
                first_frame: Duration::from_millis(600),
                ..InboundLimits::default()
            };
            let (addr, _rx, lines, _p) = receiver(limits).await;
            let mut idle = Vec::new();
            for _ in 0..4 {
                idle.push(TcpStream::connect(addr).await.unwrap());
            }
            // Let the listener take the four before the fifth knocks.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut fifth = TcpStream::connect(addr).await.unwrap();
            assert!(
                closed_within(&mut fifth, Duration::from_millis(300)).await,
                "over the cap, closed at once"
            );
            assert!(
                lines.borrow().iter().any(|l| l.contains("open already")),
                "{:?}",
                lines.borrow()
            );
            // Half a frame, then nothing: closed at the first-frame deadline too.
            idle[0].write_all(&[0, 0, 0, 10, 1, 2]).await.unwrap();
            for s in idle.iter_mut() {
                assert!(
                    closed_within(s, Duration::from_secs(2)).await,
                    "closed at the first-frame deadline"
                );
            }
            // Room again once they are gone.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut again = TcpStream::connect(addr).await.unwrap();
            assert!(!closed_within(&mut again, Duration::from_millis(300)).await);
        })
        .await;
    }

    /// One life of a receiver (node 2) on `addr` that takes calls: what reached its
    /// engine, how many calls it served, and its log, once `visit` is done with it.
    async fn receiver_life<F, Fut>(addr: SocketAddr, visit: F) -> (Vec<NodeId>, usize, Vec<String>)
    where
        F: FnOnce(SocketAddr) -> Fut,
        Fut: Future<Output = ()>,
    {
        in_local(async move {
            let l = TcpListener::bind(addr).await.unwrap();
            let addr = l.local_addr().unwrap();
            let (log, lines) = collecting_log();
            let (inbox, mut rx) = mpsc::unbounded_channel();
            let served = Rc::new(Cell::new(0usize));
            let counted = served.clone();
            let calls: CallHandler = Rc::new(move |body: Vec<u8>| {
                counted.set(counted.get() + 1);
                Box::pin(async move { body })
            });
            let _p = TcpPeers::start(
                NodeId(2),
                key(7),
                Inbound {
                    listener: l,
                    inbox,
                    calls: Some(calls),
                    limits: InboundLimits::default(),
                },
                BTreeMap::new(),
                log,
            );
            visit(addr).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut got = Vec::new();
            while let Ok((from, _)) = rx.try_recv() {
                got.push(from);
            }
            let lines = lines.borrow().clone();
            (got, served.get(), lines)
        })
        .await
    }

    /// What a recorder on the wire keeps of one connection: the frames sent on it.
    async fn send_recorded(addr: SocketAddr, frames: &[Vec<u8>]) -> Vec<u8> {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = read_challenge(&mut s).await.unwrap();
        for f in frames {
            if write_frame(&mut s, f).await.is_err() {
                break;
            }
        }
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
        rest
    }

    #[tokio::test]
    async fn frames_and_calls_recorded_before_a_receiver_restart_are_refused_after_it() {
        let recorded: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();
        let keep = recorded.clone();
        // One port for both lives, as a restarted sidecar listens where it did.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // First life: a member sends a lease grant, a coordinator makes a call; both
        // are served, and a recorder on the wire keeps the bytes.
        let (got, served, _) = receiver_life(addr, |addr| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let challenge = read_challenge(&mut s).await.unwrap();
            let grant = Sealer::new(key(7), NodeId(1), NodeId(2), challenge)
                .seal(PeerMessage::LeaseGrant { epoch: 3, seq: 1 });
            write_frame(&mut s, &grant).await.unwrap();
            keep.borrow_mut().push(grant);
            let answer = call(
                None,
                addr,
                &key(7),
                b"salvage please",
                Duration::from_secs(3),
            )
            .await
            .unwrap();
            assert_eq!(answer, b"salvage please");
            // A call as a recorder on the wire keeps it: its bytes, sealed for the
            // connection it was served on.
            let mut s2 = TcpStream::connect(addr).await.unwrap();
            let c2 = read_challenge(&mut s2).await.unwrap();
            let call_frame =
                key(7).call(&c2, &[5; crate::adapters::auth::NONCE], b"salvage please");
            write_frame(&mut s2, &call_frame).await.unwrap();
            let _ = read_frame(&mut s2, MAX_FRAME).await;
            keep.borrow_mut().push(call_frame);
        })
        .await;
        assert_eq!(got, vec![NodeId(1)], "the live grant arrived");
        assert_eq!(served, 2, "the live calls were served");
        let frames = recorded.borrow().clone();
        let replay = frames.clone();
        let (got, served, lines) = receiver_life(addr, |addr| async move {
            // Each recorded frame, replayed on a new connection.
            for f in &replay {
                let answer = send_recorded(addr, std::slice::from_ref(f)).await;
                assert!(answer.is_empty(), "a replay was answered: {answer:?}");
            }
        })
        .await;
        assert!(
            got.is_empty(),
            "a replayed grant reached the engine: {got:?}"
        );
        assert_eq!(served, 0, "a replayed call was served");
        assert!(
            lines.iter().filter(|l| l.contains("bad signature")).count() >= 2,
            "{lines:?}"
        );
    }

    #[tokio::test]
    async fn a_replay_within_one_connection_closes_it() {
        let (got, _, lines) = receiver_life("127.0.0.1:0".parse().unwrap(), |addr| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let challenge = read_challenge(&mut s).await.unwrap();
            let grant = Sealer::new(key(7), NodeId(1), NodeId(2), challenge)
                .seal(PeerMessage::LeaseGrant { epoch: 3, seq: 1 });
            write_frame(&mut s, &grant).await.unwrap();
            write_frame(&mut s, &grant).await.unwrap();
            assert!(closed_within(&mut s, Duration::from_secs(2)).await);
        })
        .await;
        assert_eq!(got, vec![NodeId(1)], "once, not twice");
        assert!(lines.iter().any(|l| l.contains("replayed")), "{lines:?}");
    }

    #[tokio::test]
    async fn a_call_is_served_only_as_a_prompt_first_frame() {
        let (got, served, lines) =
            receiver_life("127.0.0.1:0".parse().unwrap(), |addr| async move {
                // After a stream frame on the same connection: not a call any more.
                let mut s = TcpStream::connect(addr).await.unwrap();
                let challenge = read_challenge(&mut s).await.unwrap();
                let grant = Sealer::new(key(7), NodeId(1), NodeId(2), challenge)
                    .seal(PeerMessage::LeaseGrant { epoch: 3, seq: 1 });
                write_frame(&mut s, &grant).await.unwrap();
                let call = key(7).call(&challenge, &[1; crate::adapters::auth::NONCE], b"late");
                write_frame(&mut s, &call).await.unwrap();
                assert!(closed_within(&mut s, Duration::from_secs(2)).await);
                // Held back past the deadline after its challenge.
                let mut s = TcpStream::connect(addr).await.unwrap();
                let challenge = read_challenge(&mut s).await.unwrap();
                tokio::time::sleep(CALL_WITHIN + Duration::from_millis(200)).await;
                let call = key(7).call(&challenge, &[2; crate::adapters::auth::NONCE], b"held");
                write_frame(&mut s, &call).await.unwrap();
                assert!(closed_within(&mut s, Duration::from_secs(2)).await);
                // Prompt, first: served.
                let answer = call_from_nowhere(addr).await;
                assert_eq!(answer, b"prompt");
            })
            .await;
        assert_eq!(got, vec![NodeId(1)], "the grant arrived");
        assert_eq!(served, 1, "only the prompt call was served: {lines:?}");
        assert!(
            lines.iter().any(|l| l.contains("after the challenge")),
            "{lines:?}"
        );
    }

    async fn call_from_nowhere(addr: SocketAddr) -> Vec<u8> {
        call(None, addr, &key(7), b"prompt", Duration::from_secs(3))
            .await
            .unwrap()
    }
}
