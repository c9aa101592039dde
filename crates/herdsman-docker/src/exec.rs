//! Commands inside a container (command health checks, `Runtime::exec`) with a hard
//! timeout. The Engine API cannot kill an exec, so at the timeout the exec's process and
//! everything it started are SIGKILLed by host pid (found from `inspect_exec` and
//! `/proc`), which needs herdsman on the daemon's host with the right to signal them.

use std::collections::HashMap;
use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::Docker;
use futures::StreamExt;
use herdsman_probe::{cap_output, CommandOutput, OUTPUT_CAP};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::time::Instant;

/// What to run and where.
#[derive(Debug, Clone)]
pub(crate) struct ExecRequest<'a> {
    /// The container's name.
    pub(crate) container: &'a str,
    /// The shell command line.
    pub(crate) command: &'a str,
    /// The replica's environment, `NAME=value`.
    pub(crate) env: &'a [String],
    /// Working directory inside the container.
    pub(crate) workdir: Option<&'a str>,
}

/// Run `sh -c <command>` in the container, at most `timeout`.
///
/// # Errors
/// The daemon refused or failed the exec (container not running, no `sh` in the image).
pub(crate) async fn run(
    docker: &Docker,
    request: ExecRequest<'_>,
    timeout: Duration,
) -> Result<CommandOutput, bollard::errors::Error> {
    let started = Instant::now();
    let deadline = started + timeout;
    let config = CreateExecOptions {
        cmd: Some(vec!["sh", "-c", request.command]),
        env: Some(request.env.iter().map(String::as_str).collect()),
        working_dir: request.workdir,
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..CreateExecOptions::default()
    };
    let created = match tokio::time::timeout_at(
        deadline,
        docker.create_exec(request.container, config),
    )
    .await
    {
        Ok(created) => created?,
        Err(_) => return Ok(timed_out(String::new(), started)),
    };
    let mut output: Vec<u8> = Vec::new();
    let finished = tokio::time::timeout_at(deadline, async {
        if let StartExecResults::Attached {
            output: mut stream, ..
        } = docker.start_exec(&created.id, None).await?
        {
            while let Some(chunk) = stream.next().await {
                output.extend_from_slice(&chunk?.into_bytes());
                if output.len() > 4 * OUTPUT_CAP {
                    output.drain(..output.len() - OUTPUT_CAP);
                }
            }
        }
        // The output ends when the process does; its exit code follows at once.
        loop {
            let inspected = docker.inspect_exec(&created.id).await?;
            if inspected.running != Some(true) {
                return Ok::<_, bollard::errors::Error>(inspected.exit_code);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let text = cap_output(String::from_utf8_lossy(&output).into_owned());
    match finished {
        Ok(code) => {
            let code = code?;
            let (exit_code, signal) = match code {
                Some(c @ 129..=192) => (None, Some((c - 128) as i32)),
                Some(c) => (Some(i32::try_from(c).unwrap_or(i32::MAX)), None),
                None => (None, None),
            };
            Ok(CommandOutput {
                exit_code,
                signal,
                timed_out: false,
                output: text,
                duration: started.elapsed(),
            })
        }
        Err(_) => {
            kill_exec(docker, &created.id).await;
            Ok(timed_out(text, started))
        }
    }
}

fn timed_out(output: String, started: Instant) -> CommandOutput {
    CommandOutput {
        exit_code: None,
        signal: None,
        timed_out: true,
        output,
        duration: started.elapsed(),
    }
}

/// SIGKILL the exec's process and its descendants, by host pid.
async fn kill_exec(docker: &Docker, exec_id: &str) {
    let pid = match docker.inspect_exec(exec_id).await {
        Ok(inspected) => inspected.pid.and_then(|p| i32::try_from(p).ok()),
        Err(e) => {
            tracing::warn!(exec_id, error = %e, "cannot find a timed-out exec to kill it");
            None
        }
    };
    let Some(pid) = pid.filter(|p| *p > 1) else {
        return;
    };
    for victim in tree(pid, &parents()) {
        if let Err(e) = kill(Pid::from_raw(victim), Signal::SIGKILL) {
            tracing::warn!(pid = victim, error = %e, "cannot kill a timed-out exec");
        }
    }
}

/// `root` and every process descending from it, parents first.
fn tree(root: i32, parents: &HashMap<i32, i32>) -> Vec<i32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(_, p)| **p == parent)
                .map(|(child, _)| *child),
        );
        i += 1;
    }
    out
}

/// pid → parent pid of every process on the host, from `/proc/<pid>/stat`.
fn parents() -> HashMap<i32, i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parent_from_stat(&stat)?))
        })
        .collect()
}

/// The ppid field of a `/proc/<pid>/stat` line: the second field after the `)` that ends
/// the command name (which may itself hold spaces and parentheses).
fn parent_from_stat(stat: &str) -> Option<i32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_past_a_command_name_with_spaces() {
        assert_eq!(parent_from_stat("42 (my (odd) cmd) S 7 42 42 0"), Some(7));
        assert_eq!(parent_from_stat("garbage"), None);
    }

    #[test]
    fn the_tree_holds_every_descendant_and_nothing_else() {
        let parents = HashMap::from([(10, 1), (11, 10), (12, 11), (13, 10), (20, 1)]);
        let mut t = tree(10, &parents);
        t.sort_unstable();
        assert_eq!(t, vec![10, 11, 12, 13]);
    }
}
