//! Deployments the benchmarks run, built as structs (any size, no YAML), and small helpers
//! shared by the measurements.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use herdsman::core::{spawn_deployment, DeploymentHandle, DeploymentOptions, Stabilization};
use herdsman::runtime::Runtime;
use herdsman::spec::{
    Backoff, Check, Command, Deployment, Health, OnUnhealthy, RestartPolicy, RestartSpec, Scale,
    Service, ServiceKind, Template,
};
use tokio::time::Instant;

/// A service whose restarts are never held back: the window admits a million restarts a
/// second, so every measured exit is restarted at once (no crash-loop backoff).
pub(crate) fn service(name: &str, replicas: u32) -> Service {
    Service {
        image: Some(format!("bench/{name}:1")),
        scale: Scale::Fixed { replicas },
        restart: RestartSpec {
            policy: RestartPolicy::Always,
            max_restarts: 1_000_000,
            window: Duration::from_secs(1),
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(30),
                multiplier: 2.0,
                jitter: 0.1,
            },
            reset_after: Duration::from_secs(600),
            give_up_after: None,
        },
        stop_grace_period: Duration::from_secs(2),
        ..Service::new(name, ServiceKind::Service)
    }
}

/// A health check every `interval`; with a `start_interval`, a start period of 10 s probed
/// that often until the first success.
pub(crate) fn probed(
    mut s: Service,
    interval: Duration,
    start_interval: Option<Duration>,
) -> Service {
    s.health = Some(Health {
        start_grace: if start_interval.is_some() {
            Duration::from_secs(10)
        } else {
            Duration::ZERO
        },
        start_interval: start_interval.unwrap_or(interval),
        interval,
        timeout: Duration::from_secs(1),
        retries: 3,
        success_threshold: 1,
        on_unhealthy: OnUnhealthy::Isolate,
        check: Check::Command {
            command: Template::literal("true"),
        },
    });
    s
}

/// A real process: `program args...`.
pub(crate) fn running(mut s: Service, argv: &[&str]) -> Service {
    s.image = None;
    s.command = Some(Command {
        entrypoint: argv[..1].iter().map(|a| Template::literal(*a)).collect(),
        args: argv[1..].iter().map(|a| Template::literal(*a)).collect(),
        workdir: None,
    });
    s
}

pub(crate) fn deployment(services: Vec<Service>) -> Deployment {
    Deployment {
        name: "bench".to_string(),
        services,
    }
}

/// Await `fut` for at most `within`; a hang is a failed benchmark, not a stuck one.
pub(crate) async fn bounded<T>(what: &str, within: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(within, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {within:?}: likely deadlocked"),
    }
}

/// Wait until the deployment is stable, or fail the benchmark.
pub(crate) async fn stable(handle: &DeploymentHandle, within: Duration) {
    match bounded(
        "wait_stable",
        within + Duration::from_secs(10),
        handle.wait_stable(within),
    )
    .await
    {
        Ok(Stabilization::Ready { .. }) => {}
        Ok(Stabilization::TimedOut { failing }) => {
            panic!("not stable within {within:?}: {failing:?}")
        }
        Err(e) => panic!("wait_stable failed: {e}"),
    }
}

/// Spec → stable and back: `spec` spawned on `runtime` with default options until
/// `wait_stable` answers (within `within`), then shut down; how long each took.
pub(crate) async fn up_then_down(
    spec: Deployment,
    runtime: Arc<dyn Runtime>,
    within: Duration,
) -> (Duration, Duration) {
    let t0 = Instant::now();
    let handle = spawn_deployment(spec, runtime, DeploymentOptions::default())
        .await
        .expect("deployment spawns");
    stable(&handle, within).await;
    let up = t0.elapsed();
    let t1 = Instant::now();
    shutdown(&handle).await;
    (up, t1.elapsed())
}

/// Shut the deployment down, or fail the benchmark.
pub(crate) async fn shutdown(handle: &DeploymentHandle) {
    bounded("shutdown", Duration::from_secs(120), handle.shutdown())
        .await
        .expect("the deployment shuts down");
}

/// Run `work` on a runtime of its own with one worker thread, configured as the bench's
/// (short scheduler slices), on its worker, from a thread of its own; until it is done.
/// Nothing can then be handed to an idle second worker, nor run beside the measured path.
pub(crate) async fn on_one_worker<T, Fut>(work: impl FnOnce() -> Fut + Send + 'static) -> T
where
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .on_thread_start(|| {
                herdsman::runtime::request_short_time_slice();
            })
            .build()
            .expect("a one-worker tokio runtime can be built");
        // Spawned, so that it runs on the worker, as the actors do (`block_on` would poll
        // it on this thread).
        let out = runtime.block_on(runtime.spawn(async move { work().await }));
        let _ = tx.send(out.expect("the one-worker measurement does not panic"));
    });
    let out = rx.await.expect("the one-worker measurement completes");
    let _ = thread.join();
    out
}
