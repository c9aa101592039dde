//! Metrics for `GET /metrics`, encoded by the `prometheus-client` crate (OpenMetrics
//! text, which Prometheus scrapes): counters fed by a task consuming the event stream,
//! gauges and probe totals read from the status board at scrape time, the notification
//! queue's counters; every series labelled with its `deployment`.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use herdsman_core::{
    DeploymentStatus, Event, EventKind, EventStream, ProbeTotals, Received, ReplicaState,
    RolloutPhase, StatusBoard,
};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::watch;

use crate::notify::Queue;

/// The content type of the exposition.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A label value, escaped as the exposition format wants it (`\`, `"`, newline).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Label(String);

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(&escape(&self.0))
    }
}

type ServiceLabels = Vec<(&'static str, Label)>;

fn service(name: &str) -> ServiceLabels {
    vec![("service", Label(name.to_string()))]
}

/// The counters of one `herdsman run`. Cheap to share; every method takes `&self`.
#[derive(Debug)]
pub(crate) struct Metrics {
    restarts: Family<ServiceLabels, Counter>,
    backoffs: Family<ServiceLabels, Counter>,
    exits: Family<ServiceLabels, Counter>,
    start_failures: Family<ServiceLabels, Counter>,
    rollouts: Family<ServiceLabels, Counter>,
    outcomes: Mutex<RolloutOutcomes>,
    missed: Counter,
    notify: OnceLock<Arc<Queue>>,
}

impl Metrics {
    /// Counters at zero for each of `services`, so every series exists from the start.
    pub(crate) fn new<'a>(services: impl IntoIterator<Item = &'a str>) -> Metrics {
        let m = Metrics {
            restarts: Family::default(),
            backoffs: Family::default(),
            exits: Family::default(),
            start_failures: Family::default(),
            rollouts: Family::default(),
            outcomes: Mutex::new(RolloutOutcomes::default()),
            missed: Counter::default(),
            notify: OnceLock::new(),
        };
        for outcome in RolloutOutcomes::ALL {
            let _ = m.rollouts.get_or_create(&outcome_label(outcome));
        }
        for s in services {
            let labels = service(s);
            for family in [&m.restarts, &m.backoffs, &m.exits, &m.start_failures] {
                let _ = family.get_or_create(&labels);
            }
        }
        m
    }

    /// Also expose the queue of `--notify`.
    pub(crate) fn watch_notifications(&self, queue: Arc<Queue>) {
        let _ = self.notify.set(queue);
    }

    /// Count what one event says.
    pub(crate) fn observe(&self, event: &Event) {
        let ended = self
            .outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(&event.kind);
        for outcome in ended {
            saturating_inc(&self.rollouts.get_or_create(&outcome_label(outcome)), 1);
        }
        let (name, family) = match &event.kind {
            EventKind::ReplicaRestarting { service, .. } => (service, &self.restarts),
            EventKind::BackOff { service, .. } => (service, &self.backoffs),
            EventKind::ReplicaExited { service, .. } => (service, &self.exits),
            EventKind::StartFailed { service, .. } => (service, &self.start_failures),
            _ => return,
        };
        saturating_inc(&family.get_or_create(&service(name)), 1);
    }

    /// Count events lost by lagging behind the bus.
    pub(crate) fn missed(&self, n: u64) {
        saturating_inc(&self.missed, n);
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
        self.render(status, probes)
    }

    /// The exposition text: gauges from `status`, probe totals per service, counters.
    fn render(&self, status: DeploymentStatus, probes: Vec<(String, ProbeTotals)>) -> String {
        let deployment = escape(&status.deployment);
        let mut registry = Registry::with_labels(
            [(Cow::Borrowed("deployment"), Cow::Owned(deployment))].into_iter(),
        );
        registry.register_collector(Box::new(BoardCollector { status, probes }));
        registry.register(
            "herdsman_restarts",
            "Restarts of the service's replicas",
            self.restarts.clone(),
        );
        registry.register(
            "herdsman_backoffs",
            "Times a replica of the service entered crash-loop backoff",
            self.backoffs.clone(),
        );
        registry.register(
            "herdsman_exits",
            "Exits of the service's replica processes, expected or not",
            self.exits.clone(),
        );
        registry.register(
            "herdsman_start_failures",
            "Times a replica of the service could not be created or started",
            self.start_failures.clone(),
        );
        registry.register(
            "herdsman_rollouts",
            "Rollouts that ended, by outcome: complete, failed, rolled_back (an automatic \
             rollback that completed), superseded (replaced by a later apply)",
            self.rollouts.clone(),
        );
        registry.register(
            "herdsman_events_missed",
            "Events the metrics lost by falling behind (counters above undercount by as many)",
            self.missed.clone(),
        );
        if let Some(queue) = self.notify.get() {
            registry.register_collector(Box::new(NotifyCollector(queue.clone())));
        }
        let mut out = String::with_capacity(4096);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

fn outcome_label(outcome: &'static str) -> ServiceLabels {
    vec![("outcome", Label(outcome.to_string()))]
}

/// How rollouts end, told from the event stream. Pure.
#[derive(Debug, Default)]
pub(crate) struct RolloutOutcomes {
    /// The rollout under way: whether it is an automatic rollback.
    open: Option<bool>,
}

impl RolloutOutcomes {
    /// Every outcome, so each series exists from the start.
    const ALL: [&'static str; 4] = ["complete", "failed", "rolled_back", "superseded"];

    /// The outcomes `kind` settles (a new rollout supersedes one still under way).
    pub(crate) fn observe(&mut self, kind: &EventKind) -> Vec<&'static str> {
        match kind {
            EventKind::RolloutStarted { revert, .. } => {
                let superseded = self.open.replace(*revert).map(|_| "superseded");
                superseded.into_iter().collect()
            }
            EventKind::RolloutComplete { .. } => match self.open.take() {
                Some(true) => vec!["rolled_back"],
                Some(false) => vec!["complete"],
                None => Vec::new(),
            },
            EventKind::RolloutFailed { .. } => {
                self.open = None;
                vec!["failed"]
            }
            _ => Vec::new(),
        }
    }
}

/// Add `n` to a counter, stopping at `u64::MAX` rather than wrapping to 0 (a counter
/// that goes back looks like a restart to Prometheus). Counters have one writer, the
/// feeding task, so reading then adding is exact.
fn saturating_inc(counter: &Counter, n: u64) {
    let room = u64::MAX - counter.get();
    counter.inc_by(n.min(room));
}

/// A gauge's value for one service.
type PerService = fn(&herdsman_core::ServiceStatus) -> u32;

/// Gauges and probe totals of one scrape, from a board snapshot.
#[derive(Debug)]
struct BoardCollector {
    status: DeploymentStatus,
    probes: Vec<(String, ProbeTotals)>,
}

impl Collector for BoardCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut m = encoder.encode_descriptor(
            "herdsman_deployment_stable",
            "1 when every service has its desired replicas running and healthy.",
            None,
            MetricType::Gauge,
        )?;
        m.encode_gauge(&i64::from(self.status.stable))?;
        let per_service: [(&str, &str, PerService); 3] = [
            (
                "herdsman_service_desired",
                "Desired replicas of the service.",
                |s| s.desired,
            ),
            (
                "herdsman_service_running",
                "Replicas of the service whose process is running.",
                |s| s.running,
            ),
            (
                "herdsman_service_ready",
                "Replicas of the service running and healthy.",
                |s| s.healthy,
            ),
        ];
        for (name, help, f) in per_service {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for s in &self.status.services {
                m.encode_family(&service(&s.name))?
                    .encode_gauge(&i64::from(f(s)))?;
            }
        }
        self.encode_rollout(&mut encoder)?;
        let mut m = encoder.encode_descriptor(
            "herdsman_replicas",
            "Replicas of the service in each state.",
            None,
            MetricType::Gauge,
        )?;
        for s in &self.status.services {
            for state in ReplicaState::ALL {
                let n = s.replicas.iter().filter(|r| r.state == state).count() as i64;
                let mut labels = service(&s.name);
                labels.push(("state", Label(state.as_str().to_string())));
                m.encode_family(&labels)?.encode_gauge(&n)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "herdsman_probe_results",
            "Health check results of the service's replicas, by outcome.",
            None,
            MetricType::Counter,
        )?;
        for (s, t) in &self.probes {
            for (outcome, n) in [
                ("success", t.success),
                ("failure", t.failure),
                ("unknown", t.unknown),
            ] {
                let mut labels = service(s);
                labels.push(("outcome", Label(outcome.to_string())));
                m.encode_family(&labels)?
                    .encode_counter::<ServiceLabels, _, u64>(&n, None)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "herdsman_probe_duration",
            "Time the service's health checks took.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (s, t) in &self.probes {
            m.encode_family(&service(s))?
                .encode_histogram::<ServiceLabels>(
                    t.duration.as_secs_f64(),
                    t.count(),
                    &[(f64::INFINITY, t.count())],
                    None,
                )?;
        }
        Ok(())
    }
}

impl BoardCollector {
    /// The latest rollout: its revision, its phase (one-hot) and each changed service's
    /// progress.
    fn encode_rollout(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rollout = self.status.rollout.as_ref();
        encoder
            .encode_descriptor(
                "herdsman_rollout_revision",
                "Spec revision of the latest rollout (1: the spec the run started with).",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&(rollout.map_or(1, |r| r.revision) as i64))?;
        let mut m = encoder.encode_descriptor(
            "herdsman_rollout_phase",
            "1 for the phase the latest rollout is in, 0 for the others (all 0 before any).",
            None,
            MetricType::Gauge,
        )?;
        for phase in [
            RolloutPhase::Progressing,
            RolloutPhase::Complete,
            RolloutPhase::Reverting,
            RolloutPhase::Reverted,
            RolloutPhase::Paused,
            RolloutPhase::Superseded,
        ] {
            let on = rollout.is_some_and(|r| r.phase == phase);
            m.encode_family(&vec![("phase", Label(phase.as_str().to_string()))])?
                .encode_gauge(&i64::from(on))?;
        }
        let progress: [(&str, &str, PerRollout); 2] = [
            (
                "herdsman_rollout_updated_replicas",
                "Replicas of the service running the latest rollout's spec and ready.",
                |s| s.updated,
            ),
            (
                "herdsman_rollout_desired_replicas",
                "Replicas of the service the latest rollout wants on its spec.",
                |s| s.desired,
            ),
        ];
        for (name, help, f) in progress {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for s in rollout.iter().flat_map(|r| &r.services) {
                m.encode_family(&service(&s.service))?
                    .encode_gauge(&i64::from(f(s)))?;
            }
        }
        Ok(())
    }
}

/// A rollout gauge's value for one service.
type PerRollout = fn(&herdsman_core::ServiceRollout) -> u32;

/// The notification queue's length and counters.
#[derive(Debug)]
struct NotifyCollector(Arc<Queue>);

impl Collector for NotifyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encoder
            .encode_descriptor(
                "herdsman_notify_queue_length",
                "Notifications waiting for the --notify receiver.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&(self.0.len() as i64))?;
        for (name, help, n) in [
            (
                "herdsman_notify_dropped",
                "Notifications dropped because the queue was full.",
                self.0.dropped(),
            ),
            (
                "herdsman_notify_sent",
                "Notifications the receiver accepted.",
                self.0.sent(),
            ),
            (
                "herdsman_notify_failed",
                "Notifications given up on after every attempt failed.",
                self.0.failed(),
            ),
        ] {
            encoder
                .encode_descriptor(name, help, None, MetricType::Counter)?
                .encode_counter::<ServiceLabels, _, u64>(&n, None)?;
        }
        Ok(())
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

    use herdsman_core::{ReplicaStatus, ServicePhase, ServiceStatus};

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
            state,
            healthy: state == ReplicaState::Running,
            pid: Some(100 + i),
            ..ReplicaStatus::new(i)
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
        m.missed(u64::MAX);
        m.missed(5);
        let restart = Event {
            at_ms: 1,
            deployment: "shop".into(),
            kind: EventKind::ReplicaRestarting {
                service: "web".into(),
                replica: 0,
                delay_ms: 0,
                restarts: 1,
            },
        };
        saturating_inc(&m.restarts.get_or_create(&service("web")), u64::MAX - 1);
        m.observe(&restart);
        m.observe(&restart);
        assert_eq!(m.restarts.get_or_create(&service("web")).get(), u64::MAX);
        assert_eq!(m.missed.get(), u64::MAX);
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
        let text = m.render(status(), vec![]);
        for line in [
            "herdsman_restarts_total{deployment=\"shop\",service=\"web\"} 2",
            "herdsman_restarts_total{deployment=\"shop\",service=\"db\"} 0",
            "herdsman_backoffs_total{deployment=\"shop\",service=\"web\"} 1",
            "herdsman_events_missed_total{deployment=\"shop\"} 3",
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
        let text = m.render(status(), probes.to_vec());
        for line in [
            "# TYPE herdsman_replicas gauge",
            "herdsman_replicas{deployment=\"shop\",service=\"web\",state=\"running\"} 2",
            "herdsman_replicas{deployment=\"shop\",service=\"web\",state=\"backoff\"} 1",
            "herdsman_replicas{deployment=\"shop\",service=\"web\",state=\"failed\"} 0",
            "herdsman_service_desired{deployment=\"shop\",service=\"web\"} 3",
            "herdsman_service_ready{deployment=\"shop\",service=\"web\"} 2",
            "herdsman_deployment_stable{deployment=\"shop\"} 0",
            "# TYPE herdsman_probe_results counter",
            "herdsman_probe_results_total{deployment=\"shop\",service=\"web\",outcome=\"failure\"} 2",
            "# TYPE herdsman_probe_duration_seconds histogram",
            "herdsman_probe_duration_seconds_sum{deployment=\"shop\",service=\"web\"} 0.07",
            "herdsman_probe_duration_seconds_count{deployment=\"shop\",service=\"web\"} 7",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics text ends with # EOF"
        );
        // Every sample line belongs to a family declared above it, and is labelled with
        // its deployment.
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
                assert!(l.contains("{deployment=\"shop\""), "{l}");
            }
        }
    }

    fn started(revert: bool) -> EventKind {
        EventKind::RolloutStarted {
            revision: 2,
            services: vec!["web".into()],
            revert,
        }
    }

    #[test]
    fn each_rollout_is_counted_once_by_how_it_ended() {
        let m = Metrics::new(["web"]);
        let failed = EventKind::RolloutFailed {
            revision: 2,
            reason: "web: crash looping".into(),
            reverting: true,
            failing: Vec::new(),
        };
        for kind in [
            started(false),
            EventKind::RolloutComplete { revision: 2 },
            started(false),
            failed,
            started(true),
            EventKind::RolloutComplete { revision: 4 },
            started(false),
            started(false),
        ] {
            m.observe(&event(kind));
        }
        let text = m.render(status(), vec![]);
        for line in [
            "herdsman_rollouts_total{deployment=\"shop\",outcome=\"complete\"} 1",
            "herdsman_rollouts_total{deployment=\"shop\",outcome=\"failed\"} 1",
            "herdsman_rollouts_total{deployment=\"shop\",outcome=\"rolled_back\"} 1",
            "herdsman_rollouts_total{deployment=\"shop\",outcome=\"superseded\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn the_latest_rollout_shows_its_revision_phase_and_progress() {
        let m = Metrics::new(["web"]);
        let before = m.render(status(), vec![]);
        assert!(before
            .lines()
            .any(|l| l == "herdsman_rollout_revision{deployment=\"shop\"} 1"));
        assert!(before
            .lines()
            .any(|l| l == "herdsman_rollout_phase{deployment=\"shop\",phase=\"progressing\"} 0"));
        let mut st = status();
        st.rollout = Some(herdsman_core::RolloutStatus {
            revision: 3,
            phase: RolloutPhase::Progressing,
            services: vec![herdsman_core::ServiceRollout {
                service: "web".into(),
                updated: 2,
                desired: 3,
                done: false,
            }],
            reason: None,
        });
        let text = m.render(st, vec![]);
        for line in [
            "herdsman_rollout_revision{deployment=\"shop\"} 3",
            "herdsman_rollout_phase{deployment=\"shop\",phase=\"progressing\"} 1",
            "herdsman_rollout_phase{deployment=\"shop\",phase=\"complete\"} 0",
            "herdsman_rollout_updated_replicas{deployment=\"shop\",service=\"web\"} 2",
            "herdsman_rollout_desired_replicas{deployment=\"shop\",service=\"web\"} 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let m = Metrics::new(["we\"b"]);
        let mut st = status();
        st.deployment = "sh\nop".into();
        let text = m.render(st, vec![]);
        assert!(
            text.contains("herdsman_restarts_total{deployment=\"sh\\nop\",service=\"we\\\"b\"} 0"),
            "{text}"
        );
    }
}
