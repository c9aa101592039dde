//! What a schedule is made of: the events the driver injects, their weights, and how each
//! is carried out. Adding an event kind is adding a variant, a weight in `draw` and an arm
//! in `inject`.

use std::fmt;
use std::time::Duration;

use herdsman_runtime::{FaultProfile, HealthBehaviour, Lifetime};
use rand::Rng;

use super::World;

/// One thing that happens to the deployment, injected at one step of a schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The running container of a replica exits by itself with `code` (its start was
    /// long heard of).
    Exit {
        service: usize,
        replica: u32,
        code: i32,
    },
    /// From now on (`on`) or no longer, the service's containers exit at the instant they
    /// start, before the tree can hear they started.
    ExitAtStart { service: usize, on: bool },
    /// From now on or no longer, the service's containers crash after a random time
    /// (exponential, mean 2 s).
    Crashy { service: usize, on: bool },
    /// The next `n` starts of the service fail.
    FailStarts { service: usize, n: u32 },
    /// The container actor of a replica panics, whatever it is doing.
    ActorPanic { service: usize, replica: u32 },
    /// The service's supervisor panics, whatever it is doing.
    SupervisorPanic { service: usize },
    /// The service's health checks start failing (`healthy: false`) or pass again.
    Health { service: usize, healthy: bool },
    /// Set the service's desired replica count.
    Scale { service: usize, to: u32 },
    /// Bring the service back to its spec's replica count (`start_service`).
    StartService { service: usize },
    /// An operator's graceful restart of one replica (`restart`), left to run on its own
    /// while the schedule goes on.
    Restart { service: usize, replica: u32 },
    /// From now on or no longer, the service's init steps take longer than their timeout.
    SlowInit { service: usize, on: bool },
    /// From now on or no longer, the service's init steps never return (whatever their
    /// timeout) until whoever runs them drops them.
    HangingInit { service: usize, on: bool },
    /// From now on or no longer, the service's init steps fail.
    FailingInit { service: usize, on: bool },
    /// From now on or no longer, the service's containers ignore their stop signal, so a
    /// stop lasts the whole grace period and ends with SIGKILL.
    HangingStops { service: usize, on: bool },
    /// Apply a changed spec: the service's image becomes version `version`, rolled with
    /// this surge and unavailability (not both 0); back-to-back applies supersede each
    /// other, and a rollout the other faults make fail is reverted.
    Apply {
        service: usize,
        version: u32,
        surge: u32,
        unavailable: u32,
    },
    /// An operator's `rollout undo`: back to the spec before the current one (refused
    /// when there is none), superseding a rollout in progress.
    Undo,
    /// herdsman is killed and started again on the same runtime, adopting what runs.
    HerdsmanRestart,
    /// Shut the deployment down; the schedule goes on meanwhile.
    Shutdown,
    /// Nothing: time passes.
    Idle,
}

/// How long the tree may run after an event before the next one, and whether the
/// invariants are checked then. Events that follow each other `Immediately` land while the
/// previous one's messages are still in flight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pause {
    /// The next event follows before any other task runs.
    Immediately,
    /// A few scheduler rounds: some messages delivered, others in flight.
    Yield(u32),
    /// This much simulated time, then every ready task runs and the invariants are checked.
    Settle(Duration),
}

impl fmt::Display for Pause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pause::Immediately => f.write_str("then at once"),
            Pause::Yield(n) => write!(f, "then {n} yields"),
            Pause::Settle(d) => write!(f, "then {d:?} and check"),
        }
    }
}

/// The fault knobs of one service, turned by events, making up its [`FaultProfile`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Knobs {
    pub exit_at_start: bool,
    pub crashy: bool,
    pub unhealthy: bool,
    pub slow_init: bool,
    pub hanging_init: bool,
    pub failing_init: bool,
    pub hanging_stops: bool,
}

impl Knobs {
    /// The profile these knobs make.
    pub fn profile(&self) -> FaultProfile {
        FaultProfile {
            lifetime: if self.exit_at_start {
                Lifetime::Fixed(Duration::ZERO)
            } else if self.crashy {
                Lifetime::Exponential {
                    mean: Duration::from_secs(2),
                }
            } else {
                Lifetime::Forever
            },
            exit_codes: vec![1, 0, 137],
            health: if self.unhealthy {
                HealthBehaviour::Never
            } else {
                HealthBehaviour::Healthy
            },
            init_latency: if self.slow_init {
                Duration::from_secs(60)
            } else {
                Duration::from_millis(200)
            },
            init_failure: if self.failing_init { 1.0 } else { 0.0 },
            init_hangs: self.hanging_init,
            stop_hangs: self.hanging_stops,
            ..FaultProfile::default()
        }
    }
}

