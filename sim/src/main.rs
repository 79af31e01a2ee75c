//! `multiaz-sim`: run one simulated failover, or sweep many seeds.

use clap::{Parser, Subcommand};
use multiaz_engine::{Flavour, Sabotage};
use multiaz_sim::run::percentiles;
use multiaz_sim::{run, RunConfig, RunReport, Scenario};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "multiaz-sim",
    about = "Deterministic simulation of a three-AZ multiaz cluster under faults",
    long_about = "Runs the real multiaz engine and driver on simulated hosts (turmoil): three \
database hosts with a model mysqld, a model EC2 API whose route tables carry the VIP, and a \
client per AZ writing through the VIP. Each seed draws its faults; every run checks that no \
acknowledged write and no binlog event is lost, that two servers never acknowledge writes at \
once, and that writes resume after the faults heal. The same seed replays the same timeline."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// One run: the timeline (faults, detection, each failover step, route switch,
    /// first write after) and the invariant verdicts. Exits non-zero if one fails.
    Run {
        #[arg(long, value_enum)]
        scenario: Scenario,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, value_enum, default_value_t = FlavourArg::Mariadb)]
        flavour: FlavourArg,
        /// Simulated seconds.
        #[arg(long, default_value_t = 120)]
        seconds: u64,
        /// Switch one safety mechanism off (a negative control; needs a build with
        /// `--features sabotage`).
        #[arg(long, value_parser = sabotage_names())]
        sabotage: Option<Sabotage>,
    },
    /// Many seeds: a progress line on stderr, a summary (or one JSON object with
    /// --json) on stdout. Exits non-zero if any seed fails.
    Sweep {
        #[arg(long, value_enum)]
        scenario: Scenario,
        /// How many seeds.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        #[arg(long, default_value_t = 1)]
        start_seed: u64,
        #[arg(long, value_enum, default_value_t = FlavourArg::Mariadb)]
        flavour: FlavourArg,
        #[arg(long, default_value_t = 120)]
        seconds: u64,
        #[arg(long)]
        json: bool,
        /// Switch one safety mechanism off (a negative control; needs a build with
        /// `--features sabotage`). The sweep stops at the first seed that fails, names
        /// the invariants that caught it, and exits non-zero; it exits 0 only when no
        /// seed caught the sabotage.
        #[arg(long, value_parser = sabotage_names())]
        sabotage: Option<Sabotage>,
    },
}

fn sabotage_names() -> impl clap::builder::TypedValueParser<Value = Sabotage> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Sabotage::ALL.map(Sabotage::name))
        .try_map(|name| Sabotage::parse(&name).ok_or("no such safety mechanism"))
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FlavourArg {
    Mariadb,
    Mysql,
}

impl From<FlavourArg> for Flavour {
    fn from(f: FlavourArg) -> Flavour {
        match f {
            FlavourArg::Mariadb => Flavour::Mariadb,
            FlavourArg::Mysql => Flavour::Mysql,
        }
    }
}

fn reproduce(r: &RunReport) -> String {
    format!(
        "reproduce: multiaz-sim run --scenario {} --seed {}",
        r.scenario, r.seed
    )
}

