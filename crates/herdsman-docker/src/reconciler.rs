//! Exits across a lost daemon connection. A wait whose stream breaks (dockerd restarted,
//! socket gone) hands its exit sender here instead of dropping it; the reconciler pings
//! the daemon with backoff and, once it answers, re-lists the deployment's containers by
//! label: a container still running gets a new wait, an exited one reports its exit from
//! inspect, a vanished one reports an unknown exit. No exit is lost, none is invented.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bollard::models::ContainerSummaryStateEnum;
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use herdsman_runtime::{ContainerId, Exit, ExitReason, ExitSender};
use tokio::time::Instant;

use crate::container::LABEL_DEPLOYMENT;
use crate::waiter::{self, Waiter};

/// First pause before asking the daemon again.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Longest pause between pings.
const MAX_RETRY: Duration = Duration::from_secs(2);

/// One exit still owed to the tree.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) id: ContainerId,
    pub(crate) waiter: Waiter,
    pub(crate) tx: ExitSender,
}

/// Holds the senders of containers whose wait broke, until the daemon answers again.
#[derive(Debug)]
pub(crate) struct Reconciler {
    docker: Docker,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    pending: Vec<Pending>,
    running: bool,
}

impl Reconciler {
    pub(crate) fn new(docker: Docker) -> Arc<Reconciler> {
        Arc::new(Reconciler {
            docker,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Pushes and takes only; a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keep `pending` until the daemon answers; start the reconcile loop if idle.
    pub(crate) fn hand_over(self: &Arc<Self>, pending: Pending) {
        tracing::warn!(container = %pending.id, "lost the Docker daemon while waiting for an exit; reconciling");
        let mut state = self.state();
        state.pending.push(pending);
        if !state.running {
            state.running = true;
            tokio::spawn(self.clone().run());
        }
    }

    /// How many exits wait for the daemon to come back.
    pub(crate) fn owed(&self) -> usize {
        self.state().pending.len()
    }

    async fn run(self: Arc<Self>) {
        let mut delay = FIRST_RETRY;
        loop {
            tokio::time::sleep(delay).await;
            if self.docker.ping().await.is_err() {
                delay = (delay * 2).min(MAX_RETRY);
                continue;
            }
            let batch = {
                let mut state = self.state();
                if state.pending.is_empty() {
                    state.running = false;
                    return;
                }
                std::mem::take(&mut state.pending)
            };
            match self.listed(&batch).await {
                Ok(listed) => {
                    delay = FIRST_RETRY;
                    for pending in batch {
                        self.settle(pending, &listed);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list containers to reconcile; retrying");
                    self.state().pending.extend(batch);
                    delay = (delay * 2).min(MAX_RETRY);
                }
            }
        }
    }

    /// Name → running, for every container of the batch's deployments.
    async fn listed(
        &self,
        batch: &[Pending],
    ) -> Result<HashMap<String, bool>, bollard::errors::Error> {
        let deployments: HashSet<String> = batch
            .iter()
            .map(|p| format!("{LABEL_DEPLOYMENT}={}", p.id.deployment))
            .collect();
        let mut out = HashMap::new();
        for label in deployments {
            let filters = HashMap::from([("label", vec![label])]);
            let options = ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build();
            for c in self.docker.list_containers(Some(options)).await? {
                let running = c.state == Some(ContainerSummaryStateEnum::RUNNING);
                for name in c.names.unwrap_or_default() {
                    out.insert(name.trim_start_matches('/').to_string(), running);
                }
            }
        }
        Ok(out)
    }

    fn settle(self: &Arc<Self>, pending: Pending, listed: &HashMap<String, bool>) {
        let Pending { id, waiter, tx } = pending;
        match listed.get(&waiter.name) {
            None => {
                tracing::warn!(container = %id, "container vanished while the Docker daemon was away");
                let _ = tx.send(Exit {
                    reason: ExitReason::Unknown,
                    ran_for: Instant::now().saturating_duration_since(waiter.since),
                });
            }
            // Running: wait again. Exited: the new wait returns its stored exit at once.
            Some(_) => {
                tokio::spawn(waiter::watch(waiter, id, tx, self.clone()));
            }
        }
    }
}
