//! `DeploymentActor`: one per deployment. Starts services in dependency order, aggregates
//! their health from supervisor messages, answers stabilization waits the moment the
//! deployment becomes stable (or at their deadline), and shuts services down in reverse
//! dependency order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use herdsman_runtime::{Runtime, Survivor};
use herdsman_spec::{Dependency, DependencyCondition, Deployment};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio_util::task::AbortOnDropHandle;

use crate::apply::ApplyPlan;
use crate::board::{ServicePhase, StatusBoard};
use crate::event::{EventBus, EventKind};
use crate::init_runs::InitRuns;
use crate::revision::{Revisions, RolloutTrack};
use crate::service_supervisor::SupervisorMsg;
use crate::service_supervisor::{HeldReports, RolloutReport};
use crate::stabilization::{ServiceCounts, Stabilization};
use crate::CoreError;

mod rollouts;
mod shutdown;
mod stability;
mod supervisors;
mod survivors;

pub(crate) use survivors::discard_one;

/// Messages of the deployment actor.
pub(crate) enum DeploymentMsg {
    // Commands.
    Scale {
        service: String,
        replicas: u32,
        reply: RpcReplyPort<Result<(), CoreError>>,
    },
    Shutdown(RpcReplyPort<()>),
    /// Restart one replica (see `SupervisorMsg::RestartReplica`); the supervisor replies.
    RestartReplica {
        service: String,
        replica: u32,
        reply: RpcReplyPort<Result<u64, CoreError>>,
    },
    /// Roll the running deployment to a changed spec (validated already).
    Apply {
        spec: Box<Deployment>,
        dry_run: bool,
        reply: RpcReplyPort<Result<ApplyPlan, CoreError>>,
    },
    /// Roll back to the spec before the current one.
    Undo(RpcReplyPort<Result<ApplyPlan, CoreError>>),
    /// Set a service back to its spec's replica count.
    StartService {
        service: String,
        reply: RpcReplyPort<Result<u32, CoreError>>,
    },
    /// Fault injection: panic a replica's container actor, or (`None`) the service's
    /// supervisor.
    InjectPanic {
        service: String,
        replica: Option<u32>,
    },
    // Reports from supervisors.
    /// A supervisor's counts; `from` tells a current supervisor's report from a late one
    /// of a supervisor that has failed meanwhile.
    ServiceHealth {
        service: Arc<str>,
        from: ActorId,
        counts: ServiceCounts,
        /// The last of this actor's requests the supervisor had handled.
        acked: u64,
        /// The reports it had held back by then (see `HeldReports`).
        held: u64,
    },
    /// A supervisor's rollout progress or outcome.
    Rollout {
        service: Arc<str>,
        from: ActorId,
        revision: u64,
        report: RolloutReport,
    },
    /// The survivors of an earlier run that `service` does not adopt are gone: it may
    /// start (it would boot the indexes they held).
    SurvivorsGone {
        service: Arc<str>,
    },
    // Timer ticks.
    WaiterDeadline(u64),
    DependencyDeadline {
        service: Arc<str>,
        dependency: String,
    },
    // Queries.
    WaitStable {
        timeout: Duration,
        reply: RpcReplyPort<Stabilization>,
    },
}

// Local only: never sent to another node, so it is not serializable.
crate::local_message!(DeploymentMsg);

pub(crate) struct DeploymentArgs {
    pub(crate) spec: Arc<Deployment>,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) board: StatusBoard,
    pub(crate) events: EventBus,
    pub(crate) seed: u64,
    pub(crate) log_tail_lines: usize,
    pub(crate) init_runs: InitRuns,
    pub(crate) generations: crate::generations::Generations,
    /// When each probe of the deployment checks next.
    pub(crate) probe_clock: crate::probe_clock::ProbeClock,
    /// Adopt what an earlier run left running (else stop it).
    pub(crate) adopt: bool,
}

