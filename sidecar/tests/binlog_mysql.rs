//! The reader on a MySQL 8 binlog built here with mysql_common's own event writers
//! (no MySQL server is packaged on these machines): GTID events decoded, BEGIN … XID
//! transactions and single-statement DDL grouped, PREVIOUS_GTIDS read.

use multiaz_binlog::frame::crc32;
use multiaz_binlog::{scan, ScanEnd, ScanOptions, Transaction};
use multiaz_engine::GtidSet;
use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::events::{
    FormatDescriptionEvent, GtidEvent, PreviousGtidsEvent, PreviousGtidsSid, QueryEvent, XidEvent,
};
use mysql_common::packets::GnoInterval;
use mysql_common::proto::MySerialize;
use std::ops::ControlFlow;
use std::path::Path;

const SID: [u8; 16] = [
    0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42, 0x95, 0x63,
];
const UUID: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429563";

struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn event(&mut self, event_type: u8, body: &[u8]) {
        let size = 19 + body.len() + 4;
        let pos = self.out.len() + size;
        let mut e = Vec::with_capacity(size);
        e.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        e.push(event_type);
        e.extend_from_slice(&7u32.to_le_bytes());
        e.extend_from_slice(&(size as u32).to_le_bytes());
        e.extend_from_slice(&(pos as u32).to_le_bytes());
        e.extend_from_slice(&0u16.to_le_bytes());
        e.extend_from_slice(body);
        let crc = crc32(&e);
        e.extend_from_slice(&crc.to_le_bytes());
        self.out.extend_from_slice(&e);
    }
    fn body(s: &impl MySerialize) -> Vec<u8> {
        let mut b = Vec::new();
        s.serialize(&mut b);
        b
    }
    fn query(&mut self, schema: &str, sql: &str) {
        let q = QueryEvent::new(Vec::new(), schema.as_bytes().to_vec())
            .with_query(sql.as_bytes().to_vec());
        self.event(2, &Self::body(&q));
    }
    fn gtid(&mut self, gno: u64) {
        self.event(33, &Self::body(&GtidEvent::new(SID, gno)));
    }
}

/// A MySQL 8.4 binlog's first events: format description (CRC32), previous GTIDs 1-10.
fn header() -> Writer {
    let mut w = Writer {
        out: vec![0xfe, b'b', b'i', b'n'],
    };
    let fde =
        FormatDescriptionEvent::new(BinlogVersion::Version4).with_server_version(b"8.4.3".to_vec());
    let mut body = Writer::body(&fde);
    body.push(1); // CRC32
    w.event(15, &body);
    let prev = PreviousGtidsEvent::new(vec![PreviousGtidsSid::new(
        SID,
        None,
        vec![GnoInterval::new(1, 11)],
    )]);
    w.event(35, &Writer::body(&prev));
    w
}

fn mysql_binlog() -> Vec<u8> {
    let mut w = header();
    // 11: a DML transaction; 12: DDL on its own; 13: DML, cut off before its XID.
    w.gtid(11);
    w.query("app", "BEGIN");
    w.query("app", "INSERT INTO t VALUES (1)");
    w.event(16, &Writer::body(&XidEvent { xid: 99 }));
    w.gtid(12);
    w.query("app", "CREATE TABLE u (id INT PRIMARY KEY)");
    w.gtid(13);
    w.query("app", "BEGIN");
    w.query("app", "INSERT INTO t VALUES (2)");
    w.out
}

/// Every whole transaction in `file` that the set `after` lacks.
fn read(file: &Path, after: Option<&str>, keep_events: bool) -> (Vec<Transaction>, ScanEnd) {
    let options = ScanOptions {
        after: after.map(|a| GtidSet::parse_any(a).unwrap()),
        keep_events,
    };
    let mut txs = Vec::new();
    let end = scan(&[file.to_path_buf()], &options, |tx| {
        txs.push(tx);
        ControlFlow::Continue(())
    });
    (txs, end)
}

