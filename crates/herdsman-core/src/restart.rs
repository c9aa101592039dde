//! The restart decision for one replica: restart policy, panic action, restart window,
//! crash-loop backoff and give-up. Pure: no clock reads, no I/O.

use std::collections::VecDeque;
use std::time::Duration;

use herdsman_runtime::Exit;
use herdsman_spec::{PanicAction, RestartPolicy, RestartSpec, ServiceKind};
use tokio::time::Instant;

use crate::backoff::BackoffSchedule;

/// Why a replica stopped being useful.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cause {
    /// The container exited by itself.
    Exit(Exit),
    /// It could not be created or started.
    StartFailed,
    /// Its health check turned unhealthy and `on_unhealthy` is `restart`, after its
    /// container had run this long.
    Unhealthy { ran_for: Duration },
}

/// What the supervisor does about it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// Restart at once.
    RestartNow,
    /// Crash loop: restart after this delay (`backoff` state).
    RestartAfter(Duration),
    /// Ran to completion: `completed`, not restarted.
    Complete,
    /// Not restarted because of the restart policy: `failed`.
    Fail(String),
    /// Too many restarts: `failed`, and the service is reported failed.
    GiveUp(String),
    /// Panic action `shutdown`: stop the whole service.
    ShutdownService,
    /// Panic action `isolate`: keep the container, mark it not ready.
    Isolate,
}

/// Restart bookkeeping of one replica slot.
#[derive(Debug, Clone)]
pub(crate) struct RestartTracker {
    kind: ServiceKind,
    spec: RestartSpec,
    on_panic: PanicAction,
    recent: VecDeque<Instant>,
    backoff: BackoffSchedule,
    /// Restarts since the last clean run of `reset_after`; compared with `give_up_after`.
    consecutive: u32,
    /// Restarts over the replica's life.
    total: u32,
}

impl RestartTracker {
    pub(crate) fn new(
        kind: ServiceKind,
        spec: RestartSpec,
        on_panic: PanicAction,
        seed: u64,
    ) -> RestartTracker {
        RestartTracker {
            kind,
            spec,
            on_panic,
            recent: VecDeque::new(),
            backoff: BackoffSchedule::new(spec.backoff, seed),
            consecutive: 0,
            total: 0,
        }
    }

    /// Restarts over the replica's life.
    pub(crate) fn total(&self) -> u32 {
        self.total
    }

    /// Decide what to do about `cause` at `now`.
    pub(crate) fn decide(&mut self, cause: Cause, now: Instant) -> Decision {
        match cause {
            Cause::Exit(exit) => {
                if exit.ran_for >= self.spec.reset_after {
                    self.reset();
                }
                if exit.is_success() {
                    return match (self.kind, self.spec.policy) {
                        (_, RestartPolicy::Always) => self.admit(now),
                        _ => Decision::Complete,
                    };
                }
                if self.spec.policy == RestartPolicy::Never {
                    return Decision::Fail(format!("{exit}; restart policy is never"));
                }
                match self.on_panic {
                    PanicAction::Restart => self.admit(now),
                    PanicAction::Shutdown => Decision::ShutdownService,
                    PanicAction::Isolate => Decision::Isolate,
                }
            }
            Cause::Unhealthy { ran_for } => {
                // A replica that ran cleanly for `reset_after` before turning unhealthy
                // starts a fresh window, exactly as one that exited after that long.
                if ran_for >= self.spec.reset_after {
                    self.reset();
                }
                if self.spec.policy == RestartPolicy::Never {
                    return Decision::Fail("unhealthy; restart policy is never".into());
                }
                self.admit(now)
            }
            Cause::StartFailed => {
                if self.spec.policy == RestartPolicy::Never {
                    return Decision::Fail("restart policy is never".into());
                }
                self.admit(now)
            }
        }
    }

