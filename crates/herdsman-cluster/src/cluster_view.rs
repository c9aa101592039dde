//! The coordinator's view of the cluster: every node's lease, epoch, assignment and
//! reported replicas; where each slot goes; whether the whole deployment is stable.
//! Pure: the caller passes `now` and carries out the answers.

use std::collections::BTreeMap;
use std::time::Duration;

use herdsman_core::{ReplicaState, ReplicaStatus, ServicePhase};
use herdsman_spec::Deployment;
use serde::Serialize;
use tokio::time::Instant;

use crate::lease::{Lease, NodeState, Transition};
use crate::placement::{self, Placement};
use crate::wire::{Assignment, NodeReport, Row, Slots};

/// One node as the coordinator knows it.
#[derive(Debug)]
struct NodeEntry {
    lease: Lease,
    epoch: u64,
    labels: BTreeMap<String, String>,
    rows: Vec<Row>,
    stable: bool,
    /// What the node said it runs, with the epoch it said it at.
    reported: Slots,
    reported_epoch: u64,
}

/// Something the view decided that the caller may want to log or time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewEvent {
    /// A node joined (first report).
    Joined(String),
    /// A node's lease ran out; its slots were placed elsewhere.
    Lost(String),
    /// A lost node was heard again; it is fenced with a new epoch.
    Returned {
        /// The node.
        node: String,
        /// Its new epoch.
        epoch: u64,
    },
    /// The gathering window ended and placement began.
    Placing,
}

/// The view.
#[derive(Debug)]
pub struct ClusterView {
    spec: Deployment,
    me: String,
    lost_after: Duration,
    nodes: BTreeMap<String, NodeEntry>,
    placement: Placement,
    gather_until: Instant,
    gathering: bool,
    events: Vec<ViewEvent>,
}

impl ClusterView {
    /// A view for the coordinator `me` of `spec`, placing nothing until `gather_until`:
    /// until then it only learns what the nodes already run (a restarted coordinator
    /// adopts that instead of starting it again).
    pub fn new(spec: Deployment, me: &str, lost_after: Duration, gather_until: Instant) -> Self {
        ClusterView {
            spec,
            me: me.to_string(),
            lost_after,
            nodes: BTreeMap::new(),
            placement: Placement::new(),
            gather_until,
            gathering: true,
            events: Vec::new(),
        }
    }

    /// The spec.
    pub fn spec(&self) -> &Deployment {
        &self.spec
    }

    /// What happened since the last call.
    pub fn take_events(&mut self) -> Vec<ViewEvent> {
        std::mem::take(&mut self.events)
    }

    /// A node's report at `now`; the assignment to answer it with.
    pub fn report(&mut self, now: Instant, report: NodeReport) -> Assignment {
        let name = report.node.clone();
        let entry = match self.nodes.get_mut(&name) {
            Some(e) => {
                if e.lease.heard(now) == Transition::Returned {
                    // Its slots went elsewhere while it was lost: whatever it runs is
                    // stale, and it must stop it before it takes new work.
                    e.epoch += 1;
                    self.events.push(ViewEvent::Returned {
                        node: name.clone(),
                        epoch: e.epoch,
                    });
                }
                e
            }
            None => {
                self.events.push(ViewEvent::Joined(name.clone()));
                // A node that already runs slots under an epoch (its coordinator
                // restarted) keeps them, unless placing has begun without it.
                let adopt = report.epoch > 0 && (self.gathering || self.placement.is_empty());
                let epoch = if adopt {
                    report.epoch
                } else {
                    report.epoch + 1
                };
                if adopt {
                    self.placement.insert(name.clone(), report.slots.clone());
                }
                self.nodes.entry(name.clone()).or_insert(NodeEntry {
                    lease: Lease::new(now, self.lost_after),
                    epoch,
                    labels: BTreeMap::new(),
                    rows: Vec::new(),
                    stable: false,
                    reported: Slots::new(),
                    reported_epoch: 0,
                })
            }
        };
        entry.labels = report.labels;
        entry.rows = report.rows;
        entry.stable = report.stable;
        entry.reported = report.slots;
        entry.reported_epoch = report.epoch;
        let epoch = entry.epoch;
        if !self.gathering {
            self.replace();
        }
        Assignment {
            epoch,
            deployment: Some(self.spec.clone()),
            slots: self.placement.get(&name).cloned().unwrap_or_default(),
        }
    }

