//! The workload client, run inside a client container: it writes one row at a time
//! through the VIP, as an application would (autocommit, a new connection after any
//! error), and appends to its log every acknowledgement — the row, when, and the
//! transaction's GTID — every error, and every second a read-back of the newest row
//! it owns. The run reads these logs; the log is flushed before the next write, so an
//! acknowledged write is always on record.
//!
//! Log lines (wall-clock milliseconds, the same clock as the run's, one kernel):
//!   `ack SEQ T_MS US GTID` the INSERT of row (client, SEQ) was acknowledged, US
//!                         microseconds after it was sent
//!   `err T_MS WHAT`       a connection or statement failed
//!   `read T_MS MAX_SEQ`   the newest row of this client that the server shows
//!   `missing T_MS SEQ`    a read-back saw less than the newest acknowledged row

use crate::agent_log::AgentLog;
use crate::cli::ClientArgs;
use crate::wall_ms;
use anyhow::Context;
use mysql_async::prelude::Queryable;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A write not acknowledged by then is abandoned with its connection (outcome unknown:
/// it is not counted as acknowledged).
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
const RETRY_PAUSE: Duration = Duration::from_millis(50);
const READ_BACK_EVERY_MS: u64 = 1000;

pub async fn run(args: ClientArgs) -> anyhow::Result<()> {
    let password = std::fs::read_to_string(&args.password_file)
        .with_context(|| format!("reading {}", args.password_file.display()))?;
    let (host, port) = args
        .server
        .rsplit_once(':')
        .context("--server is host:port")?;
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host.to_string())
        .tcp_port(port.parse().context("--server port")?)
        .user(Some(args.user.clone()))
        .pass(Some(password.trim().to_string()))
        .prefer_socket(false);
    let mut log = AgentLog::open(&args.log)?;
    let mut line = |text: String| log.line(text);
    let mut conn: Option<mysql_async::Conn> = None;
    let mut seq: u64 = 0;
    let mut last_acked: u64 = 0;
    let mut next_read = wall_ms() + READ_BACK_EVERY_MS;
    let mut tick = tokio::time::interval(Duration::from_millis(args.interval_ms.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let c = match conn.as_mut() {
            Some(c) => c,
            None => {
                let attempt =
                    tokio::time::timeout(CONNECT_TIMEOUT, mysql_async::Conn::new(opts.clone()))
                        .await;
                match attempt {
                    Ok(Ok(c)) => conn.insert(c),
                    Ok(Err(e)) => {
                        line(format!("err {} connect: {}", wall_ms(), one_line(&e)))?;
                        tokio::time::sleep(RETRY_PAUSE).await;
                        continue;
                    }
                    Err(_) => {
                        line(format!("err {} connect: timed out", wall_ms()))?;
                        continue;
                    }
                }
            }
        };
        // Read back first: the newest acknowledged row must be there, on whichever
        // server the VIP leads to now.
        if wall_ms() >= next_read {
            next_read = wall_ms() + READ_BACK_EVERY_MS;
            let read = tokio::time::timeout(
                WRITE_TIMEOUT,
                c.exec_first::<Option<u64>, _, _>(
                    "SELECT MAX(seq) FROM app.writes WHERE client = ?",
                    (args.id,),
                ),
            )
            .await;
            match read {
                Ok(Ok(Some(max))) => {
                    let max = max.unwrap_or(0);
                    line(format!("read {} {max}", wall_ms()))?;
                    if max < last_acked {
                        line(format!("missing {} {last_acked}", wall_ms()))?;
                    }
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    line(format!("err {} read: {}", wall_ms(), one_line(&e)))?;
                    conn = None;
                    continue;
                }
                Err(_) => {
                    line(format!("err {} read: no answer within 3 s", wall_ms()))?;
                    conn = None;
                    continue;
                }
            }
        }
        seq += 1;
        let sent = std::time::Instant::now();
        let insert = c.exec_drop(
            "INSERT INTO app.writes (client, seq, at_ms) VALUES (?, ?, ?)",
            (args.id, seq, wall_ms()),
        );
        match tokio::time::timeout(WRITE_TIMEOUT, insert).await {
            Ok(Ok(())) => {
                let us = sent.elapsed().as_micros();
                let at = wall_ms();
                last_acked = seq;
                // The GTID is for the report only: the write is acknowledged either way.
                let gtid = tokio::time::timeout(
                    WRITE_TIMEOUT,
                    c.query_first::<Option<String>, _>("SELECT @@last_gtid"),
                )
                .await;
                let gtid = match gtid {
                    Ok(Ok(Some(Some(g)))) if !g.is_empty() => g,
                    _ => "-".to_string(),
                };
                line(format!("ack {seq} {at} {us} {gtid}"))?;
            }
            Ok(Err(e)) => {
                line(format!("err {} write: {}", wall_ms(), one_line(&e)))?;
                conn = None;
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            Err(_) => {
                line(format!("err {} write: no answer within 3 s", wall_ms()))?;
                conn = None;
                continue;
            }
        }
    }
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().replace('\n', " ")
}
