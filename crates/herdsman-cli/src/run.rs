//! `herdsman run`: supervise a deployment of real processes from a spec, show it
//! converge, serve the API, keep state, and stop everything on Ctrl-C or SIGTERM.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use herdsman_core::{
    spawn_deployment, DeploymentHandle, DeploymentOptions, EventKind, EventStream, Received,
    Stabilization, StatusBoard,
};
use herdsman_runtime::{ProcessConfig, Runtime};
use herdsman_spec::SpecError;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::api::{self, ApiAddr, ApiState, DEFAULT_ADDR};
use crate::backend::{Backend, RuntimeChoice};
use crate::logging::{self, LogFormat};
use crate::metrics::Metrics;
use crate::notices::{notice, size};
use crate::progress::Console;
use crate::state_dir;
use crate::state_file::{self, StateWriter};

/// How long `--until-stable` waits without `--timeout`.
const UNTIL_STABLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The wait for stability without any deadline: long enough never to pass, short enough
/// for every timer to take it.
const NO_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long the tasks that outlive the deployment (state writer, API) get to finish.
const TASKS_GRACE: Duration = Duration::from_secs(5);

/// Exit code of an invalid spec or an unusable command line, as for `validate`.
pub(crate) const EXIT_INVALID: u8 = 2;

/// Flags of `herdsman run`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunArgs {
    /// The deployment spec (YAML).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Where the HTTP API listens (IP:PORT), or `off`.
    #[arg(long, value_name = "ADDR", default_value_t = ApiAddr::At(DEFAULT_ADDR))]
    api: ApiAddr,
    /// Require `Authorization: Bearer TOKEN` on the API (default: $HERDSMAN_API_TOKEN).
    /// Visible to other users in the process list: prefer --api-token-file or the variable.
    #[arg(long, value_name = "TOKEN")]
    api_token: Option<String>,
    /// Allow serving the API on a non-loopback address without a token.
    #[arg(long)]
    api_insecure: bool,
    #[command(flatten)]
    api_flags: api::ApiFlags,
    /// How long to wait for the deployment to become stable before reporting why not
    /// (e.g. 30s, 2m). Default: no limit (5m with --until-stable).
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Exit once stable (0, after stopping everything), or at the timeout (1).
    #[arg(long)]
    until_stable: bool,
    /// The state root: the deployment's lock, state file (restart counts, last exits,
    /// recent events), replica log files and the records that let the next run adopt
    /// running replicas go in DIR/<deployment>/. Default: $HERDSMAN_STATE_DIR, else
    /// /var/lib/herdsman as root, else $XDG_STATE_HOME/herdsman.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Stop the replicas an earlier run left running instead of adopting them.
    #[arg(long)]
    no_adopt: bool,
    /// Format of the machine logs on stderr (filtered by RUST_LOG, default warn).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Run every service as processes or as Docker containers. Default: a service with
    /// `image` runs as a container, one with only `command` as a process.
    #[arg(long, value_name = "RUNTIME", value_enum)]
    runtime: Option<RuntimeChoice>,
    /// POST notable events (unhealthy, restart, backoff, failed, stable, rollout) as JSON to
    /// this http(s) URL, with retries; never delays supervision.
    #[arg(long, value_name = "URL", value_parser = crate::notify::parse_url)]
    notify: Option<reqwest::Url>,
    /// Notifications kept waiting for a slow receiver before the oldest are dropped.
    #[arg(long, value_name = "N", default_value_t = crate::notify::DEFAULT_QUEUE)]
    notify_queue: usize,
    #[command(flatten)]
    cluster: crate::cluster_run::CoordinatorFlags,
}

/// Put the directory of the running herdsman first on `PATH`, so a spec can run
/// `herdsman workload` (or anything installed next to it) by name. Call it before any
/// thread starts: it changes the process environment.
pub(crate) fn put_own_dir_on_path() {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let Some(dir) = exe.parent() else {
        return;
    };
    let mut dirs = vec![dir.to_path_buf()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path).filter(|d| d != dir));
    }
    if let Ok(joined) = std::env::join_paths(dirs) {
        std::env::set_var("PATH", joined);
    }
}

