//! Typed deployment events and the bounded bus that carries them to subscribers without
//! ever blocking a supervisor.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use herdsman_runtime::Exit;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::stabilization::FailingService;

/// Something that happened in a deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the deployment was spawned.
    pub at_ms: u64,
    /// Deployment name.
    pub deployment: Arc<str>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The kinds of event, tagged `"event"` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// A replica's container is running.
    ReplicaStarted {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
        /// Incarnation.
        generation: u64,
        /// OS pid, if any.
        pid: Option<u32>,
    },
    /// A replica's container, left running by an earlier run of herdsman, was adopted:
    /// supervised again without being restarted.
    ReplicaAdopted {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
        /// Incarnation (the adopted one's).
        generation: u64,
        /// OS pid, if any.
        pid: Option<u32>,
    },
    /// A replica's container exited.
    ReplicaExited {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
        /// Incarnation.
        generation: u64,
        /// How it ended.
        exit: Exit,
    },
    /// A replica's container could not be created or started.
    StartFailed {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
        /// Why.
        error: String,
    },
    /// A replica is being restarted, after `delay_ms`.
    ReplicaRestarting {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
        /// Delay before the restart, 0 for immediate.
        delay_ms: u64,
        /// Restarts of this replica so far, this one included.
        restarts: u32,
    },
    /// A replica crashed too often inside the restart window and is backing off.
    BackOff {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
        /// Delay in force.
        delay_ms: u64,
    },
    /// A replica was isolated: kept for debugging, not ready, not restarted.
    Isolated {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
        /// Why.
        reason: String,
    },
    /// A service was shut down because of its panic action.
    ServiceShutdown {
        /// Service.
        service: Arc<str>,
        /// Why.
        reason: String,
    },
    /// A service cannot run (dependency timed out, every replica gave up).
    ServiceFailed {
        /// Service.
        service: Arc<str>,
        /// Why.
        reason: String,
    },
    /// A replica's health changed.
    HealthChanged {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
        /// New health.
        healthy: bool,
    },
    /// One health check failed (counted or not).
    ProbeFailed {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
        /// Why.
        reason: String,
    },
    /// An init step failed after its retries.
    InitStepFailed {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
        /// Step id.
        step: String,
        /// Why.
        error: String,
        /// Whether the sequence goes on (`warn` or `continue`).
        continues: bool,
    },
    /// A service's desired replica count changed.
    Scaled {
        /// Service.
        service: Arc<str>,
        /// Previous count.
        from: u32,
        /// New count.
        to: u32,
    },
    /// A job replica finished with exit code 0.
    Completed {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
    },
    /// A replica gave up restarting and is `failed`.
    GaveUp {
        /// Service.
        service: Arc<str>,
        /// Replica index.
        replica: u32,
        /// Why.
        reason: String,
    },
    /// Every service has its desired replicas running and healthy.
    DeploymentStable {
        /// Time from spawn to stable.
        after_ms: u64,
    },
    /// The deployment was stable and no longer is (a replica exited, turned unhealthy or
    /// was scaled up).
    DeploymentUnstable,
    /// A stabilization wait reached its deadline.
    StabilizationTimedOut {
        /// The services that were not ready.
        failing: Vec<FailingService>,
    },
    /// The deployment stopped every service.
    DeploymentStopped,
    /// A new spec was applied: these services roll to it (revision 1 is the spec the
    /// deployment started with). `revert` for an automatic rollback.
    RolloutStarted {
        /// The new spec's revision.
        revision: u64,
        /// Services whose replicas are replaced.
        services: Vec<String>,
        /// A rollback of a failed rollout.
        revert: bool,
    },
    /// One more replica of a service runs the new spec and is ready.
    RolloutProgress {
        /// Revision.
        revision: u64,
        /// Service.
        service: Arc<str>,
        /// Replicas on the new spec and ready.
        updated: u32,
        /// Desired replicas.
        desired: u32,
    },
    /// Every changed service runs the new spec, ready.
    RolloutComplete {
        /// Revision.
        revision: u64,
    },
    /// A rollout failed: new replicas crash looped or failed, or it missed its progress
    /// deadline. With `reverting`, the previous spec is being rolled back to.
    RolloutFailed {
        /// Revision.
        revision: u64,
        /// Why.
        reason: String,
        /// Whether it is rolled back automatically (else it is paused).
        reverting: bool,
        /// The services not ready, with the failing replicas' log tails.
        failing: Vec<FailingService>,
    },
}

