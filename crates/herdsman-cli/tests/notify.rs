//! `--notify URL` against real receivers on 127.0.0.1: one that answers gets the notable
//! events as JSON; one that never answers delays neither restarts, nor stability, nor the
//! stop, and the queue stays bounded (drops counted in `/metrics`).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use support::*;
use tokio::time::Instant;

const LIMIT: Duration = Duration::from_secs(20);

/// Serve `router` on an ephemeral loopback port; its address.
async fn receiver(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bound");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}/hook")
}

async fn metric(api: &str, name: &str) -> Option<f64> {
    let text = client()
        .get(format!("http://{api}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn a_receiver_gets_restart_and_stable_notifications_as_json() {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let url = receiver(Router::new().route(
        "/hook",
        post({
            let got = got.clone();
            move |body: String| async move {
                if let Ok(v) = serde_json::from_str::<Value>(&body) {
                    got.lock().expect("lock").push(v);
                }
                "ok"
            }
        }),
    ))
    .await;
    let base = free_ports(2);
    let spec = web_spec(base, 1, "");
    let api = format!("127.0.0.1:{}", free_port());
    let mut h = Herdsman::start(&["run", s(&spec.path), "--api", &api, "--notify", &url]);
    let st = stable(&api, &h).await;
    h.seen_pids = pids(&st);
    let of_kind = |kind: &'static str| {
        let got = got.clone();
        move || {
            let found = got
                .lock()
                .expect("lock")
                .iter()
                .find(|n| n["kind"] == kind)
                .cloned();
            async move { found }
        }
    };
    let stable_note = eventually(LIMIT, "a stable notification", of_kind("stable")).await;
    assert_eq!(stable_note["deployment"], "t");
    assert_eq!(stable_note["event"]["event"], "deployment_stable");
    assert_eq!(stable_note["dropped"], 0);

    let pid = pid_of(&st, "web", 0).expect("a pid");
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill -9");
    let restart = eventually(LIMIT, "a restart notification", of_kind("restart")).await;
    assert_eq!(restart["event"]["service"], "web");
    assert_eq!(restart["event"]["replica"], 0);
    assert!(
        restart["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("web/0 restarting")),
        "{restart}"
    );
    let st = stable(&api, &h).await;
    h.seen_pids.extend(pids(&st));
}

#[tokio::test]
async fn a_receiver_that_hangs_delays_nothing_and_the_queue_stays_bounded() {
    let calls = Arc::new(AtomicUsize::new(0));
    let url = receiver(Router::new().route(
        "/hook",
        post({
            let calls = calls.clone();
            move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<&'static str>().await
            }
        }),
    ))
    .await;
    let base = free_ports(3);
    let spec = web_spec(base, 2, "");
    let api = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let mut h = Herdsman::start(&[
        "run",
        s(&spec.path),
        "--api",
        &api,
        "--notify",
        &url,
        "--notify-queue",
        "1",
    ]);
    let st = stable(&api, &h).await;
    let to_stable = started.elapsed();
    h.seen_pids = pids(&st);
    eprintln!("stable {to_stable:?} after start with a hanging receiver");
    assert!(
        to_stable < Duration::from_secs(5),
        "stable after {to_stable:?} with a hanging receiver"
    );
    eventually(LIMIT, "the receiver was called", || {
        let n = calls.load(Ordering::SeqCst);
        async move { (n > 0).then_some(()) }
    })
    .await;

    // Each kill makes a restart and a stable notification while the first POST hangs.
    for round in 0..3 {
        let st = stable(&api, &h).await;
        let old = pid_of(&st, "web", 0).expect("a pid");
        let killed = Instant::now();
        kill(Pid::from_raw(old as i32), Signal::SIGKILL).expect("kill -9");
        let new = eventually(LIMIT, "web/0 running again", || {
            let api = api.clone();
            async move {
                let st = status(&api).await?;
                let r = &st["services"][0]["replicas"][0];
                let pid = r["pid"].as_u64()? as u32;
                (pid != old && r["state"] == "running").then_some(pid)
            }
        })
        .await;
        h.seen_pids.push(new);
        let took = killed.elapsed();
        eprintln!("round {round}: replacement running {took:?} after kill -9");
        assert!(
            took < Duration::from_secs(2),
            "round {round}: replacement running after {took:?}"
        );
    }
    let st = stable(&api, &h).await;
    h.seen_pids.extend(pids(&st));
    let dropped = eventually(LIMIT, "notifications dropped", || {
        let api = api.clone();
        async move {
            let d = metric(&api, "herdsman_notify_dropped_total").await?;
            (d >= 3.0).then_some(d)
        }
    })
    .await;
    let queued = metric(&api, "herdsman_notify_queue_length")
        .await
        .expect("queue gauge");
    assert!(queued <= 1.0, "queue bounded at 1, holds {queued}");
    assert_eq!(metric(&api, "herdsman_notify_sent_total").await, Some(0.0));
    assert!(dropped >= 3.0);
    eprintln!("queue {queued}, dropped {dropped}");

    let stopping = Instant::now();
    h.signal(Signal::SIGTERM);
    let code = h.wait(LIMIT).await;
    eprintln!("stopped {:?} after SIGTERM", stopping.elapsed());
    assert!(code.success(), "{}", h.output());
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopped after {:?} with a POST in flight",
        stopping.elapsed()
    );
}
