//! A service supervisor's view of each replica slot, and what each adds to its counts.

use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use herdsman_probe::InitRetry;
use herdsman_spec::Service;
use ractor::ActorRef;
use tokio::time::Instant;

use crate::container_actor::ContainerMsg;
use crate::restart::RestartTracker;

/// The supervisor's view of one replica: the authority on its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotState {
    Booting,
    Running,
    /// Running but unhealthy, `on_unhealthy: isolate`.
    Unhealthy,
    Backoff,
    /// Exited and kept by the panic action `isolate`.
    Isolated,
    Completed,
    Failed,
    Stopped,
}

pub(super) struct Slot {
    pub(super) actor: ActorRef<ContainerMsg>,
    pub(super) generation: u64,
    pub(super) state: SlotState,
    pub(super) healthy: bool,
    pub(super) ready: bool,
    /// Invalidates restart and ready timers that no longer apply.
    pub(super) token: u64,
    pub(super) tracker: RestartTracker,
    pub(super) init_retry: InitRetry,
    /// When the current incarnation started, for the clean-run reset of a replica that
    /// is restarted for turning unhealthy (it has no exit to say how long it ran).
    pub(super) started_at: Option<Instant>,
    /// Since when it has been ready, for a rollout's `min_ready`.
    pub(super) ready_since: Option<Instant>,
    /// The spec its current incarnation runs (old and new differ during a rollout).
    pub(super) spec: Arc<Service>,
    /// A health report that overtook its incarnation's start report, by generation. The
    /// probe reports to the supervisor itself and the start comes from the container
    /// actor: two senders. As the tree is wired now the start is sent before the probe
    /// exists, so it is ahead in the mailbox; the supervisor keeps this rather than rest
    /// on that order. A probe reports transitions only; dropping an early one would leave
    /// the replica never healthy, on the board or to its service, while its checks pass.
    pub(super) early_health: Option<(u64, bool)>,
}

/// What replicas add to their service's counts: running, healthy, ready, and failed for
/// good (a failed replica never comes back by itself, so its service cannot become ready).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Share {
    pub(super) running: u32,
    pub(super) healthy: u32,
    pub(super) ready: u32,
    pub(super) failed: u32,
}

impl Share {
    pub(super) fn add(self, o: Share) -> Share {
        Share {
            running: self.running + o.running,
            healthy: self.healthy + o.healthy,
            ready: self.ready + o.ready,
            failed: self.failed + o.failed,
        }
    }

    pub(super) fn sub(self, o: Share) -> Share {
        Share {
            running: self.running - o.running,
            healthy: self.healthy - o.healthy,
            ready: self.ready - o.ready,
            failed: self.failed - o.failed,
        }
    }
}

impl Slot {
    /// Keep a health report of the current incarnation heard while it is still booting.
    /// True when it was kept (the caller applies it once the start is heard of).
    pub(super) fn keep_early_health(&mut self, generation: u64, healthy: bool) -> bool {
        let early = self.generation == generation && self.state == SlotState::Booting;
        if early {
            self.early_health = Some((generation, healthy));
        }
        early
    }

    /// The health report kept for `generation`, once: a report of an earlier incarnation
    /// is dropped.
    pub(super) fn take_early_health(&mut self, generation: u64) -> Option<bool> {
        self.early_health
            .take()
            .filter(|(g, _)| *g == generation)
            .map(|(_, healthy)| healthy)
    }

    /// This replica's share of the counts.
    pub(super) fn share(&self, is_job: bool) -> Share {
        match self.state {
            SlotState::Running => Share {
                running: 1,
                healthy: u32::from(self.healthy),
                // A job is ready (for stability and for `healthy` dependants) only once
                // it has completed: a migration must finish before its dependants start.
                ready: u32::from(self.ready && !is_job),
                failed: 0,
            },
            SlotState::Unhealthy => Share {
                running: 1,
                ..Share::default()
            },
            SlotState::Completed if is_job => Share {
                ready: 1,
                ..Share::default()
            },
            SlotState::Failed => Share {
                failed: 1,
                ..Share::default()
            },
            _ => Share::default(),
        }
    }
}

