//! Hostile specs are bounded: a size cap, an alias-expansion budget and nesting measured
//! on the parser's events, each refused with one located problem, quickly; and what looks
//! hostile to a text scan but is not (brackets in comments and strings) is accepted.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use herdsman_spec::{load, parse_str, Problem, SpecError, MAX_DEPTH, MAX_SPEC_BYTES};

/// The problems of a spec that must be refused, and how long refusing it took.
fn refused(source: &str) -> (Vec<Problem>, Duration) {
    // Wall time of synchronous parsing: no timer involved, the spec crate has no tokio.
    #[allow(clippy::disallowed_methods)]
    let started = Instant::now();
    let result = parse_str(source, "hostile.yaml", Path::new("/srv"));
    let took = started.elapsed();
    match result {
        Err(SpecError::Invalid { problems }) => (problems, took),
        Err(e) => panic!("expected problems, got {e}"),
        Ok(_) => panic!("a hostile spec was accepted"),
    }
}

/// The one problem of a refused spec.
fn only_problem(source: &str) -> (Problem, Duration) {
    let (problems, took) = refused(source);
    assert_eq!(problems.len(), 1, "{problems:?}");
    (problems.into_iter().next().expect("one problem"), took)
}

const HEAD: &str = "version: v1\ndeployment: shop\nservices:\n  api:\n    command:\n";

