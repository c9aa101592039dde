//! What a replica's process is: argv, environment and workdir expanded from the spec once
//! at create, and the clear errors given when it cannot be started.

use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Stdio;

use herdsman_probe::{ChildOutput, ChildSpec, CommandRequest};

use crate::{ContainerId, ContainerSpec, RuntimeError};

/// A replica's command line, environment and working directory, ready to spawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Launch {
    /// Program and arguments; never empty.
    pub(crate) argv: Vec<String>,
    /// Variables added to the inherited environment.
    pub(crate) env: Vec<(String, String)>,
    /// Working directory; `None` inherits the runtime's.
    pub(crate) workdir: Option<PathBuf>,
}

impl Launch {
    /// Expand the service's command and environment for one replica. The environment is the
    /// template variables (`REPLICA`, `PORT`, `PORT_<NAME>`, `SERVICE`, `DEPLOYMENT`)
    /// overlaid with the service's `env`, so an explicit `env` entry wins.
    ///
    /// # Errors
    /// [`RuntimeError::Start`] when the service has no `command` or an empty entrypoint.
    pub(crate) fn from_spec(
        id: &ContainerId,
        spec: &ContainerSpec,
    ) -> Result<Launch, RuntimeError> {
        let service = &spec.service;
        let Some(command) = &service.command else {
            let has = match &service.image {
                Some(image) => format!("only `image` ({image})"),
                None => "neither".to_string(),
            };
            return Err(start_error(
                id,
                format!(
                    "the process runtime needs `command` (entrypoint and args) to run service {}, which has {has}",
                    service.name
                ),
            ));
        };
        let argv: Vec<String> = command
            .entrypoint
            .iter()
            .chain(&command.args)
            .map(|t| t.expand(&spec.vars))
            .collect();
        if command.entrypoint.is_empty() || argv.first().is_none_or(|p| p.is_empty()) {
            return Err(start_error(
                id,
                format!("service {} has an empty `command.entrypoint`", service.name),
            ));
        }
        let mut env = spec.vars.as_env();
        for (name, value) in &service.env {
            env.insert(name.clone(), value.expand(&spec.vars));
        }
        Ok(Launch {
            argv,
            env: env.into_iter().collect(),
            workdir: command.workdir.clone(),
        })
    }

    /// The program, as written in the spec.
    pub(crate) fn program(&self) -> &str {
        self.argv.first().map(String::as_str).unwrap_or_default()
    }

    /// Check the workdir before spawning: the OS reports a missing workdir and a missing
    /// program with the same error, so the workdir is ruled out first.
    ///
    /// # Errors
    /// [`RuntimeError::Start`] naming the workdir.
    pub(crate) fn check_workdir(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        let Some(dir) = &self.workdir else {
            return Ok(());
        };
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(start_error(
                id,
                format!("workdir {} is not a directory", dir.display()),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(start_error(
                id,
                format!("workdir {} does not exist", dir.display()),
            )),
            Err(e) => Err(start_error(
                id,
                format!("cannot use workdir {}: {e}", dir.display()),
            )),
        }
    }

    /// The command to spawn: its own process group (so a signal to the group reaches
    /// everything it forks), stdin closed, stdout and stderr to `log` (a file the replica
    /// then owns) or, without one, piped for the log buffer.
    pub(crate) fn command(
        &self,
        log: Option<&std::fs::File>,
    ) -> io::Result<tokio::process::Command> {
        let mut cmd = tokio::process::Command::new(self.program());
        cmd.args(&self.argv[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .process_group(0)
            .stdin(Stdio::null());
        match log {
            Some(file) => {
                cmd.stdout(file.try_clone()?).stderr(file.try_clone()?);
            }
            None => {
                cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
        }
        if let Some(dir) = &self.workdir {
            cmd.current_dir(dir);
        }
        Ok(cmd)
    }

    /// The same command for a child born in its cgroup
    /// ([`herdsman_probe::Cgroup::spawn_into`]): its own process group, stdin closed,
    /// stdout and stderr to `log` or, without one, to pipes.
    pub(crate) fn child_spec<'a>(&'a self, log: Option<&'a std::fs::File>) -> ChildSpec<'a> {
        ChildSpec {
            argv: &self.argv,
            env: &self.env,
            workdir: self.workdir.as_deref(),
            output: match log {
                Some(file) => ChildOutput::File(file.as_fd()),
                None => ChildOutput::Pipe,
            },
        }
    }

    /// The error for a failed spawn, naming the program.
    pub(crate) fn spawn_error(&self, id: &ContainerId, err: &io::Error) -> RuntimeError {
        let program = self.program();
        let reason = match err.kind() {
            io::ErrorKind::NotFound if program.contains('/') => {
                // A relative path is resolved in the workdir (exec happens after chdir).
                let place = match &self.workdir {
                    Some(dir) if !program.starts_with('/') => {
                        format!(" in workdir {}", dir.display())
                    }
                    _ => String::new(),
                };
                format!(
                    "program {program} not found{place} (no such file, or its #! interpreter is missing)"
                )
            }
            io::ErrorKind::NotFound => format!("program {program} not found in PATH"),
            io::ErrorKind::PermissionDenied => {
                format!("permission denied executing {program} (is it executable?)")
            }
            _ => format!("cannot execute {program}: {err}"),
        };
        start_error(id, reason)
    }

    /// A request to run a shell command line with this replica's environment and workdir.
    pub(crate) fn exec_request(&self, command: &str) -> CommandRequest {
        CommandRequest {
            argv: vec!["sh".into(), "-c".into(), command.into()],
            env: self.env.clone(),
            workdir: self.workdir.clone(),
            cgroup: None,
        }
    }
}

/// A [`RuntimeError::Start`] for `id`.
pub(crate) fn start_error(id: &ContainerId, reason: String) -> RuntimeError {
    RuntimeError::Start {
        id: id.to_string(),
        reason,
    }
}
