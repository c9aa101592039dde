//! Shutting the deployment down: services stopped in reverse start order, then a sweep
//! of anything left running.

use std::time::Duration;

use super::DeploymentState;
use crate::board::{ReplicaState, ServicePhase};
use crate::event::EventKind;
use crate::service_supervisor::{shutdown_budget, SupervisorMsg};
use crate::stabilization::Stabilization;

impl DeploymentState {
    /// Stop services in reverse start order, each replica with its stop signal and grace.
    pub(super) async fn shutdown(&mut self) {
        self.stopping = true;
        // Seconds of grace periods: supervisors send their own events meanwhile.
        let events = self.args.events.clone();
        let _relay = events.close_relay();
        for name in self.order.clone().iter().rev() {
            let Some(sup) = self
                .services
                .get_mut(name)
                .and_then(|e| e.supervisor.take())
            else {
                self.args
                    .board
                    .set_service(name, ServicePhase::Stopped, None);
                continue;
            };
            // The supervisor may be inside a long handler of its own (a panic action
            // `shutdown` stopping every replica) before it takes this request.
            let budget = self
                .args
                .spec
                .service(name)
                .map(shutdown_budget)
                .unwrap_or(Duration::from_secs(15))
                * 2;
            if let Err(e) = sup.call(SupervisorMsg::Shutdown, Some(budget)).await {
                tracing::warn!(service = %name, error = %e, "service shutdown");
            }
            // Its replicas are stopped; stop the actors too, children first.
            sup.stop_children_and_wait(None, Some(Duration::from_secs(5)))
                .await;
            let _ = sup.stop_and_wait(None, Some(Duration::from_secs(5))).await;
        }
        for task in std::mem::take(&mut self.orphan_stops) {
            let _ = task.await;
        }
        self.sweep().await;
        self.args.board.set_stable(false);
        self.args.events.emit(EventKind::DeploymentStopped);
        let failing = self.failing_services();
        for (_, reply) in self.waiters.drain() {
            let _ = reply.send(Stabilization::TimedOut {
                failing: failing.clone(),
            });
        }
    }

    /// The last line of shutdown's totality: any replica whose container an actor did not
    /// report stopped (its actor was killed mid-stop, or a supervisor never answered) is
    /// stopped here with its signal and grace. Normally there is none.
    async fn sweep(&self) {
        let spec = &self.args.spec;
        let left: Vec<(herdsman_runtime::ContainerId, &herdsman_spec::Service)> = self
            .args
            .board
            .snapshot()
            .services
            .into_iter()
            .flat_map(|s| s.replicas)
            .filter(|r| r.state != ReplicaState::Stopped)
            .filter_map(|r| {
                let id = r.container?;
                let svc = spec.service(&id.service)?;
                Some((id, svc))
            })
            .collect();
        let (rt, board) = (&self.args.runtime, &self.args.board);
        futures::future::join_all(left.iter().map(|(id, svc)| async move {
            let _ = rt.stop(id, svc.stop_signal, svc.stop_grace_period).await;
            let _ = rt.remove(id).await;
            board.update(&id.service, id.replica, |r| {
                r.state = ReplicaState::Stopped;
                r.pid = None;
                r.healthy = false;
            });
        }))
        .await;
        // Init steps of actors that died without ending them (a supervisor failed mid-
        // shutdown) end here too.
        self.args.init_runs.end_all().await;
    }
}
