//! The embedding API: spawn a deployment, standalone or under a host's own actor, and a
//! handle to wait for stability, read status, subscribe to events, scale and shut down.

use std::sync::Arc;
use std::time::Duration;

use crate::event::Received;
use herdsman_runtime::Runtime;
use herdsman_spec::Deployment;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorRef};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::board::{DeploymentStatus, StatusBoard};
use crate::deployment_actor::{DeploymentActor, DeploymentArgs, DeploymentMsg};
use crate::event::{EventBus, EventStream};
use crate::init_runs::InitRuns;
use crate::stabilization::Stabilization;
use crate::CoreError;

/// Knobs of a deployment that are not in its spec.
#[derive(Debug, Clone)]
pub struct DeploymentOptions {
    /// Sends buffered per subscriber before the oldest are dropped (default 4096). A send
    /// is one event, or the events a supervisor told before a report with what the
    /// deployment actor says on handling it; `Missed` counts events either way.
    pub event_capacity: usize,
    /// Seed for backoff jitter and first-probe jitter (default 0: deterministic).
    pub seed: u64,
    /// Log lines included per failing replica in a stabilization report (default 20).
    pub log_tail_lines: usize,
    /// At start, adopt the replicas an earlier run left running ([`Runtime::survivors`]
    /// whose run hash matches the spec) instead of starting new ones (default true). When
    /// false, or for a survivor that runs something else, the survivor is stopped.
    ///
    /// [`Runtime::survivors`]: herdsman_runtime::Runtime::survivors
    pub adopt: bool,
}

impl Default for DeploymentOptions {
    fn default() -> Self {
        DeploymentOptions {
            event_capacity: 4096,
            seed: 0,
            log_tail_lines: 20,
            adopt: true,
        }
    }
}

/// A running deployment. Cheap to clone; every clone drives the same actor tree.
#[derive(Clone)]
pub struct DeploymentHandle {
    actor: ActorRef<DeploymentMsg>,
    runtime: Arc<dyn Runtime>,
    board: StatusBoard,
    events: EventBus,
    /// Subscribed before the actor started, handed to the first `subscribe` call so that
    /// subscriber sees every event from the very first one.
    first_subscription: Arc<std::sync::Mutex<Option<EventStream>>>,
    join: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for DeploymentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentHandle")
            .field("actor", &self.actor.get_id())
            .finish()
    }
}

/// Spawn a deployment's actor tree on `runtime`, standalone.
///
/// # Errors
/// [`CoreError::Spawn`] when the actor cannot start.
///
/// # Example
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use herdsman_core::{spawn_deployment, DeploymentOptions, Stabilization};
/// use herdsman_runtime::ProcessRuntime;
///
/// let spec = herdsman_spec::load("deploy.yaml".as_ref())?;
/// let runtime = Arc::new(ProcessRuntime::new(Default::default()));
/// let handle = spawn_deployment(spec, runtime, DeploymentOptions::default()).await?;
/// if let Stabilization::TimedOut { failing } = handle.wait_stable(Duration::from_secs(30)).await? {
///     eprintln!("not stable: {failing:?}");
/// }
/// handle.shutdown().await?;
/// # Ok(()) }
/// ```
pub async fn spawn_deployment(
    spec: Deployment,
    runtime: Arc<dyn Runtime>,
    options: DeploymentOptions,
) -> Result<DeploymentHandle, CoreError> {
    spawn_inner(spec, runtime, options, None).await
}

/// Spawn a deployment's actor tree linked under `supervisor`, a host's own actor, which
/// receives the deployment actor's supervision events.
///
/// # Errors
/// [`CoreError::Spawn`] when the actor cannot start.
pub async fn spawn_deployment_linked(
    spec: Deployment,
    runtime: Arc<dyn Runtime>,
    options: DeploymentOptions,
    supervisor: ActorCell,
) -> Result<DeploymentHandle, CoreError> {
    spawn_inner(spec, runtime, options, Some(supervisor)).await
}

async fn spawn_inner(
    spec: Deployment,
    runtime: Arc<dyn Runtime>,
    options: DeploymentOptions,
    supervisor: Option<ActorCell>,
) -> Result<DeploymentHandle, CoreError> {
    let name: Arc<str> = Arc::from(spec.name.as_str());
    let services: Vec<(Arc<str>, u32)> = spec
        .services
        .iter()
        .map(|s| (Arc::from(s.name.as_str()), s.initial_replicas()))
        .collect();
    let board = StatusBoard::new(name.clone(), &services);
    let events = EventBus::new(name, options.event_capacity);
    let first_subscription = events.subscribe();
    let args = DeploymentArgs {
        spec: Arc::new(spec),
        runtime: runtime.clone(),
        board: board.clone(),
        events: events.clone(),
        seed: options.seed,
        log_tail_lines: options.log_tail_lines,
        init_runs: InitRuns::default(),
        generations: crate::generations::Generations::default(),
        probe_clock: crate::probe_clock::ProbeClock::start(),
        adopt: options.adopt,
    };
    let spawned = match supervisor {
        Some(sup) => Actor::spawn_linked(None, DeploymentActor, args, sup).await,
        None => Actor::spawn(None, DeploymentActor, args).await,
    };
    let (actor, join) = spawned.map_err(CoreError::Spawn)?;
    Ok(DeploymentHandle {
        actor,
        runtime,
        board,
        events,
        first_subscription: Arc::new(std::sync::Mutex::new(Some(first_subscription))),
        join: Arc::new(Mutex::new(Some(join))),
    })
}

