//! One core's links to its peers: a bounded send queue per peer, the
//! connection currently carrying it, and the bounded inbox `peer_recv`
//! reads. No IO: `glommio_peer` runs the connections' tasks over it.
//!
//! A connection is current from `attach` until `retire`; a newer connection
//! to the same peer (the peer restarted and dialled again) retires the older
//! one. The writer task of a retired connection stops, which closes its
//! socket; the reader then sees the end and stops too.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use crate::metrics::NodeMetrics;
use crate::node::core::core_of_shard;
use crate::node::io::{PeerId, PeerMessage, PeerSendError};
use crate::node::local::Signal;
use crate::peer::frame::{encode_frame, encoded_bytes, PEER_FRAME_BYTES_MAX};

/// Messages queued for one peer before `peer_send` drops.
pub const PEER_QUEUE_MESSAGES_MAX: usize = 4096;
/// Encoded bytes queued for one peer before `peer_send` drops: room for
/// one frame of the largest size and then some.
pub const PEER_QUEUE_BYTES_MAX: usize = 96 << 20;
/// Messages received and not yet taken by `peer_recv` before the readers drop.
pub const PEER_INBOX_MESSAGES_MAX: usize = 8192;
/// Frame bytes received and not yet taken by `peer_recv` before the readers drop.
pub const PEER_INBOX_BYTES_MAX: usize = 128 << 20;
/// Most bytes one write of a writer task gathers (one frame may exceed it).
pub const PEER_WRITE_BATCH_BYTES_MAX: usize = 1 << 20;

// A frame of the largest size must fit an empty queue, or it could never be sent.
const _: () = assert!(encoded_bytes(PEER_FRAME_BYTES_MAX) <= PEER_QUEUE_BYTES_MAX);

/// One connection's life as its tasks see it.
#[derive(Debug, Default)]
pub struct Connection {
    retired: Cell<bool>,
    /// Wakes the writer: frames were queued, or the connection was retired.
    writer_wake: Signal,
    /// Raised once, when retired (the dialler waits for it to dial again).
    ended: Signal,
}

impl Connection {
    pub fn is_retired(&self) -> bool {
        self.retired.get()
    }

    /// Waits until something was queued or the connection was retired.
    pub async fn writer_wait(&self) {
        self.writer_wake.wait().await;
    }

    /// Waits until the connection is retired.
    pub async fn ended(&self) {
        while !self.retired.get() {
            self.ended.wait().await;
        }
    }

    fn retire(&self) {
        self.retired.set(true);
        self.writer_wake.raise();
        self.ended.raise();
    }
}

#[derive(Debug, Default)]
struct Link {
    queue: RefCell<VecDeque<Vec<u8>>>,
    queued_bytes: Cell<usize>,
    current: RefCell<Option<Rc<Connection>>>,
}

/// One core's links (see the module doc).
#[derive(Debug)]
pub struct Links {
    core: usize,
    cores: usize,
    shards: u32,
    links: BTreeMap<PeerId, Link>,
    inbox: RefCell<VecDeque<PeerMessage>>,
    inbox_bytes: Cell<usize>,
    arrived: Signal,
    metrics: Arc<NodeMetrics>,
    stopped: Cell<bool>,
    /// Wakes the accept loop when stopped.
    stop_wake: Signal,
}

impl Links {
    /// Links from core `core` (of `cores`) to every peer in `peers`.
    pub fn new(
        core: usize,
        cores: usize,
        shards: u32,
        peers: impl IntoIterator<Item = PeerId>,
        metrics: Arc<NodeMetrics>,
    ) -> Links {
        Links {
            core,
            cores,
            shards,
            links: peers
                .into_iter()
                .map(|peer| (peer, Link::default()))
                .collect(),
            inbox: RefCell::default(),
            inbox_bytes: Cell::new(0),
            arrived: Signal::default(),
            metrics,
            stopped: Cell::new(false),
            stop_wake: Signal::default(),
        }
    }

