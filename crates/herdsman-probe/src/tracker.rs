//! The health state machine of one replica: consecutive-result thresholds, a Docker-style
//! start period and first-check jitter. Pure: time is a parameter. It keeps no results:
//! whoever runs the checks keeps the history it shows (herdsman's probe keeps it on the
//! status board).

use std::time::Duration;

use herdsman_spec::Health;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::Outcome;

/// A replica's health as the tracker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Not yet `success_threshold` consecutive successes, and not yet `retries` counted
    /// failures: the initial state.
    Starting,
    /// `success_threshold` consecutive successes since the last time it was unhealthy.
    Healthy,
    /// `retries` consecutive counted failures.
    Unhealthy,
}

/// A change of [`HealthState`] worth telling the supervisor about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// Now healthy (from starting or unhealthy).
    BecameHealthy,
    /// Now unhealthy (from starting or healthy).
    BecameUnhealthy,
}

/// Consecutive-threshold health state machine.
///
/// - `retries` consecutive failures make a replica unhealthy, `success_threshold`
///   consecutive successes make it healthy; it starts [`HealthState::Starting`].
/// - Start period (Docker semantics): until the first success, failures within
///   `start_grace` of the container's start are not counted, and checks run every
///   `start_interval`. The first success, or the end of `start_grace`, ends it.
/// - `Unknown` results (the probe could not run) neither count nor break a streak.
///
/// Every method that depends on time takes `now` (and the container's `started_at`), so the
/// tracker never reads a clock.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    start_grace: Duration,
    start_interval: Duration,
    interval: Duration,
    retries: u32,
    success_threshold: u32,
    state: HealthState,
    successes: u32,
    failures: u32,
    seen_success: bool,
}

impl Default for HealthTracker {
    /// Docker's defaults: no start period, a check every 30 s, unhealthy after 3 failures,
    /// healthy after 1 success.
    fn default() -> HealthTracker {
        HealthTracker::with_params(
            Duration::ZERO,
            Duration::from_secs(5),
            Duration::from_secs(30),
            3,
            1,
        )
    }
}

impl HealthTracker {
    /// A tracker for `health`, in the `Starting` state.
    pub fn new(health: &Health) -> HealthTracker {
        HealthTracker::with_params(
            health.start_grace,
            health.start_interval,
            health.interval,
            health.retries,
            health.success_threshold,
        )
    }

    fn with_params(
        start_grace: Duration,
        start_interval: Duration,
        interval: Duration,
        retries: u32,
        success_threshold: u32,
    ) -> HealthTracker {
        HealthTracker {
            start_grace,
            start_interval,
            interval,
            // Validation guarantees >= 1; a zero would make the first result flip the state
            // before it was seen, so it is treated as 1.
            retries: retries.max(1),
            success_threshold: success_threshold.max(1),
            state: HealthState::Starting,
            successes: 0,
            failures: 0,
            seen_success: false,
        }
    }

    /// Take the outcome of one check that ended at `now`, for a container started at
    /// `started_at`. Returns the transition it caused, if any.
    pub fn record(
        &mut self,
        outcome: &Outcome,
        now: Instant,
        started_at: Instant,
    ) -> Option<Transition> {
        let in_start_period = self.in_start_period(now, started_at);
        match outcome {
            Outcome::Success => {
                self.seen_success = true;
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                (self.successes >= self.success_threshold && self.state != HealthState::Healthy)
                    .then(|| {
                        self.state = HealthState::Healthy;
                        Transition::BecameHealthy
                    })
            }
            Outcome::Failure(_) => {
                self.successes = 0;
                if in_start_period {
                    None
                } else {
                    self.failures = self.failures.saturating_add(1);
                    (self.failures >= self.retries && self.state != HealthState::Unhealthy).then(
                        || {
                            self.state = HealthState::Unhealthy;
                            Transition::BecameUnhealthy
                        },
                    )
                }
            }
            Outcome::Unknown(_) => None,
        }
    }

