//! The rollout verbs: `herdsman apply FILE [--dry-run]` (the spec validated here, sent
//! over the control socket, validated and applied there; the plan printed as a table),
//! `herdsman rollout status` (follows the rollout to its end, like `kubectl rollout
//! status`) and `herdsman rollout undo`. Following a rollout is a pure state machine,
//! [`Follow`], fed the statuses and failures the server streams.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use herdsman_core::{
    ApplyPlan, Change, DeploymentStatus, Event, EventKind, FailingService, RolloutPhase,
    RolloutStatus,
};
use herdsman_spec::SpecError;
use tokio::time::Instant;

use crate::control::{Answer, Client, Request};
use crate::operate::{self, Failure, Target};
use crate::terminal::escape;

/// Flags of `herdsman apply`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ApplyArgs {
    /// The changed deployment spec (YAML).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Print what would change, per service, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the plan as JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    on: Target,
}

/// Flags of `herdsman rollout`.
#[derive(Debug, Clone, clap::Subcommand)]
pub(crate) enum RolloutCommand {
    /// Follow the rollout in progress until it completes (exit 0) or fails, is rolled
    /// back, paused or superseded (exit 1); with none in progress, the last one's outcome.
    Status(RolloutStatusArgs),
    /// Roll back to the spec before the current one.
    Undo(UndoArgs),
}

/// Flags of `herdsman rollout status`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RolloutStatusArgs {
    /// Give up (exit 1) if the rollout has not ended after this long (e.g. 5m).
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    #[command(flatten)]
    on: Target,
}

/// Flags of `herdsman rollout undo`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct UndoArgs {
    /// Print the plan as JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    on: Target,
}

/// `herdsman apply`.
pub(crate) async fn apply(args: ApplyArgs) -> ExitCode {
    // Checked here first, so a mistake is shown at once and nothing is sent.
    let spec = match herdsman_spec::load(&args.file) {
        Ok(spec) => spec,
        Err(e) => return refuse(&args.file, e),
    };
    // Sent as read (the server validates it again): bounded like `load` reads it.
    let text = match read_bounded(&args.file) {
        Ok(text) => text,
        Err(e) => {
            return Failure::Failed(format!("cannot read {}: {e}", args.file.display())).report()
        }
    };
    // Relative `command.workdir`s resolve against the file's directory, as `load` does.
    let base_dir = match args.file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base_dir = std::path::absolute(&base_dir).unwrap_or(base_dir);
    // The spec names its deployment: that is the one to apply it to, unless -d says.
    let on = Target {
        deployment: args.on.deployment.clone().or(Some(spec.name.clone())),
        ..args.on.clone()
    };
    let request = Request::Apply {
        spec: text,
        file: args.file.display().to_string(),
        base_dir,
        dry_run: args.dry_run,
    };
    let json = args.json;
    operate::exchange(&on, request, |answer| show_plan(answer, json)).await
}

/// `herdsman rollout status` and `herdsman rollout undo`.
pub(crate) async fn rollout(command: RolloutCommand) -> ExitCode {
    match command {
        RolloutCommand::Status(args) => status(args).await,
        RolloutCommand::Undo(args) => {
            let json = args.json;
            operate::exchange(&args.on, Request::Undo, |answer| show_plan(answer, json)).await
        }
    }
}

