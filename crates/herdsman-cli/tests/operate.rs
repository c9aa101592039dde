//! The operator's verbs against a real `herdsman run` (real processes, its control socket
//! in a temp state directory, loopback only): status, logs (and `-f`), restart, stop,
//! start, scale, events, `status -w`; exit codes 0 / 1 / 2; the errors when no
//! deployment or several run; the socket's mode.

mod support;

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::*;

const LIMIT: Duration = Duration::from_secs(20);

/// A `herdsman run` of `web_spec` with `replicas` replicas, its state in `state/`.
struct Run {
    h: Herdsman,
    state: PathBuf,
    _spec: Spec,
}

async fn run(replicas: u32) -> Run {
    let base = free_ports(4);
    let spec = web_spec(base, replicas, "");
    let state = spec.dir.path().join("state");
    let mut h = Herdsman::start(&[
        "run",
        s(&spec.path),
        "--api",
        "off",
        "--state-dir",
        s(&state),
    ]);
    let st = stable_via_socket(&state, &h).await;
    h.seen_pids = pids(&st);
    Run {
        h,
        state,
        _spec: spec,
    }
}

/// `herdsman status --json` through the control socket, once stable.
async fn stable_via_socket(state: &Path, h: &Herdsman) -> Value {
    stable_deployment_via_socket(state, "t", h).await
}

/// The same for deployment `name` under the state root `state`.
async fn stable_deployment_via_socket(state: &Path, name: &str, h: &Herdsman) -> Value {
    let args = ["status", "--json", "-d", name, "--state-dir", s(state)];
    eventually(
        LIMIT,
        "deployment stable through the control socket",
        || async {
            let (code, out, _) = herdsman_once(&args);
            let st: Value = serde_json::from_str(&out).ok()?;
            (code.success() && st["stable"] == Value::Bool(true)).then_some(st)
        },
    )
    .await;
    let (_, out, err) = herdsman_once(&args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}\n{}", h.output()))
}

fn status_json(state: &Path) -> Value {
    let (code, out, err) = herdsman_once(&["status", "--json", "--state-dir", s(state)]);
    assert!(code.success(), "status failed: {err}");
    serde_json::from_str(&out).expect("status --json prints JSON")
}

/// A long-running verb (`logs -f`, `events`, `status -w`), its output in files, killed
/// when dropped.
struct Streaming {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    _dir: tempfile::TempDir,
}

