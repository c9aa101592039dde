//! `--notify URL`: notable events (unhealthy, restart, backoff, failed, stable, rollout
//! started, complete or failed) POSTed to a webhook as JSON, with retries, from a bounded
//! queue. Supervision never waits for
//! the receiver: one task moves events from the bus into the queue (dropping the oldest
//! when it is full, and counting them), another sends them one at a time; a slow or dead
//! receiver only makes the queue drop.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use herdsman_core::{Event, EventKind, EventStream, Received};
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// Notifications kept waiting for the receiver unless `--notify-queue` says otherwise.
pub(crate) const DEFAULT_QUEUE: usize = 256;

/// Attempts per notification.
const ATTEMPTS: u32 = 3;

/// Delay before the first retry; doubled for each next one.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// How long one POST may take.
const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// `--notify URL`: an http or https URL.
pub(crate) fn parse_url(s: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!("expected an http or https URL, not {other}:")),
    }
}

/// What the webhook receives.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Notification {
    /// Deployment name.
    pub(crate) deployment: String,
    /// `unhealthy`, `restart`, `backoff`, `failed`, `stable` or `rollout`.
    pub(crate) kind: &'static str,
    /// The event in a sentence.
    pub(crate) summary: String,
    /// The event, as `/v1/events` has it.
    pub(crate) event: Event,
    /// Notifications dropped so far because the queue was full.
    pub(crate) dropped: u64,
}

/// The kind of notification an event is, if it is one.
pub(crate) fn notable(kind: &EventKind) -> Option<&'static str> {
    Some(match kind {
        EventKind::HealthChanged { healthy: false, .. } | EventKind::Isolated { .. } => "unhealthy",
        EventKind::ReplicaRestarting { .. } => "restart",
        EventKind::BackOff { .. } => "backoff",
        EventKind::GaveUp { .. }
        | EventKind::ServiceFailed { .. }
        | EventKind::ServiceShutdown { .. }
        | EventKind::StartFailed { .. } => "failed",
        EventKind::DeploymentStable { .. } => "stable",
        EventKind::RolloutStarted { .. }
        | EventKind::RolloutComplete { .. }
        | EventKind::RolloutFailed { .. } => "rollout",
        _ => return None,
    })
}

/// The queue between the event bus and the sender, and its counters.
#[derive(Debug)]
pub(crate) struct Queue {
    items: Mutex<VecDeque<Notification>>,
    capacity: usize,
    wake: Notify,
    dropped: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
}

