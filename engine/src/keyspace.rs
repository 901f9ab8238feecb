//! The key space of one shard: keys, their values and expiry times, changed
//! only by [`Operation`]s (so a replayed log rebuilds it exactly) and read by
//! commands, SCAN, active expiry and the snapshot writer.
//!
//! # Layout
//! - Keys are spread over [`PARTITIONS`] hash tables by the high bits of their
//!   hash. A table that grows rehashes one small partition, not the whole
//!   shard (no multi-millisecond pause at a million keys); and SCAN and the
//!   snapshot writer walk whole partitions, one per step, so a key present for
//!   the whole walk is met at least once however the tables change between
//!   steps.
//! - A key and its value share one heap block ([`Record`]), addressed by a
//!   thin pointer: 8 bytes of table per key plus one malloc chunk.
//! - Expiry times live outside the records, since most keys have none: in a
//!   per-partition table (lookup by key) and in one ordered set by time (so
//!   active expiry finds due keys without a scan). Both always hold exactly
//!   the keys that exist and have an expiry.
//!
//! Nothing here reads the clock: readers pass `now_unix_ms`. A key whose time
//! has come stays held (and counted by [`Keyspace::len`], as Redis's DBSIZE)
//! until a `Delete` removes it, but reads no longer see it.

use std::collections::BTreeSet;
use std::fmt;
use std::hash::BuildHasher;
use std::ptr::{self, NonNull};
use std::slice;

use foldhash::fast::FixedState;
use hashbrown::hash_table::Entry as TableEntry;
use hashbrown::HashTable;

use crate::operation::{Change, Operation};

/// Hash tables a key space is split into. A power of two: the partition is
/// the top [`PARTITION_BITS`] of a key's hash.
pub const PARTITIONS: usize = 1024;

const PARTITION_BITS: u32 = PARTITIONS.trailing_zeros();
const _: () = assert!(PARTITIONS.is_power_of_two());
// The table hash (see `locate`) moves the partition bits to bits 22..32,
// clear of hashbrown's control byte (the top 7 bits) and of the bucket index
// (the low bits) of any table under 2^22 buckets.
const _: () = assert!(PARTITION_BITS <= 10);

/// SCAN cursors keep their low bits free for the caller (a shard number):
/// the partition to resume from is stored above them.
const SCAN_CURSOR_PARTITION_SHIFT_BITS: u32 = 32;

/// Keys RANDOMKEY looks at in one shard for a live one: bounds the time a
/// shard spends when many keys have expired but are not yet removed.
pub const RANDOM_KEY_PROBES_MAX: usize = 128;

/// The key-value state of one shard.
pub struct Keyspace {
    hasher: FixedState,
    partitions: Box<[Partition]>,
    /// `(expire_at_unix_ms, key)` of every key with an expiry, earliest first.
    expiry_order: BTreeSet<(u64, Box<[u8]>)>,
    len: usize,
    data_bytes: usize,
}

/// A live key's value and expiry, borrowed from the key space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item<'a> {
    pub value: &'a [u8],
    pub expire_at_unix_ms: Option<u64>,
}

#[derive(Default)]
struct Partition {
    records: HashTable<Record>,
    expiries: HashTable<Expiry>,
}

struct Expiry {
    key: Box<[u8]>,
    at_unix_ms: u64,
}

/// Where a key lives: its partition, and the hash its partition's tables use.
#[derive(Clone, Copy)]
struct Place {
    partition: usize,
    table_hash: u64,
}

fn locate(hasher: &FixedState, key: &[u8]) -> Place {
    let hash = hasher.hash_one(key);
    Place {
        partition: (hash >> (u64::BITS - PARTITION_BITS)) as usize,
        // Every key of a partition shares the top bits: handed on unchanged,
        // they would make hashbrown's 7-bit control bytes all equal.
        table_hash: hash.rotate_right(32),
    }
}

pub(crate) fn is_live(expire_at_unix_ms: Option<u64>, now_unix_ms: u64) -> bool {
    expire_at_unix_ms.is_none_or(|at| !has_expired(at, now_unix_ms))
}

/// Whether a key whose time is `at_unix_ms` is gone at `now_unix_ms`: from
/// its expiry millisecond on, as in Redis.
fn has_expired(at_unix_ms: u64, now_unix_ms: u64) -> bool {
    #[cfg(feature = "planted-bugs")]
    {
        use keel_wal::planted::{active, Plant};
        if active(Plant::ExpireOneMsLate) {
            return at_unix_ms < now_unix_ms;
        }
        if active(Plant::ExpireOneMsEarly) {
            return at_unix_ms <= now_unix_ms.saturating_add(1);
        }
    }
    at_unix_ms <= now_unix_ms
}

impl Partition {
    fn expiry(&self, table_hash: u64, key: &[u8]) -> Option<u64> {
        if self.expiries.is_empty() {
            return None;
        }
        let expiry = self
            .expiries
            .find(table_hash, |expiry| *expiry.key == *key)?;
        Some(expiry.at_unix_ms)
    }
}

impl Default for Keyspace {
    fn default() -> Keyspace {
        Keyspace::with_hash_seed(0)
    }
}

impl Keyspace {
    /// A key space whose hash function is keyed by `seed`. The seed comes
    /// from the node (its identity), never from a random source here: the
    /// state machine is deterministic, so the simulator replays SCAN orders
    /// bit for bit, while keys cannot be chosen to collide without knowing
    /// the node's seed.
    pub fn with_hash_seed(seed: u64) -> Keyspace {
        Keyspace::with_hasher(FixedState::with_seed(seed))
    }

    /// An empty key space hashing as this one does (a replica's, before it
    /// loads a snapshot from its leader).
    pub fn empty_like(&self) -> Keyspace {
        Keyspace::with_hasher(self.hasher)
    }

    fn with_hasher(hasher: FixedState) -> Keyspace {
        Keyspace {
            hasher,
            partitions: (0..PARTITIONS).map(|_| Partition::default()).collect(),
            expiry_order: BTreeSet::new(),
            len: 0,
            data_bytes: 0,
        }
    }
}

/// Counts only: a million keys are no debugging aid.
impl fmt::Debug for Keyspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyspace")
            .field("len", &self.len)
            .field("expires_len", &self.expires_len())
            .field("data_bytes", &self.data_bytes)
            .finish_non_exhaustive()
    }
}

impl Keyspace {
    pub fn new() -> Keyspace {
        Keyspace::default()
    }

