//! The binlog reader on a real MariaDB 10.11 binlog kept as a fixture (the file a
//! SIGKILLed master left: 103 transactions, DDL and DML, still flagged in use), and on
//! random truncations and corruptions of it: never a panic; whole transactions before
//! the damage are listed, nothing after it; the damage is reported.

use multiaz_binlog::{scan, ScanEnd, ScanOptions, Transaction};
use multiaz_engine::GtidSet;
use proptest::prelude::*;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

const FIXTURE: &[u8] = include_bytes!("fixtures/mariadb-10.11.000001");

fn read(bytes: &[u8], options: &ScanOptions) -> (Vec<Transaction>, ScanEnd) {
    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = dir.path().join("binlog.000001");
    std::fs::write(&file, bytes).unwrap();
    let mut out = Vec::new();
    let end = scan(&[file], options, |tx| {
        out.push(tx);
        ControlFlow::Continue(())
    });
    (out, end)
}

fn all() -> ScanOptions {
    ScanOptions::default()
}

#[test]
fn the_fixture_reads_whole() {
    let (txs, end) = read(FIXTURE, &all());
    assert_eq!(end.damage, None);
    assert_eq!(end.torn, None);
    assert_eq!(txs.len(), 103);
    let gtids: Vec<String> = txs.iter().map(|t| t.gtid.to_string()).collect();
    assert_eq!(gtids[0], "0-1-1");
    assert_eq!(gtids[102], "0-1-103");
    assert_eq!(end.bytes as usize, FIXTURE.len() - 4);
    // Transactions tile the file after the header events, in order.
    for w in txs.windows(2) {
        assert!(w[0].offset + w[0].size <= w[1].offset);
    }
    assert_eq!(txs[102].offset + txs[102].size, FIXTURE.len() as u64);
}

#[test]
fn after_a_set_only_the_rest_come_out() {
    let after = GtidSet::parse_any("0-1-3").unwrap();
    let (txs, _) = read(
        FIXTURE,
        &ScanOptions {
            after: Some(after),
            keep_events: true,
        },
    );
    assert_eq!(txs.len(), 100);
    assert_eq!(txs[0].gtid.to_string(), "0-1-4");
    assert!(txs
        .iter()
        .all(|t| !t.events.is_empty() && t.format.is_some()));
}

#[test]
fn something_that_is_not_a_binlog_is_refused() {
    let (txs, end) = read(b"hello, world", &all());
    assert!(txs.is_empty());
    let d = end.damage.unwrap();
    assert_eq!(d.damage.offset, 0);
    assert!(d.to_string().contains("not a binlog"), "{d}");
    let (txs, end) = read(b"", &all());
    assert!(txs.is_empty() && end.damage.is_some());
}

fn complete_before(limit: u64) -> usize {
    let (txs, _) = read(FIXTURE, &all());
    txs.iter().filter(|t| t.offset + t.size <= limit).count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Cut anywhere: exactly the transactions that end before the cut come out.
    #[test]
    fn a_truncated_binlog_lists_every_whole_transaction_before_the_cut(len in 0usize..FIXTURE.len()) {
        let (txs, end) = read(&FIXTURE[..len], &all());
        prop_assert_eq!(txs.len(), complete_before(len as u64));
        if len > 4 {
            if let Some(d) = &end.damage {
                prop_assert!(d.damage.is_truncation(), "{}", d);
                prop_assert!(d.damage.offset <= len as u64);
            }
        }
    }

    /// Any bytes changed anywhere: never a panic; what comes out is a prefix of the
    /// intact listing; when something is missing, the damage says where, at or before
    /// the first changed byte.
    #[test]
    fn a_corrupted_binlog_lists_a_prefix_and_names_the_damage(
        flips in proptest::collection::vec((0usize..FIXTURE.len(), 1u8..=255), 1..4)
    ) {
        let mut bytes = FIXTURE.to_vec();
        for (at, x) in &flips {
            bytes[*at] ^= x;
        }
        let (intact, _) = read(FIXTURE, &all());
        let (txs, end) = read(&bytes, &all());
        prop_assert!(txs.len() <= intact.len());
        for (a, b) in txs.iter().zip(&intact) {
            prop_assert_eq!(a.gtid, b.gtid);
            prop_assert_eq!(a.offset, b.offset);
        }
        if txs.len() < intact.len() {
            let d = end.damage.as_ref().expect("damage reported");
            let first = flips.iter().map(|f| f.0 as u64).min().unwrap();
            prop_assert!(d.damage.offset <= first, "{} vs first change at {}", d, first);
        }
    }

    /// The same, aimed at the file's first events (format description, GTID list),
    /// which the reader reads before it knows whether events carry checksums.
    #[test]
    fn a_corrupted_header_is_reported_not_panicked_on(
        flips in proptest::collection::vec((4usize..300, 1u8..=255), 1..4)
    ) {
        let mut bytes = FIXTURE.to_vec();
        for (at, x) in &flips {
            bytes[*at] ^= x;
        }
        let (txs, end) = read(&bytes, &all());
        prop_assert!(txs.len() == 103 || end.damage.is_some());
    }
}

