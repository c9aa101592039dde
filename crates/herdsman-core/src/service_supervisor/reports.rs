//! A service's counts: each replica's share, the running tally, and the report to the
//! deployment actor (after a crash's restarts, held back and counted until it is out;
//! with the events told before it, left for the deployment actor to send).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use herdsman_spec::ServiceKind;
use ractor::ActorRef;

use super::slot::Share;
use super::{SupervisorMsg, SupervisorState};
use crate::board::ServicePhase;
use crate::deployment_actor::DeploymentMsg;
use crate::stabilization::ServiceCounts;

/// The reports a supervisor has held back past the handling that made them, counted (see
/// [`SupervisorState::restart_then_report`]). The deployment actor counts a service as
/// settled only once a report covering every held one has arrived: a deployment is never
/// announced stable on counts its supervisor already knows are stale.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeldReports(Arc<AtomicU64>);

impl HeldReports {
    fn hold(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    /// How many reports have been held back so far.
    pub(crate) fn count(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl SupervisorState {
    /// Send the restarts this message decided.
    pub(super) fn send_restarts(&mut self) {
        for (actor, command) in self.restarts.drain(..) {
            let _ = actor.cast(command);
        }
    }

    /// A crash decided a restart, and no `Report` is queued to coalesce with: send the
    /// restarts, let the container actors have this worker, then report.
    ///
    /// Each message wakes a task. The first task one handling wakes takes tokio's LIFO
    /// slot, the worker's next turn; a second one pushes it to the run queue and wakes the
    /// idle worker thread to take it, and on the bench host (a VM) that wake-up cost the
    /// sender 25–29 µs at the median, ahead of the container actor's restart. Reporting
    /// first made the restart wait for it; reporting after it, in the same handling, made
    /// the report pay it. Yielding in between defers this actor until the worker has run
    /// out of work (the restart done, the replacement spawned): every handling on the path
    /// wakes one task. Meanwhile the held report counts against the deployment's
    /// stability. Only the first crash of a burst yields: the next ones find this report's
    /// `Report` queued and coalesce with it.
    pub(super) async fn restart_then_report(&mut self) {
        self.held.hold();
        self.send_restarts();
        tokio::task::yield_now().await;
        self.report();
    }

    /// Have the counts reported once the messages queued now are handled.
    pub(super) fn request_report(&mut self, myself: &ActorRef<SupervisorMsg>) {
        if !self.report_queued {
            self.report_queued = true;
            let _ = myself.cast(SupervisorMsg::Report);
        }
    }

    /// One replica's share of the counts (none for a slot that does not exist).
    pub(super) fn share_of(&self, replica: u32) -> Share {
        let is_job = self.target.kind == ServiceKind::Job;
        self.slots
            .get(&replica)
            .map_or(Share::default(), |s| s.share(is_job))
    }

    /// Every slot's share, counted.
    fn counted(&self) -> Share {
        let is_job = self.target.kind == ServiceKind::Job;
        self.slots
            .values()
            .fold(Share::default(), |t, s| t.add(s.share(is_job)))
    }

    pub(super) fn recount(&mut self) {
        self.tally = self.counted();
    }

    /// Tell the deployment actor when this service's counts change.
    pub(super) fn report(&mut self) {
        debug_assert_eq!(self.tally, self.counted(), "the running tally drifted");
        let c = ServiceCounts {
            desired: self.desired,
            viable: matches!(self.phase, ServicePhase::Running) && self.tally.failed == 0,
            running: self.tally.running,
            healthy: self.tally.healthy,
            ready: self.tally.ready,
        };
        let held = self.held.count();
        if self.reported != Some((c, self.acked, held)) {
            self.reported = Some((c, self.acked, held));
            let sent = self.parent.cast(DeploymentMsg::ServiceHealth {
                service: self.ctx.service_name.clone(),
                from: self.ctx.supervisor.get_id(),
                counts: c,
                acked: self.acked,
                held,
            });
            // The deployment actor sends what was told before this report when it
            // handles it: this handling then wakes one task, not two.
            if sent.is_ok() && self.ctx.events.relay_open() {
                self.covered = self.ctx.told();
            }
        }
    }

    /// At the end of every handling: send the events told since the last report that
    /// covers them, unless a queued `Report` is still to decide.
    pub(super) fn settle_events(&mut self) {
        if !self.report_queued {
            self.flush_uncovered();
        }
    }

    /// Send the events told since the last report that covers them. At the start of
    /// every handling but a `Report`'s: events wait for the queued `Report` only behind
    /// messages whose handling never waits, never behind a long one (a shutdown's grace
    /// periods). A replica's start or exit with a `Report` queued is such a message and
    /// sends nothing: in a burst of crashes the events go in a few batches, one per
    /// report. One batch per message (an allocation each, most freed by another thread)
    /// made 10k crashes at once ~10% slower with a subscriber.
    pub(super) fn flush_uncovered(&mut self) {
        let told = self.ctx.told();
        if told != self.covered {
            self.ctx.events.flush();
            self.covered = told;
        }
    }
}
