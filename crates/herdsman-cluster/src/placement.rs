//! Which node runs which replica slot. Pure and deterministic: the same spec, nodes and
//! current assignment always give the same answer.

use std::collections::BTreeMap;

use herdsman_spec::Deployment;

use crate::wire::Slots;

/// Every node's slots, by node name.
pub type Placement = BTreeMap<String, Slots>;

/// Place every slot of `spec` on the `live` nodes (any order), keeping each slot that
/// `current` has on a live node still eligible for it, and placing the rest: with
/// `spread`, on the eligible node with the fewest slots of the service (ties: by name);
/// without, on the first eligible node by name. A slot on no live node, or on two, is
/// (re)placed; slots beyond the desired count are dropped. Slots no live node may run
/// stay unplaced. Every live node appears in the answer, with empty slots if it runs
/// nothing.
pub fn place(spec: &Deployment, live: &[String], current: &Placement) -> Placement {
    let mut nodes: Vec<&String> = live.iter().collect();
    nodes.sort();
    nodes.dedup();
    let mut out: Placement = nodes.iter().map(|n| ((*n).clone(), Slots::new())).collect();
    for service in &spec.services {
        let desired = service.initial_replicas();
        let eligible: Vec<&String> = nodes
            .iter()
            .copied()
            .filter(|n| service.placement.nodes.is_empty() || service.placement.nodes.contains(n))
            .collect();
        let mut owner: BTreeMap<u32, &String> = BTreeMap::new();
        // Keep what already runs where it may (the first node by name wins a duplicate).
        for node in &eligible {
            let kept = current
                .get(*node)
                .and_then(|slots| slots.get(&service.name))
                .into_iter()
                .flatten();
            for &slot in kept {
                if slot < desired {
                    owner.entry(slot).or_insert(node);
                }
            }
        }
        let mut count: BTreeMap<&String, usize> = eligible.iter().map(|n| (*n, 0)).collect();
        for node in owner.values() {
            *count.entry(node).or_default() += 1;
        }
        // Kept slots first, in the order the node has them, then new ones: a node's
        // list only ever grows at its end, so it can start new slots beside old ones.
        for node in &eligible {
            let kept: Vec<u32> = current
                .get(*node)
                .and_then(|slots| slots.get(&service.name))
                .into_iter()
                .flatten()
                .copied()
                .filter(|slot| owner.get(slot) == Some(node))
                .collect();
            if !kept.is_empty() {
                if let Some(slots) = out.get_mut(*node) {
                    slots.insert(service.name.clone(), kept);
                }
            }
        }
        for slot in 0..desired {
            if owner.contains_key(&slot) {
                continue;
            }
            let chosen = if service.placement.spread {
                // Fewest first; `min_by_key` keeps the first (by name) of equals.
                eligible
                    .iter()
                    .copied()
                    .min_by_key(|n| count.get(n).copied())
            } else {
                eligible.first().copied()
            };
            if let Some(node) = chosen {
                owner.insert(slot, node);
                *count.entry(node).or_default() += 1;
                if let Some(slots) = out.get_mut(node) {
                    slots.entry(service.name.clone()).or_default().push(slot);
                }
            }
        }
    }
    out
}

