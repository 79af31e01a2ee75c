//! One simulated run: build the cluster on turmoil, apply the seed's faults, heal,
//! and check the invariants.

use crate::hosts::{client_host, db_host, ec2_host};
use crate::inject::Injector;
use crate::scenario::{Fault, Plan, Scenario, CLIENTS, DB_HOSTS};
use crate::world::{host_name, Acked, Gtid, HostileEvents, View, World, EC2_HOST};
use multiaz_engine::{ClusterSpec, Event, Flavour, NodeId, PromotionRule, Sabotage, VipMode};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

pub const ROUTE_TABLES: [&str; 3] = ["rtb-az-a", "rtb-az-b", "rtb-az-c"];

pub fn cluster_spec(flavour: Flavour) -> ClusterSpec {
    multiaz_testkit::spec::ThreeAzs {
        name: "sim".into(),
        flavour,
        route_tables: ROUTE_TABLES.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
    .build()
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub scenario: Scenario,
    pub seed: u64,
    pub flavour: Flavour,
    pub duration: Duration,
    /// A safety mechanism switched off (negative control; needs the `sabotage`
    /// feature, [`run`] refuses it otherwise).
    pub sabotage: Option<Sabotage>,
    /// Applied raft entries each sidecar keeps before folding them into a snapshot of
    /// the record (`None`: the engine's own limit, which no run of two minutes
    /// reaches). A small number puts compaction and snapshot transfer under every
    /// fault.
    pub log_limit: Option<u64>,
    pub vip_mode: VipMode,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdicts {
    pub lost_acked_writes: Vec<String>,
    pub lost_binlog_events: Vec<String>,
    /// Instants (ms) at which two servers were writable, or at which a server
    /// acknowledged a write between two writes another one acknowledged within a lease.
    pub split_brain_ms: Vec<u64>,
    /// Writes acknowledged to a client while no other server had received them (the
    /// semi-sync promise broken: the next failover loses them).
    pub unreplicated_acks: Vec<String>,
    /// Read-backs through the VIP that missed the client's newest acknowledged write.
    pub stale_reads: Vec<String>,
    pub errant_on_survivors: Vec<String>,
    /// Promotions carried out before a majority of sidecars held the decision on disk.
    pub uncommitted_promotions: Vec<String>,
    /// Scenarios `switchover` and `rejoin`: live servers without errant transactions
    /// that ended detached from the final master (each must rejoin by itself), and a
    /// switchover that did not end on its target.
    pub not_rejoined: Vec<String>,
    /// Writes succeeded within 30 s after everything healed.
    pub live_after_heal: bool,
    pub software_error: Option<String>,
}

impl Verdicts {
    /// The invariants this run broke, by name.
    pub fn broken(&self) -> Vec<&'static str> {
        [
            ("lost-acked-writes", !self.lost_acked_writes.is_empty()),
            ("lost-binlog-events", !self.lost_binlog_events.is_empty()),
            ("split-brain", !self.split_brain_ms.is_empty()),
            ("unreplicated-acks", !self.unreplicated_acks.is_empty()),
            ("stale-reads", !self.stale_reads.is_empty()),
            ("errant-on-replicas", !self.errant_on_survivors.is_empty()),
            (
                "uncommitted-promotion",
                !self.uncommitted_promotions.is_empty(),
            ),
            ("not-rejoined", !self.not_rejoined.is_empty()),
            ("no-writes-after-heal", !self.live_after_heal),
            ("software-error", self.software_error.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, broken)| broken.then_some(name))
        .collect()
    }

    /// This run passes, given whether its settings pass `multiaz check`. On settings
    /// the check fails, what those settings can explain (lost, unreplicated or stale
    /// writes, lost binlog events, errant transactions) is reported, not failed; the
    /// rest must hold whatever the settings: one writer at a time, writes after the
    /// heal, servers rejoining, no software error.
    pub fn passes(&self, settings_pass_check: bool) -> bool {
        const EXPLAINED_BY_UNSAFE_SETTINGS: [&str; 5] = [
            "lost-acked-writes",
            "lost-binlog-events",
            "unreplicated-acks",
            "stale-reads",
            "errant-on-replicas",
        ];
        self.broken()
            .iter()
            .all(|b| !settings_pass_check && EXPLAINED_BY_UNSAFE_SETTINGS.contains(b))
    }

    pub fn ok(&self) -> bool {
        self.broken().is_empty()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub scenario: Scenario,
    pub seed: u64,
    pub profile: String,
    pub acked_writes: usize,
    /// From the first fault to the first write acknowledged after it (if the master
    /// changed).
    pub failover_ms: Option<u64>,
    pub final_epoch: u64,
    pub final_master: Option<NodeId>,
    /// Settings `multiaz check` would fail (by server): the product's promises are
    /// for configurations that pass, so such a run's losses are reported apart.
    pub unsafe_config: Vec<String>,
    /// Every replica ended with errant transactions: writes wait for an operator.
    pub diverged: bool,
    /// Servers kept out (quarantined) for errant transactions at the end, with them:
    /// the reason a run is diverged.
    pub errant_kept_out: Vec<String>,
    /// Per client not cut off by the faults themselves, the longest stretch without an
    /// acknowledged write that ended after the first fault (ms): what clients saw.
    pub unavailable_ms: Option<u64>,
    /// Scenario `switchover`: from the last write the old master acknowledged to the
    /// first the new master did (no write could be acknowledged in between).
    pub write_block_ms: Option<u64>,
    /// Scenario `rejoin`: whether the old master came back clean (and so had to
    /// rejoin) or with errant transactions (and so had to stay out).
    pub returned_clean: Option<bool>,
    pub verdicts: Verdicts,
    /// How often the world's hostile parts struck in this run.
    pub hostile_events: HostileEvents,
    /// read_only changes that failed (the warnings a sidecar counts in
    /// `multiaz_fence_failures`).
    pub fence_failures: FenceFailures,
    pub sim_seconds: f64,
    pub wall_seconds: f64,
    /// Hash of the whole timeline: same seed, same hash.
    pub trace_hash: u64,
    #[serde(skip)]
    pub timeline: Vec<(Duration, String)>,
}

fn fnv(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= *b as u64;
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
}

/// read_only changes that failed in a run, by kind (as `multiaz_fence_failures`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FenceFailures {
    /// A sidecar could not make its own writable mysqld read_only.
    pub self_fence: u64,
    /// A sidecar could not make its mysqld writable again as the master of record.
    pub unfence: u64,
    /// The coordinator could not make a failed master read_only.
    pub suspect: u64,
}

impl FenceFailures {
    fn count(events: &[(Duration, NodeId, Event)]) -> Self {
        let mut f = FenceFailures::default();
        for (_, _, e) in events {
            match e {
                Event::LocalReadOnlyFailed { writable: true, .. } => f.unfence += 1,
                Event::LocalReadOnlyFailed {
                    writable: false, ..
                } => f.self_fence += 1,
                Event::FenceFailed { .. } => f.suspect += 1,
                _ => {}
            }
        }
        f
    }

    pub fn add(&mut self, o: &FenceFailures) {
        self.self_fence += o.self_fence;
        self.unfence += o.unfence;
        self.suspect += o.suspect;
    }
}

fn describe(e: &Event) -> Option<String> {
    Some(match e {
        Event::MasterDead { master, reason } => format!("detected: {master} dead ({reason})"),
        Event::FailoverBegun {
            epoch, suspects, ..
        } => format!("failover to epoch {epoch} begins (fencing {suspects:?})"),
        Event::FailoverResumed { epoch } => {
            format!("new coordinator resumes the failover of epoch {epoch}")
        }
        Event::Fenced { node, .. } => format!("{node} fenced"),
        Event::Skipped { node, why, .. } => format!("{node} skipped: {why}"),
        Event::CandidateChosen {
            candidate,
            catch_up_from,
            ..
        } => match catch_up_from {
            Some(f) => format!("candidate {candidate}, catching up from {f}"),
            None => format!("candidate {candidate}"),
        },
        Event::CaughtUp { candidate, .. } => format!("{candidate} caught up"),
        Event::RelayApplied { candidate, .. } => format!("{candidate} applied its relay log"),
        Event::Salvaged { from, outcome, .. } => match outcome {
            Ok(r) => format!(
                "salvaged {} transaction(s) from {from}'s binlog",
                r.recovered
            ),
            Err(e) => format!("salvage from {from} failed: {e}"),
        },
        Event::WaitingForLease { until_ms, .. } => format!(
            "waiting for the old master's lease (until {until_ms} ms on the coordinator's clock)"
        ),
        Event::Promoted { node, .. } => format!("{node} promoted"),
        Event::Repointed { node, source, .. } => format!("{node} replicates from {source}"),
        Event::RouteReplaced {
            route_table,
            target,
        } => format!("route {route_table} -> {target}"),
        Event::RouteFailed {
            route_table, error, ..
        } => format!("route {route_table} failed: {error}"),
        Event::FailoverCompleted {
            epoch,
            new_master,
            report,
        } => {
            format!("failover to epoch {epoch} complete: master {new_master} ({} ms on the coordinator)", report.duration_ms)
        }
        Event::SelfFenced { why } => format!("self-fenced: {why}"),
        Event::Unfenced => "writable again (lease regained)".into(),
        Event::LocalReadOnlyFailed { writable, why } => {
            let what = if *writable { "writable" } else { "read_only" };
            format!("could not make its mysqld {what}: {why}")
        }
        Event::ErrantTransactions { node, gtids, .. } => {
            format!("{node} has errant transactions {gtids}; kept out")
        }
        Event::BecameCoordinator { term } => format!("coordinator (term {term})"),
        Event::SwitchoverBegun { epoch, from, to } => {
            format!("switchover {from} -> {to} begins (epoch {epoch})")
        }
        Event::SwitchoverRefused { to, why } => format!("switchover to {to} refused: {why}"),
        Event::Demoted { node, executed, .. } => {
            format!("{node} demoted: read_only at {executed}")
        }
        Event::SwitchoverCancelled { why, .. } => format!("switchover cancelled: {why}"),
        Event::FailoverBlocked { master, .. } => {
            format!("{master} dead, but automatic failover is blocked (anti-flapping)")
        }
        Event::Vetoed { what, why } => format!("{what} vetoed by its hook: {why}"),
        _ => return None,
    })
}

pub fn run(cfg: &RunConfig) -> RunReport {
    let wall = Instant::now();
    let plan = Plan::draw(cfg.scenario, cfg.seed);
    let spec = run_spec(cfg);
    let world = World::new(spec.clone(), cfg.seed, plan.hostility.clone());
    world.with(|w| {
        w.sabotage = cfg.sabotage;
        w.log_limit = cfg.log_limit;
    });
    let mut sim = build(cfg, &spec, &world);
    let mut faults = Injector::new(world.clone(), &plan);
    let mut split_brain = Vec::new();
    let mut software_error = None;
    while sim.elapsed() < cfg.duration {
        let now = sim.elapsed();
        faults.before_step(&mut sim, now);
        // The OS writes out what each server wrote, about once a second.
        if sim.elapsed().as_millis() % 1000 < 5 {
            world.with(|w| w.mysqld.values_mut().for_each(|m| m.os_flush()));
        }
        if let Err(e) = sim.step() {
            software_error = Some(e.to_string());
            break;
        }
        // Two servers accepting writes at one instant, whether or not a replica would
        // acknowledge them (a writable server with semi-sync off counts too).
        let writable = world.with(|w| {
            w.mysqld
                .values()
                .filter(|m| m.alive && !m.read_only)
                .count()
        });
        if writable > 1 {
            split_brain.push(sim.elapsed().as_millis() as u64);
        }
    }
    let end = sim.elapsed();
    let ended = Ended {
        faults,
        split_brain,
        software_error,
        end,
        wall,
    };
    judge(cfg, &plan, &spec, &world, ended)
}

/// The cluster description of a run: the scenario's changes to the simulation's own.
fn run_spec(cfg: &RunConfig) -> ClusterSpec {
    let mut spec = cluster_spec(cfg.flavour);
    spec.vip.mode = cfg.vip_mode;
    if cfg.scenario == Scenario::Mixed {
        // Mixed runs fail over again and again by design: the anti-flapping block
        // (which would wait for an operator) is off there.
        spec.timing.failover_block_ms = 0;
    }
    if cfg.scenario == Scenario::CatchUp {
        // The clients' AZ prefers db3, which the fault leaves behind: it must catch up
        // from the most advanced replica before it is promoted.
        spec.nodes[2].promotion = PromotionRule::Prefer;
    }
    spec
}

/// The turmoil world: a host per database server, the EC2 API, a client per AZ.
fn build<'a>(cfg: &RunConfig, spec: &ClusterSpec, world: &World) -> turmoil::Sim<'a> {
    let mut sim = turmoil::Builder::new()
        .simulation_duration(cfg.duration + Duration::from_secs(5))
        .tick_duration(Duration::from_millis(5))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(3))
        .rng_seed(cfg.seed)
        .build();
    for n in spec.database_ids() {
        let w = world.clone();
        let seed = cfg.seed ^ (n.0 << 32);
        sim.host(host_name(n), move || db_host(w.clone(), n, seed));
    }
    {
        let w = world.clone();
        sim.host(EC2_HOST, move || ec2_host(w.clone()));
    }
    for (i, c) in CLIENTS.iter().enumerate() {
        let w = world.clone();
        let table = ROUTE_TABLES[i].to_string();
        sim.host(*c, move || {
            client_host(
                w.clone(),
                i as u32 + 1,
                table.clone(),
                Duration::from_millis(50),
            )
        });
    }
    sim
}

