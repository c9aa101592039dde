//! Rows measured with real processes on `ProcessRuntime`: crash → replacement running, and
//! the supervisor's memory with idle processes. Every process started is killed and reaped
//! before a measurement returns, and that is checked.

use std::sync::Arc;
use std::time::Duration;

use herdsman::core::{spawn_deployment, DeploymentHandle, DeploymentOptions, EventKind, Received};
use herdsman::runtime::{ProcessConfig, ProcessRuntime};
use tokio::time::Instant;

use super::fixtures::{bounded, deployment, running, service, shutdown, stable};
use super::floors::{kill9, CgroupEntry, FloorBreakdown, ProcessRespawner, SETTLE};
use super::instrumented::Instrumented;
use super::procfs;

const PATIENCE: Duration = Duration::from_secs(60);

/// A process that has not been reaped yet; a zombie counts as gone.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Stop everything and check that no process the deployment ever ran is left.
async fn stop_all(handle: &DeploymentHandle, rt: &ProcessRuntime, pids: &[u32]) {
    shutdown(handle).await;
    bounded("runtime shutdown", PATIENCE, rt.shutdown()).await;
    let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "processes left running: {left:?}");
}

/// Where the time of one crash → replacement goes, per sample.
#[derive(Debug, Default)]
pub(crate) struct Breakdown {
    /// SIGKILL → the container actor starts tearing the old incarnation down (exit reaped,
    /// reported, decided, restart sent).
    pub(crate) detect_and_decide: Vec<Duration>,
    /// → `start` called (old incarnation removed, new one created).
    pub(crate) replace: Vec<Duration>,
    /// → `start` returned (the process spawned).
    pub(crate) spawn: Vec<Duration>,
    /// → `ReplicaStarted` received.
    pub(crate) report: Vec<Duration>,
}

/// The crash row's measurements: herdsman's and its floor's, taken in turns.
pub(crate) struct CrashRow {
    pub(crate) ours: Vec<Duration>,
    pub(crate) parts: Breakdown,
    pub(crate) floor: Vec<Duration>,
    pub(crate) floor_parts: FloorBreakdown,
    /// The directory the runtime makes its cgroups in (`None`: process groups).
    pub(crate) cgroups: Option<std::path::PathBuf>,
}

/// Crash → replacement running: a replica (`sleep 1000`) is SIGKILLed; until the
/// `ReplicaStarted` event of its replacement (a new pid) is received. Four replicas,
/// killed round robin.
///
/// The floor ([`ProcessRespawner`], its processes born in fresh cgroups beside herdsman's when
/// containment is on) runs alongside, and is killed once after each of herdsman's
/// kills: the two are measured in turns, under the same load from the shared host,
/// rather than one after the other.
pub(crate) async fn crash_to_running(samples: usize) -> CrashRow {
    const REPLICAS: u32 = 4;
    let warmup = (samples / 10).max(1);
    let process = Arc::new(ProcessRuntime::new(ProcessConfig::default()));
    let cgroups = process.cgroup_base().map(std::path::Path::to_path_buf);
    let rt = Arc::new(Instrumented::new(process.clone()));
    let svc = running(service("sleeper", REPLICAS), &["sleep", "1000"]);
    let handle = spawn_deployment(
        deployment(vec![svc]),
        rt.clone(),
        DeploymentOptions::default(),
    )
    .await
    .expect("deployment spawns");
    // Received here, as the floor's new pid is: one hop from the sender, no relay task.
    let mut events = handle.subscribe();
    stable(&handle, PATIENCE).await;
    let mut floor = ProcessRespawner::start(cgroups.clone(), CgroupEntry::Born).await;
    let (mut floor_out, mut floor_parts) = (Vec::new(), FloorBreakdown::default());
    let mut pids = Vec::new();
    let mut out = Vec::with_capacity(samples);
    let mut breakdown = Breakdown::default();
    for i in 0..warmup + samples {
        let replica = i as u32 % REPLICAS;
        // The stream replays everything since spawn: only a later generation than the one
        // killed is its replacement.
        let (pid, killed) = handle
            .board()
            .replica("sleeper", replica)
            .and_then(|r| Some((r.pid?, r.container?.generation)))
            .expect("a running replica has a pid and a container");
        pids.push(pid);
        tokio::time::sleep(SETTLE).await;
        rt.arm_trace("sleeper", replica);
        let t0 = Instant::now();
        kill9(pid);
        let at = loop {
            let received = bounded("replacement", PATIENCE, events.recv())
                .await
                .expect("the event stream goes on");
            let at = Instant::now();
            let Received::Event(e) = received else {
                panic!("the bench fell behind the event stream: {received:?}");
            };
            if let EventKind::ReplicaStarted {
                replica: r,
                generation,
                pid: Some(new),
                ..
            } = e.kind
            {
                if r == replica && generation > killed {
                    pids.push(new);
                    break at;
                }
            }
        };
        let trace = rt.take_trace();
        if i >= warmup {
            out.push(at - t0);
            if let (Some(stop), Some(start), Some(spawned)) =
                (trace.at("stop"), trace.at("start"), trace.at("started"))
            {
                breakdown.detect_and_decide.push(stop - t0);
                breakdown.replace.push(start - stop);
                breakdown.spawn.push(spawned - start);
                breakdown.report.push(at.saturating_duration_since(spawned));
            }
        }
        // The board shows the replacement's pid before the next kill of this replica.
        bounded("board updated", PATIENCE, async {
            while handle
                .board()
                .replica("sleeper", replica)
                .and_then(|r| r.pid)
                .is_none_or(|p| p == pid)
            {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        })
        .await;
        let floor_sample = floor.sample().await;
        if i >= warmup {
            floor_parts.record(floor_sample, &mut floor_out);
        }
    }
    floor.stop().await;
    stop_all(&handle, &process, &pids).await;
    CrashRow {
        ours: out,
        parts: breakdown,
        floor: floor_out,
        floor_parts,
        cgroups,
    }
}

/// The supervisor's resident memory with `n` idle real processes (`sleep 1000`), and its
/// resident memory before them.
pub(crate) async fn idle_processes(n: u32) -> IdleRss {
    let before = procfs::rss_split();
    let rt = Arc::new(ProcessRuntime::new(ProcessConfig::default()));
    let svc = running(service("idle", n), &["sleep", "1000"]);
    let handle = spawn_deployment(
        deployment(vec![svc]),
        rt.clone(),
        DeploymentOptions::default(),
    )
    .await
    .expect("deployment spawns");
    stable(&handle, PATIENCE).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with = procfs::rss_split();
    let pids: Vec<u32> = handle
        .status()
        .services
        .iter()
        .flat_map(|s| &s.replicas)
        .filter_map(|r| r.pid)
        .collect();
    assert_eq!(pids.len(), n as usize, "every replica runs");
    stop_all(&handle, &rt, &pids).await;
    IdleRss { before, with }
}

/// The bench process's resident set, (anonymous, file-backed) bytes, before the idle
/// replicas and with them.
pub(crate) struct IdleRss {
    pub(crate) before: (u64, u64),
    pub(crate) with: (u64, u64),
}
