//! A replica's captured output: a ring of its last lines, bounded by line count and bytes,
//! fed by one reader task per pipe, optionally mirrored to a log file.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Most bytes read from a pipe at a time. Each reader holds its buffer for the life of its
/// process: it starts at [`FIRST_CHUNK`] and doubles whenever a read fills it, up to this,
/// so a chatty process reads in 4 KiB chunks while an idle one (most of them) costs 256
/// bytes per pipe instead of 4 KiB (1.6 MiB of buffers at 200 idle replicas).
const READ_CHUNK: usize = 4 * 1024;

/// The read buffer a pipe starts with.
const FIRST_CHUNK: usize = 256;

/// The last lines a replica printed: at most `max_lines` lines and `max_bytes` bytes of
/// text, whichever limit is reached first. Oldest lines are dropped first. Shared with
/// backends that keep their containers' tails in memory (Docker).
#[derive(Debug)]
pub struct LogBuffer {
    ring: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    lines: VecDeque<String>,
    bytes: usize,
    max_lines: usize,
    max_bytes: usize,
}

impl LogBuffer {
    /// An empty buffer with these bounds.
    pub fn new(max_lines: usize, max_bytes: usize) -> LogBuffer {
        LogBuffer {
            ring: Mutex::new(Ring {
                lines: VecDeque::new(),
                bytes: 0,
                max_lines,
                max_bytes,
            }),
        }
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        // A panic while holding this lock cannot leave the ring inconsistent in a way that
        // matters for a log tail, so a poisoned lock is simply used.
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Append one line (without its newline). A line longer than the byte bound keeps its
    /// end, the part printed last.
    pub fn push(&self, mut line: String) {
        let mut ring = self.ring();
        if ring.max_lines == 0 || ring.max_bytes == 0 {
            return;
        }
        if line.len() > ring.max_bytes {
            let mut cut = line.len() - ring.max_bytes;
            while !line.is_char_boundary(cut) {
                cut += 1;
            }
            line.replace_range(..cut, "");
        }
        ring.bytes += line.len();
        ring.lines.push_back(line);
        while ring.lines.len() > ring.max_lines || ring.bytes > ring.max_bytes {
            match ring.lines.pop_front() {
                Some(old) => ring.bytes -= old.len(),
                None => break,
            }
        }
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let ring = self.ring();
        let skip = ring.lines.len().saturating_sub(n);
        ring.lines.iter().skip(skip).cloned().collect()
    }
}

/// Read `pipe` to its end, splitting it into lines for `buffer` and appending what it reads
/// to `file`. Ends when every holder of the pipe's write end is gone; nobody waits for it,
/// so a grandchild that keeps the pipe open never delays anything but this task.
pub(crate) async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    buffer: Arc<LogBuffer>,
    mut file: Option<tokio::fs::File>,
    max_line: usize,
) {
    let max_line = max_line.max(1);
    let mut chunk = vec![0u8; FIRST_CHUNK];
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut complete = 0;
        for (i, byte) in chunk[..n].iter().enumerate() {
            if *byte == b'\n' {
                partial.extend_from_slice(&chunk[complete..i]);
                buffer.push(line_text(&partial));
                partial.clear();
                complete = i + 1;
            }
        }
        partial.extend_from_slice(&chunk[complete..n]);
        if partial.len() > max_line {
            // A line with no end in sight: keep memory bounded by flushing it as is.
            buffer.push(line_text(&partial));
            partial.clear();
        }
        if let Some(f) = file.as_mut() {
            if write_through(f, &chunk[..n]).await.is_err() {
                // The disk is full or gone; the ring still has the output, so stop mirroring
                // rather than fail the replica.
                file = None;
            }
        }
        if n == chunk.len() && chunk.len() < READ_CHUNK {
            chunk.resize((chunk.len() * 2).min(READ_CHUNK), 0);
        }
    }
    if !partial.is_empty() {
        buffer.push(line_text(&partial));
    }
}

async fn write_through(file: &mut tokio::fs::File, bytes: &[u8]) -> std::io::Result<()> {
    file.write_all(bytes).await?;
    // tokio buffers file writes in the background; flush so the file is current when the
    // replica has printed and exited.
    file.flush().await
}

fn line_text(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_bound_keeps_the_newest_lines() {
        let buf = LogBuffer::new(3, 1024);
        for i in 0..10 {
            buf.push(format!("line {i}"));
        }
        assert_eq!(buf.tail(10), vec!["line 7", "line 8", "line 9"]);
        assert_eq!(buf.tail(1), vec!["line 9"]);
    }

    #[test]
    fn byte_bound_drops_old_lines_first() {
        let buf = LogBuffer::new(100, 10);
        buf.push("aaaa".into());
        buf.push("bbbb".into());
        buf.push("cccc".into());
        assert_eq!(buf.tail(10), vec!["bbbb", "cccc"]);
    }

    #[test]
    fn an_overlong_line_keeps_its_end_on_a_char_boundary() {
        let buf = LogBuffer::new(10, 5);
        buf.push("xxxxxé123".into());
        let tail = buf.tail(10);
        assert_eq!(tail, vec!["é123"]);
    }

    #[tokio::test]
    async fn pump_splits_lines_and_keeps_an_unterminated_last_line() {
        let buf = Arc::new(LogBuffer::new(10, 1024));
        let input: &[u8] = b"one\r\ntwo\nthree";
        pump(input, buf.clone(), None, 1024).await;
        assert_eq!(buf.tail(10), vec!["one", "two", "three"]);
    }
}
