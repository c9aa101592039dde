//! State kept across runs of herdsman (`--state-dir DIR`): restart counts, last exits
//! and recent events in `DIR/<deployment>.state.json`, written atomically (temp file in
//! the same directory, write, fsync, rename, fsync the directory) by a background task
//! that is fed by the event stream, debounced, and never awaited by the actors.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herdsman_core::{Event, EventKind, EventStream, Received, StatusBoard};
use herdsman_runtime::Exit;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::terminal::escape;

/// Writes are at least this far apart: a rename costs up to a millisecond on a slow disk
/// and a crash loop emits events much faster than that matters.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(500);

/// How many recent events the file keeps.
pub(crate) const RECENT_EVENTS: usize = 100;

/// The format version written in the file.
const FORMAT: u32 = 1;

/// The file's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SavedState {
    /// Format version, 1.
    pub(crate) format: u32,
    /// Deployment name.
    pub(crate) deployment: String,
    /// When it was written, milliseconds since the Unix epoch.
    pub(crate) saved_at_unix_ms: u64,
    /// Every replica that has a status, by service then index.
    pub(crate) replicas: Vec<SavedReplica>,
    /// The last notable events (probe failures left out), oldest first.
    pub(crate) recent_events: Vec<Event>,
}

/// One replica's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SavedReplica {
    /// Service.
    pub(crate) service: String,
    /// Replica index.
    pub(crate) replica: u32,
    /// Restarts in the run that wrote the file.
    pub(crate) restarts: u32,
    /// Restarts over every run recorded in this file.
    pub(crate) restarts_total: u64,
    /// Exit code of the last exit, in any run.
    pub(crate) last_exit_code: Option<i32>,
    /// The last exit, in any run.
    pub(crate) last_exit: Option<Exit>,
}

/// What was found at start.
#[derive(Debug)]
pub(crate) enum Previous {
    /// No file: the first run with this state directory.
    Missing,
    /// A file that cannot be used, and why. It is ignored (and replaced).
    Unusable(String),
    /// The last run's state.
    Found(SavedState),
}

/// `DIR/<deployment>.state.json`.
pub(crate) fn path_in(dir: &Path, deployment: &str) -> PathBuf {
    dir.join(format!("{deployment}.state.json"))
}

/// Read the previous run's state. Never fails: a file that cannot be read or parsed, or
/// that belongs to another deployment, is `Unusable`.
pub(crate) fn read_previous(path: &Path, deployment: &str) -> Previous {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Previous::Missing,
        Err(e) => return Previous::Unusable(format!("cannot read it: {e}")),
    };
    match serde_json::from_slice::<SavedState>(&bytes) {
        Ok(s) if s.format != FORMAT => {
            Previous::Unusable(format!("unknown format {} (expected {FORMAT})", s.format))
        }
        Ok(s) if s.deployment != deployment => Previous::Unusable(format!(
            "it belongs to deployment {:?}, not {deployment:?}",
            s.deployment
        )),
        Ok(s) => Previous::Found(s),
        Err(e) => Previous::Unusable(format!("not valid state JSON: {e}")),
    }
}

/// The lines printed at start about what was found.
pub(crate) fn describe(path: &Path, previous: &Previous) -> Vec<String> {
    let shown = path.display();
    match previous {
        Previous::Missing => vec![format!(
            "state: no previous state in {shown}, starting afresh"
        )],
        Previous::Unusable(why) => {
            vec![format!(
                "warning: ignoring state file {shown}: {}",
                escape(why)
            )]
        }
        Previous::Found(s) => {
            let ago = now_unix_ms().saturating_sub(s.saved_at_unix_ms);
            let total = s
                .replicas
                .iter()
                .fold(0u64, |n, r| n.saturating_add(r.restarts_total));
            let mut lines = vec![format!(
                "state: previous run saved {} ago in {shown}: {total} restart{} so far",
                humantime::format_duration(Duration::from_secs(ago / 1000)),
                crate::notices::plural(total)
            )];
            for r in &s.replicas {
                if r.restarts_total == 0 && r.last_exit.is_none() {
                    continue;
                }
                let exit = r
                    .last_exit
                    .map(|e| format!(", last {e}"))
                    .unwrap_or_default();
                lines.push(format!(
                    "  {}/{}: {} restart{}{exit}",
                    escape(&r.service),
                    r.replica,
                    r.restarts_total,
                    crate::notices::plural(r.restarts_total)
                ));
            }
            lines
        }
    }
}

