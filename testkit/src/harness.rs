//! An in-process cluster for engine tests: engines on a message pump with cuts and
//! crashes, a model mysqld per database node (MariaDB GTIDs, semi-sync, read_only,
//! IO/SQL threads), model route tables, and a client writing through the VIP.
//!
//! Everything advances in fixed steps of simulated time; nothing reads a clock, so a
//! scenario replays exactly.

use crate::spec::ThreeAzs;
use multiaz_engine::gtid::MariadbGtidSet;
use multiaz_engine::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

pub const STEP: Duration = Duration::from_millis(5);
/// How long an operation on an unreachable server takes to fail (the driver's timeout).
pub const UNREACHABLE_TIMEOUT: Duration = Duration::from_millis(500);

/// The harness's cluster: three database nodes, `promotions` and `client_az` as given.
/// Tests fail over again and again; the anti-flapping block has tests of its own, so it
/// is off here.
pub fn spec_with(promotions: [PromotionRule; 3], client_az: Option<&str>) -> ClusterSpec {
    ThreeAzs {
        promotions,
        client_az: client_az.map(str::to_string),
        timing: timing(),
        ..ThreeAzs::default()
    }
    .build()
}

/// The default timing without the anti-flapping block.
fn timing() -> Timing {
    Timing {
        failover_block_ms: 0,
        ..Timing::default()
    }
}

/// Two database hosts and a witness sidecar in a third AZ.
pub fn spec_witness() -> ClusterSpec {
    ThreeAzs {
        witness: true,
        timing: timing(),
        ..ThreeAzs::default()
    }
    .build()
}

/// `server_id`'s transaction `seq` (domain 0) is in `set` as that very transaction:
/// the sequence number is there and that server had written up to it in this history
/// (as `gtid_binlog_state` tells per server).
pub fn in_history(set: &MariadbGtidSet, server_id: u32, seq: u64) -> bool {
    set.domain(0).is_some_and(|d| {
        d.seqs.contains(seq) && d.servers.get(&server_id).is_some_and(|last| *last >= seq)
    })
}

/// What `replica` holds that is not in `master`'s history: for each server that wrote
/// to it, its newest transaction from that server (errant transactions, as near as the
/// harness's positions tell).
pub fn errant(replica: &MariadbGtidSet, master: &MariadbGtidSet) -> Vec<(u32, u64)> {
    replica
        .domain(0)
        .map(|d| {
            d.servers
                .iter()
                .filter(|(sid, last)| !in_history(master, **sid, **last))
                .map(|(sid, last)| (*sid, *last))
                .collect()
        })
        .unwrap_or_default()
}

pub fn spec() -> ClusterSpec {
    spec_with([PromotionRule::Neutral; 3], None)
}

#[derive(Debug, Clone)]
pub struct Mysqld {
    pub server_id: u32,
    pub alive: bool,
    pub read_only: bool,
    pub executed: MariadbGtidSet,
    pub received: MariadbGtidSet,
    pub source: Option<NodeId>,
    pub io_running: bool,
    /// A test holds the IO thread off (a lagging replica), whatever the engine asks.
    pub io_held: bool,
    /// A test holds the SQL thread off (a slow applier): what the IO thread received
    /// waits in the relay log until the engine waits for it (`WaitApplied`).
    pub sql_held: bool,
}

impl Mysqld {
    fn status(&self, reachable_source: bool) -> MysqlStatus {
        MysqlStatus {
            read_only: self.read_only,
            executed: GtidSet::Mariadb(self.executed.clone()),
            received: GtidSet::Mariadb(self.received.union(&self.executed)),
            replication: self.source.map(|s| ReplicationStatus {
                source: Some(s),
                io_running: self.io_running && !self.io_held && reachable_source,
                sql_running: true,
            }),
        }
    }

    fn positions(&self) -> Positions {
        Positions {
            received: GtidSet::Mariadb(self.received.union(&self.executed)),
            executed: GtidSet::Mariadb(self.executed.clone()),
        }
    }
}

