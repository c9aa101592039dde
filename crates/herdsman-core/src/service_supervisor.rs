//! `ServiceSupervisor`: one per service. Owns the desired replica count and one restart
//! tracker per replica, decides what every exit, start failure, init failure and health
//! transition means, and has its container actors carry it out.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herdsman_probe::InitRetry;
use herdsman_runtime::{ContainerId, Exit, Runtime, Survivor};
use herdsman_spec::{Deployment, OnUnhealthy, Service, ServiceKind};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::time::Instant;

use crate::board::{ReplicaState, ServicePhase, StatusBoard};
use crate::container_actor::{stop_budget, ContainerActor, ContainerArgs, ContainerMsg, Mode};
use crate::deployment_actor::DeploymentMsg;
use crate::event::{EventBus, EventKind};
use crate::init_runs::InitRuns;
use crate::restart::{Cause, Decision, RestartTracker};
use crate::stabilization::ServiceCounts;
use crate::CoreError;

/// What every actor of one service shares.
pub(crate) struct ServiceContext {
    pub(crate) deployment_name: Arc<str>,
    pub(crate) service_name: Arc<str>,
    pub(crate) deployment: Arc<Deployment>,
    pub(crate) service: Arc<Service>,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) board: StatusBoard,
    pub(crate) events: EventBus,
    pub(crate) supervisor: ActorRef<SupervisorMsg>,
    pub(crate) seed: u64,
    /// Every slot's init run in flight, shared with the deployment's other supervisors
    /// (and a failed predecessor of this one).
    pub(crate) init_runs: InitRuns,
    /// Set when the service starts stopping for good: from then on no container actor
    /// boots a new container, so a stop request queued behind a restart has only the
    /// container already there to stop.
    stopping: AtomicBool,
}

impl ServiceContext {
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
    /// An operator's restart of one replica: a new incarnation replaces the current one
    /// (stopped with its signal and grace), whatever its state, with a fresh restart
    /// count. Replies with the new generation.
    RestartReplica {
        replica: u32,
        reply: RpcReplyPort<Result<u64, CoreError>>,
    },
    /// Fault injection: make a replica's container actor panic, or (`None`) this
    /// supervisor itself.
    InjectPanic {
        replica: Option<u32>,
    },
    // Reports from container actors and their exit watchers.
    Started {
        replica: u32,
        generation: u64,
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
    /// Recount the replicas and tell the deployment actor if the counts changed. Self-sent
    /// at most once per burst of messages, so a burst of N changes costs one count of the
    /// slots instead of N (which at 10,000 replicas would dominate a mass restart).
    Report,
}

pub(crate) struct SupervisorArgs {
    pub(crate) deployment: Arc<Deployment>,
    pub(crate) service: Arc<Service>,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) board: StatusBoard,
    pub(crate) events: EventBus,
    pub(crate) parent: ActorRef<DeploymentMsg>,
    pub(crate) seed: u64,
    pub(crate) init_runs: InitRuns,
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
    /// The generation each replica index resumes at (after survivors that were stopped
    /// rather than adopted), so no container id of an earlier run is reused.
    pub(crate) resume_at: HashMap<u32, u64>,
}

/// The supervisor's view of one replica: the authority on its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Booting,
    Running,
    /// Running but unhealthy, `on_unhealthy: isolate`.
    Unhealthy,
    Backoff,
    /// Exited and kept by the panic action `isolate`.
    Isolated,
    Completed,
    Failed,
    Stopped,
}

struct Slot {
    actor: ActorRef<ContainerMsg>,
    generation: u64,
    state: SlotState,
    healthy: bool,
    ready: bool,
    /// Invalidates restart and ready timers that no longer apply.
    token: u64,
    tracker: RestartTracker,
    init_retry: InitRetry,
    /// When the current incarnation started, for the clean-run reset of a replica that
    /// is restarted for turning unhealthy (it has no exit to say how long it ran).
    started_at: Option<Instant>,
}

/// What replicas add to their service's counts: running, healthy, ready, and failed for
/// good (a failed replica never comes back by itself, so its service cannot become ready).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Share {
    running: u32,
    healthy: u32,
    ready: u32,
    failed: u32,
}

