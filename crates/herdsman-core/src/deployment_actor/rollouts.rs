//! Applying a changed spec to the running deployment: the plan carried out (services
//! added, scaled, rolled, removed), the rollout followed from the supervisors' reports,
//! and a failed rollout rolled back or paused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::AbortOnDropHandle;

use herdsman_spec::Deployment;
use ractor::{ActorId, ActorRef};

use super::{arm_dependency_deadlines, DeploymentMsg, DeploymentState, ServiceEntry};
use crate::apply::{self, ApplyPlan, Change};
use crate::board::{DeploymentStatus, RolloutPhase, ServiceRollout};
use crate::event::EventKind;
use crate::revision::{RolloutTrack, ServiceOutcome};
use crate::service_supervisor::{shutdown_budget, HeldReports, RolloutReport, SupervisorMsg};
use crate::stabilization::{FailingReplica, FailingService, ServiceCounts};
use crate::CoreError;

impl DeploymentState {
    /// Apply `new`: diff it against the running spec and carry out the plan (unless
    /// `dry_run`). `revert` carries the reason when this rolls back a failed rollout.
    pub(super) async fn apply(
        &mut self,
        myself: &ActorRef<DeploymentMsg>,
        new: Deployment,
        dry_run: bool,
        revert: Option<String>,
    ) -> Result<ApplyPlan, CoreError> {
        let old = self.args.spec.clone();
        if new.name != old.name {
            return Err(CoreError::WrongDeployment {
                running: old.name.clone(),
                applied: new.name,
            });
        }
        if self.stopping {
            return Err(CoreError::Stopped);
        }
        let plan = apply::diff(&old, &new, self.revisions.current());
        if dry_run || plan.is_noop() {
            return Ok(plan);
        }
        let new = Arc::new(new);
        if revert.is_some() {
            self.revisions.rolled_back(plan.revision);
        } else {
            self.revisions.advance(old.clone(), plan.revision);
        }
        // Services the superseded rollout was still rolling.
        let mut unfinished: Vec<Arc<str>> = Vec::new();
        if let Some(t) = self.rollout.as_mut().filter(|t| t.in_progress()) {
            t.phase = RolloutPhase::Superseded;
            unfinished = t
                .services
                .iter()
                .filter(|(_, s)| !s.done)
                .map(|(n, _)| n.clone())
                .collect();
        }
        self.args.spec = new.clone();
        self.order = new.start_order().into_iter().map(Arc::from).collect();
        let shown: Vec<(Arc<str>, u32)> = new
            .services
            .iter()
            .map(|s| (Arc::from(s.name.as_str()), s.initial_replicas()))
            .collect();
        self.args.board.set_services(&shown);
        let mut rolled = BTreeMap::new();
        for c in &plan.changes {
            let name: Arc<str> = Arc::from(c.service.as_str());
            match &c.change {
                Change::Unchanged => {}
                Change::Scale { to, .. } => {
                    let _ = self.scale(&name, *to);
                }
                Change::Roll { replicas, .. } => {
                    // A replica count the spec does not change is left as it is (an
                    // operator may have scaled the service meanwhile).
                    let rescaled = old
                        .service(&name)
                        .is_none_or(|o| o.initial_replicas() != *replicas);
                    if rescaled {
                        let _ = self.scale(&name, *replicas);
                    }
                    // A service not started yet simply starts with the new spec.
                    if let Some(r) = self.roll_service(&name, &new, plan.revision, Some(*replicas))
                    {
                        rolled.insert(name.clone(), r);
                    }
                }
                Change::Add { replicas } => {
                    let counts = ServiceCounts {
                        desired: *replicas,
                        viable: true,
                        ..ServiceCounts::default()
                    };
                    self.services.insert(
                        name.clone(),
                        ServiceEntry {
                            supervisor: None,
                            desired: *replicas,
                            counts,
                            failed: false,
                            respawns: Vec::new(),
                            asked: 0,
                            acked: 0,
                            held: HeldReports::default(),
                            covered_held: 0,
                        },
                    );
                    if let Some(svc) = new.service(&name) {
                        arm_dependency_deadlines(myself, svc);
                    }
                }
                Change::Remove => self.remove_service(&name, &old),
            }
        }
        // A service the superseded rollout was rolling that this plan leaves unchanged is
        // still being rolled by its supervisor (to this spec's version of it): it goes on
        // under this rollout, or it would go on untracked, its surge stand-ins with it.
        for name in unfinished {
            if rolled.contains_key(&name) {
                continue;
            }
            if let Some(r) = self.roll_service(&name, &new, plan.revision, None) {
                rolled.insert(name, r);
            }
        }
        let auto_revert = plan
            .rolled()
            .first()
            .and_then(|s| new.service(s))
            .is_none_or(|s| s.update.auto_revert);
        let services: Vec<String> = rolled.values().map(|s| s.service.clone()).collect();
        let mut track = RolloutTrack {
            revision: plan.revision,
            phase: if revert.is_some() {
                RolloutPhase::Reverting
            } else {
                RolloutPhase::Progressing
            },
            services: rolled,
            reason: revert.clone(),
            revert: revert.is_some(),
            previous: old,
            auto_revert,
        };
        self.args.events.emit(EventKind::RolloutStarted {
            revision: plan.revision,
            services,
            revert: revert.is_some(),
        });
        if track.services.is_empty() {
            track.phase = if revert.is_some() {
                RolloutPhase::Reverted
            } else {
                RolloutPhase::Complete
            };
            self.args.events.emit(EventKind::RolloutComplete {
                revision: plan.revision,
            });
        }
        self.args.board.set_rollout(Some(track.status()));
        self.rollout = Some(track);
        self.start_ready_services(myself)
            .await
            .map_err(|_| CoreError::Stopped)?;
        Ok(plan)
    }