#[test]
fn the_index_names_files_relative_to_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.index"), "./b.000001\n/abs/b.000002\n\n").unwrap();
    let files = multiaz_binlog::binlog_files(dir.path(), None).unwrap();
    assert_eq!(
        files,
        vec![
            dir.path().join("b.000001"),
            Path::new("/abs/b.000002").to_path_buf()
        ]
    );
    std::fs::write(dir.path().join("c.index"), "x\n").unwrap();
    let err = multiaz_binlog::binlog_files(dir.path(), None).unwrap_err();
    assert!(err.contains("several binlog indexes"), "{err}");
}

#[test]
fn a_synthetic_binlog_made_from_the_fixture_reads_whole() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("template");
    std::fs::write(&template, FIXTURE).unwrap();
    let mut out = Vec::new();
    let n = multiaz_binlog::synth::write(&template, 1 << 20, &mut out).unwrap();
    assert!(out.len() >= 1 << 20);
    let (txs, end) = read(&out, &all());
    assert_eq!(end.damage, None);
    assert_eq!(txs.len() as u64, n);
    assert_eq!(txs.last().unwrap().gtid.to_string(), format!("0-1-{n}"));
}

#[test]
fn a_bounded_read_holds_no_more_than_its_limit_and_names_the_first_left_out() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("binlog.000001"), FIXTURE).unwrap();
    std::fs::write(dir.path().join("binlog.index"), "./binlog.000001\n").unwrap();
    let options = ScanOptions {
        after: None,
        keep_events: true,
    };
    let (whole, _) = read(FIXTURE, &options);
    // Room for the first ten transactions' events (each counted twice: bytes and
    // decoded), not the eleventh's.
    let kept = |txs: &[Transaction]| -> u64 {
        txs.iter()
            .flat_map(|t| &t.events)
            .map(|e| 2 * e.bytes.len() as u64)
            .sum()
    };
    let limit = kept(&whole[..10]);
    let (held, end) = multiaz_binlog::read_tail_within(dir.path(), None, &options, limit).unwrap();
    assert_eq!(held.len(), 10);
    assert!(kept(&held) <= limit);
    assert_eq!(
        end.left_out.map(|g| g.to_string()),
        Some("0-1-11".to_string())
    );
    // A bound below one transaction: nothing held, that one named (the check is made
    // as each event is kept, not once the transaction is whole).
    let (held, end) =
        multiaz_binlog::read_tail_within(dir.path(), None, &options, kept(&whole[..1]) - 1)
            .unwrap();
    assert!(held.is_empty());
    assert_eq!(
        end.left_out.map(|g| g.to_string()),
        Some("0-1-1".to_string())
    );
    // Unbounded, everything and nothing left out.
    let (all, end) =
        multiaz_binlog::read_tail_within(dir.path(), None, &options, u64::MAX).unwrap();
    assert_eq!(all.len(), 103);
    assert_eq!(end.left_out, None);
}