pub struct Node {
    pub engine: Option<Engine>,
    /// When the running sidecar started (`None`: not running).
    pub sidecar_since: Option<Time>,
    pub durable: DurableState,
    pub mysqld: Mysqld,
    pub host_up: bool,
    /// Every input this node's engine was given, for the replay test.
    pub inputs: Vec<(Time, Input)>,
}

enum Due {
    Message {
        from: NodeId,
        to: NodeId,
        message: PeerMessage,
    },
    Result {
        to: NodeId,
        id: CommandId,
        result: CommandResult,
    },
}

pub struct Sim {
    pub spec: ClusterSpec,
    pub now: Time,
    pub nodes: BTreeMap<NodeId, Node>,
    /// Directed links that drop traffic.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Raft snapshot messages still to be lost on the way (the transport drops them).
    pub lose_snapshots: usize,
    /// Lease grants sent before this instant are lost on the way.
    pub lose_lease_grants_until: Option<Time>,
    queue: VecDeque<(Time, u64, Due)>,
    seq: u64,
    pub routes: BTreeMap<String, NodeId>,
    pub api_down: bool,
    /// Host → node its sidecar forwards the VIP's traffic to (a crash clears it).
    pub forward: BTreeMap<NodeId, NodeId>,
    /// Hosts whose forwarding cannot be set (no `nft`, say): every change fails.
    pub forward_broken: BTreeSet<NodeId>,
    /// (time, issuing node, command), every command any engine issued.
    pub commands: Vec<(Time, NodeId, Command)>,
    pub events: Vec<(Time, NodeId, Event)>,
    /// Writes acknowledged to the client: (server, seq).
    pub acked: Vec<(u32, u64)>,
    /// Instants at which two mysqlds were writable at once.
    pub two_writers: Vec<(Time, Vec<NodeId>)>,
    /// Instants at which two mysqlds could acknowledge a write at once (writable, with
    /// a semi-sync replica attached): split brain.
    pub two_ackers: Vec<(Time, Vec<NodeId>)>,
    /// Instants at which two mysqlds were writable while each had a sidecar that had
    /// been running for two probe intervals: never two writable, except near a sidecar
    /// crash or restart (a sidecar that is down, or has not yet probed, cannot fence).
    pub two_writers_fenceable: Vec<(Time, Vec<NodeId>)>,
    /// Every acknowledged write: when, and which server acknowledged it.
    pub ack_log: Vec<(Time, NodeId)>,
    pub write_every: Option<Duration>,
    next_write: Time,
    /// Every hook the engines asked for.
    pub hooks: Vec<(Time, NodeId, HookCall)>,
    /// Hook points whose (configured) command fails and vetoes.
    pub veto: BTreeSet<HookPoint>,
}

impl Sim {
    pub fn new(spec: ClusterSpec) -> Sim {
        let now = Time::ZERO;
        let master = spec.initial_master;
        let mut nodes = BTreeMap::new();
        for n in &spec.nodes {
            let engine = Engine::new(spec.clone(), n.id, None, now).unwrap();
            let is_master = n.id == master;
            nodes.insert(
                n.id,
                Node {
                    engine: Some(engine),
                    sidecar_since: Some(now),
                    durable: DurableState::default(),
                    mysqld: Mysqld {
                        server_id: n.id.0 as u32,
                        alive: n.is_database(),
                        // Every server starts read_only; the sidecar makes the master
                        // writable once it holds the lease.
                        read_only: true,
                        executed: MariadbGtidSet::default(),
                        received: MariadbGtidSet::default(),
                        source: (!is_master && n.is_database()).then_some(master),
                        io_running: !is_master && n.is_database(),
                        io_held: false,
                        sql_held: false,
                    },
                    host_up: true,
                    inputs: Vec::new(),
                },
            );
        }
        let routes = spec
            .vip
            .route_tables
            .iter()
            .map(|t| (t.clone(), master))
            .collect();
        Sim {
            spec,
            now,
            nodes,
            cut: BTreeSet::new(),
            lose_snapshots: 0,
            lose_lease_grants_until: None,
            queue: VecDeque::new(),
            seq: 0,
            routes,
            api_down: false,
            forward: BTreeMap::new(),
            forward_broken: BTreeSet::new(),
            commands: Vec::new(),
            events: Vec::new(),
            acked: Vec::new(),
            two_writers: Vec::new(),
            two_ackers: Vec::new(),
            two_writers_fenceable: Vec::new(),
            ack_log: Vec::new(),
            write_every: Some(Duration::from_millis(50)),
            next_write: now,
            hooks: Vec::new(),
            veto: BTreeSet::new(),
        }
    }

