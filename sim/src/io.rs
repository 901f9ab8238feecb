//! The node's IO under madsim: the real node loop ([`keel_engine::node`]) runs on
//! a simulated host, one loop per core as tasks of that host, with madsim's
//! TCP for clients, madsim's clock and timers, bounded in-memory queues for
//! the hops between cores, and a [`SimDisk`] that outlives the host.
//!
//! madsim kills a host by dropping its tasks, so whatever the host must find
//! again after a restart lives outside it: each host's [`Host`] (disk,
//! durability ledger, hop counts) sits in a registry on the simulation's thread, keyed by
//! madsim node id. (A madsim plugin cannot hold it: plugins are `Send + Sync`,
//! and the disk is `Rc`-based, as the single-threaded node loop is.) The
//! supervisor reaches the same disk to crash it between a kill and a restart.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant, UNIX_EPOCH};

use keel_engine::node::admin::ClientInfo;
use keel_engine::node::io::{
    Connection, Hop, Listener, NodeIo, PeerId, PeerMessage, PeerSendError, ShardObserver,
};
use keel_engine::node::local::Signal;
use keel_engine::node::shard_dir_name;
use madsim::net::{TcpListener, TcpStream};
use madsim::rand::{thread_rng, Rng};
use madsim::task::NodeId;
use madsim::time::TimeHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::disk::{Latency, SimDir, SimDisk, Sleep};
use crate::ledger::Ledger;
use crate::peer_net::PeerLink;

/// How long the simulated disk takes: about what this machine's SSD takes
/// for a 4 KiB O_DIRECT write and an fdatasync (README: the disk).
pub const DISK_LATENCY: Latency = Latency {
    write_us: (10, 60),
    sync_us: (80, 400),
};

/// A slow disk (a noisy neighbour, a device's internal flush): syncs take
/// up to 20 ms, longer than a message's round trip, so a leader's own copy
/// can be the last of a majority to become durable.
pub const SLOW_DISK_LATENCY: Latency = Latency {
    write_us: (10, 60),
    sync_us: (80, 20_000),
};

/// What of a host outlives its kills: its disk, the ledger of what its
/// shards applied and acknowledged, and counts of its cores' hops. Clones
/// share them.
#[derive(Clone, Debug)]
pub struct Host {
    pub disk: SimDisk,
    pub ledger: Rc<Ledger>,
    pub hops: Rc<HopCounts>,
}

/// Hops between a host's cores, over all its boots: a run shows that it
/// exercised them.
#[derive(Debug, Default)]
pub struct HopCounts {
    pub sent: Cell<u64>,
    /// Sends that found the queue full and waited.
    pub waited: Cell<u64>,
    /// Client connections moved to another core.
    pub moved: Cell<u64>,
}

thread_local! {
    /// Every host's lasting part. madsim runs the whole simulation on one thread.
    static HOSTS: RefCell<BTreeMap<NodeId, Host>> = RefCell::default();
}

/// The lasting part of host `node`, created on first use: an empty disk that
/// takes [`DISK_LATENCY`] of madsim's time, its faults seeded from madsim's
/// generator. Hosts live as long as the thread, so run one simulation per
/// thread.
pub fn host(node: NodeId) -> Host {
    HOSTS.with(|hosts| {
        hosts
            .borrow_mut()
            .entry(node)
            .or_insert_with(|| {
                let sleep: Sleep = Rc::new(|duration| Box::pin(madsim::time::sleep(duration)));
                Host {
                    disk: SimDisk::with_latency(thread_rng().gen(), DISK_LATENCY, sleep),
                    ledger: Rc::default(),
                    hops: Rc::default(),
                }
            })
            .clone()
    })
}

/// Hops a core may have queued for it before senders wait. One (the
/// server's queue holds 4,096): with three clients of one request each, two
/// hops to one core then often meet, so that senders waiting for room are
/// simulated on most seeds.
pub const HOP_QUEUE_MESSAGES: usize = 1;

/// One core's IO on a simulated host. The cores of a node are tasks of the
/// same madsim node (so madsim interleaves them, as threads would be), share
/// one client listener (madsim has no SO_REUSEPORT: whichever core accepts
/// first gets the connection), and hop over bounded in-memory queues.
#[derive(Clone, Debug)]
pub struct SimIo {
    core: usize,
    node: Rc<SimNode>,
}

