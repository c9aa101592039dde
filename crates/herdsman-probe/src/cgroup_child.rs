//! A process born inside its cgroup: `clone3(CLONE_INTO_CGROUP)` (Linux 5.7) creates the
//! child as a member of the cgroup, instead of the child writing itself into
//! `cgroup.procs` between fork and `exec` ([`Cgroup::join_on_spawn`]).
//!
//! Why it matters: a write to `cgroup.procs` migrates a task, and every migration takes
//! the kernel's cgroup threadgroup semaphore for writing, which waits out an RCU grace
//! period (unless the hierarchy is mounted `favordynmods`), while every fork and exit on
//! the machine waits for it. Measured on the development host (kernel 6.18, 2 shared
//! cores): fork + join before `exec` took 17–20 ms at the median under load, a child born
//! in its cgroup 0.4 ms. Being born in a cgroup takes that semaphore only for reading.
//!
//! The child runs between `clone3` and `exec` sharing a multi-threaded process's memory,
//! so it makes only async-signal-safe system calls on data prepared before the clone: no
//! allocation, no lock. A failure there is sent to the parent as an errno through a
//! close-on-exec pipe, as the standard library's `Command` does.
//!
//! On x86-64 the child shares the parent's memory until it `exec`s (`CLONE_VM |
//! CLONE_VFORK`, as glibc's `posix_spawn` does), on a small stack of its own: nothing of
//! the parent is copied, so the spawn costs the same whatever the parent's size. A
//! fork-style copy of a 5 MiB process followed by `exec` took 0.72 ms at the median on the
//! development host, a vfork-style one 0.09 ms. Since `clone3` with a new stack returns
//! into that stack, the child's side is a few instructions of inline assembly
//! ([`clone3_vm`]). Elsewhere the child is a fork-style copy.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use nix::libc;
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

use crate::Cgroup;

/// `CLONE_INTO_CGROUP` from `linux/sched.h` (not in the libc crate for glibc targets).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
/// `CLONE_PIDFD` from `linux/sched.h`.
const CLONE_PIDFD: u64 = 0x1000;
/// `CLONE_VM` from `linux/sched.h`: the child shares this process's memory.
#[cfg(target_arch = "x86_64")]
const CLONE_VM: u64 = 0x100;
/// `CLONE_VFORK` from `linux/sched.h`: this thread waits until the child has `exec`ed or
/// exited.
#[cfg(target_arch = "x86_64")]
const CLONE_VFORK: u64 = 0x4000;
/// `CLONE_CLEAR_SIGHAND` from `linux/sched.h` (5.5): the child starts with every handled
/// signal at its default action, so no handler of this process ever runs in it.
#[cfg(target_arch = "x86_64")]
const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;
/// The size of the child's stack between `clone3` and `exec` (it needs well under 1 KiB).
#[cfg(target_arch = "x86_64")]
const CHILD_STACK_BYTES: usize = 32 * 1024;

/// `struct clone_args` of `linux/sched.h` (version 2, with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Where a child's stdout and stderr go.
#[derive(Debug, Clone, Copy)]
pub enum ChildOutput<'a> {
    /// Both to this file (which the child then holds open itself).
    File(BorrowedFd<'a>),
    /// Both to one pipe, in the order written (as to a file), whose read end is
    /// [`CgroupChild::output`]: one pipe to read and see closed, not two.
    Pipe,
}

/// What to run: the program and arguments, variables added to the inherited environment
/// (later entries win), the working directory, where output goes. The child leads a
/// process group of its own and has stdin closed (`/dev/null`).
#[derive(Debug, Clone, Copy)]
pub struct ChildSpec<'a> {
    /// Program and arguments; the program is looked up in `PATH` (the child's, if `env`
    /// sets one) unless it contains a `/`.
    pub argv: &'a [String],
    /// Added to (or replacing in) the inherited environment.
    pub env: &'a [(String, String)],
    /// Working directory; `None` inherits this process's.
    pub workdir: Option<&'a Path>,
    /// Where stdout and stderr go.
    pub output: ChildOutput<'a>,
}

/// A running child born in a cgroup, with a pidfd to wait on. Dropped before
/// [`CgroupChild::wait`] has returned, it stays a zombie until this process exits.
#[derive(Debug)]
pub struct CgroupChild {
    pid: u32,
    pidfd: AsyncFd<OwnedFd>,
    status: Option<ExitStatus>,
    /// The read end of its stdout and stderr, with [`ChildOutput::Pipe`]. It sees EOF
    /// once the child has been reaped by [`CgroupChild::wait`] and nothing it forked
    /// still holds the pipe.
    pub output: Option<pipe::Receiver>,
    /// The write end of that pipe, held until the reap. If the child's exit closed the
    /// last write end, the kernel would wake the reader from inside the exit (the last
    /// writer's release wakes it), and the reader, woken on the dying process's CPU,
    /// would preempt the exit before it finished: on the 2-core bench host that happened
    /// in 3 of 4 crashes, and the exit was seen ~110 µs later (p50).
    output_writer: Option<OwnedFd>,
}

