//! `steadfast`: parse the command line and the config before touching the kernel.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use steadfast::{
    cli::{Check, Cli, Command, TestCmd},
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
        Command::Check(Check::Rules { files }) => {
            match steadfast::rules::file::load_files(&files) {
                Ok(loaded) => {
                    for (file, f) in loaded {
                        let rules: usize = f.groups.iter().map(|g| g.rules.len()).sum();
                        let slos: usize = f.groups.iter().map(|g| g.slos.len()).sum();
                        println!("{file}: ok ({rules} alerting rules, {slos} SLOs)");
                    }
                    ExitCode::SUCCESS
                }
                Err(problems) => {
                    eprintln!("{problems}");
                    eprintln!("{} problem(s)", problems.0.len());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Test(TestCmd::Rules { files }) => {
            let mut all = true;
            for f in files {
                let (report, ok) = steadfast::rules::unittest::run_file(&f);
                println!("{}: {}", f.display(), if ok { "ok" } else { "FAILED" });
                for line in report {
                    println!("{line}");
                }
                all &= ok;
            }
            if all {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Run { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            };
            logging::init(&config.log);
            match run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(daemon::run(config))?;
    Ok(())
}
