//! [`SimRuntime`]: containers that exist only in memory, living and failing as their
//! service's [`FaultProfile`] says, with faults injectable at run time. Deterministic for
//! a seed, and cheap enough to simulate fleets of 100,000 replicas.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use herdsman_probe::{CheckResult, CommandOutput, Outcome, StepReport};
use herdsman_spec::{Check, InitStep, ReplicaVars, StopSignal};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::fault::{chance, rng_for, Stream};
use crate::sim_audit::{Violation, ViolationKind};
use crate::sim_state::{
    drive, replica_ids, running_sibling, Cause, Ending, Shared, SimContainer, SimPhase, SimState,
    SimStats, Timer,
};
use crate::{
    ContainerId, ContainerSpec, Exit, ExitReason, ExitWatch, FaultProfile, Runtime, RuntimeError,
    Started, Survivor,
};

/// Simulated containers: no processes, no I/O, only state and timers on the tokio clock,
/// so whole fleets run under `tokio::time::pause()` in milliseconds.
///
/// - Each service's containers follow its [`FaultProfile`] ([`SimRuntime::set_profile`],
///   at any time; a change applies from the next decision on).
/// - Faults are injected at run time: [`SimRuntime::kill`], [`SimRuntime::kill_replica`],
///   [`SimRuntime::fail_starts`].
/// - Queries for tests and fleet invariants: [`SimRuntime::running`],
///   [`SimRuntime::running_count`], [`SimRuntime::is_running`], [`SimRuntime::stats`].
/// - Deterministic: every random decision comes from a generator derived from the seed,
///   the container id and a per-container counter, so the same seed and the same calls
///   replay the same exits at the same times, whatever order containers are driven in.
/// - Cheap: an idle container is one map entry (a few hundred bytes, see
///   [`SimRuntime::approx_memory`]) and no task. Timed exits are scheduled by one driver
///   task per runtime, spawned on the first timed start; a `Forever` container has no
///   timer at all.
/// - Health checks and init steps are answered from the profile instead of probing;
///   [`Runtime::logs`] returns synthetic lines (`started`, `exited with code N`).
/// - A contract auditor: it records, as [`Violation`]s ([`SimRuntime::violations`]), the
///   breaches of the runtime contract only the runtime's side can see: a start while an
///   other incarnation of the same (deployment, service, replica) slot runs, an init step
///   begun while another of the same slot is in flight (neither finished nor cancelled), a
///   running container removed (killed without its stop signal and grace) or stopped with
///   another signal or a shorter grace than its spec's. A supervisor that keeps the
///   tree's invariants leaves the list empty; simulations assert exactly that.
///
/// [`SimRuntime::new`] needs no tokio runtime; `start` must run inside one.
#[derive(Debug)]
pub struct SimRuntime {
    shared: Arc<Shared>,
}

impl SimRuntime {
    /// A simulation whose every random decision derives from `seed`. Needs no tokio
    /// runtime; the driver task is spawned by the first `start` that schedules an exit.
    pub fn new(seed: u64) -> SimRuntime {
        SimRuntime {
            shared: Arc::new(Shared {
                seed,
                state: Mutex::new(SimState::default()),
                wake: Notify::new(),
            }),
        }
    }

