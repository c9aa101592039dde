//! The operator's console for `herdsman run`: convergence shown the way `kubectl rollout
//! status` shows it (per service, ready/desired), redrawn in place on a terminal and as
//! plain lines, only on change, otherwise; then notable events as lines and changes of
//! stability.

use std::io::Write;
use std::time::Duration;

use herdsman_core::{DeploymentStatus, FailingService, ReplicaState, ServicePhase, ServiceStatus};
use herdsman_probe::humanize;
use tokio::time::Instant;

use crate::notices::size;
use crate::terminal::{escape, escape_lines};

/// How long a non-terminal console may stay silent while waiting before it says it is
/// still waiting.
const STILL_WAITING_EVERY: Duration = Duration::from_secs(10);

/// Where the console is in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first stability: the progress block is shown.
    Converging,
    /// Supervising: events as lines; `announced` while the last thing said about
    /// stability is that the deployment is stable.
    Watching { announced: bool },
    /// Shutting down: nothing but the caller's lines.
    Stopping,
}

/// The console. Owns stdout for the run; shared behind a mutex by the tasks that print.
pub(crate) struct Console {
    out: Box<dyn Write + Send>,
    /// Redraw in place with ANSI cursor moves.
    tty: bool,
    deployment: String,
    phase: Phase,
    started: Instant,
    /// Lines of the progress block on screen (terminal) or last printed per service.
    block: Vec<String>,
    /// When a non-terminal console last printed a progress line.
    last_said: Instant,
    /// Whether stability has been announced at least once.
    ever_stable: bool,
}

impl Console {
    /// A console writing to `out`; `tty` when `out` is a terminal.
    pub(crate) fn new(out: Box<dyn Write + Send>, tty: bool, deployment: &str) -> Console {
        let now = Instant::now();
        Console {
            out,
            tty,
            deployment: escape(deployment).into_owned(),
            phase: Phase::Converging,
            started: now,
            block: Vec::new(),
            last_said: now,
            ever_stable: false,
        }
    }

    /// A line that stays (an event, a message), printed above the progress block.
    pub(crate) fn line(&mut self, text: &str) {
        self.erase_block();
        let _ = writeln!(self.out, "{}", escape(text));
        self.draw_block();
        let _ = self.out.flush();
    }

    /// Show the current convergence; called on a timer while converging.
    pub(crate) fn progress(&mut self, status: &DeploymentStatus) {
        if self.phase != Phase::Converging {
            return;
        }
        let waited = self.started.elapsed();
        let services: Vec<String> = status
            .services
            .iter()
            .map(|s| escape(&service_line(s)).into_owned())
            .collect();
        if self.tty {
            let mut block = vec![format!(
                "Waiting for deployment \"{}\" to be stable ({})...",
                self.deployment,
                humanize_secs(waited)
            )];
            block.extend(services.iter().map(|s| format!("  {s}")));
            self.erase_block();
            self.block = block;
            self.draw_block();
        } else {
            let mut said = false;
            for (i, s) in services.iter().enumerate() {
                if self.block.get(i) != Some(s) {
                    let _ = writeln!(
                        self.out,
                        "Waiting for deployment \"{}\": {s}",
                        self.deployment
                    );
                    said = true;
                }
            }
            self.block = services;
            let now = Instant::now();
            if said {
                self.last_said = now;
            } else if now.duration_since(self.last_said) >= STILL_WAITING_EVERY {
                let _ = writeln!(
                    self.out,
                    "Still waiting for deployment \"{}\" after {}: {}",
                    self.deployment,
                    humanize_secs(waited),
                    escape(&not_ready_summary(status))
                );
                self.last_said = now;
            }
        }
        let _ = self.out.flush();
    }

    /// The deployment became stable for the first time: final progress, then the news.
    pub(crate) fn stable(&mut self, status: &DeploymentStatus, after: Duration) {
        self.progress(status);
        self.block.clear();
        self.phase = Phase::Watching { announced: true };
        self.ever_stable = true;
        let _ = writeln!(
            self.out,
            "deployment \"{}\" is stable ({}) after {}",
            self.deployment,
            size(status),
            humanize(after)
        );
        let _ = self.out.flush();
    }

    /// The stabilization wait passed its deadline: what is failing, why, and log tails.
    pub(crate) fn timed_out(
        &mut self,
        status: &DeploymentStatus,
        waited: Duration,
        failing: &[FailingService],
    ) {
        self.progress(status);
        self.block.clear();
        self.phase = Phase::Watching { announced: false };
        let _ = write!(
            self.out,
            "{}",
            escape_lines(&timeout_report(&self.deployment, waited, failing))
        );
        let _ = self.out.flush();
    }

    /// While watching, on a timer: say when the board shows stability lost (a lapse
    /// shorter than the timer is caught by [`Console::lost`] on its event instead).
    pub(crate) fn watch(&mut self, status: &DeploymentStatus) {
        if !status.stable {
            self.lost(status);
        }
    }

