//! # multiaz-driver
//!
//! The driver that runs a [`multiaz_engine::Engine`] and carries out its commands, and
//! the traits through which it reaches the world ([`adapters`]). The real sidecar
//! (`multiaz-sidecar`) implements the traits over MySQL, EC2 and TCP; the simulation
//! (`multiaz-sim`) implements them over turmoil. Both run this same driver, and the
//! same VIP route logic ([`vip_routes`]) over their own EC2 API.
//!
//! The driver runs on a current-thread runtime inside a `LocalSet` (adapters need not
//! be `Send`), spawning one local task per command that has a result.

pub mod adapters;
pub mod driver;
pub mod frame;
pub mod retry;
pub mod vip_routes;

pub use adapters::{
    DurableStore, Forward, Hooks, MysqlOps, NoForward, NoHooks, Observer, PeerTransport, RouteOps,
    Salvage, Written,
};
pub use driver::{Adapters, Driver, DriverError, DriverHandle};
