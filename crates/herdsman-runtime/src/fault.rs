//! Fault profiles: how the simulated containers of one service live, fail and answer
//! probes, and the seeded randomness behind every simulated decision.

use std::time::Duration;

use herdsman_probe::Outcome;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::ContainerId;

/// How long a simulated container runs before it exits by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lifetime {
    /// It never exits by itself (default). Costs no timer.
    #[default]
    Forever,
    /// It exits exactly this long after it started. `Fixed(Duration::ZERO)` exits at the
    /// instant of its start: the exit watch `start` returns has already resolved, so the
    /// exit races the caller's own report that it started.
    Fixed(Duration),
    /// It exits after an exponentially distributed time: a constant crash rate.
    Exponential {
        /// Mean time to exit.
        mean: Duration,
    },
}

/// How a simulated container answers health checks, timed from its start.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum HealthBehaviour {
    /// Every check succeeds (default).
    #[default]
    Healthy,
    /// Checks fail until this long after the start, then succeed.
    HealthyAfter(Duration),
    /// Each check fails with probability `p_fail`, independently.
    Flaky {
        /// Probability that one check fails, 0..=1.
        p_fail: f64,
    },
    /// Checks succeed until this long after the start, then fail.
    UnhealthyAfter(Duration),
    /// Every check fails.
    Never,
}

/// How commands run with [`Runtime::exec`](crate::Runtime::exec) in a simulated container
/// end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExecBehaviour {
    /// Probability that a command fails, 0..=1 (default 0).
    pub p_fail: f64,
    /// Exit code of a failing command (default 1).
    pub fail_code: i32,
    /// How long a command takes (default 0); longer than the exec timeout means it times out.
    pub duration: Duration,
}

impl Default for ExecBehaviour {
    fn default() -> ExecBehaviour {
        ExecBehaviour {
            p_fail: 0.0,
            fail_code: 1,
            duration: Duration::ZERO,
        }
    }
}

/// Everything a [`SimRuntime`](crate::SimRuntime) does to the containers of one service.
///
/// The default is a well-behaved service: it runs forever, is healthy at once, never fails
/// to start, stops at once, and its exec commands and init steps succeed. Override what a
/// scenario needs:
///
/// ```
/// use std::time::Duration;
/// use herdsman_runtime::{FaultProfile, HealthBehaviour, Lifetime};
///
/// let crashy = FaultProfile {
///     lifetime: Lifetime::Exponential { mean: Duration::from_secs(30) },
///     exit_codes: vec![1, 137],
///     health: HealthBehaviour::HealthyAfter(Duration::from_secs(2)),
///     ..FaultProfile::default()
/// };
/// # let _ = crashy;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FaultProfile {
    /// How long each container runs before exiting by itself.
    pub lifetime: Lifetime,
    /// Exit codes of self-inflicted exits, one picked at random per exit (default `[1]`;
    /// empty means 1).
    pub exit_codes: Vec<i32>,
    /// Probability that a start fails, 0..=1.
    pub start_failure: f64,
    /// How long `start` takes before the container runs (or fails to start).
    pub start_latency: Duration,
    /// The container ignores the stop signal: `stop` ends it with SIGKILL only after the
    /// grace period (unless it exits by itself first).
    pub stop_hangs: bool,
    /// How health checks are answered.
    pub health: HealthBehaviour,
    /// How exec commands end.
    pub exec: ExecBehaviour,
    /// Probability that one try of an init step fails, 0..=1; the step's retries are
    /// honoured.
    pub init_failure: f64,
    /// How long one try of an init step takes. A try longer than the step's `timeout`
    /// fails as timed out, at the timeout, as a real step's would.
    pub init_latency: Duration,
    /// Init steps never return, whatever their timeout, until the caller drops them: a
    /// backend that hangs, to prove an init task is cancelled rather than left running.
    pub init_hangs: bool,
}

impl Default for FaultProfile {
    fn default() -> FaultProfile {
        FaultProfile {
            lifetime: Lifetime::Forever,
            exit_codes: vec![1],
            start_failure: 0.0,
            start_latency: Duration::ZERO,
            stop_hangs: false,
            health: HealthBehaviour::Healthy,
            exec: ExecBehaviour::default(),
            init_failure: 0.0,
            init_latency: Duration::ZERO,
            init_hangs: false,
        }
    }
}

/// The independent random streams of one container. Each decision draws from its own
/// stream, indexed by a per-container counter, so the outcome of a start never depends on
/// how many health checks ran before it, nor on what other containers did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Start = 1,
    Lifetime = 2,
    ExitCode = 3,
    Health = 4,
    Exec = 5,
    Init = 6,
}

/// The generator for the `n`-th draw of `stream` of container `id` under `seed`.
///
/// Built from a hash fixed here (FNV-1a, then a splitmix64 finish) rather than std's
/// `DefaultHasher`, whose output may change between Rust releases: a seed must replay the
/// same simulation on any toolchain.
pub(crate) fn rng_for(seed: u64, id: &ContainerId, stream: Stream, salt: &str, n: u64) -> SmallRng {
    let mut h = Fnv::new(seed);
    h.bytes(id.deployment.as_bytes());
    h.bytes(id.service.as_bytes());
    h.word(u64::from(id.replica));
    h.word(id.generation);
    h.word(stream as u64);
    h.bytes(salt.as_bytes());
    h.word(n);
    SmallRng::seed_from_u64(splitmix64(h.0))
}

