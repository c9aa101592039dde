//! What a probe writes 100,000 times a second at scale, kept where it writes without a
//! board lookup: its replica's last results ([`ProbeLog`]) and its service's totals
//! ([`ProbeCounters`]). The board's rows and services hold the same handles and read them
//! when status is copied.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use herdsman_probe::Outcome;

use super::{ProbeRecord, ProbeTotals, PROBE_HISTORY};

/// One incarnation's last probe results, a ring of [`PROBE_HISTORY`] kept in place (no
/// allocation and no shifting per check).
#[derive(Debug)]
pub(crate) struct ProbeLog {
    /// The incarnation whose probe writes it.
    pub(super) generation: u64,
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    slots: [Option<ProbeRecord>; PROBE_HISTORY],
    /// The slot the next record goes to: the oldest one once the ring is full.
    next: usize,
}

impl ProbeLog {
    pub(crate) fn new(generation: u64) -> ProbeLog {
        ProbeLog {
            generation,
            ring: Mutex::new(Ring::default()),
        }
    }

    /// Keep `record`, forgetting the oldest when [`PROBE_HISTORY`] are kept.
    pub(crate) fn push(&self, record: ProbeRecord) {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let at = ring.next;
        ring.slots[at] = Some(record);
        ring.next = (at + 1) % PROBE_HISTORY;
    }

    /// The records kept, oldest first.
    pub(crate) fn records(&self) -> Vec<ProbeRecord> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        (0..PROBE_HISTORY)
            .filter_map(|k| ring.slots[(ring.next + k) % PROBE_HISTORY].clone())
            .collect()
    }
}

/// One service's health check results since the deployment started: counters that only
/// grow, shared by its probes.
#[derive(Debug, Default)]
pub(crate) struct ProbeCounters {
    success: AtomicU64,
    failure: AtomicU64,
    unknown: AtomicU64,
    /// Microseconds, not nanoseconds: a sum of nanoseconds could wrap within days at
    /// 100,000 replicas whose checks all wait out a 5 s timeout; this takes a decade.
    micros: AtomicU64,
}

impl ProbeCounters {
    /// Count one result that took `took`.
    pub(crate) fn record(&self, outcome: &Outcome, took: Duration) {
        let count = match outcome {
            Outcome::Success => &self.success,
            Outcome::Failure(_) => &self.failure,
            Outcome::Unknown(_) => &self.unknown,
        };
        count.fetch_add(1, Ordering::Relaxed);
        if !took.is_zero() {
            let micros = u64::try_from(took.as_nanos().div_ceil(1000)).unwrap_or(u64::MAX);
            self.micros.fetch_add(micros, Ordering::Relaxed);
        }
    }

    pub(crate) fn totals(&self) -> ProbeTotals {
        ProbeTotals {
            success: self.success.load(Ordering::Relaxed),
            failure: self.failure.load(Ordering::Relaxed),
            unknown: self.unknown.load(Ordering::Relaxed),
            duration: Duration::from_micros(self.micros.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::ProbeOutcome;

    fn record(at_ms: u64) -> ProbeRecord {
        ProbeRecord {
            at_ms,
            outcome: ProbeOutcome::Success,
            reason: None,
            duration_ms: 0,
            output: String::new(),
        }
    }

    #[test]
    fn a_probe_log_keeps_the_last_results_oldest_first() {
        let log = ProbeLog::new(1);
        assert!(log.records().is_empty());
        for at in 0..3 {
            log.push(record(at));
        }
        let at = |log: &ProbeLog| log.records().iter().map(|r| r.at_ms).collect::<Vec<_>>();
        assert_eq!(at(&log), vec![0, 1, 2]);
        for at in 3..(PROBE_HISTORY as u64 + 4) {
            log.push(record(at));
        }
        let last = PROBE_HISTORY as u64 + 4;
        assert_eq!(
            at(&log),
            ((last - PROBE_HISTORY as u64)..last).collect::<Vec<_>>()
        );
    }
}
