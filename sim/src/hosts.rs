//! The software on each simulated host: database hosts (model mysqld + the real
//! engine and driver with simulated adapters), the EC2 API, and the clients.

use crate::mysqld::{self, Req, Resp};
use crate::wire;
use crate::world::{
    eni_id, host_name, in_history, instance_id, node_of, Acked, View, World, EC2_HOST, EC2_PORT,
    PEER_PORT, SALVAGE_PORT,
};
use multiaz_driver::frame::Envelope;
use multiaz_driver::retry::Backoff;
use multiaz_driver::vip_routes::{ApiError, Ec2Api, VipRoutes};
use multiaz_driver::{
    Adapters, Driver, DurableStore, MysqlOps, NoHooks, Observer, PeerTransport, Salvage, Written,
};
use multiaz_engine::{
    DurableState, Engine, Event, GtidSet, MysqlOp, MysqlReply, NodeId, PeerMessage, ProbeResult,
    SalvageReport, Time,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::mpsc;
use turmoil::net::{TcpListener, UdpSocket};

const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
const OP_TIMEOUT: Duration = Duration::from_secs(2);
const WAITING_OP_TIMEOUT: Duration = Duration::from_secs(9);

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

// ---- adapters -----------------------------------------------------------------------

#[derive(Clone)]
struct SimMysql;

impl MysqlOps for SimMysql {
    async fn probe(&self, node: NodeId) -> ProbeResult {
        match mysqld::ask(node, &Req::Probe, PROBE_TIMEOUT).await {
            Ok(Resp::Status(s)) => ProbeResult::Alive(Some(s)),
            Ok(other) => ProbeResult::Down(format!("unexpected answer {other:?}")),
            Err(e) => ProbeResult::Down(e),
        }
    }

    async fn op(&self, node: NodeId, op: MysqlOp) -> Result<MysqlReply, String> {
        let within = match op {
            MysqlOp::CatchUp { .. } | MysqlOp::WaitApplied { .. } => WAITING_OP_TIMEOUT,
            _ => OP_TIMEOUT,
        };
        match mysqld::ask(node, &Req::Op(op), within).await? {
            Resp::Op(r) => r,
            other => Err(format!("unexpected answer {other:?}")),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct SalvageReq {
    to: NodeId,
    after: GtidSet,
}

#[derive(Clone)]
struct SimSalvage;

impl Salvage for SimSalvage {
    async fn salvage(
        &self,
        _epoch: u64,
        from: NodeId,
        to: NodeId,
        after: GtidSet,
        within: Duration,
    ) -> Result<SalvageReport, String> {
        wire::call::<_, Result<SalvageReport, String>>(
            &host_name(from),
            SALVAGE_PORT,
            &SalvageReq { to, after },
            multiaz_driver::adapters::salvage_budget(within),
        )
        .await
        .map_err(|e| format!("salvage from {from}: {e}"))?
    }
}

/// The sidecar's salvage service: reads this host's binlog from disk (mysqld may be
/// dead) and applies what the new master lacks, with the original GTIDs.
async fn salvage_service(world: World, me: NodeId) {
    let listener = TcpListener::bind(("0.0.0.0", SALVAGE_PORT))
        .await
        .expect("bind salvage");
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let world = world.clone();
        tokio::task::spawn_local(async move {
            let Ok(req) = wire::recv::<SalvageReq>(&mut s).await else {
                return;
            };
            // Everything in this binlog that is not in the new master's history as
            // the very same transaction.
            let txns = world.mysqld(me, |m| {
                m.binlog
                    .iter()
                    .filter(|t| !in_history(&t.gtid, &req.after))
                    .cloned()
                    .collect::<Vec<_>>()
            });
            let gtids: Vec<String> = txns.iter().map(|t| t.gtid.to_string()).collect();
            let result = if txns.is_empty() {
                Ok(SalvageReport {
                    recovered: 0,
                    not_recovered: vec![],
                    stopped: None,
                })
            } else {
                match mysqld::ask(req.to, &Req::Apply { txns }, Duration::from_secs(3)).await {
                    Ok(Resp::Applied {
                        applied,
                        stopped_at,
                    }) => Ok(SalvageReport {
                        recovered: applied,
                        not_recovered: stopped_at.map(|i| gtids[i..].to_vec()).unwrap_or_default(),
                        stopped: stopped_at.map(|i| format!("{} was refused", gtids[i])),
                    }),
                    Ok(other) => Err(format!("unexpected answer {other:?}")),
                    Err(e) => Err(e),
                }
            };
            let _ = wire::send(&mut s, &result).await;
        });
    }
}

/// One EC2 API call, as the model API receives it.
#[derive(Debug, Serialize, Deserialize)]
pub enum Ec2Req {
    DescribeRoute { route_table: String },
    ReplaceRoute { route_table: String, eni: String },
    CreateRoute { route_table: String, eni: String },
    StopInstances { instance: String },
    DescribeSourceDestCheck { instance: String },
}

impl Ec2Req {
    /// The EC2 action: its token bucket's name.
    fn action(&self) -> &'static str {
        match self {
            Ec2Req::DescribeRoute { .. } => "DescribeRouteTables",
            Ec2Req::ReplaceRoute { .. } => "ReplaceRoute",
            Ec2Req::CreateRoute { .. } => "CreateRoute",
            Ec2Req::StopInstances { .. } => "StopInstances",
            Ec2Req::DescribeSourceDestCheck { .. } => "DescribeInstanceAttribute",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Ec2Answer {
    Target(Option<String>),
    Done,
    Check(bool),
}

/// An error answer: (code, message).
type Ec2Result = Result<Ec2Answer, (String, String)>;

/// The sidecar's EC2 adapter ([`VipRoutes`]: retry, confirm, classification) over the
/// model API: one attempt per call, bounded as the sidecar bounds one.
struct SimEc2;

impl SimEc2 {
    async fn call(&self, req: Ec2Req) -> Result<Ec2Answer, ApiError> {
        let within = Duration::from_millis(multiaz_driver::vip_routes::DEFAULT_ATTEMPT_TIMEOUT_MS);
        match wire::call::<_, Ec2Result>(EC2_HOST, EC2_PORT, &req, within).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err((code, message))) => Err(ApiError::service(&code, message)),
            // Lost on the way or not answered in time: the call may have been applied.
            Err(_) => Err(ApiError::timeout()),
        }
    }

    async fn done(&self, req: Ec2Req) -> Result<(), ApiError> {
        match self.call(req).await? {
            Ec2Answer::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

/// An answer of the wrong kind for the call.
fn unexpected(answer: Ec2Answer) -> ApiError {
    ApiError::service("ResponseError", format!("{answer:?}"))
}

impl Ec2Api for SimEc2 {
    async fn route_target(&self, route_table: &str, _: &str) -> Result<Option<String>, ApiError> {
        let route_table = route_table.to_string();
        match self.call(Ec2Req::DescribeRoute { route_table }).await? {
            Ec2Answer::Target(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }

    async fn replace_route(&self, route_table: &str, _: &str, eni: &str) -> Result<(), ApiError> {
        let (route_table, eni) = (route_table.to_string(), eni.to_string());
        self.done(Ec2Req::ReplaceRoute { route_table, eni }).await
    }

    async fn create_route(&self, route_table: &str, _: &str, eni: &str) -> Result<(), ApiError> {
        let (route_table, eni) = (route_table.to_string(), eni.to_string());
        self.done(Ec2Req::CreateRoute { route_table, eni }).await
    }

    async fn stop_instance(&self, instance: &str) -> Result<(), ApiError> {
        let instance = instance.to_string();
        self.done(Ec2Req::StopInstances { instance }).await
    }

    async fn source_dest_check(&self, instance: &str) -> Result<bool, ApiError> {
        let instance = instance.to_string();
        match self
            .call(Ec2Req::DescribeSourceDestCheck { instance })
            .await?
        {
            Ec2Answer::Check(c) => Ok(c),
            other => Err(unexpected(other)),
        }
    }
}

/// The sidecar's route adapter on the model API, with jitter from the seed.
fn sim_routes(world: &World, seed: u64) -> VipRoutes<SimEc2> {
    let (vip, nodes) = world.with(|w| {
        let nodes: Vec<NodeId> = w.spec.database_ids().collect();
        (w.spec.vip.address, nodes)
    });
    let rng = Rc::new(RefCell::new(ChaCha8Rng::seed_from_u64(seed)));
    let jitter = move |ceiling: Duration| {
        let f: f64 = rng.borrow_mut().random();
        ceiling.mul_f64(f)
    };
    VipRoutes::new(
        SimEc2,
        vip,
        nodes.iter().map(|&n| (n, eni_id(n))).collect(),
        nodes.iter().map(|&n| (n, instance_id(n))).collect(),
        Backoff::default(),
        Rc::new(jitter),
        Rc::new(|_: &str| {}),
    )
}

/// The model EC2 API: latency, token buckets and outage as the faults set them; route
/// changes land in the VPC's route tables (which the clients' traffic follows) and in
/// what DescribeRouteTables answers, each after a delay of its own.
pub async fn ec2_host(world: World) -> turmoil::Result {
    let listener = TcpListener::bind(("0.0.0.0", EC2_PORT)).await?;
    loop {
        let (mut s, _) = listener.accept().await?;
        let world = world.clone();
        tokio::task::spawn_local(async move {
            let Ok(req) = wire::recv::<Ec2Req>(&mut s).await else {
                return;
            };
            let latency = Duration::from_millis(30 + (world.random() * 120.0) as u64);
            tokio::time::sleep(latency).await;
            let (describe_roll, delay_roll, lose_roll) =
                (world.random(), world.random(), world.random());
            let result = world.with(|w| {
                w.hostile.ec2_calls += 1;
                if w.ec2.outage {
                    return Err(error("ServiceUnavailable", "the service is unavailable"));
                }
                if !w.ec2.take(req.action(), now()) {
                    w.hostile.ec2_throttled += 1;
                    return Err(error("RequestLimitExceeded", "Request limit exceeded."));
                }
                let table_exists = |rt: &String| -> Result<(), (String, String)> {
                    if w.described.contains_key(rt) {
                        return Ok(());
                    }
                    Err(error(
                        "InvalidRouteTableID.NotFound",
                        &format!("The routeTable ID '{rt}' does not exist"),
                    ))
                };
                match &req {
                    Ec2Req::DescribeRoute { route_table } => {
                        table_exists(route_table)?;
                        let seen = w.described.get(route_table).copied();
                        if seen != w.applied.get(route_table).copied() {
                            w.hostile.ec2_stale_route_reads += 1;
                        }
                        Ok(Ec2Answer::Target(seen.map(eni_id)))
                    }
                    Ec2Req::ReplaceRoute { route_table, eni }
                    | Ec2Req::CreateRoute { route_table, eni } => {
                        table_exists(route_table)?;
                        if matches!(req, Ec2Req::CreateRoute { .. }) {
                            return Err(error("RouteAlreadyExists", "the route exists"));
                        }
                        let Some(target) = node_of(eni).filter(|n| w.mysqld.contains_key(n)) else {
                            return Err(error("InvalidNetworkInterfaceID.NotFound", eni));
                        };
                        // Already there (a retry after a lost answer): nothing changes.
                        if w.applied.get(route_table) == Some(&target) {
                            return Ok(Ec2Answer::Done);
                        }
                        // Applied now; the data plane and the reads follow, each after a
                        // delay, unless a later change overtakes this one.
                        let change = w.route_changes.entry(route_table.clone()).or_default();
                        *change += 1;
                        let change = *change;
                        w.applied.insert(route_table.clone(), target);
                        let delays = [
                            (w.hostility.route_delay(delay_roll), false),
                            (w.hostility.describe_delay(describe_roll), true),
                        ];
                        for (delay, read) in delays {
                            let (world, route_table) = (world.clone(), route_table.clone());
                            tokio::task::spawn_local(async move {
                                tokio::time::sleep(delay).await;
                                world.with(|w| {
                                    if w.route_changes.get(&route_table) == Some(&change) {
                                        let view = if read {
                                            &mut w.described
                                        } else {
                                            &mut w.routes
                                        };
                                        view.insert(route_table, target);
                                    }
                                });
                            });
                        }
                        Ok(Ec2Answer::Done)
                    }
                    Ec2Req::StopInstances { instance } => match node_of(instance) {
                        Some(node) if w.mysqld.contains_key(&node) => {
                            w.stop_requests.push(node);
                            Ok(Ec2Answer::Done)
                        }
                        _ => Err(error("InvalidInstanceID.NotFound", instance)),
                    },
                    Ec2Req::DescribeSourceDestCheck { .. } => Ok(Ec2Answer::Check(false)),
                }
            });
            // An applied call whose answer is lost: the connection stays open, silent,
            // until the caller's attempt times out, and the caller retries.
            if result.is_ok() && lose_roll < world.with(|w| w.hostility.lost_answer) {
                world.with(|w| w.hostile.ec2_lost_answers += 1);
                let bound = multiaz_driver::vip_routes::DEFAULT_ATTEMPT_TIMEOUT_MS;
                tokio::time::sleep(Duration::from_millis(bound + 1_000)).await;
                return;
            }
            let _ = wire::send(&mut s, &result).await;
        });
    }
}

fn error(code: &str, message: &str) -> (String, String) {
    (code.to_string(), message.to_string())
}

/// Peer transport over UDP: one datagram per message. Raft and the lease tolerate loss
/// and reordering, and a datagram cannot stall behind a lost one as a simulated TCP
/// stream does after a partition (the real sidecar uses TCP, whose retransmission
/// recovers by itself).
struct SimPeers {
    queue: mpsc::UnboundedSender<(NodeId, PeerMessage)>,
}

impl SimPeers {
    fn start(me: NodeId, socket: Rc<UdpSocket>, world: World) -> Self {
        let (queue, mut rx) = mpsc::unbounded_channel::<(NodeId, PeerMessage)>();
        tokio::task::spawn_local(async move {
            while let Some((to, message)) = rx.recv().await {
                if world.with(|w| w.peers_cut.contains(&me) || w.peers_cut.contains(&to)) {
                    continue;
                }
                let env = Envelope { from: me, message };
                let Ok(bytes) = serde_json::to_vec(&env) else {
                    continue;
                };
                if bytes.len() > MAX_DATAGRAM {
                    continue;
                }
                let _ = socket
                    .send_to(&bytes, (host_name(to).as_str(), PEER_PORT))
                    .await;
            }
        });
        SimPeers { queue }
    }
}

impl PeerTransport for SimPeers {
    fn send(&self, to: NodeId, message: PeerMessage) {
        let _ = self.queue.send((to, message));
    }
}

const MAX_DATAGRAM: usize = 60_000;

async fn peer_listener(
    me: NodeId,
    socket: Rc<UdpSocket>,
    inbox: mpsc::UnboundedSender<(NodeId, PeerMessage)>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((n, addr)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        // The simulation's stand-in for authentication: the sender is the host the
        // datagram comes from.
        let Some(from) = turmoil::reverse_lookup(addr.ip())
            .and_then(|name| name.strip_prefix("db").and_then(|n| n.parse().ok()))
            .map(NodeId)
        else {
            continue;
        };
        let Ok(env) = serde_json::from_slice::<Envelope>(&buf[..n]) else {
            continue;
        };
        if env.from != from || from == me {
            continue;
        }
        if inbox.send((from, env.message)).is_err() {
            return;
        }
    }
}

struct SimStore {
    world: World,
    me: NodeId,
}

impl DurableStore for SimStore {
    fn persist(&mut self, state: &DurableState) -> Result<Written, String> {
        self.world
            .with(|w| w.durable.insert(self.me, state.clone()));
        Ok(Written::Now)
    }
}

struct SimObserver {
    world: World,
    me: NodeId,
}

impl Observer for SimObserver {
    fn event(&self, _now: Time, event: &Event) {
        self.world
            .with(|w| w.events.push((now(), self.me, event.clone())));
    }

    fn wall_unix_ms(&self) -> u64 {
        1_700_000_000_000 + now().as_millis() as u64
    }

    fn after_step(&self, engine: &Engine) {
        let r = engine.record();
        let view = View {
            epoch: r.epoch,
            master: r.master,
            failover: r.failover.is_some(),
            coordinator: engine.is_coordinator(),
            quarantined: r.quarantined.keys().copied().collect(),
        };
        self.world.with(|w| w.views.insert(self.me, view));
    }
}

/// The host's forwarding rules (the sidecar's nftables in the model): set after a
/// short delay, in the order asked (an older call that finishes late changes nothing).
#[derive(Clone)]
struct SimForward {
    world: World,
    me: NodeId,
    asked: Rc<std::cell::Cell<u64>>,
    applied: Rc<std::cell::Cell<u64>>,
}

impl SimForward {
    fn new(world: World, me: NodeId) -> Self {
        SimForward {
            world,
            me,
            asked: Rc::default(),
            applied: Rc::default(),
        }
    }
}

impl multiaz_driver::Forward for SimForward {
    fn forward(&self, to: Option<NodeId>) -> impl std::future::Future<Output = Result<(), String>> {
        // Numbered when asked, not when first polled.
        let n = self.asked.get() + 1;
        self.asked.set(n);
        let this = self.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if this.applied.get() > n {
                return Err("a later change was applied first".into());
            }
            this.applied.set(n);
            this.world.with(|w| match to {
                Some(to) => w.forward.insert(this.me, to),
                None => w.forward.remove(&this.me),
            });
            Ok(())
        }
    }
}

/// A database host: mysqld, the salvage service, and the sidecar.
pub async fn db_host(world: World, me: NodeId, seed: u64) -> turmoil::Result {
    world.mysqld(me, |m| m.start());
    // A boot: the kernel's forwarding rules are gone with the last one.
    world.with(|w| w.forward.remove(&me));
    tokio::task::spawn_local(mysqld::run(world.clone(), me));
    tokio::task::spawn_local(mysqld::vip(world.clone(), me));
    tokio::task::spawn_local(salvage_service(world.clone(), me));
    let (spec, durable) = world.with(|w| (w.spec.clone(), w.durable.get(&me).cloned()));
    let socket = Rc::new(UdpSocket::bind(("0.0.0.0", PEER_PORT)).await?);
    let (driver, handle) = Driver::new(
        spec.clone(),
        me,
        durable,
        Adapters {
            mysql: SimMysql,
            salvage: SimSalvage,
            routes: sim_routes(&world, seed),
            peers: SimPeers::start(me, socket.clone(), world.clone()),
            store: SimStore {
                world: world.clone(),
                me,
            },
            observer: SimObserver {
                world: world.clone(),
                me,
            },
            hooks: NoHooks,
            forward: SimForward::new(world.clone(), me),
        },
    )?;
    #[cfg(feature = "sabotage")]
    let driver = driver.with_engine(|e| e.sabotage(world.with(|w| w.sabotage)));
    let driver = match world.with(|w| w.log_limit) {
        Some(entries) => driver.with_engine(|e| e.set_log_limit(entries)),
        None => driver,
    };
    tokio::task::spawn_local(peer_listener(me, socket, handle.inbox.clone()));
    // The admin API: operator requests addressed to this sidecar.
    let operator = handle.operator.clone();
    let admin = world.clone();
    tokio::task::spawn_local(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let mine: Vec<_> = admin.with(|w| {
                let (mine, rest) = std::mem::take(&mut w.operator)
                    .into_iter()
                    .partition(|(n, _)| *n == me);
                w.operator = rest;
                mine
            });
            for (_, req) in mine {
                let _ = operator.send(req);
            }
        }
    });
    // The driver runs until the host is crashed (turmoil drops it) or stopped.
    let _handle = handle;
    driver.run().await?;
    Ok(())
}

/// A client in one AZ: writes through the VIP (its subnet's route table) and records
/// every write the database acknowledged.
pub async fn client_host(
    world: World,
    id: u32,
    route_table: String,
    every: Duration,
) -> turmoil::Result {
    let mut n = 0u64;
    let last_acked = Rc::new(std::cell::Cell::new(0u64));
    // A reader beside the writer: whichever server the VIP leads to must have this
    // client's newest write acknowledged before the read was sent (read-your-writes
    // through the VIP; a read_only server answers reads).
    {
        let (world, route_table, last_acked) =
            (world.clone(), route_table.clone(), last_acked.clone());
        tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(every * 5).await;
                let want = last_acked.get();
                let target = world.with(|w| w.routes.get(&route_table).copied());
                let Some(target) = target.filter(|_| want > 0) else {
                    continue;
                };
                if let Ok((server, Resp::ReadBack(seen))) = mysqld::ask_vip(
                    target,
                    &Req::ReadBack { client: id },
                    Duration::from_secs(2),
                )
                .await
                {
                    if seen < want {
                        world.with(|w| w.stale_reads.push((now(), id, server, seen, want)));
                    }
                }
            }
        });
    }
    loop {
        tokio::time::sleep(every).await;
        n += 1;
        let target = world.with(|w| w.routes.get(&route_table).copied());
        let Some(target) = target else { continue };
        if let Ok((server, Resp::Written(Ok(gtid)))) = mysqld::ask_vip(
            target,
            &Req::Write { client: id, n },
            Duration::from_secs(2),
        )
        .await
        {
            last_acked.set(n);
            world.with(|w| {
                w.acked.push(Acked {
                    at: now(),
                    client: id,
                    n,
                    server,
                    gtid,
                })
            });
        }
    }
}
