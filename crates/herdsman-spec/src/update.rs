//! The `update` section (ext): how a rollout replaces a service's replicas.

use crate::defaults;
use crate::keywords;
use crate::location::child;
use crate::model::{Amount, UpdateSpec};
use crate::raw::{RawUpdate, Scalar};
use crate::validation::Issues;

/// Validate `update`, defaults applied.
pub(crate) fn update(issues: &mut Issues, path: &str, raw: Option<&RawUpdate>) -> UpdateSpec {
    let d = defaults::UPDATE;
    let Some(u) = raw else { return d };
    let p = |field: &str| child(path, field);
    let surge = amount(issues, &p("max_surge"), u.max_surge.as_ref(), d.max_surge);
    let unavailable = amount(
        issues,
        &p("max_unavailable"),
        u.max_unavailable.as_ref(),
        d.max_unavailable,
    );
    let zero = |a: Amount| matches!(a, Amount::Count(0) | Amount::Percent(0));
    if zero(surge) && zero(unavailable) {
        issues.add(
            p("max_unavailable"),
            "max_surge and max_unavailable cannot both be 0: a rolling update could not \
             replace any replica (expected max_surge >= 1 or max_unavailable >= 1)",
        );
    }
    UpdateSpec {
        strategy: issues.keyword(
            &p("strategy"),
            u.strategy.as_ref(),
            &keywords::UPDATE_STRATEGY,
            d.strategy,
        ),
        max_surge: surge,
        max_unavailable: unavailable,
        min_ready: issues.duration(&p("min_ready"), u.min_ready.as_ref(), d.min_ready, true),
        progress_deadline: issues.duration(
            &p("progress_deadline"),
            u.progress_deadline.as_ref(),
            d.progress_deadline,
            false,
        ),
        auto_revert: issues.keyword(
            &p("auto_revert"),
            u.auto_revert.as_ref(),
            &keywords::BOOLEAN,
            d.auto_revert,
        ),
    }
}

/// `3` or `25%`.
fn amount(issues: &mut Issues, path: &str, raw: Option<&Scalar>, default: Amount) -> Amount {
    let Some(raw) = raw else { return default };
    let text = raw.as_str().trim();
    let parsed = match text.strip_suffix('%') {
        Some(pct) => crate::values::integer(pct.trim(), 0, 100)
            .map(Amount::Percent)
            .map_err(|_| format!("{text:?} is not a percentage from 0% to 100%")),
        None => crate::values::integer(text, 0, crate::values::MAX_REPLICAS)
            .map(Amount::Count)
            .map_err(|_| {
                format!(
                    "{text:?} is not a replica count (expected 0 to {}, or a percentage like 25%)",
                    crate::values::MAX_REPLICAS
                )
            }),
    };
    issues.check(path, parsed).unwrap_or(default)
}
