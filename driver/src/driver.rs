//! The driver: feeds the engine its inputs and executes its commands.
//!
//! One loop, in this order of priority (`biased;`, so that a run replays exactly):
//! a stop request, command results, peer messages, operator requests, then the
//! engine's deadline.
//! Commands are executed in the order the engine gave them; `Persist` is written
//! before anything after it runs, and only then are the messages it carries sent.
//!
//! A store may write in the background ([`Written::Later`]): the loop then goes on
//! feeding the engine its inputs, but every command that follows the write — the
//! messages the persist carries, later sends, MySQL and EC2 commands, hooks — waits in
//! `held`, in order, until the write is durable. Only probes, events and this node
//! fencing its own mysqld run at once: they change nothing outside, or only make this
//! node safer. So nothing leaves this node
//! before the state it follows from is on disk (persist-before-send), and nothing is
//! acted on locally before the entries it follows from are (committed-before-acted):
//! the outside world sees exactly what it would see from a store that wrote before
//! returning. A crash loses only what nobody outside has seen — the same as a crash in
//! the middle of a synchronous write. Writes themselves go out at once, in order; a
//! store may fold several waiting ones into one.

use crate::adapters::{
    DurableStore, Forward, Hooks, MysqlOps, Observer, PeerTransport, RouteOps, Salvage, Written,
};
use multiaz_engine::{
    ClusterSpec, Command, CommandId, CommandResult, DurableState, Engine, EngineError, Input,
    MysqlOp, NodeId, OperatorRequest, PeerMessage, Time,
};
use std::collections::VecDeque;
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cannot start the engine: {0}")]
    Start(#[from] EngineError),
    #[error("could not make raft state durable: {0}")]
    Persist(String),
    /// The engine kept asking to be woken at an instant already past: a bug that would
    /// otherwise spin this loop, burning a core without letting time pass.
    #[error("engine deadline stuck at {0:?} (an engine bug: the sidecar stops rather than spin)")]
    Stuck(Time),
}

/// How many ticks in a row may leave the engine's deadline at or before the tick's
/// instant before the driver calls it stuck (a correct engine moves it on at once).
const STUCK_TICKS: u32 = 10_000;

/// What the outside world uses to talk to a running driver.
#[derive(Clone)]
pub struct DriverHandle {
    pub inbox: mpsc::UnboundedSender<(NodeId, PeerMessage)>,
    pub operator: mpsc::UnboundedSender<OperatorRequest>,
    stop: mpsc::UnboundedSender<()>,
}

impl DriverHandle {
    /// Ends [`Driver::run`] (with `Ok`) at its next turn: a command already under way
    /// finishes on its own, and nothing after it is started.
    pub fn stop(&self) {
        // The driver may be gone already; then it has stopped.
        let _ = self.stop.send(());
    }
}

/// The driver's ways into the world (see [`crate::adapters`]).
pub struct Adapters<M, S, R, P, D, O, H, F> {
    pub mysql: M,
    pub salvage: S,
    pub routes: R,
    pub peers: P,
    pub store: D,
    pub observer: O,
    pub hooks: H,
    pub forward: F,
}

/// What waits for a background write (see the module's documentation).
enum Held {
    /// A write not yet durable.
    Writing(tokio::sync::oneshot::Receiver<Result<(), String>>),
    /// A command the engine gave after it, with the instant it was given.
    After(Time, Box<Command>),
}

pub struct Driver<M, S, R, P, D, O, H, F> {
    me: NodeId,
    engine: Engine,
    durable: DurableState,
    held: VecDeque<Held>,
    origin: Instant,
    world: Adapters<M, S, R, P, D, O, H, F>,
    inbox: mpsc::UnboundedReceiver<(NodeId, PeerMessage)>,
    operator: mpsc::UnboundedReceiver<OperatorRequest>,
    stop: mpsc::UnboundedReceiver<()>,
    done_tx: mpsc::UnboundedSender<(CommandId, CommandResult)>,
    done_rx: mpsc::UnboundedReceiver<(CommandId, CommandResult)>,
}