    /// While watching: an event or the board says the deployment is no longer stable.
    pub(crate) fn lost(&mut self, status: &DeploymentStatus) {
        let Phase::Watching { announced: true } = self.phase else {
            return;
        };
        self.phase = Phase::Watching { announced: false };
        self.line(&format!(
            "deployment \"{}\" is not stable: {}",
            self.deployment,
            not_ready_summary(status)
        ));
    }

    /// While watching: the deployment's `deployment_stable` event, `after` its start.
    pub(crate) fn regained(&mut self, status: &DeploymentStatus, after: Duration) {
        let Phase::Watching { announced: false } = self.phase else {
            return;
        };
        self.phase = Phase::Watching { announced: true };
        let text = if self.ever_stable {
            format!(
                "deployment \"{}\" is stable again ({})",
                self.deployment,
                size(status)
            )
        } else {
            format!(
                "deployment \"{}\" is stable ({}) after {}",
                self.deployment,
                size(status),
                humanize(after)
            )
        };
        self.ever_stable = true;
        self.line(&text);
    }

    /// Shutdown began: no more progress or stability lines.
    pub(crate) fn stopping(&mut self) {
        self.erase_block();
        self.block.clear();
        self.phase = Phase::Stopping;
        let _ = self.out.flush();
    }

    /// Whether events should still be printed as lines.
    pub(crate) fn wants_events(&self) -> bool {
        self.phase != Phase::Stopping
    }

    fn erase_block(&mut self) {
        if self.tty && !self.block.is_empty() {
            // Up to the block's first line, then clear to the end of the screen.
            let _ = write!(self.out, "\x1b[{}A\r\x1b[J", self.block.len());
        }
    }

    fn draw_block(&mut self) {
        if self.tty {
            for l in &self.block {
                let _ = writeln!(self.out, "{l}");
            }
        }
    }
}

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