/// The sending side of the event bus, shared by every actor of a deployment.
///
/// The ring holds `Arc`s of batches: tokio's broadcast channel allocates and writes every
/// slot at creation, so a slot of an event itself (~100 bytes) would make the default
/// 4096 slots 491 KB resident in every run; as `Arc`s they are 128 KB, and an event's
/// body is allocated only when one is sent.
///
/// A service supervisor's events may be held back (`defer`) and sent by the deployment
/// actor, which its report wakes anyway, together with what that actor itself has to
/// say: one send, one wake of a subscriber. Measured on the bench host (healthy →
/// stable): a supervisor that sent `HealthChanged` itself woke two tasks in one handling,
/// and the deployment actor, sending it and then `DeploymentStable`, spent ~20 µs between
/// the two in the first send's wake (the idle worker thread's wake-up: tokio's LIFO slot
/// is off by then); the subscriber, woken for the first, waited for the second.
/// Held-back events go out first, in the order they were told, whoever sends next: the
/// stream's order is the order of `emit` and `defer` calls, as if each were sent at once.
#[derive(Debug, Clone)]
pub(crate) struct EventBus {
    shared: Arc<Shared>,
    deployment: Arc<str>,
    epoch: Instant,
}

/// What one send puts on the ring: events numbered from `first`, so that a subscriber
/// that lagged can tell how many events (not sends) it lost.
#[derive(Debug)]
struct Batch {
    first: u64,
    events: Events,
}

/// A batch's events: most sends are of one, which needs no vector.
#[derive(Debug)]
enum Events {
    One(Event),
    Many(Vec<Event>),
}

impl Batch {
    fn len(&self) -> usize {
        match &self.events {
            Events::One(_) => 1,
            Events::Many(v) => v.len(),
        }
    }

    fn get(&self, i: usize) -> Option<&Event> {
        match &self.events {
            Events::One(e) => (i == 0).then_some(e),
            Events::Many(v) => v.get(i),
        }
    }
}

#[derive(Debug)]
struct Shared {
    tx: broadcast::Sender<Arc<Batch>>,
    /// Events told but not yet sent, and the number the next event sent gets. Every send
    /// is made under this lock: nothing sent meanwhile can overtake held events, and the
    /// numbers follow the ring's order.
    held: Mutex<Held>,
    /// How many of the deployment actor's slow waits are under way (`close_relay`): while
    /// any is, a supervisor does not leave its events for it to send.
    closed: AtomicUsize,
}

#[derive(Debug, Default)]
struct Held {
    events: Vec<Event>,
    next: u64,
    /// The length of the last batch of held events, room for the next one: a burst of
    /// crashes holds a few events per batch, and growing each batch's vector from empty
    /// cost a reallocation or two per batch (3% of a 10k burst's CPU).
    room: usize,
}

/// At most this many held events are made room for at once (12 KiB).
const ROOM: usize = 128;

impl Held {
    fn hold(&mut self, event: Event) {
        if self.events.capacity() == 0 {
            self.events.reserve(self.room.max(4));
        }
        self.events.push(event);
    }

