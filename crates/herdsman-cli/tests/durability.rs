//! Containment and durability of `herdsman run` on real processes: nothing a replica,
//! a command probe or an `init.run` step detaches survives Ctrl-C; the state directory's
//! lock refuses a second run naming the holder; an unwritable state directory still
//! supervises.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use support::*;

const LIMIT: Duration = Duration::from_secs(30);

/// SIGKILLs the listed pids when dropped: a failed assertion must not leak sleepers.
struct Reap(Vec<u32>);

impl Drop for Reap {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
    }
}

#[tokio::test]
async fn nothing_a_replica_a_probe_or_an_init_step_detaches_survives_ctrl_c() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().display().to_string();
    // Detach a sleeper into its own session, and wait until it has written its pid (to
    // a file per replica) before going on.
    let detach = |file: &str, secs: u32| {
        let f = format!("{dir}/{file}-${{REPLICA}}");
        format!(
            "n=$(cat {f} 2>/dev/null | wc -l); setsid sh -c 'echo $$ >> {f}; exec sleep {secs}' & \
             while [ $(cat {f} 2>/dev/null | wc -l) -le $n ]; do sleep 0.01; done;"
        )
    };
    let all = |file: &str| {
        let mut found = pids_in(&work.path().join(format!("{file}-0")));
        found.extend(pids_in(&work.path().join(format!("{file}-1"))));
        found
    };
    let spec = spec(&format!(
        r#"version: v1
deployment: escapes
services:
  escaper:
    command:
      entrypoint: ["sh", "-c", "{replica} exec sleep 1000"]
    scale: {{mode: fixed, replicas: 2}}
    init:
      steps:
        - id: detach
          uses: init.run
          with: {{command: "{init} true"}}
          timeout: 5s
    health:
      start_interval: 100ms
      interval: 200ms
      timeout: 2s
      check: {{type: command, command: "{probe} true"}}
    stop_grace_period: 2s
"#,
        replica = detach("replica-pids", 1001),
        init = detach("init-pids", 1002),
        probe = detach("probe-pids", 1003),
    ));
    let api = format!("127.0.0.1:{}", free_port());
    let mut h = Herdsman::start(&["run", s(&spec.path), "--api", &api]);
    let status = stable(&api, &h).await;
    h.seen_pids = pids(&status);
    let cgroups = host_has_writable_cgroup2();
    assert_eq!(
        status["containment"],
        if cgroups { "cgroup" } else { "process-group" },
        "{status}"
    );
    let mut reap = Reap(Vec::new());
    // Let a few more probes run (and detach their sleepers).
    let probes = eventually(LIMIT, "probes detached processes", || {
        let found = all("probe-pids");
        async move { (found.len() >= 4).then_some(found) }
    })
    .await;
    let replicas = all("replica-pids");
    let inits = all("init-pids");
    reap.0.extend(probes.iter().chain(&replicas).chain(&inits));
    assert_eq!(replicas.len(), 2, "{}", h.output());
    assert_eq!(inits.len(), 2, "{}", h.output());
    assert!(
        replicas.iter().all(|p| alive(*p)),
        "the replicas' detached sleepers run"
    );

    h.signal(Signal::SIGINT);
    assert_eq!(h.wait(LIMIT).await.code(), Some(0), "{}", h.output());
    // Probes may have detached more while stopping.
    let probes = all("probe-pids");
    reap.0.extend(&probes);
    if !cgroups {
        // Without cgroups a process that calls setsid escapes; only the process groups
        // are guaranteed gone.
        return;
    }
    for (what, pids) in [("replica", &replicas), ("init", &inits), ("probe", &probes)] {
        let left: Vec<_> = pids.iter().filter(|p| alive(**p)).collect();
        assert!(
            left.is_empty(),
            "{what} escapees outlived herdsman: {left:?}"
        );
    }
}

