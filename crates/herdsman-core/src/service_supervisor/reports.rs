//! A service's counts: each replica's share, the running tally, and the report to the
//! deployment actor (with the restarts a message decided held back until it is out, and
//! the events told before it left for the deployment actor to send).

use herdsman_spec::ServiceKind;
use ractor::ActorRef;

use super::slot::Share;
use super::{SupervisorMsg, SupervisorState};
use crate::board::ServicePhase;
use crate::deployment_actor::DeploymentMsg;
use crate::stabilization::ServiceCounts;

impl SupervisorState {
    /// Send the restarts this message decided. Last, after the report: tokio runs the task
    /// woken last first on this worker, and a report sent after a restart would wake the
    /// deployment actor ahead of the container actor replacing a crashed replica, which
    /// then waits for the deployment's handler or for the other worker to wake and take
    /// it (restart sent → container actor running: 60 µs that way, 17 µs this way, on
    /// the bench host).
    pub(super) fn send_restarts(&mut self) {
        for (actor, command) in self.restarts.drain(..) {
            let _ = actor.cast(command);
        }
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
        if self.reported != Some((c, self.acked)) {
            self.reported = Some((c, self.acked));
            let sent = self.parent.cast(DeploymentMsg::ServiceHealth {
                service: self.ctx.service_name.clone(),
                from: self.ctx.supervisor.get_id(),
                counts: c,
                acked: self.acked,
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
    /// every handling but a `Report`'s: events wait for the queued `Report` only if it is
    /// the next message, never behind a long one (a shutdown's grace periods).
    pub(super) fn flush_uncovered(&mut self) {
        let told = self.ctx.told();
        if told != self.covered {
            self.ctx.events.flush();
            self.covered = told;
        }
    }
}
