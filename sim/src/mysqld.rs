//! The model mysqld as network services on its host: the client/admin protocol, the
//! replication stream it serves, and its replica-side IO and SQL threads.
//!
//! Semi-sync AFTER_SYNC: a write is in the binlog first, and acknowledged to the client
//! only once a replica has acknowledged receiving it — or, when the server's semi-sync
//! timeout is shorter than forever (a setting `multiaz check` fails), once that timeout
//! passed: the fallback to asynchronous replication.
//!
//! GTID strict mode: a replica whose position (its last transaction per domain; MySQL:
//! its whole set) is not in the source's history is refused, as a real source refuses
//! it (error 1236), and retries.

use crate::wire;
use crate::world::{
    host_name, in_history, Gtid, Txn, World, MYSQL_PORT, REPLICATION_TIMEOUT, VIP_PORT,
};
use multiaz_engine::{
    GtidSet, MysqlOp, MysqlReply, MysqlStatus, NodeId, Positions, ReplicationStatus,
};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::mpsc;
use turmoil::net::{TcpListener, TcpStream};

/// How long an operation that waits (catch-up, relay apply) may take on the server.
const OP_WAIT: Duration = Duration::from_secs(8);
/// The replication heartbeat, and how long a replica waits before it calls the
/// connection dead (MASTER_HEARTBEAT_PERIOD, slave_net_timeout).
const HEARTBEAT: Duration = Duration::from_millis(500);
/// How often a stopped or failed IO thread tries again (MASTER_CONNECT_RETRY).
const CONNECT_RETRY: Duration = Duration::from_millis(1000);