/// The kinds of event, how often each is drawn, and from which set of event kinds on
/// (`Options::schedules`).
const WEIGHTS: &[(Kind, u32, u32)] = &[
    (Kind::Exit, 20, 1),
    (Kind::ExitAtStart, 5, 1),
    (Kind::Crashy, 4, 1),
    (Kind::FailStarts, 7, 1),
    (Kind::ActorPanic, 13, 1),
    (Kind::SupervisorPanic, 3, 1),
    (Kind::Health, 8, 1),
    (Kind::Scale, 11, 1),
    (Kind::StartService, 2, 1),
    (Kind::Restart, 4, 1),
    (Kind::Apply, 5, 1),
    (Kind::Undo, 2, 2),
    (Kind::HerdsmanRestart, 2, 2),
    (Kind::SlowInit, 5, 1),
    (Kind::HangingInit, 2, 1),
    (Kind::FailingInit, 3, 1),
    (Kind::HangingStops, 6, 1),
    (Kind::Idle, 5, 1),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exit,
    ExitAtStart,
    Crashy,
    FailStarts,
    ActorPanic,
    SupervisorPanic,
    Health,
    Scale,
    StartService,
    Restart,
    Apply,
    Undo,
    HerdsmanRestart,
    SlowInit,
    HangingInit,
    FailingInit,
    HangingStops,
    Idle,
}

/// Draw the next event from the world's generator.
pub fn draw(world: &mut World) -> Event {
    let schedules = world.schedules;
    let weights = || {
        WEIGHTS
            .iter()
            .filter(move |(_, _, from)| *from <= schedules)
            .map(|(k, w, _)| (k, w))
    };
    let total: u32 = weights().map(|(_, w)| w).sum();
    let mut n = world.rng.random_range(0..total);
    let mut kind = Kind::Idle;
    for (k, w) in weights() {
        if n < *w {
            kind = *k;
            break;
        }
        n -= w;
    }
    let service = world.rng.random_range(0..world.services.len());
    let knobs = world.services[service].knobs;
    let replica = world
        .rng
        .random_range(0..world.services[service].desired.max(1));
    match kind {
        Kind::Exit => Event::Exit {
            service,
            replica,
            code: [1, 1, 0, 2, 137][world.rng.random_range(0..5)],
        },
        Kind::ExitAtStart => Event::ExitAtStart {
            service,
            on: !knobs.exit_at_start,
        },
        Kind::Crashy => Event::Crashy {
            service,
            on: !knobs.crashy,
        },
        Kind::FailStarts => Event::FailStarts {
            service,
            n: world.rng.random_range(1..=3),
        },
        Kind::ActorPanic => Event::ActorPanic { service, replica },
        Kind::SupervisorPanic => Event::SupervisorPanic { service },
        Kind::Health => Event::Health {
            service,
            healthy: knobs.unhealthy,
        },
        Kind::Scale => Event::Scale {
            service,
            to: if world.rng.random_bool(0.2) {
                0
            } else {
                world.rng.random_range(0..=super::plan::MAX_REPLICAS)
            },
        },
        Kind::StartService => Event::StartService { service },
        Kind::Restart => Event::Restart { service, replica },
        Kind::Apply => {
            let surge = world.rng.random_range(0..=2);
            Event::Apply {
                service,
                version: world.rng.random_range(2..=9),
                surge,
                unavailable: if surge == 0 {
                    1
                } else {
                    world.rng.random_range(0..=1)
                },
            }
        }
        Kind::Undo => Event::Undo,
        Kind::HerdsmanRestart => Event::HerdsmanRestart,
        Kind::SlowInit => Event::SlowInit {
            service,
            on: !knobs.slow_init,
        },
        Kind::HangingInit => Event::HangingInit {
            service,
            on: !knobs.hanging_init,
        },
        Kind::FailingInit => Event::FailingInit {
            service,
            on: !knobs.failing_init,
        },
        Kind::HangingStops => Event::HangingStops {
            service,
            on: !knobs.hanging_stops,
        },
        Kind::Idle => Event::Idle,
    }
}

