//! The coordinator: the remote-visible actor agents report to, over the shared
//! [`ClusterView`], and the loop that runs the coordinator's own share of the slots.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cluster_view::ClusterView;
use crate::node_server::{COORDINATOR_GROUP, SCOPE};
use crate::node_worker::NodeWorker;
use crate::wire::{CoordinatorMsg, NodeReport, Wire};
use crate::ClusterError;

/// The log target of the timestamps along the path from a replica's health to the
/// coordinator's verdict (for the benchmark's cluster rows; off unless asked for).
pub(crate) const LATENCY: &str = "herdsman_cluster::latency";

/// The view, shared by the actor, the local node and the API. Locked briefly, never
/// across an await.
#[derive(Clone)]
pub struct SharedView {
    view: Arc<Mutex<ClusterView>>,
    // A version, not a `Notify`: `notify_waiters` wakes only the waits already begun, so
    // a change made while a loop was between two waits went unseen until its next tick
    // (up to 20 ms on the coordinator's stability check). A watch remembers it.
    changed: Arc<watch::Sender<u64>>,
}

/// One waiter's place in the view's changes: every change after it last looked wakes it.
pub struct ViewChanges(watch::Receiver<u64>);

impl ViewChanges {
    /// Wait until the view has changed since this was created or last woke.
    ///
    /// # Cancel safety
    /// Cancel safe: a change seen by a cancelled wait is still reported by the next.
    pub async fn changed(&mut self) {
        if self.0.changed().await.is_err() {
            // Every sender is gone: nothing will change again.
            std::future::pending::<()>().await;
        }
    }
}

impl SharedView {
    /// Share `view`.
    pub fn new(view: ClusterView) -> SharedView {
        SharedView {
            view: Arc::new(Mutex::new(view)),
            changed: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Lock it.
    pub fn lock(&self) -> MutexGuard<'_, ClusterView> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tell every waiter the view changed.
    pub fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Follow the changes from now on.
    pub fn subscribe(&self) -> ViewChanges {
        ViewChanges(self.changed.subscribe())
    }
}

/// The coordinator actor: answers reports with assignments.
pub struct CoordinatorActor;

impl Actor for CoordinatorActor {
    type Msg = CoordinatorMsg;
    type State = SharedView;
    type Arguments = SharedView;

    async fn pre_start(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        view: SharedView,
    ) -> Result<SharedView, ActorProcessingErr> {
        ractor::pg::join_scoped(
            SCOPE.into(),
            COORDINATOR_GROUP.into(),
            vec![myself.get_cell()],
        );
        Ok(view)
    }

    async fn handle(
        &self,
        _myself: ActorRef<CoordinatorMsg>,
        msg: CoordinatorMsg,
        view: &mut SharedView,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CoordinatorMsg::Report(Wire::Known(report), reply) => {
                tracing::info!(target: LATENCY, node = %report.node, "report received");
                let assignment = view.lock().report(Instant::now(), report);
                view.notify();
                tracing::info!(target: LATENCY, "view updated");
                let _ = reply.send(Wire::Known(assignment));
            }
            CoordinatorMsg::Report(Wire::Unreadable(why), _) => {
                tracing::warn!(%why, "unreadable report from a node; not answered");
            }
        }
        Ok(())
    }
}

/// Start the coordinator actor over `view`.
///
/// # Errors
/// [`ClusterError::Spawn`] if the actor cannot start.
pub async fn start_coordinator(view: SharedView) -> Result<ActorRef<CoordinatorMsg>, ClusterError> {
    let (actor, _) = Actor::spawn(None, CoordinatorActor, view)
        .await
        .map_err(|source| ClusterError::Spawn {
            what: "coordinator",
            source,
        })?;
    Ok(actor)
}

/// Check leases every `tick` until `stop` resolves, sending what happened to `events`.
pub async fn keep_leases(
    view: SharedView,
    tick: Duration,
    events: tokio::sync::mpsc::UnboundedSender<crate::ViewEvent>,
    stop: impl std::future::Future,
) {
    let mut every = tokio::time::interval(tick);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = every.tick() => {
                let happened = {
                    let mut v = view.lock();
                    v.tick(Instant::now());
                    v.take_events()
                };
                if !happened.is_empty() {
                    view.notify();
                }
                for e in happened {
                    let _ = events.send(e);
                }
            }
            _ = &mut stop => return,
        }
    }
}

/// Run the coordinator's own share: report its replicas to the view directly and apply
/// what the view assigns it, on every change and every `heartbeat`, until `stop`.
pub async fn run_local_node(
    view: SharedView,
    mut worker: NodeWorker,
    node: String,
    heartbeat: Duration,
    stop: impl std::future::Future,
) -> NodeWorker {
    let mut epoch = 0;
    let deployment = view.lock().spec().name.clone();
    // A restarted coordinator takes back the replicas it left running.
    let survivors = worker.survivor_slots(&deployment).await;
    if !survivors.is_empty() {
        let spec = view.lock().spec().clone();
        if let Err(e) = worker.apply(&spec, &survivors).await {
            tracing::warn!(error = %e, "cannot adopt this node's replicas");
        }
        epoch = 1;
    }
    tokio::pin!(stop);
    let mut changes = view.subscribe();
    loop {
        let (rows, stable) = worker.rows();
        let report = NodeReport {
            node: node.clone(),
            labels: Default::default(),
            epoch,
            deployment: Some(deployment.clone()),
            slots: worker.slots(),
            rows,
            stable,
        };
        let assignment = view.lock().report(Instant::now(), report);
        if assignment.epoch != epoch {
            epoch = assignment.epoch;
        }
        if let Some(spec) = &assignment.deployment {
            if let Err(e) = worker.apply(spec, &assignment.slots).await {
                tracing::warn!(error = %e, "cannot run this node's share");
            }
        }
        let mut events = worker.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(heartbeat) => {}
            _ = changes.changed() => {}
            _ = async {
                match &mut events {
                    Some(e) => { e.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
            _ = &mut stop => return worker,
        }
    }
}
