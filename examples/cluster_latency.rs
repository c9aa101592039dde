//! Cluster row: last replica healthy on an agent → the coordinator reports the
//! deployment stable, over a real `ractor_cluster` session on loopback.
//!
//! ```text
//! cargo build --release -p herdsman-cli
//! cargo run --release --example cluster_latency -- 50
//! ```
//!
//! A coordinator (`herdsman run --node c`) and an agent (`herdsman agent --node a`) run
//! as separate processes; the one replica is placed on the agent, its health check is
//! `test -f FILE` every 10 ms. Each round removes FILE (the replica turns unhealthy, the
//! cluster unstable), then creates it again. The agent logs the moment it sees its
//! replica turn healthy, the coordinator the moment the cluster turns stable (target
//! `herdsman_cluster::latency`, wall-clock timestamps of the same host); the row is the
//! difference, p50 and p99 over the rounds. The binary is `$HERDSMAN_BIN`, else the one
//! next to this example.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("HERDSMAN_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("own path");
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("herdsman"))
        .expect("target dir")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The wall-clock times of the `herdsman_cluster::latency` lines saying `what`.
fn stamps(log: &Path, what: &str) -> Vec<SystemTime> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("herdsman_cluster::latency") && l.contains(what))
        .filter_map(|l| {
            // Strip ANSI colours, then the first word is the RFC 3339 timestamp.
            let mut parts = l.split('\u{1b}');
            let mut plain: String = parts.next().unwrap_or_default().to_string();
            for part in parts {
                plain.push_str(part.split_once('m').map_or(part, |(_, rest)| rest));
            }
            humantime::parse_rfc3339(plain.split_whitespace().next()?).ok()
        })
        .collect()
}

/// A child herdsman, stopped (SIGTERM: it stops its replicas) when dropped, even on a
/// panic.
struct Herdsman(Child);

impl Drop for Herdsman {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn spawn(bin: &Path, args: &[&str], dir: &Path, name: &str) -> Herdsman {
    Command::new(bin)
        .args(args)
        .env("RUST_LOG", "herdsman_cluster::latency=info")
        .env("NO_COLOR", "1")
        .env("HERDSMAN_STATE_DIR", dir.join(format!("{name}-state")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file"))
        .spawn()
        .map(Herdsman)
        .expect("herdsman starts")
}

async fn wait_for(log: &Path, what: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while stamps(log, what).len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {what} #{n} in {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(30);
    let bin = binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let flag = dir.path().join("healthy");
    let cookie = dir.path().join("cookie");
    std::fs::write(&cookie, "latency-bench").expect("cookie");
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&cookie).expect("meta").permissions(),
        0o600,
    );
    std::fs::set_permissions(&cookie, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let spec = dir.path().join("spec.yaml");
    std::fs::write(
        &spec,
        format!(
            "version: v1\ndeployment: lat\nservices:\n  hc:\n    command: {{entrypoint: [\"sleep\", \"3600\"]}}\n    placement: {{nodes: [a]}}\n    stop_grace_period: 1s\n    health:\n      start_interval: 10ms\n      interval: 10ms\n      timeout: 1s\n      retries: 1\n      check: {{type: command, command: \"test -f {}\"}}\n",
            flag.display()
        ),
    )
    .expect("spec");
    std::fs::write(&flag, "").expect("flag");
    let listen = format!("127.0.0.1:{}", free_port());
    let api = format!("127.0.0.1:{}", free_port());
    let c_log = dir.path().join("c.log");
    let a_log = dir.path().join("a.log");
    let spec_s = spec.to_str().expect("utf-8");
    let cookie_s = cookie.to_str().expect("utf-8");
    let coordinator = spawn(
        &bin,
        &[
            "run",
            spec_s,
            "--node",
            "c",
            "--listen",
            &listen,
            "--cookie-file",
            cookie_s,
            "--api",
            &api,
            "--node-lost-after",
            "1s",
            "--heartbeat",
            "200ms",
        ],
        dir.path(),
        "c",
    );
    let a_listen = format!("127.0.0.1:{}", free_port());
    let agent = spawn(
        &bin,
        &[
            "agent",
            "--node",
            "a",
            "--listen",
            &a_listen,
            "--join",
            &listen,
            "--cookie-file",
            cookie_s,
            "--heartbeat",
            "200ms",
        ],
        dir.path(),
        "a",
    );
    wait_for(&c_log, "cluster stable", 1).await;
    let mut samples = Vec::new();
    for round in 1..=rounds {
        std::fs::remove_file(&flag).expect("flag removed");
        // Unstable again: wait until the agent's share has been stable once more
        // after the flag is back.
        tokio::time::sleep(Duration::from_millis(150)).await;
        std::fs::write(&flag, "").expect("flag");
        wait_for(&a_log, "replica healthy", round + 1).await;
        wait_for(&c_log, "cluster stable", round + 1).await;
        let a = stamps(&a_log, "replica healthy")[round];
        let c = stamps(&c_log, "cluster stable")[round];
        if std::env::var_os("DEBUG_LATENCY").is_some() {
            eprintln!(
                "round {round}: a {:?} c {:?}",
                stamps(&a_log, "replica healthy"),
                stamps(&c_log, "cluster stable")
            );
        }
        samples.push(c.duration_since(a).unwrap_or(Duration::ZERO));
    }
    drop(agent);
    drop(coordinator);
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{}",
        serde_json::json!({
            "what": "last replica healthy on an agent -> coordinator reports stable",
            "rounds": samples.len(),
            "p50_us": at(0.5).as_micros() as u64,
            "p99_us": at(0.99).as_micros() as u64,
            "max_us": samples.last().map_or(0, |d| d.as_micros() as u64),
        })
    );
}