fn print_failures(r: &RunReport) {
    let v = &r.verdicts;
    for (what, items) in [
        ("lost acknowledged writes", &v.lost_acked_writes),
        ("lost binlog events", &v.lost_binlog_events),
        (
            "writes acknowledged that no replica had",
            &v.unreplicated_acks,
        ),
        (
            "read-backs that missed the client's own acknowledged write",
            &v.stale_reads,
        ),
        ("errant transactions on replicas", &v.errant_on_survivors),
        ("servers that did not rejoin", &v.not_rejoined),
    ] {
        if !items.is_empty() {
            println!("  FAIL {what}: {} (first: {})", items.len(), items[0]);
        }
    }
    if !v.split_brain_ms.is_empty() {
        println!("  FAIL split brain: two servers could acknowledge writes at {} ms (and {} more instants)", v.split_brain_ms[0], v.split_brain_ms.len() - 1);
    }
    if !v.live_after_heal {
        println!("  FAIL no write acknowledged within 30 s after the faults healed");
    }
    if let Some(e) = &v.software_error {
        println!("  FAIL host software error: {e}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (Cmd::Run { sabotage, .. } | Cmd::Sweep { sabotage, .. }) = &cli.command;
    if let Some(s) = sabotage.filter(|_| !cfg!(feature = "sabotage")) {
        eprintln!(
            "--sabotage {}: this multiaz-sim was built without the negative controls; \
             build it with `cargo build --release -p multiaz-sim --features sabotage`",
            s.name()
        );
        return ExitCode::from(2);
    }
    match cli.command {
        Cmd::Run {
            scenario,
            seed,
            flavour,
            seconds,
            sabotage,
        } => {
            let r = run(&RunConfig {
                scenario,
                seed,
                flavour: flavour.into(),
                duration: Duration::from_secs(seconds),
                sabotage,
            });
            println!("scenario {scenario}, seed {seed}: {}", r.profile);
            for (t, line) in &r.timeline {
                println!("{:>9.3}s  {line}", t.as_secs_f64());
            }
            println!();
            println!(
                "epoch {}, master {:?}, {} writes acknowledged, failover {}",
                r.final_epoch,
                r.final_master,
                r.acked_writes,
                r.failover_ms.map_or("none".to_string(), |ms| format!(
                    "{ms} ms (fault to first acknowledged write)"
                ))
            );
            let v = &r.verdicts;
            println!("lost acknowledged writes: {}", v.lost_acked_writes.len());
            println!("lost binlog events:       {}", v.lost_binlog_events.len());
            println!("split brain instants:     {}", v.split_brain_ms.len());
            println!("errant on replicas:       {}", v.errant_on_survivors.len());
            println!(
                "uncommitted promotions:   {}",
                v.uncommitted_promotions.len()
            );
            for p in v.uncommitted_promotions.iter().take(3) {
                println!("  {p}");
            }
            if let Some(ms) = r.write_block_ms {
                println!("write block:              {ms} ms (last write acknowledged by the old master to the first by the new)");
            }
            if let Some(clean) = r.returned_clean {
                println!(
                    "old master returned:      {}",
                    if clean {
                        "clean, and must rejoin"
                    } else {
                        "with errant transactions, and must stay out"
                    }
                );
            }
            if matches!(scenario, Scenario::Switchover | Scenario::Rejoin) {
                println!("clean servers not rejoined: {}", v.not_rejoined.len());
            }
            println!(
                "writes after heal:        {}",
                if r.diverged {
                    "no: every replica holds errant transactions (an operator rebuilds one)"
                } else if v.live_after_heal {
                    "yes"
                } else {
                    "NO"
                }
            );
            println!(
                "{:.0} simulated seconds in {:.2} s",
                r.sim_seconds, r.wall_seconds
            );
            if !r.unsafe_config.is_empty() {
                println!(
                    "settings `multiaz check` fails: {} (lost or unreplicated writes are reported, not failed)",
                    r.unsafe_config.join(", ")
                );
            }
            if r.verdicts.passes(r.unsafe_config.is_empty()) {
                if !r.verdicts.ok() {
                    print_failures(&r);
                }
                println!("PASS");
                ExitCode::SUCCESS
            } else {
                print_failures(&r);
                println!("{}", reproduce(&r));
                ExitCode::FAILURE
            }
        }
        Cmd::Sweep {
            scenario,
            seeds,
            start_seed,
            flavour,
            seconds,
            json,
            sabotage,
        } => {
            let mut caught: Option<(u64, Vec<&'static str>)> = None;
            let wall = Instant::now();
            let tty = std::io::stderr().is_terminal();
            let mut failed = Vec::new();
            let mut failover = Vec::new();
            let (mut acked, mut lost_acked, mut lost_binlog, mut split, mut sim_s) =
                (0usize, 0usize, 0usize, 0usize, 0.0f64);
            let mut diverged = Vec::new();
            // Seeds whose settings `multiaz check` fails: what went wrong there is the
            // proof of why the check fails them, not a failure of the product.
            let mut unsafe_seeds = Vec::new();
            let mut write_block = Vec::new();
            // Each run's timeline fingerprint, in seed order: a refactoring that claims to
            // change no behaviour must leave every one of them as it was.
            let mut trace_hashes = Vec::new();
            let (mut returned_clean, mut returned_errant) = (0u64, 0u64);
            let mut hostile = multiaz_sim::world::HostileEvents::default();
            let mut fence_failures = multiaz_sim::run::FenceFailures::default();
            for (i, seed) in (start_seed..start_seed + seeds).enumerate() {
                let r = run(&RunConfig {
                    scenario,
                    seed,
                    flavour: flavour.into(),
                    duration: Duration::from_secs(seconds),
                    sabotage,
                });
                acked += r.acked_writes;
                if r.unsafe_config.is_empty() {
                    lost_acked += r.verdicts.lost_acked_writes.len();
                    lost_binlog += r.verdicts.lost_binlog_events.len();
                    split += r.verdicts.split_brain_ms.len();
                }
                sim_s += r.sim_seconds;
                hostile.add(&r.hostile_events);
                fence_failures.add(&r.fence_failures);
                if r.diverged {
                    diverged.push(serde_json::json!({
                        "seed": seed,
                        "kept_out": r.errant_kept_out,
                    }));
                }
                if !r.unsafe_config.is_empty() {
                    let v = &r.verdicts;
                    unsafe_seeds.push(serde_json::json!({
                        "seed": seed,
                        "settings": r.unsafe_config,
                        "ok": v.ok(),
                        "lost_acked_writes": v.lost_acked_writes.len(),
                        "unreplicated_acks": v.unreplicated_acks.len(),
                        "lost_binlog_events": v.lost_binlog_events.len(),
                    }));
                }
                failover.extend(r.failover_ms);
                write_block.extend(r.write_block_ms);
                trace_hashes.push(format!("{:016x}", r.trace_hash));
                match r.returned_clean {
                    Some(true) => returned_clean += 1,
                    Some(false) => returned_errant += 1,
                    None => {}
                }
                if !r.verdicts.passes(r.unsafe_config.is_empty()) {
                    failed.push(seed);
                    if sabotage.is_some() && caught.is_none() {
                        caught = Some((seed, r.verdicts.broken()));
                    }
                    eprintln!("seed {seed} FAILED ({})", r.profile);
                    eprintln!("  {}", reproduce(&r));
                }
                let done = i as u64 + 1;
                if caught.is_some() {
                    break;
                }
                if tty {
                    eprint!(
                        "\r{scenario}: {done}/{seeds} seeds, {} failed   ",
                        failed.len()
                    );
                } else if done.is_multiple_of(50) || done == seeds {
                    eprintln!("{scenario}: {done}/{seeds} seeds, {} failed", failed.len());
                }
            }
            if tty {
                eprintln!();
            }
            let wall_s = wall.elapsed().as_secs_f64();
            let p = percentiles(failover.clone());
            if json {
                let mut out = serde_json::json!({
                    "scenario": scenario.to_string(),
                    "seeds": seeds,
                    "failed_seeds": failed,
                    "failover_ms": p,
                    // Every run's failover time (runs with a failover, in seed order).
                    "failover_ms_each": failover,
                    "acked_writes": acked,
                    "lost_acked_writes": lost_acked,
                    "lost_binlog_events": lost_binlog,
                    "split_brain": split,
                    "diverged_seeds": diverged,
                    "unsafe_config_seeds": unsafe_seeds,
                    // How often the hostile world struck, over all seeds.
                    "hostile_events": hostile,
                    // read_only changes that failed, over all seeds (each one a warning
                    // and a `multiaz_fence_failures` count on a real sidecar).
                    "fence_failures": fence_failures,
                    "trace_hashes": trace_hashes,
                    "sim_seconds": sim_s,
                    "wall_seconds": wall_s,
                });
                if let Some(s) = sabotage {
                    out["sabotage"] = serde_json::json!(s.name());
                    out["caught"] = serde_json::json!(caught.is_some());
                    if let Some((seed, by)) = &caught {
                        out["caught_at_seed"] = serde_json::json!(seed);
                        out["caught_by"] = serde_json::json!(by);
                    }
                }
                if scenario == Scenario::Switchover {
                    // No write could be acknowledged in this window, per run.
                    out["write_block_ms"] = serde_json::json!(percentiles(write_block.clone()));
                    out["write_block_ms_each"] = serde_json::json!(write_block);
                }
                if scenario == Scenario::Rejoin {
                    out["returned_clean"] = serde_json::json!(returned_clean);
                    out["returned_errant"] = serde_json::json!(returned_errant);
                }
                println!("{out}");
            } else {
                println!(
                    "scenario {scenario}: {seeds} seeds, {} failed {:?}",
                    failed.len(),
                    failed
                );
                if let Some(s) = sabotage {
                    match &caught {
                        Some((seed, by)) => println!(
                            "sabotage {}: caught at seed {seed} by {}",
                            s.name(),
                            by.join(", ")
                        ),
                        None => println!("sabotage {}: NOT caught", s.name()),
                    }
                }
                println!("failover (fault to first acknowledged write), over {} runs with a failover: p50 {} ms, p99 {} ms, max {} ms", failover.len(), p["p50"], p["p99"], p["max"]);
                println!("acknowledged writes {acked}, lost {lost_acked}; lost binlog events {lost_binlog}; split-brain instants {split}");
                if scenario == Scenario::Switchover {
                    let w = percentiles(write_block.clone());
                    println!("write block (no write acknowledged), over {} runs: p50 {} ms, p99 {} ms, max {} ms", write_block.len(), w["p50"], w["p99"], w["max"]);
                }
                if scenario == Scenario::Rejoin {
                    println!("old master returned clean (rejoined) {returned_clean}, with errant transactions (kept out) {returned_errant}");
                }
                println!("runs that ended with every replica holding errant transactions (writes wait for an operator): {}", serde_json::json!(diverged));
                let broke = unsafe_seeds.iter().filter(|u| u["ok"] == false).count();
                println!("runs on settings `multiaz check` fails: {}, of which {broke} broke a promise (not counted as failed)", unsafe_seeds.len());
                println!(
                    "{sim_s:.0} simulated seconds in {wall_s:.1} s ({:.0}x)",
                    sim_s / wall_s.max(1e-9)
                );
            }
            if failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
