//! What the operator is told about each event: one line for the notable ones (restarts,
//! backoff, isolation, health changes, failures), nothing for routine ones.

use std::time::Duration;

use herdsman_core::{DeploymentStatus, EventKind};
use herdsman_probe::humanize;

use crate::terminal::escape;

/// The line printed for an event, `None` for events not worth a line (a replica started
/// during the rollout, each failed probe, stabilization, which the caller announces).
/// Control characters in names, errors and reasons are escaped.
pub(crate) fn notice(kind: &EventKind) -> Option<String> {
    let line = match kind {
        EventKind::ReplicaStarted {
            service,
            replica,
            generation,
            pid,
        } => {
            // The first incarnation is part of the rollout, which the progress shows.
            if *generation == 0 {
                return None;
            }
            match pid {
                Some(pid) => format!("{service}/{replica} started again (pid {pid})"),
                None => format!("{service}/{replica} started again"),
            }
        }
        EventKind::ReplicaAdopted {
            service,
            replica,
            pid,
            ..
        } => match pid {
            Some(pid) => format!("{service}/{replica} adopted (pid {pid}), still running"),
            None => format!("{service}/{replica} adopted, still running"),
        },
        EventKind::ReplicaExited {
            service,
            replica,
            exit,
            ..
        } => format!("{service}/{replica} exited: {exit}"),
        EventKind::StartFailed {
            service,
            replica,
            error,
        } => format!("{service}/{replica} could not start: {error}"),
        EventKind::ReplicaRestarting {
            service,
            replica,
            delay_ms,
            restarts,
        } => {
            let when = if *delay_ms == 0 {
                "now".to_string()
            } else {
                format!("in {}", humanize(Duration::from_millis(*delay_ms)))
            };
            format!("{service}/{replica} restarting {when} (restart {restarts})")
        }
        EventKind::BackOff {
            service,
            replica,
            delay_ms,
        } => format!(
            "{service}/{replica} is crash looping: backing off {}",
            humanize(Duration::from_millis(*delay_ms))
        ),
        EventKind::Isolated {
            service,
            replica,
            reason,
        } => format!("{service}/{replica} isolated: {reason}"),
        EventKind::ServiceShutdown { service, reason } => {
            format!("service {service} shut down: {reason}")
        }
        EventKind::ServiceFailed { service, reason } => {
            format!("service {service} failed: {reason}")
        }
        EventKind::HealthChanged {
            service,
            replica,
            healthy,
        } => {
            let health = if *healthy { "healthy" } else { "unhealthy" };
            format!("{service}/{replica} is {health}")
        }
        EventKind::InitStepFailed {
            service,
            replica,
            step,
            error,
            continues,
        } => {
            let then = if *continues { ", continuing" } else { "" };
            format!("{service}/{replica} init step {step} failed: {error}{then}")
        }
        EventKind::Scaled { service, from, to } => {
            format!("service {service} scaled from {from} to {to} replicas")
        }
        EventKind::Completed { service, replica } => format!("{service}/{replica} completed"),
        EventKind::GaveUp {
            service,
            replica,
            reason,
        } => format!("{service}/{replica} gave up: {reason}"),
        EventKind::RolloutStarted {
            revision,
            services,
            revert,
        } => {
            let what = if *revert {
                "rolling back"
            } else {
                "rolling out"
            };
            format!("{what} revision {revision}: {}", services.join(", "))
        }
        EventKind::RolloutProgress {
            service,
            updated,
            desired,
            ..
        } => format!("rollout: {service} {updated}/{desired} updated"),
        EventKind::RolloutComplete { revision } => {
            format!("rollout of revision {revision} complete")
        }
        EventKind::RolloutFailed {
            revision,
            reason,
            reverting,
            ..
        } => {
            let then = if *reverting { "rolling back" } else { "paused" };
            format!("rollout of revision {revision} failed ({reason}); {then}")
        }
        EventKind::ProbeFailed { .. }
        | EventKind::DeploymentStable { .. }
        | EventKind::DeploymentUnstable
        | EventKind::StabilizationTimedOut { .. }
        | EventKind::DeploymentStopped => return None,
    };
    Some(escape(&line).into_owned())
}

/// `3 services, 7 replicas`: the services that want replicas and how many they want.
pub(crate) fn size(status: &DeploymentStatus) -> String {
    let services = status.services.iter().filter(|s| s.desired > 0).count();
    let replicas = status
        .services
        .iter()
        .fold(0u32, |n, s| n.saturating_add(s.desired));
    format!(
        "{services} service{}, {replicas} replica{}",
        plural(services as u64),
        plural(u64::from(replicas))
    )
}

/// `s` unless `n` is 1.
pub(crate) fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use herdsman_runtime::{Exit, ExitReason};

    use super::*;

    #[test]
    fn restarts_backoff_and_health_changes_each_get_a_line() {
        let cases = [
            (
                EventKind::ReplicaExited {
                    service: "flaky".into(),
                    replica: 1,
                    generation: 2,
                    exit: Exit {
                        reason: ExitReason::Code(3),
                        ran_for: Duration::from_millis(2500),
                    },
                },
                "flaky/1 exited: exit code 3 after 2.5s",
            ),
            (
                EventKind::ReplicaRestarting {
                    service: "flaky".into(),
                    replica: 1,
                    delay_ms: 0,
                    restarts: 3,
                },
                "flaky/1 restarting now (restart 3)",
            ),
            (
                EventKind::BackOff {
                    service: "flaky".into(),
                    replica: 0,
                    delay_ms: 2000,
                },
                "flaky/0 is crash looping: backing off 2.0s",
            ),
            (
                EventKind::HealthChanged {
                    service: "slowstart".into(),
                    replica: 0,
                    healthy: true,
                },
                "slowstart/0 is healthy",
            ),
            (
                EventKind::ReplicaStarted {
                    service: "flaky".into(),
                    replica: 0,
                    generation: 1,
                    pid: Some(42),
                },
                "flaky/0 started again (pid 42)",
            ),
        ];
        for (kind, want) in cases {
            assert_eq!(notice(&kind).as_deref(), Some(want));
        }
    }

    #[test]
    fn control_characters_in_an_event_are_escaped() {
        let kind = EventKind::StartFailed {
            service: "web".into(),
            replica: 0,
            error: "no such file \x1b[31m./bin/x\x1b[0m\n".into(),
        };
        assert_eq!(
            notice(&kind).as_deref(),
            Some("web/0 could not start: no such file \\x1b[31m./bin/x\\x1b[0m\\n")
        );
    }

    #[test]
    fn routine_events_get_no_line() {
        let quiet = [
            EventKind::ReplicaStarted {
                service: "web".into(),
                replica: 0,
                generation: 0,
                pid: Some(7),
            },
            EventKind::ProbeFailed {
                service: "web".into(),
                replica: 0,
                reason: "503".into(),
            },
            EventKind::DeploymentStable { after_ms: 5 },
            EventKind::DeploymentStopped,
        ];
        for kind in quiet {
            assert_eq!(notice(&kind), None, "{kind:?}");
        }
    }
}
