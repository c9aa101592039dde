//! The generations issued for each replica slot, owned by the deployment so that they
//! outlive any supervisor: a replacement supervisor, a slot scaled away and back, a
//! rollout's replacement all take the next one, and no container id is ever issued twice
//! (a late report of an old incarnation is then never taken for a new one's).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::slot_key::{slot, SlotKey as Slot, SlotRef};

/// The highest generation issued per slot.
#[derive(Clone, Default)]
pub(crate) struct Generations {
    issued: Arc<Mutex<HashMap<Slot, u64>>>,
}

impl Generations {
    /// A generation for a new incarnation of the slot: `at_least`, or past every one
    /// issued before.
    pub(crate) fn issue(&self, service: &Arc<str>, replica: u32, at_least: u64) -> u64 {
        let mut issued = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
        // The name is cloned only for a slot's first generation (see `slot_key`).
        if let Some(last) = issued.get_mut(&slot(service, replica) as &dyn SlotRef) {
            *last = at_least.max(last.saturating_add(1));
            return *last;
        }
        issued.insert((service.clone(), replica), at_least);
        at_least
    }

    /// `generation` is in use (an adopted survivor's): never issue it again.
    pub(crate) fn note(&self, service: &Arc<str>, replica: u32, generation: u64) {
        let mut issued = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
        let last = issued
            .entry((service.clone(), replica))
            .or_insert(generation);
        *last = (*last).max(generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_never_gets_a_generation_twice() {
        let g = Generations::default();
        let a: Arc<str> = Arc::from("a");
        assert_eq!(g.issue(&a, 0, 0), 0);
        assert_eq!(
            g.issue(&a, 0, 0),
            1,
            "a slot booted again after a scale-away"
        );
        assert_eq!(g.issue(&a, 0, 5), 5);
        g.note(&a, 1, 7);
        assert_eq!(g.issue(&a, 1, 0), 8);
        assert_eq!(g.issue(&a, 2, 0), 0, "slots are independent");
    }
}
