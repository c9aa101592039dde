//! `ProcessRuntime` containment and durability against real processes: cgroups that a
//! `setsid` or a double fork cannot escape (replicas, exec probes, `init.run`), log files
//! the replica owns and their rotation, and adoption of the replicas an earlier runtime
//! left running. Every test proves its processes gone.

mod support;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use herdsman_runtime::{ContainerId, ExitReason, ProcessConfig, ProcessRuntime, Runtime, Started};
use herdsman_spec::{InitAction, InitStep, Service, StepFailure, StopSignal, Template};
use tokio::time::{timeout, Instant};

use support::{is_alive, replica, service, shell, DEPLOYMENT};

const PATIENCE: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} took over {PATIENCE:?}"))
}

/// Whether this host has a writable cgroup v2 hierarchy, found independently of the
/// runtime: the tests that need one check that the runtime uses it.
fn host_has_writable_cgroup2() -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|l| {
        let Some((left, right)) = l.split_once(" - ") else {
            return false;
        };
        let Some(mount) = left.split_whitespace().nth(4) else {
            return false;
        };
        right.starts_with("cgroup2 ")
            && std::fs::create_dir_all(Path::new(mount).join("herdsman")).is_ok()
    })
}

async fn launch(rt: &ProcessRuntime, service: &Service) -> (ContainerId, Started, u32) {
    let (id, spec) = replica(service, 0);
    rt.create(&id, &spec).await.expect("create");
    let started = rt.start(&id).await.expect("start");
    let pid = started.pid.expect("pid");
    (id, started, pid)
}

/// Wait until `path` holds a pid, and return it.
async fn pid_in(path: &Path) -> u32 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait (bounded) until `pid` is gone; fail if it is not.
async fn assert_gone(pid: u32) {
    let deadline = Instant::now() + PATIENCE;
    while is_alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} survived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Kill a process a failed test may have left behind.
fn cleanup(pid: u32) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), nix::sys::signal::SIGKILL);
    }
}

#[tokio::test]
async fn the_runtime_uses_cgroups_exactly_where_a_writable_hierarchy_exists() {
    let rt = ProcessRuntime::new(ProcessConfig::default());
    let expected = if host_has_writable_cgroup2() {
        "cgroup"
    } else {
        "process-group"
    };
    assert_eq!(rt.containment(), expected);
    let off = ProcessRuntime::new(ProcessConfig {
        cgroups: false,
        ..ProcessConfig::default()
    });
    assert_eq!(off.containment(), "process-group");
}