    /// True while failures are not counted: no success yet and `start_grace` not over.
    pub fn in_start_period(&self, now: Instant, started_at: Instant) -> bool {
        !self.seen_success && now.saturating_duration_since(started_at) < self.start_grace
    }

    /// The delay before the next check: `start_interval` during the start period,
    /// `interval` after it.
    pub fn next_interval(&self, now: Instant, started_at: Instant) -> Duration {
        if self.in_start_period(now, started_at) {
            self.start_interval
        } else {
            self.interval
        }
    }

    /// The delay before the first check: `unit` (a uniform random fraction in [0, 1), from
    /// the caller's RNG) times the interval in force at start, so a fleet started together
    /// does not probe in lockstep. Values outside [0, 1) are clamped.
    pub fn first_delay(&self, unit: f64) -> Duration {
        let base = if self.start_grace > Duration::ZERO {
            self.start_interval
        } else {
            self.interval
        };
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        // `mul_f64` of a fraction <= 1 of a valid duration cannot overflow; stay below the
        // interval itself so the first check never lands after the second would.
        base.mul_f64(unit)
            .min(base.saturating_sub(Duration::from_nanos(1)))
    }

    /// The current state.
    pub fn health(&self) -> HealthState {
        self.state
    }

    /// True when healthy.
    pub fn is_healthy(&self) -> bool {
        self.state == HealthState::Healthy
    }

