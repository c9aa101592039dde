//! The runtime crate's error type.

/// Errors a runtime reports.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No container with this id; retrying will not help.
    #[error("no container {id}")]
    UnknownContainer {
        /// The container id.
        id: String,
    },
    /// The container could not be created or started; retrying helps only if the cause
    /// (missing binary, permissions, workdir) is fixed.
    #[error("cannot start {id}: {reason}")]
    Start {
        /// The container id.
        id: String,
        /// What went wrong, naming the path involved.
        reason: String,
    },
    /// The backend does not support this operation; retrying will not help.
    #[error("{what} is not supported for {id}")]
    Unsupported {
        /// The container id.
        id: String,
        /// The operation.
        what: &'static str,
    },
    /// An operating-system call failed; retrying may help.
    #[error("{what} failed for {id}")]
    Io {
        /// The container id.
        id: String,
        /// The operation.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Simulated failure injected by a fault profile; retrying may help.
    #[error("injected fault for {id}: {what}")]
    Injected {
        /// The container id.
        id: String,
        /// The fault.
        what: String,
    },
}
