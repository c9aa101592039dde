//! The control socket's server, a task of `herdsman run`: accepts local clients on
//! `control.sock` (mode 0600, this user or root only), reads one request each and
//! carries it out through the [`DeploymentHandle`].
//!
//! Bounded everywhere: at most [`MAX_CONNECTIONS`] clients at once, a request line of at
//! most [`MAX_REQUEST`] bytes read within [`REQUEST_READ_TIMEOUT`], every operation under
//! a timeout, every write under [`WRITE_TIMEOUT`] (a client that stops reading is
//! dropped). Supervision never waits on it: it reads the status board, subscribes to
//! the event bus (which drops for a slow reader) and sends the actors bounded calls.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use herdsman_core::{DeploymentHandle, EventKind, EventStream, Received, ReplicaState};
use herdsman_probe::humanize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::control::{self, Answer, Envelope, Request, MAX_REQUEST, VERSION};
use crate::log_follow::{Follower, WINDOW};

mod rollouts;

use rollouts::LastFailure;

/// Most clients served at once; one more is told to come back later.
pub(crate) const MAX_CONNECTIONS: usize = 32;

/// How long a client has to send its request line.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one answer line may take to be written before the client is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound of a request that only asks the actors something (scale, start, status).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// How long `stop` waits for the service's replicas to be gone.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// How often a followed replica's output is read again.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

/// A bound control socket, removed when dropped.
pub(crate) struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Bind `control.sock` in `state_dir`, mode 0600. A socket file left by a run that ended
/// is replaced; one that still answers belongs to another live run and is left alone
/// (`Ok(None)`, with a warning: the verbs reach that run, not this one).
///
/// # Errors
/// The socket cannot be bound or its mode set.
pub(crate) async fn bind(state_dir: &Path) -> anyhow::Result<Option<ControlSocket>> {
    use anyhow::Context;
    let path = control::control_socket_path(state_dir);
    if path.exists() {
        if UnixStream::connect(&path).await.is_ok() {
            eprintln!(
                "warning: {} is served by another herdsman run; the control verbs (logs, restart, scale...) will reach that run, not this one",
                path.display()
            );
            return Ok(None);
        }
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("cannot serve the control socket {}", path.display()))?;
    let socket = ControlSocket { listener, path };
    std::fs::set_permissions(&socket.path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} private", socket.path.display()))?;
    Ok(Some(socket))
}

/// Serve the socket until `stop` is set; then every connection ends and the socket file
/// is removed.
pub(crate) async fn serve(
    socket: ControlSocket,
    handle: DeploymentHandle,
    mut stop: watch::Receiver<bool>,
) {
    let clock = BackoffClock::default();
    let feeding = tokio::spawn(clock.clone().feed(handle.subscribe(), stop.clone()));
    let failures = LastFailure::default();
    let remembering = tokio::spawn(failures.clone().feed(handle.subscribe(), stop.clone()));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let me = nix::unistd::geteuid().as_raw();
    loop {
        let stream = tokio::select! {
            r = socket.listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    // Out of file descriptors, most likely: give the others time to close.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = crate::stop::stopped(&mut stop) => break,
        };
        let allowed = stream
            .peer_cred()
            .is_ok_and(|c| c.uid() == me || c.uid() == 0);
        let slot = slots.clone().try_acquire_owned();
        let session = Session {
            handle: handle.clone(),
            clock: clock.clone(),
            failures: failures.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            if !allowed {
                let _ = send(&mut write, &Answer::failed("permission denied")).await;
                return;
            }
            let Ok(_slot) = slot else {
                let busy = Answer::failed(format!(
                    "too many control connections (at most {MAX_CONNECTIONS}); try again"
                ));
                let _ = send(&mut write, &busy).await;
                return;
            };
            session.serve(read, write).await;
        });
    }
    feeding.abort();
    remembering.abort();
}

/// Write one answer line, within [`WRITE_TIMEOUT`].
async fn send(write: &mut OwnedWriteHalf, answer: &Answer) -> io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(answer.line().as_bytes())).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading",
        )),
    }
}

