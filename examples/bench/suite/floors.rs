//! The floors: the same operations done with bare ractor actors and tokio tasks, with no
//! herdsman in between, measured in the same run so each row reads as a ratio.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::fixtures::bounded;
use super::procfs;

const PATIENCE: Duration = Duration::from_secs(60);

/// A child that fails when told to.
struct Child;

enum ChildMsg {
    Fail,
}

// Local only: never sent to another node, so it is not serializable.
herdsman::core::local_message!(ChildMsg);

impl Actor for Child {
    type Msg = ChildMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<ChildMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<ChildMsg>,
        msg: ChildMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ChildMsg::Fail => Err(From::from("floor: told to fail")),
        }
    }
}

/// A supervisor that respawns every failed child and reports each replacement.
struct Respawner;

impl Actor for Respawner {
    type Msg = ();
    type State = mpsc::UnboundedSender<ActorRef<ChildMsg>>;
    type Arguments = mpsc::UnboundedSender<ActorRef<ChildMsg>>;

    async fn pre_start(
        &self,
        _: ActorRef<()>,
        respawned: mpsc::UnboundedSender<ActorRef<ChildMsg>>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(respawned)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        evt: SupervisionEvent,
        respawned: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(..) = evt {
            let (child, _) = Actor::spawn_linked(None, Child, (), myself.get_cell()).await?;
            let _ = respawned.send(child);
        }
        Ok(())
    }
}

/// A respawner with `n` children, their refs, and the stream of replacements.
async fn respawner(
    n: usize,
) -> (
    ActorRef<()>,
    Vec<ActorRef<ChildMsg>>,
    mpsc::UnboundedReceiver<ActorRef<ChildMsg>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (sup, _) = Actor::spawn(None, Respawner, tx)
        .await
        .expect("the floor supervisor spawns");
    let mut children = Vec::with_capacity(n);
    for _ in 0..n {
        let (child, _) = Actor::spawn_linked(None, Child, (), sup.get_cell())
            .await
            .expect("a floor child spawns");
        children.push(child);
    }
    (sup, children, rx)
}

/// ractor fail→respawn: a child's handler fails, its supervisor spawns a replacement; from
/// the failing message being sent to the replacement reported to this task.
pub(crate) async fn ractor_fail_respawn(samples: usize) -> Vec<Duration> {
    let (sup, mut children, mut respawned) = respawner(1).await;
    let mut child = children.pop().expect("one child");
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t0 = Instant::now();
        let _ = child.cast(ChildMsg::Fail);
        child = bounded("ractor respawn", PATIENCE, respawned.recv())
            .await
            .expect("the supervisor reports a replacement");
        out.push(t0.elapsed());
    }
    sup.stop_children_and_wait(None, Some(PATIENCE)).await;
    let _ = sup.stop_and_wait(None, Some(PATIENCE)).await;
    out
}

/// ractor respawn burst: `n` children of one supervisor, made to fail at once a round at a
/// time, in turns with herdsman's burst.
pub(crate) struct RespawnBurst {
    sup: ActorRef<()>,
    children: Vec<ActorRef<ChildMsg>>,
    respawned: mpsc::UnboundedReceiver<ActorRef<ChildMsg>>,
}

impl RespawnBurst {
    pub(crate) async fn spawn(n: usize) -> RespawnBurst {
        let (sup, children, respawned) = respawner(n).await;
        RespawnBurst {
            sup,
            children,
            respawned,
        }
    }

    /// Every child fails at once; until all the replacements are reported.
    pub(crate) async fn round(&mut self) -> Duration {
        let n = self.children.len();
        let t0 = Instant::now();
        for child in &self.children {
            let _ = child.cast(ChildMsg::Fail);
        }
        let mut next = Vec::with_capacity(n);
        while next.len() < n {
            let child = bounded("ractor burst", PATIENCE, self.respawned.recv())
                .await
                .expect("the supervisor reports every replacement");
            next.push(child);
        }
        let took = t0.elapsed();
        self.children = next;
        took
    }

