//! `herdsman agent`: a cluster node that runs the replicas its coordinator places on it,
//! and keeps supervising them while the coordinator is away.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use herdsman_cluster::{
    read_cookie, run_agent, start_node_server, AgentConfig, AgentNotice, NodeWorker,
};
use herdsman_core::DeploymentOptions;
use herdsman_runtime::{ProcessConfig, ProcessRuntime, Runtime};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

/// Flags of `herdsman agent`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AgentArgs {
    /// This node's name ([A-Za-z0-9._-], unique in the cluster).
    #[arg(long, value_name = "NAME")]
    node: String,
    /// Where this node listens for the other nodes (IP:PORT).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// The coordinator's address (IP:PORT or HOST:PORT).
    #[arg(long, value_name = "ADDR")]
    join: String,
    /// The file holding the cluster's shared secret (mode 600).
    #[arg(long, value_name = "FILE")]
    cookie_file: PathBuf,
    /// Labels of this node, `k=v` (repeat the flag or separate with commas).
    #[arg(long, value_name = "K=V", value_delimiter = ',', value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// How often to report to the coordinator (renewing this node's lease).
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, default_value = "1s")]
    heartbeat: Duration,
    #[command(flatten)]
    tls: crate::node_tls::TlsFlags,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("expected k=v, got {s:?}")),
    }
}

/// SIGINT and SIGTERM, as one stream.
pub(crate) struct StopSignals {
    int: Signal,
    term: Signal,
}

impl StopSignals {
    /// The next SIGINT or SIGTERM.
    pub(crate) async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// Handle SIGINT and SIGTERM from now on.
///
/// # Errors
/// A handler cannot be installed.
pub(crate) fn stop_signals() -> anyhow::Result<StopSignals> {
    Ok(StopSignals {
        int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
    })
}

/// Run the agent until SIGINT or SIGTERM, then stop its replicas.
///
/// # Errors
/// The cookie cannot be read or the listen address cannot be bound.
pub(crate) async fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(crate::logging::LogFormat::Text);
    if let Err(why) = herdsman_spec::node_name(&args.node) {
        eprintln!("error: --node: {why}");
        return Ok(ExitCode::from(crate::run::EXIT_INVALID));
    }
    let cookie = read_cookie(&args.cookie_file)?;
    let tls = match args.tls.load() {
        Ok(tls) => tls,
        Err(code) => return Ok(code),
    };
    if tls.is_some() {
        if let Err(e) = herdsman_cluster::server_name(&args.join) {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(crate::run::EXIT_INVALID));
        }
    }
    let mut stop = stop_signals()?;
    let (server, sessions) =
        start_node_server(&args.node, args.listen, cookie, tls.as_ref()).await?;
    let runtime = Arc::new(ProcessRuntime::new(ProcessConfig::default()));
    let dyn_runtime: Arc<dyn Runtime> = runtime.clone();
    let worker = NodeWorker::new(dyn_runtime, DeploymentOptions::default());
    let config = AgentConfig {
        node: args.node.clone(),
        labels: args.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        join: args.join.clone(),
        heartbeat: args.heartbeat,
        tls,
    };
    println!(
        "agent {} on {} joining {} (Ctrl-C to stop)",
        args.node, args.listen, args.join
    );
    let (notices_tx, mut notices) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(run_agent(
        config,
        server.clone(),
        sessions,
        worker,
        notices_tx,
        stop_rx,
    ));
    let mut refused_said = false;
    loop {
        tokio::select! {
            _ = stop.recv() => break,
            Some(n) = notices.recv() => match n {
                AgentNotice::Joined => {
                    refused_said = false;
                    println!("joined the coordinator at {}", args.join);
                }
                AgentNotice::Refused { peer, why } => {
                    if !refused_said {
                        eprintln!("error: {peer} refused this node: {why}; retrying");
                        refused_said = true;
                    }
                }
                AgentNotice::CoordinatorLost => println!("the coordinator is gone: replicas keep running; reconnecting"),
                AgentNotice::Fenced { epoch } => println!("fenced (epoch {epoch}): stopped the replicas placed elsewhere meanwhile"),
            },
        }
    }
    println!("stopping this node's replicas...");
    let _ = stop_tx.send(());
    if let Ok(mut worker) = agent.await {
        worker.stop_all().await;
    }
    runtime.shutdown().await;
    server.stop(None);
    println!("stopped");
    Ok(ExitCode::SUCCESS)
}