impl CgroupChild {
    /// Its pid.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Its pidfd (it addresses this process only, even once the pid is reused).
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.get_ref().as_fd()
    }

    /// SIGKILL it (through its pidfd: never another process that got its pid).
    pub fn start_kill(&self) {
        // ESRCH: already exited; nothing else can fail for our own child.
        let _ = rustix::process::pidfd_send_signal(self.pidfd(), rustix::process::Signal::KILL);
    }

    /// Wait until it exits and reap it: resolves when its pidfd becomes readable, not by
    /// polling.
    ///
    /// # Errors
    /// The pidfd cannot be watched, or `waitid` failed.
    ///
    /// # Cancel safety
    /// Cancel safe: it reaps only once the exit is there, and remembers the status.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        loop {
            let mut ready = self.pidfd.readable().await?;
            match waitid(
                Id::PIDFd(self.pidfd.get_ref().as_fd()),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
            ) {
                Ok(WaitStatus::Exited(_, code)) => {
                    return Ok(self.reaped(ExitStatus::from_raw((code & 0xff) << 8)));
                }
                Ok(WaitStatus::Signaled(_, signal, core)) => {
                    let raw = signal as i32 | if core { 0x80 } else { 0 };
                    return Ok(self.reaped(ExitStatus::from_raw(raw)));
                }
                // Not exited yet (a spurious wake-up).
                Ok(_) => ready.clear_ready(),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Remember the status, and let the output's reader see EOF (see `output_writer`).
    fn reaped(&mut self, status: ExitStatus) -> ExitStatus {
        self.output_writer = None;
        *self.status.insert(status)
    }
}

impl Cgroup {
    /// Spawn a child inside this cgroup with `clone3(CLONE_INTO_CGROUP)`: it is a member
    /// from its creation, with no migration (see the module documentation for why that
    /// matters). Returns once the program has been `exec`ed.
    ///
    /// Must be called inside a tokio runtime (the pidfd and pipes are registered with it).
    ///
    /// # Errors
    /// [`io::ErrorKind::Unsupported`] where the kernel has no `clone3` or no
    /// `CLONE_INTO_CGROUP` (before Linux 5.7): use [`Cgroup::join_on_spawn`] then. Otherwise
    /// the cgroup cannot be opened, or the program cannot be executed (`NotFound`,
    /// `PermissionDenied`, as `std::process::Command` reports them).
    pub fn spawn_into(&self, spec: &ChildSpec<'_>) -> io::Result<CgroupChild> {
        let prepared = Prepared::new(spec)?;
        let dir: OwnedFd = std::fs::File::open(self.path())?.into();
        let devnull: OwnedFd = std::fs::File::open("/dev/null")?.into();
        let (pipe, out_fd) = match spec.output {
            ChildOutput::File(f) => (None, f.as_raw_fd()),
            ChildOutput::Pipe => {
                let pipe = pipe_pair()?;
                let w = pipe.1.as_raw_fd();
                (Some(pipe), w)
            }
        };
        let (report_r, report_w) = pipe_pair()?;
        let mut pidfd: RawFd = -1;
        let args = CloneArgs {
            flags: CLONE_INTO_CGROUP | CLONE_PIDFD,
            pidfd: std::ptr::addr_of_mut!(pidfd) as u64,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: dir.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        let child = Child {
            prepared: &prepared,
            fds: ChildFds {
                stdin: devnull.as_raw_fd(),
                output: out_fd,
                report: report_w.as_raw_fd(),
            },
        };
        let pid = clone_child(args, &child);
        if pid < 0 {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL) => io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("clone3 into a cgroup is not supported by this kernel: {err}"),
                ),
                _ => err,
            });
        }
        #[allow(unsafe_code)]
        // SAFETY: the kernel stored a new pidfd here (CLONE_PIDFD) for the child it made;
        // nothing else owns it.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        // The child's ends: the parent must not hold them, or the pipes never see EOF;
        // except the output's write end, held until the reap (see `output_writer`).
        drop(report_w);
        drop(devnull);
        let (output, output_writer) = match pipe {
            Some((r, w)) => (Some(r), Some(w)),
            None => (None, None),
        };
        if let Some(errno) = read_report(&report_r) {
            // It failed before exec and has exited (127): reap it now.
            let _ = waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED);
            return Err(io::Error::from_raw_os_error(errno));
        }
        let pid = u32::try_from(pid).map_err(|_| io::Error::other("clone3 returned a bad pid"))?;
        Ok(CgroupChild {
            pid,
            pidfd: registered(pidfd)?,
            status: None,
            output: output.map(pipe::Receiver::from_owned_fd).transpose()?,
            output_writer,
        })
    }
}

