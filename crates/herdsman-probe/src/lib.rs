//! Health checks (tcp, http, command), the health tracker, and init steps: plain async
//! functions and pure state machines that know nothing of supervision.
//!
//! Layout: `outcome` (check and command results), `command` (commands in their own
//! process group with a hard timeout), `tcp` and `http` (network checks), `tracker`
//! (consecutive-threshold health state machine), `init` (running one init step with its
//! timeout and retries), `sequence` (what a step's failure does to the init sequence, and
//! whether a failed sequence is tried again), `error` (the crate's error type).

mod command;
mod error;
mod http;
mod init;
mod outcome;
mod sequence;
mod tcp;
mod tracker;

pub use command::{run_command, CommandRequest};
pub use error::ProbeError;
pub use http::{HttpProber, BODY_CAP, MAX_REDIRECTS};
pub use init::{run_step, StepReport};
pub use outcome::{cap_output, humanize, CheckResult, CommandOutput, Outcome, OUTPUT_CAP};
pub use sequence::{run_sequence, sequence_outcome, InitRetry, SequenceOutcome, StepVerdict};
pub use tcp::check_tcp;
pub use tracker::{HealthRecord, HealthState, HealthTracker, Transition, HISTORY_LEN};
