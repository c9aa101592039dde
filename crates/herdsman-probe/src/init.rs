//! PLACEHOLDER: implemented by the probe work (issue 4).
use std::time::Duration;

use herdsman_spec::{InitStep, ReplicaVars};
use serde::{Deserialize, Serialize};

/// What one init step did, after its retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReport {
    /// Step id.
    pub step: String,
    /// True when the step succeeded.
    pub ok: bool,
    /// Tries made (1 + retries used).
    pub attempts: u32,
    /// Why the last try failed.
    pub error: Option<String>,
    /// Total time.
    pub duration: Duration,
}

/// Run one init step with its timeout and retries.
pub async fn run_step(step: &InitStep, vars: &ReplicaVars) -> StepReport {
    let _ = vars;
    StepReport {
        step: step.id.clone(),
        ok: false,
        attempts: 0,
        error: Some("not implemented".into()),
        duration: Duration::ZERO,
    }
}
