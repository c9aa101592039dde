//! Fleet simulation: `--services S` × `--replicas R` simulated replicas on `SimRuntime`,
//! faults injected for `--duration`, then a quiet period, then a check that the supervisors
//! neither lost nor duplicated a replica. One JSON line on stdout, progress on stderr.
//!
//! ```text
//! cargo run --release --example fleet -- --services 100 --replicas 1000 --duration 20s \
//!     --crash-rate 0.01 --start-failures 0.05 --flaky-health 0.1 --hung-stops
//! ```
//!
//! How it runs, and why:
//!
//! - **Real clock, real timers.** Every timer (probe ticks, backoff delays, stop grace
//!   periods) runs on tokio's real clock, so the wall time the run takes and the CPU it uses
//!   are what a deployment of that size costs. `--duration` is wall time.
//! - **Phases.** (1) The fleet is deployed with no faults and `time_to_stable_ms` is the
//!   time from spawn to stable. (2) Faults are switched on for `--duration`. (3) Faults are
//!   switched off; the fleet must become stable again (`recovery_ms`) and stay quiet for
//!   `--settle`. (4) What the runtime really runs, per replica slot, is compared with what
//!   the supervisors believe (the status board): `lost` counts slots the board believes
//!   running whose container is not, `duplicated` counts containers running beyond the one
//!   the board believes in (a second incarnation, or one the board believes stopped).
//! - **Crashes** (`--crash-rate`, probability per replica per second) are a Poisson
//!   process over the whole fleet at `rate × replicas` per second, each hitting a uniformly
//!   chosen replica slot. By memorylessness that is exactly each running replica having an
//!   exponential lifetime of mean `1 / rate`; unlike lifetimes drawn inside the simulator at
//!   start, it stops the instant the fault phase ends, which the quiet period needs.
//! - **Other faults** are fault profiles of the simulator, active only in phase 2: a start
//!   fails with probability `--start-failures`; each health check fails with probability
//!   `--flaky-health` (three in a row make the replica unhealthy, which restarts it);
//!   `--hung-stops` makes containers ignore the stop signal until the grace period (2 s)
//!   ends in SIGKILL.
//! - **Policy** of every service: restart always, at most 5 restarts in 60 s before
//!   crash-loop backoff (1 s doubling to 30 s, jitter 0.1), reset after 60 s of clean run;
//!   health checked every second (every 100 ms during a 5 s start period).
//!
//! The output line carries `replicas`, `time_to_stable_ms`, `restarts` (sum over replicas
//! of their restart counts), `crash_loops` (replicas that entered backoff at least once),
//! `lost`, `duplicated`, `peak_rss_bytes` (VmHWM), and details of the run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use herdsman::core::{
    spawn_deployment, DeploymentHandle, DeploymentOptions, EventKind, EventStream, Received,
    ReplicaState, ReplicaStatus, Stabilization, StatusBoard,
};
use herdsman::runtime::{ContainerId, FaultProfile, HealthBehaviour, SimRuntime};
use herdsman::spec::{
    Backoff, Check, Deployment, Health, OnUnhealthy, RestartPolicy, RestartSpec, Scale, Service,
    ServiceKind, Template,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// A simulated fleet under injected faults.
#[derive(Debug, Parser)]
#[command(about = "Simulate a fleet of supervised replicas under injected faults")]
struct Args {
    /// Number of services.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    services: u32,
    /// Replicas per service.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    replicas: u32,
    /// Seed of every random decision (simulator and fault injection).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long faults are injected, wall time (`20s`, `1m`).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Crash probability per replica per second (mean lifetime `1 / rate`).
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    crash_rate: f64,
    /// Probability that a container start fails.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    start_failures: f64,
    /// Probability that one health check fails.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    flaky_health: f64,
    /// Containers ignore the stop signal until the grace period ends.
    #[arg(long)]
    hung_stops: bool,
    /// How long to wait for stability, initially and after the faults.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    stable_timeout: Duration,
    /// Quiet time after the fleet is stable again, before the final check.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    settle: Duration,
}

fn rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!("{s:?} is not a non-negative rate")),
    }
}

fn probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a probability in 0..=1")),
    }
}

/// What the event drain counts while the fleet runs.
#[derive(Debug, Default)]
struct Tally {
    restarting: AtomicU64,
    backoffs: AtomicU64,
    exits: AtomicU64,
    start_failed: AtomicU64,
    unhealthy: AtomicU64,
    missed: AtomicU64,
    crash_looped: Mutex<HashSet<(Arc<str>, u32)>>,
}

