//! [`ProcessRuntime`]: each replica is a real OS process in its own cgroup (or leading
//! its own process group where no cgroup v2 hierarchy is writable), its exit reported the
//! moment it ends, its output in a file it owns (or a bounded ring without a log
//! directory). The adoption of survivors is in `adoption`.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use herdsman_probe::{CgroupEvents, CommandOutput, StepReport};
use herdsman_spec::{InitStep, ReplicaVars, StopSignal};
use tokio::io::AsyncRead;
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::containment::{Contained, Containment};
use crate::launch::{start_error, Launch, RunHashes};
use crate::log_buffer::{pump, LogBuffer};
use crate::log_file::{self, registered, Rotator};
use crate::process_group::{exit_reason, to_signal, ProcessGroup};
use crate::records::{self, Record, RecordBook};
use crate::{
    ContainerId, ContainerSpec, Exit, ExitReason, ExitSender, ExitWatch, Runtime, RuntimeError,
    Started, Survivor,
};

/// How long to wait for a process to be reaped after SIGKILL before reporting an error.
/// SIGKILL cannot be ignored, so only a process stuck in the kernel (a dead NFS mount)
/// takes longer.
pub(crate) const REAP_AFTER_KILL: Duration = Duration::from_secs(5);

/// Settings of a [`ProcessRuntime`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessConfig {
    /// Directory of the replicas' log files, `<deployment>-<service>-<replica>.log`
    /// (created 0700 if missing). Each replica writes its stdout and stderr straight into
    /// its file, so it outlives herdsman unharmed. `None` (or a directory that cannot be
    /// written) captures output through pipes into memory instead.
    pub log_dir: Option<PathBuf>,
    /// Size at which a log file is rotated (copied to `<file>.1`, then truncated; one
    /// rotated file kept). Default 10 MiB.
    pub log_file_limit: u64,
    /// The deployment's state directory, where the running incarnations are recorded
    /// (`replicas.json`) so that the next runtime can adopt them
    /// ([`Runtime::survivors`]). `None` records nothing.
    pub state_dir: Option<PathBuf>,
    /// Contain each incarnation in its own cgroup where a writable cgroup v2 hierarchy
    /// exists (default true); process groups otherwise.
    pub cgroups: bool,
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
            log_file_limit: 10 * 1024 * 1024,
            state_dir: None,
            cgroups: true,
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
/// - Each incarnation runs in its own cgroup v2
///   (`herdsman/<deployment>.<scope>/<service>-<replica>-g<generation>`, the scope naming
///   the state directory; born in it with `clone3(CLONE_INTO_CGROUP)`, which costs no
///   cgroup migration, or on kernels before 5.7 joined before `exec`)
///   where a writable hierarchy exists, and its main process leads its own process group
///   either way. [`Runtime::stop`] signals every member, waits up to the grace period for
///   the main process, then kills the cgroup (`cgroup.kill`), or the group where there is
///   no cgroup. When the main process exits by itself, whatever it left is killed at once.
///   Only with a cgroup is a process that called `setsid` or double-forked contained;
///   [`ProcessRuntime::containment`] says which mode is in force (said once at start).
/// - Exits are reported the moment the main process is reaped (its pidfd becoming
///   readable, or tokio's SIGCHLD handling for a forked one; one task per process) and its cgroup is empty (`cgroup.events`, watched by
///   inotify), never by polling. Command probes and `init.run` get cgroups of their own.
/// - With a log directory, stdout and stderr go to the replica's own log file, rotated at
///   [`ProcessConfig::log_file_limit`], and `logs` reads its tail; without one, into a
///   ring of the last [`ProcessConfig::log_lines`] lines / [`ProcessConfig::log_bytes`]
///   bytes.
/// - With a state directory, each running incarnation is recorded so that a later
///   runtime can adopt it ([`Runtime::survivors`], [`Runtime::adopt`]).
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
    pub(crate) config: ProcessConfig,
    pub(crate) replicas: Mutex<HashMap<ContainerId, Arc<Replica>>>,
    /// Set by `shutdown` and `drop`: no process may start after it.
    closed: AtomicBool,
    pub(crate) containment: Containment,
    pub(crate) ends: Ends,
    /// Set once a log file could not be opened: said once.
    log_warned: AtomicBool,
    run_hashes: RunHashes,
}

