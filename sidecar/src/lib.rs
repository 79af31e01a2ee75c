//! # multiaz-sidecar
//!
//! The `multiaz` binary: the real adapters through which the driver
//! ([`multiaz_driver`]) reaches MySQL, EC2 and the peer sidecars, and the commands an
//! operator runs. The engine decides (`multiaz-engine`), the driver executes, and the
//! binlog reader (`multiaz-binlog`) serves the salvage.

pub mod address;
pub mod admin;
pub mod admin_client;
pub mod admin_tls;
pub mod auth;
pub mod binlog_apply;
pub mod binlog_cmd;
pub mod check;
pub mod cli;
pub mod config;
pub mod ec2;
pub mod hooks;
pub mod mysql;
pub mod operate;
pub mod peers;
pub mod run;
pub mod salvage;
pub mod state_file;
pub mod status;
pub mod telemetry;
#[cfg(test)]
mod test_io;
pub mod throttle;

/// The MariaDB server settings multiaz relies on (`examples/mariadb.cnf`): README
/// shows it, `multiaz check` enforces it, the tests and container hosts run with it.
pub const MARIADB_CNF: &str = include_str!("../examples/mariadb.cnf");
/// The MySQL server settings multiaz relies on (`examples/mysql.cnf`), as
/// [`MARIADB_CNF`] is for MariaDB.
pub const MYSQL_CNF: &str = include_str!("../examples/mysql.cnf");
