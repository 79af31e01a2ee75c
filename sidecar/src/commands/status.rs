//! `multiaz status`: the running sidecar's view, as a table or as its JSON.

use crate::admin::client as admin_client;
use crate::config::AdminAccess;
use anyhow::{anyhow, bail};
use axum::http::Method;
use serde_json::Value;

pub async fn show(config: &AdminAccess, json: bool) -> anyhow::Result<String> {
    let (code, body) = admin_client::call(&config.endpoint, Method::GET, "/status", None)
        .await
        .map_err(|e| anyhow!("{e} (is `multiaz run` running with this config?)"))?;
    if !code.is_success() {
        bail!("the admin API answered {code}: {}", body.trim());
    }
    if json {
        return Ok(format!("{}\n", body.trim_end()));
    }
    let v: Value = serde_json::from_str(&body)?;
    Ok(render(&v))
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A node's mysqld as one cell: down / up (read_only) / executed set.
fn mysqld(v: &Value) -> (String, String) {
    if v.is_null() {
        return ("-".into(), "-".into());
    }
    if v == "Down" {
        return ("down".into(), "-".into());
    }
    if v == "Unknown" {
        return ("unknown".into(), "-".into());
    }
    let up = &v["Up"];
    if up.is_null() {
        return ("up (no status)".into(), "-".into());
    }
    let ro = if up["read_only"] == Value::Bool(true) {
        "up, read_only"
    } else {
        "up, writable"
    };
    // A GTID set serializes as {flavour, set}.
    let executed = &up["executed"];
    let set = if executed["set"].is_string() {
        &executed["set"]
    } else {
        executed
    };
    (ro.into(), text(set))
}

pub fn render(v: &Value) -> String {
    let r = &v["record"];
    let mut out = String::new();
    out.push_str(&format!(
        "cluster {}  epoch {}  master {}  coordinator {}{}\n",
        text(&v["cluster"]),
        text(&r["epoch"]),
        text(&r["master"]),
        text(&v["leader"]),
        if r["paused"] == Value::Bool(true) {
            "  PAUSED"
        } else {
            ""
        }
    ));
    out.push_str(&format!(
        "this sidecar: node {}  lease {}\n",
        text(&v["me"]),
        if v["lease_valid"] == Value::Bool(true) {
            "valid"
        } else {
            "not held"
        }
    ));
    if let Some(until) = v["failover_blocked_until_wall_ms"].as_u64() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        out.push_str(&format!(
            "automatic failover BLOCKED for another {} s after the last one (timing.failover_block_ms); `multiaz ack` lifts it\n",
            until.saturating_sub(now) / 1000
        ));
    }
    if !r["failover"].is_null() {
        let what = if r["failover"]["planned"].is_null() {
            "FAILOVER"
        } else {
            "SWITCHOVER"
        };
        out.push_str(&format!(
            "{what} IN PROGRESS: epoch {} phase {} reason {}\n",
            text(&r["failover"]["epoch"]),
            text(&v["failover_phase"]),
            text(&r["failover"]["reason"])
        ));
    }
    out.push_str(&format!(
        "\n{:<4} {:<10} {:<12} {:<12} {:<8} {:<16} {:<6} {}\n",
        "id", "name", "az", "role", "sidecar", "mysqld", "lag", "executed"
    ));
    if let Some(nodes) = v["nodes"].as_object() {
        for (id, n) in nodes {
            let (state, executed) = mysqld(&n["mysqld"]);
            out.push_str(&format!(
                "{:<4} {:<10} {:<12} {:<12} {:<8} {:<16} {:<6} {}\n",
                id,
                text(&n["name"]),
                text(&n["az"]),
                text(&n["role"]),
                if n["sidecar_live"] == Value::Bool(true) {
                    "live"
                } else {
                    "silent"
                },
                state,
                text(&n["lag_transactions"]),
                executed
            ));
        }
    }
    if let Some(q) = r["quarantined"].as_object().filter(|q| !q.is_empty()) {
        out.push_str("\nquarantined (kept out of replication):\n");
        for (id, why) in q {
            out.push_str(&format!("  {id}: {}\n", text(why)));
        }
        if q.values().any(|w| text(w).contains("errant")) {
            out.push_str(
                "  errant transactions are never replicated into the cluster: rebuild that server from the master, or (MariaDB) undo them with `mariadb-binlog --flashback`; see the README\n",
            );
        }
    }
    match r["journal"].as_array().and_then(|j| j.last()) {
        Some(last) => out.push_str(&format!(
            "\nlast {}: epoch {} from {} to {} ({})\n  outcome: {}\n",
            if last["planned"] == Value::Bool(true) {
                "switchover"
            } else {
                "failover"
            },
            text(&last["epoch"]),
            text(&last["old_master"]),
            text(&last["new_master"]),
            text(&last["reason"]),
            last["outcome"]
        )),
        None => out.push_str("\nno failover yet\n"),
    }
    if let Some(last) = r["journal"].as_array().and_then(|j| j.last()) {
        out.push_str(&format!("  salvage: {}\n", salvage_line(&last["outcome"])));
    }
    out
}

/// The binlog salvage of a journal entry's outcome, in words.
fn salvage_line(outcome: &serde_json::Value) -> String {
    let salvage = &outcome["Completed"]["salvage"];
    if outcome["Completed"].is_null() {
        return "-".into();
    }
    if salvage.is_null() {
        return "none (the old master's host was not reachable)".into();
    }
    if let Some(err) = salvage.get("Err") {
        return format!("failed: {}", text(err));
    }
    let ok = &salvage["Ok"];
    let missed: Vec<String> = ok["not_recovered"]
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    let mut line = format!("{} transaction(s) recovered", text(&ok["recovered"]));
    if !missed.is_empty() {
        line += &format!(", not recovered: {}", missed.join(","));
    }
    if !ok["stopped"].is_null() {
        line += &format!(" (stopped: {})", text(&ok["stopped"]));
    }
    line
}
