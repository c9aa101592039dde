//! How the API's connections are accepted and bounded, so that no client, with or without
//! the token, can exhaust the API or the process's file descriptors: a request head must
//! arrive within the header timeout (which also closes connections idle between
//! requests), at most so many connections are open at once, and when that many are,
//! the one that has been idle the longest is closed to make room.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// How long open connections get to finish once the API stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The API's connection limits (flags of `herdsman run`).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ConnectionLimits {
    /// How long an API connection may take to send a request's headers, counted from
    /// when it opens or from its previous response: slow and idle connections are closed.
    #[arg(
        long = "api-header-timeout",
        value_name = "DUR",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub(crate) header_timeout: Duration,
    /// Most API connections open at once (also at most half the open-file limit); past
    /// it, the connection idle the longest is closed to make room.
    #[arg(long = "api-max-connections", value_name = "N", default_value_t = 1024)]
    pub(crate) max_connections: usize,
}

/// Raise the soft limit on open files to the hard limit, so that connections and
/// replicas' pipes do not run out at a default of 1,024. The new soft limit, or why it
/// could not be raised.
pub(crate) fn raise_open_file_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// The connection cap in effect: the flag, but at most half the open-file limit (the rest
/// is for replicas' pipes, logs and the state file), and at least 1.
fn effective_cap(limits: &ConnectionLimits) -> usize {
    let files = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| usize::try_from(soft / 2).unwrap_or(usize::MAX))
        .unwrap_or(512);
    limits.max_connections.min(files).max(1)
}

/// Serve `app` on `listener` within `limits` until `stop` is set; then let open
/// connections finish their requests for a moment.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let cap = effective_cap(&limits);
    let table = Table::default();
    let mut tasks = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            _ = crate::stop::stopped(&mut stop) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: give connections time to close
                // rather than spin.
                tracing::warn!(error = %e, "the API cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let id = next_id;
        next_id += 1;
        let Some(slot) = table.admit(id, cap) else {
            // Every connection is in the middle of a request: refuse this one.
            drop(stream);
            continue;
        };
        tasks.spawn(connection(
            stream,
            app.clone(),
            limits.header_timeout,
            slot,
            table.clone(),
            stop.clone(),
        ));
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

/// One connection, until it ends, is evicted, or the API stops.
async fn connection(
    stream: tokio::net::TcpStream,
    app: Router,
    header_timeout: Duration,
    slot: Slot,
    table: Table,
    mut stop: watch::Receiver<bool>,
) {
    let Slot { id, busy, evicted } = slot;
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let guard = Busy::enter(busy.clone());
        let app = app.clone();
        async move {
            let response = app.oneshot(request.map(Body::new)).await;
            Ok::<Response, Infallible>(match response {
                Ok(r) => r.map(|body| {
                    Body::new(Guarded {
                        body,
                        _guard: guard,
                    })
                }),
                Err(never) => match never {},
            })
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        // Dropping the connection closes its socket.
        _ = evicted => {}
        _ = crate::stop::stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
    table.remove(id);
}

/// What a connection gets from the table: its id, its count of requests in progress,
/// and the signal that it must close to make room.
struct Slot {
    id: u64,
    busy: Arc<AtomicUsize>,
    evicted: oneshot::Receiver<()>,
}

struct Entry {
    busy: Arc<AtomicUsize>,
    evict: oneshot::Sender<()>,
}

/// The open connections, oldest first (ids grow with each connection accepted).
#[derive(Clone, Default)]
struct Table(Arc<Mutex<BTreeMap<u64, Entry>>>);

impl Table {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Make room for connection `id` if `cap` are open, by evicting the oldest one with no
    /// request in progress (still sending its first request's head, or idle between
    /// requests). `None` when every open connection is busy.
    fn admit(&self, id: u64, cap: usize) -> Option<Slot> {
        let mut conns = self.lock();
        while conns.len() >= cap {
            let idle = conns
                .iter()
                .find(|(_, e)| e.busy.load(Ordering::Acquire) == 0)
                .map(|(id, _)| *id)?;
            if let Some(e) = conns.remove(&idle) {
                let _ = e.evict.send(());
            }
        }
        let busy = Arc::new(AtomicUsize::new(0));
        let (evict, evicted) = oneshot::channel();
        conns.insert(
            id,
            Entry {
                busy: busy.clone(),
                evict,
            },
        );
        Some(Slot { id, busy, evicted })
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }
}

/// A request in progress on a connection, until its response body is done or dropped:
/// a streaming response (`/v1/events`) keeps its connection busy.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn enter(count: Arc<AtomicUsize>) -> Busy {
        count.fetch_add(1, Ordering::AcqRel);
        Busy(count)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that holds its request's [`Busy`] guard.
struct Guarded {
    body: Body,
    _guard: Busy,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_evicts_its_oldest_idle_connection_and_never_a_busy_one() {
        let table = Table::default();
        let mut a = table.admit(0, 2).expect("room");
        let _busy = Busy::enter(a.busy.clone());
        let mut b = table.admit(1, 2).expect("room");
        let mut c = table.admit(2, 2).expect("b is idle: evicted");
        assert!(
            b.evicted.try_recv().is_ok(),
            "the oldest idle connection goes"
        );
        assert!(a.evicted.try_recv().is_err(), "a busy connection stays");
        let _busy_c = Busy::enter(c.busy.clone());
        assert!(
            table.admit(3, 2).is_none(),
            "all busy: the newcomer is refused"
        );
        assert!(c.evicted.try_recv().is_err());
    }

    #[test]
    fn a_finished_response_makes_its_connection_idle_again() {
        let count = Arc::new(AtomicUsize::new(0));
        let guard = Busy::enter(count.clone());
        assert_eq!(count.load(Ordering::Acquire), 1);
        drop(Guarded {
            body: Body::empty(),
            _guard: guard,
        });
        assert_eq!(count.load(Ordering::Acquire), 0);
    }
}