#[test]
fn an_alias_fan_of_a_long_string_is_refused_at_the_alias_that_crosses_the_budget() {
    // 1 MB string, 1,000 aliases: 1 GB once expanded.
    let big = "x".repeat(1 << 20);
    let refs = vec!["*big"; 1000].join(", ");
    let source = format!("{HEAD}      workdir: &big {big}\n      args: [{refs}]\n");
    let (p, took) = only_problem(&source);
    assert!(
        p.message
            .starts_with("aliases expand the document past 16 MiB of text"),
        "{p}"
    );
    assert_eq!(
        (p.line, p.path.as_str()),
        (7, "services.api.command.args"),
        "{p}"
    );
    // The anchored string and 15 copies, with the keys, pass 16 MiB: the 15th alias is
    // refused, after "      args: [" and 14 of "*big, ".
    assert_eq!(p.column, 14 + 14 * 6, "{p}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn a_billion_laughs_is_refused_by_its_expanded_node_count() {
    let mut source =
        format!("{HEAD}      entrypoint: [x]\nx0: &a0 [l, l, l, l, l, l, l, l, l, l]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        source.push_str(&format!("x{i}: &a{i} [{refs}]\n"));
    }
    let (p, took) = only_problem(&source);
    assert!(
        p.message
            .starts_with("aliases expand the document past 100000 scalars, maps and lists"),
        "{p}"
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn nesting_hidden_behind_closing_brackets_in_strings_is_still_measured() {
    // The closing brackets in the string and the comment used to cancel the opening ones
    // of a raw-text count, letting 100k levels reach serde_yaml (quadratic in depth).
    let n = 100_000;
    let source = format!(
        "# {}\nversion: \"{}\"\ndeployment: {}1{}\n",
        "]".repeat(1000),
        "]".repeat(n),
        "[".repeat(n),
        "]".repeat(n)
    );
    let (p, took) = only_problem(&source);
    assert!(
        p.message
            .starts_with("nesting too deep (expected at most 64 levels"),
        "{p}"
    );
    assert_eq!(p.line, 3, "{p}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn deep_block_nesting_is_refused_where_it_crosses_the_limit() {
    let mut source = String::from("version: v1\ndeployment: shop\nservices:\n");
    for depth in 0..200 {
        source.push_str(&format!("{}k{depth}:\n", "  ".repeat(depth + 1)));
    }
    let (p, _) = only_problem(&source);
    assert!(p.message.starts_with("nesting too deep"), "{p}");
    // The root map is level 1; the map under k{MAX_DEPTH - 2} is the 65th.
    assert_eq!(p.line, 3 + MAX_DEPTH, "{p}");
}

#[test]
fn brackets_in_a_banner_comment_and_an_argument_are_not_nesting() {
    let source = format!(
        "# {}\n# {}\n{HEAD}      entrypoint: [\"./api\"]\n      args: [\"{}\"]\n",
        "[".repeat(200),
        "]".repeat(10),
        "{".repeat(65)
    );
    let d = parse_str(&source, "banner.yaml", Path::new("/srv")).expect("valid");
    let args: Vec<&str> = d.services[0]
        .command
        .iter()
        .flat_map(|c| c.args.iter().map(|a| a.source()))
        .collect();
    assert_eq!(args, vec!["{".repeat(65)]);
}

#[test]
fn a_spec_over_the_size_cap_is_refused_before_it_is_parsed() {
    let source = format!(
        "{HEAD}      entrypoint: [x]\n# {}\n",
        "x".repeat(MAX_SPEC_BYTES)
    );
    let (p, took) = only_problem(&source);
    assert_eq!((p.line, p.column, p.path.as_str()), (1, 1, "<document>"));
    assert!(
        p.message.contains("too large") && p.message.contains("at most 8 MiB"),
        "{p}"
    );
    assert!(took < Duration::from_millis(100), "took {took:?}");
}

#[test]
fn a_file_over_the_size_cap_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("huge.yaml");
    let mut f = std::fs::File::create(&path).expect("create");
    f.write_all(HEAD.as_bytes()).expect("write");
    // Sparse: 50 MB that take no disk and would take 17 s to parse.
    f.set_len(50 * 1024 * 1024).expect("extend");
    // Wall time of synchronous parsing: no timer involved, the spec crate has no tokio.
    #[allow(clippy::disallowed_methods)]
    let started = Instant::now();
    let result = load(&path);
    let took = started.elapsed();
    match result {
        Err(SpecError::Invalid { problems }) => {
            assert_eq!(problems.len(), 1);
            assert!(
                problems[0].message.contains("52428800 bytes"),
                "{}",
                problems[0]
            );
        }
        other => panic!("expected a size problem, got {other:?}"),
    }
    assert!(took < Duration::from_millis(100), "took {took:?}");
}

#[test]
fn a_huge_flow_map_is_refused_by_its_node_count() {
    let pairs: Vec<String> = (0..300_000).map(|i| format!("K{i}: v")).collect();
    let source = format!(
        "{HEAD}      entrypoint: [x]\n    env: {{{}}}\n",
        pairs.join(", ")
    );
    assert!(source.len() > 3_000_000);
    let (p, took) = only_problem(&source);
    assert!(
        p.message.starts_with("too many values: more than 100000"),
        "{p}"
    );
    assert_eq!(p.path, "services.api.env", "{p}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn a_byte_order_mark_is_ignored() {
    let source = format!("\u{feff}{HEAD}      entrypoint: [x]\n");
    let d = parse_str(&source, "bom.yaml", Path::new("/srv")).expect("valid with a BOM");
    assert_eq!(d.name, "shop");
}

#[test]
fn yaml_that_only_libyaml_accepts_is_still_read_when_what_follows_is_small() {
    // yaml-rust2 (which measures) refuses both; libyaml (which reads) accepts them, as
    // herdsman always did.
    for source in [
        format!("{HEAD}      entrypoint: [\n        \"./api\"\n      ]\n"),
        format!("{HEAD}      entrypoint:\t[./api]\n"),
    ] {
        let d = parse_str(&source, "style.yaml", Path::new("/srv"));
        assert!(d.is_ok(), "{source}: {d:?}");
    }
}

#[test]
fn what_yaml_rust2_cannot_measure_is_refused_when_it_could_hurt() {
    // The same bracket style, followed by 100k levels of nesting or an alias fan:
    // refused with the syntax error, quickly, instead of handed to libyaml.
    let style = format!("{HEAD}      entrypoint: [\n        \"./api\"\n      ]\n");
    let n = 100_000;
    let refs = vec!["*a"; 2_000].join(", ");
    for tail in [
        format!("x: {}1{}\n", "[".repeat(n), "]".repeat(n)),
        format!("y: &a {}\nz: [{refs}]\n", "x".repeat(1 << 20)),
    ] {
        let (p, took) = only_problem(&format!("{style}{tail}"));
        assert_eq!(p.line, 8, "{p}");
        assert!(took < Duration::from_secs(1), "took {took:?}");
    }
}
