//! `ProbeClock`: when the probes of one deployment check next. One timer for the whole
//! tree, not one per probe: each probe's next check is a millisecond tick, its task's
//! waker is kept in a map from tick to wakers, and one tokio timer, set for the earliest
//! tick, wakes every probe due by then.
//!
//! A timer per probe cost a third of the CPU of 100,000 probed replicas, most of it
//! writing into each timer entry (in each probe's own memory, cold by then) as the timer
//! wheel unlinks it. Here a registration is a push onto a vector shared by the probes
//! due in the same millisecond, and firing a tick wakes them in registration order: 12%
//! less CPU at that scale, measured (user time down by a third; the kernel's time up,
//! the idle worker thread being woken several times as often). Firing first asks the CPU
//! for the first lines of every woken task (its header, then the probe's state), then
//! wakes them: the cache misses overlap instead of queueing one behind the other (the
//! wakes were a fifth of that row's CPU; the probe's first poll, waiting for its state,
//! 6% of its samples after that, 3% once its state was asked for too).
//!
//! The timer fires the clock itself: it is polled with a waker that wakes the due probes,
//! so tokio's timer wakes a probe as directly as if it slept on its own. A task between
//! them (the clock's driver, as it once was) cost the health report a wake: tokio runs at
//! most three tasks in a row from its LIFO slot, and timer → driver → probe → supervisor
//! → deployment actor → subscriber was one too many, so the subscriber waited for the
//! other worker thread to wake and take it (last replica healthy → stable, 12 runs of
//! each build in turns: 46.8 µs at the median of the runs' medians with the driver, 36.2
//! without; p99 129 → 105 µs). The timer is set again
//! only from a task, never from its waker (tokio fires every timer as its runtime shuts
//! down, and polling one then panics): by the first probe the firing woke, as it runs;
//! by the clock's task when the firing woke none (or a woken probe was dropped unrun),
//! and when a probe registers a tick earlier than the one the timer is set for.
//!
//! That last one is the task's, not the registering probe's, by measurement: a probe
//! registers its next tick right after telling its supervisor of a transition, and
//! setting the timer inline (a system call to the time driver) kept the rest of the
//! report's path on one thread, tokio's LIFO run and all, until its fourth task went to
//! the run queue for a parked worker. The cluster's healthy → stable row, where the
//! report goes on through the agent's loop and ractor_cluster's session tasks, measured
//! the agent's part ~10 µs faster that way and the delivery to the coordinator ~40 µs
//! slower at the median, its p99 worse in 5 pairs of 5 in a noisy hour (a wake of the
//! clock's task starts the other worker while the report is still on its way).
//!
//! Resolution is a millisecond, as a tokio timer's: a sleep ends at the first tick at or
//! after its deadline. The timer is `tokio::time`'s, so paused time advances to it as to
//! any timer.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};

use crate::prefetch;

/// Emptied vectors kept for reuse, at most: enough for the ticks of one second's worth
/// of sleeps to be filled without allocating.
const SPARE_VECTORS: usize = 1024;

/// How much of a woken task to ask the CPU for: its header and the probe loop's state
/// that a check reads first.
const TASK_BYTES: usize = 512;

/// The probes' clock of one deployment; clones share it. The clock's task ends when the
/// last clone is dropped.
#[derive(Clone)]
pub(crate) struct ProbeClock {
    shared: Arc<Shared>,
    _setter: Arc<Setter>,
}

