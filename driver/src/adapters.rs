//! What the driver needs from the world. Each trait is small so that the simulation
//! can model exactly what fails where.

use multiaz_engine::{
    DurableState, Engine, Event, GtidSet, HookCall, MysqlOp, MysqlReply, NodeId, PeerMessage,
    ProbeResult, SalvageReport, Time,
};
use std::future::Future;

/// Operations on any member's mysqld (the sidecar holds credentials for all of them).
/// Implementations bound every call by their own timeout and report it as a failure.
pub trait MysqlOps: Clone + 'static {
    fn probe(&self, node: NodeId) -> impl Future<Output = ProbeResult>;
    fn op(&self, node: NodeId, op: MysqlOp) -> impl Future<Output = Result<MysqlReply, String>>;
}

/// Recovering the old master's binlog tail through the sidecar on its host.
pub trait Salvage: Clone + 'static {
    /// For the failover of `epoch`: read `from`'s binlog after `after` and apply the
    /// rest to `to`, all of it over `within` from now (the engine stops waiting then,
    /// and may promote `to`: nothing may land on it after).
    fn salvage(
        &self,
        epoch: u64,
        from: NodeId,
        to: NodeId,
        after: GtidSet,
        within: std::time::Duration,
    ) -> impl Future<Output = Result<SalvageReport, String>>;
}

/// The old host's share of a salvage's `within`: four fifths, the rest left for the
/// answer to travel back before the engine stops waiting.
pub fn salvage_budget(within: std::time::Duration) -> std::time::Duration {
    within.saturating_sub(within / 5)
}

/// The cloud control plane: VIP routes, and stopping an instance for fencing.
pub trait RouteOps: Clone + 'static {
    fn replace_route(
        &self,
        route_table: String,
        target: NodeId,
    ) -> impl Future<Output = Result<(), String>>;
    fn stop_instance(&self, node: NodeId) -> impl Future<Output = Result<(), String>>;
}

/// The VIP's traffic that reaches this host: to its own mysqld, or forwarded to
/// another member's (see the engine's `forward.rs`). Calls may overlap; an
/// implementation applies them in the order they were made, the last one winning.
pub trait Forward: Clone + 'static {
    fn forward(&self, to: Option<NodeId>) -> impl Future<Output = Result<(), String>>;
}

/// Forwarding turned off (`vip.forward = false`): the engine asks for nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoForward;

impl Forward for NoForward {
    async fn forward(&self, to: Option<NodeId>) -> Result<(), String> {
        match to {
            None => Ok(()),
            Some(n) => Err(format!(
                "forwarding to {n} asked for, but this host has none"
            )),
        }
    }
}

/// Best-effort delivery to a peer sidecar (the transport queues, reconnects, drops).
pub trait PeerTransport: 'static {
    fn send(&self, to: NodeId, message: PeerMessage);
}

/// The raft state on disk. A store either writes before returning (the simulation's,
/// tests') or hands the write to a writer of its own and says when it is durable (the
/// sidecar's, so that an fsync never holds up the event loop). Writes become durable
/// in the order they were asked for. The driver releases nothing that follows a write
/// (messages, commands, events) until the write is durable: see [`crate::Driver`].
pub trait DurableStore: 'static {
    fn persist(&mut self, state: &DurableState) -> Result<Written, String>;
}

/// How a [`DurableStore::persist`] went.
#[derive(Debug)]
pub enum Written {
    /// Durable already.
    Now,
    /// Durable when this answers `Ok`; an `Err`, or a writer gone, is a failed write.
    Later(tokio::sync::oneshot::Receiver<Result<(), String>>),
}

/// Where events go (logs, metrics, a timeline), and the wall clock for the journal.
pub trait Observer: 'static {
    fn event(&self, now: Time, event: &Event);
    fn wall_unix_ms(&self) -> u64;
    /// Called after every engine step; the simulation reads the record from here.
    fn after_step(&self, _engine: &Engine) {}
}

/// The operator's hooks around a failover or switchover. `Err` from a pre hook is a
/// veto; implementations bound each hook by their own timeout.
pub trait Hooks: Clone + 'static {
    fn run(&self, call: HookCall) -> impl Future<Output = Result<(), String>>;
}

/// No hooks configured: every call answers `Ok` at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {
    async fn run(&self, _call: HookCall) -> Result<(), String> {
        Ok(())
    }
}
