//! The agent: joins a coordinator, reports its replicas with every heartbeat and on every
//! change, runs what it is assigned, stops everything when fenced, and keeps supervising
//! (and reconnecting with backoff) while the coordinator is away.

use std::collections::BTreeMap;
use std::time::Duration;

use ractor::{ActorRef, MessagingErr, RactorErr};
use ractor_cluster::node::client::ClientConnectErr;
use ractor_cluster::NodeServerMessage;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::node_server::{SessionEvent, COORDINATOR_GROUP, SCOPE};
use crate::node_worker::NodeWorker;
use crate::wire::{Assignment, CoordinatorMsg, NodeReport, Wire};
use crate::NodeTls;

/// First reconnect delay; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest reconnect delay.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// An agent's settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Its name.
    pub node: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The coordinator's address.
    pub join: String,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Join over mutual TLS with these settings (`None`: a plain session).
    pub tls: Option<NodeTls>,
}

/// What the agent tells its operator (the CLI prints it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentNotice {
    /// Joined the coordinator.
    Joined,
    /// The coordinator refused the session: a wrong cookie, TLS on one side only, or a
    /// certificate one side does not trust.
    Refused {
        /// The coordinator's address.
        peer: String,
        /// What is known of why.
        why: String,
    },
    /// The coordinator is gone; replicas keep running, reconnecting.
    CoordinatorLost,
    /// Fenced: everything it ran was stopped, it runs the new epoch's share.
    Fenced {
        /// The new epoch.
        epoch: u64,
    },
}

