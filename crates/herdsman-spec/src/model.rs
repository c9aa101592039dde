//! Validated domain types: what the rest of herdsman may rely on after validation.
//!
//! Every default is applied before a value of these types exists (see `defaults.rs`);
//! code that holds a [`Deployment`] never re-checks a field.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::template::Template;

/// A validated deployment: a named set of services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// Deployment name: 1-63 chars of `[a-z0-9-]`, starting with a letter or digit.
    pub name: String,
    /// Services in the order the spec lists them.
    pub services: Vec<Service>,
}

impl Deployment {
    /// The service called `name`, if any.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Service names in an order where every service comes after the services it depends
    /// on (validation guarantees there is no cycle); ties keep spec order.
    pub fn start_order(&self) -> Vec<&str> {
        let mut done: Vec<&str> = Vec::with_capacity(self.services.len());
        while done.len() < self.services.len() {
            let before = done.len();
            for s in &self.services {
                if done.contains(&s.name.as_str()) {
                    continue;
                }
                if s.depends.iter().all(|d| done.contains(&d.service.as_str())) {
                    done.push(&s.name);
                }
            }
            if done.len() == before {
                // A cycle slipped past validation: append the rest in spec order.
                for s in &self.services {
                    if !done.contains(&s.name.as_str()) {
                        done.push(&s.name);
                    }
                }
            }
        }
        done
    }
}

/// Whether a service runs forever or to completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    /// A long-running service (`rtype: service`); restart policy defaults to `always`.
    Service,
    /// A run-to-completion job (`rtype: job`); restart policy defaults to `on_failure`.
    Job,
}

/// One service: a template for its replicas and the policies that supervise them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// Service name, unique in the deployment.
    pub name: String,
    /// Service or job.
    pub kind: ServiceKind,
    /// Container image, for container runtimes.
    pub image: Option<String>,
    /// When a container runtime pulls `image` (`image.pull_policy`).
    pub pull_policy: PullPolicy,
    /// What to execute, for the process runtime.
    pub command: Option<Command>,
    /// Environment variables, values may use per-replica templates.
    pub env: BTreeMap<String, Template>,
    /// How many replicas.
    pub scale: Scale,
    /// Network endpoints; the first one's port defines `${PORT}`.
    pub endpoints: Vec<Endpoint>,
    /// How a container runtime networks the service's containers (ext).
    pub network: Network,
    /// Services that must be started or healthy before this one starts.
    pub depends: Vec<Dependency>,
    /// Health check, if any. Without one a running replica counts as healthy.
    pub health: Option<Health>,
    /// Init steps run in order before each replica starts.
    pub init: Vec<InitStep>,
    /// What to do when the init sequence fails.
    pub on_init_failure: InitFailurePolicy,
    /// What to do when a replica exits unexpectedly.
    pub on_panic: PanicAction,
    /// Restart policy, window and backoff.
    pub restart: RestartSpec,
    /// Signal sent to the replica's process group to stop it.
    pub stop_signal: StopSignal,
    /// How long to wait after the stop signal before SIGKILL.
    pub stop_grace_period: Duration,
    /// How long a replica must be running and healthy before it counts as ready (ext).
    pub min_ready: Duration,
    /// How a changed spec replaces the running replicas (ext).
    pub update: UpdateSpec,
    /// Which cluster nodes may run the replicas, and how they are spread (ext; ignored
    /// outside a cluster).
    #[serde(default)]
    pub placement: Placement,
}

/// Where a cluster places a service's replicas (`placement`, ext).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The nodes allowed to run replicas, by name; empty means every node.
    pub nodes: Vec<String>,
    /// Spread replicas evenly over the eligible nodes (default true); when false, fill
    /// the first eligible node (in name order) before using the next.
    pub spread: bool,
}

impl Default for Placement {
    /// Every node, spread.
    fn default() -> Self {
        Placement {
            nodes: Vec::new(),
            spread: true,
        }
    }
}

/// How a rollout replaces a service's replicas when its spec changes (`update`, ext).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UpdateSpec {
    /// Rolling replacement, or stop everything and start the new version.
    pub strategy: UpdateStrategy,
    /// Replicas started above the desired count while rolling (rounded up).
    pub max_surge: Amount,
    /// Replicas that may be not ready while rolling (rounded down).
    pub max_unavailable: Amount,
    /// How long a new replica must have been ready before the next old one is stopped.
    pub min_ready: Duration,
    /// A rollout that makes no progress (no new replica ready) for this long fails.
    pub progress_deadline: Duration,
    /// A failed rollout goes back to the previous spec by itself (else it pauses).
    pub auto_revert: bool,
}

/// `update.strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateStrategy {
    /// Replace replicas a few at a time, gated on the new ones' health.
    Rolling,
    /// Stop every old replica, then start the new ones.
    Recreate,
}

/// A number of replicas, absolute or a percentage of the desired count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Amount {
    /// This many replicas.
    Count(u32),
    /// This percentage (0 to 100) of the desired replicas.
    Percent(u32),
}

