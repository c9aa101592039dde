//! The status board: actors write each replica's status into a shared map, readers (the
//! API, the CLI, hosts) read it without messaging any actor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use herdsman_probe::{CheckResult, Outcome};
use herdsman_runtime::{ContainerId, Exit};
use serde::{Deserialize, Serialize};

use crate::slot_key::{slot, SlotKey, SlotRef};

mod probe_log;

pub(crate) use probe_log::{ProbeCounters, ProbeLog};

/// How many probe results each replica keeps for status.
pub const PROBE_HISTORY: usize = 5;

/// Where a replica is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaState {
    /// Running its init steps.
    Initializing,
    /// Being created and started.
    Starting,
    /// Its container is running.
    Running,
    /// Crash looping: waiting out a restart delay (see `backoff_ms`).
    Backoff,
    /// Kept for debugging or unhealthy: not ready, not restarted.
    Isolated,
    /// Being stopped.
    Stopping,
    /// Stopped on purpose.
    Stopped,
    /// Ran to completion.
    Completed,
    /// Will not be restarted.
    Failed,
}

impl ReplicaState {
    /// Every state, in life-cycle order.
    pub const ALL: [ReplicaState; 9] = [
        ReplicaState::Initializing,
        ReplicaState::Starting,
        ReplicaState::Running,
        ReplicaState::Backoff,
        ReplicaState::Isolated,
        ReplicaState::Stopping,
        ReplicaState::Stopped,
        ReplicaState::Completed,
        ReplicaState::Failed,
    ];

    /// The state's name as in `/v1/status`: `running`, `backoff`...
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Initializing => "initializing",
            ReplicaState::Starting => "starting",
            ReplicaState::Running => "running",
            ReplicaState::Backoff => "backoff",
            ReplicaState::Isolated => "isolated",
            ReplicaState::Stopping => "stopping",
            ReplicaState::Stopped => "stopped",
            ReplicaState::Completed => "completed",
            ReplicaState::Failed => "failed",
        }
    }

    /// True for `running`.
    pub fn is_running(self) -> bool {
        matches!(self, ReplicaState::Running)
    }
}

/// What one probe result was, as status shows it: a word, not a string kept per check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeOutcome {
    /// The check passed.
    Success,
    /// The check ran and failed.
    Failure,
    /// The check could not run (a probe error, not the workload's).
    Unknown,
}

/// One probe result as kept for status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeRecord {
    /// Milliseconds since the deployment was spawned.
    pub at_ms: u64,
    /// `success`, `failure` or `unknown`.
    pub outcome: ProbeOutcome,
    /// Why it failed, if it did.
    pub reason: Option<String>,
    /// How long the check took.
    pub duration_ms: u64,
    /// Capped output.
    pub output: String,
}

impl ProbeRecord {
    pub(crate) fn new(at_ms: u64, r: &CheckResult) -> ProbeRecord {
        let (outcome, reason) = match &r.outcome {
            Outcome::Success => (ProbeOutcome::Success, None),
            Outcome::Failure(why) => (ProbeOutcome::Failure, Some(why.clone())),
            Outcome::Unknown(why) => (ProbeOutcome::Unknown, Some(why.clone())),
        };
        ProbeRecord {
            at_ms,
            outcome,
            reason,
            duration_ms: r.duration.as_millis() as u64,
            output: r.output.clone(),
        }
    }
}

/// Status of one replica, as `/v1/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// Replica index.
    pub replica: u32,
    /// Life-cycle state.
    pub state: ReplicaState,
    /// Passing its health check (true without one while running).
    pub healthy: bool,
    /// OS pid of its main process, when running.
    pub pid: Option<u32>,
    /// Restarts so far.
    pub restarts: u32,
    /// Exit code of the last exit, if it exited with one.
    pub last_exit_code: Option<i32>,
    /// The last exit, with signal and run time.
    pub last_exit: Option<Exit>,
    /// Restart delay in force while in `backoff`.
    pub backoff_ms: Option<u64>,
    /// Current container incarnation.
    pub container: Option<ContainerId>,
    /// Why its last start, init sequence or restart failed (start error, failed init step,
    /// give-up), until it next starts: the reason an operator needs for a replica that is
    /// failed or in backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The last probe results, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ProbeRecord>,
}

