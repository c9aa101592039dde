//! The invariants of DESIGN.md "Invariants the tree keeps", checked against the simulated
//! runtime's truth: the ones that hold whenever the tree has run every ready task
//! (`settled`), and the ones that hold once faults stop and time passes (`quiescent`).

use std::collections::HashMap;
use std::fmt;

use herdsman_core::{DeploymentStatus, ReplicaState, ServicePhase};
use herdsman_runtime::{ContainerId, Runtime, SimRuntime, ViolationKind};
use herdsman_spec::ServiceKind;

use super::observer::{lock, Cause};
use super::World;

/// The invariants, numbered as in DESIGN.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Invariant {
    /// 1. At most one live incarnation per replica slot; never two concurrent init runs.
    OneIncarnation,
    /// 2. Every exit of the current incarnation is acted on.
    ExitsActedOn,
    /// 3. The board tells the truth.
    BoardTruth,
    /// 4. Stable means stable.
    StableMeansStable,
    /// 5. Shutdown is total.
    ShutdownTotal,
    /// 6. Nothing is stopped without its stop signal and grace.
    GracefulStops,
    /// 7. Diagnostics survive failure.
    Diagnostics,
    /// Not one of the seven: the tree stopped answering, or the driver could not go on.
    Liveness,
}

impl Invariant {
    pub fn number(self) -> u8 {
        match self {
            Invariant::OneIncarnation => 1,
            Invariant::ExitsActedOn => 2,
            Invariant::BoardTruth => 3,
            Invariant::StableMeansStable => 4,
            Invariant::ShutdownTotal => 5,
            Invariant::GracefulStops => 6,
            Invariant::Diagnostics => 7,
            Invariant::Liveness => 0,
        }
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Invariant::OneIncarnation => "at most one live incarnation per slot",
            Invariant::ExitsActedOn => "every exit is acted on",
            Invariant::BoardTruth => "the board tells the truth",
            Invariant::StableMeansStable => "stable means stable",
            Invariant::ShutdownTotal => "shutdown is total",
            Invariant::GracefulStops => "nothing stopped without its signal and grace",
            Invariant::Diagnostics => "diagnostics survive failure",
            Invariant::Liveness => "liveness",
        };
        write!(f, "invariant {} ({name})", self.number())
    }
}

/// One invariant found broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breach {
    pub invariant: Invariant,
    pub what: String,
}

fn breach(invariant: Invariant, what: String) -> Breach {
    Breach { invariant, what }
}

/// A part of the stabilization predicate that the runtime's truth does not meet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Unmet {
    pub service: String,
    /// The replica slot, or `None` for the whole service (its phase).
    pub replica: Option<u32>,
    /// The container the board names for the slot.
    pub container: Option<ContainerId>,
    pub reason: String,
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.replica, &self.container) {
            (Some(r), Some(c)) => write!(f, "{}/{r} ({c}): {}", self.service, self.reason),
            (Some(r), None) => write!(f, "{}/{r}: {}", self.service, self.reason),
            (None, _) => write!(f, "{}: {}", self.service, self.reason),
        }
    }
}

/// Running containers of the simulation, by (service, replica).
fn running_by_slot(sim: &SimRuntime) -> HashMap<(String, u32), Vec<ContainerId>> {
    let mut slots: HashMap<(String, u32), Vec<ContainerId>> = HashMap::new();
    for id in sim.running() {
        slots
            .entry((id.service.to_string(), id.replica))
            .or_default()
            .push(id);
    }
    slots
}

