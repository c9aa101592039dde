//! The operator's verbs on a running deployment, over its control socket: `logs`,
//! `restart`, `stop`, `start`, `scale`, `events` (and `status -w`, in `status_cmd`).
//! Each finds the deployment (`--state-dir`, `-d`), sends one request and prints the
//! answers. Exit codes: 0 done, 1 the operation failed (the reason is printed), 2 bad
//! usage (including an ambiguous deployment).

use std::fmt;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use herdsman_core::{Event, EventKind};
use herdsman_probe::humanize;

use crate::control::{self, Answer, Client, Found, NotFound, Request};
use crate::run::EXIT_INVALID;

/// Which deployment a verb acts on.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Target {
    /// The state root (or a deployment's state directory) of the run to act on
    /// (default: $HERDSMAN_STATE_DIR, else /var/lib/herdsman as root, else
    /// $XDG_STATE_HOME/herdsman).
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// The deployment to act on (default: the only one running under the state root).
    #[arg(short = 'd', long = "deployment", value_name = "DEPLOYMENT")]
    pub(crate) deployment: Option<String>,
}

impl Target {
    /// Whether the command line named a deployment or a state directory.
    pub(crate) fn given(&self) -> bool {
        self.state_dir.is_some() || self.deployment.is_some()
    }

    /// The running deployment this names.
    pub(crate) async fn find(&self) -> Result<Found, Failure> {
        let root = crate::state_dir::root(self.state_dir.as_deref());
        control::find(&root, self.deployment.as_deref())
            .await
            .map_err(|e| match e {
                NotFound::NoneRunning(why) => Failure::Failed(why),
                NotFound::Ambiguous(why) => Failure::Usage(why),
            })
    }
}

/// How a verb failed, which decides its exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The operation failed: exit 1.
    Failed(String),
    /// The command line was wrong: exit 2.
    Usage(String),
}

impl Failure {
    /// Print the reason and give the exit code.
    pub(crate) fn report(self) -> ExitCode {
        match self {
            Failure::Failed(why) => {
                eprintln!("error: {why}");
                ExitCode::FAILURE
            }
            Failure::Usage(why) => {
                eprintln!("error: {why}");
                ExitCode::from(EXIT_INVALID)
            }
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Failed(format!("{e:#}"))
    }
}

/// `SERVICE` or `SERVICE/REPLICA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplicaRef {
    /// Service.
    pub(crate) service: String,
    /// Replica index, if one was named.
    pub(crate) replica: Option<u32>,
}

impl FromStr for ReplicaRef {
    type Err = String;

    fn from_str(s: &str) -> Result<ReplicaRef, String> {
        let (service, replica) = match s.split_once('/') {
            Some((service, r)) => {
                let r = r.parse::<u32>().map_err(|_| {
                    format!("expected SERVICE or SERVICE/REPLICA (e.g. web/0), got {s:?}")
                })?;
                (service, Some(r))
            }
            None => (s, None),
        };
        if service.is_empty() {
            return Err(format!("expected SERVICE or SERVICE/REPLICA, got {s:?}"));
        }
        Ok(ReplicaRef {
            service: service.to_string(),
            replica,
        })
    }
}

impl fmt::Display for ReplicaRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.replica {
            Some(r) => write!(f, "{}/{r}", self.service),
            None => f.write_str(&self.service),
        }
    }
}

/// Flags of `herdsman logs`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LogsArgs {
    /// `SERVICE` (every replica, each line prefixed) or `SERVICE/REPLICA`.
    #[arg(value_name = "SERVICE[/REPLICA]")]
    target: ReplicaRef,
    /// How many of the last lines to show first.
    #[arg(long, value_name = "N", default_value_t = 100)]
    tail: usize,
    /// Keep printing new lines until Ctrl-C (or the run stops).
    #[arg(short, long)]
    follow: bool,
    #[command(flatten)]
    on: Target,
}

/// Flags of `herdsman restart`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RestartArgs {
    /// `SERVICE` (every replica, one at a time) or `SERVICE/REPLICA`.
    #[arg(value_name = "SERVICE[/REPLICA]")]
    target: ReplicaRef,
    /// How long each replica may take to be running and healthy again.
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    on: Target,
}

/// Flags of `herdsman stop` and `herdsman start`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServiceArgs {
    /// The service.
    #[arg(value_name = "SERVICE")]
    service: String,
    #[command(flatten)]
    on: Target,
}

/// Flags of `herdsman scale`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ScaleArgs {
    /// The service.
    #[arg(value_name = "SERVICE")]
    service: String,
    /// Desired replicas.
    #[arg(value_name = "N")]
    replicas: u32,
    #[command(flatten)]
    on: Target,
}

/// Flags of `herdsman events`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct EventsArgs {
    /// One JSON object per event (as `/v1/events`) instead of a line of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    on: Target,
}

/// `herdsman logs`.
pub(crate) async fn logs(args: LogsArgs) -> ExitCode {
    let prefix = args.target.replica.is_none();
    let request = Request::Logs {
        service: args.target.service.clone(),
        replica: args.target.replica,
        tail: args.tail,
        follow: args.follow,
    };
    let tty = std::io::stdout().is_terminal();
    exchange(&args.on, request, |answer| match answer {
        Answer::Log {
            service,
            replica,
            line,
        } => {
            let line = if tty { escape(&line) } else { line };
            if prefix {
                say(&format!("{service}/{replica} | {line}"))
            } else {
                say(&line)
            }
        }
        Answer::Missed { count } => {
            eprintln!("({count} lines not shown: too slow to read)");
            true
        }
        _ => true,
    })
    .await
}

