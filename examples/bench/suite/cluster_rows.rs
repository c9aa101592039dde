//! Cluster rows, measured on real `herdsman` processes (a coordinator and agents) over
//! real ractor_cluster sessions on loopback, from outside them: an agent frozen
//! (SIGSTOP) → reported lost → its replicas running elsewhere; and the last replica
//! turning healthy on an agent → the coordinator reporting the deployment stable, from
//! the nodes' own timestamped log lines (target `herdsman_cluster::latency`), with where
//! the time goes along the path. The binary is the one [`cli_rows::binary`] finds.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(60);
/// The lease and heartbeat the freeze rounds run with.
pub(crate) const LEASE: Duration = Duration::from_secs(2);
const HEARTBEAT: &str = "500ms";

/// A node process, stopped (SIGCONT, then SIGTERM: it stops its replicas) when dropped.
struct Node(Child);

impl Node {
    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.signal("-CONT");
        self.signal("-TERM");
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A coordinator `c` on `listen` with its API on `api`, or an agent `name` joining it.
fn start(bin: &Path, dir: &Path, name: &str, args: &[&str]) -> Node {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
    Command::new(bin)
        .args(args)
        .env("RUST_LOG", "warn,herdsman_cluster::latency=info")
        .env("NO_COLOR", "1")
        .env("HERDSMAN_STATE_DIR", dir.join(format!("{name}-state")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Node)
        .expect("herdsman starts")
}

struct Cluster {
    // Agents first: dropped before the coordinator.
    agents: Vec<Node>,
    _coordinator: Node,
    api: String,
    dir: tempfile::TempDir,
}

fn cluster(bin: &Path, spec_yaml: &str, agents: &[&str], heartbeat: &str) -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let cookie = dir.path().join("cookie");
    std::fs::write(&cookie, "bench-secret").expect("cookie");
    std::fs::set_permissions(&cookie, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let spec = dir.path().join("spec.yaml");
    std::fs::write(&spec, spec_yaml).expect("spec");
    let listen = format!("127.0.0.1:{}", free_port());
    let api = format!("127.0.0.1:{}", free_port());
    let lease = format!("{}ms", LEASE.as_millis());
    let s = |p: &PathBuf| p.to_str().expect("utf-8").to_string();
    let (spec_s, cookie_s) = (s(&spec), s(&cookie));
    let coordinator = start(
        bin,
        dir.path(),
        "c",
        &[
            "run",
            &spec_s,
            "--node",
            "c",
            "--listen",
            &listen,
            "--cookie-file",
            &cookie_s,
            "--api",
            &api,
            "--node-lost-after",
            &lease,
            "--heartbeat",
            heartbeat,
        ],
    );
    let agents = agents
        .iter()
        .map(|name| {
            let own = format!("127.0.0.1:{}", free_port());
            start(
                bin,
                dir.path(),
                name,
                &[
                    "agent",
                    "--node",
                    name,
                    "--listen",
                    &own,
                    "--join",
                    &listen,
                    "--cookie-file",
                    &cookie_s,
                    "--heartbeat",
                    heartbeat,
                ],
            )
        })
        .collect();
    Cluster {
        agents,
        _coordinator: coordinator,
        api,
        dir,
    }
}

async fn get(client: &reqwest::Client, api: &str, path: &str) -> Option<Value> {
    let r = client
        .get(format!("http://{api}{path}"))
        .send()
        .await
        .ok()?;
    r.json::<Value>().await.ok()
}

/// Poll `probe` every millisecond until it holds; panics after [`PATIENCE`].
async fn until<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !probe().await {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn placed(status: &Value) -> Vec<(String, u64)> {
    status["services"][0]["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["node"].as_str().unwrap_or_default().to_string(),
                r["pid"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

fn node_state(nodes: &Value, name: &str) -> Option<String> {
    nodes["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["node"] == name)
        .and_then(|n| n["state"].as_str().map(str::to_string))
}

/// Per freeze round: SIGSTOP → `lost` in `/v1/nodes`, and SIGSTOP → every replica
/// running and healthy on another node in `/v1/status` (both polled every 1 ms).
pub(crate) struct Freeze {
    pub(crate) lost: Vec<Duration>,
    pub(crate) elsewhere: Vec<Duration>,
}

/// `rounds` freezes of agent `a`, each in a fresh cluster of the coordinator and agents
/// `a`, `b` running 3 portless replicas (one per node).
pub(crate) async fn freeze(bin: &Path, rounds: usize) -> Freeze {
    let spec = "version: v1\ndeployment: freeze\nservices:\n  idle:\n    command: {entrypoint: [\"sleep\", \"3600\"]}\n    scale: {mode: fixed, replicas: 3}\n    stop_grace_period: 1s\n";
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a client");
    let mut out = Freeze {
        lost: Vec::new(),
        elsewhere: Vec::new(),
    };
    for _ in 0..rounds {
        let c = cluster(bin, spec, &["a", "b"], HEARTBEAT);
        let api = c.api.as_str();
        until(
            "the cluster is stable with a replica on agent a",
            || async {
                get(&client, api, "/v1/status").await.is_some_and(|s| {
                    s["stable"] == true && placed(&s).iter().any(|(n, _)| n == "a")
                })
            },
        )
        .await;
        c.agents[0].signal("-STOP");
        let frozen = Instant::now();
        until("agent a reported lost", || async {
            get(&client, api, "/v1/nodes")
                .await
                .is_some_and(|n| node_state(&n, "a").as_deref() == Some("lost"))
        })
        .await;
        out.lost.push(frozen.elapsed());
        until("agent a's replicas running elsewhere", || async {
            get(&client, api, "/v1/status").await.is_some_and(|s| {
                let p = placed(&s);
                p.len() == 3
                    && p.iter().all(|(n, pid)| n != "a" && *pid != 0)
                    && s["services"][0]["healthy"] == 3
            })
        })
        .await;
        out.elsewhere.push(frozen.elapsed());
        // Dropped: thawed, then every node stops its replicas.
    }
    out
}

/// The wall-clock times of the `herdsman_cluster::latency` lines of `log` saying `what`.
fn stamps(log: &Path, what: &str) -> Vec<SystemTime> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("herdsman_cluster::latency") && l.contains(what))
        .filter_map(|l| humantime::parse_rfc3339(l.split_whitespace().next()?).ok())
        .collect()
}

/// The first of `stamps` at or after `t`.
fn first_after(stamps: &[SystemTime], t: SystemTime) -> Option<SystemTime> {
    stamps.iter().copied().find(|s| *s >= t)
}

/// Per round: the agent's replica turns healthy → the coordinator says the cluster is
/// stable; and the legs of that path.
pub(crate) struct HealthyToStable {
    pub(crate) total: Vec<Duration>,
    /// Agent sees healthy → its first report with its own deployment stable sent.
    pub(crate) to_report: Vec<Duration>,
    /// Report sent → coordinator's actor has it.
    pub(crate) wire: Vec<Duration>,
    /// Coordinator's actor has it → view updated.
    pub(crate) view: Vec<Duration>,
    /// View updated → stable announced.
    pub(crate) announce: Vec<Duration>,
}

/// `rounds` flips of the one replica's health (a `test -f FILE` check every 10 ms) on
/// an agent, each measured from the agent's "replica healthy" line to the coordinator's
/// "cluster stable" line (same host, same clock).
pub(crate) async fn healthy_to_stable(bin: &Path, rounds: usize) -> HealthyToStable {
    let flagdir = tempfile::tempdir().expect("tempdir");
    let flag = flagdir.path().join("healthy");
    std::fs::write(&flag, "").expect("flag");
    let spec = format!(
        "version: v1\ndeployment: lat\nservices:\n  hc:\n    command: {{entrypoint: [\"sleep\", \"3600\"]}}\n    placement: {{nodes: [a]}}\n    stop_grace_period: 1s\n    health:\n      start_interval: 10ms\n      interval: 10ms\n      timeout: 1s\n      retries: 1\n      check: {{type: command, command: \"test -f {}\"}}\n",
        flag.display()
    );
    let c = cluster(bin, &spec, &["a"], "200ms");
    let (c_log, a_log) = (c.dir.path().join("c.log"), c.dir.path().join("a.log"));
    let count = |log: &Path, what: &str, n: usize| {
        let (log, what) = (log.to_path_buf(), what.to_string());
        async move { stamps(&log, &what).len() >= n }
    };
    until("the first stable", || count(&c_log, "cluster stable", 1)).await;
    let mut out = HealthyToStable {
        total: Vec::new(),
        to_report: Vec::new(),
        wire: Vec::new(),
        view: Vec::new(),
        announce: Vec::new(),
    };
    for round in 1..=rounds {
        std::fs::remove_file(&flag).expect("flag removed");
        until("no longer stable", || {
            count(&c_log, "no longer stable", round)
        })
        .await;
        std::fs::write(&flag, "").expect("flag");
        until("healthy again", || {
            count(&a_log, "replica healthy", round + 1)
        })
        .await;
        until("stable again", || {
            count(&c_log, "cluster stable", round + 1)
        })
        .await;
        let healthy = stamps(&a_log, "replica healthy")[round];
        let stable = stamps(&c_log, "cluster stable")[round];
        let since = |a: SystemTime, b: Option<SystemTime>| {
            b.and_then(|b| b.duration_since(a).ok()).unwrap_or_default()
        };
        // The first report that can make the cluster stable: its node's own deployment
        // stable too (that may follow the health event by a moment, and a report).
        let sent = first_after(&stamps(&a_log, "report sent stable=true"), healthy);
        let received = sent.and_then(|s| first_after(&stamps(&c_log, "report received"), s));
        let updated = received.and_then(|r| first_after(&stamps(&c_log, "view updated"), r));
        out.total.push(since(healthy, Some(stable)));
        out.to_report.push(since(healthy, sent));
        if let (Some(s), Some(r), Some(u)) = (sent, received, updated) {
            out.wire.push(since(s, Some(r)));
            out.view.push(since(r, Some(u)));
            out.announce.push(since(u, Some(stable)));
        }
    }
    out
}
