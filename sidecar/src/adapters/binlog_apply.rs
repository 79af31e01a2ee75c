//! Replaying salvaged transactions on another server, each whole or not at all, under
//! its original GTID (so no errant transaction appears, and the other replicas can
//! fetch them from the new master's binlog like any other).
//!
//! Row events go through `BINLOG '<base64>'`, as `mariadb-binlog | mariadb` would send
//! them; statements (DDL, and BEGIN / COMMIT) go as text. The server must accept
//! `BINLOG` (privilege BINLOG REPLAY or SUPER) and writes while read_only (READ_ONLY
//! ADMIN or SUPER): the new master is still read_only when salvage runs.

use crate::adapters::mysql::dialect::{quote, Dialect, NO_SUCH_THREAD};
use base64::Engine as _;
use multiaz_binlog::event::{Decoded, Gtid};
use multiaz_binlog::kind::{INTVAR, RAND, ROWS, TABLE_MAP};
use multiaz_binlog::scan::Transaction;
use multiaz_engine::{Flavour, GtidSet, SalvageReport};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use std::sync::Arc;
use tokio::time::Instant;

/// Rows event flag: the last event of its statement.
const STMT_END: u16 = 1;

/// The statements that replay `tx`. `format` is the format description the session
/// last received: it is sent again only when the transaction's file has another.
pub fn statements(tx: &Transaction, format: &mut Option<Arc<[u8]>>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let fde = tx
        .format
        .as_ref()
        .ok_or("no format description event kept with the transaction")?;
    if format.as_ref() != Some(fde) {
        out.push(binlog_statement(fde));
        *format = Some(fde.clone());
    }
    match tx.gtid {
        Gtid::Mariadb {
            domain,
            server,
            seq,
        } => {
            out.push(format!(
                "SET @@session.gtid_domain_id={domain}, @@session.server_id={server}, \
                 @@session.gtid_seq_no={seq}"
            ));
            if !tx.standalone {
                out.push("BEGIN".into());
            }
        }
        Gtid::Mysql { .. } => out.push(format!("SET @@session.gtid_next='{}'", tx.gtid)),
    }
    let mut rows: Vec<u8> = Vec::new();
    for ev in &tx.events {
        let t = ev.event_type;
        if t == TABLE_MAP || ROWS.contains(&t) {
            rows.extend_from_slice(&ev.bytes);
            let ends = ROWS.contains(&t)
                && ev
                    .bytes
                    .get(25..27)
                    .is_some_and(|f| u16::from_le_bytes([f[0], f[1]]) & STMT_END != 0);
            if ends {
                out.push(binlog_statement(&rows));
                rows.clear();
            }
            continue;
        }
        if !rows.is_empty() {
            out.push(binlog_statement(&rows));
            rows.clear();
        }
        match &ev.decoded {
            Decoded::Query {
                schema,
                sql,
                session,
            } => {
                if !schema.is_empty() {
                    out.push(format!("USE `{}`", schema.replace('`', "``")));
                }
                if let Some(session) = session {
                    out.extend(session.statements(quote));
                }
                out.push(sql.clone());
            }
            // The scanner opens compressed transactions into their events.
            Decoded::Payload => return Err("compressed transaction payload not opened".into()),
            Decoded::Commit => out.push("COMMIT".into()),
            Decoded::XaPrepare => return Err("XA transactions are not replayed".into()),
            Decoded::StatementContext(INTVAR) => out.push(intvar(&ev.bytes)?),
            Decoded::StatementContext(RAND) => out.push(rand_seed(&ev.bytes)?),
            Decoded::StatementContext(_) => {
                return Err(
                    "statement-based user variables are not replayed (use binlog_format=ROW)"
                        .into(),
                )
            }
            _ => {}
        }
    }
    if !rows.is_empty() {
        out.push(binlog_statement(&rows));
    }
    if matches!(tx.gtid, Gtid::Mysql { .. }) {
        out.push("SET @@session.gtid_next='AUTOMATIC'".into());
    }
    Ok(out)
}

fn binlog_statement(events: &[u8]) -> String {
    format!(
        "BINLOG '{}'",
        base64::engine::general_purpose::STANDARD.encode(events)
    )
}

const BODY: usize = 19;

