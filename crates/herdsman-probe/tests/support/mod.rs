//! Test fixtures: a tiny HTTP/1.1 server on 127.0.0.1 with canned routes, ports known to
//! be closed, and a /proc scan for processes left behind.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Most bytes of request head the server reads before giving up on a connection.
const HEAD_CAP: usize = 16 * 1024;
/// Most bytes `/endless` writes, so a probe that never stops reading cannot hang the test.
pub const ENDLESS_CAP: usize = 64 * 1024 * 1024;

/// A server on 127.0.0.1 answering these routes over keep-alive connections:
/// `/ok` 200 "ok"; `/created` 201; `/unavailable` 503 "down"; `/slow` 200 after 30 s;
/// `/redirect-same` 302 to `/ok`; `/redirect-other-host` 302 to `http://localhost:PORT/ok`;
/// `/redirect-other-scheme` 302 to `https://127.0.0.1:PORT/ok`; `/redirect-loop` 302 to
/// itself; `/endless` 200 with a chunked body that does not end (up to [`ENDLESS_CAP`]).
/// Anything else is 404. Stops (aborting every connection) when dropped.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Request paths in arrival order.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// Body bytes `/endless` wrote.
    pub endless_sent: Arc<AtomicUsize>,
    tasks: JoinSet<()>,
}

impl TestServer {
    /// Bind 127.0.0.1:0 and serve.
    pub async fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let endless_sent = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        let (c, r, e) = (connections.clone(), requests.clone(), endless_sent.clone());
        tasks.spawn(async move {
            // Connection tasks live in this set, so aborting the accept loop aborts them.
            let mut conns = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                conns.spawn(serve(stream, addr.port(), r.clone(), e.clone()));
                while conns.try_join_next().is_some() {}
            }
        });
        TestServer {
            addr,
            connections,
            requests,
            endless_sent,
            tasks,
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// How many requests asked for `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.requests
            .lock()
            .map(|r| r.iter().filter(|p| *p == path).count())
            .unwrap_or(0)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

async fn serve(
    mut stream: TcpStream,
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    endless_sent: Arc<AtomicUsize>,
) {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let Some(path) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        if let Ok(mut r) = requests.lock() {
            r.push(path.clone());
        }
        let reply = match path.as_str() {
            "/ok" => simple("200 OK", "", "ok"),
            "/created" => simple("201 Created", "", "made"),
            "/unavailable" => simple("503 Service Unavailable", "", "down"),
            "/slow" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                simple("200 OK", "", "late")
            }
            "/redirect-same" => simple("302 Found", "Location: /ok\r\n", ""),
            "/redirect-other-host" => simple(
                "302 Found",
                &format!("Location: http://localhost:{port}/ok\r\n"),
                "",
            ),
            "/redirect-other-scheme" => simple(
                "302 Found",
                &format!("Location: https://127.0.0.1:{port}/ok\r\n"),
                "",
            ),
            "/redirect-loop" => simple("302 Found", "Location: /redirect-loop\r\n", ""),
            "/endless" => {
                endless(&mut stream, &endless_sent).await;
                return;
            }
            _ => simple("404 Not Found", "", "no such route"),
        };
        if stream.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn simple(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
        body.len()
    )
}

async fn endless(stream: &mut TcpStream, sent: &AtomicUsize) {
    let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let data = vec![b'x'; 8192];
    let chunk = [format!("{:x}\r\n", data.len()).as_bytes(), &data, b"\r\n"].concat();
    let mut total = 0;
    while total < ENDLESS_CAP {
        if stream.write_all(&chunk).await.is_err() {
            return;
        }
        total += data.len();
        sent.store(total, Ordering::SeqCst);
    }
}

/// Read one request head; return its path, or `None` when the connection ends or the head
/// is malformed. Leftover bytes (a pipelined request) stay in `buf`.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let path = head.lines().next()?.split_whitespace().nth(1)?.to_string();
            return Some(path);
        }
        if buf.len() > HEAD_CAP {
            return None;
        }
        let mut chunk = [0u8; 2048];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A loopback port nothing listens on (bound, then released).
pub async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let port = l.local_addr().expect("local addr").port();
    drop(l);
    port
}

/// Processes (pid, state) in process group `pgid` that are not zombies. A zombie has
/// released everything but its pid; it is reaped by its parent (here: init, for orphans).
pub fn live_members(pgid: i32) -> Vec<(i32, char)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name, which is in parentheses and may hold spaces.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (Some(state), Some(pgrp)) = (fields.first(), fields.get(2)) else {
            continue;
        };
        let state = state.chars().next().unwrap_or('?');
        if pgrp.parse::<i32>().ok() == Some(pgid) && state != 'Z' {
            out.push((pid, state));
        }
    }
    out
}

/// True when `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

/// Wait (up to 2 s, real time) until group `pgid` has no live member; return what is left.
pub async fn wait_group_gone(pgid: i32) -> Vec<(i32, char)> {
    for _ in 0..200 {
        let left = live_members(pgid);
        if left.is_empty() {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    live_members(pgid)
}

/// A path in the temp dir unique to this test process and `name`.
pub fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("herdsman-probe-{}-{name}", std::process::id()))
}
