//! Writing a validated deployment back as spec YAML, every field explicit, in the order
//! docs/spec.md lists them. `parse_str` of the output gives the same deployment.

use std::time::Duration;

use serde_yaml::{Mapping, Value};

use crate::keywords::{self, CheckType, InitFailureAction, ScaleMode, Uses};
use crate::model::{
    Backoff, Check, Command, Deployment, Health, InitAction, InitFailurePolicy, InitStep,
    RestartSpec, Scale, Service,
};
use crate::template::Template;

/// Serialize `d` as spec YAML that [`crate::parse_str`] accepts.
pub fn to_yaml(d: &Deployment) -> String {
    let mut root = Map::default();
    root.put("version", "v1");
    root.put("deployment", d.name.as_str());
    let mut services = Map::default();
    for s in &d.services {
        services.put(&s.name, service(s));
    }
    root.put("services", services);
    serde_yaml::to_string(&Value::from(root))
        .unwrap_or_else(|e| format!("# herdsman could not write this deployment: {e}\n"))
}

/// A mapping that keeps insertion order, with a terse `put`.
#[derive(Default)]
struct Map(Mapping);

impl Map {
    fn put(&mut self, key: &str, value: impl Into<Value>) {
        self.0.insert(Value::from(key), value.into());
    }
}

impl From<Map> for Value {
    fn from(m: Map) -> Value {
        Value::Mapping(m.0)
    }
}

fn duration(d: Duration) -> Value {
    Value::from(humantime::format_duration(d).to_string())
}

fn template(t: &Template) -> Value {
    Value::from(t.source())
}

fn templates(ts: &[Template]) -> Value {
    Value::Sequence(ts.iter().map(template).collect())
}

fn service(s: &Service) -> Map {
    let mut m = Map::default();
    m.put("rtype", keywords::RTYPE.word(s.kind));
    if let Some(image) = &s.image {
        let mut i = Map::default();
        i.put("name", image.as_str());
        m.put("image", i);
    }
    if let Some(c) = &s.command {
        m.put("command", command(c));
    }
    if !s.env.is_empty() {
        let mut env = Map::default();
        for (k, v) in &s.env {
            env.put(k, template(v));
        }
        m.put("env", env);
    }
    m.put("scale", scale(s.scale));
    if !s.endpoints.is_empty() {
        let list = s.endpoints.iter().map(|e| {
            let mut x = Map::default();
            x.put("name", e.name.as_str());
            x.put("protocol", keywords::PROTOCOL.word(e.protocol));
            x.put("port", e.port);
            Value::from(x)
        });
        m.put("endpoints", Value::Sequence(list.collect()));
    }
    if !s.depends.is_empty() {
        let list = s.depends.iter().map(|d| {
            let mut x = Map::default();
            x.put("service", d.service.as_str());
            x.put("condition", keywords::CONDITION.word(d.condition));
            x.put("timeout", duration(d.timeout));
            Value::from(x)
        });
        m.put("depends", Value::Sequence(list.collect()));
    }
    if let Some(h) = &s.health {
        m.put("health", health(h));
    }
    if !s.init.is_empty() {
        let mut init = Map::default();
        init.put("steps", Value::Sequence(s.init.iter().map(step).collect()));
        m.put("init", init);
    }
    let mut errors = Map::default();
    errors.put("on_init_failure", on_init_failure(s.on_init_failure));
    let mut panic = Map::default();
    panic.put("action", keywords::PANIC_ACTION.word(s.on_panic));
    errors.put("on_panic", panic);
    m.put("errors", errors);
    m.put("restart", restart(&s.restart));
    m.put("stop_signal", s.stop_signal.name());
    m.put("stop_grace_period", duration(s.stop_grace_period));
    m.put("min_ready", duration(s.min_ready));
    m.put("update", update(&s.update));
    m
}

fn command(c: &Command) -> Map {
    let mut m = Map::default();
    m.put("entrypoint", templates(&c.entrypoint));
    if !c.args.is_empty() {
        m.put("args", templates(&c.args));
    }
    if let Some(w) = &c.workdir {
        m.put("workdir", w.to_string_lossy().as_ref());
    }
    m
}

