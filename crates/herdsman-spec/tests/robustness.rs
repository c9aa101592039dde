//! Bad input never panics: arbitrary bytes, YAML-ish noise and randomly mutated valid specs
//! go through the parser and the validator; whatever they accept survives a round trip.
//! Hostile shapes (alias fans, deep nesting hidden among brackets in strings and comments,
//! huge scalars) are answered quickly, whatever their size.

use std::path::Path;
use std::time::{Duration, Instant};

use herdsman_spec::{parse_str, to_yaml, SpecError};
use proptest::prelude::*;

const SHOP: &str = include_str!("../../../examples/shop.yaml");

/// Parse, and check the invariants every outcome must hold.
fn check(source: &str) -> Result<(), TestCaseError> {
    match parse_str(source, "fuzz.yaml", Path::new("/srv")) {
        Ok(d) => {
            let yaml = to_yaml(&d);
            let again = parse_str(&yaml, "again.yaml", Path::new("/elsewhere"));
            prop_assert!(again.is_ok(), "to_yaml output rejected: {again:?}\n{yaml}");
            prop_assert_eq!(again.ok(), Some(d));
        }
        Err(SpecError::Invalid { problems }) => {
            prop_assert!(!problems.is_empty());
            // YAML's line breaks: \n, \r\n, and a lone \r.
            let lines = source.replace("\r\n", "\n").matches(['\n', '\r']).count() + 2;
            for p in &problems {
                prop_assert!(
                    p.line >= 1 && p.line <= lines.max(1),
                    "{} (of {} lines)",
                    p,
                    lines
                );
                prop_assert!(p.column >= 1, "{}", p);
                prop_assert!(!p.path.is_empty() && !p.message.is_empty(), "{}", p);
                prop_assert!(
                    !p.to_string().contains('\n') || p.message.contains('\n'),
                    "{}",
                    p
                );
            }
        }
        Err(e) => prop_assert!(false, "parse_str never fails to read: {e}"),
    }
    Ok(())
}

/// One edit of a spec's text.
#[derive(Debug, Clone)]
enum Edit {
    Delete { at: usize, len: usize },
    Insert { at: usize, text: String },
    ReplaceToken { nth: usize, with: String },
    DuplicateLine { nth: usize },
    SwapLines { a: usize, b: usize },
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("70000".to_string()),
        Just("100001".to_string()),
        Just("${PORT}".to_string()),
        Just("${PORT_NOPE}".to_string()),
        Just("${".to_string()),
        Just("exec".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("~".to_string()),
        Just("\"\"".to_string()),
        Just("1e400".to_string()),
        Just(".nan".to_string()),
        Just("0s".to_string()),
        Just("9999999days".to_string()),
        Just("SIGFOO".to_string()),
        Just("a: b".to_string()),
        Just("&x".to_string()),
        Just("*x".to_string()),
        Just("!tag".to_string()),
        Just("db".to_string()),
        Just("api".to_string()),
        "[a-z_]{1,8}",
        "[ -~]{0,6}",
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Edit::Delete { at, len }),
        (
            any::<usize>(),
            prop_oneof![token(), "[ \n:\\-{}\\[\\],#'\"]{1,4}"]
        )
            .prop_map(|(at, text)| Edit::Insert { at, text }),
        (any::<usize>(), token()).prop_map(|(nth, with)| Edit::ReplaceToken { nth, with }),
        any::<usize>().prop_map(|nth| Edit::DuplicateLine { nth }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines { a, b }),
    ]
}

