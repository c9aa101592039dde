//! Shared test fixtures: hand-built services and container specs, and a look into /proc
//! to prove that no process outlives its replica.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use herdsman_runtime::{ContainerId, ContainerSpec};
use herdsman_spec::{
    Backoff, Command, Endpoint, Protocol, ReplicaVars, RestartPolicy, RestartSpec, Scale, Service,
    ServiceKind, Template,
};

/// The deployment every fixture belongs to.
pub const DEPLOYMENT: &str = "test";

/// A service named `name` with a command (`None` for an image-only service) and one
/// endpoint called `http` on port 8000.
pub fn service(name: &str, command: Option<Command>) -> Service {
    Service {
        image: Some(format!("example/{name}:1")),
        command,
        scale: Scale::Fixed { replicas: 1 },
        endpoints: vec![Endpoint {
            name: "http".into(),
            protocol: Protocol::Http,
            port: 8000,
        }],
        restart: RestartSpec {
            policy: RestartPolicy::Always,
            max_restarts: 5,
            window: Duration::from_secs(300),
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
                multiplier: 2.0,
                jitter: 0.0,
            },
            reset_after: Duration::from_secs(600),
            give_up_after: None,
        },
        stop_grace_period: Duration::from_secs(10),
        ..Service::new(name, ServiceKind::Service)
    }
}

/// A command from already-expanded-looking strings, parsed as templates.
pub fn command(argv: &[&str], workdir: Option<PathBuf>) -> Command {
    let parse = |s: &&str| Template::parse(s).expect("test template is valid");
    Command {
        entrypoint: argv[..1].iter().map(parse).collect(),
        args: argv[1..].iter().map(parse).collect(),
        workdir,
    }
}

/// `sh -c script` as a command.
pub fn shell(script: &str) -> Command {
    command(&["sh", "-c", script], None)
}

/// The id and spec of replica `replica` of `service`.
pub fn replica(service: &Service, replica: u32) -> (ContainerId, ContainerSpec) {
    let id = ContainerId::new(DEPLOYMENT, service.name.as_str(), replica, 0);
    let vars = ReplicaVars {
        deployment: DEPLOYMENT.to_string(),
        service: service.name.clone(),
        replica,
        ports: service
            .endpoints
            .iter()
            .map(|e| {
                let port = u32::from(e.port).saturating_add(replica).min(65535);
                (
                    herdsman_spec::endpoint_var_name(&e.name),
                    u16::try_from(port).unwrap_or(u16::MAX),
                )
            })
            .collect(),
    };
    let spec = ContainerSpec {
        service: Arc::new(service.clone()),
        vars,
    };
    (id, spec)
}

/// Live (not zombie) processes in process group `pgid`, from /proc.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // The command name may hold spaces and parentheses: fields start after the
            // last ')'. Then: state, ppid, pgrp.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
        })
        .collect()
}

/// Whether process `pid` is alive (and not a zombie).
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Wait (at most 5 s) until process group `pgid` has no live member; panic naming the
/// survivors otherwise.
pub async fn assert_group_gone(pgid: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let members = group_members(pgid);
        if members.is_empty() {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("process group {pgid} still has live members {members:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
