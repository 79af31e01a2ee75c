//! The operator's commands that change the cluster: `multiaz switchover`, `ack`,
//! `pause`, `resume`. Each goes through the admin API of this host's sidecar, with the
//! admin token from the configuration (and nothing else of it: see [`AdminAccess`]).

use crate::admin::client as admin_client;
use crate::admin::SwitchoverAnswer;
use crate::config::AdminAccess;
use anyhow::{anyhow, bail, Context};
use axum::http::{Method, StatusCode};
use multiaz_engine::NodeId;
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

fn token(config: &AdminAccess) -> anyhow::Result<&[u8]> {
    config.token.as_ref().map(|t| t.expose()).ok_or_else(|| {
        anyhow!(
            "{}: no admin token configured ([admin] token_file or token_env): the sidecar refuses changes without one",
            config.file.display()
        )
    })
}

async fn post(
    config: &AdminAccess,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<(StatusCode, String)> {
    admin_client::call_with(
        &config.endpoint,
        Method::POST,
        path,
        Some(token(config)?),
        body,
    )
    .await
    .map_err(|e| anyhow!("{e} (is `multiaz run` running with this config?)"))
}

/// `multiaz pause`, `resume` and `ack`.
pub async fn simple(config: &AdminAccess, path: &str) -> anyhow::Result<String> {
    let (code, body) = post(config, path, Vec::new()).await?;
    if !code.is_success() {
        bail!("the admin API answered {code}: {}", body.trim());
    }
    Ok(body)
}

/// A node given by name or id.
pub fn resolve(config: &AdminAccess, node: &str) -> anyhow::Result<NodeId> {
    let nodes = &config.nodes;
    let by_name = nodes
        .iter()
        .find(|(_, name)| name == node)
        .map(|(id, _)| *id);
    let by_id = node
        .trim_start_matches('n')
        .parse::<u64>()
        .ok()
        .map(NodeId)
        .filter(|id| nodes.iter().any(|(n, _)| n == id));
    by_name.or(by_id).ok_or_else(|| {
        let known: Vec<String> = nodes
            .iter()
            .map(|(id, name)| format!("{name} ({})", id.0))
            .collect();
        anyhow!(
            "--to {node:?}: no such node in {}; the nodes are {}",
            config.file.display(),
            known.join(", ")
        )
    })
}

async fn status(config: &AdminAccess) -> anyhow::Result<Value> {
    let (code, body) = admin_client::call(&config.endpoint, Method::GET, "/status", None)
        .await
        .map_err(|e| anyhow!(e))?;
    if !code.is_success() {
        bail!("the admin API answered {code}: {}", body.trim());
    }
    serde_json::from_str(&body).context("the admin API's /status")
}

/// `multiaz switchover`: prints the plan, then (unless a dry run) progress and the
/// outcome. `Ok(false)`: refused or cancelled.
pub async fn switchover(config: &AdminAccess, to: &str, dry_run: bool) -> anyhow::Result<bool> {
    let to = resolve(config, to)?;
    let body = serde_json::json!({ "to": to, "dry_run": dry_run });
    let (code, text) = post(config, "/switchover", serde_json::to_vec(&body)?).await?;
    if code == StatusCode::CONFLICT {
        println!("switchover to {to} {}", text.trim());
        return Ok(false);
    }
    if !code.is_success() {
        bail!("the admin API answered {code}: {}", text.trim());
    }
    let answer: SwitchoverAnswer = serde_json::from_str(&text).context("the plan")?;
    println!("{}", answer.text);
    if dry_run {
        println!("dry run: nothing changed");
        return Ok(true);
    }
    let epoch = answer.plan["epoch"].as_u64().unwrap_or(0);
    // Hook, demotion, catch-up, promotion, repointing: each bounded by a step.
    let limit = config.step_timeout * 5 + Duration::from_secs(5);
    let started = Instant::now();
    let mut last_phase = String::new();
    loop {
        if started.elapsed() > limit {
            bail!("no outcome within {limit:?}: see `multiaz status` and the sidecars' logs");
        }
        let v = status(config).await?;
        let record = &v["record"];
        let ended = record["journal"]
            .as_array()
            .and_then(|j| j.iter().rev().find(|e| e["epoch"].as_u64() == Some(epoch)));
        if let Some(entry) = ended {
            let outcome = &entry["outcome"];
            if let Some(done) = outcome.get("Completed") {
                println!(
                    "switchover complete: master is now {} (epoch {epoch}, {} ms on the coordinator)",
                    to, done["duration_ms"]
                );
                return Ok(true);
            }
            let why = outcome
                .get("Cancelled")
                .map(|c| c["why"].as_str().unwrap_or("").to_string())
                .unwrap_or_else(|| outcome.to_string());
            println!(
                "switchover cancelled: {why}; the master is {}",
                record["master"]
            );
            return Ok(false);
        }
        let current = record["epoch"].as_u64().unwrap_or(0);
        if current < epoch && started.elapsed() > Duration::from_secs(3) {
            bail!(
                "the switchover was not committed (the cluster changed, or the sidecar's view differs): see its log for \"switchover refused\""
            );
        }
        if current > epoch {
            bail!(
                "epoch {current} superseded the switchover's epoch {epoch}: see `multiaz status`"
            );
        }
        if let Some(phase) = v["failover_phase"].as_str() {
            if phase != last_phase {
                println!("  ... {phase}");
                last_phase = phase.to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
