//! Driving the built `herdsman` binary: a guard that never leaves a herdsman (or its
//! replicas) behind, free ports, specs in a temp dir, bounded polling, the HTTP API.

#![allow(dead_code)]

use std::fs::File;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::time::Instant;

/// The binary under test.
pub const HERDSMAN: &str = env!("CARGO_BIN_EXE_herdsman");

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port")
}

/// The first of `n` consecutive free ports, below the kernel's ephemeral range so that
/// outgoing connections do not take them meanwhile.
pub fn free_ports(n: u16) -> u16 {
    for _ in 0..200 {
        let base = 20_000 + rand::random_range(0..12_000u16);
        let held: Vec<_> = (0..n)
            .map_while(|i| TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == usize::from(n) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

/// A temp dir holding a spec.
pub struct Spec {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

/// Write `yaml` to `spec.yaml` in a new temp dir.
pub fn spec(yaml: &str) -> Spec {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("spec.yaml");
    std::fs::write(&path, yaml).expect("spec written");
    Spec { dir, path }
}

/// A spec with one service `web` of `replicas` healthy workloads from port `base`.
pub fn web_spec(base: u16, replicas: u32, extra_args: &str) -> Spec {
    spec(&format!(
        r#"version: v1
deployment: t
services:
  web:
    command:
      entrypoint: ["herdsman", "workload"]
      args: ["--port", "${{PORT}}"{extra_args}]
    scale: {{mode: fixed, replicas: {replicas}}}
    endpoints:
      - {{name: http, protocol: http, port: {base}}}
    health:
      start_interval: 100ms
      interval: 1s
      timeout: 1s
      check: {{type: http, url: "http://127.0.0.1:${{PORT}}/healthz", expect_status: 200}}
    stop_grace_period: 2s
"#
    ))
}

/// A running `herdsman`, its output going to files. Dropping it stops it (SIGTERM, then
/// SIGKILL) and kills every replica process group it was seen running.
pub struct Herdsman {
    child: Option<Child>,
    pub out: PathBuf,
    pub err: PathBuf,
    _logs: tempfile::TempDir,
    /// Replica pids seen, killed (with their groups) on drop as a last resort.
    pub seen_pids: Vec<u32>,
}

impl Herdsman {
    /// Start `herdsman ARGS...`, with a state root of its own (`$HERDSMAN_STATE_DIR`)
    /// unless ARGS name one.
    pub fn start(args: &[&str]) -> Herdsman {
        Herdsman::start_program(HERDSMAN, args)
    }

    /// Start `PROGRAM ARGS...`, a program that execs herdsman in its own process (such as
    /// `sh -c '...; exec "$0" "$@"' herdsman ...`).
    pub fn start_program(program: &str, args: &[&str]) -> Herdsman {
        let logs = tempfile::tempdir().expect("tempdir");
        let out = logs.path().join("stdout");
        let err = logs.path().join("stderr");
        let child = Command::new(program)
            .args(args)
            .env("HERDSMAN_STATE_DIR", logs.path().join("state"))
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("stdout file"))
            .stderr(File::create(&err).expect("stderr file"))
            .env_remove("RUST_LOG")
            .env_remove("HERDSMAN_API_TOKEN")
            .spawn()
            .expect("herdsman starts");
        Herdsman {
            child: Some(child),
            out,
            err,
            _logs: logs,
            seen_pids: Vec::new(),
        }
    }

    /// Start `herdsman ARGS...` with these environment variables set.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Herdsman {
        let logs = tempfile::tempdir().expect("tempdir");
        let out = logs.path().join("stdout");
        let err = logs.path().join("stderr");
        let child = Command::new(HERDSMAN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("stdout file"))
            .stderr(File::create(&err).expect("stderr file"))
            .env_remove("RUST_LOG")
            .env_remove("HERDSMAN_API_TOKEN")
            .envs(env.iter().copied())
            .spawn()
            .expect("herdsman starts");
        Herdsman {
            child: Some(child),
            out,
            err,
            _logs: logs,
            seen_pids: Vec::new(),
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Send it a signal.
    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid() as i32), sig).expect("signal delivered");
    }

    /// Wait for it to exit, at most `limit`.
    pub async fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("waitable") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "herdsman did not exit within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// stdout and stderr, for assertion messages.
    pub fn output(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout(), self.stderr())
    }
}

impl Drop for Herdsman {
    // Drop cannot await: a blocking, bounded wait is what a guard can do.
    #[allow(clippy::disallowed_methods)]
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_none() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            for _ in 0..500 {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in &self.seen_pids {
            // Each replica leads its own process group.
            let _ = killpg(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
    }
}

/// Poll `probe` every 20 ms until it gives a value; panic with `what` after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An HTTP client that never goes through a proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

/// `GET http://ADDR/v1/status` as JSON, `None` while nothing answers.
pub async fn status(api: &str) -> Option<Value> {
    let r = client()
        .get(format!("http://{api}/v1/status"))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    serde_json::from_str(&r.text().await.ok()?).ok()
}

/// Wait until the deployment served at `api` is stable; its status then.
pub async fn stable(api: &str, h: &Herdsman) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = status(api).await {
            if s["stable"] == Value::Bool(true) {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "deployment not stable within 20s\n{}",
            h.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pid of replica `i` of service `svc` in a status.
pub fn pid_of(status: &Value, svc: &str, i: usize) -> Option<u32> {
    let service = status["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == svc)?;
    service["replicas"][i]["pid"].as_u64().map(|p| p as u32)
}

/// Every replica pid in a status.
pub fn pids(status: &Value) -> Vec<u32> {
    status["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["replicas"].as_array().into_iter().flatten())
        .filter_map(|r| r["pid"].as_u64().map(|p| p as u32))
        .collect()
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// The pids listed one per line in `path` (none when it does not exist).
pub fn pids_in(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Whether this host has a writable cgroup v2 hierarchy (found independently of
/// herdsman), which is what contains a process that left its process group.
pub fn host_has_writable_cgroup2() -> bool {
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

/// Run `herdsman ARGS...` to completion: exit status, stdout, stderr.
pub fn herdsman_once(args: &[&str]) -> (ExitStatus, String, String) {
    let state = tempfile::tempdir().expect("tempdir");
    let out = Command::new(HERDSMAN)
        .args(args)
        .env("HERDSMAN_STATE_DIR", state.path())
        .env_remove("HERDSMAN_API_TOKEN")
        .output()
        .expect("herdsman runs");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The path as a `&str`.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `herdsman agent` as node `name` on a free loopback port, joining the coordinator at
/// `join` with the cookie in `cookie`, plus `extra` flags (heartbeat, labels, TLS).
pub fn start_agent(name: &str, join: &str, cookie: &Path, extra: &[&str]) -> Herdsman {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "agent",
        "--node",
        name,
        "--listen",
        &listen,
        "--join",
        join,
        "--cookie-file",
        s(cookie),
    ];
    args.extend_from_slice(extra);
    Herdsman::start(&args)
}