    /// The seed it was created with.
    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        self.shared.state()
    }

    /// Start `id` (see `Runtime::start`) once its start latency has passed, under `guard`.
    fn start_locked(
        &self,
        mut guard: MutexGuard<'_, SimState>,
        id: &ContainerId,
    ) -> Result<Started, RuntimeError> {
        let seed = self.shared.seed;
        let st = &mut *guard;
        let profile = st.profile(&id.service).clone();
        let c = st
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::UnknownContainer { id: id.to_string() })?;
        match c.phase {
            SimPhase::Created | SimPhase::StartFailed => {}
            SimPhase::Running { .. } => {
                return Err(RuntimeError::Start {
                    id: id.to_string(),
                    reason: "it is already running".into(),
                })
            }
            SimPhase::Exited(_) => {
                return Err(RuntimeError::Start {
                    id: id.to_string(),
                    reason: "it has already run; create the next generation".into(),
                })
            }
        }
        c.attempts += 1;
        let attempt = u64::from(c.attempts);
        let forced = match st.forced_start_failures.get_mut(&*id.service) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
        let mut rng = rng_for(seed, id, Stream::Start, "", attempt);
        if forced || chance(&mut rng, profile.start_failure) {
            c.phase = SimPhase::StartFailed;
            st.count(&id.service, |s| s.start_failures += 1);
            let what = if forced {
                "start failure (fail_starts)".to_string()
            } else {
                format!("start failure (probability {})", profile.start_failure)
            };
            return Err(RuntimeError::Injected {
                id: id.to_string(),
                what,
            });
        }

        let now = Instant::now();
        let mut rng = rng_for(seed, id, Stream::Lifetime, "", attempt);
        let lifetime = profile.lifetime.sample(&mut rng);
        let deadline = lifetime
            .filter(|d| !d.is_zero())
            .and_then(|d| now.checked_add(d));
        let (exit_tx, exit) = ExitWatch::channel();
        c.phase = SimPhase::Running {
            since: now,
            exit_tx: Some(exit_tx),
            stop_waiter: None,
        };
        c.timer_pending = deadline.is_some();
        let attempt = c.attempts;
        st.count(&id.service, |s| s.started += 1);
        if let Some(running) = running_sibling(st, id) {
            st.audit
                .record(id, ViolationKind::DuplicateStart { running });
        }
        if lifetime.is_some_and(|d| d.is_zero()) {
            // It exits at the instant it starts: the watch handed back has resolved already.
            let mut rng = rng_for(seed, id, Stream::ExitCode, "", attempt.into());
            let code = profile.exit_code(&mut rng);
            let ending = st.end(id, Some(attempt), ExitReason::Code(code), Cause::ByItself);
            drop(guard);
            ending.into_iter().for_each(Ending::deliver);
            return Ok(Started { pid: None, exit });
        }
        if let Some(deadline) = deadline {
            let sooner = st.schedule(Timer {
                deadline,
                id: id.clone(),
                attempt,
            });
            self.ensure_driver(st);
            if sooner {
                self.shared.wake.notify_one();
            }
        }
        Ok(Started { pid: None, exit })
    }

    /// Use `profile` for the containers of `service` from now on.
    pub fn set_profile(&self, service: &str, profile: FaultProfile) {
        self.state()
            .profiles
            .insert(service.to_string(), Arc::new(profile));
    }

    /// Use `profile` for services without a profile of their own.
    pub fn set_default_profile(&self, profile: FaultProfile) {
        self.state().default_profile = Arc::new(profile);
    }

    /// The profile `service` currently follows.
    pub fn profile(&self, service: &str) -> FaultProfile {
        (**self.state().profile(service)).clone()
    }

    /// Make the next `n` starts of `service` fail (on top of any already pending).
    pub fn fail_starts(&self, service: &str, n: u32) {
        let mut st = self.state();
        let pending = st
            .forced_start_failures
            .entry(service.to_string())
            .or_default();
        *pending = pending.saturating_add(n);
    }

    /// Forget every start failure `fail_starts` asked for that has not happened yet.
    pub fn clear_start_failures(&self) {
        self.state().forced_start_failures.clear();
    }

    /// End container `id` now with `exit_code`, as if it crashed. Returns `false` when it
    /// was not running.
    pub fn kill(&self, id: &ContainerId, exit_code: i32) -> bool {
        let ending = self
            .state()
            .end(id, None, ExitReason::Code(exit_code), Cause::Kill);
        match ending {
            Some(ending) => {
                ending.deliver();
                true
            }
            None => false,
        }
    }

    /// End the running incarnation of replica `replica` of `service` (in every deployment)
    /// now with `exit_code`. Returns the ids it killed.
    pub fn kill_replica(&self, service: &str, replica: u32, exit_code: i32) -> Vec<ContainerId> {
        let mut st = self.state();
        let ids = replica_ids(&st, service, replica);
        let endings: Vec<_> = ids
            .iter()
            .filter_map(|id| st.end(id, None, ExitReason::Code(exit_code), Cause::Kill))
            .collect();
        drop(st);
        endings.into_iter().for_each(Ending::deliver);
        ids
    }

    /// Every contract breach seen so far, oldest first (at most 1024 are kept; see
    /// [`SimRuntime::violation_count`]).
    pub fn violations(&self) -> Vec<Violation> {
        self.state().audit.violations()
    }

    /// How many contract breaches were seen, including those beyond the kept 1024.
    pub fn violation_count(&self) -> usize {
        self.state().audit.violation_count()
    }

    /// The containers with an init step in flight (begun, neither returned nor dropped),
    /// one per replica slot, sorted. Empty once a deployment has shut down.
    pub fn inits_in_flight(&self) -> Vec<ContainerId> {
        self.state().audit.inits_in_flight()
    }

    /// How container `id` ended, if it ran and has ended (`None` while it runs, before it
    /// starts, after a failed start and once it is removed).
    pub fn exit_of(&self, id: &ContainerId) -> Option<Exit> {
        match self.state().containers.get(id)?.phase {
            SimPhase::Exited(exit) => Some(exit),
            _ => None,
        }
    }

    /// Every running container, sorted.
    pub fn running(&self) -> Vec<ContainerId> {
        self.state()
            .containers
            .iter()
            .filter(|(_, c)| c.is_running())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// How many incarnations of replica `replica` of `service` run (in every deployment).
    /// A correct supervisor keeps this at most 1 per deployment.
    pub fn running_count(&self, service: &str, replica: u32) -> usize {
        replica_ids(&self.state(), service, replica).len()
    }

    /// Whether container `id` is running.
    pub fn is_running(&self, id: &ContainerId) -> bool {
        self.state()
            .containers
            .get(id)
            .is_some_and(SimContainer::is_running)
    }

    /// How many containers exist (created and not removed), whatever their state.
    pub fn container_count(&self) -> usize {
        self.state().containers.len()
    }

    /// How many self-inflicted exits are scheduled. `Forever` containers add none.
    pub fn scheduled_exits(&self) -> usize {
        let st = self.state();
        st.timers.len().saturating_sub(st.stale_timers)
    }

    /// Counters over every service.
    pub fn stats(&self) -> SimStats {
        self.state().stats
    }

    /// Counters for one service.
    pub fn service_stats(&self, service: &str) -> SimStats {
        self.state()
            .service_stats
            .get(service)
            .copied()
            .unwrap_or_default()
    }

    /// A structural estimate of the bytes held for containers: the ordered map's entries
    /// (with B-tree nodes assumed half full, their minimum), each running container's exit
    /// notification, the container id's names, pending timers and init counters.
    pub fn approx_memory(&self) -> usize {
        self.state().approx_memory()
    }

    /// Spawn the driver task if it is not running yet. Must run in a tokio runtime.
    fn ensure_driver(&self, st: &mut SimState) {
        if st.driver.is_none() {
            st.driver = Some(tokio::spawn(drive(self.shared.clone())));
        }
    }
}

