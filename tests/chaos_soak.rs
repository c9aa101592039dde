//! Chaos soak: a seeded storm of crashes, start failures, hung stops, flaky probes, scale
//! changes and panics injected into container actors, against a four-service deployment on
//! `SimRuntime` under paused time. After every fault the runtime's running containers are
//! compared with what the supervisors believe; after every round of faults the fleet must
//! settle back to its desired shape with no replica lost, duplicated or stuck stopping.
//!
//! Paused time makes it deterministic for a seed and fast: minutes of simulated chaos run
//! in a few seconds of wall time, because no timer really sleeps.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use herdsman::core::{
    spawn_deployment, DeploymentHandle, DeploymentOptions, DeploymentStatus, EventKind, Received,
    ReplicaState, ReplicaStatus,
};
use herdsman::runtime::{ContainerId, FaultProfile, HealthBehaviour, SimRuntime};
use herdsman::spec::{
    Backoff, Check, Deployment, Health, OnUnhealthy, PanicAction, RestartPolicy, RestartSpec,
    Scale, Service, ServiceKind, Template,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// One storm per seed, each against a fresh deployment.
const SEEDS: [u64; 6] = [0x5eed_c4a0, 1, 2, 3, 0xdead_beef, 42];
/// Rounds of chaos, each followed by a calm period that must settle.
const ROUNDS: usize = 12;
/// Faults per round.
const STEPS: usize = 40;
/// Grace period of every service; hung stops last this long.
const GRACE: Duration = Duration::from_secs(3);
/// Longest a settle may take in simulated time: the longest backoff (8 s), a hung stop
/// (3 s) and a start period with its probes, with room to spare.
const SETTLE_WITHIN: Duration = Duration::from_secs(120);
/// Bound on every single await of the deployment's API, in simulated time.
const CALL_WITHIN: Duration = Duration::from_secs(60);

/// What each service is for in the storm.
struct Role {
    name: &'static str,
    /// Replicas at the start; scaling keeps it within `min..=max`.
    replicas: u32,
    min: u32,
    max: u32,
    /// Its faulty profile during a round.
    faulty: fn() -> FaultProfile,
    /// Exited replicas are kept isolated rather than restarted (`on_panic: isolate`).
    isolates_exits: bool,
}

const ROLES: [Role; 4] = [
    // Probed, restarted when unhealthy, ignores SIGTERM: every unhealthy restart is a hung stop.
    Role {
        name: "api",
        replicas: 10,
        min: 2,
        max: 14,
        faulty: || FaultProfile {
            health: HealthBehaviour::Flaky { p_fail: 0.35 },
            stop_hangs: true,
            exit_codes: vec![1, 137],
            ..FaultProfile::default()
        },
        isolates_exits: false,
    },
    // Unprobed, fails to start a fifth of the time: crash loops and backoff.
    Role {
        name: "worker",
        replicas: 8,
        min: 1,
        max: 12,
        faulty: || FaultProfile {
            start_failure: 0.2,
            exit_codes: vec![2],
            ..FaultProfile::default()
        },
        isolates_exits: false,
    },
    // Probed, isolated (not restarted) while unhealthy: running but not ready.
    Role {
        name: "web",
        replicas: 6,
        min: 1,
        max: 10,
        faulty: || FaultProfile {
            health: HealthBehaviour::Flaky { p_fail: 0.5 },
            stop_hangs: true,
            ..FaultProfile::default()
        },
        isolates_exits: false,
    },
    // Its exits are kept for debugging: the policy says a crashed replica is not restored.
    Role {
        name: "canary",
        replicas: 4,
        min: 1,
        max: 6,
        faulty: FaultProfile::default,
        isolates_exits: true,
    },
];

fn service(role: &Role) -> Service {
    let probed = role.name != "worker";
    Service {
        image: Some(format!("chaos/{}:1", role.name)),
        scale: Scale::Fixed {
            replicas: role.replicas,
        },
        health: probed.then(|| Health {
            start_grace: Duration::from_secs(2),
            start_interval: Duration::from_millis(100),
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(200),
            retries: 2,
            success_threshold: 1,
            on_unhealthy: if role.name == "web" {
                OnUnhealthy::Isolate
            } else {
                OnUnhealthy::Restart
            },
            check: Check::Command {
                command: Template::literal("true"),
            },
        }),
        on_panic: if role.isolates_exits {
            PanicAction::Isolate
        } else {
            PanicAction::Restart
        },
        restart: RestartSpec {
            policy: RestartPolicy::Always,
            max_restarts: 3,
            window: Duration::from_secs(10),
            backoff: Backoff {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(8),
                multiplier: 2.0,
                jitter: 0.2,
            },
            reset_after: Duration::from_secs(30),
            give_up_after: None,
        },
        stop_grace_period: GRACE,
        ..Service::new(role.name.to_string(), ServiceKind::Service)
    }
}

fn deployment() -> Deployment {
    Deployment {
        name: "chaos".to_string(),
        services: ROLES.iter().map(service).collect(),
    }
}

/// Await `fut` for at most `within` (simulated); a hang is a failure, not a stuck test.
async fn bounded<T>(what: &str, within: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(within, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {within:?}: likely deadlocked"),
    }
}

/// Panics injected on purpose are expected; keep them out of the test output.
fn quiet_injected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let injected = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|m| m.contains("injected panic"));
            if !injected {
                default(info);
            }
        }));
    });
}