/// The verdict of comparing the runtime with the board.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Mismatches {
    /// Slots the board believes running whose container the runtime does not run.
    lost: BTreeMap<(String, u32), ContainerId>,
    /// Containers the runtime runs beyond the one the board believes in.
    duplicated: BTreeMap<(String, u32), Vec<ContainerId>>,
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    let code = runtime.block_on(run(args));
    std::process::exit(code);
}

async fn run(args: Args) -> i32 {
    let total = u64::from(args.services) * u64::from(args.replicas);
    let names: Vec<String> = (0..args.services).map(|i| format!("svc-{i:04}")).collect();
    let spec = fleet_spec(&names, args.replicas);
    let sim = Arc::new(SimRuntime::new(args.seed));
    calm(&sim, &names);

    eprintln!(
        "fleet: {} services x {} replicas = {total} replicas, seed {}",
        args.services, args.replicas, args.seed
    );
    let spawned_at = Instant::now();
    let options = DeploymentOptions {
        event_capacity: 1 << 16,
        seed: args.seed,
        ..DeploymentOptions::default()
    };
    let handle = match spawn_deployment(spec, sim.clone(), options).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("fleet: cannot spawn the deployment: {e}");
            return 1;
        }
    };
    let tally = Arc::new(Tally::default());
    let drain = tokio::spawn(drain_events(handle.subscribe(), tally.clone()));
    let phase = Arc::new(Mutex::new("deploying"));
    let done = Arc::new(AtomicBool::new(false));
    let progress = tokio::spawn(show_progress(
        handle.board().clone(),
        sim.clone(),
        tally.clone(),
        phase.clone(),
        done.clone(),
        total,
    ));

    let time_to_stable = wait_stable(&handle, args.stable_timeout).await;
    let time_to_stable_ms = time_to_stable.map(|_| spawned_at.elapsed().as_millis() as u64);
    if time_to_stable.is_none() {
        eprintln!("fleet: not stable {:?} after spawn", args.stable_timeout);
    }

    // The deployment's burst of start events can overflow the event buffer; what the run
    // reports is what was missed from the fault phase on.
    let missed_at_deploy = tally.missed.load(Ordering::Relaxed);
    set_phase(&phase, "faults");
    faulty(&sim, &names, &args);
    let crashes = inject_crashes(&sim, &names, args.replicas, &args).await;

    set_phase(&phase, "recovering");
    calm(&sim, &names);
    let quiet_at = Instant::now();
    let recovered = wait_stable(&handle, args.stable_timeout).await;
    let recovery_ms = recovered.map(|_| quiet_at.elapsed().as_millis() as u64);
    if recovered.is_none() {
        eprintln!(
            "fleet: not stable again {:?} after the faults",
            args.stable_timeout
        );
    }
    set_phase(&phase, "settling");
    tokio::time::sleep(args.settle).await;

    set_phase(&phase, "checking");
    let verdict = check_until_settled(handle.board(), &sim, &names).await;
    for ((service, replica), id) in verdict.lost.iter().take(10) {
        eprintln!("fleet: LOST {service}/{replica}: board believes {id} runs, runtime does not");
    }
    for ((service, replica), ids) in verdict.duplicated.iter().take(10) {
        eprintln!("fleet: DUPLICATED {service}/{replica}: extra running {ids:?}");
    }
    let snapshot = handle.status();
    let restarts: u64 = snapshot
        .services
        .iter()
        .flat_map(|s| &s.replicas)
        .map(|r| u64::from(r.restarts))
        .sum();

    set_phase(&phase, "shutting down");
    let shutdown_started = Instant::now();
    let shutdown_ok = matches!(
        tokio::time::timeout(Duration::from_secs(120), handle.shutdown()).await,
        Ok(Ok(()))
    );
    let shutdown_ms = shutdown_started.elapsed().as_millis() as u64;
    done.store(true, Ordering::Release);
    let _ = progress.await;
    drain.abort();

    let stats = sim.stats();
    let crash_loops = tally.crash_looped.lock().map(|s| s.len()).unwrap_or(0);
    let duplicated: usize = verdict.duplicated.values().map(Vec::len).sum();
    let line = serde_json::json!({
        "replicas": total,
        "time_to_stable_ms": time_to_stable_ms,
        "restarts": restarts,
        "crash_loops": crash_loops,
        "lost": verdict.lost.len(),
        "duplicated": duplicated,
        "peak_rss_bytes": peak_rss_bytes(),
        "recovery_ms": recovery_ms,
        "shutdown_ms": shutdown_ms,
        "crashes_injected": crashes,
        "start_failures": stats.start_failures,
        "became_unhealthy": tally.unhealthy.load(Ordering::Relaxed),
        "backoffs": tally.backoffs.load(Ordering::Relaxed),
        "events_missed": tally.missed.load(Ordering::Relaxed).saturating_sub(missed_at_deploy),
        "seed": args.seed,
        "fault_seconds": args.duration.as_secs_f64(),
    });
    println!("{line}");
    let ok = time_to_stable_ms.is_some()
        && recovery_ms.is_some()
        && verdict == Mismatches::default()
        && shutdown_ok;
    if ok {
        0
    } else {
        1
    }
}

