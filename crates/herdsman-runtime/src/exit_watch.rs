//! The notification of one container's exit: the runtime completes an [`ExitSender`] from
//! its own exit event; the caller holds the [`ExitWatch`] and either awaits it or hands it
//! a callback that the sender runs where the exit is learned, with no task in between.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::runtime::{Exit, ExitReason};

/// What is to happen with the exit, or what it was.
enum ExitState {
    /// Not exited; a task awaiting the watch, if one has polled it.
    Waiting(Option<Waker>),
    /// Not exited; the callback to run with the exit.
    Notify(Box<dyn FnOnce(Exit) + Send>),
    /// Exited, not yet taken.
    Exited(Exit),
    /// Taken, or nobody is watching any more.
    Spent,
}

/// The state both halves share.
struct ExitCell(Mutex<ExitState>);

/// The bytes of one notification's shared allocation (reference counts and the cell; a
/// callback's own box is its owner's).
pub(crate) const EXIT_CELL_BYTES: usize = 2 * 8 + std::mem::size_of::<ExitCell>();

impl ExitCell {
    fn lock(&self) -> MutexGuard<'_, ExitState> {
        // Nothing panics while holding it; a poisoned lock still holds a valid state.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An exit of a container the runtime lost track of.
fn lost() -> Exit {
    Exit {
        reason: ExitReason::Lost,
        ran_for: Duration::ZERO,
    }
}

/// Sender half of an exit notification, held by a runtime until the container exits.
/// Dropping it without sending tells the watch the exit was [`ExitReason::Lost`].
pub struct ExitSender {
    cell: Option<Arc<ExitCell>>,
}

impl ExitSender {
    /// Tell the exit: wakes the task awaiting the watch, or runs the watch's callback
    /// here, on the caller's thread. `Err` gives the exit back when nobody watches any
    /// more (the watch was dropped).
    pub fn send(mut self, exit: Exit) -> Result<(), Exit> {
        match self.cell.take() {
            Some(cell) => deliver(&cell, exit),
            None => Err(exit),
        }
    }
}

impl Drop for ExitSender {
    fn drop(&mut self) {
        if let Some(cell) = self.cell.take() {
            let _ = deliver(&cell, lost());
        }
    }
}

impl fmt::Debug for ExitSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExitSender").finish_non_exhaustive()
    }
}

fn deliver(cell: &ExitCell, exit: Exit) -> Result<(), Exit> {
    let mut state = cell.lock();
    match std::mem::replace(&mut *state, ExitState::Spent) {
        ExitState::Waiting(waker) => {
            *state = ExitState::Exited(exit);
            drop(state);
            if let Some(waker) = waker {
                waker.wake();
            }
            Ok(())
        }
        ExitState::Notify(callback) => {
            // Outside the lock: the callback may take its time or touch the watch's owner.
            drop(state);
            callback(exit);
            Ok(())
        }
        // A sender sends once (it is consumed), so `Exited` cannot be found here; keep
        // the first exit if it were.
        kept @ ExitState::Exited(_) => {
            *state = kept;
            Err(exit)
        }
        ExitState::Spent => Err(exit),
    }
}

/// The caller's half: resolves, without polling anything, when the container exits.
///
/// Await it, or hand it a callback with [`on_exit`](ExitWatch::on_exit). If the runtime
/// drops its sender without sending (it lost the container), the exit is one with
/// [`ExitReason::Lost`].
pub struct ExitWatch {
    cell: Arc<ExitCell>,
}

impl ExitWatch {
    /// A new notification pair: the runtime keeps the sender, the caller the watch.
    pub fn channel() -> (ExitSender, ExitWatch) {
        let cell = Arc::new(ExitCell(Mutex::new(ExitState::Waiting(None))));
        (
            ExitSender {
                cell: Some(cell.clone()),
            },
            ExitWatch { cell },
        )
    }

    /// The exit, if it has happened already (a container may end at the instant it
    /// starts); `None` while it runs. Once this returns an exit, the watch is spent.
    pub fn try_exit(&mut self) -> Option<Exit> {
        let mut state = self.cell.lock();
        match std::mem::replace(&mut *state, ExitState::Spent) {
            ExitState::Exited(exit) => Some(exit),
            ExitState::Spent => Some(lost()),
            other => {
                *state = other;
                None
            }
        }
    }

