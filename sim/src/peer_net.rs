//! The peer network of a simulated cluster: each node's cores exchange
//! [`PeerMessage`]s with the same core index on the other nodes (shard s lives
//! on core `core_of_shard(s, cores)` of every node), as madsim datagrams
//! ([`Endpoint`]) through a fault layer of Keel's own.
//!
//! Why datagrams and a layer of our own: madsim's TCP never loses, duplicates
//! or reorders (a clog only delays it), so Raft's answers to those faults would
//! go untested. Its datagrams are dropped on a clogged link or a killed host,
//! and take a latency drawn per datagram; on top of that, each message draws
//! the [`LinkFaults`] in force as its core sends it (loss, a second copy, an
//! extra delay that lets later messages overtake it), and each
//! arrival is dropped if the [`Partition`] in force cuts its link. A paused
//! host (madsim's pause) neither sends nor takes its datagrams, which wait in
//! madsim's mailbox until it resumes; a killed host's sockets are gone, so
//! what its peers send it is lost until it restarts and binds again.
//!
//! The [`PeerNetwork`] (members, faults, counts) lives on the simulation's
//! thread, outside every host, as the disks of [`crate::io`] do: a kill must
//! not reset it, and a harness must reach it between kills. Its draws come
//! from its own [`SplitMix64`], seeded at [`install`], so a seed replays.
//!
//! madsim makes every send and every receive of a datagram sleep (its
//! `rand_delay`, which like every madsim sleep lasts at least 1 ms), so one
//! task moves at most one datagram a millisecond. Each core therefore sends
//! from [`PEER_SEND_TASKS_PER_CORE`] tasks and receives on
//! [`PEER_RECEIVE_TASKS_PER_CORE`]; messages sent in the same millisecond may
//! leave or arrive in any order, as datagrams may.
//!
//! Bounded everywhere, in messages and in frame bytes: a core queues at most
//! [`PEER_SEND_QUEUE_MESSAGES`] and [`PEER_SEND_QUEUE_BYTES_MAX`] to send
//! (`peer_send` refuses more, as the seam asks: never wait), holds at most
//! [`PEER_RECV_QUEUE_MESSAGES`] and [`PEER_RECV_QUEUE_BYTES_MAX`] received
//! (more are dropped, counted), and refuses frames over
//! [`PEER_FRAME_BYTES_MAX`].

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use keel_engine::node::core::core_of_shard;
use keel_engine::node::io::{PeerId, PeerMessage, PeerSendError};
use keel_wal::memory::SplitMix64;
use madsim::net::Endpoint;
use madsim::runtime::Handle;
use madsim::task::NodeId;

use crate::fault_schedule::{Fault, FaultSchedule};
use crate::network_faults::{LinkFaults, Partition, Route};

/// Core c of every node takes its peers' datagrams on this port plus c.
pub const PEER_PORT_BASE: u16 = 7400;
/// Messages one core may have waiting to leave, and their frames' bytes;
/// `peer_send` refuses more (`QueueFull`). Raft retries, so a refusal costs a
/// round, not safety.
pub const PEER_SEND_QUEUE_MESSAGES: usize = 256;
pub const PEER_SEND_QUEUE_BYTES_MAX: usize = keel_engine::peer::links::PEER_QUEUE_BYTES_MAX;
/// Messages one core has received and not yet taken with `peer_recv`, and
/// their frames' bytes; more are dropped on arrival (counted in
/// [`NetCounts::dropped_receive_full`]).
pub const PEER_RECV_QUEUE_MESSAGES: usize = 1_024;
pub const PEER_RECV_QUEUE_BYTES_MAX: usize = keel_engine::peer::links::PEER_INBOX_BYTES_MAX;
/// The largest frame one message may carry; `peer_send` refuses larger ones
/// (`TooLarge`). The server's limit, so that the simulator refuses exactly
/// what the server would. A snapshot travels in chunks well below it.
pub const PEER_FRAME_BYTES_MAX: usize = keel_engine::peer::frame::PEER_FRAME_BYTES_MAX;
// A frame of the largest size must fit an empty queue, or it could never be sent.
const _: () = assert!(PEER_FRAME_BYTES_MAX <= PEER_SEND_QUEUE_BYTES_MAX);
const _: () = assert!(PEER_FRAME_BYTES_MAX <= PEER_RECV_QUEUE_BYTES_MAX);
/// Tasks of each core that send its queued messages, and that take its
/// arriving datagrams: each moves one datagram per millisecond at most
/// (module doc), so these bound a core's rates (messages a millisecond).
pub const PEER_SEND_TASKS_PER_CORE: usize = 8;
pub const PEER_RECEIVE_TASKS_PER_CORE: usize = 8;
/// madsim's tag of peer datagrams ("keel").
const PEER_DATAGRAM_TAG: u64 = 0x6b65_656c;

