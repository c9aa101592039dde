//! `herdsman run FILE --node NAME --listen ADDR --cookie-file F [--tls-cert C --tls-key K
//! --tls-ca CA]`: the coordinator of a
//! cluster. It runs its own share of the replicas, answers the agents' reports with
//! their shares, keeps their leases, and serves the cluster's `/v1/status` and
//! `/v1/nodes`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use herdsman_cluster::{
    keep_leases, read_cookie, run_local_node, start_coordinator, start_node_server, ClusterView,
    NodeWorker, SessionEvent, SharedView, ViewEvent,
};
use herdsman_core::DeploymentOptions;
use herdsman_runtime::{ProcessConfig, Runtime};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::api::ApiAddr;
use crate::backend::Backend;
use crate::state_dir;

/// How often the coordinator checks the nodes' leases.
const LEASE_TICK: Duration = Duration::from_millis(50);

/// The cluster flags of `herdsman run`: with `--node`, it coordinates a cluster.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CoordinatorFlags {
    /// Coordinate a cluster as this node (name: [A-Za-z0-9._-], unique in the cluster).
    #[arg(long, value_name = "NAME", requires_all = ["listen", "cookie_file"])]
    pub(crate) node: Option<String>,
    /// Where this node listens for the other nodes (IP:PORT).
    #[arg(long, value_name = "ADDR", requires = "node")]
    pub(crate) listen: Option<SocketAddr>,
    /// The file holding the cluster's shared secret (mode 600); never given on the
    /// command line, where other users could read it.
    #[arg(long, value_name = "FILE", requires = "node")]
    pub(crate) cookie_file: Option<PathBuf>,
    /// How often nodes report (and renew their lease).
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, default_value = "1s")]
    pub(crate) heartbeat: Duration,
    /// A node silent this long is lost: its replicas are placed on live nodes.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, default_value = "5s")]
    pub(crate) node_lost_after: Duration,
    #[command(flatten)]
    pub(crate) tls: crate::node_tls::TlsFlags,
}

