//! The simulation's state: containers, pending exits and counters behind one lock, and
//! the driver task that fires scheduled exits.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use herdsman_spec::Service;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::fault::{rng_for, Stream};
use crate::sim_audit::Audit;
use crate::sim_containers::Containers;
use crate::{ContainerId, Exit, ExitReason, ExitSender, FaultProfile};

/// Counters of what a [`SimRuntime`] did, in total or for one service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Containers created.
    pub created: u64,
    /// Starts that succeeded.
    pub started: u64,
    /// Starts that failed (injected).
    pub start_failures: u64,
    /// Exits, however caused.
    pub exited: u64,
    /// Exits caused by `stop` (or by `remove` of a running container).
    pub stopped: u64,
    /// Exits injected with `kill` or `kill_replica`.
    pub killed: u64,
    /// Containers removed.
    pub removed: u64,
    /// Init step tries that failed.
    pub init_failures: u64,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) seed: u64,
    pub(crate) state: Mutex<SimState>,
    /// Wakes the driver when a deadline earlier than all others is scheduled.
    pub(crate) wake: Notify,
}

#[derive(Debug, Default)]
pub(crate) struct SimState {
    pub(crate) containers: Containers,
    pub(crate) profiles: HashMap<String, Arc<FaultProfile>>,
    pub(crate) default_profile: Arc<FaultProfile>,
    /// Service → starts still to fail (`fail_starts`).
    pub(crate) forced_start_failures: HashMap<String, u32>,
    /// Init steps run per container, so a re-run init sequence draws fresh outcomes.
    pub(crate) init_runs: HashMap<ContainerId, u32>,
    /// Deployments seen, to find a replica by service and index.
    pub(crate) deployments: Vec<Arc<str>>,
    /// Pending exits, earliest first. Entries of containers stopped or killed earlier are
    /// left in place and skipped when due (counted in `stale_timers`).
    pub(crate) timers: BinaryHeap<Reverse<Timer>>,
    pub(crate) stale_timers: usize,
    pub(crate) stats: SimStats,
    pub(crate) service_stats: HashMap<Arc<str>, SimStats>,
    pub(crate) driver: Option<JoinHandle<()>>,
    /// Contract breaches seen, and what it takes to see them.
    pub(crate) audit: Audit,
    /// Per deployment, the runtime session its init steps run in: a later tree's
    /// `survivors` begins a new one, which ends every init step the dead tree left in
    /// flight (as a process runtime kills the commands a dead herdsman left running).
    pub(crate) sessions: HashMap<Arc<str>, tokio::sync::watch::Sender<u64>>,
}

/// One simulated container.
#[derive(Debug)]
pub(crate) struct SimContainer {
    pub(crate) phase: SimPhase,
    /// Start attempts so far: indexes the start, lifetime and exit-code draws, and tells a
    /// timer of this incarnation from a stale one.
    pub(crate) attempts: u32,
    /// Health checks so far (indexes the health draws).
    pub(crate) checks: u32,
    /// Exec commands so far (indexes the exec draws).
    pub(crate) execs: u32,
    /// A timer for the current incarnation is in the heap.
    pub(crate) timer_pending: bool,
    /// The service it was created from, for a later run's adoption (its run hash).
    pub(crate) service: Arc<Service>,
}

impl SimContainer {
    /// A container just created.
    pub(crate) fn new(service: Arc<Service>) -> SimContainer {
        SimContainer {
            phase: SimPhase::Created,
            attempts: 0,
            checks: 0,
            execs: 0,
            timer_pending: false,
            service,
        }
    }

    /// Whether it is running.
    pub(crate) fn is_running(&self) -> bool {
        matches!(self.phase, SimPhase::Running { .. })
    }
}

#[derive(Debug)]
pub(crate) enum SimPhase {
    Created,
    StartFailed,
    Running {
        since: Instant,
        exit_tx: Option<ExitSender>,
        /// Set while a `stop` waits out the grace period of a container that ignores it.
        stop_waiter: Option<oneshot::Sender<()>>,
    },
    Exited(Exit),
}