    /// A running cluster: the master writable and some writes replicated.
    pub fn started(spec: ClusterSpec) -> Sim {
        let mut sim = Sim::new(spec);
        let ok = sim.run_until(Duration::from_secs(15), |s| {
            s.writable().len() == 1 && s.acked.len() >= 20
        });
        assert!(ok, "cluster did not start: writable {:?}", sim.writable());
        sim
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn linked(&self, a: NodeId, b: NodeId) -> bool {
        a == b
            || (self.nodes[&a].host_up
                && self.nodes[&b].host_up
                && !self.cut.contains(&(a, b))
                && !self.cut.contains(&(b, a)))
    }

    // ---- faults ---------------------------------------------------------------------

    pub fn kill_mysqld(&mut self, n: NodeId) {
        self.nodes.get_mut(&n).unwrap().mysqld.alive = false;
    }

    /// mysqld starts again, read_only (as its my.cnf says), replicating as before.
    pub fn restart_mysqld(&mut self, n: NodeId) {
        let node = self.nodes.get_mut(&n).unwrap();
        if node.host_up {
            node.mysqld.alive = true;
            node.mysqld.read_only = true;
            // skip_slave_start: the sidecars decide whom it replicates from.
            node.mysqld.io_running = false;
        }
    }

    pub fn crash_sidecar(&mut self, n: NodeId) {
        let node = self.nodes.get_mut(&n).unwrap();
        node.engine = None;
        node.sidecar_since = None;
    }

    pub fn restart_sidecar(&mut self, n: NodeId) {
        let node = self.nodes.get_mut(&n).unwrap();
        node.engine =
            Some(Engine::new(self.spec.clone(), n, Some(&node.durable), self.now).unwrap());
        node.sidecar_since = Some(self.now);
    }

    pub fn crash_host(&mut self, n: NodeId) {
        let node = self.nodes.get_mut(&n).unwrap();
        node.host_up = false;
        self.forward.remove(&n);
        node.engine = None;
        node.sidecar_since = None;
        node.mysqld.alive = false;
    }

    /// The host boots again after [`Self::crash_host`]: mysqld starts read_only, its
    /// sidecar from its durable state.
    pub fn boot_host(&mut self, n: NodeId) {
        self.nodes.get_mut(&n).unwrap().host_up = true;
        self.restart_mysqld(n);
        self.restart_sidecar(n);
    }

    pub fn isolate(&mut self, n: NodeId) {
        for other in self.ids() {
            if other != n {
                self.cut.insert((n, other));
                self.cut.insert((other, n));
            }
        }
    }

    pub fn cut_both(&mut self, a: NodeId, b: NodeId) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// An operator request given to `n`'s sidecar.
    pub fn operator(&mut self, n: NodeId, req: OperatorRequest) {
        self.input(n, Input::Operator(req));
    }

    pub fn hold_io(&mut self, n: NodeId, held: bool) {
        self.nodes.get_mut(&n).unwrap().mysqld.io_held = held;
    }

    // ---- observation ----------------------------------------------------------------

    pub fn writable(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.mysqld.alive && !n.mysqld.read_only)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn engine(&self, n: NodeId) -> &Engine {
        self.nodes[&n].engine.as_ref().expect("sidecar running")
    }

    pub fn record(&self, n: NodeId) -> &ClusterRecord {
        self.engine(n).record()
    }

    pub fn coordinator(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|(_, n)| n.engine.as_ref().is_some_and(|e| e.is_coordinator()))
            .map(|(id, _)| *id)
    }

