//! `herdsman run` with container services against a real dockerd: a mixed deployment
//! converges and Ctrl-C leaves no container behind, a crashing container is replaced by a
//! new one, and an unreachable daemon fails the run at once, naming it. The Docker tests
//! skip with a printed reason when no daemon answers, unless `HERDSMAN_DOCKER=required`.

mod support;

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::*;

const LIMIT: Duration = Duration::from_secs(60);
const IMAGE: &str = "herdsman-test/busybox:latest";

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// True when a daemon answers; panics when none does and `HERDSMAN_DOCKER=required`.
fn docker_available() -> bool {
    let up = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if !up {
        if std::env::var("HERDSMAN_DOCKER").is_ok_and(|v| v == "required") {
            panic!("HERDSMAN_DOCKER=required but `docker info` fails");
        }
        eprintln!("skipped: no Docker daemon answers `docker info` (set HERDSMAN_DOCKER=required to make this a failure)");
    }
    up
}

/// `name state id` of each of the deployment's containers, running or stopped: a
/// container re-created under the same name has a new id.
fn containers(deployment: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--format",
            "{{.Names}} {{.State}} {{.ID}}",
            "--filter",
        ])
        .arg(format!("label=io.herdsman.deployment={deployment}"))
        .output()
        .expect("docker ps");
    let mut list: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    list.sort();
    list
}

/// Removes the deployment's containers however the test ends.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for line in containers(&self.0) {
            if let Some(name) = line.split_whitespace().next() {
                let _ = Command::new("docker").args(["rm", "-f", name]).output();
            }
        }
    }
}

fn deployment(test: &str) -> String {
    format!("c{}-{test}", std::process::id())
}

#[tokio::test]
async fn a_mixed_deployment_converges_and_ctrl_c_leaves_no_container_behind() {
    if !docker_available() {
        return;
    }
    let dep = deployment("mixed");
    let _cleanup = Cleanup(dep.clone());
    let base = free_ports(3);
    let spec = spec(&format!(
        r#"version: v1
deployment: {dep}
services:
  web:
    image: {{name: "{IMAGE}", pull_policy: never}}
    command:
      entrypoint: [sh, -c]
      args: ["echo ok > /www/healthz && exec httpd -f -p ${{PORT}} -h /www"]
    scale: {{mode: fixed, replicas: 2}}
    endpoints:
      - {{name: http, protocol: http, port: {base}}}
    health:
      start_interval: 100ms
      interval: 1s
      timeout: 1s
      check: {{type: http, url: "http://127.0.0.1:${{PORT}}/healthz", expect_status: 200}}
    stop_grace_period: 1s
  local:
    command:
      entrypoint: ["herdsman", "workload"]
      args: ["--port", "${{PORT}}"]
    endpoints:
      - {{name: http, protocol: http, port: {local}}}
    health:
      start_interval: 100ms
      check: {{type: http, url: "http://127.0.0.1:${{PORT}}/healthz", expect_status: 200}}
"#,
        local = base + 2
    ));
    let mut h = Herdsman::start(&["run", s(&spec.path), "--api", "off"]);
    eventually(LIMIT, "stable", || async {
        h.stdout()
            .contains("is stable (2 services, 3 replicas)")
            .then_some(())
    })
    .await;
    let running = containers(&dep);
    assert_eq!(running.len(), 2, "{running:?}\n{}", h.output());
    assert!(
        running.iter().all(|c| c.contains(" running ")),
        "{running:?}"
    );

    h.signal(Signal::SIGINT);
    let code = h.wait(LIMIT).await;
    assert_eq!(code.code(), Some(0), "{}", h.output());
    assert_eq!(containers(&dep), Vec::<String>::new(), "{}", h.output());
}

#[tokio::test]
async fn a_crashing_container_is_replaced_by_a_new_container() {
    if !docker_available() {
        return;
    }
    let dep = deployment("crash");
    let _cleanup = Cleanup(dep.clone());
    let spec = spec(&format!(
        r#"version: v1
deployment: {dep}
services:
  app:
    image: {{name: "{IMAGE}", pull_policy: never}}
    command: {{args: [sh, -c, "sleep 0.3; exit 1"]}}
    restart:
      max_restarts: 100
      backoff: {{initial: 100ms, max: 200ms, jitter: 0}}
"#
    ));
    let mut h = Herdsman::start(&["run", s(&spec.path), "--api", "off"]);
    let third = format!("herdsman-{dep}-app-0-g2 ");
    eventually(LIMIT, "a third incarnation", || async {
        containers(&dep)
            .iter()
            .any(|c| c.starts_with(&third))
            .then_some(())
    })
    .await;
    h.signal(Signal::SIGINT);
    let code = h.wait(LIMIT).await;
    assert_eq!(code.code(), Some(0), "{}", h.output());
    assert_eq!(containers(&dep), Vec::<String>::new(), "{}", h.output());
}

#[tokio::test]
async fn an_unreachable_daemon_fails_the_run_at_once_naming_docker_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("no-docker.sock");
    let spec = spec(&format!(
        "version: v1\ndeployment: nodaemon\nservices:\n  web:\n    image: {{name: \"{IMAGE}\"}}\n"
    ));
    let out = Command::new(HERDSMAN)
        .args(["run", s(&spec.path), "--api", "off"])
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .output()
        .expect("herdsman runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("DOCKER_HOST=unix://{}", socket.display()))
            && stderr.contains("cannot run service web as containers"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_sigkilled_herdsman_leaves_its_containers_running_and_the_next_run_adopts_them() {
    if !docker_available() {
        return;
    }
    let dep = deployment("adopt");
    let _cleanup = Cleanup(dep.clone());
    let base = free_ports(2);
    let spec = spec(&format!(
        r#"version: v1
deployment: {dep}
services:
  web:
    image: {{name: "{IMAGE}", pull_policy: never}}
    command:
      entrypoint: [sh, -c]
      args: ["echo ok > /www/healthz && exec httpd -f -p ${{PORT}} -h /www"]
    scale: {{mode: fixed, replicas: 2}}
    endpoints:
      - {{name: http, protocol: http, port: {base}}}
    health:
      start_interval: 100ms
      check: {{type: http, url: "http://127.0.0.1:${{PORT}}/healthz", expect_status: 200}}
    stop_grace_period: 1s
"#
    ));
    let mut first = Herdsman::start(&["run", s(&spec.path), "--api", "off"]);
    eventually(LIMIT, "first run stable", || async {
        first.stdout().contains("is stable").then_some(())
    })
    .await;
    let before = containers(&dep);
    assert_eq!(before.len(), 2, "{before:?}");
    first.signal(Signal::SIGKILL);
    first.wait(LIMIT).await;
    assert_eq!(
        containers(&dep),
        before,
        "SIGKILL of herdsman must not touch its containers"
    );

    let mut second = Herdsman::start(&["run", s(&spec.path), "--api", "off"]);
    eventually(LIMIT, "second run stable", || async {
        second.stdout().contains("is stable").then_some(())
    })
    .await;
    assert_eq!(
        containers(&dep),
        before,
        "the same containers are adopted, none restarted or added\n{}",
        second.output()
    );
    second.signal(Signal::SIGINT);
    let code = second.wait(LIMIT).await;
    assert_eq!(code.code(), Some(0), "{}", second.output());
    assert_eq!(
        containers(&dep),
        Vec::<String>::new(),
        "{}",
        second.output()
    );
}
