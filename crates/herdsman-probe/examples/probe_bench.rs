//! Probe throughput and latency against local servers, beside the raw operation measured in
//! the same run: `check_tcp` vs a bare `TcpStream::connect` closed with SO_LINGER 0 (what
//! `check_tcp` does), `HttpProber::check` vs a bare reqwest GET; then a bare connect closed
//! normally, to show the TIME_WAIT wall that SO_LINGER 0 avoids.
//!
//! `cargo run --release -p herdsman-probe --example probe_bench [-- --quick]`
//!
//! Method: the servers (a TCP accept-and-close loop and a keep-alive HTTP/1.1 server
//! answering `200 ok`) run on their own thread; the probes run on one current-thread tokio
//! runtime, so throughput is per client core. Each round runs every variant, in alternating
//! order, twice: sequentially (one probe at a time: per-probe latency) and with 32 probes in
//! flight (throughput under load). Reported: the client thread's on-CPU time per probe
//! (from /proc/thread-self/schedstat, so other load on a shared machine does not skew it)
//! and its inverse, probes per second per core; the median over rounds of probes per second,
//! the p50 and p99 of every sequential probe's latency, the ratio to the raw operation, and
//! the TIME_WAIT sockets each variant left behind (from /proc/net/tcp). Each TCP variant
//! has a listener of its own, so one variant's TIME_WAIT sockets cannot slow another.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herdsman_probe::{check_tcp, HttpProber, Outcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

const TIMEOUT: Duration = Duration::from_secs(2);
const IN_FLIGHT: usize = 32;

struct Config {
    rounds: usize,
    per_round: usize,
    plain_connects: usize,
}

/// What one variant measured over all rounds.
#[derive(Default)]
struct Series {
    seq_rates: Vec<f64>,
    conc_rates: Vec<f64>,
    latencies: Vec<Duration>,
    failures: usize,
    time_wait: usize,
    /// On-CPU time of the client thread and the probes it made in that time.
    cpu: Duration,
    probes: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    RawTcpLinger0,
    ProbeTcp,
    RawHttp,
    ProbeHttp,
    RawTcpPlain,
}

impl Variant {
    /// The variants run in rounds; each probe variant follows its raw baseline.
    const ROUNDS: [Variant; 4] = [
        Variant::RawTcpLinger0,
        Variant::ProbeTcp,
        Variant::RawHttp,
        Variant::ProbeHttp,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::RawTcpLinger0 => "raw TcpStream::connect, SO_LINGER 0",
            Variant::ProbeTcp => "check_tcp",
            Variant::RawHttp => "raw reqwest GET",
            Variant::ProbeHttp => "HttpProber::check",
            Variant::RawTcpPlain => "raw TcpStream::connect, normal close",
        }
    }
}

/// Everything a probe needs, cheap to clone into tasks.
#[derive(Clone)]
struct Targets {
    /// One listener per TCP variant: raw with linger 0, check_tcp, raw with normal close.
    tcp: [SocketAddr; 3],
    http: SocketAddr,
    http_url: Arc<str>,
    raw_client: reqwest::Client,
    prober: HttpProber,
}

impl Targets {
    fn ports(&self) -> Vec<u16> {
        let mut p: Vec<u16> = self.tcp.iter().map(|a| a.port()).collect();
        p.push(self.http.port());
        p
    }

