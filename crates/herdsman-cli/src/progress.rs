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

use herdsman_core::{DeploymentStatus, FailingService, ReplicaState};
use herdsman_probe::humanize;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

use crate::notices::size;
use crate::terminal::{escape, escape_lines};

mod report;
#[cfg(test)]
mod tests;

pub(crate) use report::humanize_secs;
use report::{not_ready_summary, service_line, timeout_report};

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
