//! One shard: its driver (consensus group, key space, overlay), and the task
//! that carries out the driver's writes: group commit to the WAL, the
//! hard-state file, ticks, snapshots and WAL compaction.
//!
//! # Invariants
//! - The key space holds committed entries only, applied in index order;
//!   commands run against it under the leader's overlay of uncommitted
//!   entries (`crate::overlay`), and only once the leader's no-op committed.
//! - A write's reply is released only when its own entry (term and index)
//!   has committed; if another entry committed at its index, or the group
//!   refused it, the client gets `-TRYAGAIN`. A read waits for the commit of
//!   the newest uncommitted entry it read.
//! - With `--fsync always` an entry commits only after the fdatasync that
//!   covers it (the group's `Durable` comes after `sync`); so nothing is
//!   acknowledged before it is durable. With `--fsync interval-ms` the
//!   driver reports entries durable as soon as they are queued for the WAL,
//!   and the fsync follows within the interval (the documented weaker
//!   contract: a power loss may take the last interval's acknowledged writes).
//! - Only the driver task touches the [`Wal`] and the hard-state file; it
//!   executes the group's writes in the order asked, the hard state before
//!   the entries of the same `Persist`.
//! - After an IO failure the shard acknowledges nothing more.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use keel_replication::{
    EntryId, Envelope, Input, LogIndex, Membership, NodeId, NotLeader, ReadId, Refusal, Role,
    SnapshotMeta,
};
use keel_wal::codec::{self, CodecError};
use keel_wal::{Storage, Term, Wal, WalError};

use crate::command::{self, Outcome};
use crate::config::FsyncPolicy;
use crate::limits::Limits;
use crate::metrics::NodeMetrics;
use crate::node::cluster::FollowerLag;
use crate::node::driver::{Driver, NotReady, Outgoing, Write};
use crate::node::hard_state::{self, HardStateError};
use crate::node::io::{NodeIo, ShardObserver, ShardOutside};
use crate::node::local::{Signal, Slot, Watermark};
use crate::node::watch::Watches;
use crate::operation::{Change, Operation, SingleOp};
use crate::overlay::{Overlay, View};
use crate::resp::Reply;
use crate::snapshot;
use crate::topology::MemberId;

/// Most expired keys one active-expiry pass removes from a shard.
pub const EXPIRE_KEYS_PER_PASS_MAX: usize = 200;
/// Most active-expiry passes per wake-up (so at most 10,000 keys per
/// `EXPIRE_PERIOD_MS`): a backlog of expired keys is worked off over several
/// wake-ups, and between passes other tasks run, so expiry never holds the
/// core for long. Keys past their time are invisible to reads meanwhile.
pub const EXPIRE_PASSES_PER_WAKE_MAX: usize = 50;
/// Entries proposed but not yet durable that a shard holds before commands
/// wait for a sync: with `--fsync interval-ms` nothing else stops writers
/// from running ahead of the disk, and every such entry is held in memory.
pub const UNSYNCED_ENTRIES_MAX: u64 = 64 * 1024;
/// How often a leader checks whether to hand its shard to the member that
/// should lead it: long enough that a member just back does not take
/// leadership while it is still catching up in bursts.
pub const LEADERSHIP_BALANCE_INTERVAL_MS: u64 = 2_000;
/// Bytes of encoded entries proposed but not yet durable that a shard holds
/// before commands wait for a sync (the memory those entries take). One
/// entry may pass it: the limit is checked before a command runs.
pub const UNSYNCED_BYTES_MAX: u64 = 256 << 20;
/// Under `--fsync interval-ms`, how often the driver hands the writes
/// queued to the WAL between syncs: at 300,000 SETs/s a few thousand
/// entries, encoded [`STAGE_ENTRIES_MAX`] at a time, where a whole
/// interval's (30,000-50,000 at 100 ms) held the core for 5-60 ms at once.
pub const INTERVAL_STAGE_MS: u64 = 10;
/// Under `--fsync interval-ms`, the sync starts before the interval ends
/// once the writes not yet durable reach 1/this of [`UNSYNCED_ENTRIES_MAX`]
/// or [`UNSYNCED_BYTES_MAX`].
pub const INTERVAL_EARLY_SYNC_DIVISOR: u64 = 2;
/// Entries the driver encodes into the WAL before it lets other tasks run:
/// about 75 us of encoding (72 ns an entry, docs/PERFORMANCE.md).
pub const STAGE_ENTRIES_MAX: usize = 1024;
/// The longest the driver task sleeps without a tick (the group's own
/// deadlines are usually sooner: a leader's heartbeat).
pub const TICK_INTERVAL_MS_MAX: u64 = 100;

/// A command executed on the shard: its reply, to be released once the
/// entry it depends on has committed.
#[derive(Debug)]
pub struct Executed {
    pub reply: Reply,
    /// The entry the reply depends on: the command's own, or the newest
    /// uncommitted one it read; `None` if it read committed state only.
    pub wait_for: Option<EntryId>,
    /// Whether the reply rests on a read that this node's leadership must
    /// be confirmed for ([`Shard::acknowledged`]): every reply but a write's
    /// (whose own commit proves it).
    pub confirm: bool,
}

/// Figures about one shard, for INFO and metrics.
#[derive(Clone, Debug, Default)]
pub struct ShardStats {
    pub shard: u32,
    pub keys: u64,
    pub expires: u64,
    pub data_bytes: u64,
    pub last_index: u64,
    pub durable_index: u64,
    pub applied_index: u64,
    pub term: u64,
    pub snapshot_index: u64,
    pub snapshot_unix_ms: Option<u64>,
    pub snapshot_bytes: u64,
    pub snapshot_pause_us_last: u64,
    pub wal_bytes_since_snapshot: u64,
    pub failure: Option<String>,
    /// The newest entry known committed.
    pub commit_index: u64,
    /// On the leader, each follower's progress; empty elsewhere.
    pub followers: Vec<FollowerLag>,
}

#[derive(Debug, Default)]
struct SnapshotState {
    index: u64,
    unix_ms: Option<u64>,
    bytes: u64,
    pause_us_last: u64,
    wal_bytes_since: u64,
    in_progress: bool,
    /// A snapshot that is durable now: the WAL before it may go, and the
    /// group may drop the entries it covers.
    compacted: Option<EntryId>,
    /// Why removing the WAL segments compaction took out of the log failed
    /// (in a task of its own): the driver stops on it at its next turn,
    /// as it would have on failing to remove them itself.
    removal_failed: Option<WalError>,
}

/// Whether a snapshot should start, `wal_bytes_since` bytes of WAL after the
/// last one: after `floor_bytes` (`--snapshot-wal-bytes`), or after as many
/// bytes as the last snapshot took if that is more, so that a large key space
/// is rewritten once per its own size of writes, not per `floor_bytes` (Redis
/// rewrites its AOF on the same rule, once it has doubled).
fn snapshot_due(wal_bytes_since: u64, floor_bytes: u64, last_snapshot_bytes: u64) -> bool {
    wal_bytes_since >= floor_bytes.max(last_snapshot_bytes)
}

/// Entries freed at a time by [`free_in_slices`] before it lets other tasks
/// run: about 0.2 ms of frees here (400,000 took 6.6 ms).
pub const FREE_SLICE_ENTRIES: usize = 8_192;

/// Frees `entries` in a task of its own, [`FREE_SLICE_ENTRIES`] at a time,
/// yielding between slices: what a compaction took out of the group's
/// memory would otherwise hold up the driver's next batch while it is freed.
fn free_in_slices<I: NodeIo>(io: &I, entries: VecDeque<keel_replication::Entry>) {
    if entries.is_empty() {
        return;
    }
    io.spawn(async move {
        let mut entries = entries.into_iter();
        while entries.by_ref().take(FREE_SLICE_ENTRIES).count() > 0 {
            futures_lite::future::yield_now().await;
        }
    });
}

