//! When a supervisor's events reach subscribers: a supervisor leaves the events it told
//! before a report for the deployment actor to send when it handles that report, so it
//! wakes one task instead of two. These tests hold the two promises that come with it:
//! such an event goes out even when nothing else happens after it, and not behind the
//! deployment actor's slow work (a shutdown's grace periods). Paused time, `SimRuntime`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use herdsman_core::{spawn_deployment, DeploymentOptions, EventKind};
use herdsman_runtime::{FaultProfile, SimRuntime};
use herdsman_spec::{DependencyCondition, OnUnhealthy, RestartPolicy};
use support::*;
use tokio::time::Instant;

fn is_health(kind: &EventKind, svc: &str, to: bool) -> bool {
    matches!(kind, EventKind::HealthChanged { service, healthy, .. } if &**service == svc && *healthy == to)
}

#[tokio::test(start_paused = true)]
async fn a_health_change_that_leaves_the_deployment_unstable_is_delivered_at_once() {
    // `fast` is checked within a second of starting, `slow` within the hour: `fast`
    // turning healthy changes the counts the deployment actor hears of, but not its
    // stability, so no event of the deployment's own follows to carry it along.
    let mut fast = service("fast", 1);
    fast.health = Some(health(OnUnhealthy::None));
    let mut slow = service("slow", 1);
    let mut h = health(OnUnhealthy::None);
    h.interval = Duration::from_secs(3600);
    h.start_interval = Duration::from_secs(3600);
    slow.health = Some(h);
    let sim = Arc::new(SimRuntime::new(7));
    let handle = spawn_deployment(
        deployment(vec![fast, slow]),
        sim.clone(),
        DeploymentOptions::default(),
    )
    .await
    .expect("deployment spawns");
    let mut events = handle.subscribe();
    let t0 = Instant::now();
    let (_, before) = wait_for(&mut events, "fast turns healthy", |k| {
        is_health(k, "fast", true)
    })
    .await;
    let waited = t0.elapsed();
    assert!(
        waited <= Duration::from_secs(2),
        "fast's health change took {waited:?} to arrive (its check is due within 1 s)"
    );
    // Nothing of slow's has been checked yet, so nothing of it could have sent this one.
    assert!(
        !before
            .iter()
            .chain(drain(&mut events).iter())
            .any(|e| matches!(
                &e.kind,
                EventKind::HealthChanged { service, .. } | EventKind::ProbeFailed { service, .. }
                    if &**service == "slow"
            )),
        "slow was checked before fast's event arrived: the test proves nothing"
    );
    let status = handle.status();
    assert!(
        !status.stable,
        "the deployment is not stable while slow is unchecked"
    );
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_supervisors_events_arrive_while_the_deployment_waits_out_another_services_grace() {
    // `db` starts first, `web` after it, so a shutdown stops `web` first; `web` ignores
    // its stop signal and is waited out for 30 s. A crash of `db` meanwhile must be heard
    // of then, not when the shutdown ends. It is not restarted: no event of its container
    // actor follows to carry the supervisor's along.
    let mut db = service("db", 1);
    db.restart.policy = RestartPolicy::Never;
    let mut web = service("web", 1);
    web.stop_grace_period = Duration::from_secs(30);
    web.depends = vec![depends(
        "db",
        DependencyCondition::Started,
        Duration::from_secs(60),
    )];
    let sim = Arc::new(SimRuntime::new(11));
    sim.set_profile(
        "web",
        FaultProfile {
            stop_hangs: true,
            ..FaultProfile::default()
        },
    );
    let handle = spawn_deployment(
        deployment(vec![db, web]),
        sim.clone(),
        DeploymentOptions::default(),
    )
    .await
    .expect("deployment spawns");
    let mut events = handle.subscribe();
    bounded("stable", handle.wait_stable(PATIENCE))
        .await
        .expect("waits");
    let stopping = tokio::spawn({
        let handle = handle.clone();
        async move { handle.shutdown().await }
    });
    // Into web's grace period.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!stopping.is_finished(), "web's grace period is 30 s");
    assert_eq!(sim.kill_replica("db", 0, 3).len(), 1, "db's replica runs");
    let t0 = Instant::now();
    let (_, before) = wait_for(
        &mut events,
        "db's exit",
        |k| matches!(k, EventKind::ReplicaExited { service, .. } if &**service == "db"),
    )
    .await;
    let waited = t0.elapsed();
    assert!(
        waited < Duration::from_secs(1),
        "db's exit took {waited:?} to arrive while the deployment was stopping web"
    );
    assert!(
        !before
            .iter()
            .any(|e| matches!(e.kind, EventKind::DeploymentStopped)),
        "the exit came after the shutdown ended"
    );
    assert!(!stopping.is_finished(), "still in web's grace period");
    bounded("shutdown", stopping)
        .await
        .expect("joins")
        .expect("shutdown");
}
