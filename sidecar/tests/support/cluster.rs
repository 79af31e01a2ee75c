//! A whole cluster on one machine for the real-server tests: three MariaDB servers on
//! loopback ports replicating from db-1 with GTID and semi-sync, `moto_server` as the
//! EC2 API with a VPC and the VIP route tables, and three `multiaz run` processes.
#![allow(dead_code)] // each test binary uses its own part

use super::*;
use multiaz_testcontainers::moto::Moto;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const APP_PASSWORD: &str = "app-password";
pub const VIP: &str = "10.0.100.10";
pub const REGION: &str = "us-east-1";
pub const AZS: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
pub const ADMIN_TOKEN: &str = "admin-token-for-tests";

/// The VPC the tests build in moto (the same one the container runs use).
pub type Ec2World = multiaz_testcontainers::moto::Vpc;

pub async fn build_vpc(client: &aws_sdk_ec2::Client) -> Ec2World {
    multiaz_testcontainers::moto::build_vpc(client, &AZS, VIP.parse().unwrap())
        .await
        .unwrap_or_else(|e| panic!("building the VPC in moto: {e:#}"))
}

pub async fn vip_targets(client: &aws_sdk_ec2::Client, tables: &[String]) -> Vec<String> {
    multiaz_testcontainers::moto::vip_targets(client, tables, VIP.parse().unwrap())
        .await
        .unwrap_or_else(|e| panic!("DescribeRouteTables: {e:#}"))
}

pub struct Ports {
    pub peer: u16,
    pub admin: u16,
}

pub fn write_config(
    dir: &Path,
    me: usize,
    dbs: &[Mariadb],
    ports: &[Ports],
    w: &Ec2World,
    endpoint: &str,
    extra: &str,
) -> PathBuf {
    use multiaz_testkit::sidecar as cfg;
    let d = dir.display();
    let tls = tls_ca(dir);
    let config = cfg::SidecarConfig {
        node_id: me as u64 + 1,
        state_dir: dir.join(format!("state{}", me + 1)).display().to_string(),
        cluster: cfg::Cluster {
            name: "it".into(),
            flavour: "mariadb".into(),
            initial_master: 1,
        },
        vip: cfg::Vip {
            address: VIP.into(),
            route_tables: w.route_tables.clone(),
            forward: false,
            mode: cfg::VipMode::Route,
            table_azs: Default::default(),
        },
        timing: multiaz_engine::Timing {
            probe_interval_ms: 1000,
            probe_failures: 3,
            lease_ms: 4000,
            step_timeout_ms: 10000,
            salvage_timeout_ms: 2000,
            raft_tick_ms: 100,
            ..Default::default()
        },
        aws: cfg::Aws {
            region: REGION.into(),
            endpoint_url: endpoint.into(),
            api_deadline_ms: 10000,
            attempt_timeout_ms: None,
        },
        mysql: cfg::Mysql {
            user: "multiaz".into(),
            password_file: format!("{d}/password"),
            binlog_dir: Some(format!("{d}/db{}", me + 1)),
            tls: tls.as_ref().map(|_| "required".into()),
            tls_ca_file: tls.map(|ca| ca.display().to_string()),
        },
        peers: cfg::Peers {
            listen: format!("127.0.0.1:{}", ports[me].peer),
            key_file: format!("{d}/cluster-key"),
        },
        admin: cfg::Admin {
            listen: format!("127.0.0.1:{}", ports[me].admin),
            token_file: format!("{d}/admin-token"),
            tls_cert_file: None,
            tls_key_file: None,
        },
        nodes: (0..3)
            .map(|i| cfg::Node {
                id: i as u64 + 1,
                name: format!("db-{}", i + 1),
                az: AZS[i].into(),
                kind: "database".into(),
                mysql: format!("127.0.0.1:{}", dbs[i].port),
                peer: format!("127.0.0.1:{}", ports[i].peer),
                instance_id: w.instances[i].clone(),
                eni_id: w.enis[i].clone(),
            })
            .collect(),
    };
    let t = config.to_toml(extra);
    let path = dir.join(format!("node{}.toml", me + 1));
    std::fs::write(&path, t).unwrap();
    path
}

