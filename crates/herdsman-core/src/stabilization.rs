//! When a deployment is stable, and what to tell a waiter whose deadline passed. Pure:
//! computed from service counts and status snapshots, no clock reads, no I/O.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::board::{ProbeOutcome, ReplicaState, ReplicaStatus, ServicePhase, ServiceStatus};

/// What one service contributes to stability, as its supervisor reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ServiceCounts {
    /// Desired replicas.
    pub(crate) desired: u32,
    /// Replicas whose container is running.
    pub(crate) running: u32,
    /// Running and healthy.
    pub(crate) healthy: u32,
    /// Running, healthy for at least `min_ready` (or completed, for jobs).
    pub(crate) ready: u32,
    /// The service can still become ready (not failed, not shut down).
    pub(crate) viable: bool,
}

impl ServiceCounts {
    /// Ready as far as stability is concerned.
    pub(crate) fn is_ready(&self) -> bool {
        self.desired == 0 || (self.viable && self.ready >= self.desired)
    }

    /// Enough replicas running for a `started` dependency.
    pub(crate) fn is_started(&self) -> bool {
        self.desired == 0 || (self.viable && self.running.max(self.ready) >= self.desired)
    }
}

/// Stable when every service is ready.
pub(crate) fn is_stable<'a>(services: impl IntoIterator<Item = &'a ServiceCounts>) -> bool {
    services.into_iter().all(ServiceCounts::is_ready)
}

/// The answer to a stabilization wait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Stabilization {
    /// Every service with desired > 0 has its desired replicas running and healthy.
    Ready {
        /// Time from spawn to stable.
        after: Duration,
    },
    /// The deadline passed first.
    TimedOut {
        /// Each service that was not ready, with why.
        failing: Vec<FailingService>,
    },
}

/// A service that was not ready at a stabilization deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailingService {
    /// Service name.
    pub service: String,
    /// Desired replicas.
    pub desired: u32,
    /// Running replicas.
    pub running: u32,
    /// Healthy replicas.
    pub healthy: u32,
    /// Why it is not ready, in a sentence.
    pub reason: String,
    /// Each replica that is not ready.
    pub replicas: Vec<FailingReplica>,
}

/// A replica that was not ready at a stabilization deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailingReplica {
    /// Replica index.
    pub replica: u32,
    /// Its state.
    pub state: ReplicaState,
    /// Why, in a few words.
    pub reason: String,
    /// The last lines it printed.
    pub log_tail: Vec<String>,
}

/// Why a service is not ready, from its status.
pub(crate) fn service_reason(s: &ServiceStatus) -> String {
    if let Some(r) = &s.reason {
        if s.phase != ServicePhase::Running {
            return r.clone();
        }
    }
    let not_ready: Vec<&ReplicaStatus> = s.replicas.iter().filter(|r| !r.is_ready()).collect();
    if not_ready.is_empty() {
        if (s.replicas.len() as u32) < s.desired {
            return format!("{} of {} replicas created", s.replicas.len(), s.desired);
        }
        return "replicas are ready but not for min_ready yet".to_string();
    }
    let mut parts: Vec<String> = Vec::new();
    for state in [
        ReplicaState::Backoff,
        ReplicaState::Failed,
        ReplicaState::Isolated,
        ReplicaState::Running,
        ReplicaState::Initializing,
        ReplicaState::Starting,
        ReplicaState::Stopping,
        ReplicaState::Stopped,
    ] {
        let of_state: Vec<&&ReplicaStatus> =
            not_ready.iter().filter(|r| r.state == state).collect();
        if of_state.is_empty() {
            continue;
        }
        let what = match state {
            ReplicaState::Running => "unhealthy".to_string(),
            other => other.as_str().to_string(),
        };
        parts.push(format!("{} {what}", of_state.len()));
    }
    format!(
        "{}/{} ready: {}",
        s.replicas.iter().filter(|r| r.is_ready()).count(),
        s.desired,
        parts.join(", ")
    )
}

/// Why one replica is not ready.
pub(crate) fn replica_reason(r: &ReplicaStatus) -> String {
    let last_probe = r
        .probes
        .iter()
        .rev()
        .find(|p| p.outcome != ProbeOutcome::Success)
        .and_then(|p| p.reason.clone());
    let error = r
        .last_error
        .as_ref()
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    match r.state {
        ReplicaState::Running => match last_probe {
            Some(why) => format!("unhealthy: {why}"),
            None => "not healthy yet".to_string(),
        },
        ReplicaState::Backoff => format!(
            "crash looping{}{}{error}",
            r.last_exit
                .map(|e| format!(", last {e}"))
                .unwrap_or_default(),
            r.backoff_ms
                .map(|ms| format!(
                    ", next restart in {}",
                    herdsman_probe::humanize(Duration::from_millis(ms))
                ))
                .unwrap_or_default()
        ),
        ReplicaState::Isolated => match last_probe {
            Some(why) => format!("isolated: {why}"),
            None => match r.last_exit {
                Some(e) => format!("isolated after {e}"),
                None => "isolated".to_string(),
            },
        },
        ReplicaState::Failed => match r.last_exit {
            Some(e) => format!("failed, last {e}{error}"),
            None => format!("failed{error}"),
        },
        other => format!("{}{error}", other.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(desired: u32, ready: u32, viable: bool) -> ServiceCounts {
        ServiceCounts {
            desired,
            running: ready,
            healthy: ready,
            ready,
            viable,
        }
    }

    #[test]
    fn stable_needs_every_service_with_desired_replicas_ready() {
        assert!(is_stable(&[counts(3, 3, true), counts(0, 0, false)]));
        assert!(!is_stable(&[counts(3, 3, true), counts(2, 1, true)]));
        assert!(
            !is_stable(&[counts(1, 1, false)]),
            "a failed service is never ready"
        );
        assert!(is_stable(&[]), "an empty deployment is trivially stable");
    }

    #[test]
    fn started_dependency_needs_running_not_healthy() {
        let c = ServiceCounts {
            desired: 2,
            running: 2,
            healthy: 0,
            ready: 0,
            viable: true,
        };
        assert!(c.is_started());
        assert!(!c.is_ready());
    }
}
