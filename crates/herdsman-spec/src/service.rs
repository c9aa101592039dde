//! One service: its raw fields checked and turned into a [`Service`], defaults applied
//! from `defaults.rs`. Health and init steps are in `health.rs` and `init.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::defaults;
use crate::health;
use crate::init;
use crate::keywords::{self, ScaleMode};
use crate::location::{child, item};
use crate::model::{
    Backoff, Command, Dependency, Endpoint, Network, Placement, PullPolicy, RestartSpec, Scale,
    Service, ServiceKind, StopSignal,
};
use crate::raw::{
    RawBackoff, RawCommand, RawDependency, RawEndpoint, RawRestart, RawScale, RawService, Scalar,
};
use crate::template::{endpoint_var_name, Template};
use crate::validation::{Anchor, Issues};
use crate::values::{self, Scope, MAX_REPLICAS};

/// Check one service. Returns the service (meaningful only if no issue was added) and,
/// for each of its dependencies, its index in the YAML `depends` list.
pub(crate) fn service(
    issues: &mut Issues,
    name: &str,
    raw: &RawService,
    base_dir: &Path,
) -> (Service, Vec<usize>) {
    let base = child("services", name);
    let p = |field: &str| child(&base, field);

    let kind = issues.keyword(
        &p("rtype"),
        raw.rtype.as_ref(),
        &keywords::RTYPE,
        defaults::KIND,
    );
    let scale = scale(issues, &p("scale"), raw.scale.as_ref());
    let most = match scale {
        Scale::Fixed { replicas } | Scale::Manual { replicas } => replicas,
        Scale::Adaptive { max, .. } => max,
    };
    let endpoints = endpoints(
        issues,
        &p("endpoints"),
        raw.endpoints.as_deref().unwrap_or(&[]),
        most,
    );
    let ports: Vec<String> = endpoints
        .iter()
        .map(|e| endpoint_var_name(&e.name))
        .collect();
    let scope = Scope { ports: &ports };

    let image = raw.image.as_ref().and_then(|i| {
        let path = child(&p("image"), "name");
        let name = issues.required(
            &path,
            i.name.as_ref(),
            "an image reference, e.g. shop/api:1.4",
        )?;
        if name.as_str().trim().is_empty() {
            issues.add(
                path,
                "empty image name (expected an image reference, e.g. shop/api:1.4)",
            );
        }
        Some(name.as_str().to_string())
    });
    let command = raw
        .command
        .as_ref()
        .and_then(|c| command(issues, &p("command"), c, image.is_some(), &scope, base_dir));
    if raw.image.is_none() && raw.command.is_none() {
        issues.add(
            base.as_str(),
            "neither image nor command given (expected image for container runtimes or command for the process runtime)",
        );
    }
    let (pull_policy, network) = container_fields(issues, &base, raw);

    let (depends, depends_at) =
        dependencies(issues, &p("depends"), raw.depends.as_deref().unwrap_or(&[]));
    let errors = raw.errors.as_ref();
    let on_panic_path = child(&p("errors"), "on_panic");
    let on_panic = issues.keyword(
        &child(&on_panic_path, "action"),
        errors
            .and_then(|e| e.on_panic.as_ref())
            .and_then(|o| o.action.as_ref()),
        &keywords::PANIC_ACTION,
        defaults::ON_PANIC,
    );

    let service = Service {
        name: name.to_string(),
        kind,
        image,
        pull_policy,
        command,
        env: env(
            issues,
            &p("env"),
            raw.env.as_ref().map(|e| e.0.as_slice()).unwrap_or(&[]),
            &scope,
        ),
        scale,
        depends,
        health: health::health(issues, &p("health"), raw.health.as_ref(), &scope),
        init: init::steps(issues, &p("init"), raw.init.as_ref(), &scope),
        on_init_failure: init::on_init_failure(
            issues,
            &child(&p("errors"), "on_init_failure"),
            errors.and_then(|e| e.on_init_failure.as_ref()),
        ),
        on_panic,
        restart: restart(issues, &p("restart"), raw.restart.as_ref(), kind),
        stop_signal: stop_signal(issues, &p("stop_signal"), raw.stop_signal.as_ref()),
        stop_grace_period: issues.duration(
            &p("stop_grace_period"),
            raw.stop_grace_period.as_ref(),
            defaults::STOP_GRACE_PERIOD,
            true,
        ),
        min_ready: issues.duration(
            &p("min_ready"),
            raw.min_ready.as_ref(),
            defaults::MIN_READY,
            true,
        ),
        update: crate::update::update(issues, &p("update"), raw.update.as_ref()),
        placement: placement(issues, &p("placement"), raw.placement.as_ref()),
        endpoints,
        network,
    };
    (service, depends_at)
}