    /// Keys held, including expired ones not yet deleted (as Redis's DBSIZE).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys held that have an expiry time.
    pub fn expires_len(&self) -> usize {
        self.expiry_order.len()
    }

    /// Bytes of keys and values held (not counting any overhead).
    pub fn data_bytes(&self) -> usize {
        self.data_bytes
    }

    /// The key's value and expiry; `None` if it is absent or its time has
    /// come (`expire_at_unix_ms <= now_unix_ms`).
    pub fn get(&self, key: &[u8], now_unix_ms: u64) -> Option<Item<'_>> {
        self.record(key)
            .filter(|item| is_live(item.expire_at_unix_ms, now_unix_ms))
    }

    /// The key's value and expiry as held, even if its time has come (active
    /// expiry has not deleted it yet): what a transaction restores when it
    /// is undone, and what WATCH tells apart from an absent key.
    pub fn record(&self, key: &[u8]) -> Option<Item<'_>> {
        let place = locate(&self.hasher, key);
        let partition = &self.partitions[place.partition];
        let record = partition
            .records
            .find(place.table_hash, |record| record.key() == key)?;
        Some(Item {
            value: record.value(),
            expire_at_unix_ms: partition.expiry(place.table_hash, key),
        })
    }

    /// Applies one logged operation (see [`Operation`] for what each means).
    pub fn apply(&mut self, op: &Operation) {
        for change in op.changes() {
            self.apply_change(change);
        }
    }

    fn apply_change(&mut self, change: Change<'_>) {
        match change {
            Change::Set {
                key,
                value,
                expire_at_unix_ms,
            } => self.set(key, value, expire_at_unix_ms),
            Change::Delete { keys } => {
                for key in keys {
                    self.delete(key);
                }
            }
            Change::Expire { key, at_unix_ms } => {
                let place = locate(&self.hasher, key);
                let records = &self.partitions[place.partition].records;
                if records
                    .find(place.table_hash, |record| record.key() == key)
                    .is_some()
                {
                    self.assign_expiry(place, key, Some(at_unix_ms));
                }
            }
            // An absent key has no expiry to clear.
            Change::Persist { key } => self.assign_expiry(locate(&self.hasher, key), key, None),
            Change::FlushAll => {
                *self = Keyspace {
                    hasher: self.hasher,
                    ..Keyspace::new()
                }
            }
        }
    }

    /// Makes room for about `keys` more keys, spread evenly over the
    /// partitions (as the hash spreads keys), so that loading a snapshot or
    /// replaying a log does not rehash every partition as it grows. Callers
    /// bound `keys` (a snapshot's count, a log's length since its snapshot).
    pub fn reserve(&mut self, keys: usize) {
        let hasher = &self.hasher;
        let per_partition = keys.div_ceil(PARTITIONS);
        for partition in &mut self.partitions {
            partition.records.reserve(per_partition, |record| {
                locate(hasher, record.key()).table_hash
            });
        }
    }

    /// Adds a key read from a snapshot (replacing any key of that name).
    pub fn insert_loaded(&mut self, key: &[u8], value: &[u8], expire_at_unix_ms: Option<u64>) {
        self.set(key, value, expire_at_unix_ms);
    }

    fn set(&mut self, key: &[u8], value: &[u8], expire_at_unix_ms: Option<u64>) {
        let place = locate(&self.hasher, key);
        let hasher = &self.hasher;
        let records = &mut self.partitions[place.partition].records;
        let record = Record::new(key, value);
        match records.entry(
            place.table_hash,
            |record| record.key() == key,
            |record| locate(hasher, record.key()).table_hash,
        ) {
            TableEntry::Occupied(mut occupied) => {
                self.data_bytes -= occupied.get().data_bytes();
                *occupied.get_mut() = record;
            }
            TableEntry::Vacant(vacant) => {
                vacant.insert(record);
                self.len += 1;
            }
        }
        self.data_bytes += key.len() + value.len();
        self.assign_expiry(place, key, expire_at_unix_ms);
    }

    fn delete(&mut self, key: &[u8]) {
        let place = locate(&self.hasher, key);
        let records = &mut self.partitions[place.partition].records;
        if let Ok(found) = records.find_entry(place.table_hash, |record| record.key() == key) {
            let (record, _) = found.remove();
            self.len -= 1;
            self.data_bytes -= record.data_bytes();
            self.assign_expiry(place, key, None);
        }
    }

    /// Makes both expiry indexes say `at_unix_ms` for `key`, which exists
    /// (or, with `None`, may be absent: an absent key has no expiry).
    fn assign_expiry(&mut self, place: Place, key: &[u8], at_unix_ms: Option<u64>) {
        let hasher = &self.hasher;
        let expiries = &mut self.partitions[place.partition].expiries;
        let entry = expiries.entry(
            place.table_hash,
            |expiry| *expiry.key == *key,
            |expiry| locate(hasher, &expiry.key).table_hash,
        );
        let vacant = match entry {
            TableEntry::Occupied(occupied) if Some(occupied.get().at_unix_ms) == at_unix_ms => {
                return
            }
            TableEntry::Occupied(occupied) => {
                let (old, vacant) = occupied.remove();
                let removed = self.expiry_order.remove(&(old.at_unix_ms, old.key));
                assert!(removed, "an expiry in the table is in the time order too");
                vacant
            }
            TableEntry::Vacant(vacant) => vacant,
        };
        if let Some(at_unix_ms) = at_unix_ms {
            vacant.insert(Expiry {
                key: key.into(),
                at_unix_ms,
            });
            self.expiry_order.insert((at_unix_ms, key.into()));
        }
    }

    /// Up to `limit` keys whose time has come (`expire_at_unix_ms <= now`),
    /// earliest first; O(limit + log n).
    pub fn expired_keys(&self, now_unix_ms: u64, limit: usize) -> Vec<Vec<u8>> {
        self.expiry_order
            .iter()
            .take_while(|(at_unix_ms, _)| has_expired(*at_unix_ms, now_unix_ms))
            .take(limit)
            .map(|(_, key)| key.to_vec())
            .collect()
    }

    /// Every live key matching the [glob](glob_match) `pattern`.
    pub fn keys(&self, pattern: &[u8], now_unix_ms: u64) -> Vec<Vec<u8>> {
        (0..PARTITIONS)
            .flat_map(|partition| self.live_keys(partition, Some(pattern), now_unix_ms))
            .collect()
    }

    /// One SCAN step. Cursor 0 starts; a returned cursor of 0 means the walk
    /// is over; any other returned cursor has its low 32 bits zero (the
    /// caller's to use; they are ignored when given back). Walks whole
    /// partitions until at least `count` keys were examined (matching or not)
    /// or the last partition: a key present from the first step to the last
    /// is returned at least once (and may be returned twice). A cursor naming
    /// no partition ends the walk with no keys.
    pub fn scan(
        &self,
        cursor: u64,
        count: usize,
        pattern: Option<&[u8]>,
        now_unix_ms: u64,
    ) -> (u64, Vec<Vec<u8>>) {
        let mut partition = match usize::try_from(cursor >> SCAN_CURSOR_PARTITION_SHIFT_BITS) {
            Ok(partition) if partition < PARTITIONS => partition,
            _ => return (0, Vec::new()),
        };
        let mut examined = 0;
        let mut keys = Vec::new();
        // At least one partition per step, so that every step makes progress.
        while partition < PARTITIONS && (examined == 0 || examined < count) {
            examined += self.partitions[partition].records.len();
            keys.extend(self.live_keys(partition, pattern, now_unix_ms));
            partition += 1;
        }
        if partition == PARTITIONS {
            return (0, keys);
        }
        ((partition as u64) << SCAN_CURSOR_PARTITION_SHIFT_BITS, keys)
    }

    /// The live keys of one partition matching `pattern` (all if `None`). `*`
    /// matches every key without a call to [`glob_match`], as in Redis (where
    /// it also matches the empty key, which [`glob_match`] does not).
    fn live_keys<'a>(
        &'a self,
        partition: usize,
        pattern: Option<&'a [u8]>,
        now_unix_ms: u64,
    ) -> impl Iterator<Item = Vec<u8>> + 'a {
        let pattern = pattern.filter(|pattern| *pattern != b"*");
        self.partition_items(partition)
            .filter(move |(key, _, expire_at_unix_ms)| {
                is_live(*expire_at_unix_ms, now_unix_ms)
                    && pattern.is_none_or(|pattern| glob_match(pattern, key))
            })
            .map(|(key, _, _)| key.to_vec())
    }

    /// A live key chosen by `pick`: the held key at position `pick % len`
    /// (partitions in order, each in its table's order) or, if that one's
    /// time has come, the first live key after it, wrapping around; at most
    /// [`RANDOM_KEY_PROBES_MAX`] keys are looked at. `None` when no key is
    /// held or every key looked at has expired (active expiry removes them
    /// soon). The caller brings the randomness, so the key space stays
    /// deterministic: the same `pick` on the same state names the same key.
    pub fn random_key(&self, pick: u64, now_unix_ms: u64) -> Option<Vec<u8>> {
        if self.len == 0 {
            return None;
        }
        let mut skip = (pick % self.len as u64) as usize;
        let start = self.partitions.iter().position(|partition| {
            let held = partition.records.len();
            let here = skip < held;
            if !here {
                skip -= held;
            }
            here
        });
        let start = start.expect("len counts the records of every partition");
        let after = (start + 1..PARTITIONS).chain(0..=start);
        self.partition_items(start)
            .skip(skip)
            .chain(after.flat_map(|partition| self.partition_items(partition)))
            .take(RANDOM_KEY_PROBES_MAX)
            .find(|(_, _, expire_at_unix_ms)| is_live(*expire_at_unix_ms, now_unix_ms))
            .map(|(key, _, _)| key.to_vec())
    }

    /// Partitions, numbered `0..partition_count()`.
    pub fn partition_count(&self) -> usize {
        self.partitions.len()
    }

    /// Every key held in one partition, with its value and expiry, expired
    /// or not.
    pub fn partition_items(
        &self,
        partition: usize,
    ) -> impl Iterator<Item = (&[u8], &[u8], Option<u64>)> + '_ {
        assert!(
            partition < self.partitions.len(),
            "partition {partition} of {}",
            self.partitions.len()
        );
        let hasher = &self.hasher;
        let partition = &self.partitions[partition];
        partition.records.iter().map(move |record| {
            let (key, value) = record.parts();
            let expire_at_unix_ms = if partition.expiries.is_empty() {
                None
            } else {
                partition.expiry(locate(hasher, key).table_hash, key)
            };
            (key, value, expire_at_unix_ms)
        })
    }

    /// Every key held, with its value and absolute expiry, expired or not;
    /// partition by partition.
    pub fn items(&self) -> impl Iterator<Item = (&[u8], &[u8], Option<u64>)> + '_ {
        (0..self.partitions.len()).flat_map(|partition| self.partition_items(partition))
    }
}

