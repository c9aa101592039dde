//! The init sequence's policy: what a failed step does to the sequence (`on_failure`), and
//! whether a failed sequence is run again (`errors.on_init_failure`). Pure: no clock, no
//! I/O, jitter from the caller.

use std::future::Future;
use std::time::Duration;

use herdsman_spec::{Backoff, InitFailurePolicy, InitStep, StepFailure};
use serde::{Deserialize, Serialize};

use crate::StepReport;

/// What one step's report means for its sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepVerdict {
    /// The step succeeded; go on.
    Passed,
    /// It failed with `on_failure: warn`: tell the operator and go on.
    Warned,
    /// It failed with `on_failure: continue`: go on silently.
    Ignored,
    /// It failed with `on_failure: fail`: the sequence stops and has failed.
    Failed,
}

impl StepVerdict {
    /// True when the sequence goes on to the next step.
    pub fn goes_on(self) -> bool {
        self != StepVerdict::Failed
    }
}

impl StepReport {
    /// What this report means for the sequence, given its step's `on_failure`.
    pub fn verdict(&self, on_failure: StepFailure) -> StepVerdict {
        match (self.ok, on_failure) {
            (true, _) => StepVerdict::Passed,
            (false, StepFailure::Warn) => StepVerdict::Warned,
            (false, StepFailure::Continue) => StepVerdict::Ignored,
            (false, StepFailure::Fail) => StepVerdict::Failed,
        }
    }
}

/// How an init sequence ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum SequenceOutcome {
    /// Every step passed or had its failure tolerated; the container may start.
    Completed {
        /// Ids of the steps that failed with `on_failure: warn`, in order.
        warned: Vec<String>,
    },
    /// A step with `on_failure: fail` failed; later steps were not run.
    Failed {
        /// Id of the step that failed.
        step: String,
        /// Why its last try failed.
        error: String,
    },
}

impl SequenceOutcome {
    /// True for `Completed`.
    pub fn is_completed(&self) -> bool {
        matches!(self, SequenceOutcome::Completed { .. })
    }
}

/// Judge a sequence from the reports of the steps run so far: `reports[i]` is the report of
/// `steps[i]` (extra steps without a report are not judged). Failed at the first report
/// whose verdict is [`StepVerdict::Failed`], completed otherwise.
pub fn sequence_outcome(steps: &[InitStep], reports: &[StepReport]) -> SequenceOutcome {
    let mut warned = Vec::new();
    for (step, r) in steps.iter().zip(reports) {
        match r.verdict(step.on_failure) {
            StepVerdict::Passed | StepVerdict::Ignored => {}
            StepVerdict::Warned => warned.push(r.step.clone()),
            StepVerdict::Failed => {
                return SequenceOutcome::Failed {
                    step: r.step.clone(),
                    error: r.error.clone().unwrap_or_else(|| "failed".into()),
                }
            }
        }
    }
    SequenceOutcome::Completed { warned }
}

