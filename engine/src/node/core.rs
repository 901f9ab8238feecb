//! One core's node loop: accepts clients, routes each command to the shard
//! that owns its keys (here, or on another core over a hop), and answers in
//! order once what each reply depends on is durable.
//!
//! # Invariants
//! - A connection's commands are executed in the order they arrived: those for
//!   one shard travel one FIFO path (this core, or one core-to-core channel).
//! - Replies are written in request order, each only once it may be released
//!   (see [`crate::node::shard`]); a batch's replies go out in one write
//!   unless they pass [`REPLY_BUFFER_BYTES_MAX`].
//! - Every keyed command touches one shard: multi-key commands whose keys hash
//!   to different slots are refused with `-CROSSSLOT`, so no write is ever
//!   applied in part.
//! - A transaction (see [`crate::node::transaction`]) is one request to one
//!   shard at EXEC: its keyed commands run there as one unit and log one
//!   entry; its keyless ones are answered here and put in their places.
//! - A keyed command (and WATCH, and EXEC) runs only where the topology
//!   routes it ([`crate::topology::Topology::route`]): on a shard this node
//!   leads, or, for a read on a READONLY connection, one it holds.
//!   Elsewhere it is answered `-MOVED` or `-TRYAGAIN` and touches no shard.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use keel_replication::EntryId;
use keel_wal::memory::SplitMix64;

use crate::command;
use crate::limits::{PIPELINE_COMMANDS_MAX, QUERY_BUFFER_BYTES_MAX, REPLY_BUFFER_BYTES_MAX};
use crate::metrics::NodeMetrics;
use crate::node::admin::{self, ClientInfo};
use crate::node::cluster::{self, ClusterCommand, ShardProgress};
use crate::node::io::{Connection, Hop, Listener, NodeIo, PeerId, ShardReply, ShardRequest};
use crate::node::local::Signal;
use crate::node::local::Slot;
use crate::node::planted::{self, NodePlant};
use crate::node::shard::{Executed, Shard, ShardStats};
use crate::node::shard_query;
use crate::node::transaction::{self, Exec, Transaction};
use crate::node::NodeShared;
use crate::peer::forward::{self, Forward};
use crate::peer::frame::PEER_FRAME_BYTES_MAX;
use crate::peer::replays::{self, Replays};
use crate::resp::{Protocol, Reply, RequestParser, BULK_BYTES_MAX_DEFAULT};
use crate::slot::{key_slot, SLOT_COUNT};
use crate::topology::{Access, MemberId, Route, Topology, TopologyView};

/// How long a core stops accepting after an accept failed. The usual
/// causes (the process or the system is out of file descriptors, the kernel
/// out of buffers) last until connections close, so retrying at once would
/// spin the core and flood the log; 100 ms keeps the log to ten lines a
/// second and delays new connections by at most that once the cause clears.
pub const ACCEPT_ERROR_BACKOFF_MS: u64 = 100;

/// How long a member waits for the leader's reply to a command it
/// forwarded before it answers `-UNCERTAIN` (a lost message, a failed
/// leader): twice the longest election timeout, so a reply delayed by an
/// election still arrives.
pub const FORWARD_TIMEOUT_MS: u64 = 2_000;
/// How long a forwarded command still waits for the leader it went to once
/// another member (or no one) leads its shard: a leader that handed over
/// answers within a round trip, one that failed never does, and its
/// clients would otherwise wait out [`FORWARD_TIMEOUT_MS`] on top of the
/// election. Two heartbeat intervals; 300 ms gave the simulated cluster a
/// median failover of 1,003 ms, this 981 ms (docs/SIMULATION.md).
pub const FORWARD_GRACE_AFTER_LEADER_CHANGE_MS: u64 = 100;
/// Connections of other members whose keys one core's shards watch for
/// them (a plain connection's WATCH on a member that does not lead the
/// keys' shard): past it, the oldest is forgotten, and its EXEC then aborts
/// as if a watched key had changed.
pub const REMOTE_WATCHERS_MAX: usize = 16_384;
/// How often a core looks for forwarded commands to give up on.
pub const FORWARD_CHECK_INTERVAL_MS: u64 = 50;
/// Forwarded commands one core waits for at once; past it, commands get
/// `-MOVED`.
pub const FORWARDS_IN_FLIGHT_MAX: usize = 16_384;
/// Forwarded commands one core holds before running them; past it, they
/// are refused with `-TRYAGAIN`.
pub const FORWARDS_QUEUED_MAX: usize = 16_384;

/// How often WAIT asks the shards how many followers hold its writes.
pub const WAIT_POLL_MS: u64 = 5;

/// Keys a shard's SCAN returns per page while CLUSTER COUNTKEYSINSLOT or
/// GETKEYSINSLOT looks for a slot's keys: bounds each page's reply.
pub const SLOT_SCAN_PAGE_KEYS: usize = 1024;

/// The shard that owns hash slot `slot`: contiguous slot ranges, as Redis
/// Cluster assigns them to nodes.
pub fn shard_of_slot(slot: u16, shards: u32) -> u32 {
    assert!(slot < SLOT_COUNT, "slot {slot} out of range");
    (u32::from(slot) * shards) / u32::from(SLOT_COUNT)
}

/// The core that runs shard `shard`.
pub fn core_of_shard(shard: u32, cores: usize) -> usize {
    shard as usize % cores
}

/// The shards, of `shard_count`, that core `core` of `cores` runs.
pub fn shards_of_core(shard_count: u32, core: usize, cores: usize) -> impl Iterator<Item = u32> {
    (0..shard_count).filter(move |shard| core_of_shard(*shard, cores) == core)
}

/// A forwarding stream's number for this boot of this core: the boot's
/// random run id and the core, hashed.
fn boot_nonce(run_id: &str, core: usize) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(run_id.as_bytes());
    hasher.update(&(core as u64).to_le_bytes());
    hasher.finalize()
}

/// The answer to a forwarded command its leader did not answer in time. Not
/// `-TRYAGAIN`: Redis Cluster clients retry that at once as "not executed",
/// and this command may have been (an INCR retried would count twice). An
/// error prefix of its own reaches the application, which knows whether the
/// command is safe to repeat.
pub const FORWARD_UNANSWERED: &str = "UNCERTAIN the shard's leader did not answer a forwarded command in time (it failed, or lost the lead); it may or may not have taken effect";

/// How a connection's loop on this core ended.
enum ClientEnd {
    /// The client closed it, or a command did (QUIT, a protocol error).
    Closed,
    /// It moved to another core, which serves it from now on.
    Moved,
}

/// A command this core forwarded, waiting for its leader's reply.
#[derive(Debug)]
struct Forwarded {
    reply: Slot<ShardReply>,
    shard: u32,
    /// The member it went to, as leader of `shard`.
    leader: MemberId,
    /// When to give up on it (monotonic µs).
    deadline_us: u64,
}

/// The forwarded commands to give up on at `now_us`, after moving the
/// deadline of those whose shard another member (or no one) leads by now
/// to at most [`FORWARD_GRACE_AFTER_LEADER_CHANGE_MS`] away.
fn overdue_forwards(
    forwarded: &mut HashMap<u64, Forwarded>,
    topology: &Topology,
    now_us: u64,
) -> Vec<u64> {
    let grace_deadline_us = now_us + FORWARD_GRACE_AFTER_LEADER_CHANGE_MS * 1_000;
    for waiting in forwarded.values_mut() {
        let placement = &topology.shards[waiting.shard as usize];
        if placement.leader != Some(waiting.leader) {
            waiting.deadline_us = waiting.deadline_us.min(grace_deadline_us);
        }
    }
    forwarded
        .iter()
        .filter(|(_, waiting)| now_us >= waiting.deadline_us)
        .map(|(id, _)| *id)
        .collect()
}

/// What a member forwarded to this node, as the leader of its shard.
#[derive(Debug)]
pub enum Forwarding {
    /// One keyed command.
    Command(Vec<Vec<u8>>),
    /// A transaction's keyed commands, run as one EXEC that checks the keys
    /// this core watches for the forwarder's connection `watcher` (0: none).
    Transaction {
        watcher: u64,
        commands: Vec<Vec<Vec<u8>>>,
    },
}

/// The connections of other members whose keys this core's shards watch,
/// by (member, its connection id): the id the shard watches them under.
#[derive(Debug, Default)]
struct RemoteWatchers {
    ids: HashMap<(PeerId, u64), RemoteWatcher>,
    /// Oldest first; an entry no longer in `ids` is skipped.
    order: VecDeque<(PeerId, u64)>,
}

/// One of another member's connections whose keys a shard watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RemoteWatcher {
    shard: u32,
    /// The id the shard watches them under.
    id: u64,
    /// Keys its WATCHes named, bounded as a connection's here are
    /// ([`transaction::WATCHED_KEYS_MAX`]): a member is trusted to bound
    /// its own connections, not to bound this node's memory.
    keys: usize,
}

impl RemoteWatchers {
    /// The id shard `shard` watches `watcher` under (made now if new) once
    /// `keys` more of its keys count, or `None` past
    /// [`transaction::WATCHED_KEYS_MAX`]; and the watcher forgotten to stay
    /// within [`REMOTE_WATCHERS_MAX`], if one was (its shard and id, to
    /// unwatch).
    fn watch(
        &mut self,
        watcher: (PeerId, u64),
        shard: u32,
        keys: usize,
        new_id: impl FnOnce() -> u64,
    ) -> (Option<u64>, Option<RemoteWatcher>) {
        if let Some(known) = self.ids.get_mut(&watcher) {
            if known.keys + keys > transaction::WATCHED_KEYS_MAX {
                return (None, None);
            }
            known.keys += keys;
            return (Some(known.id), None);
        }
        if keys > transaction::WATCHED_KEYS_MAX {
            return (None, None);
        }
        let mut forgotten = None;
        while self.ids.len() >= REMOTE_WATCHERS_MAX {
            let oldest = self.order.pop_front().expect("every id is in the order");
            forgotten = self.ids.remove(&oldest).or(forgotten);
        }
        let id = new_id();
        self.ids.insert(watcher, RemoteWatcher { shard, id, keys });
        self.order.push_back(watcher);
        if self.order.len() > 2 * REMOTE_WATCHERS_MAX {
            let ids = &self.ids;
            self.order.retain(|watcher| ids.contains_key(watcher));
        }
        (Some(id), forgotten)
    }

