//! Exponential delay with a cap and jitter, from an injectable RNG.

use std::time::Duration;

use herdsman_spec::Backoff;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// `initial * multiplier^n`, capped at `max`, scaled by a factor in `[1-jitter, 1+jitter]`
/// (and capped again, so `max` is never exceeded).
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
        let base = self.spec.initial.as_secs_f64()
            * self.spec.multiplier.powi(self.attempt.min(64) as i32);
        let capped = base.min(self.spec.max.as_secs_f64());
        self.attempt = self.attempt.saturating_add(1);
        let factor = if self.spec.jitter > 0.0 {
            1.0 + self.rng.random_range(-self.spec.jitter..=self.spec.jitter)
        } else {
            1.0
        };
        let secs = (capped * factor).clamp(0.0, self.spec.max.as_secs_f64());
        Duration::from_secs_f64(secs)
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
