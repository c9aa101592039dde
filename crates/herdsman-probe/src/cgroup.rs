//! One cgroup v2 directory used as a container for a command and everything it starts:
//! the command joins it before `exec` (so nothing it forks can be missed), one write to
//! `cgroup.kill` ends every member however it detached itself (`setsid`, double fork),
//! and its emptiness is watched on `cgroup.events` with inotify, not polled.
//!
//! The process runtime runs each replica incarnation in one; command probes and `init.run`
//! commands get one each ([`crate::CommandRequest::cgroup`]). Finding a writable hierarchy
//! is the runtime's business; this module only uses a directory it is given.

use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rustix::fs::inotify;
use tokio::io::unix::AsyncFd;

/// Most bytes of a cgroup control file read (`cgroup.events`, `cgroup.procs` of a
/// workload that forked a great deal).
const CONTROL_FILE_CAP: u64 = 1024 * 1024;

/// A cgroup v2 directory: create it, spawn into it, signal, kill and watch its members,
/// remove it once empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// The cgroup at `path` (an absolute directory in a cgroup2 mount), which need not
    /// exist yet.
    pub fn at(path: impl Into<PathBuf>) -> Cgroup {
        Cgroup { path: path.into() }
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Create the directory (and missing parents). An existing one is reused after
    /// everything still in it is killed: a cgroup name is one incarnation's, so what is
    /// left in it belongs to nobody.
    ///
    /// # Errors
    /// The hierarchy is not writable (not root, not delegated) or the kernel refused.
    pub fn create(&self) -> io::Result<()> {
        match fs::create_dir(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.kill();
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(&self.path),
            Err(e) => Err(e),
        }
    }

    /// Make the command join this cgroup in the child, after fork and before `exec`, so
    /// the program and anything it ever forks are members from their first instruction.
    ///
    /// # Errors
    /// `cgroup.procs` cannot be opened (the cgroup does not exist or is not writable).
    pub fn join_on_spawn(&self, cmd: &mut tokio::process::Command) -> io::Result<()> {
        // std opens it close-on-exec, so the program never inherits it.
        let procs: OwnedFd = OpenOptions::new()
            .write(true)
            .open(self.path.join("cgroup.procs"))?
            .into();
        let join = move || -> io::Result<()> {
            // Writing "0" moves the writing process (the child) into the cgroup.
            rustix::io::write(procs.as_fd(), b"0").map_err(io::Error::from)?;
            Ok(())
        };
        #[allow(unsafe_code)]
        // SAFETY: the closure runs in the forked child before `exec`, where only
        // async-signal-safe work is allowed. It makes one `write(2)` syscall on a file
        // descriptor opened (close-on-exec) before the fork, and builds its error from
        // the errno without allocating. It touches no lock, no allocator, no thread.
        unsafe {
            cmd.as_std_mut().pre_exec(join);
        }
        Ok(())
    }

    /// Whether any process is in it. A missing cgroup is empty.
    ///
    /// # Errors
    /// `cgroup.events` cannot be read for another reason.
    pub fn populated(&self) -> io::Result<bool> {
        match read_capped(&self.path.join("cgroup.events")) {
            Ok(text) => Ok(says_populated(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Its `cgroup.events`, opened now to be read later ([`CgroupEvents::populated`]).
    ///
    /// # Errors
    /// The cgroup does not exist or cannot be read.
    pub fn events(&self) -> io::Result<CgroupEvents> {
        fs::File::open(self.path.join("cgroup.events")).map(CgroupEvents)
    }

    /// The pids of its members (a snapshot: members may fork or exit meanwhile).
    pub fn pids(&self) -> Vec<i32> {
        read_capped(&self.path.join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Send `signal` to every member. Returns `false` when it had none.
    pub fn signal(&self, signal: Signal) -> bool {
        let pids = self.pids();
        for pid in &pids {
            // ESRCH: it exited meanwhile; nothing else can fail for our own children.
            let _ = kill(Pid::from_raw(*pid), signal);
        }
        !pids.is_empty()
    }

    /// SIGKILL every member at once through `cgroup.kill` (Linux 5.14+). On an older
    /// kernel the cgroup is frozen, every member SIGKILLed, and thawed, so a forking
    /// member cannot slip a child past the kill.
    pub fn kill(&self) {
        match fs::write(self.path.join("cgroup.kill"), b"1") {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound && !self.path.exists() => {}
            Err(_) => {
                let _ = fs::write(self.path.join("cgroup.freeze"), b"1");
                self.signal(Signal::SIGKILL);
                let _ = fs::write(self.path.join("cgroup.freeze"), b"0");
            }
        }
    }

    /// Resolve once the cgroup has no member, watching `cgroup.events` with inotify (the
    /// kernel modifies it when `populated` changes). A missing cgroup is empty.
    ///
    /// An inotify instance is made only when the cgroup still has members: most often its
    /// one process has been reaped already and it is empty at the first look. Closing an
    /// inotify instance waits for an SRCU grace period in the kernel (`fsnotify` group
    /// teardown: 6 ms at the median, 22 ms at p99 on the development host under load), so
    /// an instance that was made is closed on a blocking thread, never on the caller's.
    ///
    /// # Errors
    /// inotify is unavailable, or `cgroup.events` cannot be read.
    ///
    /// # Cancel safety
    /// Cancel safe: it only watches (a cancelled wait closes its instance in place).
    pub async fn wait_empty(&self) -> io::Result<()> {
        if !self.populated()? {
            return Ok(());
        }
        let events = self.path.join("cgroup.events");
        let fd = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)?;
        match inotify::add_watch(&fd, &events, inotify::WatchFlags::MODIFY) {
            Ok(_) => {}
            Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let fd = watched(fd)?;
        let emptied = self.watch_empty(&fd).await;
        let fd = fd.into_inner();
        tokio::task::spawn_blocking(move || drop(fd));
        emptied
    }

    async fn watch_empty(&self, fd: &AsyncFd<OwnedFd>) -> io::Result<()> {
        loop {
            // Checked after the watch exists, so a change in between is not missed.
            if !self.populated()? {
                return Ok(());
            }
            let mut ready = fd.readable().await?;
            let mut buf = [0u8; 1024];
            match rustix::io::read(ready.get_inner(), &mut buf) {
                Ok(_) => {}
                Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Remove the directory; it must be empty. A missing one is already removed.
    ///
    /// # Errors
    /// It still has members (EBUSY) or the kernel refused.
    pub fn remove(&self) -> io::Result<()> {
        match fs::remove_dir(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Kill every member, wait (watched, at most `within`) until it is empty and remove
    /// it. Errors are logged by the caller's choice: this returns the first.
    ///
    /// # Errors
    /// It did not empty in time, or could not be removed.
    pub async fn kill_and_remove(&self, within: std::time::Duration) -> io::Result<()> {
        self.kill();
        match tokio::time::timeout(within, self.wait_empty()).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} not empty {within:?} after cgroup.kill",
                        self.path.display()
                    ),
                ))
            }
        }
        self.remove()
    }
}

/// Register an owned descriptor with tokio's reactor.
fn watched(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    #[allow(unsafe_code)]
    // SAFETY: the `AsyncFd` owns the `OwnedFd`, which stays open and keeps returning the
    // same descriptor from `as_raw_fd` until the `AsyncFd` drops it.
    let registered = unsafe { AsyncFd::register(fd) };
    registered.map_err(io::Error::from)
}

/// A cgroup's `cgroup.events`, held open. Read right after the cgroup's last process
/// exited, a file opened afresh took 60 µs at the median on the development host, one held
/// open 29 µs (the kernel regenerates the text on each read from offset 0).
#[derive(Debug)]
pub struct CgroupEvents(fs::File);

impl CgroupEvents {
    /// Whether any process is in the cgroup. A removed cgroup is empty.
    ///
    /// # Errors
    /// The file cannot be read for another reason.
    pub fn populated(&self) -> io::Result<bool> {
        let mut buf = [0u8; 256];
        match std::os::unix::fs::FileExt::read_at(&self.0, &mut buf, 0) {
            Ok(n) => Ok(says_populated(&String::from_utf8_lossy(&buf[..n]))),
            Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Whether the text of `cgroup.events` says the cgroup has members.
fn says_populated(text: &str) -> bool {
    text.lines()
        .any(|l| l.split_whitespace().eq(["populated", "1"]))
}

/// A control file's text, read to at most [`CONTROL_FILE_CAP`] bytes.
fn read_capped(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    fs::File::open(path)?
        .take(CONTROL_FILE_CAP)
        .read_to_string(&mut text)?;
    Ok(text)
}
