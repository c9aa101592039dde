//! Rows measured with real containers on `DockerRuntime` against the local dockerd:
//! container crash → replacement running beside a bare bollard loop doing the same daemon
//! work, and a fleet of containers from spec to stable. They run only when asked for
//! (`--only docker`), since they need a daemon and the test image that `.ci/docker-setup`
//! builds; every container started is removed before a measurement returns.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use herdsman::core::{spawn_deployment, DeploymentOptions, EventKind, Received};
use herdsman::spec::{Command, Deployment, PullPolicy, Service, Template};
use herdsman_docker::{DockerConfig, DockerRuntime};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::fixtures::{bounded, service, shutdown, stable, up_then_down};
use super::floors::{kill9, SETTLE};
use super::instrumented::Instrumented;

const PATIENCE: Duration = Duration::from_secs(120);
const IMAGE: &str = "herdsman-test/busybox:latest";

/// A container service that sleeps: `exec sleep 1000` in the test image.
fn sleeper(name: &str, replicas: u32) -> Service {
    let mut s = service(name, replicas);
    s.image = Some(IMAGE.into());
    s.pull_policy = PullPolicy::Never;
    s.command = Some(Command {
        entrypoint: Vec::new(),
        args: ["sleep", "1000"]
            .iter()
            .map(|a| Template::literal(*a))
            .collect(),
        workdir: None,
    });
    s.stop_grace_period = Duration::ZERO;
    s
}

fn deployment(name: &str, services: Vec<Service>) -> Deployment {
    Deployment {
        name: name.to_string(),
        services,
    }
}

/// The runtime, or `None` with the reason printed (a panic when `HERDSMAN_DOCKER=required`).
pub(crate) async fn connect() -> Option<Arc<DockerRuntime>> {
    match DockerRuntime::connect(DockerConfig::default()).await {
        Ok(rt) => Some(Arc::new(rt)),
        Err(e) if std::env::var("HERDSMAN_DOCKER").is_ok_and(|v| v == "required") => {
            panic!("HERDSMAN_DOCKER=required but {e}")
        }
        Err(e) => {
            eprintln!("docker rows skipped: {e}");
            None
        }
    }
}

