//! # multiaz-testcontainers
//!
//! The multiaz test cluster as containers, through the testcontainers crate: a private
//! network, and database hosts (one per AZ) from a locally built image — a Debian root
//! filesystem with MariaDB or MySQL ([`db::Server`]), made by `ci/host-image` with
//! `debootstrap` and `docker import`, since there is no registry here. The `multiaz` binaries built by
//! cargo reach the hosts by bind mount, as does a work directory per host (configs,
//! secrets, logs), so a run's files stay readable on the machine afterwards.
//!
//! Everything is removed when the [`Cluster`] is dropped — at the end of a run, on a
//! panic, and on Ctrl-C / SIGTERM (testcontainers' watchdog); a cleanup process that
//! outlives this one removes what is left even after a SIGKILL (`network.rs`).
//! Database hosts keep fixed addresses across crashes and boots.
//!
//! The server is a parameter ([`Options::server`], e.g. `mysql-9.7`), and so is the
//! image it comes in ([`Options::image`]): where a
//! registry is reachable the same hosts can come from another image with the server
//! and iproute2 on its `PATH`.

pub mod db;
mod host;
pub mod moto;
mod network;

pub use host::Host;

use anyhow::{bail, Context};
use network::Network;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;
use testcontainers::core::Mount;
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt};

pub use db::Server;
/// Where the multiaz binaries are mounted in every host.
pub const BIN_DIR: &str = "/opt/multiaz";
/// Where each host's own work directory is mounted.
pub const WORK_DIR: &str = "/work";

#[derive(Debug, Clone)]
pub struct Options {
    /// The database server on the hosts.
    pub server: Server,
    /// `name:tag` of a local image with that server: [`Server::image`] unless set.
    pub image: String,
    /// How many database hosts (`db-1` … `db-N`, AZ `az-1` … `az-N`).
    pub hosts: usize,
    /// How many client hosts (`client-1` … in `az-1` …), for workloads.
    pub clients: usize,
    /// A router host too, forwarding between the clients and the database hosts.
    pub router: bool,
    /// A directory on this machine; host `db-i` gets `work/db-i` at [`WORK_DIR`].
    pub work: PathBuf,
    /// Mounted read-only at [`BIN_DIR`] (cargo's `target/debug` or `target/release`).
    pub bin_dir: Option<PathBuf>,
}

impl Options {
    /// Options for `server`'s image, with three database hosts and nothing else.
    pub fn with_server(server: Server, work: impl Into<PathBuf>) -> Options {
        Options {
            server,
            image: server.image(),
            hosts: 3,
            clients: 0,
            router: false,
            work: work.into(),
            bin_dir: None,
        }
    }
}

/// The hosts on their private network.
pub struct Cluster {
    pub hosts: Vec<Host>,
    pub clients: Vec<Host>,
    /// The router between the clients and the VIP ([`Options::router`]).
    pub router: Option<Host>,
    /// This machine as the hosts see it (the network's gateway): services run here,
    /// such as the EC2 emulator, are reached at this address.
    pub gateway: IpAddr,
    /// Last, so that it goes after the containers on it.
    network: Network,
}

/// Fails with what to do when Docker or the image is missing (tests never skip).
pub fn preflight(image: &str) -> anyhow::Result<()> {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .context("cannot run `docker`: these tests need the Docker engine and its CLI")?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        if why.contains("Cannot connect") || why.contains("permission denied") {
            bail!("the Docker engine is not reachable: {}", why.trim());
        }
        let flavour = image.strip_prefix("multiaz-host:").unwrap_or("FLAVOUR");
        bail!("image {image} is missing: build it with `ci/host-image {flavour}` (debootstrap + docker import, one to two minutes)");
    }
    Ok(())
}

/// Runs `program` with `args` on this machine (or in a host, from its agent); an error
/// with the program's stderr when it fails.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run `{program}`"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// What a host is for: it decides its kernel settings.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A database host, at a fixed address.
    Database(Ipv4Addr),
    /// A client: ignores ICMP redirects, so that its packets for the VIP keep going
    /// through the router however the route changes.
    Client,
    /// Forwards packets and sends no redirects (a client told to reach the master
    /// directly would bypass the route tables).
    Router,
}