struct ServiceEntry {
    supervisor: Option<ActorRef<SupervisorMsg>>,
    /// The replica count asked for last (spec, scale, apply): what a replacement
    /// supervisor starts with. Not `counts.desired`, which a scale-down lowers only with
    /// the supervisor's next report; a supervisor that fails before it handles the scale
    /// never sends that report, and its replacement would run the old count.
    desired: u32,
    counts: ServiceCounts,
    /// Failed before it could start (dependency timeout) or its supervisor failed.
    failed: bool,
    /// When its supervisor was last replaced, for the restart intensity limit.
    respawns: Vec<tokio::time::Instant>,
    /// This actor's requests to the supervisor that change its counts without a word
    /// here (an operator's restart), numbered, and the last one its reports say it has
    /// handled: while one is unanswered, the counts in hand are older than the request.
    asked: u64,
    acked: u64,
    /// The current supervisor's count of held-back reports, and the count its last report
    /// covers: while they differ, the counts in hand are older than its knowledge.
    held: HeldReports,
    covered_held: u64,
}

pub(crate) struct DeploymentState {
    args: DeploymentArgs,
    services: BTreeMap<Arc<str>, ServiceEntry>,
    /// Services in start order.
    order: Vec<Arc<str>>,
    waiters: HashMap<u64, RpcReplyPort<Stabilization>>,
    next_waiter: u64,
    /// When the current stretch of stability began.
    stable_after: Option<Duration>,
    was_stable: bool,
    stopping: bool,
    /// Stops of containers a failed supervisor left behind, run off this actor's handler
    /// (a minute of grace periods must not block stabilization); shutdown waits for them.
    /// Aborted if this actor is killed: a tree started anew adopts what still runs.
    orphan_stops: Vec<AbortOnDropHandle<()>>,
    /// Services that wait for an earlier run's unwanted survivors to be stopped before
    /// they start (those survivors hold replica indexes the services will boot).
    held: std::collections::HashSet<Arc<str>>,
    /// Per adopting service, the survivors of an earlier run its supervisor stops.
    discards: HashMap<Arc<str>, Vec<Survivor>>,
    /// Survivors of an earlier run each service adopts when its supervisor first starts.
    survivors: HashMap<Arc<str>, Vec<Survivor>>,
    /// Per service, the generation each replica index resumes at after survivors.
    resume_at: HashMap<Arc<str>, HashMap<u32, u64>>,
    revisions: Revisions,
    /// The rollout in progress, or the last one.
    rollout: Option<RolloutTrack>,
}

pub(crate) struct DeploymentActor;

