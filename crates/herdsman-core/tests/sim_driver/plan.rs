//! The deployment a seed runs: two or three small services whose policies (kind, health,
//! init steps, panic action, restart window, give-up, grace, dependency) are drawn from
//! the seed, so the schedules meet every policy path.

use std::time::Duration;

use herdsman_spec::{
    Backoff, Check, Dependency, DependencyCondition, Deployment, Health, InitAction,
    InitFailurePolicy, InitStep, OnUnhealthy, PanicAction, RestartPolicy, RestartSpec, Scale,
    Service, ServiceKind, StepFailure, Template,
};
use rand::rngs::SmallRng;
use rand::Rng;

/// Most replicas a service is scaled to.
pub const MAX_REPLICAS: u32 = 4;
/// Timeout of every init step; a slow init try takes longer and times out at it.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(5);
/// The deployment's name.
pub const DEPLOYMENT: &str = "sim";

const NAMES: [&str; 3] = ["a", "b", "c"];

fn pick<T: Copy>(rng: &mut SmallRng, weighted: &[(T, u32)]) -> T {
    let total: u32 = weighted.iter().map(|(_, w)| w).sum();
    let mut n = rng.random_range(0..total);
    for (v, w) in weighted {
        if n < *w {
            return *v;
        }
        n -= w;
    }
    weighted[0].0
}

/// One service, with policies drawn from `rng`.
fn service(rng: &mut SmallRng, name: &str, index: usize) -> Service {
    let kind = pick(rng, &[(ServiceKind::Service, 85), (ServiceKind::Job, 15)]);
    let policy = match kind {
        ServiceKind::Job => pick(
            rng,
            &[(RestartPolicy::OnFailure, 80), (RestartPolicy::Never, 20)],
        ),
        ServiceKind::Service => pick(
            rng,
            &[
                (RestartPolicy::Always, 80),
                (RestartPolicy::OnFailure, 10),
                (RestartPolicy::Never, 10),
            ],
        ),
    };
    let health = rng.random_bool(0.5).then(|| Health {
        start_grace: Duration::ZERO,
        start_interval: Duration::from_secs(1),
        interval: Duration::from_secs(3),
        timeout: Duration::from_millis(500),
        retries: 2,
        success_threshold: 1,
        on_unhealthy: pick(
            rng,
            &[
                (OnUnhealthy::Isolate, 40),
                (OnUnhealthy::Restart, 45),
                (OnUnhealthy::None, 15),
            ],
        ),
        check: Check::Command {
            command: Template::literal("true"),
        },
    });
    let init = if rng.random_bool(0.35) {
        vec![InitStep {
            id: "migrate".into(),
            action: InitAction::Run {
                command: Template::literal("./migrate"),
            },
            timeout: INIT_TIMEOUT,
            retry: rng.random_range(0..=1),
            on_failure: StepFailure::Fail,
        }]
    } else {
        Vec::new()
    };
    let on_init_failure = pick(
        rng,
        &[
            (InitFailurePolicy::Fail, 30),
            (
                InitFailurePolicy::Restart {
                    max_retries: 2,
                    delay: Duration::from_secs(1),
                },
                35,
            ),
            (
                InitFailurePolicy::Backoff {
                    max_retries: 3,
                    backoff: Backoff {
                        initial: Duration::from_millis(500),
                        max: Duration::from_secs(4),
                        multiplier: 2.0,
                        jitter: 0.0,
                    },
                },
                35,
            ),
        ],
    );
    let depends = if index > 0 && rng.random_bool(0.2) {
        vec![Dependency {
            service: NAMES[0].to_string(),
            condition: pick(
                rng,
                &[
                    (DependencyCondition::Started, 50),
                    (DependencyCondition::Healthy, 50),
                ],
            ),
            timeout: Duration::from_secs(rng.random_range(5..=20)),
        }]
    } else {
        Vec::new()
    };
    Service {
        image: Some(format!("sim/{name}:1")),
        scale: Scale::Fixed {
            replicas: rng.random_range(1..=MAX_REPLICAS),
        },
        health,
        init,
        on_init_failure,
        depends,
        on_panic: pick(
            rng,
            &[
                (PanicAction::Restart, 75),
                (PanicAction::Isolate, 15),
                (PanicAction::Shutdown, 10),
            ],
        ),
        restart: RestartSpec {
            policy,
            max_restarts: rng.random_range(1..=3),
            window: Duration::from_secs(10),
            backoff: Backoff {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(4),
                multiplier: 2.0,
                jitter: if rng.random_bool(0.5) { 0.0 } else { 0.1 },
            },
            reset_after: Duration::from_secs(rng.random_range(5..=20)),
            give_up_after: rng.random_bool(0.3).then(|| rng.random_range(2..=4)),
        },
        stop_grace_period: Duration::from_secs(rng.random_range(1..=5)),
        ..Service::new(name, kind)
    }
}

/// The deployment for one seed.
pub fn deployment(rng: &mut SmallRng) -> Deployment {
    let n = rng.random_range(2..=3);
    Deployment {
        name: DEPLOYMENT.to_string(),
        services: NAMES[..n]
            .iter()
            .enumerate()
            .map(|(i, name)| service(rng, name, i))
            .collect(),
    }
}