impl Cluster {
    /// Starts the hosts (containers with a shell, `NET_ADMIN` for routes and the VIP)
    /// on a new private network. Nothing runs in them yet.
    pub async fn start(opts: &Options) -> anyhow::Result<Cluster> {
        preflight(&opts.image)?;
        let (name, tag) = opts
            .image
            .rsplit_once(':')
            .unwrap_or((opts.image.as_str(), "latest"));
        let network = Network::create(&format!(
            "multiaz-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ))?;
        let mut hosts = Vec::new();
        for i in 1..=opts.hosts {
            let ip = network.addr(10 + i as u8);
            let kind = Kind::Database(ip);
            hosts.push(Self::host(opts, name, tag, &network, format!("db-{i}"), i, kind).await?);
        }
        let mut clients = Vec::new();
        for i in 1..=opts.clients {
            let host = format!("client-{i}");
            clients.push(Self::host(opts, name, tag, &network, host, i, Kind::Client).await?);
        }
        let router = match opts.router {
            true => {
                let host = "router".to_string();
                Some(Self::host(opts, name, tag, &network, host, 0, Kind::Router).await?)
            }
            false => None,
        };
        Ok(Cluster {
            gateway: IpAddr::V4(network.gateway()),
            hosts,
            clients,
            router,
            network,
        })
    }

    pub fn network(&self) -> &str {
        &self.network.name
    }

    async fn host(
        opts: &Options,
        name: &str,
        tag: &str,
        network: &Network,
        host: String,
        az: usize,
        kind: Kind,
    ) -> anyhow::Result<Host> {
        let work = opts.work.join(&host);
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let sysctls: &[(&str, &str)] = match kind {
            // A database host forwards the VIP's traffic to the master when a route
            // still leads to it (the sidecar's nftables rules).
            Kind::Database(_) => &[
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv4.conf.all.send_redirects", "0"),
                ("net.ipv4.conf.eth0.send_redirects", "0"),
            ],
            Kind::Client => &[
                ("net.ipv4.conf.all.accept_redirects", "0"),
                ("net.ipv4.conf.eth0.accept_redirects", "0"),
            ],
            Kind::Router => &[
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv4.conf.all.send_redirects", "0"),
                ("net.ipv4.conf.eth0.send_redirects", "0"),
            ],
        };
        let sysctls: HashMap<String, String> = sysctls
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut req = GenericImage::new(name, tag)
            .with_entrypoint("/bin/sleep")
            .with_cmd(["infinity"])
            .with_network(&network.name)
            .with_container_name(format!("{}-{host}", network.name))
            .with_hostname(&host)
            .with_cap_add("NET_ADMIN")
            // An init as PID 1 reaps what dies in the host (a SIGKILLed mariadbd
            // would otherwise stay a zombie, and seem to run).
            .with_host_config_modifier(move |hc| {
                hc.init = Some(true);
                if !sysctls.is_empty() {
                    hc.sysctls = Some(sysctls.clone());
                }
            })
            .with_mount(Mount::bind_mount(work.display().to_string(), WORK_DIR))
            // /run starts empty at every boot, as on a real host: a killed mysqld's
            // socket lock file (naming a pid that the next boot may give to another
            // process) must not outlive the "power cut".
            .with_mount(Mount::tmpfs_mount("/run"));
        if let Some(bin) = &opts.bin_dir {
            req = req.with_mount(Mount::bind_mount(bin.display().to_string(), BIN_DIR));
        }
        let container = req
            .start()
            .await
            .with_context(|| format!("starting host {host} from {}", opts.image))?;
        let ip = match kind {
            Kind::Database(ip) => {
                network.pin(container.id(), ip)?;
                IpAddr::V4(ip)
            }
            _ => container.get_bridge_ip_address().await?,
        };
        Ok(Host::new(
            host,
            format!("az-{az}"),
            ip,
            work,
            opts.server,
            container,
        ))
    }
}
