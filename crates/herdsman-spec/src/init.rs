//! A service's init steps and `errors.on_init_failure`, checked and turned into
//! [`InitStep`]s and an [`InitFailurePolicy`].

use std::collections::HashSet;
use std::time::Duration;

use crate::defaults;
use crate::health;
use crate::keywords::{self, InitFailureAction, Uses};
use crate::location::{child, item};
use crate::model::{InitAction, InitFailurePolicy, InitStep};
use crate::raw::{RawInit, RawInitFailure, RawStep, RawWith, Scalar};
use crate::service;
use crate::validation::Issues;
use crate::values::{self, Scope, MAX_DURATION};

/// `path` is the service's `init`; steps that cannot be built are left out (reported).
pub(crate) fn steps(
    issues: &mut Issues,
    path: &str,
    raw: Option<&RawInit>,
    scope: &Scope<'_>,
) -> Vec<InitStep> {
    let raw = raw.and_then(|i| i.steps.as_deref()).unwrap_or(&[]);
    let base = child(path, "steps");
    let mut ids: HashSet<&str> = HashSet::new();
    let mut out = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        let sp = item(&base, i);
        let id = issues.required(&child(&sp, "id"), s.id.as_ref(), "a step id, e.g. wait-db");
        if let Some(id) = id {
            if issues
                .check(
                    &child(&sp, "id"),
                    values::identifier(id.as_str(), "step id"),
                )
                .is_some()
                && !ids.insert(id.as_str())
            {
                issues.add(
                    child(&sp, "id"),
                    format!(
                        "duplicate step id \"{}\" (expected ids unique in the service)",
                        id.as_str()
                    ),
                );
            }
        }
        let step = step(issues, &sp, s, scope);
        if let (Some(id), Some((action, timeout))) = (id, step) {
            out.push(InitStep {
                id: id.as_str().to_string(),
                action,
                timeout,
                retry: issues.integer(
                    &child(&sp, "retry"),
                    s.retry.as_ref(),
                    defaults::STEP_RETRY,
                    0,
                    u32::MAX,
                ),
                on_failure: issues.keyword(
                    &child(&sp, "on_failure"),
                    s.on_failure.as_ref(),
                    &keywords::STEP_FAILURE,
                    defaults::STEP_ON_FAILURE,
                ),
            });
        } else {
            // Still check the remaining fields, so every problem is reported at once.
            issues.integer(&child(&sp, "retry"), s.retry.as_ref(), 0, 0, u32::MAX);
            issues.keyword(
                &child(&sp, "on_failure"),
                s.on_failure.as_ref(),
                &keywords::STEP_FAILURE,
                defaults::STEP_ON_FAILURE,
            );
        }
    }
    out
}

/// The step's action and timeout.
fn step(
    issues: &mut Issues,
    sp: &str,
    s: &RawStep,
    scope: &Scope<'_>,
) -> Option<(InitAction, Duration)> {
    let empty = RawWith::default();
    let with = s.with.as_ref().unwrap_or(&empty);
    let wp = child(sp, "with");
    let timeout = timeout(issues, sp, s.timeout.as_ref(), with.timeout.as_ref());
    let uses = issues
        .required(
            &child(sp, "uses"),
            s.uses.as_ref(),
            &keywords::USES.expected(),
        )
        .and_then(|u| issues.check(&child(sp, "uses"), keywords::USES.parse(u.as_str())))?;
    let w = |field: &str| child(&wp, field);
    let action = match uses {
        Uses::WaitTcp => {
            let context = "uses: init.wait_tcp";
            let fields = &["host", "port", "timeout"];
            issues.not_allowed(&w("url"), with.url.as_ref(), context, fields);
            issues.not_allowed(
                &w("expect_status"),
                with.expect_status.as_ref(),
                context,
                fields,
            );
            issues.not_allowed(&w("command"), with.command.as_ref(), context, fields);
            let host = issues
                .required(
                    &w("host"),
                    with.host.as_ref(),
                    "a host name or address, e.g. 127.0.0.1",
                )
                .and_then(|h| issues.check(&w("host"), values::template(h.as_str(), scope)));
            let port = issues
                .required(
                    &w("port"),
                    with.port.as_ref(),
                    "a port number or a template such as ${PORT}",
                )
                .and_then(|p| issues.check(&w("port"), values::port_template(p.as_str(), scope)));
            InitAction::WaitTcp {
                host: host?,
                port: port?,
            }
        }
        Uses::WaitHttp => {
            let context = "uses: init.wait_http";
            let fields = &["url", "expect_status", "timeout"];
            issues.not_allowed(&w("host"), with.host.as_ref(), context, fields);
            issues.not_allowed(&w("port"), with.port.as_ref(), context, fields);
            issues.not_allowed(&w("command"), with.command.as_ref(), context, fields);
            let expect_status =
                health::status(issues, &w("expect_status"), with.expect_status.as_ref());
            let url = health::url(issues, &w("url"), with.url.as_ref(), scope)?;
            InitAction::WaitHttp { url, expect_status }
        }
        Uses::Run => {
            let context = "uses: init.run";
            let fields = &["command", "timeout"];
            issues.not_allowed(&w("host"), with.host.as_ref(), context, fields);
            issues.not_allowed(&w("port"), with.port.as_ref(), context, fields);
            issues.not_allowed(&w("url"), with.url.as_ref(), context, fields);
            issues.not_allowed(
                &w("expect_status"),
                with.expect_status.as_ref(),
                context,
                fields,
            );
            let command =
                health::shell_command(issues, &w("command"), with.command.as_ref(), scope)?;
            InitAction::Run { command }
        }
    };
    Some((action, timeout))
}

