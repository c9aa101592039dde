//! HTTP checks against a real server on 127.0.0.1, on the real clock.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use herdsman_probe::{HttpProber, Outcome, OUTPUT_CAP};
use support::{TestServer, ENDLESS_CAP};
use tokio::time::Instant;

const SECOND: Duration = Duration::from_secs(1);

fn reason(o: &Outcome) -> &str {
    match o {
        Outcome::Success => "",
        Outcome::Failure(r) | Outcome::Unknown(r) => r,
    }
}

#[tokio::test]
async fn a_200_is_a_success_and_its_body_is_the_output() {
    let server = TestServer::start().await;
    let r = HttpProber::new()
        .check(&server.url("/ok"), None, SECOND)
        .await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
    assert_eq!(r.output, "ok");
}

#[tokio::test]
async fn a_503_is_a_failure_naming_the_status() {
    let server = TestServer::start().await;
    let r = HttpProber::new()
        .check(&server.url("/unavailable"), None, SECOND)
        .await;
    assert_eq!(
        r.outcome,
        Outcome::Failure("status 503 Service Unavailable".into())
    );
    assert_eq!(r.output, "down");
}

#[tokio::test]
async fn an_expected_status_replaces_the_default_range() {
    let server = TestServer::start().await;
    let p = HttpProber::new();
    let r = p.check(&server.url("/created"), Some(201), SECOND).await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
    let r = p.check(&server.url("/ok"), Some(201), SECOND).await;
    assert_eq!(
        r.outcome,
        Outcome::Failure("status 200 OK, expected 201".into())
    );
}

#[tokio::test]
async fn a_slow_endpoint_fails_at_the_timeout() {
    let server = TestServer::start().await;
    let started = Instant::now();
    let r = HttpProber::new()
        .check(&server.url("/slow"), None, Duration::from_millis(300))
        .await;
    let took = started.elapsed();
    assert_eq!(r.outcome, Outcome::Failure("timed out after 300ms".into()));
    assert!(
        took >= Duration::from_millis(300) && took < SECOND,
        "{took:?}"
    );
}

#[tokio::test]
async fn a_redirect_to_the_same_host_is_followed() {
    let server = TestServer::start().await;
    let r = HttpProber::new()
        .check(&server.url("/redirect-same"), Some(200), SECOND)
        .await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
    assert_eq!(r.output, "ok");
    assert_eq!(server.hits("/ok"), 1);
}

#[tokio::test]
async fn a_redirect_to_another_host_is_not_followed_and_the_3xx_is_judged() {
    let server = TestServer::start().await;
    let p = HttpProber::new();
    // `localhost` is the same server under another host name: following it would reach /ok.
    let r = p
        .check(&server.url("/redirect-other-host"), Some(200), SECOND)
        .await;
    assert_eq!(
        r.outcome,
        Outcome::Failure("status 302 Found, expected 200".into())
    );
    let port = server.addr.port();
    assert!(
        r.output.contains(&format!(
            "warning: redirect to http://localhost:{port}/ok not followed"
        )),
        "{}",
        r.output
    );
    // Without an expected status a 3xx is in the accepted range, but still not followed.
    let r = p
        .check(&server.url("/redirect-other-host"), None, SECOND)
        .await;
    assert_eq!(r.outcome, Outcome::Success);
    assert!(r.output.starts_with("warning: redirect"), "{}", r.output);
    assert_eq!(server.hits("/ok"), 0);
}

#[tokio::test]
async fn a_redirect_to_another_scheme_is_not_followed() {
    let server = TestServer::start().await;
    let r = HttpProber::new()
        .check(&server.url("/redirect-other-scheme"), Some(200), SECOND)
        .await;
    assert_eq!(
        r.outcome,
        Outcome::Failure("status 302 Found, expected 200".into())
    );
    assert!(r.output.contains("not followed"), "{}", r.output);
    assert_eq!(server.hits("/ok"), 0);
}

#[tokio::test]
async fn a_redirect_loop_fails_after_ten_redirects() {
    let server = TestServer::start().await;
    let r = HttpProber::new()
        .check(&server.url("/redirect-loop"), None, SECOND)
        .await;
    assert!(
        matches!(&r.outcome, Outcome::Failure(why) if why.contains("more than 10 redirects")),
        "{r:?}"
    );
    // The first request and ten redirects.
    assert_eq!(server.hits("/redirect-loop"), 11);
}

#[tokio::test]
async fn an_endless_body_is_read_only_up_to_the_cap() {
    let server = TestServer::start().await;
    let started = Instant::now();
    let r = HttpProber::new()
        .check(&server.url("/endless"), None, 5 * SECOND)
        .await;
    assert_eq!(r.outcome, Outcome::Success, "{}", reason(&r.outcome));
    assert!(started.elapsed() < 2 * SECOND, "{:?}", started.elapsed());
    assert!(r.output.len() <= OUTPUT_CAP);
    assert!(
        r.output.ends_with("herdsman: body cut at 10240 bytes"),
        "{}",
        &r.output[r.output.len().saturating_sub(80)..]
    );
    // The probe hung up: the server stopped well before its own cap.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(server.endless_sent.load(Ordering::SeqCst) < ENDLESS_CAP);
}

#[tokio::test]
async fn a_closed_port_is_a_failure_and_a_bad_url_is_unknown() {
    let port = support::closed_port().await;
    let p = HttpProber::new();
    let r = p
        .check(&format!("http://127.0.0.1:{port}/"), None, SECOND)
        .await;
    assert!(
        matches!(&r.outcome, Outcome::Failure(why) if why.contains("refused")),
        "{r:?}"
    );
    let r = p.check("http://127.0.0.1:notaport/", None, SECOND).await;
    assert!(matches!(r.outcome, Outcome::Unknown(_)), "{r:?}");
}

#[tokio::test]
async fn repeated_probes_reuse_one_pooled_connection() {
    let server = TestServer::start().await;
    let p = HttpProber::new();
    for _ in 0..200 {
        let r = p.check(&server.url("/ok"), None, SECOND).await;
        assert_eq!(r.outcome, Outcome::Success);
    }
    // Failures with a body read to its end are reused too.
    for _ in 0..50 {
        let r = p.check(&server.url("/unavailable"), None, SECOND).await;
        assert!(matches!(r.outcome, Outcome::Failure(_)));
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_shared_prober_checks_like_any_other() {
    let server = TestServer::start().await;
    let r = HttpProber::shared()
        .check(&server.url("/ok"), None, SECOND)
        .await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
}
