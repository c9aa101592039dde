//! Recovering what a failure left: the containers of a failed predecessor supervisor,
//! the survivors of an earlier run this service does not adopt, and a replica whose
//! container actor failed.

use std::collections::HashMap;

use herdsman_runtime::{ContainerId, Survivor};
use ractor::{ActorProcessingErr, ActorRef};
use tokio_util::task::AbortOnDropHandle;

use super::slot::SlotState;
use super::{SupervisorMsg, SupervisorState};
use crate::board::ReplicaState;
use crate::container_actor::Mode;

impl SupervisorState {
    /// After a predecessor failed: each replica it left keeps its container id as an
    /// orphan for the new actor of that index to stop and remove before booting the next
    /// generation; replicas beyond the desired count are stopped and removed here.
    pub(super) fn recover_orphans(&mut self) {
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
            // Shown stopping until it is gone, and waited for by a shutdown.
            ctx.board.update(&ctx.service_name, replica, |r| {
                r.state = ReplicaState::Stopping;
                r.healthy = false;
            });
            let (ctx, svc) = (ctx.clone(), self.target.clone());
            let task = tokio::spawn(async move {
                let _ = ctx
                    .runtime
                    .stop(&id, svc.stop_signal, svc.stop_grace_period)
                    .await;
                let _ = ctx.runtime.remove(&id).await;
                ctx.board.remove(&ctx.service_name, replica);
                let _ = ctx.supervisor.cast(SupervisorMsg::OrphanGone { replica });
            });
            self.orphan_stops
                .insert(replica, AbortOnDropHandle::new(task));
        }
    }

    /// Stop the survivors of an earlier run this service does not adopt, each off the
    /// actor's handler; its index is booted (`OrphanGone`) once it is gone, and a shutdown
    /// waits for it.
    pub(super) fn discard_survivors(&mut self) {
        let mut by_index: HashMap<u32, Vec<Survivor>> = HashMap::new();
        for s in std::mem::take(&mut self.discards) {
            by_index.entry(s.id.replica).or_default().push(s);
        }
        let how = (self.target.stop_signal, self.target.stop_grace_period);
        for (replica, stops) in by_index {
            let (ctx, desired) = (self.ctx.clone(), self.desired);
            let task = tokio::spawn(async move {
                let runtime = ctx.runtime.clone();
                futures::future::join_all(stops.iter().map(|s| {
                    crate::deployment_actor::discard_one(
                        &runtime,
                        &ctx.board,
                        s,
                        how,
                        replica >= desired,
                    )
                }))
                .await;
                let _ = ctx.supervisor.cast(SupervisorMsg::OrphanGone { replica });
            });
            self.orphan_stops
                .insert(replica, AbortOnDropHandle::new(task));
        }
    }

    /// A container actor failed (a bug, or injected): replace it so the replica is neither
    /// lost nor duplicated. A running container is adopted; one caught mid-boot is removed
    /// and booted again; a kept one is held again.
    pub(super) async fn respawn(
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
                    slot.generation = self.ctx.generations.issue(
                        &self.ctx.service_name,
                        replica,
                        slot.generation + 1,
                    );
                    slot.state = SlotState::Booting;
                    slot.healthy = false;
                    slot.ready = false;
                }
                Mode::Recreate { stale }
            }
        };
        let (generation, spec) = self
            .slots
            .get(&replica)
            .map_or((generation, self.target.clone()), |s| {
                (s.generation, s.spec.clone())
            });
        let actor = self
            .spawn_container(myself, replica, generation, mode, spec)
            .await?;
        if let Some(slot) = self.slots.get_mut(&replica) {
            slot.actor = actor;
        }
        Ok(())
    }
}
