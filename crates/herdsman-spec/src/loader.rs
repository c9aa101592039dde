//! Loading a spec end to end: bytes → shape (serde) → validated deployment, and whatever
//! went wrong turned into located, one-line [`Problem`]s.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::budget::{MAX_NODES, MAX_SPEC_BYTES};
use crate::error::{Problem, SpecError};
use crate::location::{child, Locations, Pos, DOCUMENT};
use crate::model::Deployment;
use crate::raw;
use crate::validation::{self, Anchor, Issue};

/// Parse and validate a spec held in memory.
///
/// `file_name` is only used to label problems; `base_dir` is the directory relative
/// `command.workdir`s are resolved against (made absolute with the current directory if
/// it is relative). A leading byte order mark is ignored.
///
/// The spec is bounded before serde builds anything from it: at most
/// [`MAX_SPEC_BYTES`](crate::MAX_SPEC_BYTES), nested at most
/// [`MAX_DEPTH`](crate::MAX_DEPTH) levels, and at most [`MAX_NODES`](crate::MAX_NODES)
/// nodes and [`MAX_EXPANDED_BYTES`](crate::MAX_EXPANDED_BYTES) of text with its aliases
/// expanded; past a bound it is refused with one problem, where the bound was crossed.
///
/// # Errors
/// [`SpecError::Invalid`] with every problem found, sorted by position.
pub fn parse_str(source: &str, file_name: &str, base_dir: &Path) -> Result<Deployment, SpecError> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    if source.len() > MAX_SPEC_BYTES {
        return Err(too_large(file_name, Some(source.len() as u64)));
    }
    let base = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
    let locations = Locations::scan(source);
    let stopped = match (locations.exceeded(), locations.syntax()) {
        (Some((at, over)), _) => Some((at, over.to_string())),
        // yaml-rust2 is stricter than libyaml in places (a tab after `:`, a closing
        // bracket at its key's indentation): libyaml, which serde_yaml reads with, decides
        // when the text yaml-rust2 did not measure is too small to hurt.
        (None, Some(_)) if libyaml_may_read_on(source, locations.measured()) => None,
        (None, Some((at, message))) => Some(
            libyaml_syntax_error(source, at, locations.measured())
                .unwrap_or_else(|| (at, reword(message))),
        ),
        (None, None) => None,
    };
    if let Some((at, message)) = stopped {
        // Nothing past this point was read, and serde_yaml must not read it either.
        let path = locations.path_before(at).unwrap_or(DOCUMENT).to_string();
        return Err(SpecError::Invalid {
            problems: locate(
                vec![Issue {
                    path,
                    message,
                    anchor: Anchor::At(at),
                }],
                file_name,
                &locations,
            ),
        });
    }
    let read = raw::read(source, passes(locations.nodes(), source.len()));
    let mut issues: Vec<Issue> = read
        .errors
        .iter()
        .map(|e| shape_issue(e, &locations))
        .collect();
    match validation::validate(&read, &base) {
        Ok(d) if issues.is_empty() => return Ok(d),
        Ok(_) => {}
        Err(more) => issues.extend(more),
    }
    Err(SpecError::Invalid {
        problems: locate(issues, file_name, &locations),
    })
}

/// Longest text past yaml-rust2's last measured event that libyaml may still read.
const UNMEASURED_BYTES: usize = 1024 * 1024;

/// Most `[` and `{` in that text: libyaml's work per token grows with flow nesting.
const UNMEASURED_BRACKETS: usize = 256;

/// Whether the text after `measured` (where yaml-rust2 stopped measuring) is bounded
/// enough for libyaml to read without the budget: short, with few brackets (so shallow
/// flow nesting) and no alias (so nothing to expand).
fn libyaml_may_read_on(source: &str, measured: Pos) -> bool {
    let rest = &source[byte_offset(source, measured)..];
    rest.len() <= UNMEASURED_BYTES
        && !rest.contains('*')
        && rest.matches(['[', '{']).count() <= UNMEASURED_BRACKETS
}