/// The background writer of one state file.
pub(crate) struct StateWriter {
    path: PathBuf,
    deployment: String,
    board: StatusBoard,
    /// Restarts and last exits of earlier runs, by (service, replica).
    earlier: BTreeMap<(String, u32), SavedReplica>,
    recent: VecDeque<Event>,
    /// Whether the last write failed (warn once per failure streak).
    failing: bool,
}

impl StateWriter {
    /// A writer of `path` for the deployment on `board`, carrying `previous` forward.
    pub(crate) fn new(path: PathBuf, board: StatusBoard, previous: &Previous) -> StateWriter {
        let deployment = board.snapshot().deployment;
        let (earlier, recent) = match previous {
            Previous::Found(s) => (
                s.replicas
                    .iter()
                    .map(|r| ((r.service.clone(), r.replica), r.clone()))
                    .collect(),
                s.recent_events.iter().cloned().collect(),
            ),
            _ => (BTreeMap::new(), VecDeque::new()),
        };
        StateWriter {
            path,
            deployment,
            board,
            earlier,
            recent,
            failing: false,
        }
    }

    /// Keep the file up to date until `stop` is set (then write once more) or the
    /// deployment is gone. Writes at most every [`DEBOUNCE`], off the actors' path.
    pub(crate) async fn keep(mut self, mut events: EventStream, mut stop: watch::Receiver<bool>) {
        // Written once at start, so the file exists as soon as the run does.
        let mut dirty = true;
        let mut next_write = Instant::now();
        loop {
            tokio::select! {
                r = events.recv() => match r {
                    Some(Received::Event(e)) => {
                        if remembered(&e.kind) {
                            if self.recent.len() >= RECENT_EVENTS {
                                self.recent.pop_front();
                            }
                            self.recent.push_back(e);
                        }
                        dirty = true;
                    }
                    Some(Received::Missed(_)) => dirty = true,
                    None => break,
                },
                _ = tokio::time::sleep_until(next_write), if dirty => {
                    self.write().await;
                    dirty = false;
                    next_write = Instant::now() + DEBOUNCE;
                }
                _ = crate::stop::stopped(&mut stop) => break,
            }
        }
        self.write().await;
    }

    /// The state as of now.
    fn snapshot(&self) -> SavedState {
        let status = self.board.snapshot();
        let mut replicas = Vec::new();
        for s in &status.services {
            for r in &s.replicas {
                let before = self.earlier.get(&(s.name.clone(), r.replica));
                let (last_exit, last_exit_code) = match (r.last_exit, before) {
                    (Some(e), _) => (Some(e), r.last_exit_code),
                    (None, Some(b)) => (b.last_exit, b.last_exit_code),
                    (None, None) => (None, r.last_exit_code),
                };
                replicas.push(SavedReplica {
                    service: s.name.clone(),
                    replica: r.replica,
                    restarts: r.restarts,
                    restarts_total: before
                        .map_or(0, |b| b.restarts_total)
                        .saturating_add(u64::from(r.restarts)),
                    last_exit_code,
                    last_exit,
                });
            }
        }
        // Replicas of earlier runs that this run has not (yet) created are kept.
        for ((service, replica), b) in &self.earlier {
            if !replicas
                .iter()
                .any(|r| &r.service == service && r.replica == *replica)
            {
                replicas.push(SavedReplica {
                    restarts: 0,
                    ..b.clone()
                });
            }
        }
        replicas.sort_by(|a, b| (&a.service, a.replica).cmp(&(&b.service, b.replica)));
        SavedState {
            format: FORMAT,
            deployment: self.deployment.clone(),
            saved_at_unix_ms: now_unix_ms(),
            replicas,
            recent_events: self.recent.iter().cloned().collect(),
        }
    }

