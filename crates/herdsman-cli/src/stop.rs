//! The stop flag a run's background tasks share: set once, at shutdown, to end event
//! streams, the state writer and the API server.

use tokio::sync::watch;

/// A new flag, unset.
pub(crate) fn flag() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(false)
}

/// Resolves once the flag is set, or once its sender is gone (nothing can set it then,
/// and its owner has finished).
///
/// # Cancel safety
/// Cancel safe.
pub(crate) async fn stopped(flag: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, so callers stay `Send`.
    let _ = flag.wait_for(|set| *set).await;
}