fn intvar(bytes: &[u8]) -> Result<String, String> {
    let kind = *bytes.get(BODY).ok_or("INTVAR event too short")?;
    let value = bytes
        .get(BODY + 1..BODY + 9)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or("INTVAR event too short")?;
    Ok(match kind {
        1 => format!("SET LAST_INSERT_ID={value}"),
        _ => format!("SET INSERT_ID={value}"),
    })
}

fn rand_seed(bytes: &[u8]) -> Result<String, String> {
    let seed = |at: usize| {
        bytes
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or("RAND event too short")
    };
    Ok(format!(
        "SET @@RAND_SEED1={}, @@RAND_SEED2={}",
        seed(BODY)?,
        seed(BODY + 8)?
    ))
}

/// The transactions the server already has (what it executed, or was given before).
pub async fn executed(conn: &mut Conn, flavour: Flavour) -> Result<GtidSet, String> {
    let d = Dialect(flavour);
    let text: Option<String> = conn
        .query_first(d.has_transactions())
        .await
        .map_err(|e| e.to_string())?;
    d.gtids(&text.unwrap_or_default())
}

/// Applies `txs` in order, skipping those the server already has; stops at the first
/// that fails (order matters: a later one may depend on it), at `deadline`, or when
/// `still_wanted` (asked before each transaction) says why not. Every GTID not applied
/// is listed in the report.
pub async fn apply(
    conn: &mut Conn,
    txs: &[Transaction],
    deadline: Option<Instant>,
    still_wanted: &dyn Fn() -> Result<(), String>,
) -> Result<SalvageReport, String> {
    let mut report = SalvageReport::default();
    let Some(first) = txs.first() else {
        return Ok(report);
    };
    let flavour = first.gtid.flavour();
    let have = executed(conn, flavour).await?;
    if let Some(d) = deadline {
        // No single statement may outlive the budget either (a lock wait, a long DDL).
        let secs = d
            .saturating_duration_since(Instant::now())
            .as_secs_f64()
            .max(1.0);
        let whole = secs.ceil() as u64;
        let bound = match flavour {
            Flavour::Mariadb => format!(
                "SET SESSION innodb_lock_wait_timeout = {whole}, SESSION max_statement_time = {secs:.3}"
            ),
            Flavour::Mysql => format!("SET SESSION innodb_lock_wait_timeout = {whole}"),
        };
        conn.query_drop(bound).await.map_err(|e| e.to_string())?;
    }
    let lifted = match flavour {
        Flavour::Mysql => lift_super_read_only(conn).await?,
        Flavour::Mariadb => false,
    };
    let mut format = None;
    let mut session = Session::Own;
    for tx in txs.iter().filter(|tx| !tx.gtid.is_in(&have)) {
        if report.stopped.is_none() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                report.stopped = Some("salvage deadline passed".into());
            } else if let Err(why) = still_wanted() {
                report.stopped = Some(format!("no longer wanted: {why}"));
            } else {
                match within(deadline, apply_one(conn, tx, &mut format)).await {
                    Some(Ok(())) => {
                        report.recovered += 1;
                        continue;
                    }
                    Some(Err(e)) => report.stopped = Some(format!("{}: {e}", tx.gtid)),
                    None => {
                        let (landed, why, after) = overran(conn, tx, flavour).await;
                        session = after;
                        report.stopped = Some(why);
                        if landed {
                            report.recovered += 1;
                            continue;
                        }
                    }
                }
            }
        }
        report.not_recovered.push(tx.gtid.to_string());
    }
    let usable = match &mut session {
        Session::Own => Some(conn),
        Session::Second(other) => Some(other),
        Session::Gone => None,
    };
    if let Some(conn) = usable.filter(|_| lifted) {
        // Back on unless the server was made writable meanwhile (read_only OFF): a
        // salvage that outlived its budget must not fence the new master.
        let _ = conn
            .query_drop("SET GLOBAL super_read_only = @@global.read_only")
            .await;
    }
    if let Session::Second(other) = session {
        let _ = other.disconnect().await;
    }
    Ok(report)
}

/// The connection the salvage goes on with.
enum Session {
    Own,
    /// Its own was killed mid-statement: the connection that killed it.
    Second(Conn),
    /// Its own was killed, or could not be, and no other is open.
    Gone,
}