/// libyaml's wording of a syntax error yaml-rust2 found at `at`, which is usually the
/// clearer one (serde_yaml parses with libyaml), with its position. `None` if libyaml
/// finds no error there, or if it cannot be asked safely.
///
/// libyaml reads only the text up to the error and the rest of its line (at most 256
/// bytes more), and serde_yaml walks it without building anything. That walk expands
/// aliases, so the text yaml-rust2 did not measure with the budget (after its last event)
/// must hold no alias.
fn libyaml_syntax_error(source: &str, at: Pos, measured: Pos) -> Option<(Pos, String)> {
    use serde::de::{Deserialize, IgnoredAny};

    let start = byte_offset(
        source,
        Pos {
            line: at.line,
            column: 1,
        },
    );
    // The line's end included: libyaml reports some errors only at the next line break.
    let line_end = source[start..]
        .find('\n')
        .map_or(source.len(), |i| start + i + 1);
    let mut end = line_end.min(byte_offset(source, at) + 256);
    while !source.is_char_boundary(end) {
        end -= 1;
    }
    let unmeasured = byte_offset(source, measured).min(end);
    if source[unmeasured..end].contains('*') {
        return None;
    }
    let e = IgnoredAny::deserialize(serde_yaml::Deserializer::from_str(&source[..end])).err()?;
    let pos = e.location().map(|l| Pos {
        line: l.line().max(1),
        column: l.column().max(1),
    })?;
    if pos.line > at.line {
        return None;
    }
    Some((pos, reword(&strip_positions(&e.to_string()))))
}

/// The byte offset of `pos` (1-based line, 1-based column in characters) in `source`,
/// clamped to its length.
fn byte_offset(source: &str, pos: Pos) -> usize {
    let line_start: usize = source
        .split_inclusive('\n')
        .take(pos.line.saturating_sub(1))
        .map(str::len)
        .sum();
    source[line_start..]
        .char_indices()
        .nth(pos.column.saturating_sub(1))
        .map_or(source.len(), |(i, _)| line_start + i)
}

/// How many times a document of `nodes` nodes and `bytes` bytes may be re-read to find
/// its broken parts: every re-read costs a full parse, so together they are bounded to a
/// few parses of the largest document allowed.
fn passes(nodes: u64, bytes: usize) -> usize {
    const MOST: usize = 25;
    let by_nodes = usize::try_from((4 * MAX_NODES) / nodes.max(1)).unwrap_or(MOST);
    let by_bytes = (2 * MAX_SPEC_BYTES) / bytes.max(1);
    by_nodes.min(by_bytes).clamp(1, MOST)
}

/// The problem of a spec over [`MAX_SPEC_BYTES`]: `bytes` long, or longer than the
/// cap when the length is not known.
fn too_large(file: &str, bytes: Option<u64>) -> SpecError {
    SpecError::Invalid {
        problems: vec![Problem {
            file: file.to_string(),
            line: 1,
            column: 1,
            path: DOCUMENT.to_string(),
            message: format!(
                "the spec is too large: {} (expected at most {} MiB)",
                match bytes {
                    Some(n) => format!("{n} bytes"),
                    None => format!("more than {MAX_SPEC_BYTES} bytes"),
                },
                MAX_SPEC_BYTES / (1024 * 1024)
            ),
        }],
    }
}