impl Actor for DeploymentActor {
    type Msg = DeploymentMsg;
    type State = DeploymentState;
    type Arguments = DeploymentArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<DeploymentMsg>,
        args: DeploymentArgs,
    ) -> Result<DeploymentState, ActorProcessingErr> {
        let order: Vec<Arc<str>> = args.spec.start_order().into_iter().map(Arc::from).collect();
        let services = args
            .spec
            .services
            .iter()
            .map(|s| {
                let counts = ServiceCounts {
                    desired: s.initial_replicas(),
                    viable: true,
                    ..ServiceCounts::default()
                };
                (
                    Arc::from(s.name.as_str()),
                    ServiceEntry {
                        supervisor: None,
                        desired: counts.desired,
                        counts,
                        failed: false,
                        respawns: Vec::new(),
                        asked: 0,
                        acked: 0,
                        held: HeldReports::default(),
                        covered_held: 0,
                    },
                )
            })
            .collect();
        Ok(DeploymentState {
            args,
            services,
            order,
            waiters: HashMap::new(),
            next_waiter: 0,
            stable_after: None,
            was_stable: false,
            stopping: false,
            orphan_stops: Vec::new(),
            held: std::collections::HashSet::new(),
            discards: HashMap::new(),
            survivors: HashMap::new(),
            resume_at: HashMap::new(),
            revisions: Revisions::new(),
            rollout: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<DeploymentMsg>,
        state: &mut DeploymentState,
    ) -> Result<(), ActorProcessingErr> {
        for svc in state.args.spec.services.clone().iter() {
            arm_dependency_deadlines(&myself, svc);
        }
        state.take_over_survivors(&myself).await;
        state.start_ready_services(&myself).await?;
        state.check_stable();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<DeploymentMsg>,
        msg: DeploymentMsg,
        state: &mut DeploymentState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DeploymentMsg::Scale {
                service,
                replicas,
                reply,
            } => {
                let _ = reply.send(state.scale(&service, replicas));
            }
            DeploymentMsg::RestartReplica {
                service,
                replica,
                reply,
            } => match state.services.get(service.as_str()) {
                None => {
                    let _ = reply.send(Err(CoreError::UnknownService(service)));
                }
                Some(e) => match &e.supervisor {
                    Some(sup) => {
                        // Not ready until the supervisor's counts include the restart:
                        // those in hand may count the replica it is about to replace.
                        let seq = e.asked + 1;
                        let _ = sup.cast(SupervisorMsg::RestartReplica {
                            replica,
                            reply,
                            seq,
                        });
                        if let Some(e) = state.services.get_mut(service.as_str()) {
                            e.asked = seq;
                        }
                    }
                    None => {
                        let _ = reply.send(Err(CoreError::UnknownReplica { service, replica }));
                    }
                },
            },
            DeploymentMsg::Apply {
                spec,
                dry_run,
                reply,
            } => {
                let r = state.apply(&myself, *spec, dry_run, None).await;
                let _ = reply.send(r);
            }
            DeploymentMsg::Undo(reply) => {
                let r = match state.revisions.previous() {
                    Some(previous) => state.apply(&myself, (*previous).clone(), false, None).await,
                    None => Err(CoreError::NoPreviousRevision),
                };
                let _ = reply.send(r);
            }
            DeploymentMsg::Rollout {
                service,
                from,
                revision,
                report,
            } => {
                state
                    .rollout_report(&myself, service, from, revision, report)
                    .await
            }
            DeploymentMsg::StartService { service, reply } => {
                let replicas = state
                    .args
                    .spec
                    .service(&service)
                    .map(|s| s.initial_replicas());
                let r = match replicas {
                    Some(n) => state.scale(&service, n).map(|()| n),
                    None => Err(CoreError::UnknownService(service)),
                };
                let _ = reply.send(r);
            }
            DeploymentMsg::Shutdown(reply) => {
                state.shutdown().await;
                let _ = reply.send(());
                myself.stop(None);
            }
            DeploymentMsg::InjectPanic { service, replica } => {
                if let Some(sup) = state
                    .services
                    .get(service.as_str())
                    .and_then(|e| e.supervisor.as_ref())
                {
                    let _ = sup.cast(SupervisorMsg::InjectPanic { replica });
                }
            }
            DeploymentMsg::ServiceHealth {
                service,
                from,
                counts,
                acked,
                held,
            } => {
                if let Some(e) = state.services.get_mut(&service) {
                    // Only the current supervisor speaks for the service: a failed one's
                    // last report must not make a failed service count as ready again.
                    let current = e.supervisor.as_ref().is_some_and(|s| s.get_id() == from);
                    if current && !e.failed {
                        e.counts = counts;
                        e.acked = e.acked.max(acked);
                        e.covered_held = e.covered_held.max(held);
                    }
                }
                if !state.stopping {
                    state.start_ready_services(&myself).await?;
                }
            }
            DeploymentMsg::WaitStable { timeout, reply } => {
                if let Some(after) = state.stable_after.filter(|_| state.was_stable) {
                    let _ = reply.send(Stabilization::Ready { after });
                } else {
                    let id = state.next_waiter;
                    state.next_waiter += 1;
                    state.waiters.insert(id, reply);
                    myself.send_after(timeout, move || DeploymentMsg::WaiterDeadline(id));
                }
            }
            DeploymentMsg::SurvivorsGone { service } => {
                state.held.remove(&service);
                if !state.stopping {
                    state.start_ready_services(&myself).await?;
                }
            }
            DeploymentMsg::WaiterDeadline(id) => {
                if let Some(reply) = state.waiters.remove(&id) {
                    let failing = state.failing_services();
                    state.args.events.emit(EventKind::StabilizationTimedOut {
                        failing: failing.clone(),
                    });
                    let _ = reply.send(Stabilization::TimedOut { failing });
                }
            }
            DeploymentMsg::DependencyDeadline {
                service,
                dependency,
            } => state.dependency_deadline(&service, &dependency),
        }
        state.check_stable();
        // What supervisors told before their reports (see `EventBus`), if this handling
        // sent nothing that took it along: last, so a subscriber woken for them finds
        // this handling's own events in too and reads them in the same wake.
        state.args.events.flush();
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<DeploymentMsg>,
        state: &mut DeploymentState,
    ) -> Result<(), ActorProcessingErr> {
        state.args.events.flush();
        Ok(())
    }

    /// Overrides ractor's default, which would stop the deployment when a supervisor ends.
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<DeploymentMsg>,
        evt: SupervisionEvent,
        state: &mut DeploymentState,
    ) -> Result<(), ActorProcessingErr> {
        // A supervisor that failed mid-handling may have left events told.
        state.args.events.flush();
        if let SupervisionEvent::ActorFailed(cell, err) = evt {
            let failed: Vec<Arc<str>> = state
                .services
                .iter()
                .filter(|(_, e)| {
                    e.supervisor
                        .as_ref()
                        .is_some_and(|s| s.get_id() == cell.get_id())
                })
                .map(|(n, _)| n.clone())
                .collect();
            for name in failed {
                state
                    .supervisor_failed(&myself, &name, err.to_string())
                    .await?;
            }
        }
        state.check_stable();
        Ok(())
    }
}