/// A scheduled self-inflicted exit. Ordered by deadline, then container id, so exits due
/// at the same instant fire in an order that does not depend on start order.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Timer {
    pub(crate) deadline: Instant,
    pub(crate) id: ContainerId,
    pub(crate) attempt: u32,
}

/// Why a container ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    ByItself,
    Stop,
    Kill,
}

/// An exit to deliver once the state lock is released.
#[derive(Debug)]
#[must_use = "an ending must be delivered"]
pub(crate) struct Ending {
    exit: Exit,
    exit_tx: Option<ExitSender>,
    stop_waiter: Option<oneshot::Sender<()>>,
}

impl Ending {
    pub(crate) fn deliver(self) {
        if let Some(tx) = self.exit_tx {
            let _ = tx.send(self.exit);
        }
        if let Some(tx) = self.stop_waiter {
            let _ = tx.send(());
        }
    }
}

impl SimState {
    /// The fault profile of `service`'s containers, borrowed: a health check reads one
    /// field of it, and cloning the shared `Arc` per check would be two atomic writes on a
    /// line every core touches.
    pub(crate) fn profile(&self, service: &str) -> &Arc<FaultProfile> {
        self.profiles.get(service).unwrap_or(&self.default_profile)
    }

    pub(crate) fn count(&mut self, service: &Arc<str>, f: impl Fn(&mut SimStats)) {
        f(&mut self.stats);
        // The name is cloned only for a service's first count: every replica of a service
        // shares its `Arc`, whose count both cores write to.
        match self.service_stats.get_mut(&**service) {
            Some(stats) => f(stats),
            None => f(self.service_stats.entry(service.clone()).or_default()),
        }
    }

    /// End the running container `id` (of start attempt `attempt`, if given) with `reason`.
    /// `None` when it is not running (or is a later incarnation).
    pub(crate) fn end(
        &mut self,
        id: &ContainerId,
        attempt: Option<u32>,
        reason: ExitReason,
        cause: Cause,
    ) -> Option<Ending> {
        let c = self.containers.get_mut(id)?;
        if attempt.is_some_and(|a| a != c.attempts) {
            return None;
        }
        let SimPhase::Running { since, .. } = c.phase else {
            return None;
        };
        let exit = Exit {
            reason,
            ran_for: Instant::now().saturating_duration_since(since),
        };
        let SimPhase::Running {
            exit_tx,
            stop_waiter,
            ..
        } = std::mem::replace(&mut c.phase, SimPhase::Exited(exit))
        else {
            return None;
        };
        if std::mem::take(&mut c.timer_pending) && cause != Cause::ByItself {
            self.stale_timers += 1;
        }
        self.count(&id.service, |s| {
            s.exited += 1;
            match cause {
                Cause::ByItself => {}
                Cause::Stop => s.stopped += 1,
                Cause::Kill => s.killed += 1,
            }
        });
        Some(Ending {
            exit,
            exit_tx,
            stop_waiter,
        })
    }

    /// Pop every timer due at `now`, ending its container if it is still that incarnation.
    /// Returns the endings and the next deadline.
    fn take_due(&mut self, seed: u64, now: Instant) -> (Vec<Ending>, Option<Instant>) {
        let mut endings = Vec::new();
        while let Some(Reverse(timer)) = self.timers.peek() {
            if timer.deadline > now {
                break;
            }
            let Some(Reverse(timer)) = self.timers.pop() else {
                break;
            };
            let live = self
                .containers
                .get(&timer.id)
                .is_some_and(|c| c.timer_pending && c.attempts == timer.attempt);
            if !live {
                self.stale_timers = self.stale_timers.saturating_sub(1);
                continue;
            }
            let profile = self.profile(&timer.id.service);
            let mut rng = rng_for(seed, &timer.id, Stream::ExitCode, "", timer.attempt.into());
            let code = profile.exit_code(&mut rng);
            if let Some(ending) = self.end(
                &timer.id,
                Some(timer.attempt),
                ExitReason::Code(code),
                Cause::ByItself,
            ) {
                endings.push(ending);
            }
        }
        self.compact_timers();
        (endings, self.timers.peek().map(|Reverse(t)| t.deadline))
    }

