//! Single-threaded wake-up primitives for the node loop.
//!
//! The node loop runs on one thread per core (glommio in the server, madsim in
//! the simulator), so these use `Cell`/`RefCell` and plain wakers instead of
//! the runtime's own channels: the same code then runs in both worlds.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::task::{Poll, Waker};

/// A wake-up for one waiting task that is not lost if it comes before the wait.
#[derive(Debug, Default)]
pub struct Signal {
    raised: Cell<bool>,
    waiter: RefCell<Option<Waker>>,
}

impl Signal {
    pub fn raise(&self) {
        self.raised.set(true);
        if let Some(waker) = self.waiter.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Waits until raised since the last wait returned, then lowers it.
    pub async fn wait(&self) {
        poll_fn(|context| {
            if self.raised.replace(false) {
                Poll::Ready(())
            } else {
                *self.waiter.borrow_mut() = Some(context.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// A log index that only grows, with tasks waiting for it to reach theirs.
///
/// It can also fail: every waiter then gets the failure, and so does every
/// later wait, because nothing after a failed sync may be acknowledged.
#[derive(Debug, Default)]
pub struct Watermark {
    reached: Cell<u64>,
    failed: RefCell<Option<String>>,
    waiters: RefCell<Vec<(u64, Waker)>>,
}

impl Watermark {
    pub fn new(reached: u64) -> Watermark {
        Watermark {
            reached: Cell::new(reached),
            ..Watermark::default()
        }
    }

    pub fn get(&self) -> u64 {
        self.reached.get()
    }

    pub fn advance(&self, to: u64) {
        assert!(
            to >= self.reached.get(),
            "a watermark never goes back ({} -> {to})",
            self.reached.get()
        );
        self.reached.set(to);
        self.waiters.borrow_mut().retain(|(target, waker)| {
            let done = *target <= to;
            if done {
                waker.wake_by_ref();
            }
            !done
        });
    }

    pub fn fail(&self, reason: String) {
        self.failed.borrow_mut().get_or_insert(reason);
        for (_, waker) in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    pub fn failure(&self) -> Option<String> {
        self.failed.borrow().clone()
    }

    /// Waits until the watermark reaches `target`, or fails.
    pub fn wait_for(&self, target: u64) -> impl Future<Output = Result<(), String>> + '_ {
        poll_fn(move |context| {
            if let Some(reason) = self.failure() {
                return Poll::Ready(Err(reason));
            }
            if self.reached.get() >= target {
                return Poll::Ready(Ok(()));
            }
            self.waiters
                .borrow_mut()
                .push((target, context.waker().clone()));
            Poll::Pending
        })
    }
}

/// A value handed from one task to another on the same thread, once.
#[derive(Debug)]
pub struct Slot<T> {
    inner: Rc<RefCell<SlotState<T>>>,
}

#[derive(Debug)]
struct SlotState<T> {
    value: Option<T>,
    waiter: Option<Waker>,
}

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Slot<T> {
        Slot {
            inner: Rc::clone(&self.inner),
        }
    }
}

impl<T> Default for Slot<T> {
    fn default() -> Slot<T> {
        Slot {
            inner: Rc::new(RefCell::new(SlotState {
                value: None,
                waiter: None,
            })),
        }
    }
}

impl<T> Slot<T> {
    pub fn fill(&self, value: T) {
        let mut state = self.inner.borrow_mut();
        assert!(state.value.is_none(), "a slot is filled once");
        state.value = Some(value);
        if let Some(waker) = state.waiter.take() {
            waker.wake();
        }
    }

    pub async fn take(&self) -> T {
        poll_fn(|context| {
            let mut state = self.inner.borrow_mut();
            match state.value.take() {
                Some(value) => Poll::Ready(value),
                None => {
                    state.waiter = Some(context.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::task::Context;

    fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn watermark_releases_waiters_at_their_index_and_fails_all() {
        let mark = Watermark::new(3);
        assert_eq!(poll_once(pin!(mark.wait_for(3))), Poll::Ready(Ok(())));
        let mut later = pin!(mark.wait_for(5));
        assert!(poll_once(later.as_mut()).is_pending());
        mark.advance(4);
        assert!(poll_once(later.as_mut()).is_pending());
        mark.advance(5);
        assert_eq!(poll_once(later.as_mut()), Poll::Ready(Ok(())));
        mark.fail("sync failed".into());
        assert_eq!(
            poll_once(pin!(mark.wait_for(1))),
            Poll::Ready(Err("sync failed".into()))
        );
    }

    #[test]
    fn signal_raised_before_the_wait_is_kept() {
        let signal = Signal::default();
        signal.raise();
        assert!(poll_once(pin!(signal.wait())).is_ready());
        assert!(poll_once(pin!(signal.wait())).is_pending());
    }

    #[test]
    fn slot_hands_over_one_value() {
        let slot = Slot::default();
        let mut taking = pin!(slot.take());
        assert!(poll_once(taking.as_mut()).is_pending());
        slot.clone().fill(7);
        assert_eq!(poll_once(taking.as_mut()), Poll::Ready(7));
    }
}