/// Why a shard's driver task stopped: the shard acknowledges nothing more.
#[derive(Debug, thiserror::Error)]
pub enum ShardFailure {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    HardState(#[from] HardStateError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
}

/// What the driver handed to the WAL since its last sync.
#[derive(Debug, Default)]
struct Staged {
    entries: u64,
    /// WAL bytes.
    bytes: u64,
    /// Bytes of the entries' payloads (what [`Shard::unsynced_bytes`] counts).
    payload_bytes: u64,
    /// The last entry, which the sync makes durable.
    last: Option<EntryId>,
    /// Entries the planted bug `lose-batch-tail` appends after the sync.
    held_back: Vec<keel_replication::Entry>,
}

/// One shard of the key space.
#[derive(Debug)]
pub struct Shard {
    pub id: u32,
    driver: RefCell<Driver>,
    /// Bytes of the entries proposed but not yet durable.
    unsynced_bytes: Cell<u64>,
    /// The last entry the WAL made durable.
    durable: Watermark,
    /// The last entry applied to the key space: replies wait on it.
    applied: Watermark,
    /// Messages that may leave only after the next sync.
    awaiting_sync: RefCell<Vec<Outgoing>>,
    /// Whether the driver task is writing a batch (taken from the driver,
    /// not yet durable): a message that must wait for durability waits.
    syncing: Cell<bool>,
    /// The reads waiting for the group to confirm this node's leadership.
    reads: RefCell<std::collections::HashMap<ReadId, Slot<Result<LogIndex, NotLeader>>>>,
    next_read: Cell<u64>,
    /// The leader, term and role last told to the topology and observer.
    published: Cell<(Option<NodeId>, u64, bool)>,
    /// When the leader next checks whether to hand the shard to its
    /// preferred leader.
    next_balance_ms: Cell<u64>,
    /// The monotonic time of the shard's last wake-up, for the group's steps
    /// made inside commands (a proposal starts no timer).
    clock_ms: Cell<u64>,
    wake_driver: Signal,
    /// Under `durable_before_sync`: writes were proposed that the group has
    /// not heard are durable. They are reported once for all the proposals
    /// of a turn of the executor ([`Shard::report_writes`]), not one step
    /// per proposal.
    unreported: Cell<bool>,
    report_writes: Signal,
    settings: ShardSettings,
    snapshot: RefCell<SnapshotState>,
    stopping: Cell<bool>,
    /// The keys connections WATCH (in memory only: see [`crate::node::watch`]).
    watches: RefCell<Watches>,
}

/// Entries at the end of a batch of `len` that its sync leaves out: none,
/// except under the planted bug `lose-batch-tail` (the second half).
#[cfg(feature = "planted-bugs")]
fn held_back_entries(len: usize) -> usize {
    if len >= 2 && keel_wal::planted::active(keel_wal::planted::Plant::LoseBatchTail) {
        len / 2
    } else {
        0
    }
}

#[cfg(not(feature = "planted-bugs"))]
fn held_back_entries(_len: usize) -> usize {
    0
}

/// Whether replies may go before the fsync: the weaker contract of
/// `--fsync interval-ms`, or the planted bug `ack-before-fsync`.
fn durable_before_sync(fsync: FsyncPolicy) -> bool {
    #[cfg(feature = "planted-bugs")]
    if keel_wal::planted::active(keel_wal::planted::Plant::AckBeforeFsync) {
        return true;
    }
    matches!(fsync, FsyncPolicy::IntervalMs(_))
}

/// A write that cannot go into the log.
fn too_large(len: usize, limit: usize) -> Reply {
    Reply::Error(format!(
        "ERR write of {len} bytes exceeds the log's entry limit of {limit} bytes"
    ))
}

/// Whether `wal` holds entry (`index`, `term`), as Raft's log matching asks
/// of a snapshot's last entry. A log compacted through `index` starts with
/// the entry after it, and a log that starts with an entry frame does not
/// record the term before it (the WAL reopens it as term 0): there the
/// entry is this shard's own committed one, compacted into its own
/// snapshot, and committed entries at one index are one entry (Raft's
/// state machine safety), so it is held. Treating it as missing would
/// start the log over and drop entries after it that this member may have
/// acknowledged to a leader.
pub(crate) fn log_holds<S: Storage>(wal: &Wal<S>, index: LogIndex, term: Term) -> bool {
    let log = wal.log_map();
    match wal.term_at(index) {
        Some(held) if held == term => true,
        Some(Term(0)) => index == log.base_index,
        _ => false,
    }
}

/// `-TRYAGAIN`: the shard cannot take the command now; a retry may succeed
/// (here or, once the cluster routes, at the leader it names).
fn try_again(shard: u32, why: &str) -> Reply {
    Reply::Error(format!("TRYAGAIN shard {shard}: {why}"))
}

fn not_leader_text(leader: Option<keel_replication::NodeId>) -> String {
    match leader {
        Some(leader) => format!("not the leader ({leader} leads)"),
        None => "no leader yet (an election is running)".to_owned(),
    }
}

fn refusal_text(refusal: Refusal) -> String {
    match refusal {
        Refusal::NotLeader(NotLeader { leader }) => not_leader_text(leader),
        Refusal::Transferring { to } => format!("leadership is moving to {to}"),
        other => format!("refused: {other:?}"),
    }
}

/// A transaction's writes as one log entry: `None` without writes, the one
/// write itself, or a batch of every change in order (a batch's changes are
/// spliced in, as a batch holds no batch).
fn one_entry(mut writes: Vec<Operation>) -> Option<Operation> {
    if writes.len() <= 1 {
        return writes.pop();
    }
    let mut ops = Vec::new();
    for write in writes {
        match write {
            Operation::Batch { ops: inner } => ops.extend(inner),
            single => ops.push(SingleOp::try_from(single).expect("not a batch")),
        }
    }
    Some(Operation::Batch { ops })
}

/// What a shard is told at start: its limits and policies.
#[derive(Clone, Debug)]
pub struct ShardSettings {
    pub limits: Limits,
    /// Largest encoded operation the WAL takes.
    pub payload_bytes_max: usize,
    pub fsync: FsyncPolicy,
    /// WAL bytes since the last snapshot that start the next.
    pub snapshot_wal_bytes: u64,
    /// Entries proposed but not durable before commands wait
    /// ([`UNSYNCED_ENTRIES_MAX`] unless a test shrinks it).
    pub unsynced_entries_max: u64,
    /// Their bytes ([`UNSYNCED_BYTES_MAX`] unless a test shrinks it).
    pub unsynced_bytes_max: u64,
    pub metrics: Arc<NodeMetrics>,
    /// The simulator's witness of what the shard applies and acknowledges.
    pub observer: Option<Rc<dyn ShardObserver>>,
    /// The peers and the topology (`None` in tests of a lone shard).
    pub outside: Option<Rc<dyn ShardOutside>>,
    /// The member that should lead this shard when it is up and caught up,
    /// so that each member leads its share of the shards (`None` alone).
    pub preferred_leader: Option<NodeId>,
}

impl Shard {
    /// A shard around `driver`, whose WAL is durable through `durable_index`
    /// and whose newest snapshot is at `snapshot_index`.
    pub fn new(
        id: u32,
        driver: Driver,
        durable_index: u64,
        snapshot_index: u64,
        settings: ShardSettings,
    ) -> Shard {
        let applied = driver.applied().index.0;
        let restored_bytes = driver.group().bytes_after(LogIndex(snapshot_index));
        Shard {
            id,
            driver: RefCell::new(driver),
            unsynced_bytes: Cell::new(0),
            durable: Watermark::new(durable_index),
            applied: Watermark::new(applied),
            awaiting_sync: RefCell::default(),
            syncing: Cell::new(false),
            reads: RefCell::default(),
            next_read: Cell::new(1),
            published: Cell::new((None, 0, false)),
            next_balance_ms: Cell::new(0),
            clock_ms: Cell::new(0),
            wake_driver: Signal::default(),
            unreported: Cell::new(false),
            report_writes: Signal::default(),
            settings,
            snapshot: RefCell::new(SnapshotState {
                index: snapshot_index,
                // The restored tail is held in memory as well (the group's
                // log): it counts toward the next snapshot.
                wal_bytes_since: restored_bytes,
                ..SnapshotState::default()
            }),
            stopping: Cell::new(false),
            watches: RefCell::default(),
        }
    }

    /// The last entry in the log (durable, committed or not).
    pub fn last_index(&self) -> u64 {
        self.driver.borrow().group().last().index.0
    }

    /// Why the shard takes no command now, as a reply; `None` if it does.
    fn refusal(&self) -> Option<Reply> {
        if let Some(reason) = self.durable.failure() {
            return Some(Reply::Error(format!(
                "ERR shard {} stopped: {reason}",
                self.id
            )));
        }
        match self.driver.borrow().readable() {
            Ok(()) => None,
            Err(NotReady::NotLeader(leader)) => Some(try_again(self.id, &not_leader_text(leader))),
            Err(NotReady::Catching { noop }) => Some(try_again(
                self.id,
                &format!("a new leader is committing its first entry {noop}"),
            )),
        }
    }

    fn refused(reply: Reply) -> Executed {
        Executed {
            reply,
            wait_for: None,
            confirm: false,
        }
    }

    /// Runs a keyed command whose keys all live in this shard.
    pub fn execute(&self, args: &[Vec<u8>], now_unix_ms: u64) -> Executed {
        if let Some(reply) = self.refusal() {
            return Shard::refused(reply);
        }
        let observed = Cell::new(None);
        let Outcome { reply, op } = {
            let driver = self.driver.borrow();
            command::execute(
                driver.view(&observed),
                args,
                now_unix_ms,
                &self.settings.limits,
            )
        };
        let Some(op) = op else {
            return Executed {
                reply,
                wait_for: observed.get(),
                confirm: true,
            };
        };
        self.proposed(op, reply, observed.get())
    }

    /// A command's reply once its write `op` is proposed: it waits for the
    /// entry's commit, or is the refusal.
    fn proposed(&self, op: Operation, reply: Reply, observed: Option<EntryId>) -> Executed {
        match self.propose(op) {
            Ok(id) => Executed {
                reply,
                wait_for: Some(id),
                confirm: false,
            },
            Err(error) => Executed {
                reply: error,
                wait_for: observed,
                confirm: false,
            },
        }
    }

    /// Runs a read on a `READONLY` connection: against this node's
    /// committed key space, leader or not, with no confirmation (Redis
    /// Cluster's replica reads: possibly stale, never uncommitted).
    pub fn execute_stale(&self, args: &[Vec<u8>], now_unix_ms: u64) -> Executed {
        if let Some(reason) = self.durable.failure() {
            return Shard::refused(Reply::Error(format!(
                "ERR shard {} stopped: {reason}",
                self.id
            )));
        }
        let Outcome { reply, op } = {
            let driver = self.driver.borrow();
            let committed = View::from(driver.keyspace());
            command::execute(committed, args, now_unix_ms, &self.settings.limits)
        };
        assert!(
            op.is_none(),
            "only reads run stale: the topology routes writes to the leader"
        );
        Executed {
            reply,
            wait_for: None,
            confirm: false,
        }
    }

    /// Proposes `op` to the group: its entry joins the overlay (and the
    /// WATCH registry notes its keys) at once, and the key space at commit.
    fn propose(&self, op: Operation) -> Result<EntryId, Reply> {
        let payload = self.encode(&op)?;
        let bytes = payload.len() as u64;
        // The registry learns of the write only if someone watches: cloning
        // every operation would cost every write a copy.
        let watched = (!self.watches.borrow().is_empty()).then(|| op.clone());
        let nothing_observed = Cell::new(None);
        let flushed = match &watched {
            Some(op) if op.changes().any(|change| change == Change::FlushAll) => {
                let driver = self.driver.borrow();
                self.watches
                    .borrow()
                    .held_keys(driver.view(&nothing_observed))
            }
            _ => Vec::new(),
        };
        let now_ms = self.clock_ms.get();
        let id = self
            .driver
            .borrow_mut()
            .propose(now_ms, op, payload)
            .map_err(|refusal| try_again(self.id, &refusal_text(refusal)))?;
        if let Some(op) = watched {
            let driver = self.driver.borrow();
            self.watches
                .borrow_mut()
                .note_applied(&op, driver.view(&nothing_observed), &flushed);
        }
        self.unsynced_bytes.set(self.unsynced_bytes.get() + bytes);
        if durable_before_sync(self.settings.fsync) {
            self.unreported.set(true);
            self.report_writes.raise();
        }
        self.after_step();
        self.wake_driver.raise();
        Ok(id)
    }

    /// Under the weaker contract (`durable_before_sync`), tells the group
    /// that every write queued so far is durable: they commit at once, and
    /// the fsync follows within the interval.
    fn report_queued_durable(&self, now_ms: u64) {
        let mut driver = self.driver.borrow_mut();
        if durable_before_sync(self.settings.fsync) && driver.has_writes() {
            let last = driver.group().last();
            driver.durable(now_ms, last);
        }
    }

    /// Reports the proposals not yet reported durable (see `unreported`).
    /// Runs before the driver takes its writes, which the report needs.
    fn report_unreported(&self) {
        if self.unreported.replace(false) {
            self.report_queued_durable(self.clock_ms.get());
            self.after_step();
        }
    }

    /// Whether the shard needs its [`Shard::report_writes`] task: only under
    /// the weaker contract, so that the tasks (and the simulator's
    /// schedules) of `--fsync always` stay as they were.
    pub fn reports_writes(&self) -> bool {
        durable_before_sync(self.settings.fsync)
    }

    /// The task that reports proposals durable under `--fsync interval-ms`
    /// once per turn of the executor: a proposal wakes it, and it runs
    /// after the tasks already woken, whose commands join the same step.
    /// At -P 16 the step per proposal was 10% of the core.
    pub async fn report_writes(self: Rc<Shard>) {
        loop {
            self.report_writes.wait().await;
            self.report_unreported();
        }
    }

    /// The entry's payload, if the log takes it.
    fn encode(&self, op: &Operation) -> Result<Arc<[u8]>, Reply> {
        codec::encode_shared(op, self.settings.payload_bytes_max).map_err(|error| match error {
            CodecError::TooLarge { bytes, bytes_max } => too_large(bytes, bytes_max),
            error => Reply::Error(format!("ERR cannot encode the write: {error}")),
        })
    }

    /// What every step of the driver is followed by: replies learn of what
    /// was applied, messages leave (or wait for the next sync).
    fn after_step(&self) {
        let (applied, outbox, reads, writes_queued) = {
            let mut driver = self.driver.borrow_mut();
            (
                driver.applied().index.0,
                driver.take_outbox(),
                driver.take_ready_reads(),
                driver.has_writes(),
            )
        };
        self.applied.advance(applied);
        // Everything written before is durable unless writes are queued or
        // a batch is being written: then a message that must wait, waits.
        let must_wait = writes_queued || self.syncing.get();
        for message in outbox {
            if message.after_durable && must_wait {
                self.awaiting_sync.borrow_mut().push(message);
            } else {
                self.send_to_peer(message);
            }
        }
        for (read, result) in reads {
            if let Some(slot) = self.reads.borrow_mut().remove(&read) {
                slot.fill(result);
            }
        }
        self.publish_leadership();
    }

