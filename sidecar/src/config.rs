//! The sidecar's configuration file (TOML). Unknown keys are refused; every error names
//! the file, the key and the reason. Secrets (MySQL password, cluster key, admin token)
//! come from a file or an environment variable, never from the file itself, and never
//! reach a log: [`Secret`]'s `Debug` is redacted.

use multiaz_engine::{
    ClusterSpec, Flavour, NodeId, NodeKind, NodeSpec, PromotionRule, Timing, Vip,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::address::Address;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {why}")]
    Invalid { file: PathBuf, why: String },
    #[error("{file}: {key}: {why}")]
    Key {
        file: PathBuf,
        key: String,
        why: String,
    },
}

/// A secret value: compared and used, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    node_id: NodeId,
    state_dir: PathBuf,
    cluster: RawCluster,
    vip: Vip,
    #[serde(default)]
    timing: Timing,
    aws: Aws,
    mysql: RawMysql,
    peers: RawPeers,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    hooks: Hooks,
    nodes: Vec<RawNode>,
}

/// Commands run before and after failovers and switchovers (on the coordinating
/// sidecar), each an argv: `["/usr/local/bin/page", "--team", "dba"]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    #[serde(default)]
    pub pre_failover: Option<Vec<String>>,
    #[serde(default)]
    pub post_failover: Option<Vec<String>>,
    #[serde(default)]
    pub pre_switchover: Option<Vec<String>>,
    #[serde(default)]
    pub post_switchover: Option<Vec<String>>,
    /// A hook still running after this is killed (and counts as failed).
    #[serde(default = "default_hook_timeout")]
    pub timeout_ms: u64,
    /// A failing pre hook (non-zero exit, timeout, cannot start) stops the failover
    /// or switchover. Off: it is logged and the operation goes on.
    #[serde(default)]
    pub veto: bool,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            pre_failover: None,
            post_failover: None,
            pre_switchover: None,
            post_switchover: None,
            timeout_ms: default_hook_timeout(),
            veto: false,
        }
    }
}

impl Hooks {
    /// The configured commands, by the name of their key.
    pub fn commands(&self) -> impl Iterator<Item = (&'static str, &Vec<String>)> {
        [
            ("pre_failover", &self.pre_failover),
            ("post_failover", &self.post_failover),
            ("pre_switchover", &self.pre_switchover),
            ("post_switchover", &self.post_switchover),
        ]
        .into_iter()
        .filter_map(|(n, c)| c.as_ref().map(|c| (n, c)))
    }
}

fn default_hook_timeout() -> u64 {
    5_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: String,
    flavour: Flavour,
    initial_master: NodeId,
    #[serde(default)]
    client_az: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aws {
    pub region: String,
    #[serde(default)]
    pub endpoint_url: Option<String>,
    #[serde(default = "default_api_deadline")]
    pub api_deadline_ms: u64,
    /// Bound of one API attempt; a hung call is abandoned and retried after this.
    #[serde(default = "default_attempt_timeout")]
    pub attempt_timeout_ms: u64,
}

/// A TOML error as "line L, column C (key): what", without the offending line's value:
/// it may be an inline secret.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    // serde's messages quote a value of the wrong type ("invalid type: string \"…\"").
    let message = redact_quoted(e.message().trim_end());
    let Some(span) = e.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = start - line_start + 1;
    let text_of_line = text[line_start..].lines().next().unwrap_or("");
    // Only what looks like one of our keys is named: a pasted secret with `=` in it
    // (base64 padding) must not pass for one.
    let is_key = |k: &str| {
        k.len() <= 40
            && k.starts_with(|c: char| c.is_ascii_lowercase())
            && k.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
    };
    match text_of_line.split_once('=') {
        Some((key, _)) if is_key(key.trim()) => {
            format!("line {line}, column {column} ({}): {message}", key.trim())
        }
        _ => format!("line {line}, column {column}: {message}"),
    }
}