/// `image.pull_policy` and `network`, which only a container service (one with `image`)
/// may set.
fn container_fields(issues: &mut Issues, base: &str, raw: &RawService) -> (PullPolicy, Network) {
    let pull_path = child(&child(base, "image"), "pull_policy");
    let pull_policy = issues.keyword(
        &pull_path,
        raw.image.as_ref().and_then(|i| i.pull_policy.as_ref()),
        &keywords::PULL_POLICY,
        defaults::PULL_POLICY,
    );
    let network_path = child(base, "network");
    let network = issues.keyword(
        &network_path,
        raw.network.as_ref(),
        &keywords::NETWORK,
        defaults::NETWORK,
    );
    if raw.image.is_none() && raw.network.is_some() {
        issues.add(
            network_path,
            "network applies only to a container service (expected image, or no network for a process)",
        );
    }
    (pull_policy, network)
}

fn scale(issues: &mut Issues, path: &str, raw: Option<&RawScale>) -> Scale {
    let Some(r) = raw else {
        return Scale::Fixed {
            replicas: defaults::FIXED_REPLICAS,
        };
    };
    let p = |field: &str| child(path, field);
    let mode = issues.keyword(
        &p("mode"),
        r.mode.as_ref(),
        &keywords::SCALE_MODE,
        ScaleMode::Fixed,
    );
    match mode {
        ScaleMode::Fixed | ScaleMode::Manual => {
            let (context, default) = if mode == ScaleMode::Fixed {
                ("mode fixed", defaults::FIXED_REPLICAS)
            } else {
                ("mode manual", defaults::MANUAL_REPLICAS)
            };
            issues.not_allowed(&p("min"), r.min.as_ref(), context, &["replicas"]);
            issues.not_allowed(&p("max"), r.max.as_ref(), context, &["replicas"]);
            let replicas = issues.integer(
                &p("replicas"),
                r.replicas.as_ref(),
                default,
                0,
                MAX_REPLICAS,
            );
            if mode == ScaleMode::Fixed {
                Scale::Fixed { replicas }
            } else {
                Scale::Manual { replicas }
            }
        }
        ScaleMode::Adaptive => {
            issues.not_allowed(
                &p("replicas"),
                r.replicas.as_ref(),
                "mode adaptive",
                &["min", "max"],
            );
            let expected = "an integer from 0 to 100000";
            let min = issues
                .required(&p("min"), r.min.as_ref(), expected)
                .map(|m| issues.integer(&p("min"), Some(m), 0, 0, MAX_REPLICAS))
                .unwrap_or(0);
            let max = issues
                .required(&p("max"), r.max.as_ref(), "an integer from 1 to 100000")
                .map(|m| issues.integer(&p("max"), Some(m), min.max(1), 1, MAX_REPLICAS))
                .unwrap_or(min.max(1));
            if min > max {
                issues.add(
                    p("min"),
                    format!("min {min} is greater than max {max} (expected min <= max)"),
                );
            }
            Scale::Adaptive { min, max }
        }
    }
}

/// Endpoints; `most` is the largest replica count, since replica `i` uses `port + i`.
fn endpoints(issues: &mut Issues, path: &str, raw: &[RawEndpoint], most: u32) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = Vec::new();
    let mut vars: Vec<(String, String)> = Vec::new();
    for (i, e) in raw.iter().enumerate() {
        let ep = item(path, i);
        let p = |field: &str| child(&ep, field);
        let name = issues.required(&p("name"), e.name.as_ref(), "a name, e.g. http");
        let protocol = issues.keyword(
            &p("protocol"),
            e.protocol.as_ref(),
            &keywords::PROTOCOL,
            defaults::PROTOCOL,
        );
        let port = issues
            .required(&p("port"), e.port.as_ref(), "an integer from 1 to 65535")
            .and_then(|s| issues.check(&p("port"), values::port(s.as_str())));
        if let Some(port) = port {
            let last = u32::from(port) + most.saturating_sub(1);
            if last > 65535 {
                issues.add(
                    p("port"),
                    format!(
                        "port {port} with {most} replicas needs ports up to {last} (expected a base port of at most {})",
                        65536 - most.min(65535)
                    ),
                );
            }
        }
        let Some(name) = name else { continue };
        let name = name.as_str();
        if issues
            .check(&p("name"), values::identifier(name, "endpoint name"))
            .is_none()
        {
            continue;
        }
        let var = endpoint_var_name(name);
        if let Some((other, _)) = vars.iter().find(|(_, v)| *v == var) {
            let message = if other == name {
                format!("duplicate endpoint name \"{name}\" (expected names unique in the service)")
            } else {
                format!(
                    "endpoint name \"{name}\" clashes with \"{other}\": both are ${{PORT_{var}}} (expected names unique in the service)"
                )
            };
            issues.add(p("name"), message);
            continue;
        }
        vars.push((name.to_string(), var));
        out.push(Endpoint {
            name: name.to_string(),
            protocol,
            port: port.unwrap_or(1),
        });
    }
    out
}

