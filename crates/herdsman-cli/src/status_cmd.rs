//! `herdsman status`: a table of services and replicas, read from a running `herdsman
//! run` through its control socket (`-w` redraws it on every event) or, with `--api` or
//! when no control socket is found, through its HTTP API.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use herdsman_core::{DeploymentStatus, ReplicaState, ReplicaStatus, ServicePhase, ServiceStatus};
use herdsman_runtime::ExitReason;

use crate::api::{DEFAULT_ADDR, TOKEN_ENV};
use crate::control::{Answer, Request};
use crate::operate::{self, Failure, Target};
use crate::progress::humanize_secs;
use crate::terminal::escape;

/// Flags of `herdsman status`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StatusArgs {
    /// Read the status from the HTTP API at IP:PORT or a URL instead of the control
    /// socket (default when no control socket is found: 127.0.0.1:7777).
    #[arg(long, value_name = "ADDR")]
    api: Option<String>,
    /// Print the `/v1/status` JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Bearer token, if the API wants one (default: $HERDSMAN_API_TOKEN). Visible to
    /// other users in the process list: prefer --api-token-file or the variable.
    #[arg(long, value_name = "TOKEN")]
    api_token: Option<String>,
    /// Watch: redraw the table on every event until Ctrl-C (control socket only).
    #[arg(short, long)]
    watch: bool,
    #[command(flatten)]
    on: Target,
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
    if args.api.is_none() {
        match args.on.find().await {
            Ok(_) => return Ok(from_socket(&args).await),
            // Nothing was named: an older run may serve only the HTTP API.
            Err(Failure::Failed(_)) if !args.on.given() && !args.watch => {}
            Err(failure) => return Ok(failure.report()),
        }
    } else if args.watch {
        return Ok(Failure::Usage(
            "-w follows the control socket: name the run with --state-dir or -d, not --api".into(),
        )
        .report());
    }
    let api = args.api.clone().unwrap_or_else(|| DEFAULT_ADDR.to_string());
    let base = if api.contains("://") {
        api.trim_end_matches('/').to_string()
    } else {
        format!("http://{api}")
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
            api,
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
    let nodes = replica_nodes(&body);
    let text = if args.json && nodes.is_some() {
        // A cluster's status as the coordinator gave it, nodes included.
        format!("{}\n", body.trim())
    } else if args.json {
        format!("{}\n", serde_json::to_string_pretty(&status)?)
    } else {
        let table = match &nodes {
            Some(nodes) => render(&status, None, Some(nodes)),
            None => table(&status),
        };
        table + &containment_line(&body)
    };
    // A closed pipe (`herdsman status | head -1`) is not an error worth a panic.
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(ExitCode::SUCCESS)
}

/// `containment: MODE` when the status names a mode this herdsman knows.
fn containment_line(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Mode {
        containment: Option<String>,
    }
    match serde_json::from_str::<Mode>(body)
        .ok()
        .and_then(|m| m.containment)
    {
        Some(mode) if mode == "cgroup" || mode == "process-group" => {
            format!("\ncontainment: {mode}\n")
        }
        _ => String::new(),
    }
}

/// The status through the control socket: once, or redrawn on every event with `-w`.
async fn from_socket(args: &StatusArgs) -> ExitCode {
    let request = if args.watch {
        Request::Watch
    } else {
        Request::Status
    };
    let (json, watch) = (args.json, args.watch);
    let term = console::Term::stdout();
    let redraw = watch && term.is_term();
    operate::exchange(&args.on, request, |answer| {
        let Answer::Status {
            status,
            backoff_left_ms,
        } = answer
        else {
            return true;
        };
        let text = if json && watch {
            format!("{}\n", serde_json::to_string(&status).unwrap_or_default())
        } else if json {
            format!(
                "{}\n",
                serde_json::to_string_pretty(&status).unwrap_or_default()
            )
        } else {
            table_with(&status, Some(&backoff_left_ms))
        };
        if redraw {
            let _ = term.clear_screen();
        } else if watch && !json {
            // Tables one after the other, apart.
            let _ = std::io::stdout().write_all(b"\n");
        }
        std::io::stdout()
            .write_all(text.as_bytes())
            .and_then(|()| std::io::stdout().flush())
            .is_ok()
    })
    .await
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
/// is not trusted to be printable. Backoff shows the delay in force, its time left not
/// being known.
pub(crate) fn table(status: &DeploymentStatus) -> String {
    table_with(status, None)
}

/// The node of each replica by `service/replica`, when `body` is a cluster's status
/// (whose replicas carry a `node`).
fn replica_nodes(body: &str) -> Option<BTreeMap<String, String>> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let mut nodes = BTreeMap::new();
    for s in value["services"].as_array()? {
        for r in s["replicas"].as_array().into_iter().flatten() {
            let node = r.get("node")?;
            let key = format!("{}/{}", s["name"].as_str()?, r["replica"].as_u64()?);
            nodes.insert(key, node.as_str().unwrap_or("-").to_string());
        }
    }
    (!nodes.is_empty()).then_some(nodes)
}

