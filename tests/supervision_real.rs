//! The whole actor tree on `ProcessRuntime`: real processes, real signals, the real
//! clock. Bounded waits; every process started is gone at the end (checked via /proc).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use herdsman::core::{
    spawn_deployment, DeploymentHandle, DeploymentOptions, EventKind, Received, ReplicaState,
    Stabilization,
};
use herdsman::runtime::{ProcessConfig, ProcessRuntime};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const PATIENCE: Duration = Duration::from_secs(20);

fn spec(yaml: &str) -> herdsman::spec::Deployment {
    match herdsman::spec::parse_str(yaml, "test.yaml", Path::new(".")) {
        Ok(d) => d,
        Err(e) => panic!("test spec is invalid: {e}"),
    }
}

async fn spawn(yaml: &str) -> (DeploymentHandle, Arc<ProcessRuntime>) {
    let runtime = Arc::new(ProcessRuntime::new(ProcessConfig::default()));
    let handle = spawn_deployment(spec(yaml), runtime.clone(), DeploymentOptions::default())
        .await
        .expect("deployment spawns");
    (handle, runtime)
}

async fn stable(handle: &DeploymentHandle) {
    match handle.wait_stable(PATIENCE).await {
        Ok(Stabilization::Ready { .. }) => {}
        other => panic!("expected stable, got {other:?}"),
    }
}

/// Poll the board (no actor involved) until `f` holds, for at most PATIENCE.
async fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; it counts as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Every live process whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit(')').next()?.split_whitespace().collect::<Vec<_>>();
                    // Fields after the command: state, ppid, pgrp.
                    Some(rest.get(2)?.parse::<u32>().ok()? == pgid && rest.first()? != &"Z")
                })
                .unwrap_or(false)
        })
        .collect()
}

async fn all_gone(pids: &[u32]) {
    until("every process gone", || {
        pids.iter().all(|p| !alive(*p)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_replica_killed_with_sigkill_is_replaced_by_a_new_process() {
    let (handle, runtime) = spawn(
        r#"
version: v1
deployment: kill-test
services:
  sleeper:
    command: {entrypoint: ["sleep", "1000"]}
    scale: {mode: fixed, replicas: 2}
"#,
    )
    .await;
    stable(&handle).await;
    let board = handle.board().clone();
    let old = board
        .replica("sleeper", 0)
        .and_then(|r| r.pid)
        .expect("running replica has a pid");
    let other = board
        .replica("sleeper", 1)
        .and_then(|r| r.pid)
        .expect("pid");
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).expect("kill -9 the replica");

    let new = until("replacement running", || {
        let r = board.replica("sleeper", 0)?;
        (r.state == ReplicaState::Running && r.pid.is_some_and(|p| p != old)).then_some(r)
    })
    .await;
    assert_eq!(new.restarts, 1);
    assert_eq!(new.last_exit.and_then(|e| e.signal()), Some(9));
    assert!(!alive(old), "the killed process is reaped");
    assert_eq!(
        board.replica("sleeper", 1).and_then(|r| r.pid),
        Some(other),
        "the other replica is untouched"
    );
    let pids = [new.pid.expect("pid"), other];
    handle.shutdown().await.expect("shutdown");
    runtime.shutdown().await;
    all_gone(&pids).await;
}

#[tokio::test]
async fn a_process_that_keeps_crashing_goes_into_backoff() {
    let (handle, runtime) = spawn(
        r#"
version: v1
deployment: loop-test
services:
  crasher:
    command: {entrypoint: ["sh", "-c", "exit 3"]}
    restart:
      max_restarts: 2
      window: 1m
      backoff: {initial: 300ms, max: 2s, multiplier: 2.0, jitter: 0.0}
"#,
    )
    .await;
    let mut events = handle.subscribe();
    let delay = tokio::time::timeout(PATIENCE, async {
        loop {
            match events.recv().await {
                Some(Received::Event(e)) => {
                    if let EventKind::BackOff { delay_ms, .. } = e.kind {
                        return delay_ms;
                    }
                }
                Some(Received::Missed(_)) => {}
                None => panic!("event bus closed"),
            }
        }
    })
    .await
    .expect("backoff within the patience (likely deadlocked otherwise)");
    assert_eq!(delay, 300);
    let r = handle.board().replica("crasher", 0).expect("replica");
    assert_eq!(r.last_exit_code, Some(3));
    assert!(
        r.restarts >= 2,
        "two immediate restarts before the backoff: {r:?}"
    );
    assert!(!handle.status().stable);
    handle.shutdown().await.expect("shutdown");
    runtime.shutdown().await;
}

#[tokio::test]
async fn shutdown_leaves_no_process_even_ones_that_ignore_sigterm_and_fork() {
    let (handle, runtime) = spawn(
        r#"
version: v1
deployment: stop-test
services:
  stubborn:
    command:
      entrypoint: ["sh", "-c", "trap '' TERM; sleep 1000 & sleep 1000 & wait"]
    scale: {mode: fixed, replicas: 2}
    stop_grace_period: 300ms
"#,
    )
    .await;
    stable(&handle).await;
    let leaders: Vec<u32> = (0..2)
        .map(|i| {
            handle
                .board()
                .replica("stubborn", i)
                .and_then(|r| r.pid)
                .expect("pid")
        })
        .collect();
    // Each replica is its own process group: the shell and its two children.
    let members: Vec<u32> = until("children forked", || {
        let m: Vec<u32> = leaders.iter().flat_map(|l| group_members(*l)).collect();
        (m.len() >= 6).then_some(m)
    })
    .await;
    handle.shutdown().await.expect("shutdown");
    all_gone(&members).await;
    for l in &leaders {
        assert!(group_members(*l).is_empty(), "group {l} is empty");
    }
    let status = handle.status();
    assert!(status.services[0]
        .replicas
        .iter()
        .all(|r| r.state == ReplicaState::Stopped && r.pid.is_none()));
    runtime.shutdown().await;
}
