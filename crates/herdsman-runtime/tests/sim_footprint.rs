//! The resident memory of 100,000 idle simulated containers, measured from /proc. Alone in
//! its test binary so that no other test allocates while it measures.

mod support;

use std::sync::Arc;

use herdsman_runtime::{ContainerId, Runtime, SimRuntime};

use support::{replica, service, DEPLOYMENT};

/// Resident set size of this process, in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm has a resident field");
    pages * 4096
}

#[tokio::test(start_paused = true)]
async fn a_hundred_thousand_idle_containers_add_under_a_kibibyte_each_to_resident_memory() {
    const N: u32 = 100_000;
    let sim = SimRuntime::new(0);
    let svc = service("idle", None);
    let (_, spec) = replica(&svc, 0);
    // Names are shared, as the actor tree shares them between a service's replicas.
    let (deployment, name): (Arc<str>, Arc<str>) = (DEPLOYMENT.into(), "idle".into());
    let mut watches = Vec::with_capacity(N as usize);
    let before = rss();
    for r in 0..N {
        let id = ContainerId::new(deployment.clone(), name.clone(), r, 0);
        sim.create(&id, &spec).await.expect("create");
        watches.push(sim.start(&id).await.expect("start").exit);
    }
    let per_container = rss().saturating_sub(before) / N as usize;
    assert_eq!(sim.running().len(), N as usize);
    assert!(per_container < 1024, "{per_container} bytes per container");
}
