//! The Docker crate's error: what can go wrong before any container exists.

/// Errors of connecting to the Docker daemon. Per-container failures are
/// [`herdsman_runtime::RuntimeError`]s, as the [`herdsman_runtime::Runtime`] trait requires.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The daemon does not answer at `place` (a socket path or `DOCKER_HOST`); retrying
    /// helps once it runs.
    #[error("the Docker daemon at {place} is unreachable: {reason} (is dockerd running? set DOCKER_HOST to use another daemon)")]
    Unreachable {
        /// Where herdsman looked: the socket path, or `DOCKER_HOST=...`.
        place: String,
        /// What the client reported.
        reason: String,
    },
}