impl<M, S, R, P, D, O, H, F> Driver<M, S, R, P, D, O, H, F>
where
    M: MysqlOps,
    S: Salvage,
    R: RouteOps,
    P: PeerTransport,
    D: DurableStore,
    O: Observer,
    H: Hooks,
    F: Forward,
{
    /// A driver for node `me` of `spec`, restarted from `restored` (what its store
    /// persisted before; `None` on the first start). The engine is built here, at the
    /// driver's time zero, so that its clock and the driver's are one.
    pub fn new(
        spec: ClusterSpec,
        me: NodeId,
        restored: Option<DurableState>,
        world: Adapters<M, S, R, P, D, O, H, F>,
    ) -> Result<(Self, DriverHandle), DriverError> {
        let engine = Engine::new(spec, me, restored.as_ref(), Time::ZERO)?;
        let (in_tx, inbox) = mpsc::unbounded_channel();
        let (op_tx, operator) = mpsc::unbounded_channel();
        let (stop_tx, stop) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            me,
            engine,
            durable: restored.unwrap_or_default(),
            held: VecDeque::new(),
            origin: Instant::now(),
            world,
            inbox,
            operator,
            stop,
            done_tx,
            done_rx,
        };
        let handle = DriverHandle {
            inbox: in_tx,
            operator: op_tx,
            stop: stop_tx,
        };
        Ok((driver, handle))
    }

    /// Changes the engine before the first step: the simulation's negative controls
    /// switch a safety mechanism off here, and its `--log-limit` lowers the log limit
    /// (the product never calls it).
    pub fn with_engine(mut self, f: impl FnOnce(&mut Engine)) -> Self {
        f(&mut self.engine);
        self
    }

    fn now(&self) -> Time {
        Time::from_millis(self.origin.elapsed().as_millis() as u64)
    }

    /// Runs until [`DriverHandle::stop`] (`Ok`), or until a persist fails or the
    /// engine's deadline is stuck (the fatal errors). Dropping every handle does not
    /// stop it: a sidecar cut off from everything still fences itself on time.
    pub async fn run(mut self) -> Result<(), DriverError> {
        // The engine numbered its lease rounds from this start's count (Engine::new
        // read it); the count goes up before any round is sent, so the next start
        // numbers its rounds above all of this one's.
        if self.durable.boots >= multiaz_engine::MAX_BOOTS {
            return Err(DriverError::Persist(format!(
                "{} starts are recorded in the state file, the most lease rounds can be numbered for (years of a crash loop): find why it keeps restarting",
                self.durable.boots
            )));
        }
        self.durable.boots += 1;
        let written = self
            .world
            .store
            .persist(&self.durable)
            .map_err(DriverError::Persist)?;
        if let Written::Later(mut durable) = written {
            answered(&mut durable).await?;
        }
        self.step(Input::Tick {
            wall_unix_ms: self.world.observer.wall_unix_ms(),
        })?;
        // Ticks in a row after which the engine still wanted waking at an instant
        // already past (inputs other than ticks do not count: a burst of messages may
        // keep a due tick waiting, rightly).
        let mut stuck_ticks = 0u32;
        let mut next = self.engine.next_deadline();
        loop {
            let deadline = self.origin + std::time::Duration::from_millis(next.as_millis());
            let held = &mut self.held;
            let input = tokio::select! {
                biased;
                Some(()) = self.stop.recv() => return Ok(()),
                written = oldest_write(held) => {
                    written?;
                    self.release();
                    continue;
                }
                Some((id, result)) = self.done_rx.recv() => Input::Done { id, result },
                Some((from, message)) = self.inbox.recv() => Input::Peer { from, message },
                Some(req) = self.operator.recv() => Input::Operator(req),
                _ = tokio::time::sleep_until(deadline) => Input::Tick { wall_unix_ms: self.world.observer.wall_unix_ms() },
            };
            let tick = matches!(input, Input::Tick { .. });
            let now = self.now();
            self.step(input)?;
            next = self.engine.next_deadline();
            if tick {
                stuck_ticks = if next <= now { stuck_ticks + 1 } else { 0 };
                if stuck_ticks > STUCK_TICKS {
                    return Err(DriverError::Stuck(next));
                }
            }
        }
    }

    fn step(&mut self, input: Input) -> Result<(), DriverError> {
        let now = self.now();
        self.engine.handle(now, input);
        for command in self.engine.take_commands() {
            self.execute(now, command)?;
        }
        self.world.observer.after_step(&self.engine);
        Ok(())
    }

    /// Runs `command`, or holds it behind a write not yet durable. A persist is never
    /// held: it is handed to the store at once (writes are durable in order), and what
    /// it carries is held behind it.
    fn execute(&mut self, now: Time, command: Command) -> Result<(), DriverError> {
        match command {
            Command::Persist(batch) => {
                let then_send = self.durable.apply(batch);
                let written = self
                    .world
                    .store
                    .persist(&self.durable)
                    .map_err(DriverError::Persist)?;
                if let Written::Later(durable) = written {
                    self.held.push_back(Held::Writing(durable));
                }
                for (to, message) in then_send {
                    self.execute(now, Command::Send { to, message })?;
                }
            }
            command if !self.held.is_empty() && !self.never_held(&command) => {
                self.held.push_back(Held::After(now, Box::new(command)))
            }
            command => self.act(now, command),
        }
        Ok(())
    }

    /// What runs at once even behind a write: what changes nothing outside this node or
    /// only makes it safer — a probe, an event, this node fencing its own mysqld (a
    /// master whose disk hangs must still go read_only when its lease runs out).
    fn never_held(&self, command: &Command) -> bool {
        match command {
            Command::Probe { .. } | Command::Emit(_) => true,
            Command::Mysql { node, op, .. } => *node == self.me && *op == MysqlOp::SetReadOnly,
            _ => false,
        }
    }

    /// The oldest write is durable: runs what waited for it, up to the next write.
    fn release(&mut self) {
        self.held.pop_front();
        while matches!(self.held.front(), Some(Held::After(..))) {
            if let Some(Held::After(at, command)) = self.held.pop_front() {
                let command = *command;
                match self.too_late_to_unfence(&command) {
                    Some(id) => self.spawn(id, async {
                        CommandResult::Mysql(Err(
                            "not made writable: held behind a state write until too close to the end of the write lease".into(),
                        ))
                    }),
                    None => self.act(at, command),
                }
            }
        }
    }

    /// A `SetWritable` of this node's own mysqld that waited behind a write until its
    /// lease is nearly over (or gone): run now, it could leave the server writable past
    /// the lease's end, which the coordinator times from the grants; failed instead.
    fn too_late_to_unfence(&self, command: &Command) -> Option<CommandId> {
        match command {
            Command::Mysql {
                id,
                node,
                op: MysqlOp::SetWritable,
            } if *node == self.me && !self.engine.may_make_writable(self.now()) => Some(*id),
            _ => None,
        }
    }

    fn act(&mut self, now: Time, command: Command) {
        match command {
            // `execute` takes every persist.
            Command::Persist(_) => {}
            Command::Send { to, message } => self.world.peers.send(to, message),
            Command::Emit(event) => self.world.observer.event(now, &event),
            Command::Probe { id, node } => {
                let mysql = self.world.mysql.clone();
                self.spawn(
                    id,
                    async move { CommandResult::Probe(mysql.probe(node).await) },
                );
            }
            Command::Mysql { id, node, op } => {
                let mysql = self.world.mysql.clone();
                self.spawn(
                    id,
                    async move { CommandResult::Mysql(mysql.op(node, op).await) },
                );
            }
            Command::Salvage {
                id,
                epoch,
                from,
                to,
                after,
                deadline,
            } => {
                // Counted from now, not from when the engine gave it: a command held
                // behind a slow write has that much less time.
                let within = deadline.since(self.now());
                let salvage = self.world.salvage.clone();
                self.spawn(id, async move {
                    CommandResult::Salvage(salvage.salvage(epoch, from, to, after, within).await)
                });
            }
            Command::ReplaceRoute {
                id,
                route_table,
                target,
            } => {
                let routes = self.world.routes.clone();
                self.spawn(id, async move {
                    CommandResult::Done(routes.replace_route(route_table, target).await)
                });
            }
            Command::Hook { id, call } => {
                let hooks = self.world.hooks.clone();
                self.spawn(
                    id,
                    async move { CommandResult::Done(hooks.run(call).await) },
                );
            }
            Command::Forward { id, to } => {
                let forward = self.world.forward.clone();
                self.spawn(
                    id,
                    async move { CommandResult::Done(forward.forward(to).await) },
                );
            }
            Command::StopInstance { id, node } => {
                let routes = self.world.routes.clone();
                self.spawn(id, async move {
                    CommandResult::Done(routes.stop_instance(node).await)
                });
            }
        }
    }

    fn spawn(
        &self,
        id: CommandId,
        work: impl std::future::Future<Output = CommandResult> + 'static,
    ) {
        let done = self.done_tx.clone();
        tokio::task::spawn_local(async move {
            let result = work.await;
            // The driver may be gone (host crash): then nobody needs the result.
            let _ = done.send((id, result));
        });
    }
}

/// The answer of the oldest write still waited for; never, while there is none.
async fn oldest_write(held: &mut VecDeque<Held>) -> Result<(), DriverError> {
    match held.front_mut() {
        Some(Held::Writing(durable)) => answered(durable).await,
        _ => std::future::pending().await,
    }
}

/// A background write's answer: `Ok` once durable, the driver's error when it failed
/// or its writer is gone.
async fn answered(
    durable: &mut tokio::sync::oneshot::Receiver<Result<(), String>>,
) -> Result<(), DriverError> {
    durable
        .await
        .map_err(|_| "the state writer is gone".to_string())
        .and_then(|written| written)
        .map_err(DriverError::Persist)
}