    /// A service left the spec: its supervisor stops every replica (signal, grace) off
    /// this actor's handler; shutdown waits for it.
    pub(super) fn remove_service(&mut self, name: &Arc<str>, old: &Deployment) {
        let Some(entry) = self.services.remove(name) else {
            return;
        };
        let Some(sup) = entry.supervisor else {
            return;
        };
        let budget = old
            .service(name)
            .map(shutdown_budget)
            .unwrap_or(Duration::from_secs(15))
            * 2;
        let (board, name) = (self.args.board.clone(), name.clone());
        self.orphan_stops.retain(|t| !t.is_finished());
        self.orphan_stops
            .push(AbortOnDropHandle::new(tokio::spawn(async move {
                if let Err(e) = sup.call(SupervisorMsg::Shutdown, Some(budget)).await {
                    tracing::warn!(service = %name, error = %e, "removed service shutdown");
                }
                sup.stop_children_and_wait(None, Some(Duration::from_secs(5)))
                    .await;
                let _ = sup.stop_and_wait(None, Some(Duration::from_secs(5))).await;
                board.forget_removed(&name);
            })));
    }

    /// A replacement supervisor knows nothing of the rollout its failed predecessor was
    /// carrying out (or was about to be told of): tell it again, or the rollout would wait
    /// for its news forever. Its replicas are recreated from the spec in force, the
    /// rollout's target, so its part is done once they are ready.
    pub(super) fn resume_rollout(&self, name: &Arc<str>) {
        let Some(track) = self.rollout.as_ref().filter(|t| t.in_progress()) else {
            return;
        };
        if track.services.get(name).is_none_or(|s| s.done) {
            return;
        }
        let _ = self.roll_service(name, &self.args.spec, track.revision, None);
    }

    /// Tell `name`'s supervisor to roll to its spec in `new` under `revision`. The
    /// rollout's record of the service (`desired` replicas to update, else the count in
    /// force), if it has a supervisor to tell: one not started yet simply starts with
    /// the new spec.
    fn roll_service(
        &self,
        name: &Arc<str>,
        new: &Deployment,
        revision: u64,
        desired: Option<u32>,
    ) -> Option<ServiceRollout> {
        let entry = self.services.get(name)?;
        let svc = new.service(name)?;
        let sup = entry.supervisor.as_ref()?;
        let _ = sup.cast(SupervisorMsg::Roll {
            service: Arc::new(svc.clone()),
            revision,
        });
        Some(ServiceRollout {
            service: name.to_string(),
            updated: 0,
            desired: desired.unwrap_or(entry.desired),
            done: false,
        })
    }