impl Share {
    fn add(self, o: Share) -> Share {
        Share {
            running: self.running + o.running,
            healthy: self.healthy + o.healthy,
            ready: self.ready + o.ready,
            failed: self.failed + o.failed,
        }
    }

    fn sub(self, o: Share) -> Share {
        Share {
            running: self.running - o.running,
            healthy: self.healthy - o.healthy,
            ready: self.ready - o.ready,
            failed: self.failed - o.failed,
        }
    }
}

impl Slot {
    /// This replica's share of the counts.
    fn share(&self, is_job: bool) -> Share {
        match self.state {
            SlotState::Running => Share {
                running: 1,
                healthy: u32::from(self.healthy),
                // A job is ready (for stability and for `healthy` dependants) only once
                // it has completed: a migration must finish before its dependants start.
                ready: u32::from(self.ready && !is_job),
                failed: 0,
            },
            SlotState::Unhealthy => Share {
                running: 1,
                ..Share::default()
            },
            SlotState::Completed if is_job => Share {
                ready: 1,
                ..Share::default()
            },
            SlotState::Failed => Share {
                failed: 1,
                ..Share::default()
            },
            _ => Share::default(),
        }
    }
}

pub(crate) struct SupervisorState {
    ctx: Arc<ServiceContext>,
    parent: ActorRef<DeploymentMsg>,
    desired: u32,
    slots: BTreeMap<u32, Slot>,
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
    reported: Option<ServiceCounts>,
    /// A `Report` is queued.
    report_queued: bool,
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
            service: args.service.clone(),
            runtime: args.runtime,
            board: args.board,
            events: args.events,
            supervisor: myself,
            seed: args.seed,
            init_runs: args.init_runs,
            stopping: AtomicBool::new(false),
        });
        Ok(SupervisorState {
            ctx,
            parent: args.parent,
            desired: args.desired,
            recover: args.recover,
            orphans: HashMap::new(),
            survivors: args
                .survivors
                .into_iter()
                .map(|s| (s.id.replica, s))
                .collect(),
            slots: BTreeMap::new(),
            actors: HashMap::new(),
            retiring: HashMap::new(),
            resume_generation: args.resume_at,
            phase: ServicePhase::Running,
            reported: None,
            report_queued: false,
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
        for replica in 0..state.desired {
            state.add_slot(&myself, replica).await?;
        }
        state.recount();
        state.report();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let counts_may_change = !matches!(msg, SupervisorMsg::Report);
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
            SupervisorMsg::RestartReplica { replica, reply } => {
                let _ = reply.send(state.restart_replica(replica));
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
            } => state.started(&myself, replica, generation),
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
            state.request_report(&myself);
        }
        Ok(())
    }

    /// Overrides ractor's default, which would stop this supervisor when a child ends.
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
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
    ) -> Result<ActorRef<ContainerMsg>, ActorProcessingErr> {
        let args = ContainerArgs {
            ctx: self.ctx.clone(),
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
        let svc = self.ctx.service.clone();
        let seed = self.ctx.seed ^ (u64::from(replica) << 20);
        let mut generation = self.resume_generation.remove(&replica).unwrap_or(0);
        let mode = match (
            self.orphans.remove(&replica),
            self.survivors.remove(&replica),
        ) {
            (Some(stale), _) => Mode::Recreate { stale: Some(stale) },
            (None, Some(survivor)) => {
                generation = survivor.id.generation;
                Mode::Adopt(survivor)
            }
            (None, None) => Mode::Boot,
        };
        let actor = self
            .spawn_container(myself, replica, generation, mode)
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
            },
        );
        Ok(())
    }

    /// After a predecessor failed: each replica it left keeps its container id as an
    /// orphan for the new actor of that index to stop and remove before booting the next
    /// generation; replicas beyond the desired count are stopped and removed here.
    fn recover_orphans(&mut self) {
        let ctx = self.ctx.clone();
        let left: Vec<(u32, ContainerId)> = ctx
            .board
            .snapshot()
            .services
            .into_iter()
            .filter(|s| s.name == *ctx.service_name)
            .flat_map(|s| s.replicas)
            .filter_map(|r| Some((r.replica, r.container?)))
            .collect();
        for (replica, id) in left {
            self.resume_generation.insert(replica, id.generation + 1);
            if replica < self.desired {
                self.orphans.insert(replica, id);
                continue;
            }
            ctx.board.remove(&ctx.service_name, replica);
            let (runtime, svc) = (ctx.runtime.clone(), ctx.service.clone());
            tokio::spawn(async move {
                let _ = runtime
                    .stop(&id, svc.stop_signal, svc.stop_grace_period)
                    .await;
                let _ = runtime.remove(&id).await;
            });
        }
    }

    /// A container actor failed (a bug, or injected): replace it so the replica is neither
    /// lost nor duplicated. A running container is adopted; one caught mid-boot is removed
    /// and booted again; a kept one is held again.
    async fn respawn(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        replica: u32,
    ) -> Result<(), ActorProcessingErr> {
        let Some(slot) = self.slots.get(&replica) else {
            return Ok(());
        };
        let (state, generation) = (slot.state, slot.generation);
        let on_board = self
            .ctx
            .board
            .replica(&self.ctx.service_name, replica)
            .and_then(|r| r.container.map(|c| (c, r.state)));
        // The slot's state says what the replica's container is doing; the board only says
        // which container that is. (An unhealthy replica kept running for debugging shows
        // `isolated` on the board but its container runs: it is adopted, not recreated.)
        let current = on_board
            .as_ref()
            .map(|(c, _)| c.clone())
            .filter(|c| c.generation == generation);
        let mode = match (state, current) {
            (SlotState::Running | SlotState::Unhealthy, Some(_)) => Mode::AdoptRunning,
            (
                SlotState::Backoff
                | SlotState::Isolated
                | SlotState::Completed
                | SlotState::Failed
                | SlotState::Stopped,
                _,
            ) => Mode::AdoptHeld,
            _ => {
                // Caught between boot and running: whatever was half created goes, and the
                // replica boots again as a new generation.
                let stale = on_board.map(|(c, _)| c);
                if let Some(slot) = self.slots.get_mut(&replica) {
                    slot.generation += 1;
                    slot.state = SlotState::Booting;
                    slot.healthy = false;
                    slot.ready = false;
                }
                Mode::Recreate { stale }
            }
        };
        let generation = self
            .slots
            .get(&replica)
            .map_or(generation, |s| s.generation);
        let actor = self
            .spawn_container(myself, replica, generation, mode)
            .await?;
        if let Some(slot) = self.slots.get_mut(&replica) {
            slot.actor = actor;
        }
        Ok(())
    }

    async fn scale(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        replicas: u32,
    ) -> Result<(), ActorProcessingErr> {
        let from = self.desired;
        // A service with a replica that gave up still scales: its other replicas run, and
        // scaling down must stop them. Only a service stopped for good does not.
        let scalable = matches!(self.phase, ServicePhase::Running | ServicePhase::Failed);
        if replicas == from || !scalable {
            self.desired = replicas;
            self.ctx.board.set_desired(&self.ctx.service_name, replicas);
            return Ok(());
        }
        self.desired = replicas;
        self.ctx.board.set_desired(&self.ctx.service_name, replicas);
        self.ctx.events.emit(EventKind::Scaled {
            service: self.ctx.service_name.clone(),
            from,
            to: replicas,
        });
        for replica in from..replicas {
            // An index whose predecessor is still stopping is added once it is gone.
            if !self.retiring.contains_key(&replica) && !self.slots.contains_key(&replica) {
                self.add_slot(myself, replica).await?;
            }
        }
        // Highest index first; removing the slot cancels its pending restart or ready
        // timer, whose token no longer finds it.
        for replica in (replicas..from).rev() {
            if let Some(slot) = self.slots.remove(&replica) {
                let _ = slot.actor.cast(ContainerMsg::Stop {
                    reply: None,
                    forget: true,
                });
                self.resume_generation
                    .insert(replica, slot.generation.saturating_add(1));
                self.retiring.insert(replica, slot.actor);
            }
        }
        Ok(())
    }

    /// The actor of a replica scaled away is gone: boot the index again if it has been
    /// scaled back up meanwhile. If it `failed` before it could stop its container (its stop
    /// request dies with it), a new actor adopts the container only to stop and remove it.
    /// True when a slot was added.
    async fn retired(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        replica: u32,
        actor: ActorId,
        failed: bool,
    ) -> Result<bool, ActorProcessingErr> {
        if self.retiring.get(&replica).map(|a| a.get_id()) != Some(actor) {
            return Ok(false);
        }
        self.retiring.remove(&replica);
        let left = self
            .ctx
            .board
            .replica(&self.ctx.service_name, replica)
            .and_then(|r| r.container);
        if let Some(container) = left.filter(|_| failed) {
            let successor = self
                .spawn_container(myself, replica, container.generation, Mode::AdoptHeld)
                .await?;
            let _ = successor.cast(ContainerMsg::Stop {
                reply: None,
                forget: true,
            });
            self.retiring.insert(replica, successor);
            return Ok(false);
        }
        if replica < self.desired
            && matches!(self.phase, ServicePhase::Running | ServicePhase::Failed)
            && !self.slots.contains_key(&replica)
        {
            self.add_slot(myself, replica).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Stop every replica, wait for them, and leave the service in `phase`. Total: when
    /// this returns, no container of the service runs, whatever was in flight.
    async fn stop_all(&mut self, phase: ServicePhase, reason: Option<String>) {
        self.phase = phase;
        // No container actor boots anything from now on, so each has at most the stop in
        // flight (a restart's, a held replica's) and then its own to do: two stop budgets.
        self.ctx.stopping.store(true, Ordering::Release);
        let budget = stop_budget(self.ctx.service.stop_grace_period) * 2;
        // Replicas scaled away and still stopping are waited for too: the call returns when
        // the actor, done with its own stop, drops the request.
        let retiring = self.retiring.values().map(|actor| {
            actor.call(
                |reply| ContainerMsg::Stop {
                    reply: Some(reply),
                    forget: true,
                },
                Some(budget),
            )
        });
        let retiring = futures::future::join_all(retiring);
        let calls = self.slots.iter_mut().map(|(&replica, slot)| {
            slot.state = SlotState::Stopped;
            slot.ready = false;
            slot.token += 1;
            let call = slot.actor.call(
                |reply| ContainerMsg::Stop {
                    reply: Some(reply),
                    forget: false,
                },
                Some(budget),
            );
            async move { (replica, call.await) }
        });
        let (results, _) = futures::future::join(futures::future::join_all(calls), retiring).await;
        // An actor that did not answer (it failed, or its runtime overran a stop) may
        // have left its container running: stop it from here, with its signal and grace.
        let unanswered = results.into_iter().filter_map(|(replica, r)| match r {
            Ok(ractor::rpc::CallResult::Success(())) => None,
            other => {
                tracing::warn!(service = %self.ctx.service_name, replica, result = ?other.map(|_| ()), "replica stop unanswered; stopping its container directly");
                Some(replica)
            }
        });
        let ctx = self.ctx.clone();
        let leftovers: Vec<ContainerId> = unanswered
            .filter_map(|replica| ctx.board.replica(&ctx.service_name, replica)?.container)
            .collect();
        futures::future::join_all(leftovers.iter().map(|id| {
            let ctx = ctx.clone();
            async move {
                let svc = &ctx.service;
                let _ = ctx
                    .runtime
                    .stop(id, svc.stop_signal, svc.stop_grace_period)
                    .await;
                let _ = ctx.runtime.remove(id).await;
                ctx.board.update(&ctx.service_name, id.replica, |r| {
                    r.state = ReplicaState::Stopped;
                    r.pid = None;
                    r.healthy = false;
                });
            }
        }))
        .await;
        self.ctx
            .board
            .set_service(&self.ctx.service_name, phase, reason);
    }

    fn started(&mut self, myself: &ActorRef<SupervisorMsg>, replica: u32, generation: u64) {
        let has_health = self.ctx.service.health.is_some();
        let Some(slot) = self.slots.get_mut(&replica) else {
            return;
        };
        if slot.generation != generation || slot.state != SlotState::Booting {
            return;
        }
        slot.init_retry.reset();
        slot.state = SlotState::Running;
        slot.started_at = Some(Instant::now());
        slot.healthy = !has_health;
        if slot.healthy {
            Self::arm_ready(&self.ctx, myself, replica, slot);
        }
    }

    /// Mark ready now, or after `min_ready` of uninterrupted health.
    fn arm_ready(
        ctx: &ServiceContext,
        myself: &ActorRef<SupervisorMsg>,
        replica: u32,
        slot: &mut Slot,
    ) {
        slot.token += 1;
        let min_ready = ctx.service.min_ready;
        if min_ready.is_zero() {
            slot.ready = true;
        } else {
            let token = slot.token;
            myself.send_after(min_ready, move || SupervisorMsg::ReadyDue {
                replica,
                token,
            });
        }
    }

    fn ready_due(&mut self, replica: u32, token: u64) {
        if let Some(slot) = self.slots.get_mut(&replica) {
            if slot.token == token && slot.state == SlotState::Running && slot.healthy {
                slot.ready = true;
            }
        }
    }

    async fn exited(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        replica: u32,
        generation: u64,
        exit: Exit,
    ) {
        let Some(slot) = self.slots.get_mut(&replica) else {
            return;
        };
        // A late exit of an old incarnation, or of one this supervisor is stopping or has
        // already decided about (a container held in backoff after turning unhealthy is
        // stopped; that exit is not a second crash). An exit of the current incarnation
        // is acted on even while the slot still looks booting: its start report cannot be
        // behind it (one sender tells both), but a replaced container actor may be.
        if slot.generation != generation
            || !matches!(
                slot.state,
                SlotState::Booting | SlotState::Running | SlotState::Unhealthy
            )
        {
            return;
        }
        let ctx = self.ctx.clone();
        ctx.board.update(&ctx.service_name, replica, |r| {
            r.last_exit = Some(exit);
            r.last_exit_code = exit.code();
            r.pid = None;
            r.healthy = false;
        });
        let exited = EventKind::ReplicaExited {
            service: ctx.service_name.clone(),
            replica,
            generation,
            exit,
        };
        let decision = slot.tracker.decide(Cause::Exit(exit), Instant::now());
        self.apply(myself, replica, decision, false, Some(exited))
            .await;
    }

    fn restart_replica(&mut self, replica: u32) -> Result<u64, CoreError> {
        let ctx = self.ctx.clone();
        if matches!(self.phase, ServicePhase::Shutdown | ServicePhase::Stopped) {
            return Err(CoreError::Stopped);
        }
        let Some(slot) = self.slots.get_mut(&replica) else {
            return Err(CoreError::UnknownReplica {
                service: ctx.service_name.to_string(),
                replica,
            });
        };
        let svc = &ctx.service;
        let seed = ctx.seed ^ (u64::from(replica) << 20);
        // An explicit restart is a new chance: the crash-loop window and give-up count
        // start over, as `systemctl restart` clears a unit's failure.
        slot.tracker = RestartTracker::new(svc.kind, svc.restart, svc.on_panic, seed);
        slot.init_retry = InitRetry::new(svc.on_init_failure);
        let may_run = matches!(slot.state, SlotState::Running | SlotState::Unhealthy);
        Self::restart(&ctx, replica, slot);
        let generation = slot.generation;
        let shown = if may_run {
            ReplicaState::Stopping
        } else {
            ReplicaState::Starting
        };
        ctx.board.update(&ctx.service_name, replica, |r| {
            r.state = shown;
            r.backoff_ms = None;
        });
        // A service failed by this replica's give-up runs again once no replica is failed.
        let still_failed = self.slots.values().any(|s| s.state == SlotState::Failed);
        if self.phase == ServicePhase::Failed && !still_failed {
            self.phase = ServicePhase::Running;
            ctx.board
                .set_service(&ctx.service_name, ServicePhase::Running, None);
        }
        Ok(generation)
    }

    fn adopt_failed(&mut self, replica: u32, generation: u64) {
        let ctx = self.ctx.clone();
        if let Some(slot) = self.slots.get_mut(&replica) {
            if slot.generation == generation && slot.state == SlotState::Booting {
                Self::restart(&ctx, replica, slot);
            }
        }
    }

    async fn start_failed(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        replica: u32,
        generation: u64,
        error: String,
    ) {
        let Some(slot) = self.slots.get_mut(&replica) else {
            return;
        };
        if slot.generation != generation || slot.state != SlotState::Booting {
            return;
        }
        self.ctx.events.emit(EventKind::StartFailed {
            service: self.ctx.service_name.clone(),
            replica,
            error,
        });
        let decision = slot.tracker.decide(Cause::StartFailed, Instant::now());
        self.apply(myself, replica, decision, false, None).await;
    }

    fn init_failed(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        replica: u32,
        generation: u64,
        step: String,
        error: String,
    ) {
        let ctx = self.ctx.clone();
        let Some(slot) = self.slots.get_mut(&replica) else {
            return;
        };
        if slot.generation != generation || slot.state != SlotState::Booting {
            return;
        }
        let why = format!("init step {step:?} failed: {error}");
        ctx.board.update(&ctx.service_name, replica, |r| {
            r.last_error = Some(why.clone());
        });
        match slot.init_retry.after_failure(jitter_unit(
            ctx.seed,
            replica,
            slot.init_retry.retries(),
        )) {
            Some(delay) => {
                slot.state = SlotState::Backoff;
                slot.token += 1;
                let token = slot.token;
                ctx.board.update(&ctx.service_name, replica, |r| {
                    r.state = ReplicaState::Backoff;
                    r.backoff_ms = Some(delay.as_millis() as u64);
                });
                ctx.events.emit(EventKind::ReplicaRestarting {
                    service: ctx.service_name.clone(),
                    replica,
                    delay_ms: delay.as_millis() as u64,
                    restarts: slot.tracker.total(),
                });
                myself.send_after(delay, move || SupervisorMsg::RestartDue { replica, token });
            }
            None => Self::fail_slot(&ctx, replica, slot, why, false),
        }
    }

    async fn health(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        replica: u32,
        generation: u64,
        healthy: bool,
    ) {
        let ctx = self.ctx.clone();
        let Some(slot) = self.slots.get_mut(&replica) else {
            return;
        };
        if slot.generation != generation
            || !matches!(slot.state, SlotState::Running | SlotState::Unhealthy)
        {
            return;
        }
        slot.healthy = healthy;
        ctx.events.emit(EventKind::HealthChanged {
            service: ctx.service_name.clone(),
            replica,
            healthy,
        });
        if healthy {
            if slot.state == SlotState::Unhealthy {
                slot.state = SlotState::Running;
                ctx.board.update(&ctx.service_name, replica, |r| {
                    r.state = ReplicaState::Running
                });
            }
            Self::arm_ready(&ctx, myself, replica, slot);
            return;
        }
        slot.ready = false;
        slot.token += 1;
        match ctx.service.health.as_ref().map(|h| h.on_unhealthy) {
            Some(OnUnhealthy::Isolate) => {
                slot.state = SlotState::Unhealthy;
                ctx.board.update(&ctx.service_name, replica, |r| {
                    r.state = ReplicaState::Isolated
                });
                ctx.events.emit(EventKind::Isolated {
                    service: ctx.service_name.clone(),
                    replica,
                    reason: "health check failing".into(),
                });
            }
            Some(OnUnhealthy::Restart) => {
                let now = Instant::now();
                let ran_for = slot
                    .started_at
                    .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
                let decision = slot.tracker.decide(Cause::Unhealthy { ran_for }, now);
                self.apply(myself, replica, decision, true, None).await;
            }
            Some(OnUnhealthy::None) | None => {}
        }
    }

    fn restart_due(&mut self, replica: u32, token: u64) {
        let ctx = self.ctx.clone();
        if let Some(slot) = self.slots.get_mut(&replica) {
            if slot.token == token && slot.state == SlotState::Backoff {
                Self::restart(&ctx, replica, slot);
            }
        }
    }

    fn restart(ctx: &ServiceContext, replica: u32, slot: &mut Slot) {
        slot.generation += 1;
        slot.state = SlotState::Booting;
        slot.healthy = false;
        slot.ready = false;
        slot.token += 1;
        let _ = slot.actor.cast(ContainerMsg::Restart {
            generation: slot.generation,
        });
        let restarts = slot.tracker.total();
        ctx.board
            .update(&ctx.service_name, replica, |r| r.restarts = restarts);
    }

    /// The replica will not be restarted: `failed`, its container kept (stopped, with its
    /// signal and grace, if it may still run) for its logs and last exit.
    fn fail_slot(
        ctx: &ServiceContext,
        replica: u32,
        slot: &mut Slot,
        reason: String,
        running: bool,
    ) {
        slot.state = SlotState::Failed;
        slot.ready = false;
        Self::hold(ctx, replica, slot, running, ReplicaState::Failed);
        ctx.board.update(&ctx.service_name, replica, |r| {
            r.backoff_ms = None;
            // What made this incarnation fail (a start error) stays in front of why it is
            // not tried again.
            r.last_error = Some(match r.last_error.take() {
                Some(cause) if cause != reason => format!("{cause}; {reason}"),
                _ => reason.clone(),
            });
        });
        ctx.events.emit(EventKind::GaveUp {
            service: ctx.service_name.clone(),
            replica,
            reason,
        });
    }

    /// Have the container actor keep the replica's container, shown as `then` (and as
    /// `stopping` until then if it may still run and must be stopped first).
    fn hold(ctx: &ServiceContext, replica: u32, slot: &Slot, running: bool, then: ReplicaState) {
        let _ = slot.actor.cast(ContainerMsg::Hold {
            stop: running,
            then,
        });
        let shown = if running {
            ReplicaState::Stopping
        } else {
            then
        };
        ctx.board
            .update(&ctx.service_name, replica, |r| r.state = shown);
    }

    /// Carry out a restart decision for one replica. `running`: its container still runs
    /// (it turned unhealthy) rather than having exited or failed to start. `announce` is
    /// the event of what happened (an exit), emitted before the decision's own events; an
    /// immediate restart is sent first, since waking subscribers costs the restart time.
    async fn apply(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        replica: u32,
        decision: Decision,
        running: bool,
        mut announce: Option<EventKind>,
    ) {
        let ctx = self.ctx.clone();
        let Some(slot) = self.slots.get_mut(&replica) else {
            return;
        };
        slot.ready = false;
        if !matches!(decision, Decision::RestartNow) {
            if let Some(event) = announce.take() {
                ctx.events.emit(event);
            }
        }
        match decision {
            Decision::RestartNow => {
                Self::restart(&ctx, replica, slot);
                let shown = if running {
                    ReplicaState::Stopping
                } else {
                    ReplicaState::Starting
                };
                ctx.board
                    .update(&ctx.service_name, replica, |r| r.state = shown);
                if let Some(event) = announce {
                    ctx.events.emit(event);
                }
                ctx.events.emit(EventKind::ReplicaRestarting {
                    service: ctx.service_name.clone(),
                    replica,
                    delay_ms: 0,
                    restarts: slot.tracker.total(),
                });
            }
            Decision::RestartAfter(delay) => {
                slot.state = SlotState::Backoff;
                slot.token += 1;
                let token = slot.token;
                let delay_ms = delay.as_millis() as u64;
                let restarts = slot.tracker.total();
                Self::hold(&ctx, replica, slot, running, ReplicaState::Backoff);
                ctx.board.update(&ctx.service_name, replica, |r| {
                    r.backoff_ms = Some(delay_ms);
                    r.restarts = restarts.saturating_sub(1);
                });
                ctx.events.emit(EventKind::BackOff {
                    service: ctx.service_name.clone(),
                    replica,
                    delay_ms,
                });
                ctx.events.emit(EventKind::ReplicaRestarting {
                    service: ctx.service_name.clone(),
                    replica,
                    delay_ms,
                    restarts,
                });
                myself.send_after(delay, move || SupervisorMsg::RestartDue { replica, token });
            }
            Decision::Complete => {
                slot.state = SlotState::Completed;
                Self::hold(&ctx, replica, slot, running, ReplicaState::Completed);
                ctx.events.emit(EventKind::Completed {
                    service: ctx.service_name.clone(),
                    replica,
                });
            }
            Decision::Fail(reason) => Self::fail_slot(&ctx, replica, slot, reason, running),
            Decision::GiveUp(reason) => {
                Self::fail_slot(&ctx, replica, slot, reason.clone(), running);
                let why = format!("replica {replica} {reason}");
                ctx.board
                    .set_service(&ctx.service_name, ServicePhase::Failed, Some(why.clone()));
                self.phase = ServicePhase::Failed;
                ctx.events.emit(EventKind::ServiceFailed {
                    service: ctx.service_name.clone(),
                    reason: why,
                });
            }
            Decision::Isolate => {
                slot.state = SlotState::Isolated;
                Self::hold(&ctx, replica, slot, running, ReplicaState::Isolated);
                ctx.events.emit(EventKind::Isolated {
                    service: ctx.service_name.clone(),
                    replica,
                    reason: "exited unexpectedly; kept for debugging".into(),
                });
            }
            Decision::ShutdownService => {
                let reason = format!("replica {replica} exited unexpectedly; on_panic is shutdown");
                ctx.events.emit(EventKind::ServiceShutdown {
                    service: ctx.service_name.clone(),
                    reason: reason.clone(),
                });
                self.stop_all(ServicePhase::Shutdown, Some(reason)).await;
            }
        }
    }

    /// Have the counts reported once the messages queued now are handled.
    fn request_report(&mut self, myself: &ActorRef<SupervisorMsg>) {
        if !self.report_queued {
            self.report_queued = true;
            let _ = myself.cast(SupervisorMsg::Report);
        }
    }

    /// One replica's share of the counts (none for a slot that does not exist).
    fn share_of(&self, replica: u32) -> Share {
        let is_job = self.ctx.service.kind == ServiceKind::Job;
        self.slots
            .get(&replica)
            .map_or(Share::default(), |s| s.share(is_job))
    }

    /// Every slot's share, counted.
    fn counted(&self) -> Share {
        let is_job = self.ctx.service.kind == ServiceKind::Job;
        self.slots
            .values()
            .fold(Share::default(), |t, s| t.add(s.share(is_job)))
    }

    fn recount(&mut self) {
        self.tally = self.counted();
    }

    /// Tell the deployment actor when this service's counts change.
    fn report(&mut self) {
        debug_assert_eq!(self.tally, self.counted(), "the running tally drifted");
        let c = ServiceCounts {
            desired: self.desired,
            viable: matches!(self.phase, ServicePhase::Running) && self.tally.failed == 0,
            running: self.tally.running,
            healthy: self.tally.healthy,
            ready: self.tally.ready,
        };
        if self.reported != Some(c) {
            self.reported = Some(c);
            let _ = self.parent.cast(DeploymentMsg::ServiceHealth {
                service: self.ctx.service_name.clone(),
                from: self.ctx.supervisor.get_id(),
                counts: c,
            });
        }
    }
}

/// How long a whole service may take to stop.
pub(crate) fn shutdown_budget(service: &Service) -> Duration {
    stop_budget(service.stop_grace_period) + Duration::from_secs(1)
}

/// A reproducible jitter fraction in [0, 1) for one replica's `n`th init retry.
fn jitter_unit(seed: u64, replica: u32, n: u32) -> f64 {
    use rand::{Rng, SeedableRng};
    let mut rng =
        rand::rngs::SmallRng::seed_from_u64(seed ^ (u64::from(replica) << 32) ^ u64::from(n));
    rng.random()
}
