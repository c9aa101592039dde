//! What a failed init sequence leads to: `fail`, `restart` after a fixed delay, or
//! `backoff` with a growing delay, each with a bounded number of retries. Pure.

use std::time::Duration;

use herdsman_spec::InitFailurePolicy;

use crate::backoff::BackoffSchedule;

#[derive(Debug, Clone)]
pub(crate) struct InitRetry {
    policy: InitFailurePolicy,
    retries: u32,
    backoff: Option<BackoffSchedule>,
}

impl InitRetry {
    pub(crate) fn new(policy: InitFailurePolicy, seed: u64) -> InitRetry {
        let backoff = match policy {
            InitFailurePolicy::Backoff { backoff, .. } => Some(BackoffSchedule::new(backoff, seed)),
            _ => None,
        };
        InitRetry {
            policy,
            retries: 0,
            backoff,
        }
    }

    /// After a failed sequence: `Some(delay)` to run it again after `delay`, `None` to give
    /// up (the replica is `failed`).
    pub(crate) fn after_failure(&mut self) -> Option<Duration> {
        let (max, delay) = match self.policy {
            InitFailurePolicy::Fail => return None,
            InitFailurePolicy::Restart { max_retries, delay } => (max_retries, Some(delay)),
            InitFailurePolicy::Backoff { max_retries, .. } => (max_retries, None),
        };
        if self.retries >= max {
            return None;
        }
        self.retries += 1;
        match delay {
            Some(d) => Some(d),
            None => self.backoff.as_mut().map(BackoffSchedule::next_delay),
        }
    }

    /// The sequence succeeded: the next failure starts counting again.
    pub(crate) fn reset(&mut self) {
        self.retries = 0;
        if let Some(b) = self.backoff.as_mut() {
            b.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herdsman_spec::Backoff;

    #[test]
    fn each_init_failure_policy_bounds_its_retries() {
        let s = Duration::from_secs;
        let mut fail = InitRetry::new(InitFailurePolicy::Fail, 1);
        assert_eq!(fail.after_failure(), None);

        let mut restart = InitRetry::new(
            InitFailurePolicy::Restart {
                max_retries: 2,
                delay: s(3),
            },
            1,
        );
        let got: Vec<_> = (0..3).map(|_| restart.after_failure()).collect();
        assert_eq!(got, vec![Some(s(3)), Some(s(3)), None]);

        let mut backoff = InitRetry::new(
            InitFailurePolicy::Backoff {
                max_retries: 3,
                backoff: Backoff {
                    initial: s(1),
                    max: s(3),
                    multiplier: 2.0,
                    jitter: 0.0,
                },
            },
            1,
        );
        let got: Vec<_> = (0..4).map(|_| backoff.after_failure()).collect();
        assert_eq!(got, vec![Some(s(1)), Some(s(2)), Some(s(3)), None]);
        backoff.reset();
        assert_eq!(backoff.after_failure(), Some(s(1)));
    }
}