/// Everything the child reads between `clone3` and `exec`.
struct Child<'a> {
    prepared: &'a Prepared,
    fds: ChildFds,
}

/// Create the child with `args` (a `clone3` return value: the pid, or -1 with `errno`
/// set). In the child, only [`exec_child`] runs.
#[cfg(target_arch = "x86_64")]
fn clone_child(mut args: CloneArgs, child: &Child<'_>) -> libc::c_long {
    // `u128` for the 16-byte alignment the ABI wants of a stack.
    let mut stack: Vec<u128> = Vec::with_capacity(CHILD_STACK_BYTES / 16);
    args.flags |= CLONE_VM | CLONE_VFORK | CLONE_CLEAR_SIGHAND;
    args.stack = stack.as_mut_ptr() as u64;
    args.stack_size = (stack.capacity() * std::mem::size_of::<u128>()) as u64;
    #[allow(unsafe_code)]
    // SAFETY: `args` is a valid `clone_args` whose stack is `stack`'s buffer, 16-byte
    // aligned at both ends, unused by anything else, and alive until the child has
    // `exec`ed or exited: CLONE_VFORK suspends this thread until then, and `stack` drops
    // after. The child gets `child`, which this suspended thread keeps alive and nobody
    // writes meanwhile.
    unsafe {
        clone3_vm(&args, child_entry, std::ptr::from_ref(child).cast())
    }
}

/// Create the child with `args` (see the x86-64 version): a fork-style copy of this
/// process, in which only [`exec_child`] runs.
#[cfg(not(target_arch = "x86_64"))]
fn clone_child(args: CloneArgs, child: &Child<'_>) -> libc::c_long {
    #[allow(unsafe_code)]
    // SAFETY: `clone3` without CLONE_VM copies this process as fork does. The returned
    // value tells the copies apart: in the child (0) only `exec_child` runs, which makes
    // async-signal-safe system calls on memory prepared before and never returns; the
    // parent continues normally. `args` is a valid `clone_args` of the size passed.
    unsafe {
        let pid = libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of!(args),
            std::mem::size_of::<CloneArgs>(),
        );
        if pid == 0 {
            exec_child(child.prepared, &child.fds);
        }
        pid
    }
}

/// Where the child starts on its own stack: `arg` is the [`Child`].
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
unsafe extern "C" fn child_entry(arg: *const libc::c_void) -> ! {
    // SAFETY: `clone_child` passed a `&Child` that outlives the child's use of it.
    unsafe {
        let child = &*arg.cast::<Child<'_>>();
        exec_child(child.prepared, &child.fds)
    }
}

/// `clone3(args)` for a child that shares this process's memory and starts on the stack
/// `args` names: there it calls `entry(arg)`, which must not return. Returns in the
/// parent only, with the child's pid or -1 (`errno` set).
///
/// The child cannot return from the system call into Rust code as a forked child does:
/// it is on a fresh stack with no frame to return to. So the system call and the call
/// into `entry` are one piece of assembly, as in glibc's `clone3` wrapper.
///
/// # Safety
/// `args` must be a valid `clone_args` with `CLONE_VM`, a stack that is 16-byte aligned
/// at its top, unused by anything else and large enough for `entry`, and alive (with
/// everything `entry` reads) until the child has `exec`ed or exited.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
unsafe fn clone3_vm(
    args: &CloneArgs,
    entry: unsafe extern "C" fn(*const libc::c_void) -> !,
    arg: *const libc::c_void,
) -> libc::c_long {
    let ret: libc::c_long;
    // SAFETY: see the function's contract. The parent's side only makes the system call
    // (`syscall` clobbers rax, rcx and r11 and keeps the rest); the child's side, on its
    // own stack (the kernel set rsp to its top; aligned to 16 bytes again here, so the
    // `call` leaves it as a function expects), clears the frame pointer and calls
    // `entry(arg)` with the registers it inherited, then traps should `entry` ever return.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "and rsp, -16",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") std::ptr::from_ref(args),
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") arg,
            in("r13") entry,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if ret < 0 {
        // The raw system call returns -errno; report it as the libc wrapper would.
        nix::errno::Errno::set_raw(i32::try_from(-ret).unwrap_or(libc::EINVAL));
        return -1;
    }
    ret
}

/// Descriptors the child puts in place.
struct ChildFds {
    stdin: RawFd,
    /// Both stdout and stderr.
    output: RawFd,
    report: RawFd,
}

/// The program path, argv and envp as C strings and pointer arrays, built before the
/// clone because the child may not allocate.
struct Prepared {
    path: CString,
    workdir: Option<CString>,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
}