impl Drop for SimRuntime {
    /// Stop the driver. Pending exit watches resolve as [`ExitReason::Lost`].
    fn drop(&mut self) {
        if let Some(driver) = self.state().driver.take() {
            driver.abort();
        }
    }
}

#[async_trait::async_trait]
impl Runtime for SimRuntime {
    async fn create(&self, id: &ContainerId, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let mut st = self.state();
        st.audit
            .created(id, spec.service.stop_signal, spec.service.stop_grace_period);
        if let Some(old) = st.containers.get(id) {
            if matches!(old.phase, SimPhase::Running { .. }) {
                return Err(RuntimeError::Start {
                    id: id.to_string(),
                    reason: "it already exists and is running".into(),
                });
            }
            if old.timer_pending {
                st.stale_timers += 1;
            }
        }
        if !st.deployments.contains(&id.deployment) {
            st.deployments.push(id.deployment.clone());
        }
        st.init_runs.remove(id);
        st.containers
            .insert(id.clone(), SimContainer::new(spec.service.clone()));
        st.count(&id.service, |s| s.created += 1);
        Ok(())
    }

    async fn start(&self, id: &ContainerId) -> Result<Started, RuntimeError> {
        let latency = {
            let guard = self.state();
            if !guard.containers.contains_key(id) {
                return Err(RuntimeError::UnknownContainer { id: id.to_string() });
            }
            let latency = guard.profile(&id.service).start_latency;
            if latency.is_zero() {
                // One lock for the whole start: in a burst of restarts every container
                // actor takes this lock, from both cores.
                return self.start_locked(guard, id);
            }
            latency
        };
        tokio::time::sleep(latency).await;
        self.start_locked(self.state(), id)
    }

