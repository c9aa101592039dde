//! The read-only HTTP API of `herdsman run`: `GET /v1/status`, `GET /v1/events`
//! (newline-delimited JSON, streamed), `GET /metrics` (Prometheus text), `GET /healthz`.
//! Loopback unless told otherwise, optional bearer token (from a file, the environment or,
//! visibly to other users, argv), and nothing in it runs a command. Connections are
//! bounded by [`crate::connections`].

use std::convert::Infallible;
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{bail, Context};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use herdsman_core::{DeploymentHandle, DeploymentStatus, EventStream, Received};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::connections::ConnectionLimits;
use crate::metrics::{self, Metrics};

/// Where the API listens unless `--api` says otherwise.
pub(crate) const DEFAULT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7777);

/// The environment variable read for the bearer token when `--api-token` is not given.
pub(crate) const TOKEN_ENV: &str = "HERDSMAN_API_TOKEN";

/// Longest token file read: a token is a line, not a document.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// API flags of `herdsman run` besides the address and the argv token.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ApiFlags {
    /// Read the bearer token from this file (its first line); unlike --api-token, it
    /// is not visible to other users in the process list.
    #[arg(long, value_name = "FILE", conflicts_with = "api_token")]
    pub(crate) api_token_file: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) limits: ConnectionLimits,
}

/// The bearer token: from `file` if given, else `argv` (`--api-token`, visible to every
/// user in `/proc/PID/cmdline`), else `$HERDSMAN_API_TOKEN`; `None` if none is set or it
/// is empty.
///
/// # Errors
/// The token file cannot be read, is too long or holds no token.
pub(crate) fn token(argv: Option<&str>, file: Option<&Path>) -> anyhow::Result<Option<String>> {
    if let Some(file) = file {
        let mut text = String::new();
        std::fs::File::open(file)
            .and_then(|f| f.take(MAX_TOKEN_FILE + 1).read_to_string(&mut text))
            .with_context(|| format!("cannot read the API token file {}", file.display()))?;
        if text.len() as u64 > MAX_TOKEN_FILE {
            bail!(
                "the API token file {} is longer than {MAX_TOKEN_FILE} bytes (expected one line)",
                file.display()
            );
        }
        let line = text.lines().next().unwrap_or("").trim();
        if line.is_empty() {
            bail!("the API token file {} holds no token", file.display());
        }
        return Ok(Some(line.to_string()));
    }
    Ok(argv
        .map(str::to_string)
        .or_else(|| std::env::var(TOKEN_ENV).ok())
        .filter(|t| !t.is_empty()))
}

/// The `--api` flag: an address to listen on, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApiAddr {
    /// No API.
    Off,
    /// Listen here.
    At(SocketAddr),
}

impl FromStr for ApiAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<ApiAddr, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(ApiAddr::Off);
        }
        s.parse::<SocketAddr>().map(ApiAddr::At).map_err(|_| {
            format!("expected IP:PORT (e.g. 127.0.0.1:7777, [::1]:7777) or \"off\", got {s:?}")
        })
    }
}

impl fmt::Display for ApiAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiAddr::Off => f.write_str("off"),
            ApiAddr::At(a) => write!(f, "{a}"),
        }
    }
}

/// Why the API may not listen where it was asked to.
pub(crate) fn refuse_exposure(addr: SocketAddr, token: bool, insecure: bool) -> Option<String> {
    if addr.ip().is_loopback() || token || insecure {
        return None;
    }
    Some(format!(
        "refusing to serve the API on {addr}, which is not a loopback address, without a \
         token: pass --api-token-file FILE (or set {TOKEN_ENV}), or --api-insecure to \
         serve it to anyone who can reach {addr}"
    ))
}

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct ApiState {
    handle: DeploymentHandle,
    metrics: Arc<Metrics>,
    token: Option<Arc<str>>,
    /// Set at shutdown: ends every event stream so the server can stop.
    stop: watch::Receiver<bool>,
}

impl ApiState {
    /// The state of an API over `handle`.
    pub(crate) fn new(
        handle: DeploymentHandle,
        metrics: Arc<Metrics>,
        token: Option<String>,
        stop: watch::Receiver<bool>,
    ) -> ApiState {
        ApiState {
            handle,
            metrics,
            token: token.map(Arc::from),
            stop,
        }
    }
}

