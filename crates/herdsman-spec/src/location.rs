//! Where each field sits in the YAML text: a map from dotted path to line and column, so
//! that problems found after parsing can point at the line to fix.
//!
//! Built from `yaml-rust2`'s event parser, independently of serde: it sees the document as
//! written, including duplicate keys, and it keeps what it has mapped when the document
//! turns out to be malformed halfway.

use std::collections::{HashMap, HashSet};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::budget::{Budget, Exceeded};

/// The path used for the document as a whole.
pub(crate) const DOCUMENT: &str = "<document>";

/// A 1-based position in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Pos {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

impl Pos {
    pub(crate) const START: Pos = Pos { line: 1, column: 1 };

    fn from_marker(m: Marker) -> Pos {
        // yaml-rust2 lines are 1-based and columns 0-based.
        Pos {
            line: m.line().max(1),
            column: m.col() + 1,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Where the key naming this node is, for nodes inside a mapping.
    key: Option<Pos>,
    /// Where the node's value starts (a block mapping: its first key).
    value: Pos,
    /// A mapping or a sequence, located by its key when it has one.
    container: bool,
}

/// Path → position of every node of the first document.
#[derive(Debug, Default)]
pub(crate) struct Locations {
    entries: HashMap<String, Entry>,
    /// Position of the second occurrence of a key seen twice in one mapping.
    duplicates: HashMap<String, Pos>,
    /// The bound the document crossed, and where: it must not reach serde_yaml.
    exceeded: Option<(Pos, Exceeded)>,
    /// The syntax error that ended the scan, and where.
    syntax: Option<(Pos, String)>,
    /// Nodes in the document, aliases expanded (up to where the scan stopped).
    nodes: u64,
    /// Where the last event the budget measured was.
    measured: Pos,
}

impl Locations {
    /// Map every node of `source`, and measure it against the [`Budget`]. Never fails: a
    /// malformed document, or one that crosses a bound, yields the nodes before that
    /// point and says what stopped the scan.
    pub(crate) fn scan(source: &str) -> Locations {
        let mut recv = Recorder::default();
        let mut budget = Budget::default();
        let mut parser = Parser::new_from_str(source);
        // Pull events one by one: `Parser::load` recurses once per nesting level and
        // overflows the stack on hostile input. Every document is measured (serde_yaml
        // reads a second one before refusing it); only the first is mapped.
        loop {
            match parser.next_token() {
                Ok((Event::StreamEnd, _)) => break,
                Ok((ev, mark)) => {
                    recv.locations.measured = Pos::from_marker(mark);
                    if let Err(over) = budget.observe(&ev) {
                        recv.locations.exceeded = Some((Pos::from_marker(mark), over));
                        break;
                    }
                    recv.on_event(ev, mark);
                }
                Err(e) => {
                    let at = Pos::from_marker(*e.marker());
                    // yaml-rust2 counts flow nesting in a byte and refuses past 255.
                    if e.info() == "recursion limit exceeded" {
                        recv.locations.exceeded = Some((at, Exceeded::Depth));
                    } else {
                        recv.locations.syntax = Some((at, e.info().to_string()));
                    }
                    break;
                }
            }
        }
        recv.locations.nodes = budget.nodes();
        recv.locations
    }

    /// The position to report for `path`: where its value starts (for a mapping or a
    /// sequence, its key); for a field that is not there, the key of its nearest ancestor
    /// that is; the document start otherwise.
    pub(crate) fn find(&self, path: &str) -> Pos {
        if let Some(e) = self.entries.get(path) {
            return match (e.container, e.key) {
                (true, Some(k)) => k,
                _ => e.value,
            };
        }
        let mut p = path;
        while let Some(parent) = parent(p) {
            if let Some(e) = self.entries.get(parent) {
                return e.key.unwrap_or(e.value);
            }
            p = parent;
        }
        Pos::START
    }

    /// Where the key of `path` is, falling back to [`Locations::find`].
    pub(crate) fn find_key(&self, path: &str) -> Pos {
        match self.entries.get(path).and_then(|e| e.key) {
            Some(k) => k,
            None => self.find(path),
        }
    }

    /// The bound the document crossed, and where, if it did.
    pub(crate) fn exceeded(&self) -> Option<(Pos, Exceeded)> {
        self.exceeded
    }

    /// The syntax error that stopped the scan, and where, if there was one.
    pub(crate) fn syntax(&self) -> Option<(Pos, &str)> {
        self.syntax.as_ref().map(|(p, m)| (*p, m.as_str()))
    }

    /// Nodes in the document, aliases expanded.
    pub(crate) fn nodes(&self) -> u64 {
        self.nodes
    }

    /// Where the last event measured by the budget was: the text after it was scanned
    /// but not measured.
    pub(crate) fn measured(&self) -> Pos {
        self.measured
    }

    /// Where the second occurrence of a duplicated key is.
    pub(crate) fn duplicate(&self, path: &str) -> Option<Pos> {
        self.duplicates.get(path).copied()
    }

    /// The path of the last mapping or sequence starting at or before `pos`: what was
    /// being read when serde_yaml reports an error without a path (a syntax error).
    pub(crate) fn path_before(&self, pos: Pos) -> Option<&str> {
        self.entries
            .iter()
            .filter(|(_, e)| e.container && e.value <= pos)
            .max_by(|(pa, a), (pb, b)| a.value.cmp(&b.value).then(pa.len().cmp(&pb.len())))
            .map(|(p, _)| p.as_str())
            .filter(|p| !p.is_empty())
    }
}

/// The parent of a dotted path: `a.b[2]` → `a.b`, `a.b` → `a`, `a` → `` (the root).
pub(crate) fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    if path.ends_with(']') {
        if let Some(i) = path.rfind('[') {
            return Some(&path[..i]);
        }
    }
    Some(match path.rfind('.') {
        Some(i) => &path[..i],
        None => "",
    })
}

/// `base` + `.key`, or `key` at the root.
pub(crate) fn child(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

/// `base` + `[index]`.
pub(crate) fn item(base: &str, index: usize) -> String {
    format!("{base}[{index}]")
}

enum Frame {
    Map {
        path: String,
        /// The key whose value comes next, with its position; `None` while a key is due.
        key: Option<(String, Pos)>,
        seen: HashSet<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
    /// A complex (non-scalar) key with everything inside it: not addressable by path.
    Opaque {
        depth: usize,
        key: bool,
    },
}

#[derive(Default)]
struct Recorder {
    locations: Locations,
    stack: Vec<Frame>,
    /// Only the first document is mapped; serde_yaml rejects any further one.
    done: bool,
}

impl Recorder {
    /// Where the next node goes: its path and the position of its key. `None` when it is a
    /// key itself (handled by the caller) or not addressable.
    fn slot(&mut self) -> Option<(String, Option<Pos>)> {
        match self.stack.last_mut() {
            None => Some((String::new(), None)),
            Some(Frame::Map {
                path,
                key: Some((k, kpos)),
                ..
            }) => Some((child(path, k), Some(*kpos))),
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Seq { path, next }) => Some((item(path, *next), None)),
            Some(Frame::Opaque { .. }) => None,
        }
    }

    /// A complete value was read in the current container: advance it.
    fn advance(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { next, .. }) => *next += 1,
            _ => {}
        }
    }

