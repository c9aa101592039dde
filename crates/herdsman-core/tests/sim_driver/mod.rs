//! A deterministic simulation driver for the whole actor tree (FoundationDB / TigerBeetle
//! style): from a seed it builds a small deployment, runs it with `spawn_deployment` on
//! `SimRuntime` in a paused-clock, single-threaded tokio runtime of its own, injects a
//! random schedule of events step by step, and checks the invariants of DESIGN.md after
//! every settled step and at quiescence. The same seed replays the same run exactly.
//!
//! - `events`: the event kinds, their weights and how each is injected. Adding an event
//!   kind (a rollout, a node loss) is adding a variant, a weight and an injection arm.
//! - `invariants`: the checks, against the simulated runtime's truth.
//! - `observer`: the event subscriber (stable announcements checked as they happen).
//! - `plan`: the deployment a seed runs.

#![allow(dead_code, missing_docs)]

pub mod events;
pub mod invariants;
pub mod observer;
pub mod plan;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Once};
use std::time::Duration;

use herdsman_core::{spawn_deployment, DeploymentHandle, DeploymentOptions};
use herdsman_runtime::{ContainerId, SimRuntime};
use herdsman_spec::{Deployment, ServiceKind};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use events::{Event, Knobs, Pause};
use invariants::{Breach, Invariant};

/// How long the faults stop before the quiescence checks: longer than any backoff,
/// restart window, grace period, dependency timeout and init retry delay of a plan.
pub const CALM: Duration = Duration::from_secs(30);
/// Bound on any single await of the deployment's API, in simulated time.
pub const CALL_WITHIN: Duration = Duration::from_secs(120);
/// Bound on a whole run, in simulated time: a schedule that takes longer is deadlocked.
pub const RUN_WITHIN: Duration = Duration::from_secs(4 * 3600);
/// Scheduler rounds after a settle's sleep, so every chain of messages the last timers
/// started (exit watcher, supervisor, container actor, deployment) is delivered.
const DRAIN_ROUNDS: u32 = 16;

/// How a run goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Events per schedule.
    pub steps: usize,
    /// Probability that the shutdown comes at a random step rather than at the end.
    pub early_shutdown: f64,
    /// Which event kinds schedules are drawn from (`SCHEDULES`, the newest by default).
    /// A seed found under an older set replays its schedule exactly under that set: an
    /// event kind added later changes every draw after it.
    pub schedules: u32,
}

/// The newest set of event kinds: 1 = the faults, scaling, restarts and applies;
/// 2 = and `rollout undo`, and herdsman killed and restarted (adoption).
pub const SCHEDULES: u32 = 2;

impl Default for Options {
    fn default() -> Self {
        Options {
            steps: 30,
            early_shutdown: 0.35,
            schedules: SCHEDULES,
        }
    }
}

/// The driver's view of one service: what it asked for and which faults are on.
#[derive(Debug, Clone)]
pub struct ServiceModel {
    pub name: String,
    pub kind: ServiceKind,
    pub desired: u32,
    pub has_health: bool,
    pub has_init: bool,
    pub knobs: Knobs,
    /// Its init steps hung at some point: a slot may still wait on one at quiescence (the
    /// step's timeout is the runtime's to enforce; the tree only cancels it).
    pub init_ever_hung: bool,
}

/// Where the deployment's shutdown is.
enum Shutdown {
    NotAsked,
    /// Running in its own task; its result carries what still ran the moment it returned.
    InFlight(JoinHandle<ShutdownResult>),
    Returned,
}

type ShutdownResult = (Result<(), herdsman_core::CoreError>, Vec<ContainerId>);

/// Everything a schedule acts on.
pub struct World {
    pub seed: u64,
    /// The set of event kinds drawn from (`Options::schedules`).
    pub schedules: u32,
    pub rng: SmallRng,
    pub sim: Arc<SimRuntime>,
    pub handle: DeploymentHandle,
    pub spec: Deployment,
    pub services: Vec<ServiceModel>,
    pub observed: observer::Shared,
    pub history: Vec<String>,
    pub step: usize,
    /// Runtime violations already reported.
    pub violations_seen: usize,
    shutdown: Shutdown,
    /// Breaches found outside the checks (API errors, the shutdown's own check).
    pending: Vec<Breach>,
    /// When the run began, for the history's timestamps.
    began: Instant,
    /// Observers of the trees that replaced the first (herdsman restarts).
    observers: Vec<JoinHandle<()>>,
    /// Herdsman restarts so far (each tree gets its own seed from it).
    restarts: u64,
}