/// A key and its value in one heap block, behind a thin pointer:
///
/// ```text
/// [key length: LEB128][value length: LEB128][key bytes][value bytes]
/// ```
///
/// The table then holds 8 bytes per key (a `Box<[u8]>` would take 16, a
/// pair of them 32), and with one-byte lengths a 16-byte key and a 100-byte
/// value fit one 128-byte glibc malloc chunk (fixed 4-byte lengths would
/// need 144).
struct Record {
    block: NonNull<u8>,
}

// SAFETY: a Record owns its block alone, as a Box<[u8]> does, and only lends
// it out through `&self`.
unsafe impl Send for Record {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for Record {}

impl Record {
    fn new(key: &[u8], value: &[u8]) -> Record {
        let block_bytes =
            leb128_bytes(key.len()) + leb128_bytes(value.len()) + key.len() + value.len();
        let mut block = Vec::with_capacity(block_bytes);
        push_leb128(&mut block, key.len());
        push_leb128(&mut block, value.len());
        block.extend_from_slice(key);
        block.extend_from_slice(value);
        assert!(
            block.len() == block_bytes,
            "a record's block is exactly its size"
        );
        Record {
            block: NonNull::from(Box::leak(block.into_boxed_slice())).cast::<u8>(),
        }
    }

    /// (header bytes, key bytes, value bytes).
    fn lengths(&self) -> (usize, usize, usize) {
        let mut offset = 0;
        let key_bytes = self.read_leb128(&mut offset);
        let value_bytes = self.read_leb128(&mut offset);
        (offset, key_bytes, value_bytes)
    }

    fn read_leb128(&self, offset: &mut usize) -> usize {
        let mut value = 0;
        let mut shift = 0;
        loop {
            // SAFETY: `Record::new` wrote both lengths at the start of the
            // block, and reading stops at the last byte of each (high bit
            // clear), so every byte read is inside the block.
            let byte = unsafe { *self.block.as_ptr().add(*offset) };
            *offset += 1;
            value |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return value;
            }
            shift += 7;
        }
    }

