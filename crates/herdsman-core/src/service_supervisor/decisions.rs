//! What each report about a replica means: started, exited, failed to start or to
//! initialize, turned (un)healthy, timers due, an operator's restart; and how a restart
//! decision is carried out.

use std::time::Duration;

use herdsman_probe::InitRetry;
use herdsman_runtime::Exit;
use herdsman_spec::OnUnhealthy;
use ractor::ActorRef;
use tokio::time::Instant;

use super::slot::{Slot, SlotState};
use super::{jitter_unit, ServiceContext, SupervisorMsg, SupervisorState};
use crate::board::{ReplicaState, ServicePhase};
use crate::container_actor::ContainerMsg;
use crate::event::EventKind;
use crate::restart::{Cause, Decision, RestartTracker};
use crate::CoreError;

impl SupervisorState {
    pub(super) fn started(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        replica: u32,
        generation: u64,
    ) {
        let Some(slot) = self.slots.get_mut(&replica) else {
            return;
        };
        let has_health = slot.spec.health.is_some();
        if slot.generation != generation || slot.state != SlotState::Booting {
            return;
        }
        slot.init_retry.reset();
        slot.state = SlotState::Running;
        slot.started_at = Some(Instant::now());
        slot.healthy = !has_health;
        if slot.healthy {
            Self::arm_ready(myself, replica, slot);
        }
    }

    /// A health report of `generation` that was heard before its start, once the start
    /// has been (see `Slot::early_health`).
    pub(super) fn early_health(&mut self, replica: u32, generation: u64) -> Option<bool> {
        let slot = self.slots.get_mut(&replica)?;
        if slot.state != SlotState::Running {
            return None;
        }
        slot.take_early_health(generation)
    }

    /// Mark ready now, or after `min_ready` of uninterrupted health.
    pub(super) fn arm_ready(myself: &ActorRef<SupervisorMsg>, replica: u32, slot: &mut Slot) {
        slot.token += 1;
        let min_ready = slot.spec.min_ready;
        if min_ready.is_zero() {
            slot.ready = true;
            slot.ready_since = Some(Instant::now());
        } else {
            let token = slot.token;
            myself.send_after(min_ready, move || SupervisorMsg::ReadyDue {
                replica,
                token,
            });
        }
    }

    pub(super) fn ready_due(&mut self, replica: u32, token: u64) {
        if let Some(slot) = self.slots.get_mut(&replica) {
            if slot.token == token && slot.state == SlotState::Running && slot.healthy {
                slot.ready = true;
                slot.ready_since = Some(Instant::now());
            }
        }
    }