/// Every transaction on `m`'s binlog (by GTID, and by the client write it carries).
struct MasterBinlog {
    gtids: BTreeSet<Gtid>,
    writes: BTreeSet<(u32, u64)>,
}

impl MasterBinlog {
    fn of(world: &World, master: Option<NodeId>) -> MasterBinlog {
        MasterBinlog {
            gtids: master
                .map(|m| world.mysqld(m, |x| x.binlog.iter().map(|t| t.gtid).collect()))
                .unwrap_or_default(),
            writes: master
                .map(|m| world.mysqld(m, |x| x.binlog.iter().map(|t| (t.client, t.n)).collect()))
                .unwrap_or_default(),
        }
    }

    /// Lost both ways: by exact GTID (server id included: the same sequence number
    /// written by another server is another transaction), and by what the client wrote
    /// (its id and sequence number), whatever GTID it ended under.
    fn lost(&self, acked: &[Acked]) -> Vec<String> {
        acked
            .iter()
            .filter(|a| !self.gtids.contains(&a.gtid) || !self.writes.contains(&(a.client, a.n)))
            .map(Acked::to_string)
            .collect()
    }
}

/// How the run loop ended.
struct Ended {
    faults: Injector,
    split_brain: Vec<u64>,
    software_error: Option<String>,
    end: Duration,
    wall: Instant,
}

