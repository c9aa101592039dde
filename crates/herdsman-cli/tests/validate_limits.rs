//! `herdsman validate` of hostile input stays within a second of CPU and 256 MiB, measured
//! from outside the process as the kernel accounts for it. Alone in its file, so the
//! children it reaps are its own.

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

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("temp file is writable");
    path
}

fn children_cpu() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let micros = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
    };
    micros(usage.user_time()) + micros(usage.system_time())
}

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
        // CPU time of the child, from the kernel's accounting: what the input costs, not
        // how busy the machine is. This file holds this test alone, so every child the
        // process has reaped is one of its own. Wall time only guards against a hang.
        let cpu_before = children_cpu();
        #[allow(clippy::disallowed_methods)]
        let started = Instant::now();
        let out = herdsman(&[&path]);
        let wall = started.elapsed();
        let took = children_cpu() - cpu_before;
        let stderr = text(&out.stderr);
        let name = path.display();
        if expect.is_empty() {
            assert_eq!(out.status.code(), Some(0), "{name}: {stderr}");
        } else {
            assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
            assert!(stderr.contains(expect), "{name}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        }
        assert!(took < Duration::from_secs(1), "{name} took {took:?} of CPU");
        assert!(
            wall < Duration::from_secs(20),
            "{name} took {wall:?} (hung?)"
        );
        let peak = children_peak_rss();
        println!(
            "{name}: {took:?} CPU, {wall:?} wall, children's peak RSS so far {} MiB",
            peak >> 20
        );
        assert!(peak < 256 << 20, "{name}: peak RSS {} MiB", peak >> 20);
    }
}
