//! `ServiceSupervisor`: one per service. Owns the desired replica count and one restart
//! tracker per replica, decides what every exit, start failure, init failure and health
//! transition means, and has its container actors carry it out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use herdsman_probe::InitRetry;
use herdsman_runtime::{ContainerId, Exit, Runtime, Survivor};
use herdsman_spec::{Deployment, Service};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio_util::task::AbortOnDropHandle;

use crate::board::{ServicePhase, StatusBoard};
use crate::container_actor::{ContainerActor, ContainerArgs, ContainerMsg, Mode};
use crate::deployment_actor::DeploymentMsg;
use crate::event::{EventBus, EventKind};
use crate::init_runs::InitRuns;
use crate::restart::RestartTracker;
use crate::stabilization::ServiceCounts;

mod decisions;
mod recovery;
mod reports;
mod rollouts;
mod scaling;
mod shutdown;
mod slot;

pub(crate) use reports::HeldReports;

use crate::CoreError;
use rollouts::ActiveRollout;
pub(crate) use rollouts::RolloutReport;
pub(crate) use shutdown::shutdown_budget;
use slot::{Share, Slot, SlotState, Slots};

/// What every actor of one service shares.
pub(crate) struct ServiceContext {
    pub(crate) deployment_name: Arc<str>,
    pub(crate) service_name: Arc<str>,
    pub(crate) deployment: Arc<Deployment>,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) board: StatusBoard,
    pub(crate) events: EventBus,
    pub(crate) supervisor: ActorRef<SupervisorMsg>,
    pub(crate) seed: u64,
    /// Every slot's init run in flight, shared with the deployment's other supervisors
    /// (and a failed predecessor of this one).
    pub(crate) init_runs: InitRuns,
    /// Every slot's generations issued, shared likewise.
    pub(crate) generations: crate::generations::Generations,
    /// When each probe checks next: the deployment's one timer for them.
    pub(crate) probe_clock: crate::probe_clock::ProbeClock,
    /// Set when the service starts stopping for good: from then on no container actor
    /// boots a new container, so a stop request queued behind a restart has only the
    /// container already there to stop.
    stopping: AtomicBool,
    /// How many events the supervisor has told (`tell`).
    told: AtomicU64,
}

impl ServiceContext {
    /// The supervisor's way to publish: held back, for the deployment actor to send with
    /// the report it will get (see `EventBus`), or sent when the supervisor's handling
    /// ends (`SupervisorState::settle_events`). Only the supervisor tells.
    pub(crate) fn tell(&self, kind: EventKind) {
        self.events.defer(kind);
        self.told.fetch_add(1, Ordering::Relaxed);
    }

    fn told(&self) -> u64 {
        self.told.load(Ordering::Relaxed)
    }

