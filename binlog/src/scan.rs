//! Events into whole transactions (GTID to XID / COMMIT), across the files of a binlog.
//! Only complete transactions come out; one still open where the read stops (the file
//! ends, or damage) is reported as torn, never applied.

use super::event::{statement, Decoded, Decoder, Gtid, Statement};
use super::frame::{Damage, DamageKind, Frame, Framer};
use super::kind;
use super::payload::{self, PayloadEvents};
use multiaz_engine::{Flavour, GtidSet};
use mysql_common::binlog::events::{Event, TransactionPayloadEvent};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::BufReader;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An event a transaction carries, kept for applying it elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxEvent {
    pub event_type: u8,
    pub decoded: Decoded,
    /// The event as on disk (header and checksum included).
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Transaction {
    pub gtid: Gtid,
    /// Unix seconds of its first event.
    pub timestamp: u32,
    pub file: Arc<Path>,
    /// Offset of its GTID event in `file`.
    pub offset: u64,
    /// Bytes from its GTID event to the end of its last event.
    pub size: u64,
    /// `schema.table` of every table its rows events touch.
    pub tables: BTreeSet<String>,
    /// Its events after the GTID event; empty unless the scan keeps events.
    pub events: Vec<TxEvent>,
    /// MariaDB: a single statement with no BEGIN … COMMIT.
    pub standalone: bool,
    /// The format description event of its file (kept with the events).
    pub format: Option<Arc<[u8]>>,
}

/// Where reading stopped early, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDamage {
    pub file: PathBuf,
    pub damage: Damage,
    /// In the last file read, the newest of the binlog: a cut there is what a crash
    /// leaves behind.
    pub in_last_file: bool,
}

impl std::fmt::Display for FileDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.file.display(), self.damage)
    }
}

/// How a scan ended.
#[derive(Debug, Clone, Default)]
pub struct ScanEnd {
    pub flavour: Option<Flavour>,
    /// The first damage met; nothing after it is read.
    pub damage: Option<FileDamage>,
    /// The transaction still open when reading stopped: found, but not whole.
    pub torn: Option<Gtid>,
    pub files: usize,
    pub bytes: u64,
    /// The transaction whose events would have passed the memory bound of
    /// [`scan_within`]: the read stopped there, it and what follows left unread.
    pub left_out: Option<Gtid>,
}

impl ScanEnd {
    /// Damage that is more than a crash's cut-off last event: what stopped the read
    /// early, with whole transactions perhaps left unread after it.
    pub fn real_damage(&self) -> Option<&FileDamage> {
        self.damage
            .as_ref()
            .filter(|d| !(d.damage.is_truncation() && d.in_last_file))
    }
}

/// What to read and what to keep.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Only transactions not in this set; `None`: all of them.
    pub after: Option<GtidSet>,
    /// Keep each transaction's events (for applying them); listing needs none.
    pub keep_events: bool,
}

/// How a transaction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ends {
    /// At XID, COMMIT, ROLLBACK or XA PREPARE.
    AtCommit,
    /// At its first statement (MariaDB standalone GTID).
    AtStatement,
    /// MySQL: BEGIN next means `AtCommit`, any other statement is the whole transaction.
    Undecided,
}

struct Open {
    tx: Transaction,
    ends: Ends,
    /// Not in `options.after`: listed when whole, its events kept if asked. The others
    /// are followed to their end without copying anything.
    wanted: bool,
}

/// Reads `files` in order and calls `each` with every complete transaction that
/// `options.after` lacks; `each` can stop the scan early.
pub fn scan(
    files: &[PathBuf],
    options: &ScanOptions,
    each: impl FnMut(Transaction) -> ControlFlow<()>,
) -> ScanEnd {
    scan_within(files, options, u64::MAX, each)
}

/// How many complete transactions `files` hold that `options.after` lacks, and how
/// the read ended.
pub fn count(files: &[PathBuf], options: &ScanOptions) -> (u64, ScanEnd) {
    let mut n = 0u64;
    let end = scan(files, options, |_| {
        n += 1;
        ControlFlow::Continue(())
    });
    (n, end)
}

/// As [`scan`], keeping at most `max_kept` bytes of events in all (each counted twice:
/// its bytes and its decoded form). Checked as each event is kept, so one huge
/// transaction cannot pass the bound either; the read stops at the transaction that
/// would, and names it in [`ScanEnd::left_out`].
pub fn scan_within(
    files: &[PathBuf],
    options: &ScanOptions,
    max_kept: u64,
    mut each: impl FnMut(Transaction) -> ControlFlow<()>,
) -> ScanEnd {
    let mut end = ScanEnd::default();
    let mut kept = 0u64;
    for (i, path) in files.iter().enumerate() {
        end.files += 1;
        let mut file = FileScan {
            path,
            file: Arc::from(path.as_path()),
            in_last_file: i + 1 == files.len(),
            options,
            keep: Keep {
                events: options.keep_events,
                kept: &mut kept,
                max: max_kept,
            },
            decoder: Decoder::default(),
            format: None,
            open: None,
        };
        if file.run(&mut end, &mut each).is_break() {
            return end;
        }
    }
    end
}

