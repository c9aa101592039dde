//! Rows measured on `SimRuntime`: exit → restart issued, a burst of simultaneous crashes,
//! last healthy → stable, and spec → stable.

use std::sync::Arc;
use std::time::Duration;

use herdsman::core::{spawn_deployment, DeploymentHandle, DeploymentOptions, EventKind, Received};
use herdsman::runtime::SimRuntime;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::fixtures::{bounded, deployment, probed, service, shutdown, stable, up_then_down};
use super::instrumented::Instrumented;

const PATIENCE: Duration = Duration::from_secs(60);

fn options() -> DeploymentOptions {
    DeploymentOptions {
        event_capacity: 1 << 16,
        ..DeploymentOptions::default()
    }
}

/// A task parked on the event stream that stamps each event `f` selects the moment it is
/// received, so the bench's own task being busy never delays an observation.
fn stamp_events<T: Send + 'static>(
    handle: &DeploymentHandle,
    mut f: impl FnMut(&EventKind) -> Option<T> + Send + 'static,
) -> mpsc::UnboundedReceiver<(T, Instant)> {
    let mut events = handle.subscribe();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(received) = events.recv().await {
            if let Received::Event(e) = received {
                if let Some(v) = f(&e.kind) {
                    if tx.send((v, Instant::now())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Stability changes as they are received: `true` for `DeploymentStable`, `false` for
/// `DeploymentUnstable`.
fn stamp_stability(handle: &DeploymentHandle) -> mpsc::UnboundedReceiver<(bool, Instant)> {
    stamp_events(handle, |k| match k {
        EventKind::DeploymentStable { .. } => Some(true),
        EventKind::DeploymentUnstable => Some(false),
        _ => None,
    })
}

/// When the deployment, having become unstable, is reported stable again. Ordering by
/// events rather than by time: the first subscription replays every event since spawn, so
/// the initial `DeploymentStable` may still be on its way when a measurement starts.
async fn stable_again(rx: &mut mpsc::UnboundedReceiver<(bool, Instant)>) -> Instant {
    let mut unstable = false;
    loop {
        match rx.recv().await {
            Some((false, _)) => unstable = true,
            Some((true, at)) if unstable => return at,
            Some(_) => {}
            None => panic!("the event stream ended"),
        }
    }
}

/// When the deployment, after `t0`, was last reported stable, once it is stable for good.
/// A burst can make it flap: a supervisor that has restarted every exit it has seen so far
/// reports all running while more exits are still on their way to it.
async fn finally_stable(
    handle: &DeploymentHandle,
    rx: &mut mpsc::UnboundedReceiver<(bool, Instant)>,
    t0: Instant,
) -> Instant {
    let mut last = None;
    loop {
        while let Ok((stable, at)) = rx.try_recv() {
            last = Some((stable, at));
        }
        match last {
            Some((true, at)) if at >= t0 && handle.board().is_stable() => return at,
            _ => tokio::time::sleep(Duration::from_micros(100)).await,
        }
    }
}

fn drain<T>(rx: &mut mpsc::UnboundedReceiver<T>) {
    while rx.try_recv().is_ok() {}
}

/// Exit → restart issued, and where its time goes.
pub(crate) struct Restarts {
    /// Kill → the supervisor's `ReplicaRestarting` received by a parked subscriber.
    pub(crate) issued: Vec<Duration>,
    /// Kill → the container actor's first runtime call for the restart (the old
    /// container's removal): the supervisor has decided and its command has arrived.
    pub(crate) acted: Vec<Duration>,
    /// Of the kills, how many had their `ReplicaRestarting` received after that call.
    pub(crate) received_after_acted: usize,
}

/// Exit → restart issued: a running replica's simulated container is killed (its exit
/// fired); until the supervisor's `ReplicaRestarting` event for it is received. One
/// service of 64 replicas, killed round robin, each replacement running before the next.
/// The runtime's calls for the replica are traced, to place the event beside the restart
/// itself.
pub(crate) async fn restart_latency(samples: usize) -> Restarts {
    const REPLICAS: u32 = 64;
    let warmup = samples / 10;
    let sim = Arc::new(SimRuntime::new(1));
    let rt = Arc::new(Instrumented::new(sim.clone()));
    let handle = spawn_deployment(
        deployment(vec![service("svc", REPLICAS)]),
        rt.clone(),
        options(),
    )
    .await
    .expect("deployment spawns");
    let mut restarting = stamp_events(&handle, |k| match k {
        EventKind::ReplicaRestarting { replica, .. } => Some(*replica),
        _ => None,
    });
    stable(&handle, PATIENCE).await;
    let mut out = Restarts {
        issued: Vec::with_capacity(samples),
        acted: Vec::with_capacity(samples),
        received_after_acted: 0,
    };
    for i in 0..warmup + samples {
        let replica = i as u32 % REPLICAS;
        let id = handle
            .board()
            .replica("svc", replica)
            .and_then(|r| r.container)
            .expect("every replica has a container");
        let starts = rt.starts();
        drain(&mut restarting);
        rt.arm_trace("svc", replica);
        let t0 = Instant::now();
        assert!(sim.kill(&id, 1), "{id} was running");
        let at = loop {
            let (r, at) = bounded("restart issued", PATIENCE, restarting.recv())
                .await
                .expect("the event stream goes on");
            if r == replica && at >= t0 {
                break at;
            }
        };
        bounded("replacement running", PATIENCE, rt.starts_reach(starts + 1)).await;
        let acted = rt
            .take_trace()
            .at("remove")
            .expect("the restart removes the old container first");
        if i >= warmup {
            out.issued.push(at - t0);
            out.acted.push(acted - t0);
            out.received_after_acted += usize::from(at > acted);
        }
    }
    shutdown(&handle).await;
    out
}

/// One service of `n` replicas whose containers all crash at once, a round at a time (in
/// turns with the floor's burst, so both see the same moment of a shared host).
pub(crate) struct Burst {
    sim: Arc<SimRuntime>,
    rt: Arc<Instrumented<SimRuntime>>,
    handle: DeploymentHandle,
    stability: mpsc::UnboundedReceiver<(bool, Instant)>,
    n: u32,
}

/// What one burst cost.
pub(crate) struct BurstRound {
    /// From the first kill to every replacement running (the runtime has started all).
    pub(crate) running: Duration,
    /// From the first kill to the deployment reporting itself stable again.
    pub(crate) stable: Duration,
}

impl Burst {
    pub(crate) async fn spawn(n: u32) -> Burst {
        let sim = Arc::new(SimRuntime::new(2));
        let rt = Arc::new(Instrumented::new(sim.clone()));
        let handle = spawn_deployment(deployment(vec![service("svc", n)]), rt.clone(), options())
            .await
            .expect("deployment spawns");
        let stability = stamp_stability(&handle);
        stable(&handle, PATIENCE).await;
        Burst {
            sim,
            rt,
            handle,
            stability,
            n,
        }
    }

    /// Every simulated container killed in one loop; until every replacement runs, and
    /// then until the deployment is stable again.
    pub(crate) async fn round(&mut self) -> BurstRound {
        let ids = self.sim.running();
        assert_eq!(
            ids.len(),
            self.n as usize,
            "every replica runs before the burst"
        );
        let starts = self.rt.starts();
        let t0 = Instant::now();
        for id in &ids {
            self.sim.kill(id, 1);
        }
        bounded(
            "every replacement running",
            PATIENCE,
            self.rt.starts_reach(starts + u64::from(self.n)),
        )
        .await;
        let running = t0.elapsed();
        let at = bounded(
            "stable again",
            PATIENCE,
            finally_stable(&self.handle, &mut self.stability, t0),
        )
        .await;
        BurstRound {
            running,
            stable: at - t0,
        }
    }

    pub(crate) async fn shutdown(self) {
        shutdown(&self.handle).await;
    }
}

/// Last replica healthy → deployment stable: a stable service is scaled up by one; from
/// the new replica's first successful health check returning (which makes it healthy) to
/// the `DeploymentStable` event being received. Probed every 2 ms in its start period so
/// the wait for the first check is short. The check's instant is noted where it returns
/// and read once the event is in: this task waits only for the event.
pub(crate) async fn healthy_to_stable(samples: usize) -> Vec<Duration> {
    const INITIAL: u32 = 16;
    let warmup = samples / 10;
    let sim = Arc::new(SimRuntime::new(3));
    let rt = Arc::new(Instrumented::new(sim.clone()));
    let svc = probed(
        service("svc", INITIAL),
        Duration::from_secs(1),
        Some(Duration::from_millis(2)),
    );
    let handle = spawn_deployment(deployment(vec![svc]), rt.clone(), options())
        .await
        .expect("deployment spawns");
    let mut stability = stamp_stability(&handle);
    stable(&handle, PATIENCE).await;
    let mut out = Vec::with_capacity(samples);
    for i in 0..warmup + samples {
        let replica = INITIAL + i as u32;
        rt.arm_check("svc", replica);
        bounded("scale", PATIENCE, handle.scale("svc", replica + 1))
            .await
            .expect("scale is accepted");
        let t1 = bounded("stable", PATIENCE, stable_again(&mut stability)).await;
        // Stable only once the new replica is healthy: its check has returned by now.
        let t0 = rt
            .checked_at()
            .expect("the new replica's healthy check returned before the deployment was stable");
        if i >= warmup {
            out.push(t1 - t0);
        }
    }
    shutdown(&handle).await;
    out
}

/// Spec → stable: `n` replicas of one unprobed service, from `spawn_deployment` to
/// `wait_stable` answering; also how long its shutdown took.
pub(crate) async fn spec_to_stable(n: u32, seed: u64) -> (Duration, Duration) {
    let sim = Arc::new(SimRuntime::new(seed));
    let took = up_then_down(deployment(vec![service("svc", n)]), sim.clone(), PATIENCE).await;
    assert!(sim.running().is_empty(), "containers left after shutdown");
    took
}
