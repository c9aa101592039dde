//! Which runtime runs each replica: a service with `image` runs as a Docker container, one
//! with only `command` as a process, unless `--runtime` forces one for every service. The
//! backends know nothing of each other; this router remembers, per container id, the
//! backend that created or adopted it, and sends every later call there.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use herdsman_docker::{DockerConfig, DockerRuntime};
use herdsman_probe::{CheckResult, CommandOutput, StepReport};
use herdsman_runtime::{
    ContainerId, ContainerSpec, ProcessConfig, ProcessRuntime, Runtime, RuntimeError, Started,
    Survivor,
};
use herdsman_spec::{Check, Deployment, InitStep, ReplicaVars, Service, StopSignal};

/// `--runtime`: the backend every service runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub(crate) enum RuntimeChoice {
    /// Host processes (a service's `command`).
    Process,
    /// Docker containers (a service's `image`).
    Docker,
}

/// The process runtime, the Docker runtime when a service needs it, and the route of
/// every container id.
pub(crate) struct Backend {
    process: Arc<ProcessRuntime>,
    docker: Option<Arc<DockerRuntime>>,
    forced: Option<RuntimeChoice>,
    routes: Mutex<HashMap<ContainerId, RuntimeChoice>>,
}

impl Backend {
    /// The backends `spec` needs: Docker is connected (and must answer) only when some
    /// service runs as a container.
    ///
    /// # Errors
    /// A service needs Docker and the daemon is unreachable (the error names the socket or
    /// `DOCKER_HOST`).
    pub(crate) async fn new(
        spec: &Deployment,
        forced: Option<RuntimeChoice>,
        process: ProcessConfig,
    ) -> anyhow::Result<Backend> {
        let containers: Vec<&str> = spec
            .services
            .iter()
            .filter(|s| choose(forced, s) == RuntimeChoice::Docker)
            .map(|s| s.name.as_str())
            .collect();
        let docker = if containers.is_empty() {
            None
        } else {
            let docker = DockerRuntime::connect(DockerConfig::default())
                .await
                .with_context(|| {
                    let s = if containers.len() == 1 { "" } else { "s" };
                    format!(
                        "cannot run service{s} {} as containers",
                        containers.join(", ")
                    )
                })?;
            Some(Arc::new(docker))
        };
        Ok(Backend {
            process: Arc::new(ProcessRuntime::new(process)),
            docker,
            forced,
            routes: Mutex::new(HashMap::new()),
        })
    }

    fn routes(&self) -> MutexGuard<'_, HashMap<ContainerId, RuntimeChoice>> {
        // Single inserts and removes; a poisoned lock is still consistent.
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn backend(&self, choice: RuntimeChoice) -> Option<&dyn Runtime> {
        match choice {
            RuntimeChoice::Process => Some(self.process.as_ref()),
            RuntimeChoice::Docker => self.docker.as_deref().map(|d| d as &dyn Runtime),
        }
    }

    /// The backend for a new container of `service`, remembered for `id`.
    fn assign(&self, id: &ContainerId, service: &Service) -> Result<&dyn Runtime, RuntimeError> {
        let choice = choose(self.forced, service);
        let backend = self.backend(choice).ok_or_else(|| RuntimeError::Start {
            id: id.to_string(),
            reason: "Docker was not connected at start, so a container cannot be created".into(),
        })?;
        self.routes().insert(id.clone(), choice);
        Ok(backend)
    }

    /// The backend that holds `id`.
    fn route(&self, id: &ContainerId) -> Result<&dyn Runtime, RuntimeError> {
        let choice = self.routes().get(id).copied();
        choice
            .and_then(|c| self.backend(c))
            .ok_or_else(|| RuntimeError::UnknownContainer { id: id.to_string() })
    }

    /// Kill whatever either backend still runs, and refuse any further start.
    /// How the process runtime contains its replicas (`cgroup` or `process-group`);
    /// containers are contained by Docker.
    pub(crate) fn containment(&self) -> &'static str {
        self.process.containment()
    }

    pub(crate) async fn shutdown(&self) {
        match &self.docker {
            Some(docker) => {
                tokio::join!(self.process.shutdown(), docker.shutdown());
            }
            None => self.process.shutdown().await,
        }
    }
}

