//! # multiaz-sidecar
//!
//! The `multiaz` binary: the real adapters through which the driver
//! ([`multiaz_driver`]) reaches MySQL, EC2 and the peer sidecars, and the commands an
//! operator runs. The engine decides (`multiaz-engine`), the driver executes, and the
//! binlog reader (`multiaz-binlog`) serves the salvage.

pub mod adapters;
pub mod address;
pub mod admin;
pub mod cli;
pub mod commands;
pub mod config;
#[cfg(test)]
mod test_io;

/// The MariaDB server settings multiaz relies on (`examples/mariadb.cnf`): README
/// shows it, `multiaz check` enforces it, the tests and container hosts run with it.
pub const MARIADB_CNF: &str = include_str!("../examples/mariadb.cnf");
/// The MySQL server settings multiaz relies on (`examples/mysql.cnf`), as
/// [`MARIADB_CNF`] is for MariaDB.
pub const MYSQL_CNF: &str = include_str!("../examples/mysql.cnf");
