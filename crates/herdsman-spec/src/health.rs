//! A service's `health` section and its check, checked and turned into [`Health`].

use crate::defaults;
use crate::keywords::{self, CheckType};
use crate::location::child;
use crate::model::{Check, Health};
use crate::raw::{RawCheck, RawHealth, Scalar};
use crate::template::Template;
use crate::validation::Issues;
use crate::values::{self, Scope};

/// `None` when the service has no health section, or its check is unusable (reported).
pub(crate) fn health(
    issues: &mut Issues,
    path: &str,
    raw: Option<&RawHealth>,
    scope: &Scope<'_>,
) -> Option<Health> {
    let r = raw?;
    let p = |field: &str| child(path, field);
    let start_grace = issues.duration(
        &p("start_grace"),
        r.start_grace.as_ref(),
        defaults::START_GRACE,
        true,
    );
    let start_interval = issues.duration(
        &p("start_interval"),
        r.start_interval.as_ref(),
        defaults::START_INTERVAL,
        false,
    );
    let interval = issues.duration(
        &p("interval"),
        r.interval.as_ref(),
        defaults::INTERVAL,
        false,
    );
    let timeout = issues.duration(&p("timeout"), r.timeout.as_ref(), defaults::TIMEOUT, false);
    let retries = issues.integer(
        &p("retries"),
        r.retries.as_ref(),
        defaults::RETRIES,
        1,
        u32::MAX,
    );
    let success_threshold = issues.integer(
        &p("success_threshold"),
        r.success_threshold.as_ref(),
        defaults::SUCCESS_THRESHOLD,
        1,
        u32::MAX,
    );
    let on_unhealthy = issues.keyword(
        &p("on_unhealthy"),
        r.on_unhealthy.as_ref(),
        &keywords::ON_UNHEALTHY,
        defaults::ON_UNHEALTHY,
    );
    let check = issues
        .required(
            &p("check"),
            r.check.as_ref(),
            "a check with type tcp, http or command",
        )
        .and_then(|c| check(issues, &p("check"), c, scope))?;
    Some(Health {
        start_grace,
        start_interval,
        interval,
        timeout,
        retries,
        success_threshold,
        on_unhealthy,
        check,
    })
}

fn check(issues: &mut Issues, path: &str, raw: &RawCheck, scope: &Scope<'_>) -> Option<Check> {
    let p = |field: &str| child(path, field);
    let kind = issues
        .required(
            &p("type"),
            raw.kind.as_ref(),
            &keywords::CHECK_TYPE.expected(),
        )
        .and_then(|k| issues.check(&p("type"), keywords::CHECK_TYPE.parse(k.as_str())))?;
    match kind {
        CheckType::Tcp => {
            let context = "check type tcp";
            let fields = &["host", "port"];
            issues.not_allowed(&p("url"), raw.url.as_ref(), context, fields);
            issues.not_allowed(
                &p("expect_status"),
                raw.expect_status.as_ref(),
                context,
                fields,
            );
            issues.not_allowed(&p("command"), raw.command.as_ref(), context, fields);
            let host = optional_template(issues, &p("host"), raw.host.as_ref(), scope);
            let port = issues
                .required(
                    &p("port"),
                    raw.port.as_ref(),
                    "a port number or a template such as ${PORT}",
                )
                .and_then(|s| issues.check(&p("port"), values::port_template(s.as_str(), scope)))?;
            Some(Check::Tcp { host, port })
        }
        CheckType::Http => {
            let context = "check type http";
            let fields = &["url", "expect_status"];
            issues.not_allowed(&p("host"), raw.host.as_ref(), context, fields);
            issues.not_allowed(&p("port"), raw.port.as_ref(), context, fields);
            issues.not_allowed(&p("command"), raw.command.as_ref(), context, fields);
            let expect_status = status(issues, &p("expect_status"), raw.expect_status.as_ref());
            let url = url(issues, &p("url"), raw.url.as_ref(), scope)?;
            Some(Check::Http { url, expect_status })
        }
        CheckType::Command => {
            let context = "check type command";
            let fields = &["command"];
            issues.not_allowed(&p("host"), raw.host.as_ref(), context, fields);
            issues.not_allowed(&p("port"), raw.port.as_ref(), context, fields);
            issues.not_allowed(&p("url"), raw.url.as_ref(), context, fields);
            issues.not_allowed(
                &p("expect_status"),
                raw.expect_status.as_ref(),
                context,
                fields,
            );
            let command = shell_command(issues, &p("command"), raw.command.as_ref(), scope)?;
            Some(Check::Command { command })
        }
    }
}

pub(crate) fn optional_template(
    issues: &mut Issues,
    path: &str,
    raw: Option<&Scalar>,
    scope: &Scope<'_>,
) -> Option<Template> {
    raw.and_then(|s| issues.check(path, values::template(s.as_str(), scope)))
}

/// An expected HTTP status, if given.
pub(crate) fn status(issues: &mut Issues, path: &str, raw: Option<&Scalar>) -> Option<u16> {
    raw.and_then(|s| issues.check(path, values::status(s.as_str())))
}

/// A required `http://` or `https://` URL template, parsed as a URL (with the `url`
/// crate, as the probe will) once its variables are given representative values: the
/// URL replica 0 of a service would use, up to the actual ports and names.
pub(crate) fn url(
    issues: &mut Issues,
    path: &str,
    raw: Option<&Scalar>,
    scope: &Scope<'_>,
) -> Option<Template> {
    let s = issues.required(path, raw, "a URL such as http://127.0.0.1:${PORT}/healthz")?;
    let t = issues.check(path, values::template(s.as_str(), scope))?;
    issues.check(path, values::http_url(&t, scope))?;
    Some(t)
}

/// A required, non-empty shell command line template.
pub(crate) fn shell_command(
    issues: &mut Issues,
    path: &str,
    raw: Option<&Scalar>,
    scope: &Scope<'_>,
) -> Option<Template> {
    let s = issues.required(path, raw, "a shell command line, e.g. pg_isready")?;
    if s.as_str().trim().is_empty() {
        issues.add(
            path,
            "empty command (expected a shell command line, e.g. pg_isready)",
        );
        return None;
    }
    issues.check(path, values::template(s.as_str(), scope))
}
