//! # multiaz-binlog
//!
//! Reading a MySQL or MariaDB binlog from its disk: what a dead master wrote that no
//! replica received, with every event checked and any damage named.
//!
//! `frame` cuts and checks events, `event` decodes the few that matter, `payload`
//! opens MySQL's compressed transactions into their events, `scan` groups them into
//! whole transactions across the files `files` finds. Replaying them on another
//! server under their original GTIDs is the sidecar's (`adapters/binlog_apply.rs`): it needs a
//! MySQL client, this crate does not.

pub mod event;
pub mod files;
pub mod frame;
pub mod kind;
pub mod payload;
pub mod scan;
pub mod session;
pub mod synth;

pub use event::{Decoded, Gtid};
pub use files::{binlog_files, files_after};
pub use frame::{Damage, DamageKind, Framer};
pub use scan::{count, scan, scan_within, FileDamage, ScanEnd, ScanOptions, Transaction, TxEvent};

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// Every complete transaction after `options.after` in the binlog that `dir` (and
/// optionally `index`) name, with how the read ended.
pub fn read_tail(
    dir: &Path,
    index: Option<&Path>,
    options: &ScanOptions,
) -> Result<(Vec<Transaction>, ScanEnd), String> {
    read_tail_within(dir, index, options, u64::MAX)
}

/// As [`read_tail`], holding at most `max_bytes` of events ([`scan_within`]): the
/// read stops at the transaction that would pass it, named in [`ScanEnd::left_out`].
pub fn read_tail_within(
    dir: &Path,
    index: Option<&Path>,
    options: &ScanOptions,
    max_bytes: u64,
) -> Result<(Vec<Transaction>, ScanEnd), String> {
    let files: Vec<PathBuf> = files_after(&binlog_files(dir, index)?, options.after.as_ref());
    let mut out = Vec::new();
    let end = scan_within(&files, options, max_bytes, |tx| {
        out.push(tx);
        ControlFlow::Continue(())
    });
    Ok((out, end))
}
