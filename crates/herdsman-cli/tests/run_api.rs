//! `herdsman run` on real processes and real sockets (127.0.0.1 only), driven through
//! its HTTP API and `herdsman status`: status, streamed events, metrics, restarts after
//! kill -9, a clean stop on SIGTERM, the bearer token, state kept across runs.

mod support;

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use support::*;
use tokio::time::Instant;

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn run_serves_status_metrics_and_healthz_and_the_status_command_reads_them() {
    let base = free_ports(2);
    let spec = web_spec(base, 2, "");
    let api = format!("127.0.0.1:{}", free_port());
    let mut h = Herdsman::start(&["run", s(&spec.path), "--api", &api]);
    let st = stable(&api, &h).await;
    h.seen_pids = pids(&st);
    assert_eq!(st["deployment"], "t");
    assert_eq!(st["services"][0]["healthy"], 2);

    let healthz = client()
        .get(format!("http://{api}/healthz"))
        .send()
        .await
        .expect("healthz answers");
    assert_eq!(healthz.status(), 200);

    let (code, table, err) = herdsman_once(&["status", "--api", &api]);
    assert!(code.success(), "status failed: {err}");
    assert!(table.starts_with("deployment t: stable\n"), "{table}");
    for pid in &h.seen_pids {
        let row = table
            .lines()
            .find(|l| l.ends_with(&format!(" {pid}")))
            .unwrap_or_else(|| panic!("no row for pid {pid} in\n{table}"));
        assert!(row.contains("running") && row.contains("healthy"), "{row}");
    }
    let (code, json, _) = herdsman_once(&["status", "--api", &api, "--json"]);
    assert!(code.success());
    let parsed: Value = serde_json::from_str(&json).expect("--json prints JSON");
    assert_eq!(parsed["services"][0]["replicas"][1]["state"], "running");

    let metrics = client()
        .get(format!("http://{api}/metrics"))
        .send()
        .await
        .expect("metrics answer");
    assert!(metrics
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain; version=0.0.4")));
    let text = metrics.text().await.expect("metrics body");
    for line in [
        "herdsman_deployment_stable{deployment=\"t\"} 1",
        "herdsman_service_desired{service=\"web\"} 2",
        "herdsman_service_ready{service=\"web\"} 2",
        "herdsman_replicas{service=\"web\",state=\"running\"} 2",
        "herdsman_restarts_total{service=\"web\"} 0",
        "herdsman_probe_results_total{service=\"web\",outcome=\"failure\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
    }
    let successes = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("herdsman_probe_results_total{service=\"web\",outcome=\"success\"} ")
        })
        .and_then(|n| n.parse::<u64>().ok())
        .expect("probe success counter");
    assert!(successes >= 2, "each replica passed a check to be healthy");

    let post = client()
        .post(format!("http://{api}/v1/status"))
        .send()
        .await
        .expect("answers");
    assert_eq!(post.status(), 405, "the API is read-only");
}

