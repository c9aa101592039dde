//! The control socket's rollout requests: `apply` (the spec validated here again, then
//! applied or, dry, only planned), `undo`, and `rollout` (the status streamed with the
//! last rollout failure, for `herdsman rollout status`).

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use herdsman_core::{ApplyPlan, CoreError, Event, EventKind, EventStream, Received, RolloutPhase};
use herdsman_spec::SpecError;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::watch;

use super::{send, Session};
use crate::control::Answer;

/// Bound of an `apply` or `undo` (the deployment answers within 30 s itself).
const APPLY_TIMEOUT: Duration = Duration::from_secs(35);

/// How long a `rollout status` that finds a rollout reverted waits for the failure that
/// caused it to be remembered (see [`LastFailure::for_rollout`]).
const FAILURE_WAIT: Duration = Duration::from_secs(2);

/// The last `rollout_failed` event, so a `rollout status` that connects after a failure
/// can still say why it failed and show the failing replicas' log tails.
#[derive(Debug, Clone)]
pub(crate) struct LastFailure(Arc<watch::Sender<Option<Event>>>);

impl Default for LastFailure {
    fn default() -> Self {
        LastFailure(Arc::new(watch::channel(None).0))
    }
}

impl LastFailure {
    /// Remember `event` if it is a rollout failure.
    pub(crate) fn observe(&self, event: &Event) {
        if matches!(event.kind, EventKind::RolloutFailed { .. }) {
            self.0.send_replace(Some(event.clone()));
        }
    }

    /// The last rollout failure, if any.
    pub(crate) fn get(&self) -> Option<Event> {
        self.0.borrow().clone()
    }

    /// The last rollout failure, for a status showing `rollout` (its revision and
    /// phase). The board shows a revert as soon as the deployment starts it, and this
    /// record learns of the failure from the event bus, another path: a `rollout status`
    /// connecting in between would see the revert without its cause, and end there. So
    /// for a revert of revision `r` this waits (at most `wait`) for the failure of
    /// revision `r - 1`. Only a failed rollout's revert shows these phases (`undo`
    /// rolls forward to the previous spec), so the wait ends with the failure.
    pub(crate) async fn for_rollout(
        &self,
        rollout: Option<(u64, RolloutPhase)>,
        wait: Duration,
    ) -> Option<Event> {
        let Some((revision, RolloutPhase::Reverting | RolloutPhase::Reverted)) = rollout else {
            return self.get();
        };
        let failed = revision.saturating_sub(1);
        let mut seen = self.0.subscribe();
        let covers = |e: &Option<Event>| {
            matches!(e, Some(Event { kind: EventKind::RolloutFailed { revision, .. }, .. })
                if *revision >= failed)
        };
        let found = match tokio::time::timeout(wait, seen.wait_for(covers)).await {
            Ok(Ok(event)) => event.clone(),
            _ => None,
        };
        found.or_else(|| self.get())
    }

    /// Remember failures from `events` until the deployment is gone or `stop` is set.
    pub(crate) async fn feed(self, mut events: EventStream, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                r = events.recv() => match r {
                    Some(Received::Event(e)) => self.observe(&e),
                    Some(Received::Missed(_)) => {}
                    None => return,
                },
                _ = crate::stop::stopped(&mut stop) => return,
            }
        }
    }
}

/// Why a spec sent with `apply` is refused, every problem on its own line.
pub(crate) fn invalid(file: &str, e: SpecError) -> String {
    match e {
        SpecError::Invalid { problems } => {
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            format!(
                "{file} is invalid; nothing was changed:\n{}",
                lines.join("\n")
            )
        }
        e @ SpecError::Read { .. } => {
            format!("{:#}; nothing was changed", anyhow::Error::new(e))
        }
    }
}

/// The final message after a plan.
pub(crate) fn outcome(plan: &ApplyPlan, dry_run: bool) -> String {
    if dry_run {
        "dry run: nothing was changed".to_string()
    } else if plan.is_noop() {
        String::new()
    } else if plan.rolled().is_empty() {
        format!("revision {} applied", plan.revision)
    } else {
        format!(
            "revision {} is rolling out; follow it with `herdsman rollout status`",
            plan.revision
        )
    }
}

impl Session {
    /// Validate `spec` and apply it (or only plan it, `dry_run`).
    pub(super) async fn apply(
        &mut self,
        write: &mut OwnedWriteHalf,
        spec: &str,
        file: &str,
        base_dir: &Path,
        dry_run: bool,
    ) -> io::Result<()> {
        let spec = match herdsman_spec::parse_str(spec, file, base_dir) {
            Ok(spec) => spec,
            Err(e) => return send(write, &Answer::failed(invalid(file, e))).await,
        };
        let r = tokio::time::timeout(APPLY_TIMEOUT, self.handle.apply(spec, dry_run)).await;
        self.planned(write, r, dry_run).await
    }

    /// Roll back to the spec before the current one.
    pub(super) async fn undo(&mut self, write: &mut OwnedWriteHalf) -> io::Result<()> {
        let r = tokio::time::timeout(APPLY_TIMEOUT, self.handle.undo()).await;
        self.planned(write, r, false).await
    }

