//! `herdsman validate` driven as a binary: exit codes, where each message goes, no panic
//! whatever the file holds, and hostile files answered within a second and 256 MiB.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn herdsman(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herdsman"))
        .arg("validate")
        .args(args)
        .output()
        .expect("the herdsman binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("temp file is writable");
    path
}

#[test]
fn valid_files_exit_zero_with_a_summary_on_stdout() {
    let out = herdsman(&[&example("minimal.yaml")]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    // shop.yaml's programs (./bin/db...) do not exist here: warnings, still valid.
    let out = herdsman(&[&example("shop.yaml"), &example("minimal.yaml")]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr
            .lines()
            .all(|l| l.contains("shop.yaml: warning: services.")),
        "{stderr}"
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("shop.yaml: valid (5 services, 7 replicas)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("minimal.yaml: valid (1 service, 1 replica)"),
        "{stdout}"
    );
}

#[test]
fn a_program_missing_on_this_machine_is_a_warning_and_the_spec_stays_valid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = "version: v1\ndeployment: shop\nservices:\n  api:\n    command: {entrypoint: [./bin/api], workdir: .}\n  sh:\n    command: {entrypoint: [sh, -c, 'true']}\n  ghost:\n    command: {entrypoint: [no-such-program-herdsman-test]}\n";
    let path = write(&dir, "shop.yaml", spec.as_bytes());
    let out = herdsman(&[&path]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    let at = dir.path().join("./bin/api");
    assert_eq!(
        lines[0],
        format!(
            "{}: warning: services.api.command.entrypoint: program \"./bin/api\" not found at {} (the spec is valid, but `herdsman run` here could not start it)",
            path.display(),
            at.display()
        )
    );
    assert!(
        lines[1].contains("services.ghost.command.entrypoint: program \"no-such-program-herdsman-test\" not found in PATH"),
        "{stderr}"
    );
    assert!(text(&out.stdout).contains("shop.yaml: valid (3 services, 3 replicas)"));
}

#[test]
fn problems_reach_the_terminal_with_control_characters_escaped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = "version: v1\ndeployment: shop\nservices:\n  api:\n    command: {entrypoint: [x]}\n    \"\\e]0;pwned\\a\\e[2J\": 1\n";
    let path = write(&dir, "evil.yaml", spec.as_bytes());
    let out = herdsman(&[&path]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\x07'),
        "{stderr:?}"
    );
    assert!(
        stderr.contains("unknown field \"\\x1b]0;pwned\\x07\\x1b[2J\""),
        "{stderr}"
    );
}

#[test]
fn a_file_with_a_byte_order_mark_is_valid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = "\u{feff}version: v1\ndeployment: shop\nservices:\n  api:\n    command: {entrypoint: [sh]}\n";
    let path = write(&dir, "bom.yaml", spec.as_bytes());
    let out = herdsman(&[&path]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// Largest resident set of any child this test process has waited for, in bytes: an
/// upper bound for each `herdsman validate` run here (the others are small).
#[test]
fn an_invalid_file_exits_two_with_each_problem_located_on_stderr() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = "version: v1\ndeployment: shop\nservices:\n  api:\n    command: {entrypoint: [./api]}\n    health:\n      check:\n        type: exec\n    scale: {mode: fixed, replicas: -3}\n";
    let path = write(&dir, "shop.yaml", spec.as_bytes());
    let out = herdsman(&[&path]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    let file = path.display().to_string();
    assert_eq!(
        lines[0],
        format!("{file}:8:15: services.api.health.check.type: unknown check type \"exec\" (expected tcp, http or command)")
    );
    assert!(
        lines[1].starts_with(&format!("{file}:9:36: services.api.scale.replicas: ")),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
}

#[test]
fn a_missing_file_exits_one() {
    let out = herdsman(&[Path::new("/nonexistent/herdsman/spec.yaml")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot read /nonexistent/herdsman/spec.yaml"),
        "{stderr}"
    );
}

#[test]
fn an_invalid_file_outranks_a_missing_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = write(&dir, "bad.yaml", b"version: v9\n");
    let out = herdsman(&[
        Path::new("/nonexistent/spec.yaml"),
        &bad,
        &example("minimal.yaml"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).contains("minimal.yaml: valid"));
}

#[test]
fn garbage_bytes_exit_two_without_a_panic() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A fixed pseudo-random sequence (xorshift), including invalid UTF-8 and NULs.
    let mut x: u32 = 0x9e37_79b9;
    let mut bytes = Vec::with_capacity(4096);
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes.push(x.to_le_bytes()[0]);
    }
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("random.yaml", bytes.clone()),
        (
            "lossy.yaml",
            String::from_utf8_lossy(&bytes).into_owned().into_bytes(),
        ),
        ("deep.yaml", "[".repeat(100_000).into_bytes()),
        ("tabs.yaml", b"version: v1\n\tdeployment: x\n".to_vec()),
        ("empty.yaml", Vec::new()),
    ];
    for (name, bytes) in inputs {
        let path = write(&dir, name, &bytes);
        let out = herdsman(&[&path]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(
            stderr
                .lines()
                .all(|l| l.starts_with(&path.display().to_string())),
            "{name}: {stderr}"
        );
    }
}
