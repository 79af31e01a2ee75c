//! The binlog reader on binlogs written by a real MySQL 9.7.4, kept as a fixture
//! (`fixtures/mysql-9.7/`, remade by `fixtures/mysql-9.7.sh`): two files (a
//! rotation), DDL and DML, a tagged GTID (`uuid:chk:1`), a compressed transaction that
//! holds 2 MB, a statement run under another time zone and sql_mode, and the last file
//! left flagged in use by a SIGKILL. Listed whole and exactly; `--after` sets holding
//! tags; a cut-off last event is a crash's tear (exit 0), a flipped byte is damage
//! (exit 2); random cuts and corruptions never panic.

use multiaz_binlog::{scan, ScanEnd, ScanOptions, Transaction};
use multiaz_engine::GtidSet;
use proptest::prelude::*;
use std::ops::ControlFlow;
use std::path::Path;
use std::process::Command;

const FIRST: &[u8] = include_bytes!("fixtures/mysql-9.7/binlog.000001");
const SECOND: &[u8] = include_bytes!("fixtures/mysql-9.7/binlog.000002");
/// The server UUID the fixture's script gives the server.
const UUID: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

/// Every transaction of the fixture as MySQL names it, in binlog order: four in the
/// first file (CREATE DATABASE, CREATE TABLE, two inserts), then the tagged insert,
/// the compressed 2 MB insert, the ALTER TABLE, an insert under another session and
/// a two-statement transaction.
fn expected() -> Vec<String> {
    let mut all: Vec<String> = (1..=4).map(|n| format!("{UUID}:{n}")).collect();
    all.push(format!("{UUID}:chk:1"));
    all.extend((5..=8).map(|n| format!("{UUID}:{n}")));
    all
}

/// Writes the two files and their index into `dir`.
fn lay_out(dir: &Path, first: &[u8], second: &[u8]) {
    std::fs::write(dir.join("binlog.000001"), first).unwrap();
    std::fs::write(dir.join("binlog.000002"), second).unwrap();
    std::fs::write(
        dir.join("binlog.index"),
        "./binlog.000001\n./binlog.000002\n",
    )
    .unwrap();
}

fn read(first: &[u8], second: &[u8], after: Option<&str>) -> (Vec<Transaction>, ScanEnd) {
    let dir = tempfile::tempdir().unwrap();
    lay_out(dir.path(), first, second);
    let options = ScanOptions {
        after: after.map(|a| GtidSet::parse_any(a).unwrap()),
        keep_events: true,
    };
    let files = [
        dir.path().join("binlog.000001"),
        dir.path().join("binlog.000002"),
    ];
    let mut out = Vec::new();
    let end = scan(&files, &options, |tx| {
        out.push(tx);
        ControlFlow::Continue(())
    });
    (out, end)
}

fn names(txs: &[Transaction]) -> Vec<String> {
    txs.iter().map(|t| t.gtid.to_string()).collect()
}

#[test]
fn the_mysql_fixture_reads_whole_tags_and_compressed_transactions_included() {
    let (txs, end) = read(FIRST, SECOND, None);
    assert_eq!(end.damage, None);
    assert_eq!(end.torn, None);
    assert_eq!(end.files, 2);
    assert_eq!(names(&txs), expected());
    // The compressed transaction is opened: its table and its rows events are there.
    let compressed = &txs[5];
    assert_eq!(
        compressed.tables.iter().collect::<Vec<_>>(),
        vec!["app.t"],
        "{compressed:?}"
    );
    assert!(
        compressed.events.len() >= 3,
        "{:?}",
        compressed.events.len()
    );
    // Transactions tile the second file after its header events, to its last byte.
    let last = txs.last().unwrap();
    assert_eq!(last.offset + last.size, SECOND.len() as u64);
    for w in txs[4..].windows(2) {
        assert!(w[0].offset + w[0].size <= w[1].offset);
    }
}

#[test]
fn after_sets_holding_tags_leave_out_exactly_what_they_hold() {
    let all = expected();
    let cases: [(String, Vec<String>); 5] = [
        // A replica that has every untagged transaction still lacks the tagged one.
        (format!("{UUID}:1-8"), vec![all[4].clone()]),
        (
            format!("{UUID}:1-3:chk:1"),
            all[3..4].iter().chain(&all[5..]).cloned().collect(),
        ),
        (
            format!("{UUID}:chk:1"),
            all.iter().filter(|g| !g.contains("chk")).cloned().collect(),
        ),
        (format!("{UUID}:1-8:chk:1"), vec![]),
        // Another tag of the same server holds none of these.
        (format!("{UUID}:1-8:other:1"), vec![all[4].clone()]),
    ];
    for (after, want) in cases {
        let (txs, end) = read(FIRST, SECOND, Some(&after));
        assert_eq!(end.damage, None, "{after}");
        assert_eq!(names(&txs), want, "--after {after}");
    }
}