/// `text` with every double-quoted part replaced by `"…"`.
fn redact_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for c in text.chars() {
        if c == '"' {
            if !inside {
                out.push_str("\"…");
            } else {
                out.push('"');
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out
}

/// A secret file's contents, refused when its group or others may read or write it
/// (the mode is read from the file opened, not from its path a moment before).
fn read_secret_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let cannot = |e: std::io::Error| format!("cannot read {shown}: {e}");
    let mut f = std::fs::File::open(path).map_err(cannot)?;
    let mode = f.metadata().map_err(cannot)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{shown} is open to group or others (mode {:03o}); run: chmod 600 {shown}",
            mode & 0o777
        ));
    }
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(cannot)?;
    Ok(bytes)
}

pub fn default_api_deadline() -> u64 {
    20_000
}

pub fn default_attempt_timeout() -> u64 {
    multiaz_driver::vip_routes::DEFAULT_ATTEMPT_TIMEOUT_MS
}

/// The secret `name` from its file or environment variable; `None` when neither is
/// given and it is not `required`.
/// A secret that may be left out: read from its file or environment variable.
fn optional_secret(
    file: &Path,
    name: &str,
    src: SecretSource,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, ConfigError> {
    let key = |why: String| ConfigError::Key {
        file: file.to_path_buf(),
        key: name.to_string(),
        why,
    };
    let value = match (src.file, src.env) {
        (Some(_), Some(_)) => {
            return Err(key(
                "give a file or an environment variable, not both".into()
            ))
        }
        (Some(path), None) => read_secret_file(&path).map_err(key)?,
        (None, Some(var)) => env(&var)
            .ok_or_else(|| key(format!("environment variable {var} is not set")))?
            .into_bytes(),
        (None, None) => return Ok(None),
    };
    // A trailing newline from `echo > file` is not part of the secret.
    let trimmed = value.strip_suffix(b"\n").unwrap_or(&value).to_vec();
    if trimmed.is_empty() {
        return Err(key("is empty".into()));
    }
    Ok(Some(Secret(trimmed)))
}

/// A secret the sidecar cannot run without.
fn required_secret(
    file: &Path,
    name: &str,
    src: SecretSource,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Secret, ConfigError> {
    optional_secret(file, name, src, env)?.ok_or_else(|| ConfigError::Key {
        file: file.to_path_buf(),
        key: name.to_string(),
        why: "missing: give a _file or an _env".into(),
    })
}

/// The text of a config file.
fn read_file(file: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file).map_err(|e| ConfigError::Invalid {
        file: file.to_path_buf(),
        why: format!("cannot read: {e}"),
    })
}

/// `text` as a `T`; the error names the place, never the line (see [`toml_error`]).
fn from_toml<T: serde::de::DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Invalid {
        file: file.to_path_buf(),
        why: toml_error(text, &e),
    })
}

/// What the operator's commands (`status`, `pause`, `resume`, `ack`, `switchover`)
/// need from a sidecar's configuration: the admin API's address and token, the nodes'
/// names and the step timeout. Read from the same file, but nothing else in it is read
/// or checked: the MySQL passwords and the cluster key stay unread, so an operator
/// account needs only the admin token.
#[derive(Debug, Clone)]
pub struct AdminAccess {
    pub file: PathBuf,
    pub endpoint: AdminEndpoint,
    /// `None`: the sidecar refuses changes.
    pub token: Option<Secret>,
    /// Every node's id and name.
    pub nodes: Vec<(NodeId, String)>,
    pub step_timeout: Duration,
}

/// The parts of the file [`AdminAccess`] reads; every other table is ignored.
#[derive(Debug, Deserialize)]
struct RawAccess {
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    nodes: Vec<RawNodeName>,
    #[serde(default)]
    timing: RawStepTiming,
}

#[derive(Debug, Deserialize)]
struct RawNodeName {
    id: NodeId,
    name: String,
}

#[derive(Debug, Default, Deserialize)]
struct RawStepTiming {
    step_timeout_ms: Option<u64>,
}

impl AdminAccess {
    pub fn load(file: &Path) -> Result<AdminAccess, ConfigError> {
        Self::parse(file, &read_file(file)?, &|name| std::env::var(name).ok())
    }

