//! The `multiaz` command line (clap). Kept apart from `main.rs` so tests can check the
//! help text and the parsing.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Default place of the configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/multiaz/multiaz.toml";

#[derive(Debug, Parser)]
#[command(
    name = "multiaz",
    version,
    about = "Automated Multi-AZ failover for self-managed MySQL and MariaDB on AWS",
    long_about = "Automated Multi-AZ failover for self-managed MySQL and MariaDB on AWS.\n\n\
        One sidecar runs next to every mysqld. Together they detect a dead master, \
        promote the most advanced replica, repoint the others and move the VIP by \
        rewriting the VPC route tables."
)]
pub struct Cli {
    /// Log format: human-readable lines or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true, env = "MULTIAZ_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar next to this host's mysqld (until SIGTERM or SIGINT).
    ///
    /// Reads the raft state from state_dir (a corrupt state file stops the start),
    /// talks to the peer sidecars, probes mysqld, fails over when the master is dead,
    /// and serves /status, /metrics and /healthz on the admin address. Log level from
    /// RUST_LOG (default: info).
    Run {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Preflight: check every server, the VIP routes and the peers before trusting it.
    ///
    /// Connects to every mysqld in the config and checks GTID mode, binlog_format=ROW,
    /// log_slave_updates, semi-sync (source on the master only, AFTER_SYNC), grants,
    /// that every replica replicates from the master with both threads running, unique
    /// server_ids, read_only on replicas; that every route table's VIP route points at
    /// the master's network interface and source/destination check is off; and that
    /// every peer sidecar answers with the cluster key. Prints one line per check, with
    /// what to do about each failure; exits 1 if any failed.
    Check {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// One JSON object per check instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Show what the running sidecar on this host knows: the cluster record, epoch,
    /// coordinator, master, each node's role, AZ, GTID position and lag, and the last
    /// failover with its journal.
    Status {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Print the admin API's JSON as it is.
        #[arg(long)]
        json: bool,
    },
}