/// The file's text, at most one byte past the longest spec.
fn read_bounded(file: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(file)?
        .take(herdsman_spec::MAX_SPEC_BYTES as u64 + 1)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// An invalid spec: every problem, and exit 1 (nothing was sent, so nothing changed).
fn refuse(file: &Path, e: SpecError) -> ExitCode {
    match e {
        SpecError::Invalid { problems } => {
            for p in &problems {
                eprintln!("{}", escape(&p.to_string()));
            }
            eprintln!(
                "error: {} is invalid; nothing was changed",
                escape(&file.display().to_string())
            );
        }
        e @ SpecError::Read { .. } => eprintln!("error: {:#}", anyhow::Error::new(e)),
    }
    ExitCode::FAILURE
}

fn show_plan(answer: Answer, json: bool) -> bool {
    match answer {
        Answer::Plan { plan, dry_run } => {
            let text = if json {
                serde_json::to_string(&plan).unwrap_or_default()
            } else {
                plan_table(&plan, dry_run)
            };
            say(text.trim_end())
        }
        _ => true,
    }
}

/// A plan as a table: one row per service, what happens to it and the details.
pub(crate) fn plan_table(plan: &ApplyPlan, dry_run: bool) -> String {
    let head = match (plan.is_noop(), dry_run) {
        (true, _) => format!(
            "no change: every service already runs this spec (revision {})",
            plan.revision
        ),
        (false, true) => format!("revision {} would change:", plan.revision),
        (false, false) => format!("revision {}:", plan.revision),
    };
    let rows: Vec<[String; 3]> = plan
        .changes
        .iter()
        .map(|c| {
            let (what, detail) = match &c.change {
                Change::Unchanged => ("unchanged", String::new()),
                Change::Scale { from, to } => ("scaled", format!("{from} -> {to} replicas")),
                Change::Roll {
                    strategy,
                    replicas,
                    fields,
                } => (
                    "changed",
                    format!(
                        "{}; {strategy} rollout of {replicas} replica{}",
                        if fields.is_empty() {
                            "spec".to_string()
                        } else {
                            fields.join(", ")
                        },
                        crate::notices::plural(u64::from(*replicas))
                    ),
                ),
                Change::Add { replicas } => (
                    "added",
                    format!(
                        "{replicas} replica{}",
                        crate::notices::plural(u64::from(*replicas))
                    ),
                ),
                Change::Remove => ("removed", "every replica stopped".to_string()),
            };
            [c.service.clone(), what.to_string(), detail]
        })
        .collect();
    let width = rows
        .iter()
        .map(|r| r[0].chars().count())
        .chain([7])
        .max()
        .unwrap_or(7);
    let mut out = format!("{head}\n");
    out.push_str(&format!(
        "  {:<width$}  {:<9}  {}\n",
        "SERVICE", "CHANGE", "WHAT"
    ));
    for [service, what, detail] in rows {
        let line = format!("  {service:<width$}  {what:<9}  {detail}");
        out.push_str(&escape(line.trim_end()));
        out.push('\n');
    }
    out
}

/// `herdsman rollout status`.
async fn status(args: RolloutStatusArgs) -> ExitCode {
    let found = match args.on.find().await {
        Ok(f) => f,
        Err(failure) => return failure.report(),
    };
    let mut client = match Client::connect(&found.socket, Request::Rollout).await {
        Ok(c) => c,
        Err(e) => return Failure::from(e).report(),
    };
    let deadline = args.timeout.map(|t| Instant::now() + t);
    let mut follow = Follow::default();
    loop {
        let next = match deadline {
            Some(at) => match tokio::time::timeout_at(at, client.next()).await {
                Ok(next) => next,
                Err(_) => {
                    let waited = args.timeout.unwrap_or_default();
                    return Failure::Failed(follow.timed_out(waited)).report();
                }
            },
            None => client.next().await,
        };
        let step = match next {
            Ok(Some(Answer::Status { status, .. })) => follow.status(&status),
            Ok(Some(Answer::Event { event })) => {
                follow.event(event);
                continue;
            }
            Ok(Some(Answer::Error { message, usage })) => {
                return if usage {
                    Failure::Usage(message)
                } else {
                    Failure::Failed(message)
                }
                .report()
            }
            Ok(Some(_)) => continue,
            Ok(None) => {
                return Failure::Failed(format!(
                    "deployment {:?} stopped before the rollout ended",
                    found.deployment
                ))
                .report()
            }
            Err(e) => return Failure::from(e).report(),
        };
        match step {
            Step::Going(lines) => {
                for line in lines {
                    if !say(&escape(&line)) {
                        return ExitCode::SUCCESS;
                    }
                }
            }
            Step::Over { ok, lines } => {
                for line in lines {
                    if ok {
                        say(&escape(&line));
                    } else {
                        eprintln!("{}", escape(&line));
                    }
                }
                return if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                };
            }
        }
    }
}

fn say(line: &str) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

