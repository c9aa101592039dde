//! TCP checks against real loopback sockets, on the real clock.

mod support;

use std::time::Duration;

use herdsman_probe::{check_tcp, Outcome};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::{timeout, Instant};

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_listening_port_is_a_success_by_address_and_by_name() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let r = check_tcp("127.0.0.1", port, SECOND).await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
    assert!(r.duration < SECOND);
    // `localhost` may resolve to ::1 first, where nothing listens: the next address is tried.
    let r = check_tcp("localhost", port, SECOND).await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
}

#[tokio::test]
async fn a_closed_port_is_a_refused_failure() {
    let port = support::closed_port().await;
    let r = check_tcp("127.0.0.1", port, SECOND).await;
    match &r.outcome {
        Outcome::Failure(reason) => assert!(reason.contains("refused"), "{reason}"),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unresolvable_host_is_unknown_not_a_failure() {
    let r = check_tcp("no-such-host.invalid", 80, 2 * SECOND).await;
    assert!(matches!(r.outcome, Outcome::Unknown(_)), "{r:?}");
}

#[tokio::test]
async fn a_connect_that_never_completes_fails_at_the_timeout() {
    // A listener that never accepts, with the smallest backlog: once its queue is full the
    // kernel drops further SYNs, so a connect hangs. Fill the queue first.
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(0).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut held = Vec::new();
    let mut hung = false;
    for _ in 0..64 {
        match timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(e)) => panic!("connect to a full backlog failed instead of hanging: {e}"),
            Err(_) => {
                hung = true;
                break;
            }
        }
    }
    assert!(
        hung,
        "the backlog never filled after {} connections",
        held.len()
    );
    let started = Instant::now();
    let r = check_tcp("127.0.0.1", addr.port(), Duration::from_millis(300)).await;
    let took = started.elapsed();
    match &r.outcome {
        Outcome::Failure(reason) => assert!(reason.contains("timed out after 300ms"), "{reason}"),
        other => panic!("expected a timeout failure, got {other:?}"),
    }
    assert!(
        took >= Duration::from_millis(300) && took < SECOND,
        "{took:?}"
    );
}
