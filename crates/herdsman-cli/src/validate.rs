//! `herdsman validate FILE...`: check specs, one line per problem on stderr; and a
//! warning for each program that does not exist on this machine (the spec is still valid:
//! it may be meant for another machine).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use herdsman_spec::{load, Deployment, ReplicaVars, SpecError};

use crate::terminal::escape;

/// Every file is valid.
const VALID: u8 = 0;
/// Some file could not be read (and none was invalid).
const UNREADABLE: u8 = 1;
/// Some file is invalid.
const INVALID: u8 = 2;

/// Check each file and report; the exit code says the worst outcome: invalid (2), then
/// unreadable (1), else 0.
pub(crate) fn run(files: &[PathBuf]) -> ExitCode {
    // Write errors (a closed pipe) are ignored: the exit code still tells the outcome,
    // and `println!` would panic on them.
    let mut out = io::stdout().lock();
    let mut err = io::stderr().lock();
    let mut worst = VALID;
    for file in files {
        match load(file) {
            Ok(d) => {
                let shown = file.display().to_string();
                for warning in missing_programs(&d, &search_path()) {
                    let _ = writeln!(err, "{}", escape(&format!("{shown}: warning: {warning}")));
                }
                let _ = writeln!(out, "{}: valid ({})", escape(&shown), summary(&d));
            }
            Err(SpecError::Invalid { problems }) => {
                worst = INVALID;
                for p in &problems {
                    let _ = writeln!(err, "{}", escape(&p.to_string()));
                }
            }
            Err(e @ SpecError::Read { .. }) => {
                worst = worst.max(UNREADABLE);
                // `{:#}` prints the error and its causes on one line.
                let _ = writeln!(err, "{:#}", anyhow::Error::new(e));
            }
        }
    }
    let _ = out.flush();
    ExitCode::from(worst)
}

/// The directories a program name without a `/` is looked up in: those of `PATH`, after
/// the directory of this herdsman, which `herdsman run` puts first.
fn search_path() -> Vec<PathBuf> {
    let own = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    let path = std::env::var_os("PATH").unwrap_or_default();
    own.into_iter()
        .chain(std::env::split_paths(&path))
        .collect()
}

/// A warning for each service whose program (replica 0's, templates expanded) is not an
/// executable file here: a path is looked up relative to the service's workdir (or the
/// current directory), a bare name in `dirs`.
fn missing_programs(d: &Deployment, dirs: &[PathBuf]) -> Vec<String> {
    let mut warnings = Vec::new();
    for s in &d.services {
        let Some(command) = &s.command else { continue };
        let Some(program) = command.entrypoint.first() else {
            continue;
        };
        let program = program.expand(&ReplicaVars::new(d, s, 0));
        let (found, looked) = if program.contains('/') {
            let base = command
                .workdir
                .clone()
                .or_else(|| std::env::current_dir().ok())
                .unwrap_or_default();
            let at = base.join(&program);
            (is_executable(&at), format!("at {}", at.display()))
        } else {
            let found = dirs.iter().any(|dir| is_executable(&dir.join(&program)));
            (found, "in PATH".to_string())
        };
        if !found {
            warnings.push(format!(
                "services.{}.command.entrypoint: program \"{program}\" not found {looked} \
                 (the spec is valid, but `herdsman run` here could not start it)",
                s.name
            ));
        }
    }
    warnings
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `3 services, 7 replicas`.
fn summary(d: &Deployment) -> String {
    let services = d.services.len();
    let replicas: u64 = d
        .services
        .iter()
        .map(|s| u64::from(s.initial_replicas()))
        .sum();
    format!(
        "{services} service{}, {replicas} replica{}",
        plural(services as u64),
        plural(replicas)
    )
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