struct Shared {
    /// Tick 0: ticks are whole milliseconds since.
    origin: Instant,
    /// Every tick up to this one has been fired: a sleep until it is over.
    fired: AtomicU64,
    wheel: Mutex<Wheel>,
    /// The one timer, set for `Wheel::armed`. Locked only by a task setting it, never
    /// by its waker: setting it may call that waker at once (a deadline already past).
    timer: Mutex<Pin<Box<Sleep>>>,
    /// What the timer is polled with: it fires the clock ([`Fire`]).
    fire: Waker,
    /// A firing has spent the timer: the next probe to run sets it again.
    owed: AtomicBool,
    /// Tells the clock's task to set the timer: a tick earlier than the one it is set for
    /// was registered, or a firing woke no probe that will.
    rearm: Notify,
    /// How many times the clock's task set the timer.
    #[cfg(test)]
    setter_runs: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct Wheel {
    /// The wakers of the sleeps ending at each tick, in registration order.
    due: BTreeMap<u64, Vec<Waker>>,
    /// The tick the timer is set for; `None` once it fired, until it is set again.
    armed: Option<u64>,
    spare: Vec<Vec<Waker>>,
}

/// The timer's waker: fires the clock. Holds the clock weakly, as the timer (which
/// keeps this waker) is the clock's own.
struct Fire(Weak<Shared>);

impl Wake for Fire {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        if shared.fire(Instant::now()) == 0 {
            // No probe woken to set the timer again (each sleep due was dropped, or the
            // runtime is shutting down): the clock's task does.
            shared.rearm.notify_one();
        }
    }
}

/// Aborts the clock's task when the last clock is dropped.
struct Setter(JoinHandle<()>);

impl Drop for Setter {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ProbeClock {
    /// A clock whose ticks count from now, on the current runtime (its timer and its
    /// clock's task).
    pub(crate) fn start() -> ProbeClock {
        let origin = Instant::now();
        let shared = Arc::new_cyclic(|me| Shared {
            origin,
            fired: AtomicU64::new(0),
            wheel: Mutex::new(Wheel::default()),
            timer: Mutex::new(Box::pin(tokio::time::sleep_until(origin))),
            fire: Waker::from(Arc::new(Fire(me.clone()))),
            owed: AtomicBool::new(false),
            rearm: Notify::new(),
            #[cfg(test)]
            setter_runs: Default::default(),
        });
        let setter = Setter(tokio::spawn(setter(shared.clone())));
        ProbeClock {
            shared,
            _setter: Arc::new(setter),
        }
    }

    /// Ends at the first tick at or after `deadline` (at once when that tick has fired).
    pub(crate) fn sleep_until(&self, deadline: Instant) -> ProbeSleep<'_> {
        let since = deadline.saturating_duration_since(self.shared.origin);
        // Rounded up: never before the deadline.
        let tick = since.as_millis() as u64 + u64::from(since.subsec_nanos() % 1_000_000 != 0);
        ProbeSleep {
            shared: &self.shared,
            tick,
            registered: None,
        }
    }
}

impl Shared {
    fn wheel(&self) -> MutexGuard<'_, Wheel> {
        // A panic while holding the lock leaves the map consistent (every change is one
        // call into it), so a poisoned lock is still usable.
        self.wheel.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tick `now` is in (rounded down: it has fully begun).
    fn tick_at(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_millis() as u64
    }

    fn instant_of(&self, tick: u64) -> Instant {
        self.origin + Duration::from_millis(tick)
    }

    /// Wake every sleep due by `now`; how many were woken. The timer is spent: whoever
    /// runs next sets it again (see `settle`).
    fn fire(&self, now: Instant) -> usize {
        let now_tick = self.tick_at(now);
        let mut woken = Vec::new();
        {
            let mut w = self.wheel();
            while let Some(entry) = w.due.first_entry() {
                if *entry.key() > now_tick {
                    break;
                }
                woken.push(entry.remove());
            }
            // Under the lock: a sleep that registers after this sees its tick fired.
            self.fired.fetch_max(now_tick, Ordering::Release);
            w.armed = None;
            self.owed.store(true, Ordering::Release);
        }
        if woken.is_empty() {
            return 0;
        }
        // A woken task is cold by now (a second since it last ran, at scale), and a wake
        // writes its header: ask for every task's first lines (the header, then the
        // probe's state) before the first wake, so the loads overlap instead of each
        // wake, and then each poll, waiting for its own in turn. (A tokio waker's data is
        // its task's header; for any other waker this is a useless hint, never a read.)
        for wakers in &woken {
            for waker in wakers {
                prefetch::bytes(waker.data(), TASK_BYTES);
            }
        }
        // Outside the lock: a wake may unpark a worker thread.
        let mut count = 0;
        for wakers in woken.iter_mut() {
            count += wakers.len();
            for waker in wakers.drain(..) {
                waker.wake();
            }
        }
        let mut w = self.wheel();
        let room = SPARE_VECTORS.saturating_sub(w.spare.len());
        w.spare.extend(woken.into_iter().take(room));
        count
    }

