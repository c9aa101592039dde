//! HTTP GET checks through one shared, pooled client: bounded in time and in body size,
//! blind to proxy variables, following redirects only within the probed host and scheme.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::header::LOCATION;
use reqwest::redirect::{Attempt, Policy};
use reqwest::{Client, Response, Url};
use tokio::time::Instant;

use crate::error::chain;
use crate::{humanize, CheckResult, Outcome};

/// Most body bytes read from one response; the rest is not read.
pub const BODY_CAP: usize = 10 * 1024;

/// Most redirects followed for one check.
pub const MAX_REDIRECTS: usize = 10;

/// How long an idle pooled connection is kept. Longer than any sensible probe interval
/// (so a replica probed every 10-60 s reuses its connection), shorter than the usual
/// server-side keep-alive limits would make little difference: a server that closes first
/// costs one reconnect.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// The shared HTTP client for all probes.
///
/// One client means one connection pool: successive checks of a replica reuse its
/// keep-alive connection instead of opening (and leaving in TIME_WAIT) a new one each
/// time, so thousands of checks per second do not exhaust the ephemeral ports.
#[derive(Debug, Clone)]
pub struct HttpProber {
    /// The client, or why it could not be built (every check is then `Unknown`).
    client: Result<Client, Arc<str>>,
}

impl Default for HttpProber {
    fn default() -> HttpProber {
        HttpProber::new()
    }
}

impl HttpProber {
    /// The process-wide prober, built on first use.
    pub fn shared() -> &'static HttpProber {
        static SHARED: OnceLock<HttpProber> = OnceLock::new();
        SHARED.get_or_init(HttpProber::new)
    }

    /// A prober with its own client and pool (for tests and benchmarks; probes use
    /// [`HttpProber::shared`]).
    pub fn new() -> HttpProber {
        let client = Client::builder()
            // Probes target the replica itself; an `HTTP_PROXY` set for the workload must
            // not reroute (or leak) them.
            .no_proxy()
            .use_rustls_tls()
            .redirect(Policy::custom(redirect_policy))
            .pool_idle_timeout(POOL_IDLE)
            .tcp_keepalive(Duration::from_secs(30))
            .tcp_nodelay(true)
            .user_agent(concat!("herdsman-probe/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Arc::from(format!("cannot build the HTTP client: {}", chain(&e))));
        HttpProber { client }
    }

    /// HTTP GET check.
    ///
    /// Success is `expect_status` when given, else any status in 200-399. Redirects are
    /// followed (at most [`MAX_REDIRECTS`]) only to the same scheme and host as `url`; a
    /// redirect elsewhere is not followed, its 3xx response is judged as the answer, and the
    /// output says so. At most [`BODY_CAP`] bytes of body are read; the output holds them
    /// (capped to [`OUTPUT_CAP`](crate::OUTPUT_CAP)). `timeout` bounds the whole exchange:
    /// connect, headers and body.
    ///
    /// A refused connection, a timeout or a wrong status is `Failure`; an invalid URL, an
    /// unresolvable host or a client that could not be built is `Unknown`.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future drops the request and its connection.
    pub async fn check(
        &self,
        url: &str,
        expect_status: Option<u16>,
        timeout: Duration,
    ) -> CheckResult {
        let started = Instant::now();
        let client = match &self.client {
            Ok(c) => c,
            Err(e) => return CheckResult::new(Outcome::Unknown(e.to_string()), Duration::ZERO, ""),
        };
        let target = match Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            Ok(u) => {
                let reason = format!("unsupported scheme {:?} in {url:?}", u.scheme());
                return CheckResult::new(Outcome::Unknown(reason), Duration::ZERO, "");
            }
            Err(e) => {
                let reason = format!("invalid url {url:?}: {e}");
                return CheckResult::new(Outcome::Unknown(reason), Duration::ZERO, "");
            }
        };
        let (outcome, output) =
            match tokio::time::timeout(timeout, exchange(client, target, expect_status)).await {
                Ok(verdict) => verdict,
                Err(_) => (
                    Outcome::Failure(format!("timed out after {}", humanize(timeout))),
                    String::new(),
                ),
            };
        CheckResult::new(outcome, started.elapsed(), output)
    }
}

