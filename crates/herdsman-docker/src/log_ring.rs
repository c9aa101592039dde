//! A container's output tail: the last lines of its log stream, bounded by line count and
//! bytes, fed by one follower task per container.

use bollard::query_parameters::LogsOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;

/// The last lines a container printed, bounded by lines and bytes: the process
/// runtime's ring, shared.
pub(crate) use herdsman_runtime::LogBuffer as LogRing;

/// Splits a byte stream into lines for a ring, bounding an unterminated line.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feed a chunk; complete lines go to `ring`.
    pub(crate) fn feed(&mut self, chunk: &[u8], ring: &LogRing, max_line: usize) {
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            match piece.strip_suffix(b"\n") {
                Some(line) => {
                    self.partial.extend_from_slice(line);
                    self.flush(ring);
                }
                None => self.partial.extend_from_slice(piece),
            }
        }
        if self.partial.len() > max_line.max(1) {
            self.flush(ring);
        }
    }

    /// Push what is left as a last line.
    pub(crate) fn flush(&mut self, ring: &LogRing) {
        if self.partial.is_empty() {
            return;
        }
        let bytes = self.partial.strip_suffix(b"\r").unwrap_or(&self.partial);
        ring.push(String::from_utf8_lossy(bytes).into_owned());
        self.partial.clear();
    }
}

/// Follow a container's stdout and stderr into `ring` from its `tail` last lines (`all`
/// from its start), until the stream ends: the container stopped or the daemon went away.
pub(crate) async fn follow(
    docker: Docker,
    name: String,
    ring: std::sync::Arc<LogRing>,
    tail: String,
    max_line: usize,
) {
    let options = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .tail(&tail)
        .build();
    let mut stream = docker.logs(&name, Some(options));
    let mut lines = LineSplitter::default();
    while let Some(Ok(chunk)) = stream.next().await {
        lines.feed(&chunk.into_bytes(), &ring, max_line);
    }
    lines.flush(&ring);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_lines_within_both_bounds() {
        let ring = LogRing::new(3, 1024);
        for i in 0..10 {
            ring.push(format!("line {i}"));
        }
        assert_eq!(ring.tail(10), vec!["line 7", "line 8", "line 9"]);
        let ring = LogRing::new(100, 10);
        for s in ["aaaa", "bbbb", "cccc"] {
            ring.push(s.into());
        }
        assert_eq!(ring.tail(10), vec!["bbbb", "cccc"]);
    }

    #[test]
    fn chunks_split_into_lines_across_boundaries() {
        let ring = LogRing::new(10, 1024);
        let mut s = LineSplitter::default();
        s.feed(b"one\r\ntw", &ring, 100);
        s.feed(b"o\nthree", &ring, 100);
        assert_eq!(ring.tail(10), vec!["one", "two"]);
        s.flush(&ring);
        assert_eq!(ring.tail(10), vec!["one", "two", "three"]);
    }

    #[test]
    fn an_endless_line_is_flushed_at_the_bound() {
        let ring = LogRing::new(10, 1024);
        let mut s = LineSplitter::default();
        s.feed(b"0123456789", &ring, 4);
        assert_eq!(ring.tail(10), vec!["0123456789"]);
    }
}
