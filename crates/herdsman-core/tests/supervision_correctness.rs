//! Regression tests for the supervision promises: every exit acted on, nothing leaked,
//! init never run twice at once, give-ups and scaling that keep their word, diagnostics
//! that survive failure. Each drives the whole actor tree; most on `SimRuntime` under
//! paused time, wrapped in an auditing runtime that records what a real backend would
//! suffer (a running container removed without its stop signal, two init runs of one
//! slot at once).

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use herdsman_core::{
    spawn_deployment, DeploymentHandle, DeploymentOptions, ProbeOutcome, ReplicaState,
    ServicePhase, Stabilization,
};
use herdsman_probe::{CheckResult, CommandOutput, StepReport};
use herdsman_runtime::{
    ContainerId, ContainerSpec, Exit, ExitReason, ExitWatch, FaultProfile, HealthBehaviour,
    Lifetime, Runtime, RuntimeError, SimRuntime, Started,
};
use herdsman_spec::{
    Check, DependencyCondition, InitAction, InitStep, OnUnhealthy, PanicAction, ReplicaVars,
    RestartPolicy, Service, StepFailure, StopSignal, Template,
};
use support::*;
use tokio::time::Instant;

/// A `SimRuntime` that also records breaches of the runtime contract a real backend
/// would suffer from, and can make init steps take time.
struct Audited {
    sim: Arc<SimRuntime>,
    init_takes: Duration,
    /// Init runs in flight per (service, replica), and breaches seen.
    inits: Mutex<HashMap<(String, u32), u32>>,
    breaches: Mutex<Vec<String>>,
    init_runs: AtomicU64,
    /// How many health checks still panic (a bug in a runtime's check).
    panicking_checks: AtomicU64,
    /// How many health checks still never answer, ignoring their timeout (a bug in a
    /// runtime's check).
    hanging_checks: AtomicU64,
}

impl Audited {
    fn new(sim: Arc<SimRuntime>, init_takes: Duration) -> Arc<Audited> {
        Arc::new(Audited {
            sim,
            init_takes,
            inits: Mutex::new(HashMap::new()),
            breaches: Mutex::new(Vec::new()),
            init_runs: AtomicU64::new(0),
            panicking_checks: AtomicU64::new(0),
            hanging_checks: AtomicU64::new(0),
        })
    }

    fn breaches(&self) -> Vec<String> {
        self.breaches.lock().expect("lock").clone()
    }
}

/// Takes one from an injected-fault counter; whether there was one to take.
fn take_one(left: &AtomicU64) -> bool {
    left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

/// Counts an init run in flight for as long as it lives (dropped when aborted too).
struct InitGuard<'a>(&'a Audited, (String, u32));

impl Drop for InitGuard<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.0.inits.lock().expect("lock").get_mut(&self.1) {
            *n -= 1;
        }
    }
}

#[async_trait]
impl Runtime for Audited {
    async fn create(&self, id: &ContainerId, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        self.sim.create(id, spec).await
    }
    async fn start(&self, id: &ContainerId) -> Result<Started, RuntimeError> {
        self.sim.start(id).await
    }
    async fn stop(
        &self,
        id: &ContainerId,
        signal: StopSignal,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        self.sim.stop(id, signal, grace).await
    }
    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        if self.sim.is_running(id) {
            self.breaches.lock().expect("lock").push(format!(
                "{id} removed while running, without its stop signal"
            ));
        }
        self.sim.remove(id).await
    }
    async fn exec(
        &self,
        id: &ContainerId,
        command: &str,
        timeout: Duration,
    ) -> Result<CommandOutput, RuntimeError> {
        self.sim.exec(id, command, timeout).await
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
        assert!(
            !take_one(&self.panicking_checks),
            "injected: a check panics"
        );
        if take_one(&self.hanging_checks) {
            std::future::pending::<()>().await;
        }
        self.sim.check(id, check, vars, timeout).await
    }
    async fn init_step(&self, id: &ContainerId, step: &InitStep, vars: &ReplicaVars) -> StepReport {
        let slot = (id.service.to_string(), id.replica);
        {
            let mut inits = self.inits.lock().expect("lock");
            let n = inits.entry(slot.clone()).or_default();
            *n += 1;
            if *n > 1 {
                self.breaches.lock().expect("lock").push(format!(
                    "{id}: init step {} began while another ran",
                    step.id
                ));
            }
        }
        let _guard = InitGuard(self, slot);
        self.init_runs.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(self.init_takes).await;
        self.sim.init_step(id, step, vars).await
    }
}

