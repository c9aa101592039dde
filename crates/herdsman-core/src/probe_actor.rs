//! `ProbeActor`: schedules a replica's health checks, applies the thresholds and start
//! period (through the pure `HealthTracker`), keeps the last results on the status board
//! (the one history of them: the tracker keeps none) and reports transitions to its
//! service supervisor.

use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::FutureExt;
use herdsman_probe::{HealthTracker, Outcome, Transition};
use herdsman_runtime::ContainerId;
use herdsman_spec::{ReplicaVars, Service};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::board::{ProbeCounters, ProbeLog, ProbeRecord};
use crate::event::EventKind;
use crate::prefetch;
use crate::service_supervisor::{ServiceContext, SupervisorMsg};

/// Messages of a probe actor.
pub(crate) enum ProbeMsg {
    /// The check loop panicked: fail, so the container actor replaces this probe.
    LoopFailed(String),
}

// Local only: never sent to another node, so it is not serializable.
crate::local_message!(ProbeMsg);

pub(crate) struct ProbeArgs {
    pub(crate) ctx: Arc<ServiceContext>,
    pub(crate) id: ContainerId,
    /// Shared with the container actor.
    pub(crate) vars: Arc<ReplicaVars>,
    /// The service's spec, shared: its health check is what this probe runs.
    pub(crate) service: Arc<Service>,
}

pub(crate) struct ProbeState {
    args: ProbeArgs,
    tracker: HealthTracker,
    started_at: Instant,
    /// This incarnation's probe history, which its row on the board shows: written
    /// without a board lookup per check.
    log: Arc<ProbeLog>,
    /// The service's check counters, likewise.
    counters: Arc<ProbeCounters>,
}

/// The actor owns one long-lived task that sleeps, checks and records, in a loop: a sleep
/// on the deployment's probe clock rather than a task spawned and a message sent per
/// check (what `send_after` costs), which at 100,000 probed replicas is most of the CPU.
/// The next check is scheduled when the last one has finished, so a slow check never
/// queues more.
pub(crate) struct ProbeActor;

/// What the actor keeps: the loop, aborted when the actor ends, however it ends (a
/// killed actor runs no `post_stop`, but its state is dropped).
pub(crate) struct ProbeLoop(JoinHandle<()>);

impl Drop for ProbeLoop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Actor for ProbeActor {
    type Msg = ProbeMsg;
    type State = ProbeLoop;
    type Arguments = ProbeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ProbeMsg>,
        args: ProbeArgs,
    ) -> Result<ProbeLoop, ActorProcessingErr> {
        let Some(health) = args.service.health.as_ref() else {
            return Err(format!("service {} has no health check to probe", args.id.service).into());
        };
        let tracker = HealthTracker::new(health);
        let log = args.ctx.board.probe_log(&args.id);
        let counters = args.ctx.board.probe_counters(&args.ctx.service_name);
        let state = ProbeState {
            args,
            tracker,
            started_at: Instant::now(),
            log,
            counters,
        };
        // A combinator, not an `async move` block awaiting `run`: such a block keeps the
        // captured future and the awaited one side by side, doubling the task (2.5 KiB
        // per probed replica, measured).
        let run = AssertUnwindSafe(state.run())
            .catch_unwind()
            .map(move |ended| {
                if let Err(panic) = ended {
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "probe loop panicked".to_string());
                    let _ = myself.cast(ProbeMsg::LoopFailed(why));
                }
            });
        Ok(ProbeLoop(tokio::spawn(run)))
    }

    async fn handle(
        &self,
        _myself: ActorRef<ProbeMsg>,
        msg: ProbeMsg,
        _state: &mut ProbeLoop,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ProbeMsg::LoopFailed(why) => Err(why.into()),
        }
    }
}

impl ProbeState {
    /// Check forever: the first check after a jitter (seeded per container, so a fleet
    /// started together does not probe in lockstep and simulations stay deterministic),
    /// each next one an interval after the last finished.
    ///
    /// Not an `async fn`: its argument would be kept twice in the future (the argument,
    /// then the local it moves into); the block below uses the captured state in place.
    #[allow(clippy::manual_async_fn)]
    fn run(mut self) -> impl Future<Output = ()> + Send {
        async move {
            let unit: f64 = {
                let mut h = DefaultHasher::new();
                (self.args.ctx.seed, &self.args.id).hash(&mut h);
                SmallRng::seed_from_u64(h.finish()).random()
            };
            let mut due = self.started_at + self.tracker.first_delay(unit);
            loop {
                self.args.ctx.probe_clock.sleep_until(due).await;
                let now = self.tick().await;
                due = now + self.tracker.next_interval(now, self.started_at);
            }
        }
    }

    /// Ask the CPU for this replica's probe log, which the check's record writes: cold by
    /// the next check at scale, it is fetched while the runtime does its own lookup
    /// instead of after it (see `prefetch`). The clock fetched this task's own state
    /// when it woke it. The service's context, counters and spec, fetched here too,
    /// showed no gain that could be measured, so they are not.
    fn warm(&self) {
        prefetch::value(Arc::as_ptr(&self.log));
    }

    /// One check, recorded; returns when it finished (one clock read serves the record,
    /// the thresholds and the next check's schedule).
    async fn tick(&mut self) -> Instant {
        self.warm();
        let a = &self.args;
        let ctx = &a.ctx;
        // Checked when the probe started; a probe's service spec never changes.
        let Some(health) = a.service.health.as_ref() else {
            return Instant::now();
        };
        let timeout = health.timeout;
        // The runtime's check owns the hard timeout; this outer bound only guards against a
        // runtime that ignores it.
        let check = ctx.runtime.check(&a.id, &health.check, &a.vars, timeout);
        let mut check = std::pin::pin!(check);
        // A check that answers at once (a simulated one does) needs no timer: the outer
        // bound is armed only for one that has to wait.
        let answered = match futures::poll!(check.as_mut()) {
            Poll::Ready(r) => Ok(r),
            Poll::Pending => tokio::time::timeout(timeout + Duration::from_secs(1), check).await,
        };
        let result = match answered {
            Ok(r) => r,
            Err(_) => herdsman_probe::CheckResult::new(
                Outcome::Failure(format!(
                    "check did not finish within {}",
                    herdsman_probe::humanize(timeout)
                )),
                timeout,
                "",
            ),
        };
        let now = Instant::now();
        let at_ms = ctx.events.since_epoch_at(now).as_millis() as u64;
        let record = ProbeRecord::new(at_ms, &result);
        self.counters.record(&result.outcome, result.duration);
        // An abort lands only at an await: a check that finished just as this probe was
        // dropped still records, but only in its own incarnation's log.
        self.log.push(record);
        if let Outcome::Failure(reason) | Outcome::Unknown(reason) = &result.outcome {
            ctx.events.emit(EventKind::ProbeFailed {
                service: ctx.service_name.clone(),
                replica: a.id.replica,
                reason: reason.clone(),
            });
        }
        if let Some(t) = self.tracker.record(&result.outcome, now, self.started_at) {
            let healthy = matches!(t, Transition::BecameHealthy);
            // Straight to the supervisor, which decides on it and shows it on the board:
            // one actor hop from the check to the decision. A report that overtakes its
            // incarnation's start (told by the container actor) is kept until the start is
            // heard of; one that comes after the incarnation ended is dropped there.
            let _ = ctx.supervisor.cast(SupervisorMsg::Health {
                replica: a.id.replica,
                generation: a.id.generation,
                healthy,
            });
        }
        now
    }
}
