//! The `SimRuntime` auditor under paused time: the breaches of the runtime contract it
//! records (a second incarnation of a slot started or initialised while one runs, a
//! running container killed without its stop signal and grace) and what is no breach.

mod sim_support;
mod support;

use std::sync::Arc;
use std::time::Duration;

use herdsman_runtime::{ContainerId, FaultProfile, Runtime, SimRuntime, ViolationKind};
use herdsman_spec::StopSignal;

use sim_support::{create, init_step, launch, secs};

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