/// What the end of an incarnation updates, shared with the tasks that watch them.
#[derive(Debug, Clone)]
pub(crate) struct Ends {
    pub(crate) rotator: Arc<Rotator>,
    pub(crate) records: Option<Arc<RecordBook>>,
}

/// One container: what to run, its captured output, and where it is in its life.
#[derive(Debug)]
pub(crate) struct Replica {
    pub(crate) launch: Launch,
    /// The run hash of the spec it was created from, recorded for adoption.
    pub(crate) run_hash: String,
    /// Held across the spawn (which does not await), so a concurrent stop sees either
    /// `Created` or `Running`, never a process it cannot find.
    pub(crate) state: Mutex<ReplicaState>,
}

#[derive(Debug)]
pub(crate) struct ReplicaState {
    pub(crate) phase: Phase,
    pub(crate) output: Output,
    /// The output reader tasks, aborted on remove (a process that escaped the group may
    /// hold a pipe open forever).
    pub(crate) readers: Vec<AbortHandle>,
    /// The rotator's watch on the log file, while the incarnation runs.
    pub(crate) rotation: Option<i32>,
}

/// Where a replica's output is.
#[derive(Debug, Clone)]
pub(crate) enum Output {
    /// In memory, fed by pipes.
    Ring(Arc<LogBuffer>),
    /// In its log file.
    File(PathBuf),
}

#[derive(Debug)]
pub(crate) enum Phase {
    Created,
    Running {
        contained: Contained,
        /// Becomes `Some` once the main process is gone and what it left is killed.
        reaped: watch::Receiver<Option<Exit>>,
    },
    Exited,
}

impl Replica {
    pub(crate) fn state(&self) -> MutexGuard<'_, ReplicaState> {
        // Every update of the state is a single assignment, so a poisoned lock still holds
        // a consistent value.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What contains it and its end notification, while it runs.
    pub(crate) fn running(&self) -> Option<(Contained, watch::Receiver<Option<Exit>>)> {
        match &self.state().phase {
            Phase::Running { contained, reaped } => Some((contained.clone(), reaped.clone())),
            Phase::Created | Phase::Exited => None,
        }
    }
}

impl ProcessRuntime {
    /// A runtime with these settings. Starts nothing and needs no tokio runtime; finds
    /// the cgroup hierarchy (and says once, as a warning, when it falls back to process
    /// groups).
    pub fn new(config: ProcessConfig) -> ProcessRuntime {
        let scope = crate::containment::scope(config.state_dir.as_deref());
        let containment = Containment::detect(config.cgroups, scope);
        if let Containment::ProcessGroups { why } = &containment {
            if config.cgroups {
                tracing::warn!(
                    reason = %why,
                    "no writable cgroup v2 hierarchy: replicas are contained by process groups, which a process that calls setsid or double-forks escapes"
                );
            }
        }
        let ends = Ends {
            rotator: Arc::new(Rotator::new(config.log_file_limit)),
            records: config
                .state_dir
                .as_deref()
                .map(|d| Arc::new(RecordBook::new(d))),
        };
        ProcessRuntime {
            config,
            replicas: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            containment,
            ends,
            log_warned: AtomicBool::new(false),
            run_hashes: RunHashes::default(),
        }
    }

    /// The settings it was created with.
    pub fn config(&self) -> &ProcessConfig {
        &self.config
    }

