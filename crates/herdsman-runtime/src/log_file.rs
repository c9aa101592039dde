//! Replica output in files the replica owns: herdsman opens the file (append mode, no
//! symlink followed) and hands it to the child as stdout and stderr, so the replica never
//! writes into a pipe that a dead herdsman would break. The tail `logs()` returns is read
//! from the file on demand (nothing kept in memory per replica).
//!
//! # Rotation: copy, then truncate
//!
//! A program holding its log file open cannot be told to reopen it, so rotation by rename
//! would leave it writing to the renamed file forever. Instead, when the file passes its
//! size limit, herdsman copies it to `<file>.1` (replacing the previous one) and truncates
//! it to zero; the replica writes in append mode, so its next write lands at the new end
//! of file, not at its old offset. The cost is the output written between the copy and
//! the truncation (microseconds), which is lost: logrotate's `copytruncate` makes the same
//! trade. The size is checked when the file changes (inotify, one descriptor for every
//! log file of the runtime), not on a timer, so a writer as fast as `yes` is held near the
//! limit.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rustix::fs::inotify;
use tokio::io::unix::AsyncFd;

/// Open (or create, mode 0600) a log file for appending, refusing a symlink in its place.
///
/// # Errors
/// The directory is read-only or full, or something other than a regular file is there.
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(file)
}

/// `<file>.1`: the rotated file.
pub(crate) fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// If the file at `path` is over `limit` bytes, copy it to `<file>.1` (through a temp file
/// created exclusively, then renamed) and truncate it. Returns whether it rotated.
///
/// # Errors
/// The file or the rotated copy cannot be opened or written.
pub(crate) fn rotate_if_over(path: &Path, limit: u64) -> io::Result<bool> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    let size = file.metadata()?.len();
    if size <= limit {
        return Ok(false);
    }
    let target = rotated(path);
    let mut tmp_name = target.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    // A leftover from a crash (or anything planted there) is unlinked, never followed.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut copy = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&tmp)?;
    io::copy(&mut (&mut file).take(size), &mut copy)?;
    std::fs::rename(&tmp, &target)?;
    file.set_len(0)?;
    Ok(true)
}

/// The last `lines` lines of the log at `path` (and of its rotated file when the current
/// one has fewer), reading at most `max_bytes` of each.
pub(crate) fn tail(path: &Path, lines: usize, max_bytes: u64) -> Vec<String> {
    if lines == 0 {
        return Vec::new();
    }
    let (mut out, whole) = tail_of(path, lines, max_bytes);
    if out.len() < lines && whole {
        let (mut older, _) = tail_of(&rotated(path), lines - out.len(), max_bytes);
        older.append(&mut out);
        out = older;
    }
    out
}

/// The last `lines` lines of one file, and whether the file was read from its start.
fn tail_of(path: &Path, lines: usize, max_bytes: u64) -> (Vec<String>, bool) {
    let Ok(mut file) = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
    else {
        return (Vec::new(), true);
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = size.saturating_sub(max_bytes);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return (Vec::new(), true);
    }
    let mut bytes = Vec::new();
    if file.take(max_bytes).read_to_end(&mut bytes).is_err() {
        return (Vec::new(), true);
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut all: Vec<&str> = text.lines().collect();
    if start > 0 && !all.is_empty() {
        // The first line was cut by the byte bound.
        all.remove(0);
    }
    let skip = all.len().saturating_sub(lines);
    (
        all[skip..].iter().map(|l| (*l).to_string()).collect(),
        start == 0,
    )
}

/// Rotates the runtime's log files when they pass their limit, watching them all through
/// one inotify descriptor and one task (started with the first file).
#[derive(Debug)]
pub(crate) struct Rotator {
    limit: u64,
    state: Arc<Mutex<Watches>>,
}

#[derive(Debug, Default)]
struct Watches {
    inotify: Option<Arc<AsyncFd<OwnedFd>>>,
    /// Watch descriptor → file, and how many incarnations use it.
    files: HashMap<i32, (PathBuf, usize)>,
    /// Files being rotated right now (in a blocking task).
    rotating: HashSet<PathBuf>,
}

impl Rotator {
    /// A rotator for files kept under `limit` bytes.
    pub(crate) fn new(limit: u64) -> Rotator {
        Rotator {
            limit,
            state: Arc::new(Mutex::new(Watches::default())),
        }
    }

    fn state(&self) -> MutexGuard<'_, Watches> {
        // Updates are single inserts and removes.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Start watching `path`; returns its watch descriptor for [`Rotator::unwatch`].
    ///
    /// # Errors
    /// inotify is unavailable (the file is then not rotated; the caller says so).
    pub(crate) fn watch(&self, path: &Path) -> io::Result<i32> {
        let mut state = self.state();
        let fd = match &state.inotify {
            Some(fd) => fd.clone(),
            None => {
                let raw =
                    inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)?;
                let fd = Arc::new(registered(raw)?);
                tokio::spawn(run(fd.clone(), self.state.clone(), self.limit));
                state.inotify = Some(fd.clone());
                fd
            }
        };
        let wd = inotify::add_watch(fd.get_ref(), path, inotify::WatchFlags::MODIFY)?;
        state.files.entry(wd).or_insert((path.to_path_buf(), 0)).1 += 1;
        drop(state);
        // It may already be over the limit (output written before a restart of herdsman).
        let _ = rotate_if_over(path, self.limit);
        Ok(wd)
    }

    /// Stop watching for one incarnation.
    pub(crate) fn unwatch(&self, wd: i32) {
        let mut state = self.state();
        let Some(entry) = state.files.get_mut(&wd) else {
            return;
        };
        entry.1 = entry.1.saturating_sub(1);
        if entry.1 == 0 {
            state.files.remove(&wd);
            if let Some(fd) = &state.inotify {
                let _ = inotify::remove_watch(fd.get_ref(), wd);
            }
        }
    }
}

