//! Rows that need many replicas in one process: memory per replica and the CPU of probing
//! them, for herdsman and for the floor (bare actor pairs, bare interval tasks). Each
//! measurement is best run in a fresh process (`--child`), so the allocator's state from
//! earlier rows does not flatter or penalise it.

use std::sync::Arc;
use std::time::Duration;

use herdsman::core::{spawn_deployment, DeploymentOptions};
use herdsman::runtime::SimRuntime;
use serde_json::json;
use tokio::time::Instant;

use super::fixtures::{deployment, probed, service, shutdown, stable};
use super::floors::{cores_over, ActorPairs, IntervalTasks};
use super::procfs;

/// Replicas per service when a fleet is split into services.
const PER_SERVICE: u32 = 1000;

/// What one scale measurement found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ScaleResult {
    pub(crate) n: u32,
    /// Resident memory before and after the replicas (or actors) exist, in bytes.
    pub(crate) rss_before: u64,
    pub(crate) rss_after: u64,
    /// The simulated containers' own share (SimRuntime's estimate), in bytes.
    pub(crate) sim_bytes: u64,
    /// Cores used over the CPU window, if one was asked for.
    pub(crate) cores: Option<f64>,
    /// Probe checks (or interval ticks) per second over the window.
    pub(crate) rate: Option<f64>,
}

impl ScaleResult {
    pub(crate) fn per_replica_bytes(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / f64::from(self.n.max(1))
    }

    pub(crate) fn to_json(self) -> serde_json::Value {
        json!({
            "n": self.n, "rss_before": self.rss_before, "rss_after": self.rss_after,
            "sim_bytes": self.sim_bytes, "cores": self.cores, "rate": self.rate,
        })
    }

    pub(crate) fn from_json(v: &serde_json::Value) -> Option<ScaleResult> {
        Some(ScaleResult {
            n: u32::try_from(v.get("n")?.as_u64()?).ok()?,
            rss_before: v.get("rss_before")?.as_u64()?,
            rss_after: v.get("rss_after")?.as_u64()?,
            sim_bytes: v.get("sim_bytes")?.as_u64()?,
            cores: v.get("cores").and_then(serde_json::Value::as_f64),
            rate: v.get("rate").and_then(serde_json::Value::as_f64),
        })
    }
}

/// Touch the code paths once (lazy statics, the runtime's first timers), so the baseline
/// is taken after one-time costs.
async fn warm_up() {
    let sim = Arc::new(SimRuntime::new(0));
    let svc = probed(service("warm", 2), Duration::from_millis(10), None);
    let handle = spawn_deployment(deployment(vec![svc]), sim, DeploymentOptions::default())
        .await
        .expect("deployment spawns");
    stable(&handle, Duration::from_secs(30)).await;
    shutdown(&handle).await;
}

/// `n` supervised replicas on `SimRuntime`, each probed every second (the first check
/// jittered over the first second), in services of 1000: resident memory per replica once
/// every replica is stable and has been probed, then, over `cpu_window`, the cores used.
pub(crate) async fn ours(n: u32, cpu_window: Option<Duration>) -> ScaleResult {
    warm_up().await;
    let services = n.div_ceil(PER_SERVICE);
    let names: Vec<String> = (0..services).map(|i| format!("svc-{i:03}")).collect();
    let specs = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let replicas = PER_SERVICE.min(n - i as u32 * PER_SERVICE);
            probed(service(name, replicas), Duration::from_secs(1), None)
        })
        .collect();
    let sim = Arc::new(SimRuntime::new(4));
    let rss_before = procfs::rss_bytes();
    let handle = spawn_deployment(deployment(specs), sim.clone(), DeploymentOptions::default())
        .await
        .expect("deployment spawns");
    stable(&handle, Duration::from_secs(300)).await;
    // Every replica probed at least once more: probe state and timers in steady state.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss_after = procfs::rss_bytes();
    let sim_bytes = sim.approx_memory() as u64;
    let checks = || -> u64 {
        names
            .iter()
            .filter_map(|s| handle.board().probe_totals(s))
            .map(|t| t.count())
            .sum()
    };
    let (mut cores, mut rate) = (None, None);
    if let Some(window) = cpu_window {
        let (c0, t0) = (checks(), Instant::now());
        cores = Some(cores_over(window).await);
        rate = Some((checks() - c0) as f64 / t0.elapsed().as_secs_f64());
    }
    shutdown(&handle).await;
    ScaleResult {
        n,
        rss_before,
        rss_after,
        sim_bytes,
        cores,
        rate,
    }
}

/// The floor: `n` pairs of bare actors (parent and linked child) for memory; then `n`
/// bare tokio tasks ticking a 1 s interval for CPU.
pub(crate) async fn floor(n: u32, cpu_window: Option<Duration>) -> ScaleResult {
    // The same one-time costs as `ours` pays before its baseline.
    ActorPairs::spawn(2).await.stop().await;
    let rss_before = procfs::rss_bytes();
    let pairs = ActorPairs::spawn(n as usize).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_after = procfs::rss_bytes();
    let (mut cores, mut rate) = (None, None);
    if let Some(window) = cpu_window {
        let tasks = IntervalTasks::spawn(n as usize, Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (k0, t0) = (
            tasks.ticks.load(std::sync::atomic::Ordering::Relaxed),
            Instant::now(),
        );
        cores = Some(cores_over(window).await);
        let k1 = tasks.ticks.load(std::sync::atomic::Ordering::Relaxed);
        rate = Some((k1 - k0) as f64 / t0.elapsed().as_secs_f64());
    }
    pairs.stop().await;
    ScaleResult {
        n,
        rss_before,
        rss_after,
        sim_bytes: 0,
        cores,
        rate,
    }
}
