//! `multiaz binlog tail` and `multiaz binlog salvage`: the binlog reader on its own,
//! for forensics after a crash and for salvaging by hand.

use crate::adapters::binlog_apply as apply;
use crate::cli::BinlogSource;
use anyhow::{anyhow, Context};
use multiaz_binlog::{self as binlog, ScanEnd, ScanOptions, Transaction};
use multiaz_engine::GtidSet;
use mysql_async::{Conn, Opts, OptsBuilder};
use serde_json::json;
use std::fmt::Write as _;
use std::io::Write as _;
use std::ops::ControlFlow;
use std::process::ExitCode;

/// Exit status when damage (not a crash's cut-off last event) stopped the read.
const DAMAGED: u8 = 2;

fn options(source: &BinlogSource, keep_events: bool) -> anyhow::Result<ScanOptions> {
    let after = if source.after.trim().is_empty() {
        None
    } else {
        Some(GtidSet::parse_any(&source.after).map_err(|e| anyhow!("--after: {e}"))?)
    };
    Ok(ScanOptions { after, keep_events })
}

fn read(source: &BinlogSource, keep_events: bool) -> anyhow::Result<(Vec<Transaction>, ScanEnd)> {
    let options = options(source, keep_events)?;
    binlog::read_tail(&source.dir, source.index.as_deref(), &options).map_err(|e| anyhow!(e))
}

/// The line for a transaction in `tail`'s JSON output.
pub fn json_line(tx: &Transaction) -> serde_json::Value {
    json!({
        "gtid": tx.gtid.to_string(),
        "timestamp": tx.timestamp,
        "file": tx.file.display().to_string(),
        "offset": tx.offset,
        "size": tx.size,
        "tables": tx.tables,
    })
}

/// What went wrong at the end of the read, for stderr, and the exit status it earns.
fn ending(end: &ScanEnd) -> (Option<String>, ExitCode) {
    let mut text = String::new();
    if let Some(d) = &end.damage {
        let _ = write!(text, "binlog read stopped: {d}");
        if let Some(t) = &end.torn {
            let _ = write!(text, " (transaction {t} is incomplete and was not listed)");
        }
    } else if let Some(t) = &end.torn {
        let _ = write!(
            text,
            "transaction {t} is incomplete at the end of the binlog"
        );
    }
    let code = match end.real_damage() {
        None => ExitCode::SUCCESS,
        Some(_) => ExitCode::from(DAMAGED),
    };
    ((!text.is_empty()).then_some(text), code)
}

/// Streams the listing: a 1 GiB binlog holds over a million transactions, and none of
/// them needs to stay in memory once printed.
pub fn tail(source: &BinlogSource, json: bool) -> anyhow::Result<ExitCode> {
    let options = options(source, false)?;
    let files =
        binlog::binlog_files(&source.dir, source.index.as_deref()).map_err(|e| anyhow!(e))?;
    let to_read = binlog::files_after(&files, options.after.as_ref());
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    if !json {
        writeln!(
            out,
            "{:<28} {:>10} {:>9}  {:<22} TABLES",
            "GTID", "TIMESTAMP", "BYTES", "FILE:OFFSET"
        )?;
    }
    let mut count = 0u64;
    let mut failed: Option<std::io::Error> = None;
    let end = binlog::scan(&to_read, &options, |tx| {
        count += 1;
        let written = if json {
            writeln!(out, "{}", json_line(&tx))
        } else {
            let name = tx.file.file_name().unwrap_or_default().to_string_lossy();
            let tables: Vec<&str> = tx.tables.iter().map(String::as_str).collect();
            writeln!(
                out,
                "{:<28} {:>10} {:>9}  {:<22} {}",
                tx.gtid.to_string(),
                tx.timestamp,
                tx.size,
                format!("{name}:{}", tx.offset),
                tables.join(",")
            )
        };
        match written {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        }
    });
    if let Some(e) = failed {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(ExitCode::SUCCESS);
        }
        return Err(e.into());
    }
    if !json {
        writeln!(
            out,
            "{count} transaction(s), {} file(s), {} bytes read",
            end.files, end.bytes
        )?;
    }
    out.flush()?;
    let (note, code) = ending(&end);
    if let Some(n) = note {
        eprintln!("multiaz: {n}");
    }
    Ok(code)
}

/// Connection options from `--apply`: a mysql:// URL, the password possibly from the
/// environment. Errors never repeat the URL (it may hold a password).
pub fn apply_target(url: &str) -> anyhow::Result<(Opts, String)> {
    let opts = Opts::from_url(url)
        .map_err(|_| anyhow!("--apply: not a mysql://USER[:PASSWORD]@HOST[:PORT] URL"))?;
    let mut b = OptsBuilder::from_opts(opts.clone()).prefer_socket(false);
    if opts.pass().is_some() {
        // It is in this process's argv already: visible in ps and shell history.
        eprintln!(
            "warning: --apply holds a password, which any user of this host can read in \
             the process list; give it in $MULTIAZ_APPLY_PASSWORD instead"
        );
    }
    if opts.pass().is_none() {
        if let Ok(p) = std::env::var("MULTIAZ_APPLY_PASSWORD") {
            b = b.pass(Some(p));
        }
    }
    let shown = format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port());
    Ok((b.into(), shown))
}

pub async fn salvage(source: &BinlogSource, url: &str, json: bool) -> anyhow::Result<ExitCode> {
    let (opts, shown) = apply_target(url)?;
    let (txs, end) = read(source, true)?;
    let mut conn = Conn::new(opts)
        .await
        .with_context(|| format!("cannot connect to {shown}"))?;
    let report = apply::apply(&mut conn, &txs, None, &|| Ok(()))
        .await
        .map_err(|e| anyhow!("{shown}: {e}"))?;
    let _ = conn.disconnect().await;
    let (note, code) = ending(&end);
    let mut not_recovered = report.not_recovered.clone();
    not_recovered.extend(end.torn.map(|g| g.to_string()));
    if json {
        println!(
            "{}",
            json!({
                "found": txs.len(),
                "recovered": report.recovered,
                "not_recovered": not_recovered,
                "stopped": report.stopped,
                "binlog": note,
            })
        );
    } else {
        println!(
            "{} complete transaction(s) found after the set, {} applied to {shown}",
            txs.len(),
            report.recovered
        );
        if let Some(why) = &report.stopped {
            println!("stopped: {why}");
        }
        if !not_recovered.is_empty() {
            println!("not recovered: {}", not_recovered.join(","));
        }
        if let Some(n) = &note {
            eprintln!("multiaz: {n}");
        }
    }
    Ok(if report.stopped.is_some() {
        ExitCode::FAILURE
    } else {
        code
    })
}
