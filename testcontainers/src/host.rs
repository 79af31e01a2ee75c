//! One database host: a container with a shell, its address on the private network,
//! and its work directory on this machine.

use crate::Server;
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
    /// The database server its image carries.
    pub server: Server,
    container: ContainerAsync<GenericImage>,
}

impl Host {
    pub(crate) fn new(
        name: String,
        az: String,
        ip: IpAddr,
        work: PathBuf,
        server: Server,
        container: ContainerAsync<GenericImage>,
    ) -> Host {
        Host {
            name,
            az,
            ip,
            work,
            server,
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
                "{}: `{}` exited {code}: {}",
                self.name,
                // Shown as the statements read, without sh's quoting of quotes.
                redact(&script.replace(r"'\''", "'")),
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

/// A script as an error may show it: the quoted value after `IDENTIFIED BY` or
/// `PASSWORD =` is replaced, so that a failed statement never prints a password.
fn redact(script: &str) -> String {
    let mut out = String::with_capacity(script.len());
    let mut rest = script;
    loop {
        let upper = rest.to_ascii_uppercase();
        let at = ["IDENTIFIED BY", "PASSWORD ="]
            .iter()
            .filter_map(|k| upper.find(k).map(|i| i + k.len()))
            .min();
        let Some(at) = at else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let value = rest.trim_start();
        out.push_str(&rest[..rest.len() - value.len()]);
        let quote = match value.chars().next() {
            Some(q @ ('\'' | '"')) => q,
            _ => {
                rest = value;
                continue;
            }
        };
        match value[1..].find(quote) {
            Some(end) => {
                out.push_str("'***'");
                rest = &value[end + 2..];
            }
            None => {
                out.push_str("'***'");
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted_from_failed_scripts() {
        let s = "CREATE USER 'a'@'%' IDENTIFIED BY 'hunter2'; CHANGE MASTER TO MASTER_PASSWORD = 'pw2', X=1";
        let r = super::redact(s);
        assert!(!r.contains("hunter2") && !r.contains("pw2"), "{r}");
        assert!(
            r.contains("CREATE USER 'a'@'%' IDENTIFIED BY '***';"),
            "{r}"
        );
        assert!(r.ends_with("MASTER_PASSWORD = '***', X=1"), "{r}");
        assert_eq!(super::redact("SELECT 1"), "SELECT 1");
        let quoted = r"mariadb -e 'CREATE USER '\''m'\'' IDENTIFIED BY '\''pw3'\'';'";
        let r = super::redact(&quoted.replace(r"'\''", "'"));
        assert!(!r.contains("pw3"), "{r}");
    }
}
