//! Container services: `image.pull_policy`, `network`, and what a container cannot use.

use std::path::{Path, PathBuf};

use herdsman_spec::{parse_str, to_yaml, Deployment, Network, Problem, PullPolicy, SpecError};

const HEAD: &str = "version: v1\ndeployment: shop\nservices:\n";

fn parse(services: &str) -> Result<Deployment, Vec<Problem>> {
    let src = format!("{HEAD}{services}");
    match parse_str(&src, "test.yaml", Path::new("/srv/shop")) {
        Ok(d) => Ok(d),
        Err(SpecError::Invalid { problems }) => Err(problems),
        Err(e) => panic!("unexpected error {e}\n{src}"),
    }
}

fn one_problem(services: &str) -> Problem {
    let problems = parse(services).expect_err("the spec must be rejected");
    assert_eq!(problems.len(), 1, "{problems:?}");
    problems.into_iter().next().expect("one problem")
}

#[test]
fn an_image_service_defaults_to_if_not_present_and_bridge() {
    let d = parse("  web:\n    image: {name: busybox}\n").expect("valid");
    let s = &d.services[0];
    assert_eq!(s.image.as_deref(), Some("busybox"));
    assert_eq!(s.pull_policy, PullPolicy::IfNotPresent);
    assert_eq!(s.network, Network::Bridge);
}

#[test]
fn pull_policy_and_network_are_read_in_any_documented_spelling() {
    let d = parse("  web:\n    image: {name: busybox, pull_policy: Never}\n    network: host\n  b:\n    image: {name: b, pull_policy: if-not-present}\n  c:\n    image: {name: c, pull_policy: always}\n")
        .expect("valid");
    assert_eq!(d.services[0].pull_policy, PullPolicy::Never);
    assert_eq!(d.services[0].network, Network::Host);
    assert_eq!(d.services[1].pull_policy, PullPolicy::IfNotPresent);
    assert_eq!(d.services[2].pull_policy, PullPolicy::Always);
}

#[test]
fn an_unknown_pull_policy_names_the_field_and_the_choices() {
    let p = one_problem("  web:\n    image: {name: busybox, pull_policy: sometimes}\n");
    assert_eq!(p.path, "services.web.image.pull_policy");
    assert!(
        p.message.contains("if_not_present, always or never"),
        "{}",
        p.message
    );
}

#[test]
fn network_on_a_process_service_is_rejected() {
    let p = one_problem("  web:\n    command: {entrypoint: [./web]}\n    network: host\n");
    assert_eq!(p.path, "services.web.network");
    assert!(
        p.message.contains("only to a container service"),
        "{}",
        p.message
    );
}

#[test]
fn a_container_workdir_must_be_absolute_and_is_kept_as_written() {
    let p = one_problem(
        "  web:\n    image: {name: busybox}\n    command: {args: [ls], workdir: app}\n",
    );
    assert_eq!(p.path, "services.web.command.workdir");
    assert!(
        p.message.contains("absolute path inside the image"),
        "{}",
        p.message
    );

    let d = parse("  web:\n    image: {name: busybox}\n    command: {args: [ls], workdir: /app}\n")
        .expect("valid");
    let workdir = d.services[0]
        .command
        .as_ref()
        .and_then(|c| c.workdir.clone());
    assert_eq!(workdir, Some(PathBuf::from("/app")));
}

#[test]
fn a_container_service_round_trips_through_to_yaml() {
    let d = parse("  web:\n    image: {name: busybox, pull_policy: never}\n    network: host\n    command: {entrypoint: [httpd, -f], workdir: /www}\n")
        .expect("valid");
    let again = parse_str(&to_yaml(&d), "again.yaml", Path::new("/srv/shop")).expect("valid");
    assert_eq!(again, d);
}

#[test]
fn the_run_hash_changes_with_the_network_of_a_container_only() {
    let bridge = parse("  web:\n    image: {name: busybox}\n").expect("valid");
    let host = parse("  web:\n    image: {name: busybox}\n    network: host\n").expect("valid");
    assert_ne!(bridge.services[0].run_hash(), host.services[0].run_hash());
    let pulled = parse("  web:\n    image: {name: busybox, pull_policy: always}\n").expect("valid");
    assert_eq!(bridge.services[0].run_hash(), pulled.services[0].run_hash());
}
