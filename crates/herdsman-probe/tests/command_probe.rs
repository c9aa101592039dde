//! Command probes: real processes in their own group, killed at the timeout with every
//! child they forked; checked through /proc. Real clock.

mod support;

use std::time::Duration;

use herdsman_probe::{run_command, CommandRequest, Outcome, ProbeError, OUTPUT_CAP};
use support::{is_alive, temp_path, wait_group_gone};
use tokio::time::{timeout, Instant};

const SECOND: Duration = Duration::from_secs(1);

fn sh(line: &str) -> CommandRequest {
    CommandRequest::shell(line)
}

/// The first line of `output` as a pid (the tests print `$$` first).
fn first_pid(output: &str) -> i32 {
    output
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in output {output:?}"))
}

#[tokio::test]
async fn exit_code_and_both_streams_are_reported() {
    let out = run_command(&sh("echo out; echo err >&2; exit 3"), 5 * SECOND)
        .await
        .expect("spawn sh");
    assert_eq!(out.exit_code, Some(3));
    assert_eq!(out.signal, None);
    assert!(!out.timed_out);
    assert!(
        out.output.contains("out\n") && out.output.contains("err\n"),
        "{:?}",
        out.output
    );
    assert_eq!(
        out.to_check_result().outcome,
        Outcome::Failure("exited with code 3".into())
    );
    let ok = run_command(&sh("true"), 5 * SECOND)
        .await
        .expect("spawn sh");
    assert_eq!(ok.to_check_result().outcome, Outcome::Success);
}

#[tokio::test]
async fn a_command_that_sleeps_forever_and_forks_is_killed_with_its_group_at_the_timeout() {
    let started = Instant::now();
    let out = run_command(
        &sh("echo $$; sleep 60 & sleep 60 & sleep 60"),
        Duration::from_millis(300),
    )
    .await
    .expect("spawn sh");
    let took = started.elapsed();
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.exit_code, None);
    assert_eq!(out.signal, Some(9));
    assert!(
        took >= Duration::from_millis(300) && took < 2 * SECOND,
        "{took:?}"
    );
    assert!(matches!(
        out.to_check_result().outcome,
        Outcome::Failure(ref why) if why.starts_with("timed out after")
    ));
    let pgid = first_pid(&out.output);
    assert_eq!(
        wait_group_gone(pgid).await,
        vec![],
        "processes left in group {pgid}"
    );
    assert!(!is_alive(pgid));
}

#[tokio::test]
async fn a_background_child_left_by_a_finished_command_is_killed() {
    let started = Instant::now();
    // The background sleep keeps stdout open: without the group kill the read would wait
    // for it, and it would outlive the probe.
    let out = run_command(&sh("echo $$; sleep 60 & echo started"), 10 * SECOND)
        .await
        .expect("spawn sh");
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    assert!(!out.timed_out);
    assert!(started.elapsed() < 2 * SECOND, "{:?}", started.elapsed());
    assert!(out.output.contains("started"));
    let pgid = first_pid(&out.output);
    assert_eq!(
        wait_group_gone(pgid).await,
        vec![],
        "processes left in group {pgid}"
    );
}

#[tokio::test]
async fn a_child_that_escapes_the_group_cannot_hold_the_probe_open() {
    let started = Instant::now();
    // `setsid` moves the sleep to a session of its own, out of reach of the group kill, with
    // the output pipe still open. The probe must return anyway.
    let out = run_command(&sh("setsid sleep 30 & echo $!"), 10 * SECOND)
        .await
        .expect("spawn sh");
    let took = started.elapsed();
    let escaped = first_pid(&out.output);
    // Clean up what this test started, whatever the assertions below say.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(escaped),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    assert!(took < 2 * SECOND, "{took:?}");
}

#[tokio::test]
async fn only_the_last_4_kib_of_output_are_kept() {
    let out = run_command(
        &sh("i=0; while [ $i -lt 200 ]; do printf '%050d\\n' $i; i=$((i+1)); done; echo END"),
        5 * SECOND,
    )
    .await
    .expect("spawn sh");
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.output.len(), OUTPUT_CAP);
    assert!(
        out.output.ends_with("00199\nEND\n"),
        "{:?}",
        &out.output[OUTPUT_CAP - 40..]
    );
}

#[tokio::test]
async fn a_missing_program_is_a_spawn_error_naming_it() {
    let req = CommandRequest {
        argv: vec!["/nonexistent/herdsman-probe-test".into()],
        ..CommandRequest::default()
    };
    match run_command(&req, SECOND).await {
        Err(ProbeError::Spawn { program, .. }) => {
            assert_eq!(program, "/nonexistent/herdsman-probe-test")
        }
        other => panic!("expected a spawn error, got {other:?}"),
    }
    assert!(matches!(
        run_command(&CommandRequest::default(), SECOND).await,
        Err(ProbeError::EmptyCommand)
    ));
}

#[tokio::test]
async fn environment_and_working_directory_are_applied_and_stdin_is_closed() {
    let dir = std::env::temp_dir();
    let req = CommandRequest {
        argv: vec![
            "sh".into(),
            "-c".into(),
            "pwd; echo \"$HERDSMAN_T\"; cat".into(),
        ],
        env: vec![("HERDSMAN_T".into(), "hello".into())],
        workdir: Some(dir.clone()),
        cgroup: None,
    };
    // `cat` ends at once because stdin is /dev/null; an inherited terminal would block it.
    let out = run_command(&req, 5 * SECOND).await.expect("spawn sh");
    assert_eq!(out.exit_code, Some(0));
    let canonical = dir.canonicalize().unwrap_or(dir);
    assert_eq!(out.output, format!("{}\nhello\n", canonical.display()));
}

#[tokio::test]
async fn dropping_a_running_command_kills_its_group() {
    let pid_file = temp_path("dropped-pid");
    let line = format!("echo $$ > {}; sleep 60 & sleep 60", pid_file.display());
    let req = sh(&line);
    let cut = timeout(Duration::from_millis(500), run_command(&req, 60 * SECOND)).await;
    assert!(cut.is_err(), "the command should still have been running");
    let text = std::fs::read_to_string(&pid_file).unwrap_or_default();
    let _ = std::fs::remove_file(&pid_file);
    let pgid = first_pid(&text);
    assert_eq!(
        wait_group_gone(pgid).await,
        vec![],
        "processes left in group {pgid}"
    );
}
