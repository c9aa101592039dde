//! Commands run in their own process group with a hard timeout: when it passes, or when the
//! main process exits, everything left in the group is killed, so nothing a probe starts
//! outlives it.

use std::collections::VecDeque;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{ChildStderr, ChildStdout, Command};
use tokio::time::{sleep_until, timeout_at, Instant};

use crate::{cap_output, Cgroup, CommandOutput, ProbeError, OUTPUT_CAP};

/// How long the pipes may stay open after the group was killed. SIGKILLed writers close
/// their ends within milliseconds; only a process that left the group (`setsid`) can hold a
/// pipe longer, and the probe must not wait for it.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// How long to wait for the killed main process to be reaped. SIGKILL cannot be caught, so
/// this only expires for a process stuck in the kernel (uninterruptible I/O); tokio's orphan
/// reaper collects it later because the child is `kill_on_drop`.
const REAP_GRACE: Duration = Duration::from_secs(5);

/// A command to run in its own process group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandRequest {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub workdir: Option<PathBuf>,
    /// A cgroup to run it in (created for it, removed after it). When it ends or times
    /// out, the whole cgroup is killed, so even a process that left the group (`setsid`,
    /// a double fork) goes with it. `None`, or a cgroup that cannot be created, leaves
    /// the process group as the only containment.
    pub cgroup: Option<Cgroup>,
}

impl CommandRequest {
    /// `sh -c <line>`: how command probes and `init.run` steps are run.
    pub fn shell(line: impl Into<String>) -> CommandRequest {
        CommandRequest {
            argv: vec!["sh".into(), "-c".into(), line.into()],
            ..CommandRequest::default()
        }
    }
}

/// Run `req` with a hard timeout.
///
/// The command runs in a new process group, with stdin closed and stdout and stderr
/// captured together (the last [`OUTPUT_CAP`] bytes are kept). When `timeout` passes, the
/// whole group is killed with SIGKILL, the main process is reaped, and the result has
/// `timed_out: true`. When the main process exits by itself, whatever it left running in its
/// group (a forked background child) is killed too. A process that moved itself to another
/// group or session (`setsid`) escapes both, unless the request names a
/// [`CommandRequest::cgroup`]: then the whole cgroup is killed at those two moments, and
/// removed once empty. The output written after the main process ended is read for at
/// most half a second, so nothing can hold the probe open.
///
/// # Errors
/// [`ProbeError::EmptyCommand`] for an empty `argv`; [`ProbeError::Spawn`] when the program
/// cannot be started (not found, not executable, bad working directory).
///
/// # Cancel safety
/// Dropping the future kills the whole process group; tokio reaps the main process in the
/// background.
pub async fn run_command(
    req: &CommandRequest,
    timeout: Duration,
) -> Result<CommandOutput, ProbeError> {
    let program = req.argv.first().ok_or(ProbeError::EmptyCommand)?;
    let mut cmd = Command::new(program);
    cmd.args(&req.argv[1..])
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &req.workdir {
        cmd.current_dir(dir);
    }
    let mut cgroup = CgroupGuard(
        req.cgroup
            .as_ref()
            .filter(|cg| cg.create().is_ok())
            .filter(|cg| cg.join_on_spawn(&mut cmd).is_ok())
            .cloned(),
    );

    let started = Instant::now();
    let deadline = started + timeout;
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(source) => {
            cgroup.end().await;
            return Err(ProbeError::Spawn {
                program: program.clone(),
                source,
            });
        }
    };
    // `process_group(0)` makes the child the leader of a group whose id is its pid.
    let mut group = GroupGuard(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw),
    );
    let mut tail = Tail::default();
    let mut drain = Box::pin(drain(child.stdout.take(), child.stderr.take(), &mut tail));
    let mut drained = false;

    // Wait for the main process, reading its output meanwhile (a child blocked on a full
    // pipe would otherwise never exit), until the deadline. Biased so that an exit and the
    // deadline arriving together count as an exit, not a timeout.
    let waited = loop {
        tokio::select! {
            biased;
            status = child.wait() => break Some(status),
            () = &mut drain, if !drained => drained = true,
            () = sleep_until(deadline) => break None,
        }
    };

    let timed_out = waited.is_none();
    let status: io::Result<Option<ExitStatus>> = match waited {
        Some(status) => {
            // Reaped: anything left in the group (or cgroup) is an orphan of this probe.
            group.kill();
            cgroup.kill();
            status.map(Some)
        }
        None => {
            group.kill();
            cgroup.kill();
            match timeout_at(Instant::now() + REAP_GRACE, child.wait()).await {
                Ok(status) => status.map(Some),
                Err(_) => Ok(None),
            }
        }
    };
    let duration = started.elapsed();
    // The group is dead (or never was), so its number may be reused: never signal it again.
    group.disarm();

    if !drained {
        // Output already in the pipes is read at once; waiting for end of file is bounded
        // so a process that escaped the group cannot hold the probe open.
        let grace_end = Instant::now() + DRAIN_GRACE;
        let until = if timed_out {
            grace_end
        } else {
            grace_end.min(deadline)
        };
        let _ = timeout_at(until, &mut drain).await;
    }
    drop(drain);
    cgroup.end().await;

    let mut output = tail.into_string();
    let (exit_code, signal) = match status {
        Ok(Some(st)) => (st.code(), st.signal()),
        Ok(None) => (None, None),
        Err(e) => {
            output = cap_output(format!(
                "{output}\nherdsman: waiting for the command failed: {e}"
            ));
            (None, None)
        }
    };
    Ok(CommandOutput {
        exit_code,
        signal,
        timed_out,
        output,
        duration,
    })
}