/// `tx`'s statement was still running at the deadline: its session is killed (see
/// [`kill_session`]). Whether `tx` landed all the same (a COMMIT already under way is
/// counted where it is), why the salvage stopped, and the connection left.
async fn overran(conn: &mut Conn, tx: &Transaction, flavour: Flavour) -> (bool, String, Session) {
    match kill_session(conn, flavour).await {
        Ok((other, have)) if tx.gtid.is_in(&have) => (
            true,
            format!(
                "the statement after {} was still running at the salvage deadline",
                tx.gtid
            ),
            Session::Second(other),
        ),
        Ok((other, _)) => (
            false,
            format!(
                "{}: still running at the salvage deadline (its session was killed)",
                tx.gtid
            ),
            Session::Second(other),
        ),
        Err(why) => (
            false,
            format!(
                "{}: still running at the salvage deadline, and {why}",
                tx.gtid
            ),
            Session::Gone,
        ),
    }
}

/// `work`'s output, or `None` when `deadline` came first (the future is dropped).
async fn within<T>(
    deadline: Option<Instant>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, work).await.ok(),
        None => Some(work.await),
    }
}

/// How long killing an overrunning session may take: the margin between the old
/// host's budget and the engine's timeout (a fifth of the salvage timeout) is more.
const KILL_GRACE: std::time::Duration = std::time::Duration::from_millis(800);

/// Kills `conn`'s server session from a second connection with the same options, so
/// that a statement left running at the deadline (a lock wait, a MySQL `SET gtid_next`
/// waiting for another session that owns the GTID, a commit waiting for semi-sync)
/// cannot land after the salvage has answered. `KILL` only marks the session: this
/// waits until it is gone, so that a COMMIT it was in has landed or never will, then
/// reads what the server has. The second connection and that set; all within
/// [`KILL_GRACE`].
async fn kill_session(conn: &mut Conn, flavour: Flavour) -> Result<(Conn, GtidSet), String> {
    let id = conn.id();
    let opts = conn.opts().clone();
    let work = async move {
        let mut other = Conn::new(opts)
            .await
            .map_err(|e| format!("connecting to kill the salvage's session {id}: {e}"))?;
        match other.query_drop(format!("KILL CONNECTION {id}")).await {
            Ok(()) => {}
            Err(mysql_async::Error::Server(e)) if e.code == NO_SUCH_THREAD => {}
            Err(e) => return Err(format!("killing the salvage's session {id}: {e}")),
        }
        loop {
            let alive: Option<u64> = other
                .query_first(format!(
                    "SELECT ID FROM information_schema.PROCESSLIST WHERE ID = {id}"
                ))
                .await
                .map_err(|e| format!("waiting for the salvage's session {id} to end: {e}"))?;
            if alive.is_none() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let have = executed(&mut other, flavour).await?;
        Ok((other, have))
    };
    tokio::time::timeout(KILL_GRACE, work)
        .await
        .map_err(|_| format!("its session {id} could not be killed within {KILL_GRACE:?}"))?
}

/// MySQL's super_read_only stops every writer, the salvage's too: it is lifted for
/// the salvage, read_only staying on, which is the fence MariaDB has — applications'
/// users (without CONNECTION_ADMIN or SUPER) still cannot write. `true` when it was on.
async fn lift_super_read_only(conn: &mut Conn) -> Result<bool, String> {
    let on: Option<u8> = conn
        .query_first("SELECT @@global.super_read_only")
        .await
        .map_err(|e| e.to_string())?;
    if on != Some(1) {
        return Ok(false);
    }
    // Setting super_read_only OFF leaves read_only as it is.
    conn.query_drop("SET GLOBAL super_read_only = OFF")
        .await
        .map_err(|e| e.to_string())?;
    Ok(true)
}

async fn apply_one(
    conn: &mut Conn,
    tx: &Transaction,
    format: &mut Option<Arc<[u8]>>,
) -> Result<(), String> {
    let statements = statements(tx, format)?;
    for s in &statements {
        if let Err(e) = conn.query_drop(s.as_str()).await {
            // Nothing of a failed transaction stays: roll back, and forget the
            // session's GTID so the next statement does not take it.
            let _ = conn.query_drop("ROLLBACK").await;
            let reset = match tx.gtid.flavour() {
                Flavour::Mariadb => "SET @@session.gtid_seq_no=0",
                Flavour::Mysql => "SET @@session.gtid_next='AUTOMATIC'",
            };
            let _ = conn.query_drop(reset).await;
            *format = None;
            return Err(e.to_string());
        }
    }
    Ok(())
}