#[tokio::test]
async fn a_replica_is_born_in_its_own_cgroup_leading_its_own_group_with_its_environment() {
    let rt = ProcessRuntime::new(ProcessConfig::default());
    if rt.containment() != "cgroup" {
        assert!(!host_has_writable_cgroup2());
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let env_file = dir.path().join("env");
    let script = format!(
        "echo \"$REPLICA $SERVICE $(pwd)\" > {}; exec sleep 1000",
        env_file.display()
    );
    let (id, started, pid) = launch(&rt, &service("born", Some(shell(&script)))).await;
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let v2 = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("");
    let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32)));
    let deadline = Instant::now() + PATIENCE;
    let env = loop {
        match std::fs::read_to_string(&env_file) {
            Ok(t) if t.ends_with('\n') => break t,
            _ => assert!(
                Instant::now() < deadline,
                "the replica never wrote its environment"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    within("remove", rt.remove(&id)).await.expect("remove");
    assert!(
        v2.ends_with("/born-0-g0"),
        "replica {pid} is in cgroup {v2:?}, not its incarnation's"
    );
    assert_eq!(
        pgid.ok().map(|p| p.as_raw() as u32),
        Some(pid),
        "it leads its own group"
    );
    let cwd = std::env::current_dir().expect("cwd");
    assert_eq!(env.trim(), format!("0 born {}", cwd.display()));
    assert_eq!(
        within("exit", started.exit).await.reason,
        ExitReason::Signal(9)
    );
    assert_gone(pid).await;
}

#[tokio::test]
async fn a_setsid_escapee_dies_when_its_replica_is_stopped() {
    let rt = ProcessRuntime::new(ProcessConfig::default());
    if rt.containment() != "cgroup" {
        assert!(!host_has_writable_cgroup2());
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("escapee");
    let script = format!(
        "setsid sh -c 'echo $$ > {}; exec sleep 1001' & exec sleep 1000",
        pid_file.display()
    );
    let (id, started, pid) = launch(&rt, &service("setsider", Some(shell(&script)))).await;
    let escapee = pid_in(&pid_file).await;
    within(
        "stop",
        rt.stop(&id, StopSignal::TERM, Duration::from_secs(5)),
    )
    .await
    .expect("stop");
    assert_eq!(
        within("exit", started.exit).await.reason,
        ExitReason::Signal(15)
    );
    let gone = !is_alive(escapee);
    cleanup(escapee);
    assert!(gone, "the setsid escapee {escapee} outlived the stop");
    assert!(!is_alive(pid));
    rt.remove(&id).await.expect("remove");
}

#[tokio::test]
async fn a_double_forked_daemon_dies_when_its_replica_exits_by_itself() {
    let rt = ProcessRuntime::new(ProcessConfig::default());
    if rt.containment() != "cgroup" {
        assert!(!host_has_writable_cgroup2());
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("daemon");
    // The classic double fork: the middle process exits, the daemon is reparented and in
    // its own session.
    let script = format!(
        "(setsid sh -c 'echo $$ > {}; exec sleep 1002' &) ; sleep 0.3; exit 3",
        pid_file.display()
    );
    let (_, started, _) = launch(&rt, &service("doublefork", Some(shell(&script)))).await;
    let daemon = pid_in(&pid_file).await;
    assert_eq!(
        within("exit", started.exit).await.reason,
        ExitReason::Code(3)
    );
    let gone = !is_alive(daemon);
    cleanup(daemon);
    assert!(gone, "the daemon {daemon} outlived its replica");
}

#[tokio::test]
async fn a_command_probe_that_detaches_a_process_leaves_nothing_behind() {
    let rt = ProcessRuntime::new(ProcessConfig::default());
    if rt.containment() != "cgroup" {
        assert!(!host_has_writable_cgroup2());
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("probe-escapee");
    let (id, _started, pid) = launch(&rt, &service("probed", Some(shell("exec sleep 1000")))).await;
    let line = format!(
        "setsid sh -c 'echo $$ > {}; exec sleep 1003' & sleep 0.2; echo ok",
        pid_file.display()
    );
    let out = within("exec", rt.exec(&id, &line, Duration::from_secs(5)))
        .await
        .expect("exec");
    assert_eq!(out.exit_code, Some(0));
    let escapee = pid_in(&pid_file).await;
    let gone = !is_alive(escapee);
    cleanup(escapee);
    assert!(
        gone,
        "the probe's detached process {escapee} outlived the probe"
    );
    rt.remove(&id).await.expect("remove");
    assert_gone(pid).await;
}

#[tokio::test]
async fn an_init_run_step_that_detaches_a_process_leaves_nothing_behind() {
    let rt = ProcessRuntime::new(ProcessConfig::default());
    if rt.containment() != "cgroup" {
        assert!(!host_has_writable_cgroup2());
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("init-escapee");
    let svc = service("initrun", Some(shell("exit 0")));
    let (id, spec) = replica(&svc, 0);
    let step = InitStep {
        id: "detach".into(),
        action: InitAction::Run {
            command: Template::parse(&format!(
                "setsid sh -c 'echo $$ > {}; exec sleep 1004' & sleep 0.2",
                pid_file.display()
            ))
            .expect("template"),
        },
        timeout: Duration::from_secs(5),
        retry: 0,
        on_failure: StepFailure::Fail,
    };
    let report = within("init step", rt.init_step(&id, &step, &spec.vars)).await;
    assert!(report.ok, "{report:?}");
    let escapee = pid_in(&pid_file).await;
    let gone = !is_alive(escapee);
    cleanup(escapee);
    assert!(
        gone,
        "the init step's detached process {escapee} outlived it"
    );
}

#[tokio::test]
async fn a_log_file_is_rotated_at_its_limit_under_a_continuous_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("logs");
    let limit = 64 * 1024;
    let rt = ProcessRuntime::new(ProcessConfig {
        log_dir: Some(log_dir.clone()),
        log_file_limit: limit,
        ..ProcessConfig::default()
    });
    // Numbered lines as fast as the shell writes them.
    let script = "i=0; while :; do echo line-$i; i=$((i+1)); done";
    let (id, started, pid) = launch(&rt, &service("writer", Some(shell(script)))).await;
    let path = log_dir.join(format!("{DEPLOYMENT}-writer-0.log"));
    let rotated = log_dir.join(format!("{DEPLOYMENT}-writer-0.log.1"));
    let deadline = Instant::now() + PATIENCE;
    let mut largest = 0;
    // Sample the size while the writer runs: it must stay near the limit.
    while Instant::now() < deadline {
        largest = largest.max(std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0));
        if std::fs::metadata(&rotated).is_ok() && largest > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..50 {
        largest = largest.max(std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(std::fs::metadata(&rotated).is_ok(), "never rotated");
    // A rotation copies the file while the writer keeps going: allow a few copies' worth.
    assert!(
        largest < 16 * limit,
        "the log grew to {largest} bytes with a limit of {limit}"
    );
    let rotated_len = std::fs::metadata(&rotated).expect("rotated").len();
    assert!(rotated_len > limit, "the rotated file holds {rotated_len}");
    // The tail is still fed, from the file, with the writer's latest lines. The last of
    // them may be one still being written ("li", the rest not copied from the pipe yet),
    // and a file just truncated by a rotation may hold only that: three lines reach back
    // into the rotated file for whole ones.
    let numbered = |l: &String| {
        l.strip_prefix("line-")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let first = rt.logs(&id, 3);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = rt.logs(&id, 3);
    assert!(first.iter().any(numbered), "{first:?}");
    assert_ne!(first, second, "the tail did not move");
    within("stop", rt.stop(&id, StopSignal::KILL, Duration::ZERO))
        .await
        .expect("stop");
    within("exit", started.exit).await;
    assert_gone(pid).await;
}

#[tokio::test]
async fn a_symlink_planted_at_the_log_file_is_not_followed_and_the_replica_still_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("logs");
    std::fs::create_dir(&log_dir).expect("mkdir");
    let target = dir.path().join("precious");
    std::fs::write(&target, "keep\n").expect("write");
    std::os::unix::fs::symlink(&target, log_dir.join(format!("{DEPLOYMENT}-planted-0.log")))
        .expect("symlink");
    let rt = ProcessRuntime::new(ProcessConfig {
        log_dir: Some(log_dir),
        ..ProcessConfig::default()
    });
    let (id, started, _) = launch(&rt, &service("planted", Some(shell("echo hello")))).await;
    assert_eq!(
        within("exit", started.exit).await.reason,
        ExitReason::Code(0)
    );
    assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep\n");
    // Output went to memory instead.
    let deadline = Instant::now() + PATIENCE;
    while rt.logs(&id, 10) != vec!["hello"] {
        assert!(Instant::now() < deadline, "{:?}", rt.logs(&id, 10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_read_only_log_directory_does_not_stop_a_replica_from_starting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("logs");
    std::fs::create_dir(&log_dir).expect("mkdir");
    // Root ignores permission bits, so the directory is made unusable by being a file.
    let blocked = dir.path().join("not-a-dir");
    std::fs::write(&blocked, "").expect("write");
    let rt = ProcessRuntime::new(ProcessConfig {
        log_dir: Some(blocked.join("logs")),
        ..ProcessConfig::default()
    });
    let (id, started, _) = launch(&rt, &service("rodir", Some(shell("echo fine")))).await;
    assert_eq!(
        within("exit", started.exit).await.reason,
        ExitReason::Code(0)
    );
    let deadline = Instant::now() + PATIENCE;
    while rt.logs(&id, 10) != vec!["fine"] {
        assert!(Instant::now() < deadline, "{:?}", rt.logs(&id, 10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Start `replicas` of a service that prints and then sleeps, on a runtime that is then
/// abandoned the way a SIGKILLed herdsman abandons its replicas: its tasks dropped
/// with their tokio runtime, nothing stopped. Returns the pids.
fn abandon_replicas(config: &ProcessConfig, svc: &Service, replicas: u32) -> Vec<u32> {
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let pids = tokio_rt.block_on(async {
        let rt = ProcessRuntime::new(config.clone());
        let mut pids = Vec::new();
        for r in 0..replicas {
            let (id, spec) = replica(svc, r);
            rt.create(&id, &spec).await.expect("create");
            pids.push(rt.start(&id).await.expect("start").pid.expect("pid"));
        }
        // Let the debounced record writer write, then vanish without cleanup.
        let file = config
            .state_dir
            .as_ref()
            .expect("state dir")
            .join("replicas.json");
        let deadline = Instant::now() + PATIENCE;
        while !std::fs::read_to_string(&file)
            .is_ok_and(|t| pids.iter().all(|p| t.contains(&format!("\"pid\":{p}"))))
        {
            assert!(Instant::now() < deadline, "records never written");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::mem::forget(rt);
        pids
    });
    tokio_rt.shutdown_background();
    pids
}

#[test]
fn replicas_left_by_a_vanished_runtime_are_found_adopted_or_discarded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ProcessConfig {
        log_dir: Some(dir.path().join("logs")),
        state_dir: Some(dir.path().to_path_buf()),
        ..ProcessConfig::default()
    };
    let svc = service(
        "survivor",
        Some(shell("echo started-$REPLICA; exec sleep 1005")),
    );
    let pids = abandon_replicas(&config, &svc, 2);
    let guard = Cleanup(pids.clone());
    assert!(
        pids.iter().all(|p| is_alive(*p)),
        "the replicas outlived their runtime"
    );

    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    tokio_rt.block_on(async {
        let rt = ProcessRuntime::new(config.clone());
        let mut found = rt.survivors(DEPLOYMENT).await.expect("survivors");
        found.sort_by_key(|s| s.id.replica);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            found.iter().map(|s| s.pid).collect::<Vec<_>>(),
            pids.iter().map(|p| Some(*p)).collect::<Vec<_>>()
        );
        assert_eq!(found[0].run_hash, svc.run_hash());
        assert!(rt.survivors("another").await.expect("survivors").is_empty());

        // Replica 0 is adopted: same pid, its output still there, stop works on it.
        let (_, spec0) = replica(&svc, 0);
        let adopted = rt.adopt(&found[0], &spec0).await.expect("adopt");
        assert_eq!(adopted.pid, Some(pids[0]));
        assert_eq!(rt.logs(&found[0].id, 10), vec!["started-0"]);
        // Replica 1 is discarded.
        within(
            "discard",
            rt.discard_survivor(&found[1], StopSignal::TERM, Duration::from_secs(5)),
        )
        .await
        .expect("discard");
        assert_gone(pids[1]).await;
        assert!(is_alive(pids[0]));

        within(
            "stop",
            rt.stop(&found[0].id, StopSignal::TERM, Duration::from_secs(5)),
        )
        .await
        .expect("stop");
        let exit = within("exit", adopted.exit).await;
        assert_eq!(exit.reason, ExitReason::Unknown);
        assert_gone(pids[0]).await;
        rt.shutdown().await;
        // Nothing is recorded any more: a third runtime finds no survivor.
        let third = ProcessRuntime::new(config.clone());
        assert!(third
            .survivors(DEPLOYMENT)
            .await
            .expect("survivors")
            .is_empty());
    });
    drop(guard);
}

#[test]
fn replicas_a_vanished_runtime_never_recorded_are_killed_not_orphaned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ProcessConfig {
        log_dir: Some(dir.path().join("logs")),
        state_dir: Some(dir.path().to_path_buf()),
        ..ProcessConfig::default()
    };
    let svc = service("unrecorded", Some(shell("exec sleep 1006")));
    let pids = abandon_replicas(&config, &svc, 2);
    let guard = Cleanup(pids.clone());
    // As if herdsman died before its records were written.
    std::fs::remove_file(dir.path().join("replicas.json")).expect("records removed");
    let tokio_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    tokio_rt.block_on(async {
        let rt = ProcessRuntime::new(config.clone());
        let found = rt.survivors(DEPLOYMENT).await.expect("survivors");
        assert!(found.is_empty(), "{found:?}");
        if rt.containment() == "cgroup" {
            for pid in &pids {
                assert_gone(*pid).await;
            }
        }
        rt.shutdown().await;
    });
    drop(guard);
}

/// `Cgroup::spawn_into` lets each child run on this process's memory until it `exec`s:
/// 64 spawns at once from both workers, while another task keeps allocating and freeing,
/// must each run their own command with their own environment in their own cgroup (a
/// child reading another spawn's arguments, or memory freed under it, would show here as
/// a wrong exit code or a failed start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_spawned_at_once_from_every_worker_each_run_their_own_command() {
    const CHILDREN: usize = 64;
    let rt = ProcessRuntime::new(ProcessConfig::default());
    let Some(base) = rt.cgroup_base().map(Path::to_path_buf) else {
        assert!(!host_has_writable_cgroup2());
        eprintln!("skipped: no writable cgroup v2 hierarchy on this host");
        return;
    };
    let parent = base.join(format!("spawn-test-{}", std::process::id()));
    let churn = tokio::spawn(async {
        for round in 0..2_000usize {
            let v: Vec<u64> = (0..(round % 64) * 64).map(|x| x as u64).collect();
            std::hint::black_box(v);
            tokio::task::yield_now().await;
        }
    });
    let spawns = (0..CHILDREN).map(|i| {
        let cg = herdsman_probe::Cgroup::at(parent.join(format!("c{i}")));
        tokio::spawn(async move {
            cg.create().expect("a cgroup can be made");
            let argv = [
                "sh".to_string(),
                "-c".to_string(),
                "grep -q \"^0::.*/$CG\\$\" /proc/self/cgroup || exit 200; exit $CODE".to_string(),
            ];
            let env = [
                ("CODE".to_string(), (i + 1).to_string()),
                ("CG".to_string(), format!("c{i}")),
            ];
            let spec = herdsman_probe::ChildSpec {
                argv: &argv,
                env: &env,
                workdir: None,
                output: herdsman_probe::ChildOutput::Pipe,
            };
            let mut child = cg.spawn_into(&spec).expect("the child starts");
            let status = within("the child's exit", child.wait())
                .await
                .expect("waited");
            let cgroup = cg.path().to_path_buf();
            within("the cgroup empties", cg.wait_empty())
                .await
                .expect("watched");
            cg.remove().expect("the empty cgroup is removed");
            (i, status.code(), cgroup)
        })
    });
    let results = futures_join(spawns.collect()).await;
    within("the churn", churn)
        .await
        .expect("the churn task ends");
    let _ = std::fs::remove_dir(&parent);
    for (i, code, cgroup) in results {
        assert_eq!(
            code,
            Some(i as i32 + 1),
            "child {i} (cgroup {}) ran someone else's command or none",
            cgroup.display()
        );
        assert!(!cgroup.exists(), "{} left behind", cgroup.display());
    }
}

/// Await every task, in order.
async fn futures_join<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(within("a spawn task", task).await.expect("the task ends"));
    }
    out
}

/// SIGKILLs the listed pids when dropped (a failed assertion must not leak sleepers).
struct Cleanup(Vec<u32>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pid in &self.0 {
            cleanup(*pid);
        }
    }
}

/// A replica's captured output ends when the replica is reaped, not when it exits: the
/// exit of the pipe's last writer would wake the reader from inside the kernel's exit
/// work, on the dying process's CPU, and the exit would be seen later. Its last output
/// is still there to read, and the end follows the reap.
#[tokio::test]
async fn a_childs_output_pipe_ends_at_its_reap_not_at_its_exit() {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    use tokio::io::AsyncReadExt;

    let rt = ProcessRuntime::new(ProcessConfig::default());
    let Some(base) = rt.cgroup_base().map(Path::to_path_buf) else {
        assert!(!host_has_writable_cgroup2());
        eprintln!("skipped: no writable cgroup v2 hierarchy on this host");
        return;
    };
    let cg = herdsman_probe::Cgroup::at(base.join(format!("pipe-test-{}", std::process::id())));
    cg.create().expect("a cgroup can be made");
    let argv = [
        "sh".to_string(),
        "-c".to_string(),
        "echo last words".to_string(),
    ];
    let spec = herdsman_probe::ChildSpec {
        argv: &argv,
        env: &[],
        workdir: None,
        output: herdsman_probe::ChildOutput::Pipe,
    };
    let mut child = cg.spawn_into(&spec).expect("the child starts");
    let mut output = child.output.take().expect("its output is piped");
    // Exited, not reaped (WNOWAIT): `echo` ends at once, so this blocks only briefly.
    waitid(
        Id::PIDFd(child.pidfd()),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
    )
    .expect("the child exits");
    let mut buf = [0u8; 64];
    within("its output", output.readable())
        .await
        .expect("the pipe is watched");
    let n = output
        .try_read(&mut buf)
        .expect("its output is in the pipe");
    assert_eq!(&buf[..n], b"last words\n");
    let before_reap = output.try_read(&mut buf);
    assert!(
        matches!(&before_reap, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the pipe ended at the child's exit, before its reap: {before_reap:?}"
    );
    let status = within("the reap", child.wait()).await.expect("reaped");
    assert_eq!(status.code(), Some(0));
    let after_reap = within("the end of the output", output.read(&mut buf)).await;
    assert_eq!(after_reap.expect("the pipe reads"), 0, "EOF after the reap");
    within("the cgroup empties", cg.wait_empty())
        .await
        .expect("watched");
    cg.remove().expect("the empty cgroup is removed");
}
