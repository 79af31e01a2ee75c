//! `multiaz check`: a preflight in the spirit of MHA's `masterha_check_repl`, wider.
//! Every check yields a pass/fail line; a failure says what to do about it.

use crate::adapters::auth::ClusterKey;
use crate::adapters::mysql::dialect::Dialect;
use crate::adapters::peers;
use crate::admin::client as admin_client;
use crate::commands::run::{ec2_routes, mysql_adapter};
use crate::config::Config;
use axum::http::Method;
use multiaz_engine::{Flavour, NodeId, VipMode};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub ok: bool,
    /// Passes, but something is exposed: a link in clear text.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub warn: bool,
    pub area: &'static str,
    pub subject: String,
    pub what: String,
    /// For a failure: what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Default)]
struct Report {
    lines: Vec<Line>,
}

impl Report {
    fn push(
        &mut self,
        (ok, warn): (bool, bool),
        area: &'static str,
        subject: &str,
        what: String,
        fix: Option<String>,
    ) {
        self.lines.push(Line {
            ok,
            warn,
            area,
            subject: subject.to_string(),
            what,
            fix,
        });
    }

    fn pass(&mut self, area: &'static str, subject: &str, what: impl Into<String>) {
        self.push((true, false), area, subject, what.into(), None);
    }

    /// Not a failure, but worth the operator's attention, with what to do.
    fn warn(
        &mut self,
        area: &'static str,
        subject: &str,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push((true, true), area, subject, what.into(), Some(fix.into()));
    }

    fn fail(
        &mut self,
        area: &'static str,
        subject: &str,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push((false, false), area, subject, what.into(), Some(fix.into()));
    }

    /// The server variable `key` of `vars` is on, or fails with `fix`.
    fn expect_on(
        &mut self,
        vars: &BTreeMap<&'static str, Option<String>>,
        key: &str,
        subject: &str,
        fix: impl Into<String>,
    ) {
        let v = &vars[key];
        self.expect(
            on(v),
            "mysql",
            subject,
            format!("{key} = {}", shown(v)),
            fix,
        )
    }

    fn expect(
        &mut self,
        ok: bool,
        area: &'static str,
        subject: &str,
        what: String,
        fix: impl Into<String>,
    ) {
        if ok {
            self.pass(area, subject, what)
        } else {
            self.fail(area, subject, what, fix)
        }
    }
}

/// Renders the lines as a table; failures carry their fix on the next line.
pub fn render(lines: &[Line]) -> String {
    let subject_w = lines.iter().map(|l| l.subject.len()).max().unwrap_or(0);
    let mut out = String::new();
    for l in lines {
        let mark = match (l.ok, l.warn) {
            (false, _) => "FAIL",
            (true, true) => "WARN",
            (true, false) => "PASS",
        };
        out.push_str(&format!(
            "{mark}  {:<6} {:<subject_w$}  {}\n",
            l.area, l.subject, l.what
        ));
        if let Some(fix) = &l.fix {
            out.push_str(&format!("      {:<6} {:<subject_w$}  -> {fix}\n", "", ""));
        }
    }
    let failed = lines.iter().filter(|l| !l.ok).count();
    let warned = lines.iter().filter(|l| l.warn).count();
    out.push_str(&format!(
        "\n{} checks, {} passed, {warned} with a warning, {failed} failed\n",
        lines.len(),
        lines.len() - failed
    ));
    out
}

/// What one server said about itself.
struct Server {
    server_id: u64,
    version: String,
    /// The cipher of the sidecar's own connection; empty in clear text.
    cipher: String,
    vars: BTreeMap<&'static str, Option<String>>,
    replica: Option<Row>,
}

fn on(v: &Option<String>) -> bool {
    v.as_deref()
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("ON"))
}

fn shown(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "(not available)".into())
}