    /// `NodeIo::peer_send`: queues the frame, or says why not (counted).
    pub fn send(&self, to: PeerId, shard: u32, frame: Vec<u8>) -> Result<(), PeerSendError> {
        assert!(
            core_of_shard(shard, self.cores) == self.core,
            "shard {shard} is not on core {}",
            self.core
        );
        let refused = |error| {
            NodeMetrics::add(&self.metrics.peer_send_dropped, 1);
            Err(error)
        };
        let Some(link) = self.links.get(&to) else {
            return refused(PeerSendError::UnknownPeer);
        };
        if frame.len() > PEER_FRAME_BYTES_MAX {
            return refused(PeerSendError::TooLarge);
        }
        let bytes = encoded_bytes(frame.len());
        let mut queue = link.queue.borrow_mut();
        if queue.len() >= PEER_QUEUE_MESSAGES_MAX
            || link.queued_bytes.get() + bytes > PEER_QUEUE_BYTES_MAX
        {
            return refused(PeerSendError::QueueFull);
        }
        let mut encoded = Vec::with_capacity(bytes);
        encode_frame(shard, &frame, &mut encoded);
        queue.push_back(encoded);
        link.queued_bytes.set(link.queued_bytes.get() + bytes);
        if let Some(connection) = link.current.borrow().as_ref() {
            connection.writer_wake.raise();
        }
        Ok(())
    }

    /// Takes queued frames for `peer` into one buffer for one write: at least
    /// one frame if any is queued, then more while under
    /// [`PEER_WRITE_BATCH_BYTES_MAX`]. Returns the bytes and the messages.
    pub fn take_batch(&self, peer: PeerId) -> (Vec<u8>, u64) {
        let link = &self.links[&peer];
        let mut queue = link.queue.borrow_mut();
        let mut batch = Vec::new();
        let mut messages = 0;
        while let Some(front) = queue.front() {
            if !batch.is_empty() && batch.len() + front.len() > PEER_WRITE_BATCH_BYTES_MAX {
                break;
            }
            let frame = queue.pop_front().expect("the front exists");
            batch.extend_from_slice(&frame);
            messages += 1;
        }
        link.queued_bytes.set(link.queued_bytes.get() - batch.len());
        (batch, messages)
    }

    /// Makes a new connection to `peer` current, retiring the one before
    /// (after [`Links::stop`], the new one is born retired).
    pub fn attach(&self, peer: PeerId) -> Rc<Connection> {
        let connection = Rc::new(Connection::default());
        if self.stopped.get() {
            connection.retire();
            return connection;
        }
        let link = &self.links[&peer];
        if let Some(old) = link.current.replace(Some(Rc::clone(&connection))) {
            old.retire();
        }
        // Frames queued while no connection was current go out now.
        connection.writer_wake.raise();
        NodeMetrics::add(&self.metrics.peer_connections, 1);
        connection
    }

    /// Retires `connection` (a broken socket, bad bytes, or its writer
    /// stopping); the link has no current connection until the next `attach`.
    pub fn retire(&self, peer: PeerId, connection: &Rc<Connection>) {
        connection.retire();
        let link = &self.links[&peer];
        let mut current = link.current.borrow_mut();
        if current
            .as_ref()
            .is_some_and(|now| Rc::ptr_eq(now, connection))
        {
            *current = None;
        }
    }

    /// The node is leaving: retires every connection (their writers close
    /// the sockets, so peers notice at once) and ends the accept and dial
    /// loops.
    pub fn stop(&self) {
        self.stopped.set(true);
        for link in self.links.values() {
            if let Some(connection) = link.current.take() {
                connection.retire();
            }
        }
        self.stop_wake.raise();
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.get()
    }

    /// Waits until [`Links::stop`] (one waiter: the accept loop).
    pub async fn stopped(&self) {
        while !self.stopped.get() {
            self.stop_wake.wait().await;
        }
    }

    /// Whether a message for `shard` may come to this core: a shard of this
    /// node's count that lives here. A peer that says otherwise is broken.
    pub fn shard_is_here(&self, shard: u32) -> bool {
        shard < self.shards && core_of_shard(shard, self.cores) == self.core
    }

    /// Hands a message a reader decoded to `peer_recv`, or drops it (counted)
    /// when the inbox is full.
    pub fn deliver(&self, message: PeerMessage) {
        let bytes = message.frame.len();
        let mut inbox = self.inbox.borrow_mut();
        if inbox.len() >= PEER_INBOX_MESSAGES_MAX
            || self.inbox_bytes.get() + bytes > PEER_INBOX_BYTES_MAX
        {
            NodeMetrics::add(&self.metrics.peer_receive_dropped, 1);
            return;
        }
        NodeMetrics::add(&self.metrics.peer_messages_received, 1);
        inbox.push_back(message);
        self.inbox_bytes.set(self.inbox_bytes.get() + bytes);
        self.arrived.raise();
    }

