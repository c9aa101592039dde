//! Shared fixtures of the `SimRuntime` tests: simulated time, containers created and
//! started from the common fixtures, and an init step.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::future::Future;
use std::time::Duration;

use herdsman_runtime::{ContainerId, Runtime, SimRuntime, Started};
use herdsman_spec::{InitAction, InitStep, ReplicaVars, StepFailure, Template};
use tokio::time::timeout;

use crate::support::{replica, service};

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    // Simulated time: an hour passes in no real time, so this only trips on a deadlock.
    timeout(secs(3600), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} never finished: likely deadlocked"))
}

/// Create replica `r` of `svc` at `generation`.
pub async fn create(
    sim: &SimRuntime,
    svc: &str,
    r: u32,
    generation: u64,
) -> (ContainerId, ReplicaVars) {
    let (id, spec) = replica(&service(svc, None), r);
    let id = ContainerId { generation, ..id };
    sim.create(&id, &spec).await.expect("create");
    (id, spec.vars)
}

/// Create and start replica `r` of `svc` at generation 0.
pub async fn launch(sim: &SimRuntime, svc: &str, r: u32) -> (ContainerId, Started) {
    let (id, _) = create(sim, svc, r, 0).await;
    let started = sim.start(&id).await.expect("start");
    (id, started)
}

pub fn init_step(retry: u32) -> InitStep {
    InitStep {
        id: "migrate".into(),
        action: InitAction::Run {
            command: Template::literal("./migrate"),
        },
        timeout: secs(10),
        retry,
        on_failure: StepFailure::Fail,
    }
}