#[tokio::test]
async fn a_second_run_of_the_same_deployment_is_refused_naming_the_first_ones_pid() {
    let spec = spec(
        r#"version: v1
deployment: locked
services:
  idle:
    command: {entrypoint: ["sleep", "1000"]}
    stop_grace_period: 1s
"#,
    );
    let state = tempfile::tempdir().expect("tempdir");
    let args = [
        "run",
        s(&spec.path),
        "--api",
        "off",
        "--state-dir",
        s(state.path()),
    ];
    let mut first = Herdsman::start(&args);
    eventually(LIMIT, "the first run supervises", || {
        let out = first.stdout();
        async move { out.contains("is stable").then_some(()) }
    })
    .await;
    let (status, _, stderr) = herdsman_once(&args);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "deployment \"locked\" is already being run by herdsman pid {}",
            first.pid()
        )),
        "{stderr}"
    );
    first.signal(Signal::SIGTERM);
    assert_eq!(
        first.wait(LIMIT).await.code(),
        Some(0),
        "{}",
        first.output()
    );
}

#[tokio::test]
async fn an_unwritable_state_directory_is_said_once_and_supervision_goes_on() {
    let spec = spec(
        r#"version: v1
deployment: readonly
services:
  idle:
    command: {entrypoint: ["sleep", "1000"]}
    scale: {mode: fixed, replicas: 2}
    stop_grace_period: 1s
"#,
    );
    let work = tempfile::tempdir().expect("tempdir");
    // Root ignores permission bits: a file where the state root should be is what
    // cannot be written to.
    let blocked = work.path().join("not-a-dir");
    std::fs::write(&blocked, "").expect("write");
    let mut h = Herdsman::start(&[
        "run",
        s(&spec.path),
        "--api",
        "off",
        "--until-stable",
        "--state-dir",
        s(&blocked),
    ]);
    assert_eq!(h.wait(LIMIT).await.code(), Some(0), "{}", h.output());
    let err = h.stderr();
    assert_eq!(
        err.matches("warning: cannot create the state directory")
            .count(),
        1,
        "{err}"
    );
    assert!(h.stdout().contains("is stable"), "{}", h.output());
}

#[tokio::test]
async fn a_sigkilled_herdsman_leaves_every_replica_running_and_writing_its_log() {
    let spec = spec(
        r#"version: v1
deployment: orphaned
services:
  quiet:
    command: {entrypoint: ["sleep", "1000"]}
    scale: {mode: fixed, replicas: 3}
  chatty:
    command:
      entrypoint: ["sh", "-c", "i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.01; done"]
    scale: {mode: fixed, replicas: 2}
"#,
    );
    let state = tempfile::tempdir().expect("tempdir");
    let api = format!("127.0.0.1:{}", free_port());
    let mut h = Herdsman::start(&[
        "run",
        s(&spec.path),
        "--api",
        &api,
        "--state-dir",
        s(state.path()),
    ]);
    let status = stable(&api, &h).await;
    let replicas = pids(&status);
    let _reap = Reap(replicas.clone());
    assert_eq!(replicas.len(), 5, "{status}");
    let log = |r: u32| {
        std::fs::metadata(
            state
                .path()
                .join(format!("orphaned/logs/orphaned-chatty-{r}.log")),
        )
        .map(|m| m.len())
        .unwrap_or(0)
    };
    // The records of the running replicas are written (debounced) for the next run.
    let records = state.path().join("orphaned/replicas.json");
    eventually(LIMIT, "the replicas are recorded", || {
        let text = std::fs::read_to_string(&records).unwrap_or_default();
        let all = replicas
            .iter()
            .all(|p| text.contains(&format!("\"pid\":{p}")));
        async move { all.then_some(()) }
    })
    .await;

    h.signal(Signal::SIGKILL);
    h.wait(LIMIT).await;
    let before = [log(0), log(1)];
    // A writer into a pipe would die of SIGPIPE at its next line; these write to files.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = [log(0), log(1)];
    assert!(
        replicas.iter().all(|p| alive(*p)),
        "a replica died with herdsman"
    );
    assert!(
        after[0] > before[0] && after[1] > before[1],
        "the writers stopped: {before:?} then {after:?}"
    );

    // The next run of the deployment, told not to adopt, leaves nothing of them.
    let mut next = Herdsman::start(&[
        "run",
        s(&spec.path),
        "--api",
        "off",
        "--until-stable",
        "--no-adopt",
        "--state-dir",
        s(state.path()),
    ]);
    assert_eq!(next.wait(LIMIT).await.code(), Some(0), "{}", next.output());
    let left: Vec<_> = replicas.iter().filter(|p| alive(**p)).collect();
    assert!(
        left.is_empty(),
        "replicas left after the next run: {left:?}"
    );
}