    pub fn parse(
        file: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AdminAccess, ConfigError> {
        let raw: RawAccess = from_toml(file, text)?;
        let endpoint = raw.admin.endpoint();
        let token = optional_secret(
            file,
            "admin.token",
            SecretSource {
                file: raw.admin.token_file,
                env: raw.admin.token_env,
            },
            env,
        )?;
        let step_timeout_ms = raw
            .timing
            .step_timeout_ms
            .unwrap_or(Timing::default().step_timeout_ms);
        Ok(AdminAccess {
            file: file.to_path_buf(),
            endpoint,
            token,
            nodes: raw.nodes.into_iter().map(|n| (n.id, n.name)).collect(),
            step_timeout: Duration::from_millis(step_timeout_ms.min(86_400_000)),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretSource {
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMysql {
    user: String,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default)]
    password_env: Option<String>,
    /// The user replicas log in to their source with; the sidecar's own by default.
    #[serde(default)]
    replication_user: Option<String>,
    #[serde(default)]
    replication_password_file: Option<PathBuf>,
    #[serde(default)]
    replication_password_env: Option<String>,
    /// Bound of one probe (connect and queries); at most the probe interval.
    #[serde(default)]
    probe_timeout_ms: Option<u64>,
    /// Where this host's mysqld writes its binlog (salvage reads it from here when
    /// mysqld has died); without it, this host cannot give up a dead master's tail.
    #[serde(default)]
    binlog_dir: Option<PathBuf>,
    /// The binlog index file; by default the one `*.index` file in `binlog_dir`.
    #[serde(default)]
    binlog_index: Option<PathBuf>,
    /// Let a master be made writable when semi-sync cannot be turned on (the plugin
    /// is missing). Off by default: such a master acknowledges writes no replica has,
    /// and a failover loses them.
    #[serde(default)]
    allow_async: bool,
    /// TLS on every connection the sidecar opens and every replication link it sets
    /// up: "off" (the default) or "required".
    #[serde(default)]
    tls: TlsMode,
    /// The CA (PEM) that signed the servers' certificates. The same path on every
    /// host: replicas read it too (`MASTER_SSL_CA` / `SOURCE_SSL_CA`).
    #[serde(default)]
    tls_ca_file: Option<PathBuf>,
}

/// `mysql.tls`. There is deliberately no "preferred": a client that falls back to
/// clear text when the server does not offer TLS can be made to by anyone on the
/// path, without a word. Move a cluster to TLS by giving every server a certificate
/// with `tls = "off"`, then turning it to "required".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    #[default]
    Off,
    Required,
}

/// TLS for the sidecar's MySQL connections and the replication links it sets up:
/// each server's certificate must come from this CA and name the address the server
/// has in `nodes[].mysql` (there is no switch to skip that check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlTls {
    pub ca_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeers {
    listen: SocketAddr,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default)]
    key_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default = "default_admin_listen")]
    listen: SocketAddr,
    #[serde(default)]
    token_file: Option<PathBuf>,
    #[serde(default)]
    token_env: Option<String>,
    /// HTTPS: the certificate (PEM, chain first) and its key (a 0600 file).
    #[serde(default)]
    tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    tls_key_file: Option<PathBuf>,
    /// What the operator commands trust for it; default: the certificate itself.
    #[serde(default)]
    tls_ca_file: Option<PathBuf>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: default_admin_listen(),
            token_file: None,
            token_env: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
        }
    }
}

impl RawAdmin {
    /// Where the operator commands call, and what they trust.
    fn endpoint(&self) -> AdminEndpoint {
        let ca = self
            .tls_ca_file
            .clone()
            .or_else(|| self.tls_cert_file.clone());
        AdminEndpoint::new(self.listen, ca)
    }
}

/// Where the admin API answers, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminEndpoint {
    /// The address to call: `admin.listen`, with an unspecified address (0.0.0.0)
    /// called on loopback.
    pub addr: SocketAddr,
    /// HTTPS, trusting only the certificates in this file; `None`: plain HTTP.
    pub tls_ca_file: Option<PathBuf>,
}

impl AdminEndpoint {
    /// For a sidecar listening on `listen`.
    pub fn new(listen: SocketAddr, tls_ca_file: Option<PathBuf>) -> Self {
        let mut addr = listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        AdminEndpoint { addr, tls_ca_file }
    }

    pub fn plain(addr: SocketAddr) -> Self {
        AdminEndpoint::new(addr, None)
    }
}

impl std::fmt::Display for AdminEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls_ca_file.is_some() {
            "https"
        } else {
            "http"
        };
        write!(f, "{scheme}://{}", self.addr)
    }
}

