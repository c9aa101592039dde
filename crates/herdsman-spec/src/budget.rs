//! The bounds a spec must stay within before serde builds anything from it: its size, its
//! nesting, and the size of the document once every alias is expanded.
//!
//! Measured on yaml-rust2's parser events, as they stream past, so that a hostile document
//! is refused after reading only as much of it as it takes to cross a bound: no raw-text
//! guess (brackets in strings and comments do not count), and no alias is ever expanded.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::Event;

/// Largest spec accepted, in bytes (8 MiB). Checked before the file is read whole.
pub const MAX_SPEC_BYTES: usize = 8 * 1024 * 1024;

/// Deepest nesting of maps and lists. The spec itself nests 7 levels.
pub const MAX_DEPTH: usize = 64;

/// Most nodes (scalars, maps, lists) the document may hold with every alias expanded. A
/// large real spec has a few thousand.
pub const MAX_NODES: u64 = 100_000;

/// Most scalar text the document may hold with every alias expanded, in bytes (16 MiB):
/// more than any document under [`MAX_SPEC_BYTES`] holds without aliases.
pub const MAX_EXPANDED_BYTES: u64 = 16 * 1024 * 1024;

/// The size of a node with everything under it, aliases expanded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Size {
    nodes: u64,
    bytes: u64,
}

impl Size {
    fn add(&mut self, other: Size) {
        self.nodes = self.nodes.saturating_add(other.nodes);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

/// A map or list being read.
#[derive(Debug)]
struct Open {
    /// yaml-rust2's anchor id, 0 when the node has no anchor.
    anchor: usize,
    size: Size,
}

/// Which bound a document crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exceeded {
    /// Nested deeper than [`MAX_DEPTH`].
    Depth,
    /// More than [`MAX_NODES`] nodes, aliases expanded.
    Nodes { aliased: bool },
    /// More than [`MAX_EXPANDED_BYTES`] of text, aliases expanded.
    Bytes,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exceeded::Depth => write!(
                f,
                "nesting too deep (expected at most {MAX_DEPTH} levels of maps and lists)"
            ),
            Exceeded::Nodes { aliased: false } => write!(
                f,
                "too many values: more than {MAX_NODES} scalars, maps and lists (expected a smaller spec)"
            ),
            Exceeded::Nodes { aliased: true } => write!(
                f,
                "aliases expand the document past {MAX_NODES} scalars, maps and lists (expected fewer or smaller aliases)"
            ),
            Exceeded::Bytes => write!(
                f,
                "aliases expand the document past {} MiB of text (expected fewer or smaller aliases)",
                MAX_EXPANDED_BYTES / (1024 * 1024)
            ),
        }
    }
}

/// Running totals over a stream of events (every document of it: serde_yaml reads a second
/// document before rejecting it).
#[derive(Debug, Default)]
pub(crate) struct Budget {
    total: Size,
    open: Vec<Open>,
    /// The expanded size of each anchored node seen complete.
    anchors: HashMap<usize, Size>,
}

impl Budget {
    /// Account for one event; the bound it crosses, if it does.
    pub(crate) fn observe(&mut self, event: &Event) -> Result<(), Exceeded> {
        match event {
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                if self.open.len() >= MAX_DEPTH {
                    return Err(Exceeded::Depth);
                }
                self.open.push(Open {
                    anchor: *anchor,
                    size: Size { nodes: 1, bytes: 0 },
                });
                self.grow(Size { nodes: 1, bytes: 0 }, false)
            }
            Event::MappingEnd | Event::SequenceEnd => {
                if let Some(done) = self.open.pop() {
                    if done.anchor != 0 {
                        self.anchors.insert(done.anchor, done.size);
                    }
                    if let Some(parent) = self.open.last_mut() {
                        parent.size.add(done.size);
                    }
                }
                Ok(())
            }
            Event::Scalar(text, _, anchor, _) => {
                let size = Size {
                    nodes: 1,
                    bytes: text.len() as u64,
                };
                if *anchor != 0 {
                    self.anchors.insert(*anchor, size);
                }
                self.add_to_parent(size);
                self.grow(size, false)
            }
            Event::Alias(id) => {
                // An alias to a node still open (a recursive alias) is not expanded by
                // serde_yaml: it fails on it. Count it as one node.
                let size = self
                    .anchors
                    .get(id)
                    .copied()
                    .unwrap_or(Size { nodes: 1, bytes: 0 });
                self.add_to_parent(size);
                self.grow(size, true)
            }
            _ => Ok(()),
        }
    }

    /// Nodes seen so far, aliases expanded.
    pub(crate) fn nodes(&self) -> u64 {
        self.total.nodes
    }

    fn add_to_parent(&mut self, size: Size) {
        if let Some(parent) = self.open.last_mut() {
            parent.size.add(size);
        }
    }

    fn grow(&mut self, size: Size, aliased: bool) -> Result<(), Exceeded> {
        self.total.add(size);
        if self.total.nodes > MAX_NODES {
            return Err(Exceeded::Nodes { aliased });
        }
        if self.total.bytes > MAX_EXPANDED_BYTES {
            return Err(Exceeded::Bytes);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use yaml_rust2::parser::Parser;

    use super::*;

    /// Feed `source` through a budget: the bound crossed, if any, and the nodes counted.
    fn measure(source: &str) -> (Option<Exceeded>, u64) {
        let mut budget = Budget::default();
        let mut parser = Parser::new_from_str(source);
        loop {
            match parser.next_token() {
                Ok((Event::StreamEnd, _)) | Err(_) => return (None, budget.nodes()),
                Ok((ev, _)) => {
                    if let Err(e) = budget.observe(&ev) {
                        return (Some(e), budget.nodes());
                    }
                }
            }
        }
    }

    #[test]
    fn nodes_are_counted_with_aliases_expanded() {
        // Root map, key a, list and its 3 scalars, key b, the alias (4 nodes again).
        assert_eq!(measure("a: &x [1, 2, 3]\nb: *x\n"), (None, 11));
    }

    #[test]
    fn nested_aliases_multiply_and_are_refused_before_expansion() {
        let mut s = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..9 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("b{}", i - 1)
            };
            let refs = vec![format!("*{prev}"); 10].join(", ");
            s.push_str(&format!("b{i}: &b{i} [{refs}]\n"));
        }
        let (over, nodes) = measure(&s);
        assert_eq!(over, Some(Exceeded::Nodes { aliased: true }));
        assert!(nodes <= MAX_NODES * 11, "{nodes}");
    }

    #[test]
    fn an_alias_fan_of_a_long_string_is_refused_by_its_bytes() {
        let big = "x".repeat(1 << 20);
        let refs = vec!["*s"; 20].join(", ");
        let (over, _) = measure(&format!("s: &s {big}\nt: [{refs}]\n"));
        assert_eq!(over, Some(Exceeded::Bytes));
    }

    #[test]
    fn depth_counts_maps_and_lists_not_brackets_in_text() {
        let hidden = format!(
            "# {}\na: \"{}\"\nb: [[1]]\n",
            "[".repeat(500),
            "]".repeat(500)
        );
        assert_eq!(measure(&hidden).0, None);
        let deep = format!("{}1\n", "- ".repeat(MAX_DEPTH + 1));
        assert_eq!(measure(&deep).0, Some(Exceeded::Depth));
        let at_limit = format!("{}1\n", "- ".repeat(MAX_DEPTH));
        assert_eq!(measure(&at_limit).0, None);
    }
}
