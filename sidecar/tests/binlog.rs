//! The binlog reader against a real MariaDB: a master runs 100 transactions ahead of
//! its replica (whose IO thread is stopped), its mysqld is killed with SIGKILL, and
//! `multiaz binlog salvage` applies exactly those 100 to the replica under their
//! original GTIDs; the tables then match. The same binlog, cut inside its last event
//! and with a byte flipped, is listed up to the damage, which is named by file and
//! offset.
//!
//! Needs Debian's `mariadb-server` (`ci/test` installs it); fails, never skips, without.

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::*;

fn multiaz(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_multiaz"))
        .args(args)
        .output()
        .expect("multiaz runs")
}

fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

async fn one(port: u16, sql: &str) -> String {
    let row = query_row(port, sql)
        .await
        .unwrap_or_else(|| panic!("no answer to {sql}"));
    col(&row, "v")
}

/// Row count and checksum of the tables the workload writes.
async fn contents(port: u16) -> (String, String) {
    (
        one(port, "SELECT CONCAT((SELECT COUNT(*) FROM app.t), '/', (SELECT COUNT(*) FROM app.t2)) AS v").await,
        one(port, "SELECT CONCAT((SELECT SUM(CRC32(CONCAT(id, v))) FROM app.t), '/', (SELECT SUM(CRC32(CONCAT(id, w))) FROM app.t2)) AS v").await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salvage_applies_exactly_the_transactions_the_replica_missed() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("binlog_salvage");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.as_path();
    eprintln!("servers' files: {}", dir.display());

    let mut master = start_mariadb(dir, 1, true);
    let replica = start_mariadb(dir, 2, false);
    for db in [&master, &replica] {
        ready_with_users(db, "").await;
    }
    // No replica will acknowledge: semi-sync would only add its timeout to each commit.
    root_sql(
        &master,
        "SET GLOBAL rpl_semi_sync_master_enabled = OFF; CREATE DATABASE app; \
         CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB; \
         INSERT INTO app.t VALUES (0, 'before');",
    );
    root_sql(
        &replica,
        &format!(
            "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, \
             MASTER_USER = 'multiaz', MASTER_PASSWORD = '{PASSWORD}', \
             MASTER_USE_GTID = slave_pos; START SLAVE;",
            master.port
        ),
    );
    let caught_up = one(master.port, "SELECT @@gtid_binlog_pos AS v").await;
    wait_until(
        "the replica has caught up",
        Duration::from_secs(20),
        || async {
            let pos = query_row(replica.port, "SELECT @@gtid_slave_pos AS v").await?;
            (col(&pos, "v") == caught_up).then_some(())
        },
    )
    .await;
    root_sql(&replica, "STOP SLAVE IO_THREAD;");

    // --- 100 transactions the replica never receives: multi-row, DDL, updates ----------
    let mut sql = String::new();
    for i in 1..=60 {
        sql += &format!("INSERT INTO app.t VALUES ({i}, 'row {i} ''quoted'' \\\\ \u{e9}');");
    }
    // A rotation in the middle: the reader follows the index into the next file.
    sql += "FLUSH BINARY LOGS;";
    sql += "CREATE TABLE app.t2 (id INT PRIMARY KEY, w TEXT) ENGINE=InnoDB;";
    for i in 1..=30 {
        sql += &format!(
            "BEGIN; INSERT INTO app.t2 VALUES ({i}, REPEAT('x', {})); \
             UPDATE app.t SET v = CONCAT(v, '+') WHERE id = {i}; COMMIT;",
            i * 100
        );
    }
    for i in 1..=9 {
        sql += &format!("DELETE FROM app.t WHERE id = {i};");
    }
    root_sql(&master, &sql);
    let master_contents = contents(master.port).await;
    let master_pos = one(master.port, "SELECT @@gtid_binlog_pos AS v").await;
    master.child.0.kill().expect("SIGKILL mysqld");
    let _ = master.child.0.wait();

    let after = one(replica.port, "SELECT @@gtid_current_pos AS v").await;
    assert_eq!(after, caught_up, "the replica received nothing more");
    let data = dir.join("db1");
    let data = data.to_str().unwrap();

    // --- tail lists exactly the 100 ---------------------------------------------------
    let out = multiaz(&["binlog", "tail", "--dir", data, "--after", &after, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = json_lines(&out.stdout);
    assert_eq!(listed.len(), 100, "{listed:?}");
    let first_seq: u64 = after.rsplit('-').next().unwrap().parse().unwrap();
    let gtids: Vec<String> = listed
        .iter()
        .map(|l| l["gtid"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (first_seq + 1..=first_seq + 100)
        .map(|s| format!("0-1-{s}"))
        .collect();
    assert_eq!(gtids, expected);
    assert_eq!(format!("0-1-{}", first_seq + 100), master_pos);
    assert!(
        listed[61]["tables"].as_array().unwrap().len() == 2,
        "{}",
        listed[61]
    );

    // --- a salvage no longer wanted stops before the next transaction ------------------
    // (the old master's sidecar asks its record before each: once the failover is over,
    // nothing more lands on the new master).
    let options = multiaz_binlog::ScanOptions {
        after: Some(multiaz_engine::GtidSet::parse_any(&after).unwrap()),
        keep_events: true,
    };
    let (txs, _) = multiaz_binlog::read_tail(Path::new(data), None, &options).unwrap();
    let asked = std::cell::Cell::new(0);
    let still_wanted = || {
        asked.set(asked.get() + 1);
        if asked.get() <= 3 {
            Ok(())
        } else {
            Err("failover 2 is over".to_string())
        }
    };
    let mut conn = connect(replica.port, "multiaz", PASSWORD).await.unwrap();
    let partial =
        multiaz_sidecar::adapters::binlog_apply::apply(&mut conn, &txs, None, &still_wanted)
            .await
            .unwrap();
    assert_eq!(partial.recovered, 3, "{partial:?}");
    assert_eq!(partial.not_recovered.len(), 97, "{partial:?}");
    assert!(
        partial
            .stopped
            .as_deref()
            .is_some_and(|s| s.contains("no longer wanted: failover 2 is over")),
        "{partial:?}"
    );

    // --- salvage applies the rest under their GTIDs, once -------------------------------
    let url = format!("mysql://multiaz:{PASSWORD}@127.0.0.1:{}", replica.port);
    let out = multiaz(&[
        "binlog", "salvage", "--dir", data, "--after", &after, "--apply", &url, "--json",
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report = &json_lines(&out.stdout)[0];
    assert_eq!(report["recovered"], 97, "{report}");
    assert_eq!(
        report["not_recovered"].as_array().unwrap().len(),
        0,
        "{report}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(PASSWORD));
    assert_eq!(
        contents(replica.port).await,
        master_contents,
        "tables match the dead master's"
    );
    assert_eq!(
        one(replica.port, "SELECT @@gtid_binlog_pos AS v").await,
        master_pos,
        "original GTIDs"
    );
    let again = multiaz(&[
        "binlog", "salvage", "--dir", data, "--after", &after, "--apply", &url, "--json",
    ]);
    assert_eq!(
        json_lines(&again.stdout)[0]["recovered"],
        0,
        "a second run applies nothing"
    );
    assert_eq!(contents(replica.port).await, master_contents);

    // --- the same binlog, damaged -----------------------------------------------------
    let files = multiaz_binlog::binlog_files(Path::new(data), None).unwrap();
    let last = files.last().unwrap();
    let bytes = std::fs::read(last).unwrap();
    let name = last.file_name().unwrap().to_str().unwrap();
    let in_last: Vec<&Value> = listed
        .iter()
        .filter(|l| l["file"].as_str().unwrap().ends_with(name))
        .collect();
    assert_eq!(in_last.len(), 40, "the rotation put 40 in the second file");
    // `multiaz binlog tail` on a copy of the last file with `content`: exit code,
    // transactions listed, stderr.
    let tail_of = |dir_name: &str, content: &[u8]| {
        let d = dir.join(dir_name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), content).unwrap();
        std::fs::write(d.join("binlog.index"), format!("./{name}\n")).unwrap();
        let out = multiaz(&[
            "binlog",
            "tail",
            "--dir",
            d.to_str().unwrap(),
            "--after",
            &after,
            "--json",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        (out.status.code(), json_lines(&out.stdout).len(), stderr)
    };
    // Cut inside the last transaction's last event: 39 whole ones, exit 0 (a crash).
    let (code, listed, stderr) = tail_of("cut", &bytes[..bytes.len() - 3]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(listed, 39);
    assert!(
        stderr.contains(&format!("{name} at byte")) && stderr.contains("cut off"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&expected[99]),
        "the torn one is named: {stderr}"
    );
    // A flipped byte inside the 21st transaction of the file: the 20 before it, exit 2.
    let mut flipped = bytes.clone();
    let victim = in_last[20]["offset"].as_u64().unwrap();
    flipped[victim as usize + 30] ^= 0x40;
    let (code, listed, stderr) = tail_of("flipped", &flipped);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(listed, 20);
    assert!(
        stderr.contains(&format!("at byte {victim}")) && stderr.contains("checksum"),
        "{stderr}"
    );
    drop(replica);
}