/// Whole seconds past 10 s, tenths below: `4.2s`, `37s`, `2m 5s`.
fn humanize_secs(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use herdsman_core::{FailingReplica, ReplicaStatus};

    use super::*;

    fn replica(i: u32, state: ReplicaState, healthy: bool) -> ReplicaStatus {
        ReplicaStatus {
            replica: i,
            state,
            healthy,
            pid: None,
            restarts: 0,
            last_exit_code: None,
            last_exit: None,
            backoff_ms: None,
            container: None,
            last_error: None,
            probes: Vec::new(),
        }
    }

    fn service(name: &str, desired: u32, replicas: Vec<ReplicaStatus>) -> ServiceStatus {
        ServiceStatus {
            name: name.into(),
            phase: ServicePhase::Running,
            reason: None,
            desired,
            running: replicas.iter().filter(|r| r.state.is_running()).count() as u32,
            healthy: replicas.iter().filter(|r| r.is_ready()).count() as u32,
            replicas,
        }
    }

    #[test]
    fn a_service_line_counts_ready_replicas_and_says_what_the_others_do() {
        let s = service(
            "web",
            3,
            vec![
                replica(0, ReplicaState::Running, true),
                replica(1, ReplicaState::Running, false),
                replica(2, ReplicaState::Backoff, false),
            ],
        );
        assert_eq!(
            service_line(&s),
            "web: 1 of 3 replicas ready (1 in backoff, 1 not healthy yet)"
        );
        let done = service(
            "migrate",
            1,
            vec![replica(0, ReplicaState::Completed, false)],
        );
        assert_eq!(service_line(&done), "migrate: 1 of 1 replicas completed");
        let mut waiting = service("web", 2, vec![]);
        waiting.phase = ServicePhase::Waiting;
        waiting.reason = Some("waiting for migrate (healthy)".into());
        assert_eq!(
            service_line(&waiting),
            "web: 0 of 2 replicas ready (waiting for migrate (healthy))"
        );
    }

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }

    #[tokio::test]
    async fn without_a_terminal_progress_prints_a_line_only_when_a_service_changes() {
        let sink = Sink::default();
        let mut console = Console::new(Box::new(sink.clone()), false, "shop");
        let mut status = DeploymentStatus {
            deployment: "shop".into(),
            stable: false,
            rollout: None,
            services: vec![service(
                "web",
                2,
                vec![replica(0, ReplicaState::Starting, false)],
            )],
        };
        console.progress(&status);
        console.progress(&status);
        status.services[0] = service(
            "web",
            2,
            vec![
                replica(0, ReplicaState::Running, true),
                replica(1, ReplicaState::Running, true),
            ],
        );
        status.stable = true;
        console.stable(&status, Duration::from_millis(1200));
        assert_eq!(
            sink.text(),
            "Waiting for deployment \"shop\": web: 0 of 2 replicas ready (1 starting)\n\
             Waiting for deployment \"shop\": web: 2 of 2 replicas ready\n\
             deployment \"shop\" is stable (1 service, 2 replicas) after 1.2s\n"
        );
        assert!(!sink.text().contains('\x1b'), "no escape codes in a pipe");
    }

    #[tokio::test]
    async fn on_a_terminal_an_event_line_goes_above_the_redrawn_block() {
        let sink = Sink::default();
        let mut console = Console::new(Box::new(sink.clone()), true, "shop");
        let status = DeploymentStatus {
            deployment: "shop".into(),
            stable: false,
            rollout: None,
            services: vec![service("web", 1, vec![])],
        };
        console.progress(&status);
        console.line("web/0 is healthy");
        let text = sink.text();
        let event = text.find("web/0 is healthy").expect("event printed");
        let erase = text.find("\x1b[2A\r\x1b[J").expect("block erased");
        assert!(erase < event, "the block is erased before the event line");
        assert!(
            text[event..].contains("  web: 0 of 1 replicas ready"),
            "the block is redrawn below the event: {text:?}"
        );
    }

    #[tokio::test]
    async fn watching_reports_lost_and_regained_stability_once_each() {
        let sink = Sink::default();
        let mut console = Console::new(Box::new(sink.clone()), false, "shop");
        let ready = service("web", 1, vec![replica(0, ReplicaState::Running, true)]);
        let mut status = DeploymentStatus {
            deployment: "shop".into(),
            stable: true,
            rollout: None,
            services: vec![ready.clone()],
        };
        console.stable(&status, Duration::from_secs(1));
        console.watch(&status);
        status.stable = false;
        status.services[0] = service("web", 1, vec![replica(0, ReplicaState::Backoff, false)]);
        console.lost(&status);
        console.watch(&status);
        status.stable = true;
        status.services[0] = ready;
        console.regained(&status, Duration::from_secs(3));
        console.regained(&status, Duration::from_secs(3));
        let text = sink.text();
        assert_eq!(
            text.matches("is not stable: web 0/1 ready").count(),
            1,
            "{text}"
        );
        assert_eq!(text.matches("is stable again").count(), 1, "{text}");
        assert!(text.ends_with("deployment \"shop\" is stable again (1 service, 1 replica)\n"));
    }

    #[tokio::test]
    async fn after_a_timeout_the_first_stability_is_announced_with_its_time() {
        let sink = Sink::default();
        let mut console = Console::new(Box::new(sink.clone()), false, "shop");
        let mut status = DeploymentStatus {
            deployment: "shop".into(),
            stable: false,
            rollout: None,
            services: vec![service("web", 1, vec![])],
        };
        console.timed_out(&status, Duration::from_secs(2), &[]);
        status.stable = true;
        status.services[0] = service("web", 1, vec![replica(0, ReplicaState::Running, true)]);
        console.regained(&status, Duration::from_millis(4500));
        assert!(sink
            .text()
            .ends_with("deployment \"shop\" is stable (1 service, 1 replica) after 4.5s\n"));
    }

    #[tokio::test]
    async fn log_tails_and_reasons_reach_the_console_escaped() {
        let sink = Sink::default();
        let mut console = Console::new(Box::new(sink.clone()), false, "shop");
        let failing = vec![FailingService {
            service: "bad".into(),
            desired: 1,
            running: 1,
            healthy: 0,
            reason: "0/1 ready".into(),
            replicas: vec![FailingReplica {
                replica: 0,
                state: ReplicaState::Running,
                reason: "unhealthy: \x1b[8m".into(),
                log_tail: vec!["\x1b]0;owned\x07\x1b[2J".into()],
            }],
        }];
        let status = DeploymentStatus {
            deployment: "shop".into(),
            stable: false,
            rollout: None,
            services: vec![service("bad\x1b[1A", 1, vec![])],
        };
        console.timed_out(&status, Duration::from_secs(3), &failing);
        console.line("web/0 said \x1b[2J");
        let text = sink.text();
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
        assert!(
            text.contains("      | \\x1b]0;owned\\x07\\x1b[2J\n"),
            "{text:?}"
        );
        assert!(
            text.contains("bad\\x1b[1A: 0 of 1 replicas ready"),
            "{text:?}"
        );
        assert!(text.ends_with("web/0 said \\x1b[2J\n"), "{text:?}");
    }

    #[test]
    fn the_timeout_report_names_each_failing_replica_with_its_log_tail() {
        let failing = vec![FailingService {
            service: "bad".into(),
            desired: 1,
            running: 1,
            healthy: 0,
            reason: "0/1 ready: 1 unhealthy".into(),
            replicas: vec![FailingReplica {
                replica: 0,
                state: ReplicaState::Running,
                reason: "unhealthy: HTTP 503".into(),
                log_tail: vec!["healthz -> 503".into()],
            }],
        }];
        let report = timeout_report("shop", Duration::from_secs(3), &failing);
        assert_eq!(
            report,
            "deployment \"shop\" is NOT stable after 3.0s: 1 service not ready\n\
             \x20 service bad: 0/1 ready: 1 unhealthy (1 desired, 1 running, 0 healthy)\n\
             \x20   bad/0: unhealthy: HTTP 503\n\
             \x20     last 1 line of output:\n\
             \x20     | healthz -> 503\n"
        );
    }
}
