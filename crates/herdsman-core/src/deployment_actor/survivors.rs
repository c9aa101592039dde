//! Taking over what an earlier run of the deployment left running: survivors adopted by
//! their services' supervisors, or stopped before anything starts in their place.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use herdsman_runtime::Survivor;
use herdsman_spec::StopSignal;

use ractor::ActorRef;

use super::{DeploymentMsg, DeploymentState};
use crate::board::ReplicaState;

impl DeploymentState {
    /// Find what an earlier run of this deployment left running. Each survivor that still
    /// runs what its service's spec asks for, in a replica index the spec still wants, is
    /// kept for its supervisor to adopt (unless adoption is off); every other one is
    /// stopped, with its signal and grace, off this actor's handler. A service whose
    /// replica index one of those still holds waits until it is gone (`SurvivorsGone`),
    /// so no index has two live incarnations; every other service starts, and adopts, at
    /// once: nothing an earlier run left running goes unwatched for a grace period.
    pub(super) async fn take_over_survivors(&mut self, myself: &ActorRef<DeploymentMsg>) {
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
        // Shown at once as what they are, running or stopping: stopping the unwanted ones
        // takes their grace periods, and meanwhile nothing may run unseen.
        let board = self.args.board.clone();
        for s in &discard {
            board.update(&s.id.service, s.id.replica, |r| {
                r.state = ReplicaState::Stopping;
                r.container = Some(s.id.clone());
                r.pid = s.pid;
                r.healthy = false;
            });
        }
        for ((service, _), s) in by_slot {
            board.update(&service, s.id.replica, |r| {
                r.state = ReplicaState::Running;
                r.container = Some(s.id.clone());
                r.pid = s.pid;
                r.healthy = false;
            });
            self.survivors.entry(service).or_default().push(s);
        }
        if discard.is_empty() {
            return;
        }
        tracing::info!(
            count = discard.len(),
            adopt = self.args.adopt,
            "stopping replicas left running by an earlier run"
        );
        for s in &discard {
            let blocks = spec
                .service(&s.id.service)
                .is_some_and(|svc| s.id.replica < svc.initial_replicas())
                && !self
                    .survivors
                    .get(&s.id.service)
                    .is_some_and(|kept| kept.iter().any(|k| k.id.replica == s.id.replica));
            if blocks {
                self.held.insert(s.id.service.clone());
            }
        }
        let me = myself.clone();
        let stops = futures::future::join_all(discard.into_iter().map(move |s| {
            let (signal, grace) = spec
                .service(&s.id.service)
                .map_or((StopSignal::TERM, Duration::from_secs(10)), |svc| {
                    (svc.stop_signal, svc.stop_grace_period)
                });
            let (runtime, board) = (runtime.clone(), board.clone());
            async move {
                let s = &s;
                if let Err(e) = runtime.discard_survivor(s, signal, grace).await {
                    tracing::warn!(container = %s.id, error = %e, "cannot stop a replica left by an earlier run");
                }
                // Its row goes with it, unless an adopted survivor of the slot took it.
                if board
                    .replica(&s.id.service, s.id.replica)
                    .is_some_and(|r| r.container.as_ref() == Some(&s.id))
                {
                    board.remove(&s.id.service, s.id.replica);
                }
            }
        }));
        self.orphan_stops.push(tokio::spawn(async move {
            stops.await;
            let _ = me.cast(DeploymentMsg::SurvivorsGone);
        }));
    }
}
