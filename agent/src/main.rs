//! `steadfast`: parse the command line and the config before touching the kernel.

use std::process::ExitCode;

/// jemalloc, which returns freed memory to the system in the background: under glibc's malloc
/// the fragments of large transient buffers (the exposition text, OTLP metric requests)
/// stayed resident and RSS ratcheted up with every exporter outage (docs/benchmarks.md, soak).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation (the `malloc_conf` symbol of the
/// prefixed build; `_RJEM_MALLOC_CONF` in the environment still overrides them). One arena:
/// by default every CPU gets four, each holding its own freed pages of the multi-MiB
/// exposition buffers, which an agent that allocates little does not need. Freed pages go
/// back to the system after a second instead of ten, as the buffers are rebuilt every few
/// seconds. Two agents side by side on one host, same binary and load, scraped every 5 s,
/// receiver down (docs/benchmarks.md, soak): median RSS 58.8 MiB with jemalloc's defaults,
/// 34.7 MiB with these, over 63 samples in 10 minutes.
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &u8 = &b"narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0];

use anyhow::Context;
use clap::Parser;
use steadfast::{
    cli::{Check, Cli, Command, RulesCmd, TestCmd},
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
        Command::Check(Check::Rules {
            files,
            strict,
            config,
        }) => {
            let Some(paths) = rule_paths(files, true) else {
                return ExitCode::FAILURE;
            };
            let eval_interval_ms = match config.as_deref().map(Config::load).transpose() {
                Ok(c) => c.map_or_else(
                    || steadfast::config::RulesConfig::default().evaluation_interval_ms,
                    |c| c.rules.evaluation_interval_ms,
                ),
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            };
            if steadfast::rules::spec::lint::check_command(&paths, strict, eval_interval_ms) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Rules(RulesCmd::Export { format: _, files }) => {
            // Diagnostics go to stderr: stdout is the rule file.
            let Some(paths) = rule_paths(files, false) else {
                return ExitCode::FAILURE;
            };
            match steadfast::rules::spec::file::load_files(&paths) {
                Ok(loaded) => {
                    print!(
                        "{}",
                        steadfast::rules::spec::prom_export::to_prometheus(&loaded)
                    );
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
                let (report, ok) = steadfast::ruletest::run_file(&f);
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

/// Rule files named on the command line; a directory stands for its rule files (what the
/// agent would load from it). `None` (after saying why) when a directory cannot be read.
fn rule_paths(files: Vec<std::path::PathBuf>, say_empty: bool) -> Option<Vec<std::path::PathBuf>> {
    let mut paths = Vec::new();
    for f in files {
        if f.is_dir() {
            match steadfast::rules::runtime::rule_files(&f) {
                Ok(found) if found.is_empty() && say_empty => {
                    println!("{}: no rule files", f.display())
                }
                Ok(found) => paths.extend(found),
                Err(e) => {
                    eprintln!("{}: {e}", f.display());
                    return None;
                }
            }
        } else {
            paths.push(f);
        }
    }
    Some(paths)
}

fn run(config: Config, config_path: &std::path::Path) -> anyhow::Result<()> {
    // Two workers: the local API keeps answering while a collection reads the kernel maps
    // (which runs on the bulk-work threads, `steadfast::background`).
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        // A short time slice for the workers and the ring drains: woken, they run first.
        .on_thread_start(steadfast::background::latency_slice)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(daemon::run(config, config_path))?;
    Ok(())
}