    /// Forgets `watcher`: what it was watched under, if anything.
    fn take(&mut self, watcher: (PeerId, u64)) -> Option<RemoteWatcher> {
        self.ids.remove(&watcher)
    }
}

/// What a member forwarded: from whom, for which shard, its id there, and
/// the work.
type ForwardedCommand = (PeerId, u32, u64, Forwarding);

/// A reply on its way: known now, or once a shard says it may be released.
enum Pending {
    Ready(Reply),
    Local {
        shard: Rc<Shard>,
        reply: Reply,
        wait_for: Option<EntryId>,
        /// Whether the reply rests on a read this node's leadership must be
        /// confirmed for (`Executed::confirm`).
        confirm: bool,
    },
    Remote(Slot<ShardReply>),
    /// EXEC's reply: the shard's array for the keyed commands, into which
    /// the keyless commands' replies go at their positions.
    Exec {
        keyed: Box<Pending>,
        keyless: Vec<(usize, Reply)>,
    },
}

impl Pending {
    /// Bytes of the reply held here; a reply from another core is not known
    /// until it comes back.
    fn held_bytes(&self) -> usize {
        match self {
            Pending::Ready(reply) | Pending::Local { reply, .. } => reply.held_bytes(),
            Pending::Remote(_) => 0,
            Pending::Exec { keyless, .. } => {
                keyless.iter().map(|(_, reply)| reply.held_bytes()).sum()
            }
        }
    }
}

/// The commands started from one connection's buffered requests.
#[derive(Default)]
struct Batch {
    replies: Vec<(Protocol, Pending)>,
    /// The last reply ends the connection (QUIT, or a protocol error).
    close: bool,
}

/// One core's share of the node.
#[derive(Debug)]
pub struct Core<I: NodeIo> {
    pub io: I,
    pub node: Arc<NodeShared>,
    shards: HashMap<u32, Rc<Shard>>,
    waiting: RefCell<HashMap<u64, Slot<ShardReply>>>,
    next_hop: Cell<u64>,
    /// RANDOMKEY's draws: seeded from the node's hash seed (random per data
    /// directory), its start time and the core, so the server's draws differ
    /// between nodes and runs while the simulator, whose seed and clock are
    /// its own, replays them; the key space itself never draws.
    random: RefCell<SplitMix64>,
    /// This core's copy of the node's topology: where keyed commands run.
    topology: RefCell<TopologyView>,
    /// Commands this core forwarded to a leader, by id.
    forwarded: RefCell<HashMap<u64, Forwarded>>,
    /// The id of this core's next forwarded command: a stream of this boot's
    /// own ([`replays::stream_start`]), so a leader tells copies apart from
    /// new requests across the forwarder's restarts.
    next_forward: Cell<u64>,
    /// The forwarded requests this core has taken: a copy is dropped.
    replays: RefCell<Replays>,
    /// Commands members forwarded to this core's shards, in arrival order.
    forward_queue: RefCell<VecDeque<ForwardedCommand>>,
    /// Other members' connections whose keys this core's shards watch.
    remote_watchers: RefCell<RemoteWatchers>,
    forward_signal: Signal,
}

impl<I: NodeIo> Core<I> {
    pub fn new(io: I, node: Arc<NodeShared>, shards: HashMap<u32, Rc<Shard>>) -> Core<I> {
        let (core, _) = io.core();
        let seed = node.hash_seed ^ node.started_unix_ms.rotate_left(32) ^ core as u64;
        let first_forward = replays::stream_start(boot_nonce(&node.run_id, core));
        Core {
            random: RefCell::new(SplitMix64::new(seed)),
            topology: RefCell::new(TopologyView::new(&node.topology)),
            io,
            node,
            shards,
            waiting: RefCell::new(HashMap::new()),
            next_hop: Cell::new(0),
            forwarded: RefCell::default(),
            next_forward: Cell::new(first_forward),
            replays: RefCell::default(),
            forward_queue: RefCell::default(),
            remote_watchers: RefCell::default(),
            forward_signal: Signal::default(),
        }
    }

    pub fn shards(&self) -> impl Iterator<Item = &Rc<Shard>> {
        self.shards.values()
    }

    /// Shard `id`, if this core holds it.
    pub fn shard(&self, id: u32) -> Option<&Rc<Shard>> {
        self.shards.get(&id)
    }

    /// Asks the shard's core (maybe this one) to run `request`.
    async fn dispatch(&self, shard: u32, request: ShardRequest) -> Pending {
        if let Some(local) = self.shards.get(&shard) {
            return self.run_local(local, request).await;
        }
        let id = self.next_hop.get();
        self.next_hop.set(id + 1);
        let slot = Slot::default();
        self.waiting.borrow_mut().insert(id, slot.clone());
        let (core, cores) = self.io.core();
        let target = core_of_shard(shard, cores);
        assert_ne!(
            target, core,
            "shard {shard} is this core's but was not found"
        );
        self.io
            .send_hop(
                target,
                Hop::Request {
                    id,
                    from_core: core,
                    shard,
                    request,
                },
            )
            .await;
        Pending::Remote(slot)
    }

    async fn request(&self, shard: u32, request: ShardRequest) -> ShardReply {
        let pending = self.dispatch(shard, request).await;
        match self.resolve(pending).await {
            Resolved::Shard(reply) => reply,
            Resolved::Reply(reply) => ShardReply::Reply(reply),
        }
    }

    /// Runs `request` on a shard of this core as soon as the shard has room
    /// for more unsynced entries and can serve (a new leader's no-op
    /// committed); the result is released later.
    async fn run_local(&self, shard: &Rc<Shard>, request: ShardRequest) -> Pending {
        if let ShardRequest::Forward { slot, access, args } = request {
            return self.forward_or_redirect(shard, slot, access, args).await;
        }
        if let ShardRequest::ForwardExec {
            slot,
            client,
            watching,
            commands,
        } = request
        {
            return match self.route(slot, Access::Write) {
                Ok(_) => {
                    let exec = ShardRequest::Exec { client, commands };
                    Box::pin(self.run_local(shard, exec)).await
                }
                Err(redirect) => {
                    // The leader checks its own watch of the keys; this
                    // copy's is done with.
                    shard.unwatch(client, self.io.now_unix_ms());
                    let watcher = if watching { client } else { 0 };
                    self.forward(shard.id, |id| Forward::Transaction {
                        id,
                        watcher,
                        commands,
                    })
                    .unwrap_or(Pending::Ready(redirect))
                }
            };
        }
        if let ShardRequest::ForwardQuery { args } = request {
            let query = shard_query::decode(&args).expect("this node encoded the query");
            if self.leads(shard.id) {
                return Box::pin(self.run_local(shard, query)).await;
            }
            // A watch is kept here too: should this node lead before EXEC,
            // it checks its own copy (which applies every committed write
            // before it serves as leader).
            let now = self.io.now_unix_ms();
            match &query {
                ShardRequest::Watch { client, keys } => {
                    shard.watch(*client, keys, now);
                }
                ShardRequest::Unwatch { client } => {
                    shard.unwatch(*client, now);
                }
                _ => {}
            }
            return self
                .forward(shard.id, |id| Forward::Request { id, args })
                .unwrap_or_else(|| {
                    Pending::Ready(Reply::Error(format!(
                        "TRYAGAIN shard {} has no leader this member can reach now",
                        shard.id
                    )))
                });
        }
        match request {
            ShardRequest::Command { stale: true, .. } => {}
            ShardRequest::Command { .. } | ShardRequest::Exec { .. } => {
                shard.wait_for_room().await;
                shard.wait_readable().await;
            }
            // A read of the whole key space reads committed state: it waits
            // for every entry proposed before it.
            ShardRequest::Count
            | ShardRequest::RandomKey { .. }
            | ShardRequest::Keys { .. }
            | ShardRequest::Scan { .. } => shard.wait_settled().await,
            ShardRequest::Watch { .. } | ShardRequest::FlushAll => shard.wait_readable().await,
            ShardRequest::Unwatch { .. }
            | ShardRequest::Stats
            | ShardRequest::Replicas { .. }
            | ShardRequest::Forward { .. }
            | ShardRequest::ForwardExec { .. }
            | ShardRequest::ForwardQuery { .. } => {}
        }
        let now = self.io.now_unix_ms();
        let local = |executed: Executed| Pending::Local {
            shard: Rc::clone(shard),
            reply: executed.reply,
            wait_for: executed.wait_for,
            confirm: executed.confirm,
        };
        // A read of the whole key space is confirmed like a keyed read.
        let (reply, wait_for, confirm) = match request {
            ShardRequest::Command { args, stale: true } => {
                return local(shard.execute_stale(&args, now))
            }
            ShardRequest::Command { args, stale: false } => {
                return local(shard.execute(&args, now))
            }
            ShardRequest::Exec { client, commands } => {
                return local(shard.exec(client, &commands, now))
            }
            // WATCH answers once what it read (the keys' expiry) committed;
            // EXEC, on the leader, checks the keys again.
            ShardRequest::Watch { client, keys } => {
                return local(Executed {
                    reply: Reply::ok(),
                    wait_for: shard.watch(client, &keys, now),
                    confirm: false,
                })
            }
            ShardRequest::Unwatch { client } => {
                shard.unwatch(client, now);
                return local(Executed {
                    reply: Reply::ok(),
                    wait_for: None,
                    confirm: false,
                });
            }
            ShardRequest::Count => (ShardReply::Count(shard.count()), None, true),
            ShardRequest::RandomKey { pick } => {
                (ShardReply::Key(shard.random_key(pick, now)), None, true)
            }
            ShardRequest::Keys { pattern } => {
                (ShardReply::Keys(shard.keys(&pattern, now)), None, true)
            }
            ShardRequest::Scan {
                cursor,
                count,
                pattern,
            } => {
                let (next, keys) = shard.scan(cursor, count, pattern.as_deref(), now);
                (ShardReply::Scan { next, keys }, None, true)
            }
            ShardRequest::FlushAll => match shard.flush_all() {
                Ok(wait_for) => (
                    ShardReply::Reply(Reply::Simple("OK".into())),
                    wait_for,
                    wait_for.is_none(),
                ),
                Err(error) => (ShardReply::Reply(error), None, false),
            },
            ShardRequest::Stats => (ShardReply::Stats(Box::new(shard.stats())), None, false),
            ShardRequest::Forward { .. }
            | ShardRequest::ForwardExec { .. }
            | ShardRequest::ForwardQuery { .. } => unreachable!("answered above"),
            ShardRequest::Replicas { through } => {
                let through = through.unwrap_or_else(|| shard.commit());
                let count = shard.replicas_holding(through);
                (ShardReply::Replicas { through, count }, None, false)
            }
        };
        let slot = Slot::default();
        let waiter = slot.clone();
        let shard = Rc::clone(shard);
        self.io.spawn(async move {
            waiter.fill(match shard.acknowledged(wait_for, confirm).await {
                Ok(()) => reply,
                Err(error) => ShardReply::Reply(error),
            });
        });
        Pending::Remote(slot)
    }

