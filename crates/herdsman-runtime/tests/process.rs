//! `ProcessRuntime` against real processes on the real clock: exits, stops, process
//! groups, output capture, start errors and cleanup. Every test proves its processes gone.

mod support;

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use herdsman_runtime::{
    ContainerId, ExitReason, ProcessConfig, ProcessRuntime, Runtime, RuntimeError, Started,
};
use herdsman_spec::{Service, StopSignal, Template};
use tokio::time::{timeout, Instant};

use support::{assert_group_gone, command, group_members, is_alive, replica, service, shell};

/// Bound on anything that should take well under a second.
const PATIENCE: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} took over {PATIENCE:?}: likely deadlocked"))
}

fn runtime() -> ProcessRuntime {
    ProcessRuntime::new(ProcessConfig::default())
}

/// Create and start replica 0 of `service` on `rt`.
async fn launch(rt: &ProcessRuntime, service: &Service) -> (ContainerId, Started, u32) {
    let (id, spec) = replica(service, 0);
    rt.create(&id, &spec).await.expect("create");
    let started = rt.start(&id).await.expect("start");
    let pid = started.pid.expect("a process has a pid");
    (id, started, pid)
}

/// Wait until the log tail satisfies `done`, for output still in flight after the exit.
async fn logs_until(
    rt: &ProcessRuntime,
    id: &ContainerId,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let lines = rt.logs(id, 10_000);
        if done(&lines) || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn start_reason(err: RuntimeError) -> String {
    match err {
        RuntimeError::Start { reason, .. } => reason,
        other => panic!("expected a start error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_exit_code_is_reported_as_soon_as_the_process_exits() {
    let rt = runtime();
    let before = Instant::now();
    let (_, started, pid) = launch(&rt, &service("exits", Some(shell("exit 3")))).await;
    let exit = within("exit", started.exit).await;
    assert_eq!(exit.reason, ExitReason::Code(3));
    assert!(before.elapsed() < Duration::from_secs(2), "{exit}");
    assert!(exit.ran_for <= before.elapsed());
    assert_group_gone(pid).await;
}

#[tokio::test]
async fn a_process_killed_by_a_signal_is_reported_with_that_signal() {
    let rt = runtime();
    // Templates pass the shell's `$$` through unchanged.
    let (_, started, pid) = launch(&rt, &service("signalled", Some(shell("kill -USR1 $$")))).await;
    let exit = within("exit", started.exit).await;
    assert_eq!(exit.reason, ExitReason::Signal(10));
    assert_group_gone(pid).await;
}

#[tokio::test]
async fn stop_signals_the_group_and_returns_once_the_process_is_reaped() {
    let rt = runtime();
    let (id, started, pid) = launch(&rt, &service("stoppable", Some(shell("sleep 1000")))).await;
    let before = Instant::now();
    within(
        "stop",
        rt.stop(&id, StopSignal::TERM, Duration::from_secs(30)),
    )
    .await
    .expect("stop");
    assert!(
        before.elapsed() < Duration::from_secs(5),
        "stop waited for the grace period"
    );
    let exit = within("exit", started.exit).await;
    assert_eq!(exit.reason, ExitReason::Signal(15));
    assert_group_gone(pid).await;
}

#[tokio::test]
async fn a_process_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let rt = runtime();
    let svc = service(
        "stubborn",
        Some(shell("trap '' TERM; echo ready; sleep 1000")),
    );
    let (id, started, pid) = launch(&rt, &svc).await;
    // The trap must be in place before the signal is sent.
    logs_until(&rt, &id, |l| l.iter().any(|x| x == "ready")).await;
    let grace = Duration::from_millis(300);
    let before = Instant::now();
    within("stop", rt.stop(&id, StopSignal::TERM, grace))
        .await
        .expect("stop");
    assert!(
        before.elapsed() >= grace,
        "killed before the grace period ended"
    );
    let exit = within("exit", started.exit).await;
    assert_eq!(exit.reason, ExitReason::Signal(9));
    assert_group_gone(pid).await;
}

#[tokio::test]
async fn a_forked_grandchild_that_ignores_sigterm_dies_with_its_replica_on_stop() {
    let rt = runtime();
    let script = "(trap '' TERM; exec sleep 1000) & echo $!; wait";
    let (id, started, pid) = launch(&rt, &service("forker", Some(shell(script)))).await;
    let lines = logs_until(&rt, &id, |l| !l.is_empty()).await;
    let grandchild: u32 = lines[0].parse().expect("the script prints its child's pid");
    assert!(
        group_members(pid).contains(&grandchild),
        "grandchild is in the group"
    );

    let before = Instant::now();
    within(
        "stop",
        rt.stop(&id, StopSignal::TERM, Duration::from_secs(30)),
    )
    .await
    .expect("stop");
    // The main process died of SIGTERM; the grandchild was killed with it, not after the
    // grace period.
    assert!(before.elapsed() < Duration::from_secs(5));
    assert_eq!(
        within("exit", started.exit).await.reason,
        ExitReason::Signal(15)
    );
    assert_group_gone(pid).await;
    assert!(!is_alive(grandchild));
}

#[tokio::test]
async fn a_forked_grandchild_dies_when_the_main_process_exits_by_itself() {
    let rt = runtime();
    let script = "sleep 1000 & echo $!; exit 4";
    let (id, started, pid) = launch(&rt, &service("crasher", Some(shell(script)))).await;
    let exit = within("exit", started.exit).await;
    assert_eq!(exit.reason, ExitReason::Code(4));
    let lines = logs_until(&rt, &id, |l| !l.is_empty()).await;
    let grandchild: u32 = lines[0].parse().expect("the script prints its child's pid");
    assert_group_gone(pid).await;
    assert!(!is_alive(grandchild));
}

/// Without cgroups the reaper kills what the main process left in its group, seen exited
/// but not reaped yet (its pid, the group's id, still reserved), then reaps it.
#[tokio::test]
async fn without_cgroups_a_forked_grandchild_dies_when_the_main_process_exits_by_itself() {
    let rt = ProcessRuntime::new(ProcessConfig {
        cgroups: false,
        ..ProcessConfig::default()
    });
    assert_eq!(rt.containment(), "process-group");
    let script = "sleep 1000 & echo $!; exit 4";
    let (id, started, pid) = launch(&rt, &service("crasher", Some(shell(script)))).await;
    let exit = within("exit", started.exit).await;
    assert_eq!(exit.reason, ExitReason::Code(4));
    let lines = logs_until(&rt, &id, |l| !l.is_empty()).await;
    let grandchild: u32 = lines[0].parse().expect("the script prints its child's pid");
    assert_group_gone(pid).await;
    assert!(!is_alive(grandchild));
    rt.remove(&id).await.expect("remove");
}

/// Without cgroups a stop signals the group through the leader's pidfd.
#[tokio::test]
async fn without_cgroups_a_stop_kills_the_forked_grandchild_with_its_replica() {
    let rt = ProcessRuntime::new(ProcessConfig {
        cgroups: false,
        ..ProcessConfig::default()
    });
    let script = "sleep 1000 & echo $!; wait";
    let (id, started, pid) = launch(&rt, &service("forker", Some(shell(script)))).await;
    let lines = logs_until(&rt, &id, |l| !l.is_empty()).await;
    let grandchild: u32 = lines[0].parse().expect("the script prints its child's pid");
    within(
        "stop",
        rt.stop(&id, StopSignal::TERM, Duration::from_secs(30)),
    )
    .await
    .expect("stop");
    assert_eq!(
        within("exit", started.exit).await.reason,
        ExitReason::Signal(15)
    );
    assert_group_gone(pid).await;
    assert!(!is_alive(grandchild));
    rt.remove(&id).await.expect("remove");
}

#[tokio::test]
async fn an_exit_is_reported_while_an_escaped_grandchild_still_holds_the_output_pipe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("escapee.pid");
    // The main process waits for the escapee to have left the group (it writes its pid
    // after `setsid`), then exits while the escapee keeps stdout open.
    let script = format!(
        "setsid sh -c 'echo $$ > {f}; exec sleep 30' & \
         while [ ! -s {f} ]; do sleep 0.01; done; exit 5",
        f = pid_file.display()
    );
    let rt = runtime();
    let before = Instant::now();
    let (_, started, pid) = launch(&rt, &service("escaper", Some(shell(&script)))).await;
    let exit = within("exit", started.exit).await;
    assert_eq!(exit.reason, ExitReason::Code(5));
    assert!(
        before.elapsed() < Duration::from_secs(5),
        "the exit waited for the pipe to close"
    );
    assert_group_gone(pid).await;

    // Clean up the process that left the group: the runtime cannot reach it.
    let deadline = Instant::now() + PATIENCE;
    let escapee = loop {
        if let Ok(text) = std::fs::read_to_string(&pid_file) {
            if let Ok(p) = text.trim().parse::<i32>() {
                break p;
            }
        }
        assert!(Instant::now() < deadline, "escapee never wrote its pid");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(escapee),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the escapee");
}

#[tokio::test]
async fn the_log_tail_holds_the_last_lines_printed_on_stdout_and_stderr() {
    let rt = runtime();
    let script = "for i in $(seq 1 50); do echo out $i; done; echo oops >&2";
    let (id, started, pid) = launch(&rt, &service("printer", Some(shell(script)))).await;
    within("exit", started.exit).await;
    let lines = logs_until(&rt, &id, |l| l.len() == 51).await;
    assert!(
        lines.iter().any(|l| l == "oops"),
        "stderr captured: {lines:?}"
    );
    let stdout: Vec<&String> = lines.iter().filter(|l| l.starts_with("out")).collect();
    assert_eq!(stdout.len(), 50);
    assert_eq!(stdout[49], "out 50");
    let tail = rt.logs(&id, 3);
    assert_eq!(tail.len(), 3);
    assert_eq!(&tail[..], &lines[48..]);
    assert_group_gone(pid).await;
}

#[tokio::test]
async fn the_ring_buffer_keeps_at_most_log_lines_lines() {
    let rt = ProcessRuntime::new(ProcessConfig {
        log_lines: 10,
        ..ProcessConfig::default()
    });
    let script = "for i in $(seq 1 100); do echo line $i; done";
    let (id, started, pid) = launch(&rt, &service("chatty", Some(shell(script)))).await;
    within("exit", started.exit).await;
    let lines = logs_until(&rt, &id, |l| l.last().is_some_and(|x| x == "line 100")).await;
    let expected: Vec<String> = (91..=100).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected);
    assert_group_gone(pid).await;
}

#[tokio::test]
async fn the_ring_buffer_keeps_at_most_log_bytes_bytes() {
    let rt = ProcessRuntime::new(ProcessConfig {
        log_bytes: 64,
        ..ProcessConfig::default()
    });
    let script =
        "for i in $(seq 100 199); do echo line $i; done; head -c 500 /dev/zero | tr '\\0' x";
    let (id, started, pid) = launch(&rt, &service("wordy", Some(shell(script)))).await;
    within("exit", started.exit).await;
    let lines = logs_until(&rt, &id, |l| l.last().is_some_and(|x| x.starts_with('x'))).await;
    let bytes: usize = lines.iter().map(String::len).sum();
    assert!(bytes <= 64, "{bytes} bytes kept: {lines:?}");
    // The overlong last line is cut to the bound, and nothing older fits beside it.
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].chars().all(|c| c == 'x'), "{lines:?}");
    assert_group_gone(pid).await;
}