impl World {
    /// Turn a fault knob of a service and apply its profile.
    pub fn turn(&mut self, service: usize, f: impl FnOnce(&mut Knobs)) {
        let model = &mut self.services[service];
        f(&mut model.knobs);
        self.sim.set_profile(&model.name, model.knobs.profile());
    }

    /// Set a service's desired count; refused only once the deployment is shutting down.
    pub async fn scale(&mut self, service: usize, to: u32) {
        let name = self.services[service].name.clone();
        let r = bounded(CALL_WITHIN, self.handle.scale(&name, to)).await;
        match r {
            Some(Ok(())) => self.services[service].desired = to,
            Some(Err(_)) if self.shutdown_requested() => {}
            Some(Err(e)) => self.pending.push(Breach {
                invariant: Invariant::Liveness,
                what: format!("scale {name} to {to} refused: {e}"),
            }),
            None => self.pending.push(Breach {
                invariant: Invariant::Liveness,
                what: format!("scale {name} to {to} unanswered for {CALL_WITHIN:?}"),
            }),
        }
    }

    /// Bring a service back to its spec's count.
    pub async fn start_service(&mut self, service: usize) {
        let name = self.services[service].name.clone();
        match bounded(CALL_WITHIN, self.handle.start_service(&name)).await {
            Some(Ok(n)) => self.services[service].desired = n,
            Some(Err(_)) if self.shutdown_requested() => {}
            Some(Err(e)) => self.pending.push(Breach {
                invariant: Invariant::Liveness,
                what: format!("start service {name} refused: {e}"),
            }),
            None => self.pending.push(Breach {
                invariant: Invariant::Liveness,
                what: format!("start service {name} unanswered for {CALL_WITHIN:?}"),
            }),
        }
    }

    /// Apply the current spec with one service's image changed: it rolls to the new
    /// version; its replica count, unchanged in the spec, is left as it is.
    pub async fn apply(&mut self, service: usize, version: u32, surge: u32, unavailable: u32) {
        let mut spec = self.spec.clone();
        let svc = &mut spec.services[service];
        svc.image = Some(format!("sim/{}:v{version}", svc.name));
        svc.update.max_surge = herdsman_spec::Amount::Count(surge);
        svc.update.max_unavailable = herdsman_spec::Amount::Count(unavailable);
        svc.update.progress_deadline = Duration::from_secs(20);
        let name = svc.name.clone();
        match bounded(CALL_WITHIN, self.handle.apply(spec.clone(), false)).await {
            Some(Ok(_)) => self.spec = spec,
            Some(Err(_)) if self.shutdown_requested() => {}
            Some(Err(e)) => self.pending.push(Breach {
                invariant: Invariant::Liveness,
                what: format!("apply of {name} refused: {e}"),
            }),
            None => self.pending.push(Breach {
                invariant: Invariant::Liveness,
                what: format!("apply of {name} unanswered for {CALL_WITHIN:?}"),
            }),
        }
    }

    /// Undo the current spec. The driver's own copy of the spec is left as it is: it is
    /// only the base the next apply changes one service's version in, and that apply is
    /// diffed against the spec the deployment runs.
    pub async fn undo(&mut self) {
        match bounded(CALL_WITHIN, self.handle.undo()).await {
            Some(Ok(_)) | Some(Err(herdsman_core::CoreError::NoPreviousRevision)) => {}
            Some(Err(_)) if self.shutdown_requested() => {}
            Some(Err(e)) => self.pending.push(Breach {
                invariant: Invariant::Liveness,
                what: format!("undo refused: {e}"),
            }),
            None => self.pending.push(Breach {
                invariant: Invariant::Liveness,
                what: format!("undo unanswered for {CALL_WITHIN:?}"),
            }),
        }
    }

