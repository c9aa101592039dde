//! The core crate's error type.

/// Errors of the embedding API.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The deployment actor could not be spawned; retrying will not help unless the
    /// actor system is short of resources.
    #[error("cannot spawn the deployment actor")]
    Spawn(#[source] ractor::SpawnErr),
    /// The deployment has stopped (or its actor died); retrying will not help.
    #[error("the deployment is not running")]
    Stopped,
    /// The deployment did not answer in time; retrying may help.
    #[error("the deployment did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// No service by that name; retrying will not help.
    #[error("no service named {0:?}")]
    UnknownService(String),
    /// No replica with that index in the service; retrying will not help.
    #[error("service {service:?} has no replica {replica}")]
    UnknownReplica {
        /// Service.
        service: String,
        /// Replica index.
        replica: u32,
    },
    /// A restarted replica was not running and healthy again in time; retrying may help
    /// once whatever keeps it from becoming ready is fixed.
    #[error("{service}/{replica} was not ready again within {waited:?}")]
    NotReady {
        /// Service.
        service: String,
        /// Replica index.
        replica: u32,
        /// How long it was given.
        waited: std::time::Duration,
    },
    /// The applied spec is for another deployment; retrying will not help.
    #[error("the spec is for deployment {applied:?}, but this is {running:?}")]
    WrongDeployment {
        /// The running deployment.
        running: String,
        /// The one the spec names.
        applied: String,
    },
    /// `undo` with no earlier revision to go back to; retrying will not help.
    #[error("there is no earlier revision to go back to")]
    NoPreviousRevision,
    /// A replica count out of range; retrying will not help.
    #[error("cannot scale {service} to {replicas} replicas (at most 100000)")]
    InvalidScale {
        /// Service.
        service: String,
        /// Requested count.
        replicas: u32,
    },
}
