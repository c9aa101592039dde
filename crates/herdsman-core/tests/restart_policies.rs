//! Restart window, backoff, give-up, panic actions, jobs and unhealthy restarts, driven
//! through the whole actor tree on `SimRuntime` under paused time.

mod support;

use std::sync::Arc;
use std::time::Duration;

use herdsman_core::{
    spawn_deployment, DeploymentHandle, DeploymentOptions, EventKind, ReplicaState, ServicePhase,
    Stabilization,
};
use herdsman_runtime::{FaultProfile, HealthBehaviour, Lifetime, SimRuntime};
use herdsman_spec::{OnUnhealthy, PanicAction, RestartPolicy, ServiceKind};
use support::*;
use tokio::time::Instant;

async fn spawn(sim: &Arc<SimRuntime>, services: Vec<herdsman_spec::Service>) -> DeploymentHandle {
    spawn_deployment(
        deployment(services),
        sim.clone(),
        DeploymentOptions::default(),
    )
    .await
    .expect("deployment spawns")
}

async fn stable(handle: &DeploymentHandle) {
    let r = bounded("wait_stable", handle.wait_stable(Duration::from_secs(60))).await;
    assert!(
        matches!(r, Ok(Stabilization::Ready { .. })),
        "expected stable, got {r:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_crash_inside_the_window_restarts_at_once_without_any_timer() {
    let sim = Arc::new(SimRuntime::new(1));
    let handle = spawn(&sim, vec![service("a", 2)]).await;
    let mut events = handle.subscribe();
    stable(&handle).await;
    drain(&mut events);

    let before = Instant::now();
    assert_eq!(sim.kill_replica("a", 1, 3).len(), 1);
    let (restarting, _) = wait_for(&mut events, "restart", |k| {
        matches!(k, EventKind::ReplicaRestarting { .. })
    })
    .await;
    assert!(matches!(
        restarting.kind,
        EventKind::ReplicaRestarting {
            replica: 1,
            delay_ms: 0,
            restarts: 1,
            ..
        }
    ));
    let (started, _) = wait_for(&mut events, "restarted", |k| started(k, "a", 1)).await;
    assert!(matches!(
        started.kind,
        EventKind::ReplicaStarted { generation: 1, .. }
    ));
    assert_eq!(
        Instant::now(),
        before,
        "exit → restart must not wait on any timer (virtual time advanced)"
    );
    assert_eq!(sim.running_count("a", 1), 1);
    let r = handle
        .board()
        .replica("a", 1)
        .expect("replica on the board");
    assert_eq!(
        (r.state, r.restarts, r.last_exit_code),
        (ReplicaState::Running, 1, Some(3))
    );
    handle.shutdown().await.expect("shutdown");
    assert!(sim.running().is_empty(), "shutdown stops every container");
}

#[tokio::test(start_paused = true)]
async fn crash_loop_backs_off_doubling_to_the_cap_and_resets_after_a_clean_run() {
    let sim = Arc::new(SimRuntime::new(2));
    let handle = spawn(&sim, vec![service("a", 1)]).await;
    let mut events = handle.subscribe();
    stable(&handle).await;
    drain(&mut events);

    let mut delays = Vec::new();
    for n in 0..8 {
        sim.kill_replica("a", 0, 1);
        let (e, _) = wait_for(&mut events, "restarting", |k| {
            matches!(k, EventKind::ReplicaRestarting { .. })
        })
        .await;
        let EventKind::ReplicaRestarting { delay_ms, .. } = e.kind else {
            unreachable!()
        };
        if delay_ms > 0 {
            let r = handle.board().replica("a", 0).expect("replica");
            assert_eq!(r.state, ReplicaState::Backoff, "crash {n}");
            assert_eq!(r.backoff_ms, Some(delay_ms), "delay in force is visible");
        }
        delays.push(delay_ms);
        wait_for(&mut events, "restarted", |k| started(k, "a", 0)).await;
    }
    assert_eq!(delays, vec![0, 0, 0, 1000, 2000, 4000, 8000, 8000]);

    // Ten clean minutes reset the window and the backoff.
    tokio::time::sleep(Duration::from_secs(601)).await;
    sim.kill_replica("a", 0, 1);
    let (e, _) = wait_for(&mut events, "restarting", |k| {
        matches!(k, EventKind::ReplicaRestarting { .. })
    })
    .await;
    assert!(matches!(
        e.kind,
        EventKind::ReplicaRestarting { delay_ms: 0, .. }
    ));
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn give_up_after_fails_the_replica_and_reports_the_service_failed() {
    let sim = Arc::new(SimRuntime::new(3));
    let mut svc = service("a", 1);
    svc.restart.give_up_after = Some(2);
    let handle = spawn(&sim, vec![svc]).await;
    let mut events = handle.subscribe();
    stable(&handle).await;
    drain(&mut events);
    for _ in 0..2 {
        sim.kill_replica("a", 0, 1);
        wait_for(&mut events, "restarted", |k| started(k, "a", 0)).await;
    }
    sim.kill_replica("a", 0, 1);
    wait_for(&mut events, "gave up", |k| {
        matches!(k, EventKind::GaveUp { .. })
    })
    .await;
    wait_for(&mut events, "service failed", |k| {
        matches!(k, EventKind::ServiceFailed { .. })
    })
    .await;
    let status = handle.status();
    assert_eq!(status.services[0].phase, ServicePhase::Failed);
    assert_eq!(status.services[0].replicas[0].state, ReplicaState::Failed);
    assert_eq!(sim.running_count("a", 0), 0);
    assert!(!status.stable);
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn panic_action_shutdown_stops_the_service_and_keeps_the_others() {
    let sim = Arc::new(SimRuntime::new(4));
    let mut a = service("a", 2);
    a.on_panic = PanicAction::Shutdown;
    let handle = spawn(&sim, vec![a, service("b", 1)]).await;
    let mut events = handle.subscribe();
    stable(&handle).await;
    drain(&mut events);

    sim.kill_replica("a", 0, 139);
    wait_for(&mut events, "service shutdown", |k| {
        matches!(k, EventKind::ServiceShutdown { .. })
    })
    .await;
    let status = bounded("shutdown settles", async {
        loop {
            let s = handle.status();
            if s.services[0]
                .replicas
                .iter()
                .all(|r| r.state == ReplicaState::Stopped)
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(status.services[0].phase, ServicePhase::Shutdown);
    assert_eq!(
        sim.running_count("a", 1),
        0,
        "the healthy replica is stopped too"
    );
    assert_eq!(sim.running_count("b", 0), 1, "other services keep running");
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn panic_action_isolate_keeps_the_replica_out_and_does_not_restart_it() {
    let sim = Arc::new(SimRuntime::new(5));
    let mut a = service("a", 2);
    a.on_panic = PanicAction::Isolate;
    let handle = spawn(&sim, vec![a]).await;
    let mut events = handle.subscribe();
    stable(&handle).await;
    drain(&mut events);

    sim.kill_replica("a", 1, 2);
    wait_for(&mut events, "isolated", |k| {
        matches!(k, EventKind::Isolated { replica: 1, .. })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    let later = drain(&mut events);
    assert!(
        !later
            .iter()
            .any(|e| matches!(e.kind, EventKind::ReplicaRestarting { .. })),
        "an isolated replica is not restarted: {later:?}"
    );
    let r = handle.board().replica("a", 1).expect("replica");
    assert_eq!(r.state, ReplicaState::Isolated);
    assert_eq!(sim.running_count("a", 1), 0);
    assert!(!handle.status().stable, "an isolated replica is not ready");
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_job_that_exits_zero_completes_and_one_that_fails_is_retried() {
    let sim = Arc::new(SimRuntime::new(6));
    let mut job = service("migrate", 1);
    job.kind = ServiceKind::Job;
    job.restart.policy = RestartPolicy::OnFailure;
    let mut bad = job.clone();
    bad.name = "flaky-job".into();
    sim.set_profile(
        "migrate",
        FaultProfile {
            lifetime: Lifetime::Fixed(Duration::from_secs(5)),
            exit_codes: vec![0],
            ..FaultProfile::default()
        },
    );
    sim.set_profile(
        "flaky-job",
        FaultProfile {
            lifetime: Lifetime::Fixed(Duration::from_secs(5)),
            exit_codes: vec![3],
            ..FaultProfile::default()
        },
    );
    let handle = spawn(&sim, vec![job, bad]).await;
    let mut events = handle.subscribe();
    wait_for(
        &mut events,
        "completed",
        |k| matches!(k, EventKind::Completed { service, .. } if &**service == "migrate"),
    )
    .await;
    assert_eq!(
        handle.board().replica("migrate", 0).map(|r| r.state),
        Some(ReplicaState::Completed)
    );
    wait_for(
        &mut events,
        "failed job retried",
        |k| matches!(k, EventKind::ReplicaRestarting { service, .. } if &**service == "flaky-job"),
    )
    .await;
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn on_unhealthy_restart_replaces_the_replica_and_counts_as_a_crash() {
    let sim = Arc::new(SimRuntime::new(7));
    let mut a = service("a", 1);
    a.health = Some(health(OnUnhealthy::Restart));
    sim.set_profile(
        "a",
        FaultProfile {
            health: HealthBehaviour::UnhealthyAfter(Duration::from_secs(10)),
            ..FaultProfile::default()
        },
    );
    let handle = spawn(&sim, vec![a]).await;
    let mut events = handle.subscribe();
    stable(&handle).await;
    drain(&mut events);
    wait_for(&mut events, "unhealthy", |k| {
        matches!(k, EventKind::HealthChanged { healthy: false, .. })
    })
    .await;
    let (e, _) = wait_for(&mut events, "restart", |k| {
        matches!(k, EventKind::ReplicaRestarting { .. })
    })
    .await;
    assert!(matches!(
        e.kind,
        EventKind::ReplicaRestarting { restarts: 1, .. }
    ));
    let (s, _) = wait_for(&mut events, "new generation", |k| started(k, "a", 0)).await;
    assert!(matches!(
        s.kind,
        EventKind::ReplicaStarted { generation: 1, .. }
    ));
    assert_eq!(
        sim.running_count("a", 0),
        1,
        "the old container was stopped"
    );
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn on_unhealthy_isolate_marks_not_ready_and_recovers_when_healthy_again() {
    let sim = Arc::new(SimRuntime::new(8));
    let mut a = service("a", 1);
    a.health = Some(health(OnUnhealthy::Isolate));
    sim.set_profile(
        "a",
        FaultProfile {
            health: HealthBehaviour::UnhealthyAfter(Duration::from_secs(5)),
            ..FaultProfile::default()
        },
    );
    let handle = spawn(&sim, vec![a]).await;
    let mut events = handle.subscribe();
    stable(&handle).await;
    drain(&mut events);
    wait_for(&mut events, "isolated", |k| {
        matches!(k, EventKind::Isolated { .. })
    })
    .await;
    let r = handle.board().replica("a", 0).expect("replica");
    assert_eq!((r.state, r.healthy), (ReplicaState::Isolated, false));
    assert_eq!(
        sim.running_count("a", 0),
        1,
        "isolation keeps the container running"
    );
    assert!(!handle.status().stable);
    assert!(
        r.probes.len() <= herdsman_core::PROBE_HISTORY && !r.probes.is_empty(),
        "last probe results kept: {:?}",
        r.probes
    );

    sim.set_profile("a", FaultProfile::default());
    wait_for(&mut events, "healthy again", |k| {
        matches!(k, EventKind::HealthChanged { healthy: true, .. })
    })
    .await;
    assert_eq!(
        handle.board().replica("a", 0).map(|r| r.state),
        Some(ReplicaState::Running)
    );
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn losing_a_replica_makes_the_deployment_unstable_until_it_is_back() {
    let sim = Arc::new(SimRuntime::new(9));
    let handle = spawn(&sim, vec![service("a", 2)]).await;
    let mut events = handle.subscribe();
    stable(&handle).await;
    drain(&mut events);
    sim.kill_replica("a", 0, 1);
    let (_, before) = wait_for(&mut events, "stable again", |k| {
        matches!(k, EventKind::DeploymentStable { .. })
    })
    .await;
    let unstable = before
        .iter()
        .position(|e| matches!(e.kind, EventKind::DeploymentUnstable))
        .expect("an unstable event");
    let exited = before
        .iter()
        .position(|e| matches!(e.kind, EventKind::ReplicaExited { .. }))
        .expect("an exit event");
    assert!(exited < unstable, "{before:?}");
    handle.shutdown().await.expect("shutdown");
}