/// The verdicts and figures of a run that has ended.
fn judge(
    cfg: &RunConfig,
    plan: &Plan,
    spec: &ClusterSpec,
    world: &World,
    ended: Ended,
) -> RunReport {
    let Ended {
        faults,
        mut split_brain,
        software_error,
        end,
        wall,
    } = ended;
    let Injector {
        crashed,
        binlog_at_kill,
        mut timeline,
        ..
    } = faults;
    let (views, acked, events, mut world_timeline, stale, unreplicated) = world.with(|w| {
        (
            w.views.clone(),
            w.acked.clone(),
            w.events.clone(),
            w.timeline.clone(),
            w.stale_reads.clone(),
            w.unreplicated.clone(),
        )
    });
    let stale_reads: Vec<String> = stale
        .iter()
        .map(|(at, client, server, seen, acked)| {
            format!("client {client} read {server} at {at:?}: newest write {seen}, acknowledged {acked}")
        })
        .collect();
    let final_view = views
        .iter()
        .filter(|(n, _)| !crashed.contains(n))
        .max_by_key(|(_, v)| v.epoch)
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let final_master = final_view.master;
    let master = MasterBinlog::of(world, final_master);
    let master_binlog = &master.gtids;
    let lost_acked_writes = master.lost(&acked);
    let two_writers_acked = interleaved_acks(&acked, spec.timing.lease());
    split_brain.extend(two_writers_acked);
    let unreplicated_acks: Vec<String> = acked
        .iter()
        .filter(|a| unreplicated.contains(&a.gtid))
        .map(Acked::to_string)
        .collect();
    let lost_binlog_events: Vec<String> = binlog_at_kill
        .iter()
        .filter(|g| !master_binlog.contains(g))
        .map(|g| g.to_string())
        .collect();
    let Errant {
        on_survivors: errant_on_survivors,
        kept_out: errant_kept_out,
        diverged,
    } = Errant::judge(spec, world, &views, &crashed, &final_view, master_binlog);
    let (not_rejoined, returned_clean) =
        rejoined(cfg.scenario, plan, spec, world, final_master, master_binlog);
    let write_block_ms = write_block_ms(plan, &acked);
    let live_after_heal = diverged
        || acked
            .iter()
            .any(|a| a.at >= plan.heal_at && a.at <= plan.heal_at + Duration::from_secs(30));
    let master_changed = final_view.epoch > 1;
    let unavailable_ms = client_visible_unavailability(plan, &acked, end);
    let failover_ms = unavailable_ms.filter(|_| master_changed);
    for (t, n, e) in &events {
        if let Some(text) = describe(e) {
            timeline.push((*t, format!("{n} {text}")));
        }
    }
    if let Some(a) = acked.iter().find(|a| a.at > plan.fault_at) {
        timeline.push((
            a.at,
            format!("first write acknowledged after the fault, by {}", a.server),
        ));
    }
    timeline.append(&mut world_timeline);
    timeline.sort_by_key(|a| a.0);

    let h = trace_hash(&timeline, &acked);

    RunReport {
        scenario: cfg.scenario,
        seed: cfg.seed,
        profile: plan.profile.clone(),
        acked_writes: acked.len(),
        failover_ms,
        final_epoch: final_view.epoch,
        final_master,
        unsafe_config: plan.hostility.check_failures(),
        diverged,
        errant_kept_out,
        unavailable_ms,
        write_block_ms,
        returned_clean,
        verdicts: Verdicts {
            lost_acked_writes,
            lost_binlog_events,
            split_brain_ms: split_brain,
            unreplicated_acks,
            stale_reads,
            errant_on_survivors,
            uncommitted_promotions: world.with(|w| w.uncommitted_promotions.clone()),
            not_rejoined,
            live_after_heal,
            software_error,
        },
        hostile_events: world.with(|w| w.hostile.clone()),
        fence_failures: FenceFailures::count(&events),
        sim_seconds: end.as_secs_f64(),
        wall_seconds: wall.elapsed().as_secs_f64(),
        trace_hash: h,
        timeline,
    }
}

