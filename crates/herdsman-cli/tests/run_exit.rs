//! How `herdsman run` and `herdsman status` end: `--until-stable` both ways, an invalid
//! spec, an API address it refuses, a status query with nothing listening.

mod support;

use std::time::Duration;

use support::*;

const LIMIT: Duration = Duration::from_secs(30);

/// The pids the workloads logged (`... pid N starting`) in the state dir's logs.
fn logged_pids(state_dir: &std::path::Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(state_dir.join("t").join("logs"))
        .expect("logs dir")
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            if let Some(rest) = line.split(" pid ").nth(1) {
                if let Some(pid) = rest.split_whitespace().next().and_then(|p| p.parse().ok()) {
                    pids.push(pid);
                }
            }
        }
    }
    pids
}

#[tokio::test]
async fn until_stable_exits_zero_once_stable_and_leaves_nothing_running() {
    let base = free_ports(2);
    let spec = web_spec(base, 2, "");
    let state_dir = tempfile::tempdir().expect("tempdir");
    let mut h = Herdsman::start(&[
        "run",
        s(&spec.path),
        "--until-stable",
        "--api",
        "off",
        "--state-dir",
        s(state_dir.path()),
    ]);
    let code = h.wait(LIMIT).await;
    let pids = logged_pids(state_dir.path());
    h.seen_pids = pids.clone();
    assert_eq!(code.code(), Some(0), "{}", h.output());
    let out = h.stdout();
    assert!(
        out.contains("deployment \"t\" is stable (1 service, 2 replicas) after"),
        "{out}"
    );
    assert!(out.contains("stopped deployment \"t\""), "{out}");
    assert_eq!(pids.len(), 2, "both replicas ran");
    for pid in pids {
        assert!(!alive(pid), "replica pid {pid} outlived herdsman");
    }
}

#[tokio::test]
async fn until_stable_exits_one_at_the_timeout_with_the_reason_and_log_tail() {
    let base = free_ports(1);
    let spec = web_spec(base, 1, r#", "--unhealthy-for", "1h""#);
    let state_dir = tempfile::tempdir().expect("tempdir");
    let mut h = Herdsman::start(&[
        "run",
        s(&spec.path),
        "--until-stable",
        "--timeout",
        "3s",
        "--api",
        "off",
        "--state-dir",
        s(state_dir.path()),
    ]);
    let code = h.wait(LIMIT).await;
    h.seen_pids = logged_pids(state_dir.path());
    assert_eq!(code.code(), Some(1), "{}", h.output());
    let out = h.stdout();
    assert!(
        out.contains("deployment \"t\" is NOT stable after 3.0s: 1 service not ready"),
        "{out}"
    );
    assert!(out.contains("  service web: 0/1 ready"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("    web/0: ") && l.contains("status 503")),
        "the replica's reason: {out}"
    );
    assert!(
        out.contains("      | healthz -> 503 (warming up"),
        "the log tail: {out}"
    );
    for pid in &h.seen_pids {
        assert!(!alive(*pid), "replica pid {pid} outlived herdsman");
    }
}

#[tokio::test]
async fn an_invalid_spec_exits_two_with_the_located_error_and_starts_nothing() {
    let spec = spec(
        "version: v1\ndeployment: t\nservices:\n  web:\n    rtype: sevice\n    command: {entrypoint: [herdsman, workload]}\n",
    );
    let (code, out, err) = herdsman_once(&["run", s(&spec.path), "--api", "off"]);
    assert_eq!(code.code(), Some(2), "{out}{err}");
    let want = format!("{}:5:12: services.web.rtype: ", spec.path.display());
    assert!(err.lines().any(|l| l.starts_with(&want)), "{err}");
    assert!(!out.contains("supervising"), "nothing started: {out}");
}

#[tokio::test]
async fn a_non_loopback_api_address_is_refused_without_a_token_or_api_insecure() {
    let spec = web_spec(free_ports(1), 1, "");
    let (code, out, err) = herdsman_once(&["run", s(&spec.path), "--api", "0.0.0.0:7"]);
    assert_eq!(code.code(), Some(2), "{out}{err}");
    assert!(
        err.contains("refusing to serve the API on 0.0.0.0:7"),
        "{err}"
    );
    assert!(err.contains("--api-insecure"), "{err}");
    assert!(!out.contains("supervising"), "nothing started: {out}");
}

#[tokio::test]
async fn status_says_clearly_when_nothing_is_listening() {
    let api = format!("127.0.0.1:{}", free_port());
    let (code, out, err) = herdsman_once(&["status", "--api", &api]);
    assert_eq!(code.code(), Some(1), "{out}{err}");
    assert!(
        err.starts_with(&format!("error: nothing is listening at http://{api}")),
        "{err}"
    );
}
