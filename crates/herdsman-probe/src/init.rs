//! Running one init step: `init.wait_tcp`, `init.wait_http` or `init.run`, each try bounded
//! by the step's timeout, failed tries really retried after a short backoff.

use std::future::Future;
use std::time::Duration;

use herdsman_spec::{InitAction, InitStep, ReplicaVars};
use serde::{Deserialize, Serialize};
use tokio::time::{sleep, sleep_until, timeout_at, Instant};

use crate::{check_tcp, humanize, run_command, Cgroup, CommandRequest, HttpProber, Outcome};

/// First pause between two tries of a step; it doubles per try.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest pause between two tries of a step.
const RETRY_MAX: Duration = Duration::from_secs(2);
/// First pause between two connection attempts inside one `wait_*` try; it doubles.
const POLL_FIRST: Duration = Duration::from_millis(100);
/// Longest pause between two connection attempts inside one `wait_*` try.
const POLL_MAX: Duration = Duration::from_secs(1);
/// Time left for the last check of a `wait_*` try (at most a quarter of the try).
const LAST_CHECK_ROOM: Duration = Duration::from_millis(100);
/// Most bytes of a failed try's output appended to the step's error: enough for a
/// message, short enough for an event.
const ERROR_OUTPUT_CAP: usize = 1024;
/// A try bounds itself by its deadline; the outer bound leaves it this long to report
/// (an `init.run` command killed at the deadline is still reaped and its output read).
const TRY_SLACK: Duration = Duration::from_secs(1);

/// What one init step did, after its retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReport {
    /// Step id.
    pub step: String,
    /// True when the step succeeded.
    pub ok: bool,
    /// Tries made (1 + retries used).
    pub attempts: u32,
    /// Why the last try failed, followed by the end of its output when it had any (an
    /// `init.run` command's output, an `init.wait_http` response body), so an event can
    /// show what went wrong.
    pub error: Option<String>,
    /// Total time.
    pub duration: Duration,
}

impl StepReport {
    /// A report of a step that succeeded after `attempts` tries.
    pub fn passed(step: &InitStep, attempts: u32, duration: Duration) -> StepReport {
        StepReport {
            step: step.id.clone(),
            ok: true,
            attempts,
            error: None,
            duration,
        }
    }

    /// A report of a step whose last of `attempts` tries failed because of `error`.
    pub fn failed(
        step: &InitStep,
        attempts: u32,
        error: impl Into<String>,
        duration: Duration,
    ) -> StepReport {
        StepReport {
            step: step.id.clone(),
            ok: false,
            attempts,
            error: Some(error.into()),
            duration,
        }
    }
}

/// Run one init step with its timeout and retries.
///
/// Each try is bounded by `step.timeout`: `init.wait_tcp` and `init.wait_http` keep trying
/// to connect (every 100 ms, backing off to 1 s) until one succeeds or the try's time is up;
/// `init.run` runs its command once with `sh -c`, the replica's variables (`REPLICA`,
/// `PORT`, ...) in its environment, killing its whole process group at the timeout. A failed
/// try is followed by up to `step.retry` more, after a pause of 100 ms doubling up to 2 s. A
/// step whose configuration cannot work (a port that is not a number) is not retried.
///
/// # Cancel safety
/// Dropping the future stops the step; an `init.run` command's process group is killed.
pub async fn run_step(step: &InitStep, vars: &ReplicaVars) -> StepReport {
    run_step_in(step, vars, None).await
}

/// [`run_step`], with an `init.run` command contained in `cgroup` (see
/// [`CommandRequest::cgroup`]): everything it starts, even detached, ends with each try.
pub async fn run_step_in(
    step: &InitStep,
    vars: &ReplicaVars,
    cgroup: Option<Cgroup>,
) -> StepReport {
    let mut action = Expanded::new(&step.action, vars);
    if let Expanded::Run { request } = &mut action {
        request.cgroup = cgroup;
    }
    run_tries(step, |deadline| action.try_once(deadline)).await
}

