//! The node loop, written once over [`NodeIo`]: recovery of each shard, the
//! per-core loop serving clients and other cores, group commit, active expiry.

pub mod admin;
pub mod affinity;
pub mod auth;
pub mod cluster;
pub mod core;
pub mod driver;
pub mod hard_state;
pub mod io;
pub mod local;
pub mod peers;
pub mod planted;
pub mod shard;
pub mod shard_query;
#[cfg(test)]
mod test_io;
pub mod transaction;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_replication::{
    Entry, EntryId, EntryPayload, HardState, Membership, NodeId, Restored,
    SnapshotMeta as ReplicationSnapshotMeta, Term,
};
use keel_wal::frame::FRAME_PAYLOAD_BYTES_MAX;
use keel_wal::{codec, LogIndex, Wal, WalError, WalOptions};

use crate::config::ServeConfig;
use crate::keyspace::Keyspace;
use crate::metrics::{Gauges, NodeMetrics};
use crate::node::admin::ClientInfo;
use crate::node::auth::ConnectionAuth;
use crate::node::cluster::ShardProgress;
use crate::node::core::{shards_of_core, Core};
use crate::node::driver::Driver;
use crate::node::io::{Connection, Listener, NodeIo};
use crate::node::shard::{Shard, ShardFailure, ShardSettings};
use crate::operation::Operation;
use crate::resp::Protocol;
use crate::snapshot;
use crate::topology::{Topology, TopologyCell};

/// How often each shard runs an active-expiry pass.
pub const EXPIRE_PERIOD_MS: u64 = 100;
/// How often a core looks for the node's stop request.
pub const STOP_POLL_MS: u64 = 20;
/// Largest HTTP request a metrics scrape may send.
pub const METRICS_REQUEST_BYTES_MAX: usize = 8 << 10;

/// What every core of one node shares.
#[derive(Debug)]
pub struct NodeShared {
    pub config: ServeConfig,
    pub shard_count: u32,
    pub metrics: Arc<NodeMetrics>,
    pub run_id: String,
    pub started_unix_ms: u64,
    /// Keys the key spaces' hash function (see [`Keyspace::with_hash_seed`]).
    pub hash_seed: u64,
    /// The cluster's members and who leads each shard (a single node: itself).
    pub topology: Arc<TopologyCell>,
    clients: Mutex<BTreeMap<u64, ClientInfo>>,
    next_client_id: AtomicU64,
    stop: AtomicBool,
}

impl NodeShared {
    pub fn new(
        config: ServeConfig,
        shard_count: u32,
        run_id: String,
        started_unix_ms: u64,
        hash_seed: u64,
        topology: Topology,
    ) -> NodeShared {
        assert_eq!(
            topology.shards.len(),
            shard_count as usize,
            "the topology places every shard"
        );
        NodeShared {
            topology: Arc::new(TopologyCell::new(topology)),
            config,
            shard_count,
            metrics: Arc::new(NodeMetrics::default()),
            run_id,
            started_unix_ms,
            hash_seed,
            clients: Mutex::new(BTreeMap::new()),
            next_client_id: AtomicU64::new(1),
            stop: AtomicBool::new(false),
        }
    }

    /// Asks every core to stop: no new clients, sync what is queued, return.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn register_client(&self, peer: String, now_unix_ms: u64) -> Option<ClientInfo> {
        let mut clients = self.clients.lock().expect("client registry lock");
        if clients.len() >= self.config.connections_max {
            return None;
        }
        let id = self.next_client_id.fetch_add(1, Ordering::Relaxed);
        let info = ClientInfo {
            id,
            peer,
            name: None,
            lib_name: None,
            lib_ver: None,
            protocol: Protocol::Resp2,
            auth: ConnectionAuth::new(self.config.requirepass.as_ref()),
            connected_unix_ms: now_unix_ms,
            last_command_unix_ms: now_unix_ms,
            readonly: false,
            written: Default::default(),
            cluster_aware: false,
            affinity: Default::default(),
        };
        clients.insert(id, info.clone());
        Some(info)
    }

    fn update_client(&self, info: &ClientInfo) {
        self.clients
            .lock()
            .expect("client registry lock")
            .insert(info.id, info.clone());
    }

    fn unregister_client(&self, id: u64) {
        self.clients
            .lock()
            .expect("client registry lock")
            .remove(&id);
    }

    fn clients(&self) -> Vec<ClientInfo> {
        self.clients
            .lock()
            .expect("client registry lock")
            .values()
            .cloned()
            .collect()
    }
}

