//! Init steps against real sockets and processes, on the real clock.

mod support;

use std::time::Duration;

use herdsman_probe::{run_sequence, run_step, SequenceOutcome, StepVerdict};
use herdsman_spec::{InitAction, InitStep, ReplicaVars, StepFailure, Template};
use support::{closed_port, temp_path, wait_group_gone, TestServer};
use tokio::net::TcpListener;
use tokio::time::Instant;

fn vars(port: u16) -> ReplicaVars {
    ReplicaVars {
        deployment: "shop".into(),
        service: "api".into(),
        replica: 2,
        ports: vec![("HTTP".into(), port)],
    }
}

fn step(id: &str, action: InitAction, timeout_ms: u64, retry: u32) -> InitStep {
    InitStep {
        id: id.into(),
        action,
        timeout: Duration::from_millis(timeout_ms),
        retry,
        on_failure: StepFailure::Fail,
    }
}

fn template(s: &str) -> Template {
    Template::parse(s).expect("valid template")
}

fn run(line: &str) -> InitAction {
    InitAction::Run {
        command: template(line),
    }
}

#[tokio::test]
async fn wait_tcp_succeeds_once_the_port_opens() {
    let port = closed_port().await;
    let opener = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let l = TcpListener::bind(("127.0.0.1", port)).await;
        // Keep it open long enough for the step to connect.
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(l);
    });
    let s = step(
        "wait-db",
        InitAction::WaitTcp {
            host: template("127.0.0.1"),
            port: template("${PORT}"),
        },
        5000,
        0,
    );
    let r = run_step(&s, &vars(port)).await;
    opener.abort();
    assert!(r.ok, "{r:?}");
    assert_eq!(r.attempts, 1);
    assert!(r.duration >= Duration::from_millis(300) && r.duration < Duration::from_secs(3));
}

#[tokio::test]
async fn wait_tcp_on_a_closed_port_is_retried_then_fails_with_the_reason() {
    let port = closed_port().await;
    let s = step(
        "wait-db",
        InitAction::WaitTcp {
            host: template("127.0.0.1"),
            port: template("${PORT}"),
        },
        300,
        2,
    );
    let started = Instant::now();
    let r = run_step(&s, &vars(port)).await;
    assert!(!r.ok);
    assert_eq!(r.attempts, 3);
    let error = r.error.clone().unwrap_or_default();
    assert!(
        error.starts_with("not ready after") && error.contains("refused"),
        "{error}"
    );
    // Three tries of about 225 ms (the last check starts 75 ms before the end of a 300 ms
    // try), with pauses of 100 and 200 ms between them.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(r.verdict(s.on_failure), StepVerdict::Failed);
}

#[tokio::test]
async fn wait_http_waits_for_the_expected_status() {
    let server = TestServer::start().await;
    let url = |path: &str| template(&format!("http://127.0.0.1:${{PORT}}{path}"));
    let vars = vars(server.addr.port());
    let ok = step(
        "wait-api",
        InitAction::WaitHttp {
            url: url("/ok"),
            expect_status: Some(200),
        },
        2000,
        0,
    );
    let r = run_step(&ok, &vars).await;
    assert!(r.ok, "{r:?}");
    let down = step(
        "wait-api",
        InitAction::WaitHttp {
            url: url("/unavailable"),
            expect_status: None,
        },
        300,
        0,
    );
    let r = run_step(&down, &vars).await;
    assert!(!r.ok);
    let error = r.error.as_deref().unwrap_or_default();
    assert!(error.contains("status 503"), "{error}");
    assert!(error.ends_with("; output: down"), "{error}");
}

#[tokio::test]
async fn init_run_sees_the_replica_variables() {
    let s = step(
        "show",
        run("test \"port=${PORT} replica=$REPLICA service=$SERVICE\" = port=8082\\ replica=2\\ service=api"),
        2000,
        0,
    );
    let r = run_step(&s, &vars(8082)).await;
    assert!(r.ok, "{r:?}");
}

#[tokio::test]
async fn init_run_is_really_retried_until_it_succeeds() {
    let marker = temp_path("retry-marker");
    let _ = std::fs::remove_file(&marker);
    let m = marker.display();
    let line = format!("if [ -f {m} ]; then exit 0; else touch {m}; exit 1; fi");
    let r = run_step(&step("migrate", run(&line), 2000, 3), &vars(1)).await;
    let _ = std::fs::remove_file(&marker);
    assert!(r.ok, "{r:?}");
    assert_eq!(r.attempts, 2);
}

#[tokio::test]
async fn init_run_past_its_timeout_is_killed_with_everything_it_started() {
    let s = step("hang", run("echo $$; sleep 60 & sleep 60"), 300, 0);
    let started = Instant::now();
    let r = run_step(&s, &vars(1)).await;
    assert!(!r.ok);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        r.error
            .as_deref()
            .unwrap_or_default()
            .starts_with("timed out after 3"),
        "{r:?}"
    );
    let error = r.error.clone().unwrap_or_default();
    let pgid: i32 = error
        .rsplit("output: ")
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {error:?}"));
    assert_eq!(wait_group_gone(pgid).await, vec![]);
}

#[tokio::test]
async fn a_sequence_goes_past_tolerated_failures_and_stops_at_a_fatal_one() {
    let steps = vec![
        InitStep {
            on_failure: StepFailure::Warn,
            ..step("warns", run("exit 1"), 1000, 0)
        },
        InitStep {
            on_failure: StepFailure::Continue,
            ..step("ignored", run("exit 2"), 1000, 0)
        },
        step("passes", run("true"), 1000, 0),
        step("fails", run("echo broken >&2; exit 3"), 1000, 1),
        step("never", run("true"), 1000, 0),
    ];
    let vars = vars(1);
    let (reports, outcome) = run_sequence(&steps, |s| run_step(s, &vars)).await;
    let seen: Vec<(&str, StepVerdict, u32)> = reports
        .iter()
        .zip(&steps)
        .map(|(r, s)| (r.step.as_str(), r.verdict(s.on_failure), r.attempts))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("warns", StepVerdict::Warned, 1),
            ("ignored", StepVerdict::Ignored, 1),
            ("passes", StepVerdict::Passed, 1),
            ("fails", StepVerdict::Failed, 2),
        ]
    );
    assert_eq!(
        outcome,
        SequenceOutcome::Failed {
            step: "fails".into(),
            error: "exited with code 3; output: broken".into()
        }
    );
}
