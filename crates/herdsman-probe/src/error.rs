//! The crate's one error type: what can keep a probe or command from running at all.

/// Errors of this crate.
///
/// A check that runs and fails is not an error: it is an [`Outcome`](crate::Outcome). These
/// are the cases where nothing could be run.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The command could not be spawned (missing binary, permissions); retrying will not help
    /// until the system changes.
    #[error("cannot spawn {program:?}")]
    Spawn {
        /// Program that was to be run.
        program: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// An empty command line; retrying cannot help.
    #[error("empty command")]
    EmptyCommand,
}

/// An error with its causes, `outer: inner: root`, skipping a cause that repeats its parent.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}