    /// Whether the service is stopping for good (shutdown or panic action `shutdown`).
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// Messages of a service supervisor.
pub(crate) enum SupervisorMsg {
    // Commands.
    /// Change the desired replica count.
    Scale {
        replicas: u32,
    },
    /// Stop every replica (stop signal, grace, kill) and reply when all are gone.
    Shutdown(RpcReplyPort<()>),
    /// Roll the service to `service`'s spec (revision `revision`), superseding any rollout
    /// in progress. Progress and the outcome go to the deployment actor.
    Roll {
        service: Arc<Service>,
        revision: u64,
    },
    /// The deployment's rollout `revision` failed elsewhere and is paused: stop rolling
    /// (its stand-ins go), leaving the replicas as they stand.
    PauseRollout {
        revision: u64,
    },
    /// An operator's restart of one replica: a new incarnation replaces the current one
    /// (stopped with its signal and grace), whatever its state, with a fresh restart
    /// count. Replies with the new generation.
    RestartReplica {
        replica: u32,
        reply: RpcReplyPort<Result<u64, CoreError>>,
        /// The deployment's number for this request, echoed in the next report: until
        /// then the deployment does not count the service ready on older counts.
        seq: u64,
    },
    /// Fault injection: make a replica's container actor panic, or (`None`) this
    /// supervisor itself.
    InjectPanic {
        replica: Option<u32>,
    },
    // Reports from container actors and their exits' callbacks.
    Started {
        replica: u32,
        generation: u64,
        /// How it ended, when it had ended already by the time it was started.
        ended: Option<Exit>,
    },
    Exited {
        replica: u32,
        generation: u64,
        exit: Exit,
    },
    StartFailed {
        replica: u32,
        generation: u64,
        error: String,
    },
    /// A survivor could not be adopted after all: boot the replica afresh.
    AdoptFailed {
        replica: u32,
        generation: u64,
    },
    InitFailed {
        replica: u32,
        generation: u64,
        step: String,
        error: String,
    },
    Health {
        replica: u32,
        generation: u64,
        healthy: bool,
    },
    // Timer ticks.
    RestartDue {
        replica: u32,
        token: u64,
    },
    ReadyDue {
        replica: u32,
        token: u64,
    },
    /// A rollout's progress deadline (`deadline`), or a new replica's `min_ready` elapsed.
    RolloutTick {
        revision: u64,
        token: u64,
        deadline: bool,
    },
    /// Recount the replicas and tell the deployment actor if the counts changed. Self-sent
    /// at most once per burst of messages, so a burst of N changes costs one count of the
    /// slots instead of N (which at 10,000 replicas would dominate a mass restart).
    Report,
    /// A failed predecessor's replica beyond the desired count is gone: its index may be
    /// booted again (if it has been scaled back up meanwhile).
    OrphanGone {
        replica: u32,
    },
}

// Local only: never sent to another node, so it is not serializable.
crate::local_message!(SupervisorMsg);

pub(crate) struct SupervisorArgs {
    pub(crate) deployment: Arc<Deployment>,
    pub(crate) service: Arc<Service>,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) board: StatusBoard,
    pub(crate) events: EventBus,
    pub(crate) parent: ActorRef<DeploymentMsg>,
    pub(crate) seed: u64,
    pub(crate) init_runs: InitRuns,
    pub(crate) generations: crate::generations::Generations,
    pub(crate) probe_clock: crate::probe_clock::ProbeClock,
    /// Desired replicas at start (the spec's count, or the count in force when a failed
    /// supervisor is replaced).
    pub(crate) desired: u32,
    /// Replacing a supervisor that failed: its container actors died with it, and nothing
    /// watches their containers any more. Each replica's container is stopped and removed,
    /// then the replica boots again as a new generation: never lost, never duplicated.
    pub(crate) recover: bool,
    /// Containers an earlier run of herdsman left running that this service adopts, one
    /// per replica index below `desired`, each still running what the spec asks for.
    pub(crate) survivors: Vec<Survivor>,
    /// Survivors of an earlier run this service does not adopt (a changed spec, an
    /// older incarnation of an adopted slot, an index scaled away): stopped with their
    /// signal and grace, each index booted once its survivor is gone.
    pub(crate) discards: Vec<Survivor>,
    /// The generation each replica index resumes at (after survivors that were stopped
    /// rather than adopted), so no container id of an earlier run is reused.
    pub(crate) resume_at: HashMap<u32, u64>,
    /// Counts the reports this supervisor holds back; the deployment actor reads it.
    pub(crate) held: HeldReports,
}