    /// Tells the topology (and the observer) when the leader or the term
    /// this node knows of changes.
    fn publish_leadership(&self) {
        let (leader, term, leads) = {
            let driver = self.driver.borrow();
            let group = driver.group();
            (group.leader(), group.term().0, group.role() == Role::Leader)
        };
        let before = self.published.replace((leader, term, leads));
        if before == (leader, term, leads) {
            return;
        }
        if let Some(outside) = &self.settings.outside {
            outside.leader(self.id, leader.map(|node| node.0), term);
        }
        if leads && (before.1 != term || !before.2) {
            if let Some(observer) = &self.settings.observer {
                observer.elected(self.id, term);
            }
        }
    }

    /// Hands a message to the peer transport, which drops it if the link is
    /// full or down (Raft sends again).
    fn send_to_peer(&self, message: Outgoing) {
        let outside = self
            .settings
            .outside
            .as_ref()
            .expect("a group whose core sends messages has peers to send them to");
        let to = message.envelope.to;
        if let Some(observer) = &self.settings.observer {
            observer.sent(self.id, &message.envelope);
        }
        match keel_replication::codec::encode(&message.envelope) {
            Ok(frame) => {
                if let Err(error) = outside.send(to.0, self.id, frame) {
                    tracing::trace!(shard = self.id, %to, ?error, "peer message dropped");
                }
            }
            Err(error) => {
                tracing::warn!(shard = self.id, %to, %error, "a message to a peer does not encode; dropped")
            }
        }
    }

    /// A message from a peer's copy of this shard.
    pub fn receive(&self, now_ms: u64, envelope: Envelope) {
        self.step_at(now_ms, Input::Receive(envelope));
        if self.driver.borrow().has_writes() {
            self.wake_driver.raise();
        }
    }

    /// Confirms that this node still leads, by a read round (§6.4) started
    /// now, after the read a reply rests on: a majority that acknowledges
    /// it had adopted no newer term, so no newer leader could have
    /// committed a write that read missed. A sole voter needs none.
    async fn confirm_leadership(&self) -> Result<(), Reply> {
        if !self.driver.borrow().has_peers() {
            return Ok(());
        }
        let read = ReadId(self.next_read.get());
        self.next_read.set(self.next_read.get() + 1);
        let slot = Slot::default();
        self.reads.borrow_mut().insert(read, slot.clone());
        if let Some(observer) = &self.settings.observer {
            let term = self.driver.borrow().group().term().0;
            observer.read_asked(self.id, read.0, term);
        }
        self.step_at(self.clock_ms.get(), Input::Read { read });
        match slot.take().await {
            Ok(_) => {
                if let Some(observer) = &self.settings.observer {
                    observer.read_confirmed(self.id, read.0);
                }
                Ok(())
            }
            Err(NotLeader { leader }) => Err(try_again(self.id, &not_leader_text(leader))),
        }
    }

    /// WATCH: connection `client` watches `keys`, all of this shard; returns
    /// the newest uncommitted entry it read.
    pub fn watch(&self, client: u64, keys: &[Vec<u8>], now_unix_ms: u64) -> Option<EntryId> {
        let observed = Cell::new(None);
        let driver = self.driver.borrow();
        self.watches
            .borrow_mut()
            .watch(client, keys, driver.view(&observed), now_unix_ms);
        observed.get()
    }

    /// Whether any connection watches a key of this shard.
    #[cfg(test)]
    pub(crate) fn watches_anything(&self) -> bool {
        !self.watches.borrow().is_empty()
    }

    /// Connection `client` forgets its watched keys (UNWATCH, DISCARD, the
    /// connection's end).
    pub fn unwatch(&self, client: u64, now_unix_ms: u64) {
        let observed = Cell::new(None);
        let driver = self.driver.borrow();
        self.watches
            .borrow_mut()
            .unwatch(client, driver.view(&observed), now_unix_ms);
    }

    /// EXEC of a transaction whose keyed `commands` all name keys of this
    /// shard: nothing runs (a null reply) if a key `client` watches changed;
    /// otherwise the commands run one after the other, with nothing else in
    /// between, each seeing the writes of those before (in a scratch overlay
    /// of the transaction's own), and their writes become one log entry
    /// (the one write, or a [`Operation::Batch`] of them all), so a crash
    /// keeps all or none. If that entry is too large for the log, nothing
    /// was written and EXEC answers the error.
    pub fn exec(&self, client: u64, commands: &[Vec<Vec<u8>>], now_unix_ms: u64) -> Executed {
        if let Some(reply) = self.refusal() {
            return Shard::refused(reply);
        }
        let observed = Cell::new(None);
        let changed = {
            let driver = self.driver.borrow();
            self.watches
                .borrow_mut()
                .unwatch(client, driver.view(&observed), now_unix_ms)
        };
        if changed {
            return Executed {
                reply: Reply::NullArray,
                wait_for: observed.get(),
                confirm: true,
            };
        }
        let (replies, writes) = self.run_transaction(commands, now_unix_ms, &observed);
        let Some(entry) = one_entry(writes) else {
            return Executed {
                reply: Reply::Array(replies),
                wait_for: observed.get(),
                confirm: true,
            };
        };
        self.proposed(entry, Reply::Array(replies), observed.get())
    }

    /// Runs a transaction's commands in order over a scratch overlay:
    /// their replies and writes.
    fn run_transaction(
        &self,
        commands: &[Vec<Vec<u8>>],
        now_unix_ms: u64,
        observed: &Cell<Option<EntryId>>,
    ) -> (Vec<Reply>, Vec<Operation>) {
        let driver = self.driver.borrow();
        let mut scratch = Overlay::default();
        let mut writes = Vec::new();
        let mut replies = Vec::with_capacity(commands.len());
        for (position, args) in (1..).zip(commands) {
            let view = driver.view(observed).with_scratch(&scratch);
            let Outcome { reply, op } =
                command::execute(view, args, now_unix_ms, &self.settings.limits);
            if let Some(op) = op {
                // Scratch ids only order the transaction's own writes.
                scratch.write(driver.view(observed), &op, EntryId::new(0, position));
                writes.push(op);
            }
            replies.push(reply);
        }
        (replies, writes)
    }

    /// Whether the entries not yet durable are at a limit.
    fn unsynced_full(&self) -> bool {
        self.unsynced_reaches(1)
    }

    /// Whether the entries not yet durable reach 1/`divisor` of either
    /// limit (entries, bytes).
    fn unsynced_reaches(&self, divisor: u64) -> bool {
        // A cut can put the log's end below what was durable before it.
        self.last_index().saturating_sub(self.durable.get())
            >= self.settings.unsynced_entries_max / divisor
            || self.unsynced_bytes.get() >= self.settings.unsynced_bytes_max / divisor
    }

    /// Under `--fsync interval-ms`, whether the sync is due: the interval
    /// is over, or the writes not yet durable reach
    /// 1/[`INTERVAL_EARLY_SYNC_DIVISOR`] of a limit, so that the sync frees
    /// room before writers must wait for it. Waiting for the interval's
    /// end held writers for the rest of it: 211-351 ms with
    /// `interval-ms=1000` at 65,000 SETs/s (docs/PERFORMANCE.md).
    fn interval_sync_due(&self, now_us: u64, due_us: u64) -> bool {
        now_us >= due_us || self.unsynced_reaches(INTERVAL_EARLY_SYNC_DIVISOR)
    }

    /// Waits while the entries not yet durable are at a limit: the
    /// back-pressure that keeps writers from running ahead of the disk (each
    /// sync frees room). Returns at once if the shard failed: it refuses
    /// commands then.
    pub async fn wait_for_room(&self) {
        while self.unsynced_full() {
            if self.durable.wait_for(self.durable.get() + 1).await.is_err() {
                return;
            }
        }
    }

    /// Waits while this node leads but its no-op has not committed (a
    /// command then would miss entries of earlier terms not yet applied).
    /// Returns at once otherwise: a command then runs, or is refused.
    pub async fn wait_readable(&self) {
        loop {
            let readable = self.driver.borrow().readable();
            let Err(NotReady::Catching { noop }) = readable else {
                return;
            };
            if self.applied.wait_for(noop.index.0).await.is_err() {
                return;
            }
        }
    }

    /// Waits until every entry proposed so far is applied, so that a read
    /// of the whole key space (DBSIZE, KEYS, SCAN, RANDOMKEY) sees them.
    pub async fn wait_settled(&self) {
        self.wait_readable().await;
        loop {
            let Some(last) = self.driver.borrow().overlay_last() else {
                return;
            };
            if self.applied.wait_for(last.index.0).await.is_err() {
                return;
            }
        }
    }

    /// Waits until a reply that depends on entry `wait_for` may be
    /// released: the entry itself committed. Fails with `-TRYAGAIN` if
    /// another entry committed at its index, and with an error if the shard
    /// stopped.
    pub async fn acknowledged(
        &self,
        wait_for: Option<EntryId>,
        confirm: bool,
    ) -> Result<(), Reply> {
        let stopped = |reason: String| {
            Reply::Error(format!(
                "ERR the write may not be durable, the shard stopped: {reason}"
            ))
        };
        let index = match wait_for {
            None => {
                if let Some(reason) = self.durable.failure() {
                    return Err(stopped(reason));
                }
                self.applied.get()
            }
            Some(id) => {
                self.applied.wait_for(id.index.0).await.map_err(stopped)?;
                let outcome = self.driver.borrow().outcome(id);
                match outcome.expect("the entry's index is applied") {
                    Ok(()) => id.index.0,
                    Err(superseded) => {
                        return Err(try_again(
                            self.id,
                            &format!("entry {} was superseded at its index (term {:?} committed there); it may not have taken effect", superseded.entry, superseded.committed.map(|term| term.0)),
                        ))
                    }
                }
            }
        };
        if confirm {
            self.confirm_leadership().await?;
        }
        if let Some(observer) = &self.settings.observer {
            observer.acknowledged(self.id, index);
        }
        Ok(())
    }

    pub fn count(&self) -> u64 {
        self.driver.borrow().keyspace().len() as u64
    }

    pub fn random_key(&self, pick: u64, now_unix_ms: u64) -> Option<Vec<u8>> {
        self.driver
            .borrow()
            .keyspace()
            .random_key(pick, now_unix_ms)
    }

    pub fn keys(&self, pattern: &[u8], now_unix_ms: u64) -> Vec<Vec<u8>> {
        self.driver.borrow().keyspace().keys(pattern, now_unix_ms)
    }

    pub fn scan(
        &self,
        cursor: u64,
        count: usize,
        pattern: Option<&[u8]>,
        now_unix_ms: u64,
    ) -> (u64, Vec<Vec<u8>>) {
        self.driver
            .borrow()
            .keyspace()
            .scan(cursor, count, pattern, now_unix_ms)
    }

    /// Removes every key through the log; returns the entry to wait for.
    pub fn flush_all(&self) -> Result<Option<EntryId>, Reply> {
        if let Some(reply) = self.refusal() {
            return Err(reply);
        }
        let empty = {
            let driver = self.driver.borrow();
            driver.keyspace().is_empty() && driver.overlay_last().is_none()
        };
        if empty {
            return Ok(None);
        }
        self.propose(Operation::FlushAll).map(Some)
    }