/// One service of the fleet.
fn fleet_service(name: &str, replicas: u32) -> Service {
    Service {
        image: Some(format!("fleet/{name}:1")),
        scale: Scale::Fixed { replicas },
        health: Some(Health {
            start_grace: Duration::from_secs(5),
            start_interval: Duration::from_millis(100),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            retries: 3,
            success_threshold: 1,
            on_unhealthy: OnUnhealthy::Restart,
            check: Check::Command {
                command: Template::literal("true"),
            },
        }),
        restart: RestartSpec {
            policy: RestartPolicy::Always,
            max_restarts: 5,
            window: Duration::from_secs(60),
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(30),
                multiplier: 2.0,
                jitter: 0.1,
            },
            reset_after: Duration::from_secs(60),
            give_up_after: None,
        },
        stop_grace_period: Duration::from_secs(2),
        ..Service::new(name, ServiceKind::Service)
    }
}

fn fleet_spec(names: &[String], replicas: u32) -> Deployment {
    Deployment {
        name: "fleet".to_string(),
        services: names.iter().map(|n| fleet_service(n, replicas)).collect(),
    }
}

/// Every service well behaved.
fn calm(sim: &SimRuntime, names: &[String]) {
    for name in names {
        sim.set_profile(name, FaultProfile::default());
    }
}

/// The fault profiles of phase 2.
fn faulty(sim: &SimRuntime, names: &[String], args: &Args) {
    let health = if args.flaky_health > 0.0 {
        HealthBehaviour::Flaky {
            p_fail: args.flaky_health,
        }
    } else {
        HealthBehaviour::Healthy
    };
    for name in names {
        sim.set_profile(
            name,
            FaultProfile {
                exit_codes: vec![1, 137, 143],
                start_failure: args.start_failures,
                stop_hangs: args.hung_stops,
                health,
                ..FaultProfile::default()
            },
        );
    }
}

/// Crash replicas for `args.duration` as a Poisson process of rate `crash_rate × replicas`
/// per second, each crash hitting a uniformly chosen slot. Returns how many hit a running
/// container.
async fn inject_crashes(sim: &SimRuntime, names: &[String], replicas: u32, args: &Args) -> u64 {
    let end = Instant::now() + args.duration;
    let slots = names.len() as u64 * u64::from(replicas);
    let fleet_rate = args.crash_rate * slots as f64;
    if fleet_rate <= 0.0 {
        tokio::time::sleep_until(end).await;
        return 0;
    }
    let mut rng = SmallRng::seed_from_u64(args.seed ^ 0x00c0_ffee);
    let exit_codes = [1, 137, 143];
    let mut next = Instant::now();
    let mut crashes = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = tick.tick().await;
        if now >= end {
            return crashes;
        }
        while next <= now {
            let gap: f64 = -(1.0 - rng.random::<f64>()).ln() / fleet_rate;
            next += Duration::from_secs_f64(gap);
            let slot = rng.random_range(0..slots);
            let service = &names[(slot / u64::from(replicas)) as usize];
            let replica = (slot % u64::from(replicas)) as u32;
            let code = exit_codes[rng.random_range(0..exit_codes.len())];
            crashes += sim.kill_replica(service, replica, code).len() as u64;
        }
    }
}

async fn wait_stable(handle: &DeploymentHandle, timeout: Duration) -> Option<Duration> {
    match handle.wait_stable(timeout).await {
        Ok(Stabilization::Ready { after }) => Some(after),
        Ok(Stabilization::TimedOut { failing }) => {
            for s in failing.iter().take(5) {
                eprintln!(
                    "fleet: {} not ready: {} ({} of {} running)",
                    s.service, s.reason, s.running, s.desired
                );
            }
            None
        }
        Err(e) => {
            eprintln!("fleet: wait for stability failed: {e}");
            None
        }
    }
}

fn set_phase(phase: &Mutex<&'static str>, to: &'static str) {
    if let Ok(mut p) = phase.lock() {
        *p = to;
    }
}