pub(crate) struct SupervisorState {
    ctx: Arc<ServiceContext>,
    parent: ActorRef<DeploymentMsg>,
    desired: u32,
    slots: Slots,
    actors: HashMap<ActorId, u32>,
    /// Container actors of replicas scaled away that are still stopping their container,
    /// by replica index. The index is not booted again until its predecessor is gone: two
    /// actors for one index would share its status entry and could both run a container.
    retiring: HashMap<u32, ActorRef<ContainerMsg>>,
    /// The generation a replica index scaled away resumes at, so a re-added replica never
    /// reuses a container id of its predecessor (whose late exits would be taken for its
    /// own).
    resume_generation: HashMap<u32, u64>,
    phase: ServicePhase,
    /// The last report: counts, requests handled, reports held back until then.
    reported: Option<(ServiceCounts, u64, u64)>,
    held: HeldReports,
    /// The deployment's last request number handled (see `RestartReplica::seq`).
    acked: u64,
    /// A `Report` is queued.
    report_queued: bool,
    /// The events told up to the last report the deployment actor was left to send them
    /// with (`ServiceContext::told`).
    covered: u64,
    /// Restarts decided while handling a message, sent at its end (see
    /// `restart_then_report`).
    restarts: Vec<(ActorRef<ContainerMsg>, ContainerMsg)>,
    /// The sum of every slot's share. A message about one replica updates it by that
    /// replica's change (O(1)); anything else recounts every slot. Counting every slot per
    /// message cost a single-threaded runtime 1.2 s to restart 10,000 replicas at once.
    tally: Share,
    /// Replacing a failed predecessor (see `SupervisorArgs::recover`).
    recover: bool,
    /// Containers a failed predecessor left behind, by replica index, until their
    /// replica's new actor has removed them.
    orphans: HashMap<u32, ContainerId>,
    /// Survivors of an earlier run to adopt, by replica index, until their slot is added.
    survivors: HashMap<u32, Survivor>,
    /// Stops of a failed predecessor's replicas beyond the desired count; a shutdown
    /// waits for them.
    /// By replica index: the index is not booted again until the stop is done. Aborted
    /// if this actor is killed or fails: a supervisor replacing it stops them itself, and
    /// one of a tree started anew must not lose a container it adopted to them.
    orphan_stops: HashMap<u32, AbortOnDropHandle<()>>,
    /// Survivors of an earlier run to stop before their indexes boot (taken at start).
    discards: Vec<Survivor>,
    /// The spec new replicas run: the service's spec, or a rollout's target.
    target: Arc<Service>,
    rollout: Option<ActiveRollout>,
}

pub(crate) struct ServiceSupervisor;

