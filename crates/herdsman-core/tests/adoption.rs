//! Adoption: a deployment started again after its herdsman died takes over the replicas
//! the earlier run left running (same run hash, a replica index the spec still wants)
//! instead of starting second copies, and stops the rest. Driven on `SimRuntime` wrapped
//! in a backend that keeps its containers across herdsman runs, as a real one does.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use herdsman_core::{
    spawn_deployment, DeploymentHandle, DeploymentOptions, EventKind, ReplicaState, Stabilization,
};
use herdsman_probe::CommandOutput;
use herdsman_runtime::{
    ContainerId, ContainerSpec, Exit, ExitWatch, Runtime, RuntimeError, SimRuntime, Started,
    Survivor,
};
use herdsman_spec::{Command, Service, StopSignal, Template};
use support::*;
use tokio::sync::watch;

/// A container's run hash and its exit, observable by any number of watchers.
type Kept = (String, watch::Receiver<Option<Exit>>);

/// Keeps each container's exit observable by any number of watchers (as a pidfd or the
/// Docker wait API is), and its run hash, so a later herdsman run can find and adopt it.
struct Lasting {
    sim: Arc<SimRuntime>,
    containers: Mutex<HashMap<ContainerId, Kept>>,
    hashes: Mutex<HashMap<ContainerId, String>>,
}

impl Lasting {
    fn new(sim: Arc<SimRuntime>) -> Arc<Lasting> {
        Arc::new(Lasting {
            sim,
            containers: Mutex::new(HashMap::new()),
            hashes: Mutex::new(HashMap::new()),
        })
    }

    fn watch(&self, id: &ContainerId) -> Option<ExitWatch> {
        let mut rx = self.containers.lock().expect("lock").get(id)?.1.clone();
        let (tx, exit) = ExitWatch::channel();
        tokio::spawn(async move {
            if let Ok(v) = rx.wait_for(Option::is_some).await {
                if let Some(e) = *v {
                    let _ = tx.send(e);
                }
            }
        });
        Some(exit)
    }
}

#[async_trait]
impl Runtime for Lasting {
    async fn create(&self, id: &ContainerId, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        self.hashes
            .lock()
            .expect("lock")
            .insert(id.clone(), spec.service.run_hash());
        self.sim.create(id, spec).await
    }
    async fn start(&self, id: &ContainerId) -> Result<Started, RuntimeError> {
        let started = self.sim.start(id).await?;
        let hash = self
            .hashes
            .lock()
            .expect("lock")
            .get(id)
            .cloned()
            .unwrap_or_default();
        let (tx, rx) = watch::channel(None);
        let sim_exit = started.exit;
        tokio::spawn(async move {
            let _ = tx.send(Some(sim_exit.await));
        });
        self.containers
            .lock()
            .expect("lock")
            .insert(id.clone(), (hash, rx));
        let exit = self.watch(id).expect("just recorded");
        Ok(Started {
            pid: started.pid,
            exit,
        })
    }
    async fn stop(&self, id: &ContainerId, s: StopSignal, g: Duration) -> Result<(), RuntimeError> {
        self.sim.stop(id, s, g).await
    }
    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.containers.lock().expect("lock").remove(id);
        self.sim.remove(id).await
    }
    async fn exec(
        &self,
        id: &ContainerId,
        c: &str,
        t: Duration,
    ) -> Result<CommandOutput, RuntimeError> {
        self.sim.exec(id, c, t).await
    }
    fn logs(&self, id: &ContainerId, lines: usize) -> Vec<String> {
        self.sim.logs(id, lines)
    }
    async fn survivors(&self, deployment: &str) -> Result<Vec<Survivor>, RuntimeError> {
        let containers = self.containers.lock().expect("lock");
        Ok(containers
            .iter()
            .filter(|(id, (_, rx))| &*id.deployment == deployment && rx.borrow().is_none())
            .map(|(id, (hash, _))| Survivor {
                id: id.clone(),
                run_hash: hash.clone(),
                pid: None,
            })
            .collect())
    }
    async fn adopt(&self, s: &Survivor, _spec: &ContainerSpec) -> Result<Started, RuntimeError> {
        match self.watch(&s.id) {
            Some(exit) => Ok(Started { pid: None, exit }),
            None => Err(RuntimeError::UnknownContainer {
                id: s.id.to_string(),
            }),
        }
    }
    async fn discard_survivor(
        &self,
        s: &Survivor,
        signal: StopSignal,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        self.stop(&s.id, signal, grace).await?;
        self.remove(&s.id).await
    }
}

async fn run(runtime: Arc<Lasting>, services: Vec<Service>, adopt: bool) -> DeploymentHandle {
    let options = DeploymentOptions {
        adopt,
        ..DeploymentOptions::default()
    };
    let handle = spawn_deployment(deployment(services), runtime, options)
        .await
        .expect("deployment spawns");
    let r = bounded("wait_stable", handle.wait_stable(Duration::from_secs(60))).await;
    assert!(matches!(r, Ok(Stabilization::Ready { .. })), "{r:?}");
    handle
}

