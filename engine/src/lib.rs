//! # multiaz-engine
//!
//! The failover engine of multiaz: pure and deterministic. No I/O, no clocks, no
//! threads, no global randomness; the same inputs in the same order give the same
//! commands, byte for byte. The real sidecar and the simulation drive it through the
//! same driver; only the adapters differ.
//!
//! ## Call contract
//!
//! One [`Engine`] per sidecar (per database host, plus an optional witness).
//!
//! 1. Start it with [`Engine::new`], giving the validated [`ClusterSpec`], this node's
//!    id, the [`DurableState`] persisted before a restart (or `None`), and `now`.
//! 2. Feed it inputs with [`Engine::handle`]`(now, input)`: [`Input::Tick`] when
//!    time passes, [`Input::Peer`] for every authenticated peer message,
//!    [`Input::Done`] with the result of every command that has an id, and
//!    [`Input::Operator`] for operator requests. `now` is monotonic milliseconds from
//!    the driver's origin; it must not go backwards (an earlier value is treated as
//!    the latest one seen).
//! 3. After each call, take the commands with [`Engine::take_commands`] and execute
//!    them in order. [`Command::Persist`] is a barrier: write it durably (fsync) before
//!    executing any later command, then send the messages it carries; if it cannot be
//!    written, stop the sidecar (raft has already counted it as durable). Every other
//!    command may run concurrently; each command with an id must eventually come back
//!    as exactly one [`Input::Done`] (a driver-side timeout is a failed result).
//! 4. Call `handle` with a `Tick` no later than [`Engine::next_deadline`].
//!
//! ```
//! use multiaz_engine::{ClusterSpec, Command, Engine, Input, NodeId, Time};
//!
//! let spec = ClusterSpec::from_toml(include_str!("../examples/cluster.toml")).unwrap();
//! let mut engine = Engine::new(spec, NodeId(2), None, Time::ZERO).unwrap();
//! let mut now = Time::ZERO;
//! let mut probes = 0;
//! for _ in 0..20 {
//!     engine.handle(now, Input::Tick { wall_unix_ms: 1_700_000_000_000 + now.as_millis() });
//!     for command in engine.take_commands() {
//!         // A driver executes each command here and feeds results back as Input::Done.
//!         if let Command::Probe { .. } = command {
//!             probes += 1;
//!         }
//!     }
//!     now = engine.next_deadline();
//! }
//! assert!(probes > 0, "a replica's sidecar probes its own mysqld and the master's");
//! ```
//!
//! ## What it decides
//!
//! See `docs/design.md` in the repository for the architecture, where each decision
//! lives, and the safety argument: detection (`detect.rs`), coordination through
//! raft-rs (the raft leader is the coordinator; the failover's decisions are committed
//! before they are acted on; the epoch is the fencing token), the candidate's choice
//! (`choose.rs`), the failover procedure, the writer's lease and self-fencing, and the
//! VIP routes.

mod choose;
pub mod cluster;
pub mod command;
mod coord;
pub use coord::LOG_LIMIT;
mod detect;
mod engine;
pub mod event;
mod failover;
mod fence;
mod forward;
pub mod gtid;
mod health;
pub mod hook;
pub mod input;
mod lease;
pub mod message;
mod operator;
mod probe;
pub mod record;
mod replicas;
mod routes;
pub mod sabotage;
mod status;
pub mod storage;
pub mod time;

pub use cluster::{
    ClusterSpec, NodeId, NodeKind, NodeSpec, PromotionRule, SpecError, Timing, Vip, VipMode,
};
pub use command::{
    Command, CommandId, CommandResult, MysqlOp, MysqlReply, MysqlStatus, Positions, ProbeResult,
    ReplicationStatus, SalvageReport,
};
pub use engine::{Engine, EngineError};
pub use event::{Event, Severity};
pub use failover::switchover::{plan_switchover, SwitchoverPlan};
pub use forward::{RouteState, RouteView, VipPath};
pub use gtid::{Flavour, GtidError, GtidSet};
pub use hook::{HookCall, HookPoint};
pub use input::{Input, OperatorRequest};
pub use message::{LocalView, PeerMessage, Report};
pub use record::{ClusterRecord, FailoverReport, FailoverState, JournalEntry, LogEntry, Outcome};
pub use sabotage::Sabotage;
pub use status::{EngineStatus, NodeView, Role};
pub use storage::{
    DurableState, HardState, PersistBatch, SnapshotWrite, StoredEntry, StoredSnapshot, MAX_BOOTS,
};
pub use time::Time;