/// A supervisor's slots by replica index, in index order, with the iterators of a
/// `BTreeMap<u32, Slot>`. The indexes are dense (0 to the desired count, then a rollout's
/// stand-ins just above it), so a vector indexed by replica: a lookup is one read. In a
/// burst of 10,000 crashes, the B-tree's searches (two to four per message, each through
/// four levels) were the supervisor's largest cost after the events. An index far past
/// the slots in use (a stand-in placed above an orphan whose index a container's labels
/// claimed) goes to a map instead, so the vector never holds more than twice the slots in
/// use and [`DENSE_SLACK`] more, whatever the indexes. Every index in the map is past the
/// vector's end.
pub(super) struct Slots<T = Slot> {
    dense: Vec<Option<(u32, T)>>,
    /// The vector's entries that hold a slot.
    used: usize,
    sparse: BTreeMap<u32, T>,
}

/// How many entries past twice those in use the vector may grow to.
const DENSE_SLACK: usize = 64;

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            dense: Vec::new(),
            used: 0,
            sparse: BTreeMap::new(),
        }
    }
}

impl<T> Slots<T> {
    /// Make room for slots up to `replicas` (the desired count) at once.
    pub(super) fn reserve(&mut self, replicas: u32) {
        let wanted = (replicas as usize).saturating_sub(self.dense.len());
        self.dense.reserve_exact(wanted);
    }

    pub(super) fn get(&self, replica: &u32) -> Option<&T> {
        match self.dense.get(*replica as usize) {
            Some(entry) => entry.as_ref().map(|(_, slot)| slot),
            None => self.sparse.get(replica),
        }
    }

    pub(super) fn get_mut(&mut self, replica: &u32) -> Option<&mut T> {
        match self.dense.get_mut(*replica as usize) {
            Some(entry) => entry.as_mut().map(|(_, slot)| slot),
            None => self.sparse.get_mut(replica),
        }
    }

    pub(super) fn contains_key(&self, replica: &u32) -> bool {
        self.get(replica).is_some()
    }

    /// Put `slot` at `replica`; returns the slot it replaced.
    pub(super) fn insert(&mut self, replica: u32, slot: T) -> Option<T> {
        let at = replica as usize;
        if at >= self.dense.len() && at <= 2 * self.used + DENSE_SLACK {
            self.dense.resize_with(at + 1, || None);
            // The map keeps only indexes past the vector: take in those it now covers.
            let past = self.sparse.split_off(&(replica + 1));
            for (i, s) in std::mem::replace(&mut self.sparse, past) {
                self.dense[i as usize] = Some((i, s));
                self.used += 1;
            }
        }
        match self.dense.get_mut(at) {
            Some(entry) => {
                let old = entry.replace((replica, slot)).map(|(_, s)| s);
                self.used += usize::from(old.is_none());
                old
            }
            None => self.sparse.insert(replica, slot),
        }
    }

    /// Take the slot at `replica` out; the vector shrinks past the last slot left (a
    /// scale-down), and gives back its memory once it uses under a quarter of it.
    pub(super) fn remove(&mut self, replica: &u32) -> Option<T> {
        let Some(entry) = self.dense.get_mut(*replica as usize) else {
            return self.sparse.remove(replica);
        };
        let old = entry.take()?.1;
        self.used -= 1;
        while matches!(self.dense.last(), Some(None)) {
            self.dense.pop();
        }
        if self.dense.len() < self.dense.capacity() / 4 {
            self.dense.shrink_to(self.dense.len() * 2);
        }
        Some(old)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&u32, &T)> {
        let dense = self.dense.iter().flatten().map(|(i, s)| (i, s));
        dense.chain(&self.sparse)
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&u32, &mut T)> {
        let dense = self.dense.iter_mut().flatten().map(|(i, s)| (&*i, s));
        dense.chain(&mut self.sparse)
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &u32> {
        self.iter().map(|(i, _)| i)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &T> {
        self.iter().map(|(_, s)| s)
    }

    /// The slots with indexes in `range`, in index order. A range whose start is past its
    /// end is not asked for (a `BTreeMap` panics on one, and so does the map here).
    pub(super) fn range<R: RangeBounds<u32> + Clone>(
        &self,
        range: R,
    ) -> impl Iterator<Item = (&u32, &T)> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s as usize,
            Bound::Excluded(&s) => s as usize + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e as usize + 1,
            Bound::Excluded(&e) => e as usize,
            Bound::Unbounded => usize::MAX,
        };
        let end = end.min(self.dense.len());
        let entries = self.dense.get(start.min(end)..end).unwrap_or_default();
        let dense = entries.iter().flatten().map(|(i, s)| (i, s));
        dense.chain(self.sparse.range(range))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(indexes: &[u32]) -> Slots<&'static str> {
        let mut s = Slots::default();
        for &i in indexes {
            s.insert(i, "x");
        }
        s
    }

