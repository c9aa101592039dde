//! PLACEHOLDER: implemented by the probe work (issue 4).
use std::time::Duration;

use crate::{CheckResult, Outcome};

/// The shared HTTP client for all probes.
#[derive(Debug, Clone, Default)]
pub struct HttpProber {}

impl HttpProber {
    /// The process-wide prober.
    pub fn shared() -> &'static HttpProber {
        static P: HttpProber = HttpProber {};
        &P
    }

    /// HTTP GET check.
    pub async fn check(
        &self,
        url: &str,
        expect_status: Option<u16>,
        timeout: Duration,
    ) -> CheckResult {
        let _ = (url, expect_status, timeout);
        CheckResult::new(
            Outcome::Unknown("not implemented".into()),
            Duration::ZERO,
            "",
        )
    }
}
