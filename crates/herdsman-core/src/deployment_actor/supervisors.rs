//! The deployment's service supervisors: each spawned, replaced when it fails (within
//! a restart intensity limit), and the containers of one not replaced stopped.

use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::AbortOnDropHandle;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::{DeploymentMsg, DeploymentState};
use crate::board::ReplicaState;
use crate::service_supervisor::{HeldReports, ServiceSupervisor, SupervisorArgs};
use crate::stabilization::ServiceCounts;

/// A service supervisor that failed this often within `SUPERVISOR_PERIOD` is not
/// replaced again: the service is failed (OTP's restart intensity).
const SUPERVISOR_RESTARTS: usize = 3;
const SUPERVISOR_PERIOD: Duration = Duration::from_secs(60);

impl DeploymentState {
    /// Spawn `name`'s supervisor; with `recover`, in place of one that failed.
    pub(super) async fn spawn_supervisor(
        &mut self,
        myself: &ActorRef<DeploymentMsg>,
        name: &Arc<str>,
        recover: bool,
    ) -> Result<(), ActorProcessingErr> {
        let spec = self.args.spec.clone();
        let (Some(svc), Some(entry)) = (spec.service(name), self.services.get(name)) else {
            return Ok(());
        };
        // A fresh count for each supervisor: a failed one's held reports never come.
        let held = HeldReports::default();
        let args = SupervisorArgs {
            deployment: spec.clone(),
            service: Arc::new(svc.clone()),
            runtime: self.args.runtime.clone(),
            board: self.args.board.clone(),
            events: self.args.events.clone(),
            parent: myself.clone(),
            seed: self.args.seed ^ hash_name(name),
            init_runs: self.args.init_runs.clone(),
            generations: self.args.generations.clone(),
            probe_clock: self.args.probe_clock.clone(),
            desired: entry.desired,
            recover,
            survivors: self.survivors.remove(name).unwrap_or_default(),
            discards: self.discards.remove(name).unwrap_or_default(),
            resume_at: self.resume_at.remove(name).unwrap_or_default(),
            held: held.clone(),
        };
        let (sup, _) =
            Actor::spawn_linked(None, ServiceSupervisor, args, myself.get_cell()).await?;
        if let Some(e) = self.services.get_mut(name) {
            e.supervisor = Some(sup);
            // A request its failed predecessor never answered is not this one's to
            // answer: it reports its own counts from scratch.
            e.acked = e.asked;
            e.held = held;
            e.covered_held = 0;
            // Nor are the predecessor's last counts this one's: a failed supervisor's
            // report still on its way is dropped (it is not the current one), so its
            // previous report would otherwise stand for the service, and the deployment
            // could announce itself stable on replicas the failure left behind. Nothing
            // counts as running until this one reports.
            e.counts = ServiceCounts {
                desired: e.desired,
                viable: true,
                ..ServiceCounts::default()
            };
        }
        Ok(())
    }

    /// A supervisor failed: replace it, as an OTP supervisor would, unless it failed
    /// `SUPERVISOR_RESTARTS` times within `SUPERVISOR_PERIOD` already; then the service fails.
    pub(super) async fn supervisor_failed(
        &mut self,
        myself: &ActorRef<DeploymentMsg>,
        name: &Arc<str>,
        err: String,
    ) -> Result<(), ActorProcessingErr> {
        let now = tokio::time::Instant::now();
        let stopping = self.stopping;
        let Some(entry) = self.services.get_mut(name) else {
            return Ok(());
        };
        entry.supervisor = None;
        entry
            .respawns
            .retain(|t| now.saturating_duration_since(*t) < SUPERVISOR_PERIOD);
        if stopping || entry.respawns.len() >= SUPERVISOR_RESTARTS {
            self.fail_service(name, format!("service supervisor failed: {err}"));
            self.stop_orphans(name);
            return Ok(());
        }
        entry.respawns.push(now);
        tracing::error!(service = %name, error = %err, "service supervisor failed; replacing it");
        self.spawn_supervisor(myself, name, true).await?;
        self.resume_rollout(name);
        Ok(())
    }

    /// Stop and remove every container a failed, not replaced supervisor left unwatched,
    /// all at once and off this actor's handler (shutdown waits for it): one by one, or
    /// awaited here, a minute of grace periods would block stabilization and scaling.
    fn stop_orphans(&mut self, name: &Arc<str>) {
        let Some(svc) = self.args.spec.service(name).cloned() else {
            return;
        };
        let snapshot = self.args.board.snapshot();
        let orphans: Vec<herdsman_runtime::ContainerId> = snapshot
            .services
            .into_iter()
            .filter(|s| s.name == **name)
            .flat_map(|s| s.replicas)
            .filter_map(|r| r.container)
            .collect();
        for id in &orphans {
            self.args.board.update(name, id.replica, |r| {
                r.state = ReplicaState::Stopping;
                r.healthy = false;
            });
        }
        let (rt, board, name) = (
            self.args.runtime.clone(),
            self.args.board.clone(),
            name.clone(),
        );
        self.orphan_stops.retain(|t| !t.is_finished());
        self.orphan_stops
            .push(AbortOnDropHandle::new(tokio::spawn(async move {
                futures::future::join_all(orphans.iter().map(|id| async {
                    let _ = rt.stop(id, svc.stop_signal, svc.stop_grace_period).await;
                    // The count in force now: the service may have been scaled meanwhile.
                    if id.replica >= board.desired_of(&name).unwrap_or(0) {
                        // A rollout's surge stand-in (or a replica being scaled away): not one
                        // of the service's replicas, so not kept on the board as failed.
                        board.remove(&name, id.replica);
                    } else {
                        board.update(&name, id.replica, |r| {
                            r.state = ReplicaState::Failed;
                            r.pid = None;
                        });
                    }
                }))
                .await;
            })));
    }
}

fn hash_name(name: &str) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}
