//! The supervision actor tree, its policies, events, status board and embedding API.
//!
//! ```text
//! DeploymentActor          start order, health aggregation, stabilization, shutdown
//!  └─ ServiceSupervisor    desired replicas, restart decisions, panic action
//!      └─ ContainerActor   init steps → create → start → report exit
//!          └─ ProbeActor   health checks, thresholds, transitions
//! ```
//!
//! Layout: `handle` (spawning and the [`DeploymentHandle`]), `deployment_actor`,
//! `service_supervisor`, `container_actor`, `probe_actor` (the actors, thin shells over
//! pure policies), `probe_clock` (one timer for every probe of a deployment), `restart` and `backoff` (restart window and crash-loop delay), `rollout` (which
//! replicas a rolling update replaces next), `apply` (diffing a new spec into a plan),
//! `stabilization` (when a deployment is stable and
//! why not), `init_runs` (each slot's init run in flight, so none overlaps another),
//! `generations` (the generations issued per slot, so no container id is reused), `event` (typed events and their bounded bus), `board` (shared status).

mod apply;
mod backoff;
mod board;
mod container_actor;
mod deployment_actor;
mod error;
mod event;
mod generations;
mod handle;
mod init_runs;
mod prefetch;
mod probe_actor;
mod probe_clock;
mod restart;
mod revision;
mod rollout;
mod service_supervisor;
mod slot_key;
mod stabilization;

pub use apply::{ApplyPlan, Change, ServiceChange};
pub use board::{
    DeploymentStatus, ProbeOutcome, ProbeRecord, ProbeTotals, ReplicaState, ReplicaStatus,
    RolloutPhase, RolloutStatus, ServicePhase, ServiceRollout, ServiceStatus, StatusBoard,
    PROBE_HISTORY,
};
pub use error::CoreError;
pub use event::{Event, EventKind, EventStream, Received};
pub use handle::{spawn_deployment, spawn_deployment_linked, DeploymentHandle, DeploymentOptions};
pub use stabilization::{FailingReplica, FailingService, Stabilization};

/// Makes a local-only type an actor message: `impl ractor::Message for T {}` when ractor's
/// `cluster` feature is on (this crate's `cluster` feature: every message type then needs
/// an explicit impl), nothing otherwise (ractor's blanket impl covers it). Use it for
/// every actor message in a build that may link herdsman-cluster.
#[cfg(feature = "cluster")]
#[macro_export]
macro_rules! local_message {
    ($($t:ty),+ $(,)?) => { $(impl $crate::__ractor::Message for $t {})+ };
}

/// Makes a local-only type an actor message: `impl ractor::Message for T {}` when ractor's
/// `cluster` feature is on (this crate's `cluster` feature: every message type then needs
/// an explicit impl), nothing otherwise (ractor's blanket impl covers it). Use it for
/// every actor message in a build that may link herdsman-cluster.
#[cfg(not(feature = "cluster"))]
#[macro_export]
macro_rules! local_message {
    ($($t:ty),+ $(,)?) => {};
}

#[doc(hidden)]
pub use ractor as __ractor;

/// Most replicas a service may have.
pub const MAX_REPLICAS: u32 = 100_000;
