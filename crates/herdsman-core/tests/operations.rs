//! The operator's verbs on a running deployment, through the embedding API: a graceful
//! restart one replica at a time, stopping and starting a service, reading a replica's
//! output. On `SimRuntime` under paused time.

mod support;

use std::sync::Arc;
use std::time::Duration;

use herdsman_core::{
    spawn_deployment, CoreError, DeploymentHandle, DeploymentOptions, EventKind, Received,
    ReplicaState, ServicePhase, Stabilization,
};
use herdsman_runtime::{FaultProfile, HealthBehaviour, SimRuntime};
use herdsman_spec::{OnUnhealthy, Service};
use support::*;

async fn spawn(sim: &Arc<SimRuntime>, services: Vec<Service>) -> DeploymentHandle {
    let handle = spawn_deployment(
        deployment(services),
        sim.clone(),
        DeploymentOptions::default(),
    )
    .await
    .expect("spawns");
    let r = bounded("stable", handle.wait_stable(Duration::from_secs(60))).await;
    assert!(matches!(r, Ok(Stabilization::Ready { .. })), "{r:?}");
    handle
}

#[tokio::test(start_paused = true)]
async fn a_restart_replaces_replicas_one_at_a_time_each_ready_before_the_next() {
    let sim = Arc::new(SimRuntime::new(1));
    sim.set_profile(
        "api",
        FaultProfile {
            // Each new incarnation needs 3 s to pass its health check.
            health: HealthBehaviour::HealthyAfter(Duration::from_secs(3)),
            ..FaultProfile::default()
        },
    );
    let mut api = service("api", 3);
    api.health = Some(health(OnUnhealthy::Isolate));
    let handle = spawn(&sim, vec![api]).await;
    let mut events = handle.subscribe();
    drain(&mut events);
    bounded(
        "restart",
        handle.restart("api", None, Duration::from_secs(60)),
    )
    .await
    .expect("restart");
    // Replay what happened: each replica's new incarnation turned healthy before the
    // next replica's new incarnation started.
    let mut order = Vec::new();
    while let Some(Received::Event(e)) = events.try_recv() {
        match e.kind {
            EventKind::ReplicaStarted { replica, .. } => order.push(format!("start {replica}")),
            EventKind::HealthChanged {
                replica,
                healthy: true,
                ..
            } => order.push(format!("healthy {replica}")),
            _ => {}
        }
    }
    assert_eq!(
        order,
        [
            "start 0",
            "healthy 0",
            "start 1",
            "healthy 1",
            "start 2",
            "healthy 2"
        ]
    );
    let status = handle.status();
    for r in &status.services[0].replicas {
        assert_eq!(r.container.as_ref().map(|c| c.generation), Some(1));
        assert_eq!(r.state, ReplicaState::Running);
    }
    assert_eq!(sim.running().len(), 3);
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn restarting_a_replica_that_gave_up_brings_it_and_its_service_back() {
    let sim = Arc::new(SimRuntime::new(2));
    let mut w = service("w", 2);
    w.restart.give_up_after = Some(0);
    let handle = spawn(&sim, vec![w]).await;
    sim.kill_replica("w", 1, 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(handle.status().services[0].phase, ServicePhase::Failed);
    bounded(
        "restart",
        handle.restart("w", Some(1), Duration::from_secs(30)),
    )
    .await
    .expect("restart");
    let status = handle.status();
    assert_eq!(status.services[0].phase, ServicePhase::Running);
    assert_eq!(sim.running_count("w", 1), 1);
    let r = bounded("stable", handle.wait_stable(Duration::from_secs(30))).await;
    assert!(matches!(r, Ok(Stabilization::Ready { .. })), "{r:?}");
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_restart_that_never_becomes_ready_says_which_replica_and_stops_there() {
    let sim = Arc::new(SimRuntime::new(3));
    let mut api = service("api", 2);
    api.health = Some(health(OnUnhealthy::None));
    let handle = spawn(&sim, vec![api]).await;
    sim.set_profile(
        "api",
        FaultProfile {
            health: HealthBehaviour::Never,
            ..FaultProfile::default()
        },
    );
    let err = bounded(
        "restart",
        handle.restart("api", None, Duration::from_secs(20)),
    )
    .await
    .expect_err("never ready");
    assert!(
        matches!(err, CoreError::NotReady { ref service, replica: 0, .. } if service == "api"),
        "{err:?}"
    );
    // Replica 1 was left alone: still its first incarnation.
    let r1 = handle.board().replica("api", 1).expect("on the board");
    assert_eq!(r1.container.map(|c| c.generation), Some(0));
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn stop_and_start_take_a_service_to_zero_and_back_to_its_spec() {
    let sim = Arc::new(SimRuntime::new(4));
    let handle = spawn(&sim, vec![service("a", 3), service("b", 1)]).await;
    bounded("stop", handle.stop_service("a"))
        .await
        .expect("stop");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(sim.running().len(), 1, "{:?}", sim.running());
    assert_eq!(
        bounded("start", handle.start_service("a"))
            .await
            .expect("start"),
        3
    );
    let r = bounded("stable", handle.wait_stable(Duration::from_secs(30))).await;
    assert!(matches!(r, Ok(Stabilization::Ready { .. })), "{r:?}");
    assert_eq!(sim.running().len(), 4);
    assert!(matches!(
        handle.start_service("nope").await,
        Err(CoreError::UnknownService(_))
    ));
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn logs_read_a_replicas_output_and_name_what_is_unknown() {
    let sim = Arc::new(SimRuntime::new(5));
    let handle = spawn(&sim, vec![service("a", 1)]).await;
    assert_eq!(handle.logs("a", 0, 10).expect("logs"), vec!["started"]);
    assert!(matches!(
        handle.logs("a", 7, 10),
        Err(CoreError::UnknownReplica { replica: 7, .. })
    ));
    assert!(matches!(
        handle.logs("zz", 0, 10),
        Err(CoreError::UnknownService(_))
    ));
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
}
