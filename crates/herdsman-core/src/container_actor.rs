//! `ContainerActor`: one per replica. Runs the init steps, creates and starts the
//! container, tells the service supervisor it started and hands the runtime's exit
//! notification a callback that reports the exit straight to the supervisor, runs the
//! probe actor, and carries out the supervisor's decisions.
//! It never decides whether it restarts.

use std::sync::Arc;
use std::time::Duration;

use herdsman_probe::{StepReport, StepVerdict};
use herdsman_runtime::{ContainerId, ContainerSpec, Started, Survivor};
use herdsman_spec::{ReplicaVars, Service};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::board::ReplicaState;
use crate::event::EventKind;
use crate::probe_actor::{ProbeActor, ProbeArgs};
use crate::service_supervisor::{ServiceContext, SupervisorMsg};

/// Messages of a container actor.
pub(crate) enum ContainerMsg {
    // Commands from the supervisor.
    /// (Re)start as `generation`: drop the probe, stop and remove the current container if
    /// there is one, then boot; from `service`'s spec when given (a rollout), else from
    /// the spec it ran.
    Restart {
        generation: u64,
        service: Option<Arc<Service>>,
    },
    /// The supervisor keeps the replica's container (backoff, isolation, completed,
    /// failed, given up): drop the probe, keep the container for its logs and last exit
    /// until the slot is reused or scaled away. With `stop` the container may still run
    /// (it turned unhealthy, or gave up while running): it is stopped with its stop signal
    /// and grace first, `stopping` meanwhile, then shown as `then`.
    Hold { stop: bool, then: ReplicaState },
    /// Stop everything (stop signal, grace, kill) and remove the container. With `forget`
    /// the replica was scaled away: its status is removed and the actor stops.
    Stop {
        reply: Option<RpcReplyPort<()>>,
        forget: bool,
    },
    /// Fault injection: panic inside the handler, as a bug would.
    InjectPanic,
    // Reports from children and tasks.
    /// An init step finished.
    InitStepDone {
        generation: u64,
        index: usize,
        report: StepReport,
    },
    // Self-sent.
    /// Start `generation` if it is still the current one: init steps, then create and
    /// start. Sent to itself once a new actor has cleared what a predecessor left; a
    /// restart queued meanwhile (a rollout replacing the replica) boots its own
    /// generation first, and this one must not boot that generation a second time (after
    /// a failed start, it would start the very container whose failure was reported).
    Boot { generation: u64 },
}

// Local only: never sent to another node, so it is not serializable.
crate::local_message!(ContainerMsg);

/// How a container actor begins.
#[derive(Debug, Clone)]
pub(crate) enum Mode {
    /// A fresh replica: boot at `generation`.
    Boot,
    /// Replacing an actor that failed while its container was running: watch it again.
    AdoptRunning,
    /// Replacing an actor that failed while its container was exited but kept.
    AdoptHeld,
    /// Replacing an actor that failed mid-boot: `stale` may be half started; remove it and
    /// boot again at `generation`.
    Recreate { stale: Option<ContainerId> },
    /// Take over a container an earlier run of herdsman left running (same run hash):
    /// supervise it as this replica's current incarnation, without restarting it.
    Adopt(Survivor),
}

pub(crate) struct ContainerArgs {
    pub(crate) ctx: Arc<ServiceContext>,
    /// The spec this replica runs (during a rollout, old and new replicas differ).
    pub(crate) service: Arc<Service>,
    pub(crate) replica: u32,
    pub(crate) generation: u64,
    pub(crate) mode: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No container for the current id yet.
    Empty,
    /// Running init steps.
    Initializing,
    /// Created and started.
    Running,
    /// Exited, container kept.
    Held,
    /// Stopped or removed.
    Gone,
}

pub(crate) struct ContainerState {
    ctx: Arc<ServiceContext>,
    service: Arc<Service>,
    id: ContainerId,
    /// Shared with the probe, which templates its checks with them.
    vars: Arc<ReplicaVars>,
    phase: Phase,
    probe: Option<ActorRef<crate::probe_actor::ProbeMsg>>,
    /// Container id created in the runtime and not yet removed.
    created: Option<ContainerId>,
    /// A survivor to adopt in `post_start`.
    survivor: Option<Survivor>,
}

pub(crate) struct ContainerActor;

impl Actor for ContainerActor {
    type Msg = ContainerMsg;
    type State = ContainerState;
    type Arguments = ContainerArgs;