    /// (key, value), reading the lengths once.
    fn parts(&self) -> (&[u8], &[u8]) {
        let (header_bytes, key_bytes, value_bytes) = self.lengths();
        // SAFETY: `Record::new` leaked a boxed slice of exactly this length at
        // this address; it is freed only when `self` is dropped.
        let block = unsafe {
            slice::from_raw_parts(self.block.as_ptr(), header_bytes + key_bytes + value_bytes)
        };
        block[header_bytes..].split_at(key_bytes)
    }

    fn key(&self) -> &[u8] {
        self.parts().0
    }

    fn value(&self) -> &[u8] {
        self.parts().1
    }

    fn data_bytes(&self) -> usize {
        let (_, key_bytes, value_bytes) = self.lengths();
        key_bytes + value_bytes
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let (header_bytes, key_bytes, value_bytes) = self.lengths();
        let block = ptr::slice_from_raw_parts_mut(
            self.block.as_ptr(),
            header_bytes + key_bytes + value_bytes,
        );
        // SAFETY: the pointer and length are those of the boxed slice
        // `Record::new` leaked; this is the only place that frees it, once.
        drop(unsafe { Box::from_raw(block) });
    }
}

fn leb128_bytes(value: usize) -> usize {
    let significant_bits = usize::BITS - value.leading_zeros();
    (significant_bits as usize).div_ceil(7).max(1)
}

fn push_leb128(out: &mut Vec<u8>, mut value: usize) {
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Whether `text` matches the glob `pattern`, with Redis's `stringmatchlen`
/// semantics (case-sensitive): `*` any run of bytes, `?` one byte, `[abc]`,
/// `[^abc]`, `[a-z]` (also written `[z-a]`) one byte of a class, `\x` the
/// byte `x`. As in Redis, a class missing its `]` ends at the pattern's end,
/// and an empty text matches only an empty pattern (KEYS and SCAN treat `*`
/// apart). Bytes compare unsigned (Redis compares C `char`s, signed on x86).
///
/// Backtracks only to the last `*`: every other element matches exactly one
/// byte, so a later `*` can absorb whatever an earlier one would have. The
/// work is at most pattern length times text length, never exponential
/// (Redis's CVE-2022-36021 was `*a*a*a…b`).
///
/// Like Redis, a pattern with more than [`GLOB_STAR_GROUPS_MAX`] runs of `*`
/// followed by something else matches nothing: Redis recurses once per such
/// run and gives up past that depth, and clients see the empty answer.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    if text.is_empty() {
        return pattern.is_empty();
    }
    if inner_star_groups(pattern) > GLOB_STAR_GROUPS_MAX {
        return false;
    }
    let (mut pattern_at, mut text_at) = (0, 0);
    // After the last `*` met: where the pattern resumes, and the text
    // position the rest was last tried from.
    let mut last_star: Option<(usize, usize)> = None;
    while text_at < text.len() {
        if pattern.get(pattern_at) == Some(&b'*') {
            while pattern.get(pattern_at) == Some(&b'*') {
                pattern_at += 1;
            }
            if pattern_at == pattern.len() {
                return true;
            }
            last_star = Some((pattern_at, text_at));
        } else if let Some(next) = match_element(pattern, pattern_at, text[text_at]) {
            pattern_at = next;
            text_at += 1;
        } else if let Some((resume_at, tried_at)) = last_star {
            pattern_at = resume_at;
            text_at = tried_at + 1;
            last_star = Some((resume_at, text_at));
        } else {
            return false;
        }
    }
    pattern[pattern_at..].iter().all(|&byte| byte == b'*')
}

/// The most runs of `*` with more pattern after them that a pattern may hold
/// and still match: the nesting depth at which Redis 7's `stringmatchlen`
/// stops (its guard against stack exhaustion), kept so KEYS and SCAN answer
/// as Redis does.
pub const GLOB_STAR_GROUPS_MAX: usize = 1000;

/// Runs of `*` in `pattern` that are followed by another element.
fn inner_star_groups(pattern: &[u8]) -> usize {
    let (mut groups, mut at, mut in_star_run) = (0, 0, false);
    while at < pattern.len() {
        if pattern[at] == b'*' {
            in_star_run = true;
            at += 1;
        } else {
            groups += usize::from(in_star_run);
            in_star_run = false;
            at = element(pattern, at, 0).1;
        }
    }
    groups
}

/// Matches `byte` against the pattern element (not `*`) at `at`; returns
/// where the next element starts.
fn match_element(pattern: &[u8], at: usize, byte: u8) -> Option<usize> {
    if at >= pattern.len() {
        return None;
    }
    let (matched, next) = element(pattern, at, byte);
    matched.then_some(next)
}

/// Whether `byte` matches the element (not `*`) at `at`, which must exist,
/// and where the next element starts.
fn element(pattern: &[u8], at: usize, byte: u8) -> (bool, usize) {
    match pattern[at] {
        b'?' => (true, at + 1),
        b'[' => match_class(pattern, at + 1, byte),
        b'\\' if at + 1 < pattern.len() => (pattern[at + 1] == byte, at + 2),
        literal => (literal == byte, at + 1),
    }
}