/// One datagram. madsim carries it as a typed value, not bytes: the frame
/// inside is the real wire format (a checksummed `keel_replication::codec`
/// frame); the envelope is the simulator's own and never leaves it.
#[derive(Clone, Debug)]
struct Datagram {
    to: PeerId,
    message: PeerMessage,
}

/// What the network did with the messages it was given, over all nodes and
/// boots of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounts {
    /// Messages `peer_send` queued.
    pub queued: u64,
    pub refused_queue_full: u64,
    pub refused_too_large: u64,
    pub refused_unknown_peer: u64,
    /// Messages the link faults dropped before sending.
    pub lost: u64,
    /// Second copies sent.
    pub duplicated: u64,
    /// Copies held back by an extra delay.
    pub delayed: u64,
    /// Datagrams that arrived over a link the partition cuts, dropped.
    pub cut: u64,
    /// Datagrams that found the receiving core's queue full, dropped.
    pub dropped_receive_full: u64,
    /// Messages put in a receiving core's queue.
    pub delivered: u64,
}

/// The simulation's peer network: its members' addresses, the faults in
/// force and what it did.
#[derive(Debug)]
pub struct PeerNetwork {
    members: BTreeMap<PeerId, IpAddr>,
    state: RefCell<NetState>,
}

#[derive(Debug)]
struct NetState {
    links: LinkFaults,
    partition: Partition,
    rng: SplitMix64,
    counts: NetCounts,
}

thread_local! {
    /// The network of the thread's simulation (one simulation per thread).
    static NETWORK: RefCell<Option<Rc<PeerNetwork>>> = const { RefCell::new(None) };
}

/// Makes the network of this thread's simulation: `members` and each one's
/// IP (its madsim host's), no faults, draws seeded by `seed`. Replaces the
/// thread's previous network.
pub fn install(members: &[(PeerId, IpAddr)], seed: u64) -> Rc<PeerNetwork> {
    let network = Rc::new(PeerNetwork {
        members: members.iter().copied().collect(),
        state: RefCell::new(NetState {
            links: LinkFaults::NONE,
            partition: Partition::default(),
            rng: SplitMix64::new(seed),
            counts: NetCounts::default(),
        }),
    });
    assert_eq!(
        network.members.len(),
        members.len(),
        "each member is named once"
    );
    NETWORK.with(|current| *current.borrow_mut() = Some(Rc::clone(&network)));
    network
}

/// The network [`install`] made on this thread.
pub fn network() -> Rc<PeerNetwork> {
    NETWORK.with(|current| {
        current
            .borrow()
            .clone()
            .expect("a cluster's network is installed before its nodes bind")
    })
}

impl PeerNetwork {
    /// Every message sent from now on draws these faults.
    pub fn set_link_faults(&self, links: LinkFaults) {
        links.assert_valid();
        self.state.borrow_mut().links = links;
    }

    /// From now on, arrivals over the links `partition` cuts are dropped.
    pub fn partition(&self, partition: Partition) {
        self.state.borrow_mut().partition = partition;
    }

    pub fn heal(&self) {
        self.partition(Partition::default());
    }

    pub fn counts(&self) -> NetCounts {
        self.state.borrow().counts
    }

    /// Applies `fault`; node faults go to the madsim host `host_of` names.
    /// A kill leaves the host's disk as it is: a harness that wants a power
    /// loss crashes the disk (`crate::io::host`) between the kill and the restart.
    pub fn apply(&self, fault: &Fault, host_of: impl Fn(PeerId) -> NodeId) {
        let handle = Handle::current();
        match fault {
            Fault::Links(links) => self.set_link_faults(*links),
            Fault::Partition(partition) => self.partition(partition.clone()),
            Fault::Heal => self.heal(),
            Fault::Pause(peer) => handle.pause(host_of(*peer)),
            Fault::Resume(peer) => handle.resume(host_of(*peer)),
            Fault::Kill(peer) => handle.kill(host_of(*peer)),
            Fault::Restart(peer) => handle.restart(host_of(*peer)),
        }
    }

