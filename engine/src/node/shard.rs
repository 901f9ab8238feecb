//! One shard: its key space, the log entries on their way to its WAL, and the
//! group-commit task that makes them durable.
//!
//! # Invariants
//! - An operation is applied to the key space when it is given its log index,
//!   in index order, so the key space always equals the replay of entries
//!   `1..next_index`.
//! - A reply is released only when every entry applied before it was
//!   executed is durable (`--fsync always`): a client never sees a state that
//!   a crash could take back. Reads wait too, for the writes they may observe.
//! - Only the committer task touches the [`Wal`]; it hands it entries in index
//!   order, and the WAL's index must agree with the one given at apply time.
//! - After an IO failure of the WAL the shard acknowledges nothing more.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use keel_wal::{codec, LogIndex, Term, Wal, WalError};

use crate::command::{self, Outcome};
use crate::config::FsyncPolicy;
use crate::keyspace::Keyspace;
use crate::limits::Limits;
use crate::metrics::NodeMetrics;
use crate::node::io::{NodeIo, ShardObserver};
use crate::node::local::{Signal, Watermark};
use crate::node::watch::Watches;
use crate::operation::{Change, Operation, SingleOp};
use crate::resp::Reply;
use crate::snapshot;

/// The term of every entry while Keel runs as a single node.
pub const SINGLE_NODE_TERM: Term = Term(1);
/// Most expired keys one active-expiry pass removes from a shard.
pub const EXPIRE_KEYS_PER_PASS_MAX: usize = 200;
/// Most active-expiry passes per wake-up (so at most 10,000 keys per
/// `EXPIRE_PERIOD_MS`): a backlog of expired keys is worked off over several
/// wake-ups, and between passes other tasks run, so expiry never holds the
/// core for long. Keys past their time are invisible to reads meanwhile.
pub const EXPIRE_PASSES_PER_WAKE_MAX: usize = 50;
/// Entries applied but not yet durable that a shard holds before commands
/// wait for a sync: with `--fsync interval-ms` nothing else stops writers
/// from running ahead of the disk, and every such entry is held in memory.
pub const UNSYNCED_ENTRIES_MAX: u64 = 64 * 1024;
/// Bytes of encoded entries applied but not yet durable that a shard holds
/// before commands wait for a sync (the memory those entries take). One
/// entry may pass it: the limit is checked before a command runs.
pub const UNSYNCED_BYTES_MAX: u64 = 256 << 20;

/// A command executed on the shard: its reply, to be released once the log
/// holds everything it depends on.
#[derive(Debug)]
pub struct Executed {
    pub reply: Reply,
    /// The last entry the reply depends on.
    pub wait_for: u64,
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
    pub snapshot_index: u64,
    pub snapshot_unix_ms: Option<u64>,
    pub snapshot_bytes: u64,
    pub snapshot_pause_us_last: u64,
    pub wal_bytes_since_snapshot: u64,
    pub failure: Option<String>,
}

#[derive(Debug, Default)]
struct SnapshotState {
    index: u64,
    unix_ms: Option<u64>,
    bytes: u64,
    pause_us_last: u64,
    wal_bytes_since: u64,
    in_progress: bool,
    /// A snapshot that is durable now: the WAL before it may go.
    compact_below: Option<u64>,
}

/// One shard of the key space.
#[derive(Debug)]
pub struct Shard {
    pub id: u32,
    keyspace: RefCell<Keyspace>,
    /// Encoded operations applied but not yet handed to the WAL.
    queue: RefCell<Vec<Vec<u8>>>,
    /// Bytes of the entries applied but not yet durable (queued or in the
    /// batch being synced).
    unsynced_bytes: Cell<u64>,
    next_index: Cell<u64>,
    durable: Watermark,
    wake_committer: Signal,
    settings: ShardSettings,
    snapshot: RefCell<SnapshotState>,
    stopping: Cell<bool>,
    /// The keys connections WATCH (in memory only: see [`crate::node::watch`]).
    watches: RefCell<Watches>,
}

