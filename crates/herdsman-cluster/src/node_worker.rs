//! The replicas one node runs: a herdsman-core deployment on the node's own runtime for
//! exactly the slots assigned to it, numbered with their global indices.

use std::sync::Arc;

use herdsman_core::{spawn_deployment, DeploymentHandle, DeploymentOptions, EventStream};
use herdsman_runtime::Runtime;
use herdsman_spec::{Deployment, Scale};

use crate::slot_runtime::SlotRuntime;
use crate::wire::{Row, Slots};
use crate::ClusterError;

struct Running {
    handle: DeploymentHandle,
    spec: Deployment,
    slots: Slots,
}

/// A node's local share of the deployment.
pub struct NodeWorker {
    /// Counts the local deployments spawned, so a subscriber knows when to subscribe
    /// again.
    spawned: u64,
    runtime: SlotRuntime,
    options: DeploymentOptions,
    running: Option<Running>,
}

impl NodeWorker {
    /// A worker running nothing yet on `runtime`.
    pub fn new(runtime: Arc<dyn Runtime>, options: DeploymentOptions) -> NodeWorker {
        NodeWorker {
            spawned: 0,
            runtime: SlotRuntime::new(runtime),
            options,
            running: None,
        }
    }

    /// The slots of `deployment` an earlier run on this node left running (its
    /// runtime's survivors), so a restarted node can take them back instead of
    /// starting over.
    pub async fn survivor_slots(&self, deployment: &str) -> Slots {
        let mut slots = Slots::new();
        if let Ok(found) = self.runtime.inner().survivors(deployment).await {
            for s in found {
                let v: &mut Vec<u32> = slots.entry(s.id.service.to_string()).or_default();
                if !v.contains(&s.id.replica) {
                    v.push(s.id.replica);
                }
            }
        }
        for v in slots.values_mut() {
            v.sort_unstable();
        }
        slots
    }

    /// The slots it runs now.
    pub fn slots(&self) -> Slots {
        self.running
            .as_ref()
            .map(|r| r.slots.clone())
            .unwrap_or_default()
    }

    /// Run `slots` of `spec`. Slots added at the end of a service's list are started
    /// beside the running ones; any other change (a slot taken away, a new spec) stops
    /// the local deployment and starts the new share.
    ///
    /// # Errors
    /// The new local deployment could not start.
    pub async fn apply(&mut self, spec: &Deployment, slots: &Slots) -> Result<(), ClusterError> {
        let slots: Slots = slots
            .iter()
            .filter(|(s, v)| !v.is_empty() && spec.service(s).is_some())
            .map(|(s, v)| (s.clone(), v.clone()))
            .collect();
        if let Some(r) = &mut self.running {
            if &r.spec == spec && r.slots == slots {
                return Ok(());
            }
            // Only services it already runs can grow in place.
            let grows = &r.spec == spec
                && slots.keys().all(|s| r.slots.contains_key(s))
                && r.slots
                    .iter()
                    .all(|(s, v)| slots.get(s).is_some_and(|new| new.starts_with(v)));
            if grows {
                self.runtime.set_slots(&slots);
                for (service, v) in &slots {
                    let before = r.slots.get(service).map_or(0, Vec::len);
                    if v.len() != before {
                        let n = u32::try_from(v.len()).unwrap_or(u32::MAX);
                        r.handle
                            .scale(service, n)
                            .await
                            .map_err(ClusterError::Deployment)?;
                    }
                }
                r.slots = slots;
                return Ok(());
            }
        }
        self.stop_all().await;
        if slots.is_empty() {
            return Ok(());
        }
        self.runtime.set_slots(&slots);
        let local = local_spec(spec, &slots);
        let runtime: Arc<dyn Runtime> = Arc::new(self.runtime.clone());
        let handle = spawn_deployment(local, runtime, self.options.clone())
            .await
            .map_err(ClusterError::Deployment)?;
        self.spawned += 1;
        self.running = Some(Running {
            handle,
            spec: spec.clone(),
            slots,
        });
        Ok(())
    }

    /// Stop every replica it runs (gracefully) and forget its share.
    pub async fn stop_all(&mut self) {
        if let Some(r) = self.running.take() {
            if let Err(e) = r.handle.shutdown().await {
                tracing::warn!(error = %e, "stopping the local deployment");
            }
        }
        self.runtime.set_slots(&Slots::new());
    }

    /// Its replicas, by global index, and whether its deployment is stable.
    pub fn rows(&self) -> (Vec<Row>, bool) {
        let Some(r) = &self.running else {
            return (Vec::new(), true);
        };
        let status = r.handle.status();
        let mut rows = Vec::new();
        for service in status.services {
            for mut replica in service.replicas {
                let Some(g) = self.runtime.global(&service.name, replica.replica) else {
                    continue;
                };
                replica.replica = g;
                if let Some(id) = &mut replica.container {
                    id.replica = g;
                }
                rows.push(Row {
                    service: service.name.clone(),
                    status: replica,
                });
            }
        }
        (rows, status.stable)
    }

    /// Which local deployment runs now: changes whenever a new one is spawned.
    pub fn incarnation(&self) -> u64 {
        self.spawned
    }

    /// Events of its deployment (none while it runs nothing).
    pub fn subscribe(&self) -> Option<EventStream> {
        self.running.as_ref().map(|r| r.handle.subscribe())
    }
}

/// The spec a node runs for its share: each service with as many replicas as it has
/// slots here (fixed), services without slots left out, and no dependencies (the
/// services they name may run on other nodes).
fn local_spec(spec: &Deployment, slots: &Slots) -> Deployment {
    let services = spec
        .services
        .iter()
        .filter_map(|s| {
            let n = slots.get(&s.name)?.len();
            let mut s = s.clone();
            s.scale = Scale::Fixed {
                replicas: u32::try_from(n).unwrap_or(u32::MAX),
            };
            s.depends.clear();
            Some(s)
        })
        .collect();
    Deployment {
        name: spec.name.clone(),
        services,
    }
}