    /// Check the leases and the gathering window at `now`.
    pub fn tick(&mut self, now: Instant) {
        let mut changed = false;
        for (name, e) in &mut self.nodes {
            if *name == self.me {
                continue;
            }
            if e.lease.check(now) == Transition::Lost {
                self.events.push(ViewEvent::Lost(name.clone()));
                self.placement.remove(name);
                changed = true;
            }
        }
        if self.gathering && now >= self.gather_until {
            self.gathering = false;
            self.events.push(ViewEvent::Placing);
            changed = true;
        }
        if changed && !self.gathering {
            self.replace();
        }
    }

    fn live(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, e)| e.lease.state() == NodeState::Live)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn replace(&mut self) {
        let live = self.live();
        self.placement = placement::place(&self.spec, &live, &self.placement);
    }

    /// Whether placing has begun.
    pub fn placing(&self) -> bool {
        !self.gathering
    }

    /// The node a slot is assigned to.
    fn owner(&self, service: &str, slot: u32) -> Option<&String> {
        self.placement
            .iter()
            .find(|(_, s)| s.get(service).is_some_and(|v| v.contains(&slot)))
            .map(|(n, _)| n)
    }

    fn live_and_current(&self, node: &str) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|e| e.lease.state() == NodeState::Live && e.reported_epoch == e.epoch)
    }

    /// The deployment's status across nodes.
    pub fn status(&self) -> ClusterStatus {
        let mut services = Vec::new();
        let mut stable = self.placing();
        for service in &self.spec.services {
            let desired = service.initial_replicas();
            let mut replicas = Vec::new();
            let mut elsewhere = Vec::new();
            for slot in 0..desired {
                let owner = self.owner(&service.name, slot);
                let row = owner.filter(|n| self.live_and_current(n)).and_then(|n| {
                    self.nodes
                        .get(n)?
                        .rows
                        .iter()
                        .find(|r| r.service == service.name && r.status.replica == slot)
                });
                let ready = row.is_some_and(|r| ready(&r.status))
                    && owner.is_some_and(|n| self.nodes.get(n).is_some_and(|e| e.stable));
                stable &= ready;
                replicas.push(NodeReplica {
                    status: row
                        .map(|r| r.status.clone())
                        .unwrap_or_else(|| ReplicaStatus::new(slot)),
                    node: owner.cloned(),
                });
            }
            // Rows of this service on nodes that are not (or no longer) their owner.
            for (name, e) in &self.nodes {
                for r in e.rows.iter().filter(|r| r.service == service.name) {
                    let owned = self.owner(&service.name, r.status.replica) == Some(name)
                        && self.live_and_current(name);
                    if !owned {
                        // A live node running a slot it does not own: two incarnations,
                        // or one nobody wants. A lost node's rows are old news (what it
                        // runs now is unknown until it returns and is fenced).
                        let lost = e.lease.state() == NodeState::Lost;
                        stable &= lost || !is_live(&r.status);
                        elsewhere.push(NodeReplica {
                            status: r.status.clone(),
                            node: Some(name.clone()),
                        });
                    }
                }
            }
            let running = replicas
                .iter()
                .filter(|r| r.status.state == ReplicaState::Running)
                .count();
            let healthy = replicas.iter().filter(|r| ready(&r.status)).count();
            let unplaced = replicas.iter().filter(|r| r.node.is_none()).count();
            services.push(ClusterService {
                name: service.name.clone(),
                phase: ServicePhase::Running,
                reason: match (self.placing(), unplaced) {
                    (false, _) => Some("gathering the nodes' reports before placing".into()),
                    (true, 0) => None,
                    (true, n) => Some(format!("{n} replica(s) have no eligible live node")),
                },
                desired,
                running: u32::try_from(running).unwrap_or(u32::MAX),
                healthy: u32::try_from(healthy).unwrap_or(u32::MAX),
                replicas,
                elsewhere,
            });
        }
        ClusterStatus {
            deployment: self.spec.name.clone(),
            stable,
            placing: self.placing(),
            services,
        }
    }

    /// Every node: state, heartbeat age, epoch and replicas.
    pub fn nodes(&self, now: Instant) -> Vec<NodeInfo> {
        self.nodes
            .iter()
            .map(|(name, e)| NodeInfo {
                node: name.clone(),
                coordinator: *name == self.me,
                state: e.lease.state(),
                last_heartbeat_ms: u64::try_from(e.lease.silent_for(now).as_millis())
                    .unwrap_or(u64::MAX),
                epoch: e.epoch,
                labels: e.labels.clone(),
                replicas: self
                    .placement
                    .get(name)
                    .map_or(0, |s| s.values().map(Vec::len).sum()),
                running: e.rows.iter().filter(|r| is_live(&r.status)).count(),
            })
            .collect()
    }
}