/// What following a rollout says after one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Still going: these lines are news.
    Going(Vec<String>),
    /// Over: `ok` when it completed; the lines say how it ended.
    Over { ok: bool, lines: Vec<String> },
}

/// Following one rollout, from the statuses and failures the server streams. Pure.
#[derive(Debug, Default)]
pub(crate) struct Follow {
    /// The revision followed, once a status showed one.
    revision: Option<u64>,
    /// The revision a failed rollout is being rolled back from.
    reverting_from: Option<u64>,
    /// The last progress line said, per service.
    said: BTreeMap<String, String>,
    /// The last rollout failure heard of: revision, reason, failing services.
    failure: Option<(u64, String, Vec<FailingService>)>,
    /// The last status's rollout, for a timeout's message.
    last: Option<RolloutStatus>,
}

impl Follow {
    /// Take a `rollout_failed` event into account.
    pub(crate) fn event(&mut self, event: Event) {
        if let EventKind::RolloutFailed {
            revision,
            reason,
            failing,
            ..
        } = event.kind
        {
            self.failure = Some((revision, reason, failing));
        }
    }

    /// Take a status into account.
    pub(crate) fn status(&mut self, status: &DeploymentStatus) -> Step {
        let Some(rollout) = &status.rollout else {
            return Step::Over {
                ok: true,
                lines: vec![
                    "no rollout yet: the deployment runs the spec it started with (revision 1)"
                        .to_string(),
                ],
            };
        };
        self.last = Some(rollout.clone());
        let mut lines = Vec::new();
        match self.revision {
            None => {
                self.revision = Some(rollout.revision);
                if rollout.phase == RolloutPhase::Reverting {
                    self.reverting_from = rollout.revision.checked_sub(1);
                }
                if in_progress(rollout.phase) {
                    lines.push(format!(
                        "waiting for the rollout of revision {} to finish ({})",
                        rollout.revision,
                        rollout.phase.as_str()
                    ));
                }
            }
            Some(followed) if rollout.revision > followed => {
                let rolling_back = matches!(
                    rollout.phase,
                    RolloutPhase::Reverting | RolloutPhase::Reverted
                ) || (rollout.phase == RolloutPhase::Paused
                    && self.reverting_from.is_some());
                if !rolling_back {
                    return Step::Over {
                        ok: false,
                        lines: vec![format!(
                            "the rollout of revision {followed} was superseded by revision {}",
                            rollout.revision
                        )],
                    };
                }
                self.reverting_from = Some(followed);
                self.revision = Some(rollout.revision);
                self.said.clear();
                lines.push(format!(
                    "the rollout of revision {followed} failed; rolling back (revision {})",
                    rollout.revision
                ));
            }
            Some(_) => {}
        }
        if in_progress(rollout.phase) {
            for s in &rollout.services {
                let ready = status
                    .services
                    .iter()
                    .find(|x| x.name == s.service)
                    .map_or(0, |x| x.healthy);
                let line = format!(
                    "{}: {} of {} updated, {ready} ready",
                    s.service, s.updated, s.desired
                );
                if self.said.get(&s.service) != Some(&line) {
                    self.said.insert(s.service.clone(), line.clone());
                    lines.push(line);
                }
            }
            return Step::Going(lines);
        }
        let ended = self.ended(rollout);
        lines.extend(ended.1);
        Step::Over { ok: ended.0, lines }
    }

    /// How a rollout that is over ended: whether it completed, and what to say.
    fn ended(&self, rollout: &RolloutStatus) -> (bool, Vec<String>) {
        let revision = rollout.revision;
        // The failure that caused this: of this revision, or of the one rolled back.
        let relevant =
            |r: u64| r == revision || Some(r) == self.reverting_from || r + 1 == revision;
        let failure = self.failure.as_ref().filter(|f| relevant(f.0));
        let head = match rollout.phase {
            RolloutPhase::Complete => {
                return (
                    true,
                    vec![format!("rollout of revision {revision} complete")],
                )
            }
            RolloutPhase::Reverted => {
                let failed = failure
                    .map(|f| f.0)
                    .or(self.reverting_from)
                    .unwrap_or(revision.saturating_sub(1));
                format!(
                    "rollout of revision {failed} failed and was rolled back: revision \
                     {revision} runs the spec before it"
                )
            }
            RolloutPhase::Paused => format!("rollout of revision {revision} is paused"),
            RolloutPhase::Superseded => {
                format!("the rollout of revision {revision} was superseded")
            }
            RolloutPhase::Progressing | RolloutPhase::Reverting => String::new(),
        };
        let mut lines = vec![head];
        match (failure, &rollout.reason) {
            (Some((_, reason, _)), _) | (None, Some(reason)) => {
                lines.push(format!("reason: {reason}"))
            }
            (None, None) => {}
        }
        if let Some((_, _, failing)) = failure {
            lines.extend(failing_lines(failing));
        }
        (false, lines)
    }