/// The slots of `spec` that `placement` leaves on no node, as `service/replica`.
pub fn unplaced(spec: &Deployment, placement: &Placement) -> Vec<String> {
    let mut missing = Vec::new();
    for service in &spec.services {
        for slot in 0..service.initial_replicas() {
            let placed = placement
                .values()
                .any(|s| s.get(&service.name).is_some_and(|v| v.contains(&slot)));
            if !placed {
                missing.push(format!("{}/{slot}", service.name));
            }
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use herdsman_spec::{Placement as Rule, Scale, Service, ServiceKind};

    fn spec(services: &[(&str, u32, &[&str], bool)]) -> Deployment {
        Deployment {
            name: "t".into(),
            services: services
                .iter()
                .map(|(name, replicas, nodes, spread)| Service {
                    scale: Scale::Fixed {
                        replicas: *replicas,
                    },
                    placement: Rule {
                        nodes: nodes.iter().map(|n| n.to_string()).collect(),
                        spread: *spread,
                    },
                    ..Service::new(*name, ServiceKind::Service)
                })
                .collect(),
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn slots_of<'a>(p: &'a Placement, node: &str, service: &str) -> &'a [u32] {
        p.get(node)
            .and_then(|s| s.get(service))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    #[test]
    fn spread_deals_slots_round_robin_over_nodes_in_name_order() {
        let p = place(
            &spec(&[("web", 5, &[], true)]),
            &names(&["c", "a", "b"]),
            &Placement::new(),
        );
        assert_eq!(slots_of(&p, "a", "web"), &[0, 3]);
        assert_eq!(slots_of(&p, "b", "web"), &[1, 4]);
        assert_eq!(slots_of(&p, "c", "web"), &[2]);
    }

    #[test]
    fn placement_is_deterministic_whatever_the_order_nodes_are_given_in() {
        let s = spec(&[("web", 7, &[], true), ("db", 2, &["b", "c"], true)]);
        let one = place(&s, &names(&["a", "b", "c"]), &Placement::new());
        let two = place(&s, &names(&["c", "b", "a", "b"]), &Placement::new());
        assert_eq!(one, two);
    }

    #[test]
    fn only_listed_nodes_run_a_service_that_names_its_nodes() {
        let p = place(
            &spec(&[("db", 3, &["b"], true)]),
            &names(&["a", "b", "c"]),
            &Placement::new(),
        );
        assert_eq!(slots_of(&p, "b", "db"), &[0, 1, 2]);
        assert!(slots_of(&p, "a", "db").is_empty() && slots_of(&p, "c", "db").is_empty());
    }

    #[test]
    fn without_spread_the_first_eligible_node_takes_every_slot() {
        let p = place(
            &spec(&[("web", 3, &["c", "b"], false)]),
            &names(&["a", "b", "c"]),
            &Placement::new(),
        );
        assert_eq!(slots_of(&p, "b", "web"), &[0, 1, 2]);
    }

    #[test]
    fn a_lost_nodes_slots_move_to_live_nodes_and_nothing_else_moves() {
        let s = spec(&[("web", 4, &[], true)]);
        let before = place(&s, &names(&["a", "b", "c"]), &Placement::new());
        let after = place(&s, &names(&["a", "c"]), &before);
        assert_eq!(slots_of(&before, "b", "web"), &[1]);
        assert_eq!(slots_of(&after, "a", "web"), &[0, 3]);
        assert_eq!(slots_of(&after, "c", "web"), &[2, 1]);
        assert!(!after.contains_key("b"));
        // The lost node's slot went to the node with fewer; a and c kept theirs.
        for slot in slots_of(&before, "a", "web") {
            assert!(slots_of(&after, "a", "web").contains(slot));
        }
    }

    #[test]
    fn a_slot_claimed_by_two_nodes_is_kept_by_one() {
        let s = spec(&[("web", 2, &[], true)]);
        let mut current = Placement::new();
        current.insert("a".into(), Slots::from([("web".into(), vec![0])]));
        current.insert("b".into(), Slots::from([("web".into(), vec![0, 1])]));
        let p = place(&s, &names(&["a", "b"]), &current);
        assert_eq!(slots_of(&p, "a", "web"), &[0]);
        assert_eq!(slots_of(&p, "b", "web"), &[1]);
    }

    #[test]
    fn slots_nobody_may_run_are_reported_unplaced() {
        let s = spec(&[("db", 2, &["z"], true)]);
        let p = place(&s, &names(&["a"]), &Placement::new());
        assert_eq!(
            unplaced(&s, &p),
            vec!["db/0".to_string(), "db/1".to_string()]
        );
    }
}