    /// herdsman dies (SIGKILL: its actors are gone at once, its containers run on) and a
    /// new one starts from the spec last applied, adopting what runs. The desired counts
    /// are the spec's again: scaling is the running tree's state, not the spec's.
    pub async fn restart_herdsman(&mut self) {
        if self.shutdown_requested() {
            return;
        }
        self.handle.actor_cell().kill();
        // Let every actor of the dead tree go (a killed parent takes its children).
        settle(Duration::from_millis(1)).await;
        self.restarts += 1;
        let options = DeploymentOptions {
            event_capacity: 1024,
            seed: self.seed ^ (self.restarts << 48),
            adopt: true,
            ..DeploymentOptions::default()
        };
        let spawned = bounded(
            CALL_WITHIN,
            spawn_deployment(self.spec.clone(), self.sim.clone(), options),
        )
        .await;
        match spawned {
            Some(Ok(handle)) => {
                observer::lock(&self.observed).baseline.clear();
                self.observers.push(tokio::spawn(observer::observe(
                    handle.clone(),
                    self.sim.clone(),
                    self.observed.clone(),
                )));
                self.handle = handle;
                for (model, svc) in self.services.iter_mut().zip(&self.spec.services) {
                    model.desired = svc.initial_replicas();
                }
            }
            other => self.pending.push(Breach {
                invariant: Invariant::Liveness,
                what: format!(
                    "the restarted herdsman did not spawn: {:?}",
                    other.map(|r| r.err())
                ),
            }),
        }
    }

    /// Start the deployment's shutdown in a task of its own; the schedule goes on.
    pub fn begin_shutdown(&mut self) {
        if !matches!(self.shutdown, Shutdown::NotAsked) {
            return;
        }
        let (handle, sim) = (self.handle.clone(), self.sim.clone());
        self.shutdown = Shutdown::InFlight(tokio::spawn(async move {
            let r = handle.shutdown().await;
            // Read the truth the instant it returns, before anything else runs.
            (r, sim.running())
        }));
    }

    pub fn shutdown_requested(&self) -> bool {
        !matches!(self.shutdown, Shutdown::NotAsked)
    }

    pub fn shutdown_returned(&self) -> bool {
        matches!(self.shutdown, Shutdown::Returned)
    }

    /// Collect the shutdown's result if it has returned.
    async fn poll_shutdown(&mut self) {
        let done = matches!(&self.shutdown, Shutdown::InFlight(task) if task.is_finished());
        if !done {
            return;
        }
        let Shutdown::InFlight(task) = std::mem::replace(&mut self.shutdown, Shutdown::Returned)
        else {
            return;
        };
        match task.await {
            Ok((Ok(()), left)) if left.is_empty() => {}
            Ok((Ok(()), left)) => {
                let left: Vec<String> = left.iter().map(|c| self.container_words(c)).collect();
                self.pending.push(Breach {
                    invariant: Invariant::ShutdownTotal,
                    what: format!("shutdown() returned while {left:?} still ran"),
                });
            }
            Ok((Err(e), _)) => self.pending.push(Breach {
                invariant: Invariant::Liveness,
                what: format!("shutdown() failed: {e}"),
            }),
            Err(e) => self.pending.push(Breach {
                invariant: Invariant::Liveness,
                what: format!("the shutdown task failed: {e}"),
            }),
        }
    }

    /// Wait for the shutdown to return, within `CALL_WITHIN` of simulated time per service.
    async fn finish_shutdown(&mut self) {
        self.begin_shutdown();
        let within = CALL_WITHIN * 4;
        let deadline = Instant::now() + within;
        while matches!(self.shutdown, Shutdown::InFlight(_)) {
            if Instant::now() >= deadline {
                self.pending.push(Breach {
                    invariant: Invariant::Liveness,
                    what: format!("shutdown() did not return within {within:?}: likely deadlocked"),
                });
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.poll_shutdown().await;
        }
    }

    /// A container id, marked when its replica had been scaled away.
    pub fn container_words(&self, id: &ContainerId) -> String {
        let scaled_away = self
            .services
            .iter()
            .any(|s| *s.name == *id.service && id.replica >= s.desired);
        if scaled_away {
            format!("{id} (scaled away)")
        } else {
            id.to_string()
        }
    }

    fn note(&mut self, line: String) {
        let at = self.elapsed();
        self.history.push(format!(
            "step {:>3} @{:>8.3}s: {line}",
            self.step,
            at.as_secs_f64()
        ));
    }

    fn elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(self.began)
    }
}

