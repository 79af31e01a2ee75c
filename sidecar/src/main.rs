//! `multiaz`: the sidecar and its tools. See `multiaz --help`.

use clap::Parser;
use multiaz_sidecar::cli::{BinlogCommand, Cli, Command, LogFormat};
use multiaz_sidecar::commands::{binlog as binlog_cmd, check, operate, status};
use multiaz_sidecar::config::{AdminAccess, Config};
use std::process::ExitCode;

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("multiaz: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&runtime, async move {
        match cli.command {
            Command::Run { config } => {
                let config = Config::load(&config)?;
                multiaz_sidecar::commands::run::run(config).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Check { config, json } => {
                let config = Config::load(&config)?;
                let lines = check::run(&config).await;
                if json {
                    for l in &lines {
                        println!("{}", serde_json::to_string(l)?);
                    }
                } else {
                    print!("{}", check::render(&lines));
                }
                Ok(if lines.iter().all(|l| l.ok) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
            Command::Status { config, json } => {
                let config = AdminAccess::load(&config)?;
                print!("{}", status::show(&config, json).await?);
                Ok(ExitCode::SUCCESS)
            }
            Command::Switchover {
                config,
                to,
                dry_run,
            } => {
                let config = AdminAccess::load(&config)?;
                let ok = operate::switchover(&config, &to, dry_run).await?;
                Ok(if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
            Command::Ack { config } => {
                let config = AdminAccess::load(&config)?;
                print!("{}", operate::simple(&config, "/ack").await?);
                Ok(ExitCode::SUCCESS)
            }
            Command::Pause { config } => {
                let config = AdminAccess::load(&config)?;
                print!("{}", operate::simple(&config, "/pause").await?);
                Ok(ExitCode::SUCCESS)
            }
            Command::Resume { config } => {
                let config = AdminAccess::load(&config)?;
                print!("{}", operate::simple(&config, "/resume").await?);
                Ok(ExitCode::SUCCESS)
            }
            Command::Binlog(BinlogCommand::Tail { source, json }) => {
                binlog_cmd::tail(&source, json)
            }
            Command::Binlog(BinlogCommand::Salvage {
                source,
                apply,
                json,
            }) => binlog_cmd::salvage(&source, &apply, json).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            let e: anyhow::Error = e;
            eprintln!("multiaz: {e:#}");
            ExitCode::FAILURE
        }
    }
}
