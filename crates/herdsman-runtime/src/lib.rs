//! Container runtimes: the [`Runtime`] trait the actor tree drives, [`ProcessRuntime`]
//! (real OS processes, the default) and [`SimRuntime`] (simulated containers with
//! fault injection, for fleet simulations and deterministic tests).
//!
//! # Plugging in your own backend
//!
//! An orchestrator that runs its workloads with Docker, youki, Firecracker VMs or anything
//! else implements [`Runtime`] for that backend and hands it to the actor tree as
//! `Arc<dyn Runtime>`. The tree calls it once per replica incarnation, named by a
//! [`ContainerId`] (deployment, service, replica, generation), concurrently for different
//! ids; never block the executor and never hold a lock across an await.
//!
//! - `create` prepares the container from [`ContainerSpec`]: the validated service (image,
//!   command, env templates) and the replica's variables to expand them with. Keep the
//!   backend's handle keyed by the id.
//! - `start` starts it and returns [`Started`] with an [`ExitWatch`]: keep the
//!   [`ExitSender`] from [`ExitWatch::channel`] and complete it from the backend's own exit
//!   event (Docker's `wait` endpoint, youki's pidfd or SIGCHLD, the hypervisor's exit
//!   event). Never poll on a timer: restarts are only as fast as this notification. A
//!   dropped sender reads as [`ExitReason::Lost`]. `send` may run the watcher's callback
//!   (the supervision tree's report of the exit, a message send) on the calling thread:
//!   call it from where the exit is learned, not while holding a lock of your own that
//!   a `Runtime` method takes.
//! - `stop` sends the stop signal to everything the container runs (for youki, its
//!   cgroup), waits up to the grace period, kills, and returns once nothing is left.
//!   Stopping an exited container succeeds. `remove` frees what is left and is idempotent.
//! - `exec` runs `sh -c <command>` inside the container with a hard timeout (Docker exec,
//!   `youki exec`, the VM's agent), for command health checks; answer
//!   [`RuntimeError::Unsupported`] if the backend cannot.
//! - `logs` returns the output's tail synchronously (keep a ring buffer), for the log
//!   tails of stabilization reports.
//! - `probe_host` is the address TCP and HTTP checks connect to (default loopback; a
//!   bridge network's container IP otherwise). `check` and `init_step` probe from this
//!   host by default; override them when the workload is unreachable from here, e.g. to
//!   run checks through a VM's agent.
//! - Errors: [`RuntimeError::Start`] for causes someone must fix (name the image or path),
//!   [`RuntimeError::Io`] for transient ones, [`RuntimeError::UnknownContainer`] for ids
//!   it never created.
//!
//! The example on [`Runtime`] is a minimal, compiled implementation; [`ProcessRuntime`]
//! and [`SimRuntime`] are complete ones.
//!
//! Layout: `runtime` (the trait, container ids, exits), `exit_watch` (an exit's
//! notification: awaited, or a callback run where the runtime learns of it), `error`
//! (this crate's error),
//! `process` (the process runtime), `launch` (a replica's argv, env and workdir),
//! `containment` (finding the cgroup v2 hierarchy; a cgroup or process group per
//! incarnation), `process_group` (signalling a replica's whole process group),
//! `log_buffer` (bounded in-memory output capture), `log_file` (replica-owned log files,
//! their rotation and tail), `records` (the running incarnations kept in the state
//! directory), `adoption` (survivors of an earlier runtime: adopt or discard), `sim` (the
//! simulated runtime), `sim_state` (its state and timer driver), `sim_audit` (the
//! contract breaches it records), `fault` (fault profiles and seeded
//! randomness), `time_slice` (a short scheduler slice for supervising threads).

mod adoption;
mod containment;
mod error;
mod exit_watch;
mod fault;
mod launch;
mod log_buffer;
mod log_file;
mod process;
mod process_group;
mod records;
mod runtime;
mod sim;
mod sim_audit;
mod sim_containers;
mod sim_state;
mod time_slice;

pub use error::RuntimeError;
pub use exit_watch::{ExitSender, ExitWatch};
pub use fault::{ExecBehaviour, FaultProfile, HealthBehaviour, Lifetime};
pub use log_buffer::LogBuffer;
pub use process::{ProcessConfig, ProcessRuntime};
pub use runtime::{ContainerId, ContainerSpec, Exit, ExitReason, Runtime, Started, Survivor};
pub use sim::SimRuntime;
pub use sim_audit::{Violation, ViolationKind};
pub use sim_state::SimStats;
pub use time_slice::request_short_time_slice;