impl Queue {
    /// An empty queue holding at most `capacity` notifications (at least 1).
    pub(crate) fn new(capacity: usize) -> Queue {
        Queue {
            items: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            wake: Notify::new(),
            dropped: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    fn items(&self) -> std::sync::MutexGuard<'_, VecDeque<Notification>> {
        self.items.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue `n`, dropping the oldest when full. Never waits.
    pub(crate) fn push(&self, mut n: Notification) {
        {
            let mut items = self.items();
            while items.len() >= self.capacity {
                items.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            n.dropped = self.dropped.load(Ordering::Relaxed);
            items.push_back(n);
        }
        self.wake.notify_one();
    }

    fn pop(&self) -> Option<Notification> {
        self.items().pop_front()
    }

    /// Notifications waiting now.
    pub(crate) fn len(&self) -> usize {
        self.items().len()
    }

    /// Notifications dropped because the queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Notifications the receiver accepted.
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Notifications given up on after every attempt failed.
    pub(crate) fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// Start notifying `url` of `events` until `stop` is set: the queue (for metrics) and the
/// two tasks.
///
/// # Errors
/// The HTTP client cannot be built.
pub(crate) fn start(
    url: reqwest::Url,
    capacity: usize,
    events: EventStream,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(Arc<Queue>, Vec<JoinHandle<()>>)> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(POST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let queue = Arc::new(Queue::new(capacity));
    let collect = tokio::spawn(collect(events, queue.clone(), stop.clone()));
    let send = tokio::spawn(send(client, url, queue.clone(), stop));
    Ok((queue, vec![collect, send]))
}

/// Move notable events from the bus into the queue.
async fn collect(mut events: EventStream, queue: Arc<Queue>, mut stop: watch::Receiver<bool>) {
    loop {
        let event = tokio::select! {
            r = events.recv() => match r {
                Some(Received::Event(e)) => e,
                Some(Received::Missed(_)) => continue,
                None => return,
            },
            _ = crate::stop::stopped(&mut stop) => return,
        };
        let Some(kind) = notable(&event.kind) else {
            continue;
        };
        let summary = crate::operate::event_line(&event);
        let summary = summary
            .split_once("  ")
            .map_or(summary.clone(), |(_, s)| s.to_string());
        queue.push(Notification {
            deployment: event.deployment.to_string(),
            kind,
            summary,
            event,
            dropped: 0,
        });
    }
}

/// Send queued notifications one at a time, each with its retries.
async fn send(
    client: reqwest::Client,
    url: reqwest::Url,
    queue: Arc<Queue>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let Some(n) = queue.pop() else {
            tokio::select! {
                _ = queue.wake.notified() => continue,
                _ = crate::stop::stopped(&mut stop) => return,
            }
        };
        let mut delay = FIRST_RETRY;
        for attempt in 1..=ATTEMPTS {
            let body = match serde_json::to_vec(&n) {
                Ok(b) => b,
                Err(e) => {
                    // Not expected for this type; the notification cannot be sent.
                    tracing::warn!(error = %e, "cannot encode a notification");
                    break;
                }
            };
            let outcome = client
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await;
            let retry = match outcome {
                Ok(r) if r.status().is_success() => {
                    queue.sent.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(r) => {
                    let code = r.status();
                    tracing::warn!(%url, status = %code, attempt, "notification refused");
                    code.is_server_error() || code == reqwest::StatusCode::TOO_MANY_REQUESTS
                }
                Err(e) => {
                    tracing::warn!(%url, error = %e, attempt, "notification not delivered");
                    true
                }
            };
            if !retry || attempt == ATTEMPTS {
                queue.failed.fetch_add(1, Ordering::Relaxed);
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = crate::stop::stopped(&mut stop) => return,
            }
            delay *= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(i: u64) -> Notification {
        Notification {
            deployment: "shop".into(),
            kind: "restart",
            summary: format!("n{i}"),
            event: Event {
                at_ms: i,
                deployment: "shop".into(),
                kind: EventKind::DeploymentUnstable,
            },
            dropped: 0,
        }
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_it() {
        let q = Queue::new(2);
        for i in 0..5 {
            q.push(notification(i));
        }
        assert_eq!(q.len(), 2);
        assert_eq!(q.dropped(), 3);
        let left: Vec<String> = std::iter::from_fn(|| q.pop()).map(|n| n.summary).collect();
        assert_eq!(left, ["n3", "n4"]);
    }

    #[test]
    fn only_notable_events_notify() {
        assert_eq!(
            notable(&EventKind::HealthChanged {
                service: "web".into(),
                replica: 0,
                healthy: false
            }),
            Some("unhealthy")
        );
        assert_eq!(
            notable(&EventKind::HealthChanged {
                service: "web".into(),
                replica: 0,
                healthy: true
            }),
            None
        );
        assert_eq!(
            notable(&EventKind::DeploymentStable { after_ms: 1 }),
            Some("stable")
        );
        assert_eq!(
            notable(&EventKind::BackOff {
                service: "web".into(),
                replica: 0,
                delay_ms: 1
            }),
            Some("backoff")
        );
        assert_eq!(
            notable(&EventKind::RolloutComplete { revision: 2 }),
            Some("rollout")
        );
        assert_eq!(notable(&EventKind::DeploymentStopped), None);
    }
}