    /// Applies each fault of `schedule` at its time, counted from now.
    pub async fn play(&self, schedule: &FaultSchedule, host_of: impl Fn(PeerId) -> NodeId) {
        let start = madsim::time::TimeHandle::current().now_instant();
        for timed in schedule.faults() {
            madsim::time::sleep_until(start + Duration::from_millis(timed.at_ms)).await;
            self.apply(&timed.fault, &host_of);
        }
    }

    fn count(&self, pick: impl FnOnce(&mut NetCounts) -> &mut u64) {
        *pick(&mut self.state.borrow_mut().counts) += 1;
    }

    /// The fate of the next message sent, drawn from the faults in force.
    fn route(&self) -> Route {
        let mut state = self.state.borrow_mut();
        let links = state.links;
        let route = links.route(&mut state.rng);
        match route {
            Route::Lost => state.counts.lost += 1,
            Route::Sent { copies, delays_us } => {
                state.counts.duplicated += copies as u64 - 1;
                state.counts.delayed += delays_us.iter().filter(|&&us| us > 0).count() as u64;
            }
        }
        route
    }

    /// Whether a datagram arriving now from `from` at `to` crosses the
    /// partition (and is counted as cut if not).
    fn admits(&self, from: PeerId, to: PeerId) -> bool {
        let mut state = self.state.borrow_mut();
        let cut = state.partition.is_cut(from, to);
        state.counts.cut += u64::from(cut);
        !cut
    }
}

/// Something a [`BoundedQueue`] holds, and the bytes it counts against it.
trait QueueItem {
    fn bytes(&self) -> usize;
}

impl QueueItem for PeerMessage {
    fn bytes(&self) -> usize {
        self.frame.len()
    }
}

impl QueueItem for Datagram {
    fn bytes(&self) -> usize {
        self.message.bytes()
    }
}

/// A queue of at most `messages` items and `bytes_max` bytes, which never
/// makes a sender wait.
#[derive(Debug)]
struct BoundedQueue<T> {
    items: RefCell<VecDeque<T>>,
    /// The bytes of the items queued.
    bytes: Cell<usize>,
    messages: usize,
    bytes_max: usize,
    /// Takers waiting for an item; all are woken by each item (they are few).
    waiting: RefCell<Vec<Waker>>,
}

impl<T: QueueItem> BoundedQueue<T> {
    fn new(messages: usize, bytes_max: usize) -> BoundedQueue<T> {
        BoundedQueue {
            items: RefCell::new(VecDeque::with_capacity(messages)),
            bytes: Cell::new(0),
            messages,
            bytes_max,
            waiting: RefCell::default(),
        }
    }

    /// Queues `item` unless the queue is full; whether it did.
    fn offer(&self, item: T) -> bool {
        let mut items = self.items.borrow_mut();
        let bytes = self.bytes.get() + item.bytes();
        if items.len() == self.messages || bytes > self.bytes_max {
            return false;
        }
        items.push_back(item);
        self.bytes.set(bytes);
        for taker in self.waiting.borrow_mut().drain(..) {
            taker.wake();
        }
        true
    }

