//! No exit is lost across a daemon restart: dockerd is SIGKILLed under a running
//! container's wait and brought back by `.ci/docker-setup`; the exit owed is kept by the
//! reconciler meanwhile and reported with its real status once the daemon answers.
//!
//! It restarts the machine's dockerd, so it runs only with `HERDSMAN_DOCKER=required`
//! (as `.ci/run` sets), and skips with a printed reason otherwise.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use herdsman_runtime::{ExitReason, Runtime};
use support::*;

/// Brings dockerd back however the test ends.
struct Daemon;

impl Daemon {
    fn setup_script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.ci/docker-setup")
    }

    fn ensure_up() -> bool {
        Command::new(Daemon::setup_script())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        Daemon::ensure_up();
    }
}

#[tokio::test]
async fn a_container_whose_daemon_is_killed_and_restarted_still_reports_its_exit() {
    if !required() {
        eprintln!(
            "skipped: this test restarts dockerd; it runs only with HERDSMAN_DOCKER=required"
        );
        return;
    }
    let Some(rt) = runtime().await else { return };
    let dep = deployment("restart");
    let _cleanup = Cleanup::new(&dep);
    let svc = service("app", "exec sleep 600");
    let (id, spec) = replica(&dep, &svc, 0, 0);
    rt.create(&id, &spec).await.expect("create");
    let started = rt.start(&id).await.expect("start");

    let pid: i32 = std::fs::read_to_string("/var/run/docker.pid")
        .expect("dockerd's pid file")
        .trim()
        .parse()
        .expect("a pid");
    let _daemon = Daemon;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL)
        .expect("kill dockerd");
    assert!(
        eventually(Duration::from_secs(10), || async { rt.exits_owed() == 1 }).await,
        "the broken wait did not hand its exit to the reconciler"
    );
    let gone = eventually(Duration::from_secs(30), || async {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |stat| stat.contains(") Z "))
    })
    .await;
    assert!(gone, "dockerd {pid} did not stop");
    assert!(
        Daemon::ensure_up(),
        ".ci/docker-setup could not restart dockerd"
    );

    let exit = within(Duration::from_secs(60), "the exit owed", started.exit).await;
    // Without live-restore the new daemon stops what the old one ran, with the stop
    // signal and grace: `exec sleep` as pid 1 ignores SIGTERM, so SIGKILL, 137.
    assert_eq!(exit.reason, ExitReason::Signal(9), "{exit:?}");
    assert_eq!(rt.exits_owed(), 0);
    rt.remove(&id).await.expect("remove after the restart");
    assert!(names(&docker(), &dep, true).await.is_empty());
}