/// Why a node cannot start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("shard {shard}: cannot open its directory: {source}")]
    Storage { shard: u32, source: std::io::Error },
    #[error("shard {shard}: {source}")]
    Snapshot {
        shard: u32,
        source: snapshot::SnapshotError,
    },
    #[error("shard {shard}: {source}")]
    Wal { shard: u32, source: WalError },
    #[error("shard {shard}: {source}")]
    HardState {
        shard: u32,
        source: hard_state::HardStateError,
    },
    #[error("shard {shard}: log entry {index} does not decode ({reason}); the log was written by an incompatible version or is damaged")]
    Entry {
        shard: u32,
        index: u64,
        reason: String,
    },
    #[error("shard {shard}: the snapshot holds entries up to {snapshot_index} but the WAL runs from {first} to {last}: entries are missing")]
    Gap {
        shard: u32,
        snapshot_index: u64,
        first: u64,
        last: u64,
    },
}

impl NodeError {
    /// Why shard `shard`'s driver task stopped, as the node's error.
    fn of_shard(shard: u32, failure: ShardFailure) -> NodeError {
        match failure {
            ShardFailure::Wal(source) => NodeError::Wal { shard, source },
            ShardFailure::HardState(source) => NodeError::HardState { shard, source },
            ShardFailure::Snapshot(source) => NodeError::Snapshot { shard, source },
        }
    }

    /// Whether the data on disk is damaged (rather than unreachable).
    pub fn is_corruption(&self) -> bool {
        match self {
            NodeError::HardState { source, .. } => source.is_damage(),
            NodeError::Snapshot { .. }
            | NodeError::Entry { .. }
            | NodeError::Gap { .. }
            | NodeError::Wal {
                source: WalError::Recovery(_),
                ..
            } => true,
            _ => false,
        }
    }
}

/// What recovering one shard found.
#[derive(Clone, Debug, Default)]
pub struct RecoverySummary {
    pub shard: u32,
    pub snapshot_index: u64,
    pub snapshot_keys: u64,
    pub frames_replayed: u64,
    pub last_index: u64,
    /// Bytes of a torn tail that recovery cut (0 when the log ended clean).
    pub torn_bytes_cut: u64,
    pub seconds: f64,
}

/// The WAL limits for a node writing segments of `segment_bytes`, and for
/// `keel wal` reading a node's log (with the default: each segment's header
/// records its own size). An entry may hold any write the command limits
/// allow (values up to 512 MiB, an MSET of several): the WAL's own ceiling,
/// with a segment of its own for an entry larger than a regular segment.
pub fn wal_options(segment_bytes: u64) -> WalOptions {
    WalOptions {
        segment_bytes,
        payload_bytes_max: FRAME_PAYLOAD_BYTES_MAX,
    }
}

