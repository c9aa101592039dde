//! One task per incarnation that turns the daemon's `wait` into the incarnation's exit.
//! Started after `start` (a `not-running` wait issued before start would return at once);
//! on an exited container it returns the stored exit code at once, so a re-armed wait
//! never misses an exit. A non-zero exit arrives as bollard's `DockerContainerWaitError`.

use std::sync::Arc;

use bollard::errors::Error;
use bollard::query_parameters::WaitContainerOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;
use herdsman_runtime::{ContainerId, Exit, ExitReason, ExitSender};
use tokio::time::Instant;

use crate::exit;
use crate::log_ring::LogRing;
use crate::reconciler::{Pending, Reconciler};

/// What a wait needs, kept together so a broken wait can be re-armed.
#[derive(Debug, Clone)]
pub(crate) struct Waiter {
    pub(crate) docker: Docker,
    pub(crate) name: String,
    pub(crate) logs: Arc<LogRing>,
    /// When herdsman saw it start (or adopted it): the fallback for `ran_for`.
    pub(crate) since: Instant,
}

/// Wait for the container to stop running and send its exit; hand the sender to the
/// reconciler if the daemon connection breaks first.
pub(crate) async fn watch(
    waiter: Waiter,
    id: ContainerId,
    tx: ExitSender,
    reconciler: Arc<Reconciler>,
) {
    let options = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    let outcome = waiter
        .docker
        .wait_container(&waiter.name, Some(options))
        .next()
        .await;
    let code = match outcome {
        Some(Ok(response)) => response.status_code,
        Some(Err(Error::DockerContainerWaitError { code, .. })) => code,
        Some(Err(Error::DockerResponseServerError {
            status_code: 404, ..
        })) => {
            // Removed behind herdsman's back: it ended, how is not known.
            let _ = tx.send(Exit {
                reason: ExitReason::Unknown,
                ran_for: waiter.since.elapsed(),
            });
            return;
        }
        _ => {
            reconciler.hand_over(Pending { id, waiter, tx });
            return;
        }
    };
    let _ = tx.send(exit_of(&waiter, code).await);
}

/// The exit, from inspect where the daemon still answers, else from the wait's code.
async fn exit_of(waiter: &Waiter, code: i64) -> Exit {
    let fallback = waiter.since.elapsed();
    let Ok(inspected) = waiter.docker.inspect_container(&waiter.name, None).await else {
        return exit::exit(code, false, None, fallback);
    };
    let Some(state) = inspected.state else {
        return exit::exit(code, false, None, fallback);
    };
    let oom = state.oom_killed == Some(true);
    if oom {
        waiter
            .logs
            .push("herdsman: the container was killed for running out of memory (OOM)".into());
    }
    let ran_for = exit::ran_for(state.started_at.as_deref(), state.finished_at.as_deref());
    exit::exit(state.exit_code.unwrap_or(code), oom, ran_for, fallback)
}
