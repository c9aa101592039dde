//! Peer comparison rows: real process crash → replacement running, and the memory a
//! supervisor needs for 200 idle processes, for herdsman (the release `herdsman` binary) and
//! the supervisors people run instead: runit, s6, supervisord and Docker's own restart
//! policy. They run only when named (`--only peers`): they need the peers installed
//! (`apt-get install runit s6 supervisor`; a dockerd and the test image for Docker), take
//! minutes, and are comparisons, not targets, so no row has a verdict.
//!
//! Detection is the same for every peer. The supervised program is `sleeper.c`, compiled
//! here with `cc`: on start it sends its pid and CLOCK_MONOTONIC to a unix datagram socket,
//! then pauses. The bench kills it with the same program (`sleeper kill PID` reads the clock
//! right before `kill(2)`), and a sample is the replacement's reported start − the kill.
//!
//! Every supervisor, supervised process and container is owned by a [`Fleet`] guard that
//! kills and removes them on drop, so a timeout or a panic leaves nothing running.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::net::UnixDatagram;
use tokio::time::Instant;

use super::floors::kill9;
use super::procfs::{alive, descendants, processes, rss_pss, Proc};
use super::report::{Measure, Row, Unit};

/// The supervised program's source.
const SLEEPER_C: &str = include_str!("sleeper.c");
/// The image herdsman's Docker tests use (`.ci/docker-setup` builds it).
const IMAGE: &str = "herdsman-test/busybox:latest";
/// Every container started here carries this label (value: the bench's pid).
const LABEL: &str = "herdsman-peers-bench";
/// How long a killed process may take to be replaced before the peer is reported as not
/// restarting it.
const RESTART_PATIENCE: Duration = Duration::from_secs(5);
/// How long a fleet may take to start, and to be gone after it is stopped.
const PATIENCE: Duration = Duration::from_secs(120);
/// How long each incarnation runs before it is killed. runit's runsv pauses 1 s before
/// restarting a `./run` that exited within a second of starting, and s6-supervise pauses
/// 1 s unless the service has been ready for more than a second: past both thresholds.
const HOLD: Duration = Duration::from_millis(1100);
/// Docker doubles its restart delay (from 100 ms) until a container has run 10 s.
const DOCKER_HOLD: Duration = Duration::from_millis(10_500);
/// Crash samples per peer (after one warm-up kill).
const SAMPLES: usize = 40;
/// Fewer where every sample costs a 1 s pause or a 10 s hold.
const SLOW_SAMPLES: usize = 20;
const DOCKER_SAMPLES: usize = 10;
/// Idle processes for the memory rows; Docker gets fewer containers (each `docker run` on
/// the vfs storage driver copies the image) and its figure is also given per container.
const IDLE: u32 = 200;
const DOCKER_IDLE: u32 = 20;

/// A supervisor measured here.
#[derive(Debug, Clone)]
enum Peer {
    /// `herdsman run` of the release binary, API on, state directory.
    Herdsman(PathBuf),
    /// `runsvdir` on a service directory, one `runsv` per service.
    Runit,
    /// `s6-svscan` on a scan directory, one `s6-supervise` per service; `ready`: the
    /// sleeper notifies readiness (`notification-fd`), which s6 needs to restart at once.
    S6 { ready: bool },
    /// `supervisord -n` with `autorestart=true`, `startsecs=0`.
    Supervisord,
    /// `docker run -d --restart=always` of the test image.
    Docker,
}

