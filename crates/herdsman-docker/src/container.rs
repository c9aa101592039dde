//! What one incarnation's Docker container is: its name, its ownership labels, and the
//! create body expanded from the spec once at `create`. Pure: no I/O.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use herdsman_runtime::{ContainerId, ContainerSpec};
use herdsman_spec::{Network, Protocol, StopSignal};

/// Label naming the deployment a container belongs to.
pub(crate) const LABEL_DEPLOYMENT: &str = "io.herdsman.deployment";
/// Label naming the service.
pub(crate) const LABEL_SERVICE: &str = "io.herdsman.service";
/// Label holding the replica index.
pub(crate) const LABEL_REPLICA: &str = "io.herdsman.replica";
/// Label holding the incarnation's generation.
pub(crate) const LABEL_GENERATION: &str = "io.herdsman.generation";
/// Label holding [`herdsman_spec::Service::run_hash`] of the spec it was created from.
pub(crate) const LABEL_SPEC_HASH: &str = "io.herdsman.spec-hash";

/// The Docker name of an incarnation: `herdsman-<deployment>-<service>-<replica>-g<generation>`.
pub(crate) fn container_name(id: &ContainerId) -> String {
    format!(
        "herdsman-{}-{}-{}-g{}",
        id.deployment, id.service, id.replica, id.generation
    )
}

/// The ownership labels of an incarnation.
pub(crate) fn labels(id: &ContainerId, spec_hash: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_DEPLOYMENT.to_string(), id.deployment.to_string()),
        (LABEL_SERVICE.to_string(), id.service.to_string()),
        (LABEL_REPLICA.to_string(), id.replica.to_string()),
        (LABEL_GENERATION.to_string(), id.generation.to_string()),
        (LABEL_SPEC_HASH.to_string(), spec_hash.to_string()),
    ])
}

/// The id and spec hash a container's labels describe, if they are herdsman's.
pub(crate) fn from_labels(labels: &HashMap<String, String>) -> Option<(ContainerId, String)> {
    let get = |k: &str| labels.get(k).map(String::as_str);
    let id = ContainerId::new(
        get(LABEL_DEPLOYMENT)?,
        get(LABEL_SERVICE)?,
        get(LABEL_REPLICA)?.parse().ok()?,
        get(LABEL_GENERATION)?.parse().ok()?,
    );
    Some((id, get(LABEL_SPEC_HASH).unwrap_or_default().to_string()))
}

/// The signal as Docker reads it: its name where herdsman knows one, else its number.
pub(crate) fn signal_name(signal: StopSignal) -> String {
    StopSignal::NAMES
        .iter()
        .find(|(_, n)| *n == signal.0)
        .map(|(name, _)| (*name).to_string())
        .unwrap_or_else(|| signal.0.to_string())
}

