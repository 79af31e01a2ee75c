//! A chaos run: the world up, then for each cycle — the cluster healthy, the fault on
//! the master, the failover watched (sidecars' journal, router, clients), the fault
//! healed, the old master back in the topology (rebuilt first when it holds errant
//! transactions), the failover acknowledged — and at the end every acknowledged write
//! looked for on the final master and the servers' tables compared.

use crate::api_proxy::Mode;
use crate::cli::{Fault, RunArgs};
use crate::observe::{self, ClientPath, Routes, Status, Workload};
use crate::report::{CycleReport, Observed, Report};
use crate::setup::World;
use crate::{fault, progress, verify, wall_ms};
use anyhow::{bail, Context};
use multiaz_testcontainers::{db, BIN_DIR};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(100);

pub async fn run(args: &RunArgs, out: &Path, bin_dir: &Path) -> anyhow::Result<Report> {
    let started = wall_ms();
    let world = World::start(args, &out.join("hosts"), bin_dir).await?;
    let mut w = Watch {
        workload: Workload::new(world.client_logs()),
        routes: Routes::new(world.router_log()),
    };
    let mut cycles = Vec::new();
    let mut error = None;
    for cycle in 1..=args.cycles {
        match one_cycle(&world, &mut w, cycle, &mut cycles).await {
            Ok(()) => {}
            Err(e) => {
                progress(&format!("cycle {cycle} failed: {e:#}"));
                error = Some(format!("cycle {cycle}: {e:#}"));
                break;
            }
        }
    }
    world.proxy.set(Mode::Pass);
    if error.is_none() {
        if let Err(e) = check_passes(&world, &mut w).await {
            progress(&format!("after the last cycle: {e:#}"));
            error = Some(format!("after the last cycle: {e:#}"));
        }
    }
    progress("stopping the clients; checking every acknowledged write");
    world.stop_clients().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.workload.poll();
    w.routes.poll();
    let verdict = verify::check(&world, &w.workload).await;
    let (verdict, verify_error) = match verdict {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(format!("verification: {e:#}"))),
    };
    let seen = Observed {
        started_ms: started,
        ended_ms: wall_ms(),
        cycles,
        verdict,
        error: error.or(verify_error),
        ec2_api: world.proxy.counts(),
    };
    Ok(Report::new(args, out, &w.workload, seen))
}

struct Watch {
    workload: Workload,
    routes: Routes,
}

impl Watch {
    fn poll(&mut self) {
        self.workload.poll();
        self.routes.poll();
    }
}

