//! What the console says, as text: a service's progress line, the summary of the services
//! not ready, the report of a timed-out stabilization wait, and waited durations.

use std::time::Duration;

use herdsman_core::{DeploymentStatus, FailingService, ReplicaState, ServicePhase, ServiceStatus};

/// `web: 2 of 3 replicas ready (1 starting)`.
pub(crate) fn service_line(s: &ServiceStatus) -> String {
    let ready = s.replicas.iter().filter(|r| r.is_ready()).count();
    let mut detail: Vec<String> = Vec::new();
    match s.phase {
        ServicePhase::Running => {
            for (state, word) in [
                (ReplicaState::Initializing, "initializing"),
                (ReplicaState::Starting, "starting"),
                (ReplicaState::Backoff, "in backoff"),
                (ReplicaState::Isolated, "isolated"),
                (ReplicaState::Failed, "failed"),
                (ReplicaState::Completed, "completed"),
                (ReplicaState::Stopping, "stopping"),
                (ReplicaState::Stopped, "stopped"),
            ] {
                let n = s.replicas.iter().filter(|r| r.state == state).count();
                if n > 0 {
                    detail.push(format!("{n} {word}"));
                }
            }
            let unhealthy = s
                .replicas
                .iter()
                .filter(|r| r.state.is_running() && !r.healthy)
                .count();
            if unhealthy > 0 {
                detail.push(format!("{unhealthy} not healthy yet"));
            }
        }
        other => {
            let phase = match other {
                ServicePhase::Waiting => "waiting",
                ServicePhase::Shutdown => "shut down",
                ServicePhase::Failed => "failed",
                ServicePhase::Stopped => "stopped",
                ServicePhase::Running => "running",
            };
            detail.push(match &s.reason {
                Some(r) if r.starts_with(phase) => r.clone(),
                Some(r) => format!("{phase}: {r}"),
                None => phase.to_string(),
            });
        }
    }
    let completed = s
        .replicas
        .iter()
        .filter(|r| r.state == ReplicaState::Completed)
        .count();
    let head = if completed > 0 && completed as u32 == s.desired {
        format!(
            "{}: {completed} of {} replicas completed",
            s.name, s.desired
        )
    } else {
        format!("{}: {ready} of {} replicas ready", s.name, s.desired)
    };
    if detail.is_empty() || (completed > 0 && completed as u32 == s.desired) {
        head
    } else {
        format!("{head} ({})", detail.join(", "))
    }
}

/// `flaky 1/2 ready, slowstart 0/1 ready`: the services that are not ready.
pub(crate) fn not_ready_summary(status: &DeploymentStatus) -> String {
    let parts: Vec<String> = status
        .services
        .iter()
        .filter(|s| {
            let done = s
                .replicas
                .iter()
                .filter(|r| r.is_ready() || r.state == ReplicaState::Completed)
                .count() as u32;
            done < s.desired
        })
        .map(|s| format!("{} {}/{} ready", s.name, s.healthy, s.desired))
        .collect();
    if parts.is_empty() {
        "every service is ready, settling".to_string()
    } else {
        parts.join(", ")
    }
}

/// The report printed when a stabilization wait times out.
pub(crate) fn timeout_report(
    deployment: &str,
    waited: Duration,
    failing: &[FailingService],
) -> String {
    let mut out = format!(
        "deployment \"{deployment}\" is NOT stable after {}: {} service{} not ready\n",
        humanize_secs(waited),
        failing.len(),
        crate::notices::plural(failing.len() as u64)
    );
    for s in failing {
        out.push_str(&format!(
            "  service {}: {} ({} desired, {} running, {} healthy)\n",
            s.service, s.reason, s.desired, s.running, s.healthy
        ));
        for r in &s.replicas {
            out.push_str(&format!("    {}/{}: {}\n", s.service, r.replica, r.reason));
            if r.log_tail.is_empty() {
                out.push_str("      (no output)\n");
            } else {
                out.push_str(&format!(
                    "      last {} line{} of output:\n",
                    r.log_tail.len(),
                    crate::notices::plural(r.log_tail.len() as u64)
                ));
                for l in &r.log_tail {
                    out.push_str(&format!("      | {l}\n"));
                }
            }
        }
    }
    out
}

/// Whole seconds past 10 s, tenths below: `4.2s`, `37s`, `2m 5s`, `10m`.
pub(crate) fn humanize_secs(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}
