//! The simulated containers, found by deployment, service, replica and generation.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::sim_state::SimContainer;
use crate::ContainerId;

/// The simulated containers, kept twice: by deployment, service and replica index for
/// lookups, and in id order in a set beside, so one replica's incarnations are a range
/// and listings are sorted.
///
/// A health check looks its container up 100,000 times a second at scale, each a
/// second after the last, so every memory access it makes is a cache miss. A flat hash
/// map of ids took two (the group of control bytes the hash points at, then the entry),
/// and was a fifth of the CPU row. Here the deployment and service maps are few and stay
/// cached; the replica's slot is found by index, and its current incarnation is kept in
/// the slot: one miss. The names hash with Fx, not SipHash: they are the tree's own,
/// never an attacker's.
#[derive(Debug, Default)]
pub(crate) struct Containers {
    by_name: FxHashMap<Arc<str>, FxHashMap<Arc<str>, Replicas>>,
    order: BTreeSet<ContainerId>,
}

/// One service's replicas by index. The tree's indexes are dense (0 to the replica count,
/// then a rollout's stand-ins just above), so a vector; an index far past the slots in use
/// (only a caller of the library's own choosing makes one) goes to a map instead, so the
/// vector never holds more than twice the slots in use and [`DENSE_SLACK`] more, whatever
/// the indexes. Every index in the map is past the vector's end.
#[derive(Debug, Default)]
struct Replicas {
    dense: Vec<Slot>,
    /// The vector's slots that hold an incarnation.
    used: usize,
    sparse: FxHashMap<u32, Slot>,
}

/// How many slots past twice those in use the vector may grow to.
const DENSE_SLACK: usize = 64;

/// One replica's incarnations: one kept in place, any others beside. A replica has one
/// at a time but for a moment in a restart (the new one created, the old one not yet
/// removed), or while a caller keeps exited ones.
#[derive(Debug, Default)]
struct Slot {
    first: Option<(u64, SimContainer)>,
    more: Vec<(u64, SimContainer)>,
}

impl Slot {
    fn get(&self, generation: u64) -> Option<&SimContainer> {
        let mut all = self.first.iter().chain(&self.more);
        all.find(|(g, _)| *g == generation).map(|(_, c)| c)
    }

    fn get_mut(&mut self, generation: u64) -> Option<&mut SimContainer> {
        let mut all = self.first.iter_mut().chain(&mut self.more);
        all.find(|(g, _)| *g == generation).map(|(_, c)| c)
    }

    fn insert(&mut self, generation: u64, c: SimContainer) -> Option<SimContainer> {
        if let Some(old) = self.get_mut(generation) {
            return Some(std::mem::replace(old, c));
        }
        if self.first.is_none() {
            self.first = Some((generation, c));
        } else {
            self.more.push((generation, c));
        }
        None
    }

    fn remove(&mut self, generation: u64) -> Option<SimContainer> {
        if self.first.as_ref().is_some_and(|(g, _)| *g == generation) {
            let next = self.more.pop();
            return std::mem::replace(&mut self.first, next).map(|(_, c)| c);
        }
        let at = self.more.iter().position(|(g, _)| *g == generation)?;
        Some(self.more.swap_remove(at).1)
    }

    fn is_empty(&self) -> bool {
        self.first.is_none() && self.more.is_empty()
    }
}

impl Replicas {
    fn slot(&self, replica: u32) -> Option<&Slot> {
        match self.dense.get(replica as usize) {
            Some(slot) => Some(slot),
            None => self.sparse.get(&replica),
        }
    }

    fn slot_mut(&mut self, replica: u32) -> Option<&mut Slot> {
        match self.dense.get_mut(replica as usize) {
            Some(slot) => Some(slot),
            None => self.sparse.get_mut(&replica),
        }
    }

    /// Put `c` in `replica`'s slot as `generation`; returns the incarnation it replaced.
    fn insert(&mut self, replica: u32, generation: u64, c: SimContainer) -> Option<SimContainer> {
        let at = replica as usize;
        if at >= self.dense.len() && at <= 2 * self.used + DENSE_SLACK {
            self.dense.resize_with(at + 1, Slot::default);
            // The map keeps only indexes past the vector: take in those it now covers.
            let covered: Vec<u32> = self
                .sparse
                .keys()
                .copied()
                .filter(|r| (*r as usize) <= at)
                .collect();
            for r in covered {
                if let Some(slot) = self.sparse.remove(&r) {
                    self.dense[r as usize] = slot;
                    self.used += 1;
                }
            }
        }
        match self.dense.get_mut(at) {
            Some(slot) => {
                self.used += usize::from(slot.is_empty());
                slot.insert(generation, c)
            }
            None => self
                .sparse
                .entry(replica)
                .or_default()
                .insert(generation, c),
        }
    }