    /// Set the timer again if a firing spent it and no task has set it since.
    fn settle(&self) {
        if self.owed.swap(false, Ordering::AcqRel) {
            self.set_timer();
        }
    }

    /// Set the timer for the earliest registered tick (from a task only). A tick already
    /// due fires here, and the timer is set for the next.
    fn set_timer(&self) {
        let mut timer = self.timer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut cx = Context::from_waker(&self.fire);
        loop {
            let next = {
                let mut w = self.wheel();
                let next = w.due.keys().next().copied();
                w.armed = next;
                next
            };
            let Some(tick) = next else {
                return;
            };
            timer.as_mut().reset(self.instant_of(tick));
            // Unconstrained: out of its cooperative budget, a task would see the timer
            // pending without it having been set.
            if tokio::task::unconstrained(timer.as_mut())
                .poll_unpin(&mut cx)
                .is_pending()
            {
                return;
            }
            self.fire(Instant::now());
        }
    }
}

/// The clock's task: sets the timer when a probe registers an earlier tick than it is
/// set for, and when a firing left it to no probe.
async fn setter(shared: Arc<Shared>) {
    loop {
        shared.rearm.notified().await;
        #[cfg(test)]
        shared.setter_runs.fetch_add(1, Ordering::Relaxed);
        shared.owed.store(false, Ordering::Release);
        shared.set_timer();
    }
}

/// A probe's wait for its next check ([`ProbeClock::sleep_until`]).
pub(crate) struct ProbeSleep<'a> {
    shared: &'a Shared,
    tick: u64,
    /// The waker registered for the tick, if any.
    registered: Option<Waker>,
}

impl Future for ProbeSleep<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let shared = this.shared;
        if this.tick <= shared.fired.load(Ordering::Acquire) {
            // Woken by a firing, perhaps the first: the timer is set again before the
            // check, so the probes due next are not kept waiting by this one's.
            this.registered = None;
            shared.settle();
            return Poll::Ready(());
        }
        if this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let mut guard = shared.wheel();
        // Fired while this waited for the lock.
        if this.tick <= shared.fired.load(Ordering::Acquire) {
            drop(guard);
            this.registered = None;
            shared.settle();
            return Poll::Ready(());
        }
        let w = &mut *guard;
        if let Some(old) = this.registered.take() {
            w.unregister(this.tick, &old);
        }
        let waker = cx.waker().clone();
        match w.due.entry(this.tick) {
            Entry::Occupied(e) => e.into_mut().push(waker.clone()),
            Entry::Vacant(e) => {
                let mut wakers = w.spare.pop().unwrap_or_default();
                wakers.push(waker.clone());
                e.insert(wakers);
            }
        }
        let earlier = w.armed.is_none_or(|armed| this.tick < armed);
        if earlier {
            w.armed = Some(this.tick);
        }
        drop(guard);
        this.registered = Some(waker);
        if earlier {
            // Left to the clock's task, not set inline: see the module's notes.
            shared.rearm.notify_one();
        }
        Poll::Pending
    }
}

impl Drop for ProbeSleep<'_> {
    /// A sleep dropped before its tick (its probe stopped) takes its waker out of the
    /// map: kept there, it would hold the stopped probe's task in memory until the tick,
    /// which may be an interval of an hour away. One dropped after a firing woke it, but
    /// before it ran, leaves the timer to the clock's task if no one has set it since.
    fn drop(&mut self) {
        let Some(waker) = self.registered.take() else {
            return;
        };
        if self.tick <= self.shared.fired.load(Ordering::Acquire) {
            if self.shared.owed.load(Ordering::Acquire) {
                self.shared.rearm.notify_one();
            }
            return;
        }
        self.shared.wheel().unregister(self.tick, &waker);
    }
}