impl ReplicaStatus {
    /// A replica that has not started anything yet (`initializing`).
    pub fn new(replica: u32) -> ReplicaStatus {
        ReplicaStatus {
            replica,
            state: ReplicaState::Initializing,
            healthy: false,
            pid: None,
            restarts: 0,
            last_exit_code: None,
            last_exit: None,
            backoff_ms: None,
            container: None,
            last_error: None,
            probes: Vec::new(),
        }
    }

    /// Running and healthy.
    pub fn is_ready(&self) -> bool {
        self.state.is_running() && self.healthy
    }
}

/// Where a service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServicePhase {
    /// Waiting for its dependencies.
    Waiting,
    /// Supervising its replicas.
    Running,
    /// Stopped by its panic action `shutdown`.
    Shutdown,
    /// Cannot run: a dependency timed out or replicas gave up.
    Failed,
    /// Stopped with the deployment.
    Stopped,
}

/// Status of one service, as `/v1/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Service name.
    pub name: String,
    /// Phase.
    pub phase: ServicePhase,
    /// Why it is not running, when it is not.
    pub reason: Option<String>,
    /// Desired replicas.
    pub desired: u32,
    /// Replicas whose container is running.
    pub running: u32,
    /// Running replicas passing their health check.
    pub healthy: u32,
    /// Replicas, by index.
    pub replicas: Vec<ReplicaStatus>,
}

/// The whole deployment, as `/v1/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentStatus {
    /// Deployment name.
    pub deployment: String,
    /// Every service has its desired replicas running and healthy.
    pub stable: bool,
    /// Services in spec order.
    pub services: Vec<ServiceStatus>,
    /// The latest rollout (`apply`), if there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutPhase {
    /// Replacing replicas.
    Progressing,
    /// Every changed service runs its new spec, ready.
    Complete,
    /// Failed and rolling back to the previous spec (`auto_revert`).
    Reverting,
    /// Failed and rolled back: the previous spec runs again.
    Reverted,
    /// Failed and left as it was (`auto_revert: false`, or a failed revert).
    Paused,
    /// Replaced by a later `apply` before it finished.
    Superseded,
}

impl RolloutPhase {
    /// The phase's name as in `/v1/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutPhase::Progressing => "progressing",
            RolloutPhase::Complete => "complete",
            RolloutPhase::Reverting => "reverting",
            RolloutPhase::Reverted => "reverted",
            RolloutPhase::Paused => "paused",
            RolloutPhase::Superseded => "superseded",
        }
    }
}

/// One service's part in a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRollout {
    /// Service name.
    pub service: String,
    /// Replicas running the new spec and ready.
    pub updated: u32,
    /// Desired replicas.
    pub desired: u32,
    /// Done with this service.
    pub done: bool,
}

/// The latest rollout, as `/v1/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutStatus {
    /// Spec revision being rolled out (1 is the spec the deployment started with).
    pub revision: u64,
    /// Where it is.
    pub phase: RolloutPhase,
    /// Each service it changes.
    pub services: Vec<ServiceRollout>,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Every health check result of one service's replicas since the deployment started:
/// counters that only grow, for metrics. Kept per service (not per replica) so scaling
/// down never makes a counter go back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeTotals {
    /// Checks that succeeded.
    pub success: u64,
    /// Checks that failed.
    pub failure: u64,
    /// Checks whose result was unknown (not the workload's fault).
    pub unknown: u64,
    /// Time spent in all those checks.
    pub duration: Duration,
}

impl ProbeTotals {
    /// Checks of any outcome.
    pub fn count(&self) -> u64 {
        self.success + self.failure + self.unknown
    }
}

#[derive(Debug, Clone)]
struct ServiceMeta {
    phase: ServicePhase,
    reason: Option<String>,
    desired: u32,
    probes: Arc<ProbeCounters>,
}