/// The rotator's task: on every modification, check the file's size and rotate it in a
/// blocking task when over the limit.
async fn run(fd: Arc<AsyncFd<OwnedFd>>, state: Arc<Mutex<Watches>>, limit: u64) {
    let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
    loop {
        let Ok(mut ready) = fd.readable().await else {
            return;
        };
        let mut changed = HashSet::new();
        let mut reader = inotify::Reader::new(ready.get_inner(), &mut buf);
        loop {
            match reader.next() {
                Ok(event) => {
                    changed.insert(event.wd());
                }
                Err(rustix::io::Errno::AGAIN) => {
                    ready.clear_ready();
                    break;
                }
                Err(_) => break,
            }
        }
        for wd in changed {
            let path = {
                let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
                let Some((path, _)) = s.files.get(&wd) else {
                    continue;
                };
                let path = path.clone();
                if !s.rotating.insert(path.clone()) {
                    continue;
                }
                path
            };
            let over = std::fs::symlink_metadata(&path).is_ok_and(|m| m.len() > limit);
            if !over {
                state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .rotating
                    .remove(&path);
                continue;
            }
            let state = state.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = rotate_if_over(&path, limit) {
                    tracing::warn!(file = %path.display(), error = %e, "cannot rotate log file");
                }
                state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .rotating
                    .remove(&path);
            });
        }
    }
}

/// Register an owned descriptor with tokio's reactor.
pub(crate) fn registered(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    #[allow(unsafe_code)]
    // SAFETY: the `AsyncFd` owns the `OwnedFd`, which stays open and keeps returning the
    // same descriptor from `as_raw_fd` until the `AsyncFd` drops it.
    let registered = unsafe { AsyncFd::register(fd) };
    registered.map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_over_its_limit_is_copied_to_dot_1_and_truncated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.log");
        std::fs::write(&path, "a\n".repeat(100)).expect("write");
        assert!(!rotate_if_over(&path, 1000).expect("rotate"));
        assert!(rotate_if_over(&path, 100).expect("rotate"));
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 0);
        assert_eq!(
            std::fs::read_to_string(rotated(&path)).expect("read"),
            "a\n".repeat(100)
        );
    }

    #[test]
    fn the_tail_continues_into_the_rotated_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.log");
        std::fs::write(rotated(&path), "1\n2\n3\n").expect("write");
        std::fs::write(&path, "4\n5\n").expect("write");
        assert_eq!(tail(&path, 3, 1024), vec!["3", "4", "5"]);
        assert_eq!(tail(&path, 1, 1024), vec!["5"]);
    }

    #[test]
    fn a_line_cut_by_the_byte_bound_is_left_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.log");
        std::fs::write(&path, "first line\nsecond\nthird\n").expect("write");
        assert_eq!(tail(&path, 10, 10), vec!["third"]);
    }

    /// A replacement may watch its replica's file before its predecessor's watch is
    /// dropped (the reaper drops it after the exit has gone out): the file is watched,
    /// and rotated, until the last incarnation lets go.
    #[tokio::test]
    async fn a_file_stays_watched_until_the_last_incarnation_lets_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.log");
        std::fs::write(&path, "").expect("write");
        let rotator = Rotator::new(100);
        let replacement = rotator.watch(&path).expect("watch");
        let predecessor = rotator.watch(&path).expect("watch");
        assert_eq!(replacement, predecessor, "one inode, one watch");
        rotator.unwatch(predecessor);
        std::fs::write(&path, "x\n".repeat(100)).expect("write");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::metadata(rotated(&path)).is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the replacement's file was not rotated after its predecessor let go"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 0);
        rotator.unwatch(replacement);
        assert!(
            rotator.state().files.is_empty(),
            "the last one out drops the watch"
        );
    }

    #[test]
    fn a_symlink_in_place_of_a_log_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").expect("write");
        let link = dir.path().join("r.log");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(open_append(&link).is_err());
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep");
    }
}