/// The admin API's own certificate and key (`[admin] tls_cert_file`, `tls_key_file`).
#[derive(Debug, Clone)]
pub struct AdminServerTls {
    pub cert_file: PathBuf,
    pub key: Secret,
}

fn default_admin_listen() -> SocketAddr {
    "127.0.0.1:7080".parse().expect("literal")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: NodeId,
    name: String,
    az: String,
    kind: NodeKind,
    #[serde(default)]
    promotion: PromotionRule,
    #[serde(default)]
    mysql: Option<String>,
    peer: SocketAddr,
    #[serde(default)]
    instance_id: Option<String>,
    #[serde(default)]
    eni_id: Option<String>,
}

/// Where a member is and what it is in EC2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub peer: SocketAddr,
    /// Its mysqld (database nodes).
    pub mysql: Option<Address>,
    pub instance_id: Option<String>,
    pub eni_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub me: NodeId,
    pub state_dir: PathBuf,
    pub spec: ClusterSpec,
    pub members: BTreeMap<NodeId, Member>,
    pub aws: Aws,
    pub mysql_user: String,
    pub mysql_password: Secret,
    pub replication_user: String,
    pub replication_password: Secret,
    pub probe_timeout: Duration,
    pub peer_listen: SocketAddr,
    pub cluster_key: Secret,
    pub admin_listen: SocketAddr,
    /// `None`: mutating admin calls are refused.
    pub admin_token: Option<Secret>,
    /// `None`: plain HTTP, allowed on loopback only.
    pub admin_tls: Option<AdminServerTls>,
    /// How `multiaz check` reaches this sidecar's admin API.
    pub admin_endpoint: AdminEndpoint,
    /// This host's binlog directory, for salvage; `None`: salvage from here is refused.
    pub binlog_dir: Option<PathBuf>,
    pub binlog_index: Option<PathBuf>,
    /// `mysql.allow_async`: a master may be writable without semi-sync.
    pub allow_async: bool,
    /// `mysql.tls = "required"`; `None`: every MySQL link is in clear text.
    pub mysql_tls: Option<MysqlTls>,
    pub hooks: Hooks,
}

