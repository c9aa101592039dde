//! A service's rollouts: rolling (or recreating) its replicas to a new spec, gated on
//! the new replicas' readiness, with surge stand-ins, a progress deadline and the outcome
//! reported to the deployment actor. The moves come from the pure planner in
//! `crate::rollout`.

use std::collections::BTreeSet;
use std::sync::Arc;

use herdsman_probe::InitRetry;
use herdsman_spec::{Service, UpdateSpec};
use ractor::{ActorProcessingErr, ActorRef};
use tokio::time::Instant;

use super::slot::{Slot, SlotState};
use super::{SupervisorMsg, SupervisorState};
use crate::board::{ReplicaState, ServicePhase};
use crate::container_actor::ContainerMsg;
use crate::deployment_actor::DeploymentMsg;
use crate::restart::RestartTracker;
use crate::rollout::{self, Outcome, SlotView};
use crate::stabilization::{replica_reason, FailingReplica};

/// A rollout in progress in this service.
pub(super) struct ActiveRollout {
    pub(super) revision: u64,
    pub(super) update: UpdateSpec,
    /// Surge replicas of the new spec, above the desired count; removed at the end.
    pub(super) stand_ins: BTreeSet<u32>,
    /// Invalidates progress-deadline ticks of an earlier stretch of progress.
    pub(super) token: u64,
    /// Base replicas running the new spec and available, last reported.
    pub(super) updated: u32,
}

/// What a service tells the deployment actor about its rollout.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RolloutReport {
    Progress {
        updated: u32,
        desired: u32,
    },
    Done,
    /// With the replicas of the new spec that were not ready, and their output, taken
    /// before the stand-ins among them are removed.
    Failed {
        reason: String,
        failing: Vec<FailingReplica>,
    },
}

/// Lines of output kept per failing replica in a rollout failure.
const FAILED_LOG_TAIL: usize = 20;

impl SupervisorState {
    /// Begin rolling to `service`, superseding a rollout in progress (its stand-ins are
    /// kept and replaced like old replicas).
    pub(super) fn roll(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        service: Arc<Service>,
        revision: u64,
    ) {
        let stand_ins = self.rollout.take().map(|r| r.stand_ins).unwrap_or_default();
        let update = service.update;
        self.target = service;
        self.rollout = Some(ActiveRollout {
            revision,
            update,
            stand_ins,
            token: 0,
            updated: 0,
        });
        self.arm_progress_deadline(myself);
    }

    pub(super) fn arm_progress_deadline(&mut self, myself: &ActorRef<SupervisorMsg>) {
        if let Some(r) = &mut self.rollout {
            r.token += 1;
            let (revision, token) = (r.revision, r.token);
            myself.send_after(r.update.progress_deadline, move || {
                SupervisorMsg::RolloutTick {
                    revision,
                    token,
                    deadline: true,
                }
            });
        }
    }

    pub(super) fn rollout_tick(&mut self, revision: u64, token: u64, deadline: bool) {
        let Some(r) = &self.rollout else { return };
        if deadline && r.revision == revision && r.token == token {
            let reason = format!(
                "no new replica became ready within the progress deadline of {}",
                herdsman_probe::humanize(r.update.progress_deadline)
            );
            let failing = self.failing_new_replicas();
            self.end_rollout(Some(RolloutReport::Failed { reason, failing }));
        }
        // A `min_ready` wake-up needs nothing here: the rollout steps after every message.
    }

