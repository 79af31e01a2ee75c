//! Bringing the world up: moto and the API proxy on this machine; three database hosts
//! (one per AZ) with MariaDB replicating from db-1 and the VIP on `lo`; a VPC in moto
//! (a subnet, an instance and a route table per AZ, the VIP routed to db-1); the
//! `multiaz` sidecar on every database host; the router; a client per AZ writing
//! through the VIP.

use crate::api_proxy::ApiProxy;
use crate::cli::{RunArgs, VipMode};
use crate::observe::{self, Status};
use crate::progress;
use anyhow::{bail, Context};
use multiaz_sidecar::admin::client::AdminEndpoint;
use multiaz_testcontainers::moto::{self, Moto, Vpc};
use multiaz_testcontainers::{db, Cluster, Host, Options, BIN_DIR};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 100, 10);
pub const AZS: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
pub const PEER_PORT: u16 = 7001;
pub const ADMIN_PORT: u16 = 7080;
/// Where each client host's HAProxy listens (on loopback).
pub const HAPROXY_PORT: u16 = 3307;
/// Clients per path: one per AZ through the VIP, and as many through HAProxy.
pub const CLIENTS: usize = 3;
pub const SCHEMA: &str = "CREATE TABLE app.writes (client INT NOT NULL, seq BIGINT NOT NULL, \
     at_ms BIGINT NOT NULL, PRIMARY KEY (client, seq)) ENGINE=InnoDB;";
/// Where a host's secrets go, inside its work directory.
pub const SECRETS: &str = "/work/secrets";
/// What the sidecars and agents need from the environment: moto takes any credentials,
/// and there is no instance metadata service to ask for a region.
pub const AWS_ENV: &str =
    "AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true";

pub struct Secrets {
    pub admin_password: String,
    pub app_password: String,
    pub cluster_key: String,
    pub admin_token: String,
    /// The admin API's self-signed certificate (for every host's address) and key.
    pub admin_cert: String,
    pub admin_key: String,
}

impl Secrets {
    fn new(hosts: &[IpAddr]) -> anyhow::Result<Secrets> {
        let r = || format!("{:032x}", rand::random::<u128>());
        let key = rcgen::KeyPair::generate()?;
        let names: Vec<String> = hosts
            .iter()
            .map(|ip| ip.to_string())
            .chain(["127.0.0.1".to_string()])
            .collect();
        let cert = rcgen::CertificateParams::new(names)?.self_signed(&key)?;
        Ok(Secrets {
            admin_password: r(),
            app_password: r(),
            cluster_key: r(),
            admin_token: r(),
            admin_cert: cert.pem(),
            admin_key: key.serialize_pem(),
        })
    }
}

/// Everything a run has up; dropped, it all goes (containers, network, moto).
pub struct World {
    pub cluster: Cluster,
    pub vpc: Vpc,
    pub ec2: aws_sdk_ec2::Client,
    pub proxy: ApiProxy,
    pub secrets: Secrets,
    /// The admin API's certificate, on this machine: what the run trusts for it.
    pub admin_ca: PathBuf,
    pub args: RunArgs,
    /// Kept to the end: dropping it stops moto.
    moto: Moto,
}

impl World {
    pub fn db(&self, i: usize) -> &Host {
        &self.cluster.hosts[i]
    }

    pub fn admin(&self, i: usize) -> AdminEndpoint {
        AdminEndpoint::new(
            SocketAddr::new(self.db(i).ip, ADMIN_PORT),
            Some(self.admin_ca.clone()),
        )
    }

    /// Database host `i` (0-based) is node `i + 1`.
    pub fn node_id(i: usize) -> u64 {
        i as u64 + 1
    }

    pub fn router(&self) -> &Host {
        self.cluster.router.as_ref().expect("a router")
    }