/// Read the request line: at most [`MAX_REQUEST`] bytes, within [`REQUEST_READ_TIMEOUT`].
async fn read_request(read: &mut BufReader<OwnedReadHalf>) -> Result<Envelope, Answer> {
    let mut line = Vec::new();
    let mut limited = read.take(MAX_REQUEST as u64);
    match tokio::time::timeout(REQUEST_READ_TIMEOUT, limited.read_until(b'\n', &mut line)).await {
        Err(_) => return Err(usage("no request within 5s")),
        Ok(Err(e)) => return Err(usage(format!("cannot read the request: {e}"))),
        Ok(Ok(_)) => {}
    }
    if !line.ends_with(b"\n") {
        return Err(usage(format!(
            "a request is one JSON line of at most {MAX_REQUEST} bytes"
        )));
    }
    #[derive(serde::Deserialize)]
    struct Version {
        v: u32,
    }
    match serde_json::from_slice::<Version>(&line) {
        Ok(Version { v: VERSION }) => {}
        Ok(Version { v }) => {
            return Err(usage(format!(
                "this herdsman speaks control protocol v{VERSION}, not v{v}"
            )))
        }
        Err(e) => return Err(usage(format!("not a control request: {e}"))),
    }
    serde_json::from_slice(&line).map_err(|e| {
        usage(format!(
            "this herdsman cannot do that (protocol v{VERSION}): {e}"
        ))
    })
}

fn usage(message: impl Into<String>) -> Answer {
    Answer::Error {
        message: message.into(),
        usage: true,
    }
}

/// One client's connection.
struct Session {
    handle: DeploymentHandle,
    clock: BackoffClock,
    failures: LastFailure,
    stop: watch::Receiver<bool>,
}

impl Session {
    async fn serve(mut self, read: OwnedReadHalf, mut write: OwnedWriteHalf) {
        let mut read = BufReader::new(read);
        let request = match read_request(&mut read).await {
            Ok(envelope) => envelope.request,
            Err(answer) => {
                let _ = send(&mut write, &answer).await;
                return;
            }
        };
        let mut stop = self.stop.clone();
        // A stream ends when the client hangs up: it keeps its end open while it reads,
        // so the end of its input means it left, even while there is nothing to send.
        // An operation (restart, stop...) is carried out to its end even if the client
        // closes its sending side or leaves: half a restart helps nobody.
        let streaming = matches!(
            request,
            Request::Watch
                | Request::Events
                | Request::Rollout
                | Request::Logs { follow: true, .. }
        );
        let left = async move {
            if streaming {
                hung_up(read).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = self.answer(request, &mut write) => {}
            _ = left => {}
            _ = crate::stop::stopped(&mut stop) => {}
        }
    }

    /// Carry out `request`, writing its answers. Returns when it is done or the client
    /// cannot be written to.
    async fn answer(&mut self, request: Request, write: &mut OwnedWriteHalf) {
        let result = match request {
            Request::Status => self.status(write).await,
            Request::Watch => self.watch(write).await,
            Request::Events => self.events(write).await,
            Request::Logs {
                service,
                replica,
                tail,
                follow,
            } => self.logs(write, &service, replica, tail, follow).await,
            Request::Restart {
                service,
                replica,
                ready_within_ms,
            } => {
                self.restart(
                    write,
                    &service,
                    replica,
                    Duration::from_millis(ready_within_ms),
                )
                .await
            }
            Request::Stop { service } => self.stop_service(write, &service).await,
            Request::Start { service } => {
                let r =
                    tokio::time::timeout(CALL_TIMEOUT, self.handle.start_service(&service)).await;
                let answer = match r {
                    Ok(Ok(n)) => Answer::Ok {
                        message: format!(
                            "service {service} started: {n} replica{} desired",
                            crate::notices::plural(u64::from(n))
                        ),
                    },
                    Ok(Err(e)) => Answer::failed(e.to_string()),
                    Err(_) => Answer::failed("the deployment did not answer in time"),
                };
                send(write, &answer).await
            }
            Request::Scale { service, replicas } => {
                let r =
                    tokio::time::timeout(CALL_TIMEOUT, self.handle.scale(&service, replicas)).await;
                let answer = match r {
                    Ok(Ok(())) => Answer::Ok {
                        message: format!(
                            "service {service} scaled to {replicas} replica{}",
                            crate::notices::plural(u64::from(replicas))
                        ),
                    },
                    Ok(Err(e)) => Answer::failed(e.to_string()),
                    Err(_) => Answer::failed("the deployment did not answer in time"),
                };
                send(write, &answer).await
            }
            Request::Apply {
                spec,
                file,
                base_dir,
                dry_run,
            } => self.apply(write, &spec, &file, &base_dir, dry_run).await,
            Request::Undo => self.undo(write).await,
            Request::Rollout => self.rollout(write).await,
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "control client dropped");
        }
    }