/// The master of record, once the cluster is whole: every sidecar live, every mysqld
/// up, nothing quarantined, no failover running or blocked, every replica close behind,
/// every route table on the master, and every client's writes acknowledged just now.
async fn wait_healthy(world: &World, w: &mut Watch) -> anyhow::Result<(usize, u64)> {
    let deadline = wall_ms() + 120_000;
    let mut why = String::from("no status yet");
    let mut last = None;
    while wall_ms() < deadline {
        tokio::time::sleep(POLL).await;
        w.poll();
        let s = match any_status(world, None).await {
            Some(s) => s,
            None => continue,
        };
        last = Some(s.v.clone());
        let Some(master) = s.master() else {
            why = "no master of record".into();
            continue;
        };
        let m = master as usize - 1;
        let n = world.cluster.hosts.len();
        let others: Vec<u64> = (0..n)
            .map(World::node_id)
            .filter(|&id| id != master)
            .collect();
        why = if s.failover_in_progress() {
            "a failover is in progress".into()
        } else if s.blocked() {
            "failover blocked (not acknowledged)".into()
        } else if !s.all_live() {
            format!("sidecars live: {:?}", s.live_nodes())
        } else if !s.quarantined().is_empty() {
            format!("quarantined: {:?}", s.quarantined())
        } else if let Some(id) = (0..n).map(World::node_id).find(|&id| !s.mysqld_up(id)) {
            format!("db-{id}'s mysqld is not up")
        } else if let Some(id) = others
            .iter()
            .find(|&&id| s.role(id).as_deref() != Some("replica"))
        {
            format!("db-{id} is not a replica (role {:?})", s.role(*id))
        } else if let Some(e) = replicas_behind(world, m, &others).await {
            e
        } else if w.routes.all_as(&world.wanted_routes(m, None), 0).is_none() {
            format!(
                "the VIP routes are not where the {} mode wants them",
                world.args.vip_mode.name()
            )
        } else if !w.workload.all_acked_since(
            wall_ms().saturating_sub(1500),
            2 * world.cluster.clients.len() as u32,
        ) {
            "not every client is writing (through the VIP and through HAProxy)".into()
        } else {
            return Ok((m, s.epoch()));
        };
    }
    let dump = world.cluster.hosts[0]
        .work
        .join("../../status-at-failure.json");
    if let Some(v) = last {
        let _ = std::fs::write(&dump, serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    bail!("the cluster did not become healthy within 120 s: {why} (last status: status-at-failure.json)")
}

/// Once the cluster is whole again after the last cycle, `multiaz check` on the
/// master's host passes: what the failovers and rejoins left (replication, semi-sync
/// sides, read_only, GTID auto-positioning, routes, peers) is what an operator's
/// check expects. Its output is kept in the host's directory (`check.txt`).
async fn check_passes(world: &World, w: &mut Watch) -> anyhow::Result<()> {
    let (m, _) = wait_healthy(world, w).await?;
    let host = world.db(m);
    let out = host
        .sh(&format!(
            "env {} {BIN_DIR}/multiaz check --config /work/multiaz.toml > /work/check.txt 2>&1; \
             echo $?",
            crate::setup::AWS_ENV
        ))
        .await?;
    let said = std::fs::read_to_string(host.work.join("check.txt")).unwrap_or_default();
    match out.trim() {
        "0" => {
            progress(&format!(
                "  multiaz check on {}: {}",
                host.name,
                said.lines().last().unwrap_or("")
            ));
            Ok(())
        }
        code => bail!(
            "multiaz check on {} exited {code}:\n{}",
            host.name,
            said.lines()
                .filter(|l| l.starts_with("FAIL") || l.starts_with("  "))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// Why not every replica in `others` (node ids) follows the master `m` closely.
async fn replicas_behind(world: &World, m: usize, others: &[u64]) -> Option<String> {
    for id in others {
        if let Err(e) = replicating(world, *id as usize - 1, m).await {
            return Some(e);
        }
    }
    None
}

/// The first sidecar (other than `skip`) that answers.
async fn any_status(world: &World, skip: Option<usize>) -> Option<Status> {
    for i in 0..world.cluster.hosts.len() {
        if Some(i) == skip {
            continue;
        }
        if let Ok(s) = observe::status(world.admin(i)).await {
            return Some(s);
        }
    }
    None
}

/// One cycle; its failover goes into `cycles` as soon as it is measured, so that a
/// failure to heal afterwards still reports it.
async fn one_cycle(
    world: &World,
    w: &mut Watch,
    cycle: u32,
    cycles: &mut Vec<CycleReport>,
) -> anyhow::Result<()> {
    let args = &world.args;
    let fault = args.fault;
    let (m, epoch) = wait_healthy(world, w).await?;
    let old = world.db(m).name.clone();
    progress(&format!(
        "cycle {cycle}/{}: {} on {old} (the master, epoch {epoch})",
        args.cycles,
        fault.name()
    ));
    world.proxy.set(fault.api_mode(args.throttle_share));
    let before = wall_ms();
    let ahead = fault::inject(world, fault, m, cycle).await?;
    let after = wall_ms();
    // The fault struck somewhere while it was being injected (a `docker exec` or API
    // call): its instant is taken as the last write acknowledged before the injection
    // returned — within one write interval of the truth, with clients writing every
    // few milliseconds — and never before the injection began.
    w.poll();
    let t = w
        .workload
        .last_ack_before(after)
        .unwrap_or(before)
        .max(before);

    // --- the failover, as the survivors' journal, the router and the clients see it ---
    let deadline = t + 60_000 + args.outage_s * 1000;
    let mut done: Option<(usize, Value, Vec<Value>)> = None;
    let mut routes_at = None;
    let mut resumed = None;
    let mut proxy_resumed = None;
    while wall_ms() < deadline {
        tokio::time::sleep(POLL).await;
        w.poll();
        if fault.api_outage() && wall_ms() >= t + args.outage_s * 1000 {
            world.proxy.set(Mode::Pass);
        }
        if done.is_none() {
            if let Some(s) = any_status(world, Some(m)).await {
                done = completed(&s, epoch, m);
            }
        }
        if let Some((n, _, _)) = &done {
            let gone = fault.loses_host().then_some(m);
            routes_at = w.routes.all_as(&world.wanted_routes(*n, gone), t);
        }
        resumed = w.workload.first_ack_after_on(after, ClientPath::Vip);
        proxy_resumed = w.workload.first_ack_after_on(after, ClientPath::Haproxy);
        if done.is_some() && routes_at.is_some() && resumed.is_some() && proxy_resumed.is_some() {
            break;
        }
    }
    world.proxy.set(Mode::Pass);
    let Some((n, entry, attempts)) = done else {
        bail!(
            "no failover completed within {} s of the fault",
            (deadline - t) / 1000
        );
    };
    let new = world.db(n).name.clone();
    let (Some(routes_at), Some(resumed), Some(proxy_resumed)) = (routes_at, resumed, proxy_resumed)
    else {
        bail!("failover to {new} completed, but the VIP routes or the clients' writes (through the VIP and through HAProxy) did not follow within {} s", (deadline - t) / 1000);
    };
    let begun = attempts
        .iter()
        .filter_map(|e| e["begun_wall_ms"].as_u64())
        .min()
        .unwrap_or(t);
    let ended = entry["ended_wall_ms"].as_u64().unwrap_or(t);
    // A switchover blocks writes some time after it was asked for, not at once: its
    // unavailability is the longest stretch without an acknowledgement around it.
    let (resumed, proxy_resumed) = match fault {
        Fault::Switchover => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            w.poll();
            let gap = |path| match w.workload.longest_gap(t, ended, path) {
                Some(gap) => Ok(t + gap),
                None => Err(anyhow::anyhow!(
                    "no write acknowledged after the switchover ({path:?})"
                )),
            };
            (gap(ClientPath::Vip)?, gap(ClientPath::Haproxy)?)
        }
        _ => (resumed, proxy_resumed),
    };
    let report = CycleReport {
        cycle,
        old_master: old.clone(),
        new_master: new.clone(),
        fault_at_ms: t,
        detect_ms: begun.saturating_sub(t),
        failover_ms: ended.saturating_sub(t),
        routes_ms: routes_at.saturating_sub(t),
        unavailable_ms: resumed.saturating_sub(t),
        haproxy_unavailable_ms: proxy_resumed.saturating_sub(t),
        attempts: attempts.len(),
        salvage: salvage_text(&entry),
        errant: None,
    };
    progress(&format!(
        "  failover {old} → {new}: detected +{} ms, complete +{} ms, routes +{} ms, writes again +{} ms (through HAProxy +{} ms)",
        report.detect_ms, report.failover_ms, report.routes_ms, report.unavailable_ms, report.haproxy_unavailable_ms
    ));

    cycles.push(report);
    if let Some(ahead) = &ahead {
        fault::check_ahead(world, ahead, m, n, &entry["outcome"]).await?;
    }

    // Writes go on for a moment under the new master before the old one comes back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    progress(&format!("  healing: {} on {old}", heal_words(fault)));
    fault::heal(world, fault, m).await?;
    let errant = wait_rejoin(world, w, m, n).await;
    if let Some(c) = cycles.last_mut() {
        c.errant = errant.as_ref().ok().cloned().flatten();
    }
    errant?;
    let (code, body) = multiaz_sidecar::admin::client::call(
        &world.admin(n),
        axum::http::Method::POST,
        "/ack",
        Some(world.secrets.admin_token.as_bytes()),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    if !code.is_success() {
        bail!("multiaz ack on {new}: {code} {}", body.trim());
    }
    Ok(())
}

fn heal_words(fault: Fault) -> &'static str {
    match fault {
        Fault::HostKill => "host booted, mysqld and sidecar started",
        Fault::AzPartition | Fault::ApiOutagePartition => "partition removed",
        Fault::MasterAhead => {
            "mysqld restarted (its sidecar finds nothing errant: all was salvaged)"
        }
        Fault::Switchover => "nothing to heal (the old master follows the new one by itself)",
        _ => "mysqld restarted",
    }
}

/// The failover that ended the fault, when one completed: the new master's index, its
/// journal entry, and every journal entry after `epoch` (its attempts).
fn completed(s: &Status, epoch: u64, old: usize) -> Option<(usize, Value, Vec<Value>)> {
    let master = s.master()? as usize - 1;
    if s.epoch() <= epoch || master == old || s.failover_in_progress() {
        return None;
    }
    let after: Vec<Value> = s
        .journal()
        .into_iter()
        .filter(|e| e["epoch"].as_u64().is_some_and(|x| x > epoch))
        .collect();
    let entry = after
        .iter()
        .rev()
        .find(|e| !e["outcome"]["Completed"].is_null())?
        .clone();
    Some((master, entry, after))
}

fn salvage_text(entry: &Value) -> String {
    if entry["planned"] == true {
        return "planned (no salvage)".into();
    }
    let s = &entry["outcome"]["Completed"]["salvage"];
    if s.is_null() {
        return "none (old host unreachable)".into();
    }
    if let Some(e) = s.get("Err") {
        return format!("failed: {}", e.as_str().unwrap_or("?"));
    }
    let ok = &s["Ok"];
    let missed = ok["not_recovered"].as_array().map_or(0, Vec::len);
    match missed {
        0 => format!("{} recovered", ok["recovered"]),
        k => format!("{} recovered, {k} not", ok["recovered"]),
    }
}

/// Host `r` replicates from host `m` with both threads, at most a few seconds behind;
/// or why not, from its replica status.
async fn replicating(world: &World, r: usize, m: usize) -> Result<(), String> {
    let host = &world.db(r).name;
    let status = db::replica_status(world.db(r))
        .await
        .map_err(|e| format!("{e:#}"))?
        .ok_or_else(|| format!("{host} replicates from nothing"))?;
    if status.source_host != world.ip(m).to_string() {
        return Err(format!(
            "{host} does not replicate from {}",
            world.db(m).name
        ));
    }
    if status.io_running != "Yes" || status.sql_running != "Yes" {
        return Err(format!(
            "{host}: IO thread {}, SQL thread {} (last IO error: {:?}, last SQL error: {:?})",
            status.io_running, status.sql_running, status.last_io_error, status.last_sql_error
        ));
    }
    match status.seconds_behind {
        Some(s) if s <= 5 => Ok(()),
        behind => Err(format!(
            "{host} is {behind:?} s behind {}",
            world.db(m).name
        )),
    }
}

/// Until the old master `m` replicates from the new master `n` again. When its sidecar
/// finds errant transactions, it is rebuilt from the master (and the errant GTIDs are
/// returned for the report: they were never acknowledged to a client).
async fn wait_rejoin(
    world: &World,
    w: &mut Watch,
    m: usize,
    n: usize,
) -> anyhow::Result<Option<String>> {
    let id = World::node_id(m);
    let mut errant = None;
    let mut deadline = wall_ms() + 120_000;
    let mut why = String::new();
    while wall_ms() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        w.poll();
        let Ok(s) = observe::status(world.admin(n)).await else {
            why = "the new master's sidecar does not answer".into();
            continue;
        };
        if let Some(q) = s.quarantined().get(&id) {
            why = format!("quarantined: {q}");
            // The engine's words for a server found holding transactions the master
            // lacks (a server not yet checked is quarantined too, with other words).
            if q.starts_with("errant transactions") && errant.is_none() {
                progress(&format!(
                    "  {} holds errant transactions ({q}): rebuilding it from {}",
                    world.db(m).name,
                    world.db(n).name
                ));
                fault::rebuild(world, m, n)
                    .await
                    .with_context(|| format!("rebuilding {}", world.db(m).name))?;
                errant = Some(q.clone());
                deadline = wall_ms() + 120_000;
            }
            continue;
        }
        if s.role(id).as_deref() != Some("replica") || !s.mysqld_up(id) {
            why = format!("role {:?}", s.role(id));
            continue;
        }
        if let Err(e) = replicating(world, m, n).await {
            why = e;
        } else {
            progress(&format!(
                "  {} rejoined as a replica of {}",
                world.db(m).name,
                world.db(n).name
            ));
            return Ok(errant);
        }
    }
    bail!("{} did not rejoin within 120 s: {why}", world.db(m).name)
}