    pub(super) async fn exited(
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
        // Borrowed, not cloned: the context is shared with every container actor of the
        // service, and its count written from both cores (see `slot_key`).
        let ctx = &self.ctx;
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

    pub(super) fn restart_replica(&mut self, replica: u32) -> Result<u64, CoreError> {
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
        let svc = slot.spec.clone();
        let seed = ctx.seed ^ (u64::from(replica) << 20);
        // An explicit restart is a new chance: the crash-loop window and give-up count
        // start over, as `systemctl restart` clears a unit's failure.
        slot.tracker = RestartTracker::new(svc.kind, svc.restart, svc.on_panic, seed);
        slot.init_retry = InitRetry::new(svc.on_init_failure);
        let may_run = matches!(slot.state, SlotState::Running | SlotState::Unhealthy);
        let shown = if may_run {
            ReplicaState::Stopping
        } else {
            ReplicaState::Starting
        };
        ctx.board.update(&ctx.service_name, replica, |r| {
            r.state = shown;
            r.backoff_ms = None;
        });
        Self::restart(&ctx, replica, slot, &mut self.restarts);
        let generation = slot.generation;
        // A service failed by this replica's give-up runs again once no replica is failed.
        let still_failed = self.slots.values().any(|s| s.state == SlotState::Failed);
        if self.phase == ServicePhase::Failed && !still_failed {
            self.phase = ServicePhase::Running;
            ctx.board
                .set_service(&ctx.service_name, ServicePhase::Running, None);
        }
        Ok(generation)
    }

    pub(super) fn adopt_failed(&mut self, replica: u32, generation: u64) {
        let ctx = self.ctx.clone();
        if let Some(slot) = self.slots.get_mut(&replica) {
            if slot.generation == generation && slot.state == SlotState::Booting {
                Self::restart(&ctx, replica, slot, &mut self.restarts);
            }
        }
    }

    pub(super) async fn start_failed(
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
        self.ctx.tell(EventKind::StartFailed {
            service: self.ctx.service_name.clone(),
            replica,
            error,
        });
        let decision = slot.tracker.decide(Cause::StartFailed, Instant::now());
        self.apply(myself, replica, decision, false, None).await;
    }

    pub(super) fn init_failed(
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
                ctx.tell(EventKind::ReplicaRestarting {
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

    pub(super) async fn health(
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
        if slot.keep_early_health(generation, healthy) {
            return;
        }
        if slot.generation != generation
            || !matches!(slot.state, SlotState::Running | SlotState::Unhealthy)
        {
            return;
        }
        slot.healthy = healthy;
        // Shown by the one who decides on it: a report this supervisor drops (of an
        // incarnation that ended) never shows on the row.
        ctx.board
            .update(&ctx.service_name, replica, |r| r.healthy = healthy);
        ctx.tell(EventKind::HealthChanged {
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
            Self::arm_ready(myself, replica, slot);
            return;
        }
        slot.ready = false;
        slot.token += 1;
        match slot.spec.health.as_ref().map(|h| h.on_unhealthy) {
            Some(OnUnhealthy::Isolate) => {
                slot.state = SlotState::Unhealthy;
                ctx.board.update(&ctx.service_name, replica, |r| {
                    r.state = ReplicaState::Isolated
                });
                ctx.tell(EventKind::Isolated {
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

    pub(super) fn restart_due(&mut self, replica: u32, token: u64) {
        let ctx = self.ctx.clone();
        if let Some(slot) = self.slots.get_mut(&replica) {
            if slot.token == token && slot.state == SlotState::Backoff {
                Self::restart(&ctx, replica, slot, &mut self.restarts);
            }
        }
    }

    /// Start the slot's next generation: the container actor's command goes to `commands`,
    /// sent when the message has been handled (`send_restarts`).
    pub(super) fn restart(
        ctx: &ServiceContext,
        replica: u32,
        slot: &mut Slot,
        commands: &mut Vec<(ActorRef<ContainerMsg>, ContainerMsg)>,
    ) {
        slot.generation = ctx
            .generations
            .issue(&ctx.service_name, replica, slot.generation + 1);
        slot.state = SlotState::Booting;
        slot.healthy = false;
        slot.ready = false;
        slot.token += 1;
        let restarts = slot.tracker.total();
        ctx.board
            .update(&ctx.service_name, replica, |r| r.restarts = restarts);
        // The command goes after the board and the events: the container actor may run at
        // once on another worker, and then never has the state it shows overwritten by
        // this older one, nor its `ReplicaStarted` told before the events of this decision.
        commands.push((
            slot.actor.clone(),
            ContainerMsg::Restart {
                generation: slot.generation,
                service: None,
            },
        ));
    }

    /// The replica will not be restarted: `failed`, its container kept (stopped, with its
    /// signal and grace, if it may still run) for its logs and last exit.
    pub(super) fn fail_slot(
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
        ctx.tell(EventKind::GaveUp {
            service: ctx.service_name.clone(),
            replica,
            reason,
        });
    }

    /// Have the container actor keep the replica's container, shown as `then` (and as
    /// `stopping` until then if it may still run and must be stopped first).
    pub(super) fn hold(
        ctx: &ServiceContext,
        replica: u32,
        slot: &Slot,
        running: bool,
        then: ReplicaState,
    ) {
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
    pub(super) async fn apply(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        replica: u32,
        decision: Decision,
        running: bool,
        mut announce: Option<EventKind>,
    ) {
        // Borrowed, not cloned (see `exited`).
        let ctx = &self.ctx;
        let Some(slot) = self.slots.get_mut(&replica) else {
            return;
        };
        slot.ready = false;
        if !matches!(decision, Decision::RestartNow) {
            if let Some(event) = announce.take() {
                ctx.tell(event);
            }
        }
        match decision {
            Decision::RestartNow => {
                let shown = if running {
                    ReplicaState::Stopping
                } else {
                    ReplicaState::Starting
                };
                ctx.board
                    .update(&ctx.service_name, replica, |r| r.state = shown);
                if let Some(event) = announce {
                    ctx.tell(event);
                }
                ctx.tell(EventKind::ReplicaRestarting {
                    service: ctx.service_name.clone(),
                    replica,
                    delay_ms: 0,
                    restarts: slot.tracker.total(),
                });
                // Last: see `restart`.
                Self::restart(ctx, replica, slot, &mut self.restarts);
            }
            Decision::RestartAfter(delay) => {
                slot.state = SlotState::Backoff;
                slot.token += 1;
                let token = slot.token;
                let delay_ms = delay.as_millis() as u64;
                let restarts = slot.tracker.total();
                Self::hold(ctx, replica, slot, running, ReplicaState::Backoff);
                ctx.board.update(&ctx.service_name, replica, |r| {
                    r.backoff_ms = Some(delay_ms);
                    r.restarts = restarts.saturating_sub(1);
                });
                ctx.tell(EventKind::BackOff {
                    service: ctx.service_name.clone(),
                    replica,
                    delay_ms,
                });
                ctx.tell(EventKind::ReplicaRestarting {
                    service: ctx.service_name.clone(),
                    replica,
                    delay_ms,
                    restarts,
                });
                myself.send_after(delay, move || SupervisorMsg::RestartDue { replica, token });
            }
            Decision::Complete => {
                slot.state = SlotState::Completed;
                Self::hold(ctx, replica, slot, running, ReplicaState::Completed);
                ctx.tell(EventKind::Completed {
                    service: ctx.service_name.clone(),
                    replica,
                });
            }
            Decision::Fail(reason) => Self::fail_slot(ctx, replica, slot, reason, running),
            Decision::GiveUp(reason) => {
                Self::fail_slot(ctx, replica, slot, reason.clone(), running);
                let why = format!("replica {replica} {reason}");
                ctx.board
                    .set_service(&ctx.service_name, ServicePhase::Failed, Some(why.clone()));
                self.phase = ServicePhase::Failed;
                ctx.tell(EventKind::ServiceFailed {
                    service: ctx.service_name.clone(),
                    reason: why,
                });
            }
            Decision::Isolate => {
                slot.state = SlotState::Isolated;
                Self::hold(ctx, replica, slot, running, ReplicaState::Isolated);
                ctx.tell(EventKind::Isolated {
                    service: ctx.service_name.clone(),
                    replica,
                    reason: "exited unexpectedly; kept for debugging".into(),
                });
            }
            Decision::ShutdownService => {
                let reason = format!("replica {replica} exited unexpectedly; on_panic is shutdown");
                ctx.tell(EventKind::ServiceShutdown {
                    service: ctx.service_name.clone(),
                    reason: reason.clone(),
                });
                self.stop_all(ServicePhase::Shutdown, Some(reason)).await;
            }
        }
    }
}
