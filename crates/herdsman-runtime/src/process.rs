//! [`ProcessRuntime`]: each replica is a real OS process leading its own process group,
//! its exit reported the moment it is reaped, its output kept in a bounded ring.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use herdsman_probe::CommandOutput;
use herdsman_spec::StopSignal;
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::launch::{start_error, Launch};
use crate::log_buffer::{pump, LogBuffer};
use crate::process_group::{exit_reason, to_signal, ProcessGroup};
use crate::{
    ContainerId, ContainerSpec, Exit, ExitReason, ExitSender, ExitWatch, Runtime, RuntimeError,
    Started,
};

/// How long to wait for a process to be reaped after SIGKILL before reporting an error.
/// SIGKILL cannot be ignored, so only a process stuck in the kernel (a dead NFS mount)
/// takes longer.
const REAP_AFTER_KILL: Duration = Duration::from_secs(5);

/// Settings of a [`ProcessRuntime`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessConfig {
    /// Directory to which each replica's output is also appended, in
    /// `<deployment>-<service>-<replica>.log` (created if missing). `None` keeps output
    /// in memory only.
    pub log_dir: Option<PathBuf>,
    /// Most lines of output kept in memory per replica (default 1000).
    pub log_lines: usize,
    /// Most bytes of output kept in memory per replica (default 1 MiB); whichever bound is
    /// reached first drops the oldest lines.
    pub log_bytes: usize,
}

impl Default for ProcessConfig {
    fn default() -> ProcessConfig {
        ProcessConfig {
            log_dir: None,
            log_lines: 1000,
            log_bytes: 1024 * 1024,
        }
    }
}

/// The default runtime: every replica is a real OS process on this host.
///
/// - The command is the service's `entrypoint` + `args`, expanded for the replica; the
///   environment is inherited, plus the template variables (`REPLICA`, `PORT`,
///   `PORT_<NAME>`, `SERVICE`, `DEPLOYMENT`), plus the service's `env` (which wins).
/// - Each process leads its own process group. [`Runtime::stop`] signals the group, waits
///   up to the grace period for the main process, then SIGKILLs the group. When the main
///   process exits by itself, whatever it left in its group is SIGKILLed at once. A
///   process that leaves the group (`setsid`) escapes both; containing those needs cgroups.
/// - Exits are reported the moment the main process is reaped (tokio's SIGCHLD handling,
///   one task per process), never by polling.
/// - stdout and stderr go into a ring of the last [`ProcessConfig::log_lines`] lines /
///   [`ProcessConfig::log_bytes`] bytes, and optionally to a file.
/// - [`ProcessRuntime::shutdown`] kills and reaps everything it started; dropping the
///   runtime SIGKILLs every live group (best effort, without waiting).
///
/// `new` needs no tokio runtime; `start` must run inside one.
///
/// ```no_run
/// use std::sync::Arc;
/// use herdsman_runtime::{ProcessConfig, ProcessRuntime, Runtime};
///
/// let runtime: Arc<dyn Runtime> = Arc::new(ProcessRuntime::new(ProcessConfig {
///     log_dir: Some("/var/log/herdsman".into()),
///     ..ProcessConfig::default()
/// }));
/// # let _ = runtime;
/// ```
#[derive(Debug)]
pub struct ProcessRuntime {
    config: ProcessConfig,
    replicas: Mutex<HashMap<ContainerId, Arc<Replica>>>,
    /// Set by `shutdown` and `drop`: no process may start after it.
    closed: AtomicBool,
}

/// One container: what to run, its captured output, and where it is in its life.
#[derive(Debug)]
struct Replica {
    launch: Launch,
    logs: Arc<LogBuffer>,
    /// Held across the spawn (which does not await), so a concurrent stop sees either
    /// `Created` or `Running`, never a process it cannot find.
    state: Mutex<ReplicaState>,
}

#[derive(Debug)]
struct ReplicaState {
    phase: Phase,
    /// The output reader tasks, aborted on remove (a process that escaped the group may
    /// hold a pipe open forever).
    readers: Vec<AbortHandle>,
}

#[derive(Debug)]
enum Phase {
    Created,
    Running {
        group: ProcessGroup,
        /// Becomes `Some` once the main process is reaped and its group killed.
        reaped: watch::Receiver<Option<Exit>>,
    },
    Exited,
}

impl Replica {
    fn state(&self) -> MutexGuard<'_, ReplicaState> {
        // Every update of the state is a single assignment, so a poisoned lock still holds
        // a consistent value.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The group and its reap notification, while the main process has not been reaped.
    fn running(&self) -> Option<(ProcessGroup, watch::Receiver<Option<Exit>>)> {
        match &self.state().phase {
            Phase::Running { group, reaped } => Some((*group, reaped.clone())),
            Phase::Created | Phase::Exited => None,
        }
    }
}

