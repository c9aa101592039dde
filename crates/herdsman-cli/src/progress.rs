//! The operator's console for `herdsman run`: convergence shown the way `kubectl rollout
//! status` shows it (per service, ready/desired), redrawn in place on a terminal and as
//! plain lines, only on change, otherwise; then notable events as lines and changes of
//! stability.
//!
//! On a terminal the progress block is an `indicatif` multi-progress of one-line bars (a
//! header, then a line per service), each cut to the terminal's width at every draw, so
//! nothing wraps whatever the width, and the width is asked again at each draw, so a
//! resized terminal gets lines of its new width. Lines that stay are printed above the
//! block by the same library, which counts the rows they take. Colour only on a terminal
//! and only when `NO_COLOR` is not set.

use std::io::Write;
use std::time::Duration;

use herdsman_core::{DeploymentStatus, FailingService, ReplicaState, ServicePhase, ServiceStatus};
use herdsman_probe::humanize;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
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

/// Where the console writes.
enum Screen {
    /// A terminal: the block is redrawn in place, lines go above it.
    Terminal {
        multi: MultiProgress,
        /// The block's lines: the header, then one per service.
        bars: Vec<ProgressBar>,
        /// What each bar was last given, and at which terminal width.
        shown: Vec<String>,
        shown_width: u16,
        /// The terminal's width now.
        width: Box<dyn Fn() -> u16 + Send>,
        colour: bool,
    },
    /// Anything else: plain lines, only on change.
    Lines(Box<dyn Write + Send>),
}

/// The console. Owns stdout for the run; shared behind a mutex by the tasks that print.
pub(crate) struct Console {
    screen: Screen,
    deployment: String,
    phase: Phase,
    started: Instant,
    /// Lines last printed per service (non-terminal).
    said: Vec<String>,
    /// When a non-terminal console last printed a progress line.
    last_said: Instant,
    /// Whether stability has been announced at least once.
    ever_stable: bool,
}

impl Console {
    /// A console writing to `out`; on stdout's terminal instead when `tty`.
    pub(crate) fn new(out: Box<dyn Write + Send>, tty: bool, deployment: &str) -> Console {
        if tty {
            let colour = console::colors_enabled();
            let width = Box::new(|| console::Term::stdout().size().1);
            Console::on_terminal(ProgressDrawTarget::stdout(), width, colour, deployment)
        } else {
            Console::with_screen(Screen::Lines(out), deployment)
        }
    }

    /// A console drawing on `target`, a terminal whose width `width` tells.
    pub(crate) fn on_terminal(
        target: ProgressDrawTarget,
        width: Box<dyn Fn() -> u16 + Send>,
        colour: bool,
        deployment: &str,
    ) -> Console {
        let screen = Screen::Terminal {
            multi: MultiProgress::with_draw_target(target),
            bars: Vec::new(),
            shown: Vec::new(),
            shown_width: 0,
            width,
            colour,
        };
        Console::with_screen(screen, deployment)
    }

    fn with_screen(screen: Screen, deployment: &str) -> Console {
        let now = Instant::now();
        Console {
            screen,
            deployment: deployment.to_string(),
            phase: Phase::Converging,
            started: now,
            said: Vec::new(),
            last_said: now,
            ever_stable: false,
        }
    }

