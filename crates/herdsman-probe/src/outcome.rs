//! What one check or command produced: outcome, duration, capped output.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Most bytes of probe output kept for status.
pub const OUTPUT_CAP: usize = 4096;

/// The verdict of one health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "reason")]
pub enum Outcome {
    /// The workload answered as expected.
    Success,
    /// The workload answered wrongly or not at all; counts toward `retries`.
    Failure(String),
    /// The probe itself could not run (not the workload's fault); not counted.
    Unknown(String),
}

impl Outcome {
    /// True for `Success`.
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success)
    }
}

/// One check's result, as kept in the last-results history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The verdict.
    pub outcome: Outcome,
    /// How long the check took.
    pub duration: Duration,
    /// Output or response excerpt, at most [`OUTPUT_CAP`] bytes.
    pub output: String,
}

impl CheckResult {
    /// A result with its output capped at [`OUTPUT_CAP`] bytes (on a char boundary).
    pub fn new(outcome: Outcome, duration: Duration, output: impl Into<String>) -> CheckResult {
        CheckResult {
            outcome,
            duration,
            output: cap_output(output.into()),
        }
    }
}

/// Truncate `s` to at most [`OUTPUT_CAP`] bytes, keeping the end (the most recent output).
pub fn cap_output(mut s: String) -> String {
    if s.len() <= OUTPUT_CAP {
        return s;
    }
    let mut start = s.len() - OUTPUT_CAP;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s.replace_range(..start, "");
    s
}

/// What a command (command probe, `init.run`, `Runtime::exec`) produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutput {
    /// Exit code, `None` when killed by a signal or at the timeout.
    pub exit_code: Option<i32>,
    /// Signal that ended it, if any.
    pub signal: Option<i32>,
    /// True when the timeout passed and its process group was killed.
    pub timed_out: bool,
    /// Combined stdout and stderr, the last [`OUTPUT_CAP`] bytes.
    pub output: String,
    /// Wall time from spawn to reap.
    pub duration: Duration,
}

impl CommandOutput {
    /// The check verdict for this command: exit 0 is success, anything else failure.
    pub fn to_check_result(&self) -> CheckResult {
        let outcome = match (self.timed_out, self.exit_code, self.signal) {
            (true, _, _) => {
                Outcome::Failure(format!("timed out after {}", humanize(self.duration)))
            }
            (false, Some(0), _) => Outcome::Success,
            (false, Some(code), _) => Outcome::Failure(format!("exited with code {code}")),
            (false, None, Some(sig)) => Outcome::Failure(format!("killed by signal {sig}")),
            (false, None, None) => Outcome::Failure("ended without a status".into()),
        };
        CheckResult::new(outcome, self.duration, self.output.clone())
    }
}

/// `1.5s`, `250ms`: a short human form of a duration for messages.
pub fn humanize(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