/// Loads the newest snapshot and replays the WAL after it.
async fn recover_shard<I: NodeIo>(
    io: &I,
    node: &NodeShared,
    id: u32,
) -> Result<(Committer<I>, RecoverySummary), NodeError> {
    let started = io.monotonic_us();
    let storage = io
        .shard_storage(id)
        .await
        .map_err(|source| NodeError::Storage { shard: id, source })?;
    let mut keyspace = Keyspace::with_hash_seed(node.hash_seed ^ u64::from(id));
    let mut summary = RecoverySummary {
        shard: id,
        ..RecoverySummary::default()
    };
    let mut snapshot_term = Term(0);
    // A follower that needs this snapshot gets its bytes from the group.
    let mut snapshot_data = Vec::new();
    if let Some(loaded) = snapshot::load_newest(&storage)
        .map_err(|source| NodeError::Snapshot { shard: id, source })?
    {
        summary.snapshot_index = loaded.meta().last_index.0;
        snapshot_term = loaded.meta().last_term;
        if node.config.cluster.is_some() {
            snapshot_data = loaded.bytes().to_vec();
        }
        keyspace.reserve(usize::try_from(loaded.keys()).unwrap_or(usize::MAX));
        for (key, value, expire) in loaded.items() {
            keyspace.insert_loaded(key, value, expire);
            summary.snapshot_keys += 1;
        }
    }
    let options = wal_options(node.config.wal_segment_bytes);
    let (wal, report) = Wal::open(storage.clone(), options)
        .await
        .map_err(|source| NodeError::Wal { shard: id, source })?;
    if let Some(torn) = &report.repaired {
        summary.torn_bytes_cut = u64::from(torn.cut_bytes);
        tracing::warn!(
            shard = id, file = %torn.file, offset = torn.offset, cut_bytes = torn.cut_bytes, last_index = torn.last_index.0, cause = %torn.cause,
            "torn tail cut: the last write never completed (it was never acknowledged)"
        );
    }
    let mut wal = wal;
    let snapshot_last = LogIndex(summary.snapshot_index);
    if node.config.cluster.is_some()
        && summary.snapshot_index > 0
        && !shard::log_holds(&wal, snapshot_last, snapshot_term)
    {
        // A crash inside the install of a leader's snapshot (durable first)
        // left the log it supersedes: it starts over after the snapshot,
        // as the install would have made it.
        tracing::warn!(shard = id, index = summary.snapshot_index, "the log does not hold the installed snapshot's last entry; starting it over after the snapshot");
        wal.restart_after(snapshot_last, snapshot_term)
            .await
            .map_err(|source| NodeError::Wal { shard: id, source })?;
    }
    let (first, last) = (wal.first_index().0, wal.last_index().0);
    let from = summary.snapshot_index + 1;
    if from < first || summary.snapshot_index > last {
        return Err(NodeError::Gap {
            shard: id,
            snapshot_index: summary.snapshot_index,
            first,
            last,
        });
    }
    // At most one new key per entry; the log after a snapshot is bounded by
    // --snapshot-wal-bytes, and so is what this may over-reserve.
    keyspace.reserve(usize::try_from(last + 1 - from).unwrap_or(usize::MAX));
    let entries = restored_entries(&wal, id, LogIndex(from))?;
    summary.frames_replayed = entries.len() as u64;
    let mut hard_state =
        hard_state::load(&storage).map_err(|source| NodeError::HardState { shard: id, source })?;
    // A data directory written before the hard-state file existed holds
    // entries of term 1 and no record: the term is at least its log's
    // (raising a term without a vote is always safe).
    let log_term = entries.last().map_or(snapshot_term, |entry| entry.id.term);
    if hard_state.term < log_term {
        hard_state = HardState {
            term: log_term,
            voted_for: None,
        };
    }
    let observer = io.shard_observer(id);
    summary.last_index = last;
    let restored = Restored {
        hard_state,
        snapshot: ReplicationSnapshotMeta {
            last: EntryId {
                term: snapshot_term,
                index: LogIndex(summary.snapshot_index),
            },
            membership: membership(&node.config),
        },
        snapshot_data,
        entries,
    };
    let clustered = node.config.cluster.is_some();
    let config = peers::group_config(
        this_node(&node.config),
        node.hash_seed ^ u64::from(id),
        clustered,
    );
    let driver = Driver::new(config, restored, keyspace, id, observer.clone());
    let config = &node.config;
    // A cluster's entries travel in peer frames too.
    let payload_bytes_max = if clustered {
        options.payload_bytes_max.min(CLUSTER_ENTRY_BYTES_MAX)
    } else {
        options.payload_bytes_max
    };
    let outside = Rc::new(peers::NodeOutside {
        io: io.clone(),
        topology: Arc::clone(&node.topology),
    });
    let settings = ShardSettings {
        limits: config.limits,
        payload_bytes_max: payload_bytes_max as usize,
        fsync: config.fsync,
        snapshot_wal_bytes: config.snapshot_wal_bytes,
        unsynced_entries_max: shard::UNSYNCED_ENTRIES_MAX,
        unsynced_bytes_max: shard::UNSYNCED_BYTES_MAX,
        metrics: Arc::clone(&node.metrics),
        observer,
        outside: Some(outside),
        preferred_leader: preferred_leader(&node.config, id),
    };
    let shard = Shard::new(id, driver, last, summary.snapshot_index, settings);
    if !clustered {
        // A sole voter elects itself at its first tick: its new term and
        // no-op are written now, and the entries restored commit with them.
        shard.tick(io.monotonic_us() / 1_000);
        shard
            .commit_start(io, &mut wal, &storage)
            .await
            .map_err(|failure| NodeError::of_shard(id, failure))?;
    }
    // A cluster's shards elect their leaders once the node serves: the
    // peers' messages are taken only then.
    summary.seconds = io.monotonic_us().saturating_sub(started) as f64 / 1e6;
    let committer = Committer {
        shard: Rc::new(shard),
        wal,
        storage,
    };
    Ok((committer, summary))
}