/// Follow a redirect only within the original scheme and host, at most [`MAX_REDIRECTS`]
/// times. A redirect that is not followed leaves its 3xx response as the result.
fn redirect_policy(attempt: Attempt<'_>) -> reqwest::redirect::Action {
    // `previous` starts with the original URL, so it holds one entry per request made.
    if attempt.previous().len() > MAX_REDIRECTS {
        return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
    }
    let same = attempt
        .previous()
        .first()
        .is_some_and(|first| same_origin(first, attempt.url()));
    if same {
        attempt.follow()
    } else {
        attempt.stop()
    }
}

/// Same scheme and host. The port may differ: it is still the probed machine, and a probe
/// carries no credentials that could leak.
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme() && a.host_str() == b.host_str()
}

/// One GET with its verdict and output; the caller bounds it in time.
async fn exchange(client: &Client, target: Url, expect_status: Option<u16>) -> (Outcome, String) {
    let response = match client.get(target.clone()).send().await {
        Ok(r) => r,
        Err(e) => return (send_error(&e), String::new()),
    };
    let status = response.status();
    let mut output = String::new();
    if let Some(warning) = unfollowed_redirect(&target, &response) {
        output.push_str(&warning);
        output.push('\n');
    }
    let (body, note) = read_capped(response, BODY_CAP).await;
    output.push_str(&String::from_utf8_lossy(&body));
    if let Some(note) = note {
        output.push_str("\nherdsman: ");
        output.push_str(&note);
    }
    let ok = match expect_status {
        Some(want) => status.as_u16() == want,
        None => (200..=399).contains(&status.as_u16()),
    };
    let outcome = if ok {
        Outcome::Success
    } else {
        match expect_status {
            Some(want) => Outcome::Failure(format!("status {status}, expected {want}")),
            None => Outcome::Failure(format!("status {status}")),
        }
    };
    (outcome, output)
}

/// The warning for a 3xx whose `Location` points to another host or scheme (the policy
/// stopped there), or `None`.
fn unfollowed_redirect(original: &Url, response: &Response) -> Option<String> {
    if !response.status().is_redirection() {
        return None;
    }
    let location = response.headers().get(LOCATION)?.to_str().ok()?;
    let next = response.url().join(location).ok()?;
    if same_origin(original, &next) {
        return None;
    }
    Some(format!(
        "warning: redirect to {next} not followed (other host or scheme); judging the {} response",
        response.status().as_u16()
    ))
}

/// Read at most `cap` body bytes, chunk by chunk, and stop. Returns the bytes and a note
/// when the body was cut or broke off. A body read to its end lets the connection return to
/// the pool; a cut one is dropped with its connection.
async fn read_capped(mut response: Response, cap: usize) -> (Vec<u8>, Option<String>) {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = cap - body.len();
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    return (body, Some(format!("body cut at {cap} bytes")));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return (body, None),
            Err(e) => {
                return (
                    body,
                    Some(format!("reading the body failed: {}", chain(&e))),
                )
            }
        }
    }
}

/// The verdict for a request that got no response.
fn send_error(e: &reqwest::Error) -> Outcome {
    let text = chain(e);
    if e.is_builder() {
        Outcome::Unknown(text)
    } else if e.is_connect() && text.contains("dns error") {
        // Name resolution is the probe's environment, not the workload: as for tcp checks.
        Outcome::Unknown(text)
    } else if e.is_redirect() {
        Outcome::Failure(format!("redirect loop: {text}"))
    } else {
        Outcome::Failure(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("test url")
    }

    #[test]
    fn same_origin_needs_same_scheme_and_host_but_not_port() {
        let base = url("http://127.0.0.1:8080/a");
        assert!(same_origin(&base, &url("http://127.0.0.1:8080/b")));
        assert!(same_origin(&base, &url("http://127.0.0.1:9090/b")));
        assert!(!same_origin(&base, &url("https://127.0.0.1:8080/b")));
        assert!(!same_origin(&base, &url("http://localhost:8080/b")));
        assert!(!same_origin(&base, &url("http://example.com/")));
    }

    #[tokio::test]
    async fn invalid_and_unsupported_urls_are_unknown() {
        let p = HttpProber::new();
        for bad in ["not a url", "ftp://127.0.0.1/", "http://"] {
            let r = p.check(bad, None, Duration::from_secs(1)).await;
            assert!(matches!(r.outcome, Outcome::Unknown(_)), "{bad}: {r:?}");
        }
    }

    #[test]
    fn the_shared_prober_is_built_once() {
        assert!(std::ptr::eq(HttpProber::shared(), HttpProber::shared()));
        assert!(HttpProber::shared().client.is_ok());
    }
}