    async fn planned(
        &mut self,
        write: &mut OwnedWriteHalf,
        r: Result<Result<ApplyPlan, CoreError>, tokio::time::error::Elapsed>,
        dry_run: bool,
    ) -> io::Result<()> {
        match r {
            Ok(Ok(plan)) => {
                let message = outcome(&plan, dry_run);
                send(write, &Answer::Plan { plan, dry_run }).await?;
                send(write, &Answer::Ok { message }).await
            }
            Ok(Err(e)) => send(write, &Answer::failed(e.to_string())).await,
            Err(_) => {
                send(
                    write,
                    &Answer::failed("the deployment did not answer in time"),
                )
                .await
            }
        }
    }

    /// The last rollout failure (if any), then the status now and after every event
    /// (coalesced), with each new rollout failure sent before the status that shows it.
    pub(super) async fn rollout(&mut self, write: &mut OwnedWriteHalf) -> io::Result<()> {
        let mut events = self.handle.subscribe();
        let rollout = self.handle.status().rollout.map(|r| (r.revision, r.phase));
        if let Some(event) = self.failures.for_rollout(rollout, FAILURE_WAIT).await {
            send(write, &Answer::Event { event }).await?;
        }
        send(write, &self.status_answer()).await?;
        loop {
            let mut next = events.recv().await;
            loop {
                match next {
                    None => return Ok(()),
                    Some(Received::Event(event))
                        if matches!(event.kind, EventKind::RolloutFailed { .. }) =>
                    {
                        send(write, &Answer::Event { event }).await?;
                    }
                    Some(_) => {}
                }
                match events.try_recv() {
                    Some(r) => next = Some(r),
                    None => break,
                }
            }
            send(write, &self.status_answer()).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herdsman_core::{Change, ServiceChange};

    fn failed(revision: u64) -> Event {
        Event {
            at_ms: 10,
            deployment: "shop".into(),
            kind: EventKind::RolloutFailed {
                revision,
                reason: "web: replica 3 of the new spec is crash looping or failed".into(),
                reverting: true,
                failing: Vec::new(),
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_status_of_a_revert_waits_for_the_failure_that_caused_it() {
        let last = LastFailure::default();
        let later = last.clone();
        let t0 = tokio::time::Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            later.observe(&failed(2));
        });
        let found = last
            .for_rollout(Some((3, RolloutPhase::Reverted)), Duration::from_secs(2))
            .await;
        assert_eq!(found, Some(failed(2)));
        assert_eq!(t0.elapsed(), Duration::from_millis(50));
        // An older failure does not explain a later revert; the wait is bounded.
        let found = last
            .for_rollout(Some((9, RolloutPhase::Reverted)), Duration::from_secs(2))
            .await;
        assert_eq!(found, Some(failed(2)));
        assert_eq!(t0.elapsed(), Duration::from_millis(2050));
        // Nothing to wait for while a rollout progresses.
        let found = last
            .for_rollout(Some((9, RolloutPhase::Progressing)), Duration::from_secs(2))
            .await;
        assert_eq!(found, Some(failed(2)));
        assert_eq!(t0.elapsed(), Duration::from_millis(2050));
    }

    #[test]
    fn the_last_rollout_failure_is_remembered_and_nothing_else() {
        let last = LastFailure::default();
        assert_eq!(last.get(), None);
        last.observe(&failed(2));
        last.observe(&Event {
            at_ms: 20,
            deployment: "shop".into(),
            kind: EventKind::RolloutComplete { revision: 3 },
        });
        assert_eq!(last.get(), Some(failed(2)));
        last.observe(&failed(4));
        assert_eq!(last.get(), Some(failed(4)));
    }

    #[test]
    fn an_invalid_spec_is_refused_with_every_problem_and_says_nothing_changed() {
        let e = herdsman_spec::parse_str(
            "version: v1\ndeployment: shop\nservices:\n  web:\n    scale: {mode: fixed, replicas: -1}\n",
            "new.yaml",
            Path::new("/tmp"),
        )
        .expect_err("invalid");
        let why = invalid("new.yaml", e);
        assert!(
            why.starts_with("new.yaml is invalid; nothing was changed:\n"),
            "{why}"
        );
        assert!(why.contains("new.yaml:5:"), "{why}");
    }

    #[test]
    fn the_outcome_says_whether_anything_changed_and_how_to_follow_it() {
        let roll = ApplyPlan {
            revision: 2,
            changes: vec![ServiceChange {
                service: "web".into(),
                change: Change::Roll {
                    strategy: "rolling".into(),
                    replicas: 3,
                    fields: vec!["command".into()],
                },
            }],
        };
        assert_eq!(outcome(&roll, true), "dry run: nothing was changed");
        assert!(outcome(&roll, false).contains("herdsman rollout status"));
        let same = ApplyPlan {
            revision: 1,
            changes: vec![ServiceChange {
                service: "web".into(),
                change: Change::Unchanged,
            }],
        };
        assert_eq!(outcome(&same, false), "");
    }
}
