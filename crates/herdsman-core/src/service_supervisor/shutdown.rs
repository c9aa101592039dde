//! Stopping a service for good: every replica stopped with its signal and grace, and
//! how long that may take.

use std::sync::atomic::Ordering;
use std::time::Duration;

use herdsman_spec::Service;

use super::slot::SlotState;
use super::{ServiceContext, SupervisorState};
use crate::board::{ReplicaState, ServicePhase};
use crate::container_actor::{stop_budget, ContainerMsg};

impl SupervisorState {
    /// Stop every replica, wait for them, and leave the service in `phase`. Total: when
    /// this returns, no container of the service runs, whatever was in flight.
    pub(super) async fn stop_all(&mut self, phase: ServicePhase, reason: Option<String>) {
        self.phase = phase;
        // Not viable from this moment, not only once every replica is gone: the deployment
        // must not read the service as ready while its replicas stop.
        self.recount();
        self.report();
        self.ctx
            .board
            .set_service(&self.ctx.service_name, phase, reason.clone());
        // No container actor boots anything from now on, so each has at most the stop in
        // flight (a restart's, a held replica's) and then its own to do: two stop budgets.
        self.ctx.stopping.store(true, Ordering::Release);
        let grace = self
            .slots
            .values()
            .map(|s| s.spec.stop_grace_period)
            .fold(self.target.stop_grace_period, Duration::max);
        let budget = stop_budget(grace) * 2;
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
        // An actor that does not answer (it failed, or its runtime overran a stop) may
        // have left its container running: it is stopped from here, with its signal and
        // grace, as soon as the call fails, not after every other replica's stop. Its
        // exit reports to nobody now, so the board shows it stopping meanwhile.
        let (ctx, svc) = (self.ctx.clone(), self.target.clone());
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
            let (ctx, svc) = (ctx.clone(), svc.clone());
            async move {
                match call.await {
                    Ok(ractor::rpc::CallResult::Success(())) => {}
                    other => {
                        tracing::warn!(service = %ctx.service_name, replica, result = ?other.map(|_| ()), "replica stop unanswered; stopping its container directly");
                        stop_leftover(&ctx, &svc, replica).await;
                    }
                }
            }
        });
        let orphans =
            futures::future::join_all(std::mem::take(&mut self.orphan_stops).into_values());
        futures::future::join3(futures::future::join_all(calls), retiring, orphans).await;
        self.ctx
            .board
            .set_service(&self.ctx.service_name, phase, reason);
    }
}

/// Stop and remove the container the board shows for `replica`, whose actor did not
/// answer its stop, and show it stopping, then stopped.
async fn stop_leftover(ctx: &ServiceContext, svc: &Service, replica: u32) {
    let Some(id) = ctx
        .board
        .replica(&ctx.service_name, replica)
        .and_then(|r| r.container)
    else {
        return;
    };
    ctx.board.update(&ctx.service_name, replica, |r| {
        r.state = ReplicaState::Stopping;
        r.healthy = false;
    });
    let _ = ctx
        .runtime
        .stop(&id, svc.stop_signal, svc.stop_grace_period)
        .await;
    let _ = ctx.runtime.remove(&id).await;
    ctx.board.update(&ctx.service_name, replica, |r| {
        r.state = ReplicaState::Stopped;
        r.pid = None;
        r.healthy = false;
    });
}

/// How long a whole service may take to stop.
pub(crate) fn shutdown_budget(service: &Service) -> Duration {
    stop_budget(service.stop_grace_period) + Duration::from_secs(1)
}