/// The variables checked, per flavour: (name in the report, expression).
fn variables(flavour: Flavour) -> Vec<(&'static str, &'static str)> {
    match flavour {
        Flavour::Mariadb => vec![
            ("log_bin", "@@global.log_bin"),
            ("binlog_format", "@@global.binlog_format"),
            ("log_slave_updates", "@@global.log_slave_updates"),
            ("read_only", "@@global.read_only"),
            ("gtid_strict_mode", "@@global.gtid_strict_mode"),
            ("semi_sync_source", "@@global.rpl_semi_sync_master_enabled"),
            ("semi_sync_replica", "@@global.rpl_semi_sync_slave_enabled"),
            (
                "semi_sync_wait_point",
                "@@global.rpl_semi_sync_master_wait_point",
            ),
            (
                "semi_sync_timeout_ms",
                "@@global.rpl_semi_sync_master_timeout",
            ),
            (
                "semi_sync_wait_no_replica",
                "@@global.rpl_semi_sync_master_wait_no_slave",
            ),
            ("sync_binlog", "@@global.sync_binlog"),
            (
                "innodb_flush_log_at_trx_commit",
                "@@global.innodb_flush_log_at_trx_commit",
            ),
        ],
        Flavour::Mysql => vec![
            ("log_bin", "@@global.log_bin"),
            ("binlog_format", "@@global.binlog_format"),
            ("log_replica_updates", "@@global.log_replica_updates"),
            ("read_only", "@@global.read_only"),
            ("gtid_mode", "@@global.gtid_mode"),
            ("performance_schema", "@@global.performance_schema"),
            (
                "enforce_gtid_consistency",
                "@@global.enforce_gtid_consistency",
            ),
            ("semi_sync_source", "@@global.rpl_semi_sync_source_enabled"),
            (
                "semi_sync_replica",
                "@@global.rpl_semi_sync_replica_enabled",
            ),
            (
                "semi_sync_wait_point",
                "@@global.rpl_semi_sync_source_wait_point",
            ),
            (
                "semi_sync_timeout_ms",
                "@@global.rpl_semi_sync_source_timeout",
            ),
            (
                "semi_sync_wait_no_replica",
                "@@global.rpl_semi_sync_source_wait_for_replica_count",
            ),
            ("sync_binlog", "@@global.sync_binlog"),
            (
                "innodb_flush_log_at_trx_commit",
                "@@global.innodb_flush_log_at_trx_commit",
            ),
            ("relay_log_recovery", "@@global.relay_log_recovery"),
        ],
    }
}

async fn scalar(conn: &mut Conn, expr: &str) -> Option<String> {
    conn.query_first::<Row, _>(format!("SELECT {expr}"))
        .await
        .ok()
        .flatten()
        .and_then(|r| crate::adapters::mysql::column(&r, 0))
}

async fn inspect(conn: &mut Conn, flavour: Flavour) -> Result<Server, String> {
    let version = scalar(conn, "VERSION()").await.unwrap_or_default();
    let server_id = scalar(conn, "@@global.server_id")
        .await
        .and_then(|v| v.parse().ok())
        .ok_or("cannot read server_id")?;
    let mut vars = BTreeMap::new();
    for (name, expr) in variables(flavour) {
        vars.insert(name, scalar(conn, expr).await);
    }
    let status = match flavour {
        Flavour::Mariadb => "SHOW SLAVE STATUS",
        Flavour::Mysql => "SHOW REPLICA STATUS",
    };
    let replica = conn
        .query_first::<Row, _>(status)
        .await
        .map_err(|e| format!("{status}: {e}"))?;
    let cipher = conn
        .query_first::<Row, _>("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .await
        .ok()
        .flatten()
        .map(|r| col(&r, "Value"))
        .unwrap_or_default();
    Ok(Server {
        server_id,
        version,
        cipher,
        vars,
        replica,
    })
}

fn col(row: &Row, name: &str) -> String {
    crate::adapters::mysql::column(row, name).unwrap_or_default()
}

/// The master to check against: the running sidecar's record when its admin API
/// answers, otherwise the configuration's initial master.
async fn current_master(config: &Config, r: &mut Report) -> NodeId {
    let asked = admin_client::call(&config.admin_endpoint, Method::GET, "/status", None).await;
    let from_admin = asked.ok().and_then(|(code, body)| {
        if !code.is_success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["record"]["master"].as_u64().map(NodeId)
    });
    match from_admin {
        Some(m) => {
            r.pass(
                "record",
                "master",
                format!("{m} (from the running sidecar's record)"),
            );
            m
        }
        None => {
            let m = config.spec.initial_master;
            r.pass(
                "record",
                "master",
                format!(
                    "{m} (cluster.initial_master; no sidecar answered on {})",
                    config.admin_listen
                ),
            );
            m
        }
    }
}

pub async fn run(config: &Config) -> Vec<Line> {
    let mut r = Report::default();
    let flavour = config.spec.flavour;
    let master = current_master(config, &mut r).await;
    let name = |id: NodeId| {
        config
            .spec
            .node(id)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| id.to_string())
    };
    let servers = inspect_servers(config, &name, &mut r).await;
    for (id, s) in &servers {
        let n = name(*id);
        let is_master = *id == master;
        check_settings(flavour, s, is_master, &n, &mut r);
        check_role(config, s, master, is_master, (&n, &name(master)), &mut r);
    }
    check_server_ids(&servers, &name, &mut r);
    check_ec2(config, master, &mut r).await;
    check_binlog(config, &mut r);
    check_peers(config, &mut r).await;
    check_links(config, &servers, &name, &mut r);
    r.lines
}