    async fn resolve(&self, pending: Pending) -> Resolved {
        match pending {
            Pending::Ready(reply) => Resolved::Reply(reply),
            Pending::Local {
                shard,
                reply,
                wait_for,
                confirm,
            } => Resolved::Reply(match shard.acknowledged(wait_for, confirm).await {
                Ok(()) => reply,
                Err(error) => error,
            }),
            Pending::Remote(slot) => Resolved::Shard(slot.take().await),
            Pending::Exec { keyed, keyless } => {
                let reply = match Box::pin(self.resolve(*keyed)).await {
                    Resolved::Reply(reply) | Resolved::Shard(ShardReply::Reply(reply)) => reply,
                    Resolved::Shard(other) => panic!("EXEC got a non-reply answer: {other:?}"),
                };
                Resolved::Reply(merge_exec_replies(reply, keyless))
            }
        }
    }

    /// Serves messages from other cores until the node stops.
    pub async fn serve_hops(self: Rc<Self>) {
        loop {
            match self.io.recv_hop().await {
                Hop::Request {
                    id,
                    from_core,
                    shard,
                    request,
                } => {
                    let local = self
                        .shards
                        .get(&shard)
                        .unwrap_or_else(|| panic!("shard {shard} hopped to the wrong core"));
                    // Awaited here, not in a task of its own: a connection's
                    // commands must run in the order they hopped.
                    let pending = self.run_local(local, request).await;
                    let core = Rc::clone(&self);
                    self.io.spawn(async move {
                        let reply = match core.resolve(pending).await {
                            Resolved::Shard(reply) => reply,
                            Resolved::Reply(reply) => ShardReply::Reply(reply),
                        };
                        core.io.send_hop(from_core, Hop::Reply { id, reply }).await;
                    });
                }
                Hop::Reply { id, reply } => {
                    let slot =
                        self.waiting.borrow_mut().remove(&id).unwrap_or_else(|| {
                            panic!("a reply to hop {id}, which nobody waits for")
                        });
                    slot.fill(reply);
                }
            }
        }
    }

