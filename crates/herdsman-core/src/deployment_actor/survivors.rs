//! Taking over what an earlier run of the deployment left running: survivors adopted by
//! their services' supervisors, or stopped before anything starts in their place.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::AbortOnDropHandle;

use herdsman_runtime::Survivor;
use herdsman_spec::StopSignal;

use herdsman_runtime::Runtime;
use herdsman_spec::Deployment;
use ractor::ActorRef;

use super::{DeploymentMsg, DeploymentState};
use crate::board::{ReplicaState, StatusBoard};

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
        // A service that adopts starts at once: its supervisor stops its unwanted
        // survivors itself, booting each of their indexes once it is free. Every other
        // one is stopped from here, per service, and a service waits for its own (it would
        // boot their indexes) while the others start.
        let mut background: BTreeMap<Arc<str>, Vec<Survivor>> = BTreeMap::new();
        for s in discard {
            if self.survivors.contains_key(&s.id.service) {
                self.discards
                    .entry(s.id.service.clone())
                    .or_default()
                    .push(s);
            } else {
                background.entry(s.id.service.clone()).or_default().push(s);
            }
        }
        for (service, stops) in background {
            if spec.service(&service).is_some() {
                self.held.insert(service.clone());
            }
            let (runtime, board, me) = (runtime.clone(), board.clone(), myself.clone());
            let how = stop_of(&spec, &service);
            self.orphan_stops
                .push(AbortOnDropHandle::new(tokio::spawn(async move {
                    futures::future::join_all(
                        stops
                            .iter()
                            .map(|s| discard_one(&runtime, &board, s, how, true)),
                    )
                    .await;
                    let _ = me.cast(DeploymentMsg::SurvivorsGone { service });
                })));
        }
    }
}

/// The stop signal and grace period of `service`'s replicas (a service no longer in the
/// spec: SIGTERM and 10 s).
pub(crate) fn stop_of(spec: &Deployment, service: &str) -> (StopSignal, Duration) {
    spec.service(service)
        .map_or((StopSignal::TERM, Duration::from_secs(10)), |svc| {
            (svc.stop_signal, svc.stop_grace_period)
        })
}

/// Stop and remove one survivor of an earlier run that is not adopted, with its signal
/// and grace. Its row, while it still names it, goes with it (`forget`) or shows it
/// stopped, for the slot that will boot in its place.
pub(crate) async fn discard_one(
    runtime: &Arc<dyn Runtime>,
    board: &StatusBoard,
    s: &Survivor,
    (signal, grace): (StopSignal, Duration),
    forget: bool,
) {
    if let Err(e) = runtime.discard_survivor(s, signal, grace).await {
        tracing::warn!(container = %s.id, error = %e, "cannot stop a replica left by an earlier run");
    }
    let named = board
        .replica(&s.id.service, s.id.replica)
        .is_some_and(|r| r.container.as_ref() == Some(&s.id));
    if !named {
        return;
    }
    if forget {
        board.remove(&s.id.service, s.id.replica);
    } else {
        board.update_incarnation(&s.id, |r| {
            r.state = ReplicaState::Stopped;
            r.pid = None;
        });
    }
}
