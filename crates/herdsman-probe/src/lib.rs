//! Health checks (tcp, http, command), the health tracker, and init steps: plain async
//! functions and pure state machines that know nothing of supervision.
//!
//! Layout: `outcome` (check and command results), `command` (commands in their own
//! process group with a hard timeout), `tcp` and `http` (network checks), `tracker`
//! (consecutive-threshold health state machine), `init` (init steps and sequences).

mod command;
mod http;
mod init;
mod outcome;
mod tcp;
mod tracker;

pub use command::{run_command, CommandRequest};
pub use http::HttpProber;
pub use init::{run_step, StepReport};
pub use outcome::{cap_output, humanize, CheckResult, CommandOutput, Outcome, OUTPUT_CAP};
pub use tcp::check_tcp;
pub use tracker::HealthTracker;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The command could not be spawned (missing binary, permissions); retrying will not help
    /// until the system changes.
    #[error("cannot spawn {program:?}")]
    Spawn {
        /// Program that was to be run.
        program: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// An empty command line; retrying cannot help.
    #[error("empty command")]
    EmptyCommand,
}