    fn record(&mut self, path: &str, key: Option<Pos>, value: Pos, container: bool) {
        self.locations
            .entries
            .entry(path.to_string())
            .or_insert(Entry {
                key,
                value,
                container,
            });
    }

    fn awaiting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }

    fn open(&mut self, mark: Marker, map: bool) {
        // The budget stops the scan past its depth, which also bounds the paths (they
        // grow with depth).
        if let Some(Frame::Opaque { depth, .. }) = self.stack.last_mut() {
            *depth += 1;
            return;
        }
        if self.awaiting_key() {
            let key = self.awaiting_key();
            self.stack.push(Frame::Opaque { depth: 1, key });
            return;
        }
        let pos = Pos::from_marker(mark);
        let Some((path, key)) = self.slot() else {
            return;
        };
        self.record(&path, key, pos, true);
        self.stack.push(if map {
            Frame::Map {
                path,
                key: None,
                seen: HashSet::new(),
            }
        } else {
            Frame::Seq { path, next: 0 }
        });
    }

    fn close(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Opaque { depth, .. }) if *depth > 1 => *depth -= 1,
            Some(Frame::Opaque { key: true, .. }) => {
                self.stack.pop();
                // The complex key is complete: its value follows under an unusable name.
                if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                    *key = Some(("?".to_string(), Pos::START));
                }
            }
            Some(_) => {
                self.stack.pop();
                self.advance();
            }
            None => {}
        }
    }

    fn scalar(&mut self, text: String, mark: Marker) {
        let pos = Pos::from_marker(mark);
        match self.stack.last_mut() {
            Some(Frame::Opaque { .. }) => {}
            Some(Frame::Map {
                path, key, seen, ..
            }) if key.is_none() => {
                if seen.is_empty() {
                    // A block mapping's start mark lies after its first key: use the key.
                    if let Some(e) = self.locations.entries.get_mut(path.as_str()) {
                        e.value = e.value.min(pos);
                    }
                }
                if !seen.insert(text.clone()) {
                    let dup = child(path, &text);
                    self.locations.duplicates.entry(dup).or_insert(pos);
                }
                *key = Some((text, pos));
            }
            _ => {
                if let Some((path, key)) = self.slot() {
                    self.record(&path, key, pos, false);
                }
                self.advance();
            }
        }
    }
}

