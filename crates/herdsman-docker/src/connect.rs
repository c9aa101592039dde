//! Finding and greeting the Docker daemon: `DOCKER_HOST` or the default socket, a version
//! negotiated down to what the daemon speaks, and a ping so "unreachable" is said at once.

use std::time::Duration;

use bollard::{Docker, API_DEFAULT_VERSION};

use crate::DockerError;

/// The client timeout for ordinary calls. A call that blocks longer on purpose (a stop
/// with a long grace) gets its own client with a longer timeout.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The default socket, as the docker CLI and bollard use it.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Where the daemon is, as the user would name it in a message.
pub(crate) fn place() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => format!("DOCKER_HOST={host}"),
        _ => DEFAULT_SOCKET.to_string(),
    }
}

/// Connect to the daemon named by `DOCKER_HOST` (unix or tcp) or the default socket,
/// negotiate the API version and ping it.
///
/// # Errors
/// [`DockerError::Unreachable`] naming the socket or `DOCKER_HOST`.
pub(crate) async fn connect() -> Result<Docker, DockerError> {
    let place = place();
    let unreachable = |reason: String| DockerError::Unreachable {
        place: place.clone(),
        reason,
    };
    let docker = match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => Docker::connect_with_host(&host),
        _ => Docker::connect_with_unix(DEFAULT_SOCKET, CALL_TIMEOUT.as_secs(), API_DEFAULT_VERSION),
    }
    .map_err(|e| unreachable(e.to_string()))?
    .with_timeout(CALL_TIMEOUT);
    let docker = tokio::time::timeout(CALL_TIMEOUT, docker.negotiate_version())
        .await
        .map_err(|_| unreachable(format!("no answer within {CALL_TIMEOUT:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
    docker
        .ping()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(docker)
}
