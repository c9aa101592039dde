//! The key of a replica slot in the maps shared by a deployment's actors (status board,
//! init runs, generations): its service's name and its index, looked up without cloning
//! the name.
//!
//! Every replica of a service shares one `Arc<str>` for its name. Cloning it to build a
//! lookup key, and dropping the clone, is two atomic writes to one cache line that every
//! container actor writes to, from both cores: in a burst of 10,000 restarts, such
//! reference counts took most of the samples of the restart path's own functions. A
//! lookup borrows the key as `(&str, u32)` instead; only an insert clones the name.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A replica slot: service and replica index.
pub(crate) type SlotKey = (Arc<str>, u32);

/// A slot key, owned or borrowed. Hashes and compares as the owned tuple does.
pub(crate) trait SlotRef {
    fn service(&self) -> &str;
    fn replica(&self) -> u32;
}

impl SlotRef for SlotKey {
    fn service(&self) -> &str {
        &self.0
    }

    fn replica(&self) -> u32 {
        self.1
    }
}

impl SlotRef for (&str, u32) {
    fn service(&self) -> &str {
        self.0
    }

    fn replica(&self) -> u32 {
        self.1
    }
}

/// As `(Arc<str>, u32)` hashes: the name (as `str` does), then the index.
impl Hash for dyn SlotRef + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.service().hash(state);
        self.replica().hash(state);
    }
}

impl PartialEq for dyn SlotRef + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.replica() == other.replica() && self.service() == other.service()
    }
}

impl Eq for dyn SlotRef + '_ {}

impl<'a> Borrow<dyn SlotRef + 'a> for SlotKey {
    fn borrow(&self) -> &(dyn SlotRef + 'a) {
        self
    }
}

/// The borrowed key of `service`'s replica `replica`, for `get`, `get_mut` and `remove`.
pub(crate) fn slot(service: &str, replica: u32) -> (&str, u32) {
    (service, replica)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn a_borrowed_key_finds_what_the_owned_key_stored() {
        let mut map: HashMap<SlotKey, &str> = HashMap::new();
        map.insert((Arc::from("web"), 3), "three");
        map.insert((Arc::from("web"), 4), "four");
        map.insert((Arc::from("db"), 3), "db three");
        assert_eq!(map.get(&slot("web", 3) as &dyn SlotRef), Some(&"three"));
        assert_eq!(map.get(&slot("db", 3) as &dyn SlotRef), Some(&"db three"));
        assert_eq!(map.get(&slot("web", 5) as &dyn SlotRef), None);
        assert_eq!(map.get(&slot("we", 3) as &dyn SlotRef), None);
        assert_eq!(map.remove(&slot("web", 4) as &dyn SlotRef), Some("four"));
        assert_eq!(map.len(), 2);
    }
}