fn scale(s: Scale) -> Map {
    let mut m = Map::default();
    match s {
        Scale::Fixed { replicas } => {
            m.put("mode", keywords::SCALE_MODE.word(ScaleMode::Fixed));
            m.put("replicas", replicas);
        }
        Scale::Adaptive { min, max } => {
            m.put("mode", keywords::SCALE_MODE.word(ScaleMode::Adaptive));
            m.put("min", min);
            m.put("max", max);
        }
        Scale::Manual { replicas } => {
            m.put("mode", keywords::SCALE_MODE.word(ScaleMode::Manual));
            m.put("replicas", replicas);
        }
    }
    m
}

fn health(h: &Health) -> Map {
    let mut m = Map::default();
    m.put("start_grace", duration(h.start_grace));
    m.put("start_interval", duration(h.start_interval));
    m.put("interval", duration(h.interval));
    m.put("timeout", duration(h.timeout));
    m.put("retries", h.retries);
    m.put("success_threshold", h.success_threshold);
    m.put("on_unhealthy", keywords::ON_UNHEALTHY.word(h.on_unhealthy));
    let mut c = Map::default();
    match &h.check {
        Check::Tcp { host, port } => {
            c.put("type", keywords::CHECK_TYPE.word(CheckType::Tcp));
            if let Some(host) = host {
                c.put("host", template(host));
            }
            c.put("port", template(port));
        }
        Check::Http { url, expect_status } => {
            c.put("type", keywords::CHECK_TYPE.word(CheckType::Http));
            c.put("url", template(url));
            if let Some(s) = expect_status {
                c.put("expect_status", *s);
            }
        }
        Check::Command { command } => {
            c.put("type", keywords::CHECK_TYPE.word(CheckType::Command));
            c.put("command", template(command));
        }
    }
    m.put("check", c);
    m
}

fn step(s: &InitStep) -> Value {
    let mut m = Map::default();
    m.put("id", s.id.as_str());
    let mut with = Map::default();
    let uses = match &s.action {
        InitAction::WaitTcp { host, port } => {
            with.put("host", template(host));
            with.put("port", template(port));
            Uses::WaitTcp
        }
        InitAction::WaitHttp { url, expect_status } => {
            with.put("url", template(url));
            if let Some(st) = expect_status {
                with.put("expect_status", *st);
            }
            Uses::WaitHttp
        }
        InitAction::Run { command } => {
            with.put("command", template(command));
            Uses::Run
        }
    };
    m.put("uses", keywords::USES.word(uses));
    m.put("with", with);
    m.put("timeout", duration(s.timeout));
    m.put("retry", s.retry);
    m.put("on_failure", keywords::STEP_FAILURE.word(s.on_failure));
    Value::from(m)
}

fn on_init_failure(p: InitFailurePolicy) -> Map {
    let mut m = Map::default();
    match p {
        InitFailurePolicy::Fail => {
            m.put(
                "action",
                keywords::INIT_FAILURE.word(InitFailureAction::Fail),
            );
        }
        InitFailurePolicy::Restart { max_retries, delay } => {
            m.put(
                "action",
                keywords::INIT_FAILURE.word(InitFailureAction::Restart),
            );
            m.put("max_retries", max_retries);
            m.put("delay", duration(delay));
        }
        InitFailurePolicy::Backoff {
            max_retries,
            backoff: b,
        } => {
            m.put(
                "action",
                keywords::INIT_FAILURE.word(InitFailureAction::Backoff),
            );
            m.put("max_retries", max_retries);
            m.put("backoff", backoff(b));
        }
    }
    m
}

fn update(u: &crate::model::UpdateSpec) -> Map {
    let mut m = Map::default();
    m.put("strategy", keywords::UPDATE_STRATEGY.word(u.strategy));
    m.put("max_surge", u.max_surge.to_string());
    m.put("max_unavailable", u.max_unavailable.to_string());
    m.put("min_ready", duration(u.min_ready));
    m.put("progress_deadline", duration(u.progress_deadline));
    m.put("auto_revert", keywords::BOOLEAN.word(u.auto_revert));
    m
}

fn restart(r: &RestartSpec) -> Map {
    let mut m = Map::default();
    m.put("policy", keywords::RESTART_POLICY.word(r.policy));
    m.put("max_restarts", r.max_restarts);
    m.put("window", duration(r.window));
    m.put("backoff", backoff(r.backoff));
    m.put("reset_after", duration(r.reset_after));
    if let Some(g) = r.give_up_after {
        m.put("give_up_after", g);
    }
    m
}

fn backoff(b: Backoff) -> Map {
    let mut m = Map::default();
    m.put("initial", duration(b.initial));
    m.put("max", duration(b.max));
    m.put("multiplier", b.multiplier);
    m.put("jitter", b.jitter);
    m
}