/// Waits until the failover away from db-1 is complete: a replica writable, the other
/// replicating from it (both threads running), every VIP route on its interface.
/// Returns the new master's index.
pub async fn failed_over_from_db1(
    dbs: &[Mariadb],
    ec2: &aws_sdk_ec2::Client,
    world: &Ec2World,
) -> usize {
    loop {
        for (new, other) in [(1usize, 2usize), (2, 1)] {
            let Some(r) = query_row(dbs[new].port, "SELECT @@read_only AS ro").await else {
                continue;
            };
            if col(&r, "ro") != "0" {
                continue;
            }
            let Some(s) = query_row(dbs[other].port, "SHOW SLAVE STATUS").await else {
                continue;
            };
            let follows = col(&s, "Master_Port") == dbs[new].port.to_string()
                && col(&s, "Slave_IO_Running") == "Yes"
                && col(&s, "Slave_SQL_Running") == "Yes";
            let routes = vip_targets(ec2, &world.route_tables).await;
            if follows && routes.iter().all(|t| *t == world.enis[new]) {
                return new;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn multiaz(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_multiaz"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .expect("multiaz runs")
}

pub struct Cluster {
    pub dir: PathBuf,
    pub dbs: Vec<Mariadb>,
    pub ec2: aws_sdk_ec2::Client,
    pub world: Ec2World,
    pub ports: Vec<Ports>,
    pub configs: Vec<PathBuf>,
    pub sidecars: Vec<Guard>,
    pub moto: Moto,
}

impl Cluster {
    /// Starts everything under `target/tmp/<name>` (kept after the run so that the
    /// servers' files and the sidecars' logs can be read) and waits until a
    /// coordinator is elected and every sidecar is live. `extra` is appended to each
    /// sidecar's config.
    pub async fn start(name: &str, extra: &str) -> Cluster {
        Self::start_with(name, extra, false).await
    }

    /// As [`Cluster::start`], with TLS: the servers have a certificate from a CA made
    /// for the run, the `multiaz` account (the sidecars' and replication's) requires
    /// TLS, and the sidecars run with `mysql.tls = "required"`.
    pub async fn start_tls(name: &str, extra: &str) -> Cluster {
        Self::start_with(name, extra, true).await
    }

    async fn start_with(name: &str, extra: &str, tls: bool) -> Cluster {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if tls {
            make_certs(&dir);
        }
        let dir_buf = dir.clone();
        let dir = dir_buf.as_path();
        eprintln!("servers' files and sidecar logs: {}", dir.display());
        write_secret(&dir.join("password"), &format!("{PASSWORD}\n"));
        write_secret(
            &dir.join("cluster-key"),
            "integration-test-cluster-key-0123",
        );
        write_secret(&dir.join("admin-token"), ADMIN_TOKEN);

        // --- three MariaDB servers, GTID + semi-sync replication from db-1 -----------------
        let dbs: Vec<Mariadb> = (1..=3).map(|i| start_mariadb(dir, i, i == 1)).collect();
        let app_user = format!(
            "CREATE USER 'app'@'%' IDENTIFIED BY '{APP_PASSWORD}'; \
             GRANT SELECT, INSERT ON app.* TO 'app'@'%';"
        );
        for db in &dbs {
            ready_with_users(db, &app_user).await;
        }
        for db in &dbs[1..] {
            root_sql(
                db,
                &format!(
                    "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, \
                     MASTER_USER = 'multiaz', MASTER_PASSWORD = '{PASSWORD}', \
                     MASTER_USE_GTID = slave_pos, MASTER_HEARTBEAT_PERIOD = 0.5, \
                     MASTER_CONNECT_RETRY = 1{}; START SLAVE;",
                    dbs[0].port,
                    match tls_ca(dir) {
                        Some(ca) => format!(
                            ", MASTER_SSL = 1, MASTER_SSL_CA = '{}', MASTER_SSL_VERIFY_SERVER_CERT = 1",
                            ca.display()
                        ),
                        None => String::new(),
                    }
                ),
            );
        }
        // Semi-sync never falls back to async (a day, as recommended): the first write
        // waits until both replicas are attached and acknowledging.
        wait_until(
            "both replicas attach as semi-sync replicas",
            Duration::from_secs(30),
            || async {
                let r = query_row(
                    dbs[0].port,
                    "SHOW STATUS LIKE 'Rpl_semi_sync_master_clients'",
                )
                .await?;
                (col(&r, "Value") == "2").then_some(())
            },
        )
        .await;
        root_sql(
            &dbs[0],
            "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(40)) ENGINE=InnoDB;",
        );
        for db in &dbs[1..] {
            wait_until("replicas have the schema", Duration::from_secs(20), || async {
                let r = query_row(db.port, "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = 'app'").await?;
                (col(&r, "n") == "1").then_some(())
            })
            .await;
        }

        // --- moto: a VPC, three subnets and instances, route tables with the VIP -----------
        let moto = Moto::start_on(Ipv4Addr::LOCALHOST).unwrap_or_else(|e| panic!("{e:#}"));
        let endpoint = moto.endpoint(Ipv4Addr::LOCALHOST.into());
        let ec2 = moto.client().await;
        let world = build_vpc(&ec2).await;

        // --- three sidecars -----------------------------------------------------------------
        let ports: Vec<Ports> = (0..3)
            .map(|_| Ports {
                peer: free_port(),
                admin: free_port(),
            })
            .collect();
        let configs: Vec<PathBuf> = (0..3)
            .map(|i| write_config(dir, i, &dbs, &ports, &world, &endpoint, extra))
            .collect();
        let mut sidecars = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let log = std::fs::File::create(dir.join(format!("sidecar{}.log", i + 1))).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_multiaz"))
                .args(["run", "--config"])
                .arg(c)
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("multiaz run starts");
            sidecars.push(Guard(child));
        }
        wait_until(
            "a coordinator is elected and every sidecar is live",
            Duration::from_secs(30),
            || async {
                let out = multiaz(&["status", "--json"], &configs[0]);
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                let live = v["nodes"]
                    .as_object()?
                    .values()
                    .all(|n| n["sidecar_live"] == true);
                (!v["leader"].is_null() && live).then_some(())
            },
        )
        .await;
        Cluster {
            dir: dir_buf.clone(),
            dbs,
            ec2,
            world,
            ports,
            configs,
            sidecars,
            moto,
        }
    }

    pub fn dump_logs(&self) {
        dump_sidecar_logs(&self.dir);
    }

    /// `multiaz status --json` of node `i` (0-based).
    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        let out = multiaz(&["status", "--json"], &self.configs[i]);
        serde_json::from_slice(&out.stdout).ok()
    }
}

/// Prints every sidecar's log (on a failure).
pub fn dump_sidecar_logs(dir: &Path) {
    for i in 1..=3 {
        let log = std::fs::read_to_string(dir.join(format!("sidecar{i}.log"))).unwrap_or_default();
        eprintln!("----- sidecar {i} -----\n{log}");
    }
}

/// A secret file as an operator must write it: mode 0600 (the sidecar refuses others).
pub fn write_secret(path: &Path, value: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, value).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