/// The table, with the time left of each backoff by `service/replica` when known.
pub(crate) fn table_with(
    status: &DeploymentStatus,
    backoff_left: Option<&BTreeMap<String, u64>>,
) -> String {
    render(status, backoff_left, None)
}

/// The table; with `nodes` (a cluster's), a NODE column.
fn render(
    status: &DeploymentStatus,
    backoff_left: Option<&BTreeMap<String, u64>>,
    nodes: Option<&BTreeMap<String, String>>,
) -> String {
    let colour = std::io::stdout().is_terminal() && console::colors_enabled();
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
        let done = completed(s);
        let phase = if done { "completed" } else { phase(s.phase) };
        // A job that ran to completion is not "ready"; it is done.
        let ready = if done {
            "-".to_string()
        } else {
            s.healthy.to_string()
        };
        let mut cells = row([
            &s.name,
            phase,
            &ready,
            &live(s).to_string(),
            &s.desired.to_string(),
            &reason(s, backoff_left),
        ]);
        // Painted after escaping: the colour's own escape codes are meant.
        cells[1] = paint(phase, colour);
        services.push(cells);
    }
    out.push_str(&aligned(&services));
    out.push('\n');
    let mut header = row([
        "REPLICA",
        "STATE",
        "HEALTH",
        "RESTARTS",
        "LAST EXIT",
        "BACKOFF",
        "PID",
    ]);
    if nodes.is_some() {
        header.insert(1, "NODE".to_string());
    }
    let mut replicas = vec![header];
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
            let mut cells = row([
                &format!("{}/{}", s.name, r.replica),
                r.state.as_str(),
                health,
                &r.restarts.to_string(),
                &last_exit,
                &backoff(&s.name, r, backoff_left),
                &r.pid.map_or("-".to_string(), |p| p.to_string()),
            ]);
            cells[1] = paint(r.state.as_str(), colour);
            cells[2] = paint(health, colour);
            if let Some(nodes) = nodes {
                let key = format!("{}/{}", s.name, r.replica);
                let node = nodes.get(&key).map_or("-", String::as_str);
                cells.insert(1, escape(node).into_owned());
            }
            replicas.push(cells);
        }
    }
    out.push_str(&aligned(&replicas));
    out
}

/// Every desired replica of the service ran to completion (a finished job).
fn completed(s: &ServiceStatus) -> bool {
    s.desired > 0
        && s.replicas
            .iter()
            .filter(|r| r.state == ReplicaState::Completed)
            .count()
            >= s.desired as usize
}

/// Replicas with a live process: running ones, and isolated or stopping ones whose
/// process is still there.
fn live(s: &ServiceStatus) -> usize {
    s.replicas
        .iter()
        .filter(|r| r.state.is_running() || r.pid.is_some())
        .count()
}

