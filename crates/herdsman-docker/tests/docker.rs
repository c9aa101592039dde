//! DockerRuntime against a real dockerd: exits, checks inside and outside the container,
//! stop grace, exec timeouts, missing images, and adoption by a restarted herdsman.
//! Skipped with a printed reason when no daemon answers, unless `HERDSMAN_DOCKER=required`.

mod support;

use std::time::Duration;

use herdsman_docker::{DockerConfig, DockerRuntime};
use herdsman_probe::Outcome;
use herdsman_runtime::{ExitReason, Runtime, RuntimeError};
use herdsman_spec::{Check, Network, PullPolicy, StopSignal, Template};
use support::*;
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_crash_reports_its_exit_code_and_output_and_the_next_generation_is_a_new_container() {
    let Some(rt) = runtime().await else { return };
    let dep = deployment("crash");
    let _cleanup = Cleanup::new(&dep);
    let svc = service("app", "echo started $REPLICA; exit 3");
    let (id, spec) = replica(&dep, &svc, 0, 0);

    rt.create(&id, &spec).await.expect("create");
    let started = rt.start(&id).await.expect("start");
    let exit = within(PATIENCE, "the crash's exit", started.exit).await;
    assert_eq!(exit.reason, ExitReason::Code(3));
    assert!(
        eventually(Duration::from_secs(5), || async {
            rt.logs(&id, 10) == vec!["started 0".to_string()]
        })
        .await,
        "logs: {:?}",
        rt.logs(&id, 10)
    );

    let next = id.next_generation();
    rt.create(&next, &spec).await.expect("create next");
    let again = rt.start(&next).await.expect("start next");
    assert_eq!(
        names(&docker(), &dep, true).await,
        vec![
            DockerRuntime::container_name(&id),
            DockerRuntime::container_name(&next)
        ],
        "one container per incarnation"
    );
    within(PATIENCE, "the second exit", again.exit).await;
    rt.remove(&id).await.expect("remove");
    rt.remove(&next).await.expect("remove next");
    assert!(names(&docker(), &dep, true).await.is_empty());
}

#[tokio::test]
async fn http_and_tcp_checks_reach_a_bridge_container_and_command_checks_run_inside_it() {
    let Some(rt) = runtime().await else { return };
    let dep = deployment("checks");
    let _cleanup = Cleanup::new(&dep);
    let port = free_port();
    // /www/ok exists only inside the container: a command check that finds it ran there.
    let svc = with_endpoint(
        service(
            "web",
            "echo fine > /www/ok && exec httpd -f -p ${PORT} -h /www",
        ),
        port,
    );
    assert_eq!(svc.network, Network::Bridge);
    let (id, spec) = replica(&dep, &svc, 0, 0);
    rt.create(&id, &spec).await.expect("create");
    let _started = rt.start(&id).await.expect("start");

    let timeout = Duration::from_secs(2);
    let http = Check::Http {
        url: Template::parse("http://127.0.0.1:${PORT}/ok").expect("url"),
        expect_status: Some(200),
    };
    let up = eventually(PATIENCE, || async {
        rt.check(&id, &http, &spec.vars, timeout).await.outcome == Outcome::Success
    })
    .await;
    assert!(up, "http check never passed");
    let tcp = Check::Tcp {
        host: None,
        port: Template::parse("${PORT}").expect("port"),
    };
    let result = rt.check(&id, &tcp, &spec.vars, timeout).await;
    assert_eq!(result.outcome, Outcome::Success, "{result:?}");

    let inside = Check::Command {
        command: Template::parse("test -f /www/ok && test $PORT = ${PORT}").expect("cmd"),
    };
    let result = rt.check(&id, &inside, &spec.vars, timeout).await;
    assert_eq!(result.outcome, Outcome::Success, "{result:?}");
    assert!(
        !std::path::Path::new("/www/ok").exists(),
        "the file must exist only in the container"
    );
    let failing = Check::Command {
        command: Template::literal("echo nope; exit 4"),
    };
    let result = rt.check(&id, &failing, &spec.vars, timeout).await;
    assert!(
        matches!(&result.outcome, Outcome::Failure(m) if m.contains("code 4")),
        "{result:?}"
    );
    rt.stop(&id, StopSignal::KILL, Duration::ZERO)
        .await
        .expect("stop");
    rt.remove(&id).await.expect("remove");
}

