//! The fence on an isolated master, on real servers: a commit waits for a semi-sync
//! acknowledgement that never comes (every replica's IO thread stopped, the source
//! timeout a day), and the sidecar's MySQL adapter must still make the server
//! read-only within seconds, without acknowledging that commit to its client.
//!
//! The control shows why the adapter does more than KILL: on MySQL 9.7 a killed
//! connection goes on waiting for its acknowledgement and `SET GLOBAL super_read_only`
//! stays queued behind it (what the az-partition chaos run met); on MariaDB the KILL
//! ends the wait.
//!
//! Needs the Docker engine and the images `ci/host-image` builds; fails, never skips,
//! without them.

use multiaz_driver::MysqlOps;
use multiaz_engine::{MysqlOp, MysqlReply, NodeId};
use multiaz_sidecar::adapters::mysql::{Address, Credentials, MysqlAdapter};
use multiaz_sidecar::config::Secret;
use multiaz_testcontainers::{db, Host, Server};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const ADMIN_PASSWORD: &str = "admin-pw";

#[tokio::test]
async fn on_mysql_9_7_an_isolated_master_is_fenced_though_a_commit_waits_for_its_ack() {
    fenced_while_a_commit_waits(Server::Mysql97).await
}

#[tokio::test]
async fn on_mariadb_11_8_an_isolated_master_is_fenced_though_a_commit_waits_for_its_ack() {
    fenced_while_a_commit_waits(Server::Mariadb118).await
}

/// The connection ids of commits waiting for a semi-sync acknowledgement.
async fn waiting_for_ack(host: &Host) -> Vec<String> {
    db::sql(
        host,
        "SELECT ID FROM information_schema.PROCESSLIST WHERE STATE LIKE 'Waiting for semi-sync%'",
    )
    .await
    .unwrap()
    .lines()
    .map(str::to_string)
    .collect()
}

/// Runs `then` while a client's INSERT waits for its acknowledgement (once the server
/// shows it waiting); returns the client's answer and what `then` returned.
async fn while_a_commit_waits<T>(
    master: &Host,
    id: u32,
    then: impl AsyncFnOnce() -> T,
) -> (anyhow::Result<String>, T) {
    let statement = format!("INSERT INTO app.t VALUES ({id})");
    let insert = db::sql(master, &statement);
    let rest = async {
        let start = Instant::now();
        while waiting_for_ack(master).await.is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the INSERT never waited for a semi-sync acknowledgement"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        then().await
    };
    tokio::join!(insert, rest)
}

async fn fenced_while_a_commit_waits(server: Server) {
    let work = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fence")
        .join(server.name());
    let cluster = db::replicated_cluster(
        server,
        &work,
        ADMIN_PASSWORD,
        "app-pw",
        "CREATE TABLE app.t (id INT PRIMARY KEY) ENGINE=InnoDB;",
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let master = &cluster.hosts[0];
    let dialect = server.dialect();
    // The master is cut off: no replica receives anything from it.
    for replica in &cluster.hosts[1..] {
        db::sql(replica, dialect.stop_io_thread()).await.unwrap();
    }
    let read_only = || async {
        db::sql(master, "SELECT @@global.read_only")
            .await
            .unwrap()
            .trim()
            == "1"
    };

    // The control: KILL alone.
    let fence = dialect.set_read_only().join("; ");
    let (insert, killed_alone) = while_a_commit_waits(master, 1, async || {
        for id in waiting_for_ack(master).await {
            db::sql(master, &format!("KILL CONNECTION {id}"))
                .await
                .unwrap();
        }
        master
            .sh(&format!(
                "timeout 5 {} --no-defaults -uroot --socket={} -e '{fence}'",
                server.client(),
                db::SOCKET
            ))
            .await
    })
    .await;
    assert!(insert.is_err(), "a killed commit is never acknowledged");
    if server.is_mysql() {
        assert!(
            killed_alone.is_err() && !read_only().await,
            "MySQL: the killed commit still waits, read_only queued behind it ({killed_alone:?})"
        );
        // Let it go (the statement still queued completes), and start again writable.
        db::sql(master, "SET GLOBAL rpl_semi_sync_source_enabled = OFF")
            .await
            .unwrap();
        let start = Instant::now();
        while !read_only().await {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "read_only after the release"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        db::sql(
            master,
            "SET GLOBAL rpl_semi_sync_source_enabled = ON; SET GLOBAL super_read_only = OFF; \
             SET GLOBAL read_only = OFF",
        )
        .await
        .unwrap();
    } else {
        assert!(
            killed_alone.is_ok() && read_only().await,
            "MariaDB: the KILL ends the wait and read_only is set ({killed_alone:?})"
        );
        db::sql(master, "SET GLOBAL read_only = OFF").await.unwrap();
    }
    assert!(!read_only().await);

    // The adapter's fence, with a commit waiting again.
    let node = NodeId(1);
    let adapter = MysqlAdapter::new(
        server.flavour(),
        BTreeMap::from([(
            node,
            Address {
                host: master.ip.to_string(),
                port: db::PORT,
            },
        )]),
        Credentials {
            user: db::ADMIN_USER.to_string(),
            password: Secret::new(ADMIN_PASSWORD.into()),
            replication_user: db::ADMIN_USER.to_string(),
            replication_password: Secret::new(ADMIN_PASSWORD.into()),
            tls: None,
        },
        Duration::from_secs(2),
        Duration::from_secs(12),
        false,
    );
    // Besides the waiting commit, a statement that holds the server's write lock but
    // has modified nothing yet (it is still reading): on MySQL, where the fence ends
    // the acknowledgement waits by switching semi-sync off, it must be killed first,
    // or it would commit unacknowledged once semi-sync is off.
    let (insert, (reading, (fenced, took))) = while_a_commit_waits(master, 2, async || {
        let reading = db::sql(
            master,
            "INSERT INTO app.t SELECT 100 FROM DUAL WHERE SLEEP(4) = 0",
        );
        let fence = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let start = Instant::now();
            let fenced = adapter.op(node, MysqlOp::SetReadOnly).await;
            (fenced, start.elapsed())
        };
        tokio::join!(reading, fence)
    })
    .await;
    assert!(matches!(fenced, Ok(MysqlReply::Done)), "{fenced:?}");
    // MariaDB waits for the reading statement (4 s) before it can kill its commit.
    assert!(took < Duration::from_secs(8), "fenced in {took:?}");
    assert!(read_only().await);
    assert!(
        insert.is_err(),
        "the commit cut off by the fence was not acknowledged"
    );
    assert!(
        reading.is_err(),
        "the statement that was still reading was not acknowledged: {reading:?}"
    );
    // MySQL kills it while it reads; MariaDB (semi-sync left on) lets it commit and
    // kills it in its wait for the acknowledgement: written there, never acknowledged.
    if server.is_mysql() {
        let row = db::sql(master, "SELECT COUNT(*) FROM app.t WHERE id = 100")
            .await
            .unwrap();
        assert_eq!(row.trim(), "0", "the reading statement wrote nothing");
    }
    // And nothing else gets in: the application's write is refused.
    let late = master
        .sh(&format!(
            "MYSQL_PWD=app-pw {} --no-defaults -u {} -h 127.0.0.1 -e 'INSERT INTO app.t VALUES (3)'",
            server.client(),
            db::APP_USER
        ))
        .await;
    assert!(
        late.as_ref()
            .is_err_and(|e| format!("{e:#}").contains("ERROR 1290")),
        "a write after the fence is refused as read-only: {late:?}"
    );
}