#[tokio::test]
async fn output_is_also_appended_to_a_file_per_replica_in_the_log_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("logs");
    let rt = ProcessRuntime::new(ProcessConfig {
        log_dir: Some(log_dir.clone()),
        ..ProcessConfig::default()
    });
    let (_, started, pid) = launch(
        &rt,
        &service("filed", Some(shell("echo one; echo two >&2"))),
    )
    .await;
    within("exit", started.exit).await;
    let path = log_dir.join("test-filed-0.log");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains("one\n") && text.contains("two\n") {
            break;
        }
        assert!(Instant::now() < deadline, "log file holds {text:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_group_gone(pid).await;
}

#[tokio::test]
async fn a_missing_binary_is_a_start_error_naming_the_path() {
    let rt = runtime();
    let svc = service(
        "missing",
        Some(command(&["/nonexistent/bin/server", "-v"], None)),
    );
    let (id, spec) = replica(&svc, 0);
    rt.create(&id, &spec).await.expect("create");
    let reason = start_reason(rt.start(&id).await.expect_err("no such binary"));
    assert!(reason.contains("/nonexistent/bin/server"), "{reason}");
    assert!(reason.contains("not found"), "{reason}");

    let svc = service(
        "unlisted",
        Some(command(&["herdsman-no-such-program"], None)),
    );
    let (id, spec) = replica(&svc, 0);
    rt.create(&id, &spec).await.expect("create");
    let reason = start_reason(rt.start(&id).await.expect_err("not in PATH"));
    assert!(
        reason.contains("herdsman-no-such-program not found in PATH"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_relative_program_is_found_in_the_workdir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("run.sh");
    std::fs::write(&script, "#!/bin/sh\necho from the workdir\n").expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let rt = runtime();
    let svc = service(
        "relative",
        Some(command(&["./run.sh"], Some(dir.path().into()))),
    );
    let (_, started, pid) = launch(&rt, &svc).await;
    assert_eq!(
        within("exit", started.exit).await.reason,
        ExitReason::Code(0)
    );
    assert_group_gone(pid).await;

    let svc = service(
        "absent",
        Some(command(&["./bin/api"], Some(dir.path().into()))),
    );
    let (id, spec) = replica(&svc, 0);
    rt.create(&id, &spec).await.expect("create");
    let reason = start_reason(rt.start(&id).await.expect_err("no ./bin/api"));
    let expected = format!(
        "program ./bin/api not found in workdir {}",
        dir.path().display()
    );
    assert!(reason.contains(&expected), "{reason}");
}

#[tokio::test]
async fn a_bad_workdir_is_a_start_error_naming_the_path() {
    let rt = runtime();
    let svc = service(
        "lost",
        Some(command(&["true"], Some("/nonexistent/work".into()))),
    );
    let (id, spec) = replica(&svc, 0);
    rt.create(&id, &spec).await.expect("create");
    let reason = start_reason(rt.start(&id).await.expect_err("no such workdir"));
    assert!(
        reason.contains("workdir /nonexistent/work does not exist"),
        "{reason}"
    );

    let file = tempfile::NamedTempFile::new().expect("tempfile");
    let svc = service(
        "filedir",
        Some(command(&["true"], Some(file.path().into()))),
    );
    let (id, spec) = replica(&svc, 0);
    rt.create(&id, &spec).await.expect("create");
    let reason = start_reason(rt.start(&id).await.expect_err("workdir is a file"));
    assert!(
        reason.contains(&file.path().display().to_string()),
        "{reason}"
    );
    assert!(reason.contains("is not a directory"), "{reason}");
}

#[tokio::test]
async fn a_program_without_execute_permission_is_a_start_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("server.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let path = script.display().to_string();
    let rt = runtime();
    let svc = service("noexec", Some(command(&[&path], None)));
    let (id, spec) = replica(&svc, 0);
    rt.create(&id, &spec).await.expect("create");
    let reason = start_reason(rt.start(&id).await.expect_err("not executable"));
    assert!(
        reason.contains(&format!("permission denied executing {path}")),
        "{reason}"
    );
}

#[tokio::test]
async fn a_service_with_only_an_image_is_refused_because_the_process_runtime_needs_a_command() {
    let rt = runtime();
    let (id, spec) = replica(&service("imaged", None), 0);
    let reason = start_reason(rt.create(&id, &spec).await.expect_err("no command"));
    assert!(reason.contains("needs `command`"), "{reason}");
    assert!(reason.contains("example/imaged:1"), "{reason}");
}

#[tokio::test]
async fn the_command_environment_and_workdir_are_those_of_the_replica() {
    let dir = tempfile::tempdir().expect("tempdir");
    let workdir = dir.path().canonicalize().expect("canonical tempdir");
    let script = "echo $REPLICA $PORT $PORT_HTTP $SERVICE $DEPLOYMENT $CUSTOM $0 $1; pwd";
    let mut svc = service(
        "envy",
        Some(command(
            &["sh", "-c", script, "${PORT}", "r${REPLICA}"],
            Some(workdir.clone()),
        )),
    );
    svc.env.insert(
        "CUSTOM".into(),
        Template::parse("${SERVICE}-${REPLICA}").expect("template"),
    );
    let (id, spec) = replica(&svc, 2);
    let rt = runtime();
    rt.create(&id, &spec).await.expect("create");
    let started = rt.start(&id).await.expect("start");
    let pid = started.pid.expect("pid");
    assert_eq!(
        within("exit", started.exit).await.reason,
        ExitReason::Code(0)
    );
    let lines = logs_until(&rt, &id, |l| l.len() == 2).await;
    assert_eq!(lines[0], "2 8002 8002 envy test envy-2 8002 r2");
    assert_eq!(lines[1], workdir.display().to_string());
    assert_group_gone(pid).await;
}

#[tokio::test]
async fn removing_a_running_container_kills_its_process_group() {
    let rt = runtime();
    let (id, started, pid) =
        launch(&rt, &service("removed", Some(shell("sleep 1000 & wait")))).await;
    within("remove", rt.remove(&id)).await.expect("remove");
    assert_eq!(
        within("exit", started.exit).await.reason,
        ExitReason::Signal(9)
    );
    assert_group_gone(pid).await;
    assert!(
        rt.logs(&id, 10).is_empty(),
        "a removed container has no logs"
    );
}

#[tokio::test]
async fn stopping_an_exited_container_succeeds_and_an_unknown_one_is_an_error() {
    let rt = runtime();
    let (id, started, pid) = launch(&rt, &service("done", Some(shell("exit 0")))).await;
    within("exit", started.exit).await;
    within(
        "stop",
        rt.stop(&id, StopSignal::TERM, Duration::from_secs(1)),
    )
    .await
    .expect("stop");
    let unknown = id.next_generation();
    let err = rt
        .stop(&unknown, StopSignal::TERM, Duration::from_secs(1))
        .await;
    assert!(
        matches!(err, Err(RuntimeError::UnknownContainer { .. })),
        "{err:?}"
    );
    let again = rt.start(&id).await.expect_err("an incarnation runs once");
    assert!(matches!(again, RuntimeError::Start { .. }), "{again:?}");
    assert_group_gone(pid).await;
}

#[tokio::test]
async fn shutdown_kills_and_reaps_every_process_and_refuses_new_starts() {
    let rt = runtime();
    let svc = service("many", Some(shell("trap '' TERM; sleep 1000 & wait")));
    let mut running = Vec::new();
    for r in 0..3 {
        let (id, spec) = replica(&svc, r);
        rt.create(&id, &spec).await.expect("create");
        let started = rt.start(&id).await.expect("start");
        running.push((started.pid.expect("pid"), started.exit));
    }
    within("shutdown", rt.shutdown()).await;
    for (pid, exit) in running {
        assert_eq!(within("exit", exit).await.reason, ExitReason::Signal(9));
        assert_group_gone(pid).await;
    }
    let (id, spec) = replica(&svc, 7);
    rt.create(&id, &spec).await.expect("create");
    let reason = start_reason(rt.start(&id).await.expect_err("shut down"));
    assert!(reason.contains("shut down"), "{reason}");
}

#[tokio::test]
async fn dropping_the_runtime_kills_every_process_group() {
    let rt = runtime();
    let (_, started, pid) =
        launch(&rt, &service("dropped", Some(shell("sleep 1000 & wait")))).await;
    drop(rt);
    assert_eq!(
        within("exit", started.exit).await.reason,
        ExitReason::Signal(9)
    );
    assert_group_gone(pid).await;
}

#[tokio::test]
async fn exec_runs_a_shell_command_with_the_replica_environment_and_a_hard_timeout() {
    let rt = runtime();
    let (id, started, pid) = launch(&rt, &service("execd", Some(shell("sleep 1000")))).await;
    let out = within(
        "exec",
        rt.exec(&id, "echo replica $REPLICA; exit 3", PATIENCE),
    )
    .await
    .expect("exec");
    assert_eq!(out.exit_code, Some(3));
    assert!(out.output.contains("replica 0"), "{out:?}");

    let before = Instant::now();
    let out = within(
        "exec",
        rt.exec(&id, "sleep 1000", Duration::from_millis(200)),
    )
    .await
    .expect("exec");
    assert!(out.timed_out, "{out:?}");
    assert!(before.elapsed() < Duration::from_secs(5));

    rt.stop(&id, StopSignal::TERM, Duration::from_secs(1))
        .await
        .expect("stop");
    within("exit", started.exit).await;
    assert_group_gone(pid).await;
}