impl Amount {
    /// The number of replicas this is of `desired`, a percentage rounded up or down.
    pub fn of(self, desired: u32, round_up: bool) -> u32 {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => {
                let scaled = u64::from(desired) * u64::from(p);
                let n = if round_up {
                    scaled.div_ceil(100)
                } else {
                    scaled / 100
                };
                u32::try_from(n).unwrap_or(u32::MAX)
            }
        }
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Amount::Count(n) => write!(f, "{n}"),
            Amount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Service {
    /// A stable fingerprint of what this service's replicas run: image, command,
    /// environment, endpoints, init steps and stop signal, but not the policies that
    /// supervise them (replicas, restart, health). Two specs with the same run hash run
    /// the same thing, so a running replica of one may be adopted by, or kept through a
    /// rollout to, the other. Stable across herdsman versions for an unchanged spec: it
    /// hashes the service's canonical JSON with 64-bit FNV-1a, written as 16 hex digits.
    pub fn run_hash(&self) -> String {
        let what = serde_json::json!({
            "kind": self.kind,
            "image": self.image,
            "command": self.command,
            "env": self.env,
            "endpoints": self.endpoints,
            "init": self.init,
            "stop_signal": self.stop_signal,
        });
        let mut what = what;
        if self.image.is_some() {
            // Only containers are networked by the spec; a process's hash stays as it was.
            what["network"] = serde_json::json!(self.network);
        }
        // FNV-1a: tiny, stable and good enough to tell specs apart (not a security hash).
        let hash = what
            .to_string()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
        format!("{hash:016x}")
    }

    /// The desired replica count at start: `fixed` replicas, `adaptive` min, `manual` 0
    /// unless replicas was given.
    pub fn initial_replicas(&self) -> u32 {
        match self.scale {
            Scale::Fixed { replicas } => replicas,
            Scale::Adaptive { min, .. } => min,
            Scale::Manual { replicas } => replicas,
        }
    }
}

/// What the process runtime executes for each replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Program and leading arguments; the first element is the program.
    pub entrypoint: Vec<Template>,
    /// Further arguments.
    pub args: Vec<Template>,
    /// Working directory, relative paths are relative to the spec file's directory.
    pub workdir: Option<PathBuf>,
}

/// Replica count mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum Scale {
    /// Exactly `replicas`.
    Fixed {
        /// Replica count, 0..=100000.
        replicas: u32,
    },
    /// Between `min` and `max`; herdsman starts `min`, a host may scale within the range.
    Adaptive {
        /// Lower bound.
        min: u32,
        /// Upper bound, >= min.
        max: u32,
    },
    /// Scaled only by explicit commands; starts with `replicas` (default 0).
    Manual {
        /// Initial replica count.
        replicas: u32,
    },
}

/// When a container runtime pulls a service's image (`image.pull_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    /// Pull before every container is created.
    Always,
    /// Pull only when the image is not present locally (the default).
    IfNotPresent,
    /// Never pull: a missing image is an error naming it.
    Never,
}

/// How a container runtime networks a service's containers (`network`, ext).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// The container's own network namespace on Docker's default bridge; each endpoint's
    /// per-replica port is published on 127.0.0.1 (the default).
    Bridge,
    /// The host's network namespace: the container listens on the host directly.
    Host,
}

/// Endpoint protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Plain HTTP.
    Http,
    /// HTTPS.
    Https,
    /// Raw TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A named network endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Name, unique per service; `${PORT_<NAME>}` refers to it.
    pub name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Base port; replica `i` uses `port + i`.
    pub port: u16,
}

/// When a dependency counts as satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DependencyCondition {
    /// Every desired replica of the dependency is running.
    Started,
    /// Every desired replica of the dependency is running and healthy.
    Healthy,
}

/// One dependency of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    /// Name of the service depended on.
    pub service: String,
    /// Condition to wait for.
    pub condition: DependencyCondition,
    /// How long to wait before giving up on the dependant's start.
    pub timeout: Duration,
}

/// Health checking of each replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// Start period: failures are not counted until the first success or until it ends.
    pub start_grace: Duration,
    /// Probe interval during the start period.
    pub start_interval: Duration,
    /// Probe interval after the start period.
    pub interval: Duration,
    /// Hard timeout of one check.
    pub timeout: Duration,
    /// Consecutive failures that make a replica unhealthy (>= 1).
    pub retries: u32,
    /// Consecutive successes that make a replica healthy (>= 1).
    pub success_threshold: u32,
    /// What to do when a replica turns unhealthy.
    pub on_unhealthy: OnUnhealthy,
    /// The check itself.
    pub check: Check,
}

