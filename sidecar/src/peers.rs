//! The real peer transport: TCP with length-prefixed, HMAC-sealed frames.
//!
//! One outgoing connection per peer, re-established with backoff; messages queued while
//! a peer is unreachable are dropped beyond a small bound (raft and the lease tolerate
//! loss). Incoming frames that are oversized, unauthenticated, altered or replayed are
//! dropped with a log line, and the connection they came on is closed.

use crate::adapters::PeerTransport;
use crate::auth::{ClusterKey, Opener, Sealer};
use multiaz_engine::{NodeId, PeerMessage};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
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

pub struct TcpPeers {
    sealer: Rc<RefCell<Sealer>>,
    queues: BTreeMap<NodeId, mpsc::Sender<Vec<u8>>>,
}

/// The receiving side: where peers connect, where their authenticated messages go,
/// and who answers signed calls (none: calls are refused).
pub struct Inbound {
    pub listener: TcpListener,
    pub inbox: mpsc::UnboundedSender<(NodeId, PeerMessage)>,
    pub calls: Option<CallHandler>,
}

impl TcpPeers {
    /// Starts the listener and one sender per peer, as local tasks.
    pub fn start(
        me: NodeId,
        key: ClusterKey,
        boot_unix_ms: u64,
        inbound: Inbound,
        peers: BTreeMap<NodeId, SocketAddr>,
        log: LogLine,
    ) -> Self {
        let opener = Rc::new(RefCell::new(Opener::new(key.clone())));
        tokio::task::spawn_local(listen(inbound, key.clone(), opener, log.clone()));
        let mut queues = BTreeMap::new();
        for (peer, addr) in peers.into_iter().filter(|(p, _)| *p != me) {
            let (tx, rx) = mpsc::channel(QUEUE);
            queues.insert(peer, tx);
            tokio::task::spawn_local(send_loop(peer, addr, rx, log.clone()));
        }
        TcpPeers {
            sealer: Rc::new(RefCell::new(Sealer::new(key, me, boot_unix_ms))),
            queues,
        }
    }
}

impl PeerTransport for TcpPeers {
    fn send(&self, to: NodeId, message: PeerMessage) {
        if let Some(q) = self.queues.get(&to) {
            let frame = self.sealer.borrow_mut().seal(message);
            // Full queue: the peer is unreachable or slow; drop rather than block.
            let _ = q.try_send(frame);
        }
    }
}

async fn send_loop(peer: NodeId, addr: SocketAddr, mut rx: mpsc::Receiver<Vec<u8>>, log: LogLine) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            _ => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let _ = stream.set_nodelay(true);
        let mut stream = stream;
        while let Some(frame) = rx.recv().await {
            match write_frame(&mut stream, &frame).await {
                Ok(()) => {}
                Err(_) => {
                    log(PeerNote::Reconnecting(format!(
                        "peer {peer} at {addr}: connection lost"
                    )));
                    break;
                }
            }
        }
        if rx.is_closed() {
            return;
        }
    }
}

async fn listen(inbound: Inbound, key: ClusterKey, opener: Rc<RefCell<Opener>>, log: LogLine) {
    let Inbound {
        listener,
        inbox,
        calls,
    } = inbound;
    loop {
        let Ok((mut stream, addr)) = listener.accept().await else {
            continue;
        };
        let (key, opener, inbox, log, calls) = (
            key.clone(),
            opener.clone(),
            inbox.clone(),
            log.clone(),
            calls.clone(),
        );
        tokio::task::spawn_local(async move {
            loop {
                let frame = match read_frame(&mut stream, MAX_FRAME).await {
                    Ok(f) => f,
                    Err(ReadError::TooLarge(len)) => {
                        log(PeerNote::Dropped(format!(
                            "peer frame from {addr}: {len} bytes is over the {MAX_FRAME}-byte limit"
                        )));
                        return;
                    }
                    Err(_) => return,
                };
                match key.answer(&frame) {
                    Some(Ok(pong)) => {
                        let _ = write_frame(&mut stream, &pong).await;
                        return;
                    }
                    Some(Err(e)) => {
                        log(PeerNote::Dropped(format!("ping from {addr}: {e}")));
                        return;
                    }
                    None => {}
                }
                match (key.open_call(&frame), &calls) {
                    (Some(Ok((nonce, body))), Some(handle)) => {
                        let answer = handle(body).await;
                        let _ = write_frame(&mut stream, &key.reply(&nonce, &answer)).await;
                        return;
                    }
                    (Some(Ok(_)), None) => {
                        log(PeerNote::Dropped(format!(
                            "call from {addr}: this sidecar takes no calls"
                        )));
                        return;
                    }
                    (Some(Err(e)), _) => {
                        log(PeerNote::Dropped(format!("call from {addr}: {e}")));
                        return;
                    }
                    (None, _) => {}
                }
                let opened = opener.borrow_mut().open(&frame);
                match opened {
                    Ok(env) => {
                        if inbox.send((env.from, env.message)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        log(PeerNote::Dropped(format!("peer frame from {addr}: {e}")));
                        return;
                    }
                }
            }
        });
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
    let mut frame = vec![0u8; len];
    stream
        .read_exact(&mut frame)
        .await
        .map_err(ReadError::Cut)?;
    Ok(frame)
}

/// Sends `frame` on a new connection to `addr` and reads the one frame that answers it
/// (ping and call). `closed` says what a connection closed without an answer means.
/// Errors do not name `addr`: the caller does.
async fn exchange(
    addr: SocketAddr,
    frame: &[u8],
    max_answer: usize,
    closed: &str,
) -> Result<Vec<u8>, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    write_frame(&mut stream, frame)
        .await
        .map_err(|e| format!("cannot send: {e}"))?;
    read_frame(&mut stream, max_answer)
        .await
        .map_err(|e| match e {
            ReadError::Closed => closed.to_string(),
            ReadError::Cut(e) => format!("answer cut short: {e}"),
            ReadError::TooLarge(len) => format!("answered with a {len}-byte frame"),
        })
}

/// Sends a signed call to the sidecar at `addr` and waits up to `limit` for its signed
/// answer.
pub async fn call(
    addr: SocketAddr,
    key: &ClusterKey,
    body: &[u8],
    limit: Duration,
) -> Result<Vec<u8>, String> {
    let nonce: [u8; crate::auth::NONCE] = rand::random();
    let frame = key.call(&nonce, body);
    if frame.len() > MAX_FRAME {
        return Err(format!("call of {} bytes is too large", frame.len()));
    }
    let work = async {
        let answer = exchange(
            addr,
            &frame,
            MAX_FRAME,
            "closed the connection without an answer",
        )
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
        key.open_reply(&nonce, &answer)
            .map_err(|e| format!("{addr}: answer refused: {e}"))
    };
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err(format!("no answer from {addr} within {limit:?}")))
}