fn command(
    issues: &mut Issues,
    path: &str,
    raw: &RawCommand,
    has_image: bool,
    scope: &Scope<'_>,
    base_dir: &Path,
) -> Option<Command> {
    let p = |field: &str| child(path, field);
    let list = |issues: &mut Issues, field: &str, raw: Option<&Vec<Scalar>>| -> Vec<Template> {
        let base = p(field);
        raw.map(|v| v.as_slice())
            .unwrap_or(&[])
            .iter()
            .enumerate()
            .filter_map(|(i, s)| issues.check(&item(&base, i), values::template(s.as_str(), scope)))
            .collect()
    };
    let entrypoint = list(issues, "entrypoint", raw.entrypoint.as_ref());
    let args = list(issues, "args", raw.args.as_ref());
    let program = raw.entrypoint.as_ref().and_then(|e| e.first());
    match program {
        None if !has_image => issues.add(
            p("entrypoint"),
            "missing (expected the program to run and its leading arguments, e.g. [\"./bin/api\"])",
        ),
        Some(s) if s.as_str().trim().is_empty() => issues.add(
            item(&p("entrypoint"), 0),
            "empty program name (expected a path or a command name)",
        ),
        _ => {}
    }
    let workdir = raw.workdir.as_ref().and_then(|w| {
        if w.as_str().is_empty() || w.as_str().contains('\0') {
            issues.add(
                p("workdir"),
                "empty or invalid directory (expected a path, e.g. .)",
            );
            return None;
        }
        if has_image {
            // A container's workdir is a path inside its image, not next to the spec.
            if !w.as_str().starts_with('/') {
                issues.add(
                    p("workdir"),
                    "relative directory in a container service (expected an absolute path inside the image, e.g. /app)",
                );
                return None;
            }
            return Some(PathBuf::from(w.as_str()));
        }
        Some(resolve(base_dir, w.as_str()))
    });
    Some(Command {
        entrypoint,
        args,
        workdir,
    })
}

/// `dir` made absolute against the spec file's directory, `.` components dropped.
fn resolve(base_dir: &Path, dir: &str) -> PathBuf {
    base_dir.join(dir).components().collect()
}

fn env(
    issues: &mut Issues,
    path: &str,
    raw: &[(Scalar, Scalar)],
    scope: &Scope<'_>,
) -> BTreeMap<String, Template> {
    let mut out = BTreeMap::new();
    for (k, v) in raw {
        let p = child(path, k.as_str());
        if out.contains_key(k.as_str()) {
            issues.add_at(
                p,
                format!(
                    "duplicate variable \"{}\" (expected each name once)",
                    k.as_str()
                ),
                Anchor::Duplicate,
            );
            continue;
        }
        if let Err(m) = values::env_name(k.as_str()) {
            issues.add_at(p, m, Anchor::Key);
            continue;
        }
        if let Some(t) = issues.check(&p, values::template(v.as_str(), scope)) {
            out.insert(k.as_str().to_string(), t);
        }
    }
    out
}

fn dependencies(
    issues: &mut Issues,
    path: &str,
    raw: &[RawDependency],
) -> (Vec<Dependency>, Vec<usize>) {
    let mut out = Vec::new();
    let mut at = Vec::new();
    for (i, d) in raw.iter().enumerate() {
        let dp = item(path, i);
        let p = |field: &str| child(&dp, field);
        let condition = issues.keyword(
            &p("condition"),
            d.condition.as_ref(),
            &keywords::CONDITION,
            defaults::CONDITION,
        );
        let timeout = issues.duration(
            &p("timeout"),
            d.timeout.as_ref(),
            defaults::DEPENDENCY_TIMEOUT,
            false,
        );
        let Some(service) = issues.required(
            &p("service"),
            d.service.as_ref(),
            "the name of another service",
        ) else {
            continue;
        };
        out.push(Dependency {
            service: service.as_str().to_string(),
            condition,
            timeout,
        });
        at.push(i);
    }
    (out, at)
}