impl ProcessRuntime {
    /// A runtime with these settings. Starts nothing and needs no tokio runtime.
    pub fn new(config: ProcessConfig) -> ProcessRuntime {
        ProcessRuntime {
            config,
            replicas: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// The settings it was created with.
    pub fn config(&self) -> &ProcessConfig {
        &self.config
    }

    /// SIGKILL every process group this runtime started and wait until each main process
    /// is reaped (at most a few seconds for a process stuck in the kernel). Afterwards
    /// `start` fails: nothing can be started behind the shutdown's back.
    ///
    /// # Cancel safety
    /// Cancelling it stops the waiting only: every group has been sent SIGKILL before the
    /// first await, and the reaper tasks carry on.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let running: Vec<_> = self
            .replicas()
            .values()
            .filter_map(|r| r.running())
            .collect();
        for (group, _) in &running {
            group.kill();
        }
        let deadline = Instant::now() + REAP_AFTER_KILL;
        for (group, mut reaped) in running {
            if tokio::time::timeout_at(deadline, wait_reaped(&mut reaped))
                .await
                .is_err()
            {
                tracing::warn!(?group, "process not reaped after SIGKILL at shutdown");
            }
        }
    }

    fn replicas(&self) -> MutexGuard<'_, HashMap<ContainerId, Arc<Replica>>> {
        // Map updates are single inserts and removes; a poisoned lock is still consistent.
        self.replicas.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn replica(&self, id: &ContainerId) -> Result<Arc<Replica>, RuntimeError> {
        self.replicas()
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::UnknownContainer { id: id.to_string() })
    }

    /// The replica's log file, opened for appending, if a log directory is configured.
    fn open_log_file(&self, id: &ContainerId) -> Result<Option<std::fs::File>, RuntimeError> {
        let Some(dir) = &self.config.log_dir else {
            return Ok(None);
        };
        std::fs::create_dir_all(dir).map_err(|e| {
            start_error(
                id,
                format!("cannot create log directory {}: {e}", dir.display()),
            )
        })?;
        let path = dir.join(format!(
            "{}-{}-{}.log",
            id.deployment, id.service, id.replica
        ));
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map(Some)
            .map_err(|e| start_error(id, format!("cannot open log file {}: {e}", path.display())))
    }

    /// Start the reader tasks for the child's stdout and stderr.
    fn capture_output(
        &self,
        child: &mut Child,
        logs: &Arc<LogBuffer>,
        file: Option<std::fs::File>,
    ) -> Vec<AbortHandle> {
        // Each reader gets its own append-mode handle; appends from both land whole.
        let second = file.as_ref().and_then(|f| f.try_clone().ok());
        let files = [file, second].map(|f| f.map(tokio::fs::File::from_std));
        let [out_file, err_file] = files;
        let max_line = self.config.log_bytes;
        let mut readers = Vec::with_capacity(2);
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(pump(out, logs.clone(), out_file, max_line)).abort_handle());
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(pump(err, logs.clone(), err_file, max_line)).abort_handle());
        }
        readers
    }
}

/// Wait until the main process has been reaped. Also returns when the reaper task is gone
/// without reporting (its runtime shut down): there is nothing left to wait for then.
async fn wait_reaped(reaped: &mut watch::Receiver<Option<Exit>>) {
    let _ = reaped.wait_for(Option::is_some).await;
}

/// The reaper: one task per process, resolving the moment tokio's SIGCHLD handling reaps
/// the main process. It kills what the process left in its group, records the exit, wakes
/// any `stop` waiting for it and reports the exit.
async fn reap(
    mut child: Child,
    group: ProcessGroup,
    started_at: Instant,
    replica: Arc<Replica>,
    reaped: watch::Sender<Option<Exit>>,
    exit_tx: ExitSender,
) {
    let reason = match child.wait().await {
        Ok(status) => exit_reason(status),
        Err(e) => {
            tracing::warn!(?group, error = %e, "cannot wait for process");
            ExitReason::Lost
        }
    };
    let exit = Exit {
        reason,
        ran_for: started_at.elapsed(),
    };
    // The leader is gone but its group id stays valid while members remain, so this
    // reaches every process it forked and left behind.
    group.kill();
    replica.state().phase = Phase::Exited;
    reaped.send_replace(Some(exit));
    let _ = exit_tx.send(exit);
}