impl Prepared {
    fn new(spec: &ChildSpec<'_>) -> io::Result<Prepared> {
        let program = spec
            .argv
            .first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| {
                !spec
                    .env
                    .iter()
                    .any(|(name, _)| k.as_bytes() == name.as_bytes())
            })
            .collect();
        env.extend(spec.env.iter().map(|(k, v)| (k.into(), v.into())));
        let path = resolve(program, &env)?;
        let argv: Vec<CString> = spec
            .argv
            .iter()
            .map(|a| c_string(a.as_bytes()))
            .collect::<io::Result<_>>()?;
        let envp: Vec<CString> = env
            .into_iter()
            .map(|(k, v)| {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend(v.into_vec());
                c_string(&kv)
            })
            .collect::<io::Result<_>>()?;
        let nul_terminated = |v: &[CString]| {
            v.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        Ok(Prepared {
            path: c_string(path.as_os_str().as_bytes())?,
            workdir: spec
                .workdir
                .map(|d| c_string(d.as_os_str().as_bytes()))
                .transpose()?,
            argv_ptrs: nul_terminated(&argv),
            envp_ptrs: nul_terminated(&envp),
            _argv: argv,
            _envp: envp,
        })
    }
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the command"))
}

/// The program to exec: as given when it contains a `/` (relative to the workdir, as
/// `exec` after `chdir` resolves it), else the first executable file of that name in the
/// child's `PATH`.
fn resolve(program: &str, env: &[(OsString, OsString)]) -> io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate.is_file()
                && rustix::fs::access(candidate.as_path(), rustix::fs::Access::EXEC_OK).is_ok()
        })
        .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
}

/// A close-on-exec pipe, both ends blocking: (read end, write end). Made with one
/// `pipe2`, not registered with the reactor: the parent's read ends are registered when
/// they become `pipe::Receiver`s, the rest never are.
fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// The errno the child reported before exec, or `None` once the pipe closes empty (the
/// exec succeeded and closed it).
fn read_report(report: &OwnedFd) -> Option<i32> {
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        match rustix::io::read(report, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => break,
        }
    }
    (got == buf.len()).then(|| i32::from_ne_bytes(buf))
}

/// Register an owned descriptor with tokio's reactor.
fn registered(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    #[allow(unsafe_code)]
    // SAFETY: the `AsyncFd` owns the `OwnedFd`, which stays open and keeps returning the
    // same descriptor from `as_raw_fd` until the `AsyncFd` drops it.
    let registered = unsafe { AsyncFd::register(fd) };
    registered.map_err(io::Error::from)
}

/// In the child, between `clone3` and `exec`: stdio in place, a process group of its own,
/// default signal mask and SIGPIPE, the workdir, then `execve`. Never returns; a failure
/// writes the errno to the report pipe and exits 127.
///
/// It writes no memory but its own stack (and, through libc, the `errno` of the thread
/// that cloned it, which is suspended and reads it only when the clone failed; the report
/// is written with the raw system call, not libc's `write`, a cancellation point), so it
/// is the same whether the child shares the parent's memory or has a copy of it.
#[allow(unsafe_code)]
unsafe fn exec_child(p: &Prepared, fds: &ChildFds) -> ! {
    // SAFETY (for every call below): plain system calls listed as async-signal-safe by
    // POSIX, on descriptors and C strings that stay valid until the `exec` (the parent's
    // thread that owns them waits, or the child has its own copy); nothing allocates or
    // takes a lock.
    unsafe {
        let fail = |fds: &ChildFds| -> ! {
            let errno = nix::errno::Errno::last_raw();
            let bytes = errno.to_ne_bytes();
            // The raw system call: libc's `write` is a cancellation point, which may touch
            // the (shared) thread state of the parent's thread.
            libc::syscall(libc::SYS_write, fds.report, bytes.as_ptr(), bytes.len());
            libc::_exit(127)
        };
        for (from, to) in [(fds.stdin, 0), (fds.output, 1), (fds.output, 2)] {
            if from == to {
                // dup2 onto itself keeps close-on-exec: clear it instead.
                if libc::fcntl(to, libc::F_SETFD, 0) < 0 {
                    fail(fds);
                }
            } else if libc::dup2(from, to) < 0 {
                fail(fds);
            }
        }
        if libc::setpgid(0, 0) < 0 {
            fail(fds);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) < 0 {
            fail(fds);
        }
        // Rust ignores SIGPIPE; a program expects the default.
        if libc::signal(libc::SIGPIPE, libc::SIG_DFL) == libc::SIG_ERR {
            fail(fds);
        }
        if let Some(dir) = &p.workdir {
            if libc::chdir(dir.as_ptr()) < 0 {
                fail(fds);
            }
        }
        libc::execve(p.path.as_ptr(), p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
        fail(fds)
    }
}
