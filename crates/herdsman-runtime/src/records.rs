//! What the next herdsman needs to adopt the running incarnations: one record per live
//! incarnation (id, pid, the process's start time, cgroup, run hash, log file) in
//! `replicas.json` in the deployment's state directory.
//!
//! Written off the restart path: a change marks the book dirty and a background task
//! writes it at most every [`DEBOUNCE`], atomically (a temp file created exclusively and
//! never through a symlink, fsync, rename, fsync of the directory). Read back bounded.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::ContainerId;

/// Writes are at least this far apart.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(100);

/// The file's name in the state directory.
pub(crate) const FILE: &str = "replicas.json";

/// Most bytes read from the file: a record is about 300 bytes, so this holds tens of
/// thousands of replicas; a larger file is not a file this runtime wrote.
const READ_CAP: u64 = 16 * 1024 * 1024;

/// One running incarnation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The incarnation.
    pub(crate) id: ContainerId,
    /// Its main process.
    pub(crate) pid: u32,
    /// The main process's start time (`/proc/PID/stat` field 22, clock ticks since boot):
    /// with the pid, it names the process even after the pid is reused.
    pub(crate) start_time: u64,
    /// Its cgroup, when it has one.
    pub(crate) cgroup: Option<PathBuf>,
    /// The run hash of the spec it was started from.
    pub(crate) run_hash: String,
    /// Its log file, when it writes to one.
    pub(crate) log: Option<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    format: u32,
    records: Vec<Record>,
}

/// The records of one runtime, and the writer that keeps `replicas.json` up to date.
#[derive(Debug)]
pub(crate) struct RecordBook {
    path: PathBuf,
    records: Mutex<BTreeMap<ContainerId, Record>>,
    dirty: watch::Sender<u64>,
    writer_started: AtomicBool,
    /// Set after the first failed write: said once.
    warned: Arc<AtomicBool>,
}

impl RecordBook {
    /// The book kept in `state_dir`.
    pub(crate) fn new(state_dir: &Path) -> RecordBook {
        RecordBook {
            path: state_dir.join(FILE),
            records: Mutex::new(BTreeMap::new()),
            dirty: watch::channel(0).0,
            writer_started: AtomicBool::new(false),
            warned: Arc::new(AtomicBool::new(false)),
        }
    }

    fn records(&self) -> MutexGuard<'_, BTreeMap<ContainerId, Record>> {
        // Single inserts and removes.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Record a running incarnation.
    pub(crate) fn insert(self: &Arc<Self>, record: Record) {
        self.records().insert(record.id.clone(), record);
        self.touch();
    }

    /// Forget an incarnation that ended.
    pub(crate) fn remove(self: &Arc<Self>, id: &ContainerId) {
        if self.records().remove(id).is_some() {
            self.touch();
        }
    }

    /// The record of `id`.
    pub(crate) fn get(&self, id: &ContainerId) -> Option<Record> {
        self.records().get(id).cloned()
    }

    fn touch(self: &Arc<Self>) {
        self.dirty.send_modify(|v| *v += 1);
        if !self.writer_started.swap(true, Ordering::SeqCst) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                // A new receiver has seen the change just made: without this, a book
                // that changes once (a single replica) would never be written.
                let mut dirty = self.dirty.subscribe();
                dirty.mark_changed();
                rt.spawn(keep_written(Arc::downgrade(self), dirty));
            } else {
                self.writer_started.store(false, Ordering::SeqCst);
            }
        }
    }

    /// Write the file now (at shutdown, so it does not list what was just stopped).
    pub(crate) async fn flush(&self) {
        let snapshot: Vec<Record> = self.records().values().cloned().collect();
        let path = self.path.clone();
        let warned = self.warned.clone();
        let _ = tokio::task::spawn_blocking(move || write(&path, &snapshot, &warned)).await;
    }

    /// The records found in the file (a missing or unreadable file has none; why is
    /// logged).
    pub(crate) fn load(&self) -> Vec<Record> {
        match read(&self.path) {
            Ok(records) => records,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "ignoring the replica records");
                Vec::new()
            }
        }
    }
}

/// The writer task: after each change, wait [`DEBOUNCE`] (gathering more changes) and
/// write the whole book. Ends with the book.
async fn keep_written(book: std::sync::Weak<RecordBook>, mut dirty: watch::Receiver<u64>) {
    while dirty.changed().await.is_ok() {
        tokio::time::sleep(DEBOUNCE).await;
        dirty.mark_unchanged();
        let Some(book) = book.upgrade() else {
            return;
        };
        let snapshot: Vec<Record> = book.records().values().cloned().collect();
        let (path, warned) = (book.path.clone(), book.warned.clone());
        drop(book);
        let _ = tokio::task::spawn_blocking(move || write(&path, &snapshot, &warned)).await;
    }
}

fn write(path: &Path, records: &[Record], warned: &AtomicBool) {
    if let Err(e) = write_atomically(path, records) {
        if !warned.swap(true, Ordering::SeqCst) {
            tracing::warn!(file = %path.display(), error = %e,
                "cannot keep the replica records: a restarted herdsman will not adopt these replicas");
        }
    }
}

/// Temp file (created exclusively, never through a symlink), write, fsync, rename, fsync
/// of the directory.
fn write_atomically(path: &Path, records: &[Record]) -> io::Result<()> {
    let json = serde_json::to_vec(&Saved {
        format: 1,
        records: records.to_vec(),
    })
    .map_err(io::Error::other)?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&tmp)?;
    file.write_all(&json)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn read(path: &Path) -> io::Result<Vec<Record>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    let mut bytes = Vec::new();
    file.take(READ_CAP + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > READ_CAP {
        return Err(io::Error::other(format!("larger than {READ_CAP} bytes")));
    }
    let saved: Saved = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
    Ok(saved.records)
}

/// The start time of process `pid` (`/proc/PID/stat` field 22), if it exists.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2 (the command) is in parentheses and may hold spaces; count after it.
    let after = &stat[stat.rfind(')')? + 1..];
    // After the command come fields 3..; the start time is field 22, the 20th of these.
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_book_changed_only_once_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let book = Arc::new(RecordBook::new(dir.path()));
        book.insert(Record {
            id: ContainerId::new("d", "s", 0, 1),
            pid: 42,
            start_time: 7,
            cgroup: None,
            run_hash: "h".into(),
            log: None,
        });
        let path = dir.path().join(FILE);
        let written = tokio::time::timeout(Duration::from_secs(10), async {
            while read(&path).map(|r| r.len()).unwrap_or(0) != 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(written.is_ok(), "the single record was never written");
    }

    #[test]
    fn the_start_time_of_this_process_is_read() {
        let t = start_time(std::process::id());
        assert!(t.is_some());
        assert_eq!(t, start_time(std::process::id()));
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    fn records_round_trip_through_the_file_and_a_planted_symlink_is_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE);
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").expect("write");
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::os::unix::fs::symlink(&target, PathBuf::from(tmp)).expect("symlink");
        let record = Record {
            id: ContainerId::new("d", "s", 0, 3),
            pid: 42,
            start_time: 7,
            cgroup: None,
            run_hash: "h".into(),
            log: Some(dir.path().join("l.log")),
        };
        write_atomically(&path, std::slice::from_ref(&record)).expect("write");
        assert_eq!(read(&path).expect("read"), vec![record]);
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep");
    }
}
