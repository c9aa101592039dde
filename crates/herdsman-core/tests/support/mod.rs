//! Shared helpers for the actor-tree tests: spec builders and event waiting.

#![allow(dead_code, missing_docs)]

use std::future::Future;
use std::time::Duration;

use herdsman_core::{Event, EventKind, EventStream, Received};
use herdsman_spec::{
    Backoff, Check, Dependency, DependencyCondition, Deployment, Health, OnUnhealthy,
    RestartPolicy, RestartSpec, Scale, Service, ServiceKind, Template,
};

/// How long a test waits for anything, in (paused) virtual time.
pub const PATIENCE: Duration = Duration::from_secs(3600);

pub fn service(name: &str, replicas: u32) -> Service {
    Service {
        image: Some("sim".into()),
        scale: Scale::Fixed { replicas },
        restart: RestartSpec {
            policy: RestartPolicy::Always,
            max_restarts: 3,
            window: Duration::from_secs(60),
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(8),
                multiplier: 2.0,
                jitter: 0.0,
            },
            reset_after: Duration::from_secs(600),
            give_up_after: None,
        },
        stop_grace_period: Duration::from_secs(2),
        ..Service::new(name, ServiceKind::Service)
    }
}

pub fn health(on_unhealthy: OnUnhealthy) -> Health {
    Health {
        start_grace: Duration::ZERO,
        start_interval: Duration::from_secs(1),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        retries: 2,
        success_threshold: 1,
        on_unhealthy,
        check: Check::Command {
            command: Template::literal("true"),
        },
    }
}

pub fn depends(service: &str, condition: DependencyCondition, timeout: Duration) -> Dependency {
    Dependency {
        service: service.to_string(),
        condition,
        timeout,
    }
}

pub fn deployment(services: Vec<Service>) -> Deployment {
    Deployment {
        name: "test".into(),
        services,
    }
}

/// Fail the test with a clear message instead of hanging.
pub async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: nothing happened within {PATIENCE:?} (likely deadlocked)"),
    }
}

/// Read events until one matches; returns it and every event seen before it.
pub async fn wait_for(
    events: &mut EventStream,
    what: &str,
    mut pred: impl FnMut(&EventKind) -> bool,
) -> (Event, Vec<Event>) {
    let mut seen = Vec::new();
    bounded(what, async {
        loop {
            match events.recv().await {
                Some(Received::Event(e)) => {
                    if pred(&e.kind) {
                        return (e, seen);
                    }
                    seen.push(e);
                }
                Some(Received::Missed(n)) => panic!("test subscriber missed {n} events"),
                None => panic!("{what}: the deployment's event bus closed"),
            }
        }
    })
    .await
}

/// Every event already queued, without waiting.
pub fn drain(events: &mut EventStream) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(r) = events.try_recv() {
        if let Received::Event(e) = r {
            out.push(e);
        }
    }
    out
}

pub fn started(kind: &EventKind, svc: &str, rep: u32) -> bool {
    matches!(kind, EventKind::ReplicaStarted { service, replica, .. } if &**service == svc && *replica == rep)
}