impl Wheel {
    /// Take `waker` out of `tick`'s list, if it is still there.
    fn unregister(&mut self, tick: u64, waker: &Waker) {
        let Entry::Occupied(mut e) = self.due.entry(tick) else {
            return;
        };
        if let Some(at) = e.get().iter().position(|w| w.will_wake(waker)) {
            // In order: the ones left are woken in registration order.
            e.get_mut().remove(at);
        }
        if e.get().is_empty() {
            let wakers = e.remove();
            if self.spare.len() < SPARE_VECTORS {
                self.spare.push(wakers);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long after the clock's origin a sleep until `deadline` ended. An hour's
    /// bound makes a sleep the clock never ends fail the test instead of hanging it.
    async fn woken_at(clock: &ProbeClock, deadline: Instant) -> Duration {
        let start = clock.shared.origin;
        let ended = tokio::time::timeout(Duration::from_secs(3600), clock.sleep_until(deadline));
        assert!(ended.await.is_ok(), "the sleep never ended");
        Instant::now() - start
    }

    /// A task sleeping until `after` past the clock's origin; it returns when it woke.
    fn sleeper(clock: &ProbeClock, after: Duration) -> JoinHandle<Duration> {
        let clock = clock.clone();
        let deadline = clock.shared.origin + after;
        tokio::spawn(async move { woken_at(&clock, deadline).await })
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleep_ends_at_its_deadline_rounded_up_to_the_millisecond() {
        let clock = ProbeClock::start();
        let origin = clock.shared.origin;
        let took = woken_at(&clock, origin + Duration::from_micros(2_500)).await;
        assert_eq!(took, Duration::from_millis(3));
        let took = woken_at(&clock, origin + Duration::from_secs(1)).await;
        assert_eq!(took, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_already_past_ends_at_once() {
        let clock = ProbeClock::start();
        tokio::time::advance(Duration::from_millis(10)).await;
        let before = Instant::now();
        let took = woken_at(&clock, before - Duration::from_millis(5)).await;
        assert_eq!(took, Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_registration_sets_a_timer_set_for_a_later_tick_earlier() {
        let clock = ProbeClock::start();
        let origin = clock.shared.origin;
        let late = sleeper(&clock, Duration::from_secs(10));
        // Let the late sleep register and set the timer for it.
        for _ in 0..100 {
            if clock.shared.wheel().armed.is_some() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(clock.shared.wheel().armed, Some(10_000));
        let took = woken_at(&clock, origin + Duration::from_millis(20)).await;
        assert_eq!(took, Duration::from_millis(20));
        assert_eq!(late.await.ok(), Some(Duration::from_secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn sleeps_due_at_one_tick_end_together_and_the_next_tick_waits() {
        let clock = ProbeClock::start();
        let origin = clock.shared.origin;
        let mut tasks = Vec::new();
        for i in 0..100u64 {
            let clock = clock.clone();
            // Half due at 50 ms, half at 51 ms.
            let deadline = origin + Duration::from_micros(49_500 + (i % 2) * 1_000);
            tasks.push(tokio::spawn(
                async move { woken_at(&clock, deadline).await },
            ));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let took = t.await.ok();
            let expected = Duration::from_millis(50 + (i as u64 % 2));
            assert_eq!(took, Some(expected), "sleep {i}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_setter_task_ends_when_the_last_clock_is_dropped() {
        let clock = ProbeClock::start();
        let shared = Arc::downgrade(&clock.shared);
        drop(clock);
        // The aborted clock's task drops its share of the state.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(shared.upgrade().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleep_dropped_before_its_tick_takes_its_waker_out() {
        let clock = ProbeClock::start();
        let origin = clock.shared.origin;
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut first = Box::pin(clock.sleep_until(origin + Duration::from_secs(3600)));
        let mut second = Box::pin(clock.sleep_until(origin + Duration::from_secs(3600)));
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            clock.shared.wheel().due.get(&3_600_000).map(Vec::len),
            Some(2)
        );
        drop(first);
        assert_eq!(
            clock.shared.wheel().due.get(&3_600_000).map(Vec::len),
            Some(1)
        );
        drop(second);
        assert!(clock.shared.wheel().due.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_sleep_leaves_the_clock_working() {
        let clock = ProbeClock::start();
        let origin = clock.shared.origin;
        {
            let sleep = clock.sleep_until(origin + Duration::from_millis(5));
            tokio::pin!(sleep);
            let waker = futures::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            assert!(sleep.as_mut().poll(&mut cx).is_pending());
        }
        let took = woken_at(&clock, origin + Duration::from_millis(8)).await;
        assert_eq!(took, Duration::from_millis(8));
    }

    fn setter_runs(clock: &ProbeClock) -> usize {
        clock.shared.setter_runs.load(Ordering::Relaxed)
    }

    /// Let the clock's task run (it has work once a registration asked for an earlier
    /// timer); how many times it has set the timer by then.
    async fn setter_settled(clock: &ProbeClock) -> usize {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        setter_runs(clock)
    }

    #[tokio::test(start_paused = true)]
    async fn a_firing_that_wakes_a_probe_leaves_the_timer_to_it_and_wakes_no_task_of_its_own() {
        let clock = ProbeClock::start();
        let mut probes = Vec::new();
        for ms in [5, 7, 20, 1000] {
            probes.push(sleeper(&clock, Duration::from_millis(ms)));
            // In order: only the first registration is earlier than the timer.
            tokio::task::yield_now().await;
        }
        for (probe, ms) in probes.into_iter().zip([5, 7, 20, 1000]) {
            assert_eq!(probe.await.ok(), Some(Duration::from_millis(ms)));
        }
        // Once, for the first registration; each firing left the timer to its probe.
        assert_eq!(setter_runs(&clock), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_firing_that_wakes_nobody_has_the_setter_task_set_the_timer_for_the_next_tick() {
        let clock = ProbeClock::start();
        let origin = clock.shared.origin;
        let later = sleeper(&clock, Duration::from_millis(10));
        tokio::task::yield_now().await;
        // Has the timer set for 5 ms, then is dropped: the firing at 5 ms wakes nobody.
        let mut early = Box::pin(clock.sleep_until(origin + Duration::from_millis(5)));
        let waker = futures::task::noop_waker();
        assert!(early
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        let before = setter_settled(&clock).await;
        assert_eq!(clock.shared.wheel().armed, Some(5));
        drop(early);
        assert_eq!(later.await.ok(), Some(Duration::from_millis(10)));
        assert_eq!(setter_runs(&clock), before + 1);
    }

    /// Counts its wakes.
    struct Counting(std::sync::atomic::AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_dropped_after_its_firing_woke_it_but_before_it_ran_leaves_the_timer_to_the_setter_task(
    ) {
        let clock = ProbeClock::start();
        let origin = clock.shared.origin;
        let later = sleeper(&clock, Duration::from_millis(10));
        tokio::task::yield_now().await;
        let count = Arc::new(Counting(Default::default()));
        let waker = Waker::from(count.clone());
        let mut early = Box::pin(clock.sleep_until(origin + Duration::from_millis(5)));
        assert!(early
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        let before = setter_settled(&clock).await;
        tokio::time::sleep_until(origin + Duration::from_millis(6)).await;
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the firing woke the early sleep"
        );
        // Never polled again: the timer, spent at 5 ms, is left to the clock's task.
        drop(early);
        assert_eq!(later.await.ok(), Some(Duration::from_millis(10)));
        assert_eq!(setter_runs(&clock), before + 1);
    }

    #[test]
    fn a_runtime_shutting_down_with_the_timer_set_fires_it_without_a_panic() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime builds");
        let clock = rt.block_on(async { ProbeClock::start() });
        // A sleep that outlives the runtime: still registered when its timer fires.
        let mut sleep = Box::pin(clock.sleep_until(Instant::now() + Duration::from_secs(3600)));
        let waker = futures::task::noop_waker();
        rt.block_on(async {
            assert!(sleep
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending());
            assert_eq!(setter_settled(&clock).await, 1, "the timer was set");
        });
        assert!(clock.shared.wheel().armed.is_some_and(|t| t >= 3_600_000));
        // Shutting down fires every timer with an error; setting one then would panic.
        drop(rt);
        drop(sleep);
        drop(clock);
    }
}
