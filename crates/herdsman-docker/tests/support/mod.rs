//! Shared by the tests against a real dockerd: connecting (or skipping, unless
//! `HERDSMAN_DOCKER=required`), the busybox test image, specs, and a guard that removes
//! every container of a test's deployment however the test ends.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use herdsman_docker::{DockerConfig, DockerRuntime};
use herdsman_runtime::{ContainerId, ContainerSpec};
use herdsman_spec::{
    Command, Deployment, Endpoint, Protocol, PullPolicy, ReplicaVars, Service, ServiceKind,
    Template,
};
use tokio::time::Instant;

/// The image `.ci/docker-setup` builds: busybox-static and its applets.
pub const IMAGE: &str = "herdsman-test/busybox:latest";

/// True when a missing daemon must fail the test instead of skipping it.
pub fn required() -> bool {
    std::env::var("HERDSMAN_DOCKER").is_ok_and(|v| v == "required")
}

/// A connected runtime, or `None` (with the reason printed) when no daemon answers and
/// Docker is not required. With `HERDSMAN_DOCKER=required` a missing daemon panics.
pub async fn runtime() -> Option<DockerRuntime> {
    match DockerRuntime::connect(DockerConfig::default()).await {
        Ok(rt) => Some(rt),
        Err(e) if required() => panic!("HERDSMAN_DOCKER=required but {e}"),
        Err(e) => {
            eprintln!("skipped: {e} (set HERDSMAN_DOCKER=required to make this a failure)");
            None
        }
    }
}

/// A deployment name unique to this test run and test.
pub fn deployment(test: &str) -> String {
    format!("t{}-{test}", std::process::id())
}

/// Removes every container labelled with its deployment when dropped, even when the
/// test panicked.
pub struct Cleanup {
    pub deployment: String,
}

impl Cleanup {
    pub fn new(deployment: &str) -> Cleanup {
        Cleanup {
            deployment: deployment.to_string(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let deployment = self.deployment.clone();
        // Drop cannot await, and may run inside a runtime: use a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(remove_all(&deployment));
        })
        .join();
    }
}

/// Force-remove every container of `deployment`.
pub async fn remove_all(deployment: &str) {
    let Ok(docker) = Docker::connect_with_local_defaults() else {
        return;
    };
    for name in names(&docker, deployment, true).await {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        let _ = docker.remove_container(&name, Some(options)).await;
    }
}

/// Names of the deployment's containers (`all`: stopped ones too).
pub async fn names(docker: &Docker, deployment: &str, all: bool) -> Vec<String> {
    let filters = HashMap::from([(
        "label",
        vec![format!("io.herdsman.deployment={deployment}")],
    )]);
    let options = ListContainersOptionsBuilder::default()
        .all(all)
        .filters(&filters)
        .build();
    let mut out: Vec<String> = docker
        .list_containers(Some(options))
        .await
        .unwrap_or_default()
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .map(|n| n.trim_start_matches('/').to_string())
        .collect();
    out.sort();
    out
}

/// A plain client, for looking at what the runtime did.
pub fn docker() -> Docker {
    Docker::connect_with_local_defaults().expect("docker client")
}

/// A port nothing listens on right now, below the ephemeral range.
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let port = 20_000 + (std::process::id() as u16 % 50) * 200 + rand_u16() % 200;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos / 1000) as u16
}

/// A container service running `sh -c script` in the test image.
pub fn service(name: &str, script: &str) -> Service {
    Service {
        image: Some(IMAGE.into()),
        pull_policy: PullPolicy::Never,
        command: Some(Command {
            entrypoint: vec![Template::literal("sh"), Template::literal("-c")],
            args: vec![Template::parse(script).expect("script template")],
            workdir: None,
        }),
        stop_grace_period: Duration::from_secs(2),
        ..Service::new(name, ServiceKind::Service)
    }
}

/// The same with one http endpoint at `port`.
pub fn with_endpoint(mut service: Service, port: u16) -> Service {
    service.endpoints = vec![Endpoint {
        name: "http".into(),
        protocol: Protocol::Http,
        port,
    }];
    service
}

/// Replica `replica`'s id (generation `generation`) and spec.
pub fn replica(
    deployment: &str,
    service: &Service,
    replica: u32,
    generation: u64,
) -> (ContainerId, ContainerSpec) {
    let d = Deployment {
        name: deployment.to_string(),
        services: vec![service.clone()],
    };
    let vars = ReplicaVars::new(&d, service, replica);
    (
        ContainerId::new(deployment, service.name.as_str(), replica, generation),
        ContainerSpec {
            service: Arc::new(service.clone()),
            vars,
        },
    )
}

/// Poll `f` until it is true, at most `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Await `f` at most `limit`, or fail naming what hung.
pub async fn within<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("{what} took over {limit:?}: likely hung"))
}