fn answer<T>(
    r: Result<CallResult<T>, impl std::fmt::Debug>,
    waited: Duration,
) -> Result<T, CoreError> {
    match r {
        Ok(CallResult::Success(v)) => Ok(v),
        Ok(CallResult::Timeout) => Err(CoreError::Timeout(waited)),
        Ok(CallResult::SenderError) | Err(_) => Err(CoreError::Stopped),
    }
}

impl DeploymentHandle {
    /// Wait until the deployment is stable (answered the moment it becomes so) or until
    /// `timeout` passes (answered with the failing services, reasons and log tails).
    ///
    /// # Errors
    /// [`CoreError::Stopped`] if the deployment is gone.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future abandons the wait and nothing else.
    pub async fn wait_stable(&self, timeout: Duration) -> Result<Stabilization, CoreError> {
        // The actor answers at `timeout` itself; the call's own bound only guards
        // against an actor that died.
        let bound = timeout + Duration::from_secs(5);
        let r = self
            .actor
            .call(
                |reply| DeploymentMsg::WaitStable { timeout, reply },
                Some(bound),
            )
            .await;
        answer(r, bound)
    }

    /// Everything's status, read from the board without messaging any actor.
    pub fn status(&self) -> DeploymentStatus {
        self.board.snapshot()
    }

    /// The shared status board itself, for readers that poll it cheaply.
    pub fn board(&self) -> &StatusBoard {
        &self.board
    }

    /// A subscription to the deployment's events. The first call (on any clone of the
    /// handle) sees every event since the deployment was spawned, so nothing emitted while
    /// services start up is missed; later calls see events from now on.
    pub fn subscribe(&self) -> EventStream {
        let first = match self.first_subscription.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        first.unwrap_or_else(|| self.events.subscribe())
    }

    /// Set a service's desired replica count. Replicas are added at the top or removed
    /// highest index first; a removed replica's pending restart is cancelled.
    ///
    /// # Errors
    /// Unknown service, a count over 100000, or a stopped deployment.
    pub async fn scale(&self, service: &str, replicas: u32) -> Result<(), CoreError> {
        let bound = Duration::from_secs(10);
        let service = service.to_string();
        let r = self
            .actor
            .call(
                |reply| DeploymentMsg::Scale {
                    service,
                    replicas,
                    reply,
                },
                Some(bound),
            )
            .await;
        answer(r, bound)?
    }

    /// Roll the running deployment to `spec` (validated, same deployment name): services
    /// whose replicas run something new are replaced per their `update` block, scale-only
    /// changes scale, added services start and removed ones stop; unchanged services are
    /// not touched. With `dry_run` nothing changes and the plan says what would. Returns
    /// at once; follow the rollout with [`rollout`](Self::rollout) or the events.
    ///
    /// # Errors
    /// A spec for another deployment, or a stopped deployment.
    pub async fn apply(
        &self,
        spec: herdsman_spec::Deployment,
        dry_run: bool,
    ) -> Result<crate::ApplyPlan, CoreError> {
        let bound = Duration::from_secs(30);
        let r = self
            .actor
            .call(
                |reply| DeploymentMsg::Apply {
                    spec: Box::new(spec),
                    dry_run,
                    reply,
                },
                Some(bound),
            )
            .await;
        answer(r, bound)?
    }

    /// Roll back to the spec before the current one (a new revision).
    ///
    /// # Errors
    /// [`CoreError::NoPreviousRevision`], or a stopped deployment.
    pub async fn undo(&self) -> Result<crate::ApplyPlan, CoreError> {
        let bound = Duration::from_secs(30);
        let r = self.actor.call(DeploymentMsg::Undo, Some(bound)).await;
        answer(r, bound)?
    }

    /// The latest rollout's status, read from the board.
    pub fn rollout(&self) -> Option<crate::RolloutStatus> {
        self.board.rollout()
    }

    /// Take a service to 0 replicas (each stopped with its signal and grace); `start`
    /// brings it back to its spec.
    ///
    /// # Errors
    /// Unknown service, or a stopped deployment.
    pub async fn stop_service(&self, service: &str) -> Result<(), CoreError> {
        self.scale(service, 0).await
    }