    /// A service stopped for good (failed, its supervisor gone) has nothing left to roll:
    /// it runs the spec in force, the rollout's target, if it is started again. Its part
    /// is over, or the rollout would wait for news from nobody forever (as a supervisor
    /// stopped by its panic action says itself).
    pub(super) fn rollout_part_ended(&mut self, name: &Arc<str>) {
        let Some(track) = self.rollout.as_mut().filter(|t| t.in_progress()) else {
            return;
        };
        if track.services.get(name).is_none_or(|s| s.done) {
            return;
        }
        let revision = track.revision;
        let outcome = track.done(name);
        self.args.board.set_rollout(Some(track.status()));
        if let ServiceOutcome::Complete = outcome {
            self.args
                .events
                .emit(EventKind::RolloutComplete { revision });
        }
    }

    /// A supervisor's rollout news: progress, its part done, or failed (then roll back
    /// to the previous spec, or pause, per `auto_revert`).
    pub(super) async fn rollout_report(
        &mut self,
        myself: &ActorRef<DeploymentMsg>,
        service: Arc<str>,
        from: ActorId,
        revision: u64,
        report: RolloutReport,
    ) {
        let current = self
            .services
            .get(&service)
            .and_then(|e| e.supervisor.as_ref())
            .is_some_and(|s| s.get_id() == from);
        let Some(track) = self.rollout.as_mut() else {
            return;
        };
        if !current || track.revision != revision || !track.in_progress() {
            return;
        }
        let events = self.args.events.clone();
        let mut new_failing = Vec::new();
        let outcome = match report {
            RolloutReport::Progress { updated, desired } => {
                track.progress(&service, updated, desired);
                events.emit(EventKind::RolloutProgress {
                    revision,
                    service: service.clone(),
                    updated,
                    desired,
                });
                ServiceOutcome::Pending
            }
            RolloutReport::Done => track.done(&service),
            RolloutReport::Failed { reason, failing } => {
                new_failing = failing;
                track.failed(&service, reason)
            }
        };
        self.args.board.set_rollout(Some(track.status()));
        match outcome {
            ServiceOutcome::Pending => {}
            ServiceOutcome::Complete => events.emit(EventKind::RolloutComplete { revision }),
            ServiceOutcome::Failed { reason, revert_to } => {
                events.emit(EventKind::RolloutFailed {
                    revision,
                    reason: reason.clone(),
                    reverting: revert_to.is_some(),
                    failing: with_new_replicas(
                        self.failing_services(),
                        &self.args.board.snapshot(),
                        &service,
                        new_failing,
                    ),
                });
                if revert_to.is_none() {
                    // Paused: every other service stops rolling where it stands.
                    for name in self.rollout.iter().flat_map(|t| t.services.keys()) {
                        if let Some(sup) =
                            self.services.get(name).and_then(|e| e.supervisor.as_ref())
                        {
                            let _ = sup.cast(SupervisorMsg::PauseRollout { revision });
                        }
                    }
                }
                if let Some(previous) = revert_to {
                    let why = format!("revision {revision} failed ({reason}); rolled back");
                    if let Err(e) = self
                        .apply(myself, (*previous).clone(), false, Some(why))
                        .await
                    {
                        tracing::error!(error = %e, "cannot roll back a failed rollout");
                    }
                }
            }
        }
    }
}

/// The services not ready, with the failed rollout's new replicas added to its service
/// (which may count as ready: its old replicas still serve, and a surge replica is not
/// among the replicas stability counts).
fn with_new_replicas(
    mut failing: Vec<FailingService>,
    status: &DeploymentStatus,
    service: &str,
    new: Vec<FailingReplica>,
) -> Vec<FailingService> {
    if new.is_empty() {
        return failing;
    }
    match failing.iter_mut().find(|s| s.service == service) {
        Some(s) => {
            for r in new {
                if !s.replicas.iter().any(|x| x.replica == r.replica) {
                    s.replicas.push(r);
                }
            }
            s.replicas.sort_by_key(|r| r.replica);
        }
        None => {
            let counts = status.services.iter().find(|s| s.name == service);
            failing.push(FailingService {
                service: service.to_string(),
                desired: counts.map_or(0, |s| s.desired),
                running: counts.map_or(0, |s| s.running),
                healthy: counts.map_or(0, |s| s.healthy),
                reason: "its new replicas are not ready".to_string(),
                replicas: new,
            })
        }
    }
    failing
}