    /// Consecutive counted failures so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Consecutive successes so far.
    pub fn consecutive_successes(&self) -> u32 {
        self.successes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herdsman_spec::{Check, OnUnhealthy, Template};
    use tokio::time::sleep;

    fn health(start_grace: u64, retries: u32, success_threshold: u32) -> Health {
        Health {
            start_grace: Duration::from_secs(start_grace),
            start_interval: Duration::from_secs(1),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            retries,
            success_threshold,
            on_unhealthy: OnUnhealthy::Isolate,
            check: Check::Tcp {
                host: None,
                port: Template::literal("80"),
            },
        }
    }

    fn ok() -> Outcome {
        Outcome::Success
    }

    fn bad() -> Outcome {
        Outcome::Failure("refused".into())
    }

    fn unknown() -> Outcome {
        Outcome::Unknown("cannot spawn".into())
    }

    /// Feed `results` one per `next_interval`, from `started_at`, returning the transitions.
    async fn drive(
        t: &mut HealthTracker,
        started_at: Instant,
        results: Vec<Outcome>,
    ) -> Vec<Option<Transition>> {
        let mut out = Vec::new();
        for r in results {
            sleep(t.next_interval(Instant::now(), started_at)).await;
            out.push(t.record(&r, Instant::now(), started_at));
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn thresholds_count_consecutive_results_only() {
        use Transition::*;
        let start = Instant::now();
        let mut t = HealthTracker::new(&health(0, 3, 2));
        assert_eq!(t.health(), HealthState::Starting);
        let got = drive(
            &mut t,
            start,
            vec![
                ok(),
                bad(),
                ok(),
                ok(),
                bad(),
                bad(),
                ok(),
                bad(),
                bad(),
                bad(),
                bad(),
            ],
        )
        .await;
        assert_eq!(
            got,
            vec![
                None,
                None,
                None,
                Some(BecameHealthy),
                None,
                None,
                None,
                None,
                None,
                Some(BecameUnhealthy),
                None
            ]
        );
        assert_eq!(t.health(), HealthState::Unhealthy);
        assert_eq!(t.consecutive_failures(), 4);
        let got = drive(&mut t, start, vec![ok(), ok(), ok()]).await;
        assert_eq!(got, vec![None, Some(BecameHealthy), None]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_failing_from_the_start_turns_unhealthy_without_being_healthy() {
        let start = Instant::now();
        let mut t = HealthTracker::new(&health(0, 2, 1));
        let got = drive(&mut t, start, vec![bad(), bad()]).await;
        assert_eq!(got, vec![None, Some(Transition::BecameUnhealthy)]);
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_results_neither_count_nor_break_a_streak() {
        let start = Instant::now();
        let mut t = HealthTracker::new(&health(0, 2, 2));
        let got = drive(&mut t, start, vec![bad(), unknown(), unknown(), bad()]).await;
        assert_eq!(
            got,
            vec![None, None, None, Some(Transition::BecameUnhealthy)]
        );
        let got = drive(&mut t, start, vec![ok(), unknown(), ok()]).await;
        assert_eq!(got, vec![None, None, Some(Transition::BecameHealthy)]);
    }

    #[tokio::test(start_paused = true)]
    async fn start_period_ignores_failures_and_probes_faster_until_grace_ends() {
        let start = Instant::now();
        // 5 s grace, 1 s start interval, 10 s interval, unhealthy after 2.
        let mut t = HealthTracker::new(&health(5, 2, 1));
        assert_eq!(t.next_interval(start, start), Duration::from_secs(1));
        // Checks at 1, 2, 3, 4 s fail uncounted; the one at 5 s is past the grace.
        let got = drive(&mut t, start, vec![bad(), bad(), bad(), bad()]).await;
        assert_eq!(got, vec![None; 4]);
        assert_eq!(t.consecutive_failures(), 0);
        assert_eq!(t.health(), HealthState::Starting);
        let got = drive(&mut t, start, vec![bad()]).await;
        assert_eq!(got, vec![None]);
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
        assert_eq!(t.consecutive_failures(), 1);
        // Out of the start period: the normal interval.
        assert_eq!(
            t.next_interval(Instant::now(), start),
            Duration::from_secs(10)
        );
        let got = drive(&mut t, start, vec![bad()]).await;
        assert_eq!(got, vec![Some(Transition::BecameUnhealthy)]);
        assert_eq!(Instant::now() - start, Duration::from_secs(15));
    }

    #[tokio::test(start_paused = true)]
    async fn first_success_ends_the_start_period_and_failures_count_from_then() {
        let start = Instant::now();
        let mut t = HealthTracker::new(&health(60, 2, 1));
        let got = drive(&mut t, start, vec![bad(), ok()]).await;
        assert_eq!(got, vec![None, Some(Transition::BecameHealthy)]);
        assert!(!t.in_start_period(Instant::now(), start));
        assert_eq!(
            t.next_interval(Instant::now(), start),
            Duration::from_secs(10)
        );
        let got = drive(&mut t, start, vec![bad(), bad()]).await;
        assert_eq!(got, vec![None, Some(Transition::BecameUnhealthy)]);
        // 2 s of start interval, then two 10 s intervals, well inside the 60 s grace.
        assert_eq!(Instant::now() - start, Duration::from_secs(22));
    }

    #[tokio::test(start_paused = true)]
    async fn first_check_is_jittered_within_the_interval_in_force() {
        let with_grace = HealthTracker::new(&health(5, 3, 1));
        let without = HealthTracker::new(&health(0, 3, 1));
        let cases = [(0.0, 0), (0.5, 500), (0.25, 250), (-1.0, 0), (f64::NAN, 0)];
        for (unit, ms) in cases {
            assert_eq!(
                with_grace.first_delay(unit),
                Duration::from_millis(ms),
                "{unit}"
            );
            assert_eq!(
                without.first_delay(unit),
                Duration::from_millis(ms * 10),
                "{unit}"
            );
        }
        // Never a full interval, even for a fraction of 1 or more.
        assert!(with_grace.first_delay(1.0) < Duration::from_secs(1));
        assert!(with_grace.first_delay(7.0) < Duration::from_secs(1));
        // Drive it: the first check lands at the jittered delay.
        let start = Instant::now();
        sleep(without.first_delay(0.25)).await;
        assert_eq!(Instant::now() - start, Duration::from_millis(2500));
    }

    #[test]
    fn zero_thresholds_behave_as_one() {
        let start = Instant::now();
        let mut t = HealthTracker::new(&health(0, 0, 0));
        assert_eq!(
            t.record(&bad(), start, start),
            Some(Transition::BecameUnhealthy)
        );
        assert_eq!(
            t.record(&ok(), start, start),
            Some(Transition::BecameHealthy)
        );
    }
}
