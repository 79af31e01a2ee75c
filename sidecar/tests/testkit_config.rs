//! The config the tests and the chaos runs write (multiaz-testkit's `SidecarConfig`)
//! is one the sidecar's own parser accepts, and says what the struct said.

use multiaz_engine::NodeId;
use multiaz_sidecar::config::Config;
use multiaz_testkit::sidecar as cfg;
use std::os::unix::fs::PermissionsExt;

fn secret(path: &std::path::Path, value: &str) {
    std::fs::write(path, value).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn the_testkit_config_parses_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    secret(&dir.path().join("password"), "pw\n");
    secret(
        &dir.path().join("cluster-key"),
        "a-cluster-key-long-enough-0123456",
    );
    secret(&dir.path().join("admin-token"), "token");
    let config = cfg::SidecarConfig {
        node_id: 2,
        state_dir: format!("{d}/state"),
        cluster: cfg::Cluster {
            name: "it".into(),
            flavour: "mysql".into(),
            initial_master: 1,
        },
        vip: cfg::Vip {
            address: "10.0.100.10".into(),
            route_tables: vec!["rtb-1".into(), "rtb-2".into()],
            forward: true,
            mode: cfg::VipMode::Anchored,
            table_azs: [("rtb-1", "us-east-1a"), ("rtb-2", "us-east-1b")]
                .map(|(t, az)| (t.to_string(), az.to_string()))
                .into(),
        },
        timing: multiaz_engine::Timing {
            probe_interval_ms: 700,
            probe_failures: 4,
            lease_ms: 4000,
            step_timeout_ms: 9000,
            salvage_timeout_ms: 2000,
            raft_tick_ms: 100,
            failover_block_ms: 1234,
            ..Default::default()
        },
        aws: cfg::Aws {
            region: "us-east-1".into(),
            endpoint_url: "http://127.0.0.1:5000".into(),
            api_deadline_ms: 10000,
            attempt_timeout_ms: Some(3000),
        },
        mysql: cfg::Mysql {
            user: "multiaz".into(),
            password_file: format!("{d}/password"),
            binlog_dir: Some(format!("{d}/binlog")),
            tls: None,
            tls_ca_file: None,
        },
        peers: cfg::Peers {
            listen: "127.0.0.1:7001".into(),
            key_file: format!("{d}/cluster-key"),
        },
        admin: cfg::Admin {
            listen: "127.0.0.1:7101".into(),
            token_file: format!("{d}/admin-token"),
            tls_cert_file: None,
            tls_key_file: None,
        },
        nodes: (1..=3)
            .map(|i| cfg::Node {
                id: i,
                name: format!("db-{i}"),
                az: format!("us-east-1{}", ["a", "b", "c"][i as usize - 1]),
                kind: "database".into(),
                mysql: format!("127.0.0.1:{}", 3305 + i),
                peer: format!("127.0.0.1:{}", 7000 + i),
                instance_id: format!("i-{i}"),
                eni_id: format!("eni-{i}"),
            })
            .collect(),
    };
    let file = dir.path().join("multiaz.toml");
    std::fs::write(&file, config.to_toml("\n[hooks]\ntimeout_ms = 500\n")).unwrap();
    let parsed = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parsed.me, NodeId(2));
    assert_eq!(parsed.spec.vip.route_tables, ["rtb-1", "rtb-2"]);
    assert_eq!(parsed.spec.vip.mode, multiaz_engine::VipMode::Anchored);
    assert_eq!(parsed.spec.vip.table_azs["rtb-2"], "us-east-1b");
    assert_eq!(parsed.spec.timing.probe_interval_ms, 700);
    assert_eq!(parsed.spec.timing.probe_failures, 4);
    assert_eq!(parsed.spec.timing.failover_block_ms, 1234);
    assert_eq!(parsed.spec.flavour, multiaz_engine::Flavour::Mysql);
    assert_eq!(parsed.hooks.timeout_ms, 500, "the extra text is read too");
    assert_eq!(parsed.spec.nodes.len(), 3);
}