fn restart(
    issues: &mut Issues,
    path: &str,
    raw: Option<&RawRestart>,
    kind: ServiceKind,
) -> RestartSpec {
    let d = RestartSpec::default_for(kind);
    let Some(r) = raw else { return d };
    let p = |field: &str| child(path, field);
    RestartSpec {
        policy: issues.keyword(
            &p("policy"),
            r.policy.as_ref(),
            &keywords::RESTART_POLICY,
            d.policy,
        ),
        max_restarts: issues.integer(
            &p("max_restarts"),
            r.max_restarts.as_ref(),
            d.max_restarts,
            0,
            u32::MAX,
        ),
        window: issues.duration(&p("window"), r.window.as_ref(), d.window, false),
        backoff: backoff(issues, &p("backoff"), r.backoff.as_ref()),
        reset_after: issues.duration(
            &p("reset_after"),
            r.reset_after.as_ref(),
            d.reset_after,
            true,
        ),
        give_up_after: r.give_up_after.as_ref().and_then(|g| {
            issues.check(
                &p("give_up_after"),
                values::integer(g.as_str(), 1, u32::MAX)
                    .map_err(|m| format!("{m}; to never restart, use restart.policy: never")),
            )
        }),
    }
}

/// An exponential backoff: `restart.backoff` or `errors.on_init_failure.backoff`.
pub(crate) fn backoff(issues: &mut Issues, path: &str, raw: Option<&RawBackoff>) -> Backoff {
    let d = defaults::BACKOFF;
    let Some(r) = raw else { return d };
    let p = |field: &str| child(path, field);
    let b = Backoff {
        initial: issues.duration(&p("initial"), r.initial.as_ref(), d.initial, false),
        max: issues.duration(&p("max"), r.max.as_ref(), d.max, false),
        multiplier: issues.number(
            &p("multiplier"),
            r.multiplier.as_ref(),
            d.multiplier,
            1.0,
            None,
        ),
        jitter: issues.number(&p("jitter"), r.jitter.as_ref(), d.jitter, 0.0, Some(1.0)),
    };
    if b.initial > b.max {
        issues.add(
            p("initial"),
            format!(
                "initial {} is longer than max {} (expected initial <= max)",
                humantime::format_duration(b.initial),
                humantime::format_duration(b.max)
            ),
        );
    }
    b
}

fn stop_signal(issues: &mut Issues, path: &str, raw: Option<&Scalar>) -> StopSignal {
    let Some(s) = raw else {
        return defaults::STOP_SIGNAL;
    };
    match StopSignal::parse(s.as_str()) {
        Some(sig) => sig,
        None => {
            let names: Vec<&str> = StopSignal::NAMES.iter().map(|(n, _)| *n).collect();
            issues.add(
                path,
                format!(
                    "unknown signal \"{}\" (expected {}, without SIG or as a number)",
                    s.as_str(),
                    keywords::one_of(&names)
                ),
            );
            defaults::STOP_SIGNAL
        }
    }
}

/// `placement` (ext): node names as `--node` accepts them, each listed once.
fn placement(issues: &mut Issues, path: &str, raw: Option<&crate::raw::RawPlacement>) -> Placement {
    let Some(raw) = raw else {
        return Placement::default();
    };
    let mut nodes: Vec<String> = Vec::new();
    for (i, n) in raw.nodes.iter().flatten().enumerate() {
        let at = item(&child(path, "nodes"), i);
        let name = n.as_str().trim();
        if let Err(why) = crate::values::node_name(name) {
            issues.add(at, why);
        } else if nodes.iter().any(|k| k == name) {
            issues.add(
                at,
                format!("node {name:?} listed twice (expected each node once)"),
            );
        } else {
            nodes.push(name.to_string());
        }
    }
    if raw.nodes.as_ref().is_some_and(Vec::is_empty) {
        issues.add(
            child(path, "nodes"),
            "empty list (expected at least one node name, or no nodes for every node)",
        );
    }
    let spread = issues.keyword(
        &child(path, "spread"),
        raw.spread.as_ref(),
        &keywords::BOOLEAN,
        true,
    );
    Placement { nodes, spread }
}