/// A transaction cut off by a server restart, followed by one written with GTIDs off:
/// the anonymous one's COMMIT must not complete the torn one.
#[test]
fn an_anonymous_transaction_does_not_complete_a_torn_one() {
    let mut w = header();
    w.gtid(11);
    w.query("app", "BEGIN");
    w.query("app", "INSERT INTO t VALUES (1)");
    w.event(34, &Writer::body(&GtidEvent::new([0; 16], 0)));
    w.query("app", "BEGIN");
    w.query("app", "INSERT INTO t VALUES (2)");
    w.event(16, &Writer::body(&XidEvent { xid: 100 }));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("binlog.000001");
    std::fs::write(&file, w.out).unwrap();
    let (txs, end) = read(&file, None, false);
    let listed: Vec<String> = txs.iter().map(|t| t.gtid.to_string()).collect();
    assert_eq!(listed, Vec::<String>::new());
    assert_eq!(end.torn.map(|g| g.to_string()), Some(format!("{UUID}:11")));
}

#[test]
fn a_mysql_binlog_is_grouped_into_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("binlog.000001");
    std::fs::write(&file, mysql_binlog()).unwrap();
    let (txs, end) = read(&file, None, true);
    assert_eq!(end.damage, None);
    assert_eq!(end.flavour, Some(multiaz_engine::Flavour::Mysql));
    let gtids: Vec<String> = txs.iter().map(|t| t.gtid.to_string()).collect();
    assert_eq!(gtids, [format!("{UUID}:11"), format!("{UUID}:12")]);
    assert_eq!(end.torn.map(|g| g.to_string()), Some(format!("{UUID}:13")));
    assert_eq!(txs[0].events.len(), 3, "BEGIN, INSERT, XID");
    assert_eq!(txs[1].events.len(), 1, "the DDL alone");
    let stmts = multiaz_sidecar::adapters::binlog_apply::statements(&txs[1], &mut None).unwrap();
    assert_eq!(stmts[1], format!("SET @@session.gtid_next='{UUID}:12'"));
    assert_eq!(
        &stmts[2..],
        [
            "USE `app`",
            // The statement runs at the time it ran on the master (the event's).
            "SET TIMESTAMP=1700000000",
            "CREATE TABLE u (id INT PRIMARY KEY)",
            "SET @@session.gtid_next='AUTOMATIC'"
        ]
    );

    let after = GtidSet::parse_any(&format!("{UUID}:1-11")).unwrap();
    assert!(multiaz_binlog::scan::written_before(&file).is_some_and(|b| after.contains(&b)));
    let (later, _) = read(&file, Some(&format!("{UUID}:1-11")), false);
    let later: Vec<String> = later.iter().map(|t| t.gtid.to_string()).collect();
    assert_eq!(later, [format!("{UUID}:12")]);
}

/// MySQL 8.3+'s tagged GTIDs (event 42): `uuid:tag:n` is a transaction of its own,
/// never taken for `uuid:n`, printed and replayed as MySQL spells it.
#[test]
fn a_tagged_transaction_keeps_its_tag() {
    use mysql_common::packets::Tag as WireTag;
    let mut w = header();
    w.gtid(11);
    w.query("app", "BEGIN");
    w.query("app", "INSERT INTO t VALUES (1)");
    w.event(16, &Writer::body(&XidEvent { xid: 99 }));
    let tagged = GtidEvent::new_tagged(SID, WireTag::new("chk").unwrap(), 1);
    w.event(42, &Writer::body(&tagged));
    w.query("app", "BEGIN");
    w.query("app", "INSERT INTO t VALUES (2)");
    w.event(16, &Writer::body(&XidEvent { xid: 100 }));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("binlog.000001");
    std::fs::write(&file, w.out).unwrap();
    let listed = |after: Option<&str>| {
        let (txs, end) = read(&file, after, true);
        assert_eq!(end.damage, None);
        txs
    };
    let all = listed(None);
    let gtids: Vec<String> = all.iter().map(|t| t.gtid.to_string()).collect();
    assert_eq!(gtids, [format!("{UUID}:11"), format!("{UUID}:chk:1")]);
    // The same numbers untagged do not hold it: it is listed (salvaged), not dropped.
    let rest = listed(Some(&format!("{UUID}:1-11")));
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].gtid.to_string(), format!("{UUID}:chk:1"));
    assert!(listed(Some(&format!("{UUID}:1-11:chk:1"))).is_empty());
    let stmts = multiaz_sidecar::adapters::binlog_apply::statements(&all[1], &mut None).unwrap();
    assert!(
        stmts.contains(&format!("SET @@session.gtid_next='{UUID}:chk:1'")),
        "{stmts:?}"
    );
}