/// herdsman dies without stopping anything (SIGKILL): its actors are gone, its
/// containers run on.
async fn die(handle: DeploymentHandle) {
    handle.actor_cell().kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
}

fn containers(handle: &DeploymentHandle) -> Vec<(u32, Option<ContainerId>, u32)> {
    handle.status().services[0]
        .replicas
        .iter()
        .map(|r| (r.replica, r.container.clone(), r.restarts))
        .collect()
}

fn with_args(mut svc: Service, args: &[&str]) -> Service {
    svc.command = Some(Command {
        entrypoint: vec![Template::literal("app")],
        args: args.iter().map(|a| Template::literal(*a)).collect(),
        workdir: None,
    });
    svc
}

#[tokio::test(start_paused = true)]
async fn a_restarted_herdsman_adopts_what_runs_without_restarting_it() {
    let sim = Arc::new(SimRuntime::new(1));
    let runtime = Lasting::new(sim.clone());
    let first = run(runtime.clone(), vec![service("db", 3)], true).await;
    let before = containers(&first);
    die(first).await;
    assert_eq!(sim.running().len(), 3, "replicas outlive their herdsman");

    let second = spawn_deployment(
        deployment(vec![service("db", 3)]),
        runtime.clone(),
        DeploymentOptions::default(),
    )
    .await
    .expect("spawns");
    let mut events = second.subscribe();
    let r = bounded("wait_stable", second.wait_stable(Duration::from_secs(60))).await;
    assert!(matches!(r, Ok(Stabilization::Ready { .. })), "{r:?}");
    assert_eq!(containers(&second), before, "same containers, no restart");
    assert_eq!(sim.running().len(), 3, "no second copy started");
    let adopted = drain(&mut events)
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::ReplicaAdopted { .. }))
        .count();
    assert_eq!(adopted, 3);

    // Adopted replicas are supervised as any other: a crash is restarted.
    sim.kill_replica("db", 1, 1);
    let (ev, _) = wait_for(&mut events, "restart", |k| started(k, "db", 1)).await;
    assert!(matches!(
        ev.kind,
        EventKind::ReplicaStarted { generation: 1, .. }
    ));
    bounded("shutdown", second.shutdown())
        .await
        .expect("shutdown");
    assert!(sim.running().is_empty(), "{:?}", sim.running());
}

#[tokio::test(start_paused = true)]
async fn survivors_running_a_changed_spec_or_an_unwanted_index_are_stopped_and_replaced() {
    let sim = Arc::new(SimRuntime::new(2));
    let runtime = Lasting::new(sim.clone());
    let first = run(
        runtime.clone(),
        vec![with_args(service("api", 3), &["--v1"]), service("old", 1)],
        true,
    )
    .await;
    die(first).await;
    assert_eq!(sim.running().len(), 4);

    // api now runs --v2 with 2 replicas; `old` is gone from the spec.
    let second = run(
        runtime.clone(),
        vec![with_args(service("api", 2), &["--v2"])],
        true,
    )
    .await;
    let now = containers(&second);
    assert_eq!(now.len(), 2);
    for (replica, id, restarts) in &now {
        let id = id.as_ref().expect("a container");
        assert_eq!(
            id.generation, 1,
            "replica {replica} replaced by a new generation"
        );
        assert_eq!(*restarts, 0);
    }
    let running = sim.running();
    assert_eq!(
        running.len(),
        2,
        "v1, index 2 and `old` stopped: {running:?}"
    );
    assert!(running
        .iter()
        .all(|id| &*id.service == "api" && id.generation == 1));
    bounded("shutdown", second.shutdown())
        .await
        .expect("shutdown");
    assert!(sim.running().is_empty());
}

#[tokio::test(start_paused = true)]
async fn without_adoption_every_survivor_is_stopped_before_new_replicas_start() {
    let sim = Arc::new(SimRuntime::new(3));
    let runtime = Lasting::new(sim.clone());
    let first = run(runtime.clone(), vec![service("db", 2)], true).await;
    die(first).await;
    let second = run(runtime.clone(), vec![service("db", 2)], false).await;
    let now = containers(&second);
    assert!(now
        .iter()
        .all(|(_, id, _)| id.as_ref().is_some_and(|c| c.generation == 1)));
    assert_eq!(sim.running().len(), 2);
    let stats = sim.service_stats("db");
    assert_eq!(stats.stopped, 2, "both survivors stopped with their signal");
    bounded("shutdown", second.shutdown())
        .await
        .expect("shutdown");
    assert!(sim.running().is_empty());
    assert_eq!(
        second.board().replica("db", 0).map(|r| r.state),
        Some(ReplicaState::Stopped)
    );
}
