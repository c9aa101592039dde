//! A service supervisor's view of each replica slot, and what each adds to its counts.

use std::sync::Arc;

use herdsman_probe::InitRetry;
use herdsman_spec::Service;
use ractor::ActorRef;
use tokio::time::Instant;

use crate::container_actor::ContainerMsg;
use crate::restart::RestartTracker;

/// The supervisor's view of one replica: the authority on its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotState {
    Booting,
    Running,
    /// Running but unhealthy, `on_unhealthy: isolate`.
    Unhealthy,
    Backoff,
    /// Exited and kept by the panic action `isolate`.
    Isolated,
    Completed,
    Failed,
    Stopped,
}

pub(super) struct Slot {
    pub(super) actor: ActorRef<ContainerMsg>,
    pub(super) generation: u64,
    pub(super) state: SlotState,
    pub(super) healthy: bool,
    pub(super) ready: bool,
    /// Invalidates restart and ready timers that no longer apply.
    pub(super) token: u64,
    pub(super) tracker: RestartTracker,
    pub(super) init_retry: InitRetry,
    /// When the current incarnation started, for the clean-run reset of a replica that
    /// is restarted for turning unhealthy (it has no exit to say how long it ran).
    pub(super) started_at: Option<Instant>,
    /// Since when it has been ready, for a rollout's `min_ready`.
    pub(super) ready_since: Option<Instant>,
    /// The spec its current incarnation runs (old and new differ during a rollout).
    pub(super) spec: Arc<Service>,
    /// A health report that overtook its incarnation's start report, by generation. The
    /// probe reports to the supervisor itself and the start comes from the container
    /// actor: two senders. As the tree is wired now the start is sent before the probe
    /// exists, so it is ahead in the mailbox; the supervisor keeps this rather than rest
    /// on that order. A probe reports transitions only; dropping an early one would leave
    /// the replica never healthy, on the board or to its service, while its checks pass.
    pub(super) early_health: Option<(u64, bool)>,
}

/// What replicas add to their service's counts: running, healthy, ready, and failed for
/// good (a failed replica never comes back by itself, so its service cannot become ready).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Share {
    pub(super) running: u32,
    pub(super) healthy: u32,
    pub(super) ready: u32,
    pub(super) failed: u32,
}

impl Share {
    pub(super) fn add(self, o: Share) -> Share {
        Share {
            running: self.running + o.running,
            healthy: self.healthy + o.healthy,
            ready: self.ready + o.ready,
            failed: self.failed + o.failed,
        }
    }

    pub(super) fn sub(self, o: Share) -> Share {
        Share {
            running: self.running - o.running,
            healthy: self.healthy - o.healthy,
            ready: self.ready - o.ready,
            failed: self.failed - o.failed,
        }
    }
}

impl Slot {
    /// Keep a health report of the current incarnation heard while it is still booting.
    /// True when it was kept (the caller applies it once the start is heard of).
    pub(super) fn keep_early_health(&mut self, generation: u64, healthy: bool) -> bool {
        let early = self.generation == generation && self.state == SlotState::Booting;
        if early {
            self.early_health = Some((generation, healthy));
        }
        early
    }

    /// The health report kept for `generation`, once: a report of an earlier incarnation
    /// is dropped.
    pub(super) fn take_early_health(&mut self, generation: u64) -> Option<bool> {
        self.early_health
            .take()
            .filter(|(g, _)| *g == generation)
            .map(|(_, healthy)| healthy)
    }

    /// This replica's share of the counts.
    pub(super) fn share(&self, is_job: bool) -> Share {
        match self.state {
            SlotState::Running => Share {
                running: 1,
                healthy: u32::from(self.healthy),
                // A job is ready (for stability and for `healthy` dependants) only once
                // it has completed: a migration must finish before its dependants start.
                ready: u32::from(self.ready && !is_job),
                failed: 0,
            },
            SlotState::Unhealthy => Share {
                running: 1,
                ..Share::default()
            },
            SlotState::Completed if is_job => Share {
                ready: 1,
                ..Share::default()
            },
            SlotState::Failed => Share {
                failed: 1,
                ..Share::default()
            },
            _ => Share::default(),
        }
    }
}