/// Run the deployment until a stop signal (or, with `--until-stable`, until stable or the
/// timeout).
///
/// # Errors
/// The API address cannot be bound, the state directory cannot be created, signal
/// handlers cannot be installed, or the deployment cannot start.
pub(crate) async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    logging::init(args.log_format);
    if args.cluster.node.is_none() && args.cluster.tls.any() {
        eprintln!(
            "error: --tls-cert, --tls-key and --tls-ca encrypt node sessions: they need --node"
        );
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    if args.cluster.node.is_some() {
        if let Some(flag) = not_for_a_cluster(&args) {
            eprintln!("error: {flag} is not supported with --node (a cluster coordinator)");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        let state_root = args.state_dir.clone();
        return crate::cluster_run::coordinate(&args.file, args.api, state_root, &args.cluster)
            .await;
    }
    let spec = match herdsman_spec::load(&args.file) {
        Ok(spec) => spec,
        Err(e) => return Ok(report_spec_error(e)),
    };
    let token = api::token(
        args.api_token.as_deref(),
        args.api_flags.api_token_file.as_deref(),
    )?;
    if let ApiAddr::At(addr) = args.api {
        if let Some(why) = api::refuse_exposure(addr, token.is_some(), args.api_insecure) {
            eprintln!("error: {why}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    }
    // Installed before anything starts, so a signal during startup still stops cleanly.
    let mut signals = StopSignals::new()?;

    // Locked before anything starts: a second run of the deployment is refused here.
    let state_dir = match state_dir::open(&state_dir::root(args.state_dir.as_deref()), &spec.name)?
    {
        state_dir::Opened::Locked(dir) => Some(dir),
        state_dir::Opened::Degraded(why) => {
            eprintln!("warning: {why}");
            None
        }
    };
    let previous = match &state_dir {
        Some(dir) => {
            let path = dir.state_file();
            let previous = state_file::read_previous(&path, &spec.name);
            for line in state_file::describe(&path, &previous) {
                if line.starts_with("warning") {
                    eprintln!("{line}");
                } else {
                    let _ = writeln!(std::io::stdout(), "{line}");
                }
            }
            Some((path, previous))
        }
        None => None,
    };

    // Bound before any process starts: a taken port fails the run with nothing to undo.
    let listener = match args.api {
        ApiAddr::At(addr) => {
            Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "cannot serve the API on {addr} (choose another with --api ADDR, or --api off)"
                )
            })?)
        }
        ApiAddr::Off => None,
    };

    // The control socket (logs, restart, scale...), bound before any process starts.
    let control = match &state_dir {
        Some(dir) => crate::control_server::bind(dir.path()).await?,
        None => None,
    };

    let process = ProcessConfig {
        log_dir: state_dir.as_ref().map(|d| d.logs()),
        state_dir: state_dir.as_ref().map(|d| d.path().to_path_buf()),
        ..ProcessConfig::default()
    };
    let runtime = Arc::new(Backend::new(&spec, args.runtime, process).await?);
    let options = DeploymentOptions {
        adopt: !args.no_adopt,
        ..DeploymentOptions::default()
    };
    let name = spec.name.clone();
    let services: Vec<String> = spec.services.iter().map(|s| s.name.clone()).collect();
    let dyn_runtime: Arc<dyn Runtime> = runtime.clone();
    let handle = match spawn_deployment(spec, dyn_runtime, options).await {
        Ok(h) => h,
        Err(e) => {
            runtime.shutdown().await;
            return Err(e).context("cannot start the deployment");
        }
    };

    let (stop_tx, stop_rx) = crate::stop::flag();
    let stdout = std::io::stdout();
    let tty = stdout.is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb");
    let console = Shared::new(Console::new(Box::new(stdout), tty, &name));
    let mut background: Vec<JoinHandle<()>> = Vec::new();

    let metrics = Arc::new(Metrics::new(services.iter().map(String::as_str)));
    background.push(tokio::spawn({
        let (metrics, events, stop) = (metrics.clone(), handle.subscribe(), stop_rx.clone());
        async move { metrics.feed(events, stop).await }
    }));
    if let Some(url) = &args.notify {
        let events = handle.subscribe();
        match crate::notify::start(url.clone(), args.notify_queue, events, stop_rx.clone()) {
            Ok((queue, tasks)) => {
                metrics.watch_notifications(queue);
                background.extend(tasks);
            }
            Err(e) => eprintln!("warning: no notifications to {url}: {e:#}"),
        }
    }
    let writer = previous.map(|(path, previous)| {
        let writer = StateWriter::new(path, handle.board().clone(), &previous);
        tokio::spawn(writer.keep(handle.subscribe(), stop_rx.clone()))
    });
    let server = listener.map(|listener| {
        let state = ApiState::new(
            handle.clone(),
            metrics.clone(),
            token.clone(),
            stop_rx.clone(),
        )
        .with_containment(runtime.containment());
        let app = api::router(state);
        let limits = args.api_flags.limits.clone();
        tokio::spawn(crate::connections::serve(
            listener,
            app,
            limits,
            stop_rx.clone(),
        ))
    });
    if let Some(socket) = control {
        let serving = crate::control_server::serve(socket, handle.clone(), stop_rx.clone());
        background.push(tokio::spawn(serving));
    }
    if let Some(hangup) = signals.hup.take() {
        let say = {
            let console = console.clone();
            move |line: &str| console.lock().line(line)
        };
        let reloading = crate::reload::on_hangup(
            hangup,
            args.file.clone(),
            handle.clone(),
            say,
            stop_rx.clone(),
        );
        background.push(tokio::spawn(reloading));
    }
    background.push(tokio::spawn(show(
        console.clone(),
        handle.subscribe(),
        handle.board().clone(),
        stop_rx.clone(),
        tty,
    )));

    let api_note = match args.api {
        ApiAddr::At(addr) => format!("API on http://{addr}"),
        ApiAddr::Off => "API off".to_string(),
    };
    console.lock().line(&format!(
        "supervising deployment \"{name}\" from {} ({api_note}; Ctrl-C to stop)",
        args.file.display()
    ));

    let code = supervise(&args, &handle, &console, &mut signals).await;
    stop_everything(&name, &handle, &runtime, &console, &mut signals).await;
    // Released only once nothing of the deployment runs.
    drop(state_dir);

    let _ = stop_tx.send(true);
    if let Some(writer) = writer {
        if tokio::time::timeout(TASKS_GRACE, writer).await.is_err() {
            eprintln!("warning: the state file's last write did not finish in time");
        }
    }
    if let Some(server) = server {
        let abort = server.abort_handle();
        if tokio::time::timeout(TASKS_GRACE, server).await.is_err() {
            abort.abort();
        }
    }
    for task in background {
        task.abort();
    }
    code
}

