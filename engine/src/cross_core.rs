//! Bounded queues between the server's cores (the hops of [`crate::node::io`]).
//!
//! Every core has one inbox, split in one lane per sending core, so that the
//! messages of one sender keep their order and one busy sender cannot take
//! another's room. A lane holds at most [`HOP_LANE_MESSAGES`] messages and
//! [`HOP_LANE_BYTES_MAX`] bytes (one message larger than that still passes when
//! the lane is empty); a sender whose lane is full waits until the receiver
//! makes room.
//!
//! The channels are made before the executors start, so starting needs no
//! handshake between cores (glommio's channel mesh had one, and it hung: see
//! `serve`). A wake-up cannot be lost: the queue, the receiver's waker and the
//! senders' wakers are all under one mutex, so a sender either sees the
//! receiver's waker (and wakes it) or the receiver sees the message before it
//! registers; the same holds the other way for room. Wakers are called after
//! the mutex is released.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

/// Messages one core may have queued to another before its senders wait.
/// Enough for every pipelined command of many connections in flight at once
/// (a connection pipelines up to `PIPELINE_COMMANDS_MAX`), few enough that a
/// stalled core does not let the others pile up work without bound.
pub const HOP_LANE_MESSAGES: usize = 4096;

/// Bytes (of keys, values and replies) one core may have queued to another
/// before its senders wait: the message bound alone would let 4096 writes of
/// 512 MiB values queue up. 64 MiB keeps a lane's memory small next to the
/// node's; a single larger message is let through when the lane is empty, so
/// no request is ever too large to hop.
pub const HOP_LANE_BYTES_MAX: usize = 64 << 20;

/// One sender's queue in a receiver's inbox.
#[derive(Debug)]
struct Lane<T> {
    messages: VecDeque<(T, usize)>,
    bytes: usize,
    /// Tasks of the sending core waiting for room in this lane.
    senders: Vec<Waker>,
}

impl<T> Lane<T> {
    fn has_room_for(&self, bytes: usize) -> bool {
        self.messages.is_empty()
            || (self.messages.len() < HOP_LANE_MESSAGES
                && self.bytes.saturating_add(bytes) <= HOP_LANE_BYTES_MAX)
    }
}

#[derive(Debug)]
struct Inbox<T> {
    lanes: Vec<Lane<T>>,
    /// The receiving core's task waiting for a message.
    receiver: Option<Waker>,
    /// The lane to look at first, so that every sender is served in turn.
    next_lane: usize,
}

/// The inboxes of every core; clone it into each core.
#[derive(Debug)]
pub struct CrossCore<T> {
    inboxes: Arc<Vec<Mutex<Inbox<T>>>>,
}

impl<T> Clone for CrossCore<T> {
    fn clone(&self) -> Self {
        CrossCore {
            inboxes: Arc::clone(&self.inboxes),
        }
    }
}

impl<T> CrossCore<T> {
    pub fn new(cores: usize) -> CrossCore<T> {
        let inboxes = (0..cores)
            .map(|_| {
                Mutex::new(Inbox {
                    lanes: (0..cores)
                        .map(|_| Lane {
                            messages: VecDeque::new(),
                            bytes: 0,
                            senders: Vec::new(),
                        })
                        .collect(),
                    receiver: None,
                    next_lane: 0,
                })
            })
            .collect();
        CrossCore {
            inboxes: Arc::new(inboxes),
        }
    }