    fn status_answer(&self) -> Answer {
        Answer::Status {
            status: self.handle.status(),
            backoff_left_ms: self.clock.left(Instant::now()),
        }
    }

    async fn status(&mut self, write: &mut OwnedWriteHalf) -> io::Result<()> {
        send(write, &self.status_answer()).await?;
        send(
            write,
            &Answer::Ok {
                message: String::new(),
            },
        )
        .await
    }

    /// The status now and after every event (coalesced: a burst gives one status), and
    /// every second while a backoff counts down.
    async fn watch(&mut self, write: &mut OwnedWriteHalf) -> io::Result<()> {
        let mut events = self.handle.subscribe();
        send(write, &self.status_answer()).await?;
        loop {
            let ticking = !self.clock.is_empty();
            tokio::select! {
                r = events.recv() => if r.is_none() { return Ok(()) },
                _ = tokio::time::sleep(Duration::from_secs(1)), if ticking => {}
            }
            while events.try_recv().is_some() {}
            send(write, &self.status_answer()).await?;
        }
    }

    async fn events(&mut self, write: &mut OwnedWriteHalf) -> io::Result<()> {
        let mut events = self.handle.subscribe();
        // Said first, so a client knows it is subscribed before anything happens.
        send(
            write,
            &Answer::Progress {
                message: "following events".into(),
            },
        )
        .await?;
        loop {
            let answer = match events.recv().await {
                Some(Received::Event(event)) => Answer::Event { event },
                Some(Received::Missed(count)) => Answer::Missed { count },
                None => return Ok(()),
            };
            send(write, &answer).await?;
        }
    }

    /// The replicas a request names: `replica`, or every replica of the service.
    fn replicas(&self, service: &str, replica: Option<u32>) -> Result<Vec<u32>, String> {
        let status = self.handle.status();
        let Some(svc) = status.services.iter().find(|s| s.name == service) else {
            let known: Vec<&str> = status.services.iter().map(|s| s.name.as_str()).collect();
            return Err(format!(
                "no service named {service:?} (services: {})",
                known.join(", ")
            ));
        };
        match replica {
            Some(r) if svc.replicas.iter().any(|x| x.replica == r) => Ok(vec![r]),
            Some(r) => Err(format!(
                "service {service} has no replica {r} (it has {})",
                svc.replicas.len()
            )),
            None => Ok(svc.replicas.iter().map(|r| r.replica).collect()),
        }
    }

    async fn logs(
        &mut self,
        write: &mut OwnedWriteHalf,
        service: &str,
        replica: Option<u32>,
        tail: usize,
        follow: bool,
    ) -> io::Result<()> {
        let replicas = match self.replicas(service, replica) {
            Ok(r) => r,
            Err(why) => return send(write, &Answer::failed(why)).await,
        };
        let mut followers: BTreeMap<u32, Follower> = BTreeMap::new();
        for r in replicas {
            let container = self.container(service, r);
            let window = self.handle.logs(service, r, WINDOW).unwrap_or_default();
            let skip = window.len().saturating_sub(tail);
            for line in &window[skip..] {
                send(write, &log(service, r, line)).await?;
            }
            followers.insert(r, Follower::new(container, window));
        }
        if !follow {
            return send(
                write,
                &Answer::Ok {
                    message: String::new(),
                },
            )
            .await;
        }
        let mut tick = tokio::time::interval(FOLLOW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if replica.is_none() {
                // Replicas added by a scale-up are followed from their first line.
                if let Ok(now) = self.replicas(service, None) {
                    for r in now {
                        followers.entry(r).or_default();
                    }
                }
            }
            for (r, follower) in followers.iter_mut() {
                let before = self.container(service, *r);
                let window = self.handle.logs(service, *r, WINDOW).unwrap_or_default();
                if self.container(service, *r) != before {
                    // Restarted while being read: read it again next time.
                    continue;
                }
                for line in follower.advance(before, window) {
                    send(write, &log(service, *r, &line)).await?;
                }
            }
        }
    }