    /// Remove `replica`'s incarnation `generation`, and forget its slot if that frees
    /// memory: the tail of the vector (a scale-down), or the map's entry.
    fn remove(&mut self, replica: u32, generation: u64) -> Option<SimContainer> {
        let at = replica as usize;
        if at >= self.dense.len() {
            let slot = self.sparse.get_mut(&replica)?;
            let removed = slot.remove(generation)?;
            if slot.is_empty() {
                self.sparse.remove(&replica);
            }
            return Some(removed);
        }
        let slot = &mut self.dense[at];
        let removed = slot.remove(generation)?;
        self.used -= usize::from(slot.is_empty());
        while self.dense.last().is_some_and(Slot::is_empty) {
            self.dense.pop();
        }
        Some(removed)
    }

    fn is_empty(&self) -> bool {
        self.dense.is_empty() && self.sparse.is_empty()
    }
}

impl Containers {
    /// The size of a replica's slot, with its first incarnation in it.
    pub(crate) const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

    fn replicas(&self, id: &ContainerId) -> Option<&Replicas> {
        self.by_name.get(&*id.deployment)?.get(&*id.service)
    }

    pub(crate) fn get(&self, id: &ContainerId) -> Option<&SimContainer> {
        self.replicas(id)?.slot(id.replica)?.get(id.generation)
    }

    pub(crate) fn get_mut(&mut self, id: &ContainerId) -> Option<&mut SimContainer> {
        self.by_name
            .get_mut(&*id.deployment)?
            .get_mut(&*id.service)?
            .slot_mut(id.replica)?
            .get_mut(id.generation)
    }

    pub(crate) fn contains_key(&self, id: &ContainerId) -> bool {
        self.get(id).is_some()
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    pub(crate) fn insert(&mut self, id: ContainerId, c: SimContainer) -> Option<SimContainer> {
        // The names are cloned only for a service's first container: every replica shares
        // their `Arc`s, whose counts both cores write to.
        let replicas = match self
            .by_name
            .get_mut(&*id.deployment)
            .and_then(|services| services.get_mut(&*id.service))
        {
            Some(replicas) => replicas,
            None => self
                .by_name
                .entry(id.deployment.clone())
                .or_default()
                .entry(id.service.clone())
                .or_default(),
        };
        let old = replicas.insert(id.replica, id.generation, c);
        self.order.insert(id);
        old
    }

    pub(crate) fn remove(&mut self, id: &ContainerId) -> Option<SimContainer> {
        let services = self.by_name.get_mut(&*id.deployment)?;
        let replicas = services.get_mut(&*id.service)?;
        let removed = replicas.remove(id.replica, id.generation)?;
        if replicas.is_empty() {
            services.remove(&*id.service);
            if services.is_empty() {
                self.by_name.remove(&*id.deployment);
            }
        }
        self.order.remove(id);
        Some(removed)
    }

    /// The incarnations of `id`'s replica slot (`id` among them if it exists), by
    /// generation, in no particular order.
    pub(crate) fn incarnations(
        &self,
        id: &ContainerId,
    ) -> impl Iterator<Item = (u64, &SimContainer)> {
        let slot = self.replicas(id).and_then(|r| r.slot(id.replica));
        slot.into_iter()
            .flat_map(|s| s.first.iter().chain(&s.more))
            .map(|(generation, c)| (*generation, c))
    }

    /// Every container, in id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ContainerId, &SimContainer)> {
        self.order
            .iter()
            .filter_map(|id| self.get(id).map(|c| (id, c)))
    }