async fn spawn(runtime: Arc<dyn Runtime>, services: Vec<Service>) -> DeploymentHandle {
    spawn_deployment(deployment(services), runtime, DeploymentOptions::default())
        .await
        .expect("deployment spawns")
}

async fn settle(d: Duration) {
    tokio::time::sleep(d).await;
}

fn state_of(handle: &DeploymentHandle, service: &str, replica: u32) -> ReplicaState {
    handle
        .board()
        .replica(service, replica)
        .map(|r| r.state)
        .unwrap_or_else(|| panic!("{service}/{replica} is on the board"))
}

/// A backend whose containers exit the instant they start, the exit delivered from
/// another thread (as a real reaper's is): the harshest case for the order of the
/// "started" and "exited" reports.
struct ExitsAtOnce {
    live: Mutex<HashMap<ContainerId, ()>>,
    reaper: Mutex<std::sync::mpsc::Sender<herdsman_runtime::ExitSender>>,
}

impl ExitsAtOnce {
    fn new() -> ExitsAtOnce {
        let (tx, rx) = std::sync::mpsc::channel::<herdsman_runtime::ExitSender>();
        std::thread::spawn(move || {
            for exit in rx {
                let _ = exit.send(Exit {
                    reason: ExitReason::Code(1),
                    ran_for: Duration::ZERO,
                });
            }
        });
        ExitsAtOnce {
            live: Mutex::new(HashMap::new()),
            reaper: Mutex::new(tx),
        }
    }
}

#[async_trait]
impl Runtime for ExitsAtOnce {
    async fn create(&self, id: &ContainerId, _: &ContainerSpec) -> Result<(), RuntimeError> {
        self.live.lock().expect("lock").insert(id.clone(), ());
        Ok(())
    }
    async fn start(&self, _id: &ContainerId) -> Result<Started, RuntimeError> {
        let (tx, exit) = ExitWatch::channel();
        let _ = self.reaper.lock().expect("lock").send(tx);
        Ok(Started { pid: None, exit })
    }
    async fn stop(&self, _: &ContainerId, _: StopSignal, _: Duration) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.live.lock().expect("lock").remove(id);
        Ok(())
    }
    async fn exec(
        &self,
        id: &ContainerId,
        _: &str,
        _: Duration,
    ) -> Result<CommandOutput, RuntimeError> {
        Err(RuntimeError::Unsupported {
            id: id.to_string(),
            what: "exec",
        })
    }
    fn logs(&self, _: &ContainerId, _: usize) -> Vec<String> {
        Vec::new()
    }
}