impl DeploymentState {
    fn dependency_met(&self, dep: &Dependency) -> bool {
        self.services
            .get(dep.service.as_str())
            .is_some_and(|e| match dep.condition {
                DependencyCondition::Started => e.counts.is_started(),
                DependencyCondition::Healthy => e.counts.is_ready(),
            } && e.supervisor.is_some())
    }

    /// Whether `dep`'s service has failed for good (its counts will never satisfy it).
    fn dependency_failed(&self, dep: &Dependency) -> bool {
        self.services
            .get(dep.service.as_str())
            .is_some_and(|e| e.failed || (!e.counts.viable && !self.dependency_met(dep)))
    }

    /// Start every service whose dependencies are met and that has not started yet.
    async fn start_ready_services(
        &mut self,
        myself: &ActorRef<DeploymentMsg>,
    ) -> Result<(), ActorProcessingErr> {
        // Called on every service health report: once every service has started (the
        // usual case), answer without scanning the spec by name.
        if self
            .services
            .values()
            .all(|e| e.supervisor.is_some() || e.failed)
        {
            return Ok(());
        }
        let spec = self.args.spec.clone();
        for name in self.order.clone() {
            let Some(svc) = spec.service(&name) else {
                continue;
            };
            let Some(entry) = self.services.get(&name) else {
                continue;
            };
            if entry.supervisor.is_some() || entry.failed {
                continue;
            }
            if self.held.contains(&name) {
                self.args.board.set_service(
                    &name,
                    ServicePhase::Waiting,
                    Some("waiting for the replicas an earlier run left to stop".into()),
                );
                continue;
            }
            // Replicas an earlier run left running are adopted at once: that run started
            // them once their dependencies were met, and waiting again would leave them
            // running unsupervised (an exit unseen, a crash not restarted).
            let adopting = self.survivors.get(&name).is_some_and(|s| !s.is_empty());
            // A dependency that failed for good will never be met: fail now rather than
            // wait out the dependency's timeout.
            if let Some(dep) = svc
                .depends
                .iter()
                .find(|d| !adopting && self.dependency_failed(d))
            {
                let reason = format!("dependency {} failed", dep.service);
                self.fail_service(&name, reason);
                continue;
            }
            let waiting: Vec<&Dependency> = svc
                .depends
                .iter()
                .filter(|d| !adopting && !self.dependency_met(d))
                .collect();
            if !waiting.is_empty() {
                let reason = waiting
                    .iter()
                    .map(|d| format!("{} ({:?})", d.service, d.condition).to_lowercase())
                    .collect::<Vec<_>>()
                    .join(", ");
                self.args.board.set_service(
                    &name,
                    ServicePhase::Waiting,
                    Some(format!("waiting for {reason}")),
                );
                continue;
            }
            self.spawn_supervisor(myself, &name, false).await?;
        }
        Ok(())
    }