/// Read, parse and validate the spec file at `path`. Relative `workdir`s are resolved
/// against the file's directory; problems are labelled with `path` as given.
///
/// # Errors
/// [`SpecError::Read`] if the file cannot be read; [`SpecError::Invalid`] otherwise, also
/// for a file that is not UTF-8.
pub fn load(path: &Path) -> Result<Deployment, SpecError> {
    let file = path.display().to_string();
    let read_error = |source| SpecError::Read {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(read_error)?;
    // Refused before reading when the size is known; a pipe or a growing file is read
    // no further than one byte past the cap.
    let known = f.metadata().map(|m| m.len()).unwrap_or(0);
    if known > MAX_SPEC_BYTES as u64 {
        return Err(too_large(&file, Some(known)));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(known).unwrap_or(0) + 1);
    f.take(MAX_SPEC_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() > MAX_SPEC_BYTES {
        return Err(too_large(&file, None));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match std::str::from_utf8(&bytes) {
        Ok(source) => parse_str(source, &file, &dir),
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
            let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&valid[line_start..])
                .chars()
                .count()
                + 1;
            Err(SpecError::Invalid {
                problems: vec![Problem {
                    file,
                    line,
                    column,
                    path: DOCUMENT.to_string(),
                    message: "invalid UTF-8 (expected a UTF-8 text file)".to_string(),
                }],
            })
        }
    }
}

/// Issues located in the file, sorted by position, exact duplicates dropped.
fn locate(issues: Vec<Issue>, file: &str, locations: &Locations) -> Vec<Problem> {
    let mut problems: Vec<Problem> = issues
        .into_iter()
        .map(|i| {
            let pos = match i.anchor {
                Anchor::Value => locations.find(&i.path),
                Anchor::Key => locations.find_key(&i.path),
                Anchor::Duplicate => locations
                    .duplicate(&i.path)
                    .unwrap_or_else(|| locations.find_key(&i.path)),
                Anchor::At(pos) => pos,
            };
            Problem {
                file: file.to_string(),
                line: pos.line,
                column: pos.column,
                path: if i.path.is_empty() {
                    DOCUMENT.to_string()
                } else {
                    i.path
                },
                message: i.message,
            }
        })
        .collect();
    problems.sort_by(|a, b| (a.line, a.column, &a.path).cmp(&(b.line, b.column, &b.path)));
    problems.dedup();
    problems
}

/// A serde_yaml error as an issue: its location, its path split out of its message, and
/// the message reworded as `what is wrong (what was expected)`.
fn shape_issue(e: &serde_yaml::Error, locations: &Locations) -> Issue {
    let at = e.location().map(|l| Pos {
        line: l.line().max(1),
        column: l.column().max(1),
    });
    let text = strip_positions(&e.to_string());
    let (path, message) = match text.split_once(": ") {
        Some((head, rest)) if !head.is_empty() && !head.contains(char::is_whitespace) => {
            (Some(head.to_string()), rest.to_string())
        }
        _ => (None, text.clone()),
    };
    let base = path.clone().unwrap_or_default();

    if let Some(field) = quoted_after(&message, "unknown field ") {
        let expected = message
            .split_once(", expected ")
            .map(|(_, x)| x.to_string());
        let fpath = child(&base, &field);
        let mut m = format!("unknown field \"{field}\"");
        match expected {
            Some(x) => {
                let names: Vec<String> = x
                    .trim_start_matches("one of ")
                    .split(", ")
                    .map(|n| n.trim_matches('`').to_string())
                    .collect();
                let hint = compose_habit(&field, &names)
                    .or_else(|| closest(&field, &names).map(|n| format!("did you mean \"{n}\"? ")))
                    .unwrap_or_default();
                m.push_str(&format!(" ({hint}expected {})", names.join(", ")));
            }
            None => m.push_str(" (expected no fields here)"),
        }
        return Issue {
            path: fpath,
            message: m,
            anchor: Anchor::Key,
        };
    }
    if let Some(field) = quoted_after(&message, "duplicate field ") {
        let fpath = child(&base, &field);
        return Issue {
            path: fpath,
            message: format!("duplicate field \"{field}\" (expected each field once)"),
            anchor: Anchor::Duplicate,
        };
    }
    if let Some(field) = quoted_after(&message, "missing field ") {
        let fpath = child(&base, &field);
        return Issue {
            path: fpath,
            message: "missing (expected this field to be given)".to_string(),
            anchor: Anchor::Value,
        };
    }

    let mut message = reword(&message);
    if let Some(p) = &path {
        if let Some(hint) = shape_hint(p, &message) {
            message = hint;
        }
    }
    let path = path.unwrap_or_else(|| {
        at.and_then(|p| locations.path_before(p))
            .unwrap_or(DOCUMENT)
            .to_string()
    });
    Issue {
        path,
        message,
        anchor: at.map_or(Anchor::Value, Anchor::At),
    }
}

/// Docker Compose's names for fields herdsman spells differently, where the herdsman
/// field is one of `expected` here: `"did you mean ..."` with how to write it.
fn compose_habit(field: &str, expected: &[String]) -> Option<String> {
    let (ours, how) = match field {
        "environment" => ("env", "env: {NAME: value}"),
        "ports" | "expose" => ("endpoints", "endpoints: [{name: http, port: 8080}]"),
        "depends_on" => ("depends", "depends: [{service: db}]"),
        "healthcheck" => ("health", "health: {check: {type: http, url: ...}}"),
        "entrypoint" | "working_dir" => ("command", "command: {entrypoint: [...], workdir: ...}"),
        "deploy" | "replicas" => ("scale", "scale: {mode: fixed, replicas: 2}"),
        "stop_grace" => ("stop_grace_period", "stop_grace_period: 10s"),
        _ => return None,
    };
    expected
        .iter()
        .any(|n| n == ours)
        .then(|| format!("did you mean \"{ours}\", written {how}? "))
}

/// A clearer message for a shape error at `path` that is a Compose habit: a service's
/// `command` as a list or a string, where herdsman wants a map.
fn shape_hint(path: &str, message: &str) -> Option<String> {
    let is_command = path.starts_with("services.") && path.ends_with(".command");
    let compose_like = message.starts_with("invalid type: sequence")
        || message.starts_with("invalid type: string");
    if !(is_command && compose_like) {
        return None;
    }
    let what = message.split(" (expected").next().unwrap_or(message);
    Some(format!(
        "{what} (expected a map: herdsman's command is {{entrypoint: [\"./app\", \"--flag\"], args: [...]}}, not Compose's list or string)"
    ))
}

/// serde_yaml's own wording made to read `what is wrong (what was expected)`.
fn reword(message: &str) -> String {
    if message.starts_with("EOF while parsing") {
        return "empty document (expected a map with version, deployment and services)".to_string();
    }
    let mut m = message.replace('`', "\"");
    if let Some(i) = m.find("struct Raw") {
        let end = m[i..]
            .find(|c: char| !c.is_alphanumeric() && c != ' ')
            .map_or(m.len(), |j| i + j);
        let after_struct = &m[i + "struct ".len()..end];
        let word_end = after_struct
            .find(' ')
            .map_or(end, |j| i + "struct ".len() + j);
        m.replace_range(i..word_end, "a map");
    }
    for (from, to) in [(", expected ", " (expected "), (", while ", " (while ")] {
        if let Some(i) = m.find(from) {
            m.replace_range(i..i + from.len(), to);
            m.push(')');
            break;
        }
    }
    m
}

/// The `name` in "PREFIX`name`...", if `message` starts with `prefix`.
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?.strip_prefix('`')?;
    let end = rest.find('`')?;
    Some(rest[..end].to_string())
}