    /// Take the rollout's next moves, if a rollout is in progress. True when it changed
    /// any slot.
    pub(super) async fn step_rollout(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
    ) -> Result<bool, ActorProcessingErr> {
        if !matches!(self.phase, ServicePhase::Running | ServicePhase::Failed) {
            // Stopped for good (its panic action, or shutdown): nothing runs that could be
            // replaced, as in a service scaled to 0, and it runs the target if started
            // again. Said, so the deployment's rollout does not wait for it forever.
            if self.rollout.is_some() {
                self.end_rollout(Some(RolloutReport::Done));
            }
            return Ok(false);
        }
        let Some(r) = &self.rollout else {
            return Ok(false);
        };
        let now = Instant::now();
        let min_ready = r.update.min_ready;
        let mut wake: Option<Instant> = None;
        // Slots share their spec's `Arc` (a handful of distinct specs over any number of
        // slots): compare each distinct spec with the target once, not once per slot per
        // message, which made a rollout quadratic in the replica count.
        let mut current: Vec<(usize, bool)> = Vec::new();
        for slot in self.slots.values() {
            let ptr = Arc::as_ptr(&slot.spec) as usize;
            if !current.iter().any(|(p, _)| *p == ptr) {
                current.push((ptr, rollout::same_but_scale(&slot.spec, &self.target)));
            }
        }
        let is_current = |spec: &Arc<Service>| {
            let ptr = Arc::as_ptr(spec) as usize;
            current.iter().any(|&(p, same)| p == ptr && same)
        };
        let view = |(&index, slot): (&u32, &Slot)| {
            let ready_at = slot.ready_since.map(|t| t + min_ready);
            let available = slot.ready && ready_at.is_some_and(|t| t <= now);
            SlotView {
                index,
                current: is_current(&slot.spec),
                available,
                troubled: matches!(slot.state, SlotState::Backoff | SlotState::Failed),
            }
        };
        for slot in self.slots.values() {
            if let Some(t) = slot.ready_since.map(|t| t + min_ready) {
                if slot.ready && t > now {
                    wake = Some(wake.map_or(t, |w: Instant| w.min(t)));
                }
            }
        }
        let base: Vec<SlotView> = self.slots.range(..self.desired).map(view).collect();
        let stand_ins: Vec<SlotView> = self
            .slots
            .iter()
            .filter(|(i, _)| r.stand_ins.contains(i))
            .map(view)
            .collect();
        // Above every index in use: slots, replicas scaled away that are still stopping,
        // and a failed predecessor's replicas being stopped (a stand-in there would be a
        // second live incarnation of the index, and forget the index on the board while
        // the old container still runs).
        let next_free = self
            .slots
            .keys()
            .chain(self.retiring.keys())
            .chain(self.orphan_stops.keys())
            .map(|i| i + 1)
            .max()
            .unwrap_or(0)
            .max(self.desired);
        let plan = rollout::plan(&r.update, self.desired, &base, &stand_ins, next_free);
        let (revision, progressed) = (r.revision, plan.updated > r.updated);
        if progressed {
            if let Some(r) = &mut self.rollout {
                r.updated = plan.updated;
            }
            self.arm_progress_deadline(myself);
            let _ = self.parent.cast(DeploymentMsg::Rollout {
                service: self.ctx.service_name.clone(),
                from: self.ctx.supervisor.get_id(),
                revision,
                report: RolloutReport::Progress {
                    updated: plan.updated,
                    desired: self.desired,
                },
            });
        }
        match plan.outcome {
            Outcome::Done => self.end_rollout(Some(RolloutReport::Done)),
            Outcome::Failed(reason) => {
                let failing = self.failing_new_replicas();
                self.end_rollout(Some(RolloutReport::Failed { reason, failing }))
            }
            Outcome::Continue => {
                let changed = !plan.add_stand_ins.is_empty() || !plan.replace.is_empty();
                for index in plan.add_stand_ins {
                    self.add_slot(myself, index).await?;
                    if let Some(r) = &mut self.rollout {
                        r.stand_ins.insert(index);
                    }
                }
                for index in plan.replace {
                    self.replace(index);
                }
                if let Some(at) = wake {
                    let token = self.rollout.as_ref().map_or(0, |r| r.token);
                    myself.send_after(at.saturating_duration_since(now), move || {
                        SupervisorMsg::RolloutTick {
                            revision,
                            token,
                            deadline: false,
                        }
                    });
                }
                return Ok(changed);
            }
        }
        Ok(true)
    }

    /// Replace one replica with the rollout's target spec: a new incarnation with a fresh
    /// restart count, the old one stopped with its own signal and grace first.
    pub(super) fn replace(&mut self, replica: u32) {
        let ctx = self.ctx.clone();
        let target = self.target.clone();
        let Some(slot) = self.slots.get_mut(&replica) else {
            return;
        };
        let seed = ctx.seed ^ (u64::from(replica) << 20);
        let may_run = matches!(slot.state, SlotState::Running | SlotState::Unhealthy);
        slot.tracker = RestartTracker::new(target.kind, target.restart, target.on_panic, seed);
        slot.init_retry = InitRetry::new(target.on_init_failure);
        slot.spec = target.clone();
        slot.generation = ctx
            .generations
            .issue(&ctx.service_name, replica, slot.generation + 1);
        slot.state = SlotState::Booting;
        slot.healthy = false;
        slot.ready = false;
        slot.ready_since = None;
        slot.token += 1;
        let _ = slot.actor.cast(ContainerMsg::Restart {
            generation: slot.generation,
            service: Some(target),
        });
        let shown = if may_run {
            ReplicaState::Stopping
        } else {
            ReplicaState::Starting
        };
        ctx.board.update(&ctx.service_name, replica, |r| {
            r.state = shown;
            r.backoff_ms = None;
        });
    }

    /// The replicas running (or starting) the rollout's target spec that are not ready,
    /// each with why and the tail of its output.
    fn failing_new_replicas(&self) -> Vec<FailingReplica> {
        let ctx = &self.ctx;
        self.slots
            .iter()
            .filter(|(_, slot)| !slot.ready && rollout::same_but_scale(&slot.spec, &self.target))
            .filter_map(|(index, _)| ctx.board.replica(&ctx.service_name, *index))
            .map(|r| FailingReplica {
                replica: r.replica,
                state: r.state,
                reason: replica_reason(&r),
                log_tail: r
                    .container
                    .as_ref()
                    .map(|c| ctx.runtime.logs(c, FAILED_LOG_TAIL))
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// The rollout is over: its stand-ins go (each stopped with its signal and grace) and
    /// the deployment actor hears the outcome, if there is one to tell.
    pub(super) fn end_rollout(&mut self, report: Option<RolloutReport>) {
        let Some(r) = self.rollout.take() else { return };
        for index in r.stand_ins {
            if let Some(slot) = self.slots.remove(&index) {
                let _ = slot.actor.cast(ContainerMsg::Stop {
                    reply: None,
                    forget: true,
                });
                self.resume_generation
                    .insert(index, slot.generation.saturating_add(1));
                self.retiring.insert(index, slot.actor);
            }
        }
        self.recount();
        // The counts without the stand-ins go first: from the same sender, they reach the
        // deployment before the rollout's end, which would otherwise be weighed against
        // counts that still include a stand-in.
        self.report();
        if let Some(report) = report {
            let _ = self.parent.cast(DeploymentMsg::Rollout {
                service: self.ctx.service_name.clone(),
                from: self.ctx.supervisor.get_id(),
                revision: r.revision,
                report,
            });
        }
    }
}