/// Force-remove every container labelled with `deployment` (and the floor's, by name).
async fn remove_all(docker: &Docker, label: &str) {
    let filters = HashMap::from([("label", vec![label.to_string()])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    for c in docker
        .list_containers(Some(options))
        .await
        .unwrap_or_default()
    {
        if let Some(id) = c.id {
            let rm = RemoveContainerOptionsBuilder::default().force(true).build();
            let _ = docker.remove_container(&id, Some(rm)).await;
        }
    }
}

/// Where the time of one container crash → replacement goes, per sample.
#[derive(Debug, Default)]
pub(crate) struct Breakdown {
    /// SIGKILL → the tree asks to stop the old incarnation (wait answered, exit inspected,
    /// reported, decided).
    pub(crate) detect_and_decide: Vec<Duration>,
    /// → `start` called (old container removed, new one created).
    pub(crate) replace: Vec<Duration>,
    /// → `start` returned (started, pid inspected).
    pub(crate) start: Vec<Duration>,
}

/// Crash → replacement running: a container's main process is SIGKILLed by host pid; until
/// the replacement's `ReplicaStarted` event (a new pid) is received. Two replicas, killed
/// round robin.
pub(crate) async fn crash_to_running(
    rt: Arc<DockerRuntime>,
    samples: usize,
) -> (Vec<Duration>, Breakdown) {
    const REPLICAS: u32 = 2;
    let name = format!("bench-crash-{}", std::process::id());
    let inst = Arc::new(Instrumented::new(rt.clone()));
    let handle = spawn_deployment(
        deployment(&name, vec![sleeper("sleeper", REPLICAS)]),
        inst.clone(),
        DeploymentOptions::default(),
    )
    .await
    .expect("deployment spawns");
    let mut events = handle.subscribe();
    let (tx, mut started) = mpsc::unbounded_channel::<((u32, Option<u32>), Instant)>();
    let stamper = tokio::spawn(async move {
        while let Some(received) = events.recv().await {
            if let Received::Event(e) = received {
                if let EventKind::ReplicaStarted { replica, pid, .. } = e.kind {
                    let _ = tx.send(((replica, pid), Instant::now()));
                }
            }
        }
    });
    stable(&handle, PATIENCE).await;
    let warmup = 1;
    let mut out = Vec::with_capacity(samples);
    let mut breakdown = Breakdown::default();
    for i in 0..warmup + samples {
        let replica = i as u32 % REPLICAS;
        let pid = handle
            .board()
            .replica("sleeper", replica)
            .and_then(|r| r.pid)
            .expect("a running container has a pid");
        tokio::time::sleep(SETTLE).await;
        inst.arm_trace("sleeper", replica);
        let t0 = Instant::now();
        kill9(pid);
        let at = loop {
            let ((r, new), at) = bounded("replacement", PATIENCE, started.recv())
                .await
                .expect("the event stream goes on");
            if r == replica && new.is_some_and(|p| p != pid) && at >= t0 {
                break at;
            }
        };
        let trace = inst.take_trace();
        if i >= warmup {
            out.push(at - t0);
            if let (Some(stop), Some(start), Some(done)) =
                (trace.at("stop"), trace.at("start"), trace.at("started"))
            {
                breakdown.detect_and_decide.push(stop - t0);
                breakdown.replace.push(start - stop);
                breakdown.start.push(done - start);
            }
        }
        bounded("board updated", PATIENCE, async {
            while handle
                .board()
                .replica("sleeper", replica)
                .and_then(|r| r.pid)
                .is_none_or(|p| p == pid)
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
    }
    stamper.abort();
    shutdown(&handle).await;
    rt.shutdown().await;
    (out, breakdown)
}

/// The floor: the same daemon work with bare bollard calls. A container running
/// `sleep 1000` is SIGKILLed by host pid; its `wait` returns; it is inspected (exit code)
/// and removed, and the next one is created, started and inspected (pid).
pub(crate) async fn floor_crash_to_running(samples: usize) -> Vec<Duration> {
    let docker = Docker::connect_with_local_defaults()
        .expect("docker client")
        .negotiate_version()
        .await
        .expect("docker answers");
    let label = format!("io.herdsman.bench-floor={}", std::process::id());
    let body = bollard::models::ContainerCreateBody {
        image: Some(IMAGE.into()),
        cmd: Some(vec!["sleep".into(), "1000".into()]),
        labels: Some(HashMap::from([(
            "io.herdsman.bench-floor".to_string(),
            std::process::id().to_string(),
        )])),
        ..Default::default()
    };
    let create_start = |n: usize| {
        let (docker, body) = (docker.clone(), body.clone());
        async move {
            let name = format!("bench-floor-{}-{n}", std::process::id());
            let options = CreateContainerOptionsBuilder::default().name(&name).build();
            docker
                .create_container(Some(options), body)
                .await
                .expect("create");
            docker.start_container(&name, None).await.expect("start");
            let pid = docker
                .inspect_container(&name, None)
                .await
                .expect("inspect")
                .state
                .and_then(|s| s.pid)
                .expect("pid") as u32;
            (name, pid)
        }
    };
    let mut current = create_start(0).await;
    let mut out = Vec::with_capacity(samples);
    for i in 0..=samples {
        let (name, pid) = current.clone();
        // The wait is pending before the kill, as herdsman's is.
        let waiting = tokio::spawn({
            let (docker, name) = (docker.clone(), name.clone());
            async move {
                let wait = WaitContainerOptionsBuilder::default()
                    .condition("not-running")
                    .build();
                docker.wait_container(&name, Some(wait)).next().await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t0 = Instant::now();
        kill9(pid);
        let _ = bounded("floor wait", PATIENCE, waiting).await;
        let _ = docker.inspect_container(&name, None).await;
        let rm = RemoveContainerOptionsBuilder::default().force(true).build();
        let _ = docker.remove_container(&name, Some(rm)).await;
        current = create_start(i + 1).await;
        if i > 0 {
            out.push(t0.elapsed());
        }
    }
    remove_all(&docker, &label).await;
    out
}

/// A fleet of `n` containers from spec to stable: `spawn_deployment` of one `n`-replica
/// service until `wait_stable` answers; and how long the shutdown (stop and remove all)
/// took. The floor: the same `n` creates and starts issued concurrently with bare bollard.
pub(crate) async fn fleet(rt: Arc<DockerRuntime>, n: u32) -> (Duration, Duration, Duration) {
    let name = format!("bench-fleet-{}", std::process::id());
    let (to_stable, down) = up_then_down(
        deployment(&name, vec![sleeper("fleet", n)]),
        rt.clone(),
        PATIENCE,
    )
    .await;
    rt.shutdown().await;

    let docker = Docker::connect_with_local_defaults()
        .expect("docker client")
        .negotiate_version()
        .await
        .expect("docker answers");
    let label = format!("io.herdsman.bench-fleet-floor={}", std::process::id());
    let body = bollard::models::ContainerCreateBody {
        image: Some(IMAGE.into()),
        cmd: Some(vec!["sleep".into(), "1000".into()]),
        labels: Some(HashMap::from([(
            "io.herdsman.bench-fleet-floor".to_string(),
            std::process::id().to_string(),
        )])),
        ..Default::default()
    };
    let t2 = Instant::now();
    let starts = (0..n).map(|i| {
        let (docker, body) = (docker.clone(), body.clone());
        async move {
            let name = format!("bench-fleet-floor-{}-{i}", std::process::id());
            let options = CreateContainerOptionsBuilder::default().name(&name).build();
            docker
                .create_container(Some(options), body)
                .await
                .expect("create");
            docker.start_container(&name, None).await.expect("start");
        }
    });
    bounded("floor fleet", PATIENCE, futures::future::join_all(starts)).await;
    let floor = t2.elapsed();
    remove_all(&docker, &label).await;
    (to_stable, floor, down)
}