    /// (time, coordinator, target) of every Promote issued.
    pub fn promotions(&self) -> Vec<(Time, NodeId, NodeId)> {
        self.commands
            .iter()
            .filter_map(|(t, by, c)| match c {
                Command::Mysql {
                    node,
                    op: MysqlOp::Promote,
                    ..
                } => Some((*t, *by, *node)),
                _ => None,
            })
            .collect()
    }

    pub fn count_commands(&self, f: impl Fn(&Command) -> bool) -> usize {
        self.commands.iter().filter(|(_, _, c)| f(c)).count()
    }

    pub fn has_event(&self, f: impl Fn(&Event) -> bool) -> bool {
        self.events.iter().any(|(_, _, e)| f(e))
    }

    /// Acknowledged writes missing from `n`'s mysqld (executed or in its relay log), by
    /// exact GTID: the same
    /// sequence number written by another server (a diverged history) does not count
    /// as the acknowledged write.
    pub fn lost_acked(&self, n: NodeId) -> Vec<(u32, u64)> {
        // What it received counts: its SQL thread applies the relay log.
        let m = &self.nodes[&n].mysqld;
        let has = m.executed.union(&m.received);
        self.acked
            .iter()
            .filter(|(sid, seq)| !in_history(&has, *sid, *seq))
            .copied()
            .collect()
    }

    pub fn hold_sql(&mut self, n: NodeId, held: bool) {
        self.nodes.get_mut(&n).unwrap().mysqld.sql_held = held;
    }

    /// A one-line-per-command trace, for determinism checks.
    pub fn trace(&self) -> String {
        let mut s = String::new();
        for (t, n, c) in &self.commands {
            s.push_str(&format!("{t:?} {n} {c:?}\n"));
        }
        s
    }