impl Streaming {
    fn start(args: &[&str]) -> Streaming {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let err = dir.path().join("err");
        let child = Command::new(HERDSMAN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("out file"))
            .stderr(File::create(&err).expect("err file"))
            .spawn()
            .expect("herdsman starts");
        Streaming {
            child,
            out,
            err,
            _dir: dir,
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    async fn wait_for(&self, what: &str, mut f: impl FnMut(&str) -> bool) -> String {
        eventually(LIMIT, what, || {
            let out = self.stdout();
            let hit = f(&out);
            async move { hit.then_some(out) }
        })
        .await
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_control_socket_is_private_and_status_reads_it() {
    let r = run(2).await;
    let socket = r.state.join("t").join("control.sock");
    let mode = std::fs::metadata(&socket)
        .expect("control.sock exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    let (code, table, err) = herdsman_once(&["status", "--state-dir", s(&r.state)]);
    assert!(code.success(), "{err}");
    assert!(table.starts_with("deployment t: stable\n"), "{table}");
    assert!(table.contains("web/1    running"), "{table}");
}

#[tokio::test]
async fn scale_stop_and_start_change_the_replicas_and_exit_zero() {
    let mut r = run(1).await;
    let (code, out, err) = herdsman_once(&["scale", "web", "2", "--state-dir", s(&r.state)]);
    assert!(code.success(), "{err}");
    assert_eq!(out, "service web scaled to 2 replicas\n");
    let st = stable_via_socket(&r.state, &r.h).await;
    assert_eq!(st["services"][0]["desired"], 2);
    r.h.seen_pids.extend(pids(&st));

    let (code, out, err) = herdsman_once(&["stop", "web", "--state-dir", s(&r.state)]);
    assert!(code.success(), "{err}");
    assert!(out.starts_with("service web stopped in "), "{out}");
    // `stop` returns once the processes are gone.
    for pid in &r.h.seen_pids {
        assert!(!alive(*pid), "pid {pid} still alive after stop");
    }
    assert_eq!(status_json(&r.state)["services"][0]["desired"], 0);

    let (code, out, err) = herdsman_once(&["start", "web", "--state-dir", s(&r.state)]);
    assert!(code.success(), "{err}");
    assert_eq!(out, "service web started: 1 replica desired\n");
    let st = stable_via_socket(&r.state, &r.h).await;
    r.h.seen_pids.extend(pids(&st));
    assert_eq!(st["services"][0]["healthy"], 1);
}

#[tokio::test]
async fn restart_replaces_each_replica_in_turn_and_says_so() {
    let mut r = run(2).await;
    let before = pids(&status_json(&r.state));
    let (code, out, err) = herdsman_once(&["restart", "web", "--state-dir", s(&r.state)]);
    assert!(code.success(), "{err}\n{}", r.h.output());
    assert_eq!(out, "restarted 2 replicas of web\n");
    let first = err
        .find("restarting web/0 (1 of 2)")
        .expect("progress for web/0");
    let ready = err.find("web/0 is ready again after").expect("web/0 ready");
    let second = err
        .find("restarting web/1 (2 of 2)")
        .expect("progress for web/1");
    assert!(first < ready && ready < second, "one at a time:\n{err}");
    let st = status_json(&r.state);
    let after = pids(&st);
    r.h.seen_pids.extend(after.iter().copied());
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "{before:?} -> {after:?}"
    );
    assert_eq!(st["services"][0]["healthy"], 2);

    let (code, _, err) = herdsman_once(&[
        "restart",
        "web/1",
        "--timeout",
        "1ms",
        "--state-dir",
        s(&r.state),
    ]);
    assert_eq!(
        code.code(),
        Some(1),
        "a replica not ready in time fails the verb: {err}"
    );
    assert!(err.contains("web/1 was not ready again within"), "{err}");
    let st = stable_via_socket(&r.state, &r.h).await;
    r.h.seen_pids.extend(pids(&st));
}

#[tokio::test]
async fn failures_exit_1_with_the_reason_and_bad_usage_exits_2() {
    let r = run(1).await;
    let dir = s(&r.state);
    let (code, _, err) = herdsman_once(&["stop", "nope", "--state-dir", dir]);
    assert_eq!(code.code(), Some(1), "{err}");
    assert!(err.contains("no service named \"nope\""), "{err}");
    let (code, _, err) = herdsman_once(&["logs", "web/7", "--state-dir", dir]);
    assert_eq!(code.code(), Some(1), "{err}");
    assert!(err.contains("has no replica 7"), "{err}");
    for bad in [
        &["logs", "web/x", "--state-dir", dir][..],
        &["scale", "web", "many", "--state-dir", dir],
        &["restart", "--state-dir", dir],
    ] {
        let (code, _, err) = herdsman_once(bad);
        assert_eq!(code.code(), Some(2), "{bad:?}: {err}");
    }
    let (code, _, err) = herdsman_once(&["scale", "web", "1", "-d", "other", "--state-dir", dir]);
    assert_eq!(code.code(), Some(1), "{err}");
    assert!(err.contains("deployment \"other\" is not running"), "{err}");
}

#[tokio::test]
async fn no_running_deployment_and_several_are_clear_errors() {
    let root = tempfile::tempdir().expect("tempdir");
    let (code, _, err) = herdsman_once(&["scale", "web", "2", "--state-dir", s(root.path())]);
    assert_eq!(code.code(), Some(1), "{err}");
    assert!(err.contains("no deployment is running under"), "{err}");

    // Two runs, each in its own directory under one root (the layout of one state
    // directory per deployment).
    let (base_a, base_b) = (free_ports(2), free_ports(2));
    let spec_a = web_spec(base_a, 1, "");
    let yaml_b = std::fs::read_to_string(&web_spec(base_b, 1, "").path)
        .expect("spec")
        .replace("deployment: t", "deployment: u");
    let spec_b = spec(&yaml_b);
    // Both under one root: `--state-dir` names the root, each deployment its own
    // directory in it.
    let (dir_a, dir_b) = (root.path().to_path_buf(), root.path().to_path_buf());
    let mut a = Herdsman::start(&[
        "run",
        s(&spec_a.path),
        "--api",
        "off",
        "--state-dir",
        s(&dir_a),
    ]);
    let mut b = Herdsman::start(&[
        "run",
        s(&spec_b.path),
        "--api",
        "off",
        "--state-dir",
        s(&dir_b),
    ]);
    a.seen_pids = pids(&stable_deployment_via_socket(&dir_a, "t", &a).await);
    b.seen_pids = pids(&stable_deployment_via_socket(&dir_b, "u", &b).await);

    let (code, _, err) = herdsman_once(&["status", "--state-dir", s(root.path())]);
    assert_eq!(code.code(), Some(2), "{err}");
    assert!(err.contains("2 deployments are running"), "{err}");
    assert!(err.contains("-d DEPLOYMENT"), "{err}");
    assert!(err.contains("  t (") && err.contains("  u ("), "{err}");
    let (code, out, err) = herdsman_once(&["status", "-d", "u", "--state-dir", s(root.path())]);
    assert!(code.success(), "{err}");
    assert!(out.starts_with("deployment u: stable"), "{out}");

    // A socket left by a run that ended is not a running deployment.
    b.signal(nix::sys::signal::Signal::SIGTERM);
    b.wait(LIMIT).await;
    let socket_b = dir_b.join("u").join("control.sock");
    assert!(!socket_b.exists(), "a run removes its socket");
    drop(std::os::unix::net::UnixListener::bind(&socket_b).expect("bound"));
    let (code, out, err) = herdsman_once(&["status", "--state-dir", s(root.path())]);
    assert!(code.success(), "{err}");
    assert!(out.starts_with("deployment t: stable"), "{out}");
}

#[tokio::test]
async fn logs_shows_the_tail_prefixed_and_follow_prints_new_lines_once() {
    let mut r = run(2).await;
    let dir = s(&r.state);
    let (code, out, err) = herdsman_once(&["logs", "web", "--state-dir", dir]);
    assert!(code.success(), "{err}");
    for i in 0..2 {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("web/{i} | web[{i}] pid "))),
            "{out}"
        );
    }
    let (code, out, _) = herdsman_once(&["logs", "web/1", "--tail", "1", "--state-dir", dir]);
    assert!(code.success());
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("web[1] listening on http://127.0.0.1:"),
        "{out}"
    );