/// Matches `byte` against the class whose body starts at `at` (after its
/// `[`), parsed as Redis does, quirks included (`[a-]` is the range `a`..`]`);
/// returns whether it matched and where the class ends.
fn match_class(pattern: &[u8], mut at: usize, byte: u8) -> (bool, usize) {
    let negated = pattern.get(at) == Some(&b'^');
    if negated {
        at += 1;
    }
    let mut matched = false;
    let end = loop {
        let Some(&element) = pattern.get(at) else {
            break pattern.len();
        };
        let remaining = pattern.len() - at;
        if element == b'\\' && remaining >= 2 {
            matched |= pattern[at + 1] == byte;
            at += 2;
        } else if element == b']' {
            break at + 1;
        } else if remaining >= 3 && pattern[at + 1] == b'-' {
            let (low, high) = (element.min(pattern[at + 2]), element.max(pattern[at + 2]));
            matched |= (low..=high).contains(&byte);
            at += 3;
        } else {
            matched |= element == byte;
            at += 1;
        }
    };
    (matched != negated, end)
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use proptest::prelude::*;

    use super::*;
    use crate::operation::SingleOp;

    fn set(key: &[u8], value: &[u8], expire_at_unix_ms: Option<u64>) -> Operation {
        Operation::Set {
            key: key.to_vec(),
            value: value.to_vec(),
            expire_at_unix_ms,
        }
    }

    fn delete(keys: &[&[u8]]) -> Operation {
        Operation::Delete {
            keys: keys.iter().map(|key| key.to_vec()).collect(),
        }
    }

    fn expire(key: &[u8], at_unix_ms: u64) -> Operation {
        Operation::Expire {
            key: key.to_vec(),
            at_unix_ms,
        }
    }

    fn persist(key: &[u8]) -> Operation {
        Operation::Persist { key: key.to_vec() }
    }

    fn value_of(
        keyspace: &Keyspace,
        key: &[u8],
        now_unix_ms: u64,
    ) -> Option<(Vec<u8>, Option<u64>)> {
        let item = keyspace.get(key, now_unix_ms)?;
        Some((item.value.to_vec(), item.expire_at_unix_ms))
    }

    fn sorted(mut keys: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        keys.sort();
        keys
    }

    #[test]
    fn records_hold_key_and_value_across_length_boundaries() {
        for key_bytes in [0, 1, 127, 128, 16_383, 16_384] {
            for value_bytes in [0, 1, 127, 128, 300_000] {
                let key = vec![b'k'; key_bytes];
                let value = vec![b'v'; value_bytes];
                let record = Record::new(&key, &value);
                assert_eq!(record.key(), &key[..]);
                assert_eq!(record.value(), &value[..]);
                assert_eq!(record.data_bytes(), key_bytes + value_bytes);
            }
        }
        assert_eq!(leb128_bytes(0), 1);
        assert_eq!(leb128_bytes(127), 1);
        assert_eq!(leb128_bytes(128), 2);
        assert_eq!(leb128_bytes(usize::MAX), 10);
    }

    #[test]
    fn set_replaces_value_and_expiry() {
        let mut keyspace = Keyspace::new();
        assert!(keyspace.is_empty());
        keyspace.apply(&set(b"k", b"one", Some(50)));
        assert_eq!(
            value_of(&keyspace, b"k", 10),
            Some((b"one".to_vec(), Some(50)))
        );
        assert_eq!(
            (
                keyspace.len(),
                keyspace.expires_len(),
                keyspace.data_bytes()
            ),
            (1, 1, 4)
        );
        keyspace.apply(&set(b"k", b"second", None));
        assert_eq!(
            value_of(&keyspace, b"k", 10),
            Some((b"second".to_vec(), None))
        );
        assert_eq!(
            (
                keyspace.len(),
                keyspace.expires_len(),
                keyspace.data_bytes()
            ),
            (1, 0, 7)
        );
        assert!(keyspace.expired_keys(u64::MAX, 10).is_empty());
        assert_eq!(keyspace.get(b"other", 10), None);
    }

    #[test]
    fn a_key_expires_at_its_time_but_stays_held() {
        let mut keyspace = Keyspace::new();
        keyspace.apply(&set(b"k", b"v", Some(100)));
        assert!(keyspace.get(b"k", 99).is_some());
        assert_eq!(keyspace.get(b"k", 100), None);
        assert_eq!(keyspace.len(), 1);
        assert_eq!(keyspace.expired_keys(99, 10), Vec::<Vec<u8>>::new());
        assert_eq!(keyspace.expired_keys(100, 10), vec![b"k".to_vec()]);
        assert_eq!(keyspace.keys(b"*", 100), Vec::<Vec<u8>>::new());
        assert_eq!(keyspace.items().count(), 1);
    }

    #[test]
    fn delete_removes_keys_and_their_expiry() {
        let mut keyspace = Keyspace::new();
        keyspace.apply(&set(b"a", b"1", Some(5)));
        keyspace.apply(&set(b"b", b"22", None));
        keyspace.apply(&delete(&[b"a", b"absent", b"a"]));
        assert_eq!(keyspace.get(b"a", 0), None);
        assert_eq!(
            (
                keyspace.len(),
                keyspace.expires_len(),
                keyspace.data_bytes()
            ),
            (1, 0, 3)
        );
        assert!(keyspace.expired_keys(u64::MAX, 10).is_empty());
        keyspace.apply(&delete(&[b"b"]));
        assert!(keyspace.is_empty());
        assert_eq!(keyspace.data_bytes(), 0);
    }

    #[test]
    fn expire_and_persist_change_only_existing_keys() {
        let mut keyspace = Keyspace::new();
        keyspace.apply(&expire(b"absent", 5));
        keyspace.apply(&persist(b"absent"));
        assert!(keyspace.is_empty());
        assert_eq!(keyspace.expires_len(), 0);

        keyspace.apply(&set(b"k", b"v", None));
        keyspace.apply(&expire(b"k", 30));
        assert_eq!(
            value_of(&keyspace, b"k", 0),
            Some((b"v".to_vec(), Some(30)))
        );
        keyspace.apply(&expire(b"k", 20));
        assert_eq!(keyspace.expires_len(), 1);
        assert_eq!(keyspace.expired_keys(25, 10), vec![b"k".to_vec()]);
        keyspace.apply(&expire(b"k", 20));
        assert_eq!(keyspace.expires_len(), 1);
        keyspace.apply(&persist(b"k"));
        assert_eq!(
            value_of(&keyspace, b"k", u64::MAX),
            Some((b"v".to_vec(), None))
        );
        assert_eq!(keyspace.expires_len(), 0);
        assert!(keyspace.expired_keys(u64::MAX, 10).is_empty());
    }

    #[test]
    fn flush_all_empties_everything() {
        let mut keyspace = Keyspace::new();
        keyspace.apply(&set(b"a", b"1", Some(5)));
        keyspace.apply(&set(b"b", b"2", None));
        keyspace.apply(&Operation::FlushAll);
        assert!(keyspace.is_empty());
        assert_eq!((keyspace.expires_len(), keyspace.data_bytes()), (0, 0));
        assert_eq!(keyspace.items().count(), 0);
        assert!(keyspace.expired_keys(u64::MAX, 10).is_empty());
    }

    #[test]
    fn batch_applies_its_operations_in_order() {
        let mut keyspace = Keyspace::new();
        keyspace.apply(&set(b"old", b"v", Some(7)));
        keyspace.apply(&Operation::Batch {
            ops: vec![
                SingleOp::Delete {
                    keys: vec![b"old".to_vec()],
                },
                SingleOp::Set {
                    key: b"new".to_vec(),
                    value: b"v".to_vec(),
                    expire_at_unix_ms: Some(7),
                },
                SingleOp::Set {
                    key: b"new".to_vec(),
                    value: b"w".to_vec(),
                    expire_at_unix_ms: None,
                },
            ],
        });
        assert_eq!(keyspace.get(b"old", 0), None);
        assert_eq!(value_of(&keyspace, b"new", 0), Some((b"w".to_vec(), None)));
        assert_eq!(keyspace.expires_len(), 0);
    }

    #[test]
    fn insert_loaded_adds_a_key_with_its_expiry() {
        let mut keyspace = Keyspace::new();
        keyspace.insert_loaded(b"k", b"v", Some(9));
        keyspace.insert_loaded(b"", b"", None);
        assert_eq!(value_of(&keyspace, b"k", 0), Some((b"v".to_vec(), Some(9))));
        assert_eq!(value_of(&keyspace, b"", 0), Some((Vec::new(), None)));
        assert_eq!(
            (
                keyspace.len(),
                keyspace.expires_len(),
                keyspace.data_bytes()
            ),
            (2, 1, 2)
        );
    }

    #[test]
    fn expired_keys_come_earliest_first_up_to_the_limit() {
        let mut keyspace = Keyspace::new();
        for (key, at) in [(&b"c"[..], 30), (b"a", 10), (b"b", 20), (b"late", 100)] {
            keyspace.apply(&set(key, b"v", Some(at)));
        }
        assert_eq!(
            keyspace.expired_keys(50, 2),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(keyspace.expired_keys(50, 10).len(), 3);
        assert!(keyspace.expired_keys(50, 0).is_empty());
    }

    #[test]
    fn keys_returns_live_matching_keys() {
        let mut keyspace = Keyspace::new();
        for key in ["key_x", "key_y", "key_z", "foo_a", "foo_b", "foo_c", ""] {
            keyspace.apply(&set(key.as_bytes(), b"hello", None));
        }
        keyspace.apply(&set(b"foo_gone", b"v", Some(5)));
        let found = |pattern: &[u8]| sorted(keyspace.keys(pattern, 5));
        let expected = |keys: &[&str]| {
            keys.iter()
                .map(|key| key.as_bytes().to_vec())
                .collect::<Vec<_>>()
        };
        assert_eq!(found(b"foo*"), expected(&["foo_a", "foo_b", "foo_c"]));
        assert_eq!(
            found(b"*"),
            expected(&["", "foo_a", "foo_b", "foo_c", "key_x", "key_y", "key_z"])
        );
        assert_eq!(found(b"*_[xy]"), expected(&["key_x", "key_y"]));
        assert_eq!(found(b"nothing"), expected(&[]));
    }

    #[test]
    fn random_key_names_every_live_key_and_skips_expired_ones() {
        let mut keyspace = Keyspace::new();
        assert_eq!(keyspace.random_key(7, 0), None, "empty");
        let live: Vec<Vec<u8>> = (0..50u32).map(|i| format!("k{i}").into_bytes()).collect();
        for key in &live {
            keyspace.apply(&set(key, b"v", None));
        }
        for i in 0..50u32 {
            keyspace.apply(&set(format!("gone{i}").as_bytes(), b"v", Some(5)));
        }
        let picked: BTreeSet<Vec<u8>> = (0..100u64)
            .map(|pick| keyspace.random_key(pick, 5).expect("a live key"))
            .collect();
        assert_eq!(
            picked,
            live.iter().cloned().collect(),
            "each of the 100 positions names a live key, and every live key is named"
        );
        assert_eq!(keyspace.random_key(3, 5), keyspace.random_key(103, 5));
        let mut expired = Keyspace::new();
        for i in 0..(RANDOM_KEY_PROBES_MAX as u32 + 1) {
            expired.apply(&set(format!("gone{i}").as_bytes(), b"v", Some(5)));
        }
        assert_eq!(expired.random_key(0, 5), None, "only expired keys");
        assert!(expired.random_key(0, 4).is_some(), "before their time");
    }

    #[test]
    fn scan_walks_every_partition_and_keeps_the_cursor_low_bits_free() {
        let mut keyspace = Keyspace::new();
        for index in 0..5_000 {
            keyspace.apply(&set(format!("key:{index}").as_bytes(), b"v", None));
        }
        keyspace.apply(&set(b"gone", b"v", Some(1)));
        let (mut cursor, mut seen, mut steps) = (0, Vec::new(), 0);
        loop {
            let (next, keys) = keyspace.scan(cursor, 10, None, 1);
            seen.extend(keys);
            steps += 1;
            if next == 0 {
                break;
            }
            assert_eq!(next & 0xffff_ffff, 0, "cursor {next:#x}");
            assert!(next > cursor, "a cursor moves forward");
            cursor = next | 7;
        }
        assert!(steps >= 5_000 / PARTITIONS, "{steps} steps");
        assert_eq!(sorted(seen.clone()).len(), 5_000);
        assert_eq!(HashSet::<Vec<u8>>::from_iter(seen).len(), 5_000);
        assert_eq!(
            keyspace.scan(0, usize::MAX, Some(b"key:49??"), 1).1.len(),
            100
        );
        assert_eq!(
            keyspace.scan((PARTITIONS as u64) << 32, 10, None, 1),
            (0, Vec::new())
        );
        assert_eq!(keyspace.scan(u64::MAX, 10, None, 1), (0, Vec::new()));
        assert_eq!(keyspace.partition_count(), PARTITIONS);
    }

    #[test]
    fn scan_of_an_empty_keyspace_ends_at_once() {
        assert_eq!(Keyspace::new().scan(0, 10, None, 0), (0, Vec::new()));
    }

    #[test]
    fn partitions_hold_every_key_once_with_its_expiry() {
        let mut keyspace = Keyspace::new();
        for index in 0..3_000u64 {
            let expiry = (index % 3 == 0).then_some(index);
            keyspace.apply(&set(
                format!("k{index}").as_bytes(),
                &index.to_le_bytes(),
                expiry,
            ));
        }
        let mut seen = HashMap::new();
        for partition in 0..keyspace.partition_count() {
            for (key, value, expiry) in keyspace.partition_items(partition) {
                assert!(seen
                    .insert(key.to_vec(), (value.to_vec(), expiry))
                    .is_none());
            }
        }
        assert_eq!(seen.len(), 3_000);
        let items: HashMap<_, _> = keyspace
            .items()
            .map(|(key, value, expiry)| (key.to_vec(), (value.to_vec(), expiry)))
            .collect();
        assert_eq!(keyspace.items().count(), 3_000);
        assert_eq!(items, seen, "items() is every partition's items");
        for index in 0..3_000u64 {
            let expiry = (index % 3 == 0).then_some(index);
            assert_eq!(
                seen[format!("k{index}").as_bytes()],
                (index.to_le_bytes().to_vec(), expiry)
            );
        }
    }

    #[test]
    fn glob_table() {
        let table: &[(&[u8], &[u8], bool)] = &[
            (b"", b"", true),
            (b"", b"a", false),
            (b"*", b"anything", true),
            (b"*", b"", false),
            (b"**", b"x", true),
            (b"h?llo", b"hello", true),
            (b"h?llo", b"hllo", false),
            (b"h*llo", b"heeeello", true),
            (b"h*llo", b"hllo", true),
            (b"h[ae]llo", b"hello", true),
            (b"h[ae]llo", b"hallo", true),
            (b"h[ae]llo", b"hillo", false),
            (b"h[^e]llo", b"hallo", true),
            (b"h[^e]llo", b"hello", false),
            (b"h[a-b]llo", b"hbllo", true),
            (b"h[a-b]llo", b"hcllo", false),
            (b"h[b-a]llo", b"hallo", true),
            (b"h\\*llo", b"h*llo", true),
            (b"h\\*llo", b"hello", false),
            (b"HELLO", b"hello", false),
            (b"foo*", b"foo_a", true),
            (b"foo*", b"fo", false),
            (b"{a}*", b"{a}x", true),
            (b"{a}*", b"{b}a", false),
            (b"*{b}*", b"{b}a", true),
            (b"*a*b", b"xaxxb", true),
            (b"*a*b", b"xaxxbx", false),
            (b"a*b*c", b"abxc", true),
            (b"a*", b"a", true),
            (b"a*?", b"a", false),
            (b"[abc", b"b", true),
            (b"[abc", b"d", false),
            (b"[", b"[", false),
            (b"[^", b"x", true),
            (b"[]", b"]", false),
            (b"[]a]", b"]a]", false),
            (b"[\\]]", b"]", true),
            (b"[\\]]", b"\\", false),
            (b"[a-]", b"^", true),
            (b"[a-]", b"b", false),
            (b"[a-]", b"-", false),
            (b"a\\", b"a\\", true),
            (b"\\", b"\\", true),
            (b"\x00*", b"\x00\xff", true),
            (b"[\x80-\xff]", b"\xc0", true),
            (b"[\x80-\xff]", b"a", false),
        ];
        for &(pattern, text, expected) in table {
            assert_eq!(
                glob_match(pattern, text),
                expected,
                "pattern {:?} text {:?}",
                Escaped(pattern),
                Escaped(text)
            );
            assert_eq!(
                redis_stringmatch(pattern, text),
                expected,
                "oracle disagrees on {:?}",
                Escaped(pattern)
            );
        }
    }

    use crate::operation::Escaped;

    /// Redis's regression test for CVE-2022-36021: a naive backtracking
    /// matcher takes exponential time on this.
    #[test]
    fn glob_has_no_exponential_blow_up() {
        let pattern = [&b"a"[..], &b"*a".repeat(60), b"*b"].concat();
        assert!(!glob_match(&pattern, &b"a".repeat(10_000)));
        assert!(!glob_match(&b"*a".repeat(60), &b"b".repeat(10_000)));
    }

    /// Redis gives up past 1,000 nested `*` runs ("very long nested loops" in
    /// its keyspace tests); runs inside a class, escaped or at the end count
    /// for nothing.
    #[test]
    fn glob_matches_nothing_past_the_star_group_limit() {
        let text = b"a".repeat(GLOB_STAR_GROUPS_MAX + 10);
        let at_limit = b"*?".repeat(GLOB_STAR_GROUPS_MAX);
        assert!(glob_match(&at_limit, &text));
        assert!(glob_match(&[&at_limit[..], b"**"].concat(), &text));
        let past_limit = b"*?".repeat(GLOB_STAR_GROUPS_MAX + 1);
        assert!(!glob_match(&past_limit, &text));
        assert!(!glob_match(&b"*?".repeat(50_000), &b"a".repeat(50_000)));
        let not_stars = [&at_limit[..], b"[*]", b"\\*", b"?"].concat();
        assert_eq!(inner_star_groups(&not_stars), GLOB_STAR_GROUPS_MAX);
        assert!(glob_match(&not_stars, &[&text[..], b"**a"].concat()));
    }

    /// Redis's `stringmatchlen` ported as written (recursive on `*`), the
    /// oracle [`glob_match`] is checked against on small inputs.
    fn redis_stringmatch(pattern: &[u8], text: &[u8]) -> bool {
        // C strings end in a NUL, which the original reads past the length.
        let at = |index: usize| pattern.get(index).copied().unwrap_or(0);
        let (mut p, mut s) = (0, 0);
        while p < pattern.len() && s < text.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && at(p + 1) == b'*' {
                        p += 1;
                    }
                    if pattern.len() - p == 1 {
                        return true;
                    }
                    return (s..text.len())
                        .any(|from| redis_stringmatch(&pattern[p + 1..], &text[from..]));
                }
                b'?' => s += 1,
                b'[' => {
                    p += 1;
                    let not = at(p) == b'^';
                    if not {
                        p += 1;
                    }
                    let mut matched = false;
                    loop {
                        let remaining = pattern.len() - p;
                        if at(p) == b'\\' && remaining >= 2 {
                            p += 1;
                            matched |= pattern[p] == text[s];
                        } else if at(p) == b']' {
                            break;
                        } else if remaining == 0 {
                            p -= 1;
                            break;
                        } else if remaining >= 3 && pattern[p + 1] == b'-' {
                            let (start, end) = (
                                pattern[p].min(pattern[p + 2]),
                                pattern[p].max(pattern[p + 2]),
                            );
                            p += 2;
                            matched |= start <= text[s] && text[s] <= end;
                        } else {
                            matched |= pattern[p] == text[s];
                        }
                        p += 1;
                    }
                    if matched == not {
                        return false;
                    }
                    s += 1;
                }
                literal => {
                    if literal == b'\\' && pattern.len() - p >= 2 {
                        p += 1;
                    }
                    if pattern[p] != text[s] {
                        return false;
                    }
                    s += 1;
                }
            }
            p += 1;
            if s == text.len() {
                while at(p) == b'*' {
                    p += 1;
                }
                break;
            }
        }
        p == pattern.len() && s == text.len()
    }

    proptest! {
        #[test]
        fn glob_matches_as_redis_does(
            pattern in proptest::collection::vec(proptest::sample::select(b"ab*?[]^-\\".to_vec()), 0..9),
            text in proptest::collection::vec(proptest::sample::select(b"ab]^-\\*".to_vec()), 0..7),
        ) {
            prop_assert_eq!(glob_match(&pattern, &text), redis_stringmatch(&pattern, &text));
        }
    }

    type Model = HashMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

    fn model_apply(model: &mut Model, op: &Operation) {
        for change in op.changes() {
            match change {
                Change::Set {
                    key,
                    value,
                    expire_at_unix_ms,
                } => {
                    model.insert(key.to_vec(), (value.to_vec(), expire_at_unix_ms));
                }
                Change::Delete { keys } => {
                    for key in keys {
                        model.remove(key);
                    }
                }
                Change::Expire { key, at_unix_ms } => {
                    if let Some(entry) = model.get_mut(key) {
                        entry.1 = Some(at_unix_ms);
                    }
                }
                Change::Persist { key } => {
                    if let Some(entry) = model.get_mut(key) {
                        entry.1 = None;
                    }
                }
                Change::FlushAll => model.clear(),
            }
        }
    }

    fn small_key() -> BoxedStrategy<Vec<u8>> {
        proptest::collection::vec(b'a'..=b'c', 0..3).boxed()
    }

    fn many_keys() -> BoxedStrategy<Vec<u8>> {
        (0..400u32)
            .prop_map(|index| format!("key:{index}").into_bytes())
            .boxed()
    }

    /// Any operation but a batch; FlushAll rarely, so that state builds up.
    fn single_op(key: BoxedStrategy<Vec<u8>>) -> BoxedStrategy<SingleOp> {
        prop_oneof![
            8 => (key.clone(), proptest::collection::vec(any::<u8>(), 0..8), proptest::option::of(0..20u64))
                .prop_map(|(key, value, expire_at_unix_ms)| SingleOp::Set { key, value, expire_at_unix_ms }),
            4 => proptest::collection::vec(key.clone(), 0..3).prop_map(|keys| SingleOp::Delete { keys }),
            4 => (key.clone(), 0..20u64).prop_map(|(key, at_unix_ms)| SingleOp::Expire { key, at_unix_ms }),
            2 => key.prop_map(|key| SingleOp::Persist { key }),
            1 => Just(SingleOp::FlushAll),
        ]
        .boxed()
    }

    fn any_op() -> impl Strategy<Value = Operation> {
        prop_oneof![
            9 => single_op(small_key()).prop_map(Operation::from),
            1 => proptest::collection::vec(single_op(small_key()), 0..4).prop_map(|ops| Operation::Batch { ops }),
        ]
    }

    fn every_small_key() -> Vec<Vec<u8>> {
        let letters = [b'a', b'b', b'c'];
        let mut keys = vec![Vec::new()];
        keys.extend(letters.iter().map(|&first| vec![first]));
        keys.extend(
            letters
                .iter()
                .flat_map(|&first| letters.iter().map(move |&second| vec![first, second])),
        );
        keys
    }

    fn assert_same_as_model(
        keyspace: &Keyspace,
        model: &Model,
        now_unix_ms: u64,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(keyspace.len(), model.len());
        prop_assert_eq!(
            keyspace.expires_len(),
            model
                .values()
                .filter(|(_, expiry)| expiry.is_some())
                .count()
        );
        let data_bytes: usize = model
            .iter()
            .map(|(key, (value, _))| key.len() + value.len())
            .sum();
        prop_assert_eq!(keyspace.data_bytes(), data_bytes);
        for key in every_small_key() {
            let expected = model
                .get(&key)
                .filter(|(_, expiry)| is_live(*expiry, now_unix_ms))
                .cloned();
            prop_assert_eq!(value_of(keyspace, &key, now_unix_ms), expected);
        }
        let mut due: Vec<(u64, Vec<u8>)> = model
            .iter()
            .filter_map(|(key, (_, expiry))| {
                expiry
                    .filter(|at| *at <= now_unix_ms)
                    .map(|at| (at, key.clone()))
            })
            .collect();
        due.sort();
        let due_keys: Vec<Vec<u8>> = due.into_iter().map(|(_, key)| key).collect();
        prop_assert_eq!(
            keyspace.expired_keys(now_unix_ms, usize::MAX),
            due_keys.clone()
        );
        prop_assert_eq!(
            keyspace.expired_keys(now_unix_ms, 2),
            due_keys.into_iter().take(2).collect::<Vec<_>>()
        );
        let held: Model = keyspace
            .items()
            .map(|(key, value, expiry)| (key.to_vec(), (value.to_vec(), expiry)))
            .collect();
        prop_assert_eq!(&held, model);
        Ok(())
    }

    proptest! {
        #[test]
        fn keyspace_behaves_as_a_map(ops in proptest::collection::vec(any_op(), 0..40), now_unix_ms in 0..22u64) {
            let mut keyspace = Keyspace::new();
            let mut model = Model::new();
            for op in &ops {
                keyspace.apply(op);
                model_apply(&mut model, op);
                assert_same_as_model(&keyspace, &model, now_unix_ms)?;
            }
        }

        /// A key present from the first SCAN step to the last is returned,
        /// whatever changes between steps.
        #[test]
        fn scan_returns_every_key_present_throughout(
            initial in proptest::collection::vec(single_op(many_keys()).prop_map(Operation::from), 0..300),
            steps in proptest::collection::vec((1..6usize, proptest::collection::vec(single_op(many_keys()).prop_map(Operation::from), 0..4)), 1..60),
        ) {
            const NOW_UNIX_MS: u64 = 10;
            let mut keyspace = Keyspace::new();
            initial.iter().for_each(|op| keyspace.apply(op));
            let mut present_throughout: HashSet<Vec<u8>> = keyspace.keys(b"*", NOW_UNIX_MS).into_iter().collect();
            let mut returned = HashSet::new();
            let mut cursor = 0;
            for step in 0.. {
                let (count, changes) = &steps[step % steps.len()];
                let (next, keys) = keyspace.scan(cursor, *count, None, NOW_UNIX_MS);
                for key in keys {
                    prop_assert!(keyspace.get(&key, NOW_UNIX_MS).is_some());
                    returned.insert(key);
                }
                if next == 0 {
                    break;
                }
                prop_assert_eq!(next & 0xffff_ffff, 0);
                cursor = next;
                changes.iter().for_each(|op| keyspace.apply(op));
                present_throughout.retain(|key| keyspace.get(key, NOW_UNIX_MS).is_some());
            }
            prop_assert!(present_throughout.is_subset(&returned));
        }
    }
}