    /// Accepts clients until the task is dropped. After a failed accept it
    /// waits [`ACCEPT_ERROR_BACKOFF_MS`]: the errors that persist (EMFILE,
    /// ENFILE, ENOBUFS) would otherwise make this loop spin on the core.
    pub async fn accept_clients(self: Rc<Self>) {
        loop {
            match self.io.accept(Listener::Clients).await {
                Ok(conn) => {
                    let core = Rc::clone(&self);
                    self.io.spawn(async move { core.serve_client(conn).await });
                }
                Err(error) => {
                    NodeMetrics::add(&self.node.metrics.accept_errors, 1);
                    tracing::warn!(%error, backoff_ms = ACCEPT_ERROR_BACKOFF_MS, "accept failed; pausing accepts");
                    self.io
                        .sleep(std::time::Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS))
                        .await;
                }
            }
        }
    }

    async fn serve_client(self: Rc<Self>, mut conn: I::Conn) {
        let Some(client) = self
            .node
            .register_client(conn.peer(), self.io.now_unix_ms())
        else {
            NodeMetrics::add(&self.node.metrics.connections_refused, 1);
            let _ = conn
                .write_all(b"-ERR max number of clients reached\r\n")
                .await;
            return;
        };
        NodeMetrics::add(&self.node.metrics.connections_accepted, 1);
        self.serve_registered(conn, client).await;
    }

    /// Takes the connections other cores move here, each with its client
    /// (registered already), until the task is dropped.
    pub async fn adopt_clients(self: Rc<Self>) {
        loop {
            let (conn, client) = self.io.moved_in().await;
            match conn {
                Ok(conn) => {
                    let core = Rc::clone(&self);
                    self.io
                        .spawn(async move { core.serve_registered(conn, client).await });
                }
                Err(error) => {
                    tracing::warn!(client = client.id, %error, "a connection moved here cannot be watched; closing it");
                    self.node.unregister_client(client.id);
                }
            }
        }
    }

    /// Serves the connection of registered `client` until it closes, or it
    /// moves to another core (which then serves and unregisters it).
    async fn serve_registered(&self, conn: I::Conn, mut client: ClientInfo) {
        let mut transaction = Transaction::default();
        match self.client_loop(conn, &mut client, &mut transaction).await {
            Ok(ClientEnd::Moved) => return,
            Ok(ClientEnd::Closed) => {}
            Err(error) => tracing::debug!(client = client.id, %error, "connection closed"),
        }
        self.unwatch(client.id, &mut transaction).await;
        self.node.unregister_client(client.id);
    }

    async fn client_loop(
        &self,
        mut conn: I::Conn,
        client: &mut ClientInfo,
        transaction: &mut Transaction,
    ) -> std::io::Result<ClientEnd> {
        // The parser takes any bulk up to Redis's proto-max-bulk-len, so that a
        // value over the configured (smaller) limit gets an error reply from the
        // command and the connection goes on; only a bulk beyond that is a
        // protocol error that closes it.
        let mut parser = RequestParser::new(BULK_BYTES_MAX_DEFAULT, QUERY_BUFFER_BYTES_MAX);
        let mut output = Vec::new();
        loop {
            let batch = self.start_batch(&mut parser, client, transaction).await;
            if !batch.replies.is_empty() {
                self.write_replies(&mut conn, batch.replies, &mut output)
                    .await?;
                if batch.close {
                    return Ok(ClientEnd::Closed);
                }
                // More whole requests may be buffered already: parse before reading.
                continue;
            }
            // Between requests, with every reply written: the connection's
            // state is all in `client`, so it may move to the core its
            // keys live on.
            let here = self.io.core().0;
            if let Some(core) = client.affinity.target(here) {
                if parser.is_idle() && transaction.is_idle() {
                    client.affinity.moved();
                    match self.io.move_connection(core, conn, client.clone()).await {
                        Ok(()) => {
                            NodeMetrics::add(&self.node.metrics.connections_moved, 1);
                            return Ok(ClientEnd::Moved);
                        }
                        Err((back, _)) => conn = back,
                    }
                }
            }
            let read = conn.read(parser.unfilled()).await?;
            if read == 0 {
                return Ok(ClientEnd::Closed);
            }
            parser.filled(read);
            client.last_command_unix_ms = self.io.now_unix_ms();
        }
    }

    /// Starts the commands the parser holds, up to a batch's limits: their
    /// number and the bytes of the replies known so far.
    async fn start_batch(
        &self,
        parser: &mut RequestParser,
        client: &mut ClientInfo,
        transaction: &mut Transaction,
    ) -> Batch {
        let mut batch = Batch::default();
        let mut reply_bytes = 0;
        while batch.replies.len() < PIPELINE_COMMANDS_MAX && reply_bytes < REPLY_BUFFER_BYTES_MAX {
            parser.set_authenticated(client.auth.is_authenticated());
            match parser.next_request() {
                Ok(Some(args)) if args.is_empty() => {}
                Ok(Some(args)) => {
                    let (pending, quit) = self.command(client, transaction, args).await;
                    reply_bytes += pending.held_bytes();
                    batch.replies.push((client.protocol, pending));
                    if quit {
                        batch.close = true;
                        break;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    NodeMetrics::add(&self.node.metrics.protocol_errors, 1);
                    let reply = Reply::Error(format!("ERR {error}"));
                    batch.replies.push((client.protocol, Pending::Ready(reply)));
                    batch.close = true;
                    break;
                }
            }
        }
        batch
    }

    /// Writes a batch's replies in order, each once it may be released: one
    /// write for the batch unless its encoded replies pass
    /// [`REPLY_BUFFER_BYTES_MAX`], which are then written as they pass it.
    async fn write_replies(
        &self,
        conn: &mut I::Conn,
        replies: Vec<(Protocol, Pending)>,
        output: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        for (protocol, pending) in replies {
            let reply = match self.resolve(pending).await {
                Resolved::Reply(reply) | Resolved::Shard(ShardReply::Reply(reply)) => reply,
                Resolved::Shard(other) => {
                    panic!("a command got a non-reply answer: {other:?}")
                }
            };
            reply.encode(protocol, output);
            if output.len() >= REPLY_BUFFER_BYTES_MAX {
                conn.write_all(output).await?;
                output.clear();
            }
        }
        if !output.is_empty() {
            conn.write_all(output).await?;
            output.clear();
        }
        // One large reply must not keep its buffer for the connection's life.
        output.shrink_to(REPLY_BUFFER_BYTES_MAX);
        Ok(())
    }

    /// Starts one command; returns its reply-to-be and whether to close after it.
    async fn command(
        &self,
        client: &mut ClientInfo,
        transaction: &mut Transaction,
        args: Vec<Vec<u8>>,
    ) -> (Pending, bool) {
        NodeMetrics::add(&self.node.metrics.commands, 1);
        let Some(spec) = command::lookup(&args[0]) else {
            transaction.refuse();
            return (Pending::Ready(command::unknown_command(&args)), false);
        };
        if let Err(reply) = command::check_arity(spec, args.len()) {
            transaction.refuse();
            return (Pending::Ready(reply), false);
        }
        if let Err(reply) = client.auth.admit(spec) {
            return (Pending::Ready(reply), false);
        }
        if transaction.queues(spec) {
            return (Pending::Ready(transaction.queue(spec, args)), false);
        }
        if transaction::is_transaction_command(spec.name) {
            let pending = self
                .transaction_command(client, transaction, spec, args)
                .await;
            return (pending, false);
        }
        if spec.name == "reset" {
            transaction.discard();
            self.unwatch(client.id, transaction).await;
        }
        if command::is_keyed(spec) {
            let keys = command::key_indexes(spec, &args).map(|index| args[index].as_slice());
            let slot = transaction::one_slot(keys);
            // WAIT counts the followers of the shards a connection wrote to,
            // and a connection moves to the core of those it uses.
            if let Ok(Some(slot)) = slot {
                let shard = shard_of_slot(slot, self.node.shard_count);
                if spec.is_write() {
                    client.written.insert(shard);
                }
                let cores = self.io.core().1;
                client.affinity.note(core_of_shard(shard, cores));
            }
            let pending = self
                .keyed(spec, args, slot, client.readonly, client.cluster_aware)
                .await;
            return (pending, false);
        }
        let quit = spec.name == "quit";
        (
            Pending::Ready(self.node_command(client, spec, &args).await),
            quit,
        )
    }

    /// WAIT numreplicas timeout: polls every shard the connection wrote to
    /// until that many followers of each hold its log through the commit
    /// index its leader had when first asked (which covers the
    /// connection's acknowledged writes), or the timeout (0: none) passes;
    /// the fewest. A connection that wrote nothing has every follower of
    /// every shard. Only a shard's leader knows its followers, so a member
    /// that does not lead it (it forwarded the writes) asks the leader; a
    /// shard with no leader to answer counts none this round.
    async fn wait_replicas(&self, client: &ClientInfo, wanted: u64, timeout_ms: u64) -> Reply {
        let started_us = self.io.monotonic_us();
        let mut through: Vec<(u32, Option<EntryId>)> =
            client.written.iter().map(|shard| (*shard, None)).collect();
        if through.is_empty() {
            let members = self.node.topology.get().members.len();
            return Reply::Integer(members.saturating_sub(1) as i64);
        }
        loop {
            let mut fewest = usize::MAX;
            for (shard, at) in &mut through {
                match self
                    .ask_leader(*shard, ShardRequest::Replicas { through: *at })
                    .await
                {
                    ShardReply::Replicas { through, count } => {
                        *at = Some(through);
                        fewest = fewest.min(count);
                    }
                    _ => fewest = 0,
                }
            }
            let waited_ms = self.io.monotonic_us().saturating_sub(started_us) / 1_000;
            if fewest as u64 >= wanted || (timeout_ms > 0 && waited_ms >= timeout_ms) {
                return Reply::Integer(fewest as i64);
            }
            self.io
                .sleep(std::time::Duration::from_millis(WAIT_POLL_MS))
                .await;
        }
    }

    /// `query` (a `shard_query` one) answered by `shard`'s leader: this
    /// node, or the one it is forwarded to (an error reply if none can be
    /// reached).
    async fn ask_leader(&self, shard: u32, query: ShardRequest) -> ShardReply {
        if self.leads(shard) {
            return self.request(shard, query).await;
        }
        let args = shard_query::encode(&query).expect("a shard query encodes");
        match self
            .request(shard, ShardRequest::ForwardQuery { args })
            .await
        {
            ShardReply::Reply(reply) => shard_query::answer(&query, reply),
            answered_here => answered_here,
        }
    }

    /// Runs a keyed command whose keys hash to `slot` ([`transaction::one_slot`]).
    async fn keyed(
        &self,
        spec: &'static command::CommandSpec,
        args: Vec<Vec<u8>>,
        slot: Result<Option<u16>, Reply>,
        readonly: bool,
        cluster_aware: bool,
    ) -> Pending {
        let slot = match slot {
            Ok(Some(slot)) => slot,
            // A keyed command given no key (OBJECT HELP, or a subcommand short
            // of its key) reads nothing: the first shard answers it.
            Ok(None) => {
                let request = ShardRequest::Command { args, stale: true };
                return self.dispatch(0, request).await;
            }
            Err(error) => return Pending::Ready(error),
        };
        let access = match (spec.is_write(), readonly) {
            (true, _) => Access::Write,
            (false, false) if planted::active(NodePlant::FollowerServesLinearizableRead) => {
                Access::StaleRead
            }
            (false, false) => Access::Read,
            (false, true) => Access::StaleRead,
        };
        let stale = access == Access::StaleRead;
        match self.route(slot, access) {
            Ok(shard) => {
                self.dispatch(shard, ShardRequest::Command { args, stale })
                    .await
            }
            Err(redirect) if cluster_aware => Pending::Ready(redirect),
            Err(_) => {
                let shard = shard_of_slot(slot, self.node.shard_count);
                let request = ShardRequest::Forward { slot, access, args };
                self.dispatch(shard, request).await
            }
        }
    }

    /// [`ShardRequest::Forward`] on the shard's core: the command runs here
    /// if this node leads the shard by now, else goes to the leader, else
    /// gets the `-MOVED` or `-TRYAGAIN` of the topology.
    async fn forward_or_redirect(
        &self,
        shard: &Rc<Shard>,
        slot: u16,
        access: Access,
        args: Vec<Vec<u8>>,
    ) -> Pending {
        match self.route(slot, access) {
            Ok(_) => {
                let stale = access == Access::StaleRead;
                Box::pin(self.run_local(shard, ShardRequest::Command { args, stale })).await
            }
            Err(redirect) => self
                .forward(shard.id, |id| Forward::Request { id, args })
                .unwrap_or(Pending::Ready(redirect)),
        }
    }

    /// Sends a command (or a transaction, or a whole-shard query: `message`
    /// of the forward's id) for `shard`, which another member leads, to that
    /// leader over the shard's peer link; its reply comes back through
    /// [`Core::forwarded_reply`], or [`FORWARD_UNANSWERED`] after
    /// [`Core::expire_forwards`] gives up on it. `None` if it cannot go (no leader known, too
    /// many in flight, too large, the link full or down): the caller
    /// answers `-MOVED` or `-TRYAGAIN` instead.
    fn forward(&self, shard: u32, message: impl FnOnce(u64) -> Forward) -> Option<Pending> {
        let leader = {
            let mut view = self.topology.borrow_mut();
            view.current(&self.node.topology).shards[shard as usize].leader?
        };
        if self.forwarded.borrow().len() >= FORWARDS_IN_FLIGHT_MAX {
            return None;
        }
        let id = self.next_forward.get();
        let frame = forward::encode(&message(id));
        if frame.len() > PEER_FRAME_BYTES_MAX {
            return None;
        }
        self.io.peer_send(leader.0, shard, frame).ok()?;
        self.next_forward.set(id + 1);
        NodeMetrics::add(&self.node.metrics.forwarded_commands, 1);
        let reply = Slot::default();
        let forwarded = Forwarded {
            reply: reply.clone(),
            shard,
            leader,
            deadline_us: self.io.monotonic_us() + FORWARD_TIMEOUT_MS * 1_000,
        };
        self.forwarded.borrow_mut().insert(id, forwarded);
        Some(Pending::Remote(reply))
    }

    /// The leader's reply to forwarded command `id` (dropped if it came
    /// after its timeout).
    pub fn forwarded_reply(&self, id: u64, reply: Reply) {
        if let Some(forwarded) = self.forwarded.borrow_mut().remove(&id) {
            forwarded.reply.fill(ShardReply::Reply(reply));
        }
    }

    /// Answers `-UNCERTAIN` to the forwarded commands whose reply is later
    /// than [`FORWARD_TIMEOUT_MS`] (the message or its reply was lost, or
    /// the leader failed), or later than
    /// [`FORWARD_GRACE_AFTER_LEADER_CHANGE_MS`] after this core saw their
    /// shard's leadership change: such a command may or may not have taken
    /// effect (the leader may have logged it before it failed).
    pub async fn expire_forwards(self: Rc<Self>) {
        loop {
            self.io
                .sleep(std::time::Duration::from_millis(FORWARD_CHECK_INTERVAL_MS))
                .await;
            let now_us = self.io.monotonic_us();
            let late = {
                let mut view = self.topology.borrow_mut();
                let topology = view.current(&self.node.topology);
                overdue_forwards(&mut self.forwarded.borrow_mut(), topology, now_us)
            };
            for id in late {
                self.forwarded_reply(id, Reply::Error(FORWARD_UNANSWERED.to_owned()));
            }
        }
    }

    /// A member forwarded `work` for shard `shard` to this node
    /// (which leads it, or led it): run in arrival order by
    /// [`Core::serve_forwards`], answered to `from` under `id`. Refused at
    /// once when [`FORWARDS_QUEUED_MAX`] wait.
    pub fn forwarded_request(&self, from: PeerId, shard: u32, id: u64, work: Forwarding) {
        if !self.replays.borrow_mut().admit(from, id) {
            // A copy (or a request so late its forwarder has answered
            // "may or may not" already): the first copy's reply stands.
            NodeMetrics::add(&self.node.metrics.forward_copies_dropped, 1);
            return;
        }
        if self.forward_queue.borrow().len() >= FORWARDS_QUEUED_MAX {
            let reply =
                Reply::Error("TRYAGAIN too many forwarded commands wait at the leader".into());
            self.answer_forward(from, shard, id, reply);
            return;
        }
        self.forward_queue
            .borrow_mut()
            .push_back((from, shard, id, work));
        self.forward_signal.raise();
    }

    /// Runs forwarded commands one after another, as `serve_hops` runs
    /// hopped ones (a connection's commands run in the order they came),
    /// each answered once its reply may be released.
    pub async fn serve_forwards(self: Rc<Self>) {
        loop {
            let next = self.forward_queue.borrow_mut().pop_front();
            let Some((from, shard, id, work)) = next else {
                self.forward_signal.wait().await;
                continue;
            };
            let (local, request) = match work {
                Forwarding::Command(args) => match shard_query::decode(&args) {
                    Some(ShardRequest::Watch { client, keys }) => {
                        let watched = self.forwarded_watch(shard, &keys).and_then(|local| {
                            let id = self.remote_watcher((from, client), shard, keys.len());
                            let too_many = || {
                                Reply::Error(format!(
                                    "ERR a connection watches at most {} keys",
                                    transaction::WATCHED_KEYS_MAX
                                ))
                            };
                            Ok((local, id.ok_or_else(too_many)?))
                        });
                        match watched {
                            Ok((local, client)) => {
                                (Ok(local), ShardRequest::Watch { client, keys })
                            }
                            Err(error) => (Err(error), ShardRequest::Watch { client, keys }),
                        }
                    }
                    Some(ShardRequest::Unwatch { client }) => {
                        match self.remote_watchers.borrow_mut().take((from, client)) {
                            Some(watched) => (
                                self.forwarded_shard_here(shard),
                                ShardRequest::Unwatch { client: watched.id },
                            ),
                            // Forgotten, or watched under another leader.
                            None => (Err(Reply::ok()), ShardRequest::Unwatch { client }),
                        }
                    }
                    Some(query) => (self.forwarded_shard_here(shard), query),
                    None => (
                        self.forwarded_shard(shard, &args),
                        ShardRequest::Command { args, stale: false },
                    ),
                },
                Forwarding::Transaction { watcher, commands } => {
                    let checked = commands
                        .iter()
                        .map(|args| self.forwarded_shard(shard, args))
                        .find(Result::is_err)
                        .unwrap_or_else(|| self.forwarded_shard_here(shard));
                    // The id this node watches the connection's keys under;
                    // a new one if it watches none (EXEC forgets the keys
                    // its connection watches).
                    let watched = match watcher {
                        0 => Some(self.node.next_client_id.fetch_add(1, Ordering::Relaxed)),
                        watcher => self
                            .remote_watchers
                            .borrow_mut()
                            .take((from, watcher))
                            .map(|watched| watched.id),
                    };
                    match watched {
                        Some(client) => (checked, ShardRequest::Exec { client, commands }),
                        // Watched under another leader, or forgotten: as if
                        // a watched key had changed, nothing runs.
                        None => (
                            Err(Reply::NullArray),
                            ShardRequest::Exec {
                                client: 0,
                                commands,
                            },
                        ),
                    }
                }
            };
            let pending = match local {
                Ok(local) => {
                    let local = Rc::clone(local);
                    self.run_local(&local, request).await
                }
                Err(reply) => Pending::Ready(reply),
            };
            let core = Rc::clone(&self);
            self.io.spawn(async move {
                let reply = match core.resolve(pending).await {
                    Resolved::Reply(reply) => reply,
                    Resolved::Shard(answer) => shard_query::reply(answer),
                };
                core.answer_forward(from, shard, id, reply);
            });
        }
    }

    /// The shard of this core a forwarded command runs on: the peer's
    /// message names it, and the command's keys must hash to it.
    fn forwarded_shard(&self, shard: u32, args: &[Vec<u8>]) -> Result<&Rc<Shard>, Reply> {
        let misdirected =
            || Reply::Error(format!("ERR a forwarded command is not for shard {shard}"));
        let spec = args
            .first()
            .and_then(|name| command::lookup(name))
            .filter(|spec| {
                command::is_keyed(spec) && command::check_arity(spec, args.len()).is_ok()
            })
            .ok_or_else(misdirected)?;
        let keys = command::key_indexes(spec, args).map(|index| args[index].as_slice());
        match transaction::one_slot(keys) {
            Ok(Some(slot)) if shard_of_slot(slot, self.node.shard_count) == shard => {
                self.shards.get(&shard).ok_or_else(misdirected)
            }
            _ => Err(misdirected()),
        }
    }

    /// Shard `shard` of this core, which a forwarded transaction (once each
    /// of its commands was checked to hash to it), WATCH or whole-shard
    /// query names.
    fn forwarded_shard_here(&self, shard: u32) -> Result<&Rc<Shard>, Reply> {
        self.shards.get(&shard).ok_or_else(|| {
            Reply::Error(format!("ERR a forwarded request is not for shard {shard}"))
        })
    }

    /// The shard of this core a forwarded WATCH of `keys` registers on: they
    /// must hash to `shard`.
    fn forwarded_watch(&self, shard: u32, keys: &[Vec<u8>]) -> Result<&Rc<Shard>, Reply> {
        match transaction::one_slot(keys.iter().map(Vec::as_slice)) {
            Ok(Some(slot)) if shard_of_slot(slot, self.node.shard_count) == shard => {
                self.forwarded_shard_here(shard)
            }
            _ => Err(Reply::Error(format!(
                "ERR a forwarded WATCH is not for shard {shard}"
            ))),
        }
    }

    /// The id shard `shard` of this core watches `watcher` (another
    /// member's connection) under.
    fn remote_watcher(&self, watcher: (PeerId, u64), shard: u32, keys: usize) -> Option<u64> {
        let (id, forgotten) = self
            .remote_watchers
            .borrow_mut()
            .watch(watcher, shard, keys, || {
                self.node.next_client_id.fetch_add(1, Ordering::Relaxed)
            });
        if let Some(forgotten) = forgotten {
            if let Some(local) = self.shards.get(&forgotten.shard) {
                local.unwatch(forgotten.id, self.io.now_unix_ms());
            }
        }
        id
    }

    /// Whether this node leads `shard`, as this core's topology says (a
    /// node alone always does).
    fn leads(&self, shard: u32) -> bool {
        let mut view = self.topology.borrow_mut();
        let topology = view.current(&self.node.topology);
        topology.members.len() <= 1
            || topology.shards[shard as usize].leader == Some(topology.myself)
    }

    /// `request`, over the whole of `shard`'s key space, for `client`: run
    /// here if this node leads the shard, else, for a plain connection,
    /// forwarded to its leader. `Ok(None)` for a cluster-aware connection
    /// when this node does not lead it: such a client asks each master for
    /// its own slots, as Redis Cluster's DBSIZE, KEYS or SCAN cover a
    /// node's own. `Err`: the error a plain connection gets (no leader
    /// reachable, or the leader's own).
    async fn whole_shard(
        &self,
        client: &ClientInfo,
        shard: u32,
        request: ShardRequest,
    ) -> Result<Option<ShardReply>, Reply> {
        if client.cluster_aware && !self.leads(shard) {
            return Ok(None);
        }
        let answer = self.ask_leader(shard, request).await;
        match answer {
            // Leadership lost on the way: as if this node had not led it.
            ShardReply::Reply(Reply::Error(_)) if client.cluster_aware => Ok(None),
            ShardReply::Reply(error @ Reply::Error(_)) => Err(error),
            answer => Ok(Some(answer)),
        }
    }

    /// Sends the reply to forwarded command `id` back to `to` (one too
    /// large for a peer frame becomes an error saying so).
    fn answer_forward(&self, to: PeerId, shard: u32, id: u64, reply: Reply) {
        let mut frame = forward::encode(&Forward::Reply { id, reply });
        if frame.len() > PEER_FRAME_BYTES_MAX {
            let reply = Reply::Error(format!("ERR the reply is larger than a peer frame ({PEER_FRAME_BYTES_MAX} bytes); ask the shard's leader directly"));
            frame = forward::encode(&Forward::Reply { id, reply });
        }
        if let Err(error) = self.io.peer_send(to, shard, frame) {
            tracing::debug!(
                to,
                shard,
                id,
                ?error,
                "the reply to a forwarded command was dropped"
            );
        }
    }

    /// The shard of this node that runs a command on `slot`, or the
    /// `-MOVED` or `-TRYAGAIN` the topology answers instead.
    fn route(&self, slot: u16, access: Access) -> Result<u32, Reply> {
        let mut view = self.topology.borrow_mut();
        match view.current(&self.node.topology).route(slot, access) {
            Route::Local { shard } => Ok(shard),
            Route::Moved { slot, address } => Err(cluster::moved(slot, &address)),
            Route::TryAgain { slot } => Err(cluster::try_again(slot)),
        }
    }

    /// MULTI, EXEC, DISCARD, WATCH and UNWATCH (see [`crate::node::transaction`]).
    async fn transaction_command(
        &self,
        client: &mut ClientInfo,
        transaction: &mut Transaction,
        spec: &'static command::CommandSpec,
        args: Vec<Vec<u8>>,
    ) -> Pending {
        match spec.name {
            "multi" => Pending::Ready(transaction.multi()),
            "discard" => {
                if !transaction.discard() {
                    return Pending::Ready(Reply::Error("ERR DISCARD without MULTI".into()));
                }
                self.unwatch(client.id, transaction).await;
                Pending::Ready(Reply::ok())
            }
            "unwatch" => {
                self.unwatch(client.id, transaction).await;
                Pending::Ready(Reply::ok())
            }
            "watch" => {
                // A plain connection's keys are watched by their shard's
                // leader, wherever it is (and here too).
                let route = |slot| match self.route(slot, Access::Read) {
                    Err(_) if !client.cluster_aware => {
                        Ok(shard_of_slot(slot, self.node.shard_count))
                    }
                    routed => routed,
                };
                match transaction.watch(&args[1..], route) {
                    Ok(shard) => {
                        let mut keys = args;
                        keys.remove(0);
                        let request = ShardRequest::Watch {
                            client: client.id,
                            keys,
                        };
                        self.dispatch(shard, self.through_leader(shard, request))
                            .await
                    }
                    Err(error) => Pending::Ready(error),
                }
            }
            "exec" => self.exec(client, transaction).await,
            other => unreachable!("{other} is not a transaction command"),
        }
    }

    /// EXEC: the keyed commands go to their shard as one request (one hop
    /// if another core owns it); the keyless ones are answered here.
    async fn exec(&self, client: &mut ClientInfo, transaction: &mut Transaction) -> Pending {
        let (exec, watched) = transaction.exec();
        if let Some(slot) = watched {
            self.unwatch_slot(client.id, slot).await;
        }
        let (slot, watching, keyed, keyless) = match exec {
            Exec::Refuse(error) => return Pending::Ready(error),
            Exec::Run {
                slot,
                watching,
                keyed,
                keyless,
            } => (slot, watching, keyed, keyless),
        };
        // Only commands whose reply depends on their arguments alone are
        // queued keyless, so answering them before the shard checks the
        // watched keys changes nothing if it then refuses.
        let mut answered = Vec::with_capacity(keyless.len());
        for (position, args) in keyless {
            let spec = command::lookup(&args[0]).expect("a queued command is known");
            answered.push((position, self.node_command(client, spec, &args).await));
        }
        let keyless = answered;
        let slot = match slot {
            Some(slot) if watching || !keyed.is_empty() => slot,
            _ => return Pending::Ready(merge_exec_replies(Reply::Array(Vec::new()), keyless)),
        };
        // A transaction runs on the leader: its WATCH checks and its reads
        // must see every acknowledged write. A plain connection's goes there
        // (whose watch of its keys, if it has one, the leader checks).
        let request = match self.route(slot, Access::Write) {
            Ok(shard) => {
                client.written.insert(shard);
                ShardRequest::Exec {
                    client: client.id,
                    commands: keyed,
                }
            }
            Err(redirect) if client.cluster_aware => return Pending::Ready(redirect),
            Err(_) => ShardRequest::ForwardExec {
                slot,
                client: client.id,
                watching,
                commands: keyed,
            },
        };
        let shard = shard_of_slot(slot, self.node.shard_count);
        let keyed = Box::new(self.dispatch(shard, request).await);
        Pending::Exec { keyed, keyless }
    }

    /// Makes the shard forget the keys the connection watches, if any.
    async fn unwatch(&self, client: u64, transaction: &mut Transaction) {
        if let Some(slot) = transaction.unwatch() {
            self.unwatch_slot(client, slot).await;
        }
    }

    async fn unwatch_slot(&self, client: u64, slot: u16) {
        let shard = shard_of_slot(slot, self.node.shard_count);
        // Nothing waits for the answer: a later request of this connection
        // to the shard travels the same path, after this one.
        let request = self.through_leader(shard, ShardRequest::Unwatch { client });
        drop(self.dispatch(shard, request).await);
    }

    /// `request` (a WATCH or UNWATCH) as this node sends it to `shard`'s
    /// core: as is if this node leads the shard, else to be forwarded to
    /// its leader too.
    fn through_leader(&self, shard: u32, request: ShardRequest) -> ShardRequest {
        if self.leads(shard) {
            return request;
        }
        let args = shard_query::encode(&request).expect("WATCH and UNWATCH encode");
        ShardRequest::ForwardQuery { args }
    }

    /// Commands about the connection or the whole node.
    async fn node_command(
        &self,
        client: &mut ClientInfo,
        spec: &'static command::CommandSpec,
        args: &[Vec<u8>],
    ) -> Reply {
        match spec.name {
            "dbsize" => match self.counts(client).await {
                Ok(counts) => Reply::Integer(counts.iter().sum::<u64>() as i64),
                Err(error) => error,
            },
            "keys" => self
                .keys(client, &args[1])
                .await
                .unwrap_or_else(|error| error),
            "scan" => self.scan(client, args).await.unwrap_or_else(|error| error),
            "randomkey" => self.random_key(client).await.unwrap_or_else(|error| error),
            "time" => time_reply(self.io.now_unix_ms()),
            "flushdb" | "flushall" => self.flush_all(client, args).await,
            "info" => {
                let stats = self.all_stats().await;
                let progress: Vec<ShardProgress> = stats.iter().map(ShardProgress::of).collect();
                let now = self.io.now_unix_ms();
                admin::info(&self.node, &stats, &progress, &args[1..], now)
            }
            "cluster" => {
                client.cluster_aware = true;
                self.cluster(args).await
            }
            "readonly" | "readwrite" => {
                client.readonly = spec.name == "readonly";
                client.cluster_aware = true;
                self.node.update_client(client);
                Reply::ok()
            }
            // A slot never migrates between Keel's shards, so no -ASK
            // redirect is ever sent for ASKING to follow.
            "asking" => {
                client.cluster_aware = true;
                Reply::ok()
            }
            "wait" => match cluster::check_wait(args) {
                Ok((wanted, timeout_ms)) => self.wait_replicas(client, wanted, timeout_ms).await,
                Err(error) => error,
            },
            _ => admin::connection_command(&self.node, client, spec, args, self.io.now_unix_ms()),
        }
    }

    /// CLUSTER: answered from the topology, or by the slot's shard for the
    /// subcommands that count keys.
    async fn cluster(&self, args: &[Vec<u8>]) -> Reply {
        let command = {
            let mut view = self.topology.borrow_mut();
            cluster::cluster_command(view.current(&self.node.topology), args)
        };
        match command {
            ClusterCommand::Reply(reply) => reply,
            ClusterCommand::CountKeysInSlot { slot } => {
                Reply::Integer(self.keys_in_slot(slot, usize::MAX).await.len() as i64)
            }
            ClusterCommand::GetKeysInSlot { slot, count } => Reply::Array(
                self.keys_in_slot(slot, count)
                    .await
                    .into_iter()
                    .map(Reply::Bulk)
                    .collect(),
            ),
        }
    }

    /// Up to `count_max` keys of `slot`. Keel's key space has no index by
    /// slot, so the slot's shard is scanned in pages of
    /// [`SLOT_SCAN_PAGE_KEYS`]: time in the shard's keys, memory in the
    /// slot's. SCAN may name a key twice; a set counts it once.
    async fn keys_in_slot(&self, slot: u16, count_max: usize) -> Vec<Vec<u8>> {
        let shard = shard_of_slot(slot, self.node.shard_count);
        let mut found = HashSet::new();
        let mut cursor = 0;
        while found.len() < count_max {
            let page = ShardRequest::Scan {
                cursor,
                count: SLOT_SCAN_PAGE_KEYS,
                pattern: None,
            };
            let ShardReply::Scan { next, keys } = self.request(shard, page).await else {
                break;
            };
            found.extend(keys.into_iter().filter(|key| key_slot(key) == slot));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        found.into_iter().take(count_max).collect()
    }

    /// KEYS: every shard's live keys matching `pattern`.
    async fn keys(&self, client: &ClientInfo, pattern: &[u8]) -> Result<Reply, Reply> {
        let mut keys = Vec::new();
        for shard in 0..self.node.shard_count {
            let request = ShardRequest::Keys {
                pattern: pattern.to_vec(),
            };
            if let Some(ShardReply::Keys(found)) = self.whole_shard(client, shard, request).await? {
                keys.extend(found);
            }
        }
        Ok(Reply::Array(keys.into_iter().map(Reply::Bulk).collect()))
    }

    /// RANDOMKEY: a shard drawn with odds proportional to the keys it holds
    /// names a live key at a random position (see
    /// [`crate::keyspace::Keyspace::random_key`]); should it find none, the
    /// shards after it are asked in turn. Nil when no shard has a live key.
    async fn random_key(&self, client: &ClientInfo) -> Result<Reply, Reply> {
        let counts = self.counts(client).await?;
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return Ok(Reply::Null);
        }
        let mut position = self.random.borrow_mut().below(total);
        let drawn = counts
            .iter()
            .position(|count| {
                let here = position < *count;
                if !here {
                    position -= count;
                }
                here
            })
            .expect("the position is below the total");
        let shards = counts.len() as u32;
        for shard in (drawn as u32..shards).chain(0..drawn as u32) {
            let pick = self.random.borrow_mut().next_u64();
            let request = ShardRequest::RandomKey { pick };
            if let Some(ShardReply::Key(Some(key))) =
                self.whole_shard(client, shard, request).await?
            {
                return Ok(Reply::Bulk(key));
            }
        }
        Ok(Reply::Null)
    }

    /// Each shard's count of live keys (0 for a shard a cluster-aware
    /// connection's member does not lead).
    async fn counts(&self, client: &ClientInfo) -> Result<Vec<u64>, Reply> {
        let mut counts = Vec::new();
        for shard in 0..self.node.shard_count {
            let count = match self.whole_shard(client, shard, ShardRequest::Count).await? {
                Some(ShardReply::Count(count)) => count,
                _ => 0,
            };
            counts.push(count);
        }
        Ok(counts)
    }

    pub async fn all_stats(&self) -> Vec<ShardStats> {
        let mut all = Vec::new();
        for shard in 0..self.node.shard_count {
            if let ShardReply::Stats(stats) = self.request(shard, ShardRequest::Stats).await {
                all.push(*stats);
            }
        }
        all
    }

    async fn flush_all(&self, client: &ClientInfo, args: &[Vec<u8>]) -> Reply {
        if let Some(mode) = args.get(1) {
            if args.len() > 2
                || !(mode.eq_ignore_ascii_case(b"sync") || mode.eq_ignore_ascii_case(b"async"))
            {
                return Reply::Error("ERR syntax error".into());
            }
        }
        for shard in 0..self.node.shard_count {
            match self
                .whole_shard(client, shard, ShardRequest::FlushAll)
                .await
            {
                Err(error) | Ok(Some(ShardReply::Reply(error @ Reply::Error(_)))) => return error,
                Ok(_) => {}
            }
        }
        Reply::Simple("OK".into())
    }

    /// SCAN over every shard in turn. A shard's cursor is a key hash; the
    /// cursor given to the client keeps its high bits and puts the shard
    /// number plus one in the low bits (so it is 0 only at the end). Dropping
    /// the hash's low bits resumes a little early: keys may come twice, as
    /// SCAN allows, but none is missed.
    async fn scan(&self, client: &ClientInfo, args: &[Vec<u8>]) -> Result<Reply, Reply> {
        let request = admin::ScanArgs::parse(args)?;
        let shards = u64::from(self.node.shard_count);
        let low_bits = u64::BITS - shards.leading_zeros();
        let low_mask = (1u64 << low_bits) - 1;
        let (mut shard, mut cursor) = match request.cursor {
            0 => (0, 0),
            given => match (given & low_mask).checked_sub(1) {
                Some(shard) if shard < shards => (shard, given & !low_mask),
                _ => return Err(Reply::Error("ERR invalid cursor".into())),
            },
        };
        let mut keys = Vec::new();
        let next = loop {
            let step = ShardRequest::Scan {
                cursor,
                count: request.count - keys.len().min(request.count - 1),
                pattern: request.pattern.clone(),
            };
            let next = match self.whole_shard(client, shard as u32, step).await? {
                Some(ShardReply::Scan { next, keys: found }) => {
                    keys.extend(found);
                    next
                }
                // A shard a cluster-aware connection's member does not lead.
                _ => 0,
            };
            if next != 0 {
                break (next & !low_mask) | (shard + 1);
            }
            shard += 1;
            cursor = 0;
            if shard == shards {
                break 0;
            }
            if keys.len() >= request.count {
                break shard + 1;
            }
        };
        Ok(Reply::Array(vec![
            Reply::Bulk(next.to_string().into_bytes()),
            Reply::Array(keys.into_iter().map(Reply::Bulk).collect()),
        ]))
    }
}