    fn inbox(&self, core: usize) -> MutexGuard<'_, Inbox<T>> {
        assert!(core < self.inboxes.len(), "core {core} does not exist");
        // A panic aborts the process (panic = "abort"), so a poisoned lock
        // is never seen by a live core.
        self.inboxes[core].lock().expect("hop inbox lock")
    }

    /// Queues `message` (of `bytes` payload bytes) from core `from` to core
    /// `to`, waiting while their lane is full.
    pub async fn send(&self, from: usize, to: usize, message: T, bytes: usize) {
        assert_ne!(from, to, "a core does not hop to itself");
        let mut message = Some(message);
        poll_fn(|context| {
            let mut inbox = self.inbox(to);
            let lane = &mut inbox.lanes[from];
            if !lane.has_room_for(bytes) {
                // Once per task: a task polled again while it waits (by any
                // other waker of its own) must not pile up clones, whose
                // count glommio keeps in an i16.
                let waker = context.waker();
                if !lane.senders.iter().any(|waiting| waiting.will_wake(waker)) {
                    lane.senders.push(waker.clone());
                }
                return Poll::Pending;
            }
            let message = message.take().expect("a send completes once");
            lane.messages.push_back((message, bytes));
            lane.bytes += bytes;
            let receiver = inbox.receiver.take();
            drop(inbox);
            if let Some(receiver) = receiver {
                receiver.wake();
            }
            Poll::Ready(())
        })
        .await
    }

    /// The next message for core `core`, from any sender, waiting for one.
    pub async fn recv(&self, core: usize) -> T {
        poll_fn(|context| {
            let mut inbox = self.inbox(core);
            match inbox.pop() {
                Some((message, senders)) => {
                    drop(inbox);
                    senders.into_iter().for_each(Waker::wake);
                    Poll::Ready(message)
                }
                None => {
                    inbox.receiver = Some(context.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Takes the next message for core `core` if one is queued.
    #[cfg(test)]
    fn try_recv(&self, core: usize) -> Option<T> {
        let popped = self.inbox(core).pop();
        popped.map(|(message, senders)| {
            senders.into_iter().for_each(Waker::wake);
            message
        })
    }
}

impl<T> Inbox<T> {
    /// The next message, taking turns between lanes, and the senders that
    /// waited for room in its lane (to be woken once the lock is released).
    fn pop(&mut self) -> Option<(T, Vec<Waker>)> {
        let lanes = self.lanes.len();
        let first = self.next_lane;
        let from = (0..lanes)
            .map(|offset| (first + offset) % lanes)
            .find(|&lane| !self.lanes[lane].messages.is_empty())?;
        self.next_lane = (from + 1) % lanes;
        let lane = &mut self.lanes[from];
        let (message, bytes) = lane.messages.pop_front().expect("the lane is not empty");
        lane.bytes -= bytes;
        Some((message, std::mem::take(&mut lane.senders)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Wake};

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_once<F: Future>(
        future: std::pin::Pin<&mut F>,
        waker: &Arc<Counter>,
    ) -> Poll<F::Output> {
        let waker = Waker::from(Arc::clone(waker));
        future.poll(&mut Context::from_waker(&waker))
    }

    fn send_now(
        channels: &CrossCore<u32>,
        from: usize,
        to: usize,
        message: u32,
        bytes: usize,
    ) -> bool {
        let counter = Arc::new(Counter::default());
        let send = pin!(channels.send(from, to, message, bytes));
        poll_once(send, &counter).is_ready()
    }

    fn recv_now(channels: &CrossCore<u32>, core: usize) -> Option<u32> {
        channels.try_recv(core)
    }

    #[test]
    fn a_full_lane_makes_its_sender_wait_until_the_receiver_takes_one() {
        let channels = CrossCore::new(2);
        for message in 0..HOP_LANE_MESSAGES as u32 {
            assert!(
                send_now(&channels, 0, 1, message, 1),
                "message {message} fits"
            );
        }
        let waker = Arc::new(Counter::default());
        let mut waiting = pin!(channels.send(0, 1, u32::MAX, 1));
        assert!(
            poll_once(waiting.as_mut(), &waker).is_pending(),
            "the lane is full"
        );
        // The other direction has its own room.
        assert!(send_now(&channels, 1, 0, 7, 1));
        assert_eq!(recv_now(&channels, 1), Some(0), "first in, first out");
        assert_eq!(waker.0.load(Ordering::SeqCst), 1, "room wakes the sender");
        assert!(poll_once(waiting.as_mut(), &waker).is_ready());
        for expected in 1..HOP_LANE_MESSAGES as u32 {
            assert_eq!(recv_now(&channels, 1), Some(expected));
        }
        assert_eq!(recv_now(&channels, 1), Some(u32::MAX));
        assert_eq!(recv_now(&channels, 1), None);
    }

    /// glommio counts a task's waker clones in an i16 and panics past it: a
    /// waiting sender polled again and again (its task woken by something
    /// else) must keep one clone in the lane, not one per poll.
    #[test]
    fn a_sender_polled_while_it_waits_holds_one_waker() {
        let channels = CrossCore::new(2);
        for message in 0..HOP_LANE_MESSAGES as u32 {
            assert!(send_now(&channels, 0, 1, message, 1));
        }
        let waker = Arc::new(Counter::default());
        let mut waiting = pin!(channels.send(0, 1, u32::MAX, 1));
        for _ in 0..40_000 {
            assert!(poll_once(waiting.as_mut(), &waker).is_pending());
        }
        assert_eq!(Arc::strong_count(&waker), 2, "ours and the lane's");
        assert_eq!(recv_now(&channels, 1), Some(0));
        assert_eq!(waker.0.load(Ordering::SeqCst), 1, "woken once");
        assert!(poll_once(waiting.as_mut(), &waker).is_ready());
    }

    #[test]
    fn a_lane_holds_at_most_its_bytes_but_always_one_message() {
        let channels = CrossCore::new(2);
        let half = HOP_LANE_BYTES_MAX / 2;
        assert!(send_now(&channels, 1, 0, 1, half));
        assert!(send_now(&channels, 1, 0, 2, half));
        assert!(
            !send_now(&channels, 1, 0, 3, 1),
            "the lane's bytes are used up"
        );
        assert_eq!(recv_now(&channels, 0), Some(1));
        assert_eq!(recv_now(&channels, 0), Some(2));
        assert!(
            send_now(&channels, 1, 0, 4, HOP_LANE_BYTES_MAX * 2),
            "an oversized message passes an empty lane"
        );
        assert!(!send_now(&channels, 1, 0, 5, 1), "and fills it");
    }

    #[test]
    fn the_receiver_is_woken_by_a_send_and_serves_lanes_in_turn() {
        let channels = CrossCore::new(3);
        let waker = Arc::new(Counter::default());
        let mut receiving = pin!(channels.recv(0));
        assert!(poll_once(receiving.as_mut(), &waker).is_pending());
        for message in [10, 11] {
            assert!(send_now(&channels, 1, 0, message, 1));
        }
        assert!(send_now(&channels, 2, 0, 20, 1));
        assert_eq!(waker.0.load(Ordering::SeqCst), 1, "the first send wakes it");
        assert_eq!(poll_once(receiving.as_mut(), &waker), Poll::Ready(10));
        assert_eq!(recv_now(&channels, 0), Some(20), "the other lane's turn");
        assert_eq!(recv_now(&channels, 0), Some(11));
    }

    #[test]
    fn threads_exchange_every_message_in_order_through_small_lanes() {
        // Two threads each send to the other while receiving: with bounded
        // lanes, a lost wake-up would hang this test.
        let channels = CrossCore::<u32>::new(2);
        let count = (HOP_LANE_MESSAGES * 4) as u32;
        let threads: Vec<_> = (0..2)
            .map(|core| {
                let channels = channels.clone();
                std::thread::spawn(move || {
                    let other = 1 - core;
                    let sending = async {
                        for message in 0..count {
                            channels.send(core, other, message, 1).await;
                        }
                    };
                    let receiving = async {
                        for expected in 0..count {
                            assert_eq!(channels.recv(core).await, expected);
                        }
                    };
                    futures_lite::future::block_on(futures_lite::future::zip(sending, receiving));
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("a core thread");
        }
    }
}