/// Run the agent until `stop` resolves; returns the worker so the caller can stop what
/// it runs.
pub async fn run_agent(
    config: AgentConfig,
    server: ActorRef<NodeServerMessage>,
    mut sessions: mpsc::UnboundedReceiver<SessionEvent>,
    mut worker: NodeWorker,
    notices: mpsc::UnboundedSender<AgentNotice>,
    stop: impl std::future::Future,
) -> NodeWorker {
    tokio::pin!(stop);
    let mut membership = Membership::default();
    let mut backoff = FIRST_BACKOFF;
    let mut next_connect = Instant::now();
    let mut joined = false;
    // One subscription per local deployment, kept across iterations so that no change
    // between two reports goes unreported until the next heartbeat.
    let mut events: Option<(u64, herdsman_core::EventStream)> = None;
    loop {
        let coordinator = find_coordinator();
        match &coordinator {
            None => {
                if joined {
                    joined = false;
                    let _ = notices.send(AgentNotice::CoordinatorLost);
                }
                if Instant::now() >= next_connect {
                    if let Err(why) = connect(&server, &config).await {
                        let _ = notices.send(AgentNotice::Refused {
                            peer: config.join.clone(),
                            why,
                        });
                    }
                    next_connect = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            Some(c) => {
                let report = membership.report(&config, &worker);
                tracing::info!(target: crate::coordinator::LATENCY, stable = report.stable, "report sent");
                let timeout = u64::try_from(config.heartbeat.as_millis())
                    .unwrap_or(1000)
                    .max(200);
                match ractor::call_t!(c, CoordinatorMsg::Report, timeout, Wire::Known(report)) {
                    Ok(Wire::Known(assignment)) => {
                        if !joined {
                            joined = true;
                            backoff = FIRST_BACKOFF;
                            let _ = notices.send(AgentNotice::Joined);
                        }
                        if let Some(epoch) = membership.apply(&mut worker, &assignment).await {
                            let _ = notices.send(AgentNotice::Fenced { epoch });
                        }
                    }
                    Ok(Wire::Unreadable(why)) => {
                        tracing::warn!(%why, "unreadable assignment");
                    }
                    Err(RactorErr::Messaging(MessagingErr::SendErr(_))) | Err(_) => {
                        tracing::debug!("no answer from the coordinator");
                    }
                }
            }
        }
        let wait = if coordinator.is_some() {
            config.heartbeat
        } else {
            Duration::from_millis(50)
        };
        if events.as_ref().map(|(i, _)| *i) != Some(worker.incarnation()) {
            events = worker.subscribe().map(|e| (worker.incarnation(), e));
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            Some(e) = sessions.recv() => match e {
                SessionEvent::Closed { peer, authenticated: false } => {
                    let why = if config.tls.is_some() {
                        "the session closed before authenticating (a wrong cookie, or the coordinator does not trust this node's certificate or does not use TLS)"
                    } else {
                        "authentication failed (a wrong cookie, or the coordinator requires TLS)"
                    };
                    let _ = notices.send(AgentNotice::Refused { peer, why: why.into() });
                }
                SessionEvent::Refused { peer, why } => {
                    tracing::warn!(%peer, %why, "refused an incoming node session");
                }
                _ => {}
            },
            received = async {
                match &mut events {
                    Some((_, e)) => e.recv().await,
                    None => std::future::pending().await,
                }
            }, if coordinator.is_some() => {
                if let Some(herdsman_core::Received::Event(e)) = received {
                    if matches!(e.kind, herdsman_core::EventKind::HealthChanged { healthy: true, .. }) {
                        // For the benchmark's cluster rows: when the agent hears of it.
                        tracing::info!(target: crate::coordinator::LATENCY, "replica healthy");
                    }
                }
                await_verdict(&worker, &mut events).await;
            }
            _ = &mut stop => return worker,
        }
    }
}

/// How long a report waits for the node's own stability verdict once every replica it
/// runs is ready.
const VERDICT_WAIT: Duration = Duration::from_millis(20);

/// When every replica this node runs is ready but its deployment has not yet said it is
/// stable, that verdict is on its way (the deployment actor gives it just after the
/// health event the agent woke for). A report now would tell the coordinator rows it
/// cannot call stable yet, and the report that can would wait behind its round trip:
/// wait for the next event (the verdict, usually within microseconds), at most
/// [`VERDICT_WAIT`], and send one report with both.
async fn await_verdict(
    worker: &NodeWorker,
    events: &mut Option<(u64, herdsman_core::EventStream)>,
) {
    let deadline = Instant::now() + VERDICT_WAIT;
    while verdict_pending(worker) {
        let Some((_, stream)) = events.as_mut() else {
            return;
        };
        match tokio::time::timeout_at(deadline, stream.recv()).await {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
}

/// Every replica is running and healthy, and the local verdict is not (yet) stable.
fn verdict_pending(worker: &NodeWorker) -> bool {
    let (rows, stable) = worker.rows();
    !stable
        && !rows.is_empty()
        && rows
            .iter()
            .all(|r| r.status.state == herdsman_core::ReplicaState::Running && r.status.healthy)
}

/// Open a session to the coordinator, over TLS when configured. `Err` says why the
/// coordinator refused it (a failed TLS handshake); an unreachable coordinator is only
/// logged, since it is expected while it restarts.
async fn connect(server: &ActorRef<NodeServerMessage>, config: &AgentConfig) -> Result<(), String> {
    let result = match &config.tls {
        None => ractor_cluster::client_connect(server, config.join.as_str()).await,
        Some(tls) => {
            let name = crate::server_name(&config.join).map_err(|e| e.to_string())?;
            ractor_cluster::client_connect_enc(server, config.join.as_str(), tls.connector(), name)
                .await
        }
    };
    match result {
        Ok(()) => Ok(()),
        Err(ClientConnectErr::Encryption(e)) => Err(format!("TLS handshake failed: {e}")),
        Err(e) => {
            tracing::debug!(error = %e, "cannot reach the coordinator");
            Ok(())
        }
    }
}

/// What a node knows of its place in the cluster: the epoch of the assignment it runs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    epoch: u64,
}

impl Membership {
    /// The epoch it runs under (0: none yet).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Its report: what `worker` runs, under its epoch.
    pub fn report(&self, config: &AgentConfig, worker: &NodeWorker) -> NodeReport {
        let (rows, stable) = worker.rows();
        NodeReport {
            node: config.node.clone(),
            labels: config.labels.clone(),
            epoch: self.epoch,
            deployment: None,
            slots: worker.slots(),
            rows,
            stable,
        }
    }

    /// Carry out an assignment. An epoch other than its own means it was fenced (its
    /// work was given to others while it was away): it stops everything it runs before
    /// it takes the new share, and the new epoch is returned.
    pub async fn apply(&mut self, worker: &mut NodeWorker, assignment: &Assignment) -> Option<u64> {
        let mut fenced = None;
        if assignment.epoch != self.epoch {
            if self.epoch != 0 {
                worker.stop_all().await;
                fenced = Some(assignment.epoch);
            }
            self.epoch = assignment.epoch;
        }
        if let Some(spec) = &assignment.deployment {
            if let Err(e) = worker.apply(spec, &assignment.slots).await {
                tracing::warn!(error = %e, "cannot run this node's share");
            }
        }
        fenced
    }
}

/// The coordinator's actor on another node, once a session to it is ready.
fn find_coordinator() -> Option<ActorRef<CoordinatorMsg>> {
    ractor::pg::get_scoped_members(&SCOPE.to_string(), &COORDINATOR_GROUP.to_string())
        .into_iter()
        .find(|c| !c.get_id().is_local())
        .map(ActorRef::from)
}