/// An answer that came back from a shard, or a reply made here.
enum Resolved {
    Reply(Reply),
    Shard(ShardReply),
}

/// TIME: unix seconds and the microseconds within the second, as Redis
/// answers; the node's clock counts milliseconds, so the microseconds are
/// whole thousands.
fn time_reply(now_unix_ms: u64) -> Reply {
    let seconds = now_unix_ms / 1000;
    let microseconds = (now_unix_ms % 1000) * 1000;
    Reply::Array(vec![
        Reply::Bulk(seconds.to_string().into_bytes()),
        Reply::Bulk(microseconds.to_string().into_bytes()),
    ])
}

/// EXEC's array: the shard's replies with the keyless commands' replies put
/// back at their request positions. Anything but an array (a watched key
/// changed, the shard failed) is EXEC's whole reply.
fn merge_exec_replies(keyed: Reply, keyless: Vec<(usize, Reply)>) -> Reply {
    let Reply::Array(keyed) = keyed else {
        return keyed;
    };
    let mut keyed = keyed.into_iter();
    let mut keyless = keyless.into_iter().peekable();
    let mut merged = Vec::new();
    loop {
        if let Some((_, reply)) = keyless.next_if(|(position, _)| *position == merged.len()) {
            merged.push(reply);
        } else if let Some(reply) = keyed.next() {
            merged.push(reply);
        } else {
            break;
        }
    }
    assert!(
        keyless.next().is_none(),
        "every keyless reply has a position within the transaction"
    );
    Reply::Array(merged)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::io;

    use futures_lite::future;

    use super::*;
    use crate::config::FsyncPolicy;
    use crate::node::io::Connection;
    use crate::node::test_io::{recover_one_shard, MemIo};
    use crate::topology::tests::member;
    use crate::topology::{Member, MemberId, ShardPlacement, Topology};

    /// A client that sends `input` and records each write it receives.
    struct ScriptedClient {
        input: VecDeque<u8>,
        writes: Rc<RefCell<Vec<Vec<u8>>>>,
    }

    impl Connection for ScriptedClient {
        async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let count = buf.len().min(self.input.len());
            for (slot, byte) in buf.iter_mut().zip(self.input.drain(..count)) {
                *slot = byte;
            }
            Ok(count)
        }
        async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
            self.writes.borrow_mut().push(buf.to_vec());
            Ok(())
        }
        fn peer(&self) -> String {
            "scripted".into()
        }
    }

    /// Serves one client sending `input` (no sync waited for: interval
    /// policy, no committer) and returns the writes it received.
    fn serve(input: &[u8]) -> Vec<Vec<u8>> {
        serve_and_watch(input).0
    }

    /// As [`serve`], and whether the shard still holds any WATCH once the
    /// client is gone.
    fn serve_and_watch(input: &[u8]) -> (Vec<Vec<u8>>, bool) {
        let recovered = recover_one_shard(MemIo::default(), FsyncPolicy::IntervalMs(1));
        let writes = Rc::default();
        let client = ScriptedClient {
            input: input.iter().copied().collect(),
            writes: Rc::clone(&writes),
        };
        serve_scripted(&recovered, client);
        let watching = recovered.committers[0].shard.watches_anything();
        (writes.take(), watching)
    }

    /// Serves `client` to its end, with the shard's task that reports
    /// its proposals durable (`--fsync interval-ms`) beside it.
    fn serve_scripted(
        recovered: &crate::node::Recovered<MemIo<ScriptedClient>>,
        client: ScriptedClient,
    ) {
        let shard = Rc::clone(&recovered.committers[0].shard);
        future::block_on(future::or(
            Rc::clone(&recovered.core).serve_client(client),
            shard.report_writes(),
        ));
    }

    fn command(words: &[&[u8]]) -> Vec<u8> {
        let mut wire = Vec::new();
        Reply::Array(
            words
                .iter()
                .map(|word| Reply::Bulk(word.to_vec()))
                .collect(),
        )
        .encode(Protocol::Resp2, &mut wire);
        wire
    }

    /// A remote connection keeps its id until taken, and its keys are
    /// bounded as a local connection's; past the bound of connections the
    /// oldest is forgotten (and named, to unwatch), never a newer one.
    #[test]
    fn remote_watchers_are_bounded_oldest_first() {
        let mut watchers = RemoteWatchers::default();
        let mut next = 100;
        let mut new_id = || {
            next += 1;
            next
        };
        assert_eq!(watchers.watch((2, 7), 0, 1, &mut new_id), (Some(101), None));
        let most = transaction::WATCHED_KEYS_MAX;
        assert_eq!(
            watchers.watch((2, 7), 0, most - 1, &mut new_id),
            (Some(101), None)
        );
        assert_eq!(
            watchers.watch((2, 7), 0, 1, &mut new_id),
            (None, None),
            "past a connection's key bound"
        );
        let taken = RemoteWatcher {
            shard: 0,
            id: 101,
            keys: most,
        };
        assert_eq!(watchers.take((2, 7)), Some(taken));
        assert_eq!(watchers.take((2, 7)), None);
        assert_eq!(
            watchers.watch((2, 8), 0, most + 1, &mut new_id),
            (None, None)
        );
        for connection in 0..REMOTE_WATCHERS_MAX as u64 {
            watchers.watch((3, connection), 1, 1, &mut new_id);
        }
        let (_, forgotten) = watchers.watch((4, 1), 1, 1, &mut new_id);
        let oldest = RemoteWatcher {
            shard: 1,
            id: 102,
            keys: 1,
        };
        assert_eq!(forgotten, Some(oldest), "the oldest still held goes");
        assert_eq!(watchers.take((3, 0)), None);
        assert!(watchers.take((3, 1)).is_some());
        assert!(watchers.take((4, 1)).is_some());
        assert!(watchers.order.len() <= 2 * REMOTE_WATCHERS_MAX);
    }

    /// A forward waits out its timeout while its leader leads, and at most
    /// the grace once its shard's leadership changes.
    #[test]
    fn a_forward_gives_up_soon_after_its_leader_loses_the_lead() {
        let members = (1..=3)
            .map(|id| Member::of_cluster("c", id, "10.0.0.1".into(), 7000, 7100))
            .collect();
        let mut topology = Topology::cluster(MemberId(1), members, 2);
        topology.set_leader(0, Some(MemberId(2)), 1);
        topology.set_leader(1, Some(MemberId(3)), 1);
        let waiting = |shard, leader| Forwarded {
            reply: Slot::default(),
            shard,
            leader: MemberId(leader),
            deadline_us: FORWARD_TIMEOUT_MS * 1_000,
        };
        let mut forwarded = HashMap::from([(10, waiting(0, 2)), (11, waiting(1, 3))]);
        assert!(overdue_forwards(&mut forwarded, &topology, 0).is_empty());
        topology.set_leader(0, None, 2);
        let grace_us = FORWARD_GRACE_AFTER_LEADER_CHANGE_MS * 1_000;
        assert!(overdue_forwards(&mut forwarded, &topology, 1_000).is_empty());
        assert_eq!(
            overdue_forwards(&mut forwarded, &topology, 1_000 + grace_us),
            vec![10],
            "shard 0's leader changed: its forward gives up after the grace"
        );
        forwarded.remove(&10);
        assert!(
            overdue_forwards(&mut forwarded, &topology, FORWARD_TIMEOUT_MS * 1_000 - 1).is_empty()
        );
        assert_eq!(
            overdue_forwards(&mut forwarded, &topology, FORWARD_TIMEOUT_MS * 1_000),
            vec![11],
            "shard 1 kept its leader: its forward waits out the timeout"
        );
    }

    /// Issue 9: the replies of up to 1,024 pipelined commands were all held
    /// and encoded before one write, whatever their size.
    #[test]
    fn pipelined_replies_are_written_once_they_pass_the_reply_buffer() {
        let value = vec![b'v'; 300 * 1024];
        let gets = 10;
        let mut input = command(&[b"SET", b"k", &value]);
        let mut expected = b"+OK\r\n".to_vec();
        for _ in 0..gets {
            input.extend(command(&[b"GET", b"k"]));
            Reply::Bulk(value.clone()).encode(Protocol::Resp2, &mut expected);
        }
        let writes = serve(&input);
        assert_eq!(writes.concat(), expected, "every reply, in order");
        let reply_bytes = expected.len() / gets;
        for write in &writes {
            assert!(
                write.len() < REPLY_BUFFER_BYTES_MAX + reply_bytes,
                "a write of {} bytes: replies were held past the limit",
                write.len()
            );
        }
        assert!(writes.len() >= 3, "{} writes", writes.len());
    }

    #[test]
    fn time_splits_the_clock_into_seconds_and_microseconds() {
        let bulk = |text: &str| Reply::Bulk(text.as_bytes().to_vec());
        assert_eq!(
            time_reply(1_700_000_000_123),
            Reply::Array(vec![bulk("1700000000"), bulk("123000")])
        );
        assert_eq!(time_reply(5_000), Reply::Array(vec![bulk("5"), bulk("0")]));
    }

    #[test]
    fn a_batch_of_small_replies_goes_out_in_one_write() {
        let pings = 500;
        let writes = serve(&command(&[b"PING"]).repeat(pings));
        assert_eq!(writes, vec![b"+PONG\r\n".repeat(pings)]);
    }

    fn script(commands: &[&[&[u8]]]) -> Vec<u8> {
        commands.iter().flat_map(|words| command(words)).collect()
    }

    /// Replies as redis-server 7.0.15 gives them to the same requests (one
    /// slot, so Redis Cluster's rule changes nothing).
    #[test]
    fn a_transaction_queues_then_answers_every_command_in_one_array() {
        let input = script(&[
            &[b"MULTI"],
            &[b"MULTI"],
            &[b"SET", b"{t}a", b"x"],
            &[b"INCR", b"{t}a"],
            &[b"PING"],
            &[b"ECHO", b"hi"],
            &[b"GET", b"{t}a"],
            &[b"EXEC"],
            &[b"EXEC"],
            &[b"DISCARD"],
        ]);
        let expected: &[u8] = b"+OK\r\n-ERR MULTI calls can not be nested\r\n\
            +QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n\
            *5\r\n+OK\r\n-ERR value is not an integer or out of range\r\n+PONG\r\n$2\r\nhi\r\n$1\r\nx\r\n\
            -ERR EXEC without MULTI\r\n-ERR DISCARD without MULTI\r\n";
        assert_eq!(
            String::from_utf8_lossy(&serve(&input).concat()),
            String::from_utf8_lossy(expected)
        );
    }

    #[test]
    fn a_queuing_error_aborts_exec_and_discard_drops_the_queue() {
        let input = script(&[
            &[b"MULTI"],
            &[b"SET", b"k", b"1"],
            &[b"NOSUCH"],
            &[b"SET", b"k"],
            &[b"WATCH", b"k"],
            &[b"EXEC"],
            &[b"MULTI"],
            &[b"SET", b"k", b"2"],
            &[b"DISCARD"],
            &[b"MULTI"],
            &[b"MSET", b"a", b"1", b"b", b"2"],
            &[b"DBSIZE"],
            &[b"EXEC"],
            &[b"MULTI"],
            &[b"SET", b"a", b"1"],
            &[b"SET", b"b", b"1"],
            &[b"EXEC"],
            &[b"GET", b"k"],
            &[b"EXISTS", b"a"],
        ]);
        let expected: &[u8] = b"+OK\r\n+QUEUED\r\n\
            -ERR unknown command 'NOSUCH', with args beginning with: \r\n\
            -ERR wrong number of arguments for 'set' command\r\n\
            -ERR WATCH inside MULTI is not allowed\r\n\
            -EXECABORT Transaction discarded because of previous errors.\r\n\
            +OK\r\n+QUEUED\r\n+OK\r\n\
            +OK\r\n-CROSSSLOT Keys in request don't hash to the same slot\r\n\
            -ERR Command not allowed inside a transaction\r\n\
            -EXECABORT Transaction discarded because of previous errors.\r\n\
            +OK\r\n+QUEUED\r\n+QUEUED\r\n\
            -CROSSSLOT Keys in request don't hash to the same slot\r\n\
            $-1\r\n:0\r\n";
        assert_eq!(
            String::from_utf8_lossy(&serve(&input).concat()),
            String::from_utf8_lossy(expected)
        );
    }

    /// A write after WATCH (here the connection's own) makes EXEC answer a
    /// null array and run nothing; EXEC unwatches, so the next one runs.
    #[test]
    fn exec_after_a_watched_key_changed_is_null_in_resp2_and_resp3() {
        for (hello, null) in [(&b"2"[..], &b"*-1\r\n"[..]), (b"3", b"_\r\n")] {
            let input = script(&[
                &[b"HELLO", hello],
                &[b"WATCH", b"k", b"k"],
                &[b"SET", b"k", b"1"],
                &[b"MULTI"],
                &[b"SET", b"k", b"2"],
                &[b"EXEC"],
                &[b"GET", b"k"],
                &[b"WATCH", b"k"],
                &[b"UNWATCH"],
                &[b"SET", b"k", b"3"],
                &[b"MULTI"],
                &[b"INCR", b"k"],
                &[b"EXEC"],
            ]);
            let writes = serve(&input).concat();
            let after_hello = writes
                .windows(2)
                .position(|pair| pair == b"+O")
                .expect("WATCH's +OK");
            let mut expected = b"+OK\r\n+OK\r\n+OK\r\n+QUEUED\r\n".to_vec();
            expected.extend_from_slice(null);
            expected.extend_from_slice(
                b"$1\r\n1\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n:4\r\n",
            );
            assert_eq!(
                String::from_utf8_lossy(&writes[after_hello..]),
                String::from_utf8_lossy(&expected)
            );
        }
    }

    /// A connection that ends while it watches keys (here by QUIT inside
    /// MULTI, and by closing) leaves nothing registered on the shard.
    #[test]
    fn the_end_of_a_connection_unwatches_its_keys() {
        let (writes, watching) = serve_and_watch(&script(&[&[b"WATCH", b"a", b"a"]]));
        assert_eq!(writes.concat(), b"+OK\r\n");
        assert!(!watching, "a closed connection's WATCH was left behind");
        let (writes, watching) = serve_and_watch(&script(&[
            &[b"WATCH", b"a"],
            &[b"MULTI"],
            &[b"QUIT"],
            &[b"PING"],
        ]));
        assert_eq!(writes.concat(), b"+OK\r\n+OK\r\n+OK\r\n");
        assert!(!watching);
    }

    /// Serves `input` on a node that is member 1 of three, whose only
    /// shard `leader` leads (in term 3), and returns what it wrote.
    fn serve_as_member_one(input: &[u8], leader: Option<u64>) -> String {
        let recovered = recover_one_shard(MemIo::default(), FsyncPolicy::IntervalMs(1));
        let shard = ShardPlacement {
            shard: 0,
            first_slot: 0,
            last_slot: SLOT_COUNT - 1,
            leader: leader.map(MemberId),
            term: 3,
            voters: vec![MemberId(1), MemberId(2), MemberId(3)],
            learners: Vec::new(),
        };
        let members = vec![member(1), member(2), member(3)];
        let topology = Topology::new(MemberId(1), members, vec![shard]);
        recovered.core.node.topology.publish(topology);
        let writes = Rc::default();
        let client = ScriptedClient {
            input: input.iter().copied().collect(),
            writes: Rc::clone(&writes),
        };
        serve_scripted(&recovered, client);
        String::from_utf8(writes.take().concat()).unwrap()
    }

    /// A follower redirects writes and reads to the leader, serves reads
    /// on a READONLY connection, and sends a transaction to the leader.
    #[test]
    fn a_follower_answers_moved_and_serves_readonly_reads() {
        let input = script(&[
            &[b"SET", b"foo", b"1"],
            &[b"GET", b"foo"],
            &[b"READONLY"],
            &[b"GET", b"foo"],
            &[b"SET", b"foo", b"1"],
            &[b"READWRITE"],
            &[b"GET", b"foo"],
            &[b"WATCH", b"foo"],
            &[b"MULTI"],
            &[b"GET", b"foo"],
            &[b"EXEC"],
            &[b"CLUSTER", b"MYID"],
        ]);
        let moved = "-MOVED 12182 127.0.0.1:7002\r\n";
        let expected = format!(
            "{moved}{moved}+OK\r\n$-1\r\n{moved}+OK\r\n{moved}{moved}+OK\r\n+QUEUED\r\n{moved}$40\r\n{}\r\n",
            "11".repeat(20)
        );
        assert_eq!(serve_as_member_one(&input, Some(2)), expected);
        // Its own shard: everything runs here.
        let input = script(&[&[b"SET", b"foo", b"1"], &[b"GET", b"foo"]]);
        assert_eq!(serve_as_member_one(&input, Some(1)), "+OK\r\n$1\r\n1\r\n");
    }

    #[test]
    fn a_shard_without_a_leader_answers_try_again() {
        let input = script(&[&[b"GET", b"foo"], &[b"READONLY"], &[b"GET", b"foo"]]);
        assert_eq!(
            serve_as_member_one(&input, None),
            "-TRYAGAIN the shard of slot 12182 has no leader yet (an election is under way)\r\n+OK\r\n$-1\r\n"
        );
    }

    #[test]
    fn slots_map_to_contiguous_shard_ranges_covering_all_shards() {
        for shards in [1, 2, 3, 7, 16, 1024] {
            let mut previous = 0;
            let mut seen = std::collections::BTreeSet::new();
            for slot in 0..SLOT_COUNT {
                let shard = shard_of_slot(slot, shards);
                assert!(shard >= previous && shard < shards);
                previous = shard;
                seen.insert(shard);
            }
            assert_eq!(seen.len() as u32, shards);
        }
    }
}
