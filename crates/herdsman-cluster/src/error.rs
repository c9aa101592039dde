//! This crate's error.

/// What can go wrong forming or running a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The cookie file cannot be read, is empty, or others can read it. Retrying helps
    /// only once the file is fixed.
    #[error("cookie file {path}: {why}")]
    Cookie {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// A TLS file (`--tls-cert`, `--tls-key`, `--tls-ca`) cannot be read or does not
    /// hold what it should. Retrying helps only once the file is fixed.
    #[error("tls: {path}: {why}")]
    Tls {
        /// The file (or files) at fault.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The node server (listener) cannot start, e.g. the address is taken. Retrying may
    /// help once the address is free.
    #[error("cannot start the node server on {addr}: {why}")]
    Listen {
        /// The address.
        addr: String,
        /// The cause.
        why: String,
    },
    /// An actor of the cluster layer could not be spawned. Not retryable.
    #[error("cannot spawn the {what} actor")]
    Spawn {
        /// Which actor.
        what: &'static str,
        /// The cause.
        #[source]
        source: ractor::SpawnErr,
    },
    /// The node's local deployment could not start. Not retryable with the same spec.
    #[error("cannot start the local deployment")]
    Deployment(#[source] herdsman_core::CoreError),
}
