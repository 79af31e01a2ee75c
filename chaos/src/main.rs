//! `multiaz-chaos`: chaos runs of the real multiaz sidecar against real MariaDB hosts
//! in containers, with a routed VIP and moto as the EC2 API. See `cli.rs` for the
//! options and the README ("Chaos runs") for what a run does and reports.

mod agent_client;
mod agent_log;
mod agent_router;
mod api_proxy;
mod cli;
mod fault;
mod observe;
mod report;
mod run;
mod setup;
mod verify;

use anyhow::{bail, Context};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

/// Wall-clock milliseconds: the run, the agents in the containers and the sidecars'
/// journal share the one kernel's clock.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

static START: OnceLock<Instant> = OnceLock::new();

/// A progress line on stderr (stdout is the report's).
pub fn progress(what: &str) {
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[{t:7.1}s] {what}");
}

/// Marks a directory as this program's output, which it may empty on the next run.
const MARKER: &str = ".multiaz-chaos";

fn prepare_out(out: &Path) -> anyhow::Result<PathBuf> {
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .with_context(|| format!("--out {}", out.display()))?
            .next()
            .is_none();
        if !empty && !out.join(MARKER).exists() {
            bail!(
                "--out {} exists and is not a multiaz-chaos output directory (no {MARKER} in it): \
                 name a new or empty directory",
                out.display()
            );
        }
        std::fs::remove_dir_all(out).with_context(|| format!("emptying {}", out.display()))?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join(MARKER), "")?;
    Ok(out.canonicalize()?)
}

/// The directory with `multiaz` and this program, mounted into every host.
fn bin_dir(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match given {
        Some(d) => d.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("this program's directory")?
            .to_path_buf(),
    };
    let dir = dir
        .canonicalize()
        .with_context(|| format!("--bin-dir {}", dir.display()))?;
    for program in ["multiaz", "multiaz-chaos"] {
        if !dir.join(program).is_file() {
            bail!(
                "{} has no `{program}`: build both first (`cargo build -p multiaz-sidecar -p multiaz-chaos`) or name their directory with --bin-dir",
                dir.display()
            );
        }
    }
    Ok(dir)
}

async fn chaos(args: cli::RunArgs) -> anyhow::Result<bool> {
    if args.cycles == 0 {
        bail!("--cycles must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.throttle_share) {
        bail!("--throttle-share is a share of the calls, between 0 and 1");
    }
    let bins = bin_dir(args.bin_dir.as_deref())?;
    let out = prepare_out(&args.out)?;
    progress(&format!(
        "{} × {} cycle(s); files in {}",
        args.fault.name(),
        args.cycles,
        out.display()
    ));
    let report = run::run(&args, &out, &bins).await?;
    std::fs::write(out.join("report.json"), report.json() + "\n")?;
    std::fs::write(out.join("timeline.svg"), report.svg())?;
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    Ok(report.passed())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.agent {
        Some(cli::Agent::Client(a)) => agent_client::run(a).await.map(|()| true),
        Some(cli::Agent::Router(a)) => agent_router::run(a).await.map(|()| true),
        None => chaos(cli.run).await,
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("multiaz-chaos: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