/// Why a service is not all ready: its own reason, else what its replicas are doing.
fn reason(s: &ServiceStatus, backoff_left: Option<&BTreeMap<String, u64>>) -> String {
    if let Some(r) = &s.reason {
        return r.clone();
    }
    let mut parts = Vec::new();
    for r in &s.replicas {
        let name = format!("{}/{}", s.name, r.replica);
        let why = r
            .last_error
            .clone()
            .or_else(|| r.last_exit.map(|e| format!("last exit: {e}")));
        let because = why.map(|w| format!(" ({w})")).unwrap_or_default();
        match r.state {
            ReplicaState::Backoff => parts.push(format!(
                "{name} crash looping, restart in {}{because}",
                backoff(&s.name, r, backoff_left)
            )),
            ReplicaState::Failed => parts.push(format!("{name} failed{because}")),
            ReplicaState::Isolated => parts.push(format!("{name} isolated{because}")),
            ReplicaState::Running if !r.healthy => parts.push(format!("{name} unhealthy")),
            _ => {}
        }
    }
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join("; ")
    }
}

/// The BACKOFF cell: the time left when known, else `up to` the delay in force.
fn backoff(service: &str, r: &ReplicaStatus, left: Option<&BTreeMap<String, u64>>) -> String {
    if r.state != ReplicaState::Backoff {
        return "-".to_string();
    }
    let key = format!("{service}/{}", r.replica);
    match (left.and_then(|m| m.get(&key)), r.backoff_ms) {
        (Some(ms), _) => humanize_secs(Duration::from_millis(*ms)),
        (None, Some(ms)) if left.is_none() => {
            format!("up to {}", humanize_secs(Duration::from_millis(ms)))
        }
        // Known not to be counting down any more: the restart is due.
        (None, _) => "due".to_string(),
    }
}

