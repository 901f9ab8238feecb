//! The thread of one glommio executor, and the signal that keeps it from
//! sleeping with work to do.
//!
//! glommio 0.9's executor loop arms its preemption timer, then checks it before
//! running a task queue; a thread that loses its CPU for longer than
//! [`crate::glommio_disk::PREEMPT_TIMER_US`] in between finds the timer fired,
//! runs nothing, and parks in `io_uring_enter` until a kernel event comes. The
//! node loop's heartbeat timers ([`crate::serve::EXECUTOR_HEARTBEAT_MS`]) are
//! such events once it runs, but an executor whose first task has not run has
//! none, and a loaded machine left a core parked for good at start-up (2 of
//! ~550 test-server starts under a load of 10 on 2 CPUs: `core started` never
//! logged on one core, every command for its shards unanswered). A signal
//! interrupts the wait (`EINTR`, which glommio treats as a wake-up) and the
//! loop runs what is queued: the main thread sends one to every executor
//! each time it has had no news for its poll period
//! (`serve::MAIN_POLL_MS`), whatever the executors are doing, so no stall of
//! this kind outlasts that period, before the first task or after it.

use std::future::Future;
use std::io;
use std::os::unix::thread::JoinHandleExt;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::glommio_disk::executor_builder;

/// The signal that wakes a parked executor thread. Its handler does nothing;
/// installing it is what turns the signal from "terminate" into "interrupt the
/// wait". So `kill -USR1` on a Keel process is harmless.
const WAKE_SIGNAL: libc::c_int = libc::SIGUSR1;

/// One executor's OS thread.
#[derive(Debug)]
pub struct ExecutorThread {
    handle: JoinHandle<()>,
}

impl ExecutorThread {
    /// Starts an executor for `core` on a thread of its own and runs `task`
    /// there. Fails if the thread or the executor (its io_uring rings and io
    /// memory) cannot be made.
    pub fn spawn<F, Fut>(core: usize, task: F) -> io::Result<ExecutorThread>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        install_wake_signal()?;
        let (made, made_inbox) = mpsc::sync_channel(1);
        let handle = std::thread::Builder::new()
            .name(format!("keel-{core}"))
            .spawn(move || {
                let executor = match executor_builder(core).make() {
                    Ok(executor) => executor,
                    Err(error) => {
                        let _ = made.send(Err(io::Error::other(error.to_string())));
                        return;
                    }
                };
                let _ = made.send(Ok(()));
                executor.run(task());
            })?;
        match made_inbox.recv() {
            Ok(Ok(())) => Ok(ExecutorThread { handle }),
            Ok(Err(error)) => {
                let _ = handle.join();
                Err(error)
            }
            Err(mpsc::RecvError) => Err(io::Error::other(
                "the executor thread ended before making its executor",
            )),
        }
    }

    /// Interrupts the executor's wait in the kernel, if it is in one (see the
    /// module doc); costs it one loop turn otherwise.
    pub fn wake(&self) {
        // SAFETY: the thread is not joined yet (only `join` consumes the
        // handle), so its pthread_t is valid, ended or not; the signal's
        // handler is installed.
        let _ = unsafe { libc::pthread_kill(self.handle.as_pthread_t(), WAKE_SIGNAL) };
    }

    /// Waits for the thread to end; false if it panicked.
    pub fn join(self) -> bool {
        self.handle.join().is_ok()
    }
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Installs the wake signal's do-nothing handler, without `SA_RESTART`, so
/// that it interrupts a wait rather than being restarted.
fn install_wake_signal() -> io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid value (no flags, empty mask),
    // filled in below before use.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: `action.sa_mask` is a valid sigset_t to empty.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: the handler is async-signal-safe (it does nothing) and lives
    // for the whole process.
    if unsafe { libc::sigaction(WAKE_SIGNAL, &action, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wake signal interrupts the executor's waits harmlessly: a task
    /// sleeping through many of them still runs to its end.
    #[test]
    fn an_executor_thread_runs_its_task_through_wake_signals() {
        let (done, done_inbox) = mpsc::channel();
        let thread = ExecutorThread::spawn(0, move || async move {
            glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
            done.send(()).expect("the test waits");
        })
        .expect("an executor starts");
        for _ in 0..50 {
            thread.wake();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        done_inbox
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the task ran to its end");
        assert!(thread.join(), "the thread ended without a panic");
    }
}
