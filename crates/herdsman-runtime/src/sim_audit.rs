//! The simulated runtime as a contract auditor: breaches of the runtime contract that only
//! the runtime's side can see (two live incarnations of one replica slot, two init steps of
//! one slot at once, a container killed without its stop signal and grace), recorded as
//! [`Violation`]s for tests and simulations to assert on.
//!
//! Audit state is kept per replica slot while something is in flight (an init step) and
//! per service (its stop signal and grace), never per event, so auditing adds nothing to a
//! container's footprint.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use herdsman_spec::StopSignal;
use tokio::time::Instant;

use crate::ContainerId;

/// Violations kept; later ones are only counted, so a runaway bug cannot exhaust memory.
pub(crate) const MAX_VIOLATIONS: usize = 1024;

/// One breach of the runtime contract, as the simulated runtime saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// When it happened (the tokio clock, so paused-time tests can place it).
    pub at: Instant,
    /// The container the offending call was about.
    pub id: ContainerId,
    /// What was wrong.
    pub kind: ViolationKind,
}

/// What kind of breach a [`Violation`] is, each tied to an invariant of the actor tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViolationKind {
    /// At most one live incarnation per replica slot: `id` was started while `running`, an
    /// other incarnation of the same deployment, service and replica, still ran.
    DuplicateStart {
        /// The incarnation that was already running.
        running: ContainerId,
    },
    /// Never two concurrent runs of one slot's init steps: step `step` of `id` began while
    /// an init step of `in_flight` (the same slot, maybe another generation) had not
    /// finished nor been cancelled.
    ConcurrentInit {
        /// The incarnation whose init step was still running.
        in_flight: ContainerId,
        /// The id of the step that began.
        step: String,
    },
    /// Nothing is stopped without its stop signal and grace: a running container was
    /// removed, which kills it outright.
    RemovedWhileRunning,
    /// Nothing is stopped without its stop signal and grace: a running container was
    /// stopped with another signal or a shorter grace than its service's spec says.
    StopWithoutGrace {
        /// The signal it was stopped with.
        signal: StopSignal,
        /// The grace it was given.
        grace: Duration,
        /// The spec's stop signal.
        expected_signal: StopSignal,
        /// The spec's stop grace period.
        expected_grace: Duration,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = &self.id;
        match &self.kind {
            ViolationKind::DuplicateStart { running } => {
                write!(f, "{id} started while {running} of the same slot still ran")
            }
            ViolationKind::ConcurrentInit { in_flight, step } => write!(
                f,
                "init step {step:?} of {id} began while an init step of {in_flight} was in flight"
            ),
            ViolationKind::RemovedWhileRunning => {
                write!(f, "{id} removed while running (killed without stop signal and grace)")
            }
            ViolationKind::StopWithoutGrace {
                signal,
                grace,
                expected_signal,
                expected_grace,
            } => write!(
                f,
                "{id} stopped with signal {} and grace {grace:?}, its spec says signal {} and grace {expected_grace:?}",
                signal.0, expected_signal.0
            ),
        }
    }
}

/// The auditor's state, inside the simulation's lock.
#[derive(Debug, Default)]
pub(crate) struct Audit {
    violations: Vec<Violation>,
    /// Violations beyond `MAX_VIOLATIONS`, counted only.
    dropped: usize,
    /// Init steps in flight, by slot (the container id at generation 0): which incarnation
    /// and how many. An entry exists only while a step runs.
    init_in_flight: HashMap<ContainerId, (ContainerId, u32)>,
    /// Stop signal and grace of each (deployment, service), from the specs it was created
    /// with.
    stop_specs: HashMap<(Arc<str>, Arc<str>), (StopSignal, Duration)>,
    /// The last (deployment, service) recorded, by pointer: the tree shares one name per
    /// service between its replicas, so a burst of creates skips hashing the names.
    last_created: Option<(Arc<str>, Arc<str>, StopSignal, Duration)>,
}

/// The key of `id`'s replica slot.
fn slot(id: &ContainerId) -> ContainerId {
    ContainerId {
        generation: 0,
        ..id.clone()
    }
}

impl Audit {
    pub(crate) fn record(&mut self, id: &ContainerId, kind: ViolationKind) {
        if self.violations.len() >= MAX_VIOLATIONS {
            self.dropped += 1;
            return;
        }
        tracing::warn!(container = %id, ?kind, "runtime contract violated");
        self.violations.push(Violation {
            at: Instant::now(),
            id: id.clone(),
            kind,
        });
    }

    pub(crate) fn violations(&self) -> Vec<Violation> {
        self.violations.clone()
    }

    pub(crate) fn violation_count(&self) -> usize {
        self.violations.len() + self.dropped
    }

    /// Remember how `id`'s service is to be stopped.
    pub(crate) fn created(&mut self, id: &ContainerId, signal: StopSignal, grace: Duration) {
        if let Some((d, s, sig, g)) = &self.last_created {
            if Arc::ptr_eq(d, &id.deployment)
                && Arc::ptr_eq(s, &id.service)
                && (*sig, *g) == (signal, grace)
            {
                return;
            }
        }
        self.last_created = Some((id.deployment.clone(), id.service.clone(), signal, grace));
        let key = (id.deployment.clone(), id.service.clone());
        if self.stop_specs.get(&key) != Some(&(signal, grace)) {
            self.stop_specs.insert(key, (signal, grace));
        }
    }

    /// A running container is being stopped with `signal` and `grace`.
    pub(crate) fn stopping(&mut self, id: &ContainerId, signal: StopSignal, grace: Duration) {
        let key = (id.deployment.clone(), id.service.clone());
        let Some(&(expected_signal, expected_grace)) = self.stop_specs.get(&key) else {
            return;
        };
        if signal != expected_signal || grace < expected_grace {
            self.record(
                id,
                ViolationKind::StopWithoutGrace {
                    signal,
                    grace,
                    expected_signal,
                    expected_grace,
                },
            );
        }
    }

    /// An init step of `id` begins; the caller ends it with `init_ended` (on completion or
    /// cancellation).
    pub(crate) fn init_began(&mut self, id: &ContainerId, step: &str) {
        let key = slot(id);
        let violation = match self.init_in_flight.get_mut(&key) {
            Some((in_flight, n)) => {
                let seen = in_flight.clone();
                *in_flight = id.clone();
                *n += 1;
                Some(seen)
            }
            None => {
                self.init_in_flight.insert(key, (id.clone(), 1));
                None
            }
        };
        if let Some(in_flight) = violation {
            self.record(
                id,
                ViolationKind::ConcurrentInit {
                    in_flight,
                    step: step.to_string(),
                },
            );
        }
    }

    /// The incarnations with an init step in flight, sorted.
    pub(crate) fn inits_in_flight(&self) -> Vec<ContainerId> {
        let mut ids: Vec<ContainerId> = self
            .init_in_flight
            .values()
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    pub(crate) fn init_ended(&mut self, id: &ContainerId) {
        let key = slot(id);
        if let Some((_, n)) = self.init_in_flight.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.init_in_flight.remove(&key);
            }
        }
    }

    /// Bytes held by the audit's maps (for `approx_memory`).
    pub(crate) fn approx_memory(&self) -> usize {
        self.init_in_flight.capacity() * (2 * std::mem::size_of::<ContainerId>() + 8)
            + self.stop_specs.capacity() * 48
            + self.violations.capacity() * std::mem::size_of::<Violation>()
    }
}
