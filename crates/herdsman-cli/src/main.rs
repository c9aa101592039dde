//! The `herdsman` command: validate, run, status.
//!
//! A thin dispatcher: each subcommand lives in its own module and returns the exit code.
//!
//! Layout: `validate` (checking specs); `run` (supervising a deployment: the flow, signals,
//! shutdown) with `progress` (the console: convergence and stability), `notices` (one line
//! per notable event), `api` (the HTTP API) with `connections` (its connection limits),
//! `metrics` (Prometheus text), `state_file`
//! (state kept across runs), `stop` (the flag that ends background tasks) and `logging`
//! (machine logs); `status_cmd` (the status table, read from the API); `workload` (the
//! hidden demo workload); `terminal` (escaping untrusted text before it is printed).

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::runtime::Builder;

mod api;
mod connections;
mod logging;
mod metrics;
mod notices;
mod progress;
mod run;
mod state_file;
mod status_cmd;
mod stop;
mod terminal;
mod validate;
mod workload;

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
    /// Supervise a deployment of real processes until Ctrl-C or SIGTERM.
    Run(run::RunArgs),
    /// Show the services and replicas of a running `herdsman run`.
    Status(status_cmd::StatusArgs),
    /// A small HTTP server that misbehaves on request, for demos and tests.
    #[command(hide = true)]
    Workload(workload::WorkloadArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { files } => validate::run(&files),
        Command::Run(args) => {
            // Before the runtime's threads exist: it changes the process environment.
            run::put_own_dir_on_path();
            // Connections and replicas' pipes must not run out at a default of 1,024.
            if let Err(e) = connections::raise_open_file_limit() {
                eprintln!("warning: cannot raise the open-file limit: {e}");
            }
            block_on(Builder::new_multi_thread(), run::run(args))
        }
        Command::Status(args) => block_on(Builder::new_current_thread(), status_cmd::run(args)),
        Command::Workload(args) => block_on(Builder::new_current_thread(), workload::run(args)),
    }
}

/// Run an async subcommand on the tokio runtime `builder` makes; an error is printed
/// with its causes and exits 1.
fn block_on(
    mut builder: Builder,
    command: impl Future<Output = anyhow::Result<ExitCode>>,
) -> ExitCode {
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // A blocking task stuck in the kernel must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}
