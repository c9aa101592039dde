//! [`DockerRuntime`]: each replica incarnation is one Docker container, created from the
//! service's image, watched by a `wait` per incarnation, its output followed into a ring.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::ContainerSummaryStateEnum;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use herdsman_probe::CommandOutput;
use herdsman_runtime::{
    ContainerId, ContainerSpec, ExitWatch, Runtime, RuntimeError, Started, Survivor,
};
use herdsman_spec::{PullPolicy, StopSignal};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::connect;
use crate::container::{
    container_name, from_labels, grace_secs, signal_name, Blueprint, LABEL_DEPLOYMENT,
};
use crate::exec::{self, ExecRequest};
use crate::log_ring::{self, LogRing};
use crate::reconciler::Reconciler;
use crate::waiter::{self, Waiter};
use crate::DockerError;

/// How much longer than the grace a stop call may take before the client gives up: the
/// daemon itself kills at the grace, this only covers its own latency.
const STOP_SLACK: Duration = Duration::from_secs(15);

/// Settings of a [`DockerRuntime`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// Most lines of output kept in memory per container (default 1000).
    pub log_lines: usize,
    /// Most bytes of output kept in memory per container (default 1 MiB).
    pub log_bytes: usize,
}

impl Default for DockerConfig {
    fn default() -> DockerConfig {
        DockerConfig {
            log_lines: 1000,
            log_bytes: 1024 * 1024,
        }
    }
}

/// Runs each replica incarnation as a Docker container through the Engine API.
///
/// - One container per incarnation, named `herdsman-<deployment>-<service>-<replica>-g<generation>`
///   and labelled `io.herdsman.deployment/service/replica/generation/spec-hash`; Docker's
///   restart policy stays `no`, so herdsman alone restarts.
/// - `start` starts it, then one `wait` per incarnation reports its exit (exit code,
///   128+N as signal N, an OOM kill as SIGKILL). If the daemon connection breaks, the
///   reconciler keeps the exit owed and settles it when the daemon answers again.
/// - `stop` asks Docker to stop it with the service's stop signal and grace (rounded up to
///   whole seconds); `remove` force-removes it with its anonymous volumes.
/// - `exec` runs `sh -c` inside the container with a hard timeout.
/// - `survivors`/`adopt`/`discard_survivor` find a deployment's running containers by
///   label after a restart of herdsman.
///
/// ```no_run
/// # async fn demo() -> Result<(), herdsman_docker::DockerError> {
/// use std::sync::Arc;
/// use herdsman_docker::{DockerConfig, DockerRuntime};
/// use herdsman_runtime::Runtime;
///
/// let runtime: Arc<dyn Runtime> = Arc::new(DockerRuntime::connect(DockerConfig::default()).await?);
/// # let _ = runtime;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct DockerRuntime {
    docker: Docker,
    config: DockerConfig,
    containers: Mutex<HashMap<ContainerId, Arc<Entry>>>,
    reconciler: Arc<Reconciler>,
    /// Set by `shutdown`: no container may be created after it.
    closed: AtomicBool,
}

/// One container this runtime created or adopted.
#[derive(Debug)]
struct Entry {
    name: String,
    logs: Arc<LogRing>,
    /// `NAME=value`, for `exec`.
    env: Vec<String>,
    /// Working directory inside the container, for `exec`.
    workdir: Option<String>,
    /// The log follower, aborted on remove.
    follower: Mutex<Option<AbortHandle>>,
}