/// A single node's id in its groups, each of which it is the only voter of.
pub const THIS_NODE: NodeId = NodeId(1);

/// Largest encoded write a cluster's log takes: it must fit a peer frame
/// with the append around it (the envelope and entry headers take far less
/// than the margin).
pub const CLUSTER_ENTRY_BYTES_MAX: u32 =
    (crate::peer::frame::PEER_FRAME_BYTES_MAX - (1 << 20)) as u32;

/// The membership of a group of one.
pub fn group_of_one() -> Membership {
    Membership {
        voters: [THIS_NODE].into(),
        learners: Default::default(),
    }
}

/// This node's id in its groups: its cluster id, or [`THIS_NODE`] alone.
pub fn this_node(config: &ServeConfig) -> NodeId {
    config
        .cluster
        .as_ref()
        .map_or(THIS_NODE, |cluster| NodeId(cluster.id))
}

/// The member that should lead shard `shard` (None alone): the members in
/// id order take the shards in turn, so each leads its share.
pub fn preferred_leader(config: &ServeConfig, shard: u32) -> Option<NodeId> {
    let cluster = config.cluster.as_ref()?;
    let member = &cluster.members[shard as usize % cluster.members.len()];
    Some(NodeId(member.id))
}

/// Every group's members: the cluster's, each a voter (the settings list
/// every member; no membership change is logged), or this node alone.
pub fn membership(config: &ServeConfig) -> Membership {
    match &config.cluster {
        None => group_of_one(),
        Some(cluster) => Membership {
            voters: cluster
                .members
                .iter()
                .map(|member| NodeId(member.id))
                .collect(),
            learners: Default::default(),
        },
    }
}

/// The WAL's entries from `from` on, for the group, with their terms (an
/// empty payload is a no-op). Each command is decoded once here, so that
/// one written by an incompatible version stops the start with its index.
fn restored_entries<S: keel_wal::Storage>(
    wal: &Wal<S>,
    shard: u32,
    from: LogIndex,
) -> Result<Vec<Entry>, NodeError> {
    let mut entries = Vec::new();
    wal.replay(from, |index, payload| {
        let term = wal.term_at(index).expect("a replayed entry has a term");
        let id = EntryId { term, index };
        if payload.is_empty() {
            entries.push(Entry {
                id,
                payload: EntryPayload::Noop,
            });
            return Ok(());
        }
        codec::decode::<Operation>(payload).map_err(|error| NodeError::Entry {
            shard,
            index: index.0,
            reason: error.to_string(),
        })?;
        entries.push(Entry {
            id,
            payload: EntryPayload::Command(payload.into()),
        });
        Ok::<(), NodeError>(())
    })
    .map_err(|error| match error {
        // The replay's own WAL errors come through `From`, which cannot know
        // the shard.
        NodeError::Wal { source, .. } => NodeError::Wal { shard, source },
        other => other,
    })?;
    Ok(entries)
}

/// A recovered shard with the WAL and directory only its driver task touches.
struct Committer<I: NodeIo> {
    shard: Rc<Shard>,
    wal: Wal<I::Storage>,
    storage: I::Storage,
}

/// For `?` inside a WAL replay, whose callback returns `NodeError`; the
/// caller puts the shard in (`u32::MAX` until then).
impl From<WalError> for NodeError {
    fn from(source: WalError) -> NodeError {
        NodeError::Wal {
            shard: u32::MAX,
            source,
        }
    }
}

/// A core after recovery, ready to serve.
pub struct Recovered<I: NodeIo> {
    core: Rc<Core<I>>,
    committers: Vec<Committer<I>>,
    pub summaries: Vec<RecoverySummary>,
}

/// Recovers the shards this core owns.
pub async fn recover_core<I: NodeIo>(
    io: I,
    node: Arc<NodeShared>,
) -> Result<Recovered<I>, NodeError> {
    let (core, cores) = io.core();
    let mut shards = HashMap::new();
    let mut committers = Vec::new();
    let mut summaries = Vec::new();
    for id in shards_of_core(node.shard_count, core, cores) {
        let (committer, summary) = recover_shard(&io, &node, id).await?;
        shards.insert(id, Rc::clone(&committer.shard));
        committers.push(committer);
        summaries.push(summary);
    }
    Ok(Recovered {
        core: Rc::new(Core::new(io, node, shards)),
        committers,
        summaries,
    })
}