/// Await `fut` for at most `within` of simulated time.
pub async fn bounded<T>(within: Duration, fut: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(within, fut).await.ok()
}

/// Let the tree run for `d` of simulated time, then every task made ready at that instant.
/// Longest a rollout in progress at the calm may take to end: every step of progress
/// re-arms its deadline (20 s for the schedules' applies, 60 s for the revert to the
/// original spec), for a handful of replicas.
const ROLLOUT_PATIENCE: Duration = Duration::from_secs(600);

/// Whether a rollout is in progress.
fn rolling(world: &World) -> bool {
    world.handle.status().rollout.is_some_and(|r| {
        matches!(
            r.phase,
            herdsman_core::RolloutPhase::Progressing | herdsman_core::RolloutPhase::Reverting
        )
    })
}

pub async fn settle(d: Duration) {
    tokio::time::sleep(d).await;
    drain().await;
}

async fn drain() {
    for _ in 0..DRAIN_ROUNDS {
        tokio::task::yield_now().await;
    }
}

/// A run that broke an invariant.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub step: usize,
    pub breaches: Vec<Breach>,
    pub history: Vec<String>,
    pub tree_events: Vec<String>,
    /// The board and the runtime's running containers when it broke.
    pub board: Vec<String>,
}

impl Failure {
    /// The first broken invariant, for grouping.
    pub fn invariant(&self) -> Invariant {
        self.breaches
            .first()
            .map_or(Invariant::Liveness, |b| b.invariant)
    }

    /// One line: seed, step, invariant, what.
    pub fn headline(&self) -> String {
        let first = self.breaches.first();
        format!(
            "seed {} step {}: {}: {}",
            self.seed,
            self.step,
            first.map_or(Invariant::Liveness, |b| b.invariant),
            first.map_or("?", |b| b.what.as_str())
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.headline())?;
        for b in &self.breaches {
            writeln!(f, "  broken: {}: {}", b.invariant, b.what)?;
        }
        writeln!(f, "schedule:")?;
        for line in &self.history {
            writeln!(f, "  {line}")?;
        }
        writeln!(f, "last tree events:")?;
        for line in &self.tree_events {
            writeln!(f, "  {line}")?;
        }
        writeln!(f, "board and runtime then:")?;
        for line in &self.board {
            writeln!(f, "  {line}")?;
        }
        write!(
            f,
            "replay: HERDSMAN_SIM_SEED={} cargo test -p herdsman-core --test simulation",
            self.seed
        )
    }
}

/// What a passing run did, to show the schedules exercise what they claim to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Injected events by kind (their description's first words).
    pub injected: BTreeMap<String, u64>,
    /// Tree events by kind.
    pub tree: BTreeMap<String, u64>,
    /// The schedule, for replay comparisons.
    pub history: Vec<String>,
    /// The simulated runtime's counters at the end.
    pub stats: String,
}

thread_local! {
    /// Panics on this thread that nobody injected: a bug in the tree (an assertion), which
    /// ractor turns into a supervision event, so only the hook sees it.
    static UNEXPECTED_PANICS: std::cell::RefCell<Vec<String>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Keep the injected panics' messages out of the test output, and note every other panic
/// for the run on this thread to report.
pub fn quiet_injected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            // Only the panic itself: a failure report quoting one (an actor failure's
            // reason in the event log) must still be printed.
            if message.starts_with("injected panic in ") {
                return;
            }
            let at = info.location().map(ToString::to_string).unwrap_or_default();
            UNEXPECTED_PANICS.with(|p| p.borrow_mut().push(format!("{message} at {at}")));
            default(info);
        }));
    });
}

/// Panics nobody injected since the last call, as breaches.
fn unexpected_panics() -> Vec<Breach> {
    UNEXPECTED_PANICS.with(|p| {
        p.borrow_mut()
            .drain(..)
            .map(|what| Breach {
                invariant: Invariant::Liveness,
                what: format!("a panic nobody injected: {what}"),
            })
            .collect()
    })
}

/// Run one seed on a paused, single-threaded runtime of its own.
pub fn run(seed: u64, options: &Options) -> Result<Summary, Failure> {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("cannot build a tokio runtime: {e}"),
    };
    unexpected_panics();
    rt.block_on(simulate(seed, options))
}