impl Config {
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        Self::parse(file, &read_file(file)?, &|name| std::env::var(name).ok())
    }

    /// Parses `text` as if read from `file`; `env` looks up environment variables.
    pub fn parse(
        file: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let invalid = |why: String| ConfigError::Invalid {
            file: file.to_path_buf(),
            why,
        };
        let key = |key: &str, why: String| ConfigError::Key {
            file: file.to_path_buf(),
            key: key.to_string(),
            why,
        };
        let raw: Raw = from_toml(file, text)?;
        let (members, nodes) = members(file, raw.nodes)?;
        let spec = ClusterSpec {
            name: raw.cluster.name,
            flavour: raw.cluster.flavour,
            initial_master: raw.cluster.initial_master,
            client_az: raw.cluster.client_az,
            vip: raw.vip,
            timing: raw.timing,
            nodes,
        }
        .validate()
        .map_err(|e| invalid(e.to_string()))?;
        if spec.node(raw.node_id).is_none() {
            return Err(key(
                "node_id",
                format!("{} is not one of the [[nodes]]", raw.node_id.0),
            ));
        }
        let mysql_password = required_secret(
            file,
            "mysql.password",
            SecretSource {
                file: raw.mysql.password_file,
                env: raw.mysql.password_env,
            },
            env,
        )?;
        if raw.aws.attempt_timeout_ms == 0 || raw.aws.attempt_timeout_ms > raw.aws.api_deadline_ms {
            return Err(key(
                "aws.attempt_timeout_ms",
                format!(
                    "{}: must be between 1 and aws.api_deadline_ms ({})",
                    raw.aws.attempt_timeout_ms, raw.aws.api_deadline_ms
                ),
            ));
        }
        let replication_password = optional_secret(
            file,
            "mysql.replication_password",
            SecretSource {
                file: raw.mysql.replication_password_file,
                env: raw.mysql.replication_password_env,
            },
            env,
        )?
        .unwrap_or_else(|| mysql_password.clone());
        let probe_interval = spec.timing.probe_interval_ms;
        let probe_timeout_ms = raw
            .mysql
            .probe_timeout_ms
            // Three quarters of the interval: a probe that times out answers before the
            // next is due (one still in flight when it is due makes the round skip it,
            // and a dead host's three failed probes would take six intervals).
            .unwrap_or((probe_interval * 3 / 4).clamp(1, 1000));
        if probe_timeout_ms == 0 || probe_timeout_ms > probe_interval {
            return Err(key(
                "mysql.probe_timeout_ms",
                format!("{probe_timeout_ms}: must be between 1 and timing.probe_interval_ms ({probe_interval})"),
            ));
        }
        let cluster_key = required_secret(
            file,
            "peers.key",
            SecretSource {
                file: raw.peers.key_file,
                env: raw.peers.key_env,
            },
            env,
        )?;
        if cluster_key.0.len() < 16 {
            return Err(key(
                "peers.key",
                format!("{} bytes; at least 16 are needed", cluster_key.0.len()),
            ));
        }
        let admin_endpoint = raw.admin.endpoint();
        let admin_listen = raw.admin.listen;
        let (admin_token, admin_tls) = admin_secrets(file, raw.admin, env)?;
        let mysql_tls = mysql_tls(file, raw.mysql.tls, raw.mysql.tls_ca_file.clone())?;
        if raw.mysql.binlog_index.is_some() && raw.mysql.binlog_dir.is_none() {
            return Err(key(
                "mysql.binlog_index",
                "needs mysql.binlog_dir (where the files it names are)".into(),
            ));
        }
        check_hooks(file, &raw.hooks)?;
        Ok(Config {
            file: file.to_path_buf(),
            me: raw.node_id,
            state_dir: raw.state_dir,
            spec,
            members,
            aws: raw.aws,
            replication_user: raw
                .mysql
                .replication_user
                .unwrap_or_else(|| raw.mysql.user.clone()),
            mysql_user: raw.mysql.user,
            mysql_password,
            replication_password,
            probe_timeout: Duration::from_millis(probe_timeout_ms),
            peer_listen: raw.peers.listen,
            cluster_key,
            admin_listen,
            admin_token,
            admin_tls,
            admin_endpoint,
            binlog_dir: raw.mysql.binlog_dir,
            binlog_index: raw.mysql.binlog_index,
            allow_async: raw.mysql.allow_async,
            mysql_tls,
            hooks: raw.hooks,
        })
    }
}

/// The members (how to reach each node) and the engine's node list, from `[[nodes]]`.
fn members(
    file: &Path,
    raw: Vec<RawNode>,
) -> Result<(BTreeMap<NodeId, Member>, Vec<NodeSpec>), ConfigError> {
    let key = |key: String, why: String| ConfigError::Key {
        file: file.to_path_buf(),
        key,
        why,
    };
    let mut members = BTreeMap::new();
    let mut nodes = Vec::new();
    for (i, n) in raw.into_iter().enumerate() {
        if n.kind == NodeKind::Database {
            for (field, v) in [
                ("mysql", &n.mysql),
                ("instance_id", &n.instance_id),
                ("eni_id", &n.eni_id),
            ] {
                if v.as_deref().is_none_or(|s| s.trim().is_empty()) {
                    return Err(key(
                        format!("nodes[{i}].{field}"),
                        "a database node needs it".into(),
                    ));
                }
            }
        }
        let mysql = match &n.mysql {
            Some(text) => {
                Some(Address::parse(text).map_err(|why| key(format!("nodes[{i}].mysql"), why))?)
            }
            None => None,
        };
        members.insert(
            n.id,
            Member {
                peer: n.peer,
                mysql,
                instance_id: n.instance_id,
                eni_id: n.eni_id,
            },
        );
        nodes.push(NodeSpec {
            id: n.id,
            name: n.name,
            az: n.az,
            kind: n.kind,
            promotion: n.promotion,
        });
    }
    Ok((members, nodes))
}

