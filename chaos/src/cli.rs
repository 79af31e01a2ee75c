//! The command line: a chaos run (the default), or one of the agents the run starts
//! inside the containers (hidden: nobody runs those by hand).

use clap::{Args, Parser, Subcommand, ValueEnum};
use multiaz_testcontainers::Server;
pub use multiaz_testkit::sidecar::VipMode;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "multiaz-chaos",
    about = "Chaos runs of the real multiaz sidecar: three MariaDB or MySQL hosts in containers (one per AZ), \
             moto as the EC2 API, a router that makes the VIP real, clients writing through it; \
             faults injected on the master for N cycles, then every acknowledged write checked.",
    after_help = "Needs the Docker engine, the host image (`ci/host-image`), moto_server on PATH \
                  (`ci/deps`) and the `multiaz` binary beside this one (`cargo build`).\n\
                  Example: multiaz-chaos --flavour mysql-9.7 --cycles 3 --fault mysqld-kill --json\n\
                  Exit status: 0 when every guarantee held (a failover per cycle, no acknowledged \
                  write lost, servers equal, VIP on the final master), 1 when one did not (the \
                  report says which), 2 when the run could not be made.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub agent: Option<Agent>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL the master's mysqld; its host (and sidecar) live on.
    MysqldKill,
    /// Kill the master's whole container (every process, at once).
    HostKill,
    /// Cut the master's AZ (its database host and client) off from the other AZs.
    AzPartition,
    /// mysqld-kill with a share of the EC2 calls answered RequestLimitExceeded.
    ApiThrottle,
    /// mysqld-kill with the EC2 API down (503) for --outage-s from the fault: the old
    /// master's host, alive, forwards the VIP's traffic to the new master.
    #[value(name = "api-outage", alias = "api-outage+mysqld-kill")]
    ApiOutage,
    /// az-partition with the EC2 API down (503) for --outage-s from the fault: the old
    /// master's host is cut off, so nothing it forwards reaches the other AZs.
    #[value(name = "api-outage+az-partition")]
    #[serde(rename = "api-outage+az-partition")]
    ApiOutagePartition,
    /// mysqld-kill once the master has run 100+ transactions ahead of every replica
    /// (semi-sync off, the replicas' IO threads stopped): a DDL, a 2 MB transaction
    /// and, on MySQL, a tagged GTID and a compressed transaction among them. Only
    /// salvage brings them back; the run checks that it brought every one.
    MasterAhead,
    /// No fault: an operator's `multiaz switchover` to the next database host, run on
    /// the master's host while the clients write. The old master must replicate from
    /// the new one by itself; unavailability is the switchover's write block.
    Switchover,
}

impl Fault {
    /// The EC2 API is down for `--outage-s` from the fault.
    pub fn api_outage(self) -> bool {
        matches!(self, Fault::ApiOutage | Fault::ApiOutagePartition)
    }

    /// The master's host is gone or cut off until the heal: its AZ's anchor with it.
    pub fn loses_host(self) -> bool {
        matches!(
            self,
            Fault::HostKill | Fault::AzPartition | Fault::ApiOutagePartition
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::MysqldKill => "mysqld-kill",
            Fault::HostKill => "host-kill",
            Fault::AzPartition => "az-partition",
            Fault::ApiThrottle => "api-throttle",
            Fault::ApiOutage => "api-outage",
            Fault::ApiOutagePartition => "api-outage+az-partition",
            Fault::MasterAhead => "master-ahead",
            Fault::Switchover => "switchover",
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The fault injected on the master in every cycle.
    #[arg(long, value_enum, default_value = "mysqld-kill")]
    pub fault: Fault,
    /// How many fault → failover → heal cycles.
    #[arg(long, default_value_t = 3)]
    pub cycles: u32,
    /// Print exactly one JSON object on stdout (progress goes to stderr either way).
    #[arg(long)]
    pub json: bool,
    /// Where the hosts' files, the logs, report.json and timeline.svg go (emptied first).
    #[arg(long, default_value = "target/chaos")]
    pub out: PathBuf,
    /// The database server on the hosts, and its version.
    #[arg(long, default_value = "mariadb-10.11", value_parser = parse_server)]
    pub flavour: Server,
    /// The hosts' image, with that server in it; default `multiaz-host:FLAVOUR`, which
    /// `ci/host-image FLAVOUR` builds.
    #[arg(long)]
    pub image: Option<String>,
    /// Where `multiaz` and `multiaz-chaos` are (mounted into the hosts); default: the
    /// directory of this program.
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Drives the throttled calls' draw.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The sidecars' timing.probe_interval_ms.
    #[arg(long, default_value_t = 1000)]
    pub probe_interval_ms: u64,
    /// The sidecars' timing.probe_failures.
    #[arg(long, default_value_t = 3)]
    pub probe_failures: u32,
    /// The sidecars' timing.lease_ms.
    #[arg(long, default_value_t = 4000)]
    pub lease_ms: u64,
    /// Each client writes one row this often.
    #[arg(long, default_value_t = 20)]
    pub write_interval_ms: u64,
    /// api-throttle: the share of EC2 calls answered RequestLimitExceeded.
    #[arg(long, default_value_t = 0.5)]
    pub throttle_share: f64,
    /// api-outage: how long the EC2 API is down from the fault.
    #[arg(long, default_value_t = 30)]
    pub outage_s: u64,
    /// The sidecars' vip.mode: `route` (every route table at the master) or
    /// `anchored` (each AZ's table at that AZ's database host, which forwards to the
    /// master).
    #[arg(long, default_value = "route", value_parser = parse_vip_mode)]
    pub vip_mode: VipMode,
}

#[derive(Subcommand, Debug)]
pub enum Agent {
    /// (in a client container) write rows through the VIP, log every acknowledgement.
    #[command(hide = true)]
    Client(ClientArgs),
    /// (in the router container) mirror each route table's VIP route into the kernel.
    #[command(hide = true)]
    Router(RouterArgs),
}

#[derive(Args, Debug)]
pub struct ClientArgs {
    #[arg(long)]
    pub id: u32,
    /// host:port (the VIP).
    #[arg(long)]
    pub server: String,
    #[arg(long)]
    pub user: String,
    #[arg(long)]
    pub password_file: PathBuf,
    #[arg(long)]
    pub interval_ms: u64,
    /// Append-only log of acknowledgements and errors.
    #[arg(long)]
    pub log: PathBuf,
}

#[derive(Args, Debug)]
pub struct RouterArgs {
    /// The EC2 API (moto) the route tables are read from.
    #[arg(long)]
    pub endpoint: String,
    #[arg(long)]
    pub vip: std::net::Ipv4Addr,
    /// `rtb-…=SOURCE_IP`: packets from this client follow this route table.
    #[arg(long = "table", value_parser = parse_pair)]
    pub tables: Vec<(String, String)>,
    /// `eni-…=IP`: where a route to this interface delivers.
    #[arg(long = "eni", value_parser = parse_pair)]
    pub enis: Vec<(String, String)>,
    #[arg(long)]
    pub log: PathBuf,
}

fn parse_server(s: &str) -> Result<Server, String> {
    Server::parse(s).ok_or_else(|| {
        let known: Vec<&str> = Server::ALL.iter().map(|s| s.name()).collect();
        format!("{s:?}: one of {}", known.join(", "))
    })
}

fn parse_vip_mode(s: &str) -> Result<VipMode, String> {
    VipMode::parse(s).ok_or_else(|| {
        let known: Vec<&str> = VipMode::ALL.iter().map(|m| m.name()).collect();
        format!("{s:?}: one of {}", known.join(", "))
    })
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}