    /// One active-expiry pass (the leader's only: its deletes are proposals,
    /// so that replicas and replays remove the keys at the same point).
    /// Returns how many were removed.
    fn expire_pass(&self, now_unix_ms: u64) -> usize {
        if self.refusal().is_some() {
            return 0;
        }
        let keys: Vec<Vec<u8>> = {
            let driver = self.driver.borrow();
            let observed = Cell::new(None);
            let view = driver.view(&observed);
            // A key the overlay rewrote is the overlay's to decide.
            driver
                .keyspace()
                .expired_keys(now_unix_ms, EXPIRE_KEYS_PER_PASS_MAX)
                .into_iter()
                .filter(|key| view.record(key).is_some() && view.get(key, now_unix_ms).is_none())
                .collect()
        };
        let removed = keys.len();
        if removed > 0 && self.propose(Operation::Delete { keys }).is_ok() {
            NodeMetrics::add(&self.settings.metrics.expired_keys, removed as u64);
            return removed;
        }
        0
    }

    /// One wake-up of active expiry: passes until one finds fewer keys than
    /// a pass may remove, at most [`EXPIRE_PASSES_PER_WAKE_MAX`], letting
    /// other tasks run between passes. Returns the keys removed.
    pub async fn expire_due<I: NodeIo>(&self, io: &I) -> usize {
        let mut removed = 0;
        for passes in 0..EXPIRE_PASSES_PER_WAKE_MAX {
            if passes > 0 {
                futures_lite::future::yield_now().await;
            }
            self.wait_for_room().await;
            let pass = self.expire_pass(io.now_unix_ms());
            removed += pass;
            if pass < EXPIRE_KEYS_PER_PASS_MAX {
                break;
            }
        }
        removed
    }

    pub fn stats(&self) -> ShardStats {
        let driver = self.driver.borrow();
        let keyspace = driver.keyspace();
        let snapshot = self.snapshot.borrow();
        ShardStats {
            shard: self.id,
            keys: keyspace.len() as u64,
            expires: keyspace.expires_len() as u64,
            data_bytes: keyspace.data_bytes() as u64,
            last_index: driver.group().last().index.0,
            durable_index: self.durable.get(),
            applied_index: driver.applied().index.0,
            term: driver.group().term().0,
            snapshot_index: snapshot.index,
            snapshot_unix_ms: snapshot.unix_ms,
            snapshot_bytes: snapshot.bytes,
            snapshot_pause_us_last: snapshot.pause_us_last,
            wal_bytes_since_snapshot: snapshot.wal_bytes_since,
            failure: self.durable.failure(),
            commit_index: driver.group().commit().index.0,
            followers: self.follower_lags(),
        }
    }

    /// On the leader, how far each follower is behind (INFO, metrics).
    fn follower_lags(&self) -> Vec<FollowerLag> {
        let driver = self.driver.borrow();
        let group = driver.group();
        let last = group.last().index.0;
        group
            .followers()
            .into_iter()
            .map(|(member, matched)| FollowerLag {
                member: MemberId(member.0),
                match_index: matched.index.0,
                lag_entries: last.saturating_sub(matched.index.0),
                lag_bytes: group.bytes_after(matched.index),
            })
            .collect()
    }

    /// The newest committed entry.
    pub fn commit(&self) -> EntryId {
        self.driver.borrow().group().commit()
    }

    /// How many followers hold entry `id` (WAIT's count): 0 unless this
    /// node leads, in `id`'s term.
    pub fn replicas_holding(&self, id: EntryId) -> usize {
        let driver = self.driver.borrow();
        driver
            .group()
            .followers()
            .iter()
            .filter(|(_, matched)| matched.index >= id.index && matched.term >= id.term)
            .count()
    }

    /// Asks the driver task to sync what is queued and stop.
    pub fn stop(&self) {
        self.stopping.set(true);
        self.wake_driver.raise();
    }

    /// Ticks the group at `now_ms` (the node's monotonic clock): an
    /// election, a heartbeat, whatever is due.
    pub fn tick(&self, now_ms: u64) {
        self.step_at(now_ms, Input::Tick);
    }

    fn step<I: NodeIo>(&self, io: &I, input: Input) {
        self.step_at(io.monotonic_us() / 1_000, input);
    }

    fn step_at(&self, now_ms: u64, input: Input) {
        self.clock_ms.set(now_ms);
        self.driver.borrow_mut().step(now_ms, input);
        self.report_queued_durable(now_ms);
        self.after_step();
    }

    /// The driver task: ticks the group at its deadlines and carries out
    /// its writes, one WAL write and one fdatasync for everything queued
    /// meanwhile (group commit). Returns when stopped, or with the error
    /// after which the shard refuses everything (the kernel may have
    /// dropped the pages: no retry).
    pub async fn run_driver<I: NodeIo>(
        self: Rc<Shard>,
        io: I,
        mut wal: Wal<I::Storage>,
        storage: I::Storage,
    ) -> Result<(), ShardFailure> {
        let result = self.drive(&io, &mut wal, &storage).await;
        if let Err(error) = &result {
            self.durable.fail(error.to_string());
            self.applied.fail(error.to_string());
        }
        result
    }

    async fn drive<I: NodeIo>(
        self: &Rc<Shard>,
        io: &I,
        wal: &mut Wal<I::Storage>,
        storage: &I::Storage,
    ) -> Result<(), ShardFailure> {
        loop {
            self.step(io, Input::Tick);
            self.balance_leadership(io.monotonic_us() / 1_000);
            if !self.driver.borrow().has_writes() {
                // Between batches every write taken is durable: what waited
                // for the last sync may go.
                let waiting = std::mem::take(&mut *self.awaiting_sync.borrow_mut());
                for message in waiting {
                    self.send_to_peer(message);
                }
                if self.stopping.get() {
                    return Ok(());
                }
                self.sleep_until_due(io).await;
                continue;
            }
            let mut staged = Staged::default();
            if let FsyncPolicy::IntervalMs(ms) = self.settings.fsync {
                let due_us = io.monotonic_us() + ms * 1_000;
                self.stage_until(io, wal, storage, due_us, &mut staged)
                    .await?;
            }
            // Let every task that is ready (other connections' commands) run
            // first, so that they join this batch rather than the next.
            futures_lite::future::yield_now().await;
            let bytes = self.write_batch(io, wal, storage, staged).await?;
            self.after_commit(io, wal, storage, bytes).await?;
        }
    }

    /// Hands leadership to the shard's preferred leader when this node
    /// leads in its place and the preferred one holds the whole log (so
    /// it is up and the hand-over is short): after a failover, leadership
    /// returns, and every member leads its share of the shards. At most
    /// once per [`LEADERSHIP_BALANCE_INTERVAL_MS`].
    fn balance_leadership(&self, now_ms: u64) {
        let Some(preferred) = self.settings.preferred_leader else {
            return;
        };
        if now_ms < self.next_balance_ms.get() {
            return;
        }
        self.next_balance_ms
            .set(now_ms + LEADERSHIP_BALANCE_INTERVAL_MS);
        let caught_up = {
            let driver = self.driver.borrow();
            let group = driver.group();
            group.role() == Role::Leader
                && group.id() != preferred
                && group
                    .followers()
                    .iter()
                    .any(|(id, matched)| *id == preferred && *matched == group.last())
        };
        if caught_up {
            tracing::info!(shard = self.id, to = %preferred, "handing leadership to the shard's preferred leader");
            self.step_at(now_ms, Input::TransferLeadership { to: preferred });
        }
    }

    /// Sleeps until woken (new writes, a stop) or the group's next deadline.
    async fn sleep_until_due<I: NodeIo>(&self, io: &I) {
        let now_ms = io.monotonic_us() / 1_000;
        let due_ms = self
            .driver
            .borrow()
            .group()
            .next_deadline_ms()
            .unwrap_or(u64::MAX)
            .min(now_ms + TICK_INTERVAL_MS_MAX);
        let pause = std::time::Duration::from_millis(due_ms.saturating_sub(now_ms));
        futures_lite::future::or(self.wake_driver.wait(), io.sleep(pause)).await;
        // A sleep that ends at once (a clock standing still in tests) must
        // not starve the other tasks.
        futures_lite::future::yield_now().await;
    }

    /// Writes what the first tick queued (a new term and its no-op) and
    /// commits it, before the node serves: the restored entries are then
    /// applied, and every shard is ready when the node says it is.
    pub async fn commit_start<I: NodeIo>(
        &self,
        io: &I,
        wal: &mut Wal<I::Storage>,
        storage: &I::Storage,
    ) -> Result<(), ShardFailure> {
        self.write_batch(io, wal, storage, Staged::default())
            .await?;
        assert_eq!(
            self.driver.borrow().readable(),
            Ok(()),
            "a group of one serves once its no-op is durable"
        );
        Ok(())
    }

    /// Under `--fsync interval-ms`, until the sync is due (at `due_us` or
    /// sooner, [`Shard::interval_sync_due`]): hands the writes queued to
    /// the WAL every [`INTERVAL_STAGE_MS`], so that the sync finds them
    /// encoded. Encoding a whole interval's
    /// entries at once held the core for 5-60 ms (docs/PERFORMANCE.md).
    async fn stage_until<I: NodeIo>(
        &self,
        io: &I,
        wal: &mut Wal<I::Storage>,
        storage: &I::Storage,
        due_us: u64,
        staged: &mut Staged,
    ) -> Result<(), ShardFailure> {
        loop {
            let now_us = io.monotonic_us();
            if self.interval_sync_due(now_us, due_us) {
                return Ok(());
            }
            let pause_us = (due_us - now_us).min(INTERVAL_STAGE_MS * 1_000);
            io.sleep(std::time::Duration::from_micros(pause_us)).await;
            self.report_unreported();
            let writes = self.driver.borrow_mut().take_writes();
            if !writes.is_empty() {
                self.syncing.set(true);
                self.stage(io, wal, storage, writes, staged, false).await?;
            }
        }
    }

    /// Carries out the writes queued so far (after those `staged` before),
    /// syncs them, and tells the group (and the messages waiting for that
    /// sync). Returns the WAL bytes written.
    async fn write_batch<I: NodeIo>(
        &self,
        io: &I,
        wal: &mut Wal<I::Storage>,
        storage: &I::Storage,
        mut staged: Staged,
    ) -> Result<u64, ShardFailure> {
        self.report_unreported();
        let writes = self.driver.borrow_mut().take_writes();
        let waiting = std::mem::take(&mut *self.awaiting_sync.borrow_mut());
        self.syncing.set(true);
        let written = async {
            self.stage(io, wal, storage, writes, &mut staged, true)
                .await?;
            let started = io.monotonic_us();
            let durable = wal.sync().await?;
            // Only the planted bug holds entries back: they reach the WAL now
            // and its next sync, but the group hears they are durable at once.
            let held_back = std::mem::take(&mut staged.held_back);
            staged.bytes += append_entries(wal, &held_back)?;
            self.settings
                .metrics
                .fsync_us
                .observe(io.monotonic_us().saturating_sub(started));
            Ok::<_, ShardFailure>(durable)
        }
        .await;
        self.syncing.set(false);
        let durable = written?;
        if staged.entries > 0 {
            self.settings.metrics.batch_entries.observe(staged.entries);
        }
        NodeMetrics::add(&self.settings.metrics.writes, staged.entries);
        NodeMetrics::add(&self.settings.metrics.wal_bytes, staged.bytes);
        self.unsynced_bytes.set(
            self.unsynced_bytes
                .get()
                .saturating_sub(staged.payload_bytes),
        );
        self.durable.advance(durable.0.max(self.durable.get()));
        if let Some(last) = staged.last {
            self.clock_ms.set(io.monotonic_us() / 1_000);
            self.driver.borrow_mut().durable(self.clock_ms.get(), last);
        }
        self.after_step();
        for message in waiting {
            self.send_to_peer(message);
        }
        Ok(staged.bytes)
    }