    pub async fn start(args: &RunArgs, work: &Path, bin_dir: &Path) -> anyhow::Result<World> {
        progress("starting moto_server and the EC2 API proxy");
        let moto = Moto::start()?;
        let proxy = ApiProxy::start(moto.port, args.seed).await?;
        let ec2 = moto.client().await;

        let mut opts = Options::with_server(args.flavour, work);
        if let Some(image) = &args.image {
            opts.image = image.clone();
        }
        progress(&format!(
            "starting the hosts from {} (3 database hosts, 3 clients, a router)",
            opts.image
        ));
        opts.clients = CLIENTS;
        opts.router = true;
        opts.bin_dir = Some(bin_dir.to_path_buf());
        let cluster = Cluster::start(&opts).await?;
        let ips: Vec<IpAddr> = cluster.hosts.iter().map(|h| h.ip).collect();
        let secrets = Secrets::new(&ips)?;
        let admin_ca = work.join("admin-ca.pem");
        std::fs::write(&admin_ca, &secrets.admin_cert)
            .with_context(|| format!("writing {}", admin_ca.display()))?;

        progress(&format!(
            "{} on every database host, GTID + semi-sync replication from db-1",
            args.flavour.name()
        ));
        db::replicated(
            &cluster,
            &secrets.admin_password,
            &secrets.app_password,
            SCHEMA,
        )
        .await?;
        for h in &cluster.hosts {
            accept_vip(h).await?;
        }

        progress("a VPC in moto: subnets, instances, route tables with the VIP on db-1");
        let vpc = moto::build_vpc(&ec2, &AZS, VIP).await?;
        let world = World {
            cluster,
            vpc,
            ec2,
            proxy,
            secrets,
            admin_ca,
            args: args.clone(),
            moto,
        };
        progress("the multiaz sidecar on every database host");
        for i in 0..world.cluster.hosts.len() {
            world.write_host_files(i)?;
            world.start_sidecar(i).await?;
        }
        world.wait_for_sidecars().await?;

        progress("the router (VIP routes mirrored from moto) and a client per AZ");
        world.start_router().await?;
        world.start_clients().await?;
        Ok(world)
    }

    fn write_host_files(&self, i: usize) -> anyhow::Result<()> {
        let h = self.db(i);
        let secrets = h.work.join("secrets");
        std::fs::create_dir_all(&secrets)?;
        let s = &self.secrets;
        for (name, value) in [
            ("mysql-password", &s.admin_password),
            ("cluster-key", &s.cluster_key),
            ("admin-token", &s.admin_token),
            ("admin-cert.pem", &s.admin_cert),
            ("admin-key.pem", &s.admin_key),
        ] {
            write_secret(&secrets.join(name), value)?;
        }
        let config = self.sidecar_config(i);
        std::fs::write(h.work.join("multiaz.toml"), config)
            .with_context(|| format!("writing {}/multiaz.toml", h.work.display()))?;
        Ok(())
    }