    fn dependency_deadline(&mut self, service: &Arc<str>, dependency: &str) {
        let Some(entry) = self.services.get(service) else {
            return;
        };
        if entry.supervisor.is_some() || entry.failed || self.stopping {
            return;
        }
        let Some(dep) = self
            .args
            .spec
            .service(service)
            .and_then(|s| s.depends.iter().find(|d| d.service == dependency))
            .cloned()
        else {
            return;
        };
        if !self.dependency_met(&dep) {
            let reason = format!(
                "dependency {} not {} within {}",
                dep.service,
                format!("{:?}", dep.condition).to_lowercase(),
                herdsman_probe::humanize(dep.timeout)
            );
            self.fail_service(service, reason);
        }
    }

    fn fail_service(&mut self, service: &Arc<str>, reason: String) {
        if let Some(e) = self.services.get_mut(service) {
            e.failed = true;
            e.supervisor = None;
            e.counts.viable = false;
        }
        self.args
            .board
            .set_service(service, ServicePhase::Failed, Some(reason.clone()));
        self.args.events.emit(EventKind::ServiceFailed {
            service: service.clone(),
            reason,
        });
        self.rollout_part_ended(service);
        // Services waiting on this one fail now too, in start order (so a chain fails
        // along its length), rather than each waiting out its dependency timeout.
        let spec = self.args.spec.clone();
        for name in self.order.clone() {
            let waiting = self
                .services
                .get(&name)
                .is_some_and(|e| e.supervisor.is_none() && !e.failed);
            let needs_failed = spec
                .service(&name)
                .is_some_and(|s| s.depends.iter().any(|d| self.dependency_failed(d)));
            if waiting && needs_failed && !self.stopping {
                self.fail_service(&name, format!("dependency {service} failed"));
            }
        }
    }

    fn scale(&mut self, service: &str, replicas: u32) -> Result<(), CoreError> {
        if replicas > crate::MAX_REPLICAS {
            return Err(CoreError::InvalidScale {
                service: service.to_string(),
                replicas,
            });
        }
        let Some(entry) = self.services.get_mut(service) else {
            return Err(CoreError::UnknownService(service.to_string()));
        };
        // Scaling up makes the service not ready at once; scaling down waits for its
        // supervisor's next report, whose counts no longer include the replicas scaled away
        // (its last ones may count them ready, and they are stopping).
        if replicas > entry.counts.desired || entry.supervisor.is_none() {
            entry.counts.desired = replicas;
        }
        entry.desired = replicas;
        let name: Arc<str> = Arc::from(service);
        self.args.board.set_desired(&name, replicas);
        match &entry.supervisor {
            Some(sup) => {
                let _ = sup.cast(SupervisorMsg::Scale { replicas });
            }
            // A failed service's replicas that are already gone are scaled away here;
            // one still stopping goes when its stop is done (`stop_orphans`).
            None => self.args.board.forget_idle_from(&name, replicas),
        }
        Ok(())
    }
}

/// Fail `svc` if a dependency is not met within its timeout.
fn arm_dependency_deadlines(myself: &ActorRef<DeploymentMsg>, svc: &herdsman_spec::Service) {
    let name: Arc<str> = Arc::from(svc.name.as_str());
    for dep in &svc.depends {
        let (service, dependency) = (name.clone(), dep.service.clone());
        myself.send_after(dep.timeout, move || DeploymentMsg::DependencyDeadline {
            service,
            dependency,
        });
    }
}