    /// `NodeIo::peer_recv`. One task per core takes messages (the [`Signal`]
    /// wakes one waiter).
    pub async fn recv(&self) -> PeerMessage {
        loop {
            if let Some(message) = self.inbox.borrow_mut().pop_front() {
                self.inbox_bytes
                    .set(self.inbox_bytes.get() - message.frame.len());
                return message;
            }
            self.arrived.wait().await;
        }
    }

    /// The peers, in id order.
    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.links.keys().copied()
    }

    pub fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;

    fn links() -> Links {
        Links::new(0, 1, 4, [2, 3], Arc::new(NodeMetrics::default()))
    }

    #[test]
    fn send_refuses_unknown_peers_oversize_frames_and_a_full_queue() {
        let links = links();
        assert_eq!(links.send(9, 0, vec![1]), Err(PeerSendError::UnknownPeer));
        assert_eq!(
            links.send(2, 0, vec![0; PEER_FRAME_BYTES_MAX + 1]),
            Err(PeerSendError::TooLarge)
        );
        for _ in 0..PEER_QUEUE_MESSAGES_MAX {
            assert_eq!(links.send(2, 1, vec![5; 3]), Ok(()));
        }
        assert_eq!(links.send(2, 1, vec![5; 3]), Err(PeerSendError::QueueFull));
        assert_eq!(
            links.send(3, 1, vec![5; 3]),
            Ok(()),
            "each peer has its own queue"
        );
        assert_eq!(NodeMetrics::get(&links.metrics.peer_send_dropped), 3);
    }

    #[test]
    fn the_byte_bound_drops_before_the_message_bound() {
        let links = links();
        let big = PEER_FRAME_BYTES_MAX / 2;
        assert_eq!(links.send(2, 0, vec![0; big]), Ok(()));
        assert_eq!(
            links.send(2, 0, vec![0; PEER_QUEUE_BYTES_MAX - encoded_bytes(big)]),
            Err(PeerSendError::QueueFull)
        );
        let (batch, messages) = links.take_batch(2);
        assert_eq!((batch.len(), messages), (encoded_bytes(big), 1));
        assert_eq!(links.links[&2].queued_bytes.get(), 0);
    }

    #[test]
    fn batches_gather_frames_in_order_up_to_the_write_bound() {
        let links = links();
        let frame_bytes = PEER_WRITE_BATCH_BYTES_MAX / 4;
        for tag in 0..6u8 {
            links.send(2, 0, vec![tag; frame_bytes]).unwrap();
        }
        let (first, count) = links.take_batch(2);
        assert_eq!(count, 3, "the fourth would pass the bound with the headers");
        assert_eq!(first[encoded_bytes(frame_bytes) + 12], 1);
        let (_, count) = links.take_batch(2);
        assert_eq!(count, 3);
        assert_eq!(links.take_batch(2), (Vec::new(), 0));
    }

    #[test]
    fn a_new_connection_retires_the_old_one_and_only_the_current_one_detaches() {
        let links = links();
        let first = links.attach(2);
        let second = links.attach(2);
        assert!(first.is_retired() && !second.is_retired());
        links.retire(2, &first);
        assert!(links.links[&2].current.borrow().is_some());
        links.retire(2, &second);
        assert!(links.links[&2].current.borrow().is_none());
        future::block_on(second.ended());
        let third = links.attach(2);
        links.stop();
        assert!(third.is_retired() && links.is_stopped());
        assert!(links.attach(2).is_retired(), "nothing connects after stop");
        future::block_on(links.stopped());
    }

    #[test]
    fn the_inbox_delivers_in_order_and_drops_when_full() {
        let links = links();
        for shard in 0..PEER_INBOX_MESSAGES_MAX as u32 + 1 {
            links.deliver(PeerMessage {
                from: 2,
                shard,
                frame: vec![1],
            });
        }
        assert_eq!(NodeMetrics::get(&links.metrics.peer_receive_dropped), 1);
        assert_eq!(future::block_on(links.recv()).shard, 0);
        assert_eq!(future::block_on(links.recv()).shard, 1);
        assert!(links.shard_is_here(3) && !links.shard_is_here(4));
    }
}