/// The step timeout: `timeout`, or ZLayer's `with.timeout` (plain seconds or a duration).
fn timeout(
    issues: &mut Issues,
    sp: &str,
    ours: Option<&Scalar>,
    zlayer: Option<&Scalar>,
) -> Duration {
    let tp = child(sp, "timeout");
    let zp = child(&child(sp, "with"), "timeout");
    match (ours, zlayer) {
        (Some(_), Some(_)) => {
            issues.add(
                zp,
                "step timeout given twice (expected either timeout or with.timeout)",
            );
            issues.duration(&tp, ours, defaults::STEP_TIMEOUT, false)
        }
        (None, Some(z)) if z.as_str().trim().bytes().all(|b| b.is_ascii_digit()) => {
            let max = u32::try_from(MAX_DURATION.as_secs()).unwrap_or(u32::MAX);
            let secs = issues.integer(&zp, Some(z), 60, 1, max);
            Duration::from_secs(u64::from(secs))
        }
        (None, Some(z)) => issues.duration(&zp, Some(z), defaults::STEP_TIMEOUT, false),
        (ours, None) => issues.duration(&tp, ours, defaults::STEP_TIMEOUT, false),
    }
}

/// `errors.on_init_failure`: `action` plus the keys that action takes.
pub(crate) fn on_init_failure(
    issues: &mut Issues,
    path: &str,
    raw: Option<&RawInitFailure>,
) -> InitFailurePolicy {
    let Some(r) = raw else {
        return InitFailurePolicy::Fail;
    };
    let p = |field: &str| child(path, field);
    let action = issues.keyword(
        &p("action"),
        r.action.as_ref(),
        &keywords::INIT_FAILURE,
        InitFailureAction::Fail,
    );
    match action {
        InitFailureAction::Fail => {
            issues.not_allowed(
                &p("max_retries"),
                r.max_retries.as_ref(),
                "action fail",
                &[],
            );
            issues.not_allowed(&p("delay"), r.delay.as_ref(), "action fail", &[]);
            issues.not_allowed(&p("backoff"), r.backoff.as_ref(), "action fail", &[]);
            InitFailurePolicy::Fail
        }
        InitFailureAction::Restart => {
            issues.not_allowed(
                &p("backoff"),
                r.backoff.as_ref(),
                "action restart",
                &["max_retries", "delay"],
            );
            InitFailurePolicy::Restart {
                max_retries: issues.integer(
                    &p("max_retries"),
                    r.max_retries.as_ref(),
                    defaults::INIT_RESTART_MAX_RETRIES,
                    0,
                    u32::MAX,
                ),
                delay: issues.duration(
                    &p("delay"),
                    r.delay.as_ref(),
                    defaults::INIT_RESTART_DELAY,
                    true,
                ),
            }
        }
        InitFailureAction::Backoff => {
            issues.not_allowed(
                &p("delay"),
                r.delay.as_ref(),
                "action backoff",
                &["max_retries", "backoff"],
            );
            InitFailurePolicy::Backoff {
                max_retries: issues.integer(
                    &p("max_retries"),
                    r.max_retries.as_ref(),
                    defaults::INIT_BACKOFF_MAX_RETRIES,
                    0,
                    u32::MAX,
                ),
                backoff: service::backoff(issues, &p("backoff"), r.backoff.as_ref()),
            }
        }
    }
}
