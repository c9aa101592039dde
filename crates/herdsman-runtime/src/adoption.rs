//! Taking over the incarnations an earlier runtime left running: found from the records in
//! the state directory (pid + process start time, cgroup), adopted with their exit watched
//! through a pidfd (they are not this process's children, so the exit code is unknown),
//! or discarded (stop signal, grace, then the whole cgroup or group killed).

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herdsman_probe::Cgroup;
use herdsman_spec::StopSignal;
use rustix::process::{pidfd_open, Pid, PidfdFlags};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::containment::Contained;
use crate::launch::{start_error, Launch};
use crate::log_buffer::LogBuffer;
use crate::log_file::registered;
use crate::process::{
    Incarnation, Output, Phase, ProcessRuntime, Replica, ReplicaState, REAP_AFTER_KILL,
};
use crate::process_group::{to_signal, ProcessGroup};
use crate::records::{start_time, Record};
use crate::{ContainerSpec, ExitReason, ExitWatch, RuntimeError, Started, Survivor};

/// The survivors of `deployment`: recorded incarnations whose main process still runs
/// (same pid, same start time). A record whose main process is gone has its cgroup, if
/// anything is left in it, killed and removed: nobody would ever stop what is in there.
/// Every survivor stays recorded until it is adopted or discarded. A cgroup of the
/// deployment that no live record names (an incarnation started just before herdsman
/// died, before its record was written) is killed and removed: nothing else would.
pub(crate) async fn survivors(rt: &ProcessRuntime, deployment: &str) -> Vec<Survivor> {
    let Some(book) = &rt.ends.records else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut kept = std::collections::BTreeSet::new();
    for record in book.load() {
        if &*record.id.deployment != deployment {
            continue;
        }
        if start_time(record.pid) != Some(record.start_time) {
            if let Some(path) = &record.cgroup {
                if let Err(e) = Cgroup::at(path).kill_and_remove(REAP_AFTER_KILL).await {
                    tracing::warn!(cgroup = %path.display(), error = %e,
                        "cannot clear the cgroup of a replica whose main process is gone");
                }
            }
            continue;
        }
        found.push(Survivor {
            id: record.id.clone(),
            run_hash: record.run_hash.clone(),
            pid: Some(record.pid),
        });
        kept.extend(record.cgroup.clone());
        book.insert(record);
    }
    if let Some(dir) = rt.containment.deployment(deployment) {
        let unrecorded: Vec<_> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .filter(|p| !kept.contains(p))
            .collect();
        for path in unrecorded {
            if let Err(e) = Cgroup::at(&path).kill_and_remove(REAP_AFTER_KILL).await {
                tracing::warn!(cgroup = %path.display(), error = %e, "cannot clear an unrecorded cgroup");
            }
        }
    }
    found
}

/// A watch on the exit of the recorded main process, proven to be the same process: the
/// pidfd pins the pid, then the start time is compared.
fn open_process(record: &Record) -> io::Result<OwnedFd> {
    let pid = i32::try_from(record.pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::other(format!("unusable pid {}", record.pid)))?;
    let fd = pidfd_open(pid, PidfdFlags::NONBLOCK)?;
    if start_time(record.pid) != Some(record.start_time) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("process {} has exited", record.pid),
        ));
    }
    Ok(fd)
}

/// What contains a recorded incarnation: its cgroup, else the group its main process
/// leads, addressed through `pidfd`, that process's (see `process_group`).
fn contained(record: &Record, pidfd: &OwnedFd) -> Option<Contained> {
    match &record.cgroup {
        Some(path) => Some(Contained::Cgroup(Cgroup::at(path))),
        None => ProcessGroup::led_by(record.pid, pidfd.try_clone().ok()?).map(Contained::Group),
    }
}

