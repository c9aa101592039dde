//! Health checks (tcp, http, command), the health tracker, and init steps: plain async
//! functions and pure state machines that know nothing of supervision.
//!
//! Layout: `outcome` (check and command results), `command` (commands in their own
//! process group, and optionally their own cgroup, with a hard timeout), `cgroup` (a
//! cgroup v2 directory as the container of a command and all it forks), `cgroup_child`
//! (a process born inside a cgroup with `clone3(CLONE_INTO_CGROUP)`), `tcp` and `http` (network checks), `tracker`
//! (consecutive-threshold health state machine), `init` (running one init step with its
//! timeout and retries), `sequence` (what a step's failure does to the init sequence, and
//! whether a failed sequence is tried again), `error` (the crate's error type).
//!
//! ```no_run
//! # async fn demo() -> Result<(), herdsman_probe::ProbeError> {
//! use std::time::Duration;
//! use herdsman_probe::{check_tcp, run_command, CommandRequest, HttpProber};
//!
//! let second = Duration::from_secs(1);
//! let tcp = check_tcp("127.0.0.1", 5432, second).await;
//! let http = HttpProber::shared()
//!     .check("http://127.0.0.1:8080/healthz", Some(200), second)
//!     .await;
//! let cmd = run_command(&CommandRequest::shell("pg_isready"), 5 * second).await?;
//! println!("{:?} {:?} {:?}", tcp.outcome, http.outcome, cmd.to_check_result().outcome);
//! # Ok(())
//! # }
//! ```

mod cgroup;
mod cgroup_child;
mod command;
mod error;
mod http;
mod init;
mod outcome;
mod sequence;
mod tcp;
mod tracker;

pub use cgroup::{Cgroup, CgroupEvents};
pub use cgroup_child::{CgroupChild, ChildOutput, ChildSpec};
pub use command::{run_command, CommandRequest};
pub use error::ProbeError;
pub use http::{HttpProber, BODY_CAP, MAX_REDIRECTS};
pub use init::{run_step, run_step_in, StepReport};
pub use outcome::{cap_output, humanize, CheckResult, CommandOutput, Outcome, OUTPUT_CAP};
pub use sequence::{
    backoff_delay, run_sequence, sequence_outcome, InitRetry, SequenceOutcome, StepVerdict,
};
pub use tcp::check_tcp;
pub use tracker::{HealthState, HealthTracker, Transition};