    /// Print lines that stay, above the block on a terminal. Control characters are
    /// escaped: names and reasons come from specs and workloads.
    fn emit(&mut self, text: &str) {
        let text = escape_lines(text.trim_end_matches('\n'));
        match &mut self.screen {
            Screen::Terminal { multi, .. } => {
                let _ = multi.println(text);
            }
            Screen::Lines(out) => {
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
        }
    }

    /// A line that stays (an event, a message), printed above the progress block.
    pub(crate) fn line(&mut self, text: &str) {
        self.emit(text);
    }

    /// Show the current convergence; called on a timer while converging.
    pub(crate) fn progress(&mut self, status: &DeploymentStatus) {
        if self.phase != Phase::Converging {
            return;
        }
        let waited = self.started.elapsed();
        let services: Vec<String> = status.services.iter().map(service_line).collect();
        let header = format!(
            "Waiting for deployment \"{}\" to be stable ({})...",
            escape(&self.deployment),
            humanize_secs(waited)
        );
        match &mut self.screen {
            Screen::Terminal {
                multi,
                bars,
                shown,
                shown_width,
                width,
                colour,
            } => {
                let mut lines = vec![header];
                for (s, line) in status.services.iter().zip(&services) {
                    let line = escape(line);
                    let completed = s
                        .replicas
                        .iter()
                        .filter(|r| r.state == ReplicaState::Completed)
                        .count() as u32;
                    let done = s.healthy >= s.desired || completed >= s.desired;
                    lines.push(if *colour {
                        let style = if done {
                            console::Style::new().green()
                        } else {
                            console::Style::new().yellow()
                        };
                        format!("  {}", style.force_styling(true).apply_to(line))
                    } else {
                        format!("  {line}")
                    });
                }
                while bars.len() < lines.len() {
                    let bar = ProgressBar::hidden().with_style(block_style());
                    bars.push(multi.add(bar));
                }
                while bars.len() > lines.len() {
                    if let Some(bar) = bars.pop() {
                        bar.finish_and_clear();
                        multi.remove(&bar);
                    }
                }
                // Only what changed is redrawn, unless the terminal's width did: then every
                // line is cut again to the new width.
                let now_width = width();
                let resized = now_width != *shown_width;
                shown.resize(bars.len(), String::new());
                for ((bar, line), was) in bars.iter().zip(lines).zip(shown.iter_mut()) {
                    if resized || *was != line {
                        *was = line.clone();
                        bar.set_message(line);
                    }
                }
                *shown_width = now_width;
            }
            Screen::Lines(out) => {
                let mut said = false;
                for (i, s) in services.iter().enumerate() {
                    if self.said.get(i) != Some(s) {
                        let _ = writeln!(
                            out,
                            "Waiting for deployment \"{}\": {}",
                            escape(&self.deployment),
                            escape(s)
                        );
                        said = true;
                    }
                }
                self.said = services;
                let now = Instant::now();
                if said {
                    self.last_said = now;
                } else if now.duration_since(self.last_said) >= STILL_WAITING_EVERY {
                    let _ = writeln!(
                        out,
                        "Still waiting for deployment \"{}\" after {}: {}",
                        escape(&self.deployment),
                        humanize_secs(waited),
                        escape(&not_ready_summary(status))
                    );
                    self.last_said = now;
                }
                let _ = out.flush();
            }
        }
    }

    /// Take the progress block off the screen for good.
    fn clear_block(&mut self) {
        if let Screen::Terminal {
            multi, bars, shown, ..
        } = &mut self.screen
        {
            shown.clear();
            for bar in bars.drain(..) {
                bar.finish_and_clear();
                multi.remove(&bar);
            }
            let _ = multi.clear();
        }
        self.said.clear();
    }

    /// The deployment became stable for the first time: final progress, then the news.
    pub(crate) fn stable(&mut self, status: &DeploymentStatus, after: Duration) {
        self.progress(status);
        self.clear_block();
        self.phase = Phase::Watching { announced: true };
        self.ever_stable = true;
        let text = format!(
            "deployment \"{}\" is stable ({}) after {}",
            self.deployment,
            size(status),
            humanize(after)
        );
        self.emit(&text);
    }

    /// The stabilization wait passed its deadline: what is failing, why, and log tails.
    pub(crate) fn timed_out(
        &mut self,
        status: &DeploymentStatus,
        waited: Duration,
        failing: &[FailingService],
    ) {
        self.progress(status);
        self.clear_block();
        self.phase = Phase::Watching { announced: false };
        let report = timeout_report(&self.deployment, waited, failing);
        self.emit(&report);
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
        self.clear_block();
        self.phase = Phase::Stopping;
    }

    /// Whether events should still be printed as lines.
    pub(crate) fn wants_events(&self) -> bool {
        self.phase != Phase::Stopping
    }
}

/// One line of the block, cut to the terminal's width (never wrapped).
fn block_style() -> ProgressStyle {
    // The template is a constant: it parses.
    ProgressStyle::with_template("{wide_msg}").unwrap_or_else(|_| ProgressStyle::default_bar())
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

/// Whole seconds past 10 s, tenths below: `4.2s`, `37s`, `2m 5s`, `10m`.
pub(crate) fn humanize_secs(d: Duration) -> String {
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
            state,
            healthy,
            ..ReplicaStatus::new(i)
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

    use crate::test_terminal::Window;

    fn terminal_console(window: &Window) -> Console {
        // As fast as the library allows: every draw of the test is shown.
        let target = ProgressDrawTarget::term_like_with_hz(Box::new(window.clone()), u8::MAX);
        let seen = window.clone();
        let width = Box::new(move || indicatif::TermLike::width(&seen));
        Console::on_terminal(target, width, false, "shop")
    }

    fn converging() -> DeploymentStatus {
        DeploymentStatus {
            deployment: "shop".into(),
            stable: false,
            rollout: None,
            services: vec![
                service(
                    "web",
                    3,
                    vec![
                        replica(0, ReplicaState::Running, true),
                        replica(1, ReplicaState::Running, false),
                        replica(2, ReplicaState::Backoff, false),
                    ],
                ),
                service("db", 1, vec![replica(0, ReplicaState::Starting, false)]),
            ],
        }
    }

    fn count(rows: &[String], needle: &str) -> usize {
        rows.iter().filter(|r| r.contains(needle)).count()
    }

    #[tokio::test]
    async fn on_a_narrow_terminal_the_block_never_wraps_and_leaves_no_stale_line() {
        let window = Window::new(30, 40);
        let mut console = terminal_console(&window);
        let status = converging();
        for i in 0..4 {
            console.progress(&status);
            // Longer than the terminal is wide: it wraps, as a line that stays may.
            console.line(&format!(
                "event {i}: web/2 is crash looping: backing off 2.0s, then more"
            ));
        }
        console.progress(&status);
        let rows = window.rows();
        assert_eq!(
            count(&rows, "Waiting for deployment"),
            1,
            "one header, none stale:\n{}",
            rows.join("\n")
        );
        assert_eq!(count(&rows, "  web: 1 of 3"), 1, "{}", rows.join("\n"));
        assert_eq!(count(&rows, "  db: 0 of 1"), 1, "{}", rows.join("\n"));
        for i in 0..4 {
            assert_eq!(
                count(&rows, &format!("event {i}: web/2")),
                1,
                "{}",
                rows.join("\n")
            );
        }
        // The block is last, below every event, each of its lines on one row.
        let header = rows
            .iter()
            .position(|r| r.contains("Waiting for deployment"))
            .expect("a header");
        let last_event = rows
            .iter()
            .rposition(|r| r.contains("event 3"))
            .expect("the last event");
        assert!(header > last_event, "{}", rows.join("\n"));
        assert!(
            rows[header + 1].starts_with("  web: 1 of 3"),
            "{}",
            rows.join("\n")
        );
        assert!(
            rows[header + 2].starts_with("  db: 0 of 1"),
            "{}",
            rows.join("\n")
        );
    }

    #[tokio::test]
    async fn a_width_change_between_draws_gives_lines_of_the_new_width() {
        let window = Window::new(30, 80);
        let mut console = terminal_console(&window);
        let status = converging();
        console.progress(&status);
        window.resize(24);
        console.line("resized");
        console.progress(&status);
        let rows = window.rows();
        assert_eq!(
            count(&rows, "Waiting for deployment"),
            1,
            "{}",
            rows.join("\n")
        );
        let web = rows
            .iter()
            .find(|r| r.starts_with("  web: "))
            .unwrap_or_else(|| panic!("no web line in\n{}", rows.join("\n")));
        assert!(
            console::measure_text_width(web) <= 24,
            "cut to the new width: {web:?}"
        );
        window.resize(80);
        console.line("wider again");
        console.progress(&status);
        let rows = window.rows();
        assert_eq!(
            count(&rows, "Waiting for deployment"),
            1,
            "{}",
            rows.join("\n")
        );
        assert!(
            rows.iter()
                .any(|r| r == "  web: 1 of 3 replicas ready (1 in backoff, 1 not healthy yet)"),
            "whole again at 80 columns:\n{}",
            rows.join("\n")
        );
        console.stable(&status, Duration::from_secs(1));
        let rows = window.rows();
        assert_eq!(
            count(&rows, "Waiting for deployment"),
            0,
            "{}",
            rows.join("\n")
        );
        assert_eq!(count(&rows, "is stable (2 services, 4 replicas)"), 1);
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
