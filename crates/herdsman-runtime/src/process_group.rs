//! Process groups: a replica's main process leads its own group, so one signal reaches it
//! and everything it forked (unless something left the group with `setsid`).

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use herdsman_spec::StopSignal;
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::ExitReason;

/// The process group a replica's main process leads; its id is the main process's pid.
///
/// After the leader is reaped the id stays valid for signalling as long as any member is
/// left: the kernel does not reuse a pid that is still some process's group id. Once the
/// group is empty a signal fails with `ESRCH`, which is treated as success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessGroup(Pid);

impl ProcessGroup {
    /// The group led by `pid`. `None` for pids that would address something else: 0 is the
    /// caller's own group and 1 is init.
    pub(crate) fn led_by(pid: u32) -> Option<ProcessGroup> {
        let raw = i32::try_from(pid).ok().filter(|p| *p > 1)?;
        Some(ProcessGroup(Pid::from_raw(raw)))
    }

    /// Send `signal` to every member. Returns `false` when no member is left.
    pub(crate) fn signal(self, signal: Signal) -> bool {
        match killpg(self.0, signal) {
            Ok(()) => true,
            Err(Errno::ESRCH) => false,
            Err(e) => {
                // EPERM would mean a member changed credentials (setuid); nothing more can
                // be done from here, so it is logged rather than returned.
                tracing::warn!(pgid = self.0.as_raw(), %signal, error = %e, "cannot signal process group");
                true
            }
        }
    }

    /// SIGKILL every member.
    pub(crate) fn kill(self) {
        self.signal(Signal::SIGKILL);
    }
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

    #[test]
    fn pids_that_would_address_other_groups_are_refused() {
        assert_eq!(ProcessGroup::led_by(0), None);
        assert_eq!(ProcessGroup::led_by(1), None);
        assert_eq!(ProcessGroup::led_by(u32::MAX), None);
        assert!(ProcessGroup::led_by(4242).is_some());
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
