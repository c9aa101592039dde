//! What a replica's process is: argv, environment and workdir expanded from the spec once
//! at create, and the clear errors given when it cannot be started.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use herdsman_probe::{ChildOutput, ChildSpec, CommandRequest};
use herdsman_spec::Service;

use crate::{ContainerId, ContainerSpec, RuntimeError};

/// Each service spec's [`Service::run_hash`], computed once per spec rather than at every
/// create: it serializes the spec, which took ~20 µs of each restart on the bench host.
#[derive(Debug, Default)]
pub(crate) struct RunHashes(Mutex<HashMap<usize, (Weak<Service>, String)>>);

impl RunHashes {
    /// The run hash of `service`, by the address of its allocation. An entry's `Weak`
    /// keeps that allocation, so no other spec can be given the same address while the
    /// entry is there; entries whose spec is gone are dropped when a new spec is added.
    pub(crate) fn of(&self, service: &Arc<Service>) -> String {
        let key = Arc::as_ptr(service) as usize;
        let mut known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, hash)) = known.get(&key) {
            return hash.clone();
        }
        known.retain(|_, (spec, _)| spec.strong_count() > 0);
        let hash = service.run_hash();
        known.insert(key, (Arc::downgrade(service), hash.clone()));
        hash
    }
}

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use herdsman_spec::{Service, ServiceKind, Template};

    use super::RunHashes;

    fn spec(name: &str, value: &str) -> Arc<Service> {
        let mut service = Service::new(name, ServiceKind::Service);
        let value = Template::parse(value).expect("a plain template");
        service.env.insert("V".into(), value);
        Arc::new(service)
    }

    #[test]
    fn a_specs_run_hash_is_computed_once_and_each_spec_keeps_its_own() {
        let hashes = RunHashes::default();
        let (one, two) = (spec("a", "1"), spec("a", "2"));
        assert_eq!(hashes.of(&one), one.run_hash());
        assert_eq!(hashes.of(&one), one.run_hash());
        assert_eq!(hashes.of(&two), two.run_hash());
        assert_ne!(hashes.of(&one), hashes.of(&two), "two specs, one hash");
        let known = |h: &RunHashes| h.0.lock().expect("not poisoned").len();
        assert_eq!(known(&hashes), 2, "one entry per spec, however often asked");
    }

    #[test]
    fn a_dropped_specs_hash_is_forgotten_when_another_spec_comes() {
        let hashes = RunHashes::default();
        let old = spec("a", "1");
        hashes.of(&old);
        drop(old);
        let new = spec("a", "2");
        assert_eq!(hashes.of(&new), new.run_hash());
        let entries = hashes.0.lock().expect("not poisoned");
        assert_eq!(entries.len(), 1, "the dropped spec's entry is gone");
        assert!(entries.values().all(|(s, _)| s.strong_count() == 1));
    }
}
