//! The world as the node loop sees it: disk, clients, other cores, peers,
//! clock and timers. The server implements it with glommio ([`crate::glommio_io`]); the
//! simulator with madsim. The node loop reads no clock, opens no socket and
//! touches no file except through it.

use std::future::Future;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use keel_wal::Storage;

use keel_replication::{EntryId, Envelope, HardState};

use crate::keyspace::Keyspace;
use crate::node::admin::ClientInfo;
use crate::operation::Operation;
use crate::resp::Reply;

/// Which listening socket to accept from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// Redis-protocol clients.
    Clients,
    /// Prometheus scrapes (HTTP).
    Metrics,
}

/// One accepted byte stream.
#[allow(async_fn_in_trait)]
pub trait Connection {
    /// Reads what is available into `buf`; 0 means the peer closed.
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// The peer's address, as `CLIENT LIST` shows it.
    fn peer(&self) -> String;
}

/// What one core asks another: work on a shard the other core owns.
#[derive(Debug)]
pub enum ShardRequest {
    /// A keyed command; all its keys live in the shard. `stale`: a read on
    /// a `READONLY` connection, served from this node's committed state.
    Command { args: Vec<Vec<u8>>, stale: bool },
    /// The number of live keys.
    Count,
    /// Every live key matching the pattern.
    Keys { pattern: Vec<u8> },
    /// The live key `pick` names (RANDOMKEY), if the shard finds one.
    RandomKey { pick: u64 },
    /// One step of a SCAN over the shard.
    Scan {
        cursor: u64,
        count: usize,
        pattern: Option<Vec<u8>>,
    },
    /// Remove every key, through the log.
    FlushAll,
    /// Connection `client` WATCHes `keys` (all of them in the shard).
    Watch { client: u64, keys: Vec<Vec<u8>> },
    /// Connection `client` forgets the keys it watches in the shard.
    Unwatch { client: u64 },
    /// EXEC: the transaction's keyed commands, run as one unit and logged
    /// as one entry, unless a key `client` watches changed.
    Exec {
        client: u64,
        commands: Vec<Vec<Vec<u8>>>,
    },
    /// Figures for INFO and metrics.
    Stats,
    /// A keyed command for `slot` whose shard (on this core) another member
    /// leads, from a connection that does not follow `-MOVED`: forwarded
    /// to the leader over this core's peer link (run here if this node
    /// leads it by now).
    Forward {
        slot: u16,
        access: crate::topology::Access,
        args: Vec<Vec<u8>>,
    },
    /// EXEC for `slot` whose shard (on this core) another member leads,
    /// from a connection that does not follow `-MOVED`: its keyed commands
    /// forwarded to the leader as one EXEC, which checks the keys it
    /// watches for `client` if `watching` (run here as `client`'s if this
    /// node leads the shard by now).
    ForwardExec {
        slot: u16,
        client: u64,
        watching: bool,
        commands: Vec<Vec<Vec<u8>>>,
    },
    /// A whole-shard query or a WATCH or UNWATCH (`node::shard_query`'s
    /// arguments) for a plain connection, whose shard (on this core) another
    /// member leads: forwarded to the leader (run here if this node leads it
    /// by now; a watch is kept here as well).
    ForwardQuery { args: Vec<Vec<u8>> },
    /// WAIT: how many followers hold the log through `through` (the
    /// shard's commit index now, if `None`).
    Replicas { through: Option<EntryId> },
}

/// The answer to a [`ShardRequest`], given once it may be acknowledged.
#[derive(Debug)]
pub enum ShardReply {
    Reply(Reply),
    Count(u64),
    Keys(Vec<Vec<u8>>),
    Key(Option<Vec<u8>>),
    Scan { next: u64, keys: Vec<Vec<u8>> },
    Stats(Box<crate::node::shard::ShardStats>),
    Replicas { through: EntryId, count: usize },
}

/// A message between cores.
#[derive(Debug)]
pub enum Hop {
    Request {
        id: u64,
        from_core: usize,
        shard: u32,
        request: ShardRequest,
    },
    Reply {
        id: u64,
        reply: ShardReply,
    },
}

/// A member of the cluster, as the consensus core numbers it.
pub type PeerId = u64; // == keel_replication::NodeId's inner value

/// One replication message between two nodes' copies of the same shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerMessage {
    pub from: PeerId,
    pub shard: u32,
    /// One `keel_replication::codec` frame, not yet decoded (the receiver
    /// decodes it, which verifies its checksums).
    pub frame: Vec<u8>,
}

/// Why `peer_send` queued nothing (the message is dropped; Raft retries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerSendError {
    UnknownPeer,
    QueueFull,
    TooLarge,
}

