//! The API cannot be exhausted without a token: connections that never finish their
//! headers, or sit idle, are closed after the header timeout; thousands of them do not
//! keep `/healthz` from answering or replicas from starting, even when herdsman is started
//! with the common soft limit of 1,024 open files.

mod support;

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

const LIMIT: Duration = Duration::from_secs(20);

/// Connections the attack holds open.
const HALF_OPEN: usize = 2_000;

/// Start `herdsman ARGS...` with its soft open-file limit lowered to 1,024, as a login
/// shell commonly has it.
fn start_with_1024_files(args: &[&str]) -> Herdsman {
    let mut all = vec!["-c", "ulimit -Sn 1024 && exec \"$0\" \"$@\"", HERDSMAN];
    all.extend_from_slice(args);
    Herdsman::start_program("sh", &all)
}

/// `Max open files` of a process: (soft, hard).
fn open_file_limits(pid: u32) -> Option<(String, String)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut words = line["Max open files".len()..].split_whitespace();
    Some((words.next()?.to_string(), words.next()?.to_string()))
}

/// One `GET /healthz` on a fresh connection: how long it took to get the answer.
async fn healthz(api: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let mut conn = TcpStream::connect(api).await.map_err(|e| e.to_string())?;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&answer);
    if text.starts_with("HTTP/1.1 200") && text.ends_with("ok\n") {
        Ok(took)
    } else {
        Err(format!("unexpected answer {text:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_half_open_connections_neither_block_healthz_nor_replica_starts() {
    // This test process holds the connections: it needs the files for them.
    rlimit::increase_nofile_limit(8_192).expect("open-file limit raised");
    let base = free_ports(2);
    let spec = web_spec(base, 2, "");
    let api = format!("127.0.0.1:{}", free_port());
    let mut h = start_with_1024_files(&["run", s(&spec.path), "--api", &api]);
    let first = stable(&api, &h).await;
    let before = pid_of(&first, "web", 0).expect("replica 0 runs");
    h.seen_pids = pids(&first);

    // herdsman raised its soft limit to its hard limit at start.
    let (soft, hard) = open_file_limits(h.pid()).expect("limits readable");
    assert_eq!(soft, hard, "soft open-file limit not raised");

    // Half of them send nothing, the other half half a request head.
    let mut held = Vec::with_capacity(HALF_OPEN);
    let opened = timeout(LIMIT, async {
        for i in 0..HALF_OPEN {
            let mut conn = TcpStream::connect(&api).await.expect("connects");
            if i % 2 == 1 {
                conn.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
                    .await
                    .expect("half a head written");
            }
            held.push(conn);
        }
    })
    .await;
    assert!(
        opened.is_ok(),
        "{HALF_OPEN} connections not opened in {LIMIT:?}"
    );

    for _ in 0..5 {
        let took = healthz(&api).await.expect("healthz answers");
        assert!(
            took < Duration::from_millis(100),
            "healthz took {took:?} behind {HALF_OPEN} half-open connections"
        );
    }

    // A replica killed now is started again: its process needs files too.
    kill(Pid::from_raw(before as i32), Signal::SIGKILL).expect("replica killed");
    let after = eventually(LIMIT, "replica 0 started again", || {
        let api = api.clone();
        async move {
            let status = status(&api).await?;
            let pid = pid_of(&status, "web", 0)?;
            let running = status["services"][0]["replicas"][0]["state"] == "running";
            (pid != before && running).then_some(pid)
        }
    })
    .await;
    h.seen_pids.push(after);
    assert!(
        !h.stderr().contains("Too many open files"),
        "{}",
        h.output()
    );
    drop(held);
}

/// Whether the server closes `conn` within `within`: a read sees the end (or a reset)
/// instead of waiting.
async fn closed_by_server(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        match timeout(
            deadline.saturating_duration_since(Instant::now()),
            conn.read(&mut buf),
        )
        .await
        {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // An answer (a 408, or the previous response): read on to the close.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn silent_half_sent_and_idle_connections_are_closed_after_the_header_timeout() {
    let base = free_ports(1);
    let spec = web_spec(base, 1, "");
    let api = format!("127.0.0.1:{}", free_port());
    let mut h = Herdsman::start(&[
        "run",
        s(&spec.path),
        "--api",
        &api,
        "--api-header-timeout",
        "300ms",
    ]);
    let first = eventually(LIMIT, "the API answers", || status(&api)).await;
    h.seen_pids = pids(&first);

    let mut silent = TcpStream::connect(&api).await.expect("connects");
    let mut half = TcpStream::connect(&api).await.expect("connects");
    half.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("written");
    let mut idle = TcpStream::connect(&api).await.expect("connects");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("written");

    for (what, conn) in [
        ("a connection that sends nothing", &mut silent),
        ("a connection that sends half a head", &mut half),
        ("an idle keep-alive connection", &mut idle),
    ] {
        assert!(
            closed_by_server(conn, Duration::from_secs(3)).await,
            "{what} is still open after 3s"
        );
    }
}