impl Peer {
    fn label(&self) -> &'static str {
        match self {
            Peer::Herdsman(_) => "herdsman (`herdsman run`)",
            Peer::Runit => "runit (runsvdir + runsv)",
            Peer::S6 { ready: true } => "s6 (s6-svscan + s6-supervise), readiness notified",
            Peer::S6 { ready: false } => "s6, no readiness notification",
            Peer::Supervisord => "supervisord",
            Peer::Docker => "Docker `--restart=always`",
        }
    }

    /// Why it cannot be measured here, if it cannot.
    fn missing(&self) -> Option<String> {
        let tools: &[&str] = match self {
            Peer::Herdsman(bin) if bin.is_file() => &[],
            Peer::Herdsman(bin) => return Some(format!("no binary at {}", bin.display())),
            Peer::Runit => &["runsvdir", "runsv"],
            Peer::S6 { .. } => &["s6-svscan", "s6-supervise"],
            Peer::Supervisord => &["supervisord"],
            Peer::Docker => &["docker"],
        };
        if let Some(t) = tools.iter().find(|t| on_path(t).is_none()) {
            return Some(format!("`{t}` is not installed"));
        }
        if matches!(self, Peer::Docker) {
            let ok = Command::new("docker")
                .args(["image", "inspect", IMAGE])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Some(format!("no dockerd answering or no image {IMAGE}"));
            }
        }
        None
    }

    fn hold(&self) -> Duration {
        match self {
            Peer::Docker => DOCKER_HOLD,
            _ => HOLD,
        }
    }

    fn samples(&self) -> usize {
        match self {
            Peer::Docker => DOCKER_SAMPLES,
            Peer::S6 { ready: false } | Peer::Supervisord => SLOW_SAMPLES,
            _ => SAMPLES,
        }
    }
}

