//! Cluster simulation: several in-process nodes, each running its share of a deployment
//! on its own `SimRuntime`, report to one coordinator's view as agents do over the wire;
//! one node is then cut off (it stops reporting, as a frozen or partitioned node does)
//! and the example reports how long the coordinator took to notice, to have the lost
//! replicas running elsewhere, and to be stable again (all measured from the cut). One
//! JSON line on stdout.
//!
//! ```text
//! cargo run --release -p herdsman-cluster --example cluster_fleet -- --nodes 5 --replicas 200 --lease 2s
//! ```
//!
//! The nodes share the coordinator's view in-process (`run_local_node`, the path the
//! coordinator's own share takes), so what is measured is the lease, placement and the
//! nodes' supervision, not the network; `tests/cluster.rs` in herdsman-cli measures the
//! same over real sessions with real processes.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use herdsman_cluster::{keep_leases, run_local_node, ClusterView, NodeWorker, SharedView};
use herdsman_core::DeploymentOptions;
use herdsman_runtime::{Runtime, SimRuntime};
use herdsman_spec::{Command, Deployment, Scale, Service, ServiceKind, Template};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// A simulated cluster losing one node.
#[derive(Debug, Parser)]
struct Args {
    /// Nodes, the coordinator included.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Replicas of the one service, spread over the nodes.
    #[arg(long, default_value_t = 40)]
    replicas: u32,
    /// How often nodes report.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100ms")]
    heartbeat: Duration,
    /// A node silent this long is lost.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    lease: Duration,
}

fn spec(replicas: u32) -> Deployment {
    Deployment {
        name: "fleet".into(),
        services: vec![Service {
            command: Some(Command {
                entrypoint: vec![Template::literal("sleep")],
                args: vec![Template::literal("3600")],
                workdir: None,
            }),
            scale: Scale::Fixed { replicas },
            stop_grace_period: Duration::from_millis(200),
            ..Service::new("web", ServiceKind::Service)
        }],
    }
}

/// Wait until `done` holds for the view, polling every millisecond; exit after `limit`.
async fn until(view: &SharedView, limit: Duration, done: impl Fn(&SharedView) -> bool) {
    let started = Instant::now();
    while !done(view) {
        if started.elapsed() > limit {
            eprintln!("gave up after {limit:?}");
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let spec = spec(args.replicas);
    let start = Instant::now();
    let view = SharedView::new(ClusterView::new(spec, "n0", args.lease, start + args.lease));
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (stop_all, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::spawn(keep_leases(
        view.clone(),
        Duration::from_millis(10),
        events_tx,
        stopped(stop_rx.clone()),
    ));
    let mut cut = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..args.nodes {
        let runtime: Arc<dyn Runtime> = Arc::new(SimRuntime::new(i as u64));
        let worker = NodeWorker::new(runtime, DeploymentOptions::default());
        let (cut_tx, cut_rx) = oneshot::channel::<()>();
        let stop = stopped(stop_rx.clone());
        let node = tokio::spawn(run_local_node(
            view.clone(),
            worker,
            format!("n{i}"),
            args.heartbeat,
            async move {
                tokio::select! {
                    _ = cut_rx => {}
                    _ = stop => {}
                }
            },
        ));
        cut.push(Some(cut_tx));
        nodes.push(node);
    }
    let stable = |v: &SharedView| v.lock().status().stable;
    until(&view, Duration::from_secs(60), stable).await;
    let to_stable = start.elapsed();

    // Cut off the last node: it stops reporting; its replicas run on, unsupervised by
    // the coordinator, as on a frozen or partitioned machine.
    let victim = format!("n{}", args.nodes - 1);
    let lost_slots = view
        .lock()
        .status()
        .services
        .iter()
        .flat_map(|s| s.replicas.iter())
        .filter(|r| r.node.as_deref() == Some(victim.as_str()))
        .count();
    if let Some(tx) = cut.last_mut().and_then(Option::take) {
        let _ = tx.send(());
    }
    let cut_at = Instant::now();
    while events.try_recv().is_ok() {}
    let detect = loop {
        match events.recv().await {
            Some(herdsman_cluster::ViewEvent::Lost(n)) if n == victim => break cut_at.elapsed(),
            Some(_) => {}
            None => return,
        }
    };
    let elsewhere = |v: &SharedView| {
        v.lock().status().services.iter().all(|s| {
            s.replicas.iter().all(|r| {
                r.node.as_deref() != Some(victim.as_str())
                    && r.status.state == herdsman_core::ReplicaState::Running
            })
        })
    };
    until(&view, Duration::from_secs(60), elsewhere).await;
    let reschedule = cut_at.elapsed();
    until(&view, Duration::from_secs(60), stable).await;
    let restable = cut_at.elapsed();
    // The cut-off node's replicas run on until it returns and is fenced.
    let stale = view
        .lock()
        .status()
        .services
        .iter()
        .map(|s| s.elsewhere.len())
        .sum::<usize>();
    println!(
        "{}",
        serde_json::json!({
            "nodes": args.nodes,
            "replicas": args.replicas,
            "lease_ms": args.lease.as_millis() as u64,
            "heartbeat_ms": args.heartbeat.as_millis() as u64,
            "time_to_stable_ms": to_stable.as_millis() as u64,
            "lost_node_slots": lost_slots,
            "time_to_detect_ms": detect.as_millis() as u64,
            "time_to_reschedule_ms": reschedule.as_millis() as u64,
            "time_to_stable_again_ms": restable.as_millis() as u64,
            "stale_replicas_on_lost_node": stale,
        })
    );
    let _ = stop_all.send(true);
    for node in nodes {
        if let Ok(mut worker) = node.await {
            worker.stop_all().await;
        }
    }
}