#[tokio::test]
async fn a_replica_killed_with_sigkill_is_restarted_with_a_new_pid_and_the_events_say_so() {
    let base = free_ports(2);
    let spec = web_spec(base, 2, "");
    let api = format!("127.0.0.1:{}", free_port());
    let mut h = Herdsman::start(&["run", s(&spec.path), "--api", &api]);
    let st = stable(&api, &h).await;
    h.seen_pids = pids(&st);
    let old = pid_of(&st, "web", 0).expect("replica 0 has a pid");

    let mut events = client()
        .get(format!("http://{api}/v1/events"))
        .send()
        .await
        .expect("events stream opens");
    assert_eq!(
        events
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-ndjson")
    );

    let killed_at = Instant::now();
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).expect("kill -9");
    let new = eventually(LIMIT, "replica 0 running with a new pid", || {
        let api = api.clone();
        async move {
            let st = status(&api).await?;
            let r = &st["services"][0]["replicas"][0];
            let pid = r["pid"].as_u64()? as u32;
            (pid != old && r["state"] == "running").then_some(pid)
        }
    })
    .await;
    let replaced_after = killed_at.elapsed();
    h.seen_pids.push(new);
    eprintln!("kill -9 -> replacement running (seen through /v1/status): {replaced_after:?}");
    assert!(alive(new), "the new pid {new} is a live process");
    assert!(!alive(old), "the killed pid {old} is gone (reaped)");

    // The stream carried the exit (signal 9) and the restart, one JSON object per line.
    let mut seen = String::new();
    let (mut exited, mut restarted) = (None, None);
    let deadline = Instant::now() + LIMIT;
    while exited.is_none() || restarted.is_none() {
        let chunk = tokio::time::timeout_at(deadline, events.chunk())
            .await
            .expect("events within the limit")
            .expect("stream readable")
            .expect("stream still open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = seen.find('\n') {
            let line: String = seen.drain(..=end).collect();
            let e: Value = serde_json::from_str(&line).expect("each line is JSON");
            if e["event"] == "replica_exited" && e["replica"] == 0 {
                assert_eq!(e["exit"]["reason"]["kind"], "signal");
                assert_eq!(e["exit"]["reason"]["value"], 9);
                exited = e["at_ms"].as_u64();
            }
            if e["event"] == "replica_started" && e["replica"] == 0 {
                assert_eq!(e["pid"], new);
                restarted = e["at_ms"].as_u64();
            }
        }
    }

    if let (Some(exited), Some(restarted)) = (exited, restarted) {
        eprintln!(
            "exit seen -> replacement running (event times): {}ms",
            restarted - exited
        );
    }
    let st = status(&api).await.expect("status");
    assert_eq!(st["services"][0]["replicas"][0]["restarts"], 1);
    let text = client()
        .get(format!("http://{api}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    assert!(
        text.lines()
            .any(|l| l == "herdsman_restarts_total{service=\"web\"} 1"),
        "{text}"
    );
    let out = eventually(LIMIT, "the console prints the exit and restart", || {
        let out = h.stdout();
        async move {
            out.contains("web/0 restarting now (restart 1)")
                .then_some(out)
        }
    })
    .await;
    assert!(out.contains("web/0 exited: signal 9"), "{out}");
}

#[tokio::test]
async fn sigterm_stops_every_replica_even_one_ignoring_it_and_exits_zero() {
    let base = free_ports(3);
    let spec = spec(&format!(
        r#"version: v1
deployment: t
services:
  web:
    command:
      entrypoint: ["herdsman", "workload"]
      args: ["--port", "${{PORT}}"]
    scale: {{mode: fixed, replicas: 2}}
    endpoints: [{{name: http, protocol: http, port: {base}}}]
    health:
      start_interval: 100ms
      check: {{type: tcp, port: "${{PORT}}"}}
  stubborn:
    command:
      entrypoint: ["herdsman", "workload", "--ignore-sigterm"]
      args: ["--port", "${{PORT}}"]
    endpoints: [{{name: http, protocol: http, port: {}}}]
    health:
      start_interval: 100ms
      check: {{type: tcp, port: "${{PORT}}"}}
    stop_grace_period: 1s
"#,
        base + 2
    ));
    let api = format!("127.0.0.1:{}", free_port());
    let mut h = Herdsman::start(&["run", s(&spec.path), "--api", &api]);
    let st = stable(&api, &h).await;
    let replicas = pids(&st);
    h.seen_pids = replicas.clone();
    assert_eq!(replicas.len(), 3, "{st}");
    assert!(replicas.iter().all(|p| alive(*p)));

    let asked = Instant::now();
    h.signal(Signal::SIGTERM);
    let code = h.wait(LIMIT).await;
    eprintln!("SIGTERM -> herdsman exited: {:?}", asked.elapsed());
    assert_eq!(code.code(), Some(0), "{}", h.output());
    for pid in &replicas {
        assert!(!alive(*pid), "replica pid {pid} is still there");
    }
    let out = h.stdout();
    assert!(out.contains("stopping deployment \"t\""), "{out}");
    assert!(out.contains("stopped deployment \"t\""), "{out}");
    assert!(
        asked.elapsed() >= Duration::from_secs(1),
        "the stubborn replica got its grace period"
    );
}