/// The API's routes. Only GET routes exist; `/healthz` needs no token.
pub(crate) fn router(state: ApiState) -> Router {
    let guarded = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/events", get(events))
        .route("/metrics", get(metrics_text))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(guarded)
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let Some(want) = &state.token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    match given {
        Some(t) if same_secret(t.as_bytes(), want.as_bytes()) => next.run(request).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required: Authorization: Bearer TOKEN\n",
        )
            .into_response(),
    }
}

/// The token of an `Authorization: Bearer TOKEN` value; the scheme's case does not matter
/// (RFC 7235).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Compare secrets in time that depends on their length only, not on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

async fn status(State(state): State<ApiState>) -> Json<DeploymentStatus> {
    Json(state.handle.status())
}

async fn metrics_text(State(state): State<ApiState>) -> Response {
    let text = state.metrics.scrape(state.handle.board());
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

async fn events(State(state): State<ApiState>) -> Response {
    // Subscribed before the response starts: a client that has the headers sees every
    // event from then on.
    let events = state.handle.subscribe();
    let stream =
        futures::stream::unfold((events, state.stop), |(mut events, mut stop)| async move {
            let line = next_line(&mut events, &mut stop).await?;
            Some((Ok::<Bytes, Infallible>(line), (events, stop)))
        });
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The next line of an event stream: one event as JSON, or `{"event":"missed","count":n}`
/// after a lag; `None` when the deployment is gone or the server stops.
async fn next_line(events: &mut EventStream, stop: &mut watch::Receiver<bool>) -> Option<Bytes> {
    loop {
        let received = tokio::select! {
            r = events.recv() => r?,
            _ = crate::stop::stopped(stop) => return None,
        };
        let json = match received {
            Received::Event(e) => serde_json::to_string(&e),
            Received::Missed(n) => {
                serde_json::to_string(&serde_json::json!({"event": "missed", "count": n}))
            }
        };
        match json {
            Ok(mut line) => {
                line.push('\n');
                return Some(Bytes::from(line));
            }
            // Not expected for these types; a line that cannot be written is skipped.
            Err(e) => tracing::warn!(error = %e, "cannot serialize an event"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_addr_is_an_ip_and_port_or_off() {
        assert_eq!("off".parse(), Ok(ApiAddr::Off));
        assert_eq!("127.0.0.1:7777".parse(), Ok(ApiAddr::At(DEFAULT_ADDR)));
        assert!("[::1]:80".parse::<ApiAddr>().is_ok());
        assert!("localhost:7777".parse::<ApiAddr>().is_err());
        assert!("7777".parse::<ApiAddr>().is_err());
    }

    #[test]
    fn only_loopback_is_served_without_a_token_or_the_insecure_flag() {
        let any: SocketAddr = "0.0.0.0:7777".parse().expect("address");
        let v6: SocketAddr = "[::1]:7777".parse().expect("address");
        assert!(refuse_exposure(DEFAULT_ADDR, false, false).is_none());
        assert!(refuse_exposure(v6, false, false).is_none());
        assert!(refuse_exposure(any, false, false).is_some());
        assert!(refuse_exposure(any, true, false).is_none());
        assert!(refuse_exposure(any, false, true).is_none());
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer("Bearer s3cret"), Some("s3cret"));
        assert_eq!(bearer("bearer s3cret"), Some("s3cret"));
        assert_eq!(bearer("BEARER   s3cret "), Some("s3cret"));
        assert_eq!(bearer("Basic s3cret"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
    }

    #[test]
    fn a_token_file_wins_and_must_hold_a_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        std::fs::write(&file, "  from-file \nsecond line\n").expect("written");
        assert_eq!(
            token(Some("argv"), Some(&file)).ok().flatten().as_deref(),
            Some("from-file")
        );
        assert_eq!(
            token(Some("argv"), None).ok().flatten().as_deref(),
            Some("argv")
        );
        std::fs::write(&file, "\n").expect("written");
        assert!(token(None, Some(&file)).is_err());
        assert!(token(None, Some(&dir.path().join("missing"))).is_err());
    }

    #[test]
    fn secrets_match_only_when_equal() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cret", b"s3creT"));
        assert!(!same_secret(b"s3cret", b"s3cre"));
        assert!(!same_secret(b"", b"x"));
    }
}