    /// The oldest item, waiting for one.
    async fn take(&self) -> T {
        poll_fn(|context| match self.items.borrow_mut().pop_front() {
            Some(item) => {
                self.bytes.set(self.bytes.get() - item.bytes());
                Poll::Ready(item)
            }
            None => {
                self.waiting.borrow_mut().push(context.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// One core's link to the same core of every other member: its bounded
/// queues, and the two tasks of its host that move datagrams between them
/// and its [`Endpoint`] (they die with the host).
#[derive(Debug)]
pub struct PeerLink {
    me: PeerId,
    core: usize,
    cores: usize,
    network: Rc<PeerNetwork>,
    outbound: Rc<BoundedQueue<Datagram>>,
    inbound: Rc<BoundedQueue<PeerMessage>>,
}

impl PeerLink {
    /// Binds core `core` (of `cores`) of member `me` on its host, and starts
    /// its sending and receiving tasks there.
    pub async fn bind(me: PeerId, core: usize, cores: usize) -> io::Result<PeerLink> {
        let network = network();
        let ip = *network.members.get(&me).expect("the node is a member");
        let endpoint = Endpoint::bind(SocketAddr::new(ip, peer_port(core))).await?;
        let link = PeerLink {
            me,
            core,
            cores,
            network,
            outbound: Rc::new(BoundedQueue::new(
                PEER_SEND_QUEUE_MESSAGES,
                PEER_SEND_QUEUE_BYTES_MAX,
            )),
            inbound: Rc::new(BoundedQueue::new(
                PEER_RECV_QUEUE_MESSAGES,
                PEER_RECV_QUEUE_BYTES_MAX,
            )),
        };
        // Dropping madsim's join handles detaches the tasks.
        for _ in 0..PEER_SEND_TASKS_PER_CORE {
            let (network, outbound) = (Rc::clone(&link.network), Rc::clone(&link.outbound));
            drop(madsim::task::spawn_local(send_loop(
                endpoint.clone(),
                network,
                outbound,
                core,
            )));
        }
        for _ in 0..PEER_RECEIVE_TASKS_PER_CORE {
            let (network, inbound) = (Rc::clone(&link.network), Rc::clone(&link.inbound));
            drop(madsim::task::spawn_local(receive_loop(
                endpoint.clone(),
                network,
                inbound,
                me,
            )));
        }
        Ok(link)
    }

    /// `NodeIo::peer_send`: queues the message, or says why not.
    pub fn send(&self, to: PeerId, shard: u32, frame: Vec<u8>) -> Result<(), PeerSendError> {
        assert_eq!(
            core_of_shard(shard, self.cores),
            self.core,
            "shard {shard}'s messages leave from its own core"
        );
        let refused = if to == self.me || !self.network.members.contains_key(&to) {
            Some(PeerSendError::UnknownPeer)
        } else if frame.len() > PEER_FRAME_BYTES_MAX {
            Some(PeerSendError::TooLarge)
        } else {
            let message = PeerMessage {
                from: self.me,
                shard,
                frame,
            };
            (!self.outbound.offer(Datagram { to, message })).then_some(PeerSendError::QueueFull)
        };
        self.network.count(|counts| match refused {
            None => &mut counts.queued,
            Some(PeerSendError::UnknownPeer) => &mut counts.refused_unknown_peer,
            Some(PeerSendError::TooLarge) => &mut counts.refused_too_large,
            Some(PeerSendError::QueueFull) => &mut counts.refused_queue_full,
        });
        refused.map_or(Ok(()), Err)
    }

    /// `NodeIo::peer_recv`: the next message, waiting for one.
    pub async fn recv(&self) -> PeerMessage {
        self.inbound.take().await
    }
}

fn peer_port(core: usize) -> u16 {
    PEER_PORT_BASE + u16::try_from(core).expect("a core number fits a port offset")
}

/// One of a core's sending tasks: sends what the core queued, each message as
/// its drawn route says: lost,
/// or one or two copies, a delayed copy from a task of its own so that the
/// messages behind it overtake it.
async fn send_loop(
    endpoint: Endpoint,
    network: Rc<PeerNetwork>,
    outbound: Rc<BoundedQueue<Datagram>>,
    core: usize,
) {
    loop {
        let datagram = outbound.take().await;
        let Route::Sent { copies, delays_us } = network.route() else {
            continue;
        };
        let ip = network.members[&datagram.to];
        let to = SocketAddr::new(ip, peer_port(core));
        for &delay_us in &delays_us[..copies] {
            let (endpoint, copy) = (endpoint.clone(), datagram.clone());
            let send = async move {
                if delay_us > 0 {
                    madsim::time::sleep(Duration::from_micros(delay_us)).await;
                }
                // madsim reports no loss to a sender: a datagram to a host
                // that is down or clogged vanishes, as over UDP.
                let sent = endpoint
                    .send_to_raw(to, PEER_DATAGRAM_TAG, Box::new(copy))
                    .await;
                sent.expect("madsim sends to a known address");
            };
            if delay_us > 0 {
                drop(madsim::task::spawn_local(send));
            } else {
                send.await;
            }
        }
    }
}

/// One of a core's receiving tasks: takes the core's datagrams, drops those
/// the partition cuts or that find
/// the core's queue full, and queues the rest for `peer_recv`.
async fn receive_loop(
    endpoint: Endpoint,
    network: Rc<PeerNetwork>,
    inbound: Rc<BoundedQueue<PeerMessage>>,
    me: PeerId,
) {
    // An error means the host's network is gone: it is being killed.
    while let Ok((payload, _)) = endpoint.recv_from_raw(PEER_DATAGRAM_TAG).await {
        let datagram = payload
            .downcast::<Datagram>()
            .expect("only peer datagrams carry the peer tag");
        assert_eq!(datagram.to, me, "a datagram reached the member it names");
        if !network.admits(datagram.message.from, me) {
            continue;
        }
        let delivered = inbound.offer(datagram.message);
        network.count(|counts| match delivered {
            true => &mut counts.delivered,
            false => &mut counts.dropped_receive_full,
        });
    }
}
