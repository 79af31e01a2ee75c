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
    /// Planned master change to NODE (a name or an id from the config), for maintenance.
    ///
    /// Through the admin API of the sidecar on this host (needs [admin] token_file):
    /// the old master is set read_only (running writes get timing.switchover_grace_ms
    /// to finish, then are killed), NODE applies everything the old master wrote, NODE
    /// is promoted, the VIP route moves to it, and every other server — the old
    /// master too — replicates from it. Refused, with the reason, when NODE lags more
    /// than timing.switchover_max_lag transactions, is not healthy or not replicating,
    /// is marked promotion = "never", is quarantined, or a failover is in progress.
    /// Until NODE is committed as the writer, any failure cancels the switchover and
    /// the old master takes writes again. Waits for the outcome and prints it; exits
    /// 1 if it was refused or cancelled.
    Switchover {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The new master: its name or id.
        #[arg(long, value_name = "NODE")]
        to: String,
        /// Check and print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Acknowledge the last automatic failover: lifts the block on further automatic
    /// failovers (timing.failover_block_ms) before its period ends.
    Ack {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// No automatic failover until `multiaz resume` (maintenance windows). The
    /// sidecars keep probing and self-fencing; a switchover is still possible.
    Pause {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Automatic failover again after `multiaz pause`.
    Resume {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Read a binlog from its files (no server needed): forensics and salvage.
    #[command(subcommand)]
    Binlog(BinlogCommand),
}

#[derive(Debug, Subcommand)]
pub enum BinlogCommand {
    /// List the complete transactions after a GTID set: GTID, time, size, tables.
    ///
    /// Follows the binlog index across rotations, verifies every event's CRC32, and
    /// stops at the first damaged or cut-off event, saying which file and byte offset;
    /// everything whole before it is listed. Safe on the files of a crashed server.
    /// Exit status: 0 when the binlog reads to its end or is only cut inside its last
    /// event (what a crash leaves); 2 when damage stopped the read earlier.
    Tail {
        #[command(flatten)]
        source: BinlogSource,
        /// One JSON object per transaction per line (fields gtid, timestamp, file,
        /// offset, size, tables).
        #[arg(long)]
        json: bool,
    },
    /// Apply the transactions after a GTID set to a server, each whole or not at all,
    /// under their original GTIDs.
    ///
    /// Transactions the server already has are skipped, so running it twice is safe.
    /// Stops at the first transaction the server refuses; prints how many were applied
    /// and the GTIDs that were not. The server's user needs the BINLOG REPLAY (or
    /// SUPER) privilege, and READ_ONLY ADMIN when the server is read_only.
    Salvage {
        #[command(flatten)]
        source: BinlogSource,
        /// The server to apply to: mysql://USER[:PASSWORD]@HOST[:PORT]. The password
        /// may instead come from $MULTIAZ_APPLY_PASSWORD; it is never printed.
        #[arg(long, value_name = "URL")]
        apply: String,
        /// Print the outcome as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct BinlogSource {
    /// Directory holding the binlog files (the server's datadir or log_bin path).
    #[arg(long)]
    pub dir: PathBuf,
    /// The binlog index file; by default the one `*.index` file in --dir.
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// Only transactions not in this set: a MariaDB (0-1-100,1-2-5) or MySQL
    /// (uuid:1-100) GTID set; "" for every transaction.
    #[arg(long, value_name = "GTIDSET", allow_hyphen_values = true)]
    pub after: String,
}
