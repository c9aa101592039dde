//! TCP connect checks: resolve, connect with a hard timeout, close without leaving a
//! TIME_WAIT socket behind.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{lookup_host, TcpStream};
use tokio::time::{timeout_at, Instant};

use crate::{humanize, CheckResult, Outcome};

/// TCP connect check with a hard timeout.
///
/// `host` is an IP address (`127.0.0.1`, `::1`, `[::1]`) or a name, which is resolved; every
/// address it resolves to is tried in order until one accepts. The outcome is `Success` when
/// a connection is established, `Failure` when every address refused or `timeout` passed
/// while connecting, and `Unknown` when the name cannot be resolved (not the workload's
/// fault). The timeout covers resolution and connection.
///
/// The connection is closed with a reset rather than a FIN: the probe's side would otherwise
/// hold a TIME_WAIT socket, and therefore an ephemeral port, for a minute after each check,
/// which exhausts the port range at a few hundred checks per second.
///
/// # Cancel safety
/// Cancel safe: dropping the future drops any half-open socket.
pub async fn check_tcp(host: &str, port: u16, timeout: Duration) -> CheckResult {
    let started = Instant::now();
    let deadline = started + timeout;
    let outcome = probe(host, port, timeout, deadline).await;
    CheckResult::new(outcome, started.elapsed(), "")
}

async fn probe(host: &str, port: u16, timeout: Duration, deadline: Instant) -> Outcome {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let addrs: Vec<SocketAddr> = match timeout_at(deadline, lookup_host((bare, port))).await {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => return Outcome::Unknown(format!("cannot resolve {host:?}: {e}")),
        Err(_) => {
            return Outcome::Unknown(format!(
                "resolving {host:?} timed out after {}",
                humanize(timeout)
            ))
        }
    };
    if addrs.is_empty() {
        return Outcome::Unknown(format!("{host:?} resolves to no address"));
    }
    let mut last_error: Option<(SocketAddr, io::Error)> = None;
    for addr in addrs {
        match timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                close_without_time_wait(stream);
                return Outcome::Success;
            }
            Ok(Err(e)) => last_error = Some((addr, e)),
            Err(_) => {
                return Outcome::Failure(format!(
                    "connect to {addr} timed out after {}",
                    humanize(timeout)
                ))
            }
        }
    }
    match last_error {
        Some((addr, e)) => Outcome::Failure(format!("connect to {addr}: {e}")),
        None => Outcome::Failure("no address to connect to".into()),
    }
}

/// Close with SO_LINGER 0 (an abortive close: RST, no TIME_WAIT), as EaseProbe does; kubelet
/// sets a short linger on its probes for the same reason (kubernetes/kubernetes#115143). A
/// probe that closes first would otherwise keep the socket, and its port, for a minute.
fn close_without_time_wait(stream: TcpStream) {
    // `set_linger` is deprecated because a *non-zero* linger blocks the thread on drop; a
    // zero linger never blocks. (`set_zero_linger` needs tokio 1.49, newer than the
    // workspace's minimum.) A failure only means a TIME_WAIT socket, so it is ignored.
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}
