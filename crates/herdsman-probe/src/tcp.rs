//! PLACEHOLDER: implemented by the probe work (issue 4).
use std::time::Duration;

use crate::{CheckResult, Outcome};

/// TCP connect check with a hard timeout.
pub async fn check_tcp(host: &str, port: u16, timeout: Duration) -> CheckResult {
    let _ = (host, port, timeout);
    CheckResult::new(
        Outcome::Unknown("not implemented".into()),
        Duration::ZERO,
        "",
    )
}