/// The result of one try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Try {
    /// Why it failed, `None` on success.
    pub(crate) error: Option<String>,
    /// Output worth showing.
    pub(crate) output: String,
    /// The failure cannot go away by trying again.
    pub(crate) permanent: bool,
}

impl Try {
    fn ok(output: String) -> Try {
        Try {
            error: None,
            output,
            permanent: false,
        }
    }

    fn failed(error: String, output: String) -> Try {
        Try {
            error: Some(error),
            output,
            permanent: false,
        }
    }
}

/// The pause after failed try number `n` (0-based): 100 ms doubling, capped at 2 s.
pub(crate) fn retry_delay(n: u32) -> Duration {
    RETRY_FIRST
        .saturating_mul(2u32.saturating_pow(n))
        .min(RETRY_MAX)
}

/// Make up to `1 + step.retry` tries, each given a deadline `step.timeout` away.
pub(crate) async fn run_tries<F, Fut>(step: &InitStep, mut try_once: F) -> StepReport
where
    F: FnMut(Instant) -> Fut,
    Fut: Future<Output = Try>,
{
    let started = Instant::now();
    let tries = step.retry.saturating_add(1);
    let mut attempts = 0;
    let mut last = Try::failed("not run".into(), String::new());
    while attempts < tries {
        if attempts > 0 {
            sleep(retry_delay(attempts - 1)).await;
        }
        attempts += 1;
        let deadline = Instant::now() + step.timeout;
        last = match timeout_at(deadline + TRY_SLACK, try_once(deadline)).await {
            Ok(t) => t,
            Err(_) => Try::failed(
                format!("timed out after {}", humanize(step.timeout)),
                String::new(),
            ),
        };
        if last.error.is_none() || last.permanent {
            break;
        }
    }
    StepReport {
        step: step.id.clone(),
        ok: last.error.is_none(),
        attempts,
        error: last.error.map(|e| with_output(e, &last.output)),
        duration: started.elapsed(),
    }
}

/// `error`, then `; output: ` and the last [`ERROR_OUTPUT_CAP`] bytes of `output` when it
/// has any.
fn with_output(error: String, output: &str) -> String {
    let output = output.trim();
    if output.is_empty() {
        return error;
    }
    let mut start = output.len().saturating_sub(ERROR_OUTPUT_CAP);
    while !output.is_char_boundary(start) {
        start += 1;
    }
    format!("{error}; output: {}", &output[start..])
}

/// A step's action with its templates expanded for one replica.
#[derive(Debug, Clone)]
enum Expanded {
    WaitTcp {
        host: String,
        port: Result<u16, String>,
    },
    WaitHttp {
        url: String,
        expect_status: Option<u16>,
    },
    Run {
        request: CommandRequest,
    },
}

impl Expanded {
    fn new(action: &InitAction, vars: &ReplicaVars) -> Expanded {
        match action {
            InitAction::WaitTcp { host, port } => {
                let text = port.expand(vars);
                Expanded::WaitTcp {
                    host: host.expand(vars),
                    port: text
                        .trim()
                        .parse::<u16>()
                        .map_err(|_| format!("port {text:?} is not a port number")),
                }
            }
            InitAction::WaitHttp { url, expect_status } => Expanded::WaitHttp {
                url: url.expand(vars),
                expect_status: *expect_status,
            },
            InitAction::Run { command } => {
                let mut request = CommandRequest::shell(command.expand(vars));
                request.env = vars.as_env().into_iter().collect();
                Expanded::Run { request }
            }
        }
    }