    let follow = Streaming::start(&["logs", "web/0", "-f", "--state-dir", dir]);
    follow
        .wait_for("the tail of web/0", |o| o.contains("listening on"))
        .await;
    let (code, _, err) = herdsman_once(&["restart", "web/0", "--state-dir", dir]);
    assert!(code.success(), "{err}");
    let st = status_json(&r.state);
    r.h.seen_pids.extend(pids(&st));
    let new_pid = pid_of(&st, "web", 0).expect("web/0 has a pid");
    let out = follow
        .wait_for("the new incarnation's lines", |o| {
            o.contains(&format!("web[0] pid {new_pid} starting"))
                && o.matches("listening on").count() >= 2
        })
        .await;
    // Give a duplicate time to show up, then look.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let out2 = follow.stdout();
    assert_eq!(out2.matches("listening on").count(), 2, "{out2}");
    assert_eq!(
        out2.matches(&format!("pid {new_pid} starting")).count(),
        1,
        "{out}\nstderr: {}",
        follow.stderr()
    );
}

#[tokio::test]
async fn events_and_status_watch_follow_changes_as_they_happen() {
    let mut r = run(1).await;
    let dir = s(&r.state);
    let events = Streaming::start(&["events", "--json", "--state-dir", dir]);
    let watch = Streaming::start(&["status", "-w", "--state-dir", dir]);
    let text_events = Streaming::start(&["events", "--state-dir", dir]);
    eventually(LIMIT, "the event follower subscribed", || {
        let ok = events.stderr().contains("following events")
            && text_events.stderr().contains("following events");
        async move { ok.then_some(()) }
    })
    .await;
    watch
        .wait_for("the first table", |o| o.contains("deployment t: stable"))
        .await;

    let (code, _, err) = herdsman_once(&["scale", "web", "2", "--state-dir", dir]);
    assert!(code.success(), "{err}");
    let out = events
        .wait_for("a scaled event", |o| o.contains("\"event\":\"scaled\""))
        .await;
    let scaled: Value = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["event"] == "scaled")
        .expect("the scaled event is JSON");
    assert_eq!(
        (scaled["from"].as_u64(), scaled["to"].as_u64()),
        (Some(1), Some(2))
    );
    text_events
        .wait_for("a scaled line", |o| {
            o.lines().any(|l| {
                l.starts_with('+') && l.ends_with("service web scaled from 1 to 2 replicas")
            })
        })
        .await;
    // Redrawn on the events that follow: the new replica shows up, then is ready.
    watch
        .wait_for("a table with web/1 running", |o| {
            o.split("deployment t:")
                .any(|table| table.contains("web/1    running  healthy"))
        })
        .await;
    let st = stable_via_socket(&r.state, &r.h).await;
    r.h.seen_pids.extend(pids(&st));
}

