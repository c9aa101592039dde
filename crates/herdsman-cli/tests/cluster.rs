//! Several `herdsman` processes on loopback forming a cluster: a coordinator
//! (`herdsman run --node`) and agents (`herdsman agent`), with real replicas.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use support::*;
use tokio::time::Instant;

/// Lease settings the tests run with: short, so a lost node is seen quickly.
const HEARTBEAT: &str = "200ms";
const LEASE: Duration = Duration::from_secs(2);

fn cookie(dir: &Path, name: &str, secret: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, secret).expect("cookie written");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

struct Cluster {
    coordinator: Herdsman,
    agents: Vec<Herdsman>,
    api: String,
    listen: String,
    spec: Spec,
    state: tempfile::TempDir,
}

fn coordinator_args(spec: &Spec, api: &str, listen: &str, cookie: &Path) -> Vec<String> {
    [
        "run",
        s(&spec.path),
        "--api",
        api,
        "--node",
        "coord",
        "--listen",
        listen,
        "--cookie-file",
        s(cookie),
        "--heartbeat",
        HEARTBEAT,
        "--node-lost-after",
        "2s",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

fn start_coordinator(
    spec: &Spec,
    api: &str,
    listen: &str,
    cookie: &Path,
    state: &Path,
) -> Herdsman {
    let args = coordinator_args(spec, api, listen, cookie);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Herdsman::start_with_env(&args, &[("HERDSMAN_STATE_DIR", s(state))])
}

fn start_agent(name: &str, join: &str, cookie: &Path) -> Herdsman {
    support::start_agent(
        name,
        join,
        cookie,
        &["--heartbeat", HEARTBEAT, "--labels", "zone=test"],
    )
}

/// A coordinator and two agents running `replicas` web replicas.
fn cluster(replicas: u32) -> Cluster {
    let base = free_ports(replicas as u16);
    cluster_of(web_spec(base, replicas, ""))
}

/// Replicas that hold no port: on one host, a slot moved off a frozen node must not find
/// its port still taken by the stale incarnation (on separate hosts it would not be).
fn portless_spec(replicas: u32) -> Spec {
    spec(&format!(
        r#"version: v1
deployment: t
services:
  idle:
    command:
      entrypoint: ["sleep", "3600"]
    scale: {{mode: fixed, replicas: {replicas}}}
    stop_grace_period: 1s
"#
    ))
}

/// A coordinator and two agents running `spec`.
fn cluster_of(spec: Spec) -> Cluster {
    let secret = cookie(spec.dir.path(), "cookie", "s3cret-for-tests");
    let api = format!("127.0.0.1:{}", free_port());
    let listen = format!("127.0.0.1:{}", free_port());
    let state = tempfile::tempdir().expect("tempdir");
    let coordinator = start_coordinator(&spec, &api, &listen, &secret, state.path());
    let agents = vec![
        start_agent("agent-a", &listen, &secret),
        start_agent("agent-b", &listen, &secret),
    ];
    Cluster {
        coordinator,
        agents,
        api,
        listen,
        spec,
        state,
    }
}

impl Cluster {
    fn output(&self) -> String {
        let mut out = format!("coordinator:\n{}", self.coordinator.output());
        for (i, a) in self.agents.iter().enumerate() {
            out.push_str(&format!("\nagent {i}:\n{}", a.output()));
        }
        out
    }

    async fn stable(&mut self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = status(&self.api).await {
                for pid in pids(&s) {
                    if !self.coordinator.seen_pids.contains(&pid) {
                        self.coordinator.seen_pids.push(pid);
                    }
                }
                if s["stable"] == Value::Bool(true) {
                    return s;
                }
            }
            assert!(
                Instant::now() < deadline,
                "cluster not stable within 60s\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn nodes(api: &str) -> Option<Value> {
    let r = client()
        .get(format!("http://{api}/v1/nodes"))
        .send()
        .await
        .ok()?;
    serde_json::from_str(&r.text().await.ok()?).ok()
}

fn node_state(nodes: &Value, name: &str) -> Option<String> {
    nodes["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["node"] == name)
        .and_then(|n| n["state"].as_str().map(str::to_string))
}

/// (node, pid) of every replica of `web` in a status.
fn placed(status: &Value) -> Vec<(String, u32)> {
    status["services"][0]["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["node"].as_str().unwrap_or_default().to_string(),
                r["pid"].as_u64().unwrap_or_default() as u32,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_and_two_agents_spread_a_deployment_and_become_stable() {
    let mut c = cluster(3);
    let status = c.stable().await;
    let placed = placed(&status);
    let mut on: Vec<&str> = placed.iter().map(|(n, _)| n.as_str()).collect();
    on.sort();
    assert_eq!(on, vec!["agent-a", "agent-b", "coord"], "{status}");
    for (_, pid) in &placed {
        assert!(alive(*pid), "replica {pid} not running");
    }
    let nodes = nodes(&c.api).await.expect("nodes answer");
    for n in ["coord", "agent-a", "agent-b"] {
        assert_eq!(node_state(&nodes, n).as_deref(), Some("live"), "{nodes}");
        let row = nodes["nodes"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["node"] == n))
            .expect("a row per node");
        assert_eq!(row["replicas"], 1, "{nodes}");
        assert!(row["last_heartbeat_ms"].as_u64().is_some(), "{nodes}");
    }
    // `herdsman status` shows where each replica runs.
    let (code, table, err) = herdsman_once(&["status", "--api", &c.api]);
    assert!(code.success(), "{err}");
    let header = table
        .lines()
        .find(|l| l.starts_with("REPLICA"))
        .expect("replica table");
    assert!(header.contains("NODE"), "{table}");
    for (node, pid) in &placed {
        assert!(
            table
                .lines()
                .any(|l| l.contains(node.as_str()) && l.contains(&pid.to_string())),
            "{table}"
        );
    }
    let _ = (&c.listen, &c.spec, &c.state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_a_wrong_cookie_is_refused() {
    let spec = web_spec(free_ports(1), 1, "");
    let right = cookie(spec.dir.path(), "right", "the-right-secret");
    let wrong = cookie(spec.dir.path(), "wrong", "not-the-secret");
    let api = format!("127.0.0.1:{}", free_port());
    let listen = format!("127.0.0.1:{}", free_port());
    let state = tempfile::tempdir().expect("tempdir");
    let coordinator = start_coordinator(&spec, &api, &listen, &right, state.path());
    let intruder = start_agent("intruder", &listen, &wrong);
    eventually(
        Duration::from_secs(30),
        "the agent says it was refused",
        || {
            let err = intruder.stderr();
            async move { err.contains("refused this node").then_some(()) }
        },
    )
    .await;
    let nodes = eventually(Duration::from_secs(30), "the coordinator answers", || {
        nodes(&api)
    })
    .await;
    assert_eq!(node_state(&nodes, "intruder"), None, "{nodes}");
    assert!(
        coordinator.stdout().contains("authentication failed"),
        "{}",
        coordinator.output()
    );
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_agent_is_lost_its_replicas_move_and_on_return_it_is_fenced() {
    let mut c = cluster_of(portless_spec(3));
    let before = c.stable().await;
    let frozen = &c.agents[0];
    let stale: Vec<u32> = placed(&before)
        .into_iter()
        .filter(|(n, _)| n == "agent-a")
        .map(|(_, p)| p)
        .collect();
    assert!(!stale.is_empty(), "agent-a runs nothing: {before}");

    frozen.signal(Signal::SIGSTOP);
    let frozen_at = Instant::now();
    eventually(
        LEASE + Duration::from_secs(10),
        "agent-a reported lost",
        || {
            let api = c.api.clone();
            async move {
                let n = nodes(&api).await?;
                (node_state(&n, "agent-a").as_deref() == Some("lost")).then_some(())
            }
        },
    )
    .await;
    let lost_after = frozen_at.elapsed();
    let moved = eventually(
        LEASE + Duration::from_secs(20),
        "agent-a's replicas running elsewhere",
        || {
            let api = c.api.clone();
            async move {
                let s = status(&api).await?;
                let p = placed(&s);
                let ok = p
                    .iter()
                    .all(|(n, pid)| n != "agent-a" && *pid != 0 && alive(*pid))
                    && s["services"][0]["healthy"] == 3;
                ok.then_some(s)
            }
        },
    )
    .await;
    let moved_after = frozen_at.elapsed();
    for (_, pid) in placed(&moved) {
        c.coordinator.seen_pids.push(pid);
    }
    // Still frozen: its old replicas run on, unsupervised, until it returns.
    assert!(stale.iter().all(|p| alive(*p)));

    c.agents[0].signal(Signal::SIGCONT);
    let healed = eventually(
        Duration::from_secs(30),
        "agent-a fenced, one incarnation per slot",
        || {
            let api = c.api.clone();
            let stale = stale.clone();
            async move {
                let s = status(&api).await?;
                let n = nodes(&api).await?;
                let ok = s["stable"] == true
                    && node_state(&n, "agent-a").as_deref() == Some("live")
                    && stale.iter().all(|p| !alive(*p))
                    && s["services"][0]["elsewhere"]
                        .as_array()
                        .is_some_and(|e| e.is_empty());
                ok.then_some(s)
            }
        },
    )
    .await;
    let running: Vec<(String, u32)> = placed(&healed);
    assert_eq!(running.len(), 3);
    assert!(running.iter().all(|(_, p)| alive(*p)));
    assert!(c.agents[0].stdout().contains("fenced"), "{}", c.output());
    eprintln!(
        "frozen → lost {lost_after:?}; → running elsewhere {moved_after:?} (lease {LEASE:?})"
    );
    assert!(
        lost_after <= LEASE + Duration::from_secs(1),
        "lost after {lost_after:?}"
    );
    assert!(
        moved_after <= LEASE + Duration::from_secs(2),
        "running elsewhere after {moved_after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_adopts_every_replica_without_restarting_any() {
    let mut c = cluster(3);
    let before = c.stable().await;
    let mut was = placed(&before);
    was.sort();
    assert_eq!(was.len(), 3);

    c.coordinator.signal(Signal::SIGKILL);
    c.coordinator.wait(Duration::from_secs(10)).await;
    for agent in &c.agents {
        eventually(
            Duration::from_secs(20),
            "an agent notices its coordinator is gone",
            || {
                let out = agent.stdout();
                async move { out.contains("coordinator is gone").then_some(()) }
            },
        )
        .await;
    }
    // Every replica, the coordinator's own included, runs on without it.
    assert!(was.iter().all(|(_, pid)| alive(*pid)), "{was:?}");

    let secret = c.spec.dir.path().join("cookie");
    let seen = std::mem::take(&mut c.coordinator.seen_pids);
    c.coordinator = start_coordinator(&c.spec, &c.api, &c.listen, &secret, c.state.path());
    c.coordinator.seen_pids = seen;
    let after = c.stable().await;
    let mut now = placed(&after);
    now.sort();
    assert_eq!(now, was, "{after}\n{}", c.output());
    for r in after["services"][0]["replicas"]
        .as_array()
        .expect("replicas")
    {
        assert_eq!(r["restarts"], 0, "{after}");
    }
}

#[test]
fn a_coordinator_refuses_flags_it_would_ignore_and_a_cookie_others_can_read() {
    let spec = portless_spec(1);
    let secret = cookie(spec.dir.path(), "cookie", "s3cret");
    let listen = format!("127.0.0.1:{}", free_port());
    let base = ["run", s(&spec.path), "--node", "c", "--listen", &listen];
    let with = |extra: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        herdsman_once(&args)
    };
    let (code, _, err) = with(&["--cookie-file", s(&secret), "--api-token", "t"]);
    assert_eq!(code.code(), Some(2), "{err}");
    assert!(
        err.contains("--api-token is not supported with --node"),
        "{err}"
    );
    let (code, _, err) = with(&["--cookie-file", s(&secret), "--api", "0.0.0.0:7777"]);
    assert_eq!(code.code(), Some(2), "{err}");
    assert!(err.contains("loopback only"), "{err}");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, _, err) = with(&["--cookie-file", s(&secret)]);
    assert_eq!(code.code(), Some(1), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
}