/// Connects to every database server, checks its flavour and the sidecar's grants,
/// and reads the settings the other checks look at.
async fn inspect_servers(
    config: &Config,
    name: &dyn Fn(NodeId) -> String,
    r: &mut Report,
) -> BTreeMap<NodeId, Server> {
    let flavour = config.spec.flavour;
    let mysql = mysql_adapter(config);
    let mut servers: BTreeMap<NodeId, Server> = BTreeMap::new();
    for id in config.spec.database_ids().collect::<Vec<_>>() {
        let n = name(id);
        let addr = config.members[&id]
            .mysql
            .as_ref()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let mut conn = match mysql.connect(id).await {
            Ok(c) => c,
            Err(e) => {
                r.fail(
                    "mysql",
                    &n,
                    format!("cannot connect to {addr}: {e}"),
                    "start mysqld, or fix nodes.mysql and the [mysql] credentials",
                );
                continue;
            }
        };
        match inspect(&mut conn, flavour).await {
            Ok(s) => {
                let is_maria = s.version.to_ascii_lowercase().contains("mariadb");
                r.expect(
                    is_maria == (flavour == Flavour::Mariadb),
                    "mysql",
                    &n,
                    format!("{addr} runs {} (cluster.flavour = {flavour})", s.version),
                    "set cluster.flavour to the servers' flavour",
                );
                servers.insert(id, s);
            }
            Err(e) => r.fail(
                "mysql",
                &n,
                e,
                "grant the multiaz user the privileges in the README",
            ),
        }
        check_grants(&mut conn, config, &n, r).await;
        let _ = conn.disconnect().await;
    }
    servers
}

/// The settings multiaz relies on, on one server (`is_master`: the master of record).
fn check_settings(flavour: Flavour, s: &Server, is_master: bool, n: &str, r: &mut Report) {
    let v = &s.vars;
    r.expect_on(
        v,
        "log_bin",
        n,
        "enable the binary log (log_bin) in my.cnf and restart",
    );
    r.expect(
        v["binlog_format"]
            .as_deref()
            .is_some_and(|f| f.eq_ignore_ascii_case("ROW")),
        "mysql",
        n,
        format!("binlog_format = {}", shown(&v["binlog_format"])),
        "SET GLOBAL binlog_format = ROW, and in my.cnf",
    );
    let updates = match flavour {
        Flavour::Mariadb => "log_slave_updates",
        Flavour::Mysql => "log_replica_updates",
    };
    r.expect_on(v, updates, n,
        format!("set {updates} = ON in my.cnf and restart: a promoted replica must have every transaction in its binlog"));
    match flavour {
        Flavour::Mariadb => r.expect_on(
            v,
            "gtid_strict_mode",
            n,
            "SET GLOBAL gtid_strict_mode = ON, and in my.cnf",
        ),
        Flavour::Mysql => {
            r.expect(
                v["gtid_mode"].as_deref() == Some("ON"),
                "mysql",
                n,
                format!("gtid_mode = {}", shown(&v["gtid_mode"])),
                "set gtid_mode = ON (through OFF_PERMISSIVE, ON_PERMISSIVE)",
            );
            r.expect_on(
                v,
                "enforce_gtid_consistency",
                n,
                "SET GLOBAL enforce_gtid_consistency = ON, and in my.cnf",
            );
            // The fence finds the writes in its way, and stopping replication finds
            // the appliers to kill, through performance_schema.
            r.expect_on(
                v,
                "performance_schema",
                n,
                "performance_schema = ON in my.cnf (the default; needs a restart): the fence and STOP REPLICA rely on it",
            );
        }
    }
    let (src, rep) = (&v["semi_sync_source"], &v["semi_sync_replica"]);
    if src.is_none() && rep.is_none() {
        // No plugin at all: `check_durability` reports it, once.
    } else if is_master {
        r.expect(
            on(src),
            "mysql",
            n,
            format!("master: semi-sync source = {}", shown(src)),
            "on the master: semi-sync source on (acknowledged writes survive a failover only then)",
        );
        let wp = &v["semi_sync_wait_point"];
        r.expect(
            wp.as_deref()
                .is_some_and(|w| w.eq_ignore_ascii_case("AFTER_SYNC")),
            "mysql",
            n,
            format!("semi-sync wait point = {}", shown(wp)),
            "set the semi-sync wait point to AFTER_SYNC (lossless)",
        );
    } else {
        r.expect(
            !on(src) && on(rep),
            "mysql",
            n,
            format!(
                "replica: semi-sync source = {}, replica = {}",
                shown(src),
                shown(rep)
            ),
            "on replicas: semi-sync replica on, source off",
        );
    }
    check_durability(flavour, n, v, r);
}