/// Transactions the final master lacks, on the other servers.
struct Errant {
    /// On a server that replicates from the master, or that the record does not
    /// quarantine: a divergence nothing keeps out.
    on_survivors: Vec<String>,
    /// On quarantined servers, with what they hold.
    kept_out: Vec<String>,
    /// Every other server is kept out for them: writes wait for an operator.
    diverged: bool,
}

impl Errant {
    fn judge(
        spec: &ClusterSpec,
        world: &World,
        views: &BTreeMap<NodeId, View>,
        crashed: &BTreeSet<NodeId>,
        final_view: &View,
        master_binlog: &BTreeSet<Gtid>,
    ) -> Errant {
        // Errant transactions on every server but the master, attached or not: an
        // attached one spreads a divergence; a detached one must be known to the engine
        // (quarantined in the record), or nothing keeps it out. Those kept out are counted,
        // with what they hold.
        let quarantined: BTreeSet<NodeId> = views
            .iter()
            .filter(|(n, v)| !crashed.contains(n) && v.epoch == final_view.epoch)
            .flat_map(|(_, v)| v.quarantined.iter().copied())
            .collect();
        let mut errant_on_survivors = Vec::new();
        let mut errant_kept_out = Vec::new();
        if let Some(m) = final_view.master {
            for n in spec.database_ids().filter(|n| *n != m) {
                let (attached, extra) = world.mysqld(n, |x| {
                    (
                        x.alive && x.source == Some(m) && x.io_running,
                        x.binlog
                            .iter()
                            .filter(|t| !master_binlog.contains(&t.gtid))
                            .map(|t| t.gtid.to_string())
                            .collect::<Vec<_>>(),
                    )
                });
                if extra.is_empty() {
                    continue;
                }
                let line = format!("{n}: {}", extra.join(","));
                if attached {
                    errant_on_survivors.push(format!("{line} (replicating from {m})"));
                } else if !quarantined.contains(&n) {
                    errant_on_survivors.push(format!("{line} (not quarantined)"));
                } else {
                    errant_kept_out.push(line);
                }
            }
        }
        // Semi-sync needs a replica. When every other server holds transactions the
        // master lacks (each was a master that wrote unacknowledged transactions before it
        // was cut off), they are rightly kept out and writes wait for an operator: counted
        // as diverged, not as a liveness failure.
        let clean_replicas = final_view.master.map_or(0, |m| {
            spec.database_ids()
                .filter(|n| *n != m)
                .filter(|n| {
                    world.mysqld(*n, |x| {
                        x.alive && x.binlog.iter().all(|t| master_binlog.contains(&t.gtid))
                    })
                })
                .count()
        });
        // Diverged only when servers kept out for errant transactions explain it: replicas
        // that are merely down do not excuse writes that never resumed.
        let diverged =
            final_view.master.is_some() && clean_replicas == 0 && !errant_kept_out.is_empty();
        Errant {
            on_survivors: errant_on_survivors,
            kept_out: errant_kept_out,
            diverged,
        }
    }
}