/// The admin API's token and TLS key; a listener other hosts can reach needs TLS (the
/// token would cross the network in clear text otherwise).
fn admin_secrets(
    file: &Path,
    raw: RawAdmin,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Option<Secret>, Option<AdminServerTls>), ConfigError> {
    let key = |key: &str, why: String| ConfigError::Key {
        file: file.to_path_buf(),
        key: key.to_string(),
        why,
    };
    let token = optional_secret(
        file,
        "admin.token",
        SecretSource {
            file: raw.token_file,
            env: raw.token_env,
        },
        env,
    )?;
    let tls = match (raw.tls_cert_file, raw.tls_key_file) {
        (None, None) => None,
        (Some(cert_file), Some(key_file)) => Some(AdminServerTls {
            cert_file,
            key: required_secret(
                file,
                "admin.tls_key",
                SecretSource {
                    file: Some(key_file),
                    env: None,
                },
                env,
            )?,
        }),
        (Some(_), None) => {
            return Err(key(
                "admin.tls_key_file",
                "tls_cert_file needs its key".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(key(
                "admin.tls_cert_file",
                "tls_key_file needs its certificate".into(),
            ))
        }
    };
    if tls.is_none() && !raw.listen.ip().is_loopback() {
        return Err(key(
            "admin.listen",
            format!(
                "{} is reachable from other hosts, and without TLS the admin token would cross the network in clear text: set admin.tls_cert_file and tls_key_file, or listen on 127.0.0.1",
                raw.listen
            ),
        ));
    }
    Ok((token, tls))
}

/// TLS to the MySQL servers: off, or required with the CA that signed their
/// certificates (an absolute path: the replicas' mysqld read it too).
fn mysql_tls(
    file: &Path,
    mode: TlsMode,
    ca_file: Option<PathBuf>,
) -> Result<Option<MysqlTls>, ConfigError> {
    let key = |why: String| ConfigError::Key {
        file: file.to_path_buf(),
        key: "mysql.tls_ca_file".into(),
        why,
    };
    match (mode, ca_file) {
        (TlsMode::Off, _) => Ok(None),
        (TlsMode::Required, None) => Err(key(
            "tls = \"required\" needs the CA that signed the servers' certificates".into(),
        )),
        (TlsMode::Required, Some(ca_file)) => {
            // mysqld resolves a relative MASTER_SSL_CA against its data directory.
            if !ca_file.is_absolute() {
                return Err(key(format!(
                    "{}: give an absolute path (replicas' mysqld read it too)",
                    ca_file.display()
                )));
            }
            crate::admin::tls::certificates(&ca_file).map_err(key)?;
            Ok(Some(MysqlTls { ca_file }))
        }
    }
}

/// Every hook names a program, and hooks have time to run.
fn check_hooks(file: &Path, hooks: &Hooks) -> Result<(), ConfigError> {
    let key = |key: String, why: String| ConfigError::Key {
        file: file.to_path_buf(),
        key,
        why,
    };
    for (name, argv) in hooks.commands() {
        if argv.first().is_none_or(|p| p.trim().is_empty()) {
            return Err(key(
                format!("hooks.{name}"),
                "an empty command: give the program and its arguments, [\"/path/to/prog\", \"arg\"]".into(),
            ));
        }
    }
    if hooks.timeout_ms == 0 {
        return Err(key("hooks.timeout_ms".into(), "must be more than 0".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../examples/multiaz.toml");

    fn env_ok(name: &str) -> Option<String> {
        match name {
            "MYSQL_PW" => Some("s3cret-password".into()),
            "KEY" => Some("0123456789abcdef0123".into()),
            _ => None,
        }
    }

    /// The example with its secrets taken from the environment.
    fn example() -> String {
        EXAMPLE
            .replace(
                "password_file = \"/etc/multiaz/mysql-password\"",
                "password_env = \"MYSQL_PW\"",
            )
            .replace(
                "key_file = \"/etc/multiaz/cluster-key\"",
                "key_env = \"KEY\"",
            )
            .replace("token_file = \"/etc/multiaz/admin-token\"", "")
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/multiaz/multiaz.toml"), text, &env_ok)
    }

    #[test]
    fn the_operator_commands_read_the_admin_table_and_no_other_secret() {
        // The example as installed: the MySQL password and cluster key in files this
        // test does not have; the admin token in the environment. Any other lookup
        // would be a secret read that the operator's commands do not need.
        let text = EXAMPLE.replace(
            "token_file = \"/etc/multiaz/admin-token\"",
            "token_env = \"TOKEN\"",
        );
        let env = |name: &str| -> Option<String> {
            assert_eq!(name, "TOKEN", "read a secret besides the admin token");
            Some("t0ken".into())
        };
        let a = AdminAccess::parse(Path::new("/etc/multiaz/multiaz.toml"), &text, &env).unwrap();
        assert_eq!(
            a.token.map(|t| t.expose().to_vec()),
            Some(b"t0ken".to_vec())
        );
        assert_eq!(
            a.endpoint,
            AdminEndpoint::new("127.0.0.1:7080".parse().unwrap(), None)
        );
        assert!(a
            .nodes
            .iter()
            .any(|(id, name)| *id == NodeId(1) && name == "db-a"));
        // The full configuration does need those files: the check above can fail.
        assert!(Config::parse(Path::new("/etc/multiaz/multiaz.toml"), &text, &env_ok).is_err());
        // A broken [admin] table is still named.
        let e = AdminAccess::parse(
            Path::new("/x.toml"),
            "[admin]\nlisten = \"nowhere\"\n",
            &env_ok,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/x.toml") && e.contains("listen"), "{e}");
    }

    #[test]
    fn an_admin_api_beyond_loopback_needs_tls() {
        let open = example().replace("listen = \"127.0.0.1:7080\"", "listen = \"0.0.0.0:7080\"");
        let e = parse(&open).unwrap_err().to_string();
        assert!(
            e.contains("admin.listen") && e.contains("0.0.0.0:7080") && e.contains("tls_cert_file"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, "PEM").unwrap();
        std::fs::write(&key, "PEM KEY").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let with = |lines: String| open.replace("[admin]\n", &format!("[admin]\n{lines}\n"));
        let e = parse(&with(format!("tls_cert_file = \"{}\"", cert.display())))
            .unwrap_err()
            .to_string();
        assert!(e.contains("admin.tls_key_file"), "{e}");
        let c = parse(&with(format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
            cert.display(),
            key.display()
        )))
        .unwrap();
        assert_eq!(c.admin_tls.map(|t| t.cert_file), Some(cert.clone()));
        // The operator commands call it on loopback, trusting the certificate itself.
        assert_eq!(
            c.admin_endpoint,
            AdminEndpoint::new("127.0.0.1:7080".parse().unwrap(), Some(cert))
        );
    }

    #[test]
    fn mysql_tls_is_off_or_required_with_a_readable_ca() {
        assert_eq!(parse(&example()).unwrap().mysql_tls, None, "off by default");
        let with = |lines: &str| {
            example().replace(
                "binlog_dir = \"/var/lib/mysql\"",
                &format!("binlog_dir = \"/var/lib/mysql\"\n{lines}"),
            )
        };
        let e = parse(&with("tls = \"required\"")).unwrap_err().to_string();
        assert!(e.contains("mysql.tls_ca_file") && e.contains("CA"), "{e}");
        let e = parse(&with(
            "tls = \"required\"\ntls_ca_file = \"/nonexistent/ca.pem\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("mysql.tls_ca_file") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        let e = parse(&with("tls = \"required\"\ntls_ca_file = \"ca.pem\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("absolute"), "{e}");
        // No "preferred": a fallback to clear text anyone on the path can force.
        let e = parse(&with("tls = \"preferred\"")).unwrap_err().to_string();
        assert!(e.contains("tls") && e.contains("required"), "{e}");
        // A file with no certificate in it is refused at load, not at every login.
        let empty = tempfile::NamedTempFile::new().unwrap();
        let e = parse(&with(&format!(
            "tls = \"required\"\ntls_ca_file = \"{}\"",
            empty.path().display()
        )))
        .unwrap_err()
        .to_string();
        assert!(e.contains("no certificate"), "{e}");
        let ca = tempfile::NamedTempFile::new().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(ca.path(), cert.pem()).unwrap();
        let c = parse(&with(&format!(
            "tls = \"required\"\ntls_ca_file = \"{}\"",
            ca.path().display()
        )))
        .unwrap();
        assert_eq!(
            c.mysql_tls,
            Some(MysqlTls {
                ca_file: ca.path().to_path_buf(),
            })
        );
    }

    #[test]
    fn a_toml_error_names_the_place_but_never_shows_the_line() {
        // A secret written inline on a line that does not parse.
        let text = example().replace(
            "password_env = \"MYSQL_PW\"",
            "password_env = \"MYSQL_PW\"\npassword = \"hunter2-inline-secret",
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("multiaz.toml") && e.contains("line "), "{e}");
        // An unknown key is still named.
        let e = parse(&example().replace("[admin]", "[admin]\nbogus_key = 1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus_key") && !e.contains("= 1"), "{e}");
        // A value of the wrong type is not echoed, nor a pasted base64 line taken for a
        // key.
        let e = parse(&example().replace("veto = false", "veto = \"s3cret-ish\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("veto") && !e.contains("s3cret"), "{e}");
        let e = parse(&example().replace("[admin]", "[admin]\nQmFzZTY0U2VjcmV0Zm9yVGVzdA=="))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("QmFzZTY0"), "{e}");
    }

    #[test]
    fn a_secret_file_open_to_others_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mysql-password");
        std::fs::write(&file, "pw\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let text = example().replace(
            "password_env = \"MYSQL_PW\"",
            &format!("password_file = \"{}\"", file.display()),
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("mysql.password") && e.contains("mode 640") && e.contains("chmod 600"),
            "{e}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(parse(&text).unwrap().mysql_password.expose(), b"pw");
    }

    #[test]
    fn the_example_parses_and_secrets_do_not_print() {
        let c = parse(&example()).unwrap();
        assert_eq!(c.me, NodeId(1));
        assert_eq!(c.members.len(), 3);
        assert_eq!(
            c.members[&NodeId(2)].eni_id.as_deref(),
            Some("eni-0bbbbbbbbbbbbbbb2")
        );
        assert_eq!(c.mysql_password.expose(), b"s3cret-password");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("0123456789"),
            "{shown}"
        );
    }

    #[test]
    fn an_unknown_key_is_refused_naming_file_and_key() {
        let e = parse(&example().replace("probe_failures = 3", "probe_falures = 3"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/etc/multiaz/multiaz.toml") && e.contains("probe_falures"),
            "{e}"
        );
        let e = parse(&example().replace(
            "user = \"multiaz\"",
            "user = \"multiaz\"\npassword = \"inline\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("password"), "an inline password is refused: {e}");
    }

    #[test]
    fn without_a_hooks_section_there_are_none_and_the_defaults_hold() {
        let text = example();
        let start = text.find("[hooks]").unwrap();
        let end = text[start..].find("[[nodes]]").unwrap() + start;
        let c = parse(&format!("{}{}", &text[..start], &text[end..])).unwrap();
        assert_eq!(c.hooks, Hooks::default());
        assert_eq!(c.hooks.commands().count(), 0);
        assert_eq!(c.hooks.timeout_ms, 5000);
    }

    #[test]
    fn hooks_are_argv_lists_checked_by_key() {
        let c = parse(&example()).unwrap();
        assert_eq!(
            c.hooks.post_failover.as_deref().map(|v| v[0].as_str()),
            Some("/usr/bin/logger")
        );
        assert!(!c.hooks.veto && c.hooks.pre_failover.is_none());
        let e = parse(&example().replace(
            "# pre_switchover = [\"/usr/local/bin/drain-pool\"]",
            "pre_switchover = []",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("hooks.pre_switchover") && e.contains("empty"),
            "{e}"
        );
        let e = parse(&example().replace("\ntimeout_ms = 5000", "\ntimeout_ms = 0"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("hooks.timeout_ms"), "{e}");
        let e = parse(&example().replace("veto = false", "veto = \"yes\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("veto"), "{e}");
    }

    #[test]
    fn missing_and_wrong_fields_are_named() {
        let e = parse(&example().replace("eni_id = \"eni-0ccccccccccccccc3\"", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nodes[2].eni_id"), "{e}");
        let e = parse(&example().replace("node_id = 1", "node_id = 9"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("node_id"), "{e}");
        let e = parse(&example().replace("key_env = \"KEY\"", "key_env = \"NOPE\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("peers.key") && e.contains("NOPE"), "{e}");
        let e = parse(&example().replace("initial_master = 1", "initial_master = 5"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("initial_master"), "{e}");
        let e = parse(&example().replace("peer = \"10.0.2.10:7001\"", "peer = \"nowhere\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("peer"), "{e}");
    }
}
