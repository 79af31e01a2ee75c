//! # multiaz-testcontainers
//!
//! The multiaz test cluster as containers, through the testcontainers crate: a private
//! network, and database hosts (one per AZ) from a locally built image — a Debian root
//! filesystem with `mariadb-server`, made by `ci/host-image` with `debootstrap` and
//! `docker import`, since there is no registry here. The `multiaz` binaries built by
//! cargo reach the hosts by bind mount, as does a work directory per host (configs,
//! secrets, logs), so a run's files stay readable on the machine afterwards.
//!
//! Everything is removed when the [`Cluster`] is dropped — at the end of a run, on a
//! panic, and on Ctrl-C / SIGTERM (testcontainers' watchdog) — and the network goes
//! with its last container.
//!
//! The image is a parameter ([`Options::image`], `$MULTIAZ_HOST_IMAGE`): where a
//! registry is reachable the same hosts can come from another image with `mariadbd`
//! on its `PATH`; MySQL (`mysql:8.4`) needs its own server start (`mysqld`), not
//! written yet.

mod host;
pub mod mariadb;

pub use host::Host;

use anyhow::{bail, Context};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use testcontainers::core::Mount;
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt};

/// The image `ci/host-image` builds.
pub const DEFAULT_IMAGE: &str = "multiaz-host:bookworm";
/// Where the multiaz binaries are mounted in every host.
pub const BIN_DIR: &str = "/opt/multiaz";
/// Where each host's own work directory is mounted.
pub const WORK_DIR: &str = "/work";

#[derive(Debug, Clone)]
pub struct Options {
    /// `name:tag` of a local image; `$MULTIAZ_HOST_IMAGE` or [`DEFAULT_IMAGE`].
    pub image: String,
    /// How many database hosts (`db-1` … `db-N`, AZ `az-1` … `az-N`).
    pub hosts: usize,
    /// A directory on this machine; host `db-i` gets `work/db-i` at [`WORK_DIR`].
    pub work: PathBuf,
    /// Mounted read-only at [`BIN_DIR`] (cargo's `target/debug` or `target/release`).
    pub bin_dir: Option<PathBuf>,
}

impl Options {
    pub fn new(work: impl Into<PathBuf>) -> Options {
        Options {
            image: std::env::var("MULTIAZ_HOST_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.into()),
            hosts: 3,
            work: work.into(),
            bin_dir: None,
        }
    }
}

/// The hosts on their private network.
pub struct Cluster {
    pub network: String,
    pub hosts: Vec<Host>,
    /// This machine as the hosts see it (the network's gateway): services run here,
    /// such as the EC2 emulator, are reached at this address.
    pub gateway: IpAddr,
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
        bail!("image {image} is missing: build it with `ci/host-image` (debootstrap + docker import, about a minute)");
    }
    Ok(())
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
        let network = format!(
            "multiaz-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        let mut hosts = Vec::new();
        for i in 1..=opts.hosts {
            let host = format!("db-{i}");
            let work = opts.work.join(&host);
            std::fs::create_dir_all(&work)
                .with_context(|| format!("creating {}", work.display()))?;
            let mut req = GenericImage::new(name, tag)
                .with_entrypoint("/bin/sleep")
                .with_cmd(["infinity"])
                .with_network(&network)
                .with_container_name(format!("{network}-{host}"))
                .with_hostname(&host)
                .with_cap_add("NET_ADMIN")
                // An init as PID 1 reaps what dies in the host (a SIGKILLed mariadbd
                // would otherwise stay a zombie, and seem to run).
                .with_host_config_modifier(|hc| hc.init = Some(true))
                .with_mount(Mount::bind_mount(work.display().to_string(), WORK_DIR));
            if let Some(bin) = &opts.bin_dir {
                req = req.with_mount(Mount::bind_mount(bin.display().to_string(), BIN_DIR));
            }
            let container = req
                .start()
                .await
                .with_context(|| format!("starting host {host} from {}", opts.image))?;
            let ip = container.get_bridge_ip_address().await?;
            hosts.push(Host::new(host, format!("az-{i}"), ip, work, container));
        }
        let gateway = hosts[0]
            .sh("ip route | awk '/^default/ {print $3}'")
            .await?
            .trim()
            .parse()
            .context("the network's gateway")?;
        Ok(Cluster {
            network,
            hosts,
            gateway,
        })
    }
}