impl Actor for ServiceSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let ctx = Arc::new(ServiceContext {
            deployment_name: Arc::from(args.deployment.name.as_str()),
            service_name: Arc::from(args.service.name.as_str()),
            deployment: args.deployment,
            runtime: args.runtime,
            board: args.board,
            events: args.events,
            supervisor: myself,
            seed: args.seed,
            init_runs: args.init_runs,
            generations: args.generations,
            probe_clock: args.probe_clock,
            stopping: AtomicBool::new(false),
            told: AtomicU64::new(0),
        });
        let discards = args.discards;
        Ok(SupervisorState {
            discards,
            ctx,
            parent: args.parent,
            held: args.held,
            desired: args.desired,
            recover: args.recover,
            target: args.service.clone(),
            rollout: None,
            orphan_stops: HashMap::new(),
            orphans: HashMap::new(),
            survivors: args
                .survivors
                .into_iter()
                .map(|s| (s.id.replica, s))
                .collect(),
            slots: Slots::default(),
            actors: HashMap::new(),
            retiring: HashMap::new(),
            resume_generation: args.resume_at,
            phase: ServicePhase::Running,
            reported: None,
            acked: 0,
            report_queued: false,
            covered: 0,
            restarts: Vec::new(),
            tally: Share::default(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let ctx = state.ctx.clone();
        ctx.board
            .set_service(&ctx.service_name, ServicePhase::Running, None);
        if state.recover {
            state.recover_orphans();
        }
        state.discard_survivors();
        state.slots.reserve(state.desired);
        for replica in 0..state.desired {
            // An index a survivor being stopped still holds boots once it is gone.
            if state.survivors.contains_key(&replica) || !state.orphan_stops.contains_key(&replica)
            {
                state.add_slot(&myself, replica).await?;
            }
        }
        state.recount();
        state.report();
        state.settle_events();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let counts_may_change = !matches!(msg, SupervisorMsg::Report);
        // A replica's start or exit is handled without a wait: with a `Report` queued, the
        // events told before it, and its own, go with that report, and the handling wakes
        // only the container actor it restarts (see `flush_uncovered`).
        let brief = matches!(
            msg,
            SupervisorMsg::Exited { .. } | SupervisorMsg::Started { .. }
        );
        if counts_may_change && !(brief && state.report_queued) {
            state.flush_uncovered();
        }
        let about_one = match &msg {
            SupervisorMsg::Started { replica, .. }
            | SupervisorMsg::Exited { replica, .. }
            | SupervisorMsg::StartFailed { replica, .. }
            | SupervisorMsg::AdoptFailed { replica, .. }
            | SupervisorMsg::InitFailed { replica, .. }
            | SupervisorMsg::Health { replica, .. }
            | SupervisorMsg::RestartDue { replica, .. }
            | SupervisorMsg::ReadyDue { replica, .. } => {
                Some((*replica, state.share_of(*replica), state.phase))
            }
            _ => None,
        };
        match msg {
            SupervisorMsg::Scale { replicas } => state.scale(&myself, replicas).await?,
            SupervisorMsg::Shutdown(reply) => {
                state.stop_all(ServicePhase::Stopped, None).await;
                let _ = reply.send(());
            }
            SupervisorMsg::Roll { service, revision } => state.roll(&myself, service, revision),
            SupervisorMsg::RolloutTick {
                revision,
                token,
                deadline,
            } => state.rollout_tick(revision, token, deadline),
            SupervisorMsg::PauseRollout { revision } => {
                if state
                    .rollout
                    .as_ref()
                    .is_some_and(|r| r.revision == revision)
                {
                    state.end_rollout(None);
                }
            }
            SupervisorMsg::RestartReplica {
                replica,
                reply,
                seq,
            } => {
                let _ = reply.send(state.restart_replica(replica));
                state.acked = seq;
            }
            SupervisorMsg::InjectPanic { replica: None } => {
                panic!(
                    "injected panic in service supervisor {}",
                    state.ctx.service_name
                );
            }
            SupervisorMsg::InjectPanic {
                replica: Some(replica),
            } => {
                if let Some(slot) = state.slots.get(&replica) {
                    let _ = slot.actor.cast(ContainerMsg::InjectPanic);
                }
            }
            SupervisorMsg::Started {
                replica,
                generation,
                ended,
            } => {
                state.started(&myself, replica, generation);
                if let Some(exit) = ended {
                    state.exited(&myself, replica, generation, exit).await;
                } else if let Some(healthy) = state.early_health(replica, generation) {
                    state.health(&myself, replica, generation, healthy).await;
                }
            }
            SupervisorMsg::Exited {
                replica,
                generation,
                exit,
            } => state.exited(&myself, replica, generation, exit).await,
            SupervisorMsg::StartFailed {
                replica,
                generation,
                error,
            } => {
                state
                    .start_failed(&myself, replica, generation, error)
                    .await
            }
            SupervisorMsg::AdoptFailed {
                replica,
                generation,
            } => state.adopt_failed(replica, generation),
            SupervisorMsg::InitFailed {
                replica,
                generation,
                step,
                error,
            } => state.init_failed(&myself, replica, generation, step, error),
            SupervisorMsg::Health {
                replica,
                generation,
                healthy,
            } => state.health(&myself, replica, generation, healthy).await,
            SupervisorMsg::RestartDue { replica, token } => state.restart_due(replica, token),
            SupervisorMsg::ReadyDue { replica, token } => state.ready_due(replica, token),
            SupervisorMsg::OrphanGone { replica } => {
                state.orphan_stops.remove(&replica);
                let wanted = replica < state.desired
                    && matches!(state.phase, ServicePhase::Running | ServicePhase::Failed)
                    && !state.slots.contains_key(&replica)
                    && !state.retiring.contains_key(&replica);
                if wanted {
                    state.add_slot(&myself, replica).await?;
                } else if replica >= state.desired
                    && !state.slots.contains_key(&replica)
                    && !state.retiring.contains_key(&replica)
                {
                    // Scaled away while its predecessor was being stopped: nothing is
                    // left of the index.
                    state.ctx.board.remove(&state.ctx.service_name, replica);
                }
            }
            SupervisorMsg::Report => {
                state.report_queued = false;
                state.report();
            }
        }
        if counts_may_change {
            match about_one {
                // Handling a message about one replica changes only that replica's slot,
                // unless it changed the whole service's phase (give up, shut down).
                Some((replica, before, phase)) if phase == state.phase => {
                    let after = state.share_of(replica);
                    state.tally = state.tally.sub(before).add(after);
                }
                _ => state.recount(),
            }
            if !state.restarts.is_empty() && !state.report_queued {
                // Nothing queued to coalesce with: the deployment hears as soon as the
                // restarts are under way; the queued `Report` then finds nothing new.
                state.restart_then_report().await;
            }
            state.request_report(&myself);
        }
        if !state.restarts.is_empty() && !brief {
            // A restart of a running replica (unhealthy) or after a backoff, with a
            // `Report` queued: its events go out before it, so the container actor, woken
            // last, is the one this worker runs next (see `restart_then_report`); the
            // events' subscriber, woken after it, would take its place and push it to the
            // run queue.
            state.flush_uncovered();
        }
        state.send_restarts();
        let stepped = state.rollout.is_some() && state.step_rollout(&myself).await?;
        if stepped || state.trim_surplus() {
            // It touched other slots than the message's: count them all again.
            state.recount();
            state.request_report(&myself);
        }
        state.settle_events();
        Ok(())
    }

    /// Stopped with a `Report` still queued: what it would have covered goes now.
    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        state.flush_uncovered();
        Ok(())
    }

    /// Overrides ractor's default, which would stop this supervisor when a child ends.
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        state.flush_uncovered();
        // Whether a slot may have changed; `ActorStarted` of every new container actor, and
        // `ActorTerminated` of every one at shutdown, must not each cost a recount.
        let changed = match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                let id = cell.get_id();
                if let Some(replica) = state.actors.remove(&id) {
                    // Only the slot's current actor is respawned: a failed predecessor
                    // (scaled away) must not put a second actor on the slot.
                    if state
                        .slots
                        .get(&replica)
                        .is_some_and(|s| s.actor.get_id() == id)
                    {
                        tracing::warn!(
                            service = %state.ctx.service_name, replica, error = %err,
                            "container actor failed; respawning it"
                        );
                        state.respawn(&myself, replica).await?;
                        true
                    } else {
                        tracing::warn!(
                            service = %state.ctx.service_name, replica, error = %err,
                            "container actor of a replica scaled away failed while stopping"
                        );
                        state.retired(&myself, replica, id, true).await?
                    }
                } else {
                    false
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                let id = cell.get_id();
                match state.actors.remove(&id) {
                    Some(replica) => state.retired(&myself, replica, id, false).await?,
                    None => false,
                }
            }
            _ => false,
        };
        if changed {
            state.recount();
            state.request_report(&myself);
        }
        state.settle_events();
        Ok(())
    }
}

