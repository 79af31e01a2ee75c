//! The operator's days on real servers (three MariaDB, moto, three `multiaz run`):
//! a planned switchover under a writer, with the write block measured and printed; a
//! master killed, failed over, restarted and rejoined as a replica by itself; the
//! anti-flapping block lifted by `multiaz ack`; and a failed master that comes back
//! with an errant transaction kept out, read_only, with the GTID in `multiaz status`.
//! Hooks record what they were told.
//!
//! Needs Debian's `mariadb-server` and `moto_server`; `ci/test` installs both. Missing,
//! the test fails and says so: it never skips.

mod support;

use mysql_async::prelude::Queryable;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::cluster::*;
use support::*;

struct Acked {
    id: i64,
    at: Instant,
    server: usize,
}

/// Writes rows to whichever server takes them, as a client behind the VIP would see
/// it (the route is moto's; here the client tries each server in turn).
fn start_writer(
    ports: Vec<u16>,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut id = 0i64;
        let mut at = 0usize;
        let mut conn: Option<mysql_async::Conn> = None;
        while !stop.load(Ordering::Relaxed) {
            if conn.is_none() {
                let c = tokio::time::timeout(
                    Duration::from_millis(500),
                    connect(ports[at], "app", APP_PASSWORD),
                )
                .await;
                match c {
                    Ok(Ok(c)) => conn = Some(c),
                    _ => {
                        at = (at + 1) % ports.len();
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                }
            }
            id += 1;
            let c = conn.as_mut().expect("connected");
            let r = tokio::time::timeout(
                Duration::from_secs(15),
                c.exec_drop("INSERT INTO app.t VALUES (?, 'w')", (id,)),
            )
            .await;
            match r {
                Ok(Ok(())) => acked.lock().unwrap().push(Acked {
                    id,
                    at: Instant::now(),
                    server: at,
                }),
                _ => {
                    // read_only (a replica now), or gone: the next server.
                    conn = None;
                    at = (at + 1) % ports.len();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
    })
}

async fn replicates_from(db: &Mariadb, source: &Mariadb) -> bool {
    let Some(s) = query_row(db.port, "SHOW SLAVE STATUS").await else {
        return false;
    };
    col(&s, "Master_Port") == source.port.to_string()
        && col(&s, "Slave_IO_Running") == "Yes"
        && col(&s, "Slave_SQL_Running") == "Yes"
}

/// Runs `multiaz` off the runtime's threads (the writer keeps writing meanwhile).
async fn multiaz_async(args: &[&str], config: &Path) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let config = config.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        multiaz(&args, &config)
    })
    .await
    .unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The master of record, 0-based, once the record says so and no failover runs.
