//! The `herdsman` command: validate, run, status.
//!
//! A thin dispatcher: each subcommand lives in its own module and returns the exit code.
//!
//! Layout: `validate` (checking specs); `run` (supervising a deployment: the flow, signals,
//! shutdown) with `progress` (the console: convergence and stability), `notices` (one line
//! per notable event), `api` (the HTTP API) with `connections` (its connection limits),
//! `metrics` (OpenMetrics text), `state_dir` (the deployment's state directory and its
//! lock), `state_file` (state kept across runs), `stop` (the flag that ends background
//! tasks) and `logging` (machine logs); `status_cmd` (the status table, read from the
//! control socket or the API); `control` (the control socket's protocol and how clients
//! find a running deployment), `control_server` (its server in `herdsman run`),
//! `log_follow` (following output), `operate` (the verbs that act on a running
//! deployment), `rollout_cmd` (apply, rollout status and undo), `reload` (SIGHUP applies
//! the spec file again) and `notify` (event notifications to a webhook); `backend` (which
//! runtime each service runs on); `agent` and `cluster_run` (a cluster's agent and
//! coordinator) with `node_tls` (their TLS flags); `workload` (the hidden demo workload); `terminal`
//! (escaping untrusted text before it is printed); in tests, `test_terminal` (an
//! emulated terminal).

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::runtime::Builder;

mod agent;
mod api;
mod backend;
mod cluster_run;
mod connections;
mod control;
mod control_server;
mod log_follow;
mod logging;
mod metrics;
mod node_tls;
mod notices;
mod notify;
mod operate;
mod progress;
mod reload;
mod rollout_cmd;
mod run;
mod state_dir;
mod state_file;
mod status_cmd;
mod stop;
mod terminal;
#[cfg(test)]
mod test_terminal;
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
    Run(Box<run::RunArgs>),
    /// Run a cluster node that joins a coordinator (`herdsman run --node`) and runs the
    /// replicas it places here.
    Agent(agent::AgentArgs),
    /// Show the services and replicas of a running `herdsman run`.
    Status(status_cmd::StatusArgs),
    /// Print a replica's output (every replica's, prefixed, when none is named).
    Logs(operate::LogsArgs),
    /// Replace a service's replicas gracefully, one at a time, each ready again before
    /// the next (or just SERVICE/REPLICA).
    Restart(operate::RestartArgs),
    /// Take a service to 0 replicas and wait until none runs.
    Stop(operate::ServiceArgs),
    /// Bring a stopped service back to its spec's replica count.
    Start(operate::ServiceArgs),
    /// Set a service's desired replica count (also for `scale.mode: manual`).
    Scale(operate::ScaleArgs),
    /// Follow the deployment's events, one line (or JSON object) each.
    Events(operate::EventsArgs),
    /// Roll the running deployment to a changed spec (`--dry-run`: only print the plan).
    Apply(rollout_cmd::ApplyArgs),
    /// Follow the rollout in progress (`status`) or roll back one revision (`undo`).
    #[command(subcommand)]
    Rollout(rollout_cmd::RolloutCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
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
            block_on(supervisor_runtime(), run::run(*args))
        }
        Command::Agent(args) => {
            run::put_own_dir_on_path();
            if let Err(e) = connections::raise_open_file_limit() {
                eprintln!("warning: cannot raise the open-file limit: {e}");
            }
            block_on(supervisor_runtime(), agent::run(args))
        }
        Command::Status(args) => block_on(Builder::new_current_thread(), status_cmd::run(args)),
        Command::Logs(args) => operate_on(operate::logs(args)),
        Command::Restart(args) => operate_on(operate::restart(args)),
        Command::Stop(args) => operate_on(operate::stop(args)),
        Command::Start(args) => operate_on(operate::start(args)),
        Command::Scale(args) => operate_on(operate::scale(args)),
        Command::Events(args) => operate_on(operate::events(args)),
        Command::Apply(args) => operate_on(rollout_cmd::apply(args)),
        Command::Rollout(command) => operate_on(rollout_cmd::rollout(command)),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "herdsman", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Workload(args) => block_on(Builder::new_current_thread(), workload::run(args)),
    }
}

/// Most worker threads a supervising process starts: its work is waking on exits, timers
/// and sockets, which a few threads keep up with for thousands of replicas, while every
/// worker costs its stack and its own malloc arena (tokio starts one per core by default:
/// 64 on a 64-core host). `TOKIO_WORKER_THREADS` still overrides it.
const MAX_WORKERS: usize = 4;

/// Malloc arenas of a supervising process. glibc gives every thread that allocates an
/// arena of its own (up to 8 per core), and what is freed into one arena is reused by
/// that arena only: the replicas are spawned on one worker and served on the others, and
/// `herdsman run` with 200 idle replicas kept ~0.2 MiB more resident than with two arenas
/// shared by all threads (each thread's tcache still serves small allocations without a
/// lock). `MALLOC_ARENA_MAX` in the environment overrides it.
const MALLOC_ARENAS: i32 = 2;

/// Cap the malloc arenas at [`MALLOC_ARENAS`], before the runtime's threads exist.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: `mallopt` sets a glibc tunable and touches no Rust-visible memory; it
        // runs on the main thread before any other thread is started.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

/// The multi-threaded runtime of `run` and `agent`: one worker per core, at most
/// [`MAX_WORKERS`], at most [`MALLOC_ARENAS`] malloc arenas, and every thread on a short
/// scheduler slice, so that a thread woken by a replica's exec or exit runs at once even
/// when the replicas keep every core busy ([`herdsman_runtime::request_short_time_slice`]).
fn supervisor_runtime() -> Builder {
    limit_malloc_arenas();
    herdsman_runtime::request_short_time_slice();
    let mut builder = Builder::new_multi_thread();
    builder.on_thread_start(|| {
        herdsman_runtime::request_short_time_slice();
    });
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        builder.worker_threads(cores.clamp(1, MAX_WORKERS));
    }
    builder
}

/// Run a verb on a running deployment (which prints its own errors).
fn operate_on(verb: impl Future<Output = ExitCode>) -> ExitCode {
    block_on(Builder::new_current_thread(), async { Ok(verb.await) })
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
