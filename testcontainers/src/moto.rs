//! The EC2 API for the container cluster: `moto_server` on this machine, reached by
//! the hosts through the network's gateway, with a VPC shaped as multiaz expects — a
//! subnet and an instance per AZ (source/destination check off) and one route table
//! per AZ carrying the VIP's /32 route to the first instance's interface.

use anyhow::{anyhow, Context};
use aws_sdk_ec2::types::{AttributeBooleanValue, InstanceType};
use aws_sdk_ec2::Client;
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin};
use std::time::{Duration, Instant};

pub const REGION: &str = "us-east-1";

/// A running `moto_server`, stopped on drop — and when this process dies without
/// dropping it (Ctrl-C, a kill): it runs under a guard that stops it when this
/// process's end of a pipe closes.
pub struct Moto {
    guard: Option<(Child, ChildStdin)>,
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.guard.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

fn find(program: &str, env: &str) -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!("{program} not found on PATH (or ${env}): `pip install 'moto[server]'`; ci/deps installs it")
        })
}

impl Moto {
    /// Starts moto on every address of this machine (the hosts reach it through the
    /// gateway) and waits until it listens.
    pub fn start() -> anyhow::Result<Moto> {
        Moto::start_on(Ipv4Addr::UNSPECIFIED)
    }

    /// [`Moto::start`] on one address of this machine (loopback: no containers).
    pub fn start_on(addr: Ipv4Addr) -> anyhow::Result<Moto> {
        let port = TcpListener::bind((addr, 0))?.local_addr()?.port();
        let program = find("moto_server", "MULTIAZ_MOTO_SERVER")?;
        let guard = crate::network::guarded(
            &format!(
                "'{}' -H {addr} -p {port} > /dev/null 2>&1 & m=$!;",
                program.display()
            ),
            "kill $m",
        )
        .context("starting moto_server")?;
        let moto = Moto {
            guard: Some(guard),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                anyhow::bail!("moto_server did not listen on port {port} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(moto)
    }

    /// The endpoint for `at` (`127.0.0.1` here, the gateway from the hosts).
    pub fn endpoint(&self, at: IpAddr) -> String {
        format!("http://{at}:{}", self.port)
    }

    /// A client on this machine (moto takes any credentials).
    pub async fn client(&self) -> Client {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        let local = self.endpoint(IpAddr::V4(Ipv4Addr::LOCALHOST));
        multiaz_sidecar::adapters::ec2::client(REGION, Some(&local), Duration::from_secs(5)).await
    }
}

/// What [`build_vpc`] made, index i for AZ i.
#[derive(Debug, Clone)]
pub struct Vpc {
    pub enis: Vec<String>,
    pub instances: Vec<String>,
    pub route_tables: Vec<String>,
}

/// A VPC with `azs.len()` subnets, instances and route tables; the VIP route points
/// at the first instance's interface.
pub async fn build_vpc(client: &Client, azs: &[&str], vip: Ipv4Addr) -> anyhow::Result<Vpc> {
    let vpc = client
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await?
        .vpc
        .and_then(|v| v.vpc_id)
        .context("CreateVpc")?;
    let images = client.describe_images().send().await?;
    let image = images
        .images()
        .first()
        .and_then(|i| i.image_id())
        .context("moto offers no image")?
        .to_string();
    let mut w = Vpc {
        enis: vec![],
        instances: vec![],
        route_tables: vec![],
    };
    for (i, az) in azs.iter().enumerate() {
        let subnet = client
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(format!("10.0.{}.0/24", i + 1))
            .availability_zone(*az)
            .send()
            .await?
            .subnet
            .and_then(|s| s.subnet_id)
            .context("CreateSubnet")?;
        let run = client
            .run_instances()
            .image_id(&image)
            .instance_type(InstanceType::T3Micro)
            .min_count(1)
            .max_count(1)
            .subnet_id(&subnet)
            .send()
            .await?;
        let inst = run.instances().first().context("RunInstances")?;
        let id = inst.instance_id().context("instance id")?.to_string();
        let eni = inst
            .network_interfaces()
            .first()
            .and_then(|n| n.network_interface_id())
            .context("instance interface")?
            .to_string();
        client
            .modify_instance_attribute()
            .instance_id(&id)
            .source_dest_check(AttributeBooleanValue::builder().value(false).build())
            .send()
            .await?;
        w.instances.push(id);
        w.enis.push(eni);
    }
    for _ in azs {
        let rt = client
            .create_route_table()
            .vpc_id(&vpc)
            .send()
            .await?
            .route_table
            .and_then(|r| r.route_table_id)
            .context("CreateRouteTable")?;
        client
            .create_route()
            .route_table_id(&rt)
            .destination_cidr_block(format!("{vip}/32"))
            .network_interface_id(&w.enis[0])
            .send()
            .await?;
        w.route_tables.push(rt);
    }
    Ok(w)
}

/// The interface each route table's VIP route points at ("" when it has none).
pub async fn vip_targets(
    client: &Client,
    tables: &[String],
    vip: Ipv4Addr,
) -> anyhow::Result<Vec<String>> {
    let out = client
        .describe_route_tables()
        .set_route_table_ids(Some(tables.to_vec()))
        .send()
        .await?;
    let dest = format!("{vip}/32");
    let by_id = |id: &str| {
        out.route_tables()
            .iter()
            .find(|t| t.route_table_id() == Some(id))
            .and_then(|t| {
                t.routes()
                    .iter()
                    .find(|r| r.destination_cidr_block() == Some(&dest))
                    .and_then(|r| r.network_interface_id())
            })
            .unwrap_or("")
            .to_string()
    };
    Ok(tables.iter().map(|t| by_id(t)).collect())
}