    /// Makes a snapshot the leader sent this shard's, durably: the file,
    /// then the WAL after it. The log keeps the entries after the snapshot
    /// only if it holds the snapshot's last entry (§5.1, the rule the group
    /// applied); otherwise it starts over after it.
    async fn install<I: NodeIo>(
        &self,
        io: &I,
        wal: &mut Wal<I::Storage>,
        storage: &I::Storage,
        snapshot: &snapshot::Loaded<Vec<u8>>,
    ) -> Result<(), ShardFailure> {
        snapshot::store(storage, snapshot).await?;
        let meta = snapshot.meta();
        if log_holds(wal, meta.last_index, meta.last_term) {
            wal.remove_below(meta.last_index.next()).await?;
        } else {
            wal.restart_after(meta.last_index, meta.last_term).await?;
        }
        tracing::info!(
            shard = self.id,
            index = meta.last_index.0,
            term = meta.last_term.0,
            keys = snapshot.keys(),
            "installed the leader's snapshot"
        );
        let mut state = self.snapshot.borrow_mut();
        state.index = meta.last_index.0;
        state.unix_ms = Some(io.now_unix_ms());
        state.bytes = snapshot.bytes().len() as u64;
        state.wal_bytes_since = 0;
        Ok(())
    }

    /// Carries out `writes` in order, short of the sync. Entries go to the
    /// WAL [`STAGE_ENTRIES_MAX`] at a time, other tasks running between.
    /// On the stage before a sync (`before_sync`), the planted bug
    /// `lose-batch-tail` holds back the tail of its last entries.
    async fn stage<I: NodeIo>(
        &self,
        io: &I,
        wal: &mut Wal<I::Storage>,
        storage: &I::Storage,
        writes: Vec<Write>,
        staged: &mut Staged,
        before_sync: bool,
    ) -> Result<(), ShardFailure> {
        let writes = coalesce_entries(writes);
        let last_write = writes.len().saturating_sub(1);
        // In order: a cut or an installed snapshot applies to the entries
        // appended before it, and the entries after it follow it.
        for (position, write) in writes.into_iter().enumerate() {
            match write {
                Write::HardState(hard) => {
                    hard_state::store(storage, hard).await?;
                    if let Some(observer) = &self.settings.observer {
                        observer.hard_state_durable(self.id, hard);
                    }
                }
                Write::Cut { after, floor } => wal.cut_after(after.index, floor).await?,
                Write::Snapshot(snapshot) => self.install(io, wal, storage, &snapshot).await?,
                Write::Entries(mut batch) => {
                    let keep = if before_sync && position == last_write {
                        batch.len() - held_back_entries(batch.len())
                    } else {
                        batch.len()
                    };
                    staged.held_back = batch.split_off(keep);
                    for (number, chunk) in batch.chunks(STAGE_ENTRIES_MAX).enumerate() {
                        if number > 0 {
                            futures_lite::future::yield_now().await;
                        }
                        staged.bytes += append_entries(wal, chunk)?;
                    }
                    staged.entries += (batch.len() + staged.held_back.len()) as u64;
                    staged.payload_bytes += batch
                        .iter()
                        .chain(&staged.held_back)
                        .map(payload_len)
                        .sum::<u64>();
                    if let Some(last) = staged.held_back.last().or(batch.last()) {
                        staged.last = Some(last.id);
                    }
                }
            }
        }
        Ok(())
    }

    /// Snapshot and compaction bookkeeping between group commits.
    async fn after_commit<I: NodeIo>(
        self: &Rc<Shard>,
        io: &I,
        wal: &mut Wal<I::Storage>,
        storage: &I::Storage,
        bytes: u64,
    ) -> Result<(), ShardFailure> {
        if let Some(error) = self.snapshot.borrow_mut().removal_failed.take() {
            return Err(error.into());
        }
        let (start, compacted) = {
            let mut state = self.snapshot.borrow_mut();
            state.wal_bytes_since += bytes;
            let start = !state.in_progress
                && snapshot_due(
                    state.wal_bytes_since,
                    self.settings.snapshot_wal_bytes,
                    state.bytes,
                );
            (start, state.compacted.take())
        };
        if let Some(last) = compacted {
            let detached = wal.detach_below(last.index.next())?;
            self.remove_segments(io, storage.clone(), detached);
            let newer = last.index > self.driver.borrow().group().snapshot().last.index;
            if let (true, Some(data)) = (newer, self.snapshot_for_peers(storage, last)?) {
                let membership = self.membership_at(last);
                let meta = SnapshotMeta { last, membership };
                self.step(io, Input::Compacted { meta, data });
                let compacted = self.driver.borrow_mut().take_compacted();
                free_in_slices(io, compacted);
            }
        }
        if start {
            self.start_snapshot(io, storage.clone());
        }
        Ok(())
    }

    /// Removes the WAL segment files compaction took out of the log, in a
    /// task of its own: the next batch does not wait for the unlinks and
    /// the directory's sync (10.5 ms for one 64 MiB segment here,
    /// docs/PERFORMANCE.md). A crash before they are gone leaves them below
    /// the snapshot, which the next start reads past.
    fn remove_segments<I: NodeIo>(
        self: &Rc<Shard>,
        io: &I,
        storage: I::Storage,
        names: Vec<String>,
    ) {
        if names.is_empty() {
            return;
        }
        let shard = Rc::clone(self);
        io.spawn(async move {
            if let Err(error) = keel_wal::remove_segment_files(&storage, &names).await {
                tracing::error!(shard = shard.id, %error, "cannot remove compacted WAL segments; the shard stops");
                shard.snapshot.borrow_mut().removal_failed = Some(error);
                shard.wake_driver.raise();
            }
        });
    }

    /// What the group holds of the snapshot through `last` to send a
    /// follower that needs it: the file's bytes (`None` if a leader's
    /// snapshot installed since replaced it); nothing in a group of one,
    /// which has no follower.
    fn snapshot_for_peers<S: keel_wal::Storage>(
        &self,
        storage: &S,
        last: EntryId,
    ) -> Result<Option<Vec<u8>>, ShardFailure> {
        if !self.driver.borrow().has_peers() {
            return Ok(Some(Vec::new()));
        }
        let newest = snapshot::load_newest(storage)?;
        Ok(newest
            .filter(|loaded| loaded.meta().last_index == last.index)
            .map(|loaded| loaded.bytes().to_vec()))
    }

    fn membership_at(&self, last: EntryId) -> Membership {
        self.driver.borrow().group().membership_at(last.index).1
    }

    /// Starts a snapshot in the background; the driver task goes on.
    fn start_snapshot<I: NodeIo>(self: &Rc<Shard>, io: &I, storage: I::Storage) {
        let start = self.driver.borrow().applied();
        {
            let mut state = self.snapshot.borrow_mut();
            state.in_progress = true;
            state.wal_bytes_since = 0;
        }
        let (shard, io) = (Rc::clone(self), io.clone());
        let now = io.now_unix_ms();
        io.clone().spawn(async move {
            let result = shard.write_snapshot(&io, storage, start).await;
            let mut state = shard.snapshot.borrow_mut();
            state.in_progress = false;
            match result {
                Ok((written, pause_us)) => {
                    tracing::info!(shard = shard.id, index = start.index.0, keys = written.keys, bytes = written.bytes, pause_us_max = pause_us, file = %written.file, "snapshot written");
                    NodeMetrics::add(&shard.settings.metrics.snapshots, 1);
                    state.index = start.index.0;
                    state.unix_ms = Some(now);
                    state.bytes = written.bytes;
                    state.pause_us_last = pause_us;
                    state.compacted = Some(start);
                }
                Err(reason) => tracing::error!(shard = shard.id, index = start.index.0, %reason, "snapshot failed; the WAL is kept"),
            }
        });
    }

