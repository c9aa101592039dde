//! Every default of the spec, in one place: what a field is when the YAML leaves it out.
//!
//! docs/spec.md lists the same values; change both together. Validation reads these and
//! nothing else when a field is absent.

use std::time::Duration;

use crate::model::{
    Backoff, DependencyCondition, Network, OnUnhealthy, PanicAction, Protocol, PullPolicy,
    RestartPolicy, RestartSpec, ServiceKind, StepFailure, StopSignal,
};

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `rtype`.
pub(crate) const KIND: ServiceKind = ServiceKind::Service;

/// `restart.policy`: `always` for services, `on_failure` for jobs.
pub(crate) const fn restart_policy(kind: ServiceKind) -> RestartPolicy {
    match kind {
        ServiceKind::Service => RestartPolicy::Always,
        ServiceKind::Job => RestartPolicy::OnFailure,
    }
}

/// `image.pull_policy`.
pub(crate) const PULL_POLICY: PullPolicy = PullPolicy::IfNotPresent;
/// `network` (ext).
pub(crate) const NETWORK: Network = Network::Bridge;

/// `restart.max_restarts`.
pub(crate) const MAX_RESTARTS: u32 = 5;
/// `restart.window`.
pub(crate) const RESTART_WINDOW: Duration = secs(5 * 60);
/// `restart.backoff` (and `errors.on_init_failure.backoff`).
pub(crate) const BACKOFF: Backoff = Backoff {
    initial: secs(1),
    max: secs(60),
    multiplier: 2.0,
    jitter: 0.1,
};
/// `restart.reset_after`.
pub(crate) const RESET_AFTER: Duration = secs(10 * 60);
/// `restart.give_up_after`: never give up.
pub(crate) const GIVE_UP_AFTER: Option<u32> = None;

/// `health.start_grace`.
pub(crate) const START_GRACE: Duration = secs(0);
/// `health.start_interval` (ext).
pub(crate) const START_INTERVAL: Duration = secs(1);
/// `health.interval`.
pub(crate) const INTERVAL: Duration = secs(10);
/// `health.timeout`.
pub(crate) const TIMEOUT: Duration = secs(5);
/// `health.retries`.
pub(crate) const RETRIES: u32 = 3;
/// `health.success_threshold` (ext).
pub(crate) const SUCCESS_THRESHOLD: u32 = 1;
/// `health.on_unhealthy` (ext).
pub(crate) const ON_UNHEALTHY: OnUnhealthy = OnUnhealthy::Isolate;

/// An init step's `timeout`.
pub(crate) const STEP_TIMEOUT: Duration = secs(60);
/// An init step's `retry`.
pub(crate) const STEP_RETRY: u32 = 0;
/// An init step's `on_failure`.
pub(crate) const STEP_ON_FAILURE: StepFailure = StepFailure::Fail;

/// `errors.on_init_failure.max_retries` with `action: restart`.
pub(crate) const INIT_RESTART_MAX_RETRIES: u32 = 3;
/// `errors.on_init_failure.delay` with `action: restart`.
pub(crate) const INIT_RESTART_DELAY: Duration = secs(1);
/// `errors.on_init_failure.max_retries` with `action: backoff`.
pub(crate) const INIT_BACKOFF_MAX_RETRIES: u32 = 5;

/// `errors.on_panic.action`.
pub(crate) const ON_PANIC: PanicAction = PanicAction::Restart;

/// `stop_signal`.
pub(crate) const STOP_SIGNAL: StopSignal = StopSignal::TERM;
/// `stop_grace_period`.
pub(crate) const STOP_GRACE_PERIOD: Duration = secs(10);
/// `min_ready` (ext).
pub(crate) const MIN_READY: Duration = secs(0);

/// `update` (ext): rolling, one surge replica, none unavailable, no extra ready time, a
/// minute to make progress, revert automatically.
pub(crate) const UPDATE: crate::model::UpdateSpec = crate::model::UpdateSpec {
    strategy: crate::model::UpdateStrategy::Rolling,
    max_surge: crate::model::Amount::Count(1),
    max_unavailable: crate::model::Amount::Count(0),
    min_ready: secs(0),
    progress_deadline: secs(60),
    auto_revert: true,
};

/// A dependency's `condition`.
pub(crate) const CONDITION: DependencyCondition = DependencyCondition::Healthy;
/// A dependency's `timeout`.
pub(crate) const DEPENDENCY_TIMEOUT: Duration = secs(60);

/// `scale` absent, or `scale.mode` absent: `fixed`.
pub(crate) const FIXED_REPLICAS: u32 = 1;
/// `scale.replicas` in `manual` mode.
pub(crate) const MANUAL_REPLICAS: u32 = 0;

/// An endpoint's `protocol`.
pub(crate) const PROTOCOL: Protocol = Protocol::Http;

impl Default for Backoff {
    /// `{initial: 1s, max: 60s, multiplier: 2.0, jitter: 0.1}`.
    fn default() -> Backoff {
        BACKOFF
    }
}

impl RestartSpec {
    /// The `restart` section a spec gets when it leaves every field out.
    pub fn default_for(kind: ServiceKind) -> RestartSpec {
        RestartSpec {
            policy: restart_policy(kind),
            max_restarts: MAX_RESTARTS,
            window: RESTART_WINDOW,
            backoff: BACKOFF,
            reset_after: RESET_AFTER,
            give_up_after: GIVE_UP_AFTER,
        }
    }
}

impl crate::model::Service {
    /// A service as a spec that names only it (and its `rtype`) would give: one fixed
    /// replica, no endpoints, health check, init steps or dependencies, and every policy at
    /// its default. It has neither `image` nor `command`, which validation requires: set
    /// one. For building specs in code, e.g. `Service { command, ..Service::new("api",
    /// ServiceKind::Service) }`.
    pub fn new(name: impl Into<String>, kind: ServiceKind) -> crate::model::Service {
        crate::model::Service {
            name: name.into(),
            kind,
            image: None,
            pull_policy: PULL_POLICY,
            command: None,
            env: Default::default(),
            scale: crate::model::Scale::Fixed {
                replicas: FIXED_REPLICAS,
            },
            endpoints: Vec::new(),
            network: NETWORK,
            depends: Vec::new(),
            health: None,
            init: Vec::new(),
            on_init_failure: crate::model::InitFailurePolicy::Fail,
            on_panic: ON_PANIC,
            restart: RestartSpec::default_for(kind),
            stop_signal: STOP_SIGNAL,
            stop_grace_period: STOP_GRACE_PERIOD,
            min_ready: MIN_READY,
            update: UPDATE,
            placement: crate::model::Placement::default(),
        }
    }
}
