//! The provider on the real Docker engine, for every server: three hosts on a private
//! network replicate from db-1; a killed server and a crashed host come back with their
//! data; everything is gone after the drop.
//!
//! Needs the Docker engine and the images `ci/host-image` builds (`ci/test` builds
//! them when missing). Missing either, the test fails and says what to do: it never
//! skips.

use multiaz_testcontainers::{db, Cluster, Options, Server};
use std::process::Command;
use std::time::{Duration, Instant};

async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn containers_on(network: &str) -> String {
    let out = Command::new("docker")
        .args(["ps", "-a", "--filter", &format!("name={network}"), "-q"])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_mariadb_10_11_hosts_replicate_survive_kills_and_are_removed_on_drop() {
    three_hosts(Server::Mariadb1011).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_mariadb_11_8_hosts_replicate_survive_kills_and_are_removed_on_drop() {
    three_hosts(Server::Mariadb118).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_mysql_9_7_hosts_replicate_survive_kills_and_are_removed_on_drop() {
    three_hosts(Server::Mysql97).await
}

async fn three_hosts(server: Server) {
    let work = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("containers")
        .join(server.name());
    let _ = std::fs::remove_dir_all(&work);
    let cluster = Cluster::start(&Options::with_server(server, &work))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let network = cluster.network().to_string();
    assert_eq!(cluster.hosts.len(), 3);
    db::replicated(
        &cluster,
        "admin-pw",
        "app-pw",
        "CREATE TABLE app.t (id INT PRIMARY KEY) ENGINE=InnoDB;",
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let [db1, db2, db3] = &cluster.hosts[..] else {
        panic!("three hosts")
    };
    // Each host reaches the others by address on the private network.
    db2.sh(&format!("ping -c1 -W2 {}", db3.ip)).await.unwrap();
    db::sql(db1, "INSERT INTO app.t VALUES (1), (2), (3)")
        .await
        .unwrap();
    for h in [db2, db3] {
        eventually("rows replicated", async || {
            db::sql(h, "SELECT COUNT(*) FROM app.t")
                .await
                .is_ok_and(|n| n.trim() == "3")
        })
        .await;
        let ro = db::sql(h, "SELECT @@read_only").await.unwrap();
        assert_eq!(ro.trim(), "1", "{} starts read_only", h.name);
    }
    // The server is the one named, and replicates with GTIDs.
    let version = db::sql(db2, "SELECT VERSION()").await.unwrap();
    let want = server.name().split_once('-').unwrap().1;
    assert!(
        version.trim().starts_with(want),
        "{} runs {version}",
        server.name()
    );
    let executed = db::sql(db3, server.dialect().has_transactions())
        .await
        .unwrap();
    assert!(!executed.trim().is_empty(), "db-3 has GTIDs");
    let status = db::replica_status(db2)
        .await
        .unwrap()
        .expect("db-2 replicates");
    assert_eq!(status.source_host, db1.ip.to_string());
    assert_eq!(
        (status.io_running.as_str(), status.sql_running.as_str()),
        ("Yes", "Yes")
    );
    // mysqld SIGKILLed: down, the host lives; started again, its data is there.
    db::kill(db1).await.unwrap();
    assert!(db::sql(db1, "SELECT 1").await.is_err());
    assert!(db1.sh("echo alive").await.is_ok());
    db::start(db1, 1, false).await.unwrap();
    let n = db::sql(db1, "SELECT COUNT(*) FROM app.t").await.unwrap();
    assert_eq!(n.trim(), "3");
    // The whole host crashes and boots: nothing runs, the disk and the address stay.
    db3.crash().await.unwrap();
    assert!(db3.sh("true").await.is_err(), "a crashed host runs nothing");
    db3.boot().await.unwrap();
    let addr = db3
        .sh("ip -4 -o addr show | awk '$2 != \"lo\" {print $4}'")
        .await
        .unwrap();
    assert_eq!(
        addr.trim(),
        format!("{}/24", db3.ip),
        "db-3 keeps its address"
    );
    db::start(db3, 3, false).await.unwrap();
    let n = db::sql(db3, "SELECT COUNT(*) FROM app.t").await.unwrap();
    assert_eq!(n.trim(), "3");
    assert!(!containers_on(&network).is_empty());
    drop(cluster);
    eventually("containers removed", async || {
        containers_on(&network).is_empty()
    })
    .await;
    let gone = Command::new("docker")
        .args(["network", "inspect", &network])
        .output()
        .expect("docker network inspect");
    assert!(
        !gone.status.success(),
        "network {network} is removed with its hosts"
    );
}
