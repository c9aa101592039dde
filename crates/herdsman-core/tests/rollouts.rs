//! Rollouts through the whole actor tree on `SimRuntime` under paused time: health-gated
//! rolling replacement that never drops below `desired - max_unavailable` ready
//! replicas, automatic revert of a version that crash loops or never turns healthy,
//! pause without `auto_revert`, superseding applies, undo, and service add/remove.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use herdsman_core::{
    spawn_deployment, Change, DeploymentHandle, DeploymentOptions, EventKind, Received,
    RolloutPhase, Stabilization,
};
use herdsman_probe::{CheckResult, CommandOutput, Outcome};
use herdsman_runtime::{ContainerId, ContainerSpec, Runtime, RuntimeError, SimRuntime, Started};
use herdsman_spec::{
    Amount, Check, Command, Deployment, OnUnhealthy, ReplicaVars, Service, StopSignal, Template,
};
use support::*;

/// Each container's version is its command's first argument; some versions crash at
/// start or never pass a health check.
struct Versioned {
    sim: Arc<SimRuntime>,
    versions: Mutex<HashMap<ContainerId, String>>,
    crashing: Mutex<Vec<String>>,
    unhealthy: Mutex<Vec<String>>,
}

impl Versioned {
    fn new(seed: u64) -> (Arc<Versioned>, Arc<SimRuntime>) {
        let sim = Arc::new(SimRuntime::new(seed));
        let v = Arc::new(Versioned {
            sim: sim.clone(),
            versions: Mutex::new(HashMap::new()),
            crashing: Mutex::new(Vec::new()),
            unhealthy: Mutex::new(Vec::new()),
        });
        (v, sim)
    }