/// Running and healthy.
fn ready(s: &ReplicaStatus) -> bool {
    s.state == ReplicaState::Running && s.healthy
}

/// Something of it may be running.
fn is_live(s: &ReplicaStatus) -> bool {
    matches!(
        s.state,
        ReplicaState::Running | ReplicaState::Starting | ReplicaState::Stopping
    )
}

/// `/v1/status` of a cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// The deployment.
    pub deployment: String,
    /// Every slot ready on its live owner, and no live node runs a slot it does not own.
    pub stable: bool,
    /// The gathering window is over (a coordinator places nothing before).
    pub placing: bool,
    /// Its services.
    pub services: Vec<ClusterService>,
}

/// One service across nodes.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterService {
    /// Its name.
    pub name: String,
    /// Always running: a cluster service is supervised by its nodes.
    pub phase: ServicePhase,
    /// Why some slots are not placed, when they are not.
    pub reason: Option<String>,
    /// Desired replicas.
    pub desired: u32,
    /// Slots running on their owner.
    pub running: u32,
    /// Slots running and healthy on their owner.
    pub healthy: u32,
    /// One per slot, as its owner reports it.
    pub replicas: Vec<NodeReplica>,
    /// Replicas on nodes that do not own their slot (a lost node's, being fenced).
    pub elsewhere: Vec<NodeReplica>,
}

/// A replica and its node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReplica {
    /// The replica.
    #[serde(flatten)]
    pub status: ReplicaStatus,
    /// The node it runs on (none: not placed).
    pub node: Option<String>,
}