/// One file of a scan: its decoder, the format description its transactions are
/// replayed under, and the transaction open at the current event.
struct FileScan<'a> {
    path: &'a PathBuf,
    file: Arc<Path>,
    in_last_file: bool,
    options: &'a ScanOptions,
    keep: Keep<'a>,
    decoder: Decoder,
    format: Option<Arc<[u8]>>,
    open: Option<Open>,
}

impl FileScan<'_> {
    /// Reads the file to its end, handing `each` every wanted transaction that ends in
    /// it. `Break`: the scan stops here (damage, the memory bound, or `each` said so).
    fn run(
        &mut self,
        end: &mut ScanEnd,
        each: &mut impl FnMut(Transaction) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let mut framer = match File::open(self.path)
            .map_err(|e| Damage {
                offset: 0,
                kind: DamageKind::Unreadable(e.to_string()),
            })
            .and_then(|f| Framer::new(BufReader::with_capacity(1 << 20, f)))
        {
            Ok(f) => f,
            Err(d) => return self.damaged(end, d),
        };
        loop {
            let frame = match framer.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(d) => return self.damaged(end, d),
            };
            end.bytes += frame.bytes.len() as u64;
            if self.open.is_none() && !kind::matters_outside_transactions(frame.event_type()) {
                continue;
            }
            let decoded = match self.decoder.decode(&frame) {
                Ok(d) => d,
                Err(e) => {
                    let damage = Damage {
                        offset: frame.offset,
                        kind: DamageKind::Unreadable(e.0),
                    };
                    return self.damaged(end, damage);
                }
            };
            let Some(decoded) = self.boundary(decoded, &frame, end) else {
                continue;
            };
            if self.event(decoded, &frame, end, each).is_break() {
                return ControlFlow::Break(());
            }
        }
        if let Some(o) = self.open.take() {
            end.torn = Some(o.tx.gtid);
        }
        ControlFlow::Continue(())
    }

    /// The scan stops at `damage`; a transaction it cut is torn.
    fn damaged(&mut self, end: &mut ScanEnd, damage: Damage) -> ControlFlow<()> {
        end.damage = Some(FileDamage {
            file: self.path.clone(),
            damage,
            in_last_file: self.in_last_file,
        });
        end.torn = self.open.take().map(|o| o.tx.gtid);
        ControlFlow::Break(())
    }

    /// The events that open and close transactions: a format description, a GTID, an
    /// anonymous GTID. Any other event is handed back.
    fn boundary(
        &mut self,
        decoded: Decoded,
        frame: &Frame<'_>,
        end: &mut ScanEnd,
    ) -> Option<Decoded> {
        match decoded {
            Decoded::FormatDescription { flavour, .. } => {
                end.flavour = Some(flavour);
                if self.options.keep_events {
                    self.format = Some(Arc::from(frame.bytes));
                }
            }
            Decoded::Gtid { gtid, standalone } => {
                // A GTID inside an open transaction means the last one never ended
                // (the server restarted mid-write): it is torn.
                if let Some(o) = self.open.take() {
                    end.torn = Some(o.tx.gtid);
                }
                let wanted = self.options.after.as_ref().is_none_or(|a| !gtid.is_in(a));
                self.open = Some(Open {
                    wanted,
                    ends: match (gtid.flavour(), standalone) {
                        (Flavour::Mysql, _) => Ends::Undecided,
                        (Flavour::Mariadb, true) => Ends::AtStatement,
                        (Flavour::Mariadb, false) => Ends::AtCommit,
                    },
                    tx: Transaction {
                        gtid,
                        timestamp: frame.timestamp(),
                        file: self.file.clone(),
                        offset: frame.offset,
                        size: frame.bytes.len() as u64,
                        tables: BTreeSet::new(),
                        events: Vec::new(),
                        standalone,
                        format: self.format.clone(),
                    },
                });
            }
            // A transaction without a GTID (gtid_mode off): it cannot be salvaged by
            // GTID; it ends whatever was open, and its own events are skipped.
            Decoded::AnonymousGtid => {
                if let Some(o) = self.open.take() {
                    end.torn = Some(o.tx.gtid);
                }
            }
            other => return Some(other),
        }
        None
    }

    /// An event of the open transaction (none open: skipped); a transaction it ends
    /// goes to `each` when wanted.
    fn event(
        &mut self,
        decoded: Decoded,
        frame: &Frame<'_>,
        end: &mut ScanEnd,
        each: &mut impl FnMut(Transaction) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let Some(o) = self.open.as_mut() else {
            return ControlFlow::Continue(());
        };
        let (offset, len) = (frame.offset, frame.bytes.len() as u64);
        o.tx.size = offset + len - o.tx.offset;
        let taken = match decoded {
            // A compressed transaction holds everything up to its commit: one not
            // wanted ends here unopened.
            Decoded::Payload if !o.wanted => Ok(true),
            Decoded::Payload => self
                .decoder
                .raw_event(frame)
                .map_err(|e| Stop::Damage(e.0))
                .and_then(|ev| {
                    expand(
                        &mut self.decoder,
                        &ev,
                        frame.has_checksum,
                        o,
                        &mut self.keep,
                    )
                }),
            decoded => take(o, decoded, frame.event_type(), frame.bytes, &mut self.keep),
        };
        match taken {
            Ok(false) => ControlFlow::Continue(()),
            Ok(true) => match self.open.take() {
                Some(o) if o.wanted => each(o.tx),
                _ => ControlFlow::Continue(()),
            },
            Err(Stop::LeftOut) => {
                end.left_out = Some(o.tx.gtid);
                ControlFlow::Break(())
            }
            Err(Stop::Damage(why)) => {
                let damage = Damage {
                    offset,
                    kind: DamageKind::Unreadable(why),
                };
                self.damaged(end, damage)
            }
        }
    }
}