/// A state or health word, coloured when stdout is a terminal that wants colour.
fn paint(word: &str, colour: bool) -> String {
    if !colour {
        return word.to_string();
    }
    let style = console::Style::new().force_styling(true);
    let style = match word {
        "running" | "healthy" | "completed" => style.green(),
        "backoff" | "starting" | "initializing" | "waiting" | "stopping" => style.yellow(),
        "failed" | "unhealthy" | "isolated" | "shutdown" => style.red(),
        _ => return word.to_string(),
    };
    style.apply_to(word).to_string()
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
                .map(|s| console::measure_text_width(s))
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
                let pad = widths[c].saturating_sub(console::measure_text_width(cell));
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
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
    use herdsman_runtime::Exit;

    use super::*;

    fn replica(i: u32, state: ReplicaState) -> ReplicaStatus {
        ReplicaStatus {
            state,
            healthy: state == ReplicaState::Running,
            pid: state.is_running().then_some(4242 + i),
            ..ReplicaStatus::new(i)
        }
    }

    fn service(name: &str, desired: u32, replicas: Vec<ReplicaStatus>) -> ServiceStatus {
        ServiceStatus {
            name: name.into(),
            phase: ServicePhase::Running,
            reason: None,
            desired,
            running: replicas.iter().filter(|r| r.state.is_running()).count() as u32,
            healthy: replicas.iter().filter(|r| r.is_ready()).count() as u32,
            replicas,
        }
    }

    fn deployment(services: Vec<ServiceStatus>) -> DeploymentStatus {
        DeploymentStatus {
            deployment: "shop".into(),
            stable: false,
            services,
            rollout: None,
        }
    }

    fn crash_looping(delay_ms: u64) -> ReplicaStatus {
        ReplicaStatus {
            restarts: 4,
            last_exit_code: Some(3),
            last_exit: Some(Exit {
                reason: ExitReason::Code(3),
                ran_for: Duration::from_secs(1),
            }),
            backoff_ms: Some(delay_ms),
            ..replica(1, ReplicaState::Backoff)
        }
    }

    /// The line of the table that starts with `first`.
    fn line<'a>(table: &'a str, first: &str) -> &'a str {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{first} ")))
            .unwrap_or_else(|| panic!("no {first} row in\n{table}"))
    }

    #[test]
    fn the_table_shows_state_health_restarts_last_exit_backoff_and_pid() {
        let status = deployment(vec![service(
            "flaky",
            2,
            vec![replica(0, ReplicaState::Running), crash_looping(2000)],
        )]);
        let left = BTreeMap::from([("flaky/1".to_string(), 1200)]);

        assert_eq!(
            table_with(&status, Some(&left)),
            "deployment shop: NOT stable\n\
             \n\
             SERVICE  PHASE    READY  RUNNING  DESIRED  REASON\n\
             flaky    running  1      1        2        flaky/1 crash looping, restart in 1.2s (last exit: exit code 3 after 1.0s)\n\
             \n\
             REPLICA  STATE    HEALTH   RESTARTS  LAST EXIT  BACKOFF  PID\n\
             flaky/0  running  healthy  0         -          -        4242\n\
             flaky/1  backoff  -        4         code 3     1.2s     -\n"
        );
    }

    #[test]
    fn a_completed_job_shows_completed_not_running_with_none_ready() {
        let status = deployment(vec![service(
            "migrate",
            1,
            vec![replica(0, ReplicaState::Completed)],
        )]);
        let text = table(&status);
        let row = line(&text, "migrate");
        assert!(row.starts_with("migrate  completed  -      0"), "{row}");
    }

    #[test]
    fn an_isolated_replica_whose_process_lives_counts_as_running() {
        let isolated = ReplicaStatus {
            pid: Some(77),
            last_error: Some("unhealthy: HTTP 503".into()),
            ..replica(0, ReplicaState::Isolated)
        };
        let status = deployment(vec![service("api", 1, vec![isolated])]);
        let text = table(&status);
        let row = line(&text, "api");
        assert!(
            row.starts_with("api      running  0      1        1"),
            "RUNNING counts the live isolated process: {row}"
        );
        assert!(
            row.ends_with("api/0 isolated (unhealthy: HTTP 503)"),
            "{row}"
        );
    }

    #[test]
    fn backoff_shows_the_time_left_or_the_delay_bound_and_long_delays_humanized() {
        let status = deployment(vec![service("flaky", 2, vec![crash_looping(600_000)])]);
        let known = BTreeMap::from([("flaky/1".to_string(), 599_000)]);
        let text = table_with(&status, Some(&known));
        assert!(line(&text, "flaky/1").contains(" 9m 59s "), "{text}");
        let text = table(&status);
        assert!(
            line(&text, "flaky/1").contains(" up to 10m "),
            "without the clock the delay is a bound: {text}"
        );
        assert!(!text.contains("600.0s"), "{text}");
        let text = table_with(&status, Some(&BTreeMap::new()));
        assert!(line(&text, "flaky/1").contains(" due "), "{text}");
    }

    #[test]
    fn a_service_in_backoff_or_unhealthy_says_why_in_its_reason() {
        let unhealthy = ReplicaStatus {
            healthy: false,
            ..replica(0, ReplicaState::Running)
        };
        let status = deployment(vec![service(
            "web",
            2,
            vec![unhealthy, crash_looping(2000)],
        )]);
        let text = table(&status);
        assert!(
            line(&text, "web").ends_with(
                "web/0 unhealthy; web/1 crash looping, restart in up to 2.0s (last exit: exit code 3 after 1.0s)"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_cluster_status_gets_a_node_column_and_a_single_node_one_does_not() {
        let status = deployment(vec![service(
            "web",
            2,
            vec![
                replica(0, ReplicaState::Running),
                replica(1, ReplicaState::Running),
            ],
        )]);
        let mut body = serde_json::to_value(&status).expect("json");
        assert!(replica_nodes(&body.to_string()).is_none());
        body["services"][0]["replicas"][0]["node"] = "n1".into();
        body["services"][0]["replicas"][1]["node"] = serde_json::Value::Null;
        let nodes = replica_nodes(&body.to_string()).expect("a cluster's status");
        let table = render(&status, None, Some(&nodes));
        assert!(line(&table, "REPLICA").contains("NODE"), "{table}");
        assert!(line(&table, "web/0").contains("n1"), "{table}");
        assert!(line(&table, "web/1").contains(" - "), "{table}");
        assert!(!line(&table_with(&status, None), "REPLICA").contains("NODE"));
    }

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
    fn the_containment_mode_is_shown_only_when_it_is_one_herdsman_knows() {
        assert_eq!(
            containment_line(r#"{"containment":"cgroup"}"#),
            "\ncontainment: cgroup\n"
        );
        assert_eq!(containment_line(r#"{"containment":"\u001b[2J"}"#), "");
        assert_eq!(containment_line("{}"), "");
    }
}