/// What of "every service with desired > 0 has its desired replicas running (or, for a
/// job, completed) and is not failed" the runtime's truth does not meet. Health is the
/// tree's own judgement (thresholds lag the truth on purpose) and is not checked here.
pub fn unmet(status: &DeploymentStatus, sim: &SimRuntime) -> Vec<Unmet> {
    let running = running_by_slot(sim);
    let mut found = Vec::new();
    for s in &status.services {
        if s.desired == 0 {
            continue;
        }
        if s.phase != ServicePhase::Running {
            found.push(Unmet {
                service: s.name.clone(),
                replica: None,
                container: None,
                reason: format!("service phase is {:?}", s.phase),
            });
            continue;
        }
        let satisfied = |r: u32| {
            running.contains_key(&(s.name.clone(), r))
                || s.replicas
                    .iter()
                    .any(|x| x.replica == r && x.state == ReplicaState::Completed)
        };
        // Counted over every replica: during a rollout a surge stand-in above the desired
        // count stands in for an index being replaced.
        let mut indices: Vec<u32> = (0..s.desired)
            .chain(s.replicas.iter().map(|x| x.replica))
            .collect();
        indices.sort_unstable();
        indices.dedup();
        if indices.iter().filter(|r| satisfied(**r)).count() as u32 >= s.desired {
            continue;
        }
        for r in 0..s.desired {
            if satisfied(r) {
                continue;
            }
            let entry = s.replicas.iter().find(|x| x.replica == r);
            found.push(Unmet {
                service: s.name.clone(),
                replica: Some(r),
                container: entry.and_then(|x| x.container.clone()),
                reason: "no running container".into(),
            });
        }
    }
    found
}

/// Invariants that hold whenever every ready task has run. Also records what is unmet
/// now, for the stable-announcement check.
pub fn settled(world: &mut World) -> Vec<Breach> {
    let mut found = Vec::new();
    let sim = world.sim.clone();

    // 1 and 6, as the runtime saw them.
    let violations = sim.violations();
    for v in violations.iter().skip(world.violations_seen) {
        let invariant = match v.kind {
            ViolationKind::DuplicateStart { .. } | ViolationKind::ConcurrentInit { .. } => {
                Invariant::OneIncarnation
            }
            _ => Invariant::GracefulStops,
        };
        found.push(breach(invariant, format!("runtime saw: {v}")));
    }
    world.violations_seen = violations.len();

    let status = world.handle.status();
    let mut running = running_by_slot(&sim);
    for ((service, r), ids) in &running {
        if ids.len() > 1 {
            found.push(breach(
                Invariant::OneIncarnation,
                format!("{service}/{r} runs {} incarnations: {ids:?}", ids.len()),
            ));
        }
    }

    // 5: once shutdown has returned, nothing runs, ever, and no init step is left running.
    let inits = sim.inits_in_flight();
    if world.shutdown_returned() && !inits.is_empty() {
        found.push(breach(
            Invariant::ShutdownTotal,
            format!(
                "init steps still run after shutdown returned: {:?}",
                inits.iter().map(ToString::to_string).collect::<Vec<_>>()
            ),
        ));
    }
    if world.shutdown_returned() && !running.is_empty() {
        let mut ids: Vec<_> = running
            .values()
            .flatten()
            .map(|c| world.container_words(c))
            .collect();
        ids.sort();
        found.push(breach(
            Invariant::ShutdownTotal,
            format!("containers run after shutdown returned: {ids:?}"),
        ));
    }

    // 3: the board tells the truth, replica by replica.
    for s in &status.services {
        for r in &s.replicas {
            let ids = running
                .remove(&(s.name.clone(), r.replica))
                .unwrap_or_default();
            let slot = format!("{}/{}", s.name, r.replica);
            match r.state {
                ReplicaState::Running => {
                    let live = r.container.as_ref().is_some_and(|c| ids.contains(c));
                    if !live {
                        found.push(breach(
                            Invariant::BoardTruth,
                            format!(
                                "{slot} shown running as {:?}, the runtime runs {ids:?}{}{}",
                                r.container.as_ref().map(ToString::to_string),
                                r.container
                                    .as_ref()
                                    .and_then(|c| sim.exit_of(c))
                                    .map(|e| format!(" (it exited: {e})"))
                                    .unwrap_or_default(),
                                if world.shutdown_requested() {
                                    " (the deployment is shutting down or shut down)"
                                } else {
                                    ""
                                }
                            ),
                        ));
                    }
                }
                ReplicaState::Stopped
                | ReplicaState::Failed
                | ReplicaState::Completed
                | ReplicaState::Backoff
                    if !ids.is_empty() =>
                {
                    found.push(breach(
                        Invariant::BoardTruth,
                        format!(
                            "{slot} shown {} while the runtime runs {ids:?}",
                            r.state.as_str()
                        ),
                    ));
                }
                _ => {}
            }
            // An ended incarnation is never shown healthy: a health report that comes
            // after its incarnation ended must not show (nor one of a given-up service).
            if r.healthy
                && matches!(
                    r.state,
                    ReplicaState::Stopped
                        | ReplicaState::Failed
                        | ReplicaState::Completed
                        | ReplicaState::Backoff
                )
            {
                found.push(breach(
                    Invariant::BoardTruth,
                    format!("{slot} is {} but shown healthy", r.state.as_str()),
                ));
            }
            // Whatever the state, a running container is the one the board names.
            for id in ids.iter().filter(|id| r.container.as_ref() != Some(*id)) {
                found.push(breach(
                    Invariant::BoardTruth,
                    format!(
                        "{id} runs but the board names {:?} for {slot} ({})",
                        r.container.as_ref().map(ToString::to_string),
                        r.state.as_str()
                    ),
                ));
            }
        }
    }
    for ids in running.values() {
        for id in ids {
            found.push(breach(
                Invariant::BoardTruth,
                format!("{id} runs but its replica is not on the board"),
            ));
        }
    }

    // 4: stable means stable, on the board now and in every announcement.
    let now = unmet(&status, &sim);
    if !world.shutdown_requested() && status.stable && !now.is_empty() {
        let list: Vec<String> = now.iter().map(ToString::to_string).collect();
        found.push(breach(
            Invariant::StableMeansStable,
            format!("the board says stable while {}", list.join("; ")),
        ));
    }
    let mut observed = lock(&world.observed);
    if !world.shutdown_requested() && status.stable && !now.is_empty() {
        // Say so when the panic action is stopping a service: its phase still reads running.
        let stopping: Vec<&str> = now
            .iter()
            .filter(|u| observed.shut_down.contains(&u.service))
            .map(|u| u.service.as_str())
            .collect();
        if let Some(b) = found.last_mut().filter(|_| !stopping.is_empty()) {
            b.what
                .push_str(&format!(" (on_panic: shutdown is stopping {stopping:?})"));
        }
    }
    // 7: a replica's story is told in the order it happened.
    for line in observed.out_of_order.drain(..) {
        found.push(breach(Invariant::Diagnostics, line));
    }
    let false_stables: Vec<(u64, String)> = observed.false_stables.drain(..).collect();
    for (at, mut line) in false_stables {
        if observed.scaled_at.contains(&at) {
            line.push_str(" (announced while a scale was being applied)");
        }
        if !world.shutdown_requested() {
            found.push(breach(Invariant::StableMeansStable, line));
        }
    }
    // Only dead containers and failed phases: a slot still booting may legitimately be
    // counted later, a dead container never.
    observed.baseline = now
        .into_iter()
        .filter(|u| {
            u.replica.is_none()
                || u.container
                    .as_ref()
                    .is_some_and(|c| sim.exit_of(c).is_some())
        })
        .collect();
    found
}