/// Switchover and rejoin: every live server without errant transactions replicates
/// from the final master by the end, the old master included (the failures, and for
/// `rejoin` whether the returning old master came back clean).
fn rejoined(
    scenario: Scenario,
    plan: &Plan,
    spec: &ClusterSpec,
    world: &World,
    final_master: Option<NodeId>,
    master_binlog: &BTreeSet<Gtid>,
) -> (Vec<String>, Option<bool>) {
    let mut not_rejoined = Vec::new();
    let mut returned_clean = None;
    if !matches!(scenario, Scenario::Switchover | Scenario::Rejoin) {
        return (not_rejoined, returned_clean);
    }
    if let Some(m) = final_master {
        for n in spec.database_ids().filter(|n| *n != m) {
            let (clean, attached, alive) = world.mysqld(n, |x| {
                (
                    x.binlog.iter().all(|t| master_binlog.contains(&t.gtid)),
                    x.source == Some(m) && x.io_running && x.read_only,
                    x.alive,
                )
            });
            if n == NodeId(1) && scenario == Scenario::Rejoin {
                returned_clean = Some(clean);
            }
            if alive && clean && !attached {
                not_rejoined.push(format!("{n} is clean but does not replicate from {m}"));
            }
        }
    }
    if let Some(to) = plan.switchover_to {
        if final_master != Some(to) {
            not_rejoined.push(format!(
                "the switchover to {to} ended with master {final_master:?}"
            ));
        }
    }
    (not_rejoined, returned_clean)
}