    /// Writes a fuzzy snapshot of the committed key space tagged `start`
    /// (the last entry applied): one key-space partition at a time, letting
    /// commands run between partitions, so the pause is one partition's
    /// encoding, not the shard's. Entries applied meanwhile may or may not
    /// be in it; since every operation is a blind write (see
    /// [`crate::operation`]), replaying the log from `start.index + 1` over
    /// it gives the exact state. Returns what was written and the longest
    /// pause.
    async fn write_snapshot<I: NodeIo>(
        &self,
        io: &I,
        storage: I::Storage,
        start: EntryId,
    ) -> Result<(snapshot::Written, u64), String> {
        let meta = snapshot::SnapshotMeta {
            shard: self.id,
            last_index: start.index,
            last_term: start.term,
        };
        let mut writer = snapshot::SnapshotWriter::create(storage, meta)
            .await
            .map_err(|error| error.to_string())?;
        let partitions = self.driver.borrow().keyspace().partition_count();
        let mut pause_us_max = 0;
        for partition in 0..partitions {
            let started = io.monotonic_us();
            for (key, value, expire_at_unix_ms) in
                self.driver.borrow().keyspace().partition_items(partition)
            {
                writer.push(key, value, expire_at_unix_ms);
            }
            let pause_us = io.monotonic_us().saturating_sub(started);
            self.settings.metrics.snapshot_pause_us.observe(pause_us);
            pause_us_max = pause_us_max.max(pause_us);
            if writer.buffered_bytes() >= snapshot::SNAPSHOT_CHUNK_BYTES {
                writer.flush().await.map_err(|error| error.to_string())?;
            }
            futures_lite::future::yield_now().await;
        }
        // The snapshot may reflect entries applied up to now: they must be
        // durable here before the snapshot can stand in for the log before
        // it (with `--fsync interval-ms` they were committed before their
        // fsync).
        let applied = self.driver.borrow().applied().index.0;
        self.durable.wait_for(applied).await?;
        let written = writer.finish().await.map_err(|error| error.to_string())?;
        Ok((written, pause_us_max))
    }
}

/// `writes` with each run of entry writes made one (one append batch).
fn coalesce_entries(writes: Vec<Write>) -> Vec<Write> {
    let mut out: Vec<Write> = Vec::with_capacity(writes.len());
    for write in writes {
        match (out.last_mut(), write) {
            (Some(Write::Entries(run)), Write::Entries(more)) => run.extend(more),
            (_, write) => out.push(write),
        }
    }
    out
}

/// Bytes of an entry's payload (a no-op has none).
fn payload_len(entry: &keel_replication::Entry) -> u64 {
    match &entry.payload {
        keel_replication::EntryPayload::Command(bytes) => bytes.len() as u64,
        _ => 0,
    }
}

/// Hands `entries` to the WAL, each as a frame of its own term: a command's
/// payload is its encoded operation, a no-op's payload is empty (no
/// operation encodes to nothing). Returns their bytes.
fn append_entries<S: keel_wal::Storage>(
    wal: &mut Wal<S>,
    entries: &[keel_replication::Entry],
) -> Result<u64, WalError> {
    let mut bytes = 0;
    for entry in entries {
        let payload: &[u8] = match &entry.payload {
            keel_replication::EntryPayload::Command(bytes) => bytes,
            keel_replication::EntryPayload::Noop => &[],
            keel_replication::EntryPayload::Membership(_) => {
                panic!("membership entries are not logged in a group of one")
            }
        };
        let index = wal.append(entry.id.term, payload)?;
        assert_eq!(
            index, entry.id.index,
            "the WAL numbers entries as the group did"
        );
        bytes += keel_wal::frame::frame_bytes(payload.len()) as u64;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::io;

    use futures_lite::future;
    use keel_wal::memory::CrashMode;
    use keel_wal::WalOptions;

    use super::*;
    use crate::config::FsyncPolicy;
    use crate::keyspace::Keyspace;
    use crate::node::io::Connection;
    use crate::node::test_io::{recover_one_shard, MemIo};
    use crate::node::{group_of_one, Committer, THIS_NODE};
    use keel_replication::{Config, Restored};
    use keel_wal::{LogIndex, MemStorage};

    /// No connection is ever accepted in these tests.
    enum NoConnection {}

    impl Connection for NoConnection {
        async fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
            match *self {}
        }
        async fn write_all(&mut self, _buf: &[u8]) -> io::Result<()> {
            match *self {}
        }
        fn peer(&self) -> String {
            match *self {}
        }
    }

    type TestIo = MemIo<NoConnection>;

    #[derive(Debug, PartialEq, Eq)]
    enum Event {
        Restored { last_index: u64 },
        Recovered { last_index: u64, keys: usize },
        Logged { index: u64, op: Operation },
        Applied { index: u64, op: Operation },
        Acknowledged { index: u64 },
    }

    #[derive(Debug, Default)]
    struct Recorder {
        events: RefCell<Vec<Event>>,
    }

    impl ShardObserver for Recorder {
        fn restored(&self, _shard: u32, last_index: u64) {
            self.events
                .borrow_mut()
                .push(Event::Restored { last_index });
        }
        fn recovered(&self, _shard: u32, last_index: u64, keyspace: &Keyspace) {
            let keys = keyspace.items().count();
            self.events
                .borrow_mut()
                .push(Event::Recovered { last_index, keys });
        }
        fn logged(&self, _shard: u32, index: u64, op: &Operation) {
            self.events.borrow_mut().push(Event::Logged {
                index,
                op: op.clone(),
            });
        }
        fn applied(&self, _shard: u32, index: u64, op: &Operation) {
            self.events.borrow_mut().push(Event::Applied {
                index,
                op: op.clone(),
            });
        }
        fn acknowledged(&self, _shard: u32, index: u64) {
            self.events.borrow_mut().push(Event::Acknowledged { index });
        }
    }

    fn settings(observer: Option<Rc<dyn ShardObserver>>) -> ShardSettings {
        ShardSettings {
            limits: Limits::default(),
            payload_bytes_max: WalOptions::test_min().payload_bytes_max as usize,
            fsync: FsyncPolicy::Always,
            snapshot_wal_bytes: u64::MAX,
            unsynced_entries_max: UNSYNCED_ENTRIES_MAX,
            unsynced_bytes_max: UNSYNCED_BYTES_MAX,
            metrics: Arc::default(),
            observer,
            outside: None,
            preferred_leader: None,
        }
    }

    /// A shard of a group of one, fresh or over `keyspace`, whose no-op
    /// committed, with no WAL: `commit_all` stands in for the driver task.
    fn ready_shard(keyspace: Keyspace, settings: ShardSettings) -> Shard {
        let restored = Restored {
            snapshot: keel_replication::SnapshotMeta {
                last: EntryId::ZERO,
                membership: group_of_one(),
            },
            ..Restored::default()
        };
        let driver = Driver::new(
            Config::new(THIS_NODE, 0),
            restored,
            keyspace,
            0,
            settings.observer.clone(),
        );
        let shard = Shard::new(0, driver, 0, 0, settings);
        shard.tick(0);
        commit_all(&shard);
        assert_eq!(shard.refusal(), None, "the leader's no-op committed");
        shard
    }

    /// Takes every queued write as if synced, and reports it durable.
    fn commit_all(shard: &Shard) {
        {
            let mut driver = shard.driver.borrow_mut();
            let last = driver.group().last();
            driver.take_writes();
            driver.durable(0, last);
        }
        shard.after_step();
    }

    /// One turn of the driver task: the queued writes into the WAL, synced.
    fn sync_once(shard: &Shard, io: &TestIo, wal: &mut Wal<MemStorage>) {
        future::block_on(shard.write_batch(io, wal, &io.disk, Staged::default()))
            .expect("the batch is written");
    }

    fn set(shard: &Shard, key: &str) -> EntryId {
        let args = [b"SET".to_vec(), key.as_bytes().to_vec(), b"v".to_vec()];
        let executed = shard.execute(&args, 0);
        assert_eq!(executed.reply, Reply::ok());
        executed.wait_for.expect("a write waits for its entry")
    }

    /// A recovered shard of one core over `io`'s disk with its WAL, its
    /// no-op synced and committed.
    fn recovered_shard(io: &TestIo, fsync: FsyncPolicy) -> (Rc<Shard>, Wal<MemStorage>) {
        let recovered = recover_one_shard(io.clone(), fsync);
        let Committer { shard, mut wal, .. } =
            recovered.committers.into_iter().next().expect("one shard");
        sync_once(&shard, io, &mut wal);
        assert_eq!(shard.refusal(), None, "the leader's no-op committed");
        (shard, wal)
    }

    /// Four SETs in one group commit, acknowledged, then a power loss:
    /// returns whether the acknowledgement came and the last entry recovered.
    fn commit_four_and_crash() -> (Result<(), Reply>, LogIndex) {
        let io = TestIo::default();
        let (shard, mut wal) = recovered_shard(&io, FsyncPolicy::Always);
        let ids: Vec<EntryId> = (1..=4).map(|key| set(&shard, &key.to_string())).collect();
        assert_eq!(
            ids.iter().map(|id| id.index.0).collect::<Vec<_>>(),
            [2, 3, 4, 5],
            "after the no-op"
        );
        assert!(
            future::block_on(future::poll_once(shard.acknowledged(Some(ids[3]), false))).is_none()
        );
        sync_once(&shard, &io, &mut wal);
        let acknowledged = future::block_on(shard.acknowledged(Some(ids[3]), false));
        io.disk.crash(1);
        let recovered = future::block_on(Wal::open(io.disk.clone(), WalOptions::test_min()))
            .expect("the WAL reopens after a power loss");
        (acknowledged, recovered.0.last_index())
    }

    /// Compaction through a snapshot whose last entry ends a segment leaves
    /// a log that starts with the next entry; reopened, it no longer knows
    /// the term before it. It still holds the snapshot's entry (and no
    /// other): recovery once started such a log over, dropping committed
    /// entries (simulator seed 33 of three nodes).
    #[test]
    fn a_log_compacted_through_the_snapshot_holds_its_entry_after_a_reopen() {
        let disk = MemStorage::new();
        let open = || {
            future::block_on(Wal::open(disk.clone(), WalOptions::test_min()))
                .expect("the log opens")
                .0
        };
        let mut wal = open();
        let payload = vec![7u8; 1500];
        while wal.log_map().segments.len() < 3 {
            wal.append(Term(2), &payload).expect("appended");
            future::block_on(wal.sync()).expect("synced");
        }
        let snapshot_last = wal.log_map().segments[1]
            .first_index
            .prev()
            .expect("a second segment starts past entry 1");
        future::block_on(wal.remove_below(snapshot_last.next())).expect("compacted");
        assert_eq!(wal.first_index(), snapshot_last.next());
        assert!(log_holds(&wal, snapshot_last, Term(2)));
        drop(wal);
        let wal = open();
        assert_eq!(wal.first_index(), snapshot_last.next());
        assert!(log_holds(&wal, snapshot_last, Term(2)), "after a reopen");
        assert!(
            !log_holds(&wal, snapshot_last.next(), Term(1)),
            "an entry of another term"
        );
        assert!(
            !log_holds(&wal, wal.last_index().next(), Term(2)),
            "past the log's end"
        );
    }

    #[test]
    fn a_snapshot_is_due_after_the_floor_or_the_last_snapshots_size() {
        let mib = 1 << 20;
        // A small key space: the floor decides.
        assert!(!snapshot_due(64 * mib - 1, 64 * mib, 10 * mib));
        assert!(snapshot_due(64 * mib, 64 * mib, 10 * mib));
        // A key space larger than the floor: its own size does.
        assert!(!snapshot_due(64 * mib, 64 * mib, 2048 * mib));
        assert!(snapshot_due(2048 * mib, 64 * mib, 2048 * mib));
        // No snapshot yet.
        assert!(snapshot_due(64 * mib, 64 * mib, 0));
    }

    #[test]
    fn a_group_commit_is_acknowledged_once_synced_and_survives_power_loss() {
        assert_eq!(commit_four_and_crash(), (Ok(()), LogIndex(5)));
    }

    #[test]
    fn the_observer_sees_recovery_applies_at_commit_and_acknowledgements() {
        let recorder = Rc::new(Recorder::default());
        let io = TestIo::watched(Rc::clone(&recorder) as Rc<dyn ShardObserver>);
        let (shard, mut wal) = recovered_shard(&io, FsyncPolicy::Always);
        let id = set(&shard, "k");
        assert!(future::block_on(future::poll_once(shard.acknowledged(Some(id), false))).is_none());
        assert_eq!(get(&shard, "k"), bulk("v"), "the overlay shows the write");
        assert_eq!(
            shard.count(),
            0,
            "the key space holds committed entries only"
        );
        sync_once(&shard, &io, &mut wal);
        future::block_on(shard.acknowledged(Some(id), false)).expect("committed");
        let set_k = Operation::Set {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            expire_at_unix_ms: None,
        };
        assert_eq!(
            *recorder.events.borrow(),
            vec![
                Event::Restored { last_index: 0 },
                Event::Logged {
                    index: 1,
                    op: Operation::Batch { ops: Vec::new() },
                },
                Event::Recovered {
                    last_index: 0,
                    keys: 0
                },
                Event::Applied {
                    index: 1,
                    op: Operation::Batch { ops: Vec::new() },
                },
                Event::Logged {
                    index: 2,
                    op: set_k.clone(),
                },
                Event::Applied {
                    index: 2,
                    op: set_k,
                },
                Event::Acknowledged { index: 2 },
            ]
        );
    }

    /// Entries a crash left in the WAL, never known committed, are applied
    /// when the restarted group of one commits them with its new term's
    /// no-op, which recovery writes before the node serves (the driver's
    /// tests show that nothing applies them before).
    #[test]
    fn a_restart_commits_the_uncommitted_tail_under_a_new_term_before_serving() {
        let recorder = Rc::new(Recorder::default());
        let io = TestIo::watched(Rc::clone(&recorder) as Rc<dyn ShardObserver>);
        let (shard, mut wal) = recovered_shard(&io, FsyncPolicy::Always);
        let id = set(&shard, "k");
        // The entry is durable, but the crash comes before its commit.
        let writes = shard.driver.borrow_mut().take_writes();
        let [Write::Entries(entries)] = &writes[..] else {
            panic!("one batch of entries: {writes:?}");
        };
        append_entries(&mut wal, entries).expect("appended");
        future::block_on(wal.sync()).expect("synced");
        assert_eq!(shard.count(), 0, "never committed before the crash");
        io.disk.crash(0);
        recorder.events.borrow_mut().clear();
        let recovered = recover_one_shard(io.clone(), FsyncPolicy::Always);
        let shard = Rc::clone(&recovered.committers[0].shard);
        assert_eq!(shard.refusal(), None, "the node serves once recovered");
        assert_eq!(
            shard.driver.borrow().applied(),
            EntryId::new(2, 3),
            "term 2's no-op"
        );
        assert_eq!(get(&shard, "k"), bulk("v"));
        assert_eq!(
            shard.driver.borrow().outcome(id),
            Some(Ok(())),
            "1.2 committed"
        );
        assert_eq!(
            *recorder.events.borrow(),
            vec![
                Event::Restored { last_index: 2 },
                Event::Logged {
                    index: 3,
                    op: Operation::Batch { ops: Vec::new() },
                },
                Event::Recovered {
                    last_index: 2,
                    keys: 1
                },
                Event::Applied {
                    index: 3,
                    op: Operation::Batch { ops: Vec::new() },
                },
            ]
        );
        assert_eq!(
            hard_state::load(&io.disk).expect("loads").term.0,
            2,
            "the new term is durable"
        );
    }

    /// Issue 10: under `--fsync interval-ms` the driver hands writes to
    /// the WAL during the interval (a stage), not a whole interval's at
    /// once; the sync at its end makes them and the later ones durable as
    /// one batch, and counts them once.
    #[test]
    fn entries_staged_during_an_interval_are_synced_as_one_batch() {
        let io = TestIo::default();
        let (shard, mut wal) = recovered_shard(&io, FsyncPolicy::IntervalMs(100));
        let durable_before = shard.stats().durable_index;
        let metrics = &shard.settings.metrics;
        let (batches_before, writes_before) = (
            metrics.batch_entries.count(),
            metrics.writes.load(std::sync::atomic::Ordering::Relaxed),
        );
        for key in ["a", "b", "c"] {
            set(&shard, key);
        }
        let mut staged = Staged::default();
        let writes = shard.driver.borrow_mut().take_writes();
        future::block_on(shard.stage(&io, &mut wal, &io.disk, writes, &mut staged, false))
            .expect("staged");
        assert_eq!(wal.last_index().0, durable_before + 3, "in the WAL");
        assert_eq!(wal.durable_index().0, durable_before, "not synced");
        assert_eq!(shard.stats().durable_index, durable_before);
        assert_eq!(
            (staged.entries, staged.last.map(|id| id.index.0)),
            (3, Some(durable_before + 3))
        );
        for key in ["d", "e"] {
            set(&shard, key);
        }
        let bytes = future::block_on(shard.write_batch(&io, &mut wal, &io.disk, staged))
            .expect("the batch is written");
        assert_eq!(shard.stats().durable_index, durable_before + 5);
        assert_eq!(wal.durable_index().0, durable_before + 5);
        assert_eq!(shard.unsynced_bytes.get(), 0, "every payload is synced");
        assert_eq!(
            metrics.batch_entries.count(),
            batches_before + 1,
            "one batch"
        );
        assert_eq!(
            metrics.writes.load(std::sync::atomic::Ordering::Relaxed),
            writes_before + 5
        );
        let logged: u64 = (durable_before + 1..=durable_before + 5)
            .map(|index| {
                let payload = future::block_on(wal.read_entry(LogIndex(index))).expect("read");
                keel_wal::frame::frame_bytes(payload.len()) as u64
            })
            .sum();
        assert_eq!(bytes, logged, "the WAL bytes of all five entries");
    }

    /// Issue 10: under `--fsync interval-ms` the sync is due at the
    /// interval's end, or sooner once the writes not yet durable reach half
    /// a limit (writers would otherwise wait out the rest of the interval
    /// at the limit); a sync makes it not due again.
    #[test]
    fn an_interval_sync_is_due_early_at_half_a_limit() {
        let io = TestIo::default();
        let (shard, mut wal) = recovered_shard(&io, FsyncPolicy::IntervalMs(1000));
        let shard = Rc::into_inner(shard).expect("the only handle");
        let mut settings = shard.settings.clone();
        settings.unsynced_entries_max = 8;
        let shard = Shard { settings, ..shard };
        let due_us = 1_000_000;
        assert!(!shard.interval_sync_due(0, due_us));
        assert!(
            shard.interval_sync_due(due_us, due_us),
            "the interval is over"
        );
        for key in ["a", "b", "c"] {
            set(&shard, key);
        }
        assert!(!shard.interval_sync_due(0, due_us), "3 of 8 entries");
        set(&shard, "d");
        assert!(shard.interval_sync_due(0, due_us), "4 of 8 entries: half");
        assert!(!shard.unsynced_full(), "writers do not wait yet");
        sync_once(&shard, &io, &mut wal);
        assert!(!shard.interval_sync_due(0, due_us), "synced");
    }

    /// Issue 9: with `--fsync interval-ms` replies wait for no sync, so
    /// writers could propose entries without bound while the disk lagged.
    #[test]
    fn writers_wait_for_a_sync_once_unsynced_entries_reach_a_limit() {
        // (entries limit, bytes limit, writes that fill it): each SET's
        // entry takes a little over 100 bytes.
        for (entries_max, bytes_max, fill) in [(4, u64::MAX, 4), (u64::MAX, 300, 3)] {
            let io = TestIo::default();
            let (shard, mut wal) = recovered_shard(&io, FsyncPolicy::IntervalMs(1));
            let shard = Rc::into_inner(shard).expect("the only handle");
            let mut settings = shard.settings.clone();
            settings.unsynced_entries_max = entries_max;
            settings.unsynced_bytes_max = bytes_max;
            let shard = Shard { settings, ..shard };
            let value = vec![b'v'; 100];
            for key in 0..fill {
                assert!(
                    future::block_on(future::poll_once(shard.wait_for_room())).is_some(),
                    "room before write {key}"
                );
                let args = [b"SET".to_vec(), key.to_string().into_bytes(), value.clone()];
                let executed = shard.execute(&args, 0);
                assert_eq!(executed.reply, Reply::ok());
                // What the shard's `report_writes` task does at its turn.
                shard.report_unreported();
                future::block_on(future::poll_once(
                    shard.acknowledged(executed.wait_for, false),
                ))
                .expect("interval-ms: committed before its sync")
                .expect("acknowledged");
            }
            assert!(
                future::block_on(future::poll_once(shard.wait_for_room())).is_none(),
                "{fill} unsynced writes fill the limits ({entries_max} entries, {bytes_max} bytes)"
            );
            sync_once(&shard, &io, &mut wal);
            assert!(future::block_on(future::poll_once(shard.wait_for_room())).is_some());
            assert_eq!(
                shard.stats().durable_index,
                fill + 1,
                "the no-op and every write"
            );
            assert_eq!(shard.count(), fill);
        }
    }

    /// Under `--fsync interval-ms` the proposals of one turn commit in one
    /// step of the group, taken by the reporting task once the commands
    /// ran, or by the driver before it takes the writes to the WAL.
    #[test]
    fn interval_proposals_are_reported_durable_together_before_their_sync() {
        let io = TestIo::default();
        let (shard, mut wal) = recovered_shard(&io, FsyncPolicy::IntervalMs(100));
        let acknowledged = |id| {
            future::block_on(future::poll_once(shard.acknowledged(Some(id), false)))
                .map(|acked| acked.expect("acknowledged"))
                .is_some()
        };
        let first: Vec<EntryId> = ["a", "b", "c"].iter().map(|key| set(&shard, key)).collect();
        assert!(
            first.iter().all(|id| !acknowledged(*id)),
            "nothing commits inside the commands"
        );
        let reporter = Rc::clone(&shard).report_writes();
        futures_lite::pin!(reporter);
        assert!(future::block_on(future::poll_once(reporter.as_mut())).is_none());
        assert!(
            first.iter().all(|id| acknowledged(*id)),
            "one report commits the turn's proposals, before any sync"
        );
        assert_eq!(shard.stats().durable_index, 1, "only the no-op is synced");
        let second = set(&shard, "d");
        assert!(!acknowledged(second));
        sync_once(&shard, &io, &mut wal);
        assert!(
            acknowledged(second),
            "the driver reports before it takes the writes"
        );
        assert_eq!(shard.stats().durable_index, 5);
    }

    /// Issue 9: the expiry task looped until a pass found fewer keys than
    /// a pass may take, never yielding, so a large backlog held the core.
    /// Each pass proposes its deletes and the next waits for their commit.
    #[test]
    fn active_expiry_yields_between_passes_and_stops_after_its_share() {
        let backlog = (EXPIRE_PASSES_PER_WAKE_MAX + 1) * EXPIRE_KEYS_PER_PASS_MAX + 5;
        let mut keyspace = Keyspace::new();
        for key in 0..backlog {
            keyspace.insert_loaded(key.to_string().as_bytes(), b"v", Some(0));
        }
        let shard = ready_shard(keyspace, settings(None));
        let io = TestIo::default();
        let mut wake = std::pin::pin!(shard.expire_due(&io));
        let mut polls = 0;
        let removed = loop {
            polls += 1;
            if let Some(removed) = future::block_on(future::poll_once(wake.as_mut())) {
                break removed;
            }
            commit_all(&shard);
            assert_eq!(
                shard.count() as usize,
                backlog - polls * EXPIRE_KEYS_PER_PASS_MAX,
                "one pass between yields"
            );
        };
        assert_eq!(polls, EXPIRE_PASSES_PER_WAKE_MAX);
        assert_eq!(
            removed,
            EXPIRE_PASSES_PER_WAKE_MAX * EXPIRE_KEYS_PER_PASS_MAX
        );
        commit_all(&shard);
        let mut rest = std::pin::pin!(shard.expire_due(&io));
        let removed_rest = loop {
            if let Some(removed) = future::block_on(future::poll_once(rest.as_mut())) {
                break removed;
            }
            commit_all(&shard);
        };
        assert_eq!(removed_rest, backlog - removed);
        commit_all(&shard);
        assert_eq!(shard.count(), 0);
    }

    fn words(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|word| word.as_bytes().to_vec()).collect()
    }