#[tokio::test]
async fn v1_logs_serves_a_replicas_tail_under_the_api_token_rule() {
    let base = free_ports(2);
    let spec = web_spec(base, 2, "");
    let api = format!("127.0.0.1:{}", free_port());
    let mut h = Herdsman::start_with_env(
        &["run", s(&spec.path), "--api", &api],
        &[("HERDSMAN_API_TOKEN", "s3cret")],
    );
    let url = format!("http://{api}/v1/logs?service=web&replica=1&tail=1");
    let anonymous = eventually(LIMIT, "the API answers", || async {
        client().get(&url).send().await.ok()
    })
    .await;
    assert_eq!(anonymous.status(), 401, "same token rule as /v1/status");
    let text = eventually(LIMIT, "web/1 says it listens", || async {
        let r = client().get(&url).bearer_auth("s3cret").send().await.ok()?;
        let text = r.text().await.ok()?;
        text.contains("listening on").then_some(text)
    })
    .await;
    assert_eq!(text.lines().count(), 1, "tail=1: {text}");
    assert!(
        text.starts_with("web[1] listening on http://127.0.0.1:"),
        "{text}"
    );
    // Replica 0 may not have written its first line yet when replica 1 has: the
    // service-wide tail is asked for until both are in it, each under its own prefix.
    let all_url = format!("http://{api}/v1/logs?service=web");
    let all = eventually(LIMIT, "both replicas in the service's logs", || async {
        let r = client()
            .get(&all_url)
            .bearer_auth("s3cret")
            .send()
            .await
            .ok()?;
        let text = r.text().await.ok()?;
        text.contains("web/0 | ").then_some(text)
    })
    .await;
    assert!(
        all.lines().any(|l| l.starts_with("web/0 | web[0] pid ")),
        "{all}"
    );
    assert!(
        all.lines().any(|l| l.starts_with("web/1 | web[1] pid ")),
        "{all}"
    );
    let missing = client()
        .get(format!("http://{api}/v1/logs?service=nope"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("answers");
    assert_eq!(missing.status(), 404);
    let st = client()
        .get(format!("http://{api}/v1/status"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("answers")
        .text()
        .await
        .expect("text");
    let st: Value = serde_json::from_str(&st).expect("status JSON");
    h.seen_pids = pids(&st);
}

#[test]
fn completions_are_printed_for_each_shell_and_an_unknown_shell_is_bad_usage() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = herdsman_once(&["completions", shell]);
        assert!(code.success(), "{shell}: {err}");
        for verb in ["logs", "restart", "scale", "events", "completions"] {
            assert!(out.contains(verb), "{shell} completion lacks {verb}");
        }
    }
    let (code, _, _) = herdsman_once(&["completions", "cmd.exe"]);
    assert_eq!(code.code(), Some(2));
}

/// Send `bytes` on the control socket, close the sending side, read the whole answer.
fn raw(socket: &Path, bytes: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connects");
    s.set_read_timeout(Some(LIMIT)).expect("timeout set");
    // A request too long for the server may be cut off mid-write: that is its answer.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

#[tokio::test]
async fn the_protocol_refuses_bad_requests_plainly_and_serves_a_half_closed_client() {
    let mut r = run(1).await;
    let socket = r.state.join("t").join("control.sock");
    let answer = raw(&socket, b"{\"v\":2,\"kind\":\"status\"}\n");
    assert!(
        answer.contains("speaks control protocol v1, not v2") && answer.contains("\"usage\":true"),
        "{answer}"
    );
    let answer = raw(&socket, b"{\"v\":1,\"kind\":\"promote\",\"file\":\"x\"}\n");
    assert!(
        answer.contains("cannot do that") && answer.contains("promote"),
        "{answer}"
    );
    let answer = raw(&socket, b"not json\n");
    assert!(answer.contains("not a control request"), "{answer}");
    // Longer than the longest request, an `apply` of an 8 MiB spec, escaped.
    let mut huge = vec![b' '; 17 * 1024 * 1024];
    huge.push(b'\n');
    let answer = raw(&socket, &huge);
    assert!(
        answer.is_empty() || answer.contains("a request is one JSON line of at most"),
        "{answer}"
    );
    // A client that closes its sending side after the request still gets it done.
    let answer = raw(
        &socket,
        b"{\"v\":1,\"kind\":\"scale\",\"service\":\"web\",\"replicas\":2}\n",
    );
    assert_eq!(
        answer,
        "{\"kind\":\"ok\",\"message\":\"service web scaled to 2 replicas\"}\n"
    );
    let st = stable_via_socket(&r.state, &r.h).await;
    r.h.seen_pids.extend(pids(&st));
    assert_eq!(st["services"][0]["desired"], 2);
}
