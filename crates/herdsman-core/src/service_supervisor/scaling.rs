//! Scaling a service: replicas added up to the desired count, those above it stopped,
//! and an index scaled away booted again once its predecessor is gone.

use ractor::{ActorId, ActorProcessingErr, ActorRef};

use super::{SupervisorMsg, SupervisorState};
use crate::board::ServicePhase;
use crate::container_actor::{ContainerMsg, Mode};
use crate::event::EventKind;

impl SupervisorState {
    pub(super) async fn scale(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        replicas: u32,
    ) -> Result<(), ActorProcessingErr> {
        let from = self.desired;
        // A service with a replica that gave up still scales: its other replicas run, and
        // scaling down must stop them. Only a service stopped for good does not.
        let scalable = matches!(self.phase, ServicePhase::Running | ServicePhase::Failed);
        if replicas == from || (!scalable && replicas > from) {
            self.desired = replicas;
            self.ctx.board.set_desired(&self.ctx.service_name, replicas);
            return Ok(());
        }
        self.desired = replicas;
        self.ctx.board.set_desired(&self.ctx.service_name, replicas);
        self.ctx.tell(EventKind::Scaled {
            service: self.ctx.service_name.clone(),
            from,
            to: replicas,
        });
        if let Some(r) = &mut self.rollout {
            // Stand-ins the new count reaches are ordinary replicas now.
            r.stand_ins.retain(|i| *i >= replicas);
        }
        for replica in from..replicas {
            // An index whose predecessor is still stopping is added once it is gone.
            if !self.retiring.contains_key(&replica)
                && !self.slots.contains_key(&replica)
                && !self.orphan_stops.contains_key(&replica)
            {
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

    /// Slots above the desired count exist only as an active rollout's stand-ins: any
    /// other (a rollout that ended without removing its own, one superseded by a stop
    /// for good) is scaled away here, stopped with its signal and grace. True when any
    /// was.
    pub(super) fn trim_surplus(&mut self) -> bool {
        let stand_ins = self.rollout.as_ref().map(|r| &r.stand_ins);
        let surplus: Vec<u32> = self
            .slots
            .range(self.desired..)
            .map(|(i, _)| *i)
            .filter(|i| !stand_ins.is_some_and(|s| s.contains(i)))
            .collect();
        for index in &surplus {
            if let Some(slot) = self.slots.remove(index) {
                let _ = slot.actor.cast(ContainerMsg::Stop {
                    reply: None,
                    forget: true,
                });
                self.retiring.insert(*index, slot.actor);
            }
        }
        !surplus.is_empty()
    }

    /// The actor of a replica scaled away is gone: boot the index again if it has been
    /// scaled back up meanwhile. If it `failed` before it could stop its container (its stop
    /// request dies with it), a new actor adopts the container only to stop and remove it.
    /// True when a slot was added.
    pub(super) async fn retired(
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
                .spawn_container(
                    myself,
                    replica,
                    container.generation,
                    Mode::AdoptHeld,
                    self.target.clone(),
                )
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
}