    /// See [`SimRuntime::approx_memory`](crate::SimRuntime::approx_memory).
    pub(crate) fn approx_memory(&self) -> usize {
        let st = self;
        // The replica's slot (its vector grows by doubling, so up to twice over) and the
        // ordered set's copy of the id.
        let entry = Containers::SLOT_BYTES;
        let ordered = std::mem::size_of::<ContainerId>();
        let per_container: usize = st
            .containers
            .iter()
            .map(|(id, c)| {
                let names = id.deployment.len() + id.service.len() + 2 * 16;
                let notify = match &c.phase {
                    SimPhase::Running { exit_tx, .. } if exit_tx.is_some() => {
                        crate::exit_watch::EXIT_CELL_BYTES
                    }
                    _ => 0,
                };
                2 * entry + ordered + names + notify
            })
            .sum();
        let timers = st.timers.capacity() * std::mem::size_of::<Reverse<Timer>>();
        let init = st.init_runs.capacity() * (std::mem::size_of::<(ContainerId, u32)>() + 1);
        per_container + timers + init + st.audit.approx_memory()
    }

    /// Schedule a self-inflicted exit. Returns whether it is now the earliest, in which
    /// case the driver must be woken to sleep less.
    pub(crate) fn schedule(&mut self, timer: Timer) -> bool {
        let earliest = self.timers.peek().map(|Reverse(t)| t.deadline);
        let sooner = earliest.is_none_or(|e| timer.deadline < e);
        self.timers.push(Reverse(timer));
        sooner
    }

    /// Drop stale timers once they outnumber live ones, so a long simulation with many
    /// stops of long-lived containers does not grow the heap without bound.
    fn compact_timers(&mut self) {
        if self.stale_timers < 1024 || self.stale_timers * 2 < self.timers.len() {
            return;
        }
        let containers = &self.containers;
        self.timers.retain(|Reverse(t)| {
            containers
                .get(&t.id)
                .is_some_and(|c| c.timer_pending && c.attempts == t.attempt)
        });
        self.stale_timers = 0;
    }
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, SimState> {
        // Every mutation completes without panicking paths in between; a poisoned lock
        // still holds a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running incarnation of `id`'s replica slot other than `id` itself, if any.
pub(crate) fn running_sibling(st: &SimState, id: &ContainerId) -> Option<ContainerId> {
    st.containers
        .incarnations(id)
        .find(|(generation, c)| *generation != id.generation && c.is_running())
        .map(|(generation, _)| ContainerId {
            generation,
            ..id.clone()
        })
}

/// The running incarnations of `service`'s replica `replica`, across deployments.
pub(crate) fn replica_ids(st: &SimState, service: &str, replica: u32) -> Vec<ContainerId> {
    let service: Arc<str> = Arc::from(service);
    let mut ids = Vec::new();
    for deployment in &st.deployments {
        let lo = ContainerId::new(deployment.clone(), service.clone(), replica, 0);
        let hi = ContainerId::new(deployment.clone(), service.clone(), replica, u64::MAX);
        ids.extend(
            st.containers
                .range(lo..=hi)
                .filter(|(_, c)| c.is_running())
                .map(|(id, _)| id.clone()),
        );
    }
    ids
}

/// The driver: one task per runtime that fires due exits. It sleeps until the earliest
/// deadline, or until woken because an earlier one was scheduled.
pub(crate) async fn drive(shared: Arc<Shared>) {
    loop {
        let (endings, next) = shared.state().take_due(shared.seed, Instant::now());
        endings.into_iter().for_each(Ending::deliver);
        match next {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = shared.wake.notified() => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}
