//! Replicas outlive a SIGKILLed `herdsman run` and the next run of the deployment adopts
//! them: the same pids, no restart, output still captured, stable; `--no-adopt` stops
//! them instead; one that died meanwhile is started afresh, and what it detached is
//! stopped first. Then Ctrl-C leaves nothing.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use support::*;

const LIMIT: Duration = Duration::from_secs(30);

/// 15 idle replicas and 5 that write a line every 10 ms, forever.
fn twenty_replicas() -> Spec {
    spec(
        r#"version: v1
deployment: durable
services:
  quiet:
    command: {entrypoint: ["sleep", "1000"]}
    scale: {mode: fixed, replicas: 15}
    stop_grace_period: 1s
  chatty:
    command:
      entrypoint: ["sh", "-c", "i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.01; done"]
    scale: {mode: fixed, replicas: 5}
    stop_grace_period: 1s
"#,
    )
}

/// Total restarts over every replica in a status.
fn restarts(status: &Value) -> u64 {
    status["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["replicas"].as_array().into_iter().flatten())
        .filter_map(|r| r["restarts"].as_u64())
        .sum()
}

/// Wait until every one of `pids` is in the deployment's replica records (written at
/// most every 100 ms, later on a loaded machine): a kill before that leaves replicas no
/// later run can know of, which it stops rather than adopts, by design.
async fn recorded(state: &Path, pids: &BTreeSet<u32>) {
    let records = state.join("durable/replicas.json");
    eventually(LIMIT, "the replicas are recorded", || {
        let text = std::fs::read_to_string(&records).unwrap_or_default();
        let all = pids.iter().all(|p| text.contains(&format!("\"pid\":{p}")));
        async move { all.then_some(()) }
    })
    .await;
}

/// The size of each chatty replica's log file.
fn log_sizes(state: &Path) -> Vec<u64> {
    (0..5)
        .map(|r| {
            std::fs::metadata(state.join(format!("durable/logs/durable-chatty-{r}.log")))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .collect()
}

/// SIGKILLs the listed pids when dropped: a failed assertion must not leak replicas.
struct Reap(Vec<u32>);

impl Drop for Reap {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
    }
}

/// Ctrl-C `h` and check that it stops cleanly.
async fn ctrl_c(h: &mut Herdsman) {
    h.signal(Signal::SIGINT);
    assert_eq!(h.wait(LIMIT).await.code(), Some(0), "{}", h.output());
}

/// Start a run of the spec, wait until it is stable; the run and its status.
async fn run_until_stable(
    spec: &Spec,
    state: &Path,
    api: &str,
    extra: &[&str],
) -> (Herdsman, Value) {
    let mut args = vec!["run", s(&spec.path), "--api", api, "--state-dir", s(state)];
    args.extend_from_slice(extra);
    let h = Herdsman::start(&args);
    let status = stable(api, &h).await;
    (h, status)
}

#[tokio::test]
async fn replicas_outlive_a_sigkilled_herdsman_and_the_next_run_adopts_them_all() {
    let spec = twenty_replicas();
    let state = tempfile::tempdir().expect("tempdir");
    let api = format!("127.0.0.1:{}", free_port());
    let (mut first, status) = run_until_stable(&spec, state.path(), &api, &[]).await;
    let before: BTreeSet<u32> = pids(&status).into_iter().collect();
    let _reap = Reap(before.iter().copied().collect());
    assert_eq!(before.len(), 20, "{status}");
    // Let the replicas be recorded (debounced) before the kill.
    recorded(state.path(), &before).await;

    first.signal(Signal::SIGKILL);
    first.wait(LIMIT).await;
    // Unharmed: every replica still runs, and the writers still write.
    let sizes = log_sizes(state.path());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        before.iter().all(|p| alive(*p)),
        "a replica died with herdsman"
    );
    let grown = log_sizes(state.path());
    assert!(
        sizes.iter().zip(&grown).all(|(a, b)| b > a),
        "the writers stopped writing: {sizes:?} then {grown:?}"
    );

    let (mut second, status) = run_until_stable(&spec, state.path(), &api, &[]).await;
    let after: BTreeSet<u32> = pids(&status).into_iter().collect();
    assert_eq!(after, before, "not the same processes\n{}", second.output());
    assert_eq!(restarts(&status), 0, "{status}");
    let sizes = log_sizes(state.path());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = stable(&api, &second).await;
    assert_eq!(restarts(&status), 0, "{status}");
    assert!(
        sizes
            .iter()
            .zip(log_sizes(state.path()))
            .all(|(a, b)| b > *a),
        "the adopted writers' output is no longer captured"
    );

    ctrl_c(&mut second).await;
    let left: Vec<_> = before.iter().filter(|p| alive(**p)).collect();
    assert!(left.is_empty(), "replicas outlived Ctrl-C: {left:?}");
}

#[tokio::test]
async fn with_no_adopt_the_survivors_are_stopped_and_replaced() {
    let spec = twenty_replicas();
    let state = tempfile::tempdir().expect("tempdir");
    let api = format!("127.0.0.1:{}", free_port());
    let (mut first, status) = run_until_stable(&spec, state.path(), &api, &[]).await;
    let before: BTreeSet<u32> = pids(&status).into_iter().collect();
    let _reap = Reap(before.iter().copied().collect());
    recorded(state.path(), &before).await;
    first.signal(Signal::SIGKILL);
    first.wait(LIMIT).await;

    let (mut second, status) = run_until_stable(&spec, state.path(), &api, &["--no-adopt"]).await;
    let after: BTreeSet<u32> = pids(&status).into_iter().collect();
    second.seen_pids = after.iter().copied().collect();
    assert!(after.is_disjoint(&before), "{}", second.output());
    let left: Vec<_> = before.iter().filter(|p| alive(**p)).collect();
    assert!(left.is_empty(), "survivors not stopped: {left:?}");
    ctrl_c(&mut second).await;
    assert!(after.iter().all(|p| !alive(*p)));
}

#[tokio::test]
async fn a_replica_that_died_while_herdsman_was_down_is_started_afresh_and_its_leftovers_stopped() {
    // Orphans are reparented to this process, which can then reap the one it kills.
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    let work = tempfile::tempdir().expect("tempdir");
    let escaped = work.path().join("escaped");
    // The replica detaches a sleeper into a session of its own (still in its cgroup) and
    // waits until its pid is written.
    let spec = spec(&format!(
        r#"version: v1
deployment: durable
services:
  leaver:
    command:
      entrypoint: ["sh", "-c", "setsid sh -c 'echo $$ > {f}; exec sleep 1001' & while [ ! -s {f} ]; do sleep 0.01; done; exec sleep 1000"]
    stop_grace_period: 1s
"#,
        f = escaped.display()
    ));
    let state = tempfile::tempdir().expect("tempdir");
    let api = format!("127.0.0.1:{}", free_port());
    let (mut first, status) = run_until_stable(&spec, state.path(), &api, &[]).await;
    let before: BTreeSet<u32> = pids(&status).into_iter().collect();
    let sleeper = eventually(LIMIT, "the sleeper is detached", || {
        let found = pids_in(&escaped);
        async move { found.first().copied() }
    })
    .await;
    let _reap = Reap(before.iter().copied().chain([sleeper]).collect());
    recorded(state.path(), &before).await;
    first.signal(Signal::SIGKILL);
    first.wait(LIMIT).await;
    // The replica's main process dies while no herdsman watches it, and is reaped (by
    // this test, its subreaper since herdsman died); its sleeper lives on.
    for pid in &before {
        let pid = nix::unistd::Pid::from_raw(*pid as i32);
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    }
    eventually(LIMIT, "the main process is reaped", || {
        let gone = before
            .iter()
            .all(|p| !Path::new(&format!("/proc/{p}")).exists());
        async move { gone.then_some(()) }
    })
    .await;
    assert!(alive(sleeper), "the detached sleeper runs");
    std::fs::remove_file(&escaped).expect("the pid file goes");

    let (mut second, status) = run_until_stable(&spec, state.path(), &api, &[]).await;
    let after: BTreeSet<u32> = pids(&status).into_iter().collect();
    second.seen_pids = after.iter().copied().collect();
    assert!(after.is_disjoint(&before), "{status}");
    assert_eq!(
        restarts(&status),
        0,
        "a fresh start is no restart: {status}"
    );
    if host_has_writable_cgroup2() {
        assert!(
            !alive(sleeper),
            "what the dead incarnation left outlived it\n{}",
            second.output()
        );
    } else {
        eprintln!("no writable cgroup v2 here: a process that left its group cannot be found");
    }
    ctrl_c(&mut second).await;
    assert!(after.iter().all(|p| !alive(*p)));
    let sleepers = pids_in(&escaped);
    assert!(
        sleepers.iter().all(|p| !alive(*p)),
        "the new incarnation's sleeper outlived Ctrl-C: {sleepers:?}"
    );
}