/// Item 1: an exit that overtakes the news that its container started used to be dropped,
/// leaving the replica `running` forever with a dead container. The race needs real
/// threads: the exit is reported from a task another worker may run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exit_racing_its_start_report_is_never_lost() {
    let runtime = Arc::new(ExitsAtOnce::new());
    let mut svc = service("crashy", 40);
    svc.restart.max_restarts = u32::MAX;
    let handle = spawn(runtime, vec![svc]).await;
    // A subscriber draining events, as the CLI's progress display does: waking it moves
    // tasks between workers, which is what lets a fast exit overtake its start report.
    let drains: Vec<_> = (0..3)
        .map(|_| {
            let mut events = handle.subscribe();
            tokio::spawn(async move { while events.recv().await.is_some() {} })
        })
        .collect();
    // Every replica must keep being restarted: one whose exit was lost stops counting.
    let deadline = Instant::now() + Duration::from_secs(20);
    let floor = 300;
    loop {
        let status = handle.status();
        let slowest = status.services[0]
            .replicas
            .iter()
            .map(|r| r.restarts)
            .min()
            .unwrap_or(0);
        if slowest >= floor {
            break;
        }
        if Instant::now() > deadline {
            let stuck: Vec<String> = status.services[0]
                .replicas
                .iter()
                .filter(|r| r.restarts < floor)
                .map(|r| format!("{} ({:?}, {} restarts)", r.replica, r.state, r.restarts))
                .collect();
            panic!("replicas stopped being restarted (exit lost): {stuck:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::timeout(Duration::from_secs(30), handle.shutdown())
        .await
        .expect("shutdown within 30 s (likely deadlocked)")
        .expect("shutdown");
    drains.iter().for_each(|d| d.abort());
}

/// Item 2: a shutdown arriving while a container actor is busy restarting a replica
/// whose stop hangs (SIGTERM ignored, a long grace) used to time out, kill the actor
/// mid-stop and return with a container still running.
#[tokio::test(start_paused = true)]
async fn shutdown_during_a_long_stop_leaves_nothing_running() {
    let sim = Arc::new(SimRuntime::new(7));
    sim.set_profile(
        "db",
        FaultProfile {
            stop_hangs: true,
            health: HealthBehaviour::UnhealthyAfter(Duration::from_secs(5)),
            ..FaultProfile::default()
        },
    );
    let mut svc = service("db", 1);
    svc.stop_grace_period = Duration::from_secs(30);
    svc.health = Some(health(OnUnhealthy::Restart));
    let audited = Audited::new(sim.clone(), Duration::ZERO);
    let handle = spawn(audited.clone(), vec![svc]).await;
    // Unhealthy after 5 s: the replica is restarted, its old container ignoring SIGTERM
    // for the whole 30 s grace. Shut down in the middle of that stop.
    settle(Duration::from_secs(10)).await;
    assert_eq!(state_of(&handle, "db", 0), ReplicaState::Stopping);
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
    assert!(
        sim.running().is_empty(),
        "running after shutdown returned: {:?}",
        sim.running()
    );
    assert_eq!(audited.breaches(), Vec::<String>::new());
}

fn slow_init_step() -> InitStep {
    InitStep {
        id: "migrate".into(),
        action: InitAction::Run {
            command: Template::literal("migrate"),
        },
        timeout: Duration::from_secs(600),
        retry: 0,
        on_failure: StepFailure::Fail,
    }
}

/// Item 3: a container actor that panicked mid-init left its init task running, and its
/// replacement ran the step again alongside it (two migrations at once).
#[tokio::test(start_paused = true)]
async fn an_actor_panic_mid_init_never_runs_the_step_twice_at_once() {
    let sim = Arc::new(SimRuntime::new(3));
    let audited = Audited::new(sim.clone(), Duration::from_secs(60));
    let mut svc = service("app", 2);
    svc.init = vec![slow_init_step()];
    let handle = spawn(audited.clone(), vec![svc]).await;
    settle(Duration::from_secs(10)).await;
    assert_eq!(state_of(&handle, "app", 0), ReplicaState::Initializing);
    handle.inject_actor_panic("app", 0);
    settle(Duration::from_secs(5)).await;
    handle.inject_actor_panic("app", 0);
    settle(Duration::from_secs(200)).await;
    assert_eq!(audited.breaches(), Vec::<String>::new());
    assert_eq!(state_of(&handle, "app", 0), ReplicaState::Running);
    assert_eq!(sim.running_count("app", 0), 1);
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
    assert!(sim.running().is_empty());
}

/// Item 4: a replica restarted for turning unhealthy never had its restart count reset by
/// a clean run, so one that turned unhealthy once an hour eventually gave up.
#[tokio::test(start_paused = true)]
async fn an_hourly_unhealthy_restart_never_gives_up() {
    let sim = Arc::new(SimRuntime::new(4));
    sim.set_profile(
        "web",
        FaultProfile {
            health: HealthBehaviour::UnhealthyAfter(Duration::from_secs(3600)),
            ..FaultProfile::default()
        },
    );
    let mut svc = service("web", 1);
    svc.health = Some(health(OnUnhealthy::Restart));
    svc.restart.give_up_after = Some(2);
    let handle = spawn(sim.clone(), vec![svc]).await;
    settle(Duration::from_secs(6 * 3600)).await;
    let r = handle.board().replica("web", 0).expect("on the board");
    assert!(r.restarts >= 5, "restarted hourly: {} restarts", r.restarts);
    assert_ne!(r.state, ReplicaState::Failed, "gave up: {r:?}");
    assert_eq!(sim.running_count("web", 0), 1);
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
}

/// Item 5: once one replica had given up (service `failed`), scaling was ignored: a
/// scale to 0 left the others running.
#[tokio::test(start_paused = true)]
async fn scaling_a_service_with_a_given_up_replica_still_stops_its_replicas() {
    let sim = Arc::new(SimRuntime::new(5));
    let mut svc = service("w", 3);
    svc.restart.give_up_after = Some(1);
    let handle = spawn(sim.clone(), vec![svc]).await;
    settle(Duration::from_secs(1)).await;
    sim.kill_replica("w", 2, 1);
    settle(Duration::from_secs(1)).await;
    sim.kill_replica("w", 2, 1);
    settle(Duration::from_secs(1)).await;
    let status = handle.status();
    assert_eq!(status.services[0].phase, ServicePhase::Failed);
    bounded("scale", handle.scale("w", 0)).await.expect("scale");
    settle(Duration::from_secs(10)).await;
    assert!(
        sim.running().is_empty(),
        "scaled to 0 but running: {:?}",
        sim.running()
    );
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
}

/// Item 6: a replica that gave up while its container still ran (it turned unhealthy)
/// was removed on the spot, without its stop signal and grace.
#[tokio::test(start_paused = true)]
async fn a_replica_giving_up_while_running_is_stopped_with_its_signal_and_grace() {
    let sim = Arc::new(SimRuntime::new(6));
    sim.set_profile(
        "api",
        FaultProfile {
            health: HealthBehaviour::Never,
            stop_hangs: true,
            ..FaultProfile::default()
        },
    );
    let mut svc = service("api", 1);
    svc.health = Some(health(OnUnhealthy::Restart));
    svc.restart.give_up_after = Some(0);
    svc.stop_grace_period = Duration::from_secs(30);
    let audited = Audited::new(sim.clone(), Duration::ZERO);
    let handle = spawn(audited.clone(), vec![svc]).await;
    settle(Duration::from_secs(5)).await;
    // It gave up while running; its stop ignores SIGTERM, so it is still in its grace.
    assert_eq!(state_of(&handle, "api", 0), ReplicaState::Stopping);
    assert_eq!(sim.running_count("api", 0), 1, "killed before its grace");
    settle(Duration::from_secs(30)).await;
    assert_eq!(state_of(&handle, "api", 0), ReplicaState::Failed);
    assert_eq!(sim.running_count("api", 0), 0);
    assert_eq!(audited.breaches(), Vec::<String>::new());
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
}

/// Item 7: a container actor panic while its replica was isolated as unhealthy
/// destroyed the container kept for debugging and booted a new one.
#[tokio::test(start_paused = true)]
async fn an_actor_panic_keeps_an_isolated_unhealthy_replica_as_it_is() {
    let sim = Arc::new(SimRuntime::new(8));
    sim.set_profile(
        "api",
        FaultProfile {
            health: HealthBehaviour::Never,
            ..FaultProfile::default()
        },
    );
    let mut svc = service("api", 1);
    svc.health = Some(health(OnUnhealthy::Isolate));
    let handle = spawn(sim.clone(), vec![svc]).await;
    settle(Duration::from_secs(5)).await;
    let before = handle.board().replica("api", 0).expect("on the board");
    assert_eq!(before.state, ReplicaState::Isolated);
    handle.inject_actor_panic("api", 0);
    settle(Duration::from_secs(5)).await;
    let after = handle.board().replica("api", 0).expect("on the board");
    assert_eq!(
        after.container, before.container,
        "the kept container was replaced"
    );
    assert_eq!(after.state, ReplicaState::Isolated);
    assert_eq!(after.restarts, 0);
    let id = before.container.expect("a container");
    assert!(sim.is_running(&id), "the kept container was stopped");
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
}

/// Item 8: the report of a deployment that did not stabilize said "(no output)" for the
/// replicas that failed, gave up or could not start, and omitted the start error.
#[tokio::test(start_paused = true)]
async fn failed_replicas_keep_their_log_tail_and_reason_in_the_report() {
    let sim = Arc::new(SimRuntime::new(9));
    sim.set_profile(
        "never",
        FaultProfile {
            lifetime: Lifetime::Fixed(Duration::from_secs(1)),
            exit_codes: vec![3],
            ..FaultProfile::default()
        },
    );
    sim.fail_starts("nostart", 1);
    let mut never = service("never", 1);
    never.restart.policy = RestartPolicy::Never;
    let mut nostart = service("nostart", 1);
    nostart.restart.policy = RestartPolicy::Never;
    let handle = spawn(sim.clone(), vec![never, nostart]).await;
    let r = bounded("wait_stable", handle.wait_stable(Duration::from_secs(30)))
        .await
        .expect("answer");
    let Stabilization::TimedOut { failing } = r else {
        panic!("expected a timeout, got {r:?}");
    };
    let replica = |svc: &str| {
        failing
            .iter()
            .find(|s| s.service == svc)
            .and_then(|s| s.replicas.first())
            .unwrap_or_else(|| panic!("{svc} reported failing: {failing:?}"))
            .clone()
    };
    let never = replica("never");
    assert_eq!(never.state, ReplicaState::Failed);
    assert!(never.reason.contains("exit code 3"), "{}", never.reason);
    assert!(
        never
            .log_tail
            .iter()
            .any(|l| l.contains("exited with code 3")),
        "log tail kept: {:?}",
        never.log_tail
    );
    let nostart = replica("nostart");
    assert_eq!(nostart.state, ReplicaState::Failed);
    assert!(
        nostart.reason.contains("start failed"),
        "start error in the reason: {}",
        nostart.reason
    );
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
}

/// Item 10: stopping a failed supervisor's orphans was awaited inside the deployment
/// actor, blocking every waiter's deadline for a whole grace period.
#[tokio::test(start_paused = true)]
async fn stopping_a_failed_services_orphans_does_not_block_the_deployment() {
    let sim = Arc::new(SimRuntime::new(10));
    sim.set_profile(
        "slow",
        FaultProfile {
            stop_hangs: true,
            ..FaultProfile::default()
        },
    );
    let mut slow = service("slow", 2);
    slow.stop_grace_period = Duration::from_secs(120);
    let handle = spawn(sim.clone(), vec![slow, service("ok", 1)]).await;
    settle(Duration::from_secs(1)).await;
    // Four supervisor failures within a minute (three are replaced): the service fails
    // and its replicas are orphans, stopped within their 120 s grace.
    for _ in 0..4 {
        handle.inject_supervisor_panic("slow");
        settle(Duration::from_secs(1)).await;
    }
    assert_eq!(handle.status().services[0].phase, ServicePhase::Failed);
    let asked = Instant::now();
    let r = bounded("wait_stable", handle.wait_stable(Duration::from_secs(5)))
        .await
        .expect("answer");
    assert!(matches!(r, Stabilization::TimedOut { .. }), "{r:?}");
    assert!(
        asked.elapsed() <= Duration::from_secs(6),
        "the 5 s wait was answered after {:?}",
        asked.elapsed()
    );
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
    assert!(sim.running().is_empty(), "{:?}", sim.running());
}

/// Item 11: a service waiting on a dependency that has failed for good waited out its
/// whole dependency timeout instead of failing at once.
#[tokio::test(start_paused = true)]
async fn dependants_of_a_failed_service_fail_at_once() {
    let sim = Arc::new(SimRuntime::new(11));
    sim.set_profile(
        "db",
        FaultProfile {
            lifetime: Lifetime::Fixed(Duration::from_secs(1)),
            health: HealthBehaviour::Never,
            ..FaultProfile::default()
        },
    );
    let mut db = service("db", 1);
    db.restart.policy = RestartPolicy::Never;
    db.health = Some(health(OnUnhealthy::Isolate));
    db.on_panic = PanicAction::Restart;
    let mut api = service("api", 1);
    api.depends = vec![depends(
        "db",
        DependencyCondition::Healthy,
        Duration::from_secs(600),
    )];
    let mut web = service("web", 1);
    web.depends = vec![depends(
        "api",
        DependencyCondition::Started,
        Duration::from_secs(600),
    )];
    let handle = spawn(sim.clone(), vec![db, api, web]).await;
    // db never turns healthy, exits after 1 s and is not restarted (policy never): it
    // can never be ready, so the services waiting on it fail now, not in ten minutes.
    settle(Duration::from_secs(5)).await;
    assert_eq!(state_of(&handle, "db", 0), ReplicaState::Failed);
    let phases: Vec<(String, ServicePhase)> = handle
        .status()
        .services
        .into_iter()
        .skip(1)
        .map(|s| (s.name, s.phase))
        .collect();
    assert_eq!(
        phases,
        vec![
            ("api".to_string(), ServicePhase::Failed),
            ("web".to_string(), ServicePhase::Failed),
        ]
    );
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
}

/// A probe checks on a loop of its own; it must end with its actor however the actor
/// ends: stopped (scale-down) or torn down with a container actor that panicked.
#[tokio::test(start_paused = true)]
async fn a_probe_stops_checking_when_its_replica_goes_however_it_goes() {
    let sim = Arc::new(SimRuntime::new(9));
    let mut svc = service("api", 1);
    svc.health = Some(health(OnUnhealthy::Isolate));
    let handle = spawn(sim.clone(), vec![svc]).await;
    settle(Duration::from_secs(5)).await;
    let checks = || {
        handle
            .board()
            .probe_totals("api")
            .expect("a service")
            .count()
    };

    // One replica checked every second: about ten checks in ten seconds, not twenty,
    // once its container actor panicked and was replaced with a new probe.
    handle.inject_actor_panic("api", 0);
    settle(Duration::from_secs(1)).await;
    let before = checks();
    settle(Duration::from_secs(10)).await;
    let during = checks() - before;
    assert!(
        (9..=11).contains(&during),
        "{during} checks in 10 s of one replica probed every second"
    );
    assert_eq!(state_of(&handle, "api", 0), ReplicaState::Running);

    handle.scale("api", 0).await.expect("scales");
    settle(Duration::from_secs(1)).await;
    assert!(handle.board().replica("api", 0).is_none(), "scaled away");
    let before = checks();
    settle(Duration::from_secs(10)).await;
    assert_eq!(checks(), before, "a replica scaled away is still checked");
    assert!(
        handle.board().replica("api", 0).is_none(),
        "a late check brought back a row that was scaled away"
    );
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
}

/// A probe reports through its container actor, a start through the exit watcher: two
/// senders. With thousands of replicas starting at once on two worker threads, a probe's
/// first success (checked within a microsecond) can reach the supervisor before the start
/// does; that report was dropped, and the replica stayed healthy on the board but never
/// ready, so the deployment never became stable (seen at 100,000 replicas in the bench,
/// and here on every run before the fix).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_health_check_heard_before_the_start_still_makes_the_replica_ready() {
    let sim = Arc::new(SimRuntime::new(10));
    let mut svc = service("api", 3000);
    let mut h = health(OnUnhealthy::Isolate);
    h.start_grace = Duration::from_secs(60);
    h.start_interval = Duration::from_micros(1);
    svc.health = Some(h);
    let handle = spawn(sim.clone(), vec![svc]).await;
    let outcome = handle
        .wait_stable(Duration::from_secs(30))
        .await
        .expect("an answer");
    assert!(
        matches!(outcome, herdsman_core::Stabilization::Ready { .. }),
        "{outcome:?}"
    );
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
}

/// One replica of a probed service "api" on `runtime`.
async fn spawn_probed(runtime: &Arc<Audited>) -> DeploymentHandle {
    let mut svc = service("api", 1);
    svc.health = Some(health(OnUnhealthy::Isolate));
    spawn(runtime.clone(), vec![svc]).await
}

/// A runtime's check that never answers must not stall its probe: the probe's own bound
/// fails it, and the next check runs.
#[tokio::test(start_paused = true)]
async fn a_check_that_ignores_its_timeout_is_failed_by_the_probes_outer_bound() {
    let runtime = Audited::new(Arc::new(SimRuntime::new(11)), Duration::ZERO);
    runtime.hanging_checks.store(1, Ordering::Relaxed);
    let handle = spawn_probed(&runtime).await;
    // The first check (within the first second) hangs: failed at its timeout (1 s) plus
    // the outer second; the next ones, a second apart, pass. Five seconds keep the
    // failure among the last results the board shows.
    settle(Duration::from_secs(5)).await;
    assert_eq!(runtime.hanging_checks.load(Ordering::Relaxed), 0);
    let r = handle.board().replica("api", 0).expect("on the board");
    let first = r.probes.first().expect("probe results on the board");
    assert_eq!(first.outcome, ProbeOutcome::Failure, "{first:?}");
    assert_eq!(first.duration_ms, 1000, "{first:?}");
    assert!(
        first
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("check did not finish within 1.0s"),
        "the hung check was not failed by the outer bound: {first:?}"
    );
    assert!(
        r.is_ready(),
        "replica not healthy after the hung check: {r:?}"
    );
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
}

/// The probe's check loop runs in a task of its own: a panic there must fail the probe
/// actor (so its container actor replaces it), not end the checks in silence and leave
/// the replica never healthy.
#[tokio::test(start_paused = true)]
async fn a_probe_whose_check_panics_is_replaced_and_its_replica_becomes_healthy() {
    let runtime = Audited::new(Arc::new(SimRuntime::new(11)), Duration::ZERO);
    runtime.panicking_checks.store(2, Ordering::Relaxed);
    let handle = spawn_probed(&runtime).await;
    settle(Duration::from_secs(10)).await;
    assert_eq!(runtime.panicking_checks.load(Ordering::Relaxed), 0);
    let r = handle.board().replica("api", 0).expect("on the board");
    assert!(
        r.is_ready(),
        "replica not healthy after its probe panicked: {r:?}"
    );
    bounded("shutdown", handle.shutdown())
        .await
        .expect("shutdown");
}
