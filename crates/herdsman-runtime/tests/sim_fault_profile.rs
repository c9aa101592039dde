//! `SimRuntime` under paused time: determinism for a seed and every fault profile knob
//! (lifetimes, start failures and latency, hung stops, health, exec, init steps).

mod sim_support;
mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use herdsman_runtime::{
    ContainerId, ExecBehaviour, ExitReason, FaultProfile, HealthBehaviour, Lifetime, Runtime,
    RuntimeError, SimRuntime,
};
use herdsman_spec::{Check, ReplicaVars, StopSignal, Template};
use tokio::task::JoinSet;
use tokio::time::Instant;

use sim_support::{create, init_step, launch, secs, within};

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