/// Asks the sidecar at `addr` to prove it holds the cluster key (`multiaz check`).
/// Returns the round-trip time.
pub async fn ping(addr: SocketAddr, key: &ClusterKey) -> Result<Duration, String> {
    let start = tokio::time::Instant::now();
    let nonce: [u8; crate::auth::NONCE] = rand::random();
    let work = async {
        let pong = exchange(
            addr,
            &key.ping(&nonce),
            1024,
            "closed the connection: it does not hold this cluster key",
        )
        .await?;
        if key.pong_is_valid(&nonce, &pong) {
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

    fn key(b: u8) -> ClusterKey {
        ClusterKey::new(vec![b; 32]).unwrap()
    }

    #[tokio::test]
    async fn authenticated_messages_arrive_and_forged_ones_do_not() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let l3 = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addrs = BTreeMap::from([
                    (NodeId(1), l1.local_addr().unwrap()),
                    (NodeId(2), l2.local_addr().unwrap()),
                    (NodeId(3), l3.local_addr().unwrap()),
                ]);
                let lines: Rc<RefCell<Vec<String>>> = Rc::default();
                let log: LogLine = {
                    let lines = lines.clone();
                    Rc::new(move |l: PeerNote| lines.borrow_mut().push(l.to_string()))
                };
                let (in1, _rx1) = mpsc::unbounded_channel();
                let (in2, mut rx2) = mpsc::unbounded_channel();
                let (in3, _rx3) = mpsc::unbounded_channel();
                let p1 = TcpPeers::start(
                    NodeId(1),
                    key(7),
                    1,
                    Inbound {
                        listener: l1,
                        inbox: in1,
                        calls: None,
                    },
                    addrs.clone(),
                    log.clone(),
                );
                let _p2 = TcpPeers::start(
                    NodeId(2),
                    key(7),
                    1,
                    Inbound {
                        listener: l2,
                        inbox: in2,
                        calls: None,
                    },
                    addrs.clone(),
                    log.clone(),
                );
                // Node 3 has the wrong key.
                let p3 = TcpPeers::start(
                    NodeId(3),
                    key(8),
                    1,
                    Inbound {
                        listener: l3,
                        inbox: in3,
                        calls: None,
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
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = l.local_addr().unwrap();
                let lines: Rc<RefCell<Vec<String>>> = Rc::default();
                let log: LogLine = {
                    let lines = lines.clone();
                    Rc::new(move |l: PeerNote| lines.borrow_mut().push(l.to_string()))
                };
                let (inbox, _rx) = mpsc::unbounded_channel();
                let _p = TcpPeers::start(
                    NodeId(1),
                    key(7),
                    1,
                    Inbound {
                        listener: l,
                        inbox,
                        calls: None,
                    },
                    BTreeMap::new(),
                    log,
                );
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes())
                    .await
                    .unwrap();
                let mut buf = [0u8; 1];
                let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                    .await
                    .unwrap()
                    .unwrap_or(0);
                assert_eq!(n, 0, "closed");
                assert!(lines.borrow().iter().any(|l| l.contains("over the")));
            })
            .await;
    }
}