/// Coordinate the deployment in `file` until SIGINT or SIGTERM.
///
/// # Errors
/// The cookie cannot be read, an address cannot be bound, the state directory cannot be
/// opened or the runtime cannot start.
pub(crate) async fn coordinate(
    file: &Path,
    api: ApiAddr,
    state_root: Option<PathBuf>,
    flags: &CoordinatorFlags,
) -> anyhow::Result<ExitCode> {
    let (Some(node), Some(listen), Some(cookie_file)) =
        (&flags.node, flags.listen, &flags.cookie_file)
    else {
        anyhow::bail!("--node needs --listen and --cookie-file");
    };
    if let Err(why) = herdsman_spec::node_name(node) {
        eprintln!("error: --node: {why}");
        return Ok(ExitCode::from(crate::run::EXIT_INVALID));
    }
    let spec = match herdsman_spec::load(file) {
        Ok(spec) => spec,
        Err(e) => return Ok(crate::run::report_spec_error(e)),
    };
    if let ApiAddr::At(addr) = api {
        if !addr.ip().is_loopback() {
            // The coordinator's API has no token support yet.
            eprintln!("error: a cluster coordinator serves its API on loopback only (got {addr})");
            return Ok(ExitCode::from(crate::run::EXIT_INVALID));
        }
    }
    let cookie = read_cookie(cookie_file)?;
    let tls = match flags.tls.load() {
        Ok(tls) => tls,
        Err(code) => return Ok(code),
    };
    let mut stop = crate::agent::stop_signals()?;

    let state_dir = match state_dir::open(&state_dir::root(state_root.as_deref()), &spec.name)? {
        state_dir::Opened::Locked(dir) => Some(dir),
        state_dir::Opened::Degraded(why) => {
            eprintln!("warning: {why}");
            None
        }
    };
    let listener = match api {
        ApiAddr::At(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve the API on {addr}"))?,
        ),
        ApiAddr::Off => None,
    };
    let (server, mut sessions) = start_node_server(node, listen, cookie, tls.as_ref()).await?;

    let process = ProcessConfig {
        log_dir: state_dir.as_ref().map(|d| d.logs()),
        state_dir: state_dir.as_ref().map(|d| d.path().to_path_buf()),
        ..ProcessConfig::default()
    };
    let runtime = Arc::new(Backend::new(&spec, None, process).await?);
    let dyn_runtime: Arc<dyn Runtime> = runtime.clone();
    let worker = NodeWorker::new(dyn_runtime, DeploymentOptions::default());

    let name = spec.name.clone();
    let started = Instant::now();
    let view = SharedView::new(ClusterView::new(
        spec,
        node,
        flags.node_lost_after,
        started + flags.node_lost_after,
    ));
    let coordinator = start_coordinator(view.clone()).await?;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let leases = tokio::spawn(keep_leases(
        view.clone(),
        LEASE_TICK,
        events_tx,
        stopped(stop_rx.clone()),
    ));
    let local = tokio::spawn(run_local_node(
        view.clone(),
        worker,
        node.clone(),
        flags.heartbeat,
        stopped(stop_rx.clone()),
    ));
    let api_note = match &listener {
        Some(l) => format!("API on http://{}", l.local_addr()?),
        None => "API off".into(),
    };
    let serving = listener.map(|l| {
        let app = Router::new()
            .route("/v1/status", get(status))
            .route("/v1/nodes", get(nodes))
            .route("/healthz", get(|| async { "ok\n" }))
            .with_state(view.clone());
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move {
            let _ = axum::serve(l, app).with_graceful_shutdown(stop).await;
        })
    });
    println!(
        "coordinating deployment \"{name}\" from {} as node {node} on {listen} ({api_note}; Ctrl-C to stop)",
        file.display()
    );

    let mut was_stable = false;
    let mut changes = view.subscribe();
    let mut check = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            _ = stop.recv() => break,
            Some(e) = events.recv() => match e {
                ViewEvent::Joined(n) => println!("node {n} joined"),
                ViewEvent::Lost(n) => println!("node {n} lost: no heartbeat for {}; placing its replicas on live nodes", humantime::format_duration(flags.node_lost_after)),
                ViewEvent::Returned { node, epoch } => println!("node {node} returned: fenced (epoch {epoch}), its stale replicas are stopped"),
                ViewEvent::Placing => println!("placing replicas on {} node(s)", view.lock().nodes(Instant::now()).len()),
            },
            Some(e) = sessions.recv() => match e {
                SessionEvent::Closed { peer, authenticated: false } => {
                    let hint = if tls.is_some() { "wrong cookie?" } else { "wrong cookie, or TLS on the other node?" };
                    println!("refused a node session from {peer}: authentication failed ({hint})");
                }
                SessionEvent::Refused { peer, why } => println!("refused a node session from {peer}: {why}"),
                _ => {}
            },
            _ = check.tick() => {}
            _ = changes.changed() => {}
        }
        {
            let stable = view.lock().status().stable;
            if stable && !was_stable {
                tracing::info!(target: "herdsman_cluster::latency", "cluster stable");
                println!(
                    "deployment \"{name}\" is stable across the cluster after {}",
                    herdsman_probe::humanize(started.elapsed())
                );
            } else if !stable && was_stable {
                tracing::info!(target: "herdsman_cluster::latency", "cluster no longer stable");
                println!("deployment \"{name}\" is no longer stable");
            }
            was_stable = stable;
        }
    }

    println!("stopping this node's replicas (agents keep theirs)...");
    let _ = stop_tx.send(true);
    coordinator.stop(None);
    if let Ok(mut worker) = local.await {
        worker.stop_all().await;
    }
    runtime.shutdown().await;
    let _ = leases.await;
    if let Some(s) = serving {
        let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
    }
    server.stop(None);
    drop(state_dir);
    println!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn status(State(view): State<SharedView>) -> Json<herdsman_cluster::ClusterStatus> {
    Json(view.lock().status())
}

async fn nodes(State(view): State<SharedView>) -> Json<serde_json::Value> {
    let nodes = view.lock().nodes(Instant::now());
    Json(serde_json::json!({ "nodes": nodes }))
}