impl SupervisorState {
    async fn spawn_container(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        replica: u32,
        generation: u64,
        mode: Mode,
        service: Arc<Service>,
    ) -> Result<ActorRef<ContainerMsg>, ActorProcessingErr> {
        let args = ContainerArgs {
            ctx: self.ctx.clone(),
            service,
            replica,
            generation,
            mode,
        };
        let (actor, _) = Actor::spawn_linked(None, ContainerActor, args, myself.get_cell()).await?;
        self.actors.insert(actor.get_id(), replica);
        Ok(actor)
    }

    async fn add_slot(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        replica: u32,
    ) -> Result<(), ActorProcessingErr> {
        let svc = self.target.clone();
        let seed = self.ctx.seed ^ (u64::from(replica) << 20);
        let resume = self.resume_generation.remove(&replica).unwrap_or(0);
        let ctx = self.ctx.clone();
        let (generation, mode) = match (
            self.orphans.remove(&replica),
            self.survivors.remove(&replica),
        ) {
            (Some(stale), _) => (
                ctx.generations.issue(&ctx.service_name, replica, resume),
                Mode::Recreate { stale: Some(stale) },
            ),
            (None, Some(survivor)) => {
                let generation = survivor.id.generation;
                ctx.generations.note(&ctx.service_name, replica, generation);
                (generation, Mode::Adopt(survivor))
            }
            (None, None) => (
                ctx.generations.issue(&ctx.service_name, replica, resume),
                Mode::Boot,
            ),
        };
        let actor = self
            .spawn_container(myself, replica, generation, mode, svc.clone())
            .await?;
        self.slots.insert(
            replica,
            Slot {
                actor,
                generation,
                state: SlotState::Booting,
                healthy: false,
                ready: false,
                token: 0,
                tracker: RestartTracker::new(svc.kind, svc.restart, svc.on_panic, seed),
                init_retry: InitRetry::new(svc.on_init_failure),
                started_at: None,
                ready_since: None,
                spec: svc,
                early_health: None,
            },
        );
        Ok(())
    }
}

/// A reproducible jitter fraction in [0, 1) for one replica's `n`th init retry.
fn jitter_unit(seed: u64, replica: u32, n: u32) -> f64 {
    use rand::{Rng, SeedableRng};
    let mut rng =
        rand::rngs::SmallRng::seed_from_u64(seed ^ (u64::from(replica) << 32) ^ u64::from(n));
    rng.random()
}
