//! SIGHUP to `herdsman run`: read the spec file it was started with again and apply it,
//! as `herdsman apply FILE` would. An invalid file changes nothing and says why.

use std::path::{Path, PathBuf};

use herdsman_core::DeploymentHandle;
use herdsman_spec::SpecError;
use tokio::signal::unix::Signal;
use tokio::sync::watch;

/// On each SIGHUP (`hangup`), apply `file` again; each outcome is told to `say`, one line
/// at a time, and logged. Returns when `stop` is set.
pub(crate) async fn on_hangup(
    mut hangup: Signal,
    file: PathBuf,
    handle: DeploymentHandle,
    say: impl Fn(&str) + Send + 'static,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = hangup.recv() => if r.is_none() { return },
            _ = crate::stop::stopped(&mut stop) => return,
        }
        for line in reload(&file, &handle).await {
            say(&line);
        }
    }
}

/// Read, validate and apply `file`; what to say about it.
async fn reload(file: &Path, handle: &DeploymentHandle) -> Vec<String> {
    let shown = file.display();
    let spec = match herdsman_spec::load(file) {
        Ok(spec) => spec,
        Err(e) => {
            let lines = refused(&shown.to_string(), e);
            tracing::warn!(file = %shown, problems = %lines[1..].join("; "), "SIGHUP: spec not applied");
            return lines;
        }
    };
    match handle.apply(spec, false).await {
        Ok(plan) => {
            tracing::info!(file = %shown, revision = plan.revision, "SIGHUP: spec applied");
            let table = crate::rollout_cmd::plan_table(&plan, false);
            let mut lines = vec![format!("SIGHUP: applied {shown}")];
            lines.extend(table.lines().map(String::from));
            lines
        }
        Err(e) => {
            tracing::warn!(file = %shown, error = %e, "SIGHUP: spec not applied");
            vec![format!(
                "SIGHUP: cannot apply {shown}: {e}; nothing was changed"
            )]
        }
    }
}

/// The lines saying why `file` was not applied: a heading, then each problem.
fn refused(file: &str, e: SpecError) -> Vec<String> {
    let mut lines = vec![format!(
        "SIGHUP: {file} is invalid; nothing was changed (still running the spec before it):"
    )];
    match e {
        SpecError::Invalid { problems } => {
            lines.extend(problems.iter().map(|p| format!("  {p}")));
        }
        e @ SpecError::Read { .. } => lines.push(format!("  {:#}", anyhow::Error::new(e))),
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_file_and_every_problem() {
        let e = herdsman_spec::parse_str(
            "version: v1\ndeployment: shop\nservices: {}\nbogus: 1\n",
            "deploy.yaml",
            Path::new("/tmp"),
        )
        .expect_err("invalid");
        let lines = refused("deploy.yaml", e);
        assert!(lines[0].contains("deploy.yaml is invalid; nothing was changed"));
        assert!(lines.len() >= 2, "{lines:?}");
        assert!(
            lines[1..].iter().all(|l| l.contains("deploy.yaml:")),
            "{lines:?}"
        );
    }
}