    #[test]
    fn slots_iterate_and_range_in_index_order_as_a_btree_map_would() {
        let s = slots(&[4, 0, 2, 3, 7]);
        let all: Vec<u32> = s.keys().copied().collect();
        assert_eq!(all, vec![0, 2, 3, 4, 7]);
        let r = |range: (Bound<u32>, Bound<u32>)| -> Vec<u32> {
            s.range(range).map(|(k, _)| *k).collect()
        };
        assert_eq!(r((Bound::Unbounded, Bound::Excluded(3))), vec![0, 2]);
        assert_eq!(r((Bound::Included(3), Bound::Unbounded)), vec![3, 4, 7]);
        assert_eq!(r((Bound::Excluded(3), Bound::Included(7))), vec![4, 7]);
        assert_eq!(r((Bound::Included(8), Bound::Unbounded)), Vec::<u32>::new());
        assert!(s.contains_key(&2) && !s.contains_key(&1) && !s.contains_key(&100));
    }

    #[test]
    fn a_slot_replaced_or_removed_is_handed_back_and_the_tail_shrinks() {
        let mut s = slots(&[0, 1, 5]);
        assert_eq!(s.insert(1, "y"), Some("x"));
        assert_eq!(s.get(&1), Some(&"y"));
        assert_eq!(s.remove(&5), Some("x"));
        assert_eq!(s.dense.len(), 2, "the vector ends at the last slot left");
        let mut big = slots(&(0..1000).collect::<Vec<u32>>());
        for i in (10..1000).rev() {
            big.remove(&i);
        }
        assert!(
            big.dense.capacity() < 100,
            "a scale-down from 1,000 to 10 keeps {} entries' memory",
            big.dense.capacity()
        );
        assert_eq!(big.keys().count(), 10);
        assert_eq!(s.remove(&5), None);
        assert_eq!(s.remove(&9), None);
        if let Some(v) = s.get_mut(&0) {
            *v = "z";
        }
        let left: Vec<(u32, &str)> = s.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(left, vec![(0, "z"), (1, "y")]);
    }

    #[test]
    fn an_index_far_past_the_others_goes_to_the_map_and_keeps_the_order() {
        let mut s = slots(&[0, 1, 2]);
        s.insert(4_000_000_000, "far");
        s.insert(150, "near");
        assert!(
            s.dense.len() <= 2 * 3 + DENSE_SLACK + 1,
            "{}",
            s.dense.len()
        );
        assert_eq!(s.get(&4_000_000_000), Some(&"far"));
        let all: Vec<u32> = s.keys().copied().collect();
        assert_eq!(all, vec![0, 1, 2, 150, 4_000_000_000]);
        let above: Vec<u32> = s.range(3..).map(|(k, _)| *k).collect();
        assert_eq!(above, vec![150, 4_000_000_000]);
        // Filling in below takes the map's covered indexes into the vector.
        for i in 3..100 {
            s.insert(i, "x");
        }
        assert!(s.sparse.keys().all(|&k| k as usize >= s.dense.len()));
        assert_eq!(s.keys().count(), 3 + 2 + 97);
        assert_eq!(s.remove(&4_000_000_000), Some("far"));
        assert_eq!(s.iter_mut().count(), 3 + 1 + 97);
    }
}