/// read_only and replication as the server's role wants them; `names`: this server's
/// and the master's.
fn check_role(
    config: &Config,
    s: &Server,
    master: NodeId,
    is_master: bool,
    names: (&str, &str),
    r: &mut Report,
) {
    let (n, master_name) = names;
    let flavour = config.spec.flavour;
    let v = &s.vars;
    let ro = on(&v["read_only"]);
    if is_master {
        r.expect(
            !ro,
            "mysql",
            n,
            format!("master: read_only = {}", shown(&v["read_only"])),
            "the master must be writable; multiaz sets this itself once it runs",
        );
    } else {
        r.expect(
            ro,
            "mysql",
            n,
            format!("replica: read_only = {}", shown(&v["read_only"])),
            "SET GLOBAL read_only = ON on every replica, and in my.cnf",
        );
    }
    if is_master {
        r.expect(
            s.replica.is_none(),
            "repl",
            n,
            "master: replicates from nobody".into(),
            format!(
                "the master must not be a replica: {}; {}",
                Dialect(flavour).stop_replication(),
                Dialect(flavour).reset_replication()
            ),
        );
    } else {
        check_replica(s, config, master, n, master_name, flavour, r);
    }
}

/// Every server has its own server_id.
fn check_server_ids(
    servers: &BTreeMap<NodeId, Server>,
    name: &dyn Fn(NodeId) -> String,
    r: &mut Report,
) {
    let mut ids: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (id, s) in servers {
        ids.entry(s.server_id).or_default().push(name(*id));
    }
    for (sid, names) in ids {
        r.expect(
            names.len() == 1,
            "mysql",
            &names.join(","),
            format!("server_id = {sid}"),
            "give every server its own server_id",
        );
    }
}