fn multiaz_tail(dir: &Path, after: &str, json: bool) -> (Option<i32>, String, String) {
    let mut args = vec![
        "binlog",
        "tail",
        "--dir",
        dir.to_str().unwrap(),
        "--after",
        after,
    ];
    if json {
        args.push("--json");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_multiaz"))
        .args(&args)
        .output()
        .expect("multiaz runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn gtids_of(json_lines: &str) -> Vec<String> {
    json_lines
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["gtid"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn multiaz_binlog_tail_prints_tags_as_mysql_does_and_names_tears_and_damage() {
    let all = expected();
    let dir = tempfile::tempdir().unwrap();
    let after = format!("{UUID}:1-4");
    let whole = dir.path().join("whole");
    std::fs::create_dir(&whole).unwrap();
    lay_out(&whole, FIRST, SECOND);
    let (code, stdout, stderr) = multiaz_tail(&whole, &after, false);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(&format!("{UUID}:chk:1 ")), "{stdout}");
    let (code, stdout, stderr) = multiaz_tail(&whole, &after, true);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(gtids_of(&stdout), all[4..].to_vec());

    // Cut inside the last event (as a crash leaves it): the whole ones before, the
    // torn one named, exit 0.
    let cut = dir.path().join("cut");
    std::fs::create_dir(&cut).unwrap();
    lay_out(&cut, FIRST, &SECOND[..SECOND.len() - 3]);
    let (code, stdout, stderr) = multiaz_tail(&cut, &after, true);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(gtids_of(&stdout), all[4..8].to_vec());
    assert!(
        stderr.contains("binlog.000002 at byte") && stderr.contains("cut off"),
        "{stderr}"
    );
    assert!(stderr.contains(&all[8]), "the torn one is named: {stderr}");

    // A byte flipped inside the insert after the ALTER: the three before it, the
    // damage named by file and offset, exit 2.
    let (txs, _) = read(FIRST, SECOND, None);
    let victim = txs[7].offset;
    let mut flipped = SECOND.to_vec();
    flipped[victim as usize + 30] ^= 0x40;
    let bad = dir.path().join("flipped");
    std::fs::create_dir(&bad).unwrap();
    lay_out(&bad, FIRST, &flipped);
    let (code, stdout, stderr) = multiaz_tail(&bad, &after, true);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(gtids_of(&stdout), all[4..7].to_vec());
    assert!(
        stderr.contains(&format!("at byte {victim}")) && stderr.contains("checksum"),
        "{stderr}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The newest file cut anywhere: the first file whole, then exactly the
    /// transactions that end before the cut.
    #[test]
    fn a_cut_mysql_binlog_lists_every_whole_transaction_before_the_cut(len in 0usize..SECOND.len()) {
        let (intact, _) = read(FIRST, SECOND, None);
        let (txs, end) = read(FIRST, &SECOND[..len], None);
        let in_first = intact.iter().filter(|t| t.file.ends_with("binlog.000001")).count();
        let before_cut = intact[in_first..]
            .iter()
            .filter(|t| t.offset + t.size <= len as u64)
            .count();
        prop_assert_eq!(txs.len(), in_first + before_cut);
        if let Some(d) = &end.damage {
            prop_assert!(len <= 4 || d.damage.is_truncation(), "{}", d);
        }
    }

    /// Bytes changed anywhere in either file: never a panic; what comes out is a
    /// prefix of the intact listing, and when something is missing the damage is
    /// reported.
    #[test]
    fn a_corrupted_mysql_binlog_lists_a_prefix_and_names_the_damage(
        flips in proptest::collection::vec((0usize..FIRST.len() + SECOND.len(), 1u8..=255), 1..4)
    ) {
        let (mut first, mut second) = (FIRST.to_vec(), SECOND.to_vec());
        for (at, x) in &flips {
            match at.checked_sub(FIRST.len()) {
                None => first[*at] ^= x,
                Some(i) => second[i] ^= x,
            }
        }
        let (intact, _) = read(FIRST, SECOND, None);
        let (txs, end) = read(&first, &second, None);
        prop_assert!(txs.len() <= intact.len());
        for (a, b) in txs.iter().zip(&intact) {
            prop_assert_eq!(a.gtid, b.gtid);
            prop_assert_eq!(a.offset, b.offset);
        }
        if txs.len() < intact.len() {
            prop_assert!(end.damage.is_some() || end.torn.is_some());
        }
    }
}