#[derive(Debug, Serialize, Deserialize)]
pub enum Req {
    Probe,
    Op(MysqlOp),
    Write {
        client: u32,
        n: u64,
    },
    /// The newest write of `client` this server has (a read; read_only allows it).
    ReadBack {
        client: u32,
    },
    Subscribe {
        have: GtidSet,
    },
    Apply {
        txns: Vec<Txn>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Resp {
    Status(MysqlStatus),
    Op(Result<MysqlReply, String>),
    Written(Result<Gtid, String>),
    ReadBack(u64),
    /// Transactions applied; the index of the first one refused, if any.
    Applied {
        applied: u64,
        stopped_at: Option<usize>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
enum Stream {
    Txn(Txn),
    Heartbeat,
}

#[derive(Debug, Serialize, Deserialize)]
enum Ack {
    Got(Gtid),
    /// The answer to a heartbeat: the replica still hears this source.
    Alive,
}

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// Waits until `cond` holds (checked on every world change, and every 20 ms), or `within`.
async fn wait_for(world: &World, within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let changed = world.changed.notified();
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::select! {
            biased;
            _ = changed => {}
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// Runs this host's mysqld: the server, the IO thread and the SQL thread.
pub async fn run(world: World, me: NodeId) {
    tokio::task::spawn_local(io_thread(world.clone(), me));
    tokio::task::spawn_local(sql_thread(world.clone(), me));
    let listener = TcpListener::bind(("0.0.0.0", MYSQL_PORT))
        .await
        .expect("bind mysqld");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let alive = world.mysqld(me, |m| m.alive.then_some(m.incarnation));
        // A dead mysqld refuses: the connection closes at once.
        if let Some(incarnation) = alive {
            tokio::task::spawn_local(serve(world.clone(), me, incarnation, stream));
        }
    }
}

fn status(world: &World, me: NodeId) -> MysqlStatus {
    world.mysqld(me, |m| MysqlStatus {
        read_only: m.read_only,
        executed: m.executed.clone(),
        received: m.received(),
        replication: m.source.map(|s| ReplicationStatus {
            source: Some(s),
            io_running: m.io_running && m.io_connected,
            sql_running: m.sql_error.is_none(),
        }),
    })
}

fn positions(world: &World, me: NodeId) -> Positions {
    world.mysqld(me, |m| Positions {
        received: m.received(),
        executed: m.executed.clone(),
    })
}

async fn serve(world: World, me: NodeId, incarnation: u64, mut stream: TcpStream) {
    let Ok(req) = wire::recv::<Req>(&mut stream).await else {
        return;
    };
    let same = |w: &World| w.mysqld(me, |m| m.alive && m.incarnation == incarnation);
    let resp = match req {
        Req::Probe => Resp::Status(status(&world, me)),
        Req::ReadBack { client } => Resp::ReadBack(world.mysqld(me, |m| {
            m.binlog
                .iter()
                .rev()
                .find(|t| t.client == client)
                .map_or(0, |t| t.n)
        })),
        Req::Op(op) => Resp::Op(op_(&world, me, op, incarnation).await),
        Req::Write { client, n } => {
            let gtid = world.mysqld(me, |m| {
                if m.read_only {
                    return Err("--read-only option: the server is read only".to_string());
                }
                let gtid = m.next_gtid();
                m.apply(Txn { gtid, client, n });
                Ok((gtid, m.semi_sync_source))
            });
            world.changed.notify_waiters();
            match gtid {
                Err(e) => Resp::Written(Err(e)),
                Ok((gtid, semi_sync)) => {
                    // Wait for a replica's acknowledgement for as long as the client
                    // waits (bounded here only to end the task), or the server's own
                    // semi-sync timeout, after which it falls back to async.
                    let (timeout, fallback, already_async) =
                        world.mysqld(me, |m| match m.config.semi_sync_timeout_ms {
                            Some(ms) => (Duration::from_millis(ms), true, m.async_fallback),
                            None => (Duration::from_secs(30), false, false),
                        });
                    let acked = !semi_sync
                        || already_async
                        || wait_for(&world, timeout, || {
                            // A killed mysqld drops the connection at once.
                            world.mysqld(me, |m| {
                                m.acked.contains(&gtid) || m.incarnation != incarnation
                            })
                        })
                        .await
                        || (fallback
                            && world.mysqld(me, |m| {
                                m.async_fallback = m.incarnation == incarnation;
                                m.async_fallback
                            }));
                    if !same(&world) {
                        return;
                    }
                    if acked {
                        // The semi-sync promise, judged when the server acknowledges:
                        // a replica acknowledged receiving this very transaction, or
                        // another server has it.
                        world.with(|w| {
                            let replicated =
                                w.mysqld.get(&me).is_some_and(|m| m.acked.contains(&gtid))
                                    || w.mysqld
                                        .iter()
                                        .any(|(n, m)| *n != me && m.has_exactly(&gtid));
                            if !replicated {
                                w.unreplicated.insert(gtid);
                            }
                        });
                        Resp::Written(Ok(gtid))
                    } else {
                        Resp::Written(Err("semi-sync: no acknowledgement".into()))
                    }
                }
            }
        }
        Req::Subscribe { have } => {
            if !world.mysqld(me, |m| position_in_history(&have, &m.executed)) {
                // Strict mode: the replica holds what this source never wrote.
                return;
            }
            return stream_binlog(world, me, incarnation, have, stream).await;
        }
        Req::Apply { txns } => {
            // In order, each whole; stop at the first whose sequence number this server
            // already holds from another writer (applying past it would splice two
            // histories).
            let (applied, stopped_at) = world.mysqld(me, |m| {
                let mut n = 0u64;
                for (i, t) in txns.into_iter().enumerate() {
                    if m.binlog.iter().any(|b| b.gtid == t.gtid) {
                        continue;
                    }
                    if t.gtid.is_in(&m.executed) {
                        return (n, Some(i));
                    }
                    m.apply(t);
                    n += 1;
                }
                (n, None)
            });
            world.changed.notify_waiters();
            Resp::Applied {
                applied,
                stopped_at,
            }
        }
    };
    if same(&world) {
        let _ = wire::send(&mut stream, &resp).await;
    }
}

async fn op_(
    world: &World,
    me: NodeId,
    op: MysqlOp,
    incarnation: u64,
) -> Result<MysqlReply, String> {
    let r = match op {
        MysqlOp::SetReadOnly => {
            world.mysqld(me, |m| m.read_only = true);
            MysqlReply::Done
        }
        MysqlOp::SetWritable => {
            // As the real adapter: semi-sync source on first, then writable.
            let keep = semi_sync_sabotaged(world);
            world.mysqld(me, |m| {
                m.semi_sync_source = m.semi_sync_source || !keep;
                m.read_only = false;
            });
            MysqlReply::Done
        }
        MysqlOp::FenceReplica => {
            world.mysqld(me, |m| m.io_running = false);
            MysqlReply::Positions(positions(world, me))
        }
        MysqlOp::CatchUp { source, until } => {
            world.mysqld(me, |m| {
                m.source = Some(source);
                m.io_running = true;
            });
            world.changed.notify_waiters();
            let ok = wait_for(world, OP_WAIT, || {
                world.mysqld(me, |m| m.executed.contains(&until))
            })
            .await;
            world.mysqld(me, |m| m.io_running = false);
            if !ok {
                return Err(format!("catch-up from {source} did not reach {until}"));
            }
            MysqlReply::Positions(positions(world, me))
        }
        MysqlOp::WaitApplied { until } => {
            let ok = wait_for(world, OP_WAIT, || {
                world.mysqld(me, |m| m.executed.contains(&until))
            })
            .await;
            if !ok {
                return Err(format!("relay log not applied up to {until}"));
            }
            MysqlReply::Positions(positions(world, me))
        }
        MysqlOp::Demote { .. } => {
            // Writes apply at once in the model: nothing runs past read_only.
            world.mysqld(me, |m| m.read_only = true);
            MysqlReply::Positions(positions(world, me))
        }
        MysqlOp::Promote => {
            world.with(|w| w.check_promotion(me, now()));
            let keep = semi_sync_sabotaged(world);
            world.mysqld(me, |m| {
                m.source = None;
                m.io_running = false;
                m.relay.clear();
                m.read_only = false;
                m.semi_sync_source = m.semi_sync_source || !keep;
            });
            MysqlReply::Done
        }
        MysqlOp::Repoint { source } => {
            // As the real adapter: nothing to do when already replicating from there;
            // otherwise CHANGE MASTER, which starts a new relay log (the old one is
            // deleted, unapplied or not, and any SQL thread error with it).
            world.mysqld(me, |m| {
                m.read_only = true;
                let already = m.source == Some(source)
                    && m.io_running
                    && m.io_connected
                    && m.sql_error.is_none();
                if !already {
                    m.source = Some(source);
                    m.io_running = true;
                    m.semi_sync_source = false;
                    m.relay.clear();
                    m.sql_error = None;
                }
            });
            world.changed.notify_waiters();
            MysqlReply::Done
        }
    };
    if world.mysqld(me, |m| m.alive && m.incarnation == incarnation) {
        Ok(r)
    } else {
        Err("connection lost".into())
    }
}

/// The negative control `semi-sync-on-writable`: the model adapter leaves semi-sync as
/// it finds it when it makes a server writable.
fn semi_sync_sabotaged(world: &World) -> bool {
    world.with(|w| w.sabotage == Some(multiaz_engine::Sabotage::SemiSyncOnWritable))
}

/// A replica's position is in this source's history: MariaDB, its last transaction in
/// each domain is one the source has (same server, same sequence number); MySQL, the
/// source has every transaction it has.
fn position_in_history(have: &GtidSet, source: &GtidSet) -> bool {
    match have {
        GtidSet::Mariadb(h) => h.domains().all(|(domain, pos)| {
            let seq = pos.seqs.last().unwrap_or(0);
            let gtid = Gtid::Mariadb {
                domain: *domain,
                server: pos.server_id(),
                seq,
            };
            seq == 0 || in_history(&gtid, source)
        }),
        GtidSet::Mysql(_) => source.contains(have),
    }
}

/// Serves a replica: every binlog transaction it lacks, then new ones as they come,
/// with heartbeats; its acknowledgements feed semi-sync.
async fn stream_binlog(
    world: World,
    me: NodeId,
    incarnation: u64,
    have: GtidSet,
    stream: TcpStream,
) {
    let (mut rd, mut wr) = stream.into_split();
    let heard_from = Rc::new(Cell::new(now()));
    let acks = {
        let world = world.clone();
        let heard = heard_from.clone();
        tokio::task::spawn_local(async move {
            while let Ok(ack) = wire::recv::<Ack>(&mut rd).await {
                heard.set(now());
                if let Ack::Got(g) = ack {
                    world.mysqld(me, |m| {
                        m.acked.insert(g);
                        m.async_fallback = false;
                    });
                }
                world.changed.notify_waiters();
            }
        })
    };
    let mut pos = 0usize;
    let same = |w: &World| w.mysqld(me, |m| m.alive && m.incarnation == incarnation);
    let heard = heard_from.clone();
    'serve: loop {
        let changed = world.changed.notified();
        if !same(&world) {
            break;
        }
        // The replica answers every heartbeat: silence means the stream is dead
        // (a lost segment stalls a simulated TCP stream for good).
        if now().saturating_sub(heard.get()) > REPLICATION_TIMEOUT {
            break;
        }
        let fresh: Vec<Txn> = world.mysqld(me, |m| {
            let out = m.binlog[pos..]
                .iter()
                .filter(|t| !t.gtid.is_in(&have))
                .cloned()
                .collect();
            pos = m.binlog.len();
            out
        });
        if fresh.is_empty() {
            tokio::select! {
                biased;
                _ = changed => continue,
                _ = tokio::time::sleep(HEARTBEAT) => {
                    if wire::send(&mut wr, &Stream::Heartbeat).await.is_err() {
                        break;
                    }
                }
            }
        }
        for t in fresh {
            if wire::send(&mut wr, &Stream::Txn(t)).await.is_err() {
                break 'serve;
            }
        }
    }
    acks.abort();
}

/// The replica's IO thread: connects to its source, receives into the relay log,
/// acknowledges each transaction.
async fn io_thread(world: World, me: NodeId) {
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let cfg = world.mysqld(me, |m| {
            (m.alive && m.io_running)
                .then_some(m.source)
                .flatten()
                .map(|s| (s, m.incarnation))
        });
        let Some((source, incarnation)) = cfg else {
            world.mysqld(me, |m| m.io_connected = false);
            continue;
        };
        let still = |w: &World| {
            w.mysqld(me, |m| {
                m.alive && m.io_running && m.source == Some(source) && m.incarnation == incarnation
            })
        };
        // STOP SLAVE kills the IO thread's connection attempt and its retry wait
        // (MariaDB's THD::awake force-kills the connection, MDEV-32892): a replica
        // repointed away from a dead source connects to the new one at once.
        let host = host_name(source);
        let connect = wire::connect(&host, MYSQL_PORT, REPLICATION_TIMEOUT);
        let stream = tokio::select! {
            r = connect => r,
            _ = reconfigured(&world, &still) => continue,
        };
        let Ok(stream) = stream else {
            retry_wait(&world, &still).await;
            continue;
        };
        let (mut rd, mut wr) = stream.into_split();
        let have = world.mysqld(me, |m| m.received());
        if wire::send(&mut wr, &Req::Subscribe { have }).await.is_err() {
            retry_wait(&world, &still).await;
            continue;
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let reader = tokio::task::spawn_local(async move {
            while let Ok(m) = wire::recv::<Stream>(&mut rd).await {
                if tx.send(m).is_err() {
                    break;
                }
            }
        });
        let mut connected = false;
        let mut last = tokio::time::Instant::now();
        loop {
            let msg = tokio::select! {
                biased;
                m = rx.recv() => m,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    // A silent source (crashed host, partition) is dead after REPLICATION_TIMEOUT.
                    if still(&world) && last.elapsed() < REPLICATION_TIMEOUT { continue } else { break }
                }
            };
            let Some(msg) = msg else { break };
            last = tokio::time::Instant::now();
            if !still(&world) {
                break;
            }
            if !connected {
                connected = true;
                world.mysqld(me, |m| m.io_connected = true);
            }
            let ack = match msg {
                Stream::Heartbeat => Ack::Alive,
                Stream::Txn(t) => {
                    let g = t.gtid;
                    // Stored unless this very transaction is here already; one that
                    // only shares a sequence number is stored too (the IO thread does
                    // not check), and stops the SQL thread when its turn comes.
                    world.mysqld(me, |m| {
                        if !m.has_exactly(&g) {
                            m.relay.push_back((now(), t));
                        }
                    });
                    Ack::Got(g)
                }
            };
            if wire::send(&mut wr, &ack).await.is_err() {
                break;
            }
        }
        reader.abort();
        world.mysqld(me, |m| m.io_connected = false);
        if !connected {
            // Refused (or the source went away at once): MASTER_CONNECT_RETRY.
            retry_wait(&world, &still).await;
        }
    }
}

/// Returns once the IO thread's configuration is no longer the one `still` checks.
async fn reconfigured(world: &World, still: &impl Fn(&World) -> bool) {
    while still(world) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// MASTER_CONNECT_RETRY, cut short when the IO thread is stopped or repointed.
async fn retry_wait(world: &World, still: &impl Fn(&World) -> bool) {
    tokio::select! {
        _ = tokio::time::sleep(CONNECT_RETRY) => {}
        _ = reconfigured(world, still) => {}
    }
}

/// The replica's SQL thread: applies the relay log in order, after the node's lag.
async fn sql_thread(world: World, me: NodeId) {
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let t = now();
        let mut stopped = None;
        let applied = world.mysqld(me, |m| {
            let mut n = 0;
            while m.alive
                && m.sql_error.is_none()
                && m.relay
                    .front()
                    .is_some_and(|(at, _)| t >= *at + m.config.apply_lag())
            {
                let Some((at, txn)) = m.relay.pop_front() else {
                    break;
                };
                if let Err(txn) = m.apply_relayed(txn) {
                    m.relay.push_front((at, txn));
                    stopped = m.sql_error.clone();
                    break;
                }
                n += 1;
            }
            n
        });
        if applied > 0 {
            world.changed.notify_waiters();
        }
        if let Some(e) = stopped {
            world.with(|w| w.hostile.sql_thread_stops += 1);
            world.note(format!("{me}: SQL thread stopped: {e}"));
        }
    }
}

/// Connects to `node`'s mysqld and asks one thing.
/// The VIP on a database host, as its kernel handles it: a connection goes to the
/// host's own mysqld, or to the node its sidecar forwards to (a relay of the bytes,
/// over the network the faults act on). Its first frame names the server that answers,
/// so that a client knows who acknowledged its write.
pub async fn vip(world: World, me: NodeId) {
    let listener = TcpListener::bind(("0.0.0.0", VIP_PORT))
        .await
        .expect("bind the VIP");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::task::spawn_local(vip_connection(world.clone(), me, stream));
    }
}

async fn vip_connection(world: World, me: NodeId, mut stream: TcpStream) {
    match world.with(|w| w.forward.get(&me).copied()) {
        Some(to) => {
            let Ok(mut onward) =
                wire::connect(&host_name(to), MYSQL_PORT, REPLICATION_TIMEOUT).await
            else {
                return;
            };
            if wire::send(&mut stream, &to).await.is_ok() {
                let _ = tokio::io::copy_bidirectional(&mut stream, &mut onward).await;
            }
        }
        None => {
            let Some(incarnation) = world.mysqld(me, |m| m.alive.then_some(m.incarnation)) else {
                return;
            };
            if wire::send(&mut stream, &me).await.is_ok() {
                serve(world, me, incarnation, stream).await;
            }
        }
    }
}

/// One request through the VIP at `host` (where a route table leads): the answer, and
/// the server that gave it.
pub async fn ask_vip(host: NodeId, req: &Req, within: Duration) -> Result<(NodeId, Resp), String> {
    let work = async {
        let mut s = TcpStream::connect((host_name(host).as_str(), VIP_PORT)).await?;
        let server: NodeId = wire::recv(&mut s).await?;
        wire::send(&mut s, req).await?;
        Ok::<_, std::io::Error>((server, wire::recv(&mut s).await?))
    };
    match tokio::time::timeout(within, work).await {
        Ok(r) => r.map_err(|e| format!("VIP at {host}: {e}")),
        Err(_) => Err(format!("VIP at {host}: no answer in time")),
    }
}

pub async fn ask(node: NodeId, req: &Req, within: Duration) -> Result<Resp, String> {
    wire::call(&host_name(node), MYSQL_PORT, req, within)
        .await
        .map_err(|e| format!("{node}: {e}"))
}