    /// Each route table with the interface its VIP route should name, once the
    /// failover to host `master` is done and host `gone` (if any) is down or cut off:
    /// route mode, the master's; anchored, the table's own AZ's host (table i carries
    /// AZ i's clients, where host i lives), or the master's when that host is gone.
    pub fn wanted_routes(&self, master: usize, gone: Option<usize>) -> Vec<(String, String)> {
        let enis = &self.vpc.enis;
        self.vpc
            .route_tables
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let to = match self.args.vip_mode {
                    VipMode::Anchored if Some(i) != gone => &enis[i],
                    _ => &enis[master],
                };
                (t.clone(), to.clone())
            })
            .collect()
    }

    /// The sidecar's configuration on host `i`, as an operator would write it.
    pub fn sidecar_config(&self, i: usize) -> String {
        let a = &self.args;
        let h = self.db(i);
        use multiaz_testkit::sidecar as cfg;
        let config = cfg::SidecarConfig {
            node_id: World::node_id(i),
            state_dir: "/work/state".into(),
            cluster: cfg::Cluster {
                name: "chaos".into(),
                flavour: a.flavour.flavour().to_string(),
                initial_master: 1,
            },
            vip: cfg::Vip {
                address: VIP.to_string(),
                route_tables: self.vpc.route_tables.clone(),
                forward: true,
                mode: a.vip_mode,
                // Table i carries the clients of AZ i, where database host i lives.
                table_azs: match a.vip_mode {
                    VipMode::Route => Default::default(),
                    VipMode::Anchored => self
                        .vpc
                        .route_tables
                        .iter()
                        .zip(AZS)
                        .map(|(t, az)| (t.clone(), az.to_string()))
                        .collect(),
                },
            },
            timing: cfg::Timing {
                probe_interval_ms: a.probe_interval_ms,
                probe_failures: a.probe_failures,
                lease_ms: a.lease_ms,
                step_timeout_ms: 10000,
                salvage_timeout_ms: 5000,
                raft_tick_ms: 100,
                // The run acknowledges every failover (`multiaz ack`) before the next
                // cycle.
                failover_block_ms: 3_600_000,
                ..Default::default()
            },
            aws: cfg::Aws {
                region: moto::REGION.into(),
                endpoint_url: format!("http://{}:{}", self.cluster.gateway, self.proxy.port),
                api_deadline_ms: 20000,
                attempt_timeout_ms: Some(5000),
            },
            mysql: cfg::Mysql {
                user: db::ADMIN_USER.into(),
                password_file: format!("{SECRETS}/mysql-password"),
                binlog_dir: Some(db::DATADIR.into()),
                tls: None,
                tls_ca_file: None,
            },
            peers: cfg::Peers {
                listen: format!("{}:{PEER_PORT}", h.ip),
                key_file: format!("{SECRETS}/cluster-key"),
            },
            admin: cfg::Admin {
                listen: format!("0.0.0.0:{ADMIN_PORT}"),
                token_file: format!("{SECRETS}/admin-token"),
                tls_cert_file: Some(format!("{SECRETS}/admin-cert.pem")),
                tls_key_file: Some(format!("{SECRETS}/admin-key.pem")),
            },
            nodes: self
                .cluster
                .hosts
                .iter()
                .enumerate()
                .map(|(j, host)| cfg::Node {
                    id: World::node_id(j),
                    name: host.name.clone(),
                    az: AZS[j].into(),
                    kind: "database".into(),
                    mysql: format!("{}:{}", host.ip, db::PORT),
                    peer: format!("{}:{PEER_PORT}", host.ip),
                    instance_id: self.vpc.instances[j].clone(),
                    eni_id: self.vpc.enis[j].clone(),
                })
                .collect(),
        };
        format!("# written by multiaz-chaos\n{}", config.to_toml(""))
    }

    pub async fn start_sidecar(&self, i: usize) -> anyhow::Result<()> {
        self.db(i)
            .spawn(
                &format!(
                    "env {AWS_ENV} RUST_LOG=info {BIN_DIR}/multiaz run --config /work/multiaz.toml"
                ),
                "sidecar.log",
            )
            .await
    }

    /// Until a coordinator is elected and every sidecar hears every other.
    pub async fn wait_for_sidecars(&self) -> anyhow::Result<Status> {
        let mut last = String::new();
        for _ in 0..300 {
            match observe::status(self.admin(0)).await {
                Ok(s) if s.leader().is_some() && s.all_live() => return Ok(s),
                Ok(s) => last = format!("leader {:?}, live {:?}", s.leader(), s.live_nodes()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("the sidecars did not elect a coordinator within 60 s ({last}); logs: sidecar.log in each db-* work directory")
    }

    async fn start_router(&self) -> anyhow::Result<()> {
        let r = self.router();
        let mut cmd = format!(
            "env {AWS_ENV} {BIN_DIR}/multiaz-chaos router --endpoint {} --vip {VIP} --log /work/router.log",
            self.moto.endpoint(self.cluster.gateway)
        );
        for (table, client) in self.vpc.route_tables.iter().zip(&self.cluster.clients) {
            cmd.push_str(&format!(" --table {table}={}", client.ip));
        }
        for (eni, db) in self.vpc.enis.iter().zip(&self.cluster.hosts) {
            cmd.push_str(&format!(" --eni {eni}={}", db.ip));
        }
        r.spawn(&cmd, "router.out").await?;
        let log = r.work.join("router.log");
        for _ in 0..150 {
            let n = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("route "))
                .count();
            if n >= self.vpc.route_tables.len() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let out = std::fs::read_to_string(r.work.join("router.out")).unwrap_or_default();
        bail!("the router did not install the VIP routes within 30 s:\n{out}")
    }

    /// Every client host runs two writers: one through the VIP (client `i + 1`), one
    /// through a local HAProxy that sends to whichever database host answers 200 on
    /// `/primary` (client `CLIENTS + i + 1`).
    async fn start_clients(&self) -> anyhow::Result<()> {
        let router_ip = self.router().ip;
        for (i, c) in self.cluster.clients.iter().enumerate() {
            c.sh(&format!("ip route replace {VIP}/32 via {router_ip}"))
                .await?;
            write_secret(&c.work.join("app-password"), &self.secrets.app_password)?;
            std::fs::write(c.work.join("haproxy.cfg"), self.haproxy_config())
                .with_context(|| format!("writing {}/haproxy.cfg", c.work.display()))?;
            c.spawn("haproxy -W -db -f /work/haproxy.cfg", "haproxy.out")
                .await?;
            c.spawn(
                &format!(
                    "{BIN_DIR}/multiaz-chaos client --id {} --server 127.0.0.1:{HAPROXY_PORT} --user {} \
                     --password-file /work/app-password --interval-ms {} --log /work/client-haproxy.log",
                    CLIENTS + i + 1,
                    db::APP_USER,
                    self.args.write_interval_ms
                ),
                "client-haproxy.out",
            )
            .await?;
            c.spawn(
                &format!(
                    "{BIN_DIR}/multiaz-chaos client --id {} --server {VIP}:{} --user {} \
                     --password-file /work/app-password --interval-ms {} --log /work/client.log",
                    i + 1,
                    db::PORT,
                    db::APP_USER,
                    self.args.write_interval_ms
                ),
                "client.out",
            )
            .await?;
        }
        Ok(())
    }

    /// The writers' logs, in client order: the VIP's writers first, then HAProxy's.
    pub fn client_logs(&self) -> Vec<PathBuf> {
        let logs = |name: &str| -> Vec<PathBuf> {
            self.cluster
                .clients
                .iter()
                .map(|c| c.work.join(name))
                .collect()
        };
        let mut all = logs("client.log");
        all.extend(logs("client-haproxy.log"));
        all
    }

    /// HAProxy as the README's recipe has it: TCP to the database host whose sidecar
    /// answers 200 on `/primary` (the admin API, over TLS), checked every 500 ms, one
    /// failed check enough to drop it and its sessions.
    pub fn haproxy_config(&self) -> String {
        let servers: String = (0..self.cluster.hosts.len())
            .map(|i| {
                format!(
                    "  server {} {}:{}\n",
                    self.db(i).name,
                    self.db(i).ip,
                    db::PORT
                )
            })
            .collect();
        format!(
            "global\n  maxconn 512\n\n\
             defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n\n\
             listen mysql-primary\n  bind 127.0.0.1:{HAPROXY_PORT}\n\
             \x20 option httpchk GET /primary\n  http-check expect status 200\n\
             \x20 default-server check port {ADMIN_PORT} check-ssl verify none inter 500 fall 1 rise 1 on-marked-down shutdown-sessions\n\
             {servers}"
        )
    }

    pub fn router_log(&self) -> PathBuf {
        self.router().work.join("router.log")
    }

    pub fn ip(&self, i: usize) -> IpAddr {
        self.db(i).ip
    }

    /// Stops the clients' writing (at the end of a run).
    pub async fn stop_clients(&self) -> anyhow::Result<()> {
        for c in &self.cluster.clients {
            c.sh("pkill -x multiaz-chaos || true").await?;
        }
        Ok(())
    }
}

/// The host accepts packets for the VIP, as an instance with source/destination check
/// off and the VIP on `lo` does (README, "On EC2", step 2).
pub async fn accept_vip(h: &Host) -> anyhow::Result<()> {
    h.sh(&format!(
        "ip addr replace {VIP}/32 dev lo && ip addr show dev lo | grep -q {VIP}"
    ))
    .await
    .map(|_| ())
}

fn write_secret(path: &Path, value: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, value).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}