/// Run `steps` in order through `run` (e.g. [`run_step`](crate::run_step) or a runtime's
/// `init_step`), stopping after the first step whose failure fails the sequence. Returns
/// every report made, in order, and the sequence's outcome.
///
/// # Cancel safety
/// As cancel safe as `run`: dropping the future drops the step in progress.
pub async fn run_sequence<'s, F, Fut>(
    steps: &'s [InitStep],
    mut run: F,
) -> (Vec<StepReport>, SequenceOutcome)
where
    F: FnMut(&'s InitStep) -> Fut,
    Fut: Future<Output = StepReport>,
{
    let mut reports = Vec::with_capacity(steps.len());
    for step in steps {
        let report = run(step).await;
        let goes_on = report.verdict(step.on_failure).goes_on();
        reports.push(report);
        if !goes_on {
            break;
        }
    }
    let outcome = sequence_outcome(steps, &reports);
    (reports, outcome)
}

/// Whether, and when, a failed init sequence runs again (`errors.on_init_failure`).
///
/// `fail` never retries; `restart` retries after a fixed delay; `backoff` after
/// `initial * multiplier^n`, capped at `max`, then scaled by a jitter factor in
/// `[1 - jitter, 1 + jitter]` (the spec's definition, so a jittered delay may exceed `max`
/// by up to `jitter`). Both give up after `max_retries` retries.
#[derive(Debug, Clone, PartialEq)]
pub struct InitRetry {
    policy: InitFailurePolicy,
    retries: u32,
}

impl InitRetry {
    /// A policy with no retry used yet.
    pub fn new(policy: InitFailurePolicy) -> InitRetry {
        InitRetry { policy, retries: 0 }
    }

    /// The sequence failed: `Some(delay)` to run it again after `delay`, `None` to give up
    /// (the replica is `failed`). `unit` is a uniform random fraction in [0, 1] from the
    /// caller's RNG, used for backoff jitter (0.5 means no jitter).
    pub fn after_failure(&mut self, unit: f64) -> Option<Duration> {
        let delay = match self.policy {
            InitFailurePolicy::Fail => return None,
            InitFailurePolicy::Restart { max_retries, delay } => {
                if self.retries >= max_retries {
                    return None;
                }
                delay
            }
            InitFailurePolicy::Backoff {
                max_retries,
                backoff,
            } => {
                if self.retries >= max_retries {
                    return None;
                }
                backoff_delay(&backoff, self.retries, unit)
            }
        };
        self.retries += 1;
        Some(delay)
    }

    /// Retries granted so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Forget the retries (the sequence succeeded).
    pub fn reset(&mut self) {
        self.retries = 0;
    }
}

/// Delay number `n` (0-based) of `backoff`: `initial * multiplier^n` capped at `max`,
/// scaled by a factor in `[1 - jitter, 1 + jitter]` chosen by `unit` in [0, 1]. Pure: the
/// caller supplies the randomness, so schedules are reproducible.
pub fn backoff_delay(backoff: &Backoff, n: u32, unit: f64) -> Duration {
    let max = backoff.max.as_secs_f64();
    let exponent = i32::try_from(n).unwrap_or(i32::MAX);
    // Computed in f64 and capped before converting: `multiplier^n` overflows to infinity
    // quickly, and `min` turns infinity (and NaN) into the cap.
    let base = (backoff.initial.as_secs_f64() * backoff.multiplier.powi(exponent)).min(max);
    let jitter = if backoff.jitter.is_finite() {
        backoff.jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.5
    };
    let factor = 1.0 - jitter + 2.0 * jitter * unit;
    Duration::try_from_secs_f64(base * factor).unwrap_or(backoff.max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use herdsman_spec::{InitAction, Template};
    use tokio::time::{sleep, Instant};

    fn report(id: &str, ok: bool) -> StepReport {
        StepReport {
            step: id.into(),
            ok,
            attempts: 1,
            error: (!ok).then(|| format!("{id} broke")),
            duration: Duration::ZERO,
        }
    }

    /// Steps and their reports from `(id, ok, on_failure)` rows.
    fn run_of(rows: &[(&str, bool, StepFailure)]) -> (Vec<InitStep>, Vec<StepReport>) {
        rows.iter()
            .map(|(id, ok, f)| (init_step(id, *f), report(id, *ok)))
            .unzip()
    }

    #[test]
    fn each_on_failure_gives_its_verdict() {
        use StepFailure::*;
        let cases = [
            (true, Fail, StepVerdict::Passed),
            (true, Warn, StepVerdict::Passed),
            (false, Fail, StepVerdict::Failed),
            (false, Warn, StepVerdict::Warned),
            (false, Continue, StepVerdict::Ignored),
        ];
        for (ok, on_failure, want) in cases {
            assert_eq!(
                report("s", ok).verdict(on_failure),
                want,
                "{ok} {on_failure:?}"
            );
        }
    }

    #[test]
    fn sequence_fails_at_the_first_failing_fail_step_and_lists_warnings() {
        use StepFailure::*;
        let (steps, reports) = run_of(&[
            ("a", true, Fail),
            ("b", false, Warn),
            ("c", false, Continue),
            ("d", false, Warn),
        ]);
        assert_eq!(
            sequence_outcome(&steps, &reports),
            SequenceOutcome::Completed {
                warned: vec!["b".into(), "d".into()]
            }
        );
        let (steps, reports) =
            run_of(&[("a", false, Warn), ("b", false, Fail), ("c", false, Fail)]);
        assert_eq!(
            sequence_outcome(&steps, &reports),
            SequenceOutcome::Failed {
                step: "b".into(),
                error: "b broke".into()
            }
        );
        assert!(sequence_outcome(&steps, &[]).is_completed());
    }

    fn init_step(id: &str, on_failure: StepFailure) -> InitStep {
        InitStep {
            id: id.into(),
            action: InitAction::Run {
                command: Template::literal("true"),
            },
            timeout: Duration::from_secs(1),
            retry: 0,
            on_failure,
        }
    }

    #[tokio::test]
    async fn run_sequence_stops_after_a_failing_fail_step() {
        use StepFailure::*;
        let steps = vec![
            init_step("warns", Warn),
            init_step("fails", Fail),
            init_step("never-run", Fail),
        ];
        let (reports, outcome) = run_sequence(&steps, |s| async move {
            let ok = s.id == "never-run";
            if ok {
                StepReport::passed(s, 1, Duration::ZERO)
            } else {
                StepReport::failed(s, 1, "nope", Duration::ZERO)
            }
        })
        .await;
        let ids: Vec<&str> = reports.iter().map(|r| r.step.as_str()).collect();
        assert_eq!(ids, vec!["warns", "fails"]);
        assert_eq!(
            outcome,
            SequenceOutcome::Failed {
                step: "fails".into(),
                error: "nope".into()
            }
        );
    }

    #[test]
    fn fail_policy_never_retries() {
        assert_eq!(
            InitRetry::new(InitFailurePolicy::Fail).after_failure(0.5),
            None
        );
    }

    #[test]
    fn restart_policy_retries_with_a_fixed_delay_then_gives_up() {
        let mut r = InitRetry::new(InitFailurePolicy::Restart {
            max_retries: 3,
            delay: Duration::from_secs(2),
        });
        let got: Vec<_> = (0..5).map(|_| r.after_failure(0.9)).collect();
        let two = Some(Duration::from_secs(2));
        assert_eq!(got, vec![two, two, two, None, None]);
        assert_eq!(r.retries(), 3);
        r.reset();
        assert_eq!(r.after_failure(0.0), two);
    }

    fn backoff(jitter: f64) -> InitFailurePolicy {
        InitFailurePolicy::Backoff {
            max_retries: 6,
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(10),
                multiplier: 2.0,
                jitter,
            },
        }
    }

    #[test]
    fn backoff_policy_doubles_up_to_its_cap_then_gives_up() {
        let mut r = InitRetry::new(backoff(0.0));
        let got: Vec<_> = (0..8)
            .map(|_| r.after_failure(0.3).map(|d| d.as_millis()))
            .collect();
        assert_eq!(
            got,
            vec![
                Some(1000),
                Some(2000),
                Some(4000),
                Some(8000),
                Some(10000),
                Some(10000),
                None,
                None
            ]
        );
    }

    #[test]
    fn backoff_jitter_scales_the_delay_within_its_band() {
        // unit 0 → factor 0.8, 0.5 → 1.0, 1 → 1.2 for jitter 0.2.
        for (unit, ms) in [
            (0.0, 800),
            (0.5, 1000),
            (1.0, 1200),
            (f64::NAN, 1000),
            (9.0, 1200),
        ] {
            let mut r = InitRetry::new(backoff(0.2));
            assert_eq!(
                r.after_failure(unit).map(|d| d.as_millis()),
                Some(ms),
                "{unit}"
            );
        }
    }

    #[test]
    fn absurd_backoff_numbers_stay_at_the_cap() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            multiplier: 1e300,
            jitter: f64::INFINITY,
        };
        assert_eq!(backoff_delay(&b, u32::MAX, 0.7), Duration::from_secs(300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_sequence_under_backoff_reruns_at_the_scheduled_times() {
        let start = Instant::now();
        let steps = vec![init_step("always-fails", StepFailure::Fail)];
        let mut retry = InitRetry::new(backoff(0.0));
        let mut runs = Vec::new();
        loop {
            runs.push((Instant::now() - start).as_secs());
            let (_, outcome) = run_sequence(&steps, |s| async move {
                StepReport::failed(s, 1, "down", Duration::ZERO)
            })
            .await;
            assert!(!outcome.is_completed());
            match retry.after_failure(0.5) {
                Some(delay) => sleep(delay).await,
                None => break,
            }
        }
        // Delays 1, 2, 4, 8, 10, 10 s: six retries after the first run.
        assert_eq!(runs, vec![0, 1, 3, 7, 15, 25, 35]);
    }
}
