//! `SimRuntime` driven at run time under paused time: fault injection (`kill`,
//! `fail_starts`, a profile changed mid-run), removal, the queries and logs, timers, and
//! the cost of idle containers.

mod sim_support;
mod support;

use herdsman_runtime::{ExitReason, FaultProfile, Lifetime, Runtime, RuntimeError, SimRuntime};
use herdsman_spec::StopSignal;

use sim_support::{create, launch, secs, within};
use support::{replica, service};

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