    async fn stop(
        &self,
        id: &ContainerId,
        signal: StopSignal,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let (waiter, attempt) = {
            let mut guard = self.state();
            let st = &mut *guard;
            let hangs = st.profile(&id.service).stop_hangs && signal != StopSignal::KILL;
            let c = st
                .containers
                .get_mut(id)
                .ok_or_else(|| RuntimeError::UnknownContainer { id: id.to_string() })?;
            let SimPhase::Running { stop_waiter, .. } = &mut c.phase else {
                return Ok(());
            };
            st.audit.stopping(id, signal, grace);
            if hangs {
                let (tx, rx) = oneshot::channel();
                *stop_waiter = Some(tx);
                (rx, c.attempts)
            } else {
                let ending = st.end(id, None, ExitReason::Signal(signal.0), Cause::Stop);
                drop(guard);
                ending.into_iter().for_each(Ending::deliver);
                return Ok(());
            }
        };
        // It ignores the signal: wait out the grace period unless it exits by itself
        // first. A concurrent stop replacing the waiter wakes this one early, hence the
        // deadline check below.
        let deadline = Instant::now() + grace;
        let _ = tokio::time::timeout_at(deadline, waiter).await;
        if self.is_running(id) && Instant::now() < deadline {
            tokio::time::sleep_until(deadline).await;
        }
        let ending = self
            .state()
            .end(id, Some(attempt), ExitReason::Signal(9), Cause::Stop);
        ending.into_iter().for_each(Ending::deliver);
        Ok(())
    }

    /// What runs of `deployment`: a later tree over the same simulation (a restarted
    /// herdsman) finds it here, as a process runtime finds its state directory's records.
    async fn survivors(&self, deployment: &str) -> Result<Vec<Survivor>, RuntimeError> {
        let st = self.state();
        if let Some(session) = st.sessions.get(deployment) {
            session.send_modify(|n| *n += 1);
        }
        Ok(st
            .containers
            .iter()
            .filter(|(id, c)| &*id.deployment == deployment && c.is_running())
            .map(|(id, c)| Survivor {
                id: id.clone(),
                run_hash: c.service.run_hash(),
                pid: None,
            })
            .collect())
    }

    /// A new exit watch of a running container; the earlier tree's watch resolves as
    /// `Lost` (its sender is replaced), as a dead herdsman's would never resolve at all.
    async fn adopt(
        &self,
        survivor: &Survivor,
        _spec: &ContainerSpec,
    ) -> Result<Started, RuntimeError> {
        let mut st = self.state();
        let c =
            st.containers
                .get_mut(&survivor.id)
                .ok_or_else(|| RuntimeError::UnknownContainer {
                    id: survivor.id.to_string(),
                })?;
        let SimPhase::Running { exit_tx, .. } = &mut c.phase else {
            return Err(RuntimeError::UnknownContainer {
                id: survivor.id.to_string(),
            });
        };
        let (tx, exit) = ExitWatch::channel();
        *exit_tx = Some(tx);
        Ok(Started { pid: None, exit })
    }

    async fn discard_survivor(
        &self,
        survivor: &Survivor,
        signal: StopSignal,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        self.stop(&survivor.id, signal, grace).await?;
        self.remove(&survivor.id).await
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        let mut st = self.state();
        if st.containers.get(id).is_some_and(SimContainer::is_running) {
            st.audit.record(id, ViolationKind::RemovedWhileRunning);
        }
        let ending = st.end(id, None, ExitReason::Signal(9), Cause::Stop);
        if let Some(c) = st.containers.remove(id) {
            if c.timer_pending {
                st.stale_timers += 1;
            }
            st.count(&id.service, |s| s.removed += 1);
        }
        st.init_runs.remove(id);
        drop(st);
        ending.into_iter().for_each(Ending::deliver);
        Ok(())
    }

    async fn exec(
        &self,
        id: &ContainerId,
        _command: &str,
        timeout: Duration,
    ) -> Result<CommandOutput, RuntimeError> {
        let (failed, behaviour) = {
            let mut guard = self.state();
            let st = &mut *guard;
            let behaviour = st.profile(&id.service).exec;
            let c = st
                .containers
                .get_mut(id)
                .ok_or_else(|| RuntimeError::UnknownContainer { id: id.to_string() })?;
            c.execs += 1;
            let mut rng = rng_for(self.shared.seed, id, Stream::Exec, "", c.execs.into());
            (chance(&mut rng, behaviour.p_fail), behaviour)
        };
        let timed_out = behaviour.duration > timeout;
        let duration = behaviour.duration.min(timeout);
        if !duration.is_zero() {
            tokio::time::sleep(duration).await;
        }
        Ok(CommandOutput {
            exit_code: match (timed_out, failed) {
                (true, _) => None,
                (false, true) => Some(behaviour.fail_code),
                (false, false) => Some(0),
            },
            signal: timed_out.then_some(9),
            timed_out,
            output: String::new(),
            duration,
        })
    }

