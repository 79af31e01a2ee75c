//! # multiaz-sidecar
//!
//! The driver that runs a [`multiaz_engine::Engine`] and carries out its commands, and
//! the traits through which it reaches the world. The real sidecar implements the
//! traits over MySQL, EC2 and TCP; the simulation (`multiaz-sim`) implements them over
//! turmoil. Both run this same driver.
//!
//! The driver runs on a current-thread runtime inside a `LocalSet` (adapters need not
//! be `Send`), spawning one local task per command that has a result.

pub mod adapters;
pub mod address;
#[cfg(feature = "real")]
pub mod admin;
#[cfg(feature = "real")]
pub mod admin_client;
#[cfg(feature = "real")]
pub mod admin_tls;
pub mod auth;
#[cfg(feature = "binlog")]
pub mod binlog;
#[cfg(feature = "real")]
pub mod binlog_cmd;
#[cfg(feature = "real")]
pub mod check;
#[cfg(feature = "real")]
pub mod cli;
pub mod config;
pub mod driver;
#[cfg(feature = "real")]
pub mod ec2;
pub mod frame;
#[cfg(feature = "real")]
pub mod hooks;
#[cfg(feature = "real")]
pub mod mysql;
#[cfg(feature = "real")]
pub mod operate;
pub mod peers;
pub mod retry;
#[cfg(feature = "real")]
pub mod run;
#[cfg(feature = "real")]
pub mod salvage;
pub mod state_file;
#[cfg(feature = "real")]
pub mod status;
#[cfg(feature = "real")]
pub mod telemetry;
#[cfg(test)]
mod test_io;
pub mod throttle;
pub mod vip_routes;

/// The MariaDB server settings multiaz relies on (`examples/mariadb.cnf`): README
/// shows it, `multiaz check` enforces it, the tests and container hosts run with it.
pub const MARIADB_CNF: &str = include_str!("../examples/mariadb.cnf");
/// The MySQL server settings multiaz relies on (`examples/mysql.cnf`), as
/// [`MARIADB_CNF`] is for MariaDB.
pub const MYSQL_CNF: &str = include_str!("../examples/mysql.cnf");

pub use adapters::{
    DurableStore, Hooks, MysqlOps, NoHooks, Observer, PeerTransport, RouteOps, Salvage,
};
pub use driver::{Adapters, Driver, DriverError, DriverHandle};
