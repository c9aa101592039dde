//! Crash-loop delay schedule: the exponent and a seeded RNG around the probe crate's
//! pure `backoff_delay` formula.

use std::time::Duration;

use herdsman_spec::Backoff;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// `initial * multiplier^n`, capped at `max`, scaled by a factor in `[1-jitter, 1+jitter]`.
#[derive(Debug, Clone)]
pub(crate) struct BackoffSchedule {
    spec: Backoff,
    attempt: u32,
    rng: SmallRng,
}

impl BackoffSchedule {
    pub(crate) fn new(spec: Backoff, seed: u64) -> BackoffSchedule {
        BackoffSchedule {
            spec,
            attempt: 0,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// The next delay; each call grows the exponent by one.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let unit: f64 = self.rng.random();
        let delay = herdsman_probe::backoff_delay(&self.spec, self.attempt, unit);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// Start again from `initial`.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many delays were handed out since the last reset.
    #[cfg(test)]
    pub(crate) fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(jitter: f64) -> Backoff {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter,
        }
    }

    #[test]
    fn delays_double_up_to_the_cap_and_reset_to_initial() {
        let mut b = BackoffSchedule::new(spec(0.0), 1);
        let got: Vec<u64> = (0..6).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 10, 10]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_inside_its_band_and_is_seeded() {
        let mut a = BackoffSchedule::new(spec(0.5), 7);
        let mut b = BackoffSchedule::new(spec(0.5), 7);
        for n in 0..3 {
            let d = a.next_delay();
            assert_eq!(d, b.next_delay(), "same seed, same delays");
            let base = 2f64.powi(n);
            assert!(d.as_secs_f64() >= base * 0.5 && d.as_secs_f64() <= base * 1.5);
        }
    }
}
