//! Taking over what an earlier run of the deployment left running: survivors adopted by
//! their services' supervisors, or stopped before anything starts in their place.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use herdsman_runtime::Survivor;
use herdsman_spec::StopSignal;

use super::DeploymentState;

impl DeploymentState {
    /// Find what an earlier run of this deployment left running. Each survivor that still
    /// runs what its service's spec asks for, in a replica index the spec still wants, is
    /// kept for its supervisor to adopt (unless adoption is off); every other one is
    /// stopped now, with its signal and grace, before anything new starts in its place.
    pub(super) async fn take_over_survivors(&mut self) {
        let runtime = self.args.runtime.clone();
        let spec = self.args.spec.clone();
        let found = match runtime.survivors(&spec.name).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for replicas left running by an earlier run; starting fresh");
                return;
            }
        };
        let mut by_slot: BTreeMap<(Arc<str>, u32), Survivor> = BTreeMap::new();
        let mut discard = Vec::new();
        for s in found {
            let resume = self
                .resume_at
                .entry(s.id.service.clone())
                .or_default()
                .entry(s.id.replica)
                .or_default();
            *resume = (*resume).max(s.id.generation.saturating_add(1));
            let wanted = spec.service(&s.id.service).is_some_and(|svc| {
                self.args.adopt
                    && s.run_hash == svc.run_hash()
                    && s.id.replica < svc.initial_replicas()
            });
            if !wanted {
                discard.push(s);
                continue;
            }
            // Two survivors of one slot (an earlier run was itself interrupted mid-restart):
            // the newest incarnation is adopted, the other stopped.
            let slot = (s.id.service.clone(), s.id.replica);
            match by_slot.remove(&slot) {
                Some(other) if other.id.generation > s.id.generation => {
                    discard.push(s);
                    by_slot.insert(slot, other);
                }
                Some(other) => {
                    discard.push(other);
                    by_slot.insert(slot, s);
                }
                None => {
                    by_slot.insert(slot, s);
                }
            }
        }
        for ((service, _), s) in by_slot {
            self.survivors.entry(service).or_default().push(s);
        }
        if !discard.is_empty() {
            tracing::info!(
                count = discard.len(),
                adopt = self.args.adopt,
                "stopping replicas left running by an earlier run"
            );
        }
        futures::future::join_all(discard.iter().map(|s| {
            let (signal, grace) = spec
                .service(&s.id.service)
                .map_or((StopSignal::TERM, Duration::from_secs(10)), |svc| {
                    (svc.stop_signal, svc.stop_grace_period)
                });
            let runtime = runtime.clone();
            async move {
                if let Err(e) = runtime.discard_survivor(s, signal, grace).await {
                    tracing::warn!(container = %s.id, error = %e, "cannot stop a replica left by an earlier run");
                }
            }
        }))
        .await;
    }
}
