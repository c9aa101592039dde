//! `ProbeActor`: schedules a replica's health checks, applies the thresholds and start
//! period (through the pure `HealthTracker`), keeps the last results on the status board
//! and reports transitions to its container actor.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use herdsman_probe::{HealthTracker, Outcome, Transition};
use herdsman_runtime::ContainerId;
use herdsman_spec::{Health, ReplicaVars};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::board::{ProbeRecord, PROBE_HISTORY};
use crate::container_actor::ContainerMsg;
use crate::event::EventKind;
use crate::service_supervisor::ServiceContext;

/// Messages of a probe actor.
pub(crate) enum ProbeMsg {
    /// Timer tick: run one check.
    Tick,
}

// Local only: never sent to another node, so it is not serializable (ractor's `cluster`
// feature is on workspace-wide and requires the impl to be explicit).
impl ractor::Message for ProbeMsg {}

pub(crate) struct ProbeArgs {
    pub(crate) ctx: Arc<ServiceContext>,
    pub(crate) id: ContainerId,
    pub(crate) vars: ReplicaVars,
    pub(crate) health: Health,
    pub(crate) parent: ActorRef<ContainerMsg>,
}

pub(crate) struct ProbeState {
    args: ProbeArgs,
    tracker: HealthTracker,
    started_at: Instant,
}

pub(crate) struct ProbeActor;

impl Actor for ProbeActor {
    type Msg = ProbeMsg;
    type State = ProbeState;
    type Arguments = ProbeArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ProbeMsg>,
        args: ProbeArgs,
    ) -> Result<ProbeState, ActorProcessingErr> {
        let tracker = HealthTracker::new(&args.health);
        Ok(ProbeState {
            args,
            tracker,
            started_at: Instant::now(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<ProbeMsg>,
        state: &mut ProbeState,
    ) -> Result<(), ActorProcessingErr> {
        // Jitter on the first check so a fleet started together does not probe in
        // lockstep; seeded per container so simulations stay deterministic.
        let mut h = DefaultHasher::new();
        (state.args.ctx.seed, &state.args.id).hash(&mut h);
        let unit: f64 = SmallRng::seed_from_u64(h.finish()).random();
        let first = state.tracker.first_delay(unit);
        myself.send_after(first, || ProbeMsg::Tick);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ProbeMsg>,
        msg: ProbeMsg,
        state: &mut ProbeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ProbeMsg::Tick => {
                state.tick().await;
                let next = state
                    .tracker
                    .next_interval(Instant::now(), state.started_at);
                myself.send_after(next, || ProbeMsg::Tick);
            }
        }
        Ok(())
    }
}

impl ProbeState {
    async fn tick(&mut self) {
        let a = &self.args;
        let ctx = &a.ctx;
        let timeout = a.health.timeout;
        // The runtime's check owns the hard timeout; this outer bound only guards against a
        // runtime that ignores it.
        let result = match tokio::time::timeout(
            timeout + Duration::from_secs(1),
            ctx.runtime.check(&a.id, &a.health.check, &a.vars, timeout),
        )
        .await
        {
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
        let at_ms = ctx.events.since_epoch().as_millis() as u64;
        let record = ProbeRecord::new(at_ms, &result);
        ctx.board
            .record_probe(&ctx.service_name, &result.outcome, result.duration);
        ctx.board.update(&ctx.service_name, a.id.replica, |r| {
            if r.probes.len() >= PROBE_HISTORY {
                r.probes.remove(0);
            }
            r.probes.push(record);
        });
        if let Outcome::Failure(reason) | Outcome::Unknown(reason) = &result.outcome {
            ctx.events.emit(EventKind::ProbeFailed {
                service: ctx.service_name.clone(),
                replica: a.id.replica,
                reason: reason.clone(),
            });
        }
        let now = Instant::now();
        if let Some(t) = self.tracker.record(result, now, self.started_at) {
            let healthy = matches!(t, Transition::BecameHealthy);
            let _ = a.parent.cast(ContainerMsg::Health {
                generation: a.id.generation,
                healthy,
            });
        }
    }
}