    /// How incarnations are contained: `"cgroup"` (a cgroup v2 each) or
    /// `"process-group"` (no writable cgroup v2 hierarchy, or cgroups turned off).
    pub fn containment(&self) -> &'static str {
        self.containment.mode()
    }

    /// The `herdsman` directory of the cgroup v2 hierarchy its cgroups are made under,
    /// when it uses cgroups.
    pub fn cgroup_base(&self) -> Option<&std::path::Path> {
        self.containment.base()
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
        for (contained, _) in &running {
            contained.kill();
        }
        let deadline = Instant::now() + REAP_AFTER_KILL;
        for (contained, mut reaped) in running {
            if tokio::time::timeout_at(deadline, wait_reaped(&mut reaped))
                .await
                .is_err()
            {
                tracing::warn!(?contained, "process not reaped after SIGKILL at shutdown");
            }
        }
        if let Some(records) = &self.ends.records {
            records.flush().await;
        }
        self.containment.forget_all();
    }

    pub(crate) fn replicas(&self) -> MutexGuard<'_, HashMap<ContainerId, Arc<Replica>>> {
        // Map updates are single inserts and removes; a poisoned lock is still consistent.
        self.replicas.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn replica(&self, id: &ContainerId) -> Result<Arc<Replica>, RuntimeError> {
        self.replicas()
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::UnknownContainer { id: id.to_string() })
    }

    /// The replica's log file, opened for appending, if a log directory is configured and
    /// usable. A directory that cannot be written (read-only, full, a symlink planted at
    /// the file) degrades to output captured in memory, said once; it never fails a start.
    fn open_log_file(&self, id: &ContainerId) -> Option<(PathBuf, std::fs::File)> {
        let dir = self.config.log_dir.as_ref()?;
        let path = dir.join(format!(
            "{}-{}-{}.log",
            id.deployment, id.service, id.replica
        ));
        let opened = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .and_then(|()| log_file::open_append(&path));
        match opened {
            Ok(file) => Some((path, file)),
            Err(e) => {
                if !self.log_warned.swap(true, Ordering::SeqCst) {
                    tracing::warn!(file = %path.display(), error = %e,
                        "cannot write replica log files: output is kept in memory only (and replicas will not outlive herdsman unharmed)");
                }
                None
            }
        }
    }

    /// The cgroup for the incarnation `id`, created; `None` without cgroups or when it
    /// cannot be created (then the process group contains it, and a warning says so).
    fn incarnation_cgroup(&self, id: &ContainerId) -> Option<herdsman_probe::Cgroup> {
        let cgroup = self.containment.incarnation(id)?;
        match cgroup.create() {
            Ok(()) => Some(cgroup),
            Err(e) => {
                tracing::warn!(%id, cgroup = %cgroup.path().display(), error = %e,
                    "cannot create the incarnation's cgroup: contained by its process group only");
                None
            }
        }
    }

    /// Record a running incarnation for adoption by a later runtime.
    fn record(
        &self,
        id: &ContainerId,
        replica: &Replica,
        pid: u32,
        contained: &Contained,
        log: Option<&PathBuf>,
    ) {
        let Some(book) = &self.ends.records else {
            return;
        };
        let Some(start_time) = records::start_time(pid) else {
            return;
        };
        book.insert(Record {
            id: id.clone(),
            pid,
            start_time,
            cgroup: match contained {
                Contained::Cgroup(cg) => Some(cg.path().to_path_buf()),
                Contained::Group(_) => None,
            },
            run_hash: replica.run_hash.clone(),
            log: log.cloned(),
        });
    }

    /// Start the reader tasks for the child's piped stdout and stderr.
    fn capture_output(&self, child: &mut MainProcess, logs: &Arc<LogBuffer>) -> Vec<AbortHandle> {
        let max_line = self.config.log_bytes;
        let mut readers = Vec::with_capacity(2);
        let mut read = |pipe: Option<Box<dyn AsyncRead + Send + Unpin>>| {
            if let Some(pipe) = pipe {
                readers.push(tokio::spawn(pump(pipe, logs.clone(), None, max_line)).abort_handle());
            }
        };
        match child {
            MainProcess::Forked(child) => {
                read(child.stdout.take().map(|p| Box::new(p) as _));
                read(child.stderr.take().map(|p| Box::new(p) as _));
            }
            MainProcess::Born(child) => read(child.output.take().map(|p| Box::new(p) as _)),
        }
        readers
    }
}

/// A replica's main process: born in its cgroup (`clone3`), or forked by tokio (no cgroup,
/// or a kernel without `CLONE_INTO_CGROUP`, where it joins its cgroup before `exec`).
#[derive(Debug)]
pub(crate) enum MainProcess {
    Born(herdsman_probe::CgroupChild),
    Forked(Child),
}

