//! `SimRuntime` under paused time: determinism for a seed, every fault profile knob,
//! run-time fault injection, the queries, and the cost of idle containers.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use herdsman_runtime::{
    ContainerId, ExecBehaviour, ExitReason, FaultProfile, HealthBehaviour, Lifetime, Runtime,
    RuntimeError, SimRuntime, Started, ViolationKind,
};
use herdsman_spec::{Check, InitAction, InitStep, ReplicaVars, StepFailure, StopSignal, Template};
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

use support::{replica, service};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    // Simulated time: an hour passes in no real time, so this only trips on a deadlock.
    timeout(secs(3600), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} never finished: likely deadlocked"))
}

/// Create replica `r` of `svc` at `generation`.
async fn create(
    sim: &SimRuntime,
    svc: &str,
    r: u32,
    generation: u64,
) -> (ContainerId, ReplicaVars) {
    let (id, spec) = replica(&service(svc, None), r);
    let id = ContainerId { generation, ..id };
    sim.create(&id, &spec).await.expect("create");
    (id, spec.vars)
}

/// Create and start replica `r` of `svc` at generation 0.
async fn launch(sim: &SimRuntime, svc: &str, r: u32) -> (ContainerId, Started) {
    let (id, _) = create(sim, svc, r, 0).await;
    let started = sim.start(&id).await.expect("start");
    (id, started)
}

fn check() -> Check {
    Check::Tcp {
        host: None,
        port: Template::parse("${PORT}").expect("template"),
    }
}

/// One event of a simulated run: when, which container, what happened.
type Event = (Duration, ContainerId, String);