fn on_path(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The 1-minute load average, as /proc/loadavg gives it.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Compile `sleeper.c` into `dir`, statically (it also runs in the busybox image).
fn compile_sleeper(dir: &Path) -> Result<PathBuf, String> {
    let src = dir.join("sleeper.c");
    let bin = dir.join("sleeper");
    std::fs::write(&src, SLEEPER_C).map_err(|e| format!("write {}: {e}", src.display()))?;
    let out = Command::new("cc")
        .args(["-O2", "-static", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .map_err(|e| format!("cannot run cc: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cc failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(bin)
}

/// Whether `p` is an incarnation of the sleeper at `bin` (in a container, the exe link may
/// not resolve; its argv[0] is the bind-mounted path).
fn is_sleeper(p: &Proc, bin: &Path) -> bool {
    !p.zombie && (p.exe.as_deref() == Some(bin) || Path::new(&p.argv0) == bin)
}

// ---------------------------------------------------------------------------------------
// A fleet: one peer supervising `n` sleepers, and the guard that ends it.

/// A running supervisor and everything it started. Dropping it kills them all.
struct Fleet {
    peer: Peer,
    /// The supervisor process (none for Docker: dockerd runs already).
    root: Option<Child>,
    /// Containers, by name (Docker only).
    containers: Vec<String>,
    sleeper: PathBuf,
    stopped: bool,
}

/// Write `text` to `path`, as the bench's invariant.
fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

impl Fleet {
    /// Start `peer` supervising `n` sleepers in `dir`, each reporting to `report` (none:
    /// idle sleepers that report nowhere).
    fn launch(peer: &Peer, dir: &Path, sleeper: &Path, n: u32, report: Option<&Path>) -> Fleet {
        let target = report.map_or_else(|| dir.join("nobody.sock"), Path::to_path_buf);
        let arg = target.to_string_lossy().into_owned();
        let mut fleet = Fleet {
            peer: peer.clone(),
            root: None,
            containers: Vec::new(),
            sleeper: sleeper.to_path_buf(),
            stopped: false,
        };
        match peer {
            Peer::Herdsman(bin) => {
                let spec = dir.join("peers.yaml");
                write(
                    &spec,
                    &format!(
                        "version: v1\ndeployment: benchpeers\nservices:\n  sleeper:\n    \
                         command: {{entrypoint: [\"{}\", \"{arg}\"]}}\n    \
                         scale: {{mode: fixed, replicas: {n}}}\n    \
                         restart: {{max_restarts: 1000000}}\n    stop_grace_period: 1s\n",
                        sleeper.display()
                    ),
                );
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map(|a| a.port())
                    .expect("a free port");
                fleet.root = Some(spawn(
                    Command::new(bin)
                        .arg("run")
                        .arg(&spec)
                        .args(["--api", &format!("127.0.0.1:{port}"), "--state-dir"])
                        .arg(dir.join("state")),
                ));
            }
            Peer::Runit | Peer::S6 { .. } => {
                // ./run is the sleeper itself (a symlink), not a shell script exec'ing it:
                // no shell start-up in the measured path. It reports to ./report.sock.
                let scan = dir.join("sv");
                for i in 0..n {
                    let svc = scan.join(format!("s{i}"));
                    std::fs::create_dir_all(&svc).expect("service directory");
                    symlink(sleeper, &svc.join("run"));
                    if let Some(r) = report {
                        symlink(r, &svc.join("report.sock"));
                    }
                    if matches!(peer, Peer::S6 { ready: true }) {
                        write(&svc.join("notification-fd"), "3\n");
                    }
                }
                let tool = if matches!(peer, Peer::Runit) {
                    "runsvdir"
                } else {
                    "s6-svscan"
                };
                fleet.root = Some(spawn(Command::new(tool).arg(&scan)));
            }
            Peer::Supervisord => {
                let conf = dir.join("supervisord.conf");
                let d = dir.display();
                write(
                    &conf,
                    &format!(
                        "[supervisord]\nnodaemon=true\nuser=root\nlogfile={d}/supervisord.log\n\
                         pidfile={d}/supervisord.pid\nchildlogdir={d}\n\n\
                         [program:sleeper]\ncommand={} {arg}\nnumprocs={n}\n\
                         process_name=%(program_name)s_%(process_num)d\nautorestart=true\n\
                         startsecs=0\nstdout_logfile=NONE\nstderr_logfile=NONE\n",
                        sleeper.display()
                    ),
                );
                fleet.root = Some(spawn(
                    Command::new("supervisord").arg("-n").arg("-c").arg(&conf),
                ));
            }
            Peer::Docker => {
                let token = std::process::id().to_string();
                for i in 0..n {
                    let name = format!("{LABEL}-{token}-{i}");
                    // The sleeper's directory holds `dir` too: both seen at the same paths.
                    let shared = sleeper.parent().unwrap_or(dir).display();
                    let volume = format!("{shared}:{shared}");
                    // The name is recorded first, so the guard removes even a half-made one.
                    fleet.containers.push(name.clone());
                    let out = Command::new("docker")
                        .args(["run", "-d", "--name", &name, "--label"])
                        .arg(format!("{LABEL}={token}"))
                        .args(["--network", "none", "--restart=always", "-v", &volume])
                        .arg(IMAGE)
                        .arg(sleeper)
                        .arg(&arg)
                        .output()
                        .expect("docker runs");
                    assert!(
                        out.status.success(),
                        "docker run failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        fleet
    }

    /// The supervisor's own processes: the root and its descendants that are not
    /// sleepers; for Docker, the parents of the containers' sleepers (the shims).
    fn supervisor_processes(&self) -> Vec<Proc> {
        let all = processes();
        match &self.root {
            Some(root) => {
                let mut own: Vec<Proc> =
                    all.iter().filter(|p| p.pid == root.id()).cloned().collect();
                own.extend(
                    descendants(&all, root.id())
                        .into_iter()
                        .filter(|p| !is_sleeper(p, &self.sleeper)),
                );
                own
            }
            None => {
                let parents: BTreeSet<u32> = all
                    .iter()
                    .filter(|p| is_sleeper(p, &self.sleeper))
                    .map(|p| p.ppid)
                    .collect();
                all.into_iter()
                    .filter(|p| parents.contains(&p.pid))
                    .collect()
            }
        }
    }

    /// Live sleepers, wherever they run.
    fn sleepers(&self) -> Vec<u32> {
        processes()
            .iter()
            .filter(|p| is_sleeper(p, &self.sleeper))
            .map(|p| p.pid)
            .collect()
    }

    /// One pass: remove the containers, SIGKILL the supervisor tree (root first, so nothing
    /// is respawned behind the kills) and every sleeper left.
    fn kill_pass(&mut self) {
        if !self.containers.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&self.containers)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(root) = &mut self.root {
            let tree = descendants(&processes(), root.id());
            let _ = root.kill();
            let _ = root.wait();
            for p in tree {
                kill9(p.pid);
            }
        }
        for pid in self.sleepers() {
            kill9(pid);
        }
    }

    /// Kill everything and check that it is gone (`Err` names what is left).
    async fn stop(mut self) -> Result<(), String> {
        let tree: Vec<u32> = match &self.root {
            Some(root) => descendants(&processes(), root.id())
                .iter()
                .map(|p| p.pid)
                .collect(),
            None => Vec::new(),
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.kill_pass();
            let mut left: Vec<u32> = tree.iter().copied().filter(|p| alive(*p)).collect();
            left.extend(self.sleepers());
            if left.is_empty() {
                self.stopped = true;
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stopped = true;
                return Err(format!("{}: processes left: {left:?}", self.peer.label()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if !self.stopped {
            self.kill_pass();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The measurements.

/// A sleeper's report: its pid (in its own pid namespace) and when it started, as
/// CLOCK_MONOTONIC.
#[derive(Debug, Clone, Copy)]
struct Report {
    pid: u32,
    at: Duration,
}

fn parse_clock(sec: &str, nsec: &str) -> Option<Duration> {
    Some(Duration::new(sec.parse().ok()?, nsec.parse().ok()?))
}

fn parse_report(msg: &[u8]) -> Option<Report> {
    let text = std::str::from_utf8(msg).ok()?;
    let mut f = text.split_whitespace();
    let pid = f.next()?.parse().ok()?;
    let at = parse_clock(f.next()?, f.next()?)?;
    Some(Report { pid, at })
}

/// The next report that started after `after`, within `within`.
async fn next_report(sock: &UnixDatagram, after: Duration, within: Duration) -> Option<Report> {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 128];
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        if let Some(r) = parse_report(&buf[..n]) {
            if r.at > after {
                return Some(r);
            }
        }
    }
}

/// SIGKILL `pid` through the sleeper; the CLOCK_MONOTONIC it read right before `kill(2)`.
async fn kill_timed(sleeper: &Path, pid: u32) -> Result<Duration, String> {
    let out = tokio::process::Command::new(sleeper)
        .args(["kill", &pid.to_string()])
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run the killer: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut f = text.split_whitespace();
    let at = match (f.next(), f.next(), f.next()) {
        (Some(s), Some(ns), Some("0")) => parse_clock(s, ns),
        _ => None,
    };
    at.ok_or_else(|| format!("kill {pid} failed: {text:?}"))
}

/// The host pid of a container's main process.
async fn container_pid(name: &str) -> Result<u32, String> {
    let out = tokio::process::Command::new("docker")
        .args(["inspect", "-f", "{{.State.Pid}}", name])
        .output()
        .await
        .map_err(|e| format!("docker inspect: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("no running pid for {name}"))
}

/// What one peer's crash runs found.
struct Crash {
    samples: Vec<Duration>,
    /// Why the run ended early, if it did.
    failure: Option<String>,
}

/// Crash → replacement running, `samples` times after one warm-up kill: the sleeper
/// reports, runs `hold`, is SIGKILLed; a sample ends at its replacement's report.
async fn crash(peer: &Peer, sleeper: &Path, dir: &Path, samples: usize) -> Crash {
    let sock_path = dir.join("report.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("the report socket binds");
    let fleet = Fleet::launch(peer, dir, sleeper, 1, Some(&sock_path));
    let mut out = Crash {
        samples: Vec::with_capacity(samples),
        failure: None,
    };
    let Some(mut current) = next_report(&sock, Duration::ZERO, PATIENCE).await else {
        out.failure = Some(format!(
            "the first sleeper did not report within {PATIENCE:?}"
        ));
        let _ = fleet.stop().await;
        return out;
    };
    for i in 0..=samples {
        tokio::time::sleep(peer.hold()).await;
        let pid = match peer {
            Peer::Docker => container_pid(&fleet.containers[0]).await,
            _ => Ok(current.pid),
        };
        let killed = match pid {
            Ok(pid) => kill_timed(sleeper, pid).await,
            Err(e) => Err(e),
        };
        let killed = match killed {
            Ok(at) => at,
            Err(e) => {
                out.failure = Some(e);
                break;
            }
        };
        match next_report(&sock, killed, RESTART_PATIENCE).await {
            Some(r) => {
                if i > 0 {
                    out.samples.push(r.at.saturating_sub(killed));
                }
                current = r;
            }
            None => {
                out.failure = Some(format!(
                    "kill {i}: no replacement within {RESTART_PATIENCE:?}"
                ));
                break;
            }
        }
    }
    if let Err(e) = fleet.stop().await {
        out.failure.get_or_insert(e);
    }
    out
}

/// What a supervisor holds with `n` idle sleepers.
struct Memory {
    rss: u64,
    pss: u64,
    /// The supervisor's processes, by name: `runsv ×200`.
    processes: Vec<String>,
    n: u32,
}

/// Start `n` idle sleepers under `peer`; once all run, 1 s later, the RSS and PSS summed
/// over the supervisor's own processes.
async fn memory(peer: &Peer, sleeper: &Path, dir: &Path, n: u32) -> Result<Memory, String> {
    let fleet = Fleet::launch(peer, dir, sleeper, n, None);
    let deadline = Instant::now() + PATIENCE;
    while fleet.sleepers().len() < n as usize {
        if Instant::now() >= deadline {
            let seen = fleet.sleepers().len();
            let _ = fleet.stop().await;
            return Err(format!("only {seen} of {n} running after {PATIENCE:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let own = fleet.supervisor_processes();
    let (rss, pss) = own
        .iter()
        .map(|p| rss_pss(p.pid))
        .fold((0, 0), |(r, p), (r1, p1)| (r + r1, p + p1));
    let mut count = std::collections::BTreeMap::<&str, usize>::new();
    for p in &own {
        *count.entry(p.comm.as_str()).or_default() += 1;
    }
    let processes = count.iter().map(|(c, k)| format!("{c} ×{k}")).collect();
    let m = Memory {
        rss,
        pss,
        processes,
        n,
    };
    fleet.stop().await?;
    Ok(m)
}

// ---------------------------------------------------------------------------------------
// The rows.

fn crash_row(peer: &Peer, c: &Crash, load: &str) -> Row {
    let how = match peer {
        Peer::Herdsman(_) => {
            "the sleeper as a replica's entrypoint, restart.max_restarts raised to 1000000 \
             (the default 5 per 5 min would back off)"
        }
        Peer::Runit => "`./run` a symlink to the sleeper, runsvdir on a temp service dir",
        Peer::S6 { ready: true } => {
            "`./run` a symlink to the sleeper, which writes to its notification-fd \
             (s6 restarts at once only a service that was ready for over 1 s)"
        }
        Peer::S6 { ready: false } => {
            "the same without notification-fd: s6-supervise pauses 1 s before the respawn"
        }
        Peer::Supervisord => {
            "`[program:x]` with autorestart=true, startsecs=0; supervisord's main loop \
             polls with a 1 s timeout and runs transitions before reaping"
        }
        Peer::Docker => {
            "`docker run -d --restart=always --network none` of the test image running the \
             static sleeper from a bind mount, killed by host pid (docker inspect)"
        }
    };
    let failure = c
        .failure
        .as_ref()
        .map(|f| format!(" **Ended early: {f}.**"))
        .unwrap_or_default();
    Row {
        what: format!("real process crash → replacement running: {}", peer.label()),
        target: "— (peer comparison)",
        ours: Measure::of_durations(&c.samples, Unit::Millis),
        floor_what: "—".into(),
        floor: None,
        met: None,
        notes: format!(
            "{} SIGKILLs, each after the incarnation ran {:?}, to the replacement's own \
             report of its start (CLOCK_MONOTONIC, same clock as the kill); {how}; load \
             average {load} at the start.{failure}",
            c.samples.len(),
            peer.hold()
        ),
    }
}

fn memory_rows(peer: &Peer, m: &Memory, load: &str) -> [Row; 2] {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let whose = match peer {
        Peer::Herdsman(_) => "the `herdsman run` process (API on, state directory)",
        Peer::Runit => "runsvdir and its runsv processes",
        Peer::S6 { .. } => "s6-svscan and its s6-supervise processes",
        Peer::Supervisord => "the supervisord process",
        Peer::Docker => {
            "the containerd-shim processes parenting the containers (dockerd and containerd \
             themselves not counted)"
        }
    };
    let per = |b: u64| b as f64 / 1024.0 / f64::from(m.n);
    let row = |kind: &str, bytes: u64| Row {
        what: format!(
            "supervisor {kind} for {} idle processes: {}",
            m.n,
            peer.label()
        ),
        target: "— (peer comparison)",
        ours: Measure::single(mib(bytes), Unit::MiB),
        floor_what: "—".into(),
        floor: None,
        met: None,
        notes: format!(
            "{kind} summed over {whose} ({}), the sleepers themselves not counted; \
             {:.1} KiB per supervised process; read from /proc/PID/smaps_rollup 1 s after all \
             {} sleepers ran; load average {load}",
            m.processes.join(", "),
            per(bytes),
            m.n
        ),
    };
    [row("RSS", m.rss), row("PSS", m.pss)]
}

/// Every peer row, in order: herdsman first, then the peers that are installed.
pub(crate) async fn rows(herdsman: Option<PathBuf>, push: &mut impl FnMut(Row)) {
    let work = tempfile::tempdir().expect("tempdir");
    let sleeper = match compile_sleeper(work.path()) {
        Ok(bin) => bin,
        Err(e) => {
            eprintln!("peer rows skipped: {e}");
            return;
        }
    };
    let mut peers = Vec::new();
    match herdsman {
        Some(bin) => peers.push(Peer::Herdsman(bin)),
        None => eprintln!(
            "herdsman peer rows skipped: build it with `cargo build --release -p herdsman-cli`"
        ),
    }
    peers.extend([
        Peer::Runit,
        Peer::S6 { ready: true },
        Peer::S6 { ready: false },
        Peer::Supervisord,
        Peer::Docker,
    ]);
    peers.retain(|p| match p.missing() {
        None => true,
        Some(why) => {
            eprintln!("{} skipped: {why}", p.label());
            false
        }
    });
    for peer in &peers {
        let dir = tempfile::tempdir_in(work.path()).expect("tempdir");
        let load = load();
        let c = crash(peer, &sleeper, dir.path(), peer.samples()).await;
        push(crash_row(peer, &c, &load));
    }
    for peer in &peers {
        if matches!(peer, Peer::S6 { ready: false }) {
            continue; // the same processes as with readiness
        }
        let n = if matches!(peer, Peer::Docker) {
            DOCKER_IDLE
        } else {
            IDLE
        };
        let dir = tempfile::tempdir_in(work.path()).expect("tempdir");
        let load = load();
        match memory(peer, &sleeper, dir.path(), n).await {
            Ok(m) => {
                for row in memory_rows(peer, &m, &load) {
                    push(row);
                }
            }
            Err(e) => eprintln!("{} memory row failed: {e}", peer.label()),
        }
    }
    let left: Vec<Proc> = processes()
        .into_iter()
        .filter(|p| is_sleeper(p, &sleeper))
        .collect();
    assert!(left.is_empty(), "sleepers left running: {left:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_parse_and_garbage_does_not() {
        let r = parse_report(b"42 10 500").expect("a report");
        assert_eq!((r.pid, r.at), (42, Duration::new(10, 500)));
        assert!(parse_report(b"42 ten").is_none());
        assert!(parse_report(&[0xff, 0x20]).is_none());
    }
}