impl ServiceMeta {
    fn waiting(desired: u32) -> ServiceMeta {
        ServiceMeta {
            phase: ServicePhase::Waiting,
            reason: None,
            desired,
            probes: Arc::default(),
        }
    }
}

/// A replica's row: its status, and the probe history its current probe writes (copied
/// into the status's `probes` when status is read).
#[derive(Debug)]
struct Row {
    status: ReplicaStatus,
    probes: Option<Arc<ProbeLog>>,
}

/// Whether `status` shows the incarnation `generation` (of the row's own replica).
fn shows(status: &ReplicaStatus, generation: u64) -> bool {
    status
        .container
        .as_ref()
        .is_some_and(|c| c.generation == generation)
}

impl Row {
    fn status(&self) -> ReplicaStatus {
        let mut status = self.status.clone();
        if let Some(log) = &self.probes {
            status.probes = log.records();
        }
        status
    }
}

#[derive(Debug)]
struct BoardInner {
    deployment: Arc<str>,
    /// Services in spec order; changes when a rollout adds or removes one.
    order: RwLock<Vec<Arc<str>>>,
    rollout: RwLock<Option<RolloutStatus>>,
    services: DashMap<Arc<str>, ServiceMeta>,
    replicas: DashMap<SlotKey, Row>,
    stable: AtomicBool,
}

/// Shared, lock-striped status of every replica. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StatusBoard {
    inner: Arc<BoardInner>,
}

impl StatusBoard {
    pub(crate) fn new(deployment: Arc<str>, services: &[(Arc<str>, u32)]) -> StatusBoard {
        let map = DashMap::new();
        for (name, desired) in services {
            map.insert(name.clone(), ServiceMeta::waiting(*desired));
        }
        StatusBoard {
            inner: Arc::new(BoardInner {
                deployment,
                order: RwLock::new(services.iter().map(|(n, _)| n.clone()).collect()),
                rollout: RwLock::new(None),
                services: map,
                replicas: DashMap::new(),
                stable: AtomicBool::new(false),
            }),
        }
    }

    /// Change one replica's status, creating it if needed.
    pub(crate) fn update(
        &self,
        service: &Arc<str>,
        replica: u32,
        f: impl FnOnce(&mut ReplicaStatus),
    ) {
        let replicas = &self.inner.replicas;
        // The name is cloned only for a row not there yet (see `slot_key`).
        if let Some(mut row) = replicas.get_mut(&slot(service, replica) as &dyn SlotRef) {
            f(&mut row.value_mut().status);
            return;
        }
        let mut entry = replicas
            .entry((service.clone(), replica))
            .or_insert_with(|| Row {
                status: ReplicaStatus::new(replica),
                probes: None,
            });
        f(&mut entry.value_mut().status);
    }

    /// Change the status of `container`'s replica if the board still shows that
    /// incarnation; a late report of an incarnation that is gone changes nothing (and
    /// never brings back a row that was scaled away).
    pub(crate) fn update_incarnation(
        &self,
        container: &ContainerId,
        f: impl FnOnce(&mut ReplicaStatus),
    ) {
        let key = slot(&container.service, container.replica);
        if let Some(mut row) = self.inner.replicas.get_mut(&key as &dyn SlotRef) {
            if shows(&row.status, container.generation) {
                f(&mut row.value_mut().status);
            }
        }
    }

    /// The probe history of `container`: the one its replica's row shows if the row shows
    /// that incarnation (made and shown there if it has none yet, or only an earlier
    /// incarnation's, which stays visible until then); a log nobody reads if the
    /// incarnation is gone. A probe keeps it and writes to it without a board lookup.
    pub(crate) fn probe_log(&self, container: &ContainerId) -> Arc<ProbeLog> {
        let key = slot(&container.service, container.replica);
        if let Some(mut row) = self.inner.replicas.get_mut(&key as &dyn SlotRef) {
            if shows(&row.status, container.generation) {
                let generation = container.generation;
                let log = row
                    .probes
                    .take()
                    .filter(|log| log.generation == generation)
                    .unwrap_or_else(|| Arc::new(ProbeLog::new(generation)));
                row.probes = Some(log.clone());
                return log;
            }
        }
        Arc::new(ProbeLog::new(container.generation))
    }

