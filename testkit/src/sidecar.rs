//! A sidecar's config file (`multiaz.toml`), serialized from a struct: the tests'
//! clusters and the chaos runs write theirs from here, and a sidecar test parses what
//! this writes with the real parser, so the two cannot drift apart.

use serde::Serialize;

/// The `[timing]` section: the engine's own.
pub use multiaz_engine::Timing;
/// `vip.mode`: the engine's own.
pub use multiaz_engine::VipMode;

#[derive(Debug, Clone, Serialize)]
pub struct SidecarConfig {
    pub node_id: u64,
    pub state_dir: String,
    pub cluster: Cluster,
    pub vip: Vip,
    /// Written whole: the `[timing]` section is the engine's `Timing`.
    pub timing: Timing,
    pub aws: Aws,
    pub mysql: Mysql,
    pub peers: Peers,
    pub admin: Admin,
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    pub name: String,
    /// `mariadb` or `mysql`.
    pub flavour: String,
    pub initial_master: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Vip {
    pub address: String,
    pub route_tables: Vec<String>,
    /// Forwarding VIP traffic with nftables: off wherever several sidecars share one
    /// host's network (their rules would be the host's).
    pub forward: bool,
    pub mode: VipMode,
    /// Each route table's AZ (the anchored mode's anchors); left out when empty.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub table_azs: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Aws {
    pub region: String,
    pub endpoint_url: String,
    pub api_deadline_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Mysql {
    pub user: String,
    pub password_file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binlog_dir: Option<String>,
    /// `required` with `tls_ca_file`, or left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Peers {
    pub listen: String,
    pub key_file: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Admin {
    pub listen: String,
    pub token_file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub id: u64,
    pub name: String,
    pub az: String,
    /// `database` or `witness`.
    pub kind: String,
    pub mysql: String,
    pub peer: String,
    pub instance_id: String,
    pub eni_id: String,
}

impl SidecarConfig {
    /// The file's text, with `extra` (more TOML: sections this struct does not carry,
    /// such as `[hooks]`) after it.
    pub fn to_toml(&self, extra: &str) -> String {
        // Invariant: every field is a string, a number, an option of one, or a table
        // of them, which TOML always represents.
        let text = toml::to_string(self).expect("a sidecar config serializes to TOML");
        format!("{text}{extra}")
    }
}