#[tokio::test]
async fn a_host_network_container_listens_on_the_host() {
    let Some(rt) = runtime().await else { return };
    let dep = deployment("hostnet");
    let _cleanup = Cleanup::new(&dep);
    let port = free_port();
    let mut svc = with_endpoint(service("web", "exec nc -ll -p ${PORT} -e true"), port);
    svc.network = Network::Host;
    let (id, spec) = replica(&dep, &svc, 0, 0);
    rt.create(&id, &spec).await.expect("create");
    let _started = rt.start(&id).await.expect("start");
    let tcp = Check::Tcp {
        host: None,
        port: Template::parse("${PORT}").expect("port"),
    };
    let up = eventually(PATIENCE, || async {
        rt.check(&id, &tcp, &spec.vars, Duration::from_secs(1))
            .await
            .outcome
            == Outcome::Success
    })
    .await;
    assert!(up, "nothing listened on host port {port}");
    rt.remove(&id).await.expect("remove");
}

#[tokio::test]
async fn an_exec_past_its_timeout_is_killed_with_everything_it_started() {
    let Some(rt) = runtime().await else { return };
    let dep = deployment("exec");
    let _cleanup = Cleanup::new(&dep);
    let svc = service("app", "exec sleep 600");
    let (id, spec) = replica(&dep, &svc, 0, 0);
    rt.create(&id, &spec).await.expect("create");
    let _started = rt.start(&id).await.expect("start");

    let began = Instant::now();
    let out = rt
        .exec(
            &id,
            "sleep 71 & sleep 72; echo never",
            Duration::from_millis(500),
        )
        .await
        .expect("exec");
    assert!(out.timed_out, "{out:?}");
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    let gone = eventually(Duration::from_secs(5), || async {
        let ps = rt
            .exec(&id, "ps", Duration::from_secs(5))
            .await
            .expect("ps");
        !ps.output.contains("sleep 71") && !ps.output.contains("sleep 72")
    })
    .await;
    assert!(gone, "the exec's processes outlived its timeout");

    let ok = rt
        .exec(&id, "echo out; echo err >&2", Duration::from_secs(5))
        .await
        .expect("exec");
    assert_eq!(ok.exit_code, Some(0));
    assert!(
        ok.output.contains("out") && ok.output.contains("err"),
        "{ok:?}"
    );
    rt.remove(&id).await.expect("remove");
}

#[tokio::test]
async fn stop_sends_the_stop_signal_and_kills_only_after_the_grace() {
    let Some(rt) = runtime().await else { return };
    let dep = deployment("grace");
    let _cleanup = Cleanup::new(&dep);
    let stubborn = service("stubborn", "trap '' TERM; while true; do sleep 0.1; done");
    let polite = service(
        "polite",
        "trap 'echo got TERM; exit 0' TERM; while true; do sleep 0.1; done",
    );
    let (sid, sspec) = replica(&dep, &stubborn, 0, 0);
    let (pid_, pspec) = replica(&dep, &polite, 0, 0);
    rt.create(&sid, &sspec).await.expect("create stubborn");
    rt.create(&pid_, &pspec).await.expect("create polite");
    let s = rt.start(&sid).await.expect("start stubborn");
    let p = rt.start(&pid_).await.expect("start polite");
    // Let each shell install its trap.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let grace = Duration::from_secs(2);
    let (stubborn_took, polite_took) = tokio::join!(
        async {
            let t = Instant::now();
            rt.stop(&sid, StopSignal::TERM, grace).await.expect("stop");
            t.elapsed()
        },
        async {
            let t = Instant::now();
            rt.stop(&pid_, StopSignal::TERM, Duration::from_secs(20))
                .await
                .expect("stop");
            t.elapsed()
        }
    );
    assert!(
        stubborn_took >= grace && stubborn_took < grace + Duration::from_secs(5),
        "stubborn stopped after {stubborn_took:?}"
    );
    assert!(
        polite_took < Duration::from_secs(5),
        "polite took {polite_took:?}"
    );
    let s_exit = within(PATIENCE, "stubborn's exit", s.exit).await;
    let p_exit = within(PATIENCE, "polite's exit", p.exit).await;
    assert_eq!(s_exit.reason, ExitReason::Signal(9));
    assert_eq!(p_exit.reason, ExitReason::Code(0));
    assert!(
        eventually(Duration::from_secs(5), || async {
            rt.logs(&pid_, 5).contains(&"got TERM".to_string())
        })
        .await
    );
    rt.remove(&sid).await.expect("remove");
    rt.remove(&pid_).await.expect("remove");
}