    fn container(&self, service: &str, replica: u32) -> Option<herdsman_runtime::ContainerId> {
        self.handle
            .board()
            .replica(service, replica)
            .and_then(|r| r.container)
    }

    async fn restart(
        &mut self,
        write: &mut OwnedWriteHalf,
        service: &str,
        replica: Option<u32>,
        ready_within: Duration,
    ) -> io::Result<()> {
        let mut replicas = match self.replicas(service, replica) {
            Ok(r) => r,
            Err(why) => return send(write, &Answer::failed(why)).await,
        };
        if replica.is_none() {
            let desired = self
                .handle
                .status()
                .services
                .iter()
                .find(|s| s.name == service)
                .map_or(0, |s| s.desired);
            replicas.retain(|r| *r < desired);
        }
        let n = replicas.len();
        for (i, r) in replicas.iter().enumerate() {
            send(
                write,
                &Answer::Progress {
                    message: format!(
                        "restarting {service}/{r} ({} of {n}), waiting up to {} for it to be ready...",
                        i + 1,
                        humanize(ready_within)
                    ),
                },
            )
            .await?;
            let began = Instant::now();
            let bound = ready_within + CALL_TIMEOUT;
            let r_result =
                tokio::time::timeout(bound, self.handle.restart(service, Some(*r), ready_within))
                    .await;
            match r_result {
                Ok(Ok(())) => {
                    send(
                        write,
                        &Answer::Progress {
                            message: format!(
                                "{service}/{r} is ready again after {}",
                                humanize(began.elapsed())
                            ),
                        },
                    )
                    .await?
                }
                Ok(Err(e)) => {
                    let left = if i + 1 < n {
                        format!(
                            " ({} later replica{} left alone)",
                            n - i - 1,
                            crate::notices::plural((n - i - 1) as u64)
                        )
                    } else {
                        String::new()
                    };
                    return send(write, &Answer::failed(format!("{e}{left}"))).await;
                }
                Err(_) => {
                    return send(
                        write,
                        &Answer::failed(format!("{service}/{r} did not come back in time")),
                    )
                    .await
                }
            }
        }
        send(
            write,
            &Answer::Ok {
                message: format!(
                    "restarted {n} replica{} of {service}",
                    crate::notices::plural(n as u64)
                ),
            },
        )
        .await
    }