/// Count events as they come; a slow drain loses the oldest and counts how many.
async fn drain_events(mut events: EventStream, tally: Arc<Tally>) {
    while let Some(received) = events.recv().await {
        let event = match received {
            Received::Event(e) => e,
            Received::Missed(n) => {
                tally.missed.fetch_add(n, Ordering::Relaxed);
                continue;
            }
        };
        match event.kind {
            EventKind::ReplicaRestarting { .. } => {
                tally.restarting.fetch_add(1, Ordering::Relaxed);
            }
            EventKind::BackOff {
                service, replica, ..
            } => {
                tally.backoffs.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut set) = tally.crash_looped.lock() {
                    set.insert((service, replica));
                }
            }
            EventKind::ReplicaExited { .. } => {
                tally.exits.fetch_add(1, Ordering::Relaxed);
            }
            EventKind::StartFailed { .. } => {
                tally.start_failed.fetch_add(1, Ordering::Relaxed);
            }
            EventKind::HealthChanged { healthy: false, .. } => {
                tally.unhealthy.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// Once a second on stderr: phase, replicas ready (board) and running (runtime), restarts,
/// crash-loop backoffs.
async fn show_progress(
    board: StatusBoard,
    sim: Arc<SimRuntime>,
    tally: Arc<Tally>,
    phase: Arc<Mutex<&'static str>>,
    done: Arc<AtomicBool>,
    total: u64,
) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut cpu_before = (Instant::now(), cpu_time());
    while !done.load(Ordering::Acquire) {
        tick.tick().await;
        let cpu_now = (Instant::now(), cpu_time());
        let cores = match (cpu_before.1, cpu_now.1) {
            (Some(a), Some(b)) => {
                b.saturating_sub(a).as_secs_f64() / (cpu_now.0 - cpu_before.0).as_secs_f64()
            }
            _ => f64::NAN,
        };
        cpu_before = cpu_now;
        let ready = board.count_replicas(ReplicaStatus::is_ready);
        let stats = sim.stats();
        let running = stats.started.saturating_sub(stats.exited);
        let phase = phase.lock().map(|p| *p).unwrap_or("?");
        eprintln!(
            "[{:>5.1}s] {phase:<13} cpu {cores:.2}  ready {ready}/{total}  running {running}  restarts {}  backoffs {}  exits {}  start failures {}  events missed {}",
            started.elapsed().as_secs_f64(),
            tally.restarting.load(Ordering::Relaxed),
            tally.backoffs.load(Ordering::Relaxed),
            tally.exits.load(Ordering::Relaxed),
            stats.start_failures,
            tally.missed.load(Ordering::Relaxed),
        );
    }
}

/// What the supervisors believe runs for a slot: a running replica, or one isolated while
/// its container keeps running (unhealthy), with the container the board names.
fn believed(r: &ReplicaStatus) -> Option<&ContainerId> {
    match r.state {
        ReplicaState::Running | ReplicaState::Isolated => r.container.as_ref(),
        _ => None,
    }
}

/// Compare the runtime's running containers per slot with the board, once.
fn compare(board: &StatusBoard, sim: &SimRuntime, names: &[String]) -> Mismatches {
    let mut running: HashMap<(&str, u32), Vec<ContainerId>> = HashMap::new();
    for id in sim.running() {
        if let Some(name) = names.iter().find(|n| n.as_str() == &*id.service) {
            running
                .entry((name.as_str(), id.replica))
                .or_default()
                .push(id);
        }
    }
    let mut verdict = Mismatches::default();
    let snapshot = board.snapshot();
    for service in &snapshot.services {
        for r in &service.replicas {
            let ids = running
                .remove(&(service.name.as_str(), r.replica))
                .unwrap_or_default();
            let key = (service.name.clone(), r.replica);
            match believed(r) {
                Some(id) if !ids.contains(id) => {
                    verdict.lost.insert(key.clone(), id.clone());
                }
                _ => {}
            }
            let extra: Vec<ContainerId> = ids
                .into_iter()
                .filter(|id| believed(r) != Some(id))
                .collect();
            if !extra.is_empty() {
                verdict.duplicated.insert(key, extra);
            }
        }
    }
    // Containers of slots the board does not know at all.
    for ((service, replica), ids) in running {
        verdict
            .duplicated
            .insert((service.to_string(), replica), ids);
    }
    verdict
}

/// Compare until two looks half a second apart agree, so an exit in flight at the instant
/// of one look is not taken for a lost replica. A mismatch that persists is real.
async fn check_until_settled(
    board: &StatusBoard,
    sim: &SimRuntime,
    names: &[String],
) -> Mismatches {
    let mut last = compare(board, sim, names);
    for _ in 0..5 {
        if last == Mismatches::default() {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = compare(board, sim, names);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// CPU time (user + system) this process has used so far, from /proc/self/stat.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start at its closing ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12th and 13th after ')'.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Clock ticks: 100 per second on Linux (USER_HZ).
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Peak resident set size of this process (VmHWM), in bytes.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