    fn version(&self, id: &ContainerId) -> String {
        self.versions
            .lock()
            .expect("lock")
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// Versions of the running containers of `service`, by replica index.
    fn running(&self, service: &str) -> Vec<(u32, String)> {
        let mut v: Vec<(u32, String)> = self
            .sim
            .running()
            .into_iter()
            .filter(|id| &*id.service == service)
            .map(|id| (id.replica, self.version(&id)))
            .collect();
        v.sort();
        v
    }
}

#[async_trait]
impl Runtime for Versioned {
    async fn create(&self, id: &ContainerId, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let version = spec
            .service
            .command
            .as_ref()
            .and_then(|c| c.args.first())
            .map(|a| a.expand(&spec.vars))
            .unwrap_or_default();
        self.versions
            .lock()
            .expect("lock")
            .insert(id.clone(), version);
        self.sim.create(id, spec).await
    }
    async fn start(&self, id: &ContainerId) -> Result<Started, RuntimeError> {
        let started = self.sim.start(id).await?;
        if self
            .crashing
            .lock()
            .expect("lock")
            .contains(&self.version(id))
        {
            self.sim.kill(id, 1);
        }
        Ok(started)
    }
    async fn stop(&self, id: &ContainerId, s: StopSignal, g: Duration) -> Result<(), RuntimeError> {
        self.sim.stop(id, s, g).await
    }
    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
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
    async fn check(
        &self,
        id: &ContainerId,
        check: &Check,
        vars: &ReplicaVars,
        timeout: Duration,
    ) -> CheckResult {
        if self
            .unhealthy
            .lock()
            .expect("lock")
            .contains(&self.version(id))
        {
            return CheckResult::new(Outcome::Failure("503".into()), Duration::ZERO, "");
        }
        self.sim.check(id, check, vars, timeout).await
    }
}

fn api(version: &str, replicas: u32) -> Service {
    let mut s = service("api", replicas);
    s.command = Some(Command {
        entrypoint: vec![Template::literal("api")],
        args: vec![Template::literal(version)],
        workdir: None,
    });
    s.health = Some(health(OnUnhealthy::Isolate));
    s.update.progress_deadline = Duration::from_secs(30);
    s
}

fn spec(services: Vec<Service>) -> Deployment {
    deployment(services)
}

async fn start(runtime: Arc<Versioned>, services: Vec<Service>) -> DeploymentHandle {
    let handle = spawn_deployment(spec(services), runtime, DeploymentOptions::default())
        .await
        .expect("spawns");
    let r = bounded("stable", handle.wait_stable(Duration::from_secs(60))).await;
    assert!(matches!(r, Ok(Stabilization::Ready { .. })), "{r:?}");
    // The first subscription replays from spawn; take it so `follow` sees what is new.
    drop(handle.subscribe());
    handle
}

/// Follow events until the rollout of `revision` ends; the lowest count of ready `api`
/// replicas seen on the board after any event meanwhile, and the final phase.
async fn follow(
    handle: &DeploymentHandle,
    events: &mut herdsman_core::EventStream,
    revision: u64,
) -> (u32, RolloutPhase, Vec<EventKind>) {
    let mut lowest = u32::MAX;
    let mut seen = Vec::new();
    bounded("rollout end", async {
        loop {
            let ready = handle
                .status()
                .services
                .iter()
                .find(|s| s.name == "api")
                .map_or(0, |s| {
                    s.replicas
                        .iter()
                        .filter(|r| r.is_ready() && r.replica < s.desired)
                        .count() as u32
                        + s.replicas
                            .iter()
                            .filter(|r| r.is_ready() && r.replica >= s.desired)
                            .count() as u32
                });
            lowest = lowest.min(ready);
            if let Some(r) = handle.rollout() {
                let ended = r.revision >= revision
                    && !matches!(r.phase, RolloutPhase::Progressing | RolloutPhase::Reverting);
                if ended {
                    // Take what was already queued too.
                    while let Some(Received::Event(e)) = events.try_recv() {
                        seen.push(e.kind);
                    }
                    return (lowest, r.phase, seen);
                }
            }
            match events.recv().await {
                Some(Received::Event(e)) => seen.push(e.kind),
                Some(Received::Missed(_)) => {}
                None => panic!("event bus closed"),
            }
        }
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_rolling_update_never_drops_below_desired_ready_and_keeps_ports() {
    let (rt, _sim) = Versioned::new(1);
    let handle = start(rt.clone(), vec![api("v1", 3), service("db", 1)]).await;
    let mut events = handle.subscribe();
    let plan = handle
        .apply(spec(vec![api("v2", 3), service("db", 1)]), false)
        .await
        .expect("apply");
    assert_eq!(plan.revision, 2);
    assert_eq!(plan.rolled(), vec!["api".to_string()]);
    assert!(plan
        .changes
        .iter()
        .any(|c| c.service == "db" && c.change == Change::Unchanged));
    let (lowest, phase, events) = follow(&handle, &mut events, 2).await;
    assert_eq!(phase, RolloutPhase::Complete);
    assert!(
        lowest >= 3,
        "ready replicas fell to {lowest} (max_unavailable 0)"
    );
    assert_eq!(
        rt.running("api"),
        vec![(0, "v2".into()), (1, "v2".into()), (2, "v2".into())],
        "every index runs v2 and the surge replica is gone"
    );
    // The unchanged service was not touched.
    assert!(!events
        .iter()
        .any(|e| matches!(e, EventKind::ReplicaStarted { service, .. } if &**service == "db")));
    assert!(events
        .iter()
        .any(|e| matches!(e, EventKind::RolloutComplete { revision: 2 })));
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_deployment_is_not_stable_from_the_start_of_a_rollout_until_it_completes() {
    let (rt, _sim) = Versioned::new(5);
    let handle = start(rt.clone(), vec![api("v1", 3)]).await;
    assert!(handle.status().stable);
    let mut events = handle.subscribe();
    handle
        .apply(spec(vec![api("v2", 3)]), false)
        .await
        .expect("apply");
    // Every old replica is still ready, but the deployment has not converged on v2.
    assert!(!handle.status().stable, "stable the moment a rollout began");
    let (_, phase, events) = follow(&handle, &mut events, 2).await;
    assert_eq!(phase, RolloutPhase::Complete);
    let at = |want: fn(&EventKind) -> bool| events.iter().position(want);
    let started = at(|e| matches!(e, EventKind::RolloutStarted { .. })).expect("started");
    let complete = at(|e| matches!(e, EventKind::RolloutComplete { .. })).expect("complete");
    let unstable = at(|e| matches!(e, EventKind::DeploymentUnstable)).expect("unstable");
    assert!(started < unstable && unstable < complete, "{events:?}");
    assert!(
        !events[unstable..complete]
            .iter()
            .any(|e| matches!(e, EventKind::DeploymentStable { .. })),
        "stable announced mid-rollout: {events:?}"
    );
    let r = bounded("stable", handle.wait_stable(Duration::from_secs(60))).await;
    assert!(matches!(r, Ok(Stabilization::Ready { .. })), "{r:?}");
    assert!(handle.status().stable);
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_crash_looping_version_is_reverted_and_the_old_replicas_serve_throughout() {
    let (rt, _sim) = Versioned::new(2);
    rt.crashing.lock().expect("lock").push("bad".into());
    let handle = start(rt.clone(), vec![api("v1", 3)]).await;
    let mut events = handle.subscribe();
    handle
        .apply(spec(vec![api("bad", 3)]), false)
        .await
        .expect("apply");
    let (lowest, phase, events) = follow(&handle, &mut events, 3).await;
    assert_eq!(phase, RolloutPhase::Reverted, "{events:?}");
    assert!(lowest >= 3, "ready replicas fell to {lowest}");
    let failed = events.iter().find_map(|e| match e {
        EventKind::RolloutFailed {
            revision: 2,
            reason,
            reverting: true,
            failing,
        } => Some((reason.clone(), failing.clone())),
        _ => None,
    });
    assert!(
        failed
            .as_ref()
            .is_some_and(|(r, _)| r.contains("crash looping")),
        "{failed:?} in {events:#?}"
    );
    // The crash-looping surge replica is reported with its output, although the service
    // itself still has its 3 old replicas ready.
    let (_, failing) = failed.expect("a failure");
    let bad = failing
        .iter()
        .find(|s| s.service == "api")
        .and_then(|s| s.replicas.iter().find(|r| r.replica == 3));
    assert!(
        bad.is_some_and(|r| !r.log_tail.is_empty()),
        "the failing new replica and its output: {failing:#?}"
    );
    assert_eq!(
        rt.running("api"),
        vec![(0, "v1".into()), (1, "v1".into()), (2, "v1".into())]
    );
    let status = handle.rollout().expect("a rollout");
    assert_eq!(status.revision, 3);
    assert!(status
        .reason
        .is_some_and(|r| r.contains("revision 2 failed")));
    // Rolled back to the spec the deployment started with: nothing earlier to undo to
    // (the failed spec is not an undo target).
    assert!(
        matches!(
            handle.undo().await,
            Err(herdsman_core::CoreError::NoPreviousRevision)
        ),
        "undo after a rollback"
    );
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_version_that_never_turns_healthy_misses_its_deadline_and_is_reverted() {
    let (rt, _sim) = Versioned::new(3);
    rt.unhealthy.lock().expect("lock").push("sick".into());
    let handle = start(rt.clone(), vec![api("v1", 2)]).await;
    let mut events = handle.subscribe();
    handle
        .apply(spec(vec![api("sick", 2)]), false)
        .await
        .expect("apply");
    let (lowest, phase, events) = follow(&handle, &mut events, 3).await;
    assert_eq!(phase, RolloutPhase::Reverted);
    assert!(lowest >= 2, "ready replicas fell to {lowest}");
    assert!(events.iter().any(|e| matches!(
        e,
        EventKind::RolloutFailed { reason, .. } if reason.contains("progress deadline")
    )));
    assert_eq!(rt.running("api"), vec![(0, "v1".into()), (1, "v1".into())]);
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn without_auto_revert_a_failed_rollout_pauses_where_it_stands() {
    let (rt, _sim) = Versioned::new(4);
    rt.crashing.lock().expect("lock").push("bad".into());
    let handle = start(rt.clone(), vec![api("v1", 2)]).await;
    let mut events = handle.subscribe();
    let mut bad = api("bad", 2);
    bad.update.auto_revert = false;
    handle.apply(spec(vec![bad]), false).await.expect("apply");
    let (lowest, phase, _) = follow(&handle, &mut events, 2).await;
    assert_eq!(phase, RolloutPhase::Paused);
    assert!(lowest >= 2);
    // The old replicas were never taken down: the surge replica failed first.
    assert_eq!(rt.running("api"), vec![(0, "v1".into()), (1, "v1".into())]);
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_second_apply_supersedes_the_first_and_undo_goes_back_one_revision() {
    let (rt, _sim) = Versioned::new(5);
    let handle = start(rt.clone(), vec![api("v1", 3)]).await;
    let mut events = handle.subscribe();
    let mut v2 = api("v2", 3);
    v2.update.max_surge = Amount::Percent(50);
    handle.apply(spec(vec![v2]), false).await.expect("apply v2");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    handle
        .apply(spec(vec![api("v3", 3)]), false)
        .await
        .expect("apply v3");
    let (lowest, phase, _) = follow(&handle, &mut events, 3).await;
    assert_eq!(phase, RolloutPhase::Complete);
    assert!(lowest >= 3);
    assert_eq!(
        rt.running("api"),
        vec![(0, "v3".into()), (1, "v3".into()), (2, "v3".into())]
    );
    let plan = handle.undo().await.expect("undo");
    assert_eq!(plan.revision, 4);
    let (_, phase, _) = follow(&handle, &mut events, 4).await;
    assert_eq!(phase, RolloutPhase::Complete);
    assert_eq!(
        rt.running("api"),
        vec![(0, "v2".into()), (1, "v2".into()), (2, "v2".into())]
    );
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn dry_run_changes_nothing_and_apply_adds_scales_and_removes_services() {
    let (rt, sim) = Versioned::new(6);
    let handle = start(rt.clone(), vec![api("v1", 2), service("old", 1)]).await;
    let next = spec(vec![api("v1", 3), service("new", 2)]);
    let plan = handle.apply(next.clone(), true).await.expect("dry run");
    let changes: Vec<(String, Change)> = plan
        .changes
        .iter()
        .map(|c| (c.service.clone(), c.change.clone()))
        .collect();
    assert_eq!(
        changes,
        vec![
            ("api".into(), Change::Scale { from: 2, to: 3 }),
            ("new".into(), Change::Add { replicas: 2 }),
            ("old".into(), Change::Remove),
        ]
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(sim.running().len(), 3, "dry run changed nothing");
    handle.apply(next, false).await.expect("apply");
    let r = bounded("stable", handle.wait_stable(Duration::from_secs(60))).await;
    assert!(matches!(r, Ok(Stabilization::Ready { .. })), "{r:?}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut running: Vec<String> = sim
        .running()
        .iter()
        .map(|id| format!("{}/{}", id.service, id.replica))
        .collect();
    running.sort();
    assert_eq!(running, ["api/0", "api/1", "api/2", "new/0", "new/1"]);
    let names: Vec<String> = handle
        .status()
        .services
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["api", "new"]);
    assert!(matches!(
        handle.apply(deployment_named("other"), false).await,
        Err(herdsman_core::CoreError::WrongDeployment { .. })
    ));
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
    assert!(sim.running().is_empty());
}

fn deployment_named(name: &str) -> Deployment {
    Deployment {
        name: name.into(),
        services: vec![service("x", 1)],
    }
}