/// A planned switchover's write block: from the old master's last acknowledged write
/// to the new one's first (ms).
fn write_block_ms(plan: &Plan, acked: &[Acked]) -> Option<u64> {
    let to = plan.switchover_to?;
    let last_old = acked
        .iter()
        .filter(|a| a.server == NodeId(1))
        .map(|a| a.at)
        .max()?;
    let first_new = acked
        .iter()
        .filter(|a| a.server == to)
        .map(|a| a.at)
        .min()?;
    Some(first_new.saturating_sub(last_old).as_millis() as u64)
}

/// One hash of the whole timeline and every acknowledged write: same seed, same hash.
fn trace_hash(timeline: &[(Duration, String)], acked: &[Acked]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for (t, line) in timeline {
        fnv(&mut h, &t.as_millis().to_le_bytes());
        fnv(&mut h, line.as_bytes());
    }
    for a in acked {
        fnv(
            &mut h,
            format!("{:?}{}{}", a.at, a.gtid, a.server).as_bytes(),
        );
    }
    h
}

/// Acknowledged writes from two servers in overlapping intervals: server A
/// acknowledged a write, then B, then A again, all within one lease. A master change
/// waits out the old master's lease (or fences it), so a legitimate A, B, A takes two
/// failovers and far longer. Instants (ms) of each B in between.
fn interleaved_acks(acked: &[Acked], lease: Duration) -> Vec<u64> {
    let mut out = Vec::new();
    let mut sorted: Vec<&Acked> = acked.iter().collect();
    sorted.sort_by_key(|a| a.at);
    for (i, b) in sorted.iter().enumerate() {
        let before = sorted[..i]
            .iter()
            .rev()
            .take_while(|a| b.at - a.at < lease)
            .find(|a| a.server != b.server);
        let Some(a) = before else { continue };
        let again = sorted[i + 1..]
            .iter()
            .take_while(|c| c.at - a.at < lease)
            .any(|c| c.server == a.server);
        if again {
            out.push(b.at.as_millis() as u64);
        }
    }
    out
}