    /// Take the service to 0 and wait until none of its replicas runs any more.
    async fn stop_service(&mut self, write: &mut OwnedWriteHalf, service: &str) -> io::Result<()> {
        match tokio::time::timeout(CALL_TIMEOUT, self.handle.stop_service(service)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return send(write, &Answer::failed(e.to_string())).await,
            Err(_) => {
                return send(
                    write,
                    &Answer::failed("the deployment did not answer in time"),
                )
                .await
            }
        }
        let began = Instant::now();
        send(
            write,
            &Answer::Progress {
                message: format!("stopping every replica of {service}..."),
            },
        )
        .await?;
        loop {
            let left = self
                .handle
                .status()
                .services
                .iter()
                .find(|s| s.name == service)
                .map_or(0, |s| {
                    s.replicas
                        .iter()
                        .filter(|r| {
                            r.pid.is_some()
                                || matches!(
                                    r.state,
                                    ReplicaState::Running
                                        | ReplicaState::Starting
                                        | ReplicaState::Initializing
                                        | ReplicaState::Stopping
                                )
                        })
                        .count()
                });
            if left == 0 {
                break;
            }
            if began.elapsed() > STOP_TIMEOUT {
                return send(
                    write,
                    &Answer::failed(format!(
                        "{left} replica{} of {service} still running after {}",
                        crate::notices::plural(left as u64),
                        humanize(STOP_TIMEOUT)
                    )),
                )
                .await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        send(
            write,
            &Answer::Ok {
                message: format!("service {service} stopped in {}", humanize(began.elapsed())),
            },
        )
        .await
    }
}

fn log(service: &str, replica: u32, line: &str) -> Answer {
    Answer::Log {
        service: service.to_string(),
        replica,
        line: line.to_string(),
    }
}

/// Resolves when the client closes its end (or sends more than its one request).
async fn hung_up(mut read: BufReader<OwnedReadHalf>) {
    let mut buf = [0u8; 256];
    loop {
        match read.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// When each backoff in force ends, learned from the events that start them, so a
/// status can show the time left rather than the whole delay.
#[derive(Debug, Clone, Default)]
pub(crate) struct BackoffClock {
    ends: Arc<Mutex<HashMap<(String, u32), Instant>>>,
}

impl BackoffClock {
    fn ends(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), Instant>> {
        self.ends.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Take one event into account, seen at `now`.
    pub(crate) fn observe(&self, kind: &EventKind, now: Instant) {
        match kind {
            EventKind::ReplicaRestarting {
                service,
                replica,
                delay_ms,
                ..
            } if *delay_ms > 0 => {
                let end = now + Duration::from_millis(*delay_ms);
                self.ends().insert((service.to_string(), *replica), end);
            }
            EventKind::ReplicaStarted {
                service, replica, ..
            }
            | EventKind::ReplicaRestarting {
                service, replica, ..
            }
            | EventKind::GaveUp {
                service, replica, ..
            } => {
                self.ends().remove(&(service.to_string(), *replica));
            }
            EventKind::Scaled { service, to, .. } => {
                self.ends().retain(|(s, r), _| s != &**service || *r < *to);
            }
            _ => {}
        }
    }

    /// Time left of each backoff, by `service/replica`; ended ones are forgotten.
    pub(crate) fn left(&self, now: Instant) -> BTreeMap<String, u64> {
        let mut ends = self.ends();
        ends.retain(|_, end| *end > now);
        ends.iter()
            .map(|((s, r), end)| {
                (
                    format!("{s}/{r}"),
                    end.saturating_duration_since(now).as_millis() as u64,
                )
            })
            .collect()
    }

    fn is_empty(&self) -> bool {
        self.ends().is_empty()
    }

    async fn feed(self, mut events: EventStream, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                r = events.recv() => match r {
                    Some(Received::Event(e)) => self.observe(&e.kind, Instant::now()),
                    Some(Received::Missed(_)) => {}
                    None => return,
                },
                _ = crate::stop::stopped(&mut stop) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restarting(replica: u32, delay_ms: u64) -> EventKind {
        EventKind::ReplicaRestarting {
            service: "web".into(),
            replica,
            delay_ms,
            restarts: 3,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_backoff_clock_counts_down_and_forgets_a_restarted_replica() {
        let clock = BackoffClock::default();
        let t0 = Instant::now();
        clock.observe(&restarting(1, 2000), t0);
        clock.observe(&restarting(0, 0), t0);
        assert_eq!(
            clock.left(t0 + Duration::from_millis(1500)),
            BTreeMap::from([("web/1".to_string(), 500)])
        );
        clock.observe(
            &EventKind::ReplicaStarted {
                service: "web".into(),
                replica: 1,
                generation: 4,
                pid: Some(9),
            },
            t0 + Duration::from_millis(1600),
        );
        assert!(clock.left(t0 + Duration::from_millis(1600)).is_empty());
        clock.observe(&restarting(2, 1000), t0);
        assert!(clock.left(t0 + Duration::from_secs(2)).is_empty(), "over");
    }
}