/// Take over a survivor: from now on `stop`, `remove`, `exec` and `logs` work on it, its
/// log file is rotated again, and the returned watch resolves (with
/// [`ExitReason::Unknown`]) when its main process exits.
pub(crate) fn adopt(
    rt: &ProcessRuntime,
    survivor: &Survivor,
    spec: &ContainerSpec,
) -> Result<Started, RuntimeError> {
    let id = &survivor.id;
    let record = rt
        .ends
        .records
        .as_ref()
        .and_then(|b| b.get(id))
        .ok_or_else(|| RuntimeError::UnknownContainer { id: id.to_string() })?;
    let gone = |e: io::Error| start_error(id, format!("cannot adopt it: {e}"));
    let pidfd = open_process(&record).map_err(gone)?;
    let contained = contained(&record, &pidfd)
        .ok_or_else(|| start_error(id, format!("unusable pid {}", record.pid)))?;
    let launch = Launch::from_spec(id, spec)?;
    let (reaped_tx, reaped_rx) = watch::channel(None);
    let (exit_tx, exit) = ExitWatch::channel();
    let (output, rotation) = match &record.log {
        Some(path) => (Output::File(path.clone()), rt.ends.rotator.watch(path).ok()),
        None => (Output::Ring(Arc::new(LogBuffer::new(0, 0))), None),
    };
    let replica = Arc::new(Replica {
        launch,
        run_hash: record.run_hash.clone(),
        state: Mutex::new(ReplicaState {
            phase: Phase::Running {
                contained: contained.clone(),
                reaped: reaped_rx,
            },
            output,
            readers: Vec::new(),
            rotation,
        }),
    });
    let watched = registered(pidfd).map_err(gone)?;
    if let Some(path) = &record.cgroup {
        rt.containment.adopted(path);
    }
    {
        let mut replicas = rt.replicas();
        if replicas.get(id).is_some_and(|r| r.running().is_some()) {
            return Err(start_error(id, "it already exists and is running".into()));
        }
        replicas.insert(id.clone(), replica.clone());
    }
    let incarnation = Incarnation {
        id: id.clone(),
        contained,
        started_at: Instant::now(),
        replica,
        reaped: reaped_tx,
        exit_tx,
        ends: rt.ends.clone(),
    };
    tokio::spawn(async move {
        let events = incarnation.contained.events();
        // A pidfd becomes readable when its process exits.
        let _ = watched.readable().await;
        // Boxed, as in `process::reap`.
        Box::pin(incarnation.ended(ExitReason::Unknown, events)).await;
    });
    Ok(Started {
        pid: Some(record.pid),
        exit,
    })
}

/// Stop a survivor that is not adopted: its stop signal to every member, up to `grace`
/// for the main process to exit, then the whole cgroup (or group) killed, the cgroup
/// removed and the record forgotten.
pub(crate) async fn discard(
    rt: &ProcessRuntime,
    survivor: &Survivor,
    signal: StopSignal,
    grace: Duration,
) -> Result<(), RuntimeError> {
    let id = &survivor.id;
    let Some(book) = &rt.ends.records else {
        return Ok(());
    };
    let Some(record) = book.get(id) else {
        return Ok(());
    };
    let io_error = |source: io::Error| RuntimeError::Io {
        id: id.to_string(),
        what: "discard",
        source,
    };
    match open_process(&record) {
        Ok(pidfd) => {
            let contained = contained(&record, &pidfd);
            let watched = registered(pidfd).map_err(io_error)?;
            if let Some(contained) = contained {
                contained.signal(to_signal(signal));
                if tokio::time::timeout(grace, watched.readable())
                    .await
                    .is_err()
                {
                    contained.kill();
                    tokio::time::timeout(REAP_AFTER_KILL, watched.readable())
                        .await
                        .map_err(|_| {
                            io_error(io::Error::new(
                                io::ErrorKind::TimedOut,
                                format!("not gone {REAP_AFTER_KILL:?} after SIGKILL"),
                            ))
                        })?
                        .map_err(io_error)?
                        .retain_ready();
                }
                contained.kill();
            }
        }
        Err(_) => {
            // Its main process is gone already; what it left is killed below.
        }
    }
    if let Some(path) = &record.cgroup {
        rt.containment.adopted(path);
        Cgroup::at(path)
            .kill_and_remove(REAP_AFTER_KILL)
            .await
            .map_err(io_error)?;
    }
    book.remove(id);
    Ok(())
}
