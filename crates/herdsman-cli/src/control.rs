//! The control protocol of a running `herdsman run`, spoken over `control.sock` in the
//! deployment's state directory: where the socket is, how a client finds the running
//! deployments under a state root, and the messages.
//!
//! One request per connection, one JSON object on one line: `{"v":1,"kind":"scale",
//! "service":"web","replicas":3}`. The answer is JSON lines too: zero or more
//! intermediate lines (`progress`, `status`, `event`, `log`, `missed`, `plan`), then, for
//! a request that ends, one final `ok` or `error`. Streaming requests (`watch`, `events`,
//! `rollout`, `logs` with `follow`) end when the client hangs up or the run stops. A new verb is a
//! new `kind`; a server that does not know it answers an `error` naming it, so an older
//! herdsman tells a newer client plainly what it cannot do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use herdsman_core::{ApplyPlan, DeploymentStatus, Event};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// The protocol version this herdsman speaks.
pub(crate) const VERSION: u32 = 1;

/// The socket's file name in a deployment's state directory.
pub(crate) const SOCKET: &str = "control.sock";

/// Longest request line accepted, newline included: an `apply` carries a whole spec
/// (at most 8 MiB), which JSON escaping may make longer.
pub(crate) const MAX_REQUEST: usize = 2 * herdsman_spec::MAX_SPEC_BYTES + 64 * 1024;

/// Longest answer line a client accepts (a status of many replicas is long).
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// How long a client waits to connect and to hear back on a socket it found.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The control socket of the deployment whose state directory is `state_dir`.
pub(crate) fn control_socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

/// A request, as sent: the protocol version and what is asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    /// Protocol version of the client.
    pub(crate) v: u32,
    /// What is asked.
    #[serde(flatten)]
    pub(crate) request: Request,
}

/// What a client may ask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Request {
    /// The status once (final answer: one `status` then `ok`).
    Status,
    /// The status now and after every event, until the client hangs up.
    Watch,
    /// Every event from now on, until the client hangs up.
    Events,
    /// A replica's (or every replica's) last output lines; `follow` streams new ones.
    Logs {
        /// Service.
        service: String,
        /// One replica, or every replica of the service.
        replica: Option<u32>,
        /// How many of the last lines to send first.
        tail: usize,
        /// Keep sending new lines.
        follow: bool,
    },
    /// Replace replicas gracefully, one at a time, each ready again before the next.
    Restart {
        /// Service.
        service: String,
        /// One replica, or every replica of the service.
        replica: Option<u32>,
        /// How long each replica may take to be ready again, in milliseconds.
        ready_within_ms: u64,
    },
    /// Take a service to 0 replicas.
    Stop {
        /// Service.
        service: String,
    },
    /// Bring a service back to its spec's replica count.
    Start {
        /// Service.
        service: String,
    },
    /// Set a service's desired replica count.
    Scale {
        /// Service.
        service: String,
        /// Desired replicas.
        replicas: u32,
    },
    /// Roll the deployment to a changed spec (final answer: one `plan` then `ok`).
    Apply {
        /// The spec's text, as read from the file.
        spec: String,
        /// The file's name, to label problems.
        file: String,
        /// The file's directory, which relative `command.workdir`s are resolved against.
        base_dir: PathBuf,
        /// Only say what would change.
        dry_run: bool,
    },
    /// Roll back to the spec before the current one (final answer: `plan` then `ok`).
    Undo,
    /// The rollout's status now and after every event, and the last rollout failure
    /// (as an `event`), until the client hangs up.
    Rollout,
}

/// One line of an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Answer {
    /// Final: the request succeeded.
    Ok {
        /// What was done.
        message: String,
    },
    /// Final: the request failed; `usage` when the request itself was wrong (exit 2).
    Error {
        /// Why.
        message: String,
        /// The request was malformed or asked for something this server cannot do.
        #[serde(default)]
        usage: bool,
    },
    /// How a long operation is going.
    Progress {
        /// What is happening.
        message: String,
    },
    /// The deployment's status.
    Status {
        /// As `/v1/status` has it.
        status: DeploymentStatus,
        /// Time left of each backoff in force, by `service/replica`.
        #[serde(default)]
        backoff_left_ms: BTreeMap<String, u64>,
    },
    /// One event.
    Event {
        /// As `/v1/events` has it.
        event: Event,
    },
    /// Events or lines that could not be sent because the client fell behind.
    Missed {
        /// How many.
        count: u64,
    },
    /// What an `apply` or `undo` changes (or, dry, would change).
    Plan {
        /// The plan, per service.
        plan: ApplyPlan,
        /// Nothing was changed.
        dry_run: bool,
    },
    /// One line of a replica's output.
    Log {
        /// Service.
        service: String,
        /// Replica index.
        replica: u32,
        /// The line.
        line: String,
    },
}