/// Wait for stability as the flags say, then supervise until a stop signal. The exit
/// code, once it is time to stop.
async fn supervise(
    args: &RunArgs,
    handle: &DeploymentHandle,
    console: &Shared,
    signals: &mut StopSignals,
) -> anyhow::Result<ExitCode> {
    let deadline = args
        .timeout
        .or(args.until_stable.then_some(UNTIL_STABLE_TIMEOUT));
    let outcome = tokio::select! {
        r = handle.wait_stable(deadline.unwrap_or(NO_DEADLINE)) => r,
        _ = signals.recv() => return Ok(ExitCode::SUCCESS),
    };
    match outcome.context("the deployment stopped unexpectedly")? {
        Stabilization::Ready { after } => {
            console.lock().stable(&handle.status(), after);
            if args.until_stable {
                return Ok(ExitCode::SUCCESS);
            }
        }
        Stabilization::TimedOut { failing } => {
            let waited = deadline.unwrap_or(NO_DEADLINE);
            console.lock().timed_out(&handle.status(), waited, &failing);
            if args.until_stable {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    signals.recv().await;
    Ok(ExitCode::SUCCESS)
}

/// Stop every replica gracefully (a second signal kills them at once), then make sure
/// the runtime has nothing left.
async fn stop_everything(
    name: &str,
    handle: &DeploymentHandle,
    runtime: &Backend,
    console: &Shared,
    signals: &mut StopSignals,
) {
    let started = Instant::now();
    {
        let mut c = console.lock();
        c.stopping();
        c.line(&format!(
            "stopping deployment \"{name}\" ({}; Ctrl-C again to kill at once)...",
            size(&handle.status())
        ));
    }
    let graceful = handle.shutdown();
    tokio::pin!(graceful);
    let result = tokio::select! {
        r = &mut graceful => r,
        _ = signals.recv() => {
            console.lock().line("killing every replica now");
            runtime.shutdown().await;
            match tokio::time::timeout(TASKS_GRACE, graceful).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "deployment shutdown");
    }
    // Kills and reaps whatever is left (nothing, after a clean shutdown) and refuses any
    // further start.
    runtime.shutdown().await;
    console.lock().line(&format!(
        "stopped deployment \"{name}\" in {}",
        herdsman_probe::humanize(started.elapsed())
    ));
}

/// The first flag given that a cluster coordinator does not honour yet; refused rather
/// than ignored (an ignored --api-token would leave the API open).
fn not_for_a_cluster(args: &RunArgs) -> Option<&'static str> {
    [
        (args.api_token.is_some(), "--api-token"),
        (args.api_flags.api_token_file.is_some(), "--api-token-file"),
        (args.api_insecure, "--api-insecure"),
        (args.timeout.is_some(), "--timeout"),
        (args.until_stable, "--until-stable"),
        (args.no_adopt, "--no-adopt"),
        (args.runtime.is_some(), "--runtime"),
        (args.notify.is_some(), "--notify"),
    ]
    .into_iter()
    .find_map(|(given, flag)| given.then_some(flag))
}

/// Print the spec's problems the way `herdsman validate` does, and its exit code: 2 for
/// an invalid spec, 1 for one that cannot be read.
pub(crate) fn report_spec_error(e: SpecError) -> ExitCode {
    match e {
        SpecError::Invalid { problems } => {
            for p in &problems {
                eprintln!("{}", crate::terminal::escape(&p.to_string()));
            }
            ExitCode::from(EXIT_INVALID)
        }
        e @ SpecError::Read { .. } => {
            eprintln!("{:#}", anyhow::Error::new(e));
            ExitCode::FAILURE
        }
    }
}

/// The console, shared by the tasks that print.
#[derive(Clone)]
struct Shared(Arc<Mutex<Console>>);

impl Shared {
    fn new(console: Console) -> Shared {
        Shared(Arc::new(Mutex::new(console)))
    }

    fn lock(&self) -> MutexGuard<'_, Console> {
        // A panic while printing leaves at worst a half-drawn block.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Feed the console: notable events as lines, progress and stability on a timer.
async fn show(
    console: Shared,
    mut events: EventStream,
    board: StatusBoard,
    mut stop: watch::Receiver<bool>,
    tty: bool,
) {
    let every = if tty {
        Duration::from_millis(200)
    } else {
        Duration::from_millis(500)
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            r = events.recv() => match r {
                Some(Received::Event(e)) => {
                    if let Some(text) = notice(&e.kind) {
                        // The event's own JSON, so machine logs carry the same fields
                        // as /v1/events.
                        let json = serde_json::to_string(&e).unwrap_or_default();
                        tracing::info!(event = %json, "{text}");
                        let mut c = console.lock();
                        if c.wants_events() {
                            c.line(&text);
                        }
                    }
                    if let EventKind::DeploymentStable { after_ms } = e.kind {
                        let status = board.snapshot();
                        console.lock().regained(&status, Duration::from_millis(after_ms));
                    } else if matches!(e.kind, EventKind::DeploymentUnstable) {
                        // Said now: the lapse may be over before the next tick.
                        let status = board.snapshot();
                        console.lock().lost(&status);
                    }
                }
                Some(Received::Missed(n)) => {
                    console.lock().line(&format!("({n} events not shown: the console fell behind)"));
                }
                None => return,
            },
            _ = tick.tick() => {
                let status = board.snapshot();
                let mut c = console.lock();
                c.progress(&status);
                c.watch(&status);
            }
            _ = crate::stop::stopped(&mut stop) => return,
        }
    }
}

/// SIGINT and SIGTERM, as one stream; and SIGHUP, handled from the start (its default
/// action would kill herdsman and leave every replica, each in its own process group,
/// running) and taken by the task that re-applies the spec file on it.
struct StopSignals {
    int: Signal,
    term: Signal,
    hup: Option<Signal>,
}

impl StopSignals {
    fn new() -> anyhow::Result<StopSignals> {
        Ok(StopSignals {
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            hup: Some(signal(SignalKind::hangup()).context("cannot handle SIGHUP")?),
        })
    }

    /// The next SIGINT or SIGTERM.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}
