//! One database host: a container with a shell, its address on the private network,
//! and its work directory on this machine.

use anyhow::{bail, Context};
use std::net::IpAddr;
use std::path::PathBuf;
use testcontainers::core::ExecCommand;
use testcontainers::{ContainerAsync, GenericImage};

pub struct Host {
    pub name: String,
    pub az: String,
    pub ip: IpAddr,
    /// This host's work directory on this machine (mounted at `/work` in it).
    pub work: PathBuf,
    container: ContainerAsync<GenericImage>,
}

impl Host {
    pub(crate) fn new(
        name: String,
        az: String,
        ip: IpAddr,
        work: PathBuf,
        container: ContainerAsync<GenericImage>,
    ) -> Host {
        Host {
            name,
            az,
            ip,
            work,
            container,
        }
    }

    /// Runs a bash script in the host; its stdout, or an error with its stderr when it
    /// exits non-zero.
    pub async fn sh(&self, script: &str) -> anyhow::Result<String> {
        let mut r = self
            .container
            .exec(ExecCommand::new(["bash", "-c", script]))
            .await
            .with_context(|| format!("{}: exec", self.name))?;
        let out = r.stdout_to_vec().await?;
        let err = r.stderr_to_vec().await?;
        let code = r.exit_code().await?.unwrap_or(0);
        if code != 0 {
            bail!(
                "{}: `{script}` exited {code}: {}",
                self.name,
                String::from_utf8_lossy(&err).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Starts a long-running process in the background (its own session, so it
    /// outlives the exec), output to `/work/<log>`.
    pub async fn spawn(&self, command: &str, log: &str) -> anyhow::Result<()> {
        self.sh(&format!(
            "setsid nohup {command} >> /work/{log} 2>&1 < /dev/null & echo started"
        ))
        .await
        .map(|_| ())
    }

    /// Stops the whole host at once (SIGKILL to everything in it): a host crash. Its
    /// disk stays; [`Host::boot`] starts it again with nothing running.
    pub async fn crash(&self) -> anyhow::Result<()> {
        self.container
            .stop_with_timeout(Some(0))
            .await
            .with_context(|| format!("{}: crash", self.name))
    }

    pub async fn boot(&self) -> anyhow::Result<()> {
        self.container
            .start()
            .await
            .with_context(|| format!("{}: boot", self.name))
    }

    pub fn container_id(&self) -> &str {
        self.container.id()
    }
}