/// Every link the sidecar uses or sets up, and whether it is in clear text.
fn check_links(
    config: &Config,
    servers: &BTreeMap<NodeId, Server>,
    name: &dyn Fn(NodeId) -> String,
    r: &mut Report,
) {
    let turn_on =
        "give every server a certificate, then set mysql.tls = \"required\" and mysql.tls_ca_file";
    for (id, s) in servers {
        let n = name(*id);
        let addr = config.members[id]
            .mysql
            .as_ref()
            .map(|a| a.to_string())
            .unwrap_or_default();
        match (&config.mysql_tls, s.cipher.is_empty()) {
            (None, _) => r.warn(
                "tls",
                &n,
                format!("sidecar -> {addr}: clear text (its login, and CHANGE MASTER with the replication password)"),
                turn_on,
            ),
            (Some(_), true) => r.fail(
                "tls",
                &n,
                format!("sidecar -> {addr}: clear text although mysql.tls = \"required\""),
                "report this: the connection should have been refused",
            ),
            (Some(t), false) => r.pass(
                "tls",
                &n,
                format!(
                    "sidecar -> {addr}: TLS ({}), certificate from {} naming the address",
                    s.cipher,
                    t.ca_file.display()
                ),
            ),
        }
        let Some(row) = &s.replica else { continue };
        let d = Dialect(config.spec.flavour);
        let p = match config.spec.flavour {
            Flavour::Mariadb => "Master",
            Flavour::Mysql => "Source",
        };
        let yes = |c: &str| col(row, &format!("{p}_{c}")).eq_ignore_ascii_case("Yes");
        let (encrypted, verified) = (yes("SSL_Allowed"), yes("SSL_Verify_Server_Cert"));
        let ca = col(row, &format!("{p}_SSL_CA_File"));
        match &config.mysql_tls {
            None if !encrypted => r.warn(
                "tls",
                &n,
                "replication to it: clear text (the rows, and the replication user's login)",
                turn_on,
            ),
            None if !verified => r.warn(
                "tls",
                &n,
                "replication to it: encrypted (set up outside multiaz), the source's certificate not verified",
                turn_on,
            ),
            None => r.pass("tls", &n, "replication to it: TLS, verified (set up outside multiaz)"),
            Some(t) if encrypted && verified && Path::new(&ca) == t.ca_file => r.pass(
                "tls",
                &n,
                format!("replication to it: TLS, the source's certificate verified against {ca}"),
            ),
            Some(t) => r.fail(
                "tls",
                &n,
                format!(
                    "replication to it: {} although mysql.tls = \"required\" (CA {ca:?}, certificate verified: {verified})",
                    if encrypted { "not verified as configured" } else { "clear text" }
                ),
                format!(
                    "multiaz sets replication up with TLS when it repoints; until then: {stop}; {change} {p}_SSL = 1, {p}_SSL_CA = '{}', {p}_SSL_VERIFY_SERVER_CERT = 1; {start}",
                    t.ca_file.display(),
                    p = p.to_ascii_uppercase(),
                    stop = d.stop_replication(),
                    change = d.change_source(),
                    start = d.start_replication(),
                ),
            ),
        }
    }
    // What is not MySQL.
    let me = name(config.me);
    // `Config` refuses a non-loopback admin API without TLS.
    match &config.admin_tls {
        Some(t) => r.pass(
            "tls",
            &me,
            format!(
                "admin API on {}: HTTPS ({})",
                config.admin_listen,
                t.cert_file.display()
            ),
        ),
        None => r.pass(
            "tls",
            &me,
            format!("admin API on {}: HTTP, this host only", config.admin_listen),
        ),
    }
    r.pass(
        "tls",
        &me,
        "peer port: every frame encrypted and authenticated with the cluster key (ChaCha20-Poly1305), bound to its connection",
    );
    match config.aws.endpoint_url.as_deref() {
        Some(url) if url.starts_with("http://") => r.warn(
            "tls",
            &me,
            format!("EC2 API at {url}: clear text (signed requests, readable)"),
            "use the https endpoint (leave aws.endpoint_url unset for the regional one)",
        ),
        _ => r.pass("tls", &me, "EC2 API over HTTPS"),
    }
}

/// The smallest semi-sync source timeout `multiaz check` accepts: past it the source
/// falls back to asynchronous replication and acknowledges writes no replica has.
/// Every failover ends long before an hour.
pub const MIN_SEMI_SYNC_TIMEOUT_MS: u64 = 3_600_000;