    pub(crate) async fn stop(self) {
        self.sup.stop_children_and_wait(None, Some(PATIENCE)).await;
        let _ = self.sup.stop_and_wait(None, Some(PATIENCE)).await;
    }
}

/// One link of a relay of bare actors: the first is armed, waits out a timer (as a probe
/// waits for its next check), stamps the moment and passes it on; each next link passes
/// it on; the last publishes it on a broadcast channel, as the deployment actor emits.
struct Link;

enum RelayMsg {
    /// Wait `after`, stamp and pass the stamp on.
    Arm(Duration),
    Pass(Instant),
}

// Local only: never sent to another node, so it is not serializable.
herdsman::core::local_message!(RelayMsg);

enum Next {
    Link(ActorRef<RelayMsg>),
    Bus(tokio::sync::broadcast::Sender<Instant>),
}

impl Actor for Link {
    type Msg = RelayMsg;
    type State = Next;
    type Arguments = Next;

    async fn pre_start(
        &self,
        _: ActorRef<RelayMsg>,
        next: Next,
    ) -> Result<Next, ActorProcessingErr> {
        Ok(next)
    }

    async fn handle(
        &self,
        _: ActorRef<RelayMsg>,
        msg: RelayMsg,
        next: &mut Next,
    ) -> Result<(), ActorProcessingErr> {
        let at = match msg {
            RelayMsg::Arm(after) => {
                tokio::time::sleep(after).await;
                Instant::now()
            }
            RelayMsg::Pass(at) => at,
        };
        match next {
            Next::Link(link) => {
                let _ = link.cast(RelayMsg::Pass(at));
            }
            Next::Bus(bus) => {
                let _ = bus.send(at);
            }
        }
        Ok(())
    }
}

/// ractor relay: the path of "last replica healthy → deployment stable" with nothing of
/// herdsman in it. Three bare actors in a row (probe, service supervisor and deployment
/// actor stand-ins) and a task parked on a broadcast channel that stamps what it
/// receives; per sample, the first actor is armed with a 2 ms timer, and the sample is
/// from its stamp to the parked task's.
pub(crate) async fn ractor_relay(samples: usize) -> Vec<Duration> {
    let (bus, mut published) = tokio::sync::broadcast::channel::<Instant>(16);
    let (stamped_tx, mut stamped) = mpsc::unbounded_channel();
    let listener = tokio::spawn(async move {
        while let Ok(at) = published.recv().await {
            if stamped_tx.send(Instant::now() - at).is_err() {
                return;
            }
        }
    });
    let mut next = Next::Bus(bus);
    let mut links = Vec::with_capacity(3);
    for _ in 0..3 {
        let (link, _) = Actor::spawn(None, Link, next)
            .await
            .expect("a relay link spawns");
        next = Next::Link(link.clone());
        links.push(link);
    }
    let first = links.last().expect("three links").clone();
    let warmup = samples / 10;
    let mut out = Vec::with_capacity(samples);
    for i in 0..warmup + samples {
        let _ = first.cast(RelayMsg::Arm(Duration::from_millis(2)));
        let took = bounded("relay end", PATIENCE, stamped.recv())
            .await
            .expect("the parked task stamps the end");
        if i >= warmup {
            out.push(took);
        }
    }
    for link in links {
        let _ = link.stop_and_wait(None, Some(PATIENCE)).await;
    }
    listener.abort();
    out
}

/// An actor that does nothing.
struct Bare;

impl Actor for Bare {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// Raw spawn: `n` bare actors, one after the other, each awaited (as a supervisor spawns
/// its replicas); how long that took. The actors are stopped before it returns.
pub(crate) async fn ractor_spawn(n: usize) -> Duration {
    let (parent, _) = Actor::spawn(None, Bare, ()).await.expect("a parent spawns");
    let t0 = Instant::now();
    for _ in 0..n {
        Actor::spawn_linked(None, Bare, (), parent.get_cell())
            .await
            .expect("a bare actor spawns");
    }
    let took = t0.elapsed();
    parent.stop_children_and_wait(None, Some(PATIENCE)).await;
    let _ = parent.stop_and_wait(None, Some(PATIENCE)).await;
    took
}

/// Bare actors held for a memory measurement: `n` pairs, a parent and its linked child,
/// as a supervised replica is a container actor and its probe actor.
pub(crate) struct ActorPairs {
    parents: Vec<ActorRef<()>>,
}

impl ActorPairs {
    pub(crate) async fn spawn(n: usize) -> ActorPairs {
        let mut parents = Vec::with_capacity(n);
        for _ in 0..n {
            let (parent, _) = Actor::spawn(None, Bare, ()).await.expect("a parent spawns");
            Actor::spawn_linked(None, Bare, (), parent.get_cell())
                .await
                .expect("a child spawns");
            parents.push(parent);
        }
        ActorPairs { parents }
    }

