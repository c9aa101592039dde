//! `herdsman status`: a table of services and replicas, read from a running `herdsman
//! run` through its API.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use herdsman_core::{DeploymentStatus, ServicePhase};
use herdsman_runtime::ExitReason;

use crate::api::{DEFAULT_ADDR, TOKEN_ENV};
use crate::terminal::escape;

/// Flags of `herdsman status`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StatusArgs {
    /// Where `herdsman run` serves its API: IP:PORT or a URL.
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_ADDR.to_string())]
    api: String,
    /// Print the `/v1/status` JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Bearer token, if the API wants one (default: $HERDSMAN_API_TOKEN). Visible to
    /// other users in the process list: prefer --api-token-file or the variable.
    #[arg(long, value_name = "TOKEN")]
    api_token: Option<String>,
    /// Read the bearer token from this file (its first line).
    #[arg(long, value_name = "FILE", conflicts_with = "api_token")]
    api_token_file: Option<std::path::PathBuf>,
}

/// Fetch and print the status.
///
/// # Errors
/// Nothing listens at the address, the API refuses the token, or it answers something
/// that is not a deployment status.
pub(crate) async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let base = if args.api.contains("://") {
        args.api.trim_end_matches('/').to_string()
    } else {
        format!("http://{}", args.api)
    };
    let url = format!("{base}/v1/status");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build an HTTP client")?;
    let mut request = client.get(&url);
    if let Some(token) =
        crate::api::token(args.api_token.as_deref(), args.api_token_file.as_deref())?
    {
        request = request.bearer_auth(token);
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() => bail!(
            "nothing is listening at {base}: is `herdsman run` running, with --api {}? ({})",
            args.api,
            root_cause(&e)
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot get {url}")),
    };
    let code = response.status();
    let body = response
        .text()
        .await
        .with_context(|| format!("cannot read the answer of {url}"))?;
    if code == reqwest::StatusCode::UNAUTHORIZED {
        bail!("{url} wants a bearer token: pass --api-token TOKEN or set {TOKEN_ENV}");
    }
    if !code.is_success() {
        bail!("{url} answered {code}: {}", escape(body.trim()));
    }
    let status: DeploymentStatus = serde_json::from_str(&body)
        .with_context(|| format!("{url} did not answer with a herdsman deployment status"))?;
    let text = if args.json {
        format!("{}\n", serde_json::to_string_pretty(&status)?)
    } else {
        table(&status)
    };
    // A closed pipe (`herdsman status | head -1`) is not an error worth a panic.
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(ExitCode::SUCCESS)
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The status as text: a line for the deployment, a table of services, a table of
/// replicas. Every name and reason has its control characters escaped: the API's answer
/// is not trusted to be printable.
pub(crate) fn table(status: &DeploymentStatus) -> String {
    let mut out = format!(
        "deployment {}: {}\n\n",
        escape(&status.deployment),
        if status.stable {
            "stable"
        } else {
            "NOT stable"
        }
    );
    let mut services = vec![row([
        "SERVICE", "PHASE", "READY", "RUNNING", "DESIRED", "REASON",
    ])];
    for s in &status.services {
        services.push(row([
            &s.name,
            phase(s.phase),
            &s.healthy.to_string(),
            &s.running.to_string(),
            &s.desired.to_string(),
            s.reason.as_deref().unwrap_or("-"),
        ]));
    }
    out.push_str(&aligned(&services));
    out.push('\n');
    let mut replicas = vec![row([
        "REPLICA",
        "STATE",
        "HEALTH",
        "RESTARTS",
        "LAST EXIT",
        "BACKOFF",
        "PID",
    ])];
    for s in &status.services {
        for r in &s.replicas {
            let health = if r.healthy {
                "healthy"
            } else if r.state.is_running() {
                "unhealthy"
            } else {
                "-"
            };
            let last_exit = match r.last_exit {
                Some(e) => match e.reason {
                    ExitReason::Code(c) => format!("code {c}"),
                    ExitReason::Signal(sig) => format!("signal {sig}"),
                    ExitReason::Lost => "lost".to_string(),
                    ExitReason::Unknown => "unknown".to_string(),
                },
                None => r
                    .last_exit_code
                    .map_or("-".to_string(), |c| format!("code {c}")),
            };
            replicas.push(row([
                &format!("{}/{}", s.name, r.replica),
                r.state.as_str(),
                health,
                &r.restarts.to_string(),
                &last_exit,
                &r.backoff_ms.map_or("-".to_string(), |ms| {
                    herdsman_probe::humanize(Duration::from_millis(ms))
                }),
                &r.pid.map_or("-".to_string(), |p| p.to_string()),
            ]));
        }
    }
    out.push_str(&aligned(&replicas));
    out
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| escape(c).into_owned()).collect()
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn phase(p: ServicePhase) -> &'static str {
    match p {
        ServicePhase::Waiting => "waiting",
        ServicePhase::Running => "running",
        ServicePhase::Shutdown => "shutdown",
        ServicePhase::Failed => "failed",
        ServicePhase::Stopped => "stopped",
    }
}