/// `herdsman restart`.
pub(crate) async fn restart(args: RestartArgs) -> ExitCode {
    let request = Request::Restart {
        service: args.target.service.clone(),
        replica: args.target.replica,
        ready_within_ms: args.timeout.as_millis() as u64,
    };
    exchange(&args.on, request, |_| true).await
}

/// `herdsman stop`.
pub(crate) async fn stop(args: ServiceArgs) -> ExitCode {
    let request = Request::Stop {
        service: args.service,
    };
    exchange(&args.on, request, |_| true).await
}

/// `herdsman start`.
pub(crate) async fn start(args: ServiceArgs) -> ExitCode {
    let request = Request::Start {
        service: args.service,
    };
    exchange(&args.on, request, |_| true).await
}

/// `herdsman scale`.
pub(crate) async fn scale(args: ScaleArgs) -> ExitCode {
    let request = Request::Scale {
        service: args.service,
        replicas: args.replicas,
    };
    exchange(&args.on, request, |_| true).await
}

/// `herdsman events`.
pub(crate) async fn events(args: EventsArgs) -> ExitCode {
    let json = args.json;
    exchange(&args.on, Request::Events, |answer| match answer {
        Answer::Event { event } => {
            if json {
                say(&serde_json::to_string(&event).unwrap_or_default())
            } else {
                say(&escape(&event_line(&event)))
            }
        }
        Answer::Missed { count } => {
            if json {
                say(&format!(r#"{{"event":"missed","count":{count}}}"#))
            } else {
                say(&format!("({count} events missed: too slow to read)"))
            }
        }
        _ => true,
    })
    .await
}

/// Find the deployment, send `request`, hand each answer to `show` (which returns false
/// once stdout is gone), print progress and the outcome, and give the exit code.
pub(crate) async fn exchange(
    on: &Target,
    request: Request,
    mut show: impl FnMut(Answer) -> bool,
) -> ExitCode {
    let found = match on.find().await {
        Ok(f) => f,
        Err(failure) => return failure.report(),
    };
    let mut client = match Client::connect(&found.socket, request).await {
        Ok(c) => c,
        Err(e) => return Failure::from(e).report(),
    };
    loop {
        match client.next().await {
            Ok(Some(Answer::Ok { message })) => {
                if !message.is_empty() {
                    say(&message);
                }
                return ExitCode::SUCCESS;
            }
            Ok(Some(Answer::Error { message, usage })) => {
                let failure = if usage {
                    Failure::Usage(message)
                } else {
                    Failure::Failed(message)
                };
                return failure.report();
            }
            Ok(Some(Answer::Progress { message })) => {
                eprintln!("{message}");
            }
            Ok(Some(answer)) => {
                if !show(answer) {
                    // stdout was closed (`| head`): nothing more to do.
                    return ExitCode::SUCCESS;
                }
            }
            Ok(None) => {
                return Failure::Failed(format!(
                    "deployment {:?} stopped before answering",
                    found.deployment
                ))
                .report()
            }
            Err(e) => return Failure::from(e).report(),
        }
    }
}

/// Print a line on stdout; false once stdout is closed.
fn say(line: &str) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

/// Control characters written as escapes, so nothing a workload printed can move the
/// cursor or retitle the terminal.
pub(crate) fn escape(s: &str) -> String {
    if !s.chars().any(|c| c.is_control() && c != '\t') {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `+3.2s  web/0 restarting now (restart 1)`: an event as a line of text.
pub(crate) fn event_line(event: &Event) -> String {
    let at = humanize(Duration::from_millis(event.at_ms));
    let text = crate::notices::notice(&event.kind).unwrap_or_else(|| match &event.kind {
        EventKind::ReplicaStarted {
            service,
            replica,
            pid,
            ..
        } => match pid {
            Some(pid) => format!("{service}/{replica} started (pid {pid})"),
            None => format!("{service}/{replica} started"),
        },
        EventKind::ProbeFailed {
            service,
            replica,
            reason,
        } => format!("{service}/{replica} health check failed: {reason}"),
        EventKind::DeploymentStable { after_ms } => format!(
            "deployment is stable (after {})",
            humanize(Duration::from_millis(*after_ms))
        ),
        EventKind::DeploymentUnstable => "deployment is not stable".to_string(),
        EventKind::StabilizationTimedOut { failing } => format!(
            "deployment did not become stable in time: {} service{} not ready",
            failing.len(),
            crate::notices::plural(failing.len() as u64)
        ),
        EventKind::DeploymentStopped => "deployment stopped".to_string(),
        other => format!("{other:?}"),
    });
    format!("+{at}  {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_a_service_or_a_service_and_replica() {
        assert_eq!(
            "web".parse(),
            Ok(ReplicaRef {
                service: "web".into(),
                replica: None
            })
        );
        assert_eq!(
            "web/2".parse(),
            Ok(ReplicaRef {
                service: "web".into(),
                replica: Some(2)
            })
        );
        assert!("web/x".parse::<ReplicaRef>().is_err());
        assert!("/1".parse::<ReplicaRef>().is_err());
    }

    #[test]
    fn control_characters_from_a_workload_are_escaped() {
        assert_eq!(escape("plain\ttext"), "plain\ttext");
        assert_eq!(escape("\x1b[2Jgone"), "\\u{1b}[2Jgone");
    }

    #[test]
    fn every_event_gets_a_line_with_its_time() {
        let event = Event {
            at_ms: 3200,
            deployment: "shop".into(),
            kind: EventKind::DeploymentStable { after_ms: 1500 },
        };
        assert_eq!(
            event_line(&event),
            "+3.2s  deployment is stable (after 1.5s)"
        );
    }
}
