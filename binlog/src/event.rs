//! What the reader needs to know of each event. mysql_common parses the format
//! description, query, table map, MySQL GTID and PREVIOUS_GTIDS events; it returns
//! MariaDB's GTID (162) and GTID_LIST (163) events raw, so those are decoded here.

use super::frame::Frame;
use super::kind::*;
use super::session::Session;
pub use multiaz_engine::gtid::Gtid;
use multiaz_engine::gtid::{MariadbGtidSet, MysqlGtidSet, Tag, Uuid};
use multiaz_engine::{Flavour, GtidSet};
use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::events::{
    Event, FormatDescriptionEvent, GtidEvent, PreviousGtidsEvent, QueryEvent, TableMapEvent,
};

/// MariaDB GTID flag: a statement outside any BEGIN … COMMIT (DDL and the like).
const FL_STANDALONE: u8 = 1;

/// The events that matter for finding whole transactions and what they touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    FormatDescription {
        flavour: Flavour,
    },
    /// Opens a transaction. `standalone`: it is a single statement with no COMMIT.
    Gtid {
        gtid: Gtid,
        standalone: bool,
    },
    /// A MySQL anonymous transaction (GTIDs off): not salvageable by GTID.
    AnonymousGtid,
    /// The set of transactions written before this file (GTID_LIST, PREVIOUS_GTIDS).
    Before(GtidSet),
    Query {
        schema: String,
        sql: String,
        /// The session it ran in, for replaying it as it ran; `None` for BEGIN,
        /// COMMIT and ROLLBACK, which no session setting alters.
        session: Option<Box<Session>>,
    },
    TableMap {
        schema: String,
        table: String,
    },
    /// Ends a transaction (XID).
    Commit,
    /// MySQL's compressed transaction: the events after its GTID, inside this one
    /// (the scanner opens it with [`super::payload::PayloadEvents`]).
    Payload,
    /// An XA PREPARE: ends the prepared part of an XA transaction.
    XaPrepare,
    /// Statement-based context (INTVAR, RAND, USER_VAR).
    StatementContext(u8),
    /// Rows events, MariaDB's annotations and everything else a transaction carries.
    Other,
}

/// Why an intact event could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

/// Keeps the format description event in force and decodes frames against it.
pub struct Decoder {
    fde: FormatDescriptionEvent<'static>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            fde: FormatDescriptionEvent::new(BinlogVersion::Version4),
        }
    }
}

