//! Whether the deployment is stable: answering stabilization waits the moment it is,
//! and what is failing when it is not.

use super::DeploymentState;
use crate::event::EventKind;
use crate::stabilization::{
    is_stable, replica_reason, service_reason, FailingReplica, FailingService, Stabilization,
};

impl DeploymentState {
    fn is_stable(&self) -> bool {
        self.services
            .values()
            .all(|e| e.acked >= e.asked && e.held.count() <= e.covered_held)
            && is_stable(self.services.values().map(|e| &e.counts))
    }

    /// Recompute stability; the moment it becomes true, answer every waiter. A deployment
    /// in the middle of a rollout (or of its rollback) has not converged on the spec in
    /// force, whatever its counts say: the counts of a service the rollout is about to
    /// replace may still be its old replicas'.
    pub(super) fn check_stable(&mut self) {
        let rolling = self.rollout.as_ref().is_some_and(|t| t.in_progress());
        let stable = !self.stopping && !rolling && self.is_stable();
        self.args.board.set_stable(stable);
        if stable && !self.was_stable {
            let after = self.args.events.since_epoch();
            self.stable_after = Some(after);
            self.args.events.emit(EventKind::DeploymentStable {
                after_ms: after.as_millis() as u64,
            });
        }
        if !stable && self.was_stable && !self.stopping {
            self.args.events.emit(EventKind::DeploymentUnstable);
        }
        self.was_stable = stable;
        if let Some(after) = self.stable_after.filter(|_| stable) {
            for (_, reply) in self.waiters.drain() {
                let _ = reply.send(Stabilization::Ready { after });
            }
        }
    }

    /// Each service that is not ready, with counts, reason and log tails.
    pub(super) fn failing_services(&self) -> Vec<FailingService> {
        let snapshot = self.args.board.snapshot();
        snapshot
            .services
            .iter()
            .filter(|s| {
                self.services
                    .get(s.name.as_str())
                    .is_some_and(|e| !e.counts.is_ready())
            })
            .map(|s| FailingService {
                service: s.name.clone(),
                desired: s.desired,
                running: s.running,
                healthy: s.healthy,
                reason: service_reason(s),
                replicas: s
                    .replicas
                    .iter()
                    .filter(|r| !r.is_ready())
                    .map(|r| FailingReplica {
                        replica: r.replica,
                        state: r.state,
                        reason: replica_reason(r),
                        log_tail: r
                            .container
                            .as_ref()
                            .map(|c| self.args.runtime.logs(c, self.args.log_tail_lines))
                            .unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect()
    }
}