    fn logs(&self, id: &ContainerId, lines: usize) -> Vec<String> {
        let st = self.state();
        let Some(c) = st.containers.get(id) else {
            return Vec::new();
        };
        let all: Vec<String> = match &c.phase {
            SimPhase::Created => Vec::new(),
            SimPhase::StartFailed => vec!["start failed: injected fault".into()],
            SimPhase::Running { .. } => vec!["started".into()],
            SimPhase::Exited(exit) => {
                let last = match exit.reason {
                    ExitReason::Code(code) => format!("exited with code {code}"),
                    ExitReason::Signal(signal) => format!("killed by signal {signal}"),
                    ExitReason::Lost => "lost".into(),
                    ExitReason::Unknown => "exited, status unknown".into(),
                };
                vec!["started".into(), last]
            }
        };
        let skip = all.len().saturating_sub(lines);
        all.into_iter().skip(skip).collect()
    }

    /// Answered from the service's [`HealthBehaviour`](crate::HealthBehaviour), whatever
    /// the check's kind; a container that is not running fails.
    async fn check(
        &self,
        id: &ContainerId,
        _check: &Check,
        _vars: &ReplicaVars,
        _timeout: Duration,
    ) -> CheckResult {
        let mut guard = self.state();
        let st = &mut *guard;
        let health = st.profile(&id.service).health;
        let outcome = match st.containers.get_mut(id) {
            None => Outcome::Failure("no such container".into()),
            Some(c) => match c.phase {
                SimPhase::Running { since, .. } => {
                    c.checks += 1;
                    let rng = || rng_for(self.shared.seed, id, Stream::Health, "", c.checks.into());
                    let elapsed = || Instant::now().saturating_duration_since(since);
                    health.verdict(elapsed, rng)
                }
                _ => Outcome::Failure("container is not running".into()),
            },
        };
        CheckResult::new(outcome, Duration::ZERO, "")
    }

    /// Each try fails with the profile's `init_failure` probability and takes its
    /// `init_latency` (a try longer than the step's timeout fails as timed out, at the
    /// timeout); the step's retries are honoured. With `init_hangs` it never returns. The
    /// auditor sees the step in flight until it returns or is dropped.
    async fn init_step(
        &self,
        id: &ContainerId,
        step: &InitStep,
        _vars: &ReplicaVars,
    ) -> StepReport {
        let (report, took, hangs, _in_flight, mut session) = {
            let mut st = self.state();
            let session = st
                .sessions
                .entry(id.deployment.clone())
                .or_insert_with(|| tokio::sync::watch::channel(0).0)
                .subscribe();
            let profile = st.profile(&id.service).clone();
            st.audit.init_began(id, &step.id);
            let in_flight = InitInFlight {
                shared: self.shared.clone(),
                id: id.clone(),
            };
            let run = st.init_runs.entry(id.clone()).or_default();
            *run += 1;
            let run = u64::from(*run) << 32;
            let tries = step.retry.saturating_add(1);
            let timed_out = profile.init_latency > step.timeout;
            let per_try = profile.init_latency.min(step.timeout);
            let mut failures: u32 = 0;
            let mut ok = false;
            for attempt in 1..=tries {
                let mut rng = rng_for(
                    self.shared.seed,
                    id,
                    Stream::Init,
                    &step.id,
                    run | u64::from(attempt),
                );
                if timed_out || chance(&mut rng, profile.init_failure) {
                    failures += 1;
                } else {
                    ok = true;
                    break;
                }
            }
            st.count(&id.service, |s| s.init_failures += u64::from(failures));
            let attempts = if ok { failures + 1 } else { tries };
            let took = per_try.saturating_mul(attempts);
            let report = if ok {
                StepReport::passed(step, attempts, took)
            } else if timed_out {
                StepReport::failed(
                    step,
                    tries,
                    format!("timed out after {:?} ({tries} tries)", step.timeout),
                    took,
                )
            } else {
                StepReport::failed(
                    step,
                    tries,
                    format!("injected init failure ({tries} tries)"),
                    took,
                )
            };
            (report, took, profile.init_hangs, in_flight, session)
        };
        let work = async {
            if hangs {
                std::future::pending::<()>().await;
            }
            if !took.is_zero() {
                tokio::time::sleep(took).await;
            }
        };
        tokio::select! {
            () = work => report,
            _ = session.changed() => StepReport::failed(
                step,
                1,
                "killed: a new run of its deployment began",
                Duration::ZERO,
            ),
        }
    }
}

/// An init step in flight, for the auditor: ends when the step returns or is dropped.
struct InitInFlight {
    shared: Arc<Shared>,
    id: ContainerId,
}

impl Drop for InitInFlight {
    fn drop(&mut self) {
        self.shared.state().audit.init_ended(&self.id);
    }
}
