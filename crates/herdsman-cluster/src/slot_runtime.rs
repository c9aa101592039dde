//! A runtime that runs a chosen set of a service's replica slots: the local deployment
//! numbers its replicas 0..n, this wrapper gives each the global index of the slot it
//! runs, so `${PORT}`, container ids and adoption records are the same on every node.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use herdsman_probe::{CheckResult, CommandOutput, StepReport};
use herdsman_runtime::{ContainerId, ContainerSpec, Runtime, RuntimeError, Started, Survivor};
use herdsman_spec::{Check, InitStep, ReplicaVars, StopSignal};

use crate::wire::Slots;

/// Local fake indices for survivors of slots this node no longer runs start here, far
/// above any replica count, so the local deployment discards them.
const ORPHAN_BASE: u32 = 1 << 30;

#[derive(Debug, Default)]
struct Map {
    /// Per service: local index → global slot.
    slots: HashMap<String, Vec<u32>>,
    /// (service, fake local index) → global slot, for survivors not run here any more.
    orphans: HashMap<(String, u32), u32>,
}

/// The wrapper. Cheap to clone; clones share the map.
#[derive(Clone)]
pub struct SlotRuntime {
    inner: Arc<dyn Runtime>,
    map: Arc<RwLock<Map>>,
}

impl SlotRuntime {
    /// Wrap `inner`, running no slots yet.
    pub fn new(inner: Arc<dyn Runtime>) -> SlotRuntime {
        SlotRuntime {
            inner,
            map: Arc::new(RwLock::new(Map::default())),
        }
    }

    /// The wrapped runtime.
    pub fn inner(&self) -> &Arc<dyn Runtime> {
        &self.inner
    }

    /// Run these slots: local replica `i` of a service is its `slots[i]`.
    pub fn set_slots(&self, slots: &Slots) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        map.slots = slots.iter().map(|(s, v)| (s.clone(), v.clone())).collect();
    }

    /// The global slot of local replica `local` of `service`.
    pub fn global(&self, service: &str, local: u32) -> Option<u32> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(g) = map.orphans.get(&(service.to_string(), local)) {
            return Some(*g);
        }
        map.slots
            .get(service)
            .and_then(|v| v.get(local as usize))
            .copied()
    }

    fn to_global(&self, id: &ContainerId) -> ContainerId {
        let mut id = id.clone();
        if let Some(g) = self.global(&id.service, id.replica) {
            id.replica = g;
        }
        id
    }

    fn vars_global(&self, vars: &ReplicaVars) -> ReplicaVars {
        let Some(g) = self.global(&vars.service, vars.replica) else {
            return vars.clone();
        };
        let mut out = vars.clone();
        // A port is the endpoint's base port plus the replica index.
        out.ports = vars
            .ports
            .iter()
            .map(|(name, port)| {
                let base = u32::from(*port).saturating_sub(vars.replica);
                let global = base.saturating_add(g).min(65535) as u16;
                (name.clone(), global)
            })
            .collect();
        out.replica = g;
        out
    }

    fn survivor_global(&self, s: &Survivor) -> Survivor {
        Survivor {
            id: self.to_global(&s.id),
            ..s.clone()
        }
    }
}

#[async_trait::async_trait]
impl Runtime for SlotRuntime {
    async fn create(&self, id: &ContainerId, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let spec = ContainerSpec {
            service: spec.service.clone(),
            vars: self.vars_global(&spec.vars),
        };
        self.inner.create(&self.to_global(id), &spec).await
    }

    async fn start(&self, id: &ContainerId) -> Result<Started, RuntimeError> {
        self.inner.start(&self.to_global(id)).await
    }

    async fn stop(
        &self,
        id: &ContainerId,
        signal: StopSignal,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        self.inner.stop(&self.to_global(id), signal, grace).await
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.inner.remove(&self.to_global(id)).await
    }

    async fn exec(
        &self,
        id: &ContainerId,
        command: &str,
        timeout: Duration,
    ) -> Result<CommandOutput, RuntimeError> {
        self.inner.exec(&self.to_global(id), command, timeout).await
    }

    fn logs(&self, id: &ContainerId, lines: usize) -> Vec<String> {
        self.inner.logs(&self.to_global(id), lines)
    }

    fn probe_host(&self, id: &ContainerId) -> IpAddr {
        self.inner.probe_host(&self.to_global(id))
    }

    async fn check(
        &self,
        id: &ContainerId,
        check: &Check,
        vars: &ReplicaVars,
        timeout: Duration,
    ) -> CheckResult {
        self.inner
            .check(&self.to_global(id), check, &self.vars_global(vars), timeout)
            .await
    }

    async fn survivors(&self, deployment: &str) -> Result<Vec<Survivor>, RuntimeError> {
        let found = self.inner.survivors(deployment).await?;
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = ORPHAN_BASE;
        let mut out = Vec::with_capacity(found.len());
        for mut s in found {
            let service = s.id.service.to_string();
            let local = map
                .slots
                .get(&service)
                .and_then(|v| v.iter().position(|g| *g == s.id.replica));
            s.id.replica = match local {
                Some(l) => l as u32,
                None => {
                    map.orphans.insert((service, next), s.id.replica);
                    next += 1;
                    next - 1
                }
            };
            out.push(s);
        }
        Ok(out)
    }

    async fn adopt(
        &self,
        survivor: &Survivor,
        spec: &ContainerSpec,
    ) -> Result<Started, RuntimeError> {
        let spec = ContainerSpec {
            service: spec.service.clone(),
            vars: self.vars_global(&spec.vars),
        };
        self.inner
            .adopt(&self.survivor_global(survivor), &spec)
            .await
    }

    async fn discard_survivor(
        &self,
        survivor: &Survivor,
        signal: StopSignal,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        self.inner
            .discard_survivor(&self.survivor_global(survivor), signal, grace)
            .await
    }

    async fn init_step(&self, id: &ContainerId, step: &InitStep, vars: &ReplicaVars) -> StepReport {
        self.inner
            .init_step(&self.to_global(id), step, &self.vars_global(vars))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herdsman_runtime::SimRuntime;

    #[test]
    fn local_replicas_take_the_global_index_and_port_of_their_slot() {
        let rt = SlotRuntime::new(Arc::new(SimRuntime::new(0)));
        rt.set_slots(&Slots::from([("web".to_string(), vec![3, 5])]));
        let vars = ReplicaVars {
            deployment: "t".into(),
            service: "web".into(),
            replica: 1,
            ports: vec![("HTTP".into(), 8001)],
        };
        let g = rt.vars_global(&vars);
        assert_eq!(g.replica, 5);
        assert_eq!(g.ports, vec![("HTTP".to_string(), 8005)]);
        let id = ContainerId::new("t", "web", 0, 2);
        assert_eq!(rt.to_global(&id).replica, 3);
        assert_eq!(rt.to_global(&id).generation, 2);
    }
}