/// A health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Check {
    /// TCP connect.
    Tcp {
        /// Host to connect to; `None` means the address the runtime gives for the replica.
        host: Option<Template>,
        /// Port, a number or a template such as `${PORT}`.
        port: Template,
    },
    /// HTTP GET.
    Http {
        /// URL, may use templates.
        url: Template,
        /// Expected status; `None` accepts 200-399.
        expect_status: Option<u16>,
    },
    /// A command run through the runtime's exec; exit 0 is healthy.
    Command {
        /// Shell command line (run with `sh -c`).
        command: Template,
    },
}

/// What to do with a replica that turned unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnhealthy {
    /// Mark not ready, keep it running, do not restart (default).
    Isolate,
    /// Restart it; counts as a crash for the restart window.
    Restart,
    /// Report only.
    None,
}

/// One init step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitStep {
    /// Step id, for events and logs.
    pub id: String,
    /// What the step does.
    pub action: InitAction,
    /// Hard timeout of one try.
    pub timeout: Duration,
    /// Extra tries after the first failure.
    pub retry: u32,
    /// What a failure of this step (after its retries) does to the sequence.
    pub on_failure: StepFailure,
}

/// The built-in init actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "uses")]
pub enum InitAction {
    /// `init.wait_tcp`: wait until a TCP connect succeeds.
    WaitTcp {
        /// Host.
        host: Template,
        /// Port.
        port: Template,
    },
    /// `init.wait_http`: wait until an HTTP GET answers as expected.
    WaitHttp {
        /// URL.
        url: Template,
        /// Expected status; `None` accepts 200-399.
        expect_status: Option<u16>,
    },
    /// `init.run`: run a shell command; exit 0 is success.
    Run {
        /// Shell command line.
        command: Template,
    },
}

/// What a failed init step does to the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepFailure {
    /// Stop the sequence; it has failed (default).
    Fail,
    /// Log a warning and go on.
    Warn,
    /// Go on silently.
    Continue,
}

/// What happens when a replica's init sequence fails.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum InitFailurePolicy {
    /// The replica is `failed` (default).
    Fail,
    /// Run the sequence again after `delay`, at most `max_retries` times, then fail.
    Restart {
        /// Retries before failing.
        max_retries: u32,
        /// Delay between tries.
        delay: Duration,
    },
    /// Run the sequence again after an exponential delay, at most `max_retries` times.
    Backoff {
        /// Retries before failing.
        max_retries: u32,
        /// Delay schedule.
        backoff: Backoff,
    },
}

/// What happens when a replica exits unexpectedly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PanicAction {
    /// Restart it under the restart window (default).
    Restart,
    /// Stop the whole service; other services keep running.
    Shutdown,
    /// Keep the container for debugging, mark it not ready, tell the host.
    Isolate,
}

/// When replicas are restarted at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// Restart on every exit (default for services).
    Always,
    /// Restart on a non-zero exit or a signal (default for jobs).
    OnFailure,
    /// Never restart.
    Never,
}

/// Restart policy, restart window and crash-loop backoff.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RestartSpec {
    /// When to restart.
    pub policy: RestartPolicy,
    /// Restarts allowed inside `window` before backoff starts.
    pub max_restarts: u32,
    /// The sliding window restarts are counted in.
    pub window: Duration,
    /// Delay schedule once in backoff.
    pub backoff: Backoff,
    /// Clean running time after which the backoff resets.
    pub reset_after: Duration,
    /// Restarts after which the replica is `failed`; `None` never gives up.
    pub give_up_after: Option<u32>,
}

/// Exponential delay: `initial * multiplier^n`, capped at `max`, with `jitter`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Cap.
    pub max: Duration,
    /// Growth factor, >= 1.
    pub multiplier: f64,
    /// Relative jitter in 0..=1: the delay is scaled by a factor in [1 - jitter, 1 + jitter].
    pub jitter: f64,
}

/// A POSIX signal, by number, as named in the spec (`SIGTERM`, `TERM`, `15`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopSignal(pub i32);

impl StopSignal {
    /// SIGTERM.
    pub const TERM: StopSignal = StopSignal(15);
    /// SIGKILL.
    pub const KILL: StopSignal = StopSignal(9);

    /// Signals a spec may name, with their Linux numbers.
    pub const NAMES: &'static [(&'static str, i32)] = &[
        ("SIGHUP", 1),
        ("SIGINT", 2),
        ("SIGQUIT", 3),
        ("SIGKILL", 9),
        ("SIGUSR1", 10),
        ("SIGUSR2", 12),
        ("SIGTERM", 15),
        ("SIGWINCH", 28),
    ];

    /// Parse `SIGTERM`, `TERM` or a number from the list above.
    pub fn parse(s: &str) -> Option<StopSignal> {
        let upper = s.trim().to_ascii_uppercase();
        if let Ok(n) = upper.parse::<i32>() {
            return Self::NAMES
                .iter()
                .find(|(_, v)| *v == n)
                .map(|_| StopSignal(n));
        }
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == full)
            .map(|(_, n)| StopSignal(*n))
    }

    /// The signal's name, e.g. `SIGTERM`.
    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, n)| *n == self.0)
            .map(|(name, _)| *name)
            .unwrap_or("SIG?")
    }
}
