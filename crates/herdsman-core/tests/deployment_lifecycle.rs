//! Init failure policies, dependency order, scaling, stabilization, container actor
//! panics and slow subscribers, through the whole actor tree on `SimRuntime` under paused
//! time.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herdsman_core::{
    spawn_deployment, DeploymentHandle, DeploymentOptions, EventKind, Received, ReplicaState,
    ServicePhase, Stabilization,
};
use herdsman_probe::{CheckResult, CommandOutput, StepReport};
use herdsman_runtime::{
    ContainerId, ContainerSpec, FaultProfile, HealthBehaviour, Runtime, RuntimeError, SimRuntime,
    Started,
};
use herdsman_spec::{
    Backoff, Check, DependencyCondition, InitAction, InitFailurePolicy, InitStep, OnUnhealthy,
    ReplicaVars, StepFailure, StopSignal, Template,
};
use support::*;
use tokio::time::Instant;

async fn spawn_on(
    runtime: Arc<dyn Runtime>,
    services: Vec<herdsman_spec::Service>,
) -> DeploymentHandle {
    spawn_deployment(deployment(services), runtime, DeploymentOptions::default())
        .await
        .expect("deployment spawns")
}

fn init_step(id: &str, on_failure: StepFailure) -> InitStep {
    InitStep {
        id: id.to_string(),
        action: InitAction::Run {
            command: Template::literal("true"),
        },
        timeout: Duration::from_secs(5),
        retry: 1,
        on_failure,
    }
}

fn failing_init(p: f64) -> FaultProfile {
    FaultProfile {
        init_failure: p,
        ..FaultProfile::default()
    }
}