    /// One probe of `variant`; true on success.
    async fn probe(&self, variant: Variant) -> bool {
        match variant {
            Variant::RawTcpLinger0 => {
                match tokio::time::timeout(TIMEOUT, TcpStream::connect(self.tcp[0])).await {
                    Ok(Ok(s)) => {
                        #[allow(deprecated)] // a zero linger never blocks
                        let _ = s.set_linger(Some(Duration::ZERO));
                        true
                    }
                    _ => false,
                }
            }
            Variant::ProbeTcp => {
                check_tcp("127.0.0.1", self.tcp[1].port(), TIMEOUT)
                    .await
                    .outcome
                    == Outcome::Success
            }
            Variant::RawTcpPlain => matches!(
                tokio::time::timeout(TIMEOUT, TcpStream::connect(self.tcp[2])).await,
                Ok(Ok(_))
            ),
            Variant::RawHttp => {
                let get = async {
                    let r = self.raw_client.get(&*self.http_url).send().await.ok()?;
                    let ok = r.status().is_success();
                    r.bytes().await.ok()?;
                    Some(ok)
                };
                matches!(tokio::time::timeout(TIMEOUT, get).await, Ok(Some(true)))
            }
            Variant::ProbeHttp => {
                self.prober
                    .check(&self.http_url, None, TIMEOUT)
                    .await
                    .outcome
                    == Outcome::Success
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let cfg = if quick {
        Config {
            rounds: 2,
            per_round: 200,
            plain_connects: 200,
        }
    } else {
        Config {
            rounds: 9,
            per_round: 20_000,
            plain_connects: 40_000,
        }
    };

    let (tcp, http, http_conns) = start_servers()?;
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    client.block_on(async move {
        let targets = Targets {
            tcp,
            http,
            http_url: Arc::from(format!("http://{http}/healthz")),
            raw_client: reqwest::Client::builder().no_proxy().build()?,
            prober: HttpProber::new(),
        };
        let ports = targets.ports();
        let overflows_before = listen_overflows();
        // Warm up: pools, allocators, page cache.
        for v in Variant::ROUNDS {
            run_sequential(&targets, v, cfg.per_round.min(500)).await;
        }
        let mut series: Vec<Series> = Variant::ROUNDS.iter().map(|_| Series::default()).collect();
        for round in 0..cfg.rounds {
            let mut order: Vec<usize> = (0..Variant::ROUNDS.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let v = Variant::ROUNDS[i];
                let before = time_wait_sockets(&ports);
                let cpu_before = thread_cpu();
                let (rate, lat, failed) = run_sequential(&targets, v, cfg.per_round).await;
                let (conc_rate, failed2) = run_concurrent(&targets, v, cfg.per_round).await;
                let cpu = thread_cpu().saturating_sub(cpu_before);
                let after = time_wait_sockets(&ports);
                let s = &mut series[i];
                s.cpu += cpu;
                s.probes += 2 * cfg.per_round;
                s.seq_rates.push(rate);
                s.conc_rates.push(conc_rate);
                s.latencies.extend(lat);
                s.failures += failed + failed2;
                s.time_wait += after.saturating_sub(before);
            }
        }
        report(&cfg, &series, http_conns.load(Ordering::SeqCst));
        println!(
            "accept-queue overflows (kernel ListenOverflows) during the rounds: {}",
            listen_overflows().saturating_sub(overflows_before)
        );

        // Last, because it leaves the loopback port range full of TIME_WAIT sockets for a
        // minute: connects closed normally, as many as the ephemeral range holds and more.
        let before = time_wait_sockets(&ports);
        let n = cfg.plain_connects;
        let (rate, lat, failed) = run_sequential(&targets, Variant::RawTcpPlain, n).await;
        let after = time_wait_sockets(&ports);
        let (p50, p99) = percentiles(&lat);
        let slowest = lat.iter().max().copied().unwrap_or_default();
        println!();
        println!(
            "{}: {n} sequential connects at {rate:.0}/s, p50 {}, p99 {}, slowest {}, {failed} failed, {} TIME_WAIT sockets left (ephemeral range: {})",
            Variant::RawTcpPlain.name(),
            micros(p50),
            micros(p99),
            micros(slowest),
            after.saturating_sub(before),
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
                .map(|r| r.split_whitespace().collect::<Vec<_>>().join("-"))
                .unwrap_or_else(|_| "?".into()),
        );
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

/// `n` probes one after the other: (probes per second, each latency, failures).
async fn run_sequential(t: &Targets, v: Variant, n: usize) -> (f64, Vec<Duration>, usize) {
    let mut lat = Vec::with_capacity(n);
    let mut failed = 0;
    let start = Instant::now();
    for _ in 0..n {
        let s = Instant::now();
        if !t.probe(v).await {
            failed += 1;
        }
        lat.push(s.elapsed());
    }
    (n as f64 / start.elapsed().as_secs_f64(), lat, failed)
}

/// `n` probes, [`IN_FLIGHT`] at a time: (probes per second, failures).
async fn run_concurrent(t: &Targets, v: Variant, n: usize) -> (f64, usize) {
    let failed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for w in 0..IN_FLIGHT {
        let share = n / IN_FLIGHT + usize::from(w < n % IN_FLIGHT);
        let t = t.clone();
        let failed = failed.clone();
        set.spawn(async move {
            for _ in 0..share {
                if !t.probe(v).await {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    (
        n as f64 / start.elapsed().as_secs_f64(),
        failed.load(Ordering::SeqCst),
    )
}

fn report(cfg: &Config, series: &[Series], http_conns: usize) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "probe_bench: {} rounds x {} probes per variant and mode, {} in flight for the concurrent mode, {} cores",
        cfg.rounds, cfg.per_round, IN_FLIGHT, cores
    );
    println!();
    println!("| variant | client CPU per probe | probes/s per client core | vs raw | sequential probes/s (median) | vs raw | p50 | p99 | vs raw p50 | {IN_FLIGHT} in flight probes/s (median) | vs raw | TIME_WAIT left | failures |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, v) in Variant::ROUNDS.iter().enumerate() {
        let s = &series[i];
        // Each probe variant is compared with the raw variant just before it.
        let raw = &series[i - i % 2];
        let seq = median(&s.seq_rates);
        let conc = median(&s.conc_rates);
        let (p50, p99) = percentiles(&s.latencies);
        let (raw_p50, _) = percentiles(&raw.latencies);
        let per_core = |s: &Series| s.probes as f64 / s.cpu.as_secs_f64().max(1e-9);
        println!(
            "| {} | {} | {:.0} | {:.2}x | {:.0} | {:.2}x | {} | {} | {:.2}x | {:.0} | {:.2}x | {} | {} |",
            v.name(),
            micros(s.cpu / u32::try_from(s.probes.max(1)).unwrap_or(u32::MAX)),
            per_core(s),
            per_core(s) / per_core(raw),
            seq,
            seq / median(&raw.seq_rates),
            micros(p50),
            micros(p99),
            p50.as_secs_f64() / raw_p50.as_secs_f64(),
            conc,
            conc / median(&raw.conc_rates),
            s.time_wait,
            s.failures,
        );
    }
    println!();
    println!("HTTP connections accepted by the server over the whole run: {http_conns}");
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn percentiles(xs: &[Duration]) -> (Duration, Duration) {
    let mut v = xs.to_vec();
    v.sort();
    let at = |q: f64| {
        let idx = ((q * v.len() as f64).ceil() as usize).saturating_sub(1);
        v.get(idx).copied().unwrap_or_default()
    };
    (at(0.50), at(0.99))
}

/// On-CPU time of the calling thread so far (scheduler statistics, nanoseconds): the client
/// runtime is single-threaded, so this is the client's whole CPU cost, unaffected by other
/// load on the machine.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

/// The kernel's count of connections dropped because an accept queue was full.
fn listen_overflows() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/net/netstat") else {
        return 0;
    };
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(keys), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    keys.split_whitespace()
        .zip(values.split_whitespace())
        .find(|(k, _)| *k == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// TIME_WAIT sockets (state 06) to or from any of `ports`, IPv4 loopback.
fn time_wait_sockets(ports: &[u16]) -> usize {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return 0;
    };
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port = |field: Option<&&str>| {
                field
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            f.get(3) == Some(&"06")
                && ports
                    .iter()
                    .any(|p| port(f.get(1)) == Some(*p) || port(f.get(2)) == Some(*p))
        })
        .count()
}

/// Start three TCP accept-and-close servers and the HTTP server on a thread of their own;
/// return their addresses and the HTTP server's accepted-connection counter.
type Servers = ([SocketAddr; 3], SocketAddr, Arc<AtomicUsize>);

fn start_servers() -> Result<Servers, Box<dyn std::error::Error>> {
    let mut tcp_addrs = Vec::new();
    for _ in 0..3 {
        // A blocking accept-and-close loop on a thread of its own is the cheapest server
        // there is; with a deep backlog it keeps up with a client that connects and hangs
        // up without waiting for it (a starved server overflows its accept queue, the kernel
        // drops SYNs, and the client stalls a whole 1 s SYN retransmit: that would measure
        // the server, not the probe).
        let listener = deep_listener()?;
        tcp_addrs.push(listener.local_addr()?);
        std::thread::spawn(move || {
            while let Ok((stream, _)) = listener.accept() {
                drop(stream);
            }
        });
    }
    let tcp_addrs = [tcp_addrs[0], tcp_addrs[1], tcp_addrs[2]];

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let http = {
        let _guard = rt.enter();
        TcpListener::from_std(deep_listener_nonblocking()?)?
    };
    let http_addr = http.local_addr()?;
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = conns.clone();
    std::thread::spawn(move || {
        rt.block_on(async move {
            while let Ok((stream, _)) = http.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve_http(stream));
            }
        })
    });
    Ok((tcp_addrs, http_addr, conns))
}

/// A blocking listener on 127.0.0.1 with a 4096-deep accept queue (std's default is 128).
fn deep_listener() -> std::io::Result<std::net::TcpListener> {
    let l = deep_listener_nonblocking()?;
    l.set_nonblocking(false)?;
    Ok(l)
}

fn deep_listener_nonblocking() -> std::io::Result<std::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    // `listen` needs a runtime only to register the socket; build a throwaway one.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let _guard = rt.enter();
    socket.listen(4096)?.into_std()
}

/// Answer every request on a keep-alive connection with `200 ok`.
async fn serve_http(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            if stream.write_all(reply).await.is_err() {
                return;
            }
        }
        if buf.len() > 64 * 1024 {
            return;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
