//! The init sequence in flight for each replica slot, owned by the deployment rather than
//! by a container actor: an actor that panics or a supervisor that fails mid-init dies,
//! but its init task would run on (a dropped `JoinHandle` does not abort). Whoever boots
//! the slot next first ends the previous run and waits until it is really gone, so one
//! slot's init steps never run twice at once (invariant 1).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::slot_key::{slot, SlotKey as Slot, SlotRef};

/// How long an aborted init task may take to unwind before the boot goes on anyway. An
/// aborted task is dropped at its next await point; this only guards against a step that
/// blocks a worker thread, which is a bug of that step.
const UNWIND_WITHIN: Duration = Duration::from_secs(5);

/// One deployment's in-flight init tasks by slot.
#[derive(Clone, Default)]
pub(crate) struct InitRuns {
    tasks: Arc<Mutex<HashMap<Slot, JoinHandle<()>>>>,
}

impl InitRuns {
    /// Record `task` as the slot's run. A previous run still recorded is aborted (the
    /// caller has ended it already; this keeps the map from holding two).
    pub(crate) fn begin(&self, service: &Arc<str>, replica: u32, task: JoinHandle<()>) {
        let old = self.lock().insert((service.clone(), replica), task);
        if let Some(old) = old {
            old.abort();
        }
    }

    /// Forget the slot's run once it reported back (it has finished).
    pub(crate) fn finished(&self, service: &Arc<str>, replica: u32) {
        self.lock().remove(&slot(service, replica) as &dyn SlotRef);
    }

    /// Abort the slot's run, if any, and wait until its task is gone (its step future
    /// dropped, its command killed), so the next run cannot overlap it.
    pub(crate) async fn end(&self, service: &Arc<str>, replica: u32) {
        let task = self.lock().remove(&slot(service, replica) as &dyn SlotRef);
        if let Some(task) = task {
            task.abort();
            if tokio::time::timeout(UNWIND_WITHIN, task).await.is_err() {
                tracing::error!(%service, replica, "an aborted init step did not unwind");
            }
        }
    }

    /// End every run still in flight (at shutdown), waiting until each is gone.
    pub(crate) async fn end_all(&self) {
        let tasks: Vec<(Slot, JoinHandle<()>)> = self.lock().drain().collect();
        for ((service, replica), task) in tasks {
            task.abort();
            if tokio::time::timeout(UNWIND_WITHIN, task).await.is_err() {
                tracing::error!(%service, replica, "an aborted init step did not unwind");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Slot, JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
