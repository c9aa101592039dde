//! Process groups: a replica's main process leads its own group, so one signal reaches it
//! and everything it forked (unless something left the group with `setsid`).
//!
//! A group is addressed through a pidfd of its leader, never by its number alone: once
//! the leader is reaped and the last member gone, the number is free, and a `killpg` of it
//! could reach an unrelated process that was given the same pid and leads a group of its
//! own. `pidfd_send_signal(PIDFD_SIGNAL_PROCESS_GROUP)` (Linux 6.9) signals the group of
//! the leader's `struct pid`, which the pidfd pins: members still in the group are
//! reached after the leader is reaped, and a process that reused the number is not (it
//! has a `struct pid` of its own), so the call fails with `ESRCH` instead. On older
//! kernels the group is signalled with `killpg` only while the leader is unreaped (a
//! zombie still holds its pid and so its group's id); the reaper kills the group before
//! it reaps the leader, so its kill is safe on every kernel.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use herdsman_spec::StopSignal;
use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use rustix::process::{pidfd_open, PidfdFlags};

use crate::ExitReason;

/// The process group a replica's main process leads (its id is the main process's pid),
/// held through a pidfd of that process.
#[derive(Debug, Clone)]
pub(crate) struct ProcessGroup {
    pgid: Pid,
    leader: Arc<OwnedFd>,
}

impl ProcessGroup {
    /// The group led by `pid`, whose pidfd is `leader`, opened while `pid` was known to be
    /// that process (an unreaped child, or a survivor whose start time was checked after
    /// the pidfd was opened). `None` for pids that would address something else: 0 is the
    /// caller's own group and 1 is init.
    pub(crate) fn led_by(pid: u32, leader: OwnedFd) -> Option<ProcessGroup> {
        let raw = i32::try_from(pid).ok().filter(|p| *p > 1)?;
        Some(ProcessGroup {
            pgid: Pid::from_raw(raw),
            leader: Arc::new(leader),
        })
    }

    /// The group led by `pid`, a child of this process that has not been reaped (so the
    /// pid is still that child's).
    ///
    /// # Errors
    /// The pidfd cannot be opened (out of descriptors, or `pid` is no process).
    pub(crate) fn of_child(pid: u32) -> io::Result<ProcessGroup> {
        let raw = i32::try_from(pid)
            .ok()
            .filter(|p| *p > 1)
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| io::Error::other(format!("unusable pid {pid}")))?;
        let fd = pidfd_open(raw, PidfdFlags::NONBLOCK)?;
        ProcessGroup::led_by(pid, fd).ok_or_else(|| io::Error::other(format!("unusable pid {pid}")))
    }

    /// A pidfd of the leader, to watch for its exit (readable once it has exited, reaped
    /// or not).
    ///
    /// # Errors
    /// The descriptor cannot be duplicated.
    pub(crate) fn leader_fd(&self) -> io::Result<OwnedFd> {
        self.leader.try_clone()
    }

    /// Send `signal` to every member. Returns `false` when no member is left.
    pub(crate) fn signal(&self, signal: Signal) -> bool {
        match self.send(signal) {
            Ok(()) => true,
            Err(Errno::ESRCH) => false,
            Err(e) => {
                // EPERM would mean a member changed credentials (setuid); nothing more can
                // be done from here, so it is logged rather than returned.
                tracing::warn!(pgid = self.pgid.as_raw(), %signal, error = %e, "cannot signal process group");
                true
            }
        }
    }

    /// SIGKILL every member.
    pub(crate) fn kill(&self) {
        self.signal(Signal::SIGKILL);
    }

    fn send(&self, signal: Signal) -> Result<(), Errno> {
        static NO_GROUP_FLAG: AtomicBool = AtomicBool::new(false);
        if !NO_GROUP_FLAG.load(Ordering::Relaxed) {
            match pidfd_send(
                &self.leader,
                signal as libc::c_int,
                PIDFD_SIGNAL_PROCESS_GROUP,
            ) {
                Err(Errno::EINVAL | Errno::ENOSYS) => {
                    if !NO_GROUP_FLAG.swap(true, Ordering::Relaxed) {
                        tracing::warn!("this kernel cannot signal a process group through a pidfd (Linux 6.9): a group is signalled only while its leader is unreaped");
                    }
                }
                done => return done,
            }
        }
        // Signal 0 checks that the leader is not reaped yet: then its pid, and with it the
        // group's id, cannot have been given to another process.
        pidfd_send(&self.leader, 0, 0)?;
        killpg(self.pgid, signal)
    }
}

/// `PIDFD_SIGNAL_PROCESS_GROUP` of `<linux/pidfd.h>`.
const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 1 << 2;

/// `pidfd_send_signal(2)` with `flags` (rustix has no flags; a signal of 0 only checks).
fn pidfd_send(pidfd: &OwnedFd, signal: libc::c_int, flags: libc::c_uint) -> Result<(), Errno> {
    #[allow(unsafe_code)]
    // SAFETY: the syscall reads only its arguments: a descriptor this struct owns (open
    // for the whole call), a signal number, a null siginfo (the kernel fills one in as
    // kill(2) would) and flags. No memory of this process is written.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            flags,
        )
    };
    Errno::result(r).map(drop)
}