    /// Cheap: the parent's handler waits for it. Slow work starts from `post_start`.
    async fn pre_start(
        &self,
        _myself: ActorRef<ContainerMsg>,
        args: ContainerArgs,
    ) -> Result<ContainerState, ActorProcessingErr> {
        let ctx = args.ctx;
        let id = ContainerId {
            deployment: ctx.deployment_name.clone(),
            service: ctx.service_name.clone(),
            replica: args.replica,
            generation: args.generation,
        };
        let vars = Arc::new(ReplicaVars::new(
            &ctx.deployment,
            &args.service,
            args.replica,
        ));
        let (phase, created) = match &args.mode {
            Mode::AdoptRunning => (Phase::Running, Some(id.clone())),
            Mode::AdoptHeld => (Phase::Held, Some(id.clone())),
            Mode::Boot | Mode::Adopt(_) => (Phase::Empty, None),
            Mode::Recreate { stale } => (Phase::Empty, stale.clone()),
        };
        let survivor = match args.mode {
            Mode::Adopt(s) => Some(s),
            _ => None,
        };
        Ok(ContainerState {
            ctx,
            service: args.service,
            id,
            vars,
            phase,
            probe: None,
            created,
            survivor,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<ContainerMsg>,
        state: &mut ContainerState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(survivor) = state.survivor.take() {
            state.adopt(&myself, survivor).await;
            return Ok(());
        }
        match state.phase {
            Phase::Running => state.spawn_probe(&myself).await,
            Phase::Empty => {
                // A failed predecessor's init run and its stale half-started container go
                // first, so the replica is never duplicated and its init never overlaps.
                state.end_init().await;
                state.discard_created(true).await;
                let _ = myself.cast(ContainerMsg::Boot {
                    generation: state.id.generation,
                });
            }
            _ => {}
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ContainerMsg>,
        msg: ContainerMsg,
        state: &mut ContainerState,
    ) -> Result<(), ActorProcessingErr> {
        // ractor keeps each actor's message loop, with this handler's future inline, for
        // the actor's whole life. Boxed, an idle replica holds a pointer instead of the
        // 920 bytes of its largest handler (boot, restart), allocated while one runs (see
        // `spawn_probe` for why it is no larger).
        Box::pin(dispatch(myself, msg, state)).await
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ContainerMsg>,
        evt: SupervisionEvent,
        state: &mut ContainerState,
    ) -> Result<(), ActorProcessingErr> {
        // The only child is the probe actor. A probe that crashed is replaced while the
        // container runs; the container itself is unaffected.
        if let SupervisionEvent::ActorFailed(cell, err) = evt {
            let was_ours = state
                .probe
                .as_ref()
                .is_some_and(|p| p.get_id() == cell.get_id());
            if was_ours {
                tracing::warn!(container = %state.id, error = %err, "probe actor failed; restarting it");
                state.probe = None;
                if state.phase == Phase::Running {
                    // Boxed for the reason `handle` is.
                    Box::pin(state.spawn_probe(&myself)).await;
                }
            }
        }
        Ok(())
    }
}

/// What each message to a container actor does (see `ContainerActor::handle`).
async fn dispatch(
    myself: ActorRef<ContainerMsg>,
    msg: ContainerMsg,
    state: &mut ContainerState,
) -> Result<(), ActorProcessingErr> {
    match msg {
        ContainerMsg::Boot { generation } => {
            if generation == state.id.generation {
                state.boot(&myself).await;
            }
        }
        ContainerMsg::Restart {
            generation,
            service,
        } => {
            state.drop_probe();
            state.end_init().await;
            state.discard_created(true).await;
            if let Some(service) = service {
                state.vars = Arc::new(ReplicaVars::new(
                    &state.ctx.deployment,
                    &service,
                    state.id.replica,
                ));
                state.service = service;
            }
            state.id.generation = generation;
            state.phase = Phase::Empty;
            state.boot(&myself).await;
        }
        ContainerMsg::Hold { stop, then } => {
            state.drop_probe();
            if state.phase == Phase::Running {
                if stop {
                    state.stop_kept(then).await;
                }
                state.phase = Phase::Held;
            }
        }
        ContainerMsg::Stop { reply, forget } => {
            state.stop(forget).await;
            if let Some(reply) = reply {
                let _ = reply.send(());
            }
            if forget {
                myself.stop(None);
            }
        }
        ContainerMsg::InjectPanic => {
            panic!("injected panic in container actor {}", state.id);
        }
        ContainerMsg::InitStepDone {
            generation,
            index,
            report,
        } => {
            if generation == state.id.generation && state.phase == Phase::Initializing {
                let ctx = &state.ctx;
                ctx.init_runs.finished(&ctx.service_name, state.id.replica);
                state.init_step_done(&myself, index, report).await;
            }
        }
    }
    Ok(())
}

impl ContainerState {
    async fn boot(&mut self, myself: &ActorRef<ContainerMsg>) {
        // Nothing new starts once the service is stopping for good: a stop queued behind
        // this restart then has only what is already there to stop.
        if self.phase != Phase::Empty || self.ctx.is_stopping() {
            return;
        }
        // Borrowed, not cloned, on the restart path: the context and the names in the id
        // are shared by every replica of the service (see `slot_key`).
        let (ctx, id) = (&self.ctx, &self.id);
        let shown = if self.service.init.is_empty() {
            ReplicaState::Starting
        } else {
            ReplicaState::Initializing
        };
        ctx.board.update(&ctx.service_name, id.replica, |r| {
            r.state = shown;
            r.container = Some(id.clone());
            r.pid = None;
            r.healthy = false;
            r.backoff_ms = None;
        });
        if self.service.init.is_empty() {
            self.create_and_start(myself).await;
        } else {
            self.phase = Phase::Initializing;
            self.run_init_step(myself, 0);
        }
    }

    /// Init steps can take minutes (waiting for a dependency): they run in a task that
    /// reports back, so a stop is never stuck behind one.
    fn run_init_step(&mut self, myself: &ActorRef<ContainerMsg>, index: usize) {
        let ctx = self.ctx.clone();
        let id = self.id.clone();
        let vars = self.vars.clone();
        let me = myself.clone();
        let service = self.service.clone();
        let task = tokio::spawn(async move {
            let Some(step) = service.init.get(index) else {
                return;
            };
            let report = ctx.runtime.init_step(&id, step, &vars).await;
            let _ = me.cast(ContainerMsg::InitStepDone {
                generation: id.generation,
                index,
                report,
            });
        });
        let ctx = &self.ctx;
        ctx.init_runs
            .begin(&ctx.service_name, self.id.replica, task);
    }

    async fn init_step_done(
        &mut self,
        myself: &ActorRef<ContainerMsg>,
        index: usize,
        report: StepReport,
    ) {
        let ctx = self.ctx.clone();
        let service = self.service.clone();
        let Some(step) = service.init.get(index) else {
            return;
        };
        let error = || report.error.clone().unwrap_or_else(|| "failed".into());
        let emit = |error: String, continues: bool| {
            ctx.events.emit(EventKind::InitStepFailed {
                service: ctx.service_name.clone(),
                replica: self.id.replica,
                step: step.id.clone(),
                error,
                continues,
            });
        };
        match report.verdict(step.on_failure) {
            StepVerdict::Passed | StepVerdict::Ignored => {}
            StepVerdict::Warned => {
                let error = error();
                tracing::warn!(container = %self.id, step = %step.id, %error, "init step failed; going on");
                emit(error, true);
            }
            StepVerdict::Failed => {
                let error = error();
                emit(error.clone(), false);
                self.phase = Phase::Empty;
                let _ = ctx.supervisor.cast(SupervisorMsg::InitFailed {
                    replica: self.id.replica,
                    generation: self.id.generation,
                    step: step.id.clone(),
                    error,
                });
                return;
            }
        }
        if index + 1 < service.init.len() {
            self.run_init_step(myself, index + 1);
        } else {
            self.phase = Phase::Empty;
            self.create_and_start(myself).await;
        }
    }

    /// Take over a survivor. If it cannot be watched (it died meanwhile), what is left of
    /// it is stopped, and the supervisor is told and boots the replica afresh, without
    /// counting a restart.
    async fn adopt(&mut self, myself: &ActorRef<ContainerMsg>, survivor: Survivor) {
        let ctx = self.ctx.clone();
        let spec = ContainerSpec {
            service: self.service.clone(),
            vars: ReplicaVars::clone(&self.vars),
        };
        ctx.board.update(&ctx.service_name, self.id.replica, |r| {
            r.state = ReplicaState::Starting;
            r.container = Some(survivor.id.clone());
        });
        match ctx.runtime.adopt(&survivor, &spec).await {
            Ok(started) => {
                self.created = Some(self.id.clone());
                ctx.events.emit(EventKind::ReplicaAdopted {
                    service: ctx.service_name.clone(),
                    replica: self.id.replica,
                    generation: self.id.generation,
                    pid: started.pid,
                });
                self.running(myself, started).await;
            }
            Err(e) => {
                // Whatever the incarnation left (its main process, or what it detached
                // into its cgroup before it died) goes before the replica starts afresh:
                // neither a duplicate nor an orphan.
                tracing::warn!(container = %survivor.id, error = %e, "cannot adopt; stopping what is left of it and starting it afresh");
                let (signal, grace) = (self.service.stop_signal, self.service.stop_grace_period);
                if let Err(e) = ctx.runtime.discard_survivor(&survivor, signal, grace).await {
                    tracing::warn!(container = %survivor.id, error = %e, "cannot stop what is left of a replica that was not adopted");
                }
                let _ = ctx.supervisor.cast(SupervisorMsg::AdoptFailed {
                    replica: self.id.replica,
                    generation: self.id.generation,
                });
            }
        }
    }

    async fn create_and_start(&mut self, myself: &ActorRef<ContainerMsg>) {
        let (created, started) = {
            // Borrowed, not cloned (see `boot`).
            let (ctx, id) = (&self.ctx, &self.id);
            ctx.board.update(&ctx.service_name, id.replica, |r| {
                r.state = ReplicaState::Starting
            });
            let spec = ContainerSpec {
                service: self.service.clone(),
                vars: ReplicaVars::clone(&self.vars),
            };
            match ctx.runtime.create(id, &spec).await {
                Ok(()) => (true, ctx.runtime.start(id).await),
                Err(e) => (false, Err(e)),
            }
        };
        if created {
            self.created = Some(self.id.clone());
        }
        let (replica, generation) = (self.id.replica, self.id.generation);
        let started = match started {
            Ok(s) => s,
            Err(e) => {
                self.discard_created(false).await;
                self.phase = Phase::Empty;
                let error = e.to_string();
                let ctx = &self.ctx;
                ctx.board.update(&ctx.service_name, replica, |r| {
                    r.last_error = Some(format!("start failed: {error}"));
                });
                let _ = ctx.supervisor.cast(SupervisorMsg::StartFailed {
                    replica,
                    generation,
                    error,
                });
                return;
            }
        };
        let ctx = &self.ctx;
        ctx.events.emit(EventKind::ReplicaStarted {
            service: ctx.service_name.clone(),
            replica,
            generation,
            pid: started.pid,
        });
        self.running(myself, started).await;
    }

    /// The current incarnation runs (started or adopted): show it, watch its exit, probe it.
    async fn running(&mut self, myself: &ActorRef<ContainerMsg>, started: Started) {
        self.phase = Phase::Running;
        // Borrowed, not cloned (see `boot`); the exit's callback owns what it needs.
        let (ctx, id) = (&self.ctx, &self.id);
        let has_health = self.service.health.is_some();
        ctx.board.update(&ctx.service_name, id.replica, |r| {
            r.state = ReplicaState::Running;
            r.pid = started.pid;
            r.healthy = !has_health;
            r.last_error = None;
        });
        // The incarnation's story is told in order: that it started, then how it ended. An
        // exit can come a microsecond after the start; told out of order, it would be
        // taken for a stale report. The start is sent here, and only then is the exit's
        // callback handed to the watch: the runtime runs it where it learns of the exit
        // (its reaper, Docker's wait, the simulator's timer), after the start's send in
        // every case. It reports to the supervisor, not to this actor, so an exit is
        // never lost if this actor fails and is replaced; and no task waits per replica.
        // An incarnation that ended at the instant it started (its watch resolved already)
        // is told in the same message as its start: between two, the supervisor could
        // count it running, and a deployment call itself stable on it.
        let supervisor = ctx.supervisor.clone();
        let (board, incarnation) = (ctx.board.clone(), id.clone());
        let mut exit = started.exit;
        let (replica, generation) = (id.replica, id.generation);
        if let Some(ended) = exit.try_exit() {
            let _ = supervisor.cast(SupervisorMsg::Started {
                replica,
                generation,
                ended: Some(ended),
            });
            return;
        }
        let _ = supervisor.cast(SupervisorMsg::Started {
            replica,
            generation,
            ended: None,
        });
        exit.on_exit(move |exit| {
            let told = supervisor.cast(SupervisorMsg::Exited {
                replica,
                generation,
                exit,
            });
            if told.is_err() {
                // Its supervisor is gone (failed while the deployment shuts down, and is
                // not replaced): nobody else will ever say this incarnation ended.
                board.update_incarnation(&incarnation, |r| {
                    if r.state == ReplicaState::Running {
                        r.state = ReplicaState::Failed;
                    }
                    r.pid = None;
                    r.healthy = false;
                    r.last_exit = Some(exit);
                    r.last_exit_code = exit.code();
                });
            }
        });
        self.spawn_probe(myself).await;
    }

    async fn spawn_probe(&mut self, myself: &ActorRef<ContainerMsg>) {
        if self.service.health.is_none() {
            return;
        }
        let args = ProbeArgs {
            ctx: self.ctx.clone(),
            id: self.id.clone(),
            vars: self.vars.clone(),
            service: self.service.clone(),
        };
        // Boxed: ractor's spawn future is ~800 bytes, and inline it would be part of every
        // message's handler future (see `ContainerActor::handle`), which is allocated
        // per message: 1,696 bytes with it, 920 without, under glibc's per-thread cache
        // limit (1,032), which a burst of restarts then allocates from without a lock.
        let spawn = Box::pin(Actor::spawn_linked(
            None,
            ProbeActor,
            args,
            myself.get_cell(),
        ));
        match spawn.await {
            Ok((probe, _)) => self.probe = Some(probe),
            Err(e) => {
                tracing::error!(container = %self.id, error = %e, "cannot spawn probe actor");
            }
        }
    }

    fn drop_probe(&mut self) {
        if let Some(p) = self.probe.take() {
            p.stop(None);
        }
    }

    /// End the slot's init run, if one is in flight, and wait until it is gone.
    async fn end_init(&self) {
        let ctx = &self.ctx;
        ctx.init_runs.end(&ctx.service_name, self.id.replica).await;
    }

    /// Stop the container but keep it (for its logs) until it is restarted or scaled
    /// away: `stopping` while it stops, then `then` (what the supervisor decided), unless
    /// the supervisor has moved the replica on meanwhile.
    async fn stop_kept(&mut self, then: ReplicaState) {
        let Some(id) = &self.created else {
            return;
        };
        let ctx = &self.ctx;
        let svc = &self.service;
        if let Err(e) = ctx
            .runtime
            .stop(id, svc.stop_signal, svc.stop_grace_period)
            .await
        {
            tracing::debug!(container = %id, error = %e, "stop of a held container");
        }
        ctx.board.update(&ctx.service_name, id.replica, |r| {
            if r.state == ReplicaState::Stopping {
                r.state = then;
                r.pid = None;
            }
        });
    }

    /// Stop (if `stop` and it may still run) and remove the created container, if any.
    async fn discard_created(&mut self, stop: bool) {
        let Some(id) = self.created.take() else {
            return;
        };
        let (rt, board) = (&self.ctx.runtime, &self.ctx.board);
        // A predecessor's stale container may still be the one the board shows (a
        // replacement actor discards it before booting): shown stopping while it stops,
        // and without it once gone, so the board never shows a container that is not
        // running as running.
        board.update_incarnation(&id, |r| {
            if r.state == ReplicaState::Running {
                r.state = ReplicaState::Stopping;
            }
            r.healthy = false;
        });
        if stop {
            let svc = &self.service;
            if let Err(e) = rt.stop(&id, svc.stop_signal, svc.stop_grace_period).await {
                tracing::debug!(container = %id, error = %e, "stop before removal");
            }
        }
        if let Err(e) = rt.remove(&id).await {
            tracing::debug!(container = %id, error = %e, "remove");
        }
        board.update_incarnation(&id, |r| {
            if r.state == ReplicaState::Stopping {
                r.state = ReplicaState::Stopped;
            }
            r.pid = None;
        });
    }

    async fn stop(&mut self, forget: bool) {
        let ctx = self.ctx.clone();
        self.drop_probe();
        self.end_init().await;
        ctx.board.update(&ctx.service_name, self.id.replica, |r| {
            r.state = ReplicaState::Stopping
        });
        self.discard_created(true).await;
        self.phase = Phase::Gone;
        if forget {
            ctx.board.remove(&ctx.service_name, self.id.replica);
        } else {
            ctx.board.update(&ctx.service_name, self.id.replica, |r| {
                r.state = ReplicaState::Stopped;
                r.pid = None;
                r.healthy = false;
                r.backoff_ms = None;
            });
        }
    }
}

/// Upper bound on how long stopping one replica may take: its grace plus the kill.
pub(crate) fn stop_budget(grace: Duration) -> Duration {
    grace + Duration::from_secs(5)
}