/// What the cores of one node share.
#[derive(Debug)]
struct SimNode {
    host: Host,
    clients: TcpListener,
    epoch: Instant,
    /// Each core's hops from the other cores, by core.
    inboxes: Vec<HopQueue>,
    /// Each core's connections moved to it by the other cores, by core.
    moved: Vec<MovedQueue>,
    /// Each core's link to its peers, by core; none for a single node.
    peers: Vec<PeerLink>,
    /// Who watches the shards: the host's ledger, or for a cluster member
    /// an observer that also reports to the cluster's checker.
    observer: Rc<dyn ShardObserver>,
}

/// The bounded queue of hops to one core, read only by that core.
#[derive(Debug, Default)]
struct HopQueue {
    hops: RefCell<VecDeque<Hop>>,
    arrived: Signal,
    /// Senders waiting for room.
    waiting: RefCell<Vec<Waker>>,
}

impl HopQueue {
    /// Queues `hop`, waiting while the queue is full.
    async fn send(&self, hop: Hop, counts: &HopCounts) {
        let mut hop = Some(hop);
        let mut waited = false;
        poll_fn(|context| {
            let mut hops = self.hops.borrow_mut();
            if hops.len() < HOP_QUEUE_MESSAGES {
                hops.push_back(hop.take().expect("a hop is sent once"));
                self.arrived.raise();
                Poll::Ready(())
            } else {
                self.waiting.borrow_mut().push(context.waker().clone());
                waited = true;
                Poll::Pending
            }
        })
        .await;
        counts.sent.set(counts.sent.get() + 1);
        counts.waited.set(counts.waited.get() + u64::from(waited));
    }

    /// The oldest hop; wakes the senders waiting for room.
    async fn recv(&self) -> Hop {
        loop {
            let hop = self.hops.borrow_mut().pop_front();
            if let Some(hop) = hop {
                for sender in self.waiting.borrow_mut().drain(..) {
                    sender.wake();
                }
                return hop;
            }
            self.arrived.wait().await;
        }
    }
}

/// The connections moved to one core, read only by that core. Unbounded:
/// a connection moves at most once, so it holds at most the node's
/// connections.
#[derive(Debug, Default)]
struct MovedQueue {
    connections: RefCell<VecDeque<(SimConn, ClientInfo)>>,
    arrived: Signal,
}

impl SimIo {
    /// The IO of each of `cores` cores of a node on the current host: they
    /// listen for clients on `address` and keep the node's data on the
    /// host's disk.
    pub async fn bind(address: std::net::SocketAddr, cores: usize) -> io::Result<Vec<SimIo>> {
        SimIo::bind_with_peers(address, cores, Vec::new(), None).await
    }

    /// As [`SimIo::bind`], for member `me` of the cluster whose network
    /// ([`crate::peer_net::install`]) the thread holds: each core also links
    /// to the same core of every other member, and `observer` watches its
    /// shards.
    pub async fn bind_member(
        address: std::net::SocketAddr,
        cores: usize,
        me: PeerId,
        observer: Rc<dyn ShardObserver>,
    ) -> io::Result<Vec<SimIo>> {
        let mut peers = Vec::with_capacity(cores);
        for core in 0..cores {
            peers.push(PeerLink::bind(me, core, cores).await?);
        }
        SimIo::bind_with_peers(address, cores, peers, Some(observer)).await
    }

    async fn bind_with_peers(
        address: std::net::SocketAddr,
        cores: usize,
        peers: Vec<PeerLink>,
        observer: Option<Rc<dyn ShardObserver>>,
    ) -> io::Result<Vec<SimIo>> {
        assert!(cores > 0, "a node runs at least one core");
        assert!(
            peers.is_empty() || peers.len() == cores,
            "every core links to its peers, or none does"
        );
        let clients = TcpListener::bind(address).await?;
        let host = host(madsim::plugin::node());
        let observer = observer.unwrap_or_else(|| Rc::clone(&host.ledger) as Rc<dyn ShardObserver>);
        let node = Rc::new(SimNode {
            host,
            clients,
            epoch: TimeHandle::current().now_instant(),
            inboxes: (0..cores).map(|_| HopQueue::default()).collect(),
            moved: (0..cores).map(|_| MovedQueue::default()).collect(),
            peers,
            observer,
        });
        Ok((0..cores)
            .map(|core| SimIo {
                core,
                node: Rc::clone(&node),
            })
            .collect())
    }
}

/// A client connection over madsim's TCP.
#[derive(Debug)]
pub struct SimConn {
    stream: TcpStream,
    peer: String,
}

impl Connection for SimConn {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf).await
    }

    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.stream.write_all(buf).await?;
        // madsim's stream only buffers writes; the flush sends them.
        self.stream.flush().await
    }

    fn peer(&self) -> String {
        self.peer.clone()
    }
}

impl NodeIo for SimIo {
    type Storage = SimDir;
    type Conn = SimConn;