struct Fnv(u64);

impl Fnv {
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new(seed: u64) -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325 ^ splitmix64(seed))
    }

    fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(Self::PRIME);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.byte(*b);
        }
        // A terminator, so ("ab", "c") and ("a", "bc") hash apart.
        self.byte(0xff);
    }

    fn word(&mut self, w: u64) {
        for b in w.to_le_bytes() {
            self.byte(b);
        }
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// True with probability `p`; `p` outside 0..=1 (or NaN) is clamped rather than a panic.
pub(crate) fn chance(rng: &mut impl Rng, p: f64) -> bool {
    if p.is_nan() || p <= 0.0 {
        false
    } else if p >= 1.0 {
        true
    } else {
        rng.random_bool(p)
    }
}

impl Lifetime {
    /// How long one container runs; `None` for forever.
    pub(crate) fn sample(&self, rng: &mut impl Rng) -> Option<Duration> {
        match *self {
            Lifetime::Forever => None,
            Lifetime::Fixed(d) => Some(d),
            Lifetime::Exponential { mean } => {
                // Inverse CDF; 1 - u is in (0, 1], so the logarithm is finite.
                let u: f64 = rng.random();
                let factor = -(1.0 - u).ln();
                Duration::try_from_secs_f64(mean.as_secs_f64() * factor).ok()
            }
        }
    }
}

impl FaultProfile {
    /// The exit code of one self-inflicted exit.
    pub(crate) fn exit_code(&self, rng: &mut impl Rng) -> i32 {
        match self.exit_codes.len() {
            0 => 1,
            1 => self.exit_codes[0],
            n => self.exit_codes[rng.random_range(0..n)],
        }
    }
}

impl HealthBehaviour {
    /// The verdict of one check made `elapsed()` after the container started. `elapsed`
    /// and `rng` are asked for only by a behaviour that needs them (seeding an rng per
    /// check is most of a simulated check's cost; reading the clock is a tenth of it).
    pub(crate) fn verdict<R: Rng>(
        &self,
        elapsed: impl FnOnce() -> Duration,
        rng: impl FnOnce() -> R,
    ) -> Outcome {
        match *self {
            HealthBehaviour::Healthy => Outcome::Success,
            HealthBehaviour::HealthyAfter(d) => match elapsed() >= d {
                true => Outcome::Success,
                false => Outcome::Failure("not ready yet".into()),
            },
            HealthBehaviour::Flaky { p_fail } if chance(&mut rng(), p_fail) => {
                Outcome::Failure("flaky check failed".into())
            }
            HealthBehaviour::Flaky { .. } => Outcome::Success,
            HealthBehaviour::UnhealthyAfter(d) => match elapsed() < d {
                true => Outcome::Success,
                false => Outcome::Failure("turned unhealthy".into()),
            },
            HealthBehaviour::Never => Outcome::Failure("never healthy".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ContainerId {
        ContainerId::new("d", "s", 0, 0)
    }

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let draw = |stream, n| rng_for(7, &id(), stream, "", n).random::<u64>();
        assert_eq!(draw(Stream::Start, 0), draw(Stream::Start, 0));
        assert_ne!(draw(Stream::Start, 0), draw(Stream::Start, 1));
        assert_ne!(draw(Stream::Start, 0), draw(Stream::Health, 0));
        let other_seed = rng_for(8, &id(), Stream::Start, "", 0).random::<u64>();
        assert_ne!(draw(Stream::Start, 0), other_seed);
    }

    #[test]
    fn out_of_range_probabilities_are_clamped() {
        let mut rng = SmallRng::seed_from_u64(1);
        assert!(!chance(&mut rng, f64::NAN));
        assert!(!chance(&mut rng, -1.0));
        assert!(chance(&mut rng, 2.0));
    }

    #[test]
    fn health_verdicts_follow_the_clock_from_start() {
        let rng = SmallRng::seed_from_u64(1);
        let s = Duration::from_secs;
        let cases = [
            (HealthBehaviour::Healthy, s(0), true),
            (HealthBehaviour::HealthyAfter(s(5)), s(4), false),
            (HealthBehaviour::HealthyAfter(s(5)), s(5), true),
            (HealthBehaviour::UnhealthyAfter(s(5)), s(4), true),
            (HealthBehaviour::UnhealthyAfter(s(5)), s(5), false),
            (HealthBehaviour::Flaky { p_fail: 0.0 }, s(1), true),
            (HealthBehaviour::Flaky { p_fail: 1.0 }, s(1), false),
            (HealthBehaviour::Never, s(100), false),
        ];
        for (behaviour, elapsed, healthy) in cases {
            assert_eq!(
                behaviour.verdict(|| elapsed, || rng.clone()).is_success(),
                healthy,
                "{behaviour:?} at {elapsed:?}"
            );
        }
    }

    #[test]
    fn an_empty_exit_code_list_means_one() {
        let mut rng = SmallRng::seed_from_u64(1);
        let profile = FaultProfile {
            exit_codes: Vec::new(),
            ..FaultProfile::default()
        };
        assert_eq!(profile.exit_code(&mut rng), 1);
    }
}