    /// Count one restart against the window and pick now, later or never.
    fn admit(&mut self, now: Instant) -> Decision {
        if let Some(limit) = self.spec.give_up_after {
            if self.consecutive >= limit {
                return Decision::GiveUp(format!(
                    "gave up after {limit} restarts without a clean run of {}",
                    herdsman_probe::humanize(self.spec.reset_after)
                ));
            }
        }
        while let Some(&t) = self.recent.front() {
            if now.saturating_duration_since(t) >= self.spec.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        let crash_looping = self.recent.len() as u32 >= self.spec.max_restarts;
        self.recent.push_back(now);
        // The window never needs more than max_restarts entries to answer.
        while self.recent.len() as u32 > self.spec.max_restarts.max(1) {
            self.recent.pop_front();
        }
        self.consecutive = self.consecutive.saturating_add(1);
        self.total = self.total.saturating_add(1);
        if crash_looping {
            Decision::RestartAfter(self.backoff.next_delay())
        } else {
            Decision::RestartNow
        }
    }

    /// A clean run of `reset_after`: forget the window, the backoff and the give-up count.
    fn reset(&mut self) {
        self.recent.clear();
        self.backoff.reset();
        self.consecutive = 0;
    }

    /// Delays handed out since the last reset (0 when not crash looping).
    #[cfg(test)]
    pub(crate) fn backoff_attempts(&self) -> u32 {
        self.backoff.attempts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herdsman_runtime::ExitReason;
    use herdsman_spec::Backoff;

    fn spec(policy: RestartPolicy, give_up: Option<u32>) -> RestartSpec {
        RestartSpec {
            policy,
            max_restarts: 3,
            window: Duration::from_secs(60),
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(8),
                multiplier: 2.0,
                jitter: 0.0,
            },
            reset_after: Duration::from_secs(600),
            give_up_after: give_up,
        }
    }

    fn crash(code: i32, ran: u64) -> Cause {
        Cause::Exit(Exit {
            reason: ExitReason::Code(code),
            ran_for: Duration::from_secs(ran),
        })
    }

    fn tracker(policy: RestartPolicy, panic: PanicAction) -> RestartTracker {
        RestartTracker::new(ServiceKind::Service, spec(policy, None), panic, 1)
    }

    #[test]
    fn crashes_inside_the_window_restart_at_once_then_back_off_growing_to_the_cap() {
        let mut t = tracker(RestartPolicy::Always, PanicAction::Restart);
        let now = Instant::now();
        let got: Vec<Decision> = (0..8).map(|_| t.decide(crash(1, 0), now)).collect();
        let s = Duration::from_secs;
        assert_eq!(
            got,
            vec![
                Decision::RestartNow,
                Decision::RestartNow,
                Decision::RestartNow,
                Decision::RestartAfter(s(1)),
                Decision::RestartAfter(s(2)),
                Decision::RestartAfter(s(4)),
                Decision::RestartAfter(s(8)),
                Decision::RestartAfter(s(8)),
            ]
        );
        assert_eq!(t.total(), 8);
    }

    #[test]
    fn restarts_spread_wider_than_the_window_never_back_off() {
        let mut t = tracker(RestartPolicy::Always, PanicAction::Restart);
        let start = Instant::now();
        for i in 0..10 {
            let now = start + Duration::from_secs(30 * i);
            assert_eq!(
                t.decide(crash(1, 0), now),
                Decision::RestartNow,
                "crash {i}"
            );
        }
    }

    #[test]
    fn a_clean_run_of_reset_after_resets_the_backoff() {
        let mut t = tracker(RestartPolicy::Always, PanicAction::Restart);
        let now = Instant::now();
        for _ in 0..5 {
            t.decide(crash(1, 0), now);
        }
        assert_eq!(t.backoff_attempts(), 2);
        assert_eq!(t.decide(crash(1, 600), now), Decision::RestartNow);
        assert_eq!(t.backoff_attempts(), 0);
    }

    #[test]
    fn restart_policy_and_exit_code_decide_completion() {
        let now = Instant::now();
        let cases = [
            (
                ServiceKind::Job,
                RestartPolicy::OnFailure,
                0,
                Decision::Complete,
            ),
            (
                ServiceKind::Job,
                RestartPolicy::OnFailure,
                3,
                Decision::RestartNow,
            ),
            (
                ServiceKind::Service,
                RestartPolicy::Always,
                0,
                Decision::RestartNow,
            ),
            (
                ServiceKind::Job,
                RestartPolicy::Never,
                0,
                Decision::Complete,
            ),
        ];
        for (kind, policy, code, want) in cases {
            let mut t = RestartTracker::new(kind, spec(policy, None), PanicAction::Restart, 1);
            assert_eq!(
                t.decide(crash(code, 0), now),
                want,
                "{kind:?} {policy:?} {code}"
            );
        }
        let mut never = tracker(RestartPolicy::Never, PanicAction::Restart);
        assert!(matches!(never.decide(crash(2, 0), now), Decision::Fail(_)));
    }

    #[test]
    fn panic_action_applies_to_failures_only() {
        let now = Instant::now();
        let mut shut = tracker(RestartPolicy::Always, PanicAction::Shutdown);
        assert_eq!(shut.decide(crash(1, 0), now), Decision::ShutdownService);
        assert_eq!(shut.decide(crash(0, 0), now), Decision::RestartNow);
        let mut iso = tracker(RestartPolicy::Always, PanicAction::Isolate);
        assert_eq!(iso.decide(crash(139, 0), now), Decision::Isolate);
    }

    #[test]
    fn give_up_after_n_restarts_fails_the_replica() {
        let mut t = RestartTracker::new(
            ServiceKind::Service,
            spec(RestartPolicy::Always, Some(2)),
            PanicAction::Restart,
            1,
        );
        let now = Instant::now();
        assert_eq!(t.decide(crash(1, 0), now), Decision::RestartNow);
        assert_eq!(t.decide(Cause::StartFailed, now), Decision::RestartNow);
        assert!(matches!(
            t.decide(
                Cause::Unhealthy {
                    ran_for: Duration::ZERO
                },
                now
            ),
            Decision::GiveUp(_)
        ));
    }

    #[test]
    fn an_unhealthy_restart_after_a_clean_run_of_reset_after_starts_a_fresh_count() {
        let mut t = RestartTracker::new(
            ServiceKind::Service,
            spec(RestartPolicy::Always, Some(2)),
            PanicAction::Restart,
            1,
        );
        let mut now = Instant::now();
        let hour = Duration::from_secs(3600);
        // Unhealthy once an hour, each time after a clean run longer than reset_after
        // (10 minutes): never a crash loop, never given up.
        for _ in 0..10 {
            now += hour;
            assert_eq!(
                t.decide(Cause::Unhealthy { ran_for: hour }, now),
                Decision::RestartNow
            );
        }
        // Unhealthy again and again within seconds of starting: counted, and given up.
        assert_eq!(
            t.decide(
                Cause::Unhealthy {
                    ran_for: Duration::ZERO
                },
                now
            ),
            Decision::RestartNow
        );
        assert!(matches!(
            t.decide(
                Cause::Unhealthy {
                    ran_for: Duration::ZERO
                },
                now
            ),
            Decision::GiveUp(_)
        ));
    }
}