/// Remove serde_yaml's " at line L column C" and " at position N" from a message.
fn strip_positions(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(" at ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 4..];
        let skip = position_len(after);
        if skip == 0 {
            out.push_str(" at ");
        }
        rest = &after[skip..];
    }
    out.push_str(rest);
    out
}

/// Length of a leading "line L column C" or "position N", 0 if there is none.
fn position_len(s: &str) -> usize {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    if let Some(r) = s.strip_prefix("line ") {
        let a = digits(r);
        if a > 0 {
            if let Some(r2) = r[a..].strip_prefix(" column ") {
                let b = digits(r2);
                if b > 0 {
                    return "line ".len() + a + " column ".len() + b;
                }
            }
        }
    } else if let Some(r) = s.strip_prefix("position ") {
        let a = digits(r);
        if a > 0 {
            return "position ".len() + a;
        }
    }
    0
}

/// The name closest to `word` by edit distance, if close enough to be a likely typo.
fn closest<'a>(word: &str, names: &'a [String]) -> Option<&'a str> {
    names
        .iter()
        .map(|n| (edit_distance(word, n), n))
        .filter(|(d, n)| *d <= 2.max(n.len() / 4) && *d < n.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_stripped_from_serde_messages() {
        assert_eq!(
            strip_positions("a: bad at line 3 column 4, while x at line 1 column 1"),
            "a: bad, while x"
        );
        assert_eq!(strip_positions("look at me"), "look at me");
    }

    #[test]
    fn serde_wording_is_turned_into_what_and_expected() {
        assert_eq!(
            reword("invalid type: sequence, expected struct RawHealth"),
            "invalid type: sequence (expected a map)"
        );
        assert_eq!(
            reword("invalid type: map, expected a string, number or boolean"),
            "invalid type: map (expected a string, number or boolean)"
        );
    }

    #[test]
    fn likely_typos_get_a_suggestion() {
        let names: Vec<String> = ["health", "image", "env"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(closest("helth", &names), Some("health"));
        assert_eq!(closest("zzzzzz", &names), None);
    }
}