/// What a shard tells an observer: the simulator checks recovery against it; the
/// server has none.
pub trait ShardObserver: std::fmt::Debug {
    /// The shard read its log back through `last_index`, at a boot, before
    /// it logs anything.
    fn restored(&self, _shard: u32, _last_index: u64) {}
    /// The shard recovered to `last_index` with this key space (before
    /// serving), once the entries it restored committed: possibly after it
    /// logged more (its new term's no-op), and never if the boot stops
    /// before.
    fn recovered(&self, shard: u32, last_index: u64, keyspace: &Keyspace);
    /// Entry `index`, holding `op`, was handed to the WAL (every entry, in
    /// log order, a no-op as the empty batch). It is not applied yet: a
    /// crash may keep it durable though it never committed, and the
    /// restart then commits it.
    fn logged(&self, shard: u32, index: u64, op: &Operation);
    /// `op` was applied at `index` (every applied entry, in index order: client
    /// writes, active-expiry deletes, FLUSHALL; a no-op as the empty batch),
    /// at its commit.
    fn applied(&self, shard: u32, index: u64, op: &Operation);
    /// A reply depending on entries up to `index` is being released to a client
    /// (called where `Shard::acknowledged` returns Ok, i.e. after the wait).
    fn acknowledged(&self, shard: u32, index: u64);
    /// This node became the leader of `shard` in `term` (once per term).
    fn elected(&self, _shard: u32, _term: u64) {}
    /// The shard installed its leader's snapshot through `last_index`: the
    /// key space holds it, applied through there (the entries before it are
    /// not applied one by one). Durable only with the writes that follow.
    fn installed(&self, _shard: u32, _last_index: u64, _keyspace: &Keyspace) {}
    /// The shard's group starts (at a boot) with this term and vote, as it
    /// holds them after reading them back.
    fn restarted_with(&self, _shard: u32, _hard_state: HardState) {}
    /// The hard-state file holds `hard_state`, durably.
    fn hard_state_durable(&self, _shard: u32, _hard_state: HardState) {}
    /// A message of the group leaves for a peer.
    fn sent(&self, _shard: u32, _envelope: &Envelope) {}
    /// As the leader of `term`, the group committed the entries through
    /// `through`.
    fn leader_committed(&self, _shard: u32, _term: u64, _through: EntryId) {}
    /// As the leader of `term`, the group was asked to confirm its lead for
    /// read `read` (a ReadIndex round started now, after the read).
    fn read_asked(&self, _shard: u32, _read: u64, _term: u64) {}
    /// The group confirmed read `read`: the reply resting on it may go.
    fn read_confirmed(&self, _shard: u32, _read: u64) {}
}

/// What a shard reaches beyond its core: its peers' copies of it, and the
/// node's topology (who leads it).
pub trait ShardOutside: std::fmt::Debug {
    /// [`NodeIo::peer_send`].
    fn send(&self, to: PeerId, shard: u32, frame: Vec<u8>) -> Result<(), PeerSendError>;
    /// This node now knows `leader` (None: an election) leads `shard` in `term`.
    fn leader(&self, shard: u32, leader: Option<PeerId>, term: u64);
}

/// Disk, network, clock and timers for one core's node loop.
#[allow(async_fn_in_trait)]
pub trait NodeIo: Clone + 'static {
    type Storage: Storage + Clone + 'static;
    type Conn: Connection + 'static;

    /// The storage of one shard's directory, created if absent.
    async fn shard_storage(&self, shard: u32) -> io::Result<Self::Storage>;
    /// Wall-clock time, for expiry times that go into the log.
    fn now_unix_ms(&self) -> u64;
    /// A clock that never goes back, for durations.
    fn monotonic_us(&self) -> u64;
    async fn sleep(&self, duration: Duration);
    /// Runs a task on this core, detached.
    fn spawn(&self, task: impl Future<Output = ()> + 'static);
    async fn accept(&self, listener: Listener) -> io::Result<Self::Conn>;
    /// This core's number and the number of cores.
    fn core(&self) -> (usize, usize);
    /// Sends to another core; waits while its queue is full.
    async fn send_hop(&self, core: usize, hop: Hop);
    /// The next message from any other core.
    async fn recv_hop(&self) -> Hop;
    /// Hands client connection `conn`, between two requests (nothing read
    /// and unparsed, every reply written), and its `client` to core
    /// `core`, whose [`NodeIo::moved_in`] takes them. Gives both back if
    /// the connection cannot move; this core then goes on serving it.
    async fn move_connection(
        &self,
        core: usize,
        conn: Self::Conn,
        client: ClientInfo,
    ) -> Result<(), (Self::Conn, ClientInfo)>;
    /// The next connection another core moved to this one, with its client;
    /// the error if it cannot be served here (the connection is closed).
    async fn moved_in(&self) -> (io::Result<Self::Conn>, ClientInfo);
    /// Queues `frame` for shard `shard` on peer `to`, over this core's link to
    /// it. Never waits: a full or broken link drops the message (counted).
    fn peer_send(&self, to: PeerId, shard: u32, frame: Vec<u8>) -> Result<(), PeerSendError>;
    /// The next message any peer sent to one of this core's shards.
    async fn peer_recv(&self) -> PeerMessage;
    /// Who watches shard `shard` apply and acknowledge entries, if anyone.
    fn shard_observer(&self, _shard: u32) -> Option<Rc<dyn ShardObserver>> {
        None
    }
}
