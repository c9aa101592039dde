//! Scalar values of the spec (durations, counts, ports, names, templates), each parsed from
//! its text into a value or into a message that says what was expected.

use std::time::Duration;

use crate::keywords::one_of;
use crate::template::{ReplicaVars, Template, TemplateVar};

/// Longest duration accepted anywhere: far beyond any sane timeout, and small enough that
/// adding it to an `Instant` can never overflow.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Most replicas one service may ask for.
pub(crate) const MAX_REPLICAS: u32 = 100_000;

/// A humantime duration: `500ms`, `10s`, `1m 30s`.
pub(crate) fn duration(text: &str, zero_ok: bool) -> Result<Duration, String> {
    let t = text.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "invalid duration \"{text}\": no unit (expected a duration with a unit, such as {t}s or {t}ms)"
        ));
    }
    let d = humantime::parse_duration(t).map_err(|_| {
        format!("invalid duration \"{text}\" (expected a number and a unit, such as 500ms, 10s, 5m or 1h)")
    })?;
    if d > MAX_DURATION {
        return Err(format!(
            "duration \"{text}\" is too long (expected at most 365d)"
        ));
    }
    if d.is_zero() && !zero_ok {
        return Err(format!(
            "duration \"{text}\" is zero (expected a positive duration)"
        ));
    }
    Ok(d)
}

/// An integer in `min..=max`.
pub(crate) fn integer(text: &str, min: u32, max: u32) -> Result<u32, String> {
    let expected = if max == u32::MAX {
        format!("an integer of at least {min}")
    } else {
        format!("an integer from {min} to {max}")
    };
    let n: i128 = text
        .trim()
        .parse()
        .map_err(|_| format!("invalid integer \"{text}\" (expected {expected})"))?;
    if n < i128::from(min) || n > i128::from(max) {
        return Err(format!("{n} is out of range (expected {expected})"));
    }
    u32::try_from(n).map_err(|_| format!("{n} is out of range (expected {expected})"))
}

/// A finite number in `min..=max` (`max` `None`: unbounded).
pub(crate) fn number(text: &str, min: f64, max: Option<f64>) -> Result<f64, String> {
    let expected = match max {
        Some(max) => format!("a number from {min} to {max}"),
        None => format!("a number of at least {min}"),
    };
    let x: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("invalid number \"{text}\" (expected {expected})"))?;
    if !x.is_finite() {
        return Err(format!("not a finite number: {text} (expected {expected})"));
    }
    if x < min || max.is_some_and(|m| x > m) {
        return Err(format!("{text} is out of range (expected {expected})"));
    }
    Ok(x)
}

/// A TCP/UDP port, 1-65535.
pub(crate) fn port(text: &str) -> Result<u16, String> {
    let n = integer(text, 1, 65535)
        .map_err(|_| format!("invalid port \"{text}\" (expected an integer from 1 to 65535)"))?;
    u16::try_from(n)
        .map_err(|_| format!("invalid port \"{text}\" (expected an integer from 1 to 65535)"))
}

/// An HTTP status code, 100-599.
pub(crate) fn status(text: &str) -> Result<u16, String> {
    let n = integer(text, 100, 599).map_err(|_| {
        format!("invalid HTTP status \"{text}\" (expected an integer from 100 to 599)")
    })?;
    u16::try_from(n).map_err(|_| format!("invalid HTTP status \"{text}\""))
}

/// A deployment or service name: 1-63 chars of `[a-z0-9-]`, starting with a letter or digit.
pub(crate) fn dns_label(text: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && text
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid name \"{text}\" (expected 1 to 63 characters of a-z, 0-9 and -, starting with a letter or digit)"
        ))
    }
}

/// An endpoint name or init step id: 1-63 chars of letters, digits, `-` and `_`.
pub(crate) fn identifier(text: &str, what: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} \"{text}\" (expected 1 to 63 characters of letters, digits, - and _)"
        ))
    }
}

/// An environment variable name: not empty, no `=`, no NUL.
pub(crate) fn env_name(text: &str) -> Result<(), String> {
    if text.is_empty() || text.contains(['=', '\0']) {
        Err(format!(
            "invalid environment variable name \"{}\" (expected a non-empty name without = or NUL)",
            text.escape_debug()
        ))
    } else {
        Ok(())
    }
}

/// What a template may refer to: the `${PORT_<NAME>}` names of the service's endpoints.
pub(crate) struct Scope<'a> {
    pub(crate) ports: &'a [String],
}

/// The URL a template gives with representative values for its variables (replica 0,
/// port 8080, placeholder names), checked to be an `http` or `https` URL with a host.
pub(crate) fn http_url(t: &Template, scope: &Scope<'_>) -> Result<url::Url, String> {
    let vars = ReplicaVars {
        deployment: "deployment".to_string(),
        service: "service".to_string(),
        replica: 0,
        ports: scope.ports.iter().map(|n| (n.clone(), 8080)).collect(),
    };
    let text = t.expand(&vars);
    let expected = "expected an http:// or https:// URL such as http://127.0.0.1:${PORT}/healthz";
    let url = url::Url::parse(&text)
        .map_err(|e| format!("invalid url \"{}\": {e} ({expected})", t.source()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "invalid url \"{}\": scheme {} ({expected})",
            t.source(),
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "invalid url \"{}\": no host ({expected})",
            t.source()
        ));
    }
    Ok(url)
}