    /// Run `callback` with the exit when it happens: at once, here, if it has happened
    /// already; otherwise on the thread where the runtime learns of it, when it sends.
    /// The callback should be short (send a message, not wait for one): it runs inside
    /// the runtime's exit path. Everything done before this call happens before the
    /// callback runs.
    pub fn on_exit(self, callback: impl FnOnce(Exit) + Send + 'static) {
        let mut state = self.cell.lock();
        match std::mem::replace(&mut *state, ExitState::Spent) {
            ExitState::Waiting(_) => *state = ExitState::Notify(Box::new(callback)),
            ExitState::Exited(exit) => {
                drop(state);
                callback(exit);
            }
            // A spent watch has told its exit; `Notify` cannot be found (`on_exit`
            // consumes the watch).
            ExitState::Spent | ExitState::Notify(_) => {}
        }
    }
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        // Nobody awaits it any more: the runtime's `send` then hands the exit back. A
        // registered callback stays: the sender still owes it the exit.
        let mut state = self.cell.lock();
        if matches!(*state, ExitState::Waiting(_)) {
            *state = ExitState::Spent;
        }
    }
}

impl fmt::Debug for ExitWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExitWatch").finish_non_exhaustive()
    }
}

impl Future for ExitWatch {
    type Output = Exit;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Exit> {
        let mut state = self.cell.lock();
        match std::mem::replace(&mut *state, ExitState::Spent) {
            ExitState::Exited(exit) => Poll::Ready(exit),
            ExitState::Waiting(_) => {
                *state = ExitState::Waiting(Some(cx.waker().clone()));
                Poll::Pending
            }
            // Polled again after it resolved (or after `try_exit` took the exit).
            ExitState::Spent | ExitState::Notify(_) => Poll::Ready(lost()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn code(c: i32) -> Exit {
        Exit {
            reason: ExitReason::Code(c),
            ran_for: Duration::ZERO,
        }
    }

    #[test]
    fn an_exit_watch_tells_an_exit_that_has_happened_and_nothing_before() {
        let (tx, mut watch) = ExitWatch::channel();
        assert_eq!(watch.try_exit(), None, "no exit yet");
        assert!(tx.send(code(3)).is_ok());
        assert_eq!(watch.try_exit(), Some(code(3)));
    }

    #[test]
    fn an_exit_watch_whose_runtime_dropped_it_tells_a_lost_exit() {
        let (tx, mut watch) = ExitWatch::channel();
        drop(tx);
        assert_eq!(watch.try_exit().map(|e| e.reason), Some(ExitReason::Lost));
    }

    #[tokio::test]
    async fn an_awaited_watch_resolves_when_the_exit_is_sent_from_another_thread() {
        let (tx, mut watch) = ExitWatch::channel();
        let (go, wait) = mpsc::channel::<()>();
        let sender = std::thread::spawn(move || {
            let _ = wait.recv();
            tx.send(code(7))
        });
        // Polled once (the waker registered) before the exit is sent.
        let early = tokio::time::timeout(Duration::ZERO, &mut watch).await;
        assert!(early.is_err(), "no exit before it is sent");
        let _ = go.send(());
        let exit = tokio::time::timeout(Duration::from_secs(10), watch)
            .await
            .expect("the exit arrives");
        assert_eq!(exit, code(7));
        assert!(sender.join().expect("sender thread").is_ok());
    }

    #[test]
    fn a_callback_runs_on_the_senders_thread_when_the_exit_is_sent() {
        let (tx, watch) = ExitWatch::channel();
        let (told, heard) = mpsc::channel();
        watch.on_exit(move |exit| {
            let _ = told.send((exit, std::thread::current().id()));
        });
        assert!(heard.try_recv().is_err(), "nothing before the exit");
        let sender = std::thread::spawn(move || {
            assert!(tx.send(code(2)).is_ok());
            std::thread::current().id()
        });
        let sender_thread = sender.join().expect("sender thread");
        let (exit, ran_on) = heard.try_recv().expect("told by the time send returned");
        assert_eq!(exit, code(2));
        assert_eq!(ran_on, sender_thread);
    }

    #[test]
    fn a_callback_given_after_the_exit_runs_at_once() {
        let (tx, watch) = ExitWatch::channel();
        assert!(tx.send(code(0)).is_ok());
        let (told, heard) = mpsc::channel();
        watch.on_exit(move |exit| {
            let _ = told.send(exit);
        });
        assert_eq!(heard.try_recv().ok(), Some(code(0)));
    }

    #[test]
    fn a_callback_hears_a_lost_exit_when_the_runtime_drops_its_sender() {
        let (tx, watch) = ExitWatch::channel();
        let (told, heard) = mpsc::channel();
        watch.on_exit(move |exit| {
            let _ = told.send(exit);
        });
        drop(tx);
        assert_eq!(
            heard.try_recv().ok().map(|e| e.reason),
            Some(ExitReason::Lost)
        );
    }

    #[test]
    fn sending_to_a_dropped_watch_gives_the_exit_back() {
        let (tx, watch) = ExitWatch::channel();
        drop(watch);
        assert_eq!(tx.send(code(9)), Err(code(9)));
    }
}
