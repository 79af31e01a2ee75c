//! Regression (issue 14), on real servers (three MariaDB, moto, three `multiaz run`):
//! with failover paused, the master's mysqld is SIGKILLed and started again with the
//! recommended settings (read_only, semi-sync source off, as every server starts). It
//! stays master, and its sidecar makes it writable again — which once ran only
//! `read_only = OFF`, so the master acknowledged writes that no replica had. Now it
//! must be writable with semi-sync source on, and a write while no replica can receive
//! it (the replicas' mysqld frozen with SIGSTOP: the sidecars would restart a merely
//! stopped IO thread) must not be acknowledged.
//!
//! Needs Debian's `mariadb-server` and `moto_server`; `ci/test` installs both. Missing,
//! the test fails and says so: it never skips.

mod support;

use mysql_async::prelude::Queryable;
use std::time::Duration;
use support::cluster::*;
use support::*;

async fn semi_sync_source(db: &Mariadb) -> Option<(bool, bool)> {
    let enabled = query_row(db.port, "SELECT @@rpl_semi_sync_master_enabled AS e").await?;
    let status = query_row(db.port, "SHOW STATUS LIKE 'Rpl_semi_sync_master_status'").await?;
    Some((col(&enabled, "e") == "1", col(&status, "Value") == "ON"))
}

fn signal(db: &Mariadb, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &db.child.0.id().to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig} mariadbd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_master_is_writable_only_with_semi_sync_on() {
    let mut c = Cluster::start("unfence", "").await;
    let out = multiaz(&["pause"], &c.configs[1]);
    assert!(out.status.success(), "{out:?}");
    wait_until(
        "the pause is committed",
        Duration::from_secs(10),
        || async { (c.status(0)?["record"]["paused"] == true).then_some(()) },
    )
    .await;

    // SIGKILL the master's mysqld and start it again as every server starts.
    c.dbs[0].child.0.kill().unwrap();
    let _ = c.dbs[0].child.0.wait();
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.dbs[0].child = spawn_mariadbd(&c.dir, 1, c.dbs[0].port, false, &[]);
    wait_until(
        "the sidecar makes the restarted master writable again",
        Duration::from_secs(30),
        || async { (read_only(&c.dbs[0]).await == Some(false)).then_some(()) },
    )
    .await;
    let (enabled, _) = semi_sync_source(&c.dbs[0]).await.expect("answers");
    assert!(
        enabled,
        "writable with rpl_semi_sync_master_enabled = OFF: it acknowledges writes no replica has"
    );
    wait_until(
        "semi-sync is active (a replica attached)",
        Duration::from_secs(30),
        || async { (semi_sync_source(&c.dbs[0]).await? == (true, true)).then_some(()) },
    )
    .await;
    let mut app = connect(c.dbs[0].port, "app", APP_PASSWORD).await.unwrap();
    app.query_drop("INSERT INTO app.t VALUES (1, 'with replicas')")
        .await
        .expect("acknowledged while the replicas receive");

    // No replica can receive: a write must not be acknowledged.
    signal(&c.dbs[1], "-STOP");
    signal(&c.dbs[2], "-STOP");
    let write = tokio::time::timeout(
        Duration::from_secs(5),
        app.query_drop("INSERT INTO app.t VALUES (2, 'no replica can have it')"),
    )
    .await;
    signal(&c.dbs[1], "-CONT");
    signal(&c.dbs[2], "-CONT");
    if write.is_ok() {
        c.dump_logs();
    }
    assert!(
        write.is_err(),
        "a write no replica received was acknowledged: {write:?}"
    );
    drop(app);
    // Resumed, the cluster is whole again: the master still writable with semi-sync on.
    let out = multiaz(&["resume"], &c.configs[2]);
    assert!(out.status.success(), "{out:?}");
    let next_id = std::sync::atomic::AtomicI64::new(3);
    wait_until(
        "the master takes writes again with semi-sync on",
        Duration::from_secs(30),
        || async {
            let mut app = connect(c.dbs[0].port, "app", APP_PASSWORD).await.ok()?;
            let id = next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::time::timeout(
                Duration::from_secs(2),
                app.exec_drop("INSERT INTO app.t VALUES (?, 'after')", (id,)),
            )
            .await
            .ok()?
            .ok()?;
            (semi_sync_source(&c.dbs[0]).await? == (true, true)).then_some(())
        },
    )
    .await;
    let status = c.status(0).expect("status");
    assert_eq!(status["record"]["master"], 1, "no failover while paused");
    drop(c);
}