/// Where `service` runs: forced by `--runtime`, else Docker exactly when it has `image`.
fn choose(forced: Option<RuntimeChoice>, service: &Service) -> RuntimeChoice {
    match (forced, &service.image) {
        (Some(choice), _) => choice,
        (None, Some(_)) => RuntimeChoice::Docker,
        (None, None) => RuntimeChoice::Process,
    }
}

#[async_trait::async_trait]
impl Runtime for Backend {
    async fn create(&self, id: &ContainerId, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let backend = self.assign(id, &spec.service)?;
        let created = backend.create(id, spec).await;
        if created.is_err() {
            self.routes().remove(id);
        }
        created
    }

    async fn start(&self, id: &ContainerId) -> Result<Started, RuntimeError> {
        self.route(id)?.start(id).await
    }

    async fn stop(
        &self,
        id: &ContainerId,
        signal: StopSignal,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        self.route(id)?.stop(id, signal, grace).await
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        let Ok(backend) = self.route(id) else {
            return Ok(());
        };
        let removed = backend.remove(id).await;
        if removed.is_ok() {
            self.routes().remove(id);
        }
        removed
    }

    async fn exec(
        &self,
        id: &ContainerId,
        command: &str,
        timeout: Duration,
    ) -> Result<CommandOutput, RuntimeError> {
        self.route(id)?.exec(id, command, timeout).await
    }

    fn logs(&self, id: &ContainerId, lines: usize) -> Vec<String> {
        self.route(id)
            .map(|b| b.logs(id, lines))
            .unwrap_or_default()
    }

    fn probe_host(&self, id: &ContainerId) -> IpAddr {
        match self.route(id) {
            Ok(b) => b.probe_host(id),
            Err(_) => self.process.probe_host(id),
        }
    }

    async fn check(
        &self,
        id: &ContainerId,
        check: &Check,
        vars: &ReplicaVars,
        timeout: Duration,
    ) -> CheckResult {
        match self.route(id) {
            Ok(b) => b.check(id, check, vars, timeout).await,
            Err(_) => self.process.check(id, check, vars, timeout).await,
        }
    }

    async fn survivors(&self, deployment: &str) -> Result<Vec<Survivor>, RuntimeError> {
        let mut found = Vec::new();
        for choice in [RuntimeChoice::Process, RuntimeChoice::Docker] {
            let Some(backend) = self.backend(choice) else {
                continue;
            };
            for survivor in backend.survivors(deployment).await? {
                self.routes().insert(survivor.id.clone(), choice);
                found.push(survivor);
            }
        }
        Ok(found)
    }

    async fn adopt(
        &self,
        survivor: &Survivor,
        spec: &ContainerSpec,
    ) -> Result<Started, RuntimeError> {
        self.route(&survivor.id)?.adopt(survivor, spec).await
    }

    async fn discard_survivor(
        &self,
        survivor: &Survivor,
        signal: StopSignal,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let discarded = self
            .route(&survivor.id)?
            .discard_survivor(survivor, signal, grace)
            .await;
        if discarded.is_ok() {
            self.routes().remove(&survivor.id);
        }
        discarded
    }

    async fn init_step(&self, id: &ContainerId, step: &InitStep, vars: &ReplicaVars) -> StepReport {
        match self.route(id) {
            Ok(b) => b.init_step(id, step, vars).await,
            Err(_) => self.process.init_step(id, step, vars).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use herdsman_spec::ServiceKind;

    use super::*;

    #[test]
    fn image_services_run_as_containers_unless_a_runtime_is_forced() {
        let process = Service::new("p", ServiceKind::Service);
        let container = Service {
            image: Some("busybox".into()),
            ..Service::new("c", ServiceKind::Service)
        };
        assert_eq!(choose(None, &process), RuntimeChoice::Process);
        assert_eq!(choose(None, &container), RuntimeChoice::Docker);
        let forced = Some(RuntimeChoice::Process);
        assert_eq!(choose(forced, &container), RuntimeChoice::Process);
        let forced = Some(RuntimeChoice::Docker);
        assert_eq!(choose(forced, &process), RuntimeChoice::Docker);
    }
}