/// Kills a process group with SIGKILL, at the latest when dropped (the probe was cancelled).
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.0 {
            // ESRCH means the group is already empty, which is the goal; EPERM cannot happen
            // for our own child's group. Either way there is nothing more to do.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The command's cgroup: killed and removed at the latest when dropped (the probe was
/// cancelled; then the removal finishes in a background task).
struct CgroupGuard(Option<Cgroup>);

impl CgroupGuard {
    fn kill(&self) {
        if let Some(cg) = &self.0 {
            cg.kill();
        }
    }

    /// Kill what is left, wait (bounded) until it is empty, and remove it.
    async fn end(&mut self) {
        if let Some(cg) = self.0.take() {
            let _ = cg.kill_and_remove(REAP_GRACE).await;
        }
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Some(cg) = self.0.take() {
            cg.kill();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { cg.kill_and_remove(REAP_GRACE).await });
            }
        }
    }
}

/// Read stdout and stderr until both reach end of file, keeping the tail of both,
/// interleaved in arrival order.
///
/// Cancel safe: `read` on a pipe is, and the tail only grows by whole reads.
async fn drain(mut out: Option<ChildStdout>, mut err: Option<ChildStderr>, tail: &mut Tail) {
    let mut out_buf = [0u8; 4096];
    let mut err_buf = [0u8; 4096];
    loop {
        tokio::select! {
            r = read_some(&mut out, &mut out_buf), if out.is_some() => match r {
                Ok(n) if n > 0 => tail.push(&out_buf[..n]),
                _ => out = None,
            },
            r = read_some(&mut err, &mut err_buf), if err.is_some() => match r {
                Ok(n) if n > 0 => tail.push(&err_buf[..n]),
                _ => err = None,
            },
            else => break,
        }
    }
}

async fn read_some<R: AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> io::Result<usize> {
    match pipe {
        Some(p) => p.read(buf).await,
        None => Ok(0),
    }
}

/// The last [`OUTPUT_CAP`] bytes written.
#[derive(Debug, Default)]
struct Tail {
    bytes: VecDeque<u8>,
    truncated: bool,
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        let data = if data.len() > OUTPUT_CAP {
            self.truncated = true;
            &data[data.len() - OUTPUT_CAP..]
        } else {
            data
        };
        self.bytes.extend(data);
        if self.bytes.len() > OUTPUT_CAP {
            self.truncated = true;
            let excess = self.bytes.len() - OUTPUT_CAP;
            self.bytes.drain(..excess);
        }
    }

    fn into_string(self) -> String {
        let bytes: Vec<u8> = self.bytes.into();
        // A cut in the middle of a UTF-8 character would show as a replacement character;
        // skip the continuation bytes of the character that was cut.
        let skip = if self.truncated {
            bytes
                .iter()
                .take(3)
                .take_while(|b| (**b & 0xC0) == 0x80)
                .count()
        } else {
            0
        };
        cap_output(String::from_utf8_lossy(&bytes[skip..]).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_bytes_across_pushes() {
        let mut t = Tail::default();
        t.push(&[b'a'; 3000]);
        t.push(&[b'b'; 3000]);
        let s = t.into_string();
        assert_eq!(s.len(), OUTPUT_CAP);
        assert!(s.ends_with(&"b".repeat(3000)));
        assert!(s.starts_with(&"a".repeat(OUTPUT_CAP - 3000)));
    }

    #[test]
    fn tail_drops_a_character_cut_in_half() {
        let mut t = Tail::default();
        // "€" is three bytes; 1366 of them are 4098 bytes, so the cut lands mid-character.
        t.push("€".repeat(1366).as_bytes());
        let s = t.into_string();
        assert!(!s.contains('\u{FFFD}'));
        assert_eq!(s, "€".repeat(1365));
    }

    #[test]
    fn shell_request_runs_the_line_with_sh() {
        let r = CommandRequest::shell("exit 3");
        assert_eq!(r.argv, vec!["sh", "-c", "exit 3"]);
    }
}