#[tokio::test]
async fn the_pull_policy_decides_whether_an_image_is_pulled_and_failures_name_the_image() {
    let Some(rt) = runtime().await else { return };
    let dep = deployment("pull");
    let _cleanup = Cleanup::new(&dep);
    let absent = "herdsman-test/absent:1";
    // No registry answers here (nor knows these images), so any pull fails: a failure
    // means a pull was attempted.
    let cases = [
        (
            absent,
            PullPolicy::Never,
            Some("is not present and its pull_policy is never"),
        ),
        (
            absent,
            PullPolicy::IfNotPresent,
            Some("could not be pulled"),
        ),
        (IMAGE, PullPolicy::Always, Some("could not be pulled")),
        (IMAGE, PullPolicy::IfNotPresent, None),
    ];
    for (i, (image, policy, error)) in cases.into_iter().enumerate() {
        let mut svc = service("app", "true");
        svc.image = Some(image.into());
        svc.pull_policy = policy;
        let (id, spec) = replica(&dep, &svc, 0, i as u64);
        let created = rt.create(&id, &spec).await;
        match (error, created) {
            (None, Ok(())) => rt.remove(&id).await.expect("remove"),
            (Some(want), Err(RuntimeError::Start { reason, .. })) => assert!(
                reason.contains(want) && reason.contains(image),
                "{image} {policy:?}: {reason}"
            ),
            (want, got) => panic!("{image} {policy:?}: expected {want:?}, got {got:?}"),
        }
    }
    assert!(names(&docker(), &dep, true).await.is_empty());
}

#[tokio::test]
async fn a_restarted_herdsman_adopts_running_containers_and_discards_the_rest() {
    let Some(first) = runtime().await else { return };
    let dep = deployment("adopt");
    let _cleanup = Cleanup::new(&dep);
    let current = service("app", "echo hello from $REPLICA; exec sleep 600");
    let mut changed = current.clone();
    changed.env.insert("V".into(), Template::literal("2"));
    let done = service("app", "exit 0");

    let (a, a_spec) = replica(&dep, &current, 0, 4);
    let (b, b_spec) = replica(&dep, &current, 1, 2);
    let (c, c_spec) = replica(&dep, &done, 2, 1);
    for (id, spec) in [(&a, &a_spec), (&b, &b_spec), (&c, &c_spec)] {
        first.create(id, spec).await.expect("create");
    }
    let _a = first.start(&a).await.expect("start a");
    let _b = first.start(&b).await.expect("start b");
    let c_started = first.start(&c).await.expect("start c");
    within(PATIENCE, "c's exit", c_started.exit).await;
    // herdsman dies without cleaning up: its runtime is simply gone.
    drop(first);

    let second = DockerRuntime::connect(DockerConfig::default())
        .await
        .expect("reconnect");
    let survivors = second.survivors(&dep).await.expect("survivors");
    let ids: Vec<_> = survivors.iter().map(|s| s.id.clone()).collect();
    assert_eq!(
        ids,
        vec![a.clone(), b.clone()],
        "only running containers survive"
    );
    assert!(survivors.iter().all(|s| s.pid.is_some()));
    assert!(
        !names(&docker(), &dep, true)
            .await
            .contains(&DockerRuntime::container_name(&c)),
        "an exited container is removed, not left behind"
    );
    // The caller adopts what still runs the current spec and discards the rest.
    let (keep, discard): (Vec<_>, Vec<_>) = survivors
        .into_iter()
        .partition(|s| s.id.replica == 0 && s.run_hash == current.run_hash());
    assert_eq!(discard.len(), 1);
    assert_ne!(discard[0].run_hash, changed.run_hash());
    second
        .discard_survivor(&discard[0], StopSignal::KILL, Duration::ZERO)
        .await
        .expect("discard");
    let adopted = second.adopt(&keep[0], &a_spec).await.expect("adopt");
    assert!(adopted.pid.is_some());
    assert_eq!(
        names(&docker(), &dep, true).await,
        vec![DockerRuntime::container_name(&a)]
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            second.logs(&a, 5) == vec!["hello from 0".to_string()]
        })
        .await,
        "adopted logs: {:?}",
        second.logs(&a, 5)
    );
    let out = second
        .exec(&a, "echo $REPLICA", Duration::from_secs(5))
        .await
        .expect("exec in adopted");
    assert_eq!(out.output.trim(), "0");
    second
        .stop(&a, StopSignal::KILL, Duration::ZERO)
        .await
        .expect("stop adopted");
    let exit = within(PATIENCE, "the adopted exit", adopted.exit).await;
    assert_eq!(exit.reason, ExitReason::Signal(9));
    second.remove(&a).await.expect("remove");
}

#[tokio::test]
async fn a_missing_program_fails_the_start_with_the_daemons_reason() {
    let Some(rt) = runtime().await else { return };
    let dep = deployment("noprog");
    let _cleanup = Cleanup::new(&dep);
    let mut svc = service("app", "true");
    if let Some(command) = svc.command.as_mut() {
        command.entrypoint = vec![Template::literal("/no/such/program")];
        command.args = Vec::new();
    }
    let (id, spec) = replica(&dep, &svc, 0, 0);
    rt.create(&id, &spec).await.expect("create");
    let err = rt.start(&id).await.expect_err("nothing to run");
    assert!(
        matches!(&err, RuntimeError::Start { reason, .. } if reason.contains("/no/such/program")),
        "{err}"
    );
    rt.remove(&id).await.expect("remove");
    assert!(names(&docker(), &dep, true).await.is_empty());
}
