//! Every spec in `tests/invalid/` is rejected with exactly the problems its trailing
//! `# expect: LINE:COL PATH -- message start` lines list: no problem missed, none extra.

use std::path::{Path, PathBuf};

use herdsman_spec::{parse_str, Problem, SpecError};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid")
}

fn corpus() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/invalid is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// `(line:col path, message start)` for each `# expect:` line.
fn expectations(source: &str) -> Vec<(String, String)> {
    source
        .lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|e| match e.split_once(" -- ") {
            Some((at, msg)) => (at.to_string(), msg.to_string()),
            None => (e.to_string(), String::new()),
        })
        .collect()
}

fn problems(file: &Path) -> Result<Vec<Problem>, String> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let source = std::fs::read_to_string(file).map_err(|e| format!("{name}: {e}"))?;
    match parse_str(&source, &name, &corpus_dir()) {
        Ok(_) => Err(format!("{name}: accepted, but it is in the invalid corpus")),
        Err(SpecError::Invalid { problems }) => Ok(problems),
        Err(e) => Err(format!("{name}: unexpected error {e}")),
    }
}

#[test]
fn every_invalid_spec_reports_exactly_its_expected_problems() {
    let files = corpus();
    assert!(
        files.len() >= 40,
        "the corpus shrank to {} files",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(file).unwrap_or_default();
        let expected = expectations(&source);
        if expected.is_empty() {
            failures.push(format!("{}: no # expect: lines", file.display()));
            continue;
        }
        let got = match problems(file) {
            Ok(p) => p,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let got_keys: Vec<String> = got
            .iter()
            .map(|p| format!("{}:{} {}", p.line, p.column, p.path))
            .collect();
        let want_keys: Vec<String> = expected.iter().map(|(k, _)| k.clone()).collect();
        if got_keys != want_keys {
            failures.push(format!(
                "{}:\n  expected {want_keys:?}\n  got      {got_keys:?}\n  problems:\n{}",
                file.display(),
                got.iter().map(|p| format!("    {p}\n")).collect::<String>()
            ));
            continue;
        }
        for (p, (_, start)) in got.iter().zip(&expected) {
            if !p.message.starts_with(start.as_str()) {
                failures.push(format!(
                    "{}: message of {p} does not start with {start:?}",
                    file.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unknown_check_type_is_reported_with_its_line_and_path() {
    let file = corpus_dir().join("unknown_check_type_is_reported_with_its_line_and_path.yaml");
    let problems = problems(&file).unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        vec!["unknown_check_type_is_reported_with_its_line_and_path.yaml:14:15: services.api.health.check.type: unknown check type \"exec\" (expected tcp, http or command)"]
    );
}

#[test]
fn every_problem_is_one_lowercase_located_line() {
    for file in corpus() {
        for p in problems(&file).unwrap_or_default() {
            assert!(
                !p.message.is_empty() && !p.to_string().contains('\n'),
                "{p}"
            );
            assert!(p.line >= 1 && p.column >= 1, "{p}");
            assert!(
                p.message.chars().next().is_some_and(|c| !c.is_uppercase()),
                "messages are lowercase: {p}"
            );
        }
    }
}