impl MarkedEventReceiver for Recorder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.done {
            return;
        }
        match ev {
            Event::MappingStart(..) => self.open(mark, true),
            Event::SequenceStart(..) => self.open(mark, false),
            Event::MappingEnd | Event::SequenceEnd => self.close(),
            Event::Scalar(text, ..) => self.scalar(text, mark),
            Event::Alias(_) => self.scalar(String::new(), mark),
            Event::DocumentEnd => self.done = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::MAX_DEPTH;

    const DOC: &str = "\
version: v1
services:
  api:
    health:
      check:
        type: exec
    endpoints:
      - {name: http, port: 80}
      - name: admin
        port: 81
";

    fn at(line: usize, column: usize) -> Pos {
        Pos { line, column }
    }

    #[test]
    fn values_are_located_at_their_first_character() {
        let l = Locations::scan(DOC);
        assert_eq!(l.find("version"), at(1, 10));
        assert_eq!(l.find("services.api.health.check.type"), at(6, 15));
        assert_eq!(l.find("services.api.endpoints[0].port"), at(8, 28));
        assert_eq!(l.find("services.api.endpoints[1].name"), at(9, 15));
        assert_eq!(l.find("services.api.endpoints[1].port"), at(10, 15));
    }

    #[test]
    fn absent_fields_point_at_the_key_of_their_nearest_ancestor() {
        let l = Locations::scan(DOC);
        assert_eq!(l.find("services.api.health.interval"), at(4, 5));
        assert_eq!(l.find("services.api.health.check.url"), at(5, 7));
        assert_eq!(l.find("nothing.here"), at(1, 1));
        assert_eq!(l.find("services.api"), at(3, 3));
        assert_eq!(l.find("services.api.endpoints[1]"), at(9, 9));
        assert_eq!(l.find("services.api.endpoints[0]"), at(8, 9));
        assert_eq!(l.find_key("services.api.health"), at(4, 5));
    }

    #[test]
    fn duplicate_keys_remember_the_second_occurrence() {
        let l = Locations::scan("a: 1\nb: 2\na: 3\n");
        assert_eq!(l.duplicate("a"), Some(at(3, 1)));
        assert_eq!(l.find("a"), at(1, 4));
    }

    #[test]
    fn a_malformed_document_keeps_what_came_before_the_error() {
        let l = Locations::scan("version: v1\ndeployment: [x\n");
        assert_eq!(l.find("version"), at(1, 10));
        assert_eq!(l.path_before(at(2, 20)), Some("deployment"));
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_flagged_where_it_starts() {
        let deep_at = |source: &str| match Locations::scan(source).exceeded() {
            Some((pos, Exceeded::Depth)) => Some(pos),
            _ => None,
        };
        let deep = format!("a:\n{}1\n", "  - ".repeat(100));
        assert_eq!(deep_at(&deep), Some(at(2, 3 + 4 * (MAX_DEPTH - 1))));
        let block = format!("{}1\n", "- ".repeat(100));
        assert_eq!(deep_at(&block), Some(at(1, 1 + 2 * MAX_DEPTH)));
        assert_eq!(deep_at("a: [[1]]\n"), None);
        assert!(deep_at(&"[".repeat(100_000)).is_some());
        assert!(deep_at(&"{a: ".repeat(100_000)).is_some());
    }

    #[test]
    fn brackets_in_strings_and_comments_are_not_nesting() {
        let banner = format!(
            "# {}\nversion: v1\nargs: [\"{}\", '{}']\n",
            "[[[".repeat(100),
            "{".repeat(65),
            "]".repeat(300)
        );
        let l = Locations::scan(&banner);
        assert!(l.exceeded().is_none() && l.syntax().is_none());
        assert_eq!(l.find("args[1]"), at(3, 77));
    }

    #[test]
    fn a_syntax_error_is_kept_with_its_position() {
        let l = Locations::scan("a: [1, 2\nb: 3\n");
        let (pos, message) = l.syntax().expect("a syntax error");
        assert_eq!(pos.line, 2);
        assert!(!message.is_empty());
    }

    #[test]
    fn parents_of_paths_are_found_through_dots_and_brackets() {
        assert_eq!(parent("a.b[2]"), Some("a.b"));
        assert_eq!(parent("a.b"), Some("a"));
        assert_eq!(parent("a"), Some(""));
        assert_eq!(parent(""), None);
    }
}