    /// Set a service back to its spec's replica count; returns that count.
    ///
    /// # Errors
    /// Unknown service, or a stopped deployment.
    pub async fn start_service(&self, service: &str) -> Result<u32, CoreError> {
        let bound = Duration::from_secs(10);
        let service = service.to_string();
        let r = self
            .actor
            .call(
                |reply| DeploymentMsg::StartService { service, reply },
                Some(bound),
            )
            .await;
        answer(r, bound)?
    }

    /// Replace replicas gracefully, one at a time: each is stopped (signal, grace) and
    /// started again as a new incarnation, with a fresh restart count, and must be running
    /// and healthy again within `ready_within` before the next one goes. `replica: None`
    /// restarts every replica of the service, in index order. Waits on the deployment's
    /// events, not on a timer.
    ///
    /// # Errors
    /// Unknown service or replica, a stopped deployment, or [`CoreError::NotReady`] for
    /// the replica that did not come back in time (the later ones are left alone).
    pub async fn restart(
        &self,
        service: &str,
        replica: Option<u32>,
        ready_within: Duration,
    ) -> Result<(), CoreError> {
        let replicas: Vec<u32> = match replica {
            Some(r) => vec![r],
            None => {
                let status = self.status();
                let svc = status
                    .services
                    .iter()
                    .find(|s| s.name == service)
                    .ok_or_else(|| CoreError::UnknownService(service.to_string()))?;
                svc.replicas
                    .iter()
                    .map(|r| r.replica)
                    .filter(|r| *r < svc.desired)
                    .collect()
            }
        };
        for replica in replicas {
            let mut events = self.events.subscribe();
            let bound = Duration::from_secs(10);
            let name = service.to_string();
            let r = self
                .actor
                .call(
                    |reply| DeploymentMsg::RestartReplica {
                        service: name,
                        replica,
                        reply,
                    },
                    Some(bound),
                )
                .await;
            let generation = answer(r, bound)??;
            let ready = async {
                loop {
                    let now_ready = self.board.replica(service, replica).is_some_and(|r| {
                        r.is_ready() && r.container.is_some_and(|c| c.generation >= generation)
                    });
                    if now_ready {
                        return Ok(());
                    }
                    match events.recv().await {
                        Some(Received::Event(_) | Received::Missed(_)) => {}
                        None => return Err(CoreError::Stopped),
                    }
                }
            };
            match tokio::time::timeout(ready_within, ready).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(CoreError::NotReady {
                        service: service.to_string(),
                        replica,
                        waited: ready_within,
                    })
                }
            }
        }
        Ok(())
    }

    /// The last `lines` lines of a replica's output (its current or last container),
    /// oldest first.
    ///
    /// # Errors
    /// Unknown service or replica.
    pub fn logs(
        &self,
        service: &str,
        replica: u32,
        lines: usize,
    ) -> Result<Vec<String>, CoreError> {
        // `logs -f` asks every 200 ms: a lookup, not a copy of the whole board.
        if !self.board.has_service(service) {
            return Err(CoreError::UnknownService(service.to_string()));
        }
        let r = self
            .board
            .replica(service, replica)
            .ok_or_else(|| CoreError::UnknownReplica {
                service: service.to_string(),
                replica,
            })?;
        Ok(r.container
            .map(|c| self.runtime.logs(&c, lines))
            .unwrap_or_default())
    }

    /// Fault injection: make one replica's container actor panic, as a bug would. Its
    /// supervisor replaces the actor and re-adopts the replica's container.
    pub fn inject_actor_panic(&self, service: &str, replica: u32) {
        let _ = self.actor.cast(DeploymentMsg::InjectPanic {
            service: service.to_string(),
            replica: Some(replica),
        });
    }

    /// Fault injection: make a service's supervisor panic, as a bug would. The deployment
    /// replaces it (at most 3 times a minute); the new supervisor stops and removes the
    /// containers its predecessor left unwatched and boots each replica again.
    pub fn inject_supervisor_panic(&self, service: &str) {
        let _ = self.actor.cast(DeploymentMsg::InjectPanic {
            service: service.to_string(),
            replica: None,
        });
    }

    /// Stop every service in reverse dependency order, each replica with its stop signal
    /// and grace period, then the actors. Returns once everything is stopped.
    ///
    /// # Errors
    /// [`CoreError::Stopped`] if the deployment was already gone.
    pub async fn shutdown(&self) -> Result<(), CoreError> {
        // Generous: each service's budget is enforced inside; this only guards a hang.
        let bound = Duration::from_secs(3600);
        let r = self.actor.call(DeploymentMsg::Shutdown, Some(bound)).await;
        let result = answer(r, bound);
        if let Some(join) = self.join.lock().await.take() {
            let _ = join.await;
        }
        result
    }

    /// The deployment actor's cell, e.g. to recognise its supervision events in a host.
    pub fn actor_cell(&self) -> ActorCell {
        self.actor.get_cell()
    }
}