impl Entry {
    fn follower(&self) -> MutexGuard<'_, Option<AbortHandle>> {
        self.follower.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl DockerRuntime {
    /// Connect to the daemon named by `DOCKER_HOST`, or the default socket, and check that
    /// it answers.
    ///
    /// # Errors
    /// [`DockerError::Unreachable`] naming the socket or `DOCKER_HOST`.
    pub async fn connect(config: DockerConfig) -> Result<DockerRuntime, DockerError> {
        let docker = connect::connect().await?;
        Ok(DockerRuntime {
            reconciler: Reconciler::new(docker.clone()),
            docker,
            config,
            containers: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        })
    }

    /// Force-remove (SIGKILL) every container this runtime still holds, concurrently, and
    /// refuse to create any more: what is left after a graceful shutdown, or everything
    /// when the operator asks to kill at once.
    ///
    /// # Cancel safety
    /// Cancelling it stops the waiting; removals already sent carry on in the daemon.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let entries: Vec<(ContainerId, Arc<Entry>)> = self.containers().drain().collect();
        let removals = entries.iter().map(|(id, entry)| async move {
            if let Some(follower) = entry.follower().take() {
                follower.abort();
            }
            if let Err(e) = self.force_remove(id, &entry.name).await {
                tracing::warn!(container = %id, error = %e, "cannot remove a container at shutdown");
            }
        });
        futures::future::join_all(removals).await;
    }

    /// Where the daemon is, as a message would name it: the socket path or `DOCKER_HOST`.
    pub fn daemon_place() -> String {
        connect::place()
    }

    /// The Docker name of an incarnation, for operators and tests.
    pub fn container_name(id: &ContainerId) -> String {
        container_name(id)
    }

    /// How many exits are owed while the daemon is unreachable (for status and tests).
    pub fn exits_owed(&self) -> usize {
        self.reconciler.owed()
    }

    fn containers(&self) -> MutexGuard<'_, HashMap<ContainerId, Arc<Entry>>> {
        // Single inserts and removes; a poisoned lock is still consistent.
        self.containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn entry(&self, id: &ContainerId) -> Result<Arc<Entry>, RuntimeError> {
        self.containers()
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::UnknownContainer { id: id.to_string() })
    }

    /// The error for a failed daemon call, naming the daemon when it is unreachable.
    fn failed(&self, id: &ContainerId, what: &'static str, e: BollardError) -> RuntimeError {
        let detail = match &e {
            BollardError::DockerResponseServerError { message, .. } => message.clone(),
            _ => format!("Docker daemon at {}: {e}", connect::place()),
        };
        RuntimeError::Io {
            id: id.to_string(),
            what,
            source: io::Error::other(detail),
        }
    }

    /// Make sure the image is present, pulling it as the policy says.
    async fn ensure_image(
        &self,
        id: &ContainerId,
        image: &str,
        policy: PullPolicy,
    ) -> Result<(), RuntimeError> {
        let present = match self.docker.inspect_image(image).await {
            Ok(_) => true,
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => false,
            Err(e) => return Err(self.failed(id, "inspect image", e)),
        };
        let pull = match policy {
            PullPolicy::Always => true,
            PullPolicy::IfNotPresent => !present,
            PullPolicy::Never if present => false,
            PullPolicy::Never => {
                return Err(start_error(
                    id,
                    format!("image {image} is not present and its pull_policy is never"),
                ))
            }
        };
        if !pull {
            return Ok(());
        }
        let options = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let mut progress = self.docker.create_image(Some(options), None, None);
        while let Some(step) = progress.next().await {
            if let Err(e) = step {
                let reason = match e {
                    BollardError::DockerResponseServerError { message, .. } => message,
                    other => other.to_string(),
                };
                return Err(start_error(
                    id,
                    format!("image {image} could not be pulled: {reason}"),
                ));
            }
        }
        Ok(())
    }

    /// Create the container; a leftover of the same incarnation (same name and labels,
    /// from a herdsman that died before removing it) is removed and the create retried.
    async fn create_container(
        &self,
        id: &ContainerId,
        name: &str,
        blueprint: &Blueprint,
    ) -> Result<(), RuntimeError> {
        for attempt in 0..2 {
            let options = CreateContainerOptionsBuilder::default().name(name).build();
            match self
                .docker
                .create_container(Some(options), blueprint.body.clone())
                .await
            {
                Ok(_) => return Ok(()),
                Err(BollardError::DockerResponseServerError {
                    status_code: 409, ..
                }) if attempt == 0 && self.is_ours(id, name).await => {
                    tracing::info!(
                        container = name,
                        "removing a leftover container of the same incarnation"
                    );
                    self.force_remove(id, name).await?;
                }
                Err(BollardError::DockerResponseServerError {
                    status_code: 404,
                    message,
                }) => {
                    return Err(start_error(
                        id,
                        format!("image {} not found: {message}", blueprint.image),
                    ))
                }
                Err(BollardError::DockerResponseServerError {
                    status_code: 409,
                    message,
                }) => {
                    return Err(start_error(
                        id,
                        format!("container name {name} is taken: {message}"),
                    ))
                }
                Err(e) => return Err(self.failed(id, "create", e)),
            }
        }
        Err(start_error(
            id,
            format!("container name {name} is still taken"),
        ))
    }

    /// True when the container called `name` carries `id`'s labels.
    async fn is_ours(&self, id: &ContainerId, name: &str) -> bool {
        let Ok(inspected) = self.docker.inspect_container(name, None).await else {
            return false;
        };
        let labels = inspected.config.and_then(|c| c.labels).unwrap_or_default();
        from_labels(&labels).is_some_and(|(found, _)| found == *id)
    }

    async fn force_remove(&self, id: &ContainerId, name: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            // 409: removal already in progress.
            Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(self.failed(id, "remove", e)),
        }
    }

    /// Stop `name` with `signal`, SIGKILL after `grace`; a client timeout longer than the
    /// grace, so the call is not cut off while the daemon waits.
    async fn stop_named(
        &self,
        id: &ContainerId,
        name: &str,
        signal: StopSignal,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let client = self.docker.clone().with_timeout(grace + STOP_SLACK);
        let options = StopContainerOptionsBuilder::default()
            .signal(&signal_name(signal))
            .t(grace_secs(grace))
            .build();
        match client.stop_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => Ok(()),
            Err(e) => Err(self.failed(id, "stop", e)),
        }
    }

    /// Start following a container's output and watching its exit.
    fn watch(&self, id: &ContainerId, entry: &Arc<Entry>, tail: &str, since: Instant) -> ExitWatch {
        let follower = tokio::spawn(log_ring::follow(
            self.docker.clone(),
            entry.name.clone(),
            entry.logs.clone(),
            tail.to_string(),
            self.config.log_bytes,
        ));
        if let Some(old) = entry.follower().replace(follower.abort_handle()) {
            old.abort();
        }
        let (tx, exit) = ExitWatch::channel();
        let waiter = Waiter {
            docker: self.docker.clone(),
            name: entry.name.clone(),
            logs: entry.logs.clone(),
            since,
        };
        tokio::spawn(waiter::watch(
            waiter,
            id.clone(),
            tx,
            self.reconciler.clone(),
        ));
        exit
    }

    /// The host pid of a running container, if the daemon reports one.
    async fn pid(&self, name: &str) -> Option<u32> {
        let inspected = self.docker.inspect_container(name, None).await.ok()?;
        let pid = inspected.state?.pid?;
        u32::try_from(pid).ok().filter(|p| *p > 0)
    }
}