    /// The health check counters of `service`, which its probes keep and count into; a
    /// detached set for a service the deployment no longer has.
    pub(crate) fn probe_counters(&self, service: &Arc<str>) -> Arc<ProbeCounters> {
        self.inner
            .services
            .get(service)
            .map(|m| m.probes.clone())
            .unwrap_or_default()
    }

    /// Forget a replica that was scaled away.
    pub(crate) fn remove(&self, service: &Arc<str>, replica: u32) {
        self.inner
            .replicas
            .remove(&slot(service, replica) as &dyn SlotRef);
    }

    /// Show the services in `order` (a new spec's), adding those not yet shown as
    /// `waiting`, and forget every service not in it with its replicas.
    pub(crate) fn set_services(&self, order: &[(Arc<str>, u32)]) {
        let names: Vec<Arc<str>> = order.iter().map(|(n, _)| n.clone()).collect();
        for (name, desired) in order {
            self.inner
                .services
                .entry(name.clone())
                .or_insert_with(|| ServiceMeta::waiting(*desired));
        }
        self.inner.services.retain(|n, _| names.contains(n));
        self.inner.replicas.retain(|(n, _), _| names.contains(n));
        *self
            .inner
            .order
            .write()
            .unwrap_or_else(PoisonError::into_inner) = names;
    }

    /// Forget the replicas of a removed service (its actors may have written to the board
    /// while they stopped), unless it has been added again meanwhile.
    pub(crate) fn forget_removed(&self, service: &Arc<str>) {
        let present = self
            .inner
            .order
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(service);
        if !present {
            self.inner.replicas.retain(|(n, _), _| n != service);
        }
    }

    /// Record the latest rollout's status.
    pub(crate) fn set_rollout(&self, rollout: Option<RolloutStatus>) {
        *self
            .inner
            .rollout
            .write()
            .unwrap_or_else(PoisonError::into_inner) = rollout;
    }

