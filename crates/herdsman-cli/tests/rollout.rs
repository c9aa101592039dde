//! Rollouts on real processes: `herdsman apply` rolls an HTTP service to a new version
//! while a client polls it (no failed request, never fewer ready replicas than desired),
//! a version that crashes at start is rolled back by itself, `--dry-run` and invalid
//! specs (through `apply` and through SIGHUP) change nothing, `rollout undo` goes back,
//! and `rollout status` exits by the outcome. Loopback only; every process is stopped by
//! the `Herdsman` guard.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use support::*;
use tokio::task::JoinHandle;

const LIMIT: Duration = Duration::from_secs(90);
const REPLICAS: u32 = 3;

/// The service `web`: 3 replicas of the workload answering `GET /` with `body`, each
/// draining for 2 s after its stop signal (as a server behind a load balancer
/// does), rolled one surge replica at a time with none unavailable.
fn yaml(base: u16, body: &str, extra_args: &str) -> String {
    format!(
        r#"version: v1
deployment: t
services:
  web:
    command:
      entrypoint: ["herdsman", "workload"]
      args: ["--port", "${{PORT}}", "--body", "{body}", "--drain", "2s"{extra_args}]
    scale: {{mode: fixed, replicas: {REPLICAS}}}
    endpoints:
      - {{name: http, protocol: http, port: {base}}}
    health:
      start_interval: 100ms
      interval: 1s
      timeout: 1s
      check: {{type: http, url: "http://127.0.0.1:${{PORT}}/healthz", expect_status: 200}}
    restart: {{max_restarts: 1, window: 1m}}
    update: {{max_surge: 1, max_unavailable: 0, progress_deadline: 60s}}
    stop_grace_period: 5s
"#
    )
}

/// A `herdsman run` of `yaml(base, "v1", "")` with its API on `api` and its state in
/// `state/`.
struct Run {
    h: Herdsman,
    spec: Spec,
    state: PathBuf,
    api: String,
    base: u16,
}

impl Run {
    async fn start() -> Run {
        // Replicas 0-2 and the surge replica 3.
        let base = free_ports(REPLICAS as u16 + 1);
        let spec = spec(&yaml(base, "v1", ""));
        let state = spec.dir.path().join("state");
        let api = format!("127.0.0.1:{}", free_port());
        let mut h = Herdsman::start(&[
            "run",
            s(&spec.path),
            "--api",
            &api,
            "--state-dir",
            s(&state),
        ]);
        let st = stable(&api, &h).await;
        h.seen_pids = pids(&st);
        Run {
            h,
            spec,
            state,
            api,
            base,
        }
    }

    /// Write `text` to `name` beside the running spec; its path.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.spec.dir.path().join(name);
        std::fs::write(&path, text).expect("spec written");
        path
    }

    /// The spec of version `body`.
    fn version(&self, body: &str, extra_args: &str) -> String {
        yaml(self.base, body, extra_args)
    }

    /// `herdsman ARGS... --state-dir STATE` to completion, without blocking the poller.
    async fn verb(&self, args: &[&str]) -> (ExitStatus, String, String) {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(["--state-dir".to_string(), s(&self.state).to_string()]);
        let out = tokio::time::timeout(
            LIMIT,
            tokio::process::Command::new(HERDSMAN)
                .args(&all)
                .env_remove("HERDSMAN_API_TOKEN")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("herdsman {all:?} did not end within {LIMIT:?}"))
        .expect("herdsman runs");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// What each replica 0-2 answers on `GET /` now, by replica.
    async fn bodies(&self) -> BTreeMap<u32, String> {
        let mut bodies = BTreeMap::new();
        for r in 0..REPLICAS {
            let url = format!("http://127.0.0.1:{}/", self.base + r as u16);
            if let Ok(resp) = client().get(url).send().await {
                if let Ok(text) = resp.text().await {
                    bodies.insert(r, text.trim().to_string());
                }
            }
        }
        bodies
    }

    /// Wait until replicas 0-2 all answer `body` and the service has no other replica.
    async fn all_on(&mut self, body: &str) {
        let want: BTreeMap<u32, String> = (0..REPLICAS).map(|r| (r, body.to_string())).collect();
        let what = format!("every replica answers {body} and the surge replica is gone");
        eventually(LIMIT, &what, || async {
            let st = status(&self.api).await?;
            let n = st["services"][0]["replicas"].as_array()?.len();
            (n == REPLICAS as usize && self.bodies().await == want).then_some(())
        })
        .await;
        if let Some(st) = status(&self.api).await {
            self.h.seen_pids.extend(pids(&st));
        }
    }
}

/// What the polling client saw.
#[derive(Debug, Default)]
struct Seen {
    ok: u64,
    failures: Vec<String>,
    bodies: BTreeSet<String>,
    /// Fewest replicas shown ready at once.
    fewest_ready: usize,
    pids: BTreeSet<u32>,
}

/// A client that keeps sending `GET /` to the replicas the status shows ready, round
/// robin, each on its own port (`base + replica`), until stopped.
struct Poller {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Seen>,
}