    pub(crate) async fn stop(self) {
        for p in self.parents {
            p.stop_children_and_wait(None, Some(PATIENCE)).await;
            let _ = p.stop_and_wait(None, Some(PATIENCE)).await;
        }
    }
}

/// `n` tokio tasks each ticking a 1 s interval (phases spread over the second, as jittered
/// probes are), for a CPU measurement; aborted on drop.
pub(crate) struct IntervalTasks {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub(crate) ticks: Arc<AtomicU64>,
}

impl IntervalTasks {
    pub(crate) fn spawn(n: usize, period: Duration) -> IntervalTasks {
        let ticks = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let tasks = (0..n)
            .map(|i| {
                let ticks = ticks.clone();
                let offset = period.mul_f64(i as f64 / n.max(1) as f64);
                tokio::spawn(async move {
                    let mut interval = tokio::time::interval_at(start + offset, period);
                    loop {
                        interval.tick().await;
                        ticks.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        IntervalTasks { tasks, ticks }
    }
}

impl Drop for IntervalTasks {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Cores used by this process over `window` (CPU time / wall time).
pub(crate) async fn cores_over(window: Duration) -> f64 {
    let (t0, c0) = (Instant::now(), procfs::cpu_time());
    tokio::time::sleep(window).await;
    let (t1, c1) = (Instant::now(), procfs::cpu_time());
    c1.saturating_sub(c0).as_secs_f64() / (t1 - t0).as_secs_f64()
}

/// Where the floor's time goes: SIGKILL → `wait` returns, and the respawn itself.
#[derive(Debug, Default)]
pub(crate) struct FloorBreakdown {
    pub(crate) detect: Vec<Duration>,
    pub(crate) spawn: Vec<Duration>,
}

/// How the floor puts each process in its fresh cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CgroupEntry {
    /// Born in it: `clone3(CLONE_INTO_CGROUP)`, as herdsman spawns replicas.
    Born,
    /// Joined between fork and `exec` by writing `cgroup.procs` (a migration), as
    /// herdsman did before, and still does on kernels without `CLONE_INTO_CGROUP`.
    Joined,
}

/// The floor's running process, whichever way it was spawned.
enum FloorChild {
    Tokio(tokio::process::Child),
    Born(herdsman::probe::CgroupChild),
}

impl FloorChild {
    fn id(&self) -> u32 {
        match self {
            FloorChild::Tokio(c) => c.id().unwrap_or(0),
            FloorChild::Born(c) => c.id(),
        }
    }

    async fn wait(&mut self) {
        match self {
            FloorChild::Tokio(c) => {
                let _ = c.wait().await;
            }
            FloorChild::Born(c) => {
                let _ = c.wait().await;
            }
        }
    }

    async fn kill(&mut self) {
        match self {
            FloorChild::Tokio(c) => {
                let _ = c.kill().await;
            }
            FloorChild::Born(c) => {
                c.start_kill();
                let _ = c.wait().await;
            }
        }
    }
}

/// Spawn `sleep 1000` for the floor, into `cgroup` (created here) if given.
fn floor_spawn(cgroup: Option<&herdsman::probe::Cgroup>, entry: CgroupEntry) -> FloorChild {
    let devnull = std::fs::File::open("/dev/null").expect("/dev/null opens");
    if let (Some(cg), CgroupEntry::Born) = (cgroup, entry) {
        cg.create().expect("a cgroup can be created");
        let argv = ["sleep".to_string(), "1000".to_string()];
        let spec = herdsman::probe::ChildSpec {
            argv: &argv,
            env: &[],
            workdir: None,
            output: herdsman::probe::ChildOutput::File(std::os::fd::AsFd::as_fd(&devnull)),
        };
        return FloorChild::Born(cg.spawn_into(&spec).expect("sleep is born in its cgroup"));
    }
    let mut cmd = tokio::process::Command::new("sleep");
    cmd.arg("1000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cg) = cgroup {
        cg.create().expect("a cgroup can be created");
        cg.join_on_spawn(&mut cmd)
            .expect("the cgroup can be joined");
    }
    FloorChild::Tokio(cmd.spawn().expect("sleep can be spawned"))
}

/// The tokio floor for a process restart: a task that spawns `sleep 1000`, waits for it
/// and respawns it at once when it dies. With `cgroups` (the directory herdsman makes its
/// cgroups in, when containment is on), it does the same kernel work as herdsman: each
/// process is put in a fresh cgroup (`entry` says how); once it has exited, the cgroup is
/// checked empty (`cgroup.events`, opened while it ran), killed and watched empty
/// (inotify) only if it is not, and removed after the respawn.
pub(crate) struct ProcessRespawner {
    pid: u32,
    spawned: mpsc::UnboundedReceiver<Spawned>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// (pid, when its predecessor's exit was seen, when the spawn began, when it returned)
type Spawned = (u32, Option<Instant>, Instant, Instant);

/// One SIGKILL of the floor's process: to its replacement spawned, and the parts.
pub(crate) struct FloorSample {
    pub(crate) total: Duration,
    /// SIGKILL → `wait` returned.
    pub(crate) detect: Option<Duration>,
    pub(crate) spawn: Duration,
}

impl ProcessRespawner {
    /// Start the task and wait for its first process.
    pub(crate) async fn start(
        cgroups: Option<std::path::PathBuf>,
        entry: CgroupEntry,
    ) -> ProcessRespawner {
        let (pid_tx, mut spawned) = mpsc::unbounded_channel::<Spawned>();
        let (stop, mut stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut exited_at = None;
            let mut previous: Option<herdsman::probe::Cgroup> = None;
            for i in 0u64.. {
                let spawn_at = Instant::now();
                let cgroup = cgroups.as_ref().map(|base| {
                    herdsman::probe::Cgroup::at(
                        base.join(format!("bench-floor-{}-{entry:?}", std::process::id()))
                            .join(format!("g{i}")),
                    )
                });
                let mut child = floor_spawn(cgroup.as_ref(), entry);
                let _ = pid_tx.send((child.id(), exited_at, spawn_at, Instant::now()));
                // Opened while it runs, read once it has exited, as herdsman does.
                let events = cgroup.as_ref().and_then(|cg| cg.events().ok());
                if let Some(old) = previous.take() {
                    let _ = old.remove();
                }
                tokio::select! {
                    _ = child.wait() => exited_at = Some(Instant::now()),
                    _ = &mut stop_rx => {
                        child.kill().await;
                        if let Some(cg) = &cgroup {
                            let _ = cg.kill_and_remove(Duration::from_secs(5)).await;
                            if let Some(dir) = cg.path().parent() {
                                let _ = std::fs::remove_dir(dir);
                            }
                        }
                        return;
                    }
                }
                if let Some(cg) = cgroup {
                    // Killed and waited for only if something is left in it.
                    let populated = match &events {
                        Some(events) => events.populated(),
                        None => cg.populated(),
                    };
                    if populated.unwrap_or(true) {
                        cg.kill();
                        let _ = cg.wait_empty().await;
                    }
                    previous = Some(cg);
                }
            }
        });
        let (pid, ..) = bounded("first spawn", PATIENCE, spawned.recv())
            .await
            .expect("a pid");
        ProcessRespawner {
            pid,
            spawned,
            stop,
            task,
        }
    }

    /// SIGKILL the running process (settled first, see [`SETTLE`]); until its
    /// replacement is spawned.
    pub(crate) async fn sample(&mut self) -> FloorSample {
        // A process killed while still starting up dies faster than a settled one.
        tokio::time::sleep(SETTLE).await;
        let t0 = Instant::now();
        kill9(self.pid);
        let (next, exited_at, spawn_at, spawned_at) =
            bounded("tokio respawn", PATIENCE, self.spawned.recv())
                .await
                .expect("a new pid");
        let total = t0.elapsed();
        self.pid = next;
        FloorSample {
            total,
            detect: exited_at.map(|at| at.saturating_duration_since(t0)),
            spawn: spawned_at - spawn_at,
        }
    }

    /// Stop the task, its last process and its cgroups.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        bounded("floor respawner to stop", PATIENCE, self.task)
            .await
            .expect("the floor respawner ends cleanly");
    }
}

/// `samples` SIGKILLs of a [`ProcessRespawner`]'s process, one after the other.
pub(crate) async fn tokio_respawn(
    samples: usize,
    cgroups: Option<std::path::PathBuf>,
    entry: CgroupEntry,
) -> (Vec<Duration>, FloorBreakdown) {
    let mut floor = ProcessRespawner::start(cgroups, entry).await;
    let mut out = Vec::with_capacity(samples);
    let mut parts = FloorBreakdown::default();
    for _ in 0..samples {
        parts.record(floor.sample().await, &mut out);
    }
    floor.stop().await;
    (out, parts)
}

impl FloorBreakdown {
    /// Keep `sample`: its total in `totals`, its parts here.
    pub(crate) fn record(&mut self, sample: FloorSample, totals: &mut Vec<Duration>) {
        totals.push(sample.total);
        if let Some(detect) = sample.detect {
            self.detect.push(detect);
        }
        self.spawn.push(sample.spawn);
    }
}

/// How long a process runs before it is killed for a measurement: long enough to have
/// finished starting (exec, dynamic loading) and gone to sleep, as a real crash would find
/// it.
pub(crate) const SETTLE: Duration = Duration::from_millis(5);

/// SIGKILL a process (already gone is fine).
pub(crate) fn kill9(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The machine's cost of waking a thread parked on the other core, what a tokio worker
/// pays each time it hands a task to its parked sibling: per sample, one thread spins
/// 50 µs (its core busy, the other idle, as with one busy worker), then unparks the other
/// (std's `unpark`, a futex wake); how long that call took the waker, and how long until
/// the woken thread ran.
pub(crate) struct CrossCoreWake {
    /// The waker's `unpark` call.
    pub(crate) waker: Vec<Duration>,
    /// From the call until the woken thread runs.
    pub(crate) woken: Vec<Duration>,
}

pub(crate) async fn cross_core_wake(samples: usize) -> CrossCoreWake {
    tokio::task::spawn_blocking(move || cross_core_wake_blocking(samples))
        .await
        .expect("the wake measurement does not panic")
}

fn cross_core_wake_blocking(samples: usize) -> CrossCoreWake {
    use std::sync::atomic::AtomicBool;
    const SPIN: Duration = Duration::from_micros(50);
    let go = Arc::new(AtomicBool::new(false));
    let ran = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let waiter = {
        let (go, ran, stop) = (go.clone(), ran.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                if go.swap(false, Ordering::AcqRel) {
                    ran.store(true, Ordering::Release);
                } else {
                    std::thread::park();
                }
            }
        })
    };
    let spin_until = |at: Instant| while Instant::now() < at {};
    let mut out = CrossCoreWake {
        waker: Vec::with_capacity(samples),
        woken: Vec::with_capacity(samples),
    };
    for _ in 0..samples {
        spin_until(Instant::now() + SPIN);
        ran.store(false, Ordering::Release);
        go.store(true, Ordering::Release);
        let t0 = Instant::now();
        waiter.thread().unpark();
        let t1 = Instant::now();
        let deadline = t0 + PATIENCE;
        while !ran.load(Ordering::Acquire) && Instant::now() < deadline {
            std::hint::spin_loop();
        }
        out.waker.push(t1 - t0);
        out.woken.push(Instant::now() - t0);
    }
    stop.store(true, Ordering::Release);
    waiter.thread().unpark();
    let _ = waiter.join();
    out
}