/// Whole seconds for Docker's stop timeout, rounded up so the grace is never shortened.
pub(crate) fn grace_secs(grace: Duration) -> i32 {
    let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// What `create` needs: the image, its pull policy, the create body, and what `exec`
/// reuses (environment and workdir).
#[derive(Debug, Clone)]
pub(crate) struct Blueprint {
    /// Image reference.
    pub(crate) image: String,
    /// The create body, labels included.
    pub(crate) body: ContainerCreateBody,
    /// `NAME=value` entries, for `exec`.
    pub(crate) env: Vec<String>,
    /// Working directory inside the container, for `exec`.
    pub(crate) workdir: Option<String>,
}

impl Blueprint {
    /// Expand the service for one replica.
    ///
    /// # Errors
    /// A message naming what is missing: a service without `image`.
    pub(crate) fn from_spec(id: &ContainerId, spec: &ContainerSpec) -> Result<Blueprint, String> {
        let service = &spec.service;
        let Some(image) = service.image.clone() else {
            return Err(format!(
                "the Docker runtime needs `image` to run service {}, which has only `command`",
                service.name
            ));
        };
        let mut env_map = spec.vars.as_env();
        for (name, value) in &service.env {
            env_map.insert(name.clone(), value.expand(&spec.vars));
        }
        let env: Vec<String> = env_map
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let command = service.command.as_ref();
        let expand = |list: &[herdsman_spec::Template]| -> Vec<String> {
            list.iter().map(|t| t.expand(&spec.vars)).collect()
        };
        let entrypoint = command
            .filter(|c| !c.entrypoint.is_empty())
            .map(|c| expand(&c.entrypoint));
        // With an entrypoint, `args` replace the image's args even when empty; with args
        // alone, the image's entrypoint is kept.
        let cmd = command
            .filter(|c| !c.entrypoint.is_empty() || !c.args.is_empty())
            .map(|c| expand(&c.args));
        let workdir = command
            .and_then(|c| c.workdir.as_ref())
            .map(|w| w.display().to_string());

        let ports: Vec<(String, u16)> = service
            .endpoints
            .iter()
            .zip(&spec.vars.ports)
            .map(|(e, (_, port))| {
                let proto = if e.protocol == Protocol::Udp {
                    "udp"
                } else {
                    "tcp"
                };
                (format!("{port}/{proto}"), *port)
            })
            .collect();
        let mut host_config = HostConfig {
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            // Bounded on disk; json-file keeps `docker logs` and the log stream working.
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), "10m".to_string()),
                    ("max-file".to_string(), "2".to_string()),
                ])),
            }),
            ..HostConfig::default()
        };
        let mut exposed_ports = None;
        match service.network {
            Network::Host => host_config.network_mode = Some("host".into()),
            Network::Bridge => {
                let bindings = ports
                    .iter()
                    .map(|(key, port)| {
                        let binding = PortBinding {
                            host_ip: Some("127.0.0.1".into()),
                            host_port: Some(port.to_string()),
                        };
                        (key.clone(), Some(vec![binding]))
                    })
                    .collect();
                host_config.port_bindings = Some(bindings);
                exposed_ports = Some(ports.iter().map(|(key, _)| key.clone()).collect());
            }
        }
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            entrypoint,
            cmd,
            env: Some(env.clone()),
            working_dir: workdir.clone(),
            labels: Some(labels(id, &service.run_hash())),
            stop_signal: Some(signal_name(service.stop_signal)),
            stop_timeout: Some(i64::from(grace_secs(service.stop_grace_period))),
            exposed_ports,
            host_config: Some(host_config),
            ..ContainerCreateBody::default()
        };
        Ok(Blueprint {
            image,
            body,
            env,
            workdir,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use herdsman_spec::{Command, Endpoint, ReplicaVars, Service, ServiceKind, Template};

    use super::*;

    fn spec(network: Network, command: Option<Command>) -> (ContainerId, ContainerSpec) {
        let service = Service {
            image: Some("busybox".into()),
            command,
            network,
            endpoints: vec![
                Endpoint {
                    name: "http".into(),
                    protocol: Protocol::Http,
                    port: 8080,
                },
                Endpoint {
                    name: "dns".into(),
                    protocol: Protocol::Udp,
                    port: 5300,
                },
            ],
            stop_signal: StopSignal(2),
            stop_grace_period: Duration::from_millis(1500),
            ..Service::new("web", ServiceKind::Service)
        };
        let deployment = herdsman_spec::Deployment {
            name: "shop".into(),
            services: vec![service.clone()],
        };
        let vars = ReplicaVars::new(&deployment, &service, 2);
        let id = ContainerId::new("shop", "web", 2, 7);
        (
            id,
            ContainerSpec {
                service: Arc::new(service),
                vars,
            },
        )
    }

    fn templates(words: &[&str]) -> Vec<Template> {
        words.iter().map(|w| Template::literal(*w)).collect()
    }

    #[test]
    fn names_and_labels_identify_the_incarnation_and_read_back() {
        let (id, spec) = spec(Network::Bridge, None);
        assert_eq!(container_name(&id), "herdsman-shop-web-2-g7");
        let bp = Blueprint::from_spec(&id, &spec).expect("valid");
        let labels = bp.body.labels.expect("labels");
        assert_eq!(
            from_labels(&labels),
            Some((id, spec.service.run_hash())),
            "{labels:?}"
        );
    }

    #[test]
    fn bridge_publishes_each_replica_port_on_loopback_to_the_same_port() {
        let (id, spec) = spec(Network::Bridge, None);
        let bp = Blueprint::from_spec(&id, &spec).expect("valid");
        let hc = bp.body.host_config.expect("host config");
        let bindings = hc.port_bindings.expect("bindings");
        let http = bindings["8082/tcp"].clone().expect("http binding");
        assert_eq!(http[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(http[0].host_port.as_deref(), Some("8082"));
        assert!(bindings.contains_key("5302/udp"), "{bindings:?}");
        assert_eq!(hc.network_mode, None);
        assert_eq!(
            hc.restart_policy.and_then(|r| r.name),
            Some(RestartPolicyNameEnum::NO)
        );
    }

    #[test]
    fn host_network_publishes_nothing() {
        let (id, spec) = spec(Network::Host, None);
        let bp = Blueprint::from_spec(&id, &spec).expect("valid");
        let hc = bp.body.host_config.expect("host config");
        assert_eq!(hc.network_mode.as_deref(), Some("host"));
        assert!(hc.port_bindings.is_none() && bp.body.exposed_ports.is_none());
    }

    #[test]
    fn command_overrides_entrypoint_and_args_and_args_alone_keep_the_entrypoint() {
        let (id, full) = spec(
            Network::Bridge,
            Some(Command {
                entrypoint: templates(&["httpd", "-f"]),
                args: vec![Template::parse("-p=${PORT}").expect("template")],
                workdir: Some("/www".into()),
            }),
        );
        let bp = Blueprint::from_spec(&id, &full).expect("valid");
        assert_eq!(bp.body.entrypoint, Some(vec!["httpd".into(), "-f".into()]));
        assert_eq!(bp.body.cmd, Some(vec!["-p=8082".to_string()]));
        assert_eq!(bp.body.working_dir.as_deref(), Some("/www"));

        let (id, args_only) = spec(
            Network::Bridge,
            Some(Command {
                entrypoint: Vec::new(),
                args: templates(&["echo", "hi"]),
                workdir: None,
            }),
        );
        let bp = Blueprint::from_spec(&id, &args_only).expect("valid");
        assert_eq!(bp.body.entrypoint, None);
        assert_eq!(bp.body.cmd, Some(vec!["echo".into(), "hi".into()]));

        let (id, none) = spec(Network::Bridge, None);
        let bp = Blueprint::from_spec(&id, &none).expect("valid");
        assert_eq!((bp.body.entrypoint, bp.body.cmd), (None, None));
    }

    #[test]
    fn env_carries_the_template_variables_and_stop_settings_round_up() {
        let (id, spec) = spec(Network::Bridge, None);
        let bp = Blueprint::from_spec(&id, &spec).expect("valid");
        assert!(bp.env.contains(&"PORT=8082".to_string()), "{:?}", bp.env);
        assert!(bp.env.contains(&"REPLICA=2".to_string()), "{:?}", bp.env);
        assert_eq!(bp.body.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(bp.body.stop_timeout, Some(2));
        assert_eq!(grace_secs(Duration::ZERO), 0);
        assert_eq!(signal_name(StopSignal(40)), "40");
    }

    #[test]
    fn a_service_without_image_is_refused_by_name() {
        let (id, spec) = spec(Network::Bridge, None);
        let mut service = (*spec.service).clone();
        service.image = None;
        let spec = ContainerSpec {
            service: Arc::new(service),
            ..spec
        };
        let err = Blueprint::from_spec(&id, &spec).expect_err("no image");
        assert!(
            err.contains("needs `image`") && err.contains("web"),
            "{err}"
        );
    }
}