#[tokio::test(start_paused = true)]
async fn init_failure_restart_retries_the_sequence_then_fails_the_replica() {
    let sim = Arc::new(SimRuntime::new(11));
    let mut a = service("a", 1);
    a.init = vec![init_step("migrate", StepFailure::Fail)];
    a.on_init_failure = InitFailurePolicy::Restart {
        max_retries: 2,
        delay: Duration::from_secs(3),
    };
    sim.set_profile("a", failing_init(1.0));
    let handle = spawn_on(sim.clone(), vec![a]).await;
    let mut events = handle.subscribe();
    let t0 = Instant::now();
    let mut failures = Vec::new();
    for _ in 0..3 {
        let (e, _) = wait_for(&mut events, "init failure", |k| {
            matches!(k, EventKind::InitStepFailed { .. })
        })
        .await;
        assert!(matches!(
            &e.kind,
            EventKind::InitStepFailed { step, continues: false, .. } if step == "migrate"
        ));
        failures.push(Instant::now() - t0);
    }
    wait_for(&mut events, "gave up", |k| {
        matches!(k, EventKind::GaveUp { .. })
    })
    .await;
    let s = Duration::from_secs;
    assert_eq!(
        failures,
        vec![s(0), s(3), s(6)],
        "fixed delay between tries"
    );
    assert_eq!(
        handle.board().replica("a", 0).map(|r| r.state),
        Some(ReplicaState::Failed)
    );
    assert_eq!(
        sim.stats().started,
        0,
        "a failed init never starts the container"
    );
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn init_failure_backoff_waits_longer_each_time() {
    let sim = Arc::new(SimRuntime::new(12));
    let mut a = service("a", 1);
    a.init = vec![init_step("wait", StepFailure::Fail)];
    a.on_init_failure = InitFailurePolicy::Backoff {
        max_retries: 3,
        backoff: Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            multiplier: 3.0,
            jitter: 0.0,
        },
    };
    sim.set_profile("a", failing_init(1.0));
    let handle = spawn_on(sim.clone(), vec![a]).await;
    let mut events = handle.subscribe();
    let t0 = Instant::now();
    let mut at = Vec::new();
    for _ in 0..4 {
        wait_for(&mut events, "init failure", |k| {
            matches!(k, EventKind::InitStepFailed { .. })
        })
        .await;
        at.push((Instant::now() - t0).as_secs());
    }
    assert_eq!(at, vec![0, 1, 4, 13], "delays 1s, 3s, 9s");
    wait_for(&mut events, "gave up", |k| {
        matches!(k, EventKind::GaveUp { .. })
    })
    .await;
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn init_failure_fail_fails_at_once_and_a_warn_step_lets_the_sequence_go_on() {
    let sim = Arc::new(SimRuntime::new(13));
    let mut strict = service("strict", 1);
    strict.init = vec![init_step("check", StepFailure::Fail)];
    let mut lenient = service("lenient", 1);
    lenient.init = vec![
        init_step("optional", StepFailure::Warn),
        init_step("also-optional", StepFailure::Continue),
    ];
    sim.set_profile("strict", failing_init(1.0));
    sim.set_profile("lenient", failing_init(1.0));
    let handle = spawn_on(sim.clone(), vec![strict, lenient]).await;
    let mut events = handle.subscribe();
    let (mut lenient_started, mut strict_gave_up) = (false, false);
    let mut seen = Vec::new();
    while !(lenient_started && strict_gave_up) {
        let (e, before) = wait_for(&mut events, "lenient started and strict gave up", |k| {
            started(k, "lenient", 0)
                || matches!(k, EventKind::GaveUp { service, .. } if &**service == "strict")
        })
        .await;
        lenient_started |= started(&e.kind, "lenient", 0);
        strict_gave_up |= matches!(e.kind, EventKind::GaveUp { .. });
        seen.extend(before);
    }
    let init_failures: Vec<(String, String, bool)> = seen
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::InitStepFailed {
                service,
                step,
                continues,
                ..
            } => Some((service.to_string(), step.clone(), *continues)),
            _ => None,
        })
        .collect();
    assert!(
        init_failures.contains(&("lenient".into(), "optional".into(), true)),
        "a warn step reports its failure and goes on: {init_failures:?}"
    );
    assert!(
        !init_failures
            .iter()
            .any(|(_, step, _)| step == "also-optional"),
        "a continue step fails silently: {init_failures:?}"
    );
    assert!(init_failures.contains(&("strict".into(), "check".into(), false)));
    assert_eq!(sim.running_count("lenient", 0), 1);
    assert_eq!(sim.running_count("strict", 0), 0);
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_dependant_starts_only_once_its_dependency_is_healthy() {
    let sim = Arc::new(SimRuntime::new(14));
    let mut db = service("db", 1);
    db.health = Some(health(OnUnhealthy::Isolate));
    sim.set_profile(
        "db",
        FaultProfile {
            health: HealthBehaviour::HealthyAfter(Duration::from_secs(5)),
            ..FaultProfile::default()
        },
    );
    let mut api = service("api", 2);
    api.depends = vec![depends(
        "db",
        DependencyCondition::Healthy,
        Duration::from_secs(60),
    )];
    // Listed first on purpose: start order comes from `depends`, not from the spec order.
    let handle = spawn_on(sim.clone(), vec![api, db]).await;
    let mut events = handle.subscribe();
    let (_, before) = wait_for(&mut events, "api started", |k| started(k, "api", 0)).await;
    let db_healthy = before.iter().position(|e| {
        matches!(&e.kind, EventKind::HealthChanged { service, healthy: true, .. } if &**service == "db")
    });
    assert!(
        db_healthy.is_some(),
        "db healthy before api starts: {before:?}"
    );
    assert!(
        !before.iter().any(|e| started(&e.kind, "api", 1)),
        "no api replica before db is healthy"
    );
    let r = bounded("stable", handle.wait_stable(Duration::from_secs(60))).await;
    assert!(matches!(r, Ok(Stabilization::Ready { .. })));
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_dependency_that_never_becomes_healthy_fails_the_dependant_at_its_timeout() {
    let sim = Arc::new(SimRuntime::new(15));
    let mut db = service("db", 1);
    db.health = Some(health(OnUnhealthy::Isolate));
    sim.set_profile(
        "db",
        FaultProfile {
            health: HealthBehaviour::Never,
            ..FaultProfile::default()
        },
    );
    let mut api = service("api", 1);
    api.depends = vec![depends(
        "db",
        DependencyCondition::Healthy,
        Duration::from_secs(20),
    )];
    let handle = spawn_on(sim.clone(), vec![db, api]).await;
    let mut events = handle.subscribe();
    let t0 = Instant::now();
    wait_for(
        &mut events,
        "api failed",
        |k| matches!(k, EventKind::ServiceFailed { service, .. } if &**service == "api"),
    )
    .await;
    assert_eq!(Instant::now() - t0, Duration::from_secs(20));
    let status = handle.status();
    assert_eq!(status.services[1].phase, ServicePhase::Failed);
    assert!(
        status.services[1]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("db")),
        "{:?}",
        status.services[1].reason
    );
    assert_eq!(sim.running_count("api", 0), 0);
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn scaling_down_cancels_a_pending_backoff_and_scaling_up_adds_fresh_replicas() {
    let sim = Arc::new(SimRuntime::new(16));
    let mut a = service("a", 3);
    a.restart.max_restarts = 1;
    let handle = spawn_on(sim.clone(), vec![a]).await;
    let mut events = handle.subscribe();
    bounded("stable", handle.wait_stable(Duration::from_secs(60)))
        .await
        .expect("answer");
    drain(&mut events);
    // Replica 2 crash-loops into a 1 s backoff.
    sim.kill_replica("a", 2, 1);
    wait_for(&mut events, "restarted", |k| started(k, "a", 2)).await;
    sim.kill_replica("a", 2, 1);
    wait_for(&mut events, "backoff", |k| {
        matches!(k, EventKind::BackOff { replica: 2, .. })
    })
    .await;
    handle.scale("a", 2).await.expect("scale down");
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after = drain(&mut events);
    assert!(
        !after.iter().any(|e| started(&e.kind, "a", 2)),
        "the cancelled backoff must not restart replica 2: {after:?}"
    );
    assert_eq!(sim.running_count("a", 2), 0);
    assert!(
        handle.board().replica("a", 2).is_none(),
        "scaled-away replica leaves the board"
    );
    assert!(handle.status().stable);

    handle.scale("a", 4).await.expect("scale up");
    let r = bounded("stable again", handle.wait_stable(Duration::from_secs(60))).await;
    assert!(matches!(r, Ok(Stabilization::Ready { .. })));
    for i in 0..4 {
        assert_eq!(sim.running_count("a", i), 1, "replica {i}");
    }
    let s = handle.status();
    assert_eq!((s.services[0].desired, s.services[0].running), (4, 4));
    assert!(
        handle.scale("nope", 1).await.is_err(),
        "unknown service is an error"
    );
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn wait_stable_answers_the_moment_the_last_replica_turns_healthy() {
    let sim = Arc::new(SimRuntime::new(17));
    let mut a = service("a", 3);
    a.health = Some(health(OnUnhealthy::Isolate));
    sim.set_profile(
        "a",
        FaultProfile {
            health: HealthBehaviour::HealthyAfter(Duration::from_millis(2500)),
            ..FaultProfile::default()
        },
    );
    let handle = spawn_on(sim.clone(), vec![a]).await;
    let mut events = handle.subscribe();
    let t0 = Instant::now();
    let r = bounded("wait_stable", handle.wait_stable(Duration::from_secs(60)))
        .await
        .expect("answer");
    let waited = Instant::now() - t0;
    let Stabilization::Ready { after } = r else {
        panic!("expected ready, got {r:?}")
    };
    let all = drain(&mut events);
    let last_healthy = all
        .iter()
        .filter(|e| matches!(e.kind, EventKind::HealthChanged { healthy: true, .. }))
        .count();
    assert_eq!(last_healthy, 3);
    // Healthy from 2.5 s on, checked every 1 s with jitter on the first check: ready
    // within one interval of that, and answered without any polling delay.
    assert!(
        after >= Duration::from_millis(2500) && after <= Duration::from_millis(4500),
        "{after:?}"
    );
    assert_eq!(
        waited, after,
        "the waiter is answered when stability begins"
    );
    assert!(all
        .iter()
        .any(|e| matches!(e.kind, EventKind::DeploymentStable { .. })));
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn wait_stable_times_out_with_each_failing_service_its_reason_and_log_tails() {
    let sim = Arc::new(SimRuntime::new(18));
    let mut web = service("web", 2);
    web.health = Some(health(OnUnhealthy::Isolate));
    sim.set_profile(
        "web",
        FaultProfile {
            health: HealthBehaviour::Never,
            ..FaultProfile::default()
        },
    );
    let handle = spawn_on(sim.clone(), vec![web, service("ok", 1)]).await;
    let t0 = Instant::now();
    let r = bounded("wait_stable", handle.wait_stable(Duration::from_secs(10)))
        .await
        .expect("answer");
    assert_eq!(
        Instant::now() - t0,
        Duration::from_secs(10),
        "answered at the deadline"
    );
    let Stabilization::TimedOut { failing } = r else {
        panic!("expected a timeout, got {r:?}")
    };
    assert_eq!(failing.len(), 1, "only the failing service: {failing:?}");
    let web = &failing[0];
    assert_eq!(
        (web.service.as_str(), web.desired, web.healthy),
        ("web", 2, 0)
    );
    assert!(web.reason.contains("0/2 ready"), "{}", web.reason);
    assert_eq!(web.replicas.len(), 2);
    for r in &web.replicas {
        assert!(
            r.reason.contains("unhealthy") || r.reason.contains("isolated"),
            "{}",
            r.reason
        );
        assert!(!r.log_tail.is_empty(), "log tail for replica {}", r.replica);
    }
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_container_actor_that_panics_while_running_is_replaced_and_adopts_its_container() {
    let sim = Arc::new(SimRuntime::new(19));
    let handle = spawn_on(sim.clone(), vec![service("a", 2)]).await;
    let mut events = handle.subscribe();
    bounded("stable", handle.wait_stable(Duration::from_secs(60)))
        .await
        .expect("answer");
    drain(&mut events);
    let before = handle.board().replica("a", 0).and_then(|r| r.container);
    handle.inject_actor_panic("a", 0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sim.running_count("a", 0), 1, "not lost, not duplicated");
    assert_eq!(
        handle.board().replica("a", 0).and_then(|r| r.container),
        before,
        "the same container was adopted, not recreated"
    );
    assert_eq!(sim.stats().started, 2, "no extra start");
    // The replacement actor still carries out restarts.
    sim.kill_replica("a", 0, 1);
    wait_for(&mut events, "restarted", |k| started(k, "a", 0)).await;
    assert_eq!(sim.running_count("a", 0), 1);
    handle.shutdown().await.expect("shutdown");
    assert!(sim.running().is_empty());
}

/// Delegates to a `SimRuntime` but makes every init step take a minute, so a container
/// actor can be caught mid-boot.
struct SlowInit(Arc<SimRuntime>);

#[async_trait]
impl Runtime for SlowInit {
    async fn create(&self, id: &ContainerId, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        self.0.create(id, spec).await
    }
    async fn start(&self, id: &ContainerId) -> Result<Started, RuntimeError> {
        self.0.start(id).await
    }
    async fn stop(&self, id: &ContainerId, s: StopSignal, g: Duration) -> Result<(), RuntimeError> {
        self.0.stop(id, s, g).await
    }
    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.0.remove(id).await
    }
    async fn exec(
        &self,
        id: &ContainerId,
        c: &str,
        t: Duration,
    ) -> Result<CommandOutput, RuntimeError> {
        self.0.exec(id, c, t).await
    }
    fn logs(&self, id: &ContainerId, lines: usize) -> Vec<String> {
        self.0.logs(id, lines)
    }
    async fn check(
        &self,
        id: &ContainerId,
        c: &Check,
        v: &ReplicaVars,
        t: Duration,
    ) -> CheckResult {
        self.0.check(id, c, v, t).await
    }
    async fn init_step(&self, id: &ContainerId, step: &InitStep, vars: &ReplicaVars) -> StepReport {
        tokio::time::sleep(Duration::from_secs(60)).await;
        self.0.init_step(id, step, vars).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_container_actor_that_panics_mid_boot_is_replaced_and_boots_once() {
    let sim = Arc::new(SimRuntime::new(20));
    let mut a = service("a", 1);
    a.init = vec![init_step("slow", StepFailure::Fail)];
    let handle = spawn_on(Arc::new(SlowInit(sim.clone())), vec![a]).await;
    let mut events = handle.subscribe();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        handle.board().replica("a", 0).map(|r| r.state),
        Some(ReplicaState::Initializing)
    );
    handle.inject_actor_panic("a", 0);
    let (s, _) = wait_for(&mut events, "booted", |k| started(k, "a", 0)).await;
    assert!(matches!(
        s.kind,
        EventKind::ReplicaStarted { generation: 1, .. }
    ));
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        sim.running_count("a", 0),
        1,
        "exactly one container for the slot"
    );
    assert_eq!(
        sim.stats().started,
        1,
        "the aborted boot never started a container"
    );
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_that_never_reads_does_not_slow_the_supervisors() {
    let sim = Arc::new(SimRuntime::new(21));
    let options = DeploymentOptions {
        event_capacity: 8,
        ..DeploymentOptions::default()
    };
    let mut a = service("a", 1);
    a.restart.max_restarts = 1000;
    let handle = spawn_deployment(deployment(vec![a]), sim.clone(), options)
        .await
        .expect("spawn");
    let mut sleeper = handle.subscribe();
    bounded("stable", handle.wait_stable(Duration::from_secs(60)))
        .await
        .expect("answer");
    for _ in 0..200 {
        sim.kill_replica("a", 0, 1);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = handle.board().replica("a", 0).expect("replica");
    assert_eq!(r.restarts, 200, "every crash was handled");
    assert_eq!(r.state, ReplicaState::Running);
    let first = sleeper.recv().await;
    assert!(
        matches!(first, Some(Received::Missed(n)) if n > 500),
        "the sleeper is told it missed events: {first:?}"
    );
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_service_that_depends_on_a_job_starts_only_after_the_job_completed() {
    let sim = Arc::new(SimRuntime::new(22));
    let mut migrate = service("migrate", 1);
    migrate.kind = herdsman_spec::ServiceKind::Job;
    migrate.restart.policy = herdsman_spec::RestartPolicy::OnFailure;
    sim.set_profile(
        "migrate",
        FaultProfile {
            lifetime: herdsman_runtime::Lifetime::Fixed(Duration::from_secs(5)),
            exit_codes: vec![0],
            ..FaultProfile::default()
        },
    );
    let mut web = service("web", 1);
    web.depends = vec![depends(
        "migrate",
        DependencyCondition::Healthy,
        Duration::from_secs(60),
    )];
    let handle = spawn_on(sim.clone(), vec![migrate, web]).await;
    let mut events = handle.subscribe();
    let (_, before) = wait_for(&mut events, "web started", |k| started(k, "web", 0)).await;
    assert!(
        before.iter().any(
            |e| matches!(&e.kind, EventKind::Completed { service, .. } if &**service == "migrate")
        ),
        "the job completed before its dependant started: {before:?}"
    );
    let r = bounded("stable", handle.wait_stable(Duration::from_secs(60))).await;
    assert!(
        matches!(r, Ok(Stabilization::Ready { .. })),
        "a completed job counts as ready"
    );
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn the_first_subscription_sees_every_event_since_spawn_and_later_ones_start_now() {
    let sim = Arc::new(SimRuntime::new(23));
    let handle = spawn_on(sim.clone(), vec![service("a", 2)]).await;
    bounded("stable", handle.wait_stable(Duration::from_secs(60)))
        .await
        .expect("answer");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut first = handle.subscribe();
    let mut second = handle.subscribe();
    let early = drain(&mut first);
    assert!(
        early.iter().any(|e| started(&e.kind, "a", 0))
            && early.iter().any(|e| started(&e.kind, "a", 1)),
        "startup events reach the first subscriber: {early:?}"
    );
    assert!(
        drain(&mut second).is_empty(),
        "a later subscription starts now"
    );
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_supervisor_that_panics_is_replaced_and_its_replicas_are_neither_lost_nor_duplicated() {
    let sim = Arc::new(SimRuntime::new(24));
    let handle = spawn_on(sim.clone(), vec![service("a", 3), service("b", 1)]).await;
    let mut events = handle.subscribe();
    bounded("stable", handle.wait_stable(Duration::from_secs(60)))
        .await
        .expect("answer");
    drain(&mut events);
    handle.inject_supervisor_panic("a");
    for replica in 0..3 {
        let (e, _) = wait_for(&mut events, "replica booted again", |k| {
            started(k, "a", replica)
        })
        .await;
        assert!(
            matches!(e.kind, EventKind::ReplicaStarted { generation: 1, .. }),
            "the orphaned container was replaced by a new generation: {e:?}"
        );
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    for replica in 0..3 {
        assert_eq!(sim.running_count("a", replica), 1, "replica {replica}");
    }
    assert_eq!(sim.running().len(), 4, "no duplicate and no leak");
    assert!(handle.status().stable);
    // The replacement supervises: a crash is restarted.
    drain(&mut events);
    sim.kill_replica("a", 1, 1);
    wait_for(&mut events, "restarted", |k| started(k, "a", 1)).await;
    assert_eq!(sim.running_count("a", 1), 1);
    handle.shutdown().await.expect("shutdown");
    assert!(sim.running().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_supervisor_that_keeps_failing_fails_its_service_and_leaves_nothing_running() {
    let sim = Arc::new(SimRuntime::new(25));
    let handle = spawn_on(sim.clone(), vec![service("a", 2), service("b", 1)]).await;
    let mut events = handle.subscribe();
    bounded("stable", handle.wait_stable(Duration::from_secs(60)))
        .await
        .expect("answer");
    drain(&mut events);
    for _ in 0..4 {
        handle.inject_supervisor_panic("a");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    wait_for(
        &mut events,
        "service failed",
        |k| matches!(k, EventKind::ServiceFailed { service, .. } if &**service == "a"),
    )
    .await;
    let status = handle.status();
    assert_eq!(status.services[0].phase, ServicePhase::Failed);
    assert_eq!(sim.running_count("a", 0) + sim.running_count("a", 1), 0);
    assert_eq!(
        sim.running_count("b", 0),
        1,
        "other services are unaffected"
    );
    handle.shutdown().await.expect("shutdown");
}
