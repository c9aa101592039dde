//! How a replica's processes are kept together: a cgroup v2 per incarnation where a
//! writable hierarchy exists, else the process group its main process leads.
//!
//! The hierarchy is found at start from `/proc/self/mountinfo` (the `cgroup2` mount: the
//! whole of `/sys/fs/cgroup` on a pure v2 host, its `unified` mount on a hybrid one) and
//! `/proc/self/cgroup` (herdsman's own cgroup, under which its cgroups nest where that is
//! delegated). Incarnations get
//! `herdsman/<deployment>.<scope>/<service>-<replica>-g<generation>`, where the scope
//! names the state directory (or, without one, the process): two runs of one deployment
//! name from different state directories, which their locks allow, never share a cgroup.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use herdsman_probe::{Cgroup, CgroupEvents};
use nix::sys::signal::Signal;

use crate::process_group::ProcessGroup;
use crate::ContainerId;

/// What contains the incarnations of a runtime.
#[derive(Debug)]
pub(crate) enum Containment {
    /// One cgroup per incarnation under `base` (`.../herdsman`).
    Cgroups {
        /// The `herdsman` directory in the hierarchy.
        base: PathBuf,
        /// Appended to the deployment's directory name.
        scope: String,
        /// Numbers the cgroups of exec and init commands.
        commands: AtomicU64,
        /// The deployment directories made, removed at shutdown.
        made: Mutex<BTreeSet<PathBuf>>,
    },
    /// Process groups only, and why.
    ProcessGroups {
        /// Why no cgroup is used.
        why: String,
    },
}

impl Containment {
    /// Find a writable cgroup v2 hierarchy, or say why there is none.
    pub(crate) fn detect(wanted: bool, scope: String) -> Containment {
        if !wanted {
            return Containment::ProcessGroups {
                why: "cgroups turned off in the configuration".into(),
            };
        }
        let Some(mount) = fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|text| cgroup2_mount(&text))
        else {
            return Containment::ProcessGroups {
                why: "no cgroup2 hierarchy is mounted".into(),
            };
        };
        let own = fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|text| own_cgroup(&text));
        let mut candidates = Vec::new();
        if let Some(own) = own.filter(|o| o != "/") {
            candidates.push(mount.join(own.trim_start_matches('/')).join("herdsman"));
        }
        candidates.push(mount.join("herdsman"));
        let mut last = String::new();
        for base in candidates {
            match usable(&base) {
                Ok(()) => {
                    return Containment::Cgroups {
                        base,
                        scope,
                        commands: AtomicU64::new(0),
                        made: Mutex::new(BTreeSet::new()),
                    }
                }
                Err(e) => last = format!("{} is not writable: {e}", base.display()),
            }
        }
        Containment::ProcessGroups { why: last }
    }

    /// `cgroup` or `process-group`, as `status` shows it.
    pub(crate) fn mode(&self) -> &'static str {
        match self {
            Containment::Cgroups { .. } => "cgroup",
            Containment::ProcessGroups { .. } => "process-group",
        }
    }

    /// The `herdsman` directory, when cgroups are used.
    pub(crate) fn base(&self) -> Option<&Path> {
        match self {
            Containment::Cgroups { base, .. } => Some(base),
            Containment::ProcessGroups { .. } => None,
        }
    }

    /// The directory of `deployment`'s cgroups, when cgroups are used (remembered, for
    /// its removal at shutdown).
    pub(crate) fn deployment(&self, deployment: &str) -> Option<PathBuf> {
        match self {
            Containment::Cgroups {
                base, scope, made, ..
            } => {
                let dir = base.join(format!("{deployment}.{scope}"));
                let mut made = made.lock().unwrap_or_else(PoisonError::into_inner);
                if !made.contains(&dir) {
                    made.insert(dir.clone());
                }
                Some(dir)
            }
            Containment::ProcessGroups { .. } => None,
        }
    }

    /// The cgroup of the incarnation `id`, when cgroups are used.
    pub(crate) fn incarnation(&self, id: &ContainerId) -> Option<Cgroup> {
        let dir = self.deployment(&id.deployment)?;
        Some(Cgroup::at(dir.join(format!(
            "{}-{}-g{}",
            id.service, id.replica, id.generation
        ))))
    }

    /// A fresh cgroup for one command (an exec probe or `init.run`) run for `id`.
    pub(crate) fn command(&self, id: &ContainerId, what: &str) -> Option<Cgroup> {
        let dir = self.deployment(&id.deployment)?;
        let Containment::Cgroups { commands, .. } = self else {
            return None;
        };
        let n = commands.fetch_add(1, Ordering::Relaxed);
        Some(Cgroup::at(dir.join(format!(
            "{}-{}-g{}-{what}{n}",
            id.service, id.replica, id.generation
        ))))
    }

    /// Remember the deployment directory of an adopted incarnation's cgroup, for its
    /// removal at shutdown.
    pub(crate) fn adopted(&self, cgroup: &Path) {
        if let (Containment::Cgroups { made, .. }, Some(dir)) = (self, cgroup.parent()) {
            made.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(dir.to_path_buf());
        }
    }

    /// Remove the deployments' (empty) directories, once nothing of them runs.
    pub(crate) fn forget_all(&self) {
        if let Containment::Cgroups { made, .. } = self {
            for dir in made.lock().unwrap_or_else(PoisonError::into_inner).iter() {
                let _ = fs::remove_dir(dir);
            }
        }
    }
}