impl MainProcess {
    fn id(&self) -> Option<u32> {
        match self {
            MainProcess::Born(child) => Some(child.id()),
            MainProcess::Forked(child) => child.id(),
        }
    }

    fn start_kill(&mut self) {
        match self {
            MainProcess::Born(child) => child.start_kill(),
            MainProcess::Forked(child) => {
                let _ = child.start_kill();
            }
        }
    }

    async fn wait(&mut self) -> io::Result<std::process::ExitStatus> {
        match self {
            MainProcess::Born(child) => child.wait().await,
            MainProcess::Forked(child) => child.wait().await,
        }
    }
}

/// Fork the replica's command with tokio, joining `cgroup` before `exec` when given.
fn fork_into(
    replica: &Replica,
    log: Option<&std::fs::File>,
    cgroup: Option<&herdsman_probe::Cgroup>,
) -> io::Result<MainProcess> {
    let mut cmd = replica.launch.command(log)?;
    if let Some(cg) = cgroup {
        cg.join_on_spawn(&mut cmd)?;
    }
    cmd.spawn().map(MainProcess::Forked)
}

/// Wait until the main process has been reaped. Also returns when the reaper task is gone
/// without reporting (its runtime shut down): there is nothing left to wait for then.
pub(crate) async fn wait_reaped(reaped: &mut watch::Receiver<Option<Exit>>) {
    let _ = reaped.wait_for(Option::is_some).await;
}

/// The reaper: one task per process, resolving the moment tokio's SIGCHLD handling reaps
/// the main process. It kills what the process left in its group, records the exit, wakes
/// any `stop` waiting for it and reports the exit.
pub(crate) struct Incarnation {
    pub(crate) id: ContainerId,
    pub(crate) contained: Contained,
    pub(crate) started_at: Instant,
    pub(crate) replica: Arc<Replica>,
    pub(crate) reaped: watch::Sender<Option<Exit>>,
    pub(crate) exit_tx: ExitSender,
    pub(crate) ends: Ends,
}

impl Incarnation {
    /// The main process ended with `reason`: kill what it left (the whole cgroup, or its
    /// group), wait until the cgroup is empty (watched), report the exit, then drop the
    /// log's watch, forget the record, remove the cgroup, and wake whoever waits for the
    /// end (`stop`).
    ///
    /// `events` is the cgroup's `cgroup.events` opened while the process ran, if it could be.
    pub(crate) async fn ended(self, reason: ExitReason, events: Option<CgroupEvents>) {
        let exit = Exit {
            reason,
            ran_for: self.started_at.elapsed(),
        };
        match &self.contained {
            // Only a cgroup with members left is killed and waited for: most often the
            // main process was its only one, and reading `cgroup.events` takes no kernel
            // lock where writing `cgroup.kill` takes the cgroup mutex, which another
            // process's migration on the host may hold for an RCU grace period.
            Contained::Cgroup(cg) => {
                let populated = match &events {
                    Some(events) => events.populated(),
                    None => cg.populated(),
                };
                if populated.unwrap_or(true) {
                    cg.kill();
                    if tokio::time::timeout(REAP_AFTER_KILL, cg.wait_empty())
                        .await
                        .is_err()
                    {
                        tracing::warn!(id = %self.id, cgroup = %cg.path().display(), "cgroup not empty after cgroup.kill");
                    }
                }
            }
            // The leader is gone, but its pidfd still addresses the group while members
            // remain, so this reaches every process it forked and left behind.
            Contained::Group(group) => group.kill(),
        }
        let rotation = {
            let mut state = self.replica.state();
            state.phase = Phase::Exited;
            state.rotation.take()
        };
        // The exit goes out first (a restart waits for nothing else); a `stop` or
        // `shutdown` waiting on `reaped` returns once the cgroup is gone too.
        let _ = self.exit_tx.send(exit);
        // Let the exit travel (the supervisor, the restart) before the rest, which
        // nothing of a restart waits for: dropping the log file's watch (its
        // `inotify_rm_watch` was ~40 µs of the crash path on the bench host; none at
        // all when the replacement has watched the same file first), forgetting the
        // record (a wake of the record writer, which would push the supervisor out of
        // this worker's next slot), and removing the cgroup.
        tokio::task::yield_now().await;
        if let Some(wd) = rotation {
            self.ends.rotator.unwatch(wd);
        }
        if let Some(records) = &self.ends.records {
            records.remove(&self.id);
        }
        if let Contained::Cgroup(cg) = &self.contained {
            if let Err(e) = cg.remove() {
                tracing::warn!(id = %self.id, cgroup = %cg.path().display(), error = %e, "cannot remove cgroup");
            }
        }
        self.reaped.send_replace(Some(exit));
    }
}