impl<I: NodeIo> std::fmt::Debug for Recovered<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovered")
            .field("summaries", &self.summaries)
            .finish_non_exhaustive()
    }
}

impl<I: NodeIo> Recovered<I> {
    /// Serves until the node is asked to stop, then syncs what is queued.
    /// Returns a WAL's error if one failed: the node must then stop.
    pub async fn serve(self) -> Result<(), NodeError> {
        let core = self.core;
        let io = core.io.clone();
        let node = Arc::clone(&core.node);
        let failure: Rc<std::cell::RefCell<Option<NodeError>>> = Rc::default();
        let done = Rc::new(std::cell::Cell::new(0usize));
        let committers = self.committers.len();
        for Committer {
            shard,
            wal,
            storage,
        } in self.committers
        {
            let (failure, done, io_task) = (Rc::clone(&failure), Rc::clone(&done), io.clone());
            let (io_expire, shard_expire) = (io.clone(), Rc::clone(&shard));
            if shard.reports_writes() {
                io.spawn(Rc::clone(&shard).report_writes());
            }
            io.spawn(async move {
                let id = shard.id;
                if let Err(source) = Rc::clone(&shard).run_driver(io_task, wal, storage).await {
                    tracing::error!(shard = id, error = %source, "the shard's disk failed: it acknowledges nothing more; stopping the node");
                    failure.borrow_mut().get_or_insert(NodeError::of_shard(id, source));
                }
                done.set(done.get() + 1);
            });
            io.spawn(async move {
                loop {
                    io_expire
                        .sleep(Duration::from_millis(EXPIRE_PERIOD_MS))
                        .await;
                    shard_expire.expire_due(&io_expire).await;
                }
            });
        }
        io.spawn(Rc::clone(&core).serve_hops());
        io.spawn(Rc::clone(&core).adopt_clients());
        io.spawn(peers::receive(Rc::clone(&core)));
        io.spawn(Rc::clone(&core).serve_forwards());
        io.spawn(Rc::clone(&core).expire_forwards());
        let accepting = Rc::clone(&core).accept_clients();
        let metrics = serve_metrics(Rc::clone(&core));
        let watch = async {
            while !node.stopping() && failure.borrow().is_none() {
                io.sleep(Duration::from_millis(STOP_POLL_MS)).await;
            }
        };
        futures_lite::future::or(futures_lite::future::or(accepting, metrics), watch).await;
        for shard in core.shards() {
            shard.stop();
        }
        while done.get() < committers {
            io.sleep(Duration::from_millis(STOP_POLL_MS)).await;
        }
        let failed = failure.borrow_mut().take();
        match failed {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Answers Prometheus scrapes (any HTTP GET) with the metrics text.
async fn serve_metrics<I: NodeIo>(core: Rc<Core<I>>) {
    if core.node.config.metrics_port.is_none() || core.io.core().0 != 0 {
        return std::future::pending().await;
    }
    loop {
        let mut conn = match core.io.accept(Listener::Metrics).await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(%error, "metrics accept failed");
                continue;
            }
        };
        let scrape = Rc::clone(&core);
        core.io.spawn(async move {
            let mut request = Vec::new();
            let mut chunk = [0; 1024];
            while !request.windows(4).any(|window| window == b"\r\n\r\n") && request.len() < METRICS_REQUEST_BYTES_MAX {
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => request.extend_from_slice(&chunk[..read]),
                }
            }
            let stats = scrape.all_stats().await;
            let now = scrape.io.now_unix_ms();
            let gauges = Gauges {
                connected_clients: scrape.node.clients().len() as u64,
                keys: stats.iter().map(|shard| shard.keys).sum(),
                durability_lag_entries: stats.iter().map(|shard| shard.last_index.saturating_sub(shard.durable_index)).sum(),
                snapshot_age_seconds: stats
                    .iter()
                    .map(|shard| now.saturating_sub(shard.snapshot_unix_ms.unwrap_or(scrape.node.started_unix_ms)) / 1000)
                    .max()
                    .unwrap_or(0),
            };
            let mut body = scrape.node.metrics.render(&gauges);
            let progress: Vec<ShardProgress> = stats.iter().map(ShardProgress::of).collect();
            cluster::replication_metrics(&scrape.node.topology.get(), &progress, &mut body);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
        });
    }
}

/// The directory of shard `shard` under the data directory.
pub fn shard_dir_name(shard: u32) -> String {
    format!("shard-{shard:04}")
}
