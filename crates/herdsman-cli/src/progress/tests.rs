//! The console's tests: service lines, plain-line and terminal output, stability news and
//! the timeout report.

use std::sync::{Arc, Mutex};

use herdsman_core::{FailingReplica, ReplicaStatus, ServicePhase, ServiceStatus};

use super::*;

fn replica(i: u32, state: ReplicaState, healthy: bool) -> ReplicaStatus {
    ReplicaStatus {
        state,
        healthy,
        ..ReplicaStatus::new(i)
    }
}

fn service(name: &str, desired: u32, replicas: Vec<ReplicaStatus>) -> ServiceStatus {
    ServiceStatus {
        name: name.into(),
        phase: ServicePhase::Running,
        reason: None,
        desired,
        running: replicas.iter().filter(|r| r.state.is_running()).count() as u32,
        healthy: replicas.iter().filter(|r| r.is_ready()).count() as u32,
        replicas,
    }
}

#[test]
fn a_service_line_counts_ready_replicas_and_says_what_the_others_do() {
    let s = service(
        "web",
        3,
        vec![
            replica(0, ReplicaState::Running, true),
            replica(1, ReplicaState::Running, false),
            replica(2, ReplicaState::Backoff, false),
        ],
    );
    assert_eq!(
        service_line(&s),
        "web: 1 of 3 replicas ready (1 in backoff, 1 not healthy yet)"
    );
    let done = service(
        "migrate",
        1,
        vec![replica(0, ReplicaState::Completed, false)],
    );
    assert_eq!(service_line(&done), "migrate: 1 of 1 replicas completed");
    let mut waiting = service("web", 2, vec![]);
    waiting.phase = ServicePhase::Waiting;
    waiting.reason = Some("waiting for migrate (healthy)".into());
    assert_eq!(
        service_line(&waiting),
        "web: 0 of 2 replicas ready (waiting for migrate (healthy))"
    );
}

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink {
    fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[tokio::test]
async fn without_a_terminal_progress_prints_a_line_only_when_a_service_changes() {
    let sink = Sink::default();
    let mut console = Console::new(Box::new(sink.clone()), false, "shop");
    let mut status = DeploymentStatus {
        deployment: "shop".into(),
        stable: false,
        rollout: None,
        services: vec![service(
            "web",
            2,
            vec![replica(0, ReplicaState::Starting, false)],
        )],
    };
    console.progress(&status);
    console.progress(&status);
    status.services[0] = service(
        "web",
        2,
        vec![
            replica(0, ReplicaState::Running, true),
            replica(1, ReplicaState::Running, true),
        ],
    );
    status.stable = true;
    console.stable(&status, Duration::from_millis(1200));
    assert_eq!(
        sink.text(),
        "Waiting for deployment \"shop\": web: 0 of 2 replicas ready (1 starting)\n\
         Waiting for deployment \"shop\": web: 2 of 2 replicas ready\n\
         deployment \"shop\" is stable (1 service, 2 replicas) after 1.2s\n"
    );
    assert!(!sink.text().contains('\x1b'), "no escape codes in a pipe");
}

use crate::test_terminal::Window;

fn terminal_console(window: &Window) -> Console {
    // As fast as the library allows: every draw of the test is shown.
    let target = ProgressDrawTarget::term_like_with_hz(Box::new(window.clone()), u8::MAX);
    let seen = window.clone();
    let width = Box::new(move || indicatif::TermLike::width(&seen));
    Console::on_terminal(target, width, false, "shop")
}

fn converging() -> DeploymentStatus {
    DeploymentStatus {
        deployment: "shop".into(),
        stable: false,
        rollout: None,
        services: vec![
            service(
                "web",
                3,
                vec![
                    replica(0, ReplicaState::Running, true),
                    replica(1, ReplicaState::Running, false),
                    replica(2, ReplicaState::Backoff, false),
                ],
            ),
            service("db", 1, vec![replica(0, ReplicaState::Starting, false)]),
        ],
    }
}

fn count(rows: &[String], needle: &str) -> usize {
    rows.iter().filter(|r| r.contains(needle)).count()
}

#[tokio::test]
async fn on_a_narrow_terminal_the_block_never_wraps_and_leaves_no_stale_line() {
    let window = Window::new(30, 40);
    let mut console = terminal_console(&window);
    let status = converging();
    for i in 0..4 {
        console.progress(&status);
        // Longer than the terminal is wide: it wraps, as a line that stays may.
        console.line(&format!(
            "event {i}: web/2 is crash looping: backing off 2.0s, then more"
        ));
    }
    console.progress(&status);
    let rows = window.rows();
    assert_eq!(
        count(&rows, "Waiting for deployment"),
        1,
        "one header, none stale:\n{}",
        rows.join("\n")
    );
    assert_eq!(count(&rows, "  web: 1 of 3"), 1, "{}", rows.join("\n"));
    assert_eq!(count(&rows, "  db: 0 of 1"), 1, "{}", rows.join("\n"));
    for i in 0..4 {
        assert_eq!(
            count(&rows, &format!("event {i}: web/2")),
            1,
            "{}",
            rows.join("\n")
        );
    }
    // The block is last, below every event, each of its lines on one row.
    let header = rows
        .iter()
        .position(|r| r.contains("Waiting for deployment"))
        .expect("a header");
    let last_event = rows
        .iter()
        .rposition(|r| r.contains("event 3"))
        .expect("the last event");
    assert!(header > last_event, "{}", rows.join("\n"));
    assert!(
        rows[header + 1].starts_with("  web: 1 of 3"),
        "{}",
        rows.join("\n")
    );
    assert!(
        rows[header + 2].starts_with("  db: 0 of 1"),
        "{}",
        rows.join("\n")
    );
}

#[tokio::test]
async fn a_width_change_between_draws_gives_lines_of_the_new_width() {
    let window = Window::new(30, 80);
    let mut console = terminal_console(&window);
    let status = converging();
    console.progress(&status);
    window.resize(24);
    console.line("resized");
    console.progress(&status);
    let rows = window.rows();
    assert_eq!(
        count(&rows, "Waiting for deployment"),
        1,
        "{}",
        rows.join("\n")
    );
    let web = rows
        .iter()
        .find(|r| r.starts_with("  web: "))
        .unwrap_or_else(|| panic!("no web line in\n{}", rows.join("\n")));
    assert!(
        console::measure_text_width(web) <= 24,
        "cut to the new width: {web:?}"
    );
    window.resize(80);
    console.line("wider again");
    console.progress(&status);
    let rows = window.rows();
    assert_eq!(
        count(&rows, "Waiting for deployment"),
        1,
        "{}",
        rows.join("\n")
    );
    assert!(
        rows.iter()
            .any(|r| r == "  web: 1 of 3 replicas ready (1 in backoff, 1 not healthy yet)"),
        "whole again at 80 columns:\n{}",
        rows.join("\n")
    );
    console.stable(&status, Duration::from_secs(1));
    let rows = window.rows();
    assert_eq!(
        count(&rows, "Waiting for deployment"),
        0,
        "{}",
        rows.join("\n")
    );
    assert_eq!(count(&rows, "is stable (2 services, 4 replicas)"), 1);
}

#[tokio::test]
async fn watching_reports_lost_and_regained_stability_once_each() {
    let sink = Sink::default();
    let mut console = Console::new(Box::new(sink.clone()), false, "shop");
    let ready = service("web", 1, vec![replica(0, ReplicaState::Running, true)]);
    let mut status = DeploymentStatus {
        deployment: "shop".into(),
        stable: true,
        rollout: None,
        services: vec![ready.clone()],
    };
    console.stable(&status, Duration::from_secs(1));
    console.watch(&status);
    status.stable = false;
    status.services[0] = service("web", 1, vec![replica(0, ReplicaState::Backoff, false)]);
    console.lost(&status);
    console.watch(&status);
    status.stable = true;
    status.services[0] = ready;
    console.regained(&status, Duration::from_secs(3));
    console.regained(&status, Duration::from_secs(3));
    let text = sink.text();
    assert_eq!(
        text.matches("is not stable: web 0/1 ready").count(),
        1,
        "{text}"
    );
    assert_eq!(text.matches("is stable again").count(), 1, "{text}");
    assert!(text.ends_with("deployment \"shop\" is stable again (1 service, 1 replica)\n"));
}

#[tokio::test]
async fn after_a_timeout_the_first_stability_is_announced_with_its_time() {
    let sink = Sink::default();
    let mut console = Console::new(Box::new(sink.clone()), false, "shop");
    let mut status = DeploymentStatus {
        deployment: "shop".into(),
        stable: false,
        rollout: None,
        services: vec![service("web", 1, vec![])],
    };
    console.timed_out(&status, Duration::from_secs(2), &[]);
    status.stable = true;
    status.services[0] = service("web", 1, vec![replica(0, ReplicaState::Running, true)]);
    console.regained(&status, Duration::from_millis(4500));
    assert!(sink
        .text()
        .ends_with("deployment \"shop\" is stable (1 service, 1 replica) after 4.5s\n"));
}

#[tokio::test]
async fn log_tails_and_reasons_reach_the_console_escaped() {
    let sink = Sink::default();
    let mut console = Console::new(Box::new(sink.clone()), false, "shop");
    let failing = vec![FailingService {
        service: "bad".into(),
        desired: 1,
        running: 1,
        healthy: 0,
        reason: "0/1 ready".into(),
        replicas: vec![FailingReplica {
            replica: 0,
            state: ReplicaState::Running,
            reason: "unhealthy: \x1b[8m".into(),
            log_tail: vec!["\x1b]0;owned\x07\x1b[2J".into()],
        }],
    }];
    let status = DeploymentStatus {
        deployment: "shop".into(),
        stable: false,
        rollout: None,
        services: vec![service("bad\x1b[1A", 1, vec![])],
    };
    console.timed_out(&status, Duration::from_secs(3), &failing);
    console.line("web/0 said \x1b[2J");
    let text = sink.text();
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
    assert!(
        text.contains("      | \\x1b]0;owned\\x07\\x1b[2J\n"),
        "{text:?}"
    );
    assert!(
        text.contains("bad\\x1b[1A: 0 of 1 replicas ready"),
        "{text:?}"
    );
    assert!(text.ends_with("web/0 said \\x1b[2J\n"), "{text:?}");
}

#[test]
fn the_timeout_report_names_each_failing_replica_with_its_log_tail() {
    let failing = vec![FailingService {
        service: "bad".into(),
        desired: 1,
        running: 1,
        healthy: 0,
        reason: "0/1 ready: 1 unhealthy".into(),
        replicas: vec![FailingReplica {
            replica: 0,
            state: ReplicaState::Running,
            reason: "unhealthy: HTTP 503".into(),
            log_tail: vec!["healthz -> 503".into()],
        }],
    }];
    let report = timeout_report("shop", Duration::from_secs(3), &failing);
    assert_eq!(
        report,
        "deployment \"shop\" is NOT stable after 3.0s: 1 service not ready\n\
         \x20 service bad: 0/1 ready: 1 unhealthy (1 desired, 1 running, 0 healthy)\n\
         \x20   bad/0: unhealthy: HTTP 503\n\
         \x20     last 1 line of output:\n\
         \x20     | healthz -> 503\n"
    );
}
