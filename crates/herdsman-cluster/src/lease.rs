//! Node liveness as a lease: a node is live while it was heard from within the lease,
//! lost once it was not. Pure: the caller passes `now`; TCP state plays no part (a frozen
//! peer's kernel keeps the connection up).

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// A node's liveness, as the coordinator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Heard from within the lease.
    Live,
    /// Silent past the lease: its replicas count as not ready and are placed elsewhere.
    Lost,
}

/// What changed when the lease was checked or renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing.
    None,
    /// It just became lost.
    Lost,
    /// A lost node was heard from again.
    Returned,
}

/// One node's lease.
#[derive(Debug, Clone)]
pub struct Lease {
    last_heard: Instant,
    state: NodeState,
    lost_after: Duration,
}

impl Lease {
    /// A lease for a node heard from at `now`, lost after `lost_after` of silence.
    pub fn new(now: Instant, lost_after: Duration) -> Lease {
        Lease {
            last_heard: now,
            state: NodeState::Live,
            lost_after,
        }
    }

    /// The node was heard from at `now`.
    pub fn heard(&mut self, now: Instant) -> Transition {
        self.last_heard = self.last_heard.max(now);
        match self.state {
            NodeState::Live => Transition::None,
            NodeState::Lost => {
                self.state = NodeState::Live;
                Transition::Returned
            }
        }
    }

    /// Check the lease at `now`.
    pub fn check(&mut self, now: Instant) -> Transition {
        if self.state == NodeState::Live && self.silent_for(now) >= self.lost_after {
            self.state = NodeState::Lost;
            return Transition::Lost;
        }
        Transition::None
    }

    /// Live or lost (as of the last check).
    pub fn state(&self) -> NodeState {
        self.state
    }

    /// How long the node has been silent at `now`.
    pub fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_heard)
    }

    /// When the lease runs out if nothing is heard.
    pub fn expires_at(&self) -> Instant {
        self.last_heard + self.lost_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(5);

    #[tokio::test(start_paused = true)]
    async fn a_node_heard_within_the_lease_stays_live() {
        let mut lease = Lease::new(Instant::now(), LEASE);
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(1)).await;
            assert_eq!(lease.heard(Instant::now()), Transition::None);
            assert_eq!(lease.check(Instant::now()), Transition::None);
        }
        assert_eq!(lease.state(), NodeState::Live);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_node_is_lost_exactly_when_the_lease_runs_out_and_only_once() {
        let mut lease = Lease::new(Instant::now(), LEASE);
        tokio::time::advance(LEASE - Duration::from_millis(1)).await;
        assert_eq!(lease.check(Instant::now()), Transition::None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(lease.check(Instant::now()), Transition::Lost);
        assert_eq!(lease.state(), NodeState::Lost);
        tokio::time::advance(LEASE).await;
        assert_eq!(lease.check(Instant::now()), Transition::None);
        assert_eq!(lease.silent_for(Instant::now()), LEASE * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_node_heard_again_returns() {
        let mut lease = Lease::new(Instant::now(), LEASE);
        tokio::time::advance(LEASE).await;
        assert_eq!(lease.check(Instant::now()), Transition::Lost);
        assert_eq!(lease.heard(Instant::now()), Transition::Returned);
        assert_eq!(lease.state(), NodeState::Live);
        assert_eq!(lease.expires_at(), Instant::now() + LEASE);
    }
}