    async fn write(&mut self) {
        let state = self.snapshot();
        let path = self.path.clone();
        let result = match serde_json::to_vec_pretty(&state) {
            Ok(bytes) => tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e))),
            Err(e) => Err(io::Error::other(e)),
        };
        match result {
            Ok(()) => {
                if self.failing {
                    eprintln!("state: writing {} works again", self.path.display());
                }
                self.failing = false;
            }
            Err(e) => {
                if !self.failing {
                    eprintln!(
                        "warning: cannot write state file {}: {e} (will keep trying)",
                        self.path.display()
                    );
                }
                self.failing = true;
            }
        }
    }
}

/// Events worth keeping: everything but routine probe failures.
fn remembered(kind: &EventKind) -> bool {
    !matches!(kind, EventKind::ProbeFailed { .. })
}

/// Replace `path` with `bytes` so that a reader (or a crash) sees the old file or the new
/// one, never a mix: temp file in the same directory, write, fsync, rename, fsync the
/// directory so the rename itself is durable.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use herdsman_runtime::ExitReason;

    use super::*;

    fn saved(deployment: &str) -> SavedState {
        SavedState {
            format: FORMAT,
            deployment: deployment.into(),
            saved_at_unix_ms: now_unix_ms(),
            replicas: vec![SavedReplica {
                service: "flaky".into(),
                replica: 0,
                restarts: 3,
                restarts_total: 5,
                last_exit_code: Some(3),
                last_exit: Some(Exit {
                    reason: ExitReason::Code(3),
                    ran_for: Duration::from_secs(2),
                }),
            }],
            recent_events: vec![Event {
                at_ms: 10,
                deployment: deployment.into(),
                kind: EventKind::DeploymentStable { after_ms: 10 },
            }],
        }
    }

    #[test]
    fn a_written_state_reads_back_and_no_temp_file_is_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_in(dir.path(), "shop");
        let state = saved("shop");
        let bytes = serde_json::to_vec(&state).expect("serializable");
        write_atomically(&path, &bytes).expect("written");
        write_atomically(&path, &bytes).expect("replaced");
        match read_previous(&path, "shop") {
            Previous::Found(s) => assert_eq!(s, state),
            other => panic!("expected the state back, got {other:?}"),
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("readable")
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("shop.state.json")]);
    }

    #[test]
    fn a_missing_corrupt_or_foreign_file_is_reported_and_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_in(dir.path(), "shop");
        assert!(matches!(read_previous(&path, "shop"), Previous::Missing));
        std::fs::write(&path, b"{\"format\": 1, \"deploy").expect("written");
        let corrupt = read_previous(&path, "shop");
        assert!(
            matches!(&corrupt, Previous::Unusable(why) if why.contains("not valid state JSON"))
        );
        assert!(describe(&path, &corrupt)[0].starts_with("warning: ignoring state file"));
        let bytes = serde_json::to_vec(&saved("other")).expect("serializable");
        std::fs::write(&path, bytes).expect("written");
        assert!(
            matches!(read_previous(&path, "shop"), Previous::Unusable(why) if why.contains("\"other\""))
        );
    }

    #[test]
    fn the_previous_run_is_summarised_per_replica_with_restarts() {
        let lines = describe(
            Path::new("s/shop.state.json"),
            &Previous::Found(saved("shop")),
        );
        assert!(lines[0].contains("5 restarts so far"), "{lines:?}");
        assert_eq!(
            lines[1],
            "  flaky/0: 5 restarts, last exit code 3 after 2.0s"
        );
    }

    #[test]
    fn a_hostile_state_file_cannot_wrap_the_total_or_reach_the_terminal_raw() {
        let mut state = saved("shop");
        state.replicas[0].service = "x\x1b]0;pwned\x07\x1b[2J".into();
        state.replicas[0].restarts_total = u64::MAX;
        state.replicas.push(state.replicas[0].clone());
        let lines = describe(Path::new("s/shop.state.json"), &Previous::Found(state));
        assert!(
            lines[0].contains("18446744073709551615 restarts so far"),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("  x\\x1b]0;pwned\\x07\\x1b[2J/0: "),
            "{lines:?}"
        );
        assert!(lines.iter().all(|l| !l.contains('\x1b')), "{lines:?}");
    }
}
