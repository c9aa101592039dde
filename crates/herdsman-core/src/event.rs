//! Typed deployment events and the bounded bus that carries them to subscribers without
//! ever blocking a supervisor.

use std::sync::Arc;
use std::time::Duration;

use herdsman_runtime::Exit;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::stabilization::FailingService;

/// Something that happened in a deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the deployment was spawned.
    pub at_ms: u64,
    /// Deployment name.
    pub deployment: Arc<str>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The kinds of event, tagged `"event"` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// A replica's container is running.
    ReplicaStarted {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
        /// Incarnation.
        generation: u64,
        /// OS pid, if any.
        pid: Option<u32>,
    },
    /// A replica's container, left running by an earlier run of herdsman, was adopted:
    /// supervised again without being restarted.
    ReplicaAdopted {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
        /// Incarnation (the adopted one's).
        generation: u64,
        /// OS pid, if any.
        pid: Option<u32>,
    },
    /// A replica's container exited.
    ReplicaExited {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
        /// Incarnation.
        generation: u64,
        /// How it ended.
        exit: Exit,
    },
    /// A replica's container could not be created or started.
    StartFailed {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
        /// Why.
        error: String,
    },
    /// A replica is being restarted, after `delay_ms`.
    ReplicaRestarting {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
        /// Delay before the restart, 0 for immediate.
        delay_ms: u64,
        /// Restarts of this replica so far, this one included.
        restarts: u32,
    },
    /// A replica crashed too often inside the restart window and is backing off.
    BackOff {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
        /// Delay in force.
        delay_ms: u64,
    },
    /// A replica was isolated: kept for debugging, not ready, not restarted.
    Isolated {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
        /// Why.
        reason: String,
    },
    /// A service was shut down because of its panic action.
    ServiceShutdown {
        /// Service.
        service: Arc<str>,
        /// Why.
        reason: String,
    },
    /// A service cannot run (dependency timed out, every replica gave up).
    ServiceFailed {
        /// Service.
        service: Arc<str>,
        /// Why.
        reason: String,
    },
    /// A replica's health changed.
    HealthChanged {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
        /// New health.
        healthy: bool,
    },
    /// One health check failed (counted or not).
    ProbeFailed {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
        /// Why.
        reason: String,
    },
    /// An init step failed after its retries.
    InitStepFailed {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
        /// Step id.
        step: String,
        /// Why.
        error: String,
        /// Whether the sequence goes on (`warn` or `continue`).
        continues: bool,
    },
    /// A service's desired replica count changed.
    Scaled {
        /// Service.
        service: Arc<str>,
        /// Previous count.
        from: u32,
        /// New count.
        to: u32,
    },
    /// A job replica finished with exit code 0.
    Completed {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
    },
    /// A replica gave up restarting and is `failed`.
    GaveUp {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
        /// Why.
        reason: String,
    },
    /// Every service has its desired replicas running and healthy.
    DeploymentStable {
        /// Time from spawn to stable.
        after_ms: u64,
    },
    /// The deployment was stable and no longer is (a replica exited, turned unhealthy or
    /// was scaled up).
    DeploymentUnstable,
    /// A stabilization wait reached its deadline.
    StabilizationTimedOut {
        /// The services that were not ready.
        failing: Vec<FailingService>,
    },
    /// The deployment stopped every service.
    DeploymentStopped,
    /// A new spec was applied: these services roll to it (revision 1 is the spec the
    /// deployment started with). `revert` for an automatic rollback.
    RolloutStarted {
        /// The new spec's revision.
        revision: u64,
        /// Services whose replicas are replaced.
        services: Vec<String>,
        /// A rollback of a failed rollout.
        revert: bool,
    },
    /// One more replica of a service runs the new spec and is ready.
    RolloutProgress {
        /// Revision.
        revision: u64,
        /// Service.
        service: Arc<str>,
        /// Replicas on the new spec and ready.
        updated: u32,
        /// Desired replicas.
        desired: u32,
    },
    /// Every changed service runs the new spec, ready.
    RolloutComplete {
        /// Revision.
        revision: u64,
    },
    /// A rollout failed: new replicas crash looped or failed, or it missed its progress
    /// deadline. With `reverting`, the previous spec is being rolled back to.
    RolloutFailed {
        /// Revision.
        revision: u64,
        /// Why.
        reason: String,
        /// Whether it is rolled back automatically (else it is paused).
        reverting: bool,
        /// The services not ready, with the failing replicas' log tails.
        failing: Vec<FailingService>,
    },
}

