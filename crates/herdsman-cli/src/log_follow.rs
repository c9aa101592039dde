//! Following a replica's output for `herdsman logs -f`. The runtime keeps each
//! incarnation's last lines and hands out tails, not a stream, so a follower reads the
//! tail again on a short interval and sends what is new: the lines after the longest
//! overlap between the end of the previous tail and the start of the new one. A new
//! incarnation (the replica restarted) is read the same way: where its output goes on in
//! the same log file (the process runtime's replica-owned files) the overlap skips what
//! was sent already; where it starts empty (an in-memory tail) nothing overlaps and it is
//! sent from its first line.
//!
//! Lines are neither repeated nor lost while fewer than [`WINDOW`] lines are printed
//! between two reads and the window is not made of one line repeated (a tail of
//! identical lines that does not change length cannot show that a line was added).

use herdsman_runtime::ContainerId;

/// Lines read each time: the most a replica may print between two reads without any
/// being skipped.
pub(crate) const WINDOW: usize = 2000;

/// The lines of `next` that `prev` did not have: `next` after the longest suffix of
/// `prev` that is also a prefix of `next`.
pub(crate) fn new_lines<'a>(prev: &[String], next: &'a [String]) -> &'a [String] {
    let longest = prev.len().min(next.len());
    for k in (1..=longest).rev() {
        if prev[prev.len() - k..] == next[..k] {
            return &next[k..];
        }
    }
    next
}

/// One followed replica: the incarnation seen last and its last tail.
#[derive(Debug, Default)]
pub(crate) struct Follower {
    container: Option<ContainerId>,
    seen: Vec<String>,
}

impl Follower {
    /// A follower that has already shown `seen` of `container`.
    pub(crate) fn new(container: Option<ContainerId>, seen: Vec<String>) -> Follower {
        Follower { container, seen }
    }

    /// The lines to send given the replica's current incarnation and its tail now.
    pub(crate) fn advance(
        &mut self,
        container: Option<ContainerId>,
        tail: Vec<String>,
    ) -> Vec<String> {
        if container.is_none() {
            // Between incarnations: nothing to read, and the old tail stays the reference.
            return Vec::new();
        }
        let fresh = new_lines(&self.seen, &tail).to_vec();
        self.container = container;
        self.seen = tail;
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_the_lines_after_the_overlap_are_new() {
        let table: [(&[&str], &[&str], &[&str]); 6] = [
            (&[], &["a", "b"], &["a", "b"]),
            (&["a", "b"], &["a", "b"], &[]),
            (&["a", "b", "c"], &["b", "c", "d"], &["d"]),
            (&["a", "b"], &["a", "b", "c", "d"], &["c", "d"]),
            (&["a", "b"], &["x", "y"], &["x", "y"]),
            // A repeated line is not mistaken for the overlap when a longer one exists.
            (&["x", "y", "x"], &["y", "x", "x", "z"], &["x", "z"]),
        ];
        for (prev, next, want) in table {
            assert_eq!(
                new_lines(&lines(prev), &lines(next)),
                lines(want).as_slice(),
                "{prev:?} -> {next:?}"
            );
        }
    }

    #[test]
    fn a_new_incarnation_is_followed_from_its_first_line() {
        let first = ContainerId {
            deployment: "shop".into(),
            service: "web".into(),
            replica: 0,
            generation: 0,
        };
        let second = ContainerId {
            generation: 1,
            ..first.clone()
        };
        let mut f = Follower::new(Some(first.clone()), lines(&["a"]));
        assert_eq!(f.advance(Some(first), lines(&["a", "b"])), lines(&["b"]));
        assert_eq!(f.advance(None, Vec::new()), Vec::<String>::new());
        assert_eq!(
            f.advance(Some(second.clone()), lines(&["a"])),
            lines(&["a"])
        );
        assert_eq!(f.advance(Some(second), lines(&["a", "a"])), lines(&["a"]));
    }
}
