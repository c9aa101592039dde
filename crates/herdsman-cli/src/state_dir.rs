//! The deployment's state directory: `<root>/<deployment>/`, where the root is
//! `--state-dir`, else `$HERDSMAN_STATE_DIR`, else `/var/lib/herdsman` as root, else
//! `$XDG_STATE_HOME/herdsman` (`~/.local/state/herdsman`). It holds the lock that
//! refuses a second `herdsman run` of the deployment, the state file, the replicas' log
//! files and the records of running replicas that the next run adopts.
//!
//! Opened safely: the deployment's directory is created 0700 and must be a real
//! directory owned by this user (a symlink there is refused), and nothing inside is
//! followed through a symlink (`O_NOFOLLOW`; temp files are created `O_EXCL`). The root
//! itself is where the operator said, symlinks and all. A directory that cannot be
//! written (read-only, full) degrades the run: nothing is kept, said once, but
//! supervision goes on.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::bail;

/// The environment variable naming the state root.
pub(crate) const STATE_DIR_ENV: &str = "HERDSMAN_STATE_DIR";

/// The lock file's name.
const LOCK: &str = "lock";

/// The state root: `--state-dir`, else the environment, else the default for this user.
pub(crate) fn root(flag: Option<&Path>) -> PathBuf {
    if let Some(dir) = flag {
        return dir.to_path_buf();
    }
    if let Some(dir) = std::env::var_os(STATE_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/herdsman");
    }
    let state_home = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("state")))
        .unwrap_or_else(std::env::temp_dir);
    state_home.join("herdsman")
}

/// A deployment's state directory, locked for this run.
#[derive(Debug)]
pub(crate) struct StateDir {
    dir: PathBuf,
    /// Holds the `flock` for as long as the run lasts.
    _lock: File,
}

/// What opening the state directory gave.
#[derive(Debug)]
pub(crate) enum Opened {
    /// Usable and locked.
    Locked(StateDir),
    /// Not writable: the run goes on without keeping anything, and this says why.
    Degraded(String),
}

impl StateDir {
    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// The replicas' log files.
    pub(crate) fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// The state file.
    pub(crate) fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }
}

/// Open (creating) and lock `<root>/<deployment>/`.
///
/// # Errors
/// Another `herdsman run` holds the lock (the message names its pid), or something that
/// is not a directory of this user is in the deployment directory's place. A directory
/// that merely cannot be written is not an error but [`Opened::Degraded`].
pub(crate) fn open(root: &Path, deployment: &str) -> anyhow::Result<Opened> {
    if deployment.is_empty() || deployment.contains('/') || deployment.starts_with('.') {
        bail!("deployment name {deployment:?} cannot name a state directory");
    }
    let dir = root.join(deployment);
    let degraded = |what: &str, e: io::Error| -> anyhow::Result<Opened> {
        Ok(Opened::Degraded(format!(
            "{what} {}: {e}; restart counts, logs and adoption of replicas are not kept this run",
            dir.display()
        )))
    };
    if let Err(e) = DirBuilder::new().recursive(true).mode(0o700).create(root) {
        return degraded("cannot create the state directory", e);
    }
    match DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return degraded("cannot create the state directory", e),
    }
    let meta = std::fs::symlink_metadata(&dir)?;
    if meta.file_type().is_symlink() || !meta.is_dir() {
        bail!(
            "refusing state directory {}: it is not a directory (a symlink is never followed)",
            dir.display()
        );
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        bail!(
            "refusing state directory {}: it belongs to uid {}, not to this user",
            dir.display(),
            meta.uid()
        );
    }
    let lock_path = dir.join(LOCK);
    let mut lock = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&lock_path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => bail!(
            "refusing lock file {}: it is a symlink",
            lock_path.display()
        ),
        Err(e) => return degraded("cannot write in the state directory", e),
    };
    if let Err(e) = flock(&lock) {
        if e.kind() == io::ErrorKind::WouldBlock {
            let mut text = String::new();
            let _ = (&lock).take(64).read_to_string(&mut text);
            let holder = text.trim();
            let holder = if holder.is_empty() {
                "another process".to_string()
            } else {
                format!("herdsman pid {holder}")
            };
            bail!(
                "deployment {deployment:?} is already being run by {holder} (state directory {}); stop it first, or use another --state-dir",
                dir.display()
            );
        }
        return degraded("cannot lock the state directory", e);
    }
    let written = lock
        .set_len(0)
        .and_then(|()| lock.rewind())
        .and_then(|()| writeln!(lock, "{}", std::process::id()));
    if let Err(e) = written {
        // Locked all the same; only the pid in the message of a second run is missing.
        tracing::warn!(file = %lock_path.display(), error = %e, "cannot write the pid in the lock file");
    }
    Ok(Opened::Locked(StateDir { dir, _lock: lock }))
}

/// An exclusive, non-blocking `flock`, held until the file is closed.
fn flock(file: &File) -> io::Result<()> {
    rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_the_flag_else_the_environment() {
        assert_eq!(root(Some(Path::new("/x"))), PathBuf::from("/x"));
    }

    #[test]
    fn a_second_open_is_refused_naming_the_holder_pid() {
        let root = tempfile::tempdir().expect("tempdir");
        let first = open(root.path(), "shop").expect("open");
        assert!(matches!(first, Opened::Locked(_)));
        let err = open(root.path(), "shop").expect_err("locked");
        assert!(
            err.to_string()
                .contains(&format!("herdsman pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        assert!(matches!(
            open(root.path(), "shop").expect("open"),
            Opened::Locked(_)
        ));
    }

    #[test]
    fn a_symlink_in_place_of_the_deployment_directory_is_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let elsewhere = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(elsewhere.path(), root.path().join("shop")).expect("symlink");
        let err = open(root.path(), "shop").expect_err("refused");
        assert!(err.to_string().contains("symlink"), "{err}");
        assert!(std::fs::read_dir(elsewhere.path())
            .expect("dir")
            .next()
            .is_none());
    }

    #[test]
    fn a_directory_that_cannot_be_written_degrades() {
        let root = tempfile::tempdir().expect("tempdir");
        // Root ignores permission bits, so a file stands in the way instead.
        let blocked = root.path().join("file");
        std::fs::write(&blocked, "").expect("write");
        assert!(matches!(
            open(&blocked, "shop").expect("degrades"),
            Opened::Degraded(_)
        ));
    }

    #[test]
    fn a_deployment_name_cannot_climb_out_of_the_root() {
        let root = tempfile::tempdir().expect("tempdir");
        assert!(open(root.path(), "../x").is_err());
        assert!(open(root.path(), "..").is_err());
    }
}