/// The sending side of the event bus, shared by every actor of a deployment.
///
/// The ring holds `Arc`s: tokio's broadcast channel allocates and writes every slot at
/// creation, so a slot of the event itself (~100 bytes) would make the default 4096
/// slots 491 KB resident in every run; as `Arc`s they are 128 KB, and an event's body
/// is allocated only when one is sent.
#[derive(Debug, Clone)]
pub(crate) struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
    deployment: Arc<str>,
    epoch: Instant,
}

impl EventBus {
    pub(crate) fn new(deployment: Arc<str>, capacity: usize) -> EventBus {
        let (tx, _) = broadcast::channel(capacity.max(1));
        EventBus {
            tx,
            deployment,
            epoch: Instant::now(),
        }
    }

    /// Publish; never blocks. With no subscriber the event is dropped.
    pub(crate) fn emit(&self, kind: EventKind) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let _ = self.tx.send(Arc::new(Event {
            at_ms: self.since_epoch().as_millis() as u64,
            deployment: self.deployment.clone(),
            kind,
        }));
    }

    pub(crate) fn since_epoch(&self) -> Duration {
        self.since_epoch_at(Instant::now())
    }

    /// `at` as time since the deployment was spawned.
    pub(crate) fn since_epoch_at(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.epoch)
    }

    pub(crate) fn subscribe(&self) -> EventStream {
        EventStream {
            rx: self.tx.subscribe(),
        }
    }
}

/// What a subscriber receives: an event, or the count of events it lost by lagging.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// The next event.
    Event(Event),
    /// The subscriber fell behind and this many of the oldest events were dropped.
    Missed(u64),
}

/// A subscription to a deployment's events. A subscriber that does not read loses the
/// oldest events; it never slows a supervisor down.
#[derive(Debug)]
pub struct EventStream {
    rx: broadcast::Receiver<Arc<Event>>,
}

impl EventStream {
    /// The next event, `Missed(n)` after a lag, `None` once the deployment is gone.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled call loses no event.
    pub async fn recv(&mut self) -> Option<Received> {
        match self.rx.recv().await {
            Ok(e) => Some(Received::Event(Arc::unwrap_or_clone(e))),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Received::Missed(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next event if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Received> {
        match self.rx.try_recv() {
            Ok(e) => Some(Received::Event(Arc::unwrap_or_clone(e))),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Received::Missed(n)),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_subscriber_that_lags_is_told_how_many_it_missed() {
        let bus = EventBus::new("d".into(), 4);
        let mut sub = bus.subscribe();
        for _ in 0..10 {
            bus.emit(EventKind::DeploymentStopped);
        }
        assert_eq!(sub.recv().await, Some(Received::Missed(6)));
        let mut rest = 0;
        while let Some(Received::Event(_)) = sub.try_recv() {
            rest += 1;
        }
        assert_eq!(rest, 4);
    }

    #[test]
    fn events_serialize_with_a_snake_case_tag() {
        let e = Event {
            at_ms: 5,
            deployment: "shop".into(),
            kind: EventKind::BackOff {
                service: "api".into(),
                replica: 1,
                delay_ms: 2000,
            },
        };
        let json = serde_json::to_string(&e).expect("serializable");
        assert_eq!(
            json,
            r#"{"at_ms":5,"deployment":"shop","event":"back_off","service":"api","replica":1,"delay_ms":2000}"#
        );
    }
}
