//! A short scheduler time slice for the threads that supervise processes.
//!
//! When a replica is spawned, the thread that spawned it waits until the child has
//! `exec`ed, and the child then keeps its CPU for a while (dynamic loading, the program's
//! start). The woken thread is queued behind it when the machine's other CPUs are busy,
//! and Linux's scheduler (EEVDF, 6.6 and later) lets the running task finish its time
//! slice first: 0.75 ms × (1 + log2 of the CPU count), 1.4 ms on the 2-core development
//! host. Measured there with `clone3` + `exec` and one busy thread on the other core:
//! 1.03 ms at the median with the default slice, 0.13 ms with a 100 µs one, because since
//! 6.12 a woken task with a shorter requested slice may preempt the running one.
//!
//! The slice is requested per thread with `sched_setattr` (`sched_runtime`, the "slice
//! suggestion" of fair tasks, clamped by the kernel to 0.1–100 ms; no privilege needed)
//! together with `SCHED_FLAG_RESET_ON_FORK`, so that the processes those threads spawn
//! start with the default slice, as they would without herdsman. Older kernels accept and
//! ignore the slice.

use nix::libc;

/// The slice requested: the shortest the kernel accepts.
const SLICE_NS: u64 = 100_000;

/// `SCHED_OTHER`, the default policy (the only one this changes).
const SCHED_OTHER: u32 = 0;

/// Ask the scheduler for a short time slice for the calling thread, so that it runs soon
/// after it is woken even when every CPU is busy (see the module documentation). Call it
/// on each thread of the tokio runtime that drives a [`crate::ProcessRuntime`], e.g. from
/// `tokio::runtime::Builder::on_thread_start`; the `herdsman` command does.
///
/// Only a thread under the default policy with a nice value of 0 or more is changed: a
/// thread someone gave a real-time, batch or idle policy or a raised priority keeps it
/// (the reset-on-fork flag would otherwise also reset its children's priority). Processes
/// the thread spawns afterwards start with the default slice; the flag also clears
/// per-task utilization clamps (`uclamp`) in them, which herdsman's threads do not set.
///
/// Returns whether the slice was set.
pub fn request_short_time_slice() -> bool {
    let Some(attr) = attributes(0) else {
        return false;
    };
    if attr.sched_policy != SCHED_OTHER || attr.sched_nice < 0 {
        return false;
    }
    let mut wanted = sched_attr(std::mem::size_of::<libc::sched_attr>());
    wanted.sched_policy = SCHED_OTHER;
    wanted.sched_nice = attr.sched_nice;
    wanted.sched_flags = libc::SCHED_FLAG_RESET_ON_FORK as u64;
    wanted.sched_runtime = SLICE_NS;
    #[allow(unsafe_code)]
    // SAFETY: `wanted` is a valid `sched_attr` whose `size` field is its size; pid 0 is
    // the calling thread.
    let set = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, std::ptr::addr_of!(wanted), 0) };
    set == 0
}

/// The scheduling attributes of thread `tid` (0: the calling one), as the kernel reports
/// them; `None` where it cannot (no `sched_getattr`, an unknown thread).
fn attributes(tid: libc::pid_t) -> Option<libc::sched_attr> {
    let size = std::mem::size_of::<libc::sched_attr>();
    let mut attr = sched_attr(size);
    #[allow(unsafe_code)]
    // SAFETY: `attr` is a valid, writable `sched_attr` of the size passed.
    let got = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            tid,
            std::ptr::addr_of_mut!(attr),
            size,
            0,
        )
    };
    (got == 0).then_some(attr)
}

/// An all-zero `sched_attr` that says its size.
fn sched_attr(size: usize) -> libc::sched_attr {
    libc::sched_attr {
        size: u32::try_from(size).unwrap_or(u32::MAX),
        sched_policy: 0,
        sched_flags: 0,
        sched_nice: 0,
        sched_priority: 0,
        sched_runtime: 0,
        sched_deadline: 0,
        sched_period: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes_of(tid: libc::pid_t) -> libc::sched_attr {
        attributes(tid).expect("sched_getattr answers")
    }

    #[test]
    fn a_thread_gets_the_short_slice_and_the_processes_it_spawns_the_default_one() {
        std::thread::spawn(|| {
            let before = attributes_of(0);
            if before.sched_policy != SCHED_OTHER || before.sched_nice < 0 {
                assert!(!request_short_time_slice());
                return;
            }
            assert!(request_short_time_slice());
            let after = attributes_of(0);
            assert_eq!(after.sched_policy, SCHED_OTHER);
            assert_eq!(
                after.sched_nice, before.sched_nice,
                "the nice value is kept"
            );
            assert_ne!(after.sched_flags & libc::SCHED_FLAG_RESET_ON_FORK as u64, 0);
            let mut child = std::process::Command::new("sleep")
                .arg("5")
                .spawn()
                .expect("sleep starts");
            let pid = libc::pid_t::try_from(child.id()).expect("a pid");
            let theirs = attributes_of(pid);
            let _ = child.kill();
            let _ = child.wait();
            assert_eq!(
                theirs.sched_flags & libc::SCHED_FLAG_RESET_ON_FORK as u64,
                0
            );
            assert_eq!(theirs.sched_nice, before.sched_nice);
            // Kernels that report the slice (6.12+) report ours and the child's default.
            if before.sched_runtime != 0 {
                assert_eq!(after.sched_runtime, SLICE_NS);
                assert_eq!(theirs.sched_runtime, before.sched_runtime);
            }
        })
        .join()
        .expect("the test thread ends");
    }
}
