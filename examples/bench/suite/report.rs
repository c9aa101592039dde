//! Results: a distribution or a single value per measurement, each row of the performance
//! table with its floor, the verdict against the target, and the table printed as markdown.

use std::fmt;
use std::time::Duration;

use serde_json::json;

/// What a number measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Micros,
    Millis,
    KiB,
    MiB,
    Cores,
}

impl Unit {
    fn suffix(self) -> &'static str {
        match self {
            Unit::Micros => "µs",
            Unit::Millis => "ms",
            Unit::KiB => "KiB",
            Unit::MiB => "MiB",
            Unit::Cores => "cores",
        }
    }
}

/// A measured quantity: its median and 99th percentile (equal for a single value).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Measure {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) n: usize,
    pub(crate) unit: Unit,
}

impl Measure {
    /// One value, measured once.
    pub(crate) fn single(value: f64, unit: Unit) -> Measure {
        Measure {
            p50: value,
            p99: value,
            n: 1,
            unit,
        }
    }

    /// The median and nearest-rank 99th percentile of durations, in `unit` (µs or ms).
    pub(crate) fn of_durations(samples: &[Duration], unit: Unit) -> Measure {
        let scale = match unit {
            Unit::Micros => 1e6,
            _ => 1e3,
        };
        let values: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * scale).collect();
        Measure::of_values(values, unit)
    }

    /// The median and nearest-rank 99th percentile of `values`.
    pub(crate) fn of_values(mut values: Vec<f64>, unit: Unit) -> Measure {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        if n == 0 {
            return Measure {
                p50: f64::NAN,
                p99: f64::NAN,
                n,
                unit,
            };
        }
        let rank = |q: f64| values[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        Measure {
            p50: rank(0.5),
            p99: rank(0.99),
            n,
            unit,
        }
    }

    fn is_single(&self) -> bool {
        self.n <= 1 || self.p50 == self.p99
    }
}

fn number(v: f64) -> String {
    if !v.is_finite() {
        "—".to_string()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single() {
            write!(f, "{} {}", number(self.p50), self.unit.suffix())
        } else {
            write!(
                f,
                "{} / {} {}",
                number(self.p50),
                number(self.p99),
                self.unit.suffix()
            )
        }
    }
}

/// One row of the performance table.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// What is measured, as the design's table says it.
    pub(crate) what: String,
    /// The target, in words.
    pub(crate) target: &'static str,
    pub(crate) ours: Measure,
    /// What the floor is, in words.
    pub(crate) floor_what: String,
    pub(crate) floor: Option<Measure>,
    /// Met or missed; `None` when the target does not apply (quick mode, no floor).
    pub(crate) met: Option<bool>,
    /// How it was measured, and what dominates.
    pub(crate) notes: String,
}

impl Row {
    /// `ours / floor`, median and p99.
    pub(crate) fn ratio(&self) -> Option<(f64, f64)> {
        let floor = self.floor?;
        Some((self.ours.p50 / floor.p50, self.ours.p99 / floor.p99))
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        json!({
            "what": self.what,
            "target": self.target,
            "ours": {"p50": self.ours.p50, "p99": self.ours.p99, "n": self.ours.n, "unit": self.ours.unit.suffix()},
            "floor_what": self.floor_what,
            "floor": self.floor.map(|f| json!({"p50": f.p50, "p99": f.p99, "n": f.n, "unit": f.unit.suffix()})),
            "ratio": self.ratio().map(|(a, b)| json!({"p50": a, "p99": b})),
            "met": self.met,
            "notes": self.notes,
        })
    }
}

/// The rows as a markdown table: median / p99 where there is a distribution.
pub(crate) fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| what | target | ours (p50 / p99) | floor | floor (p50 / p99) | ours ÷ floor | verdict |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let floor = r.floor.map_or_else(|| "—".to_string(), |f| f.to_string());
        let ratio = match r.ratio() {
            Some((a, _)) if r.ours.is_single() => format!("{a:.2}×"),
            Some((a, b)) => format!("{a:.2}× / {b:.2}×"),
            None => "—".to_string(),
        };
        let verdict = match r.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "—",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.what, r.target, r.ours, r.floor_what, floor, ratio, verdict
        ));
    }
    out
}