/// The runtime's running containers, by (service, replica).
fn running_by_slot(sim: &SimRuntime) -> HashMap<(String, u32), Vec<ContainerId>> {
    let mut by_slot: HashMap<(String, u32), Vec<ContainerId>> = HashMap::new();
    for id in sim.running() {
        by_slot
            .entry((id.service.to_string(), id.replica))
            .or_default()
            .push(id);
    }
    by_slot
}

/// The container the board believes runs for a replica: a running one, or one isolated
/// while it keeps running (unhealthy under `on_unhealthy: isolate`). In a service whose
/// exits are isolated (`on_panic: isolate`), an isolated replica's container has exited.
fn believed(r: &ReplicaStatus, exits_isolated: bool) -> Option<&ContainerId> {
    match r.state {
        ReplicaState::Running => r.container.as_ref(),
        ReplicaState::Isolated if !exits_isolated => r.container.as_ref(),
        _ => None,
    }
}

fn exits_isolated(service: &str) -> bool {
    ROLES
        .iter()
        .any(|role| role.name == service && role.isolates_exits)
}

/// One disagreement between the runtime and the board.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Disagreement {
    /// The board believes this container runs; the runtime does not run it.
    Lost(ContainerId),
    /// The runtime runs this container; the board does not believe in it.
    Extra(ContainerId),
}

/// Every disagreement between the runtime and the board, right now. A replica `stopping`
/// may still run the container the board names (a stop can take its grace period), nothing
/// else.
fn disagreements(status: &DeploymentStatus, sim: &SimRuntime) -> Vec<Disagreement> {
    let mut running = running_by_slot(sim);
    let mut found = Vec::new();
    for service in &status.services {
        for r in &service.replicas {
            let ids = running
                .remove(&(service.name.clone(), r.replica))
                .unwrap_or_default();
            let believed = believed(r, exits_isolated(&service.name));
            if let Some(id) = believed.filter(|id| !ids.contains(id)) {
                found.push(Disagreement::Lost(id.clone()));
            }
            let may_run = match r.state {
                ReplicaState::Stopping => r.container.as_ref(),
                _ => believed,
            };
            found.extend(
                ids.into_iter()
                    .filter(|id| may_run != Some(id))
                    .map(Disagreement::Extra),
            );
        }
    }
    // Containers of replicas the board does not know at all.
    found.extend(running.into_values().flatten().map(Disagreement::Extra));
    found.sort();
    found
}

/// Counts of what the storm did, from the event stream.
#[derive(Debug, Default)]
struct Seen {
    exits: AtomicU64,
    restarts: AtomicU64,
    backoffs: AtomicU64,
    start_failures: AtomicU64,
    isolated: AtomicU64,
    unhealthy: AtomicU64,
    missed: AtomicU64,
}