/// Invariants that hold once faults stop and the tree has had time to act on everything.
pub fn quiescent(world: &mut World) -> Vec<Breach> {
    let mut found = settled(world);
    let sim = world.sim.clone();
    let status = world.handle.status();
    let running = running_by_slot(&sim);
    let causes = lock(&world.observed).last_cause.clone();
    for (model, s) in world.services.iter().zip(&status.services) {
        let desired = model.desired;
        if s.desired != desired {
            found.push(breach(
                Invariant::BoardTruth,
                format!("{}: board desired {} != {desired} asked", s.name, s.desired),
            ));
        }
        // Scaled away means gone, whatever the service's phase; only a rollout in
        // progress keeps surge stand-ins above the desired count.
        let rolling = status.rollout.as_ref().is_some_and(|r| {
            matches!(
                r.phase,
                herdsman_core::RolloutPhase::Progressing | herdsman_core::RolloutPhase::Reverting
            ) && r.services.iter().any(|x| x.service == s.name && !x.done)
        });
        for r in s
            .replicas
            .iter()
            .filter(|r| r.replica >= desired && !rolling)
        {
            found.push(breach(
                Invariant::BoardTruth,
                format!(
                    "{}/{} still on the board ({}) after scaling to {desired} (service phase {:?})",
                    s.name,
                    r.replica,
                    r.state.as_str(),
                    s.phase
                ),
            ));
        }
        for ((service, r), ids) in &running {
            // A rollout's surge stand-in runs above the desired count until the rollout
            // ends (a revert stuck on replicas that never become ready keeps it until its
            // progress deadline): allowed while the rollout is in progress, as the only
            // container of its index and the one the board shows there (whose state the
            // board-truth checks hold to the runtime's).
            let stand_in = rolling
                && ids.len() == 1
                && s.replicas
                    .iter()
                    .any(|x| x.replica == *r && x.container.as_ref() == ids.first());
            if *service == s.name && *r >= desired && !stand_in {
                found.push(breach(
                    Invariant::ExitsActedOn,
                    format!(
                        "{service}/{r} still runs {ids:?} after scaling to {desired} (service {:?})",
                        s.phase
                    ),
                ));
            }
        }
        match s.phase {
            ServicePhase::Running => {}
            ServicePhase::Waiting => {
                found.push(breach(
                    Invariant::ExitsActedOn,
                    format!(
                        "{} still waits for its dependencies: {:?}",
                        s.name, s.reason
                    ),
                ));
                continue;
            }
            _ => continue,
        }
        for r in 0..desired {
            let Some(rs) = s.replicas.iter().find(|x| x.replica == r) else {
                found.push(breach(
                    Invariant::ExitsActedOn,
                    format!("{}/{r} is desired but not on the board", s.name),
                ));
                continue;
            };
            let slot = format!("{}/{r}", s.name);
            match rs.state {
                ReplicaState::Running => {
                    if model.has_health && !rs.healthy {
                        found.push(breach(
                            Invariant::ExitsActedOn,
                            format!(
                                "{slot} running but never healthy again under a healthy profile"
                            ),
                        ));
                    }
                }
                ReplicaState::Isolated | ReplicaState::Failed | ReplicaState::Completed => {}
                ReplicaState::Initializing
                    if model.init_ever_hung
                        && sim
                            .inits_in_flight()
                            .iter()
                            .any(|c| *c.service == *s.name && c.replica == r) => {}
                other => found.push(breach(
                    Invariant::ExitsActedOn,
                    format!(
                        "{slot} stuck {} after a calm stretch (container {:?})",
                        other.as_str(),
                        rs.container.as_ref().map(ToString::to_string)
                    ),
                )),
            }
            // 7: what an operator needs to know why it stopped running.
            let kept = matches!(rs.state, ReplicaState::Failed | ReplicaState::Completed)
                || (rs.state == ReplicaState::Isolated
                    && rs.container.as_ref().is_some_and(|c| !sim.is_running(c)));
            if !kept {
                continue;
            }
            let cause = causes.get(&(s.name.clone(), r)).copied();
            let logs = rs
                .container
                .as_ref()
                .map(|c| sim.logs(c, 5))
                .unwrap_or_default();
            match cause {
                None => {}
                // Nothing ran and printed: the reason is what is left to show.
                Some(Cause::InitFailed | Cause::StartFailed) if rs.last_error.is_none() => {
                    found.push(breach(
                        Invariant::Diagnostics,
                        format!(
                            "{slot} {} after a {cause:?} without its last error",
                            rs.state.as_str()
                        ),
                    ));
                }
                Some(Cause::InitFailed | Cause::StartFailed) => {}
                Some(Cause::Exited) if rs.last_exit.is_none() => found.push(breach(
                    Invariant::Diagnostics,
                    format!("{slot} {} without its last exit", rs.state.as_str()),
                )),
                Some(_) if logs.is_empty() => found.push(breach(
                    Invariant::Diagnostics,
                    format!(
                        "{slot} {} (last cause {cause:?}) without a log tail: container {:?} is gone",
                        rs.state.as_str(),
                        rs.container.as_ref().map(ToString::to_string)
                    ),
                )),
                Some(_) => {}
            }
        }
    }

    // 4, the other way: the truth is stable, so the tree must say so.
    let all_ready = status.services.iter().zip(&world.services).all(|(s, m)| {
        s.desired == 0
            || (s.phase == ServicePhase::Running
                && (0..s.desired).all(|r| {
                    s.replicas.iter().any(|x| {
                        x.replica == r
                            && match m.kind {
                                // A job is ready once it has completed, not while it runs.
                                ServiceKind::Job => x.state == ReplicaState::Completed,
                                ServiceKind::Service => {
                                    x.state == ReplicaState::Running && x.healthy
                                }
                            }
                    })
                }))
    });
    if all_ready && unmet(&status, &sim).is_empty() && !status.stable {
        found.push(breach(
            Invariant::StableMeansStable,
            "every service is ready on the runtime's truth but the deployment is not stable".into(),
        ));
    }
    found
}
