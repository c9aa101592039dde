//! Rollouts: which replicas a service's update touches next. Pure: no clock, no I/O.
//!
//! A rolling update replaces each replica index in place (stopped, then started with the
//! new spec), so replica `i` keeps its `${PORT}`. The surge replicas (`max_surge`) are
//! *stand-ins*: extra replicas of the new spec at the indices just above the desired
//! count, started first, that keep the ready count up while indices are replaced, and
//! are removed when the rollout completes. An old replica that is ready is only taken
//! down while the ready count stays at or above `desired - max_unavailable`; one that is
//! not ready (crash looping, unhealthy) is replaced at once, since that costs nothing.

use herdsman_spec::{Service, UpdateSpec, UpdateStrategy};

/// What the planner needs to know of one replica slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotView {
    pub(crate) index: u32,
    /// It runs (or is being started with) the rollout's target spec.
    pub(crate) current: bool,
    /// Ready, and for at least the update's `min_ready`.
    pub(crate) available: bool,
    /// Crash looping (backoff) or failed.
    pub(crate) troubled: bool,
}

/// The next moves of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Plan {
    /// Start stand-ins of the new spec at these indices.
    pub(crate) add_stand_ins: Vec<u32>,
    /// Replace these slots with the new spec (stop, then start).
    pub(crate) replace: Vec<u32>,
    /// Base replicas running the new spec and available.
    pub(crate) updated: u32,
    pub(crate) outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Outcome {
    /// Keep going: wait for the next report.
    #[default]
    Continue,
    /// Every base replica runs the new spec and is available: remove the stand-ins.
    Done,
    /// New replicas crash loop or failed.
    Failed(String),
}

/// Whether two specs run the same replicas: equal but for the replica count, which a
/// rollout never needs to replace anything for.
pub(crate) fn same_but_scale(a: &Service, b: &Service) -> bool {
    std::ptr::eq(a, b)
        || Service {
            scale: b.scale,
            ..a.clone()
        } == *b
}