impl Poller {
    fn start(api: &str, base: u16) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let (api, flag) = (api.to_string(), stop.clone());
        let task = tokio::spawn(async move {
            let c = client();
            let mut seen = Seen {
                fewest_ready: usize::MAX,
                ..Seen::default()
            };
            let mut next = 0usize;
            while !flag.load(Ordering::Relaxed) {
                let Some(st) = status(&api).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                seen.pids.extend(pids(&st));
                let ready: Vec<u64> = st["services"][0]["replicas"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|r| r["state"] == "running" && r["healthy"] == true)
                    .filter_map(|r| r["replica"].as_u64())
                    .collect();
                seen.fewest_ready = seen.fewest_ready.min(ready.len());
                if ready.is_empty() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                let r = ready[next % ready.len()];
                next += 1;
                let url = format!("http://127.0.0.1:{}/", u64::from(base) + r);
                match c.get(&url).send().await {
                    Ok(resp) if resp.status().is_success() => {
                        seen.ok += 1;
                        if let Ok(text) = resp.text().await {
                            seen.bodies.insert(text.trim().to_string());
                        }
                    }
                    Ok(resp) => seen
                        .failures
                        .push(format!("replica {r}: status {}", resp.status())),
                    Err(e) => seen.failures.push(format!("replica {r}: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            seen
        });
        Poller { stop, task }
    }

    async fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(LIMIT, self.task)
            .await
            .expect("the poller stops")
            .expect("the poller does not panic")
    }
}

fn rollout_of(st: &Value) -> &Value {
    &st["rollout"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_rolls_every_replica_to_the_new_version_while_clients_see_no_failure() {
    let mut r = Run::start().await;
    assert_eq!(r.bodies().await.values().collect::<Vec<_>>(), ["v1"; 3]);
    let poller = Poller::start(&r.api, r.base);
    let v2 = r.write("v2.yaml", &r.version("v2", ""));
    let (code, out, err) = r.verb(&["apply", s(&v2)]).await;
    assert!(code.success(), "apply failed: {out}{err}\n{}", r.h.output());
    assert!(out.contains("revision 2:"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("web") && l.contains("changed") && l.contains("command")),
        "{out}"
    );
    let (code, out, err) = r.verb(&["rollout", "status", "--timeout", "80s"]).await;
    assert!(
        code.success(),
        "rollout status: {out}{err}\n{}",
        r.h.output()
    );
    assert!(out.contains("rollout of revision 2 complete"), "{out}");
    r.all_on("v2").await;
    let seen = poller.finish().await;
    r.h.seen_pids.extend(seen.pids.iter().copied());
    assert!(
        seen.failures.is_empty(),
        "{} failed requests (of {}): {:?}\n{}",
        seen.failures.len(),
        seen.ok + seen.failures.len() as u64,
        seen.failures,
        r.h.output()
    );
    assert!(seen.ok >= 20, "the client kept polling: {seen:?}");
    assert!(
        seen.bodies.contains("v1") && seen.bodies.contains("v2"),
        "{seen:?}"
    );
    assert!(
        seen.fewest_ready >= REPLICAS as usize,
        "max_unavailable 0: never fewer than {REPLICAS} ready, saw {}",
        seen.fewest_ready
    );
    let st = status(&r.api).await.expect("status");
    assert_eq!(rollout_of(&st)["phase"], "complete", "{st}");
    assert_eq!(rollout_of(&st)["revision"], 2, "{st}");
    let metrics = client()
        .get(format!("http://{}/metrics", r.api))
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    for line in [
        "herdsman_rollout_revision{deployment=\"t\"} 2",
        "herdsman_rollout_phase{deployment=\"t\",phase=\"complete\"} 1",
        "herdsman_rollout_updated_replicas{deployment=\"t\",service=\"web\"} 3",
        "herdsman_rollouts_total{deployment=\"t\",outcome=\"complete\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_crashes_at_start_is_rolled_back_while_the_old_replicas_serve() {
    let mut r = Run::start().await;
    let old_pids = r.h.seen_pids.clone();
    let poller = Poller::start(&r.api, r.base);
    // An argument the workload does not know: it exits at once, every time.
    let bad = r.write("bad.yaml", &r.version("v3", r#", "--no-such-flag""#));
    let (code, out, err) = r.verb(&["apply", s(&bad)]).await;
    assert!(code.success(), "apply failed: {out}{err}");
    let (code, out, err) = r.verb(&["rollout", "status", "--timeout", "80s"]).await;
    assert_eq!(code.code(), Some(1), "{out}{err}\n{}", r.h.output());
    assert!(err.contains("rolled back"), "{out}{err}");
    assert!(
        err.contains("revision 2 failed") && err.contains("crash looping or failed"),
        "the reason is named: {out}{err}"
    );
    assert!(err.contains("web/3"), "the failing replica is named: {err}");
    assert!(
        err.contains("| ") && err.contains("--no-such-flag"),
        "with the tail of its output: {err}"
    );
    r.all_on("v1").await;
    let seen = poller.finish().await;
    r.h.seen_pids.extend(seen.pids.iter().copied());
    assert!(
        seen.failures.is_empty(),
        "failed requests: {:?}\n{}",
        seen.failures,
        r.h.output()
    );
    assert_eq!(seen.bodies, BTreeSet::from(["v1".to_string()]));
    let st = status(&r.api).await.expect("status");
    assert_eq!(rollout_of(&st)["phase"], "reverted", "{st}");
    for pid in &old_pids {
        assert!(alive(*pid), "old replica {pid} was never stopped");
    }
    // Asked again, with nothing in progress: the last outcome, still a failure.
    let (code, _, err) = r.verb(&["rollout", "status"]).await;
    assert_eq!(code.code(), Some(1), "{err}");
    assert!(err.contains("rolled back"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_prints_the_plan_and_changes_nothing() {
    let r = Run::start().await;
    let before = pids(&status(&r.api).await.expect("status"));
    let v2 = r.write("v2.yaml", &r.version("v2", ""));
    let (code, out, err) = r.verb(&["apply", "--dry-run", s(&v2)]).await;
    assert!(code.success(), "{out}{err}");
    assert!(out.contains("revision 2 would change:"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("web") && l.contains("changed") && l.contains("command")),
        "{out}"
    );
    assert!(out.contains("dry run: nothing was changed"), "{out}");
    let (code, json, err) = r.verb(&["apply", "--dry-run", "--json", s(&v2)]).await;
    assert!(code.success(), "{err}");
    let plan: Value = serde_json::from_str(json.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(plan["changes"][0]["change"], "roll", "{plan}");
    let st = status(&r.api).await.expect("status");
    assert_eq!(rollout_of(&st), &Value::Null, "no rollout: {st}");
    assert_eq!(pids(&st), before, "no replica was replaced");
    assert_eq!(r.bodies().await.values().collect::<Vec<_>>(), ["v1"; 3]);
    let (code, out, err) = r.verb(&["rollout", "status"]).await;
    assert!(code.success(), "{err}");
    assert!(out.contains("no rollout yet"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_changes_nothing_through_apply_or_sighup_and_says_why() {
    let mut r = Run::start().await;
    let before = pids(&status(&r.api).await.expect("status"));
    let broken = r.version("v2", "").replace("replicas: 3", "replicas: many");
    let bad = r.write("bad.yaml", &broken);
    let (code, out, err) = r.verb(&["apply", s(&bad)]).await;
    assert_eq!(code.code(), Some(1), "{out}{err}");
    assert!(err.contains("bad.yaml:"), "the problem is located: {err}");
    assert!(err.contains("services.web.scale.replicas"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");

    // The run's own file, broken, then SIGHUP.
    std::fs::write(&r.spec.path, &broken).expect("spec rewritten");
    r.h.signal(Signal::SIGHUP);
    let said = eventually(LIMIT, "the SIGHUP refusal is printed", || {
        let out = r.h.stdout();
        async move { out.contains("nothing was changed").then_some(out) }
    })
    .await;
    assert!(
        said.contains("SIGHUP:") && said.contains("is invalid"),
        "{said}"
    );
    assert!(said.contains("services.web.scale.replicas"), "{said}");
    let st = status(&r.api).await.expect("still running after SIGHUP");
    assert_eq!(rollout_of(&st), &Value::Null, "no rollout: {st}");
    assert_eq!(pids(&st), before, "no replica was replaced");

    // Fixed, then SIGHUP again: applied.
    std::fs::write(&r.spec.path, r.version("v2", "")).expect("spec rewritten");
    r.h.signal(Signal::SIGHUP);
    eventually(LIMIT, "the SIGHUP apply is printed", || {
        let out = r.h.stdout();
        async move { out.contains("SIGHUP: applied").then_some(()) }
    })
    .await;
    let (code, out, err) = r.verb(&["rollout", "status", "--timeout", "80s"]).await;
    assert!(code.success(), "{out}{err}\n{}", r.h.output());
    r.all_on("v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_undo_returns_to_the_previous_version() {
    let mut r = Run::start().await;
    let v2 = r.write("v2.yaml", &r.version("v2", ""));
    let (code, out, err) = r.verb(&["apply", s(&v2)]).await;
    assert!(code.success(), "{out}{err}");
    let (code, out, err) = r.verb(&["rollout", "status", "--timeout", "80s"]).await;
    assert!(code.success(), "{out}{err}\n{}", r.h.output());
    r.all_on("v2").await;
    let (code, out, err) = r.verb(&["rollout", "undo"]).await;
    assert!(code.success(), "{out}{err}");
    assert!(out.contains("revision 3:"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("web") && l.contains("changed")),
        "{out}"
    );
    let (code, out, err) = r.verb(&["rollout", "status", "--timeout", "80s"]).await;
    assert!(code.success(), "{out}{err}\n{}", r.h.output());
    assert!(out.contains("rollout of revision 3 complete"), "{out}");
    r.all_on("v1").await;
}