/// The longest stretch, over the clients the faults do not cut off themselves, from a
/// write acknowledged to the next one, among those ending after the first fault (ms).
/// A client in a partitioned group is left out: no failover can reach it.
fn client_visible_unavailability(plan: &Plan, acked: &[Acked], end: Duration) -> Option<u64> {
    // The clients on the side of a partition that holds fewer database hosts.
    let cut_off: BTreeSet<&str> = plan
        .faults
        .iter()
        .flat_map(|(_, f)| match f {
            Fault::Partition(a, b) | Fault::PartitionOneway(a, b) => {
                let dbs =
                    |g: &Vec<String>| g.iter().filter(|h| DB_HOSTS.contains(&h.as_str())).count();
                let minority = if dbs(a) < dbs(b) { a } else { b };
                minority.iter().map(String::as_str).collect()
            }
            _ => Vec::new(),
        })
        .collect();
    let mut worst: Option<u64> = None;
    for (i, name) in CLIENTS.iter().enumerate() {
        if cut_off.contains(name) {
            continue;
        }
        let client = i as u32 + 1;
        let mut times: Vec<Duration> = acked
            .iter()
            .filter(|a| a.client == client)
            .map(|a| a.at)
            .collect();
        times.sort();
        // A client still waiting at the end has been waiting since its last write.
        times.push(end);
        let gap = times
            .windows(2)
            .filter(|w| w[1] > plan.fault_at)
            .map(|w| (w[1] - w[0]).as_millis() as u64)
            .max();
        worst = worst.max(gap);
    }
    worst
}

/// Per-scenario latency figures for a sweep.
pub fn percentiles(mut v: Vec<u64>) -> BTreeMap<&'static str, u64> {
    v.sort_unstable();
    let at = |q: f64| -> u64 {
        if v.is_empty() {
            return 0;
        }
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i]
    };
    BTreeMap::from([
        ("p50", at(0.5)),
        ("p99", at(0.99)),
        ("max", v.last().copied().unwrap_or(0)),
    ])
}