/// One row of `/v1/nodes`.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    /// Its name.
    pub node: String,
    /// It is the coordinator.
    pub coordinator: bool,
    /// Live or lost.
    pub state: NodeState,
    /// Since its last heartbeat.
    pub last_heartbeat_ms: u64,
    /// Its epoch.
    pub epoch: u64,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Slots assigned to it.
    pub replicas: usize,
    /// Replicas it reports running.
    pub running: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use herdsman_spec::{Scale, Service, ServiceKind};

    const LEASE: Duration = Duration::from_secs(5);

    fn spec(replicas: u32) -> Deployment {
        Deployment {
            name: "t".into(),
            services: vec![Service {
                scale: Scale::Fixed { replicas },
                ..Service::new("web", ServiceKind::Service)
            }],
        }
    }

    fn running(slot: u32) -> Row {
        let mut status = ReplicaStatus::new(slot);
        status.state = ReplicaState::Running;
        status.healthy = true;
        Row {
            service: "web".into(),
            status,
        }
    }

    /// A node reporting that it runs `slots` under `epoch`, all ready.
    fn report(node: &str, epoch: u64, slots: &[u32]) -> NodeReport {
        NodeReport {
            node: node.into(),
            labels: BTreeMap::new(),
            epoch,
            deployment: Some("t".into()),
            slots: Slots::from([("web".into(), slots.to_vec())]),
            rows: slots.iter().map(|s| running(*s)).collect(),
            stable: true,
        }
    }

    /// Every node reports what it was assigned, running; returns the assignments.
    fn settle(view: &mut ClusterView, nodes: &[&str]) -> BTreeMap<String, Assignment> {
        let mut out = BTreeMap::new();
        for _ in 0..2 {
            for n in nodes {
                let (epoch, slots) = out
                    .get(*n)
                    .map(|a: &Assignment| {
                        (a.epoch, a.slots.get("web").cloned().unwrap_or_default())
                    })
                    .unwrap_or((0, Vec::new()));
                let a = view.report(Instant::now(), report(n, epoch, &slots));
                out.insert(n.to_string(), a);
            }
        }
        out
    }

    /// Let the gathering window pass with `nodes` reporting every second, and place.
    async fn gather(view: &mut ClusterView, nodes: &[&str]) -> BTreeMap<String, Assignment> {
        let mut last = BTreeMap::new();
        for _ in 0..LEASE.as_secs() {
            last = settle(view, nodes);
            tokio::time::advance(Duration::from_secs(1)).await;
            view.tick(Instant::now());
        }
        assert!(view.placing());
        last
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_placed_while_gathering_then_every_slot_is_spread() {
        let mut view = ClusterView::new(spec(3), "c", LEASE, Instant::now() + LEASE);
        let during = gather(&mut view, &["c", "a", "b"]).await;
        assert!(during.values().all(|a| a.slots.is_empty()), "{during:?}");
        let a = settle(&mut view, &["c", "a", "b"]);
        for n in ["a", "b", "c"] {
            assert_eq!(a[n].slots.get("web").map(Vec::len), Some(1), "{a:?}");
        }
        assert!(view.status().stable);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_node_is_lost_its_slots_move_and_when_it_returns_it_is_fenced() {
        let mut view = ClusterView::new(spec(3), "c", LEASE, Instant::now() + LEASE);
        gather(&mut view, &["c", "a", "b"]).await;
        let before = settle(&mut view, &["c", "a", "b"]);
        let a_slot = before["a"].slots["web"].clone();
        // a falls silent; the others keep reporting.
        for _ in 0..LEASE.as_secs() {
            tokio::time::advance(Duration::from_secs(1)).await;
            settle(&mut view, &["c", "b"]);
            view.tick(Instant::now());
        }
        assert!(view.take_events().contains(&ViewEvent::Lost("a".into())));
        let after = settle(&mut view, &["c", "b"]);
        let moved: Vec<u32> = ["b", "c"]
            .iter()
            .flat_map(|n| after[*n].slots.get("web").cloned().unwrap_or_default())
            .collect();
        assert!(a_slot.iter().all(|s| moved.contains(s)), "{after:?}");
        // Its stale row does not hold stability back while it is lost.
        assert!(view.status().stable);
        // It returns, still running its old slot under its old epoch: fenced.
        let back = view.report(Instant::now(), report("a", before["a"].epoch, &a_slot));
        assert_eq!(back.epoch, before["a"].epoch + 1);
        assert!(
            back.slots.get("web").is_none_or(|s| s.is_empty()),
            "{back:?}"
        );
        // Until it has stopped them, its replicas are a second incarnation.
        assert!(!view.status().stable);
        view.report(Instant::now(), report("a", back.epoch, &[]));
        let status = view.status();
        assert!(status.stable && status.services[0].elsewhere.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_coordinator_adopts_what_the_nodes_report_while_gathering() {
        let mut view = ClusterView::new(spec(3), "c", LEASE, Instant::now() + LEASE);
        let mut a = view.report(Instant::now(), report("a", 4, &[0, 2]));
        let mut c = view.report(Instant::now(), report("c", 1, &[1]));
        assert_eq!((a.epoch, a.slots.get("web")), (4, Some(&vec![0, 2])));
        assert_eq!((c.epoch, c.slots.get("web")), (1, Some(&vec![1])));
        for _ in 0..=LEASE.as_secs() {
            tokio::time::advance(Duration::from_secs(1)).await;
            view.tick(Instant::now());
            a = view.report(Instant::now(), report("a", 4, &[0, 2]));
            c = view.report(Instant::now(), report("c", 1, &[1]));
        }
        assert!(view.placing());
        assert_eq!((a.epoch, a.slots.get("web")), (4, Some(&vec![0, 2])));
        assert_eq!((c.epoch, c.slots.get("web")), (1, Some(&vec![1])));
        assert!(view.status().stable);
    }
}
