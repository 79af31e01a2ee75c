//! The cluster's private network: a Docker bridge network with a subnet of its own, so
//! that hosts can keep fixed addresses (a database host that crashes and boots must come
//! back at the address its peers are configured with, as an EC2 instance keeps its
//! private IP). Dynamic addresses come from the upper half of the subnet; fixed ones
//! are taken from the lower half, so the two never collide.
//!
//! Teardown cannot rely on `Drop` alone: on Ctrl-C testcontainers' watchdog removes the
//! containers and then ends the process the default way, and a SIGKILLed run runs
//! nothing at all. So a reaper process (in its own session, out of reach of the
//! terminal's Ctrl-C) waits on a pipe from this process; when the pipe closes — on drop,
//! or when this process dies for any reason — it removes whatever containers are left
//! on the network, then the network.

use anyhow::{bail, Context};
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Child, ChildStdin, Command, Stdio};

pub struct Network {
    pub name: String,
    /// The first three octets of the /24.
    prefix: [u8; 3],
    reaper: Option<(Child, ChildStdin)>,
}

impl Network {
    /// Creates `name` on a free /24 among 172.29.0.0–172.29.255.0.
    pub fn create(name: &str) -> anyhow::Result<Network> {
        let start = std::process::id() as u8;
        let mut last_error = String::new();
        for k in 0..=255u8 {
            let third = start.wrapping_add(k);
            let subnet = format!("172.29.{third}.0/24");
            let out = Command::new("docker")
                .args(["network", "create", "--driver", "bridge", "--subnet", &subnet])
                .args(["--ip-range", &format!("172.29.{third}.128/25")])
                .args(["--gateway", &format!("172.29.{third}.1")])
                .args(["--label", "multiaz-testcontainers=1", name])
                .output()
                .context("cannot run `docker`: the container cluster needs the Docker engine and its CLI")?;
            if out.status.success() {
                let reaper = spawn_reaper(name)?;
                return Ok(Network {
                    name: name.to_string(),
                    prefix: [172, 29, third],
                    reaper: Some(reaper),
                });
            }
            last_error = String::from_utf8_lossy(&out.stderr).trim().to_string();
            // Only an overlapping subnet is worth another try.
            if !last_error.contains("overlap") && !last_error.contains("Pool") {
                break;
            }
        }
        bail!("cannot create the docker network {name}: {last_error}")
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.addr(1)
    }

    /// The fixed address `.n` (n below 128).
    pub fn addr(&self, n: u8) -> Ipv4Addr {
        debug_assert!(n < 128, "fixed addresses are in the lower half");
        let [a, b, c] = self.prefix;
        Ipv4Addr::new(a, b, c, n)
    }

    /// Gives the container `id` the fixed address `ip` on this network: Docker keeps it
    /// across the container's restarts.
    pub fn pin(&self, id: &str, ip: Ipv4Addr) -> anyhow::Result<()> {
        docker(&["network", "disconnect", &self.name, id])?;
        docker(&[
            "network",
            "connect",
            "--ip",
            &ip.to_string(),
            &self.name,
            id,
        ])
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.reaper.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

fn docker(args: &[&str]) -> anyhow::Result<()> {
    crate::run("docker", args)
}

/// Runs `now` in a new session, then `later` once the returned pipe closes: on drop of
/// the pipe, or when this process ends however it ends.
pub(crate) fn guarded(now: &str, later: &str) -> anyhow::Result<(Child, ChildStdin)> {
    let mut child = Command::new("setsid")
        .args(["sh", "-c", &format!("{now} cat > /dev/null; {later}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the cleanup process (setsid sh)")?;
    let mut stdin = child.stdin.take().context("cleanup pipe")?;
    // Nothing is ever written but this; it proves the pipe is open.
    stdin.write_all(b"\n").context("cleanup pipe")?;
    Ok((child, stdin))
}

fn spawn_reaper(network: &str) -> anyhow::Result<(Child, ChildStdin)> {
    guarded(
        "",
        &format!(
            "ids=$(docker ps -aq --filter network={network}); \
         [ -n \"$ids\" ] && docker rm -f $ids; docker network rm {network}"
        ),
    )
}