    async fn try_once(&self, deadline: Instant) -> Try {
        match self {
            Expanded::WaitTcp { host, port } => match port {
                Ok(port) => {
                    wait_until(deadline, |left| async move {
                        let r = check_tcp(host, *port, left).await;
                        (r.outcome, r.output)
                    })
                    .await
                }
                Err(e) => Try {
                    error: Some(e.clone()),
                    output: String::new(),
                    permanent: true,
                },
            },
            Expanded::WaitHttp { url, expect_status } => {
                wait_until(deadline, |left| async move {
                    let r = HttpProber::shared().check(url, *expect_status, left).await;
                    (r.outcome, r.output)
                })
                .await
            }
            Expanded::Run { request } => {
                let left = deadline.saturating_duration_since(Instant::now());
                match run_command(request, left).await {
                    Ok(out) => {
                        let result = out.to_check_result();
                        match result.outcome {
                            Outcome::Success => Try::ok(result.output),
                            Outcome::Failure(e) | Outcome::Unknown(e) => {
                                Try::failed(e, result.output)
                            }
                        }
                    }
                    Err(e) => Try::failed(crate::error::chain(&e), String::new()),
                }
            }
        }
    }
}

/// Check again and again until a check succeeds or `deadline` passes, pausing 100 ms
/// doubling up to 1 s between checks; each check gets the time left as its timeout. The
/// last check starts a little before the deadline (100 ms, or a quarter of a short window)
/// rather than being skipped because the next pause would overrun it.
async fn wait_until<F, Fut>(deadline: Instant, mut check: F) -> Try
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = (Outcome, String)>,
{
    let started = Instant::now();
    let window = deadline.saturating_duration_since(started);
    let last_start = deadline - LAST_CHECK_ROOM.min(window / 4);
    let mut pause = POLL_FIRST;
    let mut last = String::from("no check finished in time");
    let mut output = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let (outcome, out) = check(left).await;
        match outcome {
            Outcome::Success => return Try::ok(out),
            Outcome::Failure(e) | Outcome::Unknown(e) => {
                last = e;
                output = out;
            }
        }
        let now = Instant::now();
        if now >= last_start {
            break;
        }
        sleep_until((now + pause).min(last_start)).await;
        pause = (pause * 2).min(POLL_MAX);
    }
    Try::failed(
        format!(
            "not ready after {}; last check: {last}",
            humanize(started.elapsed())
        ),
        output,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use herdsman_spec::{StepFailure, Template};
    use std::sync::{Arc, Mutex};

    fn step(timeout_ms: u64, retry: u32) -> InitStep {
        InitStep {
            id: "s".into(),
            action: InitAction::Run {
                command: Template::literal("true"),
            },
            timeout: Duration::from_millis(timeout_ms),
            retry,
            on_failure: StepFailure::Warn,
        }
    }

    #[test]
    fn a_failed_try_error_ends_with_the_tail_of_its_output() {
        assert_eq!(with_output("boom".into(), "  \n"), "boom");
        assert_eq!(with_output("boom".into(), "a\nb\n"), "boom; output: a\nb");
        let long = format!("{}end", "x".repeat(5000));
        let e = with_output("boom".into(), &long);
        assert_eq!(e.len(), "boom; output: ".len() + ERROR_OUTPUT_CAP);
        assert!(e.ends_with("xend"));
    }

    #[test]
    fn retry_delay_doubles_from_100ms_and_caps_at_2s() {
        let ms: Vec<u128> = (0..8).map(|n| retry_delay(n).as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(retry_delay(u32::MAX), RETRY_MAX);
    }

    /// A try function that fails the first `fail` tries after sleeping `work`, recording
    /// when each try started.
    fn flaky(
        fail: u32,
        work: Duration,
        starts: Arc<Mutex<Vec<Duration>>>,
        origin: Instant,
    ) -> impl FnMut(Instant) -> std::pin::Pin<Box<dyn Future<Output = Try>>> {
        let mut n = 0;
        move |_deadline| {
            n += 1;
            let this = n;
            let starts = Arc::clone(&starts);
            Box::pin(async move {
                if let Ok(mut s) = starts.lock() {
                    s.push(Instant::now() - origin);
                }
                sleep(work).await;
                if this <= fail {
                    Try::failed(format!("try {this} failed"), format!("out {this}"))
                } else {
                    Try::ok(String::new())
                }
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failed_tries_are_retried_after_a_doubling_pause() {
        let origin = Instant::now();
        let starts = Arc::new(Mutex::new(Vec::new()));
        let work = Duration::from_millis(10);
        let r = run_tries(&step(1000, 5), flaky(3, work, Arc::clone(&starts), origin)).await;
        assert!(r.ok, "{r:?}");
        assert_eq!(r.attempts, 4);
        assert_eq!(r.error, None);
        let got: Vec<u128> = starts
            .lock()
            .map(|s| s.iter().map(|d| d.as_millis()).collect())
            .unwrap_or_default();
        // Each try takes 10 ms, then pauses of 100, 200, 400 ms.
        assert_eq!(got, vec![0, 110, 320, 730]);
        assert_eq!(r.duration, Duration::from_millis(740));
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_that_keeps_failing_reports_its_last_error_after_all_retries() {
        let origin = Instant::now();
        let starts = Arc::new(Mutex::new(Vec::new()));
        let r = run_tries(&step(1000, 2), flaky(99, Duration::ZERO, starts, origin)).await;
        assert!(!r.ok);
        assert_eq!(r.attempts, 3);
        assert_eq!(r.error.as_deref(), Some("try 3 failed; output: out 3"));
        assert_eq!(r.duration, Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_try_that_overruns_its_timeout_is_cut_off_and_retried() {
        let origin = Instant::now();
        let starts = Arc::new(Mutex::new(Vec::new()));
        // Each try would take an hour; the step allows 1 s per try (plus the reporting slack).
        let r = run_tries(
            &step(1000, 1),
            flaky(99, Duration::from_secs(3600), Arc::clone(&starts), origin),
        )
        .await;
        assert!(!r.ok);
        assert_eq!(r.attempts, 2);
        assert_eq!(r.error.as_deref(), Some("timed out after 1.0s"));
        assert_eq!(r.duration, Duration::from_millis(2000 + 100 + 2000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_is_not_retried() {
        let s = InitStep {
            action: InitAction::WaitTcp {
                host: Template::literal("127.0.0.1"),
                port: Template::literal("http"),
            },
            ..step(1000, 5)
        };
        let vars = ReplicaVars {
            deployment: "d".into(),
            service: "s".into(),
            replica: 0,
            ports: vec![],
        };
        let r = run_step(&s, &vars).await;
        assert!(!r.ok);
        assert_eq!(r.attempts, 1);
        assert_eq!(
            r.error.as_deref(),
            Some("port \"http\" is not a port number")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_polls_with_a_doubling_pause_until_the_deadline() {
        let origin = Instant::now();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let c = Arc::clone(&calls);
        let t = wait_until(origin + Duration::from_secs(3), move |left| {
            let c = Arc::clone(&c);
            async move {
                if let Ok(mut v) = c.lock() {
                    v.push(((Instant::now() - origin).as_millis(), left.as_millis()));
                }
                (Outcome::Failure("refused".into()), String::new())
            }
        })
        .await;
        let got = calls.lock().map(|v| v.clone()).unwrap_or_default();
        // Pauses of 100, 200, 400, 800, 1000 ms, then a last check 100 ms before the end.
        let at: Vec<u128> = got.iter().map(|(a, _)| *a).collect();
        assert_eq!(at, vec![0, 100, 300, 700, 1500, 2500, 2900]);
        let left: Vec<u128> = got.iter().map(|(_, l)| *l).collect();
        assert_eq!(left, vec![3000, 2900, 2700, 2300, 1500, 500, 100]);
        assert_eq!(
            t.error.as_deref(),
            Some("not ready after 2.9s; last check: refused")
        );
    }
}
