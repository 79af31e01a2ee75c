//! `multiaz-sim`: run one simulated failover, or sweep many seeds.

use clap::{Parser, Subcommand};
use multiaz_engine::{Flavour, Sabotage, VipMode};
use multiaz_sim::sweep::Tally;
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
        /// Fold each sidecar's raft log into a snapshot of the record after this many
        /// applied entries (default: the engine's 256, which no run reaches); a small
        /// number puts log compaction and snapshot transfer under the faults.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        log_limit: Option<u64>,
        /// Where the VIP's route tables point: at the master (`route`), or each at a
        /// database host of its clients' AZ that forwards to the master (`anchored`).
        #[arg(long, value_enum, default_value_t = VipModeArg::Route)]
        vip_mode: VipModeArg,
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
        /// As for `run`.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        log_limit: Option<u64>,
        /// Where the VIP's route tables point: at the master (`route`), or each at a
        /// database host of its clients' AZ that forwards to the master (`anchored`).
        #[arg(long, value_enum, default_value_t = VipModeArg::Route)]
        vip_mode: VipModeArg,
    },
}

fn sabotage_names() -> impl clap::builder::TypedValueParser<Value = Sabotage> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Sabotage::ALL.map(Sabotage::name))
        .try_map(|name| Sabotage::parse(&name).ok_or("no such safety mechanism"))
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum VipModeArg {
    Route,
    Anchored,
}

impl From<VipModeArg> for VipMode {
    fn from(m: VipModeArg) -> VipMode {
        match m {
            VipModeArg::Route => VipMode::Route,
            VipModeArg::Anchored => VipMode::Anchored,
        }
    }
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
            log_limit,
            vip_mode,
        } => run_once(RunConfig {
            scenario,
            seed,
            flavour: flavour.into(),
            duration: Duration::from_secs(seconds),
            sabotage,
            log_limit,
            vip_mode: vip_mode.into(),
        }),
        Cmd::Sweep {
            scenario,
            seeds,
            start_seed,
            flavour,
            seconds,
            json,
            sabotage,
            log_limit,
            vip_mode,
        } => {
            let wall = Instant::now();
            let tty = std::io::stderr().is_terminal();
            let mut tally = Tally::new(scenario, vip_mode.into(), seeds, sabotage);
            for (i, seed) in (start_seed..start_seed + seeds).enumerate() {
                let r = run(&RunConfig {
                    scenario,
                    seed,
                    flavour: flavour.into(),
                    duration: Duration::from_secs(seconds),
                    sabotage,
                    log_limit,
                    vip_mode: vip_mode.into(),
                });
                if tally.add(&r) {
                    eprintln!("seed {seed} FAILED ({})", r.profile);
                    eprintln!("  {}", reproduce(&r));
                }
                let done = i as u64 + 1;
                if tally.caught.is_some() {
                    break;
                }
                let failed = tally.failed.len();
                if tty {
                    eprint!("\r{scenario}: {done}/{seeds} seeds, {failed} failed   ");
                } else if done.is_multiple_of(50) || done == seeds {
                    eprintln!("{scenario}: {done}/{seeds} seeds, {failed} failed");
                }
            }
            if tty {
                eprintln!();
            }
            let wall_s = wall.elapsed().as_secs_f64();
            if json {
                println!("{}", tally.json(wall_s));
            } else {
                println!("{}", tally.summary(wall_s));
            }
            if tally.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `multiaz-sim run`: one run's timeline and verdicts.
fn run_once(cfg: RunConfig) -> ExitCode {
    let (scenario, seed) = (cfg.scenario, cfg.seed);
    let r = run(&cfg);
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
