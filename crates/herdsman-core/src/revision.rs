//! Spec revisions and the rollout in progress, as the deployment actor tracks them: which
//! specs ran before (for `undo` and automatic reverts), and how far each changed service
//! is. Pure bookkeeping; the actor carries out what it says.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use herdsman_spec::Deployment;

use crate::board::{RolloutPhase, RolloutStatus, ServiceRollout};

/// How many earlier specs are kept for `undo`.
const HISTORY: usize = 10;

/// The current spec's revision and the ones before it.
pub(crate) struct Revisions {
    current: u64,
    history: VecDeque<(u64, Arc<Deployment>)>,
}

impl Revisions {
    /// Revision 1 is the spec the deployment started with.
    pub(crate) fn new() -> Revisions {
        Revisions {
            current: 1,
            history: VecDeque::new(),
        }
    }

    pub(crate) fn current(&self) -> u64 {
        self.current
    }

    /// `replaced` (at the current revision) gives way to revision `next`.
    pub(crate) fn advance(&mut self, replaced: Arc<Deployment>, next: u64) {
        self.history.push_back((self.current, replaced));
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
        self.current = next;
    }

    /// A failed rollout was rolled back to the spec before it, which runs again as
    /// revision `next`: that spec is current again rather than history, and the failed
    /// one is not kept, so `undo` goes to the spec before both.
    pub(crate) fn rolled_back(&mut self, next: u64) {
        self.history.pop_back();
        self.current = next;
    }

    /// The spec before the current one.
    pub(crate) fn previous(&self) -> Option<Arc<Deployment>> {
        self.history.back().map(|(_, d)| d.clone())
    }
}

/// What became of a service's part in a rollout.
pub(crate) enum ServiceOutcome {
    /// Still going, or done while others go on.
    Pending,
    /// Every service is done.
    Complete,
    /// It failed: roll back to `previous` (if set) or pause.
    Failed {
        reason: String,
        revert_to: Option<Arc<Deployment>>,
    },
}

/// The rollout in progress (or the last one), for status and events.
pub(crate) struct RolloutTrack {
    pub(crate) revision: u64,
    pub(crate) phase: RolloutPhase,
    pub(crate) services: BTreeMap<Arc<str>, ServiceRollout>,
    pub(crate) reason: Option<String>,
    /// This rollout rolls back a failed one (and is not itself reverted).
    pub(crate) revert: bool,
    /// The spec it replaced, rolled back to if it fails and `auto_revert` says so.
    pub(crate) previous: Arc<Deployment>,
    /// Whether its services want automatic reverts (the first changed service decides;
    /// they share one deployment revision).
    pub(crate) auto_revert: bool,
}

impl RolloutTrack {
    pub(crate) fn status(&self) -> RolloutStatus {
        RolloutStatus {
            revision: self.revision,
            phase: self.phase,
            services: self.services.values().cloned().collect(),
            reason: self.reason.clone(),
        }
    }

    /// Whether it still changes anything.
    pub(crate) fn in_progress(&self) -> bool {
        matches!(
            self.phase,
            RolloutPhase::Progressing | RolloutPhase::Reverting
        )
    }

    pub(crate) fn progress(&mut self, service: &Arc<str>, updated: u32, desired: u32) {
        if let Some(s) = self.services.get_mut(service) {
            s.updated = updated;
            s.desired = desired;
        }
    }

    /// A service finished its part.
    pub(crate) fn done(&mut self, service: &Arc<str>) -> ServiceOutcome {
        if let Some(s) = self.services.get_mut(service) {
            s.done = true;
            s.updated = s.desired;
        }
        if self.services.values().all(|s| s.done) {
            self.phase = if self.revert {
                RolloutPhase::Reverted
            } else {
                RolloutPhase::Complete
            };
            return ServiceOutcome::Complete;
        }
        ServiceOutcome::Pending
    }

    /// A service's part failed: the whole rollout does.
    pub(crate) fn failed(&mut self, service: &Arc<str>, reason: String) -> ServiceOutcome {
        let reason = format!("{service}: {reason}");
        self.reason = Some(reason.clone());
        let revert_to = (self.auto_revert && !self.revert).then(|| self.previous.clone());
        self.phase = if revert_to.is_some() {
            RolloutPhase::Reverting
        } else {
            RolloutPhase::Paused
        };
        ServiceOutcome::Failed { reason, revert_to }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> Arc<Deployment> {
        Arc::new(Deployment {
            name: name.into(),
            services: Vec::new(),
        })
    }

    #[test]
    fn a_rollback_leaves_neither_the_failed_spec_nor_its_target_to_undo_to() {
        let mut r = Revisions::new();
        r.advance(spec("v1"), 2);
        r.advance(spec("v2"), 3);
        assert_eq!(r.previous().map(|d| d.name.clone()), Some("v2".into()));
        // Revision 3 failed; v2 runs again as revision 4.
        r.rolled_back(4);
        assert_eq!(r.current(), 4);
        assert_eq!(r.previous().map(|d| d.name.clone()), Some("v1".into()));
    }
}
