//! Every YAML spec under the repository's `examples/` validates and survives a round trip
//! through `to_yaml`; `shop.yaml` shows every field of the spec.

use std::path::{Path, PathBuf};

use herdsman_spec::{load, parse_str, to_yaml, Deployment};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(path);
        }
    }
}

fn all_examples() -> Vec<PathBuf> {
    let mut files = Vec::new();
    yaml_files(&examples_dir(), &mut files);
    files.sort();
    files
}

fn load_ok(path: &Path) -> Deployment {
    load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_yaml_under_examples_validates() {
    let files = all_examples();
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert!(names.contains(&"shop.yaml".to_string()), "{names:?}");
    assert!(names.contains(&"minimal.yaml".to_string()), "{names:?}");
    for f in &files {
        load_ok(f);
    }
}

#[test]
fn parse_serialize_parse_gives_the_same_spec_for_every_example() {
    for f in all_examples() {
        let d = load_ok(&f);
        let yaml = to_yaml(&d);
        let again = parse_str(&yaml, "round-trip.yaml", Path::new("/elsewhere"))
            .unwrap_or_else(|e| panic!("{}: to_yaml output rejected: {e}\n{yaml}", f.display()));
        assert_eq!(
            again,
            d,
            "{}: round trip changed the spec\n{yaml}",
            f.display()
        );
    }
}

#[test]
fn shop_yaml_uses_every_field_of_the_spec() {
    let text = std::fs::read_to_string(examples_dir().join("shop.yaml")).unwrap_or_default();
    let fields = [
        "version",
        "deployment",
        "services",
        "rtype",
        "image",
        "name",
        "pull_policy",
        "network",
        "command",
        "entrypoint",
        "args",
        "workdir",
        "env",
        "scale",
        "mode",
        "replicas",
        "min",
        "max",
        "endpoints",
        "protocol",
        "port",
        "depends",
        "service",
        "condition",
        "timeout",
        "health",
        "start_grace",
        "start_interval",
        "interval",
        "retries",
        "success_threshold",
        "on_unhealthy",
        "check",
        "type",
        "url",
        "expect_status",
        "init",
        "steps",
        "id",
        "uses",
        "with",
        "host",
        "retry",
        "on_failure",
        "errors",
        "on_init_failure",
        "action",
        "max_retries",
        "delay",
        "backoff",
        "initial",
        "multiplier",
        "jitter",
        "on_panic",
        "restart",
        "policy",
        "max_restarts",
        "window",
        "reset_after",
        "give_up_after",
        "stop_signal",
        "stop_grace_period",
        "min_ready",
    ];
    let missing: Vec<&str> = fields
        .iter()
        .copied()
        .filter(|f| !text.contains(&format!("{f}:")))
        .collect();
    assert!(missing.is_empty(), "shop.yaml lacks {missing:?}");
    let words = [
        "type: tcp",
        "type: http",
        "type: command",
        "mode: fixed",
        "mode: adaptive",
        "mode: manual",
        "init.wait_tcp",
        "init.wait_http",
        "init.run",
        "action: fail",
        "action: restart",
        "action: backoff",
        "action: shutdown",
        "action: isolate",
        "rtype: job",
        "condition: started",
        "condition: healthy",
    ];
    let missing: Vec<&str> = words
        .iter()
        .copied()
        .filter(|w| !text.contains(w))
        .collect();
    assert!(missing.is_empty(), "shop.yaml lacks {missing:?}");
}