/// What a running incarnation is contained by.
#[derive(Debug, Clone)]
pub(crate) enum Contained {
    /// Its own cgroup.
    Cgroup(Cgroup),
    /// The process group its main process leads.
    Group(ProcessGroup),
}

impl Contained {
    /// Send `signal` to everything it runs.
    pub(crate) fn signal(&self, signal: Signal) {
        match self {
            Contained::Cgroup(cg) => {
                cg.signal(signal);
            }
            Contained::Group(group) => {
                group.signal(signal);
            }
        }
    }

    /// SIGKILL everything it runs.
    pub(crate) fn kill(&self) {
        match self {
            Contained::Cgroup(cg) => cg.kill(),
            Contained::Group(group) => group.kill(),
        }
    }

    /// Its cgroup's `cgroup.events`, opened while it runs, so that the check for leftovers
    /// after the main process exits is one read ([`CgroupEvents`]); `None` for a process
    /// group, or when it cannot be opened (the check then opens the file itself).
    pub(crate) fn events(&self) -> Option<CgroupEvents> {
        match self {
            Contained::Cgroup(cg) => cg.events().ok(),
            Contained::Group(_) => None,
        }
    }
}

/// The scope of a runtime's cgroups: a short hash of its state directory, or its pid.
pub(crate) fn scope(state_dir: Option<&Path>) -> String {
    use std::hash::{Hash, Hasher};
    match state_dir {
        Some(dir) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            dir.hash(&mut h);
            format!("{:08x}", h.finish() as u32)
        }
        None => format!("pid{}", std::process::id()),
    }
}

/// Can cgroups be made and joined under `base`? Creates it (and its parents) if missing.
fn usable(base: &Path) -> std::io::Result<()> {
    fs::create_dir_all(base)?;
    rustix::fs::access(base.join("cgroup.procs"), rustix::fs::Access::WRITE_OK)?;
    let probe = Cgroup::at(base.join(format!(".probe-{}", std::process::id())));
    probe.create()?;
    probe.remove()
}

/// The mount point of the cgroup2 hierarchy in `/proc/self/mountinfo` text.
pub(crate) fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape(mount_point)))
    })
}

/// herdsman's own cgroup v2 path (the `0::` line of `/proc/self/cgroup`).
pub(crate) fn own_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_string())
        .filter(|p| p.starts_with('/') && !p.contains(".."))
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(b) => {
                out.push(char::from(b));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_is_found_in_a_hybrid_mountinfo() {
        let text = "\
35 25 0:30 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
37 35 0:32 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu";
        assert_eq!(
            cgroup2_mount(text),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("37 35 0:32 / /x rw - cgroup cgroup rw"), None);
    }

    #[test]
    fn escaped_mount_points_are_unescaped() {
        let text = "36 35 0:31 / /mnt/with\\040space rw - cgroup2 cgroup2 rw";
        assert_eq!(cgroup2_mount(text), Some(PathBuf::from("/mnt/with space")));
    }

    #[test]
    fn the_own_cgroup_is_the_v2_line() {
        assert_eq!(
            own_cgroup("4:memory:/a\n0::/user.slice/x.scope\n").as_deref(),
            Some("/user.slice/x.scope")
        );
        assert_eq!(own_cgroup("0::/../etc\n"), None);
        assert_eq!(own_cgroup("4:memory:/a\n"), None);
    }
}
