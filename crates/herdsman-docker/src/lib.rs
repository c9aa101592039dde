//! herdsman's Docker backend: [`DockerRuntime`] implements
//! [`herdsman_runtime::Runtime`] on the Docker Engine API (through `bollard`), one
//! container per replica incarnation.
//!
//! Exits are event-driven (one `wait` per incarnation, started after `start`); a lost
//! daemon connection hands the exit owed to a reconciler that settles it by label once the
//! daemon answers again. Logs are followed into a bounded ring; command checks run inside
//! the container with a hard timeout; a restarted herdsman finds its running containers by
//! label and adopts them.
//!
//! Layout: `docker_runtime` (the runtime: create, start, stop, remove, exec, logs,
//! adoption), `connect` (finding the daemon, version negotiation, the unreachable error),
//! `container` (names, labels, the create body from the spec), `waiter` (one exit wait per
//! incarnation), `reconciler` (exits owed across a lost daemon), `exit` (exit codes,
//! signals and OOM kills), `exec` (commands in a container with a hard timeout),
//! `log_ring` (the output tail and its follower), `error` (this crate's error).

mod connect;
mod container;
mod docker_runtime;
mod error;
mod exec;
mod exit;
mod log_ring;
mod reconciler;
mod waiter;

pub use docker_runtime::{DockerConfig, DockerRuntime};
pub use error::DockerError;