    /// Send what is held, then `last`, in one batch.
    fn send(&mut self, tx: &broadcast::Sender<Arc<Batch>>, last: Option<Event>) {
        let events = match (self.events.is_empty(), last) {
            (true, None) => return,
            (true, Some(e)) => Events::One(e),
            (false, last) => {
                let mut events = std::mem::take(&mut self.events);
                events.extend(last);
                self.room = (events.len() + 1).min(ROOM);
                Events::Many(events)
            }
        };
        let batch = Batch {
            first: self.next,
            events,
        };
        self.next += batch.len() as u64;
        let _ = tx.send(Arc::new(batch));
    }
}

impl Shared {
    fn held(&self) -> MutexGuard<'_, Held> {
        // A panic while holding the lock leaves `Held` whole (each change is one call
        // into it), so a poisoned lock is still usable.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Shared {
    /// The last sender gone: what is still held goes out before the stream ends.
    fn drop(&mut self) {
        let held = self.held.get_mut().unwrap_or_else(PoisonError::into_inner);
        held.send(&self.tx, None);
    }
}

impl EventBus {
    pub(crate) fn new(deployment: Arc<str>, capacity: usize) -> EventBus {
        let (tx, _) = broadcast::channel(capacity.max(1));
        EventBus {
            shared: Arc::new(Shared {
                tx,
                held: Mutex::new(Held::default()),
                closed: AtomicUsize::new(0),
            }),
            deployment,
            epoch: Instant::now(),
        }
    }

    fn event(&self, kind: EventKind) -> Event {
        Event {
            at_ms: self.since_epoch().as_millis() as u64,
            deployment: self.deployment.clone(),
            kind,
        }
    }

    /// Publish, in one send with any held-back events before it; never blocks. With no
    /// subscriber the event is dropped.
    pub(crate) fn emit(&self, kind: EventKind) {
        if self.shared.tx.receiver_count() == 0 {
            return;
        }
        let event = self.event(kind);
        self.shared.held().send(&self.shared.tx, Some(event));
    }

    /// Publish later: held until the next `emit` or `flush` by any actor of the
    /// deployment. Stamped now. The caller makes sure a flush comes.
    pub(crate) fn defer(&self, kind: EventKind) {
        if self.shared.tx.receiver_count() == 0 {
            return;
        }
        let event = self.event(kind);
        self.shared.held().hold(event);
    }

    /// Send every held-back event.
    pub(crate) fn flush(&self) {
        self.shared.held().send(&self.shared.tx, None);
    }

    /// Whether the deployment actor will send held-back events when it handles a report
    /// sent now (it is not inside a slow wait).
    pub(crate) fn relay_open(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst) == 0
    }

    /// For the deployment actor, around a wait that may be long (stopping services):
    /// sends what is held, and until the guard drops every supervisor sends its own.
    /// A supervisor that found the relay open told its events before this flush takes
    /// the lock, so they go out here.
    pub(crate) fn close_relay(&self) -> RelayClosed<'_> {
        self.shared.closed.fetch_add(1, Ordering::SeqCst);
        self.flush();
        RelayClosed(self)
    }

    pub(crate) fn since_epoch(&self) -> Duration {
        self.since_epoch_at(Instant::now())
    }

    /// `at` as time since the deployment was spawned.
    pub(crate) fn since_epoch_at(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.epoch)
    }

    pub(crate) fn subscribe(&self) -> EventStream {
        // Under the lock no send is under way: the next event sent is numbered `next`.
        let held = self.shared.held();
        EventStream {
            rx: self.shared.tx.subscribe(),
            batch: None,
            at: 0,
            next: held.next,
            lagged: None,
        }
    }
}

/// The relay closed ([`EventBus::close_relay`]) until dropped.
pub(crate) struct RelayClosed<'a>(&'a EventBus);

impl Drop for RelayClosed<'_> {
    fn drop(&mut self) {
        self.0.shared.closed.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a subscriber receives: an event, or the count of events it lost by lagging.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// The next event.
    Event(Event),
    /// The subscriber fell behind and this many of the oldest events were dropped.
    Missed(u64),
}

