//! Prometheus metrics for `GET /metrics` (text exposition format 0.0.4): counters fed
//! by a task consuming the event stream, gauges and probe totals read from the status
//! board at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

use herdsman_core::{
    DeploymentStatus, Event, EventKind, EventStream, ProbeTotals, Received, ReplicaState,
    ServiceStatus, StatusBoard,
};
use tokio::sync::watch;

/// The content type of the exposition format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Counters per service, from events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct ServiceCounters {
    restarts: u64,
    backoffs: u64,
    exits: u64,
    start_failures: u64,
}

#[derive(Debug, Default)]
struct Counters {
    services: BTreeMap<String, ServiceCounters>,
    missed: u64,
}

/// The counters of one `herdsman run`. Cheap to share; every method takes `&self`.
#[derive(Debug)]
pub(crate) struct Metrics {
    counters: Mutex<Counters>,
}

impl Metrics {
    /// Counters at zero for each of `services`, so every series exists from the start.
    pub(crate) fn new<'a>(services: impl IntoIterator<Item = &'a str>) -> Metrics {
        let services = services
            .into_iter()
            .map(|s| (s.to_string(), ServiceCounters::default()))
            .collect();
        Metrics {
            counters: Mutex::new(Counters {
                services,
                missed: 0,
            }),
        }
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        // Every update is a few additions: a poisoned lock still holds sane numbers.
        self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Count what one event says.
    pub(crate) fn observe(&self, event: &Event) {
        let mut c = self.counters();
        let (service, field): (&str, fn(&mut ServiceCounters)) = match &event.kind {
            EventKind::ReplicaRestarting { service, .. } => (service, |s| {
                s.restarts = s.restarts.saturating_add(1);
            }),
            EventKind::BackOff { service, .. } => (service, |s| {
                s.backoffs = s.backoffs.saturating_add(1);
            }),
            EventKind::ReplicaExited { service, .. } => {
                (service, |s| s.exits = s.exits.saturating_add(1))
            }
            EventKind::StartFailed { service, .. } => (service, |s| {
                s.start_failures = s.start_failures.saturating_add(1);
            }),
            _ => return,
        };
        field(c.services.entry(service.to_string()).or_default());
    }

    /// Count events lost by lagging behind the bus.
    pub(crate) fn missed(&self, n: u64) {
        let mut c = self.counters();
        c.missed = c.missed.saturating_add(n);
    }

    /// Consume `events` into the counters until the deployment is gone or `stop` is set.
    pub(crate) async fn feed(&self, mut events: EventStream, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                r = events.recv() => match r {
                    Some(Received::Event(e)) => self.observe(&e),
                    Some(Received::Missed(n)) => self.missed(n),
                    None => return,
                },
                _ = crate::stop::stopped(&mut stop) => return,
            }
        }
    }

    /// The exposition text, from the board now and the counters.
    pub(crate) fn scrape(&self, board: &StatusBoard) -> String {
        let status = board.snapshot();
        let probes: Vec<(String, ProbeTotals)> = status
            .services
            .iter()
            .filter_map(|s| board.probe_totals(&s.name).map(|t| (s.name.clone(), t)))
            .collect();
        self.render(&status, &probes)
    }

    /// The exposition text: gauges from `status`, probe totals per service, counters.
    fn render(&self, status: &DeploymentStatus, probes: &[(String, ProbeTotals)]) -> String {
        let mut out = String::with_capacity(4096);
        // Gauges.
        header(
            &mut out,
            "herdsman_deployment_stable",
            "gauge",
            "1 when every service has its desired replicas running and healthy.",
        );
        let _ = writeln!(
            out,
            "herdsman_deployment_stable{{deployment=\"{}\"}} {}",
            escape(&status.deployment),
            u8::from(status.stable)
        );
        gauge_per_service(
            &mut out,
            status,
            "herdsman_service_desired",
            "Desired replicas of the service.",
            |s| u64::from(s.desired),
        );
        gauge_per_service(
            &mut out,
            status,
            "herdsman_service_running",
            "Replicas of the service whose process is running.",
            |s| u64::from(s.running),
        );
        gauge_per_service(
            &mut out,
            status,
            "herdsman_service_ready",
            "Replicas of the service running and healthy.",
            |s| u64::from(s.healthy),
        );
        header(
            &mut out,
            "herdsman_replicas",
            "gauge",
            "Replicas of the service in each state.",
        );
        for s in &status.services {
            for state in ReplicaState::ALL {
                let word = state.as_str();
                let n = s.replicas.iter().filter(|r| r.state == state).count();
                let _ = writeln!(
                    out,
                    "herdsman_replicas{{service=\"{}\",state=\"{word}\"}} {n}",
                    escape(&s.name)
                );
            }
        }

        // Counters from events.
        let counters = {
            let c = self.counters();
            (c.services.clone(), c.missed)
        };
        let (services, missed) = counters;
        let per_service =
            |out: &mut String, name: &str, help: &str, f: fn(&ServiceCounters) -> u64| {
                header(out, name, "counter", help);
                for (s, c) in &services {
                    let _ = writeln!(out, "{name}{{service=\"{}\"}} {}", escape(s), f(c));
                }
            };
        per_service(
            &mut out,
            "herdsman_restarts_total",
            "Restarts of the service's replicas.",
            |c| c.restarts,
        );
        per_service(
            &mut out,
            "herdsman_backoffs_total",
            "Times a replica of the service entered crash-loop backoff.",
            |c| c.backoffs,
        );
        per_service(
            &mut out,
            "herdsman_exits_total",
            "Exits of the service's replica processes, expected or not.",
            |c| c.exits,
        );
        per_service(
            &mut out,
            "herdsman_start_failures_total",
            "Times a replica of the service could not be created or started.",
            |c| c.start_failures,
        );

        // Probe totals from the board.
        header(
            &mut out,
            "herdsman_probe_results_total",
            "counter",
            "Health check results of the service's replicas, by outcome.",
        );
        for (s, t) in probes {
            for (outcome, n) in [
                ("success", t.success),
                ("failure", t.failure),
                ("unknown", t.unknown),
            ] {
                let _ = writeln!(
                    out,
                    "herdsman_probe_results_total{{service=\"{}\",outcome=\"{outcome}\"}} {n}",
                    escape(s)
                );
            }
        }
        header(
            &mut out,
            "herdsman_probe_duration_seconds",
            "summary",
            "Time the service's health checks took.",
        );
        for (s, t) in probes {
            let _ = writeln!(
                out,
                "herdsman_probe_duration_seconds_sum{{service=\"{}\"}} {}",
                escape(s),
                t.duration.as_secs_f64()
            );
            let _ = writeln!(
                out,
                "herdsman_probe_duration_seconds_count{{service=\"{}\"}} {}",
                escape(s),
                t.count()
            );
        }

        header(
            &mut out,
            "herdsman_events_missed_total",
            "counter",
            "Events the metrics lost by falling behind (counters above undercount by as many).",
        );
        let _ = writeln!(out, "herdsman_events_missed_total {missed}");
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge_per_service(
    out: &mut String,
    status: &DeploymentStatus,
    name: &str,
    help: &str,
    f: impl Fn(&ServiceStatus) -> u64,
) {
    header(out, name, "gauge", help);
    for s in &status.services {
        let _ = writeln!(out, "{name}{{service=\"{}\"}} {}", escape(&s.name), f(s));
    }
}

/// A label value as the exposition format wants it: `\`, `"` and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use herdsman_core::{ReplicaStatus, ServicePhase};

    use super::*;

    fn event(kind: EventKind) -> Event {
        Event {
            at_ms: 1,
            deployment: "shop".into(),
            kind,
        }
    }

    fn status() -> DeploymentStatus {
        let replica = |i, state| ReplicaStatus {
            replica: i,
            state,
            healthy: state == ReplicaState::Running,
            pid: Some(100 + i),
            restarts: 0,
            last_exit_code: None,
            last_exit: None,
            backoff_ms: None,
            container: None,
            last_error: None,
            probes: Vec::new(),
        };
        DeploymentStatus {
            deployment: "shop".into(),
            stable: false,
            rollout: None,
            services: vec![ServiceStatus {
                name: "web".into(),
                phase: ServicePhase::Running,
                reason: None,
                desired: 3,
                running: 2,
                healthy: 2,
                replicas: vec![
                    replica(0, ReplicaState::Running),
                    replica(1, ReplicaState::Running),
                    replica(2, ReplicaState::Backoff),
                ],
            }],
        }
    }

    #[test]
    fn counters_saturate_instead_of_wrapping() {
        let m = Metrics::new(["web"]);
        if let Some(c) = m.counters().services.get_mut("web") {
            c.restarts = u64::MAX;
        }
        m.missed(u64::MAX);
        m.missed(5);
        m.observe(&Event {
            at_ms: 1,
            deployment: "shop".into(),
            kind: EventKind::ReplicaRestarting {
                service: "web".into(),
                replica: 0,
                delay_ms: 0,
                restarts: 1,
            },
        });
        let c = m.counters();
        assert_eq!(c.services.get("web").map(|c| c.restarts), Some(u64::MAX));
        assert_eq!(c.missed, u64::MAX);
    }

    #[test]
    fn restart_and_backoff_events_feed_their_counters() {
        let m = Metrics::new(["web", "db"]);
        for _ in 0..2 {
            m.observe(&event(EventKind::ReplicaRestarting {
                service: "web".into(),
                replica: 2,
                delay_ms: 0,
                restarts: 1,
            }));
        }
        m.observe(&event(EventKind::BackOff {
            service: "web".into(),
            replica: 2,
            delay_ms: 1000,
        }));
        m.observe(&event(EventKind::DeploymentStopped));
        m.missed(3);
        let text = m.render(&status(), &[]);
        for line in [
            "herdsman_restarts_total{service=\"web\"} 2",
            "herdsman_restarts_total{service=\"db\"} 0",
            "herdsman_backoffs_total{service=\"web\"} 1",
            "herdsman_events_missed_total 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn gauges_and_probe_totals_come_out_in_exposition_format() {
        let m = Metrics::new(["web"]);
        let probes = [(
            "web".to_string(),
            ProbeTotals {
                success: 5,
                failure: 2,
                unknown: 0,
                duration: Duration::from_millis(70),
            },
        )];
        let text = m.render(&status(), &probes);
        for line in [
            "# TYPE herdsman_replicas gauge",
            "herdsman_replicas{service=\"web\",state=\"running\"} 2",
            "herdsman_replicas{service=\"web\",state=\"backoff\"} 1",
            "herdsman_replicas{service=\"web\",state=\"failed\"} 0",
            "herdsman_service_desired{service=\"web\"} 3",
            "herdsman_service_ready{service=\"web\"} 2",
            "herdsman_deployment_stable{deployment=\"shop\"} 0",
            "# TYPE herdsman_probe_results_total counter",
            "herdsman_probe_results_total{service=\"web\",outcome=\"failure\"} 2",
            "# TYPE herdsman_probe_duration_seconds summary",
            "herdsman_probe_duration_seconds_sum{service=\"web\"} 0.07",
            "herdsman_probe_duration_seconds_count{service=\"web\"} 7",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every sample line belongs to a family declared above it.
        let mut declared = Vec::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap_or_default().to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap_or_default();
                assert!(
                    declared.iter().any(|d| name.starts_with(d.as_str())),
                    "{name} has no TYPE line"
                );
            }
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