    async fn shard_storage(&self, shard: u32) -> io::Result<SimDir> {
        Ok(self.node.host.disk.dir(&shard_dir_name(shard)))
    }

    fn shard_observer(&self, _shard: u32) -> Option<Rc<dyn ShardObserver>> {
        Some(Rc::clone(&self.node.observer))
    }

    fn now_unix_ms(&self) -> u64 {
        TimeHandle::current()
            .now_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64)
    }

    fn monotonic_us(&self) -> u64 {
        let now = TimeHandle::current().now_instant();
        now.duration_since(self.node.epoch).as_micros() as u64
    }

    async fn sleep(&self, duration: Duration) {
        madsim::time::sleep(duration).await;
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + 'static) {
        // Dropping madsim's join handle detaches the task.
        drop(madsim::task::spawn_local(task));
    }

    async fn accept(&self, listener: Listener) -> io::Result<SimConn> {
        match listener {
            Listener::Clients => {
                let (stream, peer) = self.node.clients.accept().await?;
                Ok(SimConn {
                    stream,
                    peer: peer.to_string(),
                })
            }
            Listener::Metrics => std::future::pending().await,
        }
    }

    fn core(&self) -> (usize, usize) {
        (self.core, self.node.inboxes.len())
    }

    async fn send_hop(&self, core: usize, hop: Hop) {
        assert_ne!(core, self.core, "core {core} hops to itself");
        self.node.inboxes[core]
            .send(hop, &self.node.host.hops)
            .await;
    }

    async fn recv_hop(&self) -> Hop {
        self.node.inboxes[self.core].recv().await
    }

    /// The cores of a node share its thread: a connection moves as it is.
    async fn move_connection(
        &self,
        core: usize,
        conn: SimConn,
        client: ClientInfo,
    ) -> Result<(), (SimConn, ClientInfo)> {
        assert_ne!(core, self.core, "core {core} moves a connection to itself");
        let queue = &self.node.moved[core];
        queue.connections.borrow_mut().push_back((conn, client));
        queue.arrived.raise();
        self.node
            .host
            .hops
            .moved
            .set(self.node.host.hops.moved.get() + 1);
        Ok(())
    }

    async fn moved_in(&self) -> (io::Result<SimConn>, ClientInfo) {
        let queue = &self.node.moved[self.core];
        loop {
            let next = queue.connections.borrow_mut().pop_front();
            if let Some((conn, client)) = next {
                return (Ok(conn), client);
            }
            queue.arrived.wait().await;
        }
    }

    /// A single node (bound without peers) knows no peer.
    fn peer_send(&self, to: PeerId, shard: u32, frame: Vec<u8>) -> Result<(), PeerSendError> {
        match self.node.peers.get(self.core) {
            Some(link) => link.send(to, shard, frame),
            None => Err(PeerSendError::UnknownPeer),
        }
    }

    async fn peer_recv(&self) -> PeerMessage {
        match self.node.peers.get(self.core) {
            Some(link) => link.recv().await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::Context;

    use keel_engine::node::io::ShardReply;

    use super::*;

    fn poll_once<F: std::future::Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(Waker::noop()))
    }

    fn reply(id: u64) -> Hop {
        Hop::Reply {
            id,
            reply: ShardReply::Count(id),
        }
    }

    fn id(hop: Hop) -> u64 {
        match hop {
            Hop::Reply { id, .. } | Hop::Request { id, .. } => id,
        }
    }

    #[test]
    fn a_full_hop_queue_makes_the_sender_wait_and_keeps_the_order() {
        let (queue, counts) = (HopQueue::default(), HopCounts::default());
        for first in 0..HOP_QUEUE_MESSAGES as u64 {
            assert!(poll_once(pin!(queue.send(reply(first), &counts))).is_ready());
        }
        let full = HOP_QUEUE_MESSAGES as u64;
        let mut waiting = pin!(queue.send(reply(full), &counts));
        assert!(poll_once(waiting.as_mut()).is_pending());
        let Poll::Ready(oldest) = poll_once(pin!(queue.recv())) else {
            panic!("a queued hop is received at once");
        };
        assert_eq!(id(oldest), 0);
        assert!(poll_once(waiting.as_mut()).is_ready());
        for next in 1..=full {
            let Poll::Ready(hop) = poll_once(pin!(queue.recv())) else {
                panic!("hop {next} was queued");
            };
            assert_eq!(id(hop), next);
        }
        assert!(poll_once(pin!(queue.recv())).is_pending());
        assert_eq!((counts.sent.get(), counts.waited.get()), (full + 1, 1));
    }
}
