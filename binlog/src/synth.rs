//! Large binlogs made from a real one, for benchmarks: the header events of `template`
//! followed by its transactions over and over, renumbered (MariaDB GTID sequence
//! numbers), with positions and checksums recomputed, so that both this reader and
//! `mariadb-binlog` read the result as an ordinary binlog.

use super::frame::{crc32, HEADER_LEN};
use super::kind::{FORMAT_DESCRIPTION, IN_USE, MARIADB_GTID};
use super::scan::{scan, ScanOptions};
use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::Path;

/// Writes a binlog of at least `min_bytes` to `out` from the MariaDB binlog `template`;
/// returns the number of transactions written.
pub fn write(template: &Path, min_bytes: u64, out: &mut impl Write) -> io::Result<u64> {
    let bytes = std::fs::read(template)?;
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    // The template's transactions, as byte ranges (GTID event to the end of the last).
    let mut ranges = Vec::new();
    let end = scan(&[template.to_path_buf()], &ScanOptions::default(), |tx| {
        ranges.push((tx.offset as usize, (tx.offset + tx.size) as usize));
        ControlFlow::Continue(())
    });
    if let Some(d) = end.real_damage() {
        return Err(bad(d.to_string()));
    }
    let Some(&(first, _)) = ranges.first() else {
        return Err(bad("the template holds no transaction".into()));
    };
    let mut pos: u64 = 4;
    out.write_all(&bytes[..4])?;
    let mut emit = |event: &[u8], pos: &mut u64, seq: Option<u64>| -> io::Result<()> {
        let mut e = event.to_vec();
        *pos += e.len() as u64;
        e[13..17].copy_from_slice(&(*pos as u32).to_le_bytes());
        if e[4] == FORMAT_DESCRIPTION {
            let flags = u16::from_le_bytes([e[17], e[18]]) & !IN_USE;
            e[17..19].copy_from_slice(&flags.to_le_bytes());
        }
        if let (Some(seq), MARIADB_GTID) = (seq, e[4]) {
            e[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&seq.to_le_bytes());
        }
        let n = e.len();
        let crc = crc32(&e[..n - 4]);
        e[n - 4..].copy_from_slice(&crc.to_le_bytes());
        out.write_all(&e)
    };
    // Everything before the first transaction (format description, GTID list …) was
    // read whole and checked by the scan, so it splits by the header's length too.
    for event in events_at(&bytes, 4, first) {
        emit(event, &mut pos, None)?;
    }
    let mut seq = 0u64;
    while pos < min_bytes {
        for &(a, b) in &ranges {
            seq += 1;
            for event in events_at(&bytes, a, b) {
                emit(event, &mut pos, Some(seq))?;
            }
        }
    }
    Ok(seq)
}

/// The events in `bytes[a..b]`, split by each header's length.
fn events_at(bytes: &[u8], mut a: usize, b: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while a < b {
        let size = u32::from_le_bytes(bytes[a + 9..a + 13].try_into().expect("4 bytes")) as usize;
        out.push(&bytes[a..a + size]);
        a += size;
    }
    out
}