async fn reap(mut child: MainProcess, incarnation: Incarnation) {
    if let Contained::Group(group) = &incarnation.contained {
        // Wait for the exit without reaping, then kill what the process left in its group:
        // until it is reaped, its pid, which is the group's id, cannot be another
        // process's, whatever the kernel.
        // Killed only once the exit is seen; otherwise (no descriptor to watch with) after
        // the reap, by `ended`, through the pidfd.
        match group.leader_fd().and_then(registered) {
            Ok(exited) => {
                if exited.readable().await.is_ok() {
                    group.kill();
                }
            }
            Err(e) => {
                tracing::warn!(id = %incarnation.id, error = %e, "cannot watch the process's exit before reaping it");
            }
        }
    }
    let events = incarnation.contained.events();
    let reason = match child.wait().await {
        Ok(status) => exit_reason(status),
        Err(e) => {
            tracing::warn!(id = %incarnation.id, error = %e, "cannot wait for process");
            ExitReason::Lost
        }
    };
    // Boxed: the task waits on `child` for the replica's whole life, and with the end's
    // future inline it would hold that future's space (a cgroup's watch) all along.
    Box::pin(incarnation.ended(reason, events)).await;
}

#[async_trait::async_trait]
impl Runtime for ProcessRuntime {
    async fn create(&self, id: &ContainerId, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let launch = Launch::from_spec(id, spec)?;
        let replica = Arc::new(Replica {
            launch,
            run_hash: self.run_hashes.of(&spec.service),
            state: Mutex::new(ReplicaState {
                phase: Phase::Created,
                output: Output::Ring(Arc::new(LogBuffer::new(0, 0))),
                readers: Vec::new(),
                rotation: None,
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
        let log = self.open_log_file(id);
        let cgroup = self.incarnation_cgroup(id);
        let started_at = Instant::now();
        let spawned = match &cgroup {
            Some(cg) => {
                match cg.spawn_into(&replica.launch.child_spec(log.as_ref().map(|(_, f)| f))) {
                    Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                        tracing::debug!(%id, error = %e, "joining the cgroup before exec instead");
                        fork_into(&replica, log.as_ref().map(|(_, f)| f), Some(cg))
                    }
                    born => born.map(MainProcess::Born),
                }
            }
            None => fork_into(&replica, log.as_ref().map(|(_, f)| f), None),
        };
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                if let Some(cg) = &cgroup {
                    let _ = cg.remove();
                }
                return Err(replica.launch.spawn_error(id, &e));
            }
        };
        let Some(pid) = child.id().filter(|p| *p > 1) else {
            // Cannot happen for a freshly spawned child; refuse rather than signal a
            // group that is not ours.
            child.start_kill();
            return Err(start_error(id, format!("unusable pid {:?}", child.id())));
        };
        let contained = match cgroup {
            Some(cg) => Contained::Cgroup(cg),
            // Not reaped yet, so `pid` is still this child's.
            None => match ProcessGroup::of_child(pid) {
                Ok(group) => Contained::Group(group),
                Err(e) => {
                    child.start_kill();
                    return Err(start_error(
                        id,
                        format!("cannot open a pidfd of its main process: {e}"),
                    ));
                }
            },
        };
        let (reaped_tx, reaped_rx) = watch::channel(None);
        let (exit_tx, exit) = ExitWatch::channel();
        match &log {
            Some((path, _)) => {
                state.output = Output::File(path.clone());
                state.rotation = self.ends.rotator.watch(path).ok();
            }
            None => {
                let ring = Arc::new(LogBuffer::new(self.config.log_lines, self.config.log_bytes));
                state.readers = self.capture_output(&mut child, &ring);
                state.output = Output::Ring(ring);
            }
        }
        state.phase = Phase::Running {
            contained: contained.clone(),
            reaped: reaped_rx,
        };
        drop(state);
        // A shutdown that began while this one was spawning may have swept the running
        // replicas before this one was among them: it sets `closed` before it looks, so
        // either it saw this replica or this sees `closed`. Then this start kills what it
        // began (the reaper below reports the exit) rather than leave it behind.
        let shut_meanwhile = self.closed.load(Ordering::SeqCst);
        if shut_meanwhile {
            contained.kill();
        }
        self.record(id, &replica, pid, &contained, log.as_ref().map(|(p, _)| p));
        tokio::spawn(reap(
            child,
            Incarnation {
                id: id.clone(),
                contained,
                started_at,
                replica: replica.clone(),
                reaped: reaped_tx,
                exit_tx,
                ends: self.ends.clone(),
            },
        ));
        Ok(Started {
            pid: Some(pid),
            exit,
        })
    }

    async fn stop(
        &self,
        id: &ContainerId,
        signal: StopSignal,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let replica = self.replica(id)?;
        let Some((contained, mut reaped)) = replica.running() else {
            return Ok(());
        };
        contained.signal(to_signal(signal));
        if tokio::time::timeout(grace, wait_reaped(&mut reaped))
            .await
            .is_ok()
        {
            // The reaper has killed what was left of the cgroup or group.
            return Ok(());
        }
        contained.kill();
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
        if let Some((contained, mut reaped)) = replica.running() {
            // Removing a running container must not leak its processes.
            contained.kill();
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
        let mut state = replica.state();
        for reader in state.readers.drain(..) {
            reader.abort();
        }
        if let Some(wd) = state.rotation.take() {
            self.ends.rotator.unwatch(wd);
        }
        Ok(())
    }

    async fn exec(
        &self,
        id: &ContainerId,
        command: &str,
        timeout: Duration,
    ) -> Result<CommandOutput, RuntimeError> {
        let mut request = self.replica(id)?.launch.exec_request(command);
        request.cgroup = self.containment.command(id, "exec");
        herdsman_probe::run_command(&request, timeout)
            .await
            .map_err(|e| RuntimeError::Io {
                id: id.to_string(),
                what: "exec",
                source: io::Error::other(e),
            })
    }

    fn logs(&self, id: &ContainerId, lines: usize) -> Vec<String> {
        let output = self.replicas().get(id).map(|r| r.state().output.clone());
        match output {
            Some(Output::Ring(ring)) => ring.tail(lines),
            Some(Output::File(path)) => log_file::tail(
                &path,
                lines.min(self.config.log_lines),
                self.config.log_bytes as u64,
            ),
            None => Vec::new(),
        }
    }

    async fn init_step(&self, id: &ContainerId, step: &InitStep, vars: &ReplicaVars) -> StepReport {
        herdsman_probe::run_step_in(step, vars, self.containment.command(id, "init")).await
    }

    async fn survivors(&self, deployment: &str) -> Result<Vec<Survivor>, RuntimeError> {
        Ok(crate::adoption::survivors(self, deployment).await)
    }

    async fn adopt(
        &self,
        survivor: &Survivor,
        spec: &ContainerSpec,
    ) -> Result<Started, RuntimeError> {
        crate::adoption::adopt(self, survivor, spec)
    }

    async fn discard_survivor(
        &self,
        survivor: &Survivor,
        signal: StopSignal,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        crate::adoption::discard(self, survivor, signal, grace).await
    }
}

impl Drop for ProcessRuntime {
    /// SIGKILL every live process group, synchronously. The reaper tasks reap them if their
    /// tokio runtime is still running; otherwise tokio's orphan queue does.
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        for replica in self.replicas().values() {
            if let Some((contained, _)) = replica.running() {
                contained.kill();
            }
        }
        // Best effort: a deployment directory still holding a cgroup being emptied stays.
        self.containment.forget_all();
    }
}
