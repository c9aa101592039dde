//! Text from a spec, a state file, the API or a workload, made safe to print: a service
//! name or a log line must not move the cursor, retitle the window or clear the screen.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every control character escaped (`\n`, `\r`, `\t`, `\x1b`, `\u{9b}`, and
/// the bidirectional overrides that reorder what is shown), so that it prints as the one
/// line of visible characters it is. Backslashes are left alone: escaping twice changes
/// nothing.
pub(crate) fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Each line of `text` escaped, line breaks kept: for a block of lines this program wrote
/// around untrusted values.
pub(crate) fn escape_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match line.strip_suffix('\n') {
            Some(l) => {
                out.push_str(&escape(l));
                out.push('\n');
            }
            None => out.push_str(&escape(line)),
        }
    }
    out
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_borrowed() {
        assert!(matches!(escape("web/0 is healthy"), Cow::Borrowed(_)));
        assert_eq!(
            escape("a\x1b]0;pwned\x07b\n\u{9b}2J\u{202e}x"),
            "a\\x1b]0;pwned\\x07b\\n\\u{9b}2J\\u{202e}x"
        );
        assert_eq!(escape("tab\there\r\x7f"), "tab\\there\\r\\x7f");
        assert_eq!(escape("ünïcödé ✓"), "ünïcödé ✓");
    }

    #[test]
    fn escaping_twice_changes_nothing() {
        let once = escape("a\x1b[2Jb").into_owned();
        assert_eq!(escape(&once), once);
    }

    #[test]
    fn blocks_keep_their_line_breaks() {
        assert_eq!(escape_lines("a\x1b\nb\r\n"), "a\\x1b\nb\\r\n");
        assert_eq!(escape_lines("x\ny"), "x\ny");
    }
}