/// What makes an acknowledged write survive a crash and a failover, on every server
/// (any of them may be the master tomorrow): the binlog and InnoDB synced at each
/// commit, semi-sync that never falls back to async by itself, and (MySQL) a relay log
/// rebuilt from the source after a crash rather than trusted half-written.
fn check_durability(
    flavour: Flavour,
    n: &str,
    v: &BTreeMap<&'static str, Option<String>>,
    r: &mut Report,
) {
    let value = |name: &str| v.get(name).cloned().flatten();
    let sync_binlog = value("sync_binlog");
    r.expect(
        sync_binlog.as_deref() == Some("1"),
        "mysql",
        n,
        format!("sync_binlog = {}", shown(&sync_binlog)),
        "set sync_binlog = 1 (SET GLOBAL and my.cnf): otherwise a host crash loses \
         binlog events of acknowledged transactions",
    );
    let flush = value("innodb_flush_log_at_trx_commit");
    r.expect(
        flush.as_deref() == Some("1"),
        "mysql",
        n,
        format!("innodb_flush_log_at_trx_commit = {}", shown(&flush)),
        "set innodb_flush_log_at_trx_commit = 1 (SET GLOBAL and my.cnf): otherwise a \
         host crash loses committed transactions",
    );
    let timeout = value("semi_sync_timeout_ms");
    let variable = match flavour {
        Flavour::Mariadb => "rpl_semi_sync_master_timeout",
        Flavour::Mysql => "rpl_semi_sync_source_timeout",
    };
    match timeout.as_deref().map(str::parse::<u64>) {
        None => r.fail(
            "mysql",
            n,
            format!("{variable}: semi-sync is not available"),
            "load the semi-sync plugins (MariaDB before 10.3 and MySQL: \
             rpl_semi_sync_source / rpl_semi_sync_replica)",
        ),
        Some(Ok(ms)) => r.expect(
            ms >= MIN_SEMI_SYNC_TIMEOUT_MS,
            "mysql",
            n,
            format!("{variable} = {ms} ms"),
            format!(
                "set {variable} to at least {MIN_SEMI_SYNC_TIMEOUT_MS} (an hour; SET GLOBAL \
                 and my.cnf): after a shorter wait the master falls back to asynchronous \
                 replication and acknowledges writes no replica has"
            ),
        ),
        Some(Err(_)) => r.fail(
            "mysql",
            n,
            format!("{variable} = {} (not a number)", shown(&timeout)),
            format!("set {variable} to at least {MIN_SEMI_SYNC_TIMEOUT_MS}"),
        ),
    }
    // With no replica attached, the source must still wait (MariaDB's wait_no_slave
    // ON; MySQL waits for at least one replica): otherwise it acknowledges alone.
    if let Some(wait) = value("semi_sync_wait_no_replica") {
        let (waits, variable, fix) = match flavour {
            Flavour::Mariadb => (
                on(&Some(wait.clone())),
                "rpl_semi_sync_master_wait_no_slave",
                "ON",
            ),
            Flavour::Mysql => (
                wait.parse::<u64>().is_ok_and(|n| n >= 1),
                "rpl_semi_sync_source_wait_for_replica_count",
                "1",
            ),
        };
        r.expect(
            waits,
            "mysql",
            n,
            format!("{variable} = {wait}"),
            format!(
                "set {variable} = {fix} (the default): otherwise a master with no replica \
                 attached acknowledges writes alone"
            ),
        );
    }
    if flavour == Flavour::Mysql {
        let recovery = value("relay_log_recovery");
        r.expect(
            on(&recovery),
            "mysql",
            n,
            format!("relay_log_recovery = {}", shown(&recovery)),
            "set relay_log_recovery = ON in my.cnf and restart: after a crash the relay \
             log is fetched again from the source instead of applied half-written",
        );
    }
}

fn check_replica(
    s: &Server,
    config: &Config,
    master: NodeId,
    n: &str,
    master_name: &str,
    flavour: Flavour,
    r: &mut Report,
) {
    let Some(row) = &s.replica else {
        return r.fail(
            "repl",
            n,
            "not a replica",
            format!(
                "point it at the master {master_name} ({} ..., with GTID)",
                Dialect(flavour).change_source()
            ),
        );
    };
    let cols = Dialect(flavour).columns();
    let host = col(row, cols.host);
    let port = col(row, cols.port);
    let expected = config.members[&master].mysql.as_ref();
    let from_master = expected.is_some_and(|a| a.host == host && a.port.to_string() == port);
    r.expect(
        from_master,
        "repl",
        n,
        format!("replicates from {host}:{port}"),
        format!(
            "replicate from the master {master_name} ({})",
            expected.map(|a| a.to_string()).unwrap_or_default()
        ),
    );
    let io = col(row, cols.io_running);
    let sql = col(row, cols.sql_running);
    r.expect(
        io == "Yes" && sql == "Yes",
        "repl",
        n,
        format!("IO thread {io}, SQL thread {sql}"),
        format!(
            "{}; see Last_IO_Error / Last_SQL_Error: {:?} {:?}",
            Dialect(flavour).start_replication(),
            col(row, cols.last_io_error),
            col(row, cols.last_error)
        ),
    );
    if flavour == Flavour::Mariadb {
        let g = col(row, "Using_Gtid");
        r.expect(
            g != "No" && !g.is_empty(),
            "repl",
            n,
            format!("Using_Gtid = {g}"),
            "CHANGE MASTER TO MASTER_USE_GTID = slave_pos",
        );
    } else {
        let auto = col(row, "Auto_Position");
        r.expect(
            auto == "1",
            "repl",
            n,
            format!("Auto_Position = {auto}"),
            "CHANGE REPLICATION SOURCE TO SOURCE_AUTO_POSITION = 1",
        );
    }
}