#[cfg(test)]
mod tests {
    use herdsman_core::{ReplicaState, ReplicaStatus, ServiceStatus};
    use herdsman_runtime::Exit;

    use super::*;

    #[test]
    fn names_and_reasons_from_the_api_are_printed_escaped() {
        let status = DeploymentStatus {
            deployment: "shop\x1b[2J".into(),
            stable: true,
            rollout: None,
            services: vec![ServiceStatus {
                name: "web\x1b]0;x\x07".into(),
                phase: ServicePhase::Failed,
                reason: Some("boom\r\nfake line".into()),
                desired: 0,
                running: 0,
                healthy: 0,
                replicas: Vec::new(),
            }],
        };
        let text = table(&status);
        assert!(!text.contains(['\x1b', '\x07', '\r']), "{text:?}");
        assert!(
            text.starts_with("deployment shop\\x1b[2J: stable\n"),
            "{text:?}"
        );
        assert!(
            text.contains(
                "web\\x1b]0;x\\x07  failed  0      0        0        boom\\r\\nfake line\n"
            ),
            "{text:?}"
        );
    }

    #[test]
    fn the_table_shows_state_health_restarts_last_exit_backoff_and_pid() {
        let status = DeploymentStatus {
            deployment: "shop".into(),
            stable: false,
            rollout: None,
            services: vec![ServiceStatus {
                name: "flaky".into(),
                phase: ServicePhase::Running,
                reason: None,
                desired: 2,
                running: 1,
                healthy: 1,
                replicas: vec![
                    ReplicaStatus {
                        replica: 0,
                        state: ReplicaState::Running,
                        healthy: true,
                        pid: Some(4242),
                        restarts: 0,
                        last_exit_code: None,
                        last_exit: None,
                        backoff_ms: None,
                        container: None,
                        last_error: None,
                        probes: Vec::new(),
                    },
                    ReplicaStatus {
                        replica: 1,
                        state: ReplicaState::Backoff,
                        healthy: false,
                        pid: None,
                        restarts: 4,
                        last_exit_code: Some(3),
                        last_exit: Some(Exit {
                            reason: ExitReason::Code(3),
                            ran_for: Duration::from_secs(1),
                        }),
                        backoff_ms: Some(2000),
                        container: None,
                        last_error: None,
                        probes: Vec::new(),
                    },
                ],
            }],
        };
        assert_eq!(
            table(&status),
            "deployment shop: NOT stable\n\
             \n\
             SERVICE  PHASE    READY  RUNNING  DESIRED  REASON\n\
             flaky    running  1      1        2        -\n\
             \n\
             REPLICA  STATE    HEALTH   RESTARTS  LAST EXIT  BACKOFF  PID\n\
             flaky/0  running  healthy  0         -          -        4242\n\
             flaky/1  backoff  -        4         code 3     2.0s     -\n"
        );
    }
}
