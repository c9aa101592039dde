//! PLACEHOLDER: implemented by the probe work (issue 4).
use std::path::PathBuf;
use std::time::Duration;

use crate::{CommandOutput, ProbeError};

/// A command to run in its own process group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandRequest {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub workdir: Option<PathBuf>,
}

/// Run `req` with a hard timeout.
///
/// # Errors
/// The command could not be spawned.
pub async fn run_command(
    req: &CommandRequest,
    timeout: Duration,
) -> Result<CommandOutput, ProbeError> {
    let _ = (req, timeout);
    Err(ProbeError::EmptyCommand)
}