/// A per-replica template whose every variable exists for this service.
pub(crate) fn template(text: &str, scope: &Scope<'_>) -> Result<Template, String> {
    if text.contains('\0') {
        return Err("text contains a NUL character (expected text without NUL)".to_string());
    }
    let t = Template::parse(text).map_err(|e| e.to_string())?;
    for var in t.vars() {
        match var {
            TemplateVar::Port if scope.ports.is_empty() => {
                return Err(
                    "${PORT} used but the service has no endpoints (expected an endpoints entry to define the port)"
                        .to_string(),
                )
            }
            TemplateVar::PortNamed(n) if !scope.ports.contains(n) => {
                let known: Vec<String> = scope.ports.iter().map(|p| format!("${{PORT_{p}}}")).collect();
                let known: Vec<&str> = known.iter().map(String::as_str).collect();
                let expected = if known.is_empty() {
                    "an endpoints entry with that name".to_string()
                } else {
                    one_of(&known)
                };
                return Err(format!(
                    "${{PORT_{n}}} names no endpoint of this service (expected {expected})"
                ));
            }
            _ => {}
        }
    }
    Ok(t)
}

/// A cluster node name: 1-63 chars of `[A-Za-z0-9._-]`, starting with a letter or digit.
pub fn node_name(text: &str) -> Result<(), String> {
    let ok_first = text
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if text.is_empty() || text.len() > 63 || !ok_first || !ok_rest {
        return Err(format!(
            "invalid node name {text:?} (expected 1-63 chars of [A-Za-z0-9._-], starting with a letter or digit)"
        ));
    }
    Ok(())
}

/// A port given as a number or as a template (`${PORT}`); a literal must be a valid port.
/// ZLayer's `0` ("the first endpoint") is read as `${PORT}`.
pub(crate) fn port_template(text: &str, scope: &Scope<'_>) -> Result<Template, String> {
    let text = if text.trim() == "0" { "${PORT}" } else { text };
    let t = template(text, scope)?;
    if t.vars().next().is_none() {
        port(text)?;
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit_and_a_sane_size() {
        assert_eq!(duration("1m 30s", false), Ok(Duration::from_secs(90)));
        assert_eq!(duration("0s", true), Ok(Duration::ZERO));
        assert!(duration("0s", false).is_err_and(|e| e.contains("is zero")));
        assert!(duration("30", false).is_err_and(|e| e.contains("such as 30s")));
        assert!(duration("5x", false).is_err_and(|e| e.contains("invalid duration")));
        assert!(duration("400days", false).is_err_and(|e| e.contains("too long")));
    }

    #[test]
    fn integers_are_range_checked_with_the_range_in_the_message() {
        assert_eq!(integer("3", 1, 10), Ok(3));
        assert_eq!(
            integer("-1", 0, 100_000),
            Err("-1 is out of range (expected an integer from 0 to 100000)".to_string())
        );
        assert_eq!(
            integer("x", 1, u32::MAX),
            Err("invalid integer \"x\" (expected an integer of at least 1)".to_string())
        );
    }

    #[test]
    fn names_follow_the_dns_label_rule() {
        assert!(dns_label("shop-2").is_ok());
        assert!(dns_label("2shop").is_ok());
        assert!(dns_label("-shop").is_err());
        assert!(dns_label("Shop").is_err());
        assert!(dns_label("").is_err());
        assert!(dns_label(&"a".repeat(64)).is_err());
    }

    #[test]
    fn templates_are_checked_against_the_service_endpoints() {
        let ports = vec!["HTTP".to_string()];
        let scope = Scope { ports: &ports };
        assert!(template("${PORT}-${PORT_HTTP}", &scope).is_ok());
        assert_eq!(
            template("${PORT_ADMIN}", &scope),
            Err(
                "${PORT_ADMIN} names no endpoint of this service (expected ${PORT_HTTP})"
                    .to_string()
            )
        );
        let none = Scope { ports: &[] };
        assert!(template("${PORT}", &none).is_err_and(|e| e.contains("no endpoints")));
    }

    #[test]
    fn ports_are_numbers_or_templates_and_zero_means_the_first_endpoint() {
        let ports = vec!["HTTP".to_string()];
        let scope = Scope { ports: &ports };
        assert_eq!(
            port_template("8080", &scope).map(|t| t.source().to_string()),
            Ok("8080".to_string())
        );
        assert_eq!(
            port_template("0", &scope).map(|t| t.source().to_string()),
            Ok("${PORT}".to_string())
        );
        assert!(port_template("70000", &scope).is_err());
        assert!(port_template("http", &scope).is_err());
    }
}