    fn get(shard: &Shard, key: &str) -> Reply {
        shard.execute(&words(&["GET", key]), 0).reply
    }

    fn bulk(value: &str) -> Reply {
        Reply::Bulk(value.as_bytes().to_vec())
    }

    /// A transaction's commands each see the writes before them, and their
    /// writes are one entry: a batch of every change, in order.
    #[test]
    fn exec_runs_the_commands_in_order_and_logs_their_writes_as_one_entry() {
        let recorder = Rc::new(Recorder::default());
        let shard = ready_shard(Keyspace::new(), settings(Some(recorder.clone())));
        set(&shard, "{t}old");
        let commands = [
            words(&["SET", "{t}a", "1"]),
            words(&["INCR", "{t}a"]),
            words(&["GET", "{t}a"]),
            words(&["RENAME", "{t}old", "{t}new"]),
            words(&["INCR", "{t}new"]),
        ];
        let executed = shard.exec(7, &commands, 0);
        assert_eq!(
            executed.reply,
            Reply::Array(vec![
                Reply::ok(),
                Reply::Integer(2),
                bulk("2"),
                Reply::ok(),
                Reply::Error("ERR value is not an integer or out of range".into()),
            ])
        );
        assert_eq!(
            executed.wait_for,
            Some(EntryId::new(1, 3)),
            "one entry after the no-op's and the SET's"
        );
        commit_all(&shard);
        let set_op = |key: &str, value: &str| SingleOp::Set {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            expire_at_unix_ms: None,
        };
        assert_eq!(
            recorder.events.borrow().last(),
            Some(&Event::Applied {
                index: 3,
                op: Operation::Batch {
                    ops: vec![
                        set_op("{t}a", "1"),
                        set_op("{t}a", "2"),
                        SingleOp::Delete {
                            keys: vec![b"{t}old".to_vec()]
                        },
                        set_op("{t}new", "v"),
                    ]
                }
            })
        );
        let reads = shard.exec(7, &[words(&["GET", "{t}new"])], 0);
        assert_eq!(reads.reply, Reply::Array(vec![bulk("v")]));
        assert_eq!(shard.last_index(), 3, "a transaction of reads logs nothing");
    }