async fn check_grants(conn: &mut Conn, config: &Config, n: &str, r: &mut Report) {
    let grants: Vec<String> = conn.query("SHOW GRANTS").await.unwrap_or_default();
    let all = grants.join("\n").to_ascii_uppercase();
    r.expect(
        all.contains("ALL PRIVILEGES") || all.contains("SUPER"),
        "grants",
        n,
        format!("{} may manage replication and read_only", config.mysql_user),
        format!(
            "GRANT ALL ON *.* TO '{}'@'%' (or SUPER, REPLICATION SLAVE ADMIN, READ_ONLY ADMIN)",
            config.mysql_user
        ),
    );
    let repl: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Repl_slave_priv = 'Y'",
            (config.replication_user.clone(),),
        )
        .await
        .ok()
        .flatten();
    r.expect(
        repl.unwrap_or(0) > 0,
        "grants",
        n,
        format!("{} has REPLICATION SLAVE", config.replication_user),
        format!(
            "GRANT REPLICATION SLAVE ON *.* TO '{}'@'%'",
            config.replication_user
        ),
    );
}

async fn check_ec2(config: &Config, master: NodeId, r: &mut Report) {
    let routes = match ec2_routes(config, Rc::new(|_: &str| {})).await {
        Ok(x) => x,
        Err(e) => return r.fail("ec2", "vip", e.to_string(), "fix vip.address"),
    };
    let eni_of = |id: NodeId| {
        config
            .members
            .get(&id)
            .and_then(|m| m.eni_id.clone())
            .unwrap_or_default()
    };
    let master_eni = eni_of(master);
    match routes.route_targets(&config.spec.vip.route_tables).await {
        Ok(targets) => {
            for (rt, target) in targets {
                // Route mode: the master's interface. Anchored: a database host's of
                // the table's own AZ (the engine keeps the one it points at while it
                // lives; a cluster checked whole has them all alive).
                let (fine, want, what): (Vec<String>, String, &str) = match config.spec.vip.mode {
                    VipMode::Route => (
                        vec![master_eni.clone()],
                        master_eni.clone(),
                        "master's interface",
                    ),
                    VipMode::Anchored => {
                        let az = config.spec.vip.table_azs.get(&rt);
                        let anchors: Vec<String> = config
                            .spec
                            .nodes
                            .iter()
                            .filter(|n| n.is_database() && Some(&n.az) == az)
                            .map(|n| eni_of(n.id))
                            .collect();
                        let want = anchors
                            .first()
                            .cloned()
                            .unwrap_or_else(|| master_eni.clone());
                        (anchors, want, "its AZ's database hosts' interfaces")
                    }
                };
                match target {
                    Some(t) => r.expect(fine.contains(&t), "ec2", &rt,
                        format!("{} -> {t} ({what}: {})", routes.destination(), fine.join(" ")),
                        format!("aws ec2 replace-route --route-table-id {rt} --destination-cidr-block {} --network-interface-id {want}", routes.destination())),
                    None => r.fail("ec2", &rt, format!("no route for {}", routes.destination()),
                        format!("aws ec2 create-route --route-table-id {rt} --destination-cidr-block {} --network-interface-id {want}", routes.destination())),
                }
            }
        }
        Err(e) => r.fail(
            "ec2",
            "route tables",
            e,
            "check vip.route_tables, aws.region and the IAM permission ec2:DescribeRouteTables",
        ),
    }
    for id in config.spec.database_ids().collect::<Vec<_>>() {
        let Some(instance) = config.members[&id].instance_id.clone() else {
            continue;
        };
        match routes.source_dest_check(&instance).await {
            Ok(check) => r.expect(!check, "ec2", &instance,
                format!("source/destination check {}", if check { "on" } else { "off" }),
                format!("aws ec2 modify-instance-attribute --instance-id {instance} --no-source-dest-check")),
            Err(e) => r.fail("ec2", &instance, e, "check the IAM permission ec2:DescribeInstanceAttribute"),
        }
    }
}

/// This host's binlog, as salvage would read it when its mysqld is dead.
fn check_binlog(config: &Config, r: &mut Report) {
    let me = config.me;
    if config.members.get(&me).is_none_or(|m| m.mysql.is_none()) {
        return;
    }
    let subject = config
        .spec
        .node(me)
        .map(|n| n.name.clone())
        .unwrap_or_else(|| me.to_string());
    let Some(dir) = &config.binlog_dir else {
        r.fail(
            "salvage",
            &subject,
            "mysql.binlog_dir is not set: a dead master's binlog tail cannot be recovered from this host",
            "set mysql.binlog_dir to where this host's mysqld writes its binlog",
        );
        return;
    };
    let readable =
        multiaz_binlog::binlog_files(dir, config.binlog_index.as_deref()).and_then(|files| {
            let last = files.last().expect("an index names at least one file");
            let file = std::fs::File::open(last).map_err(|e| format!("{}: {e}", last.display()))?;
            let mut framer = multiaz_binlog::Framer::new(std::io::BufReader::new(file))
                .map_err(|d| format!("{} {d}", last.display()))?;
            framer
                .next_frame()
                .map_err(|d| format!("{} {d}", last.display()))?;
            Ok(files.len())
        });
    match readable {
        Ok(n) => r.pass(
            "salvage",
            &subject,
            format!("binlog in {} readable ({n} file(s))", dir.display()),
        ),
        Err(e) => r.fail(
            "salvage",
            &subject,
            e,
            "point mysql.binlog_dir (and binlog_index) at this host's binlog, readable by the sidecar's user",
        ),
    }
}

