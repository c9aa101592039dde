//! The `herdsman` command: validate, run, status.
//!
//! A thin dispatcher: each subcommand lives in its own module and returns the exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod validate;

/// Supervise a deployment's replicas as an actor tree.
#[derive(Debug, Parser)]
#[command(name = "herdsman", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check deployment specs; exit 0 if all are valid, 2 if any is invalid, 1 if any
    /// cannot be read.
    Validate {
        /// Spec files to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { files } => validate::run(&files),
    }
}
