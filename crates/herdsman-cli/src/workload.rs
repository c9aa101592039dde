//! `herdsman workload` (hidden): a small HTTP server that misbehaves on request, so the
//! demo and the tests supervise real processes with nothing but the herdsman binary.
//!
//! It serves `GET /` and `GET /healthz` on `127.0.0.1:PORT`, logs what it does on
//! stdout (so log tails in reports say something), and can crash after a while, crash at
//! random, start unhealthy, finish like a job, answer with a chosen body (a version)
//! and drain for a while after a stop signal.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

/// `println!` that ignores a closed stdout: the workload keeps serving when nobody reads
/// its output any more.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Flags of `herdsman workload`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct WorkloadArgs {
    /// Serve HTTP on 127.0.0.1:PORT (`GET /`, `GET /healthz`); without it, serve nothing.
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,
    /// Crash (exit with --exit-code) after running this long.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    crash_after: Option<Duration>,
    /// Each second, crash with this probability (0 to 1).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    crash_probability: f64,
    /// Exit code of a crash.
    #[arg(long, value_name = "N", default_value_t = 1)]
    exit_code: u8,
    /// Finish successfully (exit code 0) after running this long, like a job.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    run_for: Option<Duration>,
    /// Answer 503 on /healthz for this long after starting, then 200.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    unhealthy_for: Option<Duration>,
    /// Ignore SIGTERM and SIGINT, so only the stop grace period's SIGKILL ends it.
    #[arg(long)]
    ignore_sigterm: bool,
    /// Answer `GET /` with TEXT (and a newline) instead of a greeting, e.g. a version,
    /// so clients can tell which spec a replica runs.
    #[arg(long, value_name = "TEXT")]
    body: Option<String>,
    /// On SIGTERM or SIGINT, keep serving this long before exiting, as a server that
    /// drains its clients does (keep it below the stop grace period).
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    drain: Option<Duration>,
}

/// Why the workload ends.
enum Ending {
    Crash(&'static str),
    Finished,
    Stopped,
}

/// Run the workload until it crashes, finishes or is stopped.
///
/// # Errors
/// The port cannot be bound or a signal handler cannot be installed.
pub(crate) async fn run(args: WorkloadArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    // Handlers first: once the workload listens (and a health check can pass), a stop
    // signal is handled, never the default action.
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let replica = std::env::var("REPLICA").unwrap_or_else(|_| "-".to_string());
    let name = std::env::var("SERVICE").unwrap_or_else(|_| "workload".to_string());
    say!(
        "{name}[{replica}] pid {} starting{}",
        std::process::id(),
        args.unhealthy_for
            .map(|d| format!(", unhealthy for {}", humantime::format_duration(d)))
            .unwrap_or_default()
    );

    if let Some(port) = args.port {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
        say!("{name}[{replica}] listening on http://127.0.0.1:{port}");
        let health = Health {
            started,
            unhealthy_for: args.unhealthy_for.unwrap_or_default(),
            greeting: match &args.body {
                Some(body) => format!("{body}\n"),
                None => format!("hello from {name}[{replica}]\n"),
            },
        };
        let app = Router::new()
            .route("/", get(hello))
            .route("/healthz", get(healthz))
            .with_state(health);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                say!("server error: {e}");
            }
        });
    }

    let ending = tokio::select! {
        e = stop_requested(&mut term, &mut int, args.ignore_sigterm) => e,
        e = crash_at_random(args.crash_probability) => e,
        e = after(args.crash_after, Ending::Crash("crash-after elapsed")) => e,
        e = after(args.run_for, Ending::Finished) => e,
    };
    let code = match ending {
        Ending::Crash(why) => {
            say!(
                "{name}[{replica}] crashing ({why}) with exit code {}",
                args.exit_code
            );
            args.exit_code
        }
        Ending::Finished => {
            say!("{name}[{replica}] done");
            0
        }
        Ending::Stopped => {
            if let Some(drain) = args.drain {
                say!(
                    "{name}[{replica}] draining for {} before stopping",
                    herdsman_probe::humanize(drain)
                );
                tokio::time::sleep(drain).await;
            }
            say!("{name}[{replica}] stopping on signal");
            0
        }
    };
    Ok(ExitCode::from(code))
}

#[derive(Debug, Clone)]
struct Health {
    started: Instant,
    unhealthy_for: Duration,
    greeting: String,
}

async fn hello(State(h): State<Health>) -> String {
    h.greeting
}

async fn healthz(State(h): State<Health>) -> (StatusCode, String) {
    let up = h.started.elapsed();
    if up < h.unhealthy_for {
        let left = h.unhealthy_for - up;
        say!(
            "healthz -> 503 (warming up, {} to go)",
            herdsman_probe::humanize(left)
        );
        (StatusCode::SERVICE_UNAVAILABLE, "warming up\n".to_string())
    } else {
        (StatusCode::OK, "ok\n".to_string())
    }
}

/// Resolves when SIGTERM or SIGINT arrives (never, with `ignore`).
async fn stop_requested(term: &mut Signal, int: &mut Signal, ignore: bool) -> Ending {
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if !ignore {
            return Ending::Stopped;
        }
        say!("ignoring the stop signal");
    }
}

/// Resolves, each second with probability `p`, with a crash; never for `p <= 0`.
async fn crash_at_random(p: f64) -> Ending {
    if p <= 0.0 {
        return std::future::pending().await;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        if rand::random::<f64>() < p {
            return Ending::Crash("random crash");
        }
    }
}

/// Resolves with `ending` after `d`; never without one.
async fn after(d: Option<Duration>, ending: Ending) -> Ending {
    match d {
        Some(d) => {
            tokio::time::sleep(d).await;
            ending
        }
        None => std::future::pending().await,
    }
}