/// Whether events are kept, and how many bytes of them so far against the bound.
struct Keep<'a> {
    events: bool,
    kept: &'a mut u64,
    max: u64,
}

/// Why a transaction's events stop being taken.
enum Stop {
    /// Keeping the next event would pass the memory bound.
    LeftOut,
    /// A compressed transaction that cannot be read.
    Damage(String),
}

/// Takes one event into the open transaction: the table it maps, the event itself when
/// events are kept. `Ok(true)`: it ends the transaction.
fn take(
    o: &mut Open,
    decoded: Decoded,
    event_type: u8,
    bytes: &[u8],
    keep: &mut Keep<'_>,
) -> Result<bool, Stop> {
    let done = match &decoded {
        Decoded::TableMap { schema, table } => {
            if o.wanted {
                o.tx.tables.insert(format!("{schema}.{table}"));
            }
            false
        }
        Decoded::Commit | Decoded::XaPrepare => true,
        Decoded::Query { sql, .. } => match (statement(sql), o.ends) {
            (Statement::Begin, Ends::Undecided) => {
                o.ends = Ends::AtCommit;
                false
            }
            (Statement::End, _) => true,
            (_, Ends::AtStatement | Ends::Undecided) => true,
            _ => false,
        },
        _ => false,
    };
    if keep.events && o.wanted {
        *keep.kept = keep.kept.saturating_add(2 * bytes.len() as u64);
        if *keep.kept > keep.max {
            return Err(Stop::LeftOut);
        }
        o.tx.events.push(TxEvent {
            event_type,
            decoded,
            bytes: bytes.to_vec(),
        });
    }
    Ok(done)
}

/// Takes the events inside a compressed transaction ([`payload`]) as if each had been
/// read from the file. Only a transaction's own events may be in there: a GTID, a
/// format description or an event after the one that ends it is damage.
fn expand(
    decoder: &mut Decoder,
    event: &Event,
    has_checksum: bool,
    o: &mut Open,
    keep: &mut Keep<'_>,
) -> Result<bool, Stop> {
    let payload = event
        .read_event::<TransactionPayloadEvent<'_>>()
        .map_err(|e| Stop::Damage(format!("compressed transaction: {e}")))?;
    let reader = payload
        .decompressed()
        .map_err(|e| Stop::Damage(payload::decompressing(&e)))?;
    let mut events = PayloadEvents::new(reader, has_checksum);
    let mut done = false;
    while let Some(bytes) = events.next_event().map_err(Stop::Damage)? {
        if done {
            return Err(Stop::Damage(
                "compressed transaction: events after its end".into(),
            ));
        }
        let frame = Frame {
            offset: 0,
            bytes: &bytes,
            has_checksum,
        };
        let decoded = decoder.decode(&frame).map_err(|e| Stop::Damage(e.0))?;
        if matches!(
            decoded,
            Decoded::Gtid { .. }
                | Decoded::AnonymousGtid
                | Decoded::FormatDescription { .. }
                | Decoded::Payload
                | Decoded::Before(_)
        ) {
            return Err(Stop::Damage(format!(
                "compressed transaction holds a {} event",
                frame.event_type()
            )));
        }
        done = take(o, decoded, frame.event_type(), &bytes, keep)?;
    }
    match done {
        true => Ok(true),
        false => Err(Stop::Damage(
            "compressed transaction ends before its commit".into(),
        )),
    }
}

/// The set of transactions written before `path` (its GTID_LIST / PREVIOUS_GTIDS),
/// `None` when the file does not say.
pub fn written_before(path: &Path) -> Option<GtidSet> {
    let input = BufReader::new(File::open(path).ok()?);
    let mut framer = Framer::new(input).ok()?;
    let mut decoder = Decoder::default();
    for _ in 0..8 {
        let frame = framer.next_frame().ok()??;
        match decoder.decode(&frame).ok()? {
            Decoded::Before(set) => return Some(set),
            Decoded::Gtid { .. } => return None,
            _ => {}
        }
    }
    None
}