/// The signal a spec's stop signal names; an unknown number falls back to SIGTERM
/// (validation only lets known signals through).
pub(crate) fn to_signal(stop: StopSignal) -> Signal {
    Signal::try_from(stop.0).unwrap_or(Signal::SIGTERM)
}

/// How a reaped process ended.
pub(crate) fn exit_reason(status: ExitStatus) -> ExitReason {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitReason::Code(code),
        (None, Some(signal)) => ExitReason::Signal(signal),
        (None, None) => ExitReason::Lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    fn own_pidfd() -> OwnedFd {
        let me = rustix::process::Pid::from_raw(std::process::id() as i32).expect("own pid");
        pidfd_open(me, PidfdFlags::NONBLOCK).expect("pidfd of this process")
    }

    #[test]
    fn pids_that_would_address_other_groups_are_refused() {
        assert!(ProcessGroup::led_by(0, own_pidfd()).is_none());
        assert!(ProcessGroup::led_by(1, own_pidfd()).is_none());
        assert!(ProcessGroup::led_by(u32::MAX, own_pidfd()).is_none());
        assert!(ProcessGroup::led_by(4242, own_pidfd()).is_some());
    }

    /// A `sleep` leading a group of its own.
    fn group_leader(program: &str, args: &[&str]) -> Child {
        Command::new(program)
            .args(args)
            .process_group(0)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn")
    }

    /// Whether process `pid` has exited (gone, or a zombie), waiting up to `within`.
    #[allow(clippy::disallowed_methods)] // a real process, on the real clock
    fn exits_within(pid: u32, within: Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        loop {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s[s.rfind(')')? + 2..].chars().next());
            if matches!(state, None | Some('Z')) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_group_is_reached_through_its_leader_after_the_leader_is_reaped() {
        use std::io::Read;
        // The leader starts a member in its group, says its pid and exits.
        let mut leader = group_leader("sh", &["-c", "sleep 300 >/dev/null & echo $!"]);
        let group = ProcessGroup::of_child(leader.id()).expect("group");
        let mut said = String::new();
        leader
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut said)
            .expect("read");
        leader.wait().expect("reap the leader");
        let member: u32 = said.trim().parse().expect("the member's pid");
        assert!(!exits_within(member, Duration::ZERO), "the member runs");
        assert!(
            group.signal(Signal::SIGKILL),
            "the group still has a member"
        );
        assert!(
            exits_within(member, Duration::from_secs(30)),
            "the member left in the group is killed"
        );
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // waits for a real pid to be free, on the real clock
    fn a_group_whose_leader_is_reaped_and_members_are_gone_is_never_signalled_again() {
        let mut leader = group_leader("sleep", &["300"]);
        let pgid = leader.id();
        let group = ProcessGroup::of_child(pgid).expect("group");
        leader.kill().expect("kill");
        leader.wait().expect("reap");
        assert!(!group.signal(Signal::SIGKILL), "nothing is left to signal");

        // Give the freed pid to a new group leader (root can steer the next pid), which
        // the old group's signals must not reach.
        let Ok(last_pid) = std::fs::OpenOptions::new()
            .write(true)
            .open("/proc/sys/kernel/ns_last_pid")
        else {
            eprintln!("cannot steer pids here (not root): the reuse itself is not exercised");
            return;
        };
        // Other tests fork and start threads meanwhile, and one of them may take the pid
        // first (a tokio blocking thread lingers 10 s): then wait for it to be free again
        // (bounded: 4,000 tries, at most ~20 s of waiting) rather than give up at once.
        let mut reused = None;
        for _ in 0..4000 {
            use std::io::Write;
            if std::path::Path::new(&format!("/proc/{pgid}")).exists() {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            if (&last_pid)
                .write_all(format!("{}", pgid - 1).as_bytes())
                .is_err()
            {
                break;
            }
            let mut other = group_leader("sleep", &["300"]);
            if other.id() == pgid {
                reused = Some(other);
                break;
            }
            let _ = other.kill();
            let _ = other.wait();
        }
        let Some(mut other) = reused else {
            panic!("pid {pgid} was not reused in 4000 tries");
        };
        let alive = group.signal(Signal::SIGKILL);
        // SIGKILL would have ended it at once; a moment's grace covers a loaded machine.
        let survived = !exits_within(pgid, Duration::from_millis(200))
            && other.try_wait().expect("try_wait").is_none();
        let _ = other.kill();
        let _ = other.wait();
        assert!(!alive, "the old group reports no member");
        assert!(survived, "the process that reused pid {pgid} was signalled");
    }

    #[test]
    fn stop_signals_map_to_their_numbers() {
        assert_eq!(to_signal(StopSignal::TERM), Signal::SIGTERM);
        assert_eq!(to_signal(StopSignal(10)), Signal::SIGUSR1);
        assert_eq!(to_signal(StopSignal(999)), Signal::SIGTERM);
    }

    #[test]
    fn exit_statuses_become_codes_or_signals() {
        assert_eq!(
            exit_reason(ExitStatus::from_raw(3 << 8)),
            ExitReason::Code(3)
        );
        assert_eq!(exit_reason(ExitStatus::from_raw(9)), ExitReason::Signal(9));
    }
}
