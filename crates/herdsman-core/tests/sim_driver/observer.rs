//! The event subscriber: keeps the tail of the tree's events for failure reports, why each
//! replica last stopped running (for the diagnostics invariant), and checks every
//! `DeploymentStable` against the simulated runtime's truth the moment it is seen.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use herdsman_core::{DeploymentHandle, EventKind, Received};
use herdsman_runtime::SimRuntime;

use super::invariants::{unmet, Unmet};

/// Tree events kept for a failure report.
const LOG_TAIL: usize = 80;

/// Why a replica last stopped running, from the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Exited,
    StartFailed,
    InitFailed,
    Unhealthy,
}

#[derive(Debug, Default)]
pub struct Observed {
    pub log: VecDeque<String>,
    pub missed: u64,
    pub last_cause: HashMap<(String, u32), Cause>,
    /// `DeploymentStable` announced while the truth said otherwise, in words.
    pub false_stables: Vec<(u64, String)>,
    /// Services a `ServiceShutdown` event was seen for (their panic action stopped them).
    pub shut_down: HashSet<String>,
    /// Every `Scaled` event's time, to tell a stable announcement made while a scale was
    /// being applied.
    pub scaled_at: HashSet<u64>,
    /// What was unmet at the last drained check point: a `DeploymentStable` that ignores
    /// one of those had every chance to know better.
    pub baseline: HashSet<Unmet>,
    /// Counts of tree events by kind, for the summary.
    pub counts: HashMap<&'static str, u64>,
    /// The latest generation of each replica whose `ReplicaStarted` has been seen: a
    /// `DeploymentStable` emitted before an incarnation's start was told did not count it.
    pub started: HashMap<(String, u32), u64>,
    /// A replica's story told out of order: an incarnation's exit received after a later
    /// incarnation's start (the supervisor's events go out by the deployment actor, the
    /// start by the container actor: one bus keeps them in the order they were told).
    pub out_of_order: Vec<String>,
}

pub type Shared = Arc<Mutex<Observed>>;

pub fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Observed> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn kind_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::ReplicaStarted { .. } => "started",
        EventKind::ReplicaExited { .. } => "exited",
        EventKind::StartFailed { .. } => "start_failed",
        EventKind::ReplicaRestarting { .. } => "restarting",
        EventKind::BackOff { .. } => "backoff",
        EventKind::Isolated { .. } => "isolated",
        EventKind::ServiceShutdown { .. } => "service_shutdown",
        EventKind::ServiceFailed { .. } => "service_failed",
        EventKind::HealthChanged { .. } => "health_changed",
        EventKind::InitStepFailed { .. } => "init_failed",
        EventKind::Completed { .. } => "completed",
        EventKind::GaveUp { .. } => "gave_up",
        EventKind::DeploymentStable { .. } => "stable",
        EventKind::DeploymentUnstable => "unstable",
        EventKind::Scaled { .. } => "scaled",
        _ => "other",
    }
}

/// Read the deployment's events until it is gone.
pub async fn observe(handle: DeploymentHandle, sim: Arc<SimRuntime>, shared: Shared) {
    let mut events = handle.subscribe();
    while let Some(received) = events.recv().await {
        let event = match received {
            Received::Event(e) => e,
            Received::Missed(n) => {
                lock(&shared).missed += n;
                continue;
            }
        };
        if matches!(event.kind, EventKind::ProbeFailed { .. }) {
            continue;
        }
        let mut o = lock(&shared);
        *o.counts.entry(kind_name(&event.kind)).or_default() += 1;
        if o.log.len() == LOG_TAIL {
            o.log.pop_front();
        }
        o.log
            .push_back(format!("{}ms {:?}", event.at_ms, event.kind));
        let cause = match &event.kind {
            EventKind::ReplicaExited {
                service, replica, ..
            } => Some((service, *replica, Cause::Exited)),
            EventKind::StartFailed {
                service, replica, ..
            } => Some((service, *replica, Cause::StartFailed)),
            EventKind::InitStepFailed {
                service,
                replica,
                continues: false,
                ..
            } => Some((service, *replica, Cause::InitFailed)),
            EventKind::HealthChanged {
                service,
                replica,
                healthy: false,
            } => Some((service, *replica, Cause::Unhealthy)),
            _ => None,
        };
        match &event.kind {
            EventKind::ServiceShutdown { service, .. } => {
                o.shut_down.insert(service.to_string());
            }
            EventKind::ReplicaStarted {
                service,
                replica,
                generation,
                ..
            } => {
                o.started
                    .insert((service.to_string(), *replica), *generation);
            }
            EventKind::ReplicaExited {
                service,
                replica,
                generation,
                ..
            } => {
                let key = (service.to_string(), *replica);
                if let Some(&later) = o.started.get(&key).filter(|g| **g > *generation) {
                    let line = format!(
                        "{}ms: {service}/{replica} generation {generation}'s exit received after generation {later}'s start",
                        event.at_ms
                    );
                    o.out_of_order.push(line);
                }
            }
            EventKind::Scaled { .. } => {
                o.scaled_at.insert(event.at_ms);
            }
            _ => {}
        }
        if let Some((service, replica, cause)) = cause {
            o.last_cause.insert((service.to_string(), replica), cause);
        }
        if let EventKind::DeploymentStable { .. } = event.kind {
            let status = handle.status();
            let now = unmet(&status, &sim);
            for u in now {
                // Unmet since the last drained check point, or a container that died at
                // the instant it started, whose start was told before this announcement:
                // the tree counted an exit it had been told of (with its start). An
                // incarnation started after the announcement was not counted by it; the
                // exit of the one before is a fresh change, as any other.
                let died_at_start = u.container.as_ref().is_some_and(|c| {
                    let told = u
                        .replica
                        .and_then(|r| o.started.get(&(u.service.clone(), r)));
                    told.is_some_and(|g| *g >= c.generation)
                        && sim.exit_of(c).is_some_and(|e| e.ran_for.is_zero())
                });
                if o.baseline.contains(&u) || died_at_start {
                    let why = if died_at_start {
                        "its container exited at the instant it started"
                    } else {
                        "unmet since the last check point"
                    };
                    let board = status
                        .services
                        .iter()
                        .find(|s| s.name == u.service)
                        .map(|s| {
                            let replica = u
                                .replica
                                .and_then(|r| s.replicas.iter().find(|x| x.replica == r))
                                .map_or("-", |x| x.state.as_str());
                            format!("desired {}, replica {replica}", s.desired)
                        })
                        .unwrap_or_default();
                    let line = format!(
                        "DeploymentStable at {}ms while {u} ({why}; board: {board})",
                        event.at_ms
                    );
                    o.false_stables.push((event.at_ms, line));
                }
            }
        }
    }
}