#[tokio::test]
async fn with_a_token_the_api_and_the_status_command_need_it() {
    let base = free_ports(1);
    let spec = web_spec(base, 1, "");
    let api = format!("127.0.0.1:{}", free_port());
    // From a file: a token in argv is visible to every user in /proc/PID/cmdline.
    let token_file = spec.dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").expect("token written");
    let mut h = Herdsman::start(&[
        "run",
        s(&spec.path),
        "--api",
        &api,
        "--api-token-file",
        s(&token_file),
    ]);
    let c = client();
    let url = format!("http://{api}/v1/status");
    let healthz = eventually(LIMIT, "the API answers", || {
        let (c, api) = (c.clone(), api.clone());
        async move { c.get(format!("http://{api}/healthz")).send().await.ok() }
    })
    .await;
    assert_eq!(healthz.status(), 200, "healthz needs no token");

    for (auth, want) in [
        (None, 401),
        (Some("Bearer wrong"), 401),
        (Some("Basic s3cret"), 401),
        (Some("Bearer s3cret"), 200),
        // RFC 7235: the scheme is case-insensitive.
        (Some("bearer s3cret"), 200),
        (Some("BEARER s3cret"), 200),
    ] {
        let mut req = c.get(&url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.expect("answers");
        assert_eq!(r.status(), want, "with {auth:?}");
    }
    for path in ["/metrics", "/v1/events"] {
        let r = c
            .get(format!("http://{api}{path}"))
            .send()
            .await
            .expect("answers");
        assert_eq!(r.status(), 401, "{path} without the token");
    }

    let (code, _, err) = herdsman_once(&["status", "--api", &api]);
    assert_eq!(code.code(), Some(1));
    assert!(err.contains("wants a bearer token"), "{err}");
    let (code, table, err) = herdsman_once(&["status", "--api", &api, "--api-token", "s3cret"]);
    assert!(code.success(), "{err}");
    assert!(table.starts_with("deployment t:"), "{table}");
    let (code, table, err) =
        herdsman_once(&["status", "--api", &api, "--api-token-file", s(&token_file)]);
    assert!(code.success(), "{err}");
    assert!(table.starts_with("deployment t:"), "{table}");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", h.pid())).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("s3cret"),
        "the token is visible in the process list"
    );
    let st = c
        .get(&url)
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("status")
        .text()
        .await
        .expect("body");
    h.seen_pids = pids(&serde_json::from_str(&st).expect("json"));
}

#[tokio::test]
async fn state_is_kept_across_runs_and_a_corrupt_state_file_is_reported_and_ignored() {
    let base = free_ports(1);
    let spec = web_spec(base, 1, "");
    let state_dir = tempfile::tempdir().expect("tempdir");
    let file = state_dir.path().join("t.state.json");
    std::fs::write(&file, "{ not json").expect("corrupt state written");

    let api = format!("127.0.0.1:{}", free_port());
    let args = [
        "run",
        s(&spec.path),
        "--api",
        &api,
        "--state-dir",
        s(state_dir.path()),
    ];
    let mut h = Herdsman::start(&args);
    let st = stable(&api, &h).await;
    h.seen_pids = pids(&st);
    assert!(
        h.stderr().contains("warning: ignoring state file"),
        "{}",
        h.output()
    );
    let old = pid_of(&st, "web", 0).expect("pid");
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).expect("kill -9");
    let saved: Value = eventually(LIMIT, "the state file records the restart", || {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        async move {
            let v: Value = serde_json::from_str(&text).ok()?;
            (v["replicas"][0]["restarts"] == 1).then_some(v)
        }
    })
    .await;
    assert_eq!(saved["deployment"], "t");
    assert_eq!(
        saved["replicas"][0]["last_exit"]["reason"]["kind"],
        "signal"
    );
    let events = saved["recent_events"].as_array().expect("events");
    assert!(events.iter().any(|e| e["event"] == "replica_restarting"));
    let st = stable(&api, &h).await;
    h.seen_pids.extend(pids(&st));
    h.signal(Signal::SIGTERM);
    assert_eq!(h.wait(LIMIT).await.code(), Some(0), "{}", h.output());
    let left: Vec<_> = std::fs::read_dir(state_dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(left.is_empty(), "temp files left: {left:?}");

    let mut again = Herdsman::start(&args);
    let st = stable(&api, &again).await;
    again.seen_pids = pids(&st);
    let out = again.stdout();
    assert!(
        out.contains("state: previous run saved"),
        "{}",
        again.output()
    );
    assert!(
        out.contains("  web/0: 1 restart, last signal 9"),
        "{}",
        again.output()
    );
}
