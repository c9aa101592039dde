//! `herdsman validate FILE...`: check specs, one line per problem on stderr.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use herdsman_spec::{load, Deployment, SpecError};

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
                let _ = writeln!(out, "{}: valid ({})", file.display(), summary(&d));
            }
            Err(SpecError::Invalid { problems }) => {
                worst = INVALID;
                for p in &problems {
                    let _ = writeln!(err, "{p}");
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
