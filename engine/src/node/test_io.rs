//! The node loop's unit tests' world: one core over one in-memory disk, and
//! optionally an in-memory network joining several such worlds as peers.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use keel_wal::MemStorage;

use crate::config::{FsyncPolicy, ServeConfig};
use crate::node::admin::ClientInfo;
use crate::node::io::{
    Connection, Hop, Listener, NodeIo, PeerId, PeerMessage, PeerSendError, ShardObserver,
};
use crate::node::local::Signal;
use crate::node::{recover_core, NodeShared, Recovered};
use crate::topology::{Member, NodeName, Topology};

/// Messages waiting in one member's inbox before `peer_send` to it drops.
pub(crate) const MEM_INBOX_MESSAGES_MAX: usize = 64;

/// Members joined in memory, on one thread: a message sent is in the
/// receiver's inbox at once, in order, until the inbox is full.
#[derive(Debug, Default)]
pub(crate) struct MemNetwork {
    inboxes: RefCell<BTreeMap<PeerId, VecDeque<PeerMessage>>>,
    arrived: BTreeMap<PeerId, Signal>,
}

impl MemNetwork {
    pub fn new(members: &[PeerId]) -> Rc<MemNetwork> {
        Rc::new(MemNetwork {
            inboxes: RefCell::new(members.iter().map(|id| (*id, VecDeque::new())).collect()),
            arrived: members.iter().map(|id| (*id, Signal::default())).collect(),
        })
    }

    fn send(
        &self,
        from: PeerId,
        to: PeerId,
        shard: u32,
        frame: Vec<u8>,
    ) -> Result<(), PeerSendError> {
        let mut inboxes = self.inboxes.borrow_mut();
        let inbox = match inboxes.get_mut(&to) {
            Some(inbox) if to != from => inbox,
            _ => return Err(PeerSendError::UnknownPeer),
        };
        if frame.len() > crate::peer::frame::PEER_FRAME_BYTES_MAX {
            return Err(PeerSendError::TooLarge);
        }
        if inbox.len() >= MEM_INBOX_MESSAGES_MAX {
            return Err(PeerSendError::QueueFull);
        }
        inbox.push_back(PeerMessage { from, shard, frame });
        self.arrived[&to].raise();
        Ok(())
    }

    async fn recv(&self, me: PeerId) -> PeerMessage {
        loop {
            let next = self
                .inboxes
                .borrow_mut()
                .get_mut(&me)
                .and_then(VecDeque::pop_front);
            if let Some(message) = next {
                return message;
            }
            self.arrived[&me].wait().await;
        }
    }
}

/// One core over one in-memory disk: the clock stands at 0, sleeps end at
/// once, no other core exists and nothing may be spawned (a test that needs
/// a task runs it itself); each shard is watched by `observer`, if set;
/// `peer` joins it to other test worlds as member `id` (none: a single node).
/// `C` is the connection a test scripts.
pub(crate) struct MemIo<C> {
    pub disk: MemStorage,
    pub observer: Option<Rc<dyn ShardObserver>>,
    pub peer: Option<(PeerId, Rc<MemNetwork>)>,
    connection: PhantomData<fn() -> C>,
}

impl<C> MemIo<C> {
    pub fn watched(observer: Rc<dyn ShardObserver>) -> MemIo<C> {
        MemIo {
            observer: Some(observer),
            ..MemIo::default()
        }
    }

    /// A world that is member `id` of `network`.
    pub fn member(id: PeerId, network: &Rc<MemNetwork>) -> MemIo<C> {
        MemIo {
            peer: Some((id, Rc::clone(network))),
            ..MemIo::default()
        }
    }
}

impl<C> Default for MemIo<C> {
    fn default() -> MemIo<C> {
        MemIo {
            disk: MemStorage::default(),
            observer: None,
            peer: None,
            connection: PhantomData,
        }
    }
}

impl<C> Clone for MemIo<C> {
    fn clone(&self) -> MemIo<C> {
        MemIo {
            disk: self.disk.clone(),
            observer: self.observer.clone(),
            peer: self.peer.clone(),
            connection: PhantomData,
        }
    }
}

impl<C> fmt::Debug for MemIo<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemIo").finish_non_exhaustive()
    }
}