    /// What to say when `--timeout` passes first.
    pub(crate) fn timed_out(&self, waited: Duration) -> String {
        let waited = crate::progress::humanize_secs(waited);
        match &self.last {
            Some(r) => format!(
                "the rollout of revision {} is still {} after {waited}",
                r.revision,
                r.phase.as_str()
            ),
            None => format!("no answer from the deployment within {waited}"),
        }
    }
}

fn in_progress(phase: RolloutPhase) -> bool {
    matches!(phase, RolloutPhase::Progressing | RolloutPhase::Reverting)
}

/// The failing replicas and the tails of their output.
fn failing_lines(failing: &[FailingService]) -> Vec<String> {
    let mut lines = Vec::new();
    for s in failing {
        for r in &s.replicas {
            lines.push(format!("  {}/{}: {}", s.service, r.replica, r.reason));
            for l in &r.log_tail {
                lines.push(format!("    | {l}"));
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use herdsman_core::{ServiceChange, ServiceRollout};

    fn status(rollout: Option<(u64, RolloutPhase, u32)>, healthy: u32) -> DeploymentStatus {
        let json = serde_json::json!({
            "deployment": "shop", "stable": false,
            "services": [{"name": "web", "phase": "running", "reason": null, "desired": 3,
                          "running": 3, "healthy": healthy, "replicas": []}],
        });
        let mut s: DeploymentStatus = serde_json::from_value(json).expect("a status");
        s.rollout = rollout.map(|(revision, phase, updated)| RolloutStatus {
            revision,
            phase,
            services: vec![ServiceRollout {
                service: "web".into(),
                updated,
                desired: 3,
                done: false,
            }],
            reason: (phase != RolloutPhase::Progressing && phase != RolloutPhase::Complete)
                .then(|| "web: replica 3 of the new spec is crash looping or failed".into()),
        });
        s
    }

    fn failed(revision: u64) -> Event {
        Event {
            at_ms: 1,
            deployment: "shop".into(),
            kind: EventKind::RolloutFailed {
                revision,
                reason: "web: replica 3 of the new spec is crash looping or failed".into(),
                reverting: true,
                failing: vec![FailingService {
                    service: "web".into(),
                    desired: 3,
                    running: 3,
                    healthy: 3,
                    reason: "crash looping".into(),
                    replicas: vec![serde_json::from_value(serde_json::json!({
                        "replica": 3, "state": "backoff", "reason": "exited with code 1",
                        "log_tail": ["web[3] crashing"]
                    }))
                    .expect("a failing replica")],
                }],
            },
        }
    }

    #[test]
    fn progress_is_said_when_it_changes_and_completion_ends_with_success() {
        let mut f = Follow::default();
        let first = f.status(&status(Some((2, RolloutPhase::Progressing, 0)), 3));
        assert_eq!(
            first,
            Step::Going(vec![
                "waiting for the rollout of revision 2 to finish (progressing)".into(),
                "web: 0 of 3 updated, 3 ready".into()
            ])
        );
        assert_eq!(
            f.status(&status(Some((2, RolloutPhase::Progressing, 0)), 3)),
            Step::Going(vec![])
        );
        assert_eq!(
            f.status(&status(Some((2, RolloutPhase::Progressing, 2)), 4)),
            Step::Going(vec!["web: 2 of 3 updated, 4 ready".into()])
        );
        assert_eq!(
            f.status(&status(Some((2, RolloutPhase::Complete, 3)), 3)),
            Step::Over {
                ok: true,
                lines: vec!["rollout of revision 2 complete".into()]
            }
        );
    }

    #[test]
    fn a_rolled_back_rollout_fails_with_its_reason_and_log_tails() {
        let mut f = Follow::default();
        f.status(&status(Some((2, RolloutPhase::Progressing, 0)), 3));
        f.event(failed(2));
        let back = f.status(&status(Some((3, RolloutPhase::Reverting, 0)), 3));
        let Step::Going(lines) = back else {
            panic!("a rollback is followed: {back:?}")
        };
        assert!(
            lines[0].contains("revision 2 failed; rolling back"),
            "{lines:?}"
        );
        let Step::Over { ok, lines } = f.status(&status(Some((3, RolloutPhase::Reverted, 3)), 3))
        else {
            panic!("reverted is the end")
        };
        assert!(!ok);
        let text = lines.join("\n");
        assert!(
            text.contains(
                "rollout of revision 2 failed and was rolled back: revision 3 runs the spec before it"
            ),
            "{text}"
        );
        assert!(
            text.contains("reason: web: replica 3 of the new spec is crash looping or failed"),
            "{text}"
        );
        assert!(text.contains("web/3: exited with code 1"), "{text}");
        assert!(text.contains("| web[3] crashing"), "{text}");
    }

    #[test]
    fn a_later_apply_supersedes_the_rollout_followed() {
        let mut f = Follow::default();
        f.status(&status(Some((2, RolloutPhase::Progressing, 1)), 3));
        let Step::Over { ok, lines } =
            f.status(&status(Some((3, RolloutPhase::Progressing, 0)), 3))
        else {
            panic!("superseded is the end")
        };
        assert!(!ok);
        assert_eq!(
            lines,
            vec!["the rollout of revision 2 was superseded by revision 3".to_string()]
        );
    }

    #[test]
    fn with_nothing_in_progress_the_last_outcome_decides() {
        let none = Follow::default().status(&status(None, 3));
        assert!(matches!(none, Step::Over { ok: true, .. }), "{none:?}");
        let done = Follow::default().status(&status(Some((4, RolloutPhase::Complete, 3)), 3));
        assert!(matches!(done, Step::Over { ok: true, .. }), "{done:?}");
        let mut f = Follow::default();
        f.event(failed(4));
        let Step::Over { ok, lines } = f.status(&status(Some((5, RolloutPhase::Reverted, 3)), 3))
        else {
            panic!("over")
        };
        assert!(!ok);
        assert!(
            lines.iter().any(|l| l.contains("revision 4 failed")),
            "{lines:?}"
        );
        let paused = Follow::default().status(&status(Some((4, RolloutPhase::Paused, 1)), 3));
        assert!(matches!(paused, Step::Over { ok: false, .. }), "{paused:?}");
    }

    #[test]
    fn the_plan_table_has_a_row_per_service_saying_what_changes() {
        let plan = ApplyPlan {
            revision: 3,
            changes: vec![
                ServiceChange {
                    service: "db".into(),
                    change: Change::Unchanged,
                },
                ServiceChange {
                    service: "web".into(),
                    change: Change::Roll {
                        strategy: "rolling".into(),
                        replicas: 3,
                        fields: vec!["command".into(), "env".into()],
                    },
                },
                ServiceChange {
                    service: "api".into(),
                    change: Change::Scale { from: 2, to: 4 },
                },
                ServiceChange {
                    service: "cache".into(),
                    change: Change::Add { replicas: 1 },
                },
                ServiceChange {
                    service: "old".into(),
                    change: Change::Remove,
                },
            ],
        };
        let table = plan_table(&plan, true);
        assert_eq!(
            table,
            "revision 3 would change:\n\
             \x20 SERVICE  CHANGE     WHAT\n\
             \x20 db       unchanged\n\
             \x20 web      changed    command, env; rolling rollout of 3 replicas\n\
             \x20 api      scaled     2 -> 4 replicas\n\
             \x20 cache    added      1 replica\n\
             \x20 old      removed    every replica stopped\n"
        );
    }
}
