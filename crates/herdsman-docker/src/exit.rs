//! How a container ended, from what Docker reports: its exit code (128+N for signal N),
//! whether the kernel OOM-killed it, and its start and finish times. Pure: no I/O.

use std::time::{Duration, SystemTime};

use herdsman_runtime::{Exit, ExitReason};

/// SIGKILL, what the OOM killer sends.
const SIGKILL: i32 = 9;

/// The exit reason for a container exit code: Docker reports a death by signal N as
/// 128+N (N up to 64), like a shell; an OOM kill is SIGKILL whatever the code says.
pub(crate) fn reason(code: i64, oom_killed: bool) -> ExitReason {
    if oom_killed {
        return ExitReason::Signal(SIGKILL);
    }
    match code {
        129..=192 => ExitReason::Signal((code - 128) as i32),
        _ => ExitReason::Code(i32::try_from(code).unwrap_or(i32::MAX)),
    }
}

/// Time between Docker's RFC 3339 `StartedAt` and `FinishedAt`, when both parse.
pub(crate) fn ran_for(started_at: Option<&str>, finished_at: Option<&str>) -> Option<Duration> {
    let parse = |s: Option<&str>| -> Option<SystemTime> { humantime::parse_rfc3339(s?).ok() };
    parse(finished_at)?.duration_since(parse(started_at)?).ok()
}

/// The exit of a container, from inspect's state, falling back to `fallback_ran_for`.
pub(crate) fn exit(
    code: i64,
    oom_killed: bool,
    ran_for_inspected: Option<Duration>,
    fallback_ran_for: Duration,
) -> Exit {
    Exit {
        reason: reason(code, oom_killed),
        ran_for: ran_for_inspected.unwrap_or(fallback_ran_for),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_above_128_are_signals_and_oom_is_sigkill() {
        assert_eq!(reason(0, false), ExitReason::Code(0));
        assert_eq!(reason(3, false), ExitReason::Code(3));
        assert_eq!(reason(128, false), ExitReason::Code(128));
        assert_eq!(reason(137, false), ExitReason::Signal(9));
        assert_eq!(reason(143, false), ExitReason::Signal(15));
        assert_eq!(reason(255, false), ExitReason::Code(255));
        assert_eq!(reason(1, true), ExitReason::Signal(9));
    }

    #[test]
    fn run_time_comes_from_dockers_timestamps() {
        let ran = ran_for(
            Some("2026-11-30T08:00:00.250000000Z"),
            Some("2026-11-30T08:00:02.750000000Z"),
        );
        assert_eq!(ran, Some(Duration::from_millis(2500)));
        assert_eq!(ran_for(Some("0001-01-01T00:00:00Z"), Some("garbage")), None);
        let e = exit(1, false, None, Duration::from_secs(4));
        assert_eq!(e.ran_for, Duration::from_secs(4));
    }
}