/// A subscription to a deployment's events. A subscriber that does not read loses the
/// oldest events; it never slows a supervisor down.
#[derive(Debug)]
pub struct EventStream {
    rx: broadcast::Receiver<Arc<Batch>>,
    /// The batch being read, and the index of its next event.
    batch: Option<Arc<Batch>>,
    at: usize,
    /// The number of the next event expected.
    next: u64,
    /// The ring said this many sends were lost; their events are counted from the next
    /// batch's number, or told as this if the stream ends first.
    lagged: Option<u64>,
}

impl EventStream {
    /// The next event, `Missed(n)` after a lag, `None` once the deployment is gone.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled call loses no event (the only wait is the channel's, and
    /// what it returned is kept before the next one).
    pub async fn recv(&mut self) -> Option<Received> {
        loop {
            if let Some(e) = self.next_of_batch() {
                return Some(Received::Event(e));
            }
            match self.rx.recv().await {
                Ok(batch) => {
                    if let Some(missed) = self.take(batch) {
                        return Some(Received::Missed(missed));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => self.lagged = Some(n),
                Err(broadcast::error::RecvError::Closed) => {
                    return self.lagged.take().map(Received::Missed)
                }
            }
        }
    }

    /// The next event if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Received> {
        loop {
            if let Some(e) = self.next_of_batch() {
                return Some(Received::Event(e));
            }
            match self.rx.try_recv() {
                Ok(batch) => {
                    if let Some(missed) = self.take(batch) {
                        return Some(Received::Missed(missed));
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.lagged = Some(n),
                Err(_) => return None,
            }
        }
    }

    /// Queue a batch's events; how many were lost before it, if any (counted from the
    /// numbers: the ring's own count after a lag is of sends).
    fn take(&mut self, batch: Arc<Batch>) -> Option<u64> {
        self.lagged = None;
        let missed = batch.first.saturating_sub(self.next);
        self.next = batch.first + batch.len() as u64;
        self.batch = Some(batch);
        self.at = 0;
        (missed > 0).then_some(missed)
    }

    /// The batch's next event, a copy: the ring keeps its own until the slot is reused.
    fn next_of_batch(&mut self) -> Option<Event> {
        let e = self.batch.as_ref()?.get(self.at).cloned();
        match e {
            Some(_) => self.at += 1,
            None => self.batch = None,
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_subscriber_that_lags_is_told_how_many_it_missed() {
        let bus = EventBus::new("d".into(), 4);
        let mut sub = bus.subscribe();
        for _ in 0..10 {
            bus.emit(EventKind::DeploymentStopped);
        }
        assert_eq!(sub.recv().await, Some(Received::Missed(6)));
        let mut rest = 0;
        while let Some(Received::Event(_)) = sub.try_recv() {
            rest += 1;
        }
        assert_eq!(rest, 4);
    }

    #[test]
    fn events_serialize_with_a_snake_case_tag() {
        let e = Event {
            at_ms: 5,
            deployment: "shop".into(),
            kind: EventKind::BackOff {
                service: "api".into(),
                replica: 1,
                delay_ms: 2000,
            },
        };
        let json = serde_json::to_string(&e).expect("serializable");
        assert_eq!(
            json,
            r#"{"at_ms":5,"deployment":"shop","event":"back_off","service":"api","replica":1,"delay_ms":2000}"#
        );
    }

    fn scaled(replicas: u32) -> EventKind {
        EventKind::Scaled {
            service: "api".into(),
            from: 0,
            to: replicas,
        }
    }

    fn kinds(sub: &mut EventStream) -> Vec<EventKind> {
        let mut out = Vec::new();
        while let Some(Received::Event(e)) = sub.try_recv() {
            out.push(e.kind);
        }
        out
    }

    #[test]
    fn threads_that_tell_and_send_at_once_lose_nothing_and_keep_each_ones_order() {
        const THREADS: u32 = 4;
        const EACH: u32 = 3000;
        let bus = EventBus::new("d".into(), 1 << 16);
        let mut sub = bus.subscribe();
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let bus = bus.clone();
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        let kind = EventKind::Scaled {
                            service: "api".into(),
                            from: t,
                            to: i,
                        };
                        match i % 3 {
                            0 => bus.emit(kind),
                            1 => bus.defer(kind),
                            _ => {
                                bus.defer(kind);
                                bus.flush();
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a sending thread does not panic");
        }
        bus.flush();
        let mut seen = vec![0u32; THREADS as usize];
        loop {
            match sub.try_recv() {
                Some(Received::Event(e)) => match e.kind {
                    EventKind::Scaled { from, to, .. } => {
                        assert_eq!(to, seen[from as usize], "thread {from}'s events in order");
                        seen[from as usize] += 1;
                    }
                    other => panic!("unexpected event {other:?}"),
                },
                Some(Received::Missed(n)) => panic!("{n} events reported missed"),
                None => break,
            }
        }
        assert_eq!(
            seen,
            vec![EACH; THREADS as usize],
            "every event arrived once"
        );
    }

    #[tokio::test]
    async fn held_events_go_out_before_a_later_one_in_the_order_they_were_told() {
        let bus = EventBus::new("d".into(), 16);
        let mut sub = bus.subscribe();
        bus.defer(scaled(1));
        bus.defer(scaled(2));
        assert_eq!(kinds(&mut sub), vec![], "held until someone sends");
        bus.clone().emit(scaled(3));
        assert_eq!(kinds(&mut sub), vec![scaled(1), scaled(2), scaled(3)]);
        bus.defer(scaled(4));
        bus.flush();
        assert_eq!(kinds(&mut sub), vec![scaled(4)]);
    }

    #[tokio::test]
    async fn closing_the_relay_sends_what_is_held_and_it_stays_closed_until_the_guard_drops() {
        let bus = EventBus::new("d".into(), 16);
        let mut sub = bus.subscribe();
        assert!(bus.relay_open());
        bus.defer(scaled(1));
        let outer = bus.close_relay();
        assert_eq!(kinds(&mut sub), vec![scaled(1)]);
        let inner = bus.close_relay();
        drop(outer);
        assert!(!bus.relay_open(), "one slow wait is still under way");
        drop(inner);
        assert!(bus.relay_open());
    }

    #[tokio::test]
    async fn the_last_sender_dropped_sends_what_is_held_before_the_stream_ends() {
        let bus = EventBus::new("d".into(), 16);
        let mut sub = bus.subscribe();
        bus.defer(scaled(1));
        drop(bus);
        assert_eq!(
            sub.recv().await.map(|r| match r {
                Received::Event(e) => e.kind,
                Received::Missed(n) => panic!("missed {n}"),
            }),
            Some(scaled(1))
        );
        assert_eq!(sub.recv().await, None);
    }

    #[tokio::test]
    async fn a_subscriber_that_lags_over_a_batch_is_told_the_events_it_missed_not_the_sends() {
        let bus = EventBus::new("d".into(), 2);
        let mut sub = bus.subscribe();
        bus.defer(scaled(1));
        bus.defer(scaled(2));
        bus.defer(scaled(3));
        bus.emit(scaled(4));
        bus.emit(scaled(5));
        bus.emit(scaled(6));
        assert_eq!(sub.recv().await, Some(Received::Missed(4)));
        assert_eq!(kinds(&mut sub), vec![scaled(5), scaled(6)]);
    }

    #[tokio::test]
    async fn a_late_subscriber_is_not_told_of_events_sent_before_it_came_as_missed() {
        let bus = EventBus::new("d".into(), 4);
        let _first = bus.subscribe();
        bus.emit(scaled(1));
        bus.defer(scaled(2));
        let mut late = bus.subscribe();
        bus.emit(scaled(3));
        assert_eq!(kinds(&mut late), vec![scaled(2), scaled(3)]);
    }
}