    /// The containers with ids in `range`, in id order.
    pub(crate) fn range(
        &self,
        range: RangeInclusive<ContainerId>,
    ) -> impl Iterator<Item = (&ContainerId, &SimContainer)> {
        self.order
            .range(range)
            .filter_map(|id| self.get(id).map(|c| (id, c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim_state::SimPhase;

    fn container() -> SimContainer {
        SimContainer::new(Arc::new(herdsman_spec::Service::new(
            "web",
            herdsman_spec::ServiceKind::Service,
        )))
    }

    fn id(service: &str, replica: u32, generation: u64) -> ContainerId {
        ContainerId::new("d", service, replica, generation)
    }

    fn ids(c: &Containers) -> Vec<String> {
        c.iter().map(|(id, _)| id.to_string()).collect()
    }

    #[test]
    fn a_container_is_found_by_its_id_and_no_other() {
        let mut c = Containers::default();
        assert!(c.insert(id("web", 3, 1), container()).is_none());
        assert!(c.contains_key(&id("web", 3, 1)));
        for other in [id("web", 3, 2), id("web", 2, 1), id("api", 3, 1)] {
            assert!(!c.contains_key(&other), "{other}");
        }
        assert!(!c.contains_key(&ContainerId::new("e", "web", 3, 1)));
        c.get_mut(&id("web", 3, 1)).expect("found").checks = 7;
        assert_eq!(c.get(&id("web", 3, 1)).map(|x| x.checks), Some(7));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_replicas_incarnations_are_kept_apart_and_the_later_one_survives_the_earlier() {
        let mut c = Containers::default();
        c.insert(id("web", 0, 1), container());
        c.insert(id("web", 0, 2), container());
        c.insert(id("web", 0, 3), container());
        c.get_mut(&id("web", 0, 2)).expect("found").checks = 2;
        c.get_mut(&id("web", 0, 3)).expect("found").checks = 3;
        assert!(c.remove(&id("web", 0, 1)).is_some());
        assert!(c.remove(&id("web", 0, 1)).is_none());
        assert_eq!(c.get(&id("web", 0, 2)).map(|x| x.checks), Some(2));
        assert_eq!(c.get(&id("web", 0, 3)).map(|x| x.checks), Some(3));
        let lo = id("web", 0, 0);
        let hi = id("web", 0, u64::MAX);
        let range: Vec<u64> = c.range(lo..=hi).map(|(id, _)| id.generation).collect();
        assert_eq!(range, vec![2, 3]);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn inserting_an_id_again_replaces_its_container_and_returns_the_old_one() {
        let mut c = Containers::default();
        c.insert(id("web", 0, 1), container());
        c.get_mut(&id("web", 0, 1)).expect("found").phase = SimPhase::StartFailed;
        let old = c.insert(id("web", 0, 1), container()).expect("replaced");
        assert!(matches!(old.phase, SimPhase::StartFailed));
        assert!(matches!(
            c.get(&id("web", 0, 1)).map(|x| &x.phase),
            Some(SimPhase::Created)
        ));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn containers_are_listed_in_id_order_whatever_the_order_they_came_in() {
        let mut c = Containers::default();
        for (s, r, g) in [
            ("web", 10, 1),
            ("api", 0, 2),
            ("web", 2, 5),
            ("web", 2, 4),
            ("api", 0, 1),
        ] {
            c.insert(id(s, r, g), container());
        }
        let expected: Vec<String> = [
            id("api", 0, 1),
            id("api", 0, 2),
            id("web", 2, 4),
            id("web", 2, 5),
            id("web", 10, 1),
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(ids(&c), expected);
    }

    #[test]
    fn a_huge_replica_index_is_kept_without_a_slot_for_every_index_below_it() {
        let mut c = Containers::default();
        let far = id("web", u32::MAX, 1);
        c.insert(far.clone(), container());
        c.insert(id("web", 1, 1), container());
        let replicas = c.replicas(&far).expect("the service is known");
        assert_eq!(
            replicas.dense.len(),
            2,
            "only indexes up to 1 have slots in the vector"
        );
        assert_eq!(replicas.sparse.len(), 1);
        assert!(c.contains_key(&far));
        assert!(c.remove(&far).is_some());
        assert!(!c.contains_key(&far));
        assert!(c
            .replicas(&far)
            .expect("web still has replica 1")
            .sparse
            .is_empty());
    }

    #[test]
    fn a_few_far_apart_indexes_never_grow_the_vector_past_twice_its_use() {
        let mut c = Containers::default();
        // Each index just inside what the vector may grow to, were it to follow them.
        let mut far = 0u32;
        for _ in 0..20 {
            c.insert(id("web", far, 1), container());
            far = far * 2 + 100;
        }
        let r = c.replicas(&id("web", 0, 1)).expect("the service is known");
        assert!(
            r.dense.len() <= 2 * r.used + DENSE_SLACK,
            "{} slots for {} in use",
            r.dense.len(),
            r.used
        );
        assert_eq!(r.used + r.sparse.len(), 20, "every container kept once");
        let mut far = 0u32;
        for _ in 0..20 {
            assert!(c.contains_key(&id("web", far, 1)), "replica {far}");
            far = far * 2 + 100;
        }
    }

    #[test]
    fn indexes_kept_in_the_map_move_into_the_vector_when_it_grows_over_them() {
        let mut c = Containers::default();
        c.insert(id("web", 500, 1), container());
        c.get_mut(&id("web", 500, 1)).expect("found").checks = 5;
        for r in 0..600 {
            if r != 500 {
                c.insert(id("web", r, 1), container());
            }
        }
        let r = c.replicas(&id("web", 0, 1)).expect("the service is known");
        assert!(r.sparse.is_empty(), "the vector covers 0..600");
        assert_eq!((r.dense.len(), r.used), (600, 600));
        assert_eq!(c.get(&id("web", 500, 1)).map(|x| x.checks), Some(5));
        assert!(c.insert(id("web", 500, 2), container()).is_none());
        assert_eq!(c.len(), 601);
        for r in (0..600).rev() {
            assert!(c.remove(&id("web", r, 1)).is_some(), "replica {r}");
        }
        assert!(c.remove(&id("web", 500, 2)).is_some());
        assert!(c.by_name.is_empty());
    }

    #[test]
    fn removing_a_services_last_container_forgets_the_service_and_a_scale_downs_tail() {
        let mut c = Containers::default();
        for r in 0..4 {
            c.insert(id("web", r, 1), container());
        }
        c.remove(&id("web", 3, 1));
        c.remove(&id("web", 2, 1));
        assert_eq!(c.replicas(&id("web", 0, 1)).map(|r| r.dense.len()), Some(2));
        c.remove(&id("web", 0, 1));
        c.remove(&id("web", 1, 1));
        assert!(c.by_name.is_empty());
        assert_eq!(c.len(), 0);
    }
}
