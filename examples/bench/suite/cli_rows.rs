//! Rows measured on the `herdsman` binary itself, from outside it: its resident memory
//! running 200 idle replicas (API on, state directory, log files), and a restart of
//! herdsman (SIGKILL, then a new `herdsman run`) with those replicas running → all adopted
//! and stable. The binary is found next to the bench (`target/release/herdsman`, built
//! with `cargo build --release -p herdsman-cli`) or at `$HERDSMAN_BIN`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(60);

/// The `herdsman` binary to measure, if there is one.
pub(crate) fn binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("HERDSMAN_BIN") {
        return Some(PathBuf::from(bin));
    }
    let exe = std::env::current_exe().ok()?;
    // target/release/examples/bench → target/release/herdsman
    let bin = exe.parent()?.parent()?.join("herdsman");
    bin.is_file().then_some(bin)
}

/// The binary, or a line on stderr that the `rows` rows are left out and how to have
/// them: a table that silently lacks rows would read as if they had been met.
pub(crate) fn binary_or_say(rows: &str) -> Option<PathBuf> {
    let bin = binary();
    if bin.is_none() {
        eprintln!(
            "the {rows} rows are left out: no `herdsman` binary next to this bench \
             (build it with `cargo build --release -p herdsman-cli`, or set HERDSMAN_BIN)"
        );
    }
    bin
}

/// A `herdsman run` of `n` idle `sleep 1000` replicas with its API on `api` and its
/// state under `state`.
fn start(bin: &Path, spec: &Path, state: &Path, api: &str) -> Child {
    Command::new(bin)
        .args(["run"])
        .arg(spec)
        .args(["--api", api, "--state-dir"])
        .arg(state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("herdsman starts")
}

fn spec(dir: &Path, n: u32) -> PathBuf {
    let path = dir.join("idle.yaml");
    std::fs::write(
        &path,
        format!(
            "version: v1\ndeployment: benchidle\nservices:\n  idle:\n    command: {{entrypoint: [\"sleep\", \"1000\"]}}\n    scale: {{mode: fixed, replicas: {n}}}\n    stop_grace_period: 1s\n"
        ),
    )
    .expect("spec written");
    path
}

/// `/v1/status` once it answers with a stable deployment of `n` running replicas.
async fn stable(client: &reqwest::Client, api: &str, n: usize, poll: Duration) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(r) = client.get(format!("http://{api}/v1/status")).send().await {
            if let Ok(v) = r.json::<Value>().await {
                if v["stable"] == Value::Bool(true) && pids(&v).len() == n {
                    return v;
                }
            }
        }
        assert!(Instant::now() < deadline, "not stable within {PATIENCE:?}");
        tokio::time::sleep(poll).await;
    }
}

fn replicas(status: &Value) -> impl Iterator<Item = &Value> {
    status["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["replicas"].as_array().into_iter().flatten())
}

fn pids(status: &Value) -> BTreeSet<u64> {
    replicas(status).filter_map(|r| r["pid"].as_u64()).collect()
}

fn restarts(status: &Value) -> u64 {
    replicas(status)
        .filter_map(|r| r["restarts"].as_u64())
        .sum()
}

/// Resident memory of another process as `ps` sees it, from /proc/PID/status.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Resident {
    /// VmRSS, bytes.
    pub(crate) rss: u64,
    /// RssAnon (heap, stacks, written data), bytes.
    pub(crate) anon: u64,
    /// RssFile (the binary's and libraries' pages mapped in), bytes.
    pub(crate) file: u64,
    /// Threads.
    pub(crate) threads: u64,
}

fn resident_of(pid: u32) -> Resident {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Resident {
        rss: field("VmRSS:") * 1024,
        anon: field("RssAnon:") * 1024,
        file: field("RssFile:") * 1024,
        threads: field("Threads:"),
    }
}

/// Ctrl-C a run and wait for it, then check that no replica is left.
async fn stop(mut child: Child, pids: &BTreeSet<u64>) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "herdsman did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left: Vec<_> = pids
        .iter()
        .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .filter(|p| {
            !std::fs::read_to_string(format!("/proc/{p}/stat"))
                .unwrap_or_default()
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .collect();
    assert!(left.is_empty(), "replicas left running: {left:?}");
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

fn free_api() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a port");
    format!("127.0.0.1:{port}")
}

/// What one run of both measurements found.
pub(crate) struct CliResult {
    /// Resident memory of `herdsman run` with the replicas stable, 1 s later.
    pub(crate) rss: Resident,
    /// The same with no replica (the same spec scaled to 0): the floor.
    pub(crate) floor: Resident,
    /// SIGKILL of herdsman → new `herdsman run` spawned → every replica adopted and the
    /// deployment stable, seen on its API (polled every 1 ms).
    pub(crate) adopt: Duration,
    /// Restarts reported by the new run.
    pub(crate) restarts: u64,
    /// Whether the new run shows exactly the pids the killed one ran.
    pub(crate) same_pids: bool,
}

/// Resident memory of a `herdsman run` of `n` idle replicas, stable, 1 s later; stopped
/// afterwards.
async fn resident_with(bin: &Path, n: u32) -> Resident {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = spec(dir.path(), n);
    let state = dir.path().join("state");
    let api = free_api();
    let run = start(bin, &spec, &state, &api);
    let status = stable(&client(), &api, n as usize, Duration::from_millis(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let resident = resident_of(run.id());
    stop(run, &pids(&status)).await;
    resident
}

/// How many of the functions `crates/herdsman-cli/link/hot-symbols.txt` lists the binary
/// has (found, listed): the link places those together (see the CLI's build.rs), and a
/// list older than the code or the dependencies loses its effect. `None` without `nm`.
pub(crate) fn hot_symbols(bin: &Path) -> Option<(usize, usize)> {
    let list =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/herdsman-cli/link/hot-symbols.txt");
    let listed = std::fs::read_to_string(list).ok()?;
    let out = Command::new("nm")
        .arg("--defined-only")
        .arg(bin)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let defined: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    let names: Vec<&str> = listed.lines().filter(|l| !l.is_empty()).collect();
    let found = names.iter().filter(|n| defined.contains(*n)).count();
    Some((found, names.len()))
}

/// Both measurements with `n` idle replicas, and the resident floor (0 replicas).
pub(crate) async fn measure(bin: &Path, n: u32) -> CliResult {
    let floor = resident_with(bin, 0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = spec(dir.path(), n);
    let state = dir.path().join("state");
    let api = free_api();
    let client = client();
    let first = start(bin, &spec, &state, &api);
    let status = stable(&client, &api, n as usize, Duration::from_millis(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = resident_of(first.id());
    let before = pids(&status);

    // herdsman dies; its replicas do not.
    let mut first = first;
    let _ = first.kill();
    let _ = first.wait();
    let t0 = Instant::now();
    let second = start(bin, &spec, &state, &api);
    let status = stable(&client, &api, n as usize, Duration::from_millis(1)).await;
    let adopt = t0.elapsed();
    let after = pids(&status);
    let result = CliResult {
        rss,
        floor,
        adopt,
        restarts: restarts(&status),
        same_pids: after == before,
    };
    let all: BTreeSet<u64> = before.union(&after).copied().collect();
    stop(second, &all).await;
    result
}