    /// The transaction's entry is over the log's limit: none of its writes
    /// takes effect (values and expiry) and EXEC answers the error alone.
    #[test]
    fn exec_whose_entry_is_too_large_writes_nothing() {
        let mut settings = settings(None);
        settings.payload_bytes_max = 300;
        let shard = ready_shard(Keyspace::new(), settings);
        let args = words(&["SET", "{t}a", "old", "PX", "5000"]);
        assert_eq!(shard.execute(&args, 1_000).reply, Reply::ok());
        let value = "v".repeat(200);
        let commands = [
            words(&["SET", "{t}a", &value]),
            words(&["SET", "{t}b", &value]),
        ];
        let executed = shard.exec(7, &commands, 1_000);
        let Reply::Error(error) = executed.reply else {
            panic!("EXEC succeeded: {:?}", executed.reply);
        };
        assert!(error.starts_with("ERR write of "), "{error}");
        assert!(
            error.ends_with(" bytes exceeds the log's entry limit of 300 bytes"),
            "{error}"
        );
        assert_eq!(shard.last_index(), 2, "nothing logged after the SET");
        commit_all(&shard);
        assert_eq!(
            shard
                .driver
                .borrow()
                .keyspace()
                .record(b"{t}a")
                .map(|item| (item.value.to_vec(), item.expire_at_unix_ms)),
            Some((b"old".to_vec(), Some(6_000)))
        );
        assert_eq!(shard.driver.borrow().keyspace().record(b"{t}b"), None);
        assert_eq!(shard.count(), 1);
    }

    /// WATCH by one connection, a write by another: the watcher's EXEC runs
    /// nothing; EXEC unwatched, so its next one runs.
    #[test]
    fn exec_after_a_watched_key_changed_answers_null_and_writes_nothing() {
        let shard = ready_shard(Keyspace::new(), settings(None));
        shard.watch(1, &words(&["k"]), 0);
        shard.watch(2, &words(&["other"]), 0);
        set(&shard, "k");
        let commands = [words(&["SET", "k", "mine"])];
        assert_eq!(shard.exec(1, &commands, 0).reply, Reply::NullArray);
        assert_eq!(get(&shard, "k"), bulk("v"));
        assert_eq!(shard.last_index(), 2);
        assert_eq!(
            shard.exec(2, &commands, 0).reply,
            Reply::Array(vec![Reply::ok()])
        );
        assert_eq!(
            shard.exec(1, &commands, 0).reply,
            Reply::Array(vec![Reply::ok()])
        );
        assert_eq!(get(&shard, "k"), bulk("mine"));
    }

    /// The keys a transaction wrote, read after a power loss that followed
    /// its write to the WAL and either its sync (`synced`) or a failed one.
    /// The entry spans several 512-byte sectors, so a random crash keeps
    /// some of its sectors and tears or drops others.
    fn transaction_after_power_loss(synced: bool, seed: u64, mode: CrashMode) -> Vec<Reply> {
        let keys = ["{t}a", "{t}b", "{t}c", "{t}d"];
        let value = "x".repeat(700);
        let io = TestIo::default();
        let (shard, mut wal) = recovered_shard(&io, FsyncPolicy::Always);
        let commands = [
            words(&["SET", keys[0], &value]),
            words(&["MSET", keys[1], &value, keys[2], &value]),
            words(&["APPEND", keys[3], &value]),
        ];
        // The no-op's write made the WAL create its segment, so that the
        // transaction's is an append to it.
        if !synced {
            io.disk.fail_next_sync();
        }
        let id = shard.exec(1, &commands, 0).wait_for;
        assert_eq!(id, Some(EntryId::new(1, 2)));
        let written =
            future::block_on(shard.write_batch(&io, &mut wal, &io.disk, Staged::default()));
        assert_eq!(written.is_ok(), synced, "{written:?}");
        if !synced {
            shard.durable.fail("the sync failed".into());
            shard.applied.fail("the sync failed".into());
        }
        let acknowledged = future::block_on(shard.acknowledged(id, false));
        assert_eq!(acknowledged.is_ok(), synced, "{acknowledged:?}");
        io.disk.crash_with(seed, mode);
        let (shard, _wal) = recovered_shard(&io, FsyncPolicy::Always);
        let values = keys.iter().map(|key| get(&shard, key)).collect();
        // The no-op, the transaction or not, the new no-op.
        assert_eq!(
            shard.last_index(),
            shard.count() / 4 + 2,
            "one entry or none"
        );
        values
    }

    #[test]
    fn a_transaction_is_recovered_whole_or_not_at_all_after_power_loss() {
        let all = vec![bulk(&"x".repeat(700)); 4];
        let none = vec![Reply::Null; 4];
        assert_eq!(transaction_after_power_loss(false, 0, CrashMode::Keep), all);
        assert_eq!(
            transaction_after_power_loss(false, 0, CrashMode::Drop),
            none
        );
        assert_eq!(
            transaction_after_power_loss(false, 0, CrashMode::Tear),
            none
        );
        // A random crash keeps each of the entry's sectors with probability
        // 1/3: the frame's checksum then fails, and the torn tail is cut.
        for seed in 1..=30 {
            let after = transaction_after_power_loss(false, seed, CrashMode::Random);
            assert!(after == all || after == none, "seed {seed}: {after:?}");
            let acknowledged = transaction_after_power_loss(true, seed, CrashMode::Random);
            assert_eq!(acknowledged, all, "seed {seed}: acknowledged, then lost");
        }
    }

    /// Every key held, with value and expiry, sorted: a key space's state.
    fn state(shard: &Shard) -> Vec<(Vec<u8>, Vec<u8>, Option<u64>)> {
        commit_all(shard);
        let driver = shard.driver.borrow();
        let keyspace = driver.keyspace();
        let mut items: Vec<_> = keyspace
            .items()
            .map(|(key, value, expiry)| (key.to_vec(), value.to_vec(), expiry))
            .collect();
        items.sort();
        items
    }

    /// A command of a small mix of writes and reads over three keys of one
    /// slot, so that commands often act on what the ones before wrote.
    fn any_command() -> impl proptest::strategy::Strategy<Value = Vec<Vec<u8>>> {
        use proptest::prelude::*;
        let key = proptest::sample::select(vec!["{t}a", "{t}b", "{t}c"]);
        let value = proptest::sample::select(vec!["1", "x", "10"]);
        (0..9usize, key.clone(), key, value).prop_map(|(kind, key, other, value)| {
            let command: Vec<&str> = match kind {
                0 => vec!["SET", key, value],
                1 => vec!["INCR", key],
                2 => vec!["APPEND", key, value],
                3 => vec!["DEL", key, other],
                4 => vec!["PEXPIRE", key, "500"],
                5 => vec!["RENAME", key, other],
                6 => vec!["GETDEL", key],
                7 => vec!["GET", key],
                _ => vec!["PERSIST", key],
            };
            words(&command)
        })
    }

    proptest::proptest! {
        /// EXEC gives what running its commands one by one gives: the same
        /// replies and the same key space, with one entry at most.
        #[test]
        fn exec_equals_its_commands_run_one_by_one(
            before in proptest::collection::vec(any_command(), 0..6),
            commands in proptest::collection::vec(any_command(), 0..12),
        ) {
            let (one_by_one, transaction) = (
                ready_shard(Keyspace::new(), settings(None)),
                ready_shard(Keyspace::new(), settings(None)),
            );
            for args in &before {
                one_by_one.execute(args, 1_000);
                transaction.execute(args, 1_000);
            }
            let first = transaction.last_index();
            let replies: Vec<Reply> = commands
                .iter()
                .map(|args| one_by_one.execute(args, 1_000).reply)
                .collect();
            proptest::prop_assert_eq!(transaction.exec(1, &commands, 1_000).reply, Reply::Array(replies));
            proptest::prop_assert_eq!(state(&transaction), state(&one_by_one));
            proptest::prop_assert!(transaction.last_index() <= first + 1);
        }

        /// An EXEC whose entry the log refuses leaves the key space exactly
        /// as it was, expiries included.
        #[test]
        fn a_refused_exec_leaves_the_key_space_as_it_was(
            before in proptest::collection::vec(any_command(), 0..6),
            commands in proptest::collection::vec(any_command(), 1..12),
        ) {
            let unlimited = ready_shard(Keyspace::new(), settings(None));
            for args in &before {
                unlimited.execute(args, 1_000);
            }
            let state_before = state(&unlimited);
            let mut keyspace = Keyspace::new();
            for (key, value, expiry) in &state_before {
                keyspace.insert_loaded(key, value, *expiry);
            }
            let mut limited = settings(None);
            limited.payload_bytes_max = 4;
            let shard = ready_shard(keyspace, limited);
            let reply = shard.exec(1, &commands, 1_000).reply;
            proptest::prop_assert_eq!(state(&shard), state_before);
            proptest::prop_assert_eq!(shard.last_index(), 1, "the no-op alone");
            // The same EXEC where the log takes it: it fails here exactly
            // when it writes there.
            let last = unlimited.last_index();
            unlimited.exec(1, &commands, 1_000);
            let wrote = unlimited.last_index() > last;
            proptest::prop_assert_eq!(matches!(reply, Reply::Error(_)), wrote, "{:?}", reply);
        }
    }

    #[cfg(feature = "planted-bugs")]
    mod planted {
        use keel_wal::planted::{self, Plant};

        use super::*;

        /// Switches a plant on for one test and off again, even if it panics.
        struct Planted;

        impl Planted {
            fn on(plant: Plant) -> Planted {
                planted::set(Some(plant));
                Planted
            }
        }

        impl Drop for Planted {
            fn drop(&mut self) {
                planted::set(None);
            }
        }

        #[test]
        fn ack_before_fsync_releases_a_reply_nothing_made_durable() {
            let io = TestIo::default();
            let (shard, _wal) = recovered_shard(&io, FsyncPolicy::Always);
            let id = set(&shard, "k");
            assert!(
                future::block_on(future::poll_once(shard.acknowledged(Some(id), false))).is_none()
            );
            let _planted = Planted::on(Plant::AckBeforeFsync);
            let id = set(&shard, "k2");
            // What the shard's `report_writes` task does at its turn (the
            // node spawns it when the plant is on at its start).
            shard.report_unreported();
            assert_eq!(
                future::block_on(future::poll_once(shard.acknowledged(Some(id), false))),
                Some(Ok(()))
            );
            assert_eq!(shard.stats().durable_index, 1, "the no-op alone is durable");
        }

        #[test]
        fn lose_batch_tail_acknowledges_entries_a_power_loss_takes() {
            let _planted = Planted::on(Plant::LoseBatchTail);
            assert_eq!(commit_four_and_crash(), (Ok(()), LogIndex(3)));
        }
    }
}