async fn tally(handle: DeploymentHandle, seen: Arc<Seen>) {
    let mut events = handle.subscribe();
    while let Some(received) = events.recv().await {
        let kind = match received {
            Received::Event(e) => e.kind,
            Received::Missed(n) => {
                seen.missed.fetch_add(n, Ordering::Relaxed);
                continue;
            }
        };
        let counter = match kind {
            EventKind::ReplicaExited { .. } => &seen.exits,
            EventKind::ReplicaRestarting { .. } => &seen.restarts,
            EventKind::BackOff { .. } => &seen.backoffs,
            EventKind::StartFailed { .. } => &seen.start_failures,
            EventKind::Isolated { .. } => &seen.isolated,
            EventKind::HealthChanged { healthy: false, .. } => &seen.unhealthy,
            _ => continue,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The storm's state: what it asked for, so the checks know what to expect.
struct Storm {
    seed: u64,
    sim: Arc<SimRuntime>,
    handle: DeploymentHandle,
    rng: SmallRng,
    desired: HashMap<&'static str, u32>,
    /// Disagreements seen at the previous step: one that is still there a step later (some
    /// simulated time later, with every message in between processed) is real.
    suspects: Vec<Disagreement>,
    injected_panics: u64,
    scales: u64,
    kills: u64,
}

impl Storm {
    fn role(&mut self) -> &'static Role {
        &ROLES[self.rng.random_range(0..ROLES.len())]
    }

    fn faulty(&self) {
        for role in &ROLES {
            self.sim.set_profile(role.name, (role.faulty)());
        }
    }

    fn calm(&self) {
        for role in &ROLES {
            self.sim.set_profile(role.name, FaultProfile::default());
        }
    }

    /// One random fault.
    async fn fault(&mut self) {
        let role = self.role();
        let desired = self.desired[role.name];
        match self.rng.random_range(0..100) {
            0..=39 if desired > 0 => {
                let replica = self.rng.random_range(0..desired);
                let code = [1, 2, 137][self.rng.random_range(0..3)];
                self.kills += self.sim.kill_replica(role.name, replica, code).len() as u64;
            }
            40..=54 => {
                let n = self.rng.random_range(1..=3);
                self.sim.fail_starts(role.name, n);
            }
            55..=74 if desired > 0 => {
                let replica = self.rng.random_range(0..desired);
                self.handle.inject_actor_panic(role.name, replica);
                self.injected_panics += 1;
            }
            75..=89 => {
                let to = self.rng.random_range(role.min..=role.max);
                bounded("scale", CALL_WITHIN, self.handle.scale(role.name, to))
                    .await
                    .expect("scale is accepted");
                self.desired.insert(role.name, to);
                self.scales += 1;
            }
            _ => {}
        }
    }

    /// Throughout the storm: a disagreement between runtime and board may exist for an
    /// instant (an exit in flight), never across a step.
    fn check_throughout(&mut self, round: usize, step: usize) {
        let found = disagreements(&self.handle.status(), &self.sim);
        let persisting: Vec<&Disagreement> =
            found.iter().filter(|d| self.suspects.contains(d)).collect();
        if !persisting.is_empty() {
            let status = self.handle.status();
            let boards: Vec<_> = persisting
                .iter()
                .map(|d| {
                    let (Disagreement::Lost(id) | Disagreement::Extra(id)) = d;
                    status
                        .services
                        .iter()
                        .find(|s| *s.name == *id.service)
                        .and_then(|s| s.replicas.iter().find(|r| r.replica == id.replica))
                })
                .collect();
            panic!(
                "seed {:#x} round {round} step {step}: runtime and board disagree for a whole \
                 step: {persisting:?}\nboard: {boards:#?}",
                self.seed
            );
        }
        self.suspects = found;
    }

    /// After a round: with faults off, every service must come back to its desired shape.
    async fn settle(&mut self, round: usize) {
        self.calm();
        let deadline = Instant::now() + SETTLE_WITHIN;
        let mut last_problems;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            last_problems = self.settled_problems();
            if last_problems.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "seed {:#x} round {round}: not settled within {SETTLE_WITHIN:?} of calm, likely deadlocked: {last_problems:#?}",
                self.seed
            );
        }
        // Settled means it stays so: a second look a few probe intervals later.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let again = self.settled_problems();
        assert!(
            again.is_empty(),
            "seed {:#x} round {round}: settled, then not: {again:#?}",
            self.seed
        );
        self.suspects.clear();
    }

    /// Everything that keeps the deployment from its desired shape, in words.
    fn settled_problems(&self) -> Vec<String> {
        let status = self.handle.status();
        let mut problems: Vec<String> = disagreements(&status, &self.sim)
            .into_iter()
            .map(|d| format!("{d:?}"))
            .collect();
        for role in &ROLES {
            let desired = self.desired[role.name];
            let Some(s) = status.services.iter().find(|s| s.name == role.name) else {
                problems.push(format!("{}: missing from status", role.name));
                continue;
            };
            if s.desired != desired {
                problems.push(format!("{}: desired {} != {desired}", s.name, s.desired));
            }
            let indexes: Vec<u32> = s.replicas.iter().map(|r| r.replica).collect();
            if indexes != (0..desired).collect::<Vec<_>>() {
                problems.push(format!(
                    "{}: replicas {indexes:?}, want 0..{desired}",
                    s.name
                ));
            }
            for r in &s.replicas {
                let ok = if role.isolates_exits {
                    r.is_ready() || r.state == ReplicaState::Isolated
                } else {
                    r.is_ready()
                };
                if !ok {
                    problems.push(format!(
                        "{}/{}: {:?} healthy={} (want running and healthy)",
                        s.name, r.replica, r.state, r.healthy
                    ));
                }
            }
        }
        problems
    }

    /// Bring isolated canaries back for the next round: the policy keeps them; an operator
    /// scaling away and back is how they are replaced.
    async fn replace_isolated_canaries(&mut self) {
        let status = self.handle.status();
        let isolated = status
            .services
            .iter()
            .filter(|s| s.name == "canary")
            .flat_map(|s| &s.replicas)
            .any(|r| r.state == ReplicaState::Isolated);
        if !isolated {
            return;
        }
        let desired = self.desired["canary"];
        bounded(
            "scale canary to 0",
            CALL_WITHIN,
            self.handle.scale("canary", 0),
        )
        .await
        .expect("scale is accepted");
        bounded("canary replicas to go", SETTLE_WITHIN, async {
            while !self.sim.running().iter().all(|id| &*id.service != "canary")
                || self.handle.board().replica("canary", 0).is_some()
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        bounded(
            "scale canary back",
            CALL_WITHIN,
            self.handle.scale("canary", desired),
        )
        .await
        .expect("scale is accepted");
    }
}

/// The fixed seeds, or `HERDSMAN_CHAOS_SEEDS=N` more (1000, 1001, ...) for a longer hunt.
fn seeds() -> Vec<u64> {
    match std::env::var("HERDSMAN_CHAOS_SEEDS") {
        Ok(n) => match n.trim().parse::<u64>() {
            Ok(n) => (1000..1000 + n).collect(),
            Err(_) => panic!("HERDSMAN_CHAOS_SEEDS={n:?} is not a count"),
        },
        Err(_) => SEEDS.to_vec(),
    }
}

/// What one storm did.
#[derive(Debug, Default)]
struct Summary {
    kills: u64,
    start_failures: u64,
    panics: u64,
    scales: u64,
    backoffs: u64,
    unhealthy: u64,
    isolated: u64,
}

/// One seeded storm of `ROUNDS` rounds against a fresh deployment; panics on a violation.
async fn storm(seed: u64) -> Summary {
    let sim = Arc::new(SimRuntime::new(seed));
    let options = DeploymentOptions {
        event_capacity: 1 << 16,
        seed,
        ..DeploymentOptions::default()
    };
    let handle = bounded(
        "spawn",
        CALL_WITHIN,
        spawn_deployment(deployment(), sim.clone(), options),
    )
    .await
    .expect("deployment spawns");
    let seen = Arc::new(Seen::default());
    let tally = tokio::spawn(tally(handle.clone(), seen.clone()));
    let mut storm = Storm {
        seed,
        sim: sim.clone(),
        handle: handle.clone(),
        rng: SmallRng::seed_from_u64(seed),
        desired: ROLES.iter().map(|r| (r.name, r.replicas)).collect(),
        suspects: Vec::new(),
        injected_panics: 0,
        scales: 0,
        kills: 0,
    };
    storm.settle(0).await;
    for round in 1..=ROUNDS {
        storm.faulty();
        for step in 0..STEPS {
            storm.fault().await;
            let pause = Duration::from_millis(storm.rng.random_range(20..600));
            tokio::time::sleep(pause).await;
            storm.check_throughout(round, step);
        }
        storm.settle(round).await;
        storm.replace_isolated_canaries().await;
        storm.settle(round).await;
    }
    bounded("shutdown", CALL_WITHIN, handle.shutdown())
        .await
        .expect("shutdown");
    assert!(
        sim.running().is_empty(),
        "seed {seed:#x}: containers still running after shutdown: {:?}",
        sim.running()
    );
    tally.abort();
    Summary {
        kills: storm.kills,
        start_failures: sim.stats().start_failures,
        panics: storm.injected_panics,
        scales: storm.scales,
        backoffs: seen.backoffs.load(Ordering::Relaxed),
        unhealthy: seen.unhealthy.load(Ordering::Relaxed),
        isolated: seen.isolated.load(Ordering::Relaxed),
    }
}

#[tokio::test(start_paused = true)]
async fn replicas_are_never_lost_duplicated_or_stuck_under_seeded_storms_of_faults() {
    quiet_injected_panics();
    // Wall time on purpose, to report it: the tokio clock is paused.
    #[allow(clippy::disallowed_methods)]
    let wall = std::time::Instant::now();
    let simulated = Instant::now();
    let mut total = Summary::default();
    let seeds = seeds();
    for &seed in &seeds {
        let s = storm(seed).await;
        total.kills += s.kills;
        total.start_failures += s.start_failures;
        total.panics += s.panics;
        total.scales += s.scales;
        total.backoffs += s.backoffs;
        total.unhealthy += s.unhealthy;
        total.isolated += s.isolated;
    }
    eprintln!(
        "{} storms, {:.0?} simulated in {:.1?}: {total:?}",
        seeds.len(),
        simulated.elapsed(),
        wall.elapsed()
    );
    // The storms must really have exercised every fault, or passing proves nothing.
    let n = seeds.len() as u64;
    assert!(total.kills > 20 * n, "too few crashes: {total:?}");
    assert!(
        total.start_failures > 10 * n,
        "too few start failures: {total:?}"
    );
    assert!(total.panics > 20 * n, "too few panics: {total:?}");
    assert!(total.scales > 10 * n, "too few scale changes: {total:?}");
    assert!(total.backoffs > 0, "no crash loop backoff: {total:?}");
    assert!(
        total.unhealthy > 0,
        "no replica turned unhealthy: {total:?}"
    );
    assert!(total.isolated > 0, "nothing isolated: {total:?}");
}

#[tokio::test(start_paused = true)]
async fn every_replica_comes_back_exactly_once_after_the_whole_fleet_crashes_at_once() {
    let sim = Arc::new(SimRuntime::new(SEEDS[0]));
    let handle = bounded(
        "spawn",
        CALL_WITHIN,
        spawn_deployment(deployment(), sim.clone(), DeploymentOptions::default()),
    )
    .await
    .expect("deployment spawns");
    let mut storm = Storm {
        seed: SEEDS[0],
        sim: sim.clone(),
        handle: handle.clone(),
        rng: SmallRng::seed_from_u64(SEEDS[0]),
        desired: ROLES.iter().map(|r| (r.name, r.replicas)).collect(),
        suspects: Vec::new(),
        injected_panics: 0,
        scales: 0,
        kills: 0,
    };
    storm.settle(0).await;
    for round in 1..=5 {
        let before = sim.running();
        for id in &before {
            assert!(sim.kill(id, 1), "{id} was running");
        }
        storm.settle(round).await;
        storm.replace_isolated_canaries().await;
        storm.settle(round).await;
        let after = sim.running();
        assert_eq!(
            after.len(),
            before.len(),
            "round {round}: fleet size changed"
        );
        for (old, new) in before.iter().zip(&after) {
            assert_eq!(
                (&old.service, old.replica),
                (&new.service, new.replica),
                "round {round}: a replica was replaced by another"
            );
            assert!(
                new.generation > old.generation,
                "round {round}: {new} not restarted"
            );
        }
    }
    bounded("shutdown", CALL_WITHIN, handle.shutdown())
        .await
        .expect("shutdown");
    assert!(sim.running().is_empty(), "containers left after shutdown");
}