/// Draw how long the tree runs after an event.
pub fn draw_pause(world: &mut World) -> Pause {
    match world.rng.random_range(0..100) {
        0..=14 => Pause::Immediately,
        15..=29 => Pause::Yield(world.rng.random_range(1..=8)),
        30..=64 => Pause::Settle(Duration::from_millis(world.rng.random_range(1..=200))),
        _ => Pause::Settle(Duration::from_millis(world.rng.random_range(200..=12_000))),
    }
}

/// Carry out `event` on the world.
pub async fn inject(world: &mut World, event: &Event) {
    let name = |world: &World, service: usize| world.services[service].name.clone();
    match *event {
        Event::Exit {
            service,
            replica,
            code,
        } => {
            let name = name(world, service);
            world.sim.kill_replica(&name, replica, code);
        }
        Event::ExitAtStart { service, on } => {
            world.turn(service, |k| k.exit_at_start = on);
        }
        Event::Crashy { service, on } => world.turn(service, |k| k.crashy = on),
        Event::FailStarts { service, n } => {
            let name = name(world, service);
            world.sim.fail_starts(&name, n);
        }
        Event::ActorPanic { service, replica } => {
            let name = name(world, service);
            world.handle.inject_actor_panic(&name, replica);
        }
        Event::SupervisorPanic { service } => {
            let name = name(world, service);
            world.handle.inject_supervisor_panic(&name);
        }
        Event::Health { service, healthy } => world.turn(service, |k| k.unhealthy = !healthy),
        Event::Scale { service, to } => world.scale(service, to).await,
        Event::StartService { service } => world.start_service(service).await,
        Event::Restart { service, replica } => {
            let (handle, name) = (world.handle.clone(), name(world, service));
            // Refusals (a replica scaled away, not ready in time, a deployment shutting
            // down) are the operator's business; the invariants are the tree's.
            tokio::spawn(async move {
                let _ = handle
                    .restart(&name, Some(replica), Duration::from_secs(30))
                    .await;
            });
        }
        Event::Apply {
            service,
            version,
            surge,
            unavailable,
        } => world.apply(service, version, surge, unavailable).await,
        Event::Undo => world.undo().await,
        Event::HerdsmanRestart => world.restart_herdsman().await,
        Event::SlowInit { service, on } => world.turn(service, |k| k.slow_init = on),
        Event::HangingInit { service, on } => {
            world.services[service].init_ever_hung |= on;
            world.turn(service, |k| k.hanging_init = on);
        }
        Event::FailingInit { service, on } => world.turn(service, |k| k.failing_init = on),
        Event::HangingStops { service, on } => world.turn(service, |k| k.hanging_stops = on),
        Event::Shutdown => world.begin_shutdown(),
        Event::Idle => {}
    }
}

/// `event` in words, with service names.
pub fn describe(world: &World, event: &Event) -> String {
    let name = |service: usize| world.services[service].name.as_str();
    match *event {
        Event::Exit {
            service,
            replica,
            code,
        } => format!("{}/{replica} exits with code {code}", name(service)),
        Event::ExitAtStart { service, on } => {
            format!("{} exits at start: {on}", name(service))
        }
        Event::Crashy { service, on } => format!("{} crashes randomly: {on}", name(service)),
        Event::FailStarts { service, n } => format!("next {n} starts of {} fail", name(service)),
        Event::ActorPanic { service, replica } => {
            format!("container actor {}/{replica} panics", name(service))
        }
        Event::SupervisorPanic { service } => format!("supervisor {} panics", name(service)),
        Event::Health { service, healthy } => {
            format!("{} health checks pass: {healthy}", name(service))
        }
        Event::Scale { service, to } => format!("scale {} to {to}", name(service)),
        Event::StartService { service } => format!("start service {}", name(service)),
        Event::Restart { service, replica } => {
            format!("operator restarts {}/{replica}", name(service))
        }
        Event::SlowInit { service, on } => format!("{} init steps time out: {on}", name(service)),
        Event::HangingInit { service, on } => format!("{} init steps hang: {on}", name(service)),
        Event::FailingInit { service, on } => format!("{} init steps fail: {on}", name(service)),
        Event::HangingStops { service, on } => {
            format!("{} ignores its stop signal: {on}", name(service))
        }
        Event::Apply {
            service,
            version,
            surge,
            unavailable,
        } => format!(
            "apply {} version {version} (max_surge {surge}, max_unavailable {unavailable})",
            name(service)
        ),
        Event::Undo => "rollout undo".to_string(),
        Event::HerdsmanRestart => "herdsman is killed and restarted, adopting".to_string(),
        Event::Shutdown => "shutdown".to_string(),
        Event::Idle => "idle".to_string(),
    }
}