impl Decoder {
    pub fn decode(&mut self, frame: &Frame<'_>) -> Result<Decoded, DecodeError> {
        let kind = frame.event_type();
        let body = frame.body();
        let err = |what: &str, e: std::io::Error| DecodeError(format!("{what} event: {e}"));
        Ok(match kind {
            FORMAT_DESCRIPTION => {
                let ev = self
                    .event(frame)
                    .map_err(|e| err("format description", e))?;
                let fde = ev
                    .read_event::<FormatDescriptionEvent<'_>>()
                    .map_err(|e| err("format description", e))?
                    .with_footer(ev.footer());
                let flavour = if fde.server_version().contains("MariaDB") {
                    Flavour::Mariadb
                } else {
                    Flavour::Mysql
                };
                self.fde = fde.into_owned();
                Decoded::FormatDescription { flavour }
            }
            MARIADB_GTID => {
                let seq = le_u64(body, 0).ok_or_else(|| short("MariaDB GTID"))?;
                let domain = le_u32(body, 8).ok_or_else(|| short("MariaDB GTID"))?;
                let flags = *body.get(12).ok_or_else(|| short("MariaDB GTID"))?;
                Decoded::Gtid {
                    gtid: Gtid::Mariadb {
                        domain,
                        server: frame.server_id(),
                        seq,
                    },
                    standalone: flags & FL_STANDALONE != 0,
                }
            }
            MARIADB_GTID_LIST => {
                let word = le_u32(body, 0).ok_or_else(|| short("MariaDB GTID list"))?;
                let count = (word & 0x0fff_ffff) as usize;
                let mut set = MariadbGtidSet::default();
                for i in 0..count {
                    let at = 4 + i * 16;
                    let (Some(domain), Some(server), Some(seq)) =
                        (le_u32(body, at), le_u32(body, at + 4), le_u64(body, at + 8))
                    else {
                        return Err(short("MariaDB GTID list"));
                    };
                    set.insert(domain, server, 1, seq);
                }
                Decoded::Before(GtidSet::Mariadb(set))
            }
            MYSQL_GTID | MYSQL_TAGGED_GTID => {
                let ev = self.event(frame).map_err(|e| err("GTID", e))?;
                let g = ev.read_event::<GtidEvent>().map_err(|e| err("GTID", e))?;
                // The tag is part of the transaction's identity: `uuid:tag:n` and
                // `uuid:n` are different transactions.
                let tag = match g.tag() {
                    Some(t) => Tag::parse(t.as_str())
                        .map_err(|e| DecodeError(format!("GTID event: {e}")))?,
                    None => Tag::UNTAGGED,
                };
                Decoded::Gtid {
                    gtid: Gtid::Mysql {
                        uuid: Uuid(g.sid()),
                        tag,
                        gno: g.gno(),
                    },
                    // MySQL marks nothing: a GTID followed by a query other than BEGIN
                    // is a single-statement transaction (see the scanner).
                    standalone: false,
                }
            }
            MYSQL_ANONYMOUS_GTID => Decoded::AnonymousGtid,
            MYSQL_PREVIOUS_GTIDS => {
                let ev = self.event(frame).map_err(|e| err("previous GTIDs", e))?;
                let p = ev
                    .read_event::<PreviousGtidsEvent<'_>>()
                    .map_err(|e| err("previous GTIDs", e))?;
                let mut set = MysqlGtidSet::default();
                for sid in p.sids() {
                    let tag = match sid.tag() {
                        Some(t) => Tag::parse(t.as_str())
                            .map_err(|e| DecodeError(format!("previous GTIDs event: {e}")))?,
                        None => Tag::UNTAGGED,
                    };
                    for i in sid.intervals() {
                        // mysql_common's interval end is exclusive.
                        set.insert_tagged(
                            Uuid(sid.uuid()),
                            tag,
                            i.start(),
                            i.end().saturating_sub(1),
                        );
                    }
                }
                Decoded::Before(GtidSet::Mysql(set))
            }
            QUERY => {
                let ev = self.event(frame).map_err(|e| err("query", e))?;
                let q = ev
                    .read_event::<QueryEvent<'_>>()
                    .map_err(|e| err("query", e))?;
                let sql = q.query().into_owned();
                let session = matches!(statement(&sql), Statement::Other)
                    .then(|| Box::new(Session::of(&q, frame.timestamp())));
                Decoded::Query {
                    schema: q.schema().into_owned(),
                    sql,
                    session,
                }
            }
            TABLE_MAP => {
                let ev = self.event(frame).map_err(|e| err("table map", e))?;
                let t = ev
                    .read_event::<TableMapEvent<'_>>()
                    .map_err(|e| err("table map", e))?;
                Decoded::TableMap {
                    schema: t.database_name().into_owned(),
                    table: t.table_name().into_owned(),
                }
            }
            XID => Decoded::Commit,
            MYSQL_TRANSACTION_PAYLOAD => Decoded::Payload,
            XA_PREPARE => Decoded::XaPrepare,
            INTVAR | RAND | USER_VAR => Decoded::StatementContext(kind),
            _ => Decoded::Other,
        })
    }

    /// The frame parsed as an event (a [`Decoded::Payload`], to open it).
    pub fn raw_event(&self, frame: &Frame<'_>) -> Result<Event, DecodeError> {
        self.event(frame)
            .map_err(|e| DecodeError(format!("compressed transaction: {e}")))
    }

    fn event(&self, frame: &Frame<'_>) -> std::io::Result<Event> {
        // The frame is whole and checked, so `Event::read` cannot run off its end.
        Event::read(&self.fde, frame.bytes)
    }
}

/// What a Query event's statement does to the transaction around it.
pub(crate) enum Statement {
    Begin,
    /// COMMIT or ROLLBACK: the transaction is over either way.
    End,
    Other,
}

pub(crate) fn statement(sql: &str) -> Statement {
    let s = sql.trim().trim_end_matches(';').trim();
    if s.eq_ignore_ascii_case("BEGIN") || s.eq_ignore_ascii_case("START TRANSACTION") {
        Statement::Begin
    } else if s.eq_ignore_ascii_case("COMMIT") || s.eq_ignore_ascii_case("ROLLBACK") {
        Statement::End
    } else {
        Statement::Other
    }
}

fn short(what: &str) -> DecodeError {
    DecodeError(format!("{what} event is too short"))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