    // ---- running --------------------------------------------------------------------

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.now < until {
            self.step();
        }
    }

    /// Runs until `pred` holds (checked each step) or `limit` passes; returns whether it held.
    pub fn run_until(&mut self, limit: Duration, pred: impl Fn(&Sim) -> bool) -> bool {
        let until = self.now + limit;
        while self.now < until {
            self.step();
            if pred(self) {
                return true;
            }
        }
        false
    }

    fn step(&mut self) {
        self.now = self.now + STEP;
        self.replicate();
        self.client_write();
        // Deliver everything due, in order of scheduling.
        let mut due = Vec::new();
        let mut rest = VecDeque::new();
        while let Some(item) = self.queue.pop_front() {
            if item.0 <= self.now {
                due.push(item);
            } else {
                rest.push_back(item);
            }
        }
        self.queue = rest;
        due.sort_by_key(|(t, seq, _)| (*t, *seq));
        for (_, _, d) in due {
            match d {
                Due::Message { from, to, message } => {
                    if self.linked(from, to) {
                        self.input(to, Input::Peer { from, message });
                    }
                }
                Due::Result { to, id, result } => self.input(to, Input::Done { id, result }),
            }
        }
        for id in self.ids() {
            let wall = 1_700_000_000_000 + self.now.as_millis();
            self.input(id, Input::Tick { wall_unix_ms: wall });
            // A deadline at or before the tick just handled would make a driver spin
            // without letting time pass.
            if let Some(e) = &self.nodes[&id].engine {
                assert!(
                    e.next_deadline() > self.now,
                    "{id}: deadline {:?} not after {:?}",
                    e.next_deadline(),
                    self.now
                );
            }
        }
        let w = self.writable();
        if w.len() > 1 {
            let ackers: Vec<NodeId> = w
                .iter()
                .copied()
                .filter(|m| self.acker(*m).is_some())
                .collect();
            if ackers.len() > 1 {
                self.two_ackers.push((self.now, ackers));
            }
            let fenceable = w.iter().all(|m| {
                self.nodes[m].sidecar_since.is_some_and(|since| {
                    self.now.since(since) >= self.spec.timing.probe_interval() * 2
                })
            });
            if fenceable {
                self.two_writers_fenceable.push((self.now, w.clone()));
            }
            self.two_writers.push((self.now, w));
        }
    }

    fn input(&mut self, n: NodeId, input: Input) {
        let now = self.now;
        let node = self.nodes.get_mut(&n).unwrap();
        let Some(engine) = node.engine.as_mut() else {
            return;
        };
        node.inputs.push((now, input.clone()));
        engine.handle(now, input);
        let cmds = engine.take_commands();
        for c in cmds {
            self.execute(n, c);
        }
    }

    fn schedule(&mut self, after: Duration, due: Due) {
        self.seq += 1;
        self.queue.push_back((self.now + after, self.seq, due));
    }

    fn result(&mut self, to: NodeId, id: CommandId, after: Duration, result: CommandResult) {
        self.schedule(after, Due::Result { to, id, result });
    }

    fn replicate(&mut self) {
        // The SQL thread applies what the IO thread received, connected or not.
        for node in self.nodes.values_mut() {
            let m = &mut node.mysqld;
            if m.alive && m.source.is_some() && !m.sql_held {
                m.executed = m.executed.union(&m.received);
            }
        }
        for id in self.ids() {
            let r = &self.nodes[&id].mysqld;
            let Some(src) = r.source else { continue };
            if !r.alive || !r.io_running || r.io_held || !self.linked(id, src) {
                continue;
            }
            let s = &self.nodes[&src].mysqld;
            if !s.alive {
                continue;
            }
            let got = s.executed.clone();
            let r = &mut self.nodes.get_mut(&id).unwrap().mysqld;
            r.received = r.received.union(&got);
            if !r.sql_held {
                r.executed = r.executed.union(&r.received);
            }
        }
    }

    /// The client in AZ a writes through the VIP; a write is acknowledged when the
    /// target is writable and a replica received it (semi-sync, no async fallback).
    fn client_write(&mut self) {
        let Some(every) = self.write_every else {
            return;
        };
        if self.now < self.next_write {
            return;
        }
        self.next_write = self.now + every;
        self.write_through_vip();
    }

    /// One write through the VIP as a client in `rtb-a`'s subnet sends it: to the host
    /// the route leads to, and on from there if that host forwards.
    pub fn write_through_vip(&mut self) -> bool {
        let Some(target) = self.vip_server() else {
            return false;
        };
        let m = &self.nodes[&target].mysqld;
        if !m.alive || m.read_only || !self.nodes[&target].host_up {
            return false;
        }
        let seq = m.executed.seq(0) + 1;
        let sid = m.server_id;
        self.nodes
            .get_mut(&target)
            .unwrap()
            .mysqld
            .executed
            .insert(0, sid, seq, seq);
        match self.acker(target) {
            Some(r) => {
                let rm = &mut self.nodes.get_mut(&r).unwrap().mysqld;
                rm.received.insert(0, sid, seq, seq);
                self.acked.push((sid, seq));
                self.ack_log.push((self.now, target));
                true
            }
            None => false,
        }
    }

    /// The server a connection to the VIP from `rtb-a`'s subnet reaches, if any.
    pub fn vip_server(&self) -> Option<NodeId> {
        let via = self.routes["rtb-a"];
        if !self.nodes[&via].host_up {
            return None;
        }
        match self.forward.get(&via) {
            None => Some(via),
            Some(&to) => self.linked(via, to).then_some(to),
        }
    }

    /// Instants at which one server acknowledged a write between two that another
    /// server acknowledged within a lease: two writers taking turns (as the
    /// simulation's world judges it).
    pub fn interleaved_acks(&self) -> Vec<Time> {
        let lease = self.spec.timing.lease();
        let log = &self.ack_log;
        let mut out = Vec::new();
        for (i, (at, by)) in log.iter().enumerate() {
            let before = log[..i]
                .iter()
                .rev()
                .take_while(|(t, _)| at.since(*t) < lease)
                .find(|(_, s)| s != by);
            let Some((t0, other)) = before else { continue };
            if log[i + 1..]
                .iter()
                .take_while(|(t, _)| t.since(*t0) < lease)
                .any(|(_, s)| s == other)
            {
                out.push(*at);
            }
        }
        out
    }

    /// A replica that would acknowledge `master`'s next write (semi-sync).
    fn acker(&self, master: NodeId) -> Option<NodeId> {
        self.ids().into_iter().find(|r| {
            let rm = &self.nodes[r].mysqld;
            *r != master
                && rm.alive
                && rm.source == Some(master)
                && rm.io_running
                && !rm.io_held
                && self.linked(*r, master)
        })
    }

    fn reach(&self, by: NodeId, target: NodeId) -> bool {
        self.linked(by, target) && self.nodes[&target].mysqld.alive
    }

    /// A peer message on the wire: 1 ms, unless the link is cut.
    fn transmit(&mut self, from: NodeId, to: NodeId, message: PeerMessage) {
        if self.lose_snapshots > 0 && message.is_raft_snapshot() {
            self.lose_snapshots -= 1;
            return;
        }
        if matches!(message, PeerMessage::LeaseGrant { .. })
            && self.lose_lease_grants_until.is_some_and(|t| self.now < t)
        {
            return;
        }
        if self.linked(from, to) {
            self.schedule(Duration::from_millis(1), Due::Message { from, to, message });
        }
    }

    fn execute(&mut self, by: NodeId, cmd: Command) {
        self.commands.push((self.now, by, cmd.clone()));
        let ok = Duration::from_millis(2);
        match cmd {
            Command::Send { to, message } => self.transmit(by, to, message),
            Command::Persist(batch) => {
                let node = self.nodes.get_mut(&by).unwrap();
                for (to, message) in node.durable.apply(batch) {
                    self.transmit(by, to, message);
                }
            }
            Command::Emit(e) => self.events.push((self.now, by, e)),
            Command::Probe { id, node } => {
                let result = if self.reach(by, node) {
                    let m = &self.nodes[&node].mysqld;
                    let src_ok = m
                        .source
                        .is_some_and(|s| self.linked(node, s) && self.nodes[&s].mysqld.alive);
                    CommandResult::Probe(ProbeResult::Alive(Some(m.status(src_ok))))
                } else {
                    CommandResult::Probe(ProbeResult::Down("no answer".into()))
                };
                let after = if self.linked(by, node) {
                    ok
                } else {
                    UNREACHABLE_TIMEOUT
                };
                self.result(by, id, after, result);
            }
            Command::Mysql { id, node, op } => {
                if !self.reach(by, node) {
                    self.result(
                        by,
                        id,
                        UNREACHABLE_TIMEOUT,
                        CommandResult::Mysql(Err(format!("{node} unreachable"))),
                    );
                    return;
                }
                let reply = self.mysql_op(node, op);
                self.result(by, id, ok, CommandResult::Mysql(reply));
            }
            Command::Salvage {
                id,
                from,
                to,
                after,
                ..
            } => {
                // The old master's binlog is on its host's disk: readable while the host
                // and its sidecar live, even with mysqld dead.
                let readable = self.nodes[&from].host_up
                    && self.nodes[&from].engine.is_some()
                    && self.linked(by, from)
                    && self.reach(from, to);
                let result = if readable {
                    let binlog = self.nodes[&from].mysqld.executed.clone();
                    let GtidSet::Mariadb(after) = after else {
                        panic!("flavour")
                    };
                    let missing = binlog.difference(&after);
                    let t = &mut self.nodes.get_mut(&to).unwrap().mysqld;
                    t.executed = t.executed.union(&missing);
                    Ok(SalvageReport {
                        recovered: missing.count(),
                        not_recovered: vec![],
                        stopped: None,
                    })
                } else {
                    Err("old master's host unreachable".into())
                };
                self.result(by, id, ok, CommandResult::Salvage(result));
            }
            Command::ReplaceRoute {
                id,
                route_table,
                target,
            } => {
                let r = if self.api_down {
                    Err("RequestLimitExceeded".into())
                } else {
                    self.routes.insert(route_table, target);
                    Ok(())
                };
                self.result(by, id, Duration::from_millis(50), CommandResult::Done(r));
            }
            Command::Forward { id, to } => {
                if self.forward_broken.contains(&by) {
                    let r = Err("nft: not found".to_string());
                    self.result(by, id, ok, CommandResult::Done(r));
                    return;
                }
                match to {
                    Some(to) => self.forward.insert(by, to),
                    None => self.forward.remove(&by),
                };
                self.result(by, id, ok, CommandResult::Done(Ok(())));
            }
            Command::StopInstance { id, node } => {
                self.crash_host(node);
                self.result(by, id, ok, CommandResult::Done(Ok(())));
            }
            Command::Hook { id, call } => {
                let r = if self.veto.contains(&call.point) {
                    Err(format!("{} hook exited with status 1", call.point))
                } else {
                    Ok(())
                };
                self.hooks.push((self.now, by, call));
                self.result(by, id, ok, CommandResult::Done(r));
            }
        }
    }

    fn mysql_op(&mut self, node: NodeId, op: MysqlOp) -> Result<MysqlReply, String> {
        let linked_src = |sim: &Sim, s: NodeId| sim.reach(node, s);
        match op {
            MysqlOp::SetReadOnly => {
                self.nodes.get_mut(&node).unwrap().mysqld.read_only = true;
                Ok(MysqlReply::Done)
            }
            MysqlOp::SetWritable => {
                self.nodes.get_mut(&node).unwrap().mysqld.read_only = false;
                Ok(MysqlReply::Done)
            }
            MysqlOp::FenceReplica => {
                let m = &mut self.nodes.get_mut(&node).unwrap().mysqld;
                m.io_running = false;
                Ok(MysqlReply::Positions(m.positions()))
            }
            MysqlOp::CatchUp { source, until } => {
                if !linked_src(self, source) {
                    return Err(format!("{source} unreachable from {node}"));
                }
                let got = self.nodes[&source]
                    .mysqld
                    .received
                    .union(&self.nodes[&source].mysqld.executed);
                let m = &mut self.nodes.get_mut(&node).unwrap().mysqld;
                m.received = m.received.union(&got);
                m.executed = m.executed.union(&m.received);
                let p = m.positions();
                if !p.executed.contains(&until) {
                    return Err("source did not have the target".into());
                }
                Ok(MysqlReply::Positions(p))
            }
            MysqlOp::WaitApplied { until } => {
                // A replica still attached to a live source catches up with it first.
                let src = self.nodes[&node].mysqld.source;
                let m = &self.nodes[&node].mysqld;
                let pulling = m.io_running && !m.io_held;
                if let Some(s) = src.filter(|s| pulling && linked_src(self, *s)) {
                    let got = self.nodes[&s].mysqld.executed.clone();
                    let m = &mut self.nodes.get_mut(&node).unwrap().mysqld;
                    m.received = m.received.union(&got);
                }
                let m = &mut self.nodes.get_mut(&node).unwrap().mysqld;
                m.executed = m.executed.union(&m.received);
                let p = m.positions();
                if !p.executed.contains(&until) {
                    return Err(format!(
                        "not applied: missing {}",
                        until.difference(&p.executed)
                    ));
                }
                Ok(MysqlReply::Positions(p))
            }
            MysqlOp::Demote { .. } => {
                let m = &mut self.nodes.get_mut(&node).unwrap().mysqld;
                m.read_only = true;
                Ok(MysqlReply::Positions(m.positions()))
            }
            MysqlOp::Promote => {
                let m = &mut self.nodes.get_mut(&node).unwrap().mysqld;
                m.source = None;
                m.io_running = false;
                m.read_only = false;
                Ok(MysqlReply::Done)
            }
            MysqlOp::Repoint { source } => {
                let m = &mut self.nodes.get_mut(&node).unwrap().mysqld;
                m.source = Some(source);
                m.io_running = true;
                Ok(MysqlReply::Done)
            }
        }
    }
}