/// A [`RuntimeError::Start`] for `id`.
fn start_error(id: &ContainerId, reason: String) -> RuntimeError {
    RuntimeError::Start {
        id: id.to_string(),
        reason,
    }
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    async fn create(&self, id: &ContainerId, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(start_error(id, "the runtime is shut down".into()));
        }
        let blueprint = Blueprint::from_spec(id, spec).map_err(|r| start_error(id, r))?;
        self.ensure_image(id, &blueprint.image, spec.service.pull_policy)
            .await?;
        let name = container_name(id);
        self.create_container(id, &name, &blueprint).await?;
        let entry = Arc::new(Entry {
            name,
            logs: Arc::new(LogRing::new(self.config.log_lines, self.config.log_bytes)),
            env: blueprint.env,
            workdir: blueprint.workdir,
            follower: Mutex::new(None),
        });
        self.containers().insert(id.clone(), entry);
        if self.closed.load(Ordering::SeqCst) {
            // A shutdown ran while this was being created: it did not see it, so undo it.
            let undone = self.containers().remove(id);
            if let Some(entry) = undone {
                self.force_remove(id, &entry.name).await?;
            }
            return Err(start_error(id, "the runtime is shut down".into()));
        }
        Ok(())
    }

    async fn start(&self, id: &ContainerId) -> Result<Started, RuntimeError> {
        let entry = self.entry(id)?;
        let since = Instant::now();
        match self.docker.start_container(&entry.name, None).await {
            Ok(()) => {}
            Err(BollardError::DockerResponseServerError { message, .. }) => {
                return Err(start_error(id, message))
            }
            Err(e) => return Err(self.failed(id, "start", e)),
        }
        let exit = self.watch(id, &entry, "all", since);
        let pid = self.pid(&entry.name).await;
        Ok(Started { pid, exit })
    }

    async fn stop(
        &self,
        id: &ContainerId,
        signal: StopSignal,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let entry = self.entry(id)?;
        self.stop_named(id, &entry.name, signal, grace).await
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        let Some(entry) = self.containers().remove(id) else {
            return Ok(());
        };
        if let Some(follower) = entry.follower().take() {
            follower.abort();
        }
        self.force_remove(id, &entry.name).await
    }

    async fn exec(
        &self,
        id: &ContainerId,
        command: &str,
        timeout: Duration,
    ) -> Result<CommandOutput, RuntimeError> {
        let entry = self.entry(id)?;
        let request = ExecRequest {
            container: &entry.name,
            command,
            env: &entry.env,
            workdir: entry.workdir.as_deref(),
        };
        exec::run(&self.docker, request, timeout)
            .await
            .map_err(|e| self.failed(id, "exec", e))
    }

    fn logs(&self, id: &ContainerId, lines: usize) -> Vec<String> {
        let logs = self.containers().get(id).map(|e| e.logs.clone());
        logs.map(|l| l.tail(lines)).unwrap_or_default()
    }

    /// The deployment's running containers, by label. Exited ones are dead incarnations
    /// nothing can adopt: they are removed here, so none is left behind.
    async fn survivors(&self, deployment: &str) -> Result<Vec<Survivor>, RuntimeError> {
        let probe_id = ContainerId::new(deployment, "*", 0, 0);
        let filters = HashMap::from([("label", vec![format!("{LABEL_DEPLOYMENT}={deployment}")])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let listed = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.failed(&probe_id, "list containers", e))?;
        let mut out = Vec::new();
        for c in listed {
            let Some((id, run_hash)) = from_labels(&c.labels.unwrap_or_default()) else {
                continue;
            };
            let name = container_name(&id);
            let running = c.state == Some(ContainerSummaryStateEnum::RUNNING);
            if running {
                let pid = self.pid(&name).await;
                out.push(Survivor { id, run_hash, pid });
            } else if !self.containers().contains_key(&id) {
                self.force_remove(&id, &name).await?;
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn adopt(
        &self,
        survivor: &Survivor,
        spec: &ContainerSpec,
    ) -> Result<Started, RuntimeError> {
        let id = &survivor.id;
        let name = container_name(id);
        let inspected = self
            .docker
            .inspect_container(&name, None)
            .await
            .map_err(|e| self.failed(id, "adopt", e))?;
        let state = inspected.state.unwrap_or_default();
        if state.running != Some(true) {
            return Err(start_error(
                id,
                format!("container {name} is no longer running"),
            ));
        }
        let blueprint = Blueprint::from_spec(id, spec).map_err(|r| start_error(id, r))?;
        let entry = Arc::new(Entry {
            name,
            logs: Arc::new(LogRing::new(self.config.log_lines, self.config.log_bytes)),
            env: blueprint.env,
            workdir: blueprint.workdir,
            follower: Mutex::new(None),
        });
        self.containers().insert(id.clone(), entry.clone());
        // The ring starts from the container's recent output, as a tail would show it.
        let tail = self.config.log_lines.to_string();
        let exit = self.watch(id, &entry, &tail, Instant::now());
        let pid = state
            .pid
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0);
        Ok(Started { pid, exit })
    }

    async fn discard_survivor(
        &self,
        survivor: &Survivor,
        signal: StopSignal,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let id = &survivor.id;
        let name = container_name(id);
        self.stop_named(id, &name, signal, grace).await?;
        self.force_remove(id, &name).await
    }
}
