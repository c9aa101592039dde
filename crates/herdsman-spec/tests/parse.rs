//! Parsing valid specs: documented defaults, ZLayer's spellings, paths, and `load`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use herdsman_spec::{
    load, parse_str, Backoff, Check, Dependency, DependencyCondition, Deployment, Endpoint,
    InitAction, InitFailurePolicy, OnUnhealthy, PanicAction, Protocol, ReplicaVars, RestartPolicy,
    RestartSpec, Scale, ServiceKind, SpecError, StepFailure, StopSignal,
};

const HEAD: &str = "version: v1\ndeployment: shop\nservices:\n";

fn parse(services: &str) -> Deployment {
    let src = format!("{HEAD}{services}");
    parse_str(&src, "test.yaml", Path::new("/srv/shop")).unwrap_or_else(|e| panic!("{e}\n{src}"))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn a_minimal_service_gets_every_documented_default() {
    let d = parse("  api:\n    command: {entrypoint: [./api]}\n");
    let s = &d.services[0];
    assert_eq!(s.kind, ServiceKind::Service);
    assert_eq!(s.scale, Scale::Fixed { replicas: 1 });
    assert_eq!(s.initial_replicas(), 1);
    assert!(s.endpoints.is_empty() && s.depends.is_empty() && s.init.is_empty());
    assert!(s.env.is_empty() && s.health.is_none() && s.image.is_none());
    assert_eq!(s.on_init_failure, InitFailurePolicy::Fail);
    assert_eq!(s.on_panic, PanicAction::Restart);
    assert_eq!(
        s.restart,
        RestartSpec {
            policy: RestartPolicy::Always,
            max_restarts: 5,
            window: secs(300),
            backoff: Backoff {
                initial: secs(1),
                max: secs(60),
                multiplier: 2.0,
                jitter: 0.1
            },
            reset_after: secs(600),
            give_up_after: None,
        }
    );
    assert_eq!(s.stop_signal, StopSignal::TERM);
    assert_eq!(s.stop_grace_period, secs(10));
    assert_eq!(s.min_ready, Duration::ZERO);
}

#[test]
fn a_job_restarts_on_failure_by_default() {
    let d = parse("  m:\n    rtype: job\n    command: {entrypoint: [./m]}\n");
    assert_eq!(d.services[0].restart.policy, RestartPolicy::OnFailure);
    assert_eq!(
        d.services[0].restart,
        RestartSpec::default_for(ServiceKind::Job)
    );
}

#[test]
fn health_init_dependency_and_endpoint_defaults_apply() {
    let d = parse(
        "  db:\n    image: {name: pg}\n  api:\n    command: {entrypoint: [./api]}\n    endpoints: [{name: http, port: 8080}]\n    depends: [{service: db}]\n    health: {check: {type: tcp, port: 8080}}\n    init: {steps: [{id: w, uses: init.run, with: {command: \"true\"}}]}\n",
    );
    let s = &d.services[1];
    assert_eq!(
        s.endpoints,
        vec![Endpoint {
            name: "http".into(),
            protocol: Protocol::Http,
            port: 8080
        }]
    );
    assert_eq!(
        s.depends,
        vec![Dependency {
            service: "db".into(),
            condition: DependencyCondition::Healthy,
            timeout: secs(60)
        }]
    );
    let h = s.health.as_ref().expect("health");
    assert_eq!(h.start_grace, Duration::ZERO);
    assert_eq!(h.start_interval, secs(1));
    assert_eq!(h.interval, secs(10));
    assert_eq!(h.timeout, secs(5));
    assert_eq!((h.retries, h.success_threshold), (3, 1));
    assert_eq!(h.on_unhealthy, OnUnhealthy::Isolate);
    let step = &s.init[0];
    assert_eq!(
        (step.timeout, step.retry, step.on_failure),
        (secs(60), 0, StepFailure::Fail)
    );
    assert_eq!(d.start_order(), vec!["db", "api"]);
}

#[test]
fn init_failure_actions_default_their_extra_keys() {
    let d = parse(
        "  a:\n    image: {name: a}\n    errors: {on_init_failure: {action: restart}}\n  b:\n    image: {name: b}\n    errors: {on_init_failure: {action: backoff}}\n",
    );
    assert_eq!(
        d.services[0].on_init_failure,
        InitFailurePolicy::Restart {
            max_retries: 3,
            delay: secs(1)
        }
    );
    assert_eq!(
        d.services[1].on_init_failure,
        InitFailurePolicy::Backoff {
            max_retries: 5,
            backoff: Backoff::default()
        }
    );
}

#[test]
fn manual_and_adaptive_scales_start_where_documented() {
    let d = parse(
        "  a:\n    image: {name: a}\n    scale: {mode: manual}\n  b:\n    image: {name: b}\n    scale: {mode: adaptive, min: 2, max: 5}\n",
    );
    assert_eq!(d.services[0].scale, Scale::Manual { replicas: 0 });
    assert_eq!(d.services[1].initial_replicas(), 2);
}

#[test]
fn zlayer_spellings_are_accepted() {
    let d = parse(
        "  db:\n    image: {name: pg}\n  api:\n    rtype: Service\n    image: {name: api}\n    endpoints: [{name: ws, protocol: websocket, port: 8080}]\n    depends: [{service: db, condition: ready, timeout: 5m}]\n    health: {start_grace: 5s, check: {type: tcp, port: 0}}\n    init: {steps: [{id: w, uses: init.wait_tcp, with: {host: db, port: 5432, timeout: 30}}]}\n    restart: {policy: on-failure}\n    stop_signal: TERM\n",
    );
    let s = &d.services[1];
    assert_eq!(s.endpoints[0].protocol, Protocol::Http);
    assert_eq!(s.depends[0].condition, DependencyCondition::Healthy);
    assert_eq!(s.depends[0].timeout, secs(300));
    match &s.health.as_ref().expect("health").check {
        Check::Tcp { port, host } => {
            assert_eq!(port.source(), "${PORT}");
            assert!(host.is_none());
        }
        other => panic!("expected a tcp check, got {other:?}"),
    }
    assert_eq!(s.init[0].timeout, secs(30));
    assert!(matches!(s.init[0].action, InitAction::WaitTcp { .. }));
    assert_eq!(s.restart.policy, RestartPolicy::OnFailure);
    assert_eq!(s.stop_signal, StopSignal::TERM);
}

#[test]
fn templates_expand_per_replica_after_parsing() {
    let d = parse(
        "  api:\n    command: {entrypoint: [./api], args: [\"--port=${PORT}\", \"${PORT_ADMIN_UI}\", \"${SERVICE}-${REPLICA}@${DEPLOYMENT}\"]}\n    endpoints: [{name: http, port: 8080}, {name: admin-ui, port: 9000}]\n",
    );
    let s = &d.services[0];
    let vars = ReplicaVars::new(&d, s, 2);
    let args: Vec<String> = s
        .command
        .as_ref()
        .map(|c| c.args.iter().map(|a| a.expand(&vars)).collect())
        .unwrap_or_default();
    assert_eq!(args, vec!["--port=8082", "9002", "api-2@shop"]);
}

#[test]
fn relative_workdir_is_resolved_against_the_spec_directory() {
    let d = parse(
        "  a:\n    command: {entrypoint: [./a], workdir: ./bin/../run}\n  b:\n    command: {entrypoint: [./b], workdir: .}\n  c:\n    command: {entrypoint: [./c], workdir: /var/lib/c}\n",
    );
    let dir = |i: usize| {
        d.services[i]
            .command
            .as_ref()
            .and_then(|c| c.workdir.clone())
    };
    assert_eq!(dir(0), Some(PathBuf::from("/srv/shop/bin/../run")));
    assert_eq!(dir(1), Some(PathBuf::from("/srv/shop")));
    assert_eq!(dir(2), Some(PathBuf::from("/var/lib/c")));
}

#[test]
fn scalars_of_any_yaml_type_are_read_as_text_where_text_is_expected() {
    let d =
        parse("  a:\n    command: {entrypoint: [./a], args: [8080, true, 1.5]}\n    env: {N: 3}\n");
    let c = d.services[0].command.as_ref().expect("command");
    let args: Vec<&str> = c.args.iter().map(|a| a.source()).collect();
    assert_eq!(args, vec!["8080", "true", "1.5"]);
    assert_eq!(d.services[0].env.get("N").map(|t| t.source()), Some("3"));
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herdsman-spec-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
    path
}

#[test]
fn load_resolves_workdir_against_the_file_directory() {
    let path = temp_file(
        "wd.yaml",
        format!("{HEAD}  a:\n    command: {{entrypoint: [./a], workdir: sub}}\n").as_bytes(),
    );
    let d = load(&path).unwrap_or_else(|e| panic!("{e}"));
    let expected = path.parent().map(|p| p.join("sub"));
    assert_eq!(
        d.services[0]
            .command
            .as_ref()
            .and_then(|c| c.workdir.clone()),
        expected
    );
}

#[test]
fn an_unreadable_file_is_a_read_error() {
    let err = load(Path::new("/nonexistent/herdsman/spec.yaml"));
    assert!(matches!(err, Err(SpecError::Read { .. })), "{err:?}");
}

#[test]
fn a_file_that_is_not_utf8_is_invalid_at_the_first_bad_byte() {
    let path = temp_file("latin1.yaml", b"version: v1\ndeployment: caf\xe9\n");
    match load(&path) {
        Err(SpecError::Invalid { problems }) => {
            assert_eq!(problems.len(), 1);
            assert_eq!((problems[0].line, problems[0].column), (2, 16));
            assert!(problems[0].message.contains("UTF-8"), "{}", problems[0]);
        }
        other => panic!("expected an invalid spec, got {other:?}"),
    }
}

#[test]
fn service_new_gives_exactly_the_defaults_a_parsed_minimal_service_gets() {
    for (rtype, kind) in [("service", ServiceKind::Service), ("job", ServiceKind::Job)] {
        let d = parse(&format!(
            "  api:\n    rtype: {rtype}\n    image: {{name: app}}\n"
        ));
        let built = herdsman_spec::Service {
            image: Some("app".into()),
            ..herdsman_spec::Service::new("api", kind)
        };
        assert_eq!(d.services[0], built, "{rtype}");
    }
}

#[test]
fn run_hash_changes_with_what_runs_and_not_with_how_it_is_supervised() {
    let base = parse(
        "  api:\n    command: {entrypoint: [./api]}\n    scale: {mode: fixed, replicas: 1}\n",
    );
    let same = parse(
        "  api:\n    command: {entrypoint: [./api]}\n    scale: {mode: fixed, replicas: 1}\n",
    );
    let rescaled = parse(
        "  api:\n    command: {entrypoint: [./api]}\n    scale: {mode: fixed, replicas: 4}\n    restart: {max_restarts: 9}\n",
    );
    let changed = parse("  api:\n    command: {entrypoint: [./api], args: [--v2]}\n");
    let env = parse("  api:\n    command: {entrypoint: [./api]}\n    env: {A: b}\n");
    let h = |d: &Deployment| d.services[0].run_hash();
    assert_eq!(h(&base).len(), 16);
    assert_eq!(h(&base), h(&same));
    assert_eq!(h(&base), h(&rescaled));
    assert_ne!(h(&base), h(&changed));
    assert_ne!(h(&base), h(&env));
}

#[test]
fn update_defaults_to_a_rolling_surge_of_one_and_reads_percentages() {
    let d = parse(
        "  api:\n    command: {entrypoint: [./api]}\n  web:\n    command: {entrypoint: [./web]}\n    update: {strategy: recreate, max_surge: 25%, max_unavailable: 10%, min_ready: 5s, progress_deadline: 2m, auto_revert: false}\n",
    );
    let api = &d.services[0].update;
    assert_eq!(api.strategy, herdsman_spec::UpdateStrategy::Rolling);
    assert_eq!(api.max_surge, herdsman_spec::Amount::Count(1));
    assert_eq!(api.max_unavailable, herdsman_spec::Amount::Count(0));
    assert_eq!(api.progress_deadline, secs(60));
    assert!(api.auto_revert);
    let web = &d.services[1].update;
    assert_eq!(web.strategy, herdsman_spec::UpdateStrategy::Recreate);
    assert_eq!(web.max_surge.of(10, true), 3, "25% of 10 rounds up");
    assert_eq!(
        web.max_unavailable.of(15, false),
        1,
        "10% of 15 rounds down"
    );
    assert_eq!((web.min_ready, web.progress_deadline), (secs(5), secs(120)));
    assert!(!web.auto_revert);
    let again = herdsman_spec::to_yaml(&d);
    let round = parse_str(&again, "again.yaml", Path::new("/srv/shop")).expect("round trip");
    assert_eq!(round.services[1].update, d.services[1].update);
}

#[test]
fn placement_defaults_to_every_node_spread_and_reads_its_nodes() {
    let d = parse(
        "  a:\n    command: {entrypoint: [x]}\n  b:\n    command: {entrypoint: [x]}\n    placement: {nodes: [n2, node-3.example], spread: false}\n",
    );
    assert_eq!(d.services[0].placement, herdsman_spec::Placement::default());
    assert!(d.services[0].placement.spread && d.services[0].placement.nodes.is_empty());
    assert_eq!(
        d.services[1].placement,
        herdsman_spec::Placement {
            nodes: vec!["n2".into(), "node-3.example".into()],
            spread: false
        }
    );
}