/// Hands `payloads` to the WAL as entries `first..`; returns their bytes.
fn append_entries<S: keel_wal::Storage>(
    wal: &mut Wal<S>,
    first: u64,
    payloads: &[Vec<u8>],
) -> Result<u64, WalError> {
    let mut bytes = 0;
    for (offset, payload) in (0..).zip(payloads) {
        let index = wal.append(SINGLE_NODE_TERM, payload)?;
        assert_eq!(
            index.0,
            first + offset,
            "the WAL numbers entries as the shard did"
        );
        bytes += keel_wal::frame::frame_bytes(payload.len()) as u64;
    }
    Ok(bytes)
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

/// A write that cannot go into the log.
fn too_large(len: usize, limit: usize) -> Reply {
    Reply::Error(format!(
        "ERR write of {len} bytes exceeds the log's entry limit of {limit} bytes"
    ))
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

/// What a transaction's writes replaced, to put back if its entry cannot be
/// logged: each key's record (value and expiry) before its first write.
#[derive(Debug, Default)]
struct Undo {
    /// Each key's record, or `None` if it was absent.
    before: HashMap<Vec<u8>, Option<SavedRecord>>,
}

/// A key's value and its expiry time (Unix ms), as held.
type SavedRecord = (Vec<u8>, Option<u64>);

impl Undo {
    /// Remembers the keys `op` is about to write, unless already remembered.
    fn save(&mut self, keyspace: &Keyspace, op: &Operation) {
        for change in op.changes() {
            match change {
                Change::Set { key, .. } | Change::Expire { key, .. } | Change::Persist { key } => {
                    self.remember(keyspace, key);
                }
                Change::Delete { keys } => {
                    for key in keys {
                        self.remember(keyspace, key);
                    }
                }
                Change::FlushAll => panic!("a transaction never flushes: FLUSHALL is not queued"),
            }
        }
    }

    fn remember(&mut self, keyspace: &Keyspace, key: &[u8]) {
        if !self.before.contains_key(key) {
            let record = keyspace
                .record(key)
                .map(|item| (item.value.to_vec(), item.expire_at_unix_ms));
            self.before.insert(key.to_vec(), record);
        }
    }

    /// Puts back every remembered key as it was.
    fn restore(self, keyspace: &mut Keyspace) {
        for (key, record) in self.before {
            keyspace.apply(&match record {
                Some((value, expire_at_unix_ms)) => Operation::Set {
                    key,
                    value,
                    expire_at_unix_ms,
                },
                None => Operation::Delete { keys: vec![key] },
            });
        }
    }
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
    /// Entries applied but not durable before commands wait
    /// ([`UNSYNCED_ENTRIES_MAX`] unless a test shrinks it).
    pub unsynced_entries_max: u64,
    /// Their bytes ([`UNSYNCED_BYTES_MAX`] unless a test shrinks it).
    pub unsynced_bytes_max: u64,
    pub metrics: Arc<NodeMetrics>,
    /// The simulator's witness of what the shard applies and acknowledges.
    pub observer: Option<Rc<dyn ShardObserver>>,
}

impl Shard {
    /// A shard whose key space holds the log up to `last_index`, all durable,
    /// from a snapshot taken at `snapshot_index` plus the log after it.
    pub fn new(
        id: u32,
        keyspace: Keyspace,
        last_index: u64,
        snapshot_index: u64,
        settings: ShardSettings,
    ) -> Shard {
        Shard {
            id,
            keyspace: RefCell::new(keyspace),
            queue: RefCell::new(Vec::new()),
            unsynced_bytes: Cell::new(0),
            next_index: Cell::new(last_index + 1),
            durable: Watermark::new(last_index),
            wake_committer: Signal::default(),
            settings,
            snapshot: RefCell::new(SnapshotState {
                index: snapshot_index,
                ..SnapshotState::default()
            }),
            stopping: Cell::new(false),
            watches: RefCell::default(),
        }
    }

    /// The last entry applied (durable or not).
    pub fn last_index(&self) -> u64 {
        self.next_index.get() - 1
    }

    /// Runs a keyed command whose keys all live in this shard.
    pub fn execute(&self, args: &[Vec<u8>], now_unix_ms: u64) -> Executed {
        if let Some(reason) = self.durable.failure() {
            return self.refused(&reason);
        }
        let Outcome { reply, op } = command::execute(
            &self.keyspace.borrow(),
            args,
            now_unix_ms,
            &self.settings.limits,
        );
        match op {
            None => Executed {
                reply,
                wait_for: self.last_index(),
            },
            Some(op) => match self.append(&op) {
                Ok(index) => Executed {
                    reply,
                    wait_for: index,
                },
                Err(error) => Executed {
                    reply: error,
                    wait_for: self.last_index(),
                },
            },
        }
    }

    fn refused(&self, reason: &str) -> Executed {
        Executed {
            reply: Reply::Error(format!("ERR shard {} stopped: {reason}", self.id)),
            wait_for: 0,
        }
    }

    /// Gives `op` the next log index, applies it and queues it for the WAL.
    fn append(&self, op: &Operation) -> Result<u64, Reply> {
        let payload = self.encode(op)?;
        let flushed = if op.changes().any(|change| change == Change::FlushAll) {
            self.watches.borrow().held_keys(&self.keyspace.borrow())
        } else {
            Vec::new()
        };
        self.keyspace.borrow_mut().apply(op);
        Ok(self.log_applied(op, payload, &flushed))
    }

    /// The entry's payload, if the log takes it.
    fn encode(&self, op: &Operation) -> Result<Vec<u8>, Reply> {
        let payload = codec::encode(op)
            .map_err(|error| Reply::Error(format!("ERR cannot encode the write: {error}")))?;
        if payload.len() > self.settings.payload_bytes_max {
            return Err(too_large(payload.len(), self.settings.payload_bytes_max));
        }
        Ok(payload)
    }

    /// Gives `op`, already applied to the key space, the next log index and
    /// queues its `payload` for the WAL; `flushed` are the watched keys it
    /// removed if it is a FLUSHALL.
    fn log_applied(&self, op: &Operation, payload: Vec<u8>, flushed: &[Vec<u8>]) -> u64 {
        let index = self.next_index.get();
        self.next_index.set(index + 1);
        self.watches
            .borrow_mut()
            .note_applied(op, &self.keyspace.borrow(), flushed);
        if let Some(observer) = &self.settings.observer {
            observer.applied(self.id, index, op);
        }
        self.unsynced_bytes
            .set(self.unsynced_bytes.get() + payload.len() as u64);
        self.queue.borrow_mut().push(payload);
        self.wake_committer.raise();
        index
    }

    /// WATCH: connection `client` watches `keys`, all of this shard.
    pub fn watch(&self, client: u64, keys: &[Vec<u8>], now_unix_ms: u64) {
        self.watches
            .borrow_mut()
            .watch(client, keys, &self.keyspace.borrow(), now_unix_ms);
    }

    /// Whether any connection watches a key of this shard.
    #[cfg(test)]
    pub(crate) fn watches_anything(&self) -> bool {
        !self.watches.borrow().is_empty()
    }

    /// Connection `client` forgets its watched keys (UNWATCH, DISCARD, the
    /// connection's end).
    pub fn unwatch(&self, client: u64, now_unix_ms: u64) {
        self.watches
            .borrow_mut()
            .unwatch(client, &self.keyspace.borrow(), now_unix_ms);
    }

    /// EXEC of a transaction whose keyed `commands` all name keys of this
    /// shard: nothing runs (a null reply) if a key `client` watches changed;
    /// otherwise the commands run one after the other, with nothing else in
    /// between, each seeing the writes of those before, and their writes
    /// become one log entry (the one write, or a [`Operation::Batch`] of
    /// them all), so a crash keeps all or none. If that entry is too large
    /// for the log, every write is undone and EXEC answers the error.
    pub fn exec(&self, client: u64, commands: &[Vec<Vec<u8>>], now_unix_ms: u64) -> Executed {
        if let Some(reason) = self.durable.failure() {
            return self.refused(&reason);
        }
        let changed =
            self.watches
                .borrow_mut()
                .unwatch(client, &self.keyspace.borrow(), now_unix_ms);
        if changed {
            return Executed {
                reply: Reply::NullArray,
                wait_for: self.last_index(),
            };
        }
        let mut undo = Undo::default();
        let mut writes = Vec::new();
        let mut replies = Vec::with_capacity(commands.len());
        for args in commands {
            let Outcome { reply, op } = command::execute(
                &self.keyspace.borrow(),
                args,
                now_unix_ms,
                &self.settings.limits,
            );
            if let Some(op) = op {
                undo.save(&self.keyspace.borrow(), &op);
                self.keyspace.borrow_mut().apply(&op);
                writes.push(op);
            }
            replies.push(reply);
        }
        let Some(entry) = one_entry(writes) else {
            return Executed {
                reply: Reply::Array(replies),
                wait_for: self.last_index(),
            };
        };
        match self.encode(&entry) {
            Ok(payload) => Executed {
                reply: Reply::Array(replies),
                wait_for: self.log_applied(&entry, payload, &[]),
            },
            Err(error) => {
                undo.restore(&mut self.keyspace.borrow_mut());
                Executed {
                    reply: error,
                    wait_for: self.last_index(),
                }
            }
        }
    }

    /// Whether the entries not yet durable are at a limit.
    fn unsynced_full(&self) -> bool {
        self.last_index() - self.durable.get() >= self.settings.unsynced_entries_max
            || self.unsynced_bytes.get() >= self.settings.unsynced_bytes_max
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

    /// Waits until a reply that depends on entry `index` may be released.
    pub async fn acknowledged(&self, index: u64) -> Result<(), String> {
        let result = match self.settings.fsync {
            #[cfg(feature = "planted-bugs")]
            FsyncPolicy::Always
                if keel_wal::planted::active(keel_wal::planted::Plant::AckBeforeFsync) =>
            {
                Ok(())
            }
            FsyncPolicy::Always => self.durable.wait_for(index).await,
            FsyncPolicy::IntervalMs(_) => self.durable.failure().map_or(Ok(()), Err),
        };
        if let (Ok(()), Some(observer)) = (&result, &self.settings.observer) {
            observer.acknowledged(self.id, index);
        }
        result
    }

    pub fn count(&self) -> u64 {
        self.keyspace.borrow().len() as u64
    }

    pub fn random_key(&self, pick: u64, now_unix_ms: u64) -> Option<Vec<u8>> {
        self.keyspace.borrow().random_key(pick, now_unix_ms)
    }

    pub fn keys(&self, pattern: &[u8], now_unix_ms: u64) -> Vec<Vec<u8>> {
        self.keyspace.borrow().keys(pattern, now_unix_ms)
    }

    pub fn scan(
        &self,
        cursor: u64,
        count: usize,
        pattern: Option<&[u8]>,
        now_unix_ms: u64,
    ) -> (u64, Vec<Vec<u8>>) {
        self.keyspace
            .borrow()
            .scan(cursor, count, pattern, now_unix_ms)
    }

    /// Removes every key through the log; returns the entry to wait for.
    pub fn flush_all(&self) -> Result<u64, Reply> {
        if let Some(reason) = self.durable.failure() {
            return Err(self.refused(&reason).reply);
        }
        if self.keyspace.borrow().is_empty() {
            return Ok(self.last_index());
        }
        self.append(&Operation::FlushAll)
    }

    /// One active-expiry pass: deletes, through the log, keys whose time has
    /// come, so that replicas and replays remove them at the same point.
    /// Returns how many were removed.
    fn expire_pass(&self, now_unix_ms: u64) -> usize {
        if self.durable.failure().is_some() {
            return 0;
        }
        let keys = self
            .keyspace
            .borrow()
            .expired_keys(now_unix_ms, EXPIRE_KEYS_PER_PASS_MAX);
        let removed = keys.len();
        if removed > 0 && self.append(&Operation::Delete { keys }).is_ok() {
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
        let keyspace = self.keyspace.borrow();
        let snapshot = self.snapshot.borrow();
        ShardStats {
            shard: self.id,
            keys: keyspace.len() as u64,
            expires: keyspace.expires_len() as u64,
            data_bytes: keyspace.data_bytes() as u64,
            last_index: self.last_index(),
            durable_index: self.durable.get(),
            snapshot_index: snapshot.index,
            snapshot_unix_ms: snapshot.unix_ms,
            snapshot_bytes: snapshot.bytes,
            snapshot_pause_us_last: snapshot.pause_us_last,
            wal_bytes_since_snapshot: snapshot.wal_bytes_since,
            failure: self.durable.failure(),
        }
    }

    /// Asks the committer to sync what is queued and stop.
    pub fn stop(&self) {
        self.stopping.set(true);
        self.wake_committer.raise();
    }

    /// The group-commit loop: hands queued entries to the WAL and syncs them,
    /// one write and one fdatasync for everything queued meanwhile. Returns
    /// when stopped, or with the WAL's error, after which the shard refuses
    /// everything (the kernel may have dropped the pages: no retry).
    pub async fn run_committer<I: NodeIo>(
        self: Rc<Shard>,
        io: I,
        mut wal: Wal<I::Storage>,
        storage: I::Storage,
    ) -> Result<(), WalError> {
        let result = self.commit_loop(&io, &mut wal, &storage).await;
        if let Err(error) = &result {
            self.durable.fail(error.to_string());
        }
        result
    }

    async fn commit_loop<I: NodeIo>(
        self: &Rc<Shard>,
        io: &I,
        wal: &mut Wal<I::Storage>,
        storage: &I::Storage,
    ) -> Result<(), WalError> {
        loop {
            if self.queue.borrow().is_empty() {
                if self.stopping.get() {
                    return Ok(());
                }
                self.wake_committer.wait().await;
                continue;
            }
            if let FsyncPolicy::IntervalMs(ms) = self.settings.fsync {
                io.sleep(std::time::Duration::from_millis(ms)).await;
            }
            // Let every task that is ready (other connections' commands) run
            // first, so that they join this batch rather than the next.
            futures_lite::future::yield_now().await;
            let batch = std::mem::take(&mut *self.queue.borrow_mut());
            let batch_bytes: u64 = batch.iter().map(|payload| payload.len() as u64).sum();
            let first = self.next_index.get() - batch.len() as u64;
            let (synced, held_back) = batch.split_at(batch.len() - held_back_entries(batch.len()));
            let mut bytes = append_entries(wal, first, synced)?;
            let started = io.monotonic_us();
            let durable = wal.sync().await?;
            // Only the planted bug holds entries back: they reach the WAL now
            // and its next sync, but the watermark covers them at once.
            bytes += append_entries(wal, first + synced.len() as u64, held_back)?;
            let durable = if held_back.is_empty() {
                durable
            } else {
                LogIndex(first + batch.len() as u64 - 1)
            };
            self.settings
                .metrics
                .fsync_us
                .observe(io.monotonic_us().saturating_sub(started));
            self.settings
                .metrics
                .batch_entries
                .observe(batch.len() as u64);
            NodeMetrics::add(&self.settings.metrics.writes, batch.len() as u64);
            NodeMetrics::add(&self.settings.metrics.wal_bytes, bytes);
            assert!(
                durable.0 <= self.last_index(),
                "the WAL holds no entry the shard did not give an index"
            );
            self.unsynced_bytes
                .set(self.unsynced_bytes.get() - batch_bytes);
            self.durable.advance(durable.0);
            self.after_commit(io, wal, storage, bytes).await?;
        }
    }

    /// Snapshot and compaction bookkeeping between group commits.
    async fn after_commit<I: NodeIo>(
        self: &Rc<Shard>,
        io: &I,
        wal: &mut Wal<I::Storage>,
        storage: &I::Storage,
        bytes: u64,
    ) -> Result<(), WalError> {
        let (start, compact) = {
            let mut state = self.snapshot.borrow_mut();
            state.wal_bytes_since += bytes;
            let start =
                !state.in_progress && state.wal_bytes_since >= self.settings.snapshot_wal_bytes;
            (start, state.compact_below.take())
        };
        if let Some(below) = compact {
            wal.remove_below(LogIndex(below)).await?;
        }
        if start {
            self.start_snapshot(io, storage.clone());
        }
        Ok(())
    }

    /// Starts a snapshot in the background; the commit loop goes on.
    fn start_snapshot<I: NodeIo>(self: &Rc<Shard>, io: &I, storage: I::Storage) {
        let start_index = self.last_index();
        {
            let mut state = self.snapshot.borrow_mut();
            state.in_progress = true;
            state.wal_bytes_since = 0;
        }
        let (shard, io) = (Rc::clone(self), io.clone());
        let now = io.now_unix_ms();
        io.clone().spawn(async move {
            let result = shard.write_snapshot(&io, storage, start_index).await;
            let mut state = shard.snapshot.borrow_mut();
            state.in_progress = false;
            match result {
                Ok((written, pause_us)) => {
                    tracing::info!(shard = shard.id, index = start_index, keys = written.keys, bytes = written.bytes, pause_us_max = pause_us, file = %written.file, "snapshot written");
                    NodeMetrics::add(&shard.settings.metrics.snapshots, 1);
                    state.index = start_index;
                    state.unix_ms = Some(now);
                    state.bytes = written.bytes;
                    state.pause_us_last = pause_us;
                    state.compact_below = Some(start_index + 1);
                }
                Err(reason) => tracing::error!(shard = shard.id, index = start_index, %reason, "snapshot failed; the WAL is kept"),
            }
        });
    }

    /// Writes a fuzzy snapshot tagged `start_index`: one key-space partition
    /// at a time, letting commands run between partitions, so the pause is
    /// one partition's encoding, not the shard's. Writes applied meanwhile
    /// may or may not be in it; since every operation is a blind write
    /// (see [`crate::operation`]), replaying the log from `start_index + 1`
    /// over it gives the exact state. Returns what was written and the
    /// longest pause.
    async fn write_snapshot<I: NodeIo>(
        &self,
        io: &I,
        storage: I::Storage,
        start_index: u64,
    ) -> Result<(snapshot::Written, u64), String> {
        let meta = snapshot::SnapshotMeta {
            shard: self.id,
            last_index: LogIndex(start_index),
            last_term: SINGLE_NODE_TERM,
        };
        let mut writer = snapshot::SnapshotWriter::create(storage, meta)
            .await
            .map_err(|error| error.to_string())?;
        let partitions = self.keyspace.borrow().partition_count();
        let mut pause_us_max = 0;
        for partition in 0..partitions {
            let started = io.monotonic_us();
            for (key, value, expire_at_unix_ms) in self.keyspace.borrow().partition_items(partition)
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
        // durable before the snapshot can stand in for the log before it.
        self.durable.wait_for(self.last_index()).await?;
        let written = writer.finish().await.map_err(|error| error.to_string())?;
        Ok((written, pause_us_max))
    }
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
    use crate::node::io::Connection;
    use crate::node::test_io::{recover_one_shard, MemIo};
    use crate::node::Committer;

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
        Recovered { last_index: u64, keys: usize },
        Applied { index: u64, op: Operation },
        Acknowledged { index: u64 },
    }

    #[derive(Debug, Default)]
    struct Recorder {
        events: RefCell<Vec<Event>>,
    }

    impl ShardObserver for Recorder {
        fn recovered(&self, _shard: u32, last_index: u64, keyspace: &Keyspace) {
            let keys = keyspace.items().count();
            self.events
                .borrow_mut()
                .push(Event::Recovered { last_index, keys });
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
        }
    }

    fn set(shard: &Shard, key: &str) -> u64 {
        let args = [b"SET".to_vec(), key.as_bytes().to_vec(), b"v".to_vec()];
        shard.execute(&args, 0).wait_for
    }

    /// Four SETs in one group commit, acknowledged, then a power loss:
    /// returns whether the acknowledgement came and the last entry recovered.
    fn commit_four_and_crash() -> (Result<(), String>, LogIndex) {
        let io = TestIo::default();
        let wal = keel_wal::run_ready(Wal::open(io.disk.clone(), WalOptions::test_min()))
            .expect("a fresh WAL opens")
            .0;
        let shard = Rc::new(Shard::new(0, Keyspace::new(), 0, 0, settings(None)));
        let indexes: Vec<u64> = (1..=4).map(|key| set(&shard, &key.to_string())).collect();
        assert_eq!(indexes, [1, 2, 3, 4]);
        let committer = async {
            let result = Rc::clone(&shard)
                .run_committer(io.clone(), wal, io.disk.clone())
                .await;
            panic!("the committer stopped unasked: {result:?}");
        };
        let client = async {
            let acknowledged = shard.acknowledged(4).await;
            io.disk.crash(1);
            let recovered = Wal::open(io.disk.clone(), WalOptions::test_min())
                .await
                .expect("the WAL reopens after a power loss");
            (acknowledged, recovered.0.last_index())
        };
        future::block_on(future::or(client, committer))
    }

    #[test]
    fn a_group_commit_is_acknowledged_once_synced_and_survives_power_loss() {
        assert_eq!(commit_four_and_crash(), (Ok(()), LogIndex(4)));
    }

    #[test]
    fn the_observer_sees_recovery_applies_and_acknowledgements() {
        let recorder = Rc::new(Recorder::default());
        let io = TestIo::watched(Rc::clone(&recorder) as Rc<dyn ShardObserver>);
        let recovered = recover_one_shard(io, FsyncPolicy::Always);
        let shard = Rc::clone(&recovered.committers[0].shard);
        let index = set(&shard, "k");
        // Nothing syncs here (no committer runs), so only a read of nothing
        // may be acknowledged.
        assert!(future::block_on(future::poll_once(shard.acknowledged(index))).is_none());
        future::block_on(shard.acknowledged(0)).expect("index 0 is always durable");
        assert_eq!(
            *recorder.events.borrow(),
            vec![
                Event::Recovered {
                    last_index: 0,
                    keys: 0
                },
                Event::Applied {
                    index: 1,
                    op: Operation::Set {
                        key: b"k".to_vec(),
                        value: b"v".to_vec(),
                        expire_at_unix_ms: None,
                    }
                },
                Event::Acknowledged { index: 0 },
            ]
        );
    }

    /// Issue 9: with `--fsync interval-ms` replies wait for no sync, so
    /// writers could apply entries without bound while the disk lagged.
    #[test]
    fn writers_wait_for_a_sync_once_unsynced_entries_reach_a_limit() {
        // (entries limit, bytes limit, writes that fill it): each SET's
        // entry takes a little over 100 bytes.
        for (entries_max, bytes_max, fill) in [(4, u64::MAX, 4), (u64::MAX, 300, 3)] {
            let io = TestIo::default();
            let wal = keel_wal::run_ready(Wal::open(io.disk.clone(), WalOptions::test_min()))
                .expect("a fresh WAL opens")
                .0;
            let mut settings = settings(None);
            settings.fsync = FsyncPolicy::IntervalMs(1);
            settings.unsynced_entries_max = entries_max;
            settings.unsynced_bytes_max = bytes_max;
            let shard = Rc::new(Shard::new(0, Keyspace::new(), 0, 0, settings));
            let value = vec![b'v'; 100];
            for key in 0..fill {
                assert!(
                    future::block_on(future::poll_once(shard.wait_for_room())).is_some(),
                    "room before write {key}"
                );
                let args = [b"SET".to_vec(), key.to_string().into_bytes(), value.clone()];
                assert_eq!(shard.execute(&args, 0).reply, Reply::ok());
            }
            assert!(
                future::block_on(future::poll_once(shard.wait_for_room())).is_none(),
                "{fill} unsynced writes fill the limits ({entries_max} entries, {bytes_max} bytes)"
            );
            let committer = async {
                let result = Rc::clone(&shard)
                    .run_committer(io.clone(), wal, io.disk.clone())
                    .await;
                panic!("the committer stopped unasked: {result:?}");
            };
            future::block_on(future::or(shard.wait_for_room(), committer));
            // Room came from a sync of every write, none dropped.
            assert_eq!(shard.stats().durable_index, fill);
            assert_eq!(shard.count(), fill);
        }
    }

    /// Issue 9: the expiry task looped until a pass found fewer keys than a
    /// pass may take, never yielding, so a large backlog held the core.
    #[test]
    fn active_expiry_yields_between_passes_and_stops_after_its_share() {
        let backlog = (EXPIRE_PASSES_PER_WAKE_MAX + 1) * EXPIRE_KEYS_PER_PASS_MAX + 5;
        let mut keyspace = Keyspace::new();
        for key in 0..backlog {
            keyspace.insert_loaded(key.to_string().as_bytes(), b"v", Some(0));
        }
        let shard = Shard::new(0, keyspace, 0, 0, settings(None));
        let io = TestIo::default();
        let mut wake = std::pin::pin!(shard.expire_due(&io));
        let mut polls = 0;
        let removed = loop {
            polls += 1;
            if let Some(removed) = future::block_on(future::poll_once(wake.as_mut())) {
                break removed;
            }
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
        assert_eq!(future::block_on(shard.expire_due(&io)), backlog - removed);
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
        let shard = Shard::new(0, Keyspace::new(), 0, 0, settings(Some(recorder.clone())));
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
        assert_eq!(executed.wait_for, 2, "one entry after the SET's");
        let set_op = |key: &str, value: &str| SingleOp::Set {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            expire_at_unix_ms: None,
        };
        assert_eq!(
            recorder.events.borrow().last(),
            Some(&Event::Applied {
                index: 2,
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
        assert_eq!(shard.last_index(), 2, "a transaction of reads logs nothing");
    }

    /// The transaction's entry is over the log's limit: every write it made
    /// is undone (values and expiry) and EXEC answers the error alone.
    #[test]
    fn exec_whose_entry_is_too_large_undoes_every_write() {
        let mut settings = settings(None);
        settings.payload_bytes_max = 300;
        let shard = Shard::new(0, Keyspace::new(), 0, 0, settings);
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
        assert_eq!(shard.last_index(), 1, "nothing logged");
        assert_eq!(
            shard
                .keyspace
                .borrow()
                .record(b"{t}a")
                .map(|item| (item.value.to_vec(), item.expire_at_unix_ms)),
            Some((b"old".to_vec(), Some(6_000)))
        );
        assert_eq!(shard.keyspace.borrow().record(b"{t}b"), None);
        assert_eq!(shard.count(), 1);
    }

    /// WATCH by one connection, a write by another: the watcher's EXEC runs
    /// nothing; EXEC unwatched, so its next one runs.
    #[test]
    fn exec_after_a_watched_key_changed_answers_null_and_writes_nothing() {
        let shard = Shard::new(0, Keyspace::new(), 0, 0, settings(None));
        shard.watch(1, &words(&["k"]), 0);
        shard.watch(2, &words(&["other"]), 0);
        set(&shard, "k");
        let commands = [words(&["SET", "k", "mine"])];
        assert_eq!(shard.exec(1, &commands, 0).reply, Reply::NullArray);
        assert_eq!(get(&shard, "k"), bulk("v"));
        assert_eq!(shard.last_index(), 1);
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
        let recovered = recover_one_shard(io.clone(), FsyncPolicy::Always);
        let Committer {
            shard,
            wal,
            storage,
        } = recovered.committers.into_iter().next().expect("one shard");
        let commands = [
            words(&["SET", keys[0], &value]),
            words(&["MSET", keys[1], &value, keys[2], &value]),
            words(&["APPEND", keys[3], &value]),
        ];
        // A first write makes the WAL create its segment, so that the
        // transaction's is an append to it.
        set(&shard, "{t}first");
        let client = async {
            shard
                .acknowledged(1)
                .await
                .expect("the first write is durable");
            if !synced {
                io.disk.fail_next_sync();
            }
            assert_eq!(shard.exec(1, &commands, 0).wait_for, 2);
            shard.acknowledged(2).await
        };
        let committer = async {
            let result = Rc::clone(&shard)
                .run_committer(io.clone(), wal, storage)
                .await;
            Err(format!("the committer stopped: {result:?}"))
        };
        let acknowledged = future::block_on(future::or(client, committer));
        assert_eq!(acknowledged.is_ok(), synced, "{acknowledged:?}");
        io.disk.crash_with(seed, mode);
        let again = recover_one_shard(io, FsyncPolicy::Always);
        let shard = &again.committers[0].shard;
        let values = keys.iter().map(|key| get(shard, key)).collect();
        assert_eq!(
            shard.last_index(),
            shard.count() / 4 + 1,
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
        let keyspace = shard.keyspace.borrow();
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
                Shard::new(0, Keyspace::new(), 0, 0, settings(None)),
                Shard::new(0, Keyspace::new(), 0, 0, settings(None)),
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
            let unlimited = Shard::new(0, Keyspace::new(), 0, 0, settings(None));
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
            let shard = Shard::new(0, keyspace, 0, 0, limited);
            let reply = shard.exec(1, &commands, 1_000).reply;
            proptest::prop_assert_eq!(state(&shard), state_before);
            proptest::prop_assert_eq!(shard.last_index(), 0);
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
            let shard = Shard::new(0, Keyspace::new(), 0, 0, settings(None));
            let index = set(&shard, "k");
            assert!(future::block_on(future::poll_once(shard.acknowledged(index))).is_none());
            let _planted = Planted::on(Plant::AckBeforeFsync);
            assert_eq!(
                future::block_on(future::poll_once(shard.acknowledged(index))),
                Some(Ok(()))
            );
            assert_eq!(shard.stats().durable_index, 0);
        }

        #[test]
        fn lose_batch_tail_acknowledges_entries_a_power_loss_takes() {
            let _planted = Planted::on(Plant::LoseBatchTail);
            assert_eq!(commit_four_and_crash(), (Ok(()), LogIndex(2)));
        }
    }
}
