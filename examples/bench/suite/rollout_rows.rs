//! The rollout row: a running deployment rolled to a changed spec on `SimRuntime`, beside
//! starting the same number of replicas from nothing.

use std::sync::Arc;
use std::time::Duration;

use herdsman::core::{spawn_deployment, DeploymentOptions, EventKind, Received};
use herdsman::runtime::SimRuntime;
use herdsman::spec::Amount;
use tokio::time::Instant;

use super::fixtures::{bounded, deployment, service, shutdown, stable};

const PATIENCE: Duration = Duration::from_secs(120);

/// `rounds` times: `n` replicas started from nothing until stable (the floor), then
/// rolled to a new image with `max_surge: 10%` until `RolloutComplete` is received.
pub(crate) async fn rollout(n: u32, rounds: usize) -> (Vec<Duration>, Vec<Duration>) {
    let mut rolled = Vec::with_capacity(rounds);
    let mut fresh = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let sim = Arc::new(SimRuntime::new(round as u64));
        let mut v1 = service("svc", n);
        v1.update.max_surge = Amount::Percent(10);
        let mut v2 = v1.clone();
        v2.image = Some("bench/svc:2".into());
        let t0 = Instant::now();
        let options = DeploymentOptions {
            event_capacity: 1 << 16,
            ..DeploymentOptions::default()
        };
        let handle = spawn_deployment(deployment(vec![v1]), sim.clone(), options)
            .await
            .expect("deployment spawns");
        stable(&handle, PATIENCE).await;
        fresh.push(t0.elapsed());
        let mut events = handle.subscribe();
        let t1 = Instant::now();
        let plan = handle
            .apply(deployment(vec![v2]), false)
            .await
            .expect("apply");
        let revision = plan.revision;
        bounded("rollout complete", PATIENCE, async {
            while let Some(r) = events.recv().await {
                match r {
                    Received::Event(e) => match e.kind {
                        EventKind::RolloutComplete { revision: r } if r == revision => return,
                        EventKind::RolloutFailed { reason, .. } => {
                            panic!("the bench rollout failed: {reason}")
                        }
                        _ => {}
                    },
                    Received::Missed(_) => {}
                }
            }
            panic!("the event stream ended");
        })
        .await;
        rolled.push(t1.elapsed());
        shutdown(&handle).await;
        assert!(sim.running().is_empty(), "containers left after shutdown");
    }
    (rolled, fresh)
}
