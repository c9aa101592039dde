//! Embedding herdsman in a host's own actor system: a `Host` actor spawns two deployments
//! linked under itself, receives their events as messages, and reacts — dropping isolated
//! replicas from its (pretend) load balancer, scaling a service once everything is
//! stable, and shutting both down in order.
//!
//! Run: `cargo run --example embed` (simulated containers, a few seconds).

use std::sync::Arc;
use std::time::Duration;

use herdsman::core::{
    spawn_deployment_linked, DeploymentHandle, DeploymentOptions, Event, EventKind, Received,
};
use herdsman::runtime::{FaultProfile, HealthBehaviour, Lifetime, SimRuntime};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

const SHOP: &str = r#"
version: v1
deployment: shop
services:
  api:
    image: {name: "shop/api:1.4"}
    scale: {mode: fixed, replicas: 3}
    health:
      interval: 500ms
      retries: 2
      check: {type: command, command: "true"}
    restart: {max_restarts: 2, window: 10s, backoff: {initial: 200ms, max: 1s}}
    errors: {on_panic: {action: isolate}}
"#;

const BILLING: &str = r#"
version: v1
deployment: billing
services:
  worker:
    image: {name: "billing/worker:2"}
    scale: {mode: fixed, replicas: 2}
"#;

enum HostMsg {
    /// An event from one of the embedded deployments.
    Deployment(Event),
    /// Stop both deployments, then answer.
    Finish(RpcReplyPort<Vec<String>>),
}

// Local only: never sent to another node, so it is not serializable.
herdsman::core::local_message!(HostMsg);

struct HostState {
    deployments: Vec<DeploymentHandle>,
    in_rotation: std::collections::BTreeSet<(String, u32)>,
    stable: usize,
    scaled: bool,
    log: Vec<String>,
}

struct Host {
    runtime: Arc<SimRuntime>,
}

impl Actor for Host {
    type Msg = HostMsg;
    type State = HostState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _me: ActorRef<HostMsg>,
        _: (),
    ) -> Result<HostState, ActorProcessingErr> {
        Ok(HostState {
            deployments: Vec::new(),
            in_rotation: Default::default(),
            stable: 0,
            scaled: false,
            log: Vec::new(),
        })
    }

    async fn post_start(
        &self,
        me: ActorRef<HostMsg>,
        state: &mut HostState,
    ) -> Result<(), ActorProcessingErr> {
        for yaml in [SHOP, BILLING] {
            let spec = herdsman::spec::parse_str(yaml, "embedded.yaml", ".".as_ref())?;
            let handle = spawn_deployment_linked(
                spec,
                self.runtime.clone(),
                DeploymentOptions::default(),
                me.get_cell(),
            )
            .await?;
            // Forward the deployment's events into this actor's mailbox.
            let mut events = handle.subscribe();
            let to_host = me.clone();
            tokio::spawn(async move {
                while let Some(r) = events.recv().await {
                    if let Received::Event(e) = r {
                        if to_host.cast(HostMsg::Deployment(e)).is_err() {
                            break;
                        }
                    }
                }
            });
            state.deployments.push(handle);
        }
        Ok(())
    }

    async fn handle(
        &self,
        _me: ActorRef<HostMsg>,
        msg: HostMsg,
        state: &mut HostState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HostMsg::Deployment(e) => state.react(e).await,
            HostMsg::Finish(reply) => {
                for d in state.deployments.iter().rev() {
                    d.shutdown().await?;
                }
                let _ = reply.send(std::mem::take(&mut state.log));
            }
        }
        Ok(())
    }

    /// The deployments are linked under the host: a deployment actor that fails is
    /// reported here instead of taking the host down.
    async fn handle_supervisor_evt(
        &self,
        _me: ActorRef<HostMsg>,
        evt: SupervisionEvent,
        state: &mut HostState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, err) = evt {
            state
                .log
                .push(format!("deployment actor {} failed: {err}", cell.get_id()));
        }
        Ok(())
    }
}

impl HostState {
    async fn react(&mut self, e: Event) {
        let d = e.deployment.to_string();
        match e.kind {
            EventKind::ReplicaStarted {
                service, replica, ..
            } => {
                self.in_rotation.insert((format!("{d}/{service}"), replica));
            }
            EventKind::Isolated {
                service,
                replica,
                reason,
            } => {
                self.in_rotation
                    .remove(&(format!("{d}/{service}"), replica));
                self.log.push(format!(
                    "{d}/{service}-{replica} isolated ({reason}): dropped from the load balancer"
                ));
            }
            EventKind::ReplicaRestarting {
                service,
                replica,
                delay_ms,
                ..
            } => {
                self.log.push(format!(
                    "{d}/{service}-{replica} restarting in {delay_ms} ms"
                ));
            }
            EventKind::DeploymentStable { after_ms } => {
                self.stable += 1;
                self.log.push(format!("{d} stable after {after_ms} ms"));
                if d == "billing" && self.stable >= 2 && !self.scaled {
                    self.scaled = true;
                    if let Some(billing) = self.deployments.get(1) {
                        if billing.scale("worker", 4).await.is_ok() {
                            self.log.push("billing/worker scaled to 4".into());
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = Arc::new(SimRuntime::new(42));
    // The api crashes every second or so; its panic action isolates the crashed replica.
    runtime.set_profile(
        "api",
        FaultProfile {
            lifetime: Lifetime::Exponential {
                mean: Duration::from_secs(2),
            },
            health: HealthBehaviour::HealthyAfter(Duration::from_millis(300)),
            ..FaultProfile::default()
        },
    );
    runtime.set_profile(
        "worker",
        FaultProfile {
            lifetime: Lifetime::Exponential {
                mean: Duration::from_millis(800),
            },
            ..FaultProfile::default()
        },
    );
    let (host, join) = Actor::spawn(
        None,
        Host {
            runtime: runtime.clone(),
        },
        (),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = host
        .call(HostMsg::Finish, Some(Duration::from_secs(30)))
        .await?
        .success_or("host did not answer")?;
    for line in &log {
        println!("{line}");
    }
    println!(
        "containers still running after shutdown: {}",
        runtime.running().len()
    );
    host.stop(None);
    join.await?;
    Ok(())
}