/// Plan the next moves. `base` are the slots below `desired`, `stand_ins` the surge
/// replicas, `next_free` the first index above every slot.
pub(crate) fn plan(
    update: &UpdateSpec,
    desired: u32,
    base: &[SlotView],
    stand_ins: &[SlotView],
    next_free: u32,
) -> Plan {
    let updated = base.iter().filter(|s| s.current && s.available).count() as u32;
    let mut plan = Plan {
        updated,
        ..Plan::default()
    };
    if let Some(bad) = base
        .iter()
        .chain(stand_ins)
        .find(|s| s.current && s.troubled)
    {
        plan.outcome = Outcome::Failed(format!(
            "replica {} of the new spec is crash looping or failed",
            bad.index
        ));
        return plan;
    }
    if updated as usize == base.len() {
        plan.outcome = Outcome::Done;
        return plan;
    }
    let old: Vec<&SlotView> = base.iter().filter(|s| !s.current).collect();
    if update.strategy == UpdateStrategy::Recreate {
        plan.replace = old.iter().map(|s| s.index).collect();
        return plan;
    }
    let surge = update.max_surge.of(desired, true);
    let floor = desired.saturating_sub(update.max_unavailable.of(desired, false));
    // Stand-ins cover for old replicas while they are replaced; none needed past the last.
    let wanted = surge.min(old.len() as u32) as usize;
    plan.add_stand_ins = (next_free..)
        .take(wanted.saturating_sub(stand_ins.len()))
        .collect();
    let mut available = base.iter().chain(stand_ins).filter(|s| s.available).count() as u32;
    // A stand-in of an earlier, superseded target is replaced like any old replica.
    let mut candidates: Vec<&SlotView> = old
        .into_iter()
        .chain(stand_ins.iter().filter(|s| !s.current))
        .collect();
    candidates.sort_by_key(|s| (s.available, s.index));
    for c in candidates {
        if !c.available {
            plan.replace.push(c.index);
        } else if available > floor {
            available -= 1;
            plan.replace.push(c.index);
        } else {
            break;
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use herdsman_spec::Amount;
    use std::time::Duration;

    fn update(surge: u32, unavailable: u32) -> UpdateSpec {
        UpdateSpec {
            strategy: UpdateStrategy::Rolling,
            max_surge: Amount::Count(surge),
            max_unavailable: Amount::Count(unavailable),
            min_ready: Duration::ZERO,
            progress_deadline: Duration::from_secs(60),
            auto_revert: true,
        }
    }

    fn slot(index: u32, current: bool, available: bool) -> SlotView {
        SlotView {
            index,
            current,
            available,
            troubled: false,
        }
    }

    #[test]
    fn a_surge_of_one_starts_a_stand_in_first_and_replaces_nothing_until_it_is_ready() {
        let base = [
            slot(0, false, true),
            slot(1, false, true),
            slot(2, false, true),
        ];
        let p = plan(&update(1, 0), 3, &base, &[], 3);
        assert_eq!(p.add_stand_ins, vec![3]);
        assert!(p.replace.is_empty());
        // The stand-in is up (not yet ready): still nothing may go down.
        let p = plan(&update(1, 0), 3, &base, &[slot(3, true, false)], 4);
        assert_eq!((p.add_stand_ins.len(), p.replace.len()), (0, 0));
        // Ready: one old replica may be replaced.
        let p = plan(&update(1, 0), 3, &base, &[slot(3, true, true)], 4);
        assert_eq!(p.replace, vec![0]);
    }

    #[test]
    fn ready_replicas_never_fall_below_desired_minus_max_unavailable() {
        let base = [
            slot(0, true, false),
            slot(1, false, true),
            slot(2, false, true),
        ];
        // 0 is replaced and not ready yet; with the stand-in, 3 are available: none more
        // may go until 0 is ready.
        let p = plan(&update(1, 0), 3, &base, &[slot(3, true, true)], 4);
        assert!(p.replace.is_empty());
        let ready0 = [base[0], base[1], base[2]].map(|s| SlotView {
            available: true,
            ..s
        });
        let p = plan(&update(1, 0), 3, &ready0, &[slot(3, true, true)], 4);
        assert_eq!(p.replace, vec![1]);
        // Without surge and with max_unavailable 1: 2 available, floor 2: wait.
        let p = plan(&update(0, 1), 3, &base, &[], 3);
        assert!(p.replace.is_empty() && p.add_stand_ins.is_empty());
    }

    #[test]
    fn old_replicas_that_are_not_ready_are_replaced_first_and_at_once() {
        let base = [
            slot(0, false, true),
            slot(1, false, false),
            slot(2, false, false),
        ];
        let p = plan(&update(0, 1), 3, &base, &[], 3);
        assert_eq!(p.replace, vec![1, 2]);
    }

    #[test]
    fn a_crash_looping_new_replica_fails_the_rollout() {
        let base = [slot(0, true, false), slot(1, false, true)];
        let mut bad = slot(0, true, false);
        bad.troubled = true;
        let p = plan(&update(1, 0), 2, &[bad, base[1]], &[], 2);
        assert!(matches!(p.outcome, Outcome::Failed(ref why) if why.contains("replica 0")));
        // An old replica crash looping is not the new spec's fault.
        let mut old_bad = slot(1, false, false);
        old_bad.troubled = true;
        let p = plan(&update(1, 0), 2, &[base[0], old_bad], &[], 2);
        assert_eq!(p.outcome, Outcome::Continue);
        assert_eq!(p.replace, vec![1]);
    }

    #[test]
    fn done_when_every_base_replica_runs_the_new_spec_and_is_available() {
        let base = [slot(0, true, true), slot(1, true, true)];
        let p = plan(&update(1, 0), 2, &base, &[slot(2, true, true)], 3);
        assert_eq!((p.outcome, p.updated), (Outcome::Done, 2));
    }

    #[test]
    fn recreate_replaces_every_old_replica_at_once() {
        let mut u = update(1, 0);
        u.strategy = UpdateStrategy::Recreate;
        let base = [slot(0, false, true), slot(1, false, true)];
        let p = plan(&u, 2, &base, &[], 2);
        assert_eq!((p.replace, p.add_stand_ins), (vec![0, 1], vec![]));
    }

    #[test]
    fn stand_ins_of_a_superseded_target_are_replaced_too() {
        let base = [slot(0, false, true), slot(1, false, true)];
        let p = plan(&update(1, 0), 2, &base, &[slot(2, false, true)], 3);
        assert!(p.add_stand_ins.is_empty());
        // Three available, floor two: one of them may go at a time.
        assert_eq!(p.replace, vec![0]);
    }
}