impl Answer {
    /// An `error` answer for an operation that failed.
    pub(crate) fn failed(message: impl Into<String>) -> Answer {
        Answer::Error {
            message: message.into(),
            usage: false,
        }
    }

    /// This answer as one line of JSON, newline included.
    pub(crate) fn line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_else(|e| {
            // Not expected for these types; the client is told rather than left waiting.
            format!(r#"{{"kind":"error","message":"cannot encode an answer: {e}"}}"#)
        });
        line.push('\n');
        line
    }
}

/// A running deployment found under a state root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// Its name, as it answered.
    pub(crate) deployment: String,
    /// Its control socket.
    pub(crate) socket: PathBuf,
}

/// Why no single deployment could be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotFound {
    /// None answers under the root (`-d` given or not): the operation cannot be done.
    NoneRunning(String),
    /// Several answer and `-d` did not choose: the command line must say which.
    Ambiguous(String),
}

/// The control sockets that may exist under `root`: `root/control.sock` (a state
/// directory given directly) and `root/*/control.sock` (one directory per deployment).
pub(crate) fn candidates(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let direct = control_socket_path(root);
    if direct.exists() {
        found.push(direct);
    }
    if let Ok(entries) = std::fs::read_dir(root) {
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        found.extend(
            dirs.iter()
                .map(|d| control_socket_path(d))
                .filter(|s| s.exists()),
        );
    }
    found
}

/// The one running deployment under `root` (named `wanted`, if given). Each candidate
/// socket is asked for its status: one that does not answer is left over from a run
/// that ended, and skipped.
pub(crate) async fn find(root: &Path, wanted: Option<&str>) -> Result<Found, NotFound> {
    let mut running = Vec::new();
    for socket in candidates(root) {
        if let Ok(deployment) = name_of(&socket).await {
            running.push(Found { deployment, socket });
        }
    }
    choose(root, wanted, running)
}

