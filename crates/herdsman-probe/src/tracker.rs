//! PLACEHOLDER: implemented by the probe work (issue 4).

/// Consecutive-threshold health state machine.
#[derive(Debug, Clone, Default)]
pub struct HealthTracker {}