    /// The latest rollout's status.
    pub fn rollout(&self) -> Option<RolloutStatus> {
        self.inner
            .rollout
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the deployment has this service (one map lookup, no copy).
    pub fn has_service(&self, service: &str) -> bool {
        self.inner.services.contains_key(service)
    }

    /// One replica's status.
    pub fn replica(&self, service: &str, replica: u32) -> Option<ReplicaStatus> {
        self.inner
            .replicas
            .get(&(Arc::from(service), replica))
            .map(|r| r.value().status())
    }

    pub(crate) fn set_service(
        &self,
        service: &Arc<str>,
        phase: ServicePhase,
        reason: Option<String>,
    ) {
        if let Some(mut m) = self.inner.services.get_mut(service) {
            m.phase = phase;
            m.reason = reason;
        }
    }

    /// The desired replica count shown for `service`.
    pub(crate) fn desired_of(&self, service: &Arc<str>) -> Option<u32> {
        self.inner.services.get(service).map(|m| m.desired)
    }

    /// Forget the rows of `service` at `from` and above that show no live container
    /// (a service without a supervisor scaled down: nobody else would).
    pub(crate) fn forget_idle_from(&self, service: &Arc<str>, from: u32) {
        self.inner.replicas.retain(|(s, replica), r| {
            s != service
                || *replica < from
                || matches!(
                    r.status.state,
                    ReplicaState::Running | ReplicaState::Stopping
                )
        });
    }

    pub(crate) fn set_desired(&self, service: &Arc<str>, desired: u32) {
        if let Some(mut m) = self.inner.services.get_mut(service) {
            m.desired = desired;
        }
    }

    /// Every health check result of `service` since the deployment started; `None` for a
    /// service the deployment does not have.
    pub fn probe_totals(&self, service: &str) -> Option<ProbeTotals> {
        self.inner.services.get(service).map(|m| m.probes.totals())
    }

    pub(crate) fn set_stable(&self, stable: bool) {
        self.inner.stable.store(stable, Ordering::Release);
    }

    /// Whether the deployment is stable right now.
    pub fn is_stable(&self) -> bool {
        self.inner.stable.load(Ordering::Acquire)
    }

    /// How many replicas, over every service, satisfy `f`, counted in place: nothing is
    /// copied, so it is cheap enough to poll every second at 100,000 replicas (where a
    /// [`snapshot`](Self::snapshot) copies every status and its probe history). `f` sees
    /// each status without its probe history (`probes` is empty): the history is kept by
    /// the replica's probe and copied only by [`replica`](Self::replica) and `snapshot`.
    ///
    /// ```
    /// # fn demo(board: &herdsman_core::StatusBoard) {
    /// let ready = board.count_replicas(herdsman_core::ReplicaStatus::is_ready);
    /// # let _ = ready; }
    /// ```
    pub fn count_replicas(&self, mut f: impl FnMut(&ReplicaStatus) -> bool) -> usize {
        self.inner
            .replicas
            .iter()
            .filter(|r| f(&r.value().status))
            .count()
    }

    /// A copy of everything, services in spec order, replicas by index. Its `stable` never
    /// contradicts its rows: the deployment's verdict is read before the rows (which are
    /// written before the deployment hears of a change), and a verdict the rows do not
    /// bear out (a replica that turned unready a moment ago) reads as not stable.
    pub fn snapshot(&self) -> DeploymentStatus {
        let verdict = self.is_stable();
        let order = self
            .inner
            .order
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut services: Vec<ServiceStatus> = order
            .iter()
            .map(|name| {
                let meta = self.inner.services.get(name).map(|m| m.value().clone());
                let (phase, reason, desired) = meta
                    .map(|m| (m.phase, m.reason, m.desired))
                    .unwrap_or((ServicePhase::Stopped, None, 0));
                ServiceStatus {
                    name: name.to_string(),
                    phase,
                    reason,
                    desired,
                    running: 0,
                    healthy: 0,
                    replicas: Vec::new(),
                }
            })
            .collect();
        // By name in a map: a linear search per replica costs more than the copy at
        // 100,000 replicas over 100 services.
        let index: HashMap<&str, usize> = order
            .iter()
            .enumerate()
            .map(|(i, name)| (&**name, i))
            .collect();
        for r in self.inner.replicas.iter() {
            let (svc, _) = r.key();
            if let Some(&i) = index.get(&**svc) {
                services[i].replicas.push(r.value().status());
            }
        }
        for s in &mut services {
            s.replicas.sort_by_key(|r| r.replica);
            s.running = s.replicas.iter().filter(|r| r.state.is_running()).count() as u32;
            s.healthy = s.replicas.iter().filter(|r| r.is_ready()).count() as u32;
        }
        let rows_agree = services.iter().all(|s| {
            let ready = s
                .replicas
                .iter()
                .filter(|r| r.is_ready() || r.state == ReplicaState::Completed);
            s.desired == 0 || ready.count() >= s.desired as usize
        });
        DeploymentStatus {
            deployment: self.inner.deployment.to_string(),
            stable: verdict && rows_agree,
            services,
            rollout: self.rollout(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_match_their_json_form() {
        for state in ReplicaState::ALL {
            let json = serde_json::to_value(state).expect("serializable");
            assert_eq!(json.as_str(), Some(state.as_str()));
        }
    }

    #[test]
    fn probe_totals_count_each_outcome_and_add_up_durations() {
        let api: Arc<str> = Arc::from("api");
        let board = StatusBoard::new("shop".into(), &[(api.clone(), 2)]);
        let counters = board.probe_counters(&api);
        counters.record(&Outcome::Success, Duration::from_millis(2));
        counters.record(&Outcome::Success, Duration::from_millis(3));
        counters.record(&Outcome::Failure("503".into()), Duration::from_millis(5));
        counters.record(&Outcome::Unknown("spawn".into()), Duration::ZERO);
        board
            .probe_counters(&"ghost".into())
            .record(&Outcome::Success, Duration::from_secs(1));
        let totals = board.probe_totals("api").expect("api is a service");
        assert_eq!(
            (
                totals.success,
                totals.failure,
                totals.unknown,
                totals.count()
            ),
            (2, 1, 1, 4)
        );
        assert_eq!(totals.duration, Duration::from_millis(10));
        assert_eq!(board.probe_totals("ghost"), None);
    }

    fn probed(board: &StatusBoard, id: &ContainerId, at_ms: u64) {
        let result = CheckResult::new(Outcome::Failure("503".into()), Duration::ZERO, "");
        board.probe_log(id).push(ProbeRecord::new(at_ms, &result));
    }

    fn probes_shown(board: &StatusBoard) -> Vec<u64> {
        let shown = board.replica("api", 0).expect("the row exists");
        let snap = board.snapshot().services[0].replicas[0].probes.clone();
        assert_eq!(shown.probes, snap, "replica() and snapshot() agree");
        shown.probes.iter().map(|p| p.at_ms).collect()
    }

    #[test]
    fn a_row_shows_the_probe_history_of_its_current_incarnation_only() {
        let api: Arc<str> = Arc::from("api");
        let board = StatusBoard::new("shop".into(), &[(api.clone(), 1)]);
        let first = ContainerId::new("shop", "api", 0, 1);
        let second = ContainerId::new("shop", "api", 0, 2);
        board.update(&api, 0, |r| r.container = Some(first.clone()));
        // A probe takes its log once, when it starts, and writes through it.
        let first_probe = board.probe_log(&first);
        probed(&board, &first, 10);
        probed(&board, &first, 20);
        assert_eq!(probes_shown(&board), vec![10, 20]);

        // Restarted: the last incarnation's results stay shown until its probe starts,
        // and a last check of the old probe, finishing as it is stopped, joins them.
        board.update(&api, 0, |r| r.container = Some(second.clone()));
        assert_eq!(probes_shown(&board), vec![10, 20]);
        let result = CheckResult::new(Outcome::Failure("503".into()), Duration::ZERO, "");
        first_probe.push(ProbeRecord::new(25, &result));
        assert_eq!(probes_shown(&board), vec![10, 20, 25]);
        probed(&board, &first, 30);
        assert_eq!(
            probes_shown(&board),
            vec![10, 20, 25],
            "a probe of an ended incarnation that starts now writes to a log no row shows"
        );
        probed(&board, &second, 40);
        assert_eq!(probes_shown(&board), vec![40]);
        first_probe.push(ProbeRecord::new(45, &result));
        assert_eq!(
            probes_shown(&board),
            vec![40],
            "once the new probe started, the old one's writes are not shown"
        );
        assert!(
            Arc::ptr_eq(&board.probe_log(&second), &board.probe_log(&second)),
            "a probe started again keeps its incarnation's history"
        );
    }

    #[test]
    fn a_snapshot_is_stable_only_when_its_own_rows_are_ready() {
        let api: Arc<str> = Arc::from("api");
        let board = StatusBoard::new("shop".into(), &[(api.clone(), 2)]);
        for replica in 0..2 {
            board.update(&api, replica, |r| {
                r.state = ReplicaState::Running;
                r.healthy = true;
            });
        }
        board.set_stable(true);
        assert!(board.snapshot().stable);

        // A replica turned unready; the deployment has not heard of it yet.
        board.update(&api, 1, |r| r.healthy = false);
        assert!(board.is_stable(), "the verdict lags behind the row");
        let status = board.snapshot();
        assert_eq!(status.services[0].healthy, 1);
        assert!(
            !status.stable,
            "a snapshot never shows stable beside an unready row"
        );

        // Rows ready, verdict not (yet) given: not stable either.
        board.update(&api, 1, |r| r.healthy = true);
        board.set_stable(false);
        assert!(!board.snapshot().stable);
    }
}