/// 20 replicas of a crashy service, each restarted at its next generation whenever it
/// exits or fails to start, for 200 simulated seconds.
async fn crashy_fleet(seed: u64) -> Vec<Event> {
    let sim = Arc::new(SimRuntime::new(seed));
    sim.set_profile(
        "api",
        FaultProfile {
            lifetime: Lifetime::Exponential { mean: secs(10) },
            exit_codes: vec![1, 2, 3],
            start_failure: 0.2,
            ..FaultProfile::default()
        },
    );
    let t0 = Instant::now();
    let mut events = Vec::new();
    let mut exits = JoinSet::new();
    let mut pending: Vec<(u32, u64)> = (0..20).map(|r| (r, 0)).collect();
    loop {
        for (r, generation) in std::mem::take(&mut pending) {
            let (id, _) = create(&sim, "api", r, generation).await;
            match sim.start(&id).await {
                Ok(started) => {
                    exits.spawn(async move { (id, started.exit.await) });
                }
                Err(e) => {
                    events.push((t0.elapsed(), id, format!("start failed: {e}")));
                    pending.push((r, generation + 1));
                }
            }
        }
        if !pending.is_empty() {
            continue;
        }
        let Some(done) = within("exit", exits.join_next()).await else {
            break;
        };
        let (id, exit) = done.expect("exit task");
        let now = t0.elapsed();
        assert!(exit.ran_for <= now);
        events.push((
            now,
            id.clone(),
            format!("{:?} after {:?}", exit.reason, exit.ran_for),
        ));
        if now < secs(200) {
            pending.push((id.replica, id.generation + 1));
        }
    }
    events.sort();
    events
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_replays_the_same_exits_at_the_same_times() {
    let first = crashy_fleet(42).await;
    let second = crashy_fleet(42).await;
    assert!(first.len() > 300, "a busy run: {} events", first.len());
    assert_eq!(first, second);
    assert_ne!(first, crashy_fleet(43).await, "another seed, another run");
}

#[tokio::test(start_paused = true)]
async fn a_fixed_lifetime_ends_exactly_then_with_a_code_from_the_profile() {
    let sim = SimRuntime::new(1);
    sim.set_profile(
        "job",
        FaultProfile {
            lifetime: Lifetime::Fixed(secs(5)),
            exit_codes: vec![3, 4, 5],
            ..FaultProfile::default()
        },
    );
    let mut seen = std::collections::BTreeSet::new();
    let t0 = Instant::now();
    let mut exits = Vec::new();
    for r in 0..60 {
        exits.push(launch(&sim, "job", r).await.1.exit);
    }
    for exit in exits {
        let exit = within("exit", exit).await;
        assert_eq!(exit.ran_for, secs(5));
        assert_eq!(t0.elapsed(), secs(5));
        seen.insert(exit.code().expect("an exit code"));
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![3, 4, 5]);
    assert_eq!(sim.stats().exited, 60);
}

#[tokio::test(start_paused = true)]
async fn an_exponential_lifetime_has_roughly_its_mean_over_many_samples() {
    let sim = SimRuntime::new(7);
    sim.set_profile(
        "api",
        FaultProfile {
            lifetime: Lifetime::Exponential { mean: secs(10) },
            ..FaultProfile::default()
        },
    );
    let mut exits = Vec::new();
    for r in 0..2000 {
        exits.push(launch(&sim, "api", r).await.1.exit);
    }
    assert_eq!(sim.scheduled_exits(), 2000);
    let mut total = Duration::ZERO;
    for exit in exits {
        total += within("exit", exit).await.ran_for;
    }
    let mean = total.as_secs_f64() / 2000.0;
    assert!((9.0..11.0).contains(&mean), "mean lifetime {mean}s");
}

#[tokio::test(start_paused = true)]
async fn starts_fail_with_the_profile_probability() {
    let sim = SimRuntime::new(3);
    sim.set_profile(
        "flaky",
        FaultProfile {
            start_failure: 0.3,
            ..FaultProfile::default()
        },
    );
    let mut failed = 0;
    for r in 0..2000 {
        let (id, _) = create(&sim, "flaky", r, 0).await;
        match sim.start(&id).await {
            Ok(_) => assert!(sim.is_running(&id)),
            Err(RuntimeError::Injected { .. }) => failed += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(
        (500..700).contains(&failed),
        "{failed} of 2000 starts failed"
    );
    assert_eq!(sim.stats().start_failures, failed);
    assert_eq!(sim.stats().started, 2000 - failed);
}

#[tokio::test(start_paused = true)]
async fn a_start_takes_the_profile_start_latency() {
    let sim = SimRuntime::new(0);
    sim.set_profile(
        "slow",
        FaultProfile {
            start_latency: Duration::from_millis(750),
            ..FaultProfile::default()
        },
    );
    let (id, _) = create(&sim, "slow", 0, 0).await;
    let t0 = Instant::now();
    sim.start(&id).await.expect("start");
    assert_eq!(t0.elapsed(), Duration::from_millis(750));
}

#[tokio::test(start_paused = true)]
async fn a_stop_ends_at_once_with_the_stop_signal() {
    let sim = SimRuntime::new(0);
    let (id, started) = launch(&sim, "api", 0).await;
    let t0 = Instant::now();
    sim.stop(&id, StopSignal::TERM, secs(30))
        .await
        .expect("stop");
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(
        within("exit", started.exit).await.reason,
        ExitReason::Signal(15)
    );
    assert!(!sim.is_running(&id));
    assert_eq!(sim.stats().stopped, 1);
}

#[tokio::test(start_paused = true)]
async fn a_hung_stop_ends_only_at_the_kill_after_the_grace_period() {
    let sim = SimRuntime::new(0);
    sim.set_profile(
        "stuck",
        FaultProfile {
            stop_hangs: true,
            ..FaultProfile::default()
        },
    );
    let (id, started) = launch(&sim, "stuck", 0).await;
    let t0 = Instant::now();
    let sim = Arc::new(sim);
    let stopping = {
        let (sim, id) = (sim.clone(), id.clone());
        tokio::spawn(async move { sim.stop(&id, StopSignal::TERM, secs(7)).await })
    };
    tokio::time::sleep(secs(6)).await;
    assert!(
        sim.is_running(&id),
        "it ignores the stop signal during the grace period"
    );
    within("stop", stopping)
        .await
        .expect("stop task")
        .expect("stop");
    assert_eq!(t0.elapsed(), secs(7));
    let exit = within("exit", started.exit).await;
    assert_eq!(exit.reason, ExitReason::Signal(9));
    assert_eq!(exit.ran_for, secs(7));

    // SIGKILL itself cannot be ignored.
    let (id, started) = launch(&sim, "stuck", 1).await;
    sim.stop(&id, StopSignal::KILL, secs(7))
        .await
        .expect("stop");
    assert_eq!(
        within("exit", started.exit).await.reason,
        ExitReason::Signal(9)
    );
    assert_eq!(t0.elapsed(), secs(7));
}

#[tokio::test(start_paused = true)]
async fn a_hung_stop_returns_early_when_the_container_exits_by_itself() {
    let sim = SimRuntime::new(0);
    sim.set_profile(
        "stuck",
        FaultProfile {
            stop_hangs: true,
            lifetime: Lifetime::Fixed(secs(2)),
            ..FaultProfile::default()
        },
    );
    let (id, started) = launch(&sim, "stuck", 0).await;
    let t0 = Instant::now();
    sim.stop(&id, StopSignal::TERM, secs(30))
        .await
        .expect("stop");
    assert_eq!(t0.elapsed(), secs(2));
    assert_eq!(
        within("exit", started.exit).await.reason,
        ExitReason::Code(1)
    );
}

/// Whether each container passes a health check now.
async fn verdicts(sim: &SimRuntime, containers: &[(ContainerId, ReplicaVars)]) -> Vec<bool> {
    let mut out = Vec::new();
    for (id, vars) in containers {
        out.push(
            sim.check(id, &check(), vars, secs(1))
                .await
                .outcome
                .is_success(),
        );
    }
    out
}

#[tokio::test(start_paused = true)]
async fn health_checks_follow_the_profile_from_the_container_start() {
    let sim = SimRuntime::new(5);
    let behaviours = [
        ("healthy", HealthBehaviour::Healthy),
        ("warming", HealthBehaviour::HealthyAfter(secs(5))),
        ("decaying", HealthBehaviour::UnhealthyAfter(secs(5))),
        ("never", HealthBehaviour::Never),
    ];
    let mut containers = Vec::new();
    for (svc, health) in behaviours {
        sim.set_profile(
            svc,
            FaultProfile {
                health,
                ..FaultProfile::default()
            },
        );
        let (id, vars) = create(&sim, svc, 0, 0).await;
        let _started = sim.start(&id).await.expect("start");
        containers.push((id, vars));
    }
    assert_eq!(
        verdicts(&sim, &containers).await,
        vec![true, false, true, false]
    );
    tokio::time::sleep(secs(5)).await;
    assert_eq!(
        verdicts(&sim, &containers).await,
        vec![true, true, false, false]
    );

    let (id, vars) = containers[0].clone();
    sim.stop(&id, StopSignal::TERM, secs(1))
        .await
        .expect("stop");
    let r = sim.check(&id, &check(), &vars, secs(1)).await;
    assert!(
        !r.outcome.is_success(),
        "a stopped container fails its checks"
    );
}

#[tokio::test(start_paused = true)]
async fn flaky_health_fails_checks_with_the_profile_probability() {
    let sim = SimRuntime::new(9);
    sim.set_profile(
        "flaky",
        FaultProfile {
            health: HealthBehaviour::Flaky { p_fail: 0.3 },
            ..FaultProfile::default()
        },
    );
    let (id, vars) = create(&sim, "flaky", 0, 0).await;
    let _started = sim.start(&id).await.expect("start");
    let mut failed = 0;
    for _ in 0..2000 {
        if !sim
            .check(&id, &check(), &vars, secs(1))
            .await
            .outcome
            .is_success()
        {
            failed += 1;
        }
    }
    assert!(
        (500..700).contains(&failed),
        "{failed} of 2000 checks failed"
    );
}

#[tokio::test(start_paused = true)]
async fn exec_follows_the_profile_code_probability_and_duration() {
    let sim = SimRuntime::new(0);
    let (id, _) = launch(&sim, "api", 0).await;
    let out = sim.exec(&id, "true", secs(1)).await.expect("exec");
    assert_eq!((out.exit_code, out.timed_out), (Some(0), false));

    sim.set_profile(
        "api",
        FaultProfile {
            exec: ExecBehaviour {
                p_fail: 1.0,
                fail_code: 7,
                duration: Duration::from_millis(300),
            },
            ..FaultProfile::default()
        },
    );
    let t0 = Instant::now();
    let out = sim.exec(&id, "check", secs(1)).await.expect("exec");
    assert_eq!(out.exit_code, Some(7));
    assert_eq!(t0.elapsed(), Duration::from_millis(300));

    let t0 = Instant::now();
    let out = sim
        .exec(&id, "check", Duration::from_millis(100))
        .await
        .expect("exec");
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.exit_code, None);
    assert_eq!(t0.elapsed(), Duration::from_millis(100));

    let unknown = id.next_generation();
    let err = sim.exec(&unknown, "true", secs(1)).await;
    assert!(
        matches!(err, Err(RuntimeError::UnknownContainer { .. })),
        "{err:?}"
    );
}

fn init_step(retry: u32) -> InitStep {
    InitStep {
        id: "migrate".into(),
        action: InitAction::Run {
            command: Template::literal("./migrate"),
        },
        timeout: secs(10),
        retry,
        on_failure: StepFailure::Fail,
    }
}

#[tokio::test(start_paused = true)]
async fn init_steps_fail_per_try_with_the_profile_probability_and_honour_retries() {
    let sim = SimRuntime::new(11);
    let (id, vars) = create(&sim, "api", 0, 0).await;
    let report = sim.init_step(&id, &init_step(2), &vars).await;
    assert!(report.ok);
    assert_eq!(report.attempts, 1);

    sim.set_profile(
        "api",
        FaultProfile {
            init_failure: 1.0,
            ..FaultProfile::default()
        },
    );
    let report = sim.init_step(&id, &init_step(2), &vars).await;
    assert!(!report.ok);
    assert_eq!(report.attempts, 3, "one try and two retries");
    assert!(report.error.is_some());

    sim.set_profile(
        "api",
        FaultProfile {
            init_failure: 0.5,
            ..FaultProfile::default()
        },
    );
    let (mut failed_once, mut failed_thrice) = (0, 0);
    for r in 0..2000 {
        let (id, vars) = create(&sim, "api", r, 1).await;
        if !sim.init_step(&id, &init_step(0), &vars).await.ok {
            failed_once += 1;
        }
        let report = sim.init_step(&id, &init_step(2), &vars).await;
        if !report.ok {
            failed_thrice += 1;
        }
    }
    assert!(
        (900..1100).contains(&failed_once),
        "{failed_once} of 2000 single tries failed"
    );
    // Three tries all fail with probability 1/8.
    assert!(
        (170..330).contains(&failed_thrice),
        "{failed_thrice} of 2000 steps failed"
    );
    assert!(sim.stats().init_failures > 0);
}

#[tokio::test(start_paused = true)]
async fn a_kill_ends_the_current_incarnation_at_once_with_the_given_code() {
    let sim = SimRuntime::new(0);
    let (id, started) = launch(&sim, "api", 0).await;
    tokio::time::sleep(secs(3)).await;
    assert!(sim.kill(&id, 7));
    let exit = within("exit", started.exit).await;
    assert_eq!(exit.reason, ExitReason::Code(7));
    assert_eq!(exit.ran_for, secs(3));
    assert!(!sim.kill(&id, 7), "nothing left to kill");

    let (next, _) = create(&sim, "api", 0, 1).await;
    let started = sim.start(&next).await.expect("start");
    assert_eq!(sim.kill_replica("api", 0, 9), vec![next.clone()]);
    assert_eq!(
        within("exit", started.exit).await.reason,
        ExitReason::Code(9)
    );
    assert!(sim.kill_replica("api", 0, 9).is_empty());
    assert_eq!(sim.stats().killed, 2);
}

#[tokio::test(start_paused = true)]
async fn fail_starts_fails_exactly_the_next_n_starts_of_that_service() {
    let sim = SimRuntime::new(0);
    sim.fail_starts("api", 2);
    let (other, _) = launch(&sim, "db", 0).await;
    assert!(sim.is_running(&other), "other services are not affected");
    for generation in 0..2 {
        let (id, _) = create(&sim, "api", 0, generation).await;
        let err = sim.start(&id).await.expect_err("forced failure");
        assert!(err.to_string().contains("fail_starts"), "{err}");
        assert_eq!(sim.logs(&id, 10), vec!["start failed: injected fault"]);
    }
    let (id, _) = create(&sim, "api", 0, 2).await;
    sim.start(&id).await.expect("the third start succeeds");
    assert_eq!(sim.service_stats("api").start_failures, 2);
    assert_eq!(sim.service_stats("api").started, 1);
}

#[tokio::test(start_paused = true)]
async fn a_profile_set_at_run_time_applies_to_the_next_start() {
    let sim = SimRuntime::new(0);
    let (first, _) = launch(&sim, "api", 0).await;
    sim.set_profile(
        "api",
        FaultProfile {
            lifetime: Lifetime::Fixed(secs(1)),
            ..FaultProfile::default()
        },
    );
    let (second, started) = launch(&sim, "api", 1).await;
    within("exit", started.exit).await;
    assert!(
        sim.is_running(&first),
        "the running container keeps its lifetime"
    );
    assert!(!sim.is_running(&second));
}

#[tokio::test(start_paused = true)]
async fn queries_report_running_containers_and_counts() {
    let sim = SimRuntime::new(0);
    let (b, _) = launch(&sim, "api", 1).await;
    let (a, _) = launch(&sim, "api", 0).await;
    let (c, _) = launch(&sim, "db", 0).await;
    assert_eq!(sim.running(), vec![a.clone(), b.clone(), c.clone()]);
    assert_eq!(sim.running_count("api", 0), 1);
    assert_eq!(sim.running_count("api", 5), 0);
    // A supervisor bug that starts a second incarnation shows up in the count.
    let (dup, _) = create(&sim, "api", 0, 1).await;
    sim.start(&dup).await.expect("start");
    assert_eq!(sim.running_count("api", 0), 2);
    sim.stop(&a, StopSignal::TERM, secs(1)).await.expect("stop");
    assert_eq!(sim.running_count("api", 0), 1);
    assert!(!sim.is_running(&a));
    let stats = sim.stats();
    assert_eq!((stats.created, stats.started, stats.stopped), (4, 4, 1));
    assert_eq!(sim.service_stats("db").started, 1);
    assert_eq!(sim.container_count(), 4);
}

#[tokio::test(start_paused = true)]
async fn logs_are_synthetic_lines_for_start_and_exit() {
    let sim = SimRuntime::new(0);
    let (id, _) = create(&sim, "api", 0, 0).await;
    assert!(sim.logs(&id, 10).is_empty());
    let started = sim.start(&id).await.expect("start");
    assert_eq!(sim.logs(&id, 10), vec!["started"]);
    sim.kill(&id, 3);
    within("exit", started.exit).await;
    assert_eq!(sim.logs(&id, 10), vec!["started", "exited with code 3"]);
    assert_eq!(sim.logs(&id, 1), vec!["exited with code 3"]);
}

#[tokio::test(start_paused = true)]
async fn removing_a_running_container_ends_it_and_forgets_it() {
    let sim = SimRuntime::new(0);
    let (id, started) = launch(&sim, "api", 0).await;
    sim.remove(&id).await.expect("remove");
    assert_eq!(
        within("exit", started.exit).await.reason,
        ExitReason::Signal(9)
    );
    assert_eq!(sim.container_count(), 0);
    assert!(sim.logs(&id, 10).is_empty());
    let err = sim.start(&id).await.expect_err("removed");
    assert!(
        matches!(err, RuntimeError::UnknownContainer { .. }),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_timer_of_a_stopped_container_never_fires() {
    let sim = SimRuntime::new(0);
    sim.set_profile(
        "api",
        FaultProfile {
            lifetime: Lifetime::Fixed(secs(5)),
            ..FaultProfile::default()
        },
    );
    let (id, started) = launch(&sim, "api", 0).await;
    tokio::time::sleep(secs(1)).await;
    sim.stop(&id, StopSignal::TERM, secs(1))
        .await
        .expect("stop");
    assert_eq!(
        within("exit", started.exit).await.reason,
        ExitReason::Signal(15)
    );
    assert_eq!(sim.scheduled_exits(), 0);
    tokio::time::sleep(secs(10)).await;
    assert_eq!(sim.stats().exited, 1, "only the stop ended it");
}

#[tokio::test(start_paused = true)]
async fn a_hundred_thousand_idle_containers_cost_under_a_kibibyte_each_and_no_tasks() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let sim = SimRuntime::new(0);
    let svc = service("idle", None);
    let mut watches = Vec::with_capacity(100_000);
    for r in 0..100_000 {
        let (id, spec) = replica(&svc, r);
        sim.create(&id, &spec).await.expect("create");
        watches.push(sim.start(&id).await.expect("start").exit);
    }
    assert_eq!(sim.running().len(), 100_000);
    assert_eq!(sim.scheduled_exits(), 0, "Forever containers have no timer");
    assert_eq!(
        metrics.num_alive_tasks(),
        0,
        "no task per container, not even the driver"
    );
    let per_container = sim.approx_memory() / 100_000;
    assert!(per_container < 1024, "{per_container} bytes per container");

    // Timed containers share one driver task.
    sim.set_profile(
        "idle",
        FaultProfile {
            lifetime: Lifetime::Exponential { mean: secs(60) },
            ..FaultProfile::default()
        },
    );
    for r in 100_000..101_000 {
        let (id, spec) = replica(&svc, r);
        sim.create(&id, &spec).await.expect("create");
        watches.push(sim.start(&id).await.expect("start").exit);
    }
    assert_eq!(sim.scheduled_exits(), 1000);
    assert_eq!(metrics.num_alive_tasks(), 1, "one driver for all timers");
}

#[tokio::test(start_paused = true)]
async fn a_zero_lifetime_exits_at_the_instant_of_its_start() {
    let sim = SimRuntime::new(4);
    sim.set_profile(
        "api",
        FaultProfile {
            lifetime: Lifetime::Fixed(Duration::ZERO),
            exit_codes: vec![7],
            ..FaultProfile::default()
        },
    );
    let (id, started) = launch(&sim, "api", 0).await;
    // Already ended when `start` returned, before any other task could run.
    assert!(!sim.is_running(&id));
    let exit = sim.exit_of(&id).expect("it has exited");
    assert_eq!(
        (exit.reason, exit.ran_for),
        (ExitReason::Code(7), Duration::ZERO)
    );
    let mut watch = std::pin::pin!(started.exit);
    let polled = futures_poll_once(watch.as_mut());
    assert_eq!(polled.map(|e| e.reason), Some(ExitReason::Code(7)));
    assert_eq!(
        sim.scheduled_exits(),
        0,
        "no timer for an exit already delivered"
    );
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

/// Poll a future once with a no-op waker: `Some` when it was ready.
fn futures_poll_once<F: Future + Unpin>(fut: F) -> Option<F::Output> {
    let mut fut = fut;
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match std::pin::Pin::new(&mut fut).poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

#[tokio::test(start_paused = true)]
async fn the_auditor_records_a_start_while_another_incarnation_of_the_slot_runs() {
    let sim = SimRuntime::new(0);
    let (old, _old_started) = launch(&sim, "api", 0).await;
    let (new, _) = create(&sim, "api", 0, 1).await;
    let _new_started = sim.start(&new).await.expect("start");
    // Another replica index, and another deployment's same slot, are not duplicates.
    let _other = launch(&sim, "api", 1).await;
    let violations = sim.violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].id, new);
    assert_eq!(
        violations[0].kind,
        ViolationKind::DuplicateStart {
            running: old.clone()
        }
    );
    assert!(violations[0].to_string().contains("started while"));

    // Stopped first, then the next generation: no breach.
    let sim = SimRuntime::new(0);
    let (old, _s) = launch(&sim, "api", 0).await;
    sim.stop(&old, StopSignal::TERM, secs(10))
        .await
        .expect("stop");
    let (new, _) = create(&sim, "api", 0, 1).await;
    let _s = sim.start(&new).await.expect("start");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[tokio::test(start_paused = true)]
async fn the_auditor_records_an_init_step_begun_while_one_of_the_same_slot_is_in_flight() {
    let sim = Arc::new(SimRuntime::new(0));
    sim.set_profile(
        "api",
        FaultProfile {
            init_hangs: true,
            ..FaultProfile::default()
        },
    );
    let (old, vars) = create(&sim, "api", 0, 0).await;
    let hung = {
        let (sim, old, vars) = (sim.clone(), old.clone(), vars.clone());
        tokio::spawn(async move { sim.init_step(&old, &init_step(0), &vars).await })
    };
    tokio::time::sleep(secs(60)).await;
    assert!(
        !hung.is_finished(),
        "a hanging init step ignores its timeout"
    );
    assert_eq!(sim.inits_in_flight(), vec![old.clone()]);
    // A second run of the slot's init (a new generation) while the first still hangs.
    let (new, _) = create(&sim, "api", 0, 1).await;
    sim.set_profile("api", FaultProfile::default());
    assert!(sim.init_step(&new, &init_step(0), &vars).await.ok);
    let violations = sim.violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(
        violations[0].kind,
        ViolationKind::ConcurrentInit {
            in_flight: old.clone(),
            step: "migrate".into()
        }
    );
    // Once the hung step is cancelled, the slot's init may run again.
    hung.abort();
    let _ = hung.await;
    assert!(sim.inits_in_flight().is_empty());
    assert!(sim.init_step(&new, &init_step(0), &vars).await.ok);
    assert_eq!(sim.violation_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_slow_init_step_takes_its_latency_and_one_over_its_timeout_times_out() {
    let sim = SimRuntime::new(0);
    let (id, vars) = create(&sim, "api", 0, 0).await;
    sim.set_profile(
        "api",
        FaultProfile {
            init_latency: secs(3),
            ..FaultProfile::default()
        },
    );
    let began = Instant::now();
    let report = sim.init_step(&id, &init_step(2), &vars).await;
    assert!(report.ok);
    assert_eq!(began.elapsed(), secs(3));

    sim.set_profile(
        "api",
        FaultProfile {
            init_latency: secs(30),
            ..FaultProfile::default()
        },
    );
    let began = Instant::now();
    let report = sim.init_step(&id, &init_step(2), &vars).await;
    assert!(!report.ok);
    assert_eq!(report.attempts, 3);
    // Three tries, each cut at the step's 10 s timeout.
    assert_eq!(began.elapsed(), secs(30));
    assert!(report.error.is_some_and(|e| e.contains("timed out")));
}

#[tokio::test(start_paused = true)]
async fn the_auditor_records_a_running_container_killed_without_its_signal_and_grace() {
    let sim = SimRuntime::new(0);
    // The fixture's spec: SIGTERM with a 10 s grace.
    let (a, _a) = launch(&sim, "api", 0).await;
    sim.remove(&a).await.expect("remove");
    let (b, _b) = launch(&sim, "api", 1).await;
    sim.stop(&b, StopSignal::KILL, secs(10))
        .await
        .expect("stop");
    let (c, _c) = launch(&sim, "api", 2).await;
    sim.stop(&c, StopSignal::TERM, secs(1)).await.expect("stop");
    let kinds: Vec<(ContainerId, ViolationKind)> = sim
        .violations()
        .into_iter()
        .map(|v| (v.id, v.kind))
        .collect();
    let short = |signal: StopSignal, grace| ViolationKind::StopWithoutGrace {
        signal,
        grace,
        expected_signal: StopSignal::TERM,
        expected_grace: secs(10),
    };
    assert_eq!(
        kinds,
        vec![
            (a, ViolationKind::RemovedWhileRunning),
            (b, short(StopSignal::KILL, secs(10))),
            (c, short(StopSignal::TERM, secs(1))),
        ]
    );

    // The contract kept: stop with the spec's signal and grace, then remove; and stopping
    // or removing a container that already exited is no breach.
    let sim = SimRuntime::new(0);
    let (d, _d) = launch(&sim, "api", 0).await;
    sim.stop(&d, StopSignal::TERM, secs(10))
        .await
        .expect("stop");
    sim.stop(&d, StopSignal::KILL, Duration::ZERO)
        .await
        .expect("stop");
    sim.remove(&d).await.expect("remove");
    let (e, _e) = launch(&sim, "api", 1).await;
    sim.kill(&e, 1);
    sim.remove(&e).await.expect("remove");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[tokio::test(start_paused = true)]
async fn a_hung_stop_dropped_before_its_kill_leaves_the_container_running_and_removing_it_is_a_breach(
) {
    let sim = Arc::new(SimRuntime::new(0));
    sim.set_profile(
        "api",
        FaultProfile {
            stop_hangs: true,
            ..FaultProfile::default()
        },
    );
    let (id, _started) = launch(&sim, "api", 0).await;
    let stop = {
        let (sim, id) = (sim.clone(), id.clone());
        tokio::spawn(async move { sim.stop(&id, StopSignal::TERM, secs(10)).await })
    };
    tokio::time::sleep(secs(2)).await;
    stop.abort();
    let _ = stop.await;
    tokio::time::sleep(secs(60)).await;
    assert!(sim.is_running(&id), "the SIGKILL never came");
    assert!(sim.violations().is_empty());
    sim.remove(&id).await.expect("remove");
    assert_eq!(
        sim.violations()
            .into_iter()
            .map(|v| v.kind)
            .collect::<Vec<_>>(),
        vec![ViolationKind::RemovedWhileRunning]
    );
}