impl<C: Connection + 'static> NodeIo for MemIo<C> {
    type Storage = MemStorage;
    type Conn = C;

    async fn shard_storage(&self, _shard: u32) -> io::Result<MemStorage> {
        Ok(self.disk.clone())
    }
    fn now_unix_ms(&self) -> u64 {
        0
    }
    fn monotonic_us(&self) -> u64 {
        0
    }
    async fn sleep(&self, _duration: Duration) {}
    fn spawn(&self, _task: impl Future<Output = ()> + 'static) {
        panic!("the node loop's unit tests spawn no task");
    }
    async fn accept(&self, _listener: Listener) -> io::Result<C> {
        future::pending().await
    }
    fn core(&self) -> (usize, usize) {
        (0, 1)
    }
    async fn send_hop(&self, _core: usize, _hop: Hop) {
        panic!("one core sends no hops");
    }
    async fn recv_hop(&self) -> Hop {
        future::pending().await
    }
    async fn move_connection(
        &self,
        _core: usize,
        _conn: C,
        _client: ClientInfo,
    ) -> Result<(), (C, ClientInfo)> {
        panic!("one core moves no connection");
    }
    async fn moved_in(&self) -> (io::Result<C>, ClientInfo) {
        future::pending().await
    }
    fn peer_send(&self, to: PeerId, shard: u32, frame: Vec<u8>) -> Result<(), PeerSendError> {
        match &self.peer {
            Some((me, network)) => network.send(*me, to, shard, frame),
            None => Err(PeerSendError::UnknownPeer),
        }
    }
    async fn peer_recv(&self) -> PeerMessage {
        match &self.peer {
            Some((me, network)) => network.recv(*me).await,
            None => future::pending().await,
        }
    }
    fn shard_observer(&self, _shard: u32) -> Option<Rc<dyn ShardObserver>> {
        self.observer.clone()
    }
}

/// A node of one core and one shard over `io`'s disk, recovered, with the
/// smallest WAL segments and `fsync`.
pub(crate) fn recover_one_shard<C: Connection + 'static>(
    io: MemIo<C>,
    fsync: FsyncPolicy,
) -> Recovered<MemIo<C>> {
    let mut config = ServeConfig::resolve(&Default::default(), 1).expect("the defaults are valid");
    config.wal_segment_bytes = keel_wal::SEGMENT_BYTES_MIN;
    config.fsync = fsync;
    let myself = Member::alone(NodeName::of_ids(0, 0), config.bind, config.port);
    let topology = Topology::single_node(myself, 1);
    let node = Arc::new(NodeShared::new(config, 1, String::new(), 0, 0, topology));
    future::block_on(recover_core(io, node)).expect("the disk recovers")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection no test of this module opens.
    struct NoConnection;

    impl Connection for NoConnection {
        async fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
            Ok(0)
        }
        async fn write_all(&mut self, _buf: &[u8]) -> io::Result<()> {
            Ok(())
        }
        fn peer(&self) -> String {
            String::new()
        }
    }

    #[test]
    fn two_members_exchange_messages_both_ways_in_order() {
        let network = MemNetwork::new(&[1, 2]);
        let (one, two) = (
            MemIo::<NoConnection>::member(1, &network),
            MemIo::<NoConnection>::member(2, &network),
        );
        one.peer_send(2, 0, b"a".to_vec()).unwrap();
        one.peer_send(2, 3, b"b".to_vec()).unwrap();
        two.peer_send(1, 1, b"c".to_vec()).unwrap();
        let got = future::block_on(async { (two.peer_recv().await, two.peer_recv().await) });
        assert_eq!(
            got.0,
            PeerMessage {
                from: 1,
                shard: 0,
                frame: b"a".to_vec()
            }
        );
        assert_eq!(
            got.1,
            PeerMessage {
                from: 1,
                shard: 3,
                frame: b"b".to_vec()
            }
        );
        let back = future::block_on(one.peer_recv());
        assert_eq!(
            back,
            PeerMessage {
                from: 2,
                shard: 1,
                frame: b"c".to_vec()
            }
        );
    }

    #[test]
    fn sends_are_refused_to_strangers_to_itself_oversize_and_when_full() {
        let network = MemNetwork::new(&[1, 2]);
        let one = MemIo::<NoConnection>::member(1, &network);
        assert_eq!(one.peer_send(3, 0, vec![]), Err(PeerSendError::UnknownPeer));
        assert_eq!(one.peer_send(1, 0, vec![]), Err(PeerSendError::UnknownPeer));
        let oversize = vec![0; crate::peer::frame::PEER_FRAME_BYTES_MAX + 1];
        assert_eq!(one.peer_send(2, 0, oversize), Err(PeerSendError::TooLarge));
        for _ in 0..MEM_INBOX_MESSAGES_MAX {
            one.peer_send(2, 0, vec![1]).unwrap();
        }
        assert_eq!(one.peer_send(2, 0, vec![1]), Err(PeerSendError::QueueFull));
        let alone = MemIo::<NoConnection>::default();
        assert_eq!(
            alone.peer_send(2, 0, vec![]),
            Err(PeerSendError::UnknownPeer)
        );
        let never = future::block_on(future::or(async { Some(alone.peer_recv().await) }, async {
            None
        }));
        assert_eq!(never, None, "a single node receives nothing");
    }
}