async fn simulate(seed: u64, options: &Options) -> Result<Summary, Failure> {
    let (mut world, observer_task) = setup(seed).await?;
    world.schedules = options.schedules;
    let shutdown_at = world
        .rng
        .random_bool(options.early_shutdown)
        .then(|| world.rng.random_range(0..options.steps.max(1)));
    let outcome = bounded(RUN_WITHIN, schedule(&mut world, options, shutdown_at)).await;
    let breaches = match outcome {
        Some(breaches) => breaches,
        None => vec![Breach {
            invariant: Invariant::Liveness,
            what: format!("the run did not finish within {RUN_WITHIN:?}: likely deadlocked"),
        }],
    };
    observer_task.abort();
    for task in world.observers.drain(..) {
        task.abort();
    }
    let observed = observer::lock(&world.observed);
    if !breaches.is_empty() {
        return Err(Failure {
            seed,
            step: world.step,
            breaches,
            history: world.history.clone(),
            tree_events: observed.log.iter().cloned().collect(),
            board: board_lines(&world),
        });
    }
    let mut injected = BTreeMap::new();
    for line in &world.history {
        if let Some((_, what)) = line.split_once(": ") {
            let kind: String = what
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            *injected.entry(kind).or_default() += 1;
        }
    }
    Ok(Summary {
        injected,
        tree: observed
            .counts
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        history: world.history.clone(),
        stats: format!("{:?}", world.sim.stats()),
    })
}

/// Build the world of `seed`: its deployment spawned on a fresh `SimRuntime`, observed.
/// Must run in the paused, single-threaded runtime the seed runs in.
pub async fn setup(seed: u64) -> Result<(World, JoinHandle<()>), Failure> {
    let began = Instant::now();
    let mut rng = SmallRng::seed_from_u64(seed);
    let spec = plan::deployment(&mut rng);
    let sim = Arc::new(SimRuntime::new(seed));
    let services: Vec<ServiceModel> = spec
        .services
        .iter()
        .map(|s| ServiceModel {
            name: s.name.clone(),
            kind: s.kind,
            desired: s.initial_replicas(),
            has_health: s.health.is_some(),
            has_init: !s.init.is_empty(),
            knobs: Knobs::default(),
            init_ever_hung: false,
        })
        .collect();
    for s in &services {
        sim.set_profile(&s.name, s.knobs.profile());
    }
    let options_tree = DeploymentOptions {
        event_capacity: 1024,
        seed,
        ..DeploymentOptions::default()
    };
    let spawned = bounded(
        CALL_WITHIN,
        spawn_deployment(spec.clone(), sim.clone(), options_tree),
    )
    .await;
    let handle = match spawned {
        Some(Ok(h)) => h,
        other => {
            return Err(Failure {
                seed,
                step: 0,
                breaches: vec![Breach {
                    invariant: Invariant::Liveness,
                    what: format!("the deployment did not spawn: {:?}", other.map(|r| r.err())),
                }],
                history: Vec::new(),
                tree_events: Vec::new(),
                board: Vec::new(),
            })
        }
    };
    let observed = observer::Shared::default();
    let observer_task = tokio::spawn(observer::observe(
        handle.clone(),
        sim.clone(),
        observed.clone(),
    ));
    let mut world = World {
        seed,
        schedules: SCHEDULES,
        rng,
        sim,
        handle,
        spec,
        services,
        observed,
        history: Vec::new(),
        step: 0,
        violations_seen: 0,
        shutdown: Shutdown::NotAsked,
        pending: Vec::new(),
        began,
        observers: Vec::new(),
        restarts: 0,
    };
    let describe_plan = world
        .spec
        .services
        .iter()
        .map(|s| {
            format!(
                "{}: {:?} x{} health={:?} init={} on_panic={:?} restart={:?}/{} give_up={:?} grace={:?} depends={:?}",
                s.name,
                s.kind,
                s.initial_replicas(),
                s.health.as_ref().map(|h| h.on_unhealthy),
                s.init.len(),
                s.on_panic,
                s.restart.policy,
                s.restart.max_restarts,
                s.restart.give_up_after,
                s.stop_grace_period,
                s.depends.iter().map(|d| (&d.service, d.condition)).collect::<Vec<_>>()
            )
        })
        .collect::<Vec<_>>();
    for line in describe_plan {
        world.note(format!("plan {line}"));
    }
    Ok((world, observer_task))
}

