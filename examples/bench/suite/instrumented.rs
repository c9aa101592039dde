//! A runtime wrapper that timestamps what the actor tree asks of the real runtime, so a
//! latency can be measured from the moment the tree acts, without touching the tree.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herdsman::probe::{CheckResult, CommandOutput, Outcome, StepReport};
use herdsman::runtime::{ContainerId, ContainerSpec, Runtime, RuntimeError, Started};
use herdsman::spec::{Check, InitStep, ReplicaVars, StopSignal};
use tokio::sync::watch;
use tokio::time::Instant;

/// One armed "note when" for a replica: the first successful check of any incarnation of
/// `replica` of `service`, and when it returned once it has.
struct CheckWatch {
    service: String,
    replica: u32,
    at: Option<Instant>,
}

/// Delegates every call to `inner`, counting successful starts and timestamping the first
/// successful health check of an armed replica. When nothing is armed the only cost is one
/// relaxed atomic load per call and a watch update per start. The check's instant is only
/// noted, never sent: a task woken there would be one more wake on the measured path (the
/// probe's report to its supervisor would then push it out of tokio's LIFO slot and wake
/// the parked worker).
pub(crate) struct Instrumented<R> {
    inner: Arc<R>,
    starts: watch::Sender<u64>,
    check_armed: AtomicBool,
    check_watch: Mutex<Option<CheckWatch>>,
    trace_armed: AtomicBool,
    trace: Mutex<Option<Trace>>,
}

/// What the tree asked of the runtime for one replica, and when.
#[derive(Debug, Clone, Default)]
pub(crate) struct Trace {
    service: String,
    replica: u32,
    /// (call, instant) in order: `stop`, `remove`, `create`, `start`, `started`.
    pub(crate) calls: Vec<(&'static str, Instant)>,
}

impl Trace {
    /// The first instant of `call`.
    pub(crate) fn at(&self, call: &str) -> Option<Instant> {
        self.calls
            .iter()
            .find(|(c, _)| *c == call)
            .map(|(_, at)| *at)
    }
}

impl<R: Runtime> Instrumented<R> {
    pub(crate) fn new(inner: Arc<R>) -> Instrumented<R> {
        Instrumented {
            inner,
            starts: watch::channel(0).0,
            check_armed: AtomicBool::new(false),
            check_watch: Mutex::new(None),
            trace_armed: AtomicBool::new(false),
            trace: Mutex::new(None),
        }
    }

    /// Start recording the calls made for `service`/`replica` (any incarnation).
    pub(crate) fn arm_trace(&self, service: &str, replica: u32) {
        if let Ok(mut t) = self.trace.lock() {
            *t = Some(Trace {
                service: service.to_string(),
                replica,
                calls: Vec::new(),
            });
        }
        self.trace_armed.store(true, Ordering::Release);
    }

    /// Stop recording and hand back what was recorded.
    pub(crate) fn take_trace(&self) -> Trace {
        self.trace_armed.store(false, Ordering::Release);
        self.trace
            .lock()
            .ok()
            .and_then(|mut t| t.take())
            .unwrap_or_default()
    }

    fn record(&self, id: &ContainerId, call: &'static str) {
        if !self.trace_armed.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        if let Ok(mut t) = self.trace.lock() {
            if let Some(t) = t
                .as_mut()
                .filter(|t| *t.service == *id.service && t.replica == id.replica)
            {
                t.calls.push((call, now));
            }
        }
    }

    /// Successful starts so far.
    pub(crate) fn starts(&self) -> u64 {
        *self.starts.borrow()
    }

    /// Wait until at least `n` starts have succeeded since the runtime was made.
    pub(crate) async fn starts_reach(&self, n: u64) {
        let mut rx = self.starts.subscribe();
        let _ = rx.wait_for(|s| *s >= n).await;
    }

    /// Note the instant the next successful check of `service`/`replica` returns (read it
    /// with [`Instrumented::checked_at`]).
    pub(crate) fn arm_check(&self, service: &str, replica: u32) {
        if let Ok(mut w) = self.check_watch.lock() {
            *w = Some(CheckWatch {
                service: service.to_string(),
                replica,
                at: None,
            });
        }
        self.check_armed.store(true, Ordering::Release);
    }

    /// When the armed check returned, if it has; disarms.
    pub(crate) fn checked_at(&self) -> Option<Instant> {
        self.check_armed.store(false, Ordering::Release);
        self.check_watch
            .lock()
            .ok()
            .and_then(|mut w| w.take())
            .and_then(|w| w.at)
    }
}

#[async_trait::async_trait]
impl<R: Runtime> Runtime for Instrumented<R> {
    async fn create(&self, id: &ContainerId, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        self.record(id, "create");
        self.inner.create(id, spec).await
    }

    async fn start(&self, id: &ContainerId) -> Result<Started, RuntimeError> {
        self.record(id, "start");
        let started = self.inner.start(id).await?;
        self.record(id, "started");
        self.starts.send_modify(|n| *n += 1);
        Ok(started)
    }

    async fn stop(
        &self,
        id: &ContainerId,
        signal: StopSignal,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        self.record(id, "stop");
        self.inner.stop(id, signal, grace).await
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.record(id, "remove");
        self.inner.remove(id).await
    }

    async fn exec(
        &self,
        id: &ContainerId,
        command: &str,
        timeout: Duration,
    ) -> Result<CommandOutput, RuntimeError> {
        self.inner.exec(id, command, timeout).await
    }

    fn logs(&self, id: &ContainerId, lines: usize) -> Vec<String> {
        self.inner.logs(id, lines)
    }

    fn probe_host(&self, id: &ContainerId) -> IpAddr {
        self.inner.probe_host(id)
    }

    async fn check(
        &self,
        id: &ContainerId,
        check: &Check,
        vars: &ReplicaVars,
        timeout: Duration,
    ) -> CheckResult {
        let result = self.inner.check(id, check, vars, timeout).await;
        if self.check_armed.load(Ordering::Acquire) && matches!(result.outcome, Outcome::Success) {
            let now = Instant::now();
            if let Ok(mut w) = self.check_watch.lock() {
                if let Some(w) = w.as_mut().filter(|w| {
                    w.at.is_none() && *w.service == *id.service && w.replica == id.replica
                }) {
                    w.at = Some(now);
                    self.check_armed.store(false, Ordering::Release);
                }
            }
        }
        result
    }

    async fn init_step(&self, id: &ContainerId, step: &InitStep, vars: &ReplicaVars) -> StepReport {
        self.inner.init_step(id, step, vars).await
    }
}