/// Pick the deployment: the one named `wanted`, or the only one.
pub(crate) fn choose(
    root: &Path,
    wanted: Option<&str>,
    mut running: Vec<Found>,
) -> Result<Found, NotFound> {
    let names = |running: &[Found]| {
        running
            .iter()
            .map(|f| format!("  {} ({})", f.deployment, f.socket.display()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    match wanted {
        Some(name) => {
            let all = names(&running);
            running.retain(|f| f.deployment == name);
            match running.len() {
                1 => Ok(running.remove(0)),
                0 if all.is_empty() => Err(NotFound::NoneRunning(format!(
                    "no deployment is running under {} (is `herdsman run` running with this --state-dir?)",
                    root.display()
                ))),
                0 => Err(NotFound::NoneRunning(format!(
                    "deployment {name:?} is not running under {}; running there:\n{all}",
                    root.display()
                ))),
                _ => Err(NotFound::Ambiguous(format!(
                    "deployment {name:?} answers on several sockets under {}; pass the state directory of one with --state-dir:\n{}",
                    root.display(),
                    names(&running)
                ))),
            }
        }
        None => match running.len() {
            1 => Ok(running.remove(0)),
            0 => Err(NotFound::NoneRunning(format!(
                "no deployment is running under {} (is `herdsman run` running with this --state-dir?)",
                root.display()
            ))),
            _ => Err(NotFound::Ambiguous(format!(
                "{} deployments are running under {}; choose one with -d DEPLOYMENT:\n{}",
                running.len(),
                root.display(),
                names(&running)
            ))),
        },
    }
}

/// Ask the deployment at `socket` for its name.
async fn name_of(socket: &Path) -> anyhow::Result<String> {
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(socket, Request::Status))
        .await
        .context("no answer")??;
    let answer = tokio::time::timeout(CONNECT_TIMEOUT, conn.next())
        .await
        .context("no answer")??;
    match answer {
        Some(Answer::Status { status, .. }) => Ok(status.deployment),
        other => anyhow::bail!("unexpected answer {other:?}"),
    }
}

/// A client's connection: one request sent, its answers read line by line.
pub(crate) struct Client {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    /// Kept open: closing it would tell the server the client left.
    _write: tokio::net::unix::OwnedWriteHalf,
}

impl Client {
    /// Connect to `socket` and send `request`.
    ///
    /// # Errors
    /// The socket cannot be reached or written to.
    pub(crate) async fn connect(socket: &Path, request: Request) -> anyhow::Result<Client> {
        let stream = UnixStream::connect(socket)
            .await
            .with_context(|| format!("cannot connect to {}", socket.display()))?;
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_string(&Envelope {
            v: VERSION,
            request,
        })?;
        line.push('\n');
        write
            .write_all(line.as_bytes())
            .await
            .with_context(|| format!("cannot send a request to {}", socket.display()))?;
        Ok(Client {
            lines: BufReader::new(read).lines(),
            _write: write,
        })
    }

    /// The next answer line; `None` when the server closed the connection.
    ///
    /// # Errors
    /// The connection broke, or the server answered something that is not an answer.
    ///
    /// # Cancel safety
    /// Not cancel safe: a cancelled call may lose part of a line.
    pub(crate) async fn next(&mut self) -> anyhow::Result<Option<Answer>> {
        let Some(line) = self.lines.next_line().await.context("connection broken")? else {
            return Ok(None);
        };
        if line.len() > MAX_ANSWER {
            anyhow::bail!("an answer of {} bytes is too long", line.len());
        }
        serde_json::from_str(&line)
            .map(Some)
            .with_context(|| format!("not a herdsman answer: {:?}", truncate(&line, 200)))
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(name: &str, socket: &str) -> Found {
        Found {
            deployment: name.into(),
            socket: socket.into(),
        }
    }

    #[test]
    fn requests_are_one_json_object_with_a_version_and_a_kind() {
        let line = serde_json::to_string(&Envelope {
            v: VERSION,
            request: Request::Scale {
                service: "web".into(),
                replicas: 3,
            },
        })
        .expect("encodable");
        assert_eq!(
            line,
            r#"{"v":1,"kind":"scale","service":"web","replicas":3}"#
        );
        let back: Envelope = serde_json::from_str(&line).expect("decodable");
        assert_eq!(
            back.request,
            Request::Scale {
                service: "web".into(),
                replicas: 3
            }
        );
        assert!(serde_json::from_str::<Envelope>(r#"{"v":1,"kind":"apply"}"#).is_err());
        assert!(serde_json::from_str::<Envelope>(r#"{"v":1,"kind":"promote"}"#).is_err());
        let undo: Envelope = serde_json::from_str(r#"{"v":1,"kind":"undo"}"#).expect("undo");
        assert_eq!(undo.request, Request::Undo);
    }

    #[test]
    fn the_only_deployment_is_chosen_and_several_need_a_name() {
        let root = Path::new("/state");
        let one = vec![found("shop", "/state/shop/control.sock")];
        assert_eq!(choose(root, None, one.clone()), Ok(one[0].clone()));
        let two = vec![
            found("shop", "/state/shop/control.sock"),
            found("blog", "/state/blog/control.sock"),
        ];
        match choose(root, None, two.clone()) {
            Err(NotFound::Ambiguous(why)) => {
                assert!(why.contains("-d DEPLOYMENT"), "{why}");
                assert!(why.contains("shop") && why.contains("blog"), "{why}");
            }
            other => panic!("expected ambiguity, got {other:?}"),
        }
        assert_eq!(choose(root, Some("blog"), two.clone()), Ok(two[1].clone()));
        match choose(root, Some("wiki"), two) {
            Err(NotFound::NoneRunning(why)) => assert!(why.contains("\"wiki\""), "{why}"),
            other => panic!("expected not running, got {other:?}"),
        }
        match choose(root, None, Vec::new()) {
            Err(NotFound::NoneRunning(why)) => assert!(why.contains("/state"), "{why}"),
            other => panic!("expected none running, got {other:?}"),
        }
    }

    #[test]
    fn sockets_are_looked_for_in_the_root_and_one_level_below() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("shop")).expect("dir");
        std::fs::create_dir(root.path().join("idle")).expect("dir");
        std::fs::write(root.path().join("shop").join(SOCKET), "").expect("file");
        std::fs::write(root.path().join(SOCKET), "").expect("file");
        assert_eq!(
            candidates(root.path()),
            vec![
                root.path().join(SOCKET),
                root.path().join("shop").join(SOCKET)
            ]
        );
    }
}