fn settled_master(c: &Cluster, asked: usize) -> Option<usize> {
    let v = c.status(asked)?;
    if !v["record"]["failover"].is_null() {
        return None;
    }
    v["record"]["master"].as_u64().map(|m| m as usize - 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_rejoin_ack_and_errant_master_on_real_servers() {
    let name = "operations";
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let log = dir.join("hooks.log");
    let hook = |point: &str, json: bool| {
        let keep = if json {
            format!("cat > {}/{point}.json", dir.display())
        } else {
            "cat > /dev/null".into()
        };
        format!(
            "[\"sh\", \"-c\", \"{keep}; echo $MULTIAZ_HOOK $MULTIAZ_EPOCH $MULTIAZ_SUCCESS >> {}\"]",
            log.display()
        )
    };
    let hooks = format!(
        "\n[hooks]\npre_switchover = {}\npost_switchover = {}\npost_failover = {}\ntimeout_ms = 5000\n",
        hook("pre-switchover", false),
        hook("post-switchover", true),
        hook("post-failover", false),
    );
    let mut c = Cluster::start(name, &hooks).await;
    let ports: Vec<u16> = c.dbs.iter().map(|d| d.port).collect();

    // --- a planned switchover to db-2 under a writer -------------------------------------
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = start_writer(ports.clone(), stop.clone(), acked.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(acked.lock().unwrap().len() > 10, "the writer writes");

    let plan = multiaz_async(&["switchover", "--to", "db-2", "--dry-run"], &c.configs[2]).await;
    eprintln!("{}", text(&plan));
    assert!(plan.status.success(), "{}", text(&plan));
    assert!(text(&plan).contains("read_only") && text(&plan).contains("dry run"));

    let out = multiaz_async(&["switchover", "--to", "db-2"], &c.configs[2]).await;
    eprintln!("{}", text(&out));
    if !out.status.success() {
        c.dump_logs();
    }
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("switchover complete"), "{}", text(&out));
    wait_until(
        "db-1 and db-3 replicate from db-2, the routes point at it",
        Duration::from_secs(15),
        || async {
            let routes = vip_targets(&c.ec2, &c.world.route_tables).await;
            (replicates_from(&c.dbs[0], &c.dbs[1]).await
                && replicates_from(&c.dbs[2], &c.dbs[1]).await
                && routes.iter().all(|t| *t == c.world.enis[1]))
            .then_some(())
        },
    )
    .await;
    assert_eq!(read_only(&c.dbs[0]).await, Some(true), "the old master");
    // The writer reached db-2 by itself; the write block is the gap between the last
    // write db-1 acknowledged and the first one db-2 did.
    wait_until("db-2 takes writes", Duration::from_secs(15), || async {
        acked
            .lock()
            .unwrap()
            .iter()
            .any(|a| a.server == 1)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = writer.await;
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let last_old = acked.iter().filter(|a| a.server == 0).map(|a| a.at).max();
    let first_new = acked.iter().filter(|a| a.server == 1).map(|a| a.at).min();
    let block = first_new.unwrap() - last_old.unwrap();
    let line = format!(
        "switchover write block on real MariaDB: {} ms (last write acknowledged by db-1 to the first by db-2; {} rows written)",
        block.as_millis(),
        acked.len()
    );
    eprintln!("{line}");
    // ci/test prints it after the run (cargo test keeps a passing test's output).
    std::fs::write(dir.join("write-block.txt"), format!("{line}\n")).unwrap();
    assert!(
        block < Duration::from_secs(3),
        "write block {block:?} (the goal is 500 ms; the simulation measures it)"
    );
    let mut conn = connect(c.dbs[1].port, "multiaz", PASSWORD).await.unwrap();
    let ids: Vec<i64> = conn.query("SELECT id FROM app.t").await.unwrap();
    let present: std::collections::BTreeSet<i64> = ids.into_iter().collect();
    let lost: Vec<i64> = acked
        .iter()
        .map(|a| a.id)
        .filter(|i| !present.contains(i))
        .collect();
    assert!(lost.is_empty(), "acknowledged rows lost: {lost:?}");
    drop(conn);

    // Refused with a reason: it is the master already.
    let again = multiaz_async(&["switchover", "--to", "db-2"], &c.configs[0]).await;
    assert!(!again.status.success());
    assert!(
        text(&again).contains("already the master"),
        "{}",
        text(&again)
    );
    let status = multiaz(&["status"], &c.configs[0]);
    assert!(
        text(&status).contains("last switchover: epoch 2"),
        "{}",
        text(&status)
    );
    let hooks_ran = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(hooks_ran.contains("pre-switchover 2"), "{hooks_ran}");
    assert!(hooks_ran.contains("post-switchover 2 1"), "{hooks_ran}");
    let details: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("post-switchover.json")).unwrap())
            .unwrap();
    assert_eq!(details["new_master"], 2, "{details}");
    assert_eq!(details["old_master"], 1, "{details}");
    assert!(details["positions"]["2"].is_string(), "{details}");

    // --- the master dies, fails over, comes back and rejoins as a replica ----------------
    c.dbs[1].child.0.kill().unwrap();
    let _ = c.dbs[1].child.0.wait();
    let new = wait_until("a failover from db-2", Duration::from_secs(20), || async {
        settled_master(&c, 0).filter(|m| *m != 1)
    })
    .await;
    eprintln!("failed over to db-{}", new + 1);
    c.dbs[1].child = spawn_mariadbd(&c.dir, 2, ports[1], false, &[]);
    wait_until(
        "the old master rejoins as a replica of the new one",
        Duration::from_secs(30),
        || async {
            let v = c.status(0)?;
            let quarantined = v["record"]["quarantined"].as_object()?.is_empty();
            (quarantined
                && v["nodes"]["2"]["role"] == "replica"
                && replicates_from(&c.dbs[1], &c.dbs[new]).await)
                .then_some(())
        },
    )
    .await;
    assert_eq!(read_only(&c.dbs[1]).await, Some(true));
    let hooks_ran = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(hooks_ran.contains("post-failover 3 1"), "{hooks_ran}");

    // --- anti-flapping: blocked after that failover until `multiaz ack` -----------------
    let status = multiaz(&["status"], &c.configs[0]);
    assert!(text(&status).contains("BLOCKED"), "{}", text(&status));
    let admin = multiaz_sidecar::admin::client::AdminEndpoint::plain(
        format!("127.0.0.1:{}", c.ports[0].admin).parse().unwrap(),
    );
    let metrics =
        multiaz_sidecar::admin::client::call(&admin, axum::http::Method::GET, "/metrics", None)
            .await
            .unwrap()
            .1;
    for line in [
        "multiaz_failover_blocked 1",
        "multiaz_switchovers 1",
        "multiaz_failovers 1",
    ] {
        assert!(metrics.contains(line), "{line}: {metrics}");
    }
    let ack = multiaz(&["ack"], &c.configs[0]);
    assert!(ack.status.success(), "{}", text(&ack));
    wait_until("the ack is committed", Duration::from_secs(10), || async {
        let v = c.status(0)?;
        v["failover_blocked_until_wall_ms"].is_null().then_some(())
    })
    .await;

    // --- a failed master that comes back with an errant transaction stays out ----------
    c.dbs[new].child.0.kill().unwrap();
    let _ = c.dbs[new].child.0.wait();
    let next = wait_until(
        "a failover from the master",
        Duration::from_secs(20),
        || async { settled_master(&c, 1).filter(|m| *m != new) },
    )
    .await;
    eprintln!("failed over to db-{}", next + 1);
    // Back without networking (the sidecars cannot see it): a write nobody else has.
    let id = new as u32 + 1;
    c.dbs[new].child = spawn_mariadbd(&c.dir, id, ports[new], false, &["--skip-networking"]);
    wait_until(
        "mariadbd is back on its socket",
        Duration::from_secs(30),
        || async {
            let out = std::process::Command::new(find("mariadb", "MULTIAZ_MARIADB_CLIENT"))
                .args(["--no-defaults", "-uroot"])
                .arg(format!("--socket={}", c.dbs[new].socket.display()))
                .args(["-e", "SELECT 1"])
                .output()
                .ok()?;
            out.status.success().then_some(())
        },
    )
    .await;
    root_sql(&c.dbs[new], "INSERT INTO app.t VALUES (9000001, 'errant')");
    let errant = {
        let out = std::process::Command::new(find("mariadb", "MULTIAZ_MARIADB_CLIENT"))
            .args(["--no-defaults", "-uroot", "-N"])
            .arg(format!("--socket={}", c.dbs[new].socket.display()))
            .args(["-e", "SELECT @@gtid_binlog_pos"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    c.dbs[new].child.0.kill().unwrap();
    let _ = c.dbs[new].child.0.wait();
    c.dbs[new].child = spawn_mariadbd(&c.dir, id, ports[new], false, &[]);
    let why = wait_until(
        "the returning master is quarantined for errant transactions",
        Duration::from_secs(30),
        || async {
            let v = c.status(next)?;
            let why = v["record"]["quarantined"][&id.to_string()].as_str()?;
            why.starts_with("errant transactions")
                .then(|| why.to_string())
        },
    )
    .await;
    eprintln!("db-{id} kept out: {why} (its position {errant})");
    let status = text(&multiaz(&["status"], &c.configs[next]));
    eprintln!("{status}");
    assert!(status.contains("quarantined"), "{status}");
    assert!(status.contains("mariadb-binlog --flashback"), "{status}");
    let last = errant.rsplit(',').next().unwrap_or(&errant).to_string();
    assert!(
        why.contains(&last) || status.contains(&last),
        "errant GTID {last} named: {why}"
    );
    // It stays out: read_only, replicating from nobody, for a while.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(read_only(&c.dbs[new]).await, Some(true));
        assert!(
            !replicates_from(&c.dbs[new], &c.dbs[next]).await,
            "a server with errant transactions must never be replicated into the cluster"
        );
    }
    drop(c);
}