fn apply(source: &str, edit: &Edit) -> String {
    let chars: Vec<char> = source.chars().collect();
    let n = chars.len().max(1);
    match edit {
        Edit::Delete { at, len } => {
            let a = at % n;
            let b = (a + len).min(chars.len());
            chars[..a.min(chars.len())]
                .iter()
                .chain(&chars[b..])
                .collect()
        }
        Edit::Insert { at, text } => {
            let a = (at % n).min(chars.len());
            let mut s: String = chars[..a].iter().collect();
            s.push_str(text);
            s.extend(&chars[a..]);
            s
        }
        Edit::ReplaceToken { nth, with } => {
            // Tokens: maximal runs of non-space, non-punctuation characters.
            let is_tok = |c: char| !c.is_whitespace() && !":{}[],#\"".contains(c);
            let mut spans = Vec::new();
            let mut start = None;
            for (i, c) in chars.iter().enumerate() {
                match (is_tok(*c), start) {
                    (true, None) => start = Some(i),
                    (false, Some(s)) => {
                        spans.push((s, i));
                        start = None;
                    }
                    _ => {}
                }
            }
            if let Some(s) = start {
                spans.push((s, chars.len()));
            }
            if spans.is_empty() {
                return source.to_string();
            }
            let (a, b) = spans[nth % spans.len()];
            let mut s: String = chars[..a].iter().collect();
            s.push_str(with);
            s.extend(&chars[b..]);
            s
        }
        Edit::DuplicateLine { nth } => {
            let mut lines: Vec<&str> = source.lines().collect();
            if !lines.is_empty() {
                let i = nth % lines.len();
                lines.insert(i, lines[i]);
            }
            lines.join("\n")
        }
        Edit::SwapLines { a, b } => {
            let mut lines: Vec<&str> = source.lines().collect();
            if !lines.is_empty() {
                let n = lines.len();
                lines.swap(a % n, b % n);
            }
            lines.join("\n")
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn arbitrary_bytes_never_panic_the_parser_or_the_validator(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        check(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn yaml_like_noise_never_panics(source in "[a-z0-9 \n:\\-{}\\[\\],#&*!|>'\"$.~]{0,400}") {
        check(&source)?;
    }

    #[test]
    fn mutated_valid_specs_never_panic_and_what_is_accepted_round_trips(edits in proptest::collection::vec(edit(), 1..6)) {
        let mut source = SHOP.to_string();
        for e in &edits {
            source = apply(&source, e);
        }
        check(&source)?;
    }
}

/// The answer came within the second `validate` is allowed, and [`check`] holds.
fn check_quickly(source: &str) -> Result<(), TestCaseError> {
    // Wall time of synchronous parsing: no timer involved, the spec crate has no tokio.
    #[allow(clippy::disallowed_methods)]
    let started = Instant::now();
    let _ = parse_str(source, "timed.yaml", Path::new("/srv"));
    let took = started.elapsed();
    prop_assert!(
        took < Duration::from_secs(1),
        "{} bytes took {took:?}",
        source.len()
    );
    check(source)
}

/// Where a hostile piece goes in a valid spec: an argument, an env value, a new top-level
/// key, or a comment.
fn embed(piece: &str, slot: usize) -> String {
    let (args, env, extra) = match slot % 3 {
        0 => (piece, "x", ""),
        1 => ("x", piece, ""),
        _ => ("x", "x", piece),
    };
    format!(
        "version: v1\ndeployment: shop\nservices:\n  api:\n    command: {{entrypoint: [./api], args: [{args}]}}\n    env: {{A: {env}}}\n{extra}\n"
    )
}

/// An anchored node (a long string or a list) and a fan of aliases to it, nested in
/// levels of fans.
fn alias_fan() -> impl Strategy<Value = String> {
    (1usize..200_000, 1usize..3_000, 1usize..4, any::<usize>()).prop_map(
        |(len, fan, levels, slot)| {
            let mut doc = format!("&a0 \"{}\"", "x".repeat(len));
            for level in 1..levels {
                let refs = vec![format!("*a{}", level - 1); fan.min(50)].join(", ");
                doc = format!("[{doc}, &a{level} [{refs}]]");
            }
            let refs = vec![format!("*a{}", levels - 1); fan].join(", ");
            embed(&format!("[{doc}, {refs}]"), slot)
        },
    )
}

/// Deep flow or block nesting, behind closing brackets in a quoted string or a comment.
fn hidden_nesting() -> impl Strategy<Value = String> {
    (1usize..60_000, any::<bool>(), any::<bool>(), any::<usize>()).prop_map(
        |(depth, in_comment, flow, slot)| {
            let closers = "]}".repeat(depth);
            let cover = if in_comment {
                format!("# {closers}\n")
            } else {
                format!("cover: '{closers}'\n")
            };
            let nest = if flow {
                format!(
                    "deep: {}1{}\n",
                    "[{a: ".repeat(depth / 2),
                    "}]".repeat(depth / 2)
                )
            } else {
                (0..depth.min(5_000))
                    .map(|d| format!("{}- \n", "  ".repeat(d)))
                    .collect()
            };
            format!("{cover}{}", embed(&format!("\n{nest}"), slot.max(2)))
        },
    )
}

/// A scalar of up to 8 MiB and a bit more, plain, quoted or as a block.
fn huge_scalar() -> impl Strategy<Value = String> {
    (1usize..(8 << 20) + 4096, 0usize..3, any::<usize>()).prop_map(|(len, style, slot)| {
        let text = "y".repeat(len);
        let piece = match style {
            0 => text,
            1 => format!("\"{text}\""),
            _ => format!("|\n        {text}"),
        };
        embed(&piece, slot)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn alias_fans_are_answered_quickly(source in alias_fan()) {
        check_quickly(&source)?;
    }

    #[test]
    fn nesting_hidden_among_brackets_in_text_is_answered_quickly(source in hidden_nesting()) {
        check_quickly(&source)?;
    }

}

proptest! {
    // Each case parses up to 8 MiB three times (and a round trip): few cases.
    #![proptest_config(ProptestConfig::with_cases(5))]

    #[test]
    fn huge_scalars_are_answered_quickly(source in huge_scalar()) {
        check_quickly(&source)?;
    }
}

#[test]
fn deeply_nested_input_is_an_error_not_a_stack_overflow() {
    for source in [
        "[".repeat(100_000),
        "{a: ".repeat(50_000),
        "- ".repeat(50_000),
    ] {
        check(&source).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn an_alias_bomb_is_an_error_not_an_explosion() {
    let mut s = String::from("a: &a [x, x, x, x, x, x, x, x, x]\n");
    for i in 0..9 {
        let prev = if i == 0 {
            "a".to_string()
        } else {
            format!("b{}", i - 1)
        };
        s.push_str(&format!("b{i}: &b{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    check(&s).unwrap_or_else(|e| panic!("{e}"));
}
