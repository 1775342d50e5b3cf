//! `steadfast`: parse the command line and the config before touching the kernel.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use steadfast::{
    cli::{Check, Cli, Command},
    config::Config,
    daemon, logging, EXIT_BAD_CONFIG,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(Check::Config { file }) => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        },
        Command::Run {
            config: config_path,
        } => {
            let config = match Config::load(&config_path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            };
            logging::init(&config.log);
            match run(config, &config_path) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run(config: Config, config_path: &std::path::Path) -> anyhow::Result<()> {
    steadfast::ebpf::limit_malloc_arenas();
    // Two workers: the local API keeps answering while a collection reads the kernel maps
    // (which runs on the blocking pool).
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(daemon::run(config, config_path))?;
    Ok(())
}