#[async_trait::async_trait]
impl Runtime for ProcessRuntime {
    async fn create(&self, id: &ContainerId, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let launch = Launch::from_spec(id, spec)?;
        let replica = Arc::new(Replica {
            launch,
            logs: Arc::new(LogBuffer::new(self.config.log_lines, self.config.log_bytes)),
            state: Mutex::new(ReplicaState {
                phase: Phase::Created,
                readers: Vec::new(),
            }),
        });
        let mut replicas = self.replicas();
        if replicas.get(id).is_some_and(|r| r.running().is_some()) {
            return Err(start_error(id, "it already exists and is running".into()));
        }
        replicas.insert(id.clone(), replica);
        Ok(())
    }

    async fn start(&self, id: &ContainerId) -> Result<Started, RuntimeError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(start_error(id, "the runtime is shut down".into()));
        }
        let replica = self.replica(id)?;
        replica.launch.check_workdir(id)?;
        let log_file = self.open_log_file(id)?;

        let mut state = replica.state();
        match state.phase {
            Phase::Created => {}
            Phase::Running { .. } => return Err(start_error(id, "it is already running".into())),
            Phase::Exited => {
                return Err(start_error(
                    id,
                    "it has already run; create the next generation".into(),
                ))
            }
        }
        let started_at = Instant::now();
        let mut child = replica
            .launch
            .command()
            .spawn()
            .map_err(|e| replica.launch.spawn_error(id, &e))?;
        let pid = child.id();
        let Some(group) = pid.and_then(ProcessGroup::led_by) else {
            // Cannot happen for a freshly spawned child; refuse rather than signal a
            // group that is not ours.
            let _ = child.start_kill();
            return Err(start_error(id, format!("unusable pid {pid:?}")));
        };
        let (reaped_tx, reaped_rx) = watch::channel(None);
        let (exit_tx, exit) = ExitWatch::channel();
        state.readers = self.capture_output(&mut child, &replica.logs, log_file);
        state.phase = Phase::Running {
            group,
            reaped: reaped_rx,
        };
        drop(state);
        tokio::spawn(reap(
            child,
            group,
            started_at,
            replica.clone(),
            reaped_tx,
            exit_tx,
        ));
        Ok(Started { pid, exit })
    }

    async fn stop(
        &self,
        id: &ContainerId,
        signal: StopSignal,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let replica = self.replica(id)?;
        let Some((group, mut reaped)) = replica.running() else {
            return Ok(());
        };
        group.signal(to_signal(signal));
        if tokio::time::timeout(grace, wait_reaped(&mut reaped))
            .await
            .is_ok()
        {
            // The reaper has killed what was left of the group.
            return Ok(());
        }
        group.kill();
        tokio::time::timeout(REAP_AFTER_KILL, wait_reaped(&mut reaped))
            .await
            .map_err(|_| RuntimeError::Io {
                id: id.to_string(),
                what: "stop",
                source: io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("not reaped {REAP_AFTER_KILL:?} after SIGKILL"),
                ),
            })
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        let Some(replica) = self.replicas().remove(id) else {
            return Ok(());
        };
        if let Some((group, mut reaped)) = replica.running() {
            // Removing a running container must not leak its processes.
            group.kill();
            tokio::time::timeout(REAP_AFTER_KILL, wait_reaped(&mut reaped))
                .await
                .map_err(|_| RuntimeError::Io {
                    id: id.to_string(),
                    what: "remove",
                    source: io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("not reaped {REAP_AFTER_KILL:?} after SIGKILL"),
                    ),
                })?;
        }
        for reader in replica.state().readers.drain(..) {
            reader.abort();
        }
        Ok(())
    }

    async fn exec(
        &self,
        id: &ContainerId,
        command: &str,
        timeout: Duration,
    ) -> Result<CommandOutput, RuntimeError> {
        let request = self.replica(id)?.launch.exec_request(command);
        herdsman_probe::run_command(&request, timeout)
            .await
            .map_err(|e| RuntimeError::Io {
                id: id.to_string(),
                what: "exec",
                source: io::Error::other(e),
            })
    }

    fn logs(&self, id: &ContainerId, lines: usize) -> Vec<String> {
        let logs = self.replicas().get(id).map(|r| r.logs.clone());
        logs.map(|l| l.tail(lines)).unwrap_or_default()
    }
}

impl Drop for ProcessRuntime {
    /// SIGKILL every live process group, synchronously. The reaper tasks reap them if their
    /// tokio runtime is still running; otherwise tokio's orphan queue does.
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        for replica in self.replicas().values() {
            if let Some((group, _)) = replica.running() {
                group.kill();
            }
        }
    }
}
