//! `herdsman validate` driven as a binary: exit codes, where each message goes, no panic
//! whatever the file holds, and hostile files answered within a second and 256 MiB.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};

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
fn children_peak_rss() -> u64 {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    // Linux reports kilobytes.
    u64::try_from(usage.max_rss()).unwrap_or(0) * 1024
}

#[test]
fn hostile_specs_are_answered_within_a_second_and_256_mib() {
    let dir = tempfile::tempdir().expect("temp dir");
    let head =
        "version: v1\ndeployment: shop\nservices:\n  api:\n    command:\n      entrypoint: [sh]\n";
    let big = "x".repeat(1 << 20);
    let refs = vec!["*big"; 20_000].join(", ");
    let n = 100_000;
    let pairs: Vec<String> = (0..300_000).map(|i| format!("K{i}: v")).collect();
    let inputs: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "alias-fan.yaml",
            format!("{head}      workdir: &big {big}\n      args: [{refs}]\n").into_bytes(),
            "aliases expand the document past",
        ),
        (
            "hidden-depth.yaml",
            format!(
                "# {}\n{head}      args: [\"{}\"]\nx: {}1{}\n",
                "]".repeat(1000),
                "]".repeat(n),
                "[".repeat(n),
                "]".repeat(n)
            )
            .into_bytes(),
            "nesting too deep",
        ),
        (
            "flow-map.yaml",
            format!("{head}    env: {{{}}}\n", pairs.join(", ")).into_bytes(),
            "too many values",
        ),
        (
            "one-huge-argument.yaml",
            format!("{head}      args: [\"{}\"]\n", "y".repeat(8_000_000)).into_bytes(),
            "",
        ),
    ];
    let mut cases: Vec<(PathBuf, &str)> = inputs
        .into_iter()
        .map(|(name, bytes, expect)| (write(&dir, name, &bytes), expect))
        .collect();
    // 50 MB, sparse.
    let huge = dir.path().join("50mb.yaml");
    let mut f = std::fs::File::create(&huge).expect("created");
    f.write_all(head.as_bytes()).expect("written");
    f.set_len(50 * 1024 * 1024).expect("extended");
    cases.push((huge, "the spec is too large"));

    for (path, expect) in cases {
        // Wall time of a child process: no timer involved.
        #[allow(clippy::disallowed_methods)]
        let started = Instant::now();
        let out = herdsman(&[&path]);
        let took = started.elapsed();
        let stderr = text(&out.stderr);
        let name = path.display();
        if expect.is_empty() {
            assert_eq!(out.status.code(), Some(0), "{name}: {stderr}");
        } else {
            assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
            assert!(stderr.contains(expect), "{name}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        }
        assert!(took < Duration::from_secs(1), "{name} took {took:?}");
        let peak = children_peak_rss();
        println!(
            "{name}: {took:?}, children's peak RSS so far {} MiB",
            peak >> 20
        );
        assert!(peak < 256 << 20, "{name}: peak RSS {} MiB", peak >> 20);
    }
}

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