/// The board, replica by replica, and what the runtime runs, in words.
fn board_lines(world: &World) -> Vec<String> {
    let status = world.handle.status();
    let mut lines = vec![format!("stable: {}", status.stable)];
    for s in &status.services {
        lines.push(format!(
            "{}: phase {:?} ({}) desired {}",
            s.name,
            s.phase,
            s.reason.as_deref().unwrap_or("-"),
            s.desired
        ));
        for r in &s.replicas {
            lines.push(format!(
                "  {}/{}: {} healthy={} container={} last_exit={}",
                s.name,
                r.replica,
                r.state.as_str(),
                r.healthy,
                r.container.as_ref().map_or("-".into(), ToString::to_string),
                r.last_exit.map_or("-".into(), |e| e.to_string())
            ));
        }
    }
    let running: Vec<String> = world
        .sim
        .running()
        .iter()
        .map(ToString::to_string)
        .collect();
    lines.push(format!("runtime runs: {running:?}"));
    lines
}

/// The schedule itself: events and checks, then calm and the quiescence checks, then the
/// shutdown and its checks. Returns the first breaches found.
async fn schedule(world: &mut World, options: &Options, shutdown_at: Option<usize>) -> Vec<Breach> {
    settle(Duration::from_secs(2)).await;
    world.note("spawned; first check".into());
    let found = invariants::settled(world);
    if !found.is_empty() {
        return found;
    }
    for step in 1..=options.steps {
        world.step = step;
        let event = if shutdown_at == Some(step) {
            Event::Shutdown
        } else {
            events::draw(world)
        };
        let pause = events::draw_pause(world);
        let line = format!("{}, {pause}", events::describe(world, &event));
        world.note(line);
        events::inject(world, &event).await;
        match pause {
            Pause::Immediately => continue,
            Pause::Yield(n) => {
                for _ in 0..n {
                    tokio::task::yield_now().await;
                }
                continue;
            }
            Pause::Settle(d) => settle(d).await,
        }
        world.poll_shutdown().await;
        let mut found = std::mem::take(&mut world.pending);
        found.extend(unexpected_panics());
        found.extend(invariants::settled(world));
        if !found.is_empty() {
            return found;
        }
    }

    // Calm: faults off (start failures asked for and not yet used up too), time for every
    // backoff, window and timeout to pass.
    world.step = options.steps + 1;
    for service in 0..world.services.len() {
        world.turn(service, |k| *k = Knobs::default());
    }
    world.sim.clear_start_failures();
    world.note(format!("calm for {CALM:?}, then the quiescence checks"));
    settle(CALM).await;
    // A rollout's progress deadline may fall in the calm and revert it, replacing replicas
    // a moment before the checks: quiescence is the rollout over and a calm after it.
    if !world.shutdown_requested() && rolling(world) {
        let waited = tokio::time::Instant::now();
        while rolling(world) && waited.elapsed() < ROLLOUT_PATIENCE {
            settle(Duration::from_secs(5)).await;
        }
        if rolling(world) {
            world.pending.push(Breach {
                invariant: Invariant::Liveness,
                what: format!("a rollout is still in progress {ROLLOUT_PATIENCE:?} into the calm"),
            });
        } else {
            world.note(format!(
                "the rollout ended {:?} later; calm for {CALM:?} more",
                waited.elapsed()
            ));
            settle(CALM).await;
        }
    }
    world.poll_shutdown().await;
    let mut found = std::mem::take(&mut world.pending);
    found.extend(unexpected_panics());
    found.extend(if world.shutdown_requested() {
        invariants::settled(world)
    } else {
        invariants::quiescent(world)
    });
    if !found.is_empty() {
        return found;
    }

    world.step = options.steps + 2;
    world.note("shutdown (if not yet), then a while more".into());
    world.finish_shutdown().await;
    settle(Duration::from_secs(5)).await;
    let mut found = std::mem::take(&mut world.pending);
    found.extend(unexpected_panics());
    found.extend(invariants::settled(world));
    found
}