async fn check_peers(config: &Config, r: &mut Report) {
    let key = match ClusterKey::new(config.cluster_key.expose().to_vec()) {
        Ok(k) => k,
        Err(e) => return r.fail("peers", "key", e, "use a cluster key of at least 16 bytes"),
    };
    // From this node's own peer address: the others admit members' addresses only.
    let own_peer_ip = config.members.get(&config.me).map(|m| m.peer.ip());
    for (id, m) in &config.members {
        if *id == config.me {
            continue;
        }
        let n = config
            .spec
            .node(*id)
            .map(|n| n.name.clone())
            .unwrap_or_default();
        match peers::ping(own_peer_ip, m.peer, &key).await {
            Ok(rtt) => r.pass("peers", &n, format!("{} answered with the cluster key in {rtt:?}", m.peer)),
            Err(e) => r.fail("peers", &n, format!("{}: {e}", m.peer),
                "start multiaz there, open the peer port between hosts, use the same cluster key everywhere"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&'static str, &str)]) -> BTreeMap<&'static str, Option<String>> {
        pairs
            .iter()
            .map(|(k, v)| (*k, Some(v.to_string())))
            .collect()
    }

    const SAFE: [(&str, &str); 5] = [
        ("sync_binlog", "1"),
        ("innodb_flush_log_at_trx_commit", "1"),
        ("semi_sync_timeout_ms", "86400000"),
        ("semi_sync_wait_no_replica", "1"),
        ("relay_log_recovery", "1"),
    ];

    fn failures(flavour: Flavour, v: &BTreeMap<&'static str, Option<String>>) -> Vec<String> {
        let mut r = Report::default();
        check_durability(flavour, "db", v, &mut r);
        r.lines
            .into_iter()
            .filter(|l| !l.ok)
            .map(|l| l.what)
            .collect()
    }

    #[test]
    fn the_recommended_settings_pass_on_both_flavours() {
        for f in [Flavour::Mariadb, Flavour::Mysql] {
            assert_eq!(failures(f, &vars(&SAFE)), Vec::<String>::new(), "{f}");
        }
    }

    /// Each unsafe setting fails on its own (a negative control per check).
    #[test]
    fn each_unsafe_setting_fails() {
        let unsafe_values = [
            ("sync_binlog", "0", "sync_binlog = 0"),
            ("sync_binlog", "100", "sync_binlog = 100"),
            (
                "innodb_flush_log_at_trx_commit",
                "2",
                "innodb_flush_log_at_trx_commit = 2",
            ),
            ("semi_sync_timeout_ms", "10000", "timeout = 10000 ms"),
            ("relay_log_recovery", "0", "relay_log_recovery = 0"),
            (
                "semi_sync_wait_no_replica",
                "0",
                "rpl_semi_sync_source_wait_for_replica_count = 0",
            ),
        ];
        for (name, bad, expect) in unsafe_values {
            let mut v = vars(&SAFE);
            v.insert(name, Some(bad.to_string()));
            let failed = failures(Flavour::Mysql, &v);
            assert_eq!(failed.len(), 1, "{name}={bad}: {failed:?}");
            assert!(failed[0].contains(expect), "{failed:?}");
        }
        // MariaDB has no relay_log_recovery to check (its relay log is re-fetched on
        // a GTID reconnect), everything else alike.
        let mut v = vars(&SAFE);
        v.insert("relay_log_recovery", Some("0".into()));
        assert!(failures(Flavour::Mariadb, &v).is_empty());
    }

    #[test]
    fn a_missing_semi_sync_plugin_fails() {
        let mut v = vars(&SAFE);
        v.insert("semi_sync_timeout_ms", None);
        let failed = failures(Flavour::Mysql, &v);
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].contains("not available"), "{failed:?}");
    }
}
