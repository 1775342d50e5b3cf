//! Command line (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "steadfast", version, about = "eBPF host stability agent", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the probes and serve metrics until SIGTERM or SIGINT.
    Run {
        /// Configuration file (YAML).
        #[arg(long, short, default_value = "/etc/steadfast/steadfast.yaml")]
        config: PathBuf,
    },
    /// Check files without loading anything into the kernel.
    #[command(subcommand)]
    Check(Check),
    /// Run unit tests.
    #[command(subcommand)]
    Test(TestCmd),
    /// Work with rule files.
    #[command(subcommand)]
    Rules(RulesCmd),
}

#[derive(Debug, Subcommand)]
pub enum RulesCmd {
    /// Write the SLOs and alerting rules as Prometheus rule groups (stdout), for Prometheus,
    /// Thanos Ruler or Mimir to evaluate fleet-wide; exit 1 if a file is invalid.
    Export {
        /// Output format (only `prometheus`).
        #[arg(long, value_enum, default_value = "prometheus")]
        format: ExportFormat,
        /// Rule files (YAML), or directories of them.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    Prometheus,
}

#[derive(Debug, Subcommand)]
pub enum TestCmd {
    /// Run rule unit tests (input series, expected alerts); exit 0 if all pass, 1 if not.
    Rules {
        /// Test files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Check {
    /// Parse and validate a configuration file; exit 0 if it is valid, 64 if not.
    Config {
        /// Configuration file (YAML).
        file: PathBuf,
    },
    /// Parse and validate rule files; exit 0 if all are valid, 1 with every problem if not.
    /// Selectors that cannot match anything this agent exports (unknown metric or label
    /// names, `le` values that are not bucket bounds, syscall and errno names not in its
    /// tables or glibc wrapper names) and group intervals the engine cannot keep are warned
    /// about.
    Rules {
        /// Fail (exit 1) on warnings too.
        #[arg(long)]
        strict: bool,
        /// The agent's configuration, for `rules.evaluation_interval_ms` (default 1000 ms
        /// when not given).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Rule files (YAML), or directories of them.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}
