//! `multiaz check` against real servers in containers, MySQL 9.7: a correctly set up
//! cluster passes every MySQL and replication check; each misconfiguration below then
//! fails its own line, with the fix spelled for MySQL, and nothing else. (The chaos runs
//! also end with `multiaz check` passing on every flavour, EC2 and peers included;
//! here EC2 and the peers are out of reach and their lines are not looked at.)
//!
//! Needs the Docker engine and the images `ci/host-image` builds; fails, never skips,
//! without them.

use multiaz_sidecar::commands::check::{self, Line};
use multiaz_sidecar::config::Config;
use multiaz_testcontainers::{db, Cluster, Host, Server};
use std::path::Path;

const ADMIN_PASSWORD: &str = "admin-pw";

fn config(cluster: &Cluster) -> Config {
    let mut text = String::from(
        r#"node_id = 1
state_dir = "/nonexistent/state"

[cluster]
name = "check"
flavour = "mysql"
initial_master = 1

[vip]
address = "10.0.100.10"
route_tables = ["rtb-1"]

[aws]
region = "us-east-1"
endpoint_url = "http://127.0.0.1:9"
api_deadline_ms = 1000
attempt_timeout_ms = 500

[mysql]
user = "multiaz"
password_env = "PW"
binlog_dir = "/nonexistent"

[peers]
listen = "127.0.0.1:7001"
key_env = "KEY"

[admin]
listen = "127.0.0.1:9"
token_env = "TOKEN"
"#,
    );
    for (i, h) in cluster.hosts.iter().enumerate() {
        text.push_str(&format!(
            "\n[[nodes]]\nid = {id}\nname = \"{name}\"\naz = \"az-{id}\"\nkind = \"database\"\n\
             mysql = \"{ip}:{port}\"\npeer = \"{ip}:7001\"\ninstance_id = \"i-{id}\"\neni_id = \"eni-{id}\"\n",
            id = i + 1,
            name = h.name,
            ip = h.ip,
            port = db::PORT,
        ));
    }
    let env = |name: &str| match name {
        "PW" => Some(ADMIN_PASSWORD.to_string()),
        "KEY" => Some("0123456789abcdef0123456789abcdef".to_string()),
        "TOKEN" => Some("a-token-long-enough-for-the-check".to_string()),
        _ => None,
    };
    Config::parse(Path::new("check-test.toml"), &text, &env).unwrap_or_else(|e| panic!("{e}"))
}

/// The failed MySQL and replication lines, as `subject: what -> fix`.
async fn failures(config: &Config) -> Vec<String> {
    check::run(config)
        .await
        .into_iter()
        .filter(|l: &Line| !l.ok && matches!(l.area, "mysql" | "repl"))
        .map(|l| format!("{}: {} -> {}", l.subject, l.what, l.fix.unwrap_or_default()))
        .collect()
}

/// Applies `break_it` on `host`, expects exactly one failed line there containing
/// each of `said`, then applies `mend`.
async fn fails_alone(config: &Config, host: &Host, break_it: &str, said: &[&str], mend: &str) {
    db::sql(host, break_it).await.unwrap();
    let failed = failures(config).await;
    assert_eq!(
        failed.len(),
        1,
        "after `{break_it}` on {}: {failed:#?}",
        host.name
    );
    let line = &failed[0];
    assert!(
        line.starts_with(&format!("{}:", host.name)) && said.iter().all(|s| line.contains(s)),
        "after `{break_it}` on {}: {line} (expected {said:?})",
        host.name
    );
    db::sql(host, mend).await.unwrap();
}

#[tokio::test]
async fn on_mysql_9_7_check_passes_a_good_cluster_and_names_each_misconfiguration_with_its_fix() {
    let server = Server::Mysql97;
    let work = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("check")
        .join(server.name());
    let cluster = db::replicated_cluster(
        server,
        &work,
        ADMIN_PASSWORD,
        "app-pw",
        "CREATE TABLE app.t (id INT PRIMARY KEY);",
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let config = config(&cluster);
    let [master, db2, db3] = &cluster.hosts[..] else {
        panic!("three hosts")
    };

    // Set up as the settings file and the sidecar would: nothing fails, and the MySQL
    // lines are there to pass (a check that looked at nothing would pass too).
    let lines = check::run(&config).await;
    let passed = |what: &str| {
        lines
            .iter()
            .filter(|l| l.ok && l.what.contains(what))
            .count()
    };
    assert_eq!(passed("gtid_mode = ON"), 3, "{lines:#?}");
    assert_eq!(passed("Auto_Position = 1"), 2, "{lines:#?}");
    assert_eq!(passed("performance_schema = 1"), 3, "{lines:#?}");
    assert_eq!(failures(&config).await, Vec::<String>::new());

    fails_alone(
        &config,
        db2,
        "SET GLOBAL super_read_only = OFF; SET GLOBAL read_only = OFF",
        &["replica: read_only = 0", "read_only = ON"],
        "SET GLOBAL super_read_only = ON",
    )
    .await;
    fails_alone(
        &config,
        master,
        "SET GLOBAL rpl_semi_sync_source_enabled = OFF",
        &["master: semi-sync source = 0"],
        "SET GLOBAL rpl_semi_sync_source_enabled = ON",
    )
    .await;
    fails_alone(
        &config,
        master,
        "SET GLOBAL sync_binlog = 0",
        &["sync_binlog = 0"],
        "SET GLOBAL sync_binlog = 1",
    )
    .await;
    fails_alone(
        &config,
        master,
        "SET GLOBAL rpl_semi_sync_source_timeout = 1000",
        &["rpl_semi_sync_source_timeout = 1000"],
        "SET GLOBAL rpl_semi_sync_source_timeout = 86400000",
    )
    .await;
    fails_alone(
        &config,
        db3,
        "STOP REPLICA",
        &["IO thread No, SQL thread No", "START REPLICA"],
        "START REPLICA",
    )
    .await;
    // Last, not mended: a replica that replicates from nobody.
    fails_alone(
        &config,
        db3,
        "STOP REPLICA; RESET REPLICA ALL",
        &["not a replica", "CHANGE REPLICATION SOURCE TO"],
        "SELECT 1",
    )
    .await;
}
