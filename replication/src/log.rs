//! The in-memory log: the entries since the last compaction.
//!
//! The core keeps every entry after the newest snapshot in memory; the driver
//! persists them (`Output::Persist`) in its WAL and compacts both with
//! `Input::Compacted` once it has a snapshot. Entries at or below the snapshot's
//! last entry are known only by that entry's id. The log also tracks the
//! commit index (never decreasing) and the durable index (what the driver
//! reported `Durable`, which a cut can lower).

use std::collections::VecDeque;

use crate::types::{Entry, EntryId, EntryPayload, LogIndex, Membership, SnapshotMeta, Term};

/// Bytes an entry costs on the wire besides its command: id, checksum, tags.
pub const ENTRY_OVERHEAD_BYTES: u64 = 32;

/// The size flow control charges for an entry.
pub fn entry_bytes(entry: &Entry) -> u64 {
    let payload = match &entry.payload {
        EntryPayload::Noop => 0,
        EntryPayload::Command(command) => command.len() as u64,
        EntryPayload::Membership(membership) => {
            8 * (membership.voters.len() + membership.learners.len()) as u64
        }
    };
    ENTRY_OVERHEAD_BYTES + payload
}

#[derive(Debug)]
pub(crate) struct Log {
    snapshot: SnapshotMeta,
    snapshot_data: Vec<u8>,
    /// `entries[0]` has index `snapshot.last.index + 1`.
    entries: VecDeque<Entry>,
    /// The entries the last compaction took out, until the driver takes
    /// them to free when it suits it (`Group::take_compacted`); the next
    /// compaction drops them if it did not.
    compacted: VecDeque<Entry>,
    /// The indexes of the membership entries in `entries`, oldest first (a
    /// change is rare), so that the membership in force at an index takes
    /// no scan of the log. A compaction needs it twice (the driver names it
    /// in the snapshot, the core checks it), and a scan of 400,000 entries
    /// takes 0.4-0.7 ms even with the entries in cache (docs/PERFORMANCE.md).
    memberships: VecDeque<LogIndex>,
    commit: LogIndex,
    durable: LogIndex,
}

impl Log {
    /// A log restored from disk: everything in it is durable, and the snapshot
    /// is committed. The entries are what the WAL holds, which may reach back
    /// before the snapshot, and may, after a crash, end in a suffix the
    /// snapshot superseded (a snapshot can be durable before the cut that
    /// removed that suffix is): see `following`.
    pub fn new(snapshot: SnapshotMeta, snapshot_data: Vec<u8>, entries: Vec<Entry>) -> Log {
        let mut log = Log {
            commit: snapshot.last.index,
            durable: snapshot.last.index,
            entries: VecDeque::with_capacity(entries.len()),
            compacted: VecDeque::new(),
            memberships: VecDeque::new(),
            snapshot,
            snapshot_data,
        };
        log.extend(following(&log.snapshot.last, &entries));
        log.durable = log.last().index;
        log
    }

    pub fn snapshot(&self) -> &SnapshotMeta {
        &self.snapshot
    }

    pub fn snapshot_data(&self) -> &[u8] {
        &self.snapshot_data
    }

    pub fn commit(&self) -> LogIndex {
        self.commit
    }

    pub fn durable(&self) -> LogIndex {
        self.durable
    }

    pub fn last(&self) -> EntryId {
        self.entries
            .back()
            .map_or(self.snapshot.last, |entry| entry.id)
    }

    pub fn entries(&self) -> impl DoubleEndedIterator<Item = &Entry> {
        self.entries.iter()
    }

    /// The term of the entry at `index`, if the log knows it (the snapshot's
    /// last entry included, anything before it not).
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.id_at(index).map(|id| id.term)
    }

    pub fn id_at(&self, index: LogIndex) -> Option<EntryId> {
        let first = self.snapshot.last.index;
        if index == first {
            return Some(self.snapshot.last);
        }
        if index < first {
            return None;
        }
        let position = usize::try_from(index.0 - first.0 - 1).ok()?;
        self.entries.get(position).map(|entry| entry.id)
    }

    /// The newest membership entry at or below `index` that the log holds,
    /// and its index (none at or below the snapshot's last entry).
    pub fn membership_at_or_below(&self, index: LogIndex) -> Option<(LogIndex, &Membership)> {
        let at = *self.memberships.iter().rev().find(|at| **at <= index)?;
        let position =
            usize::try_from(at.0 - self.snapshot.last.index.0 - 1).expect("index fits in memory");
        let entry = &self.entries[position];
        let EntryPayload::Membership(membership) = &entry.payload else {
            panic!(
                "the log's membership index {at} names a membership entry, not {:?}",
                entry.payload
            );
        };
        Some((at, membership))
    }

    /// Whether the log holds `id` (the log-matching check, §3.5).
    pub fn matches(&self, id: EntryId) -> bool {
        self.term_at(id.index) == Some(id.term)
    }

    /// Whether a candidate whose log ends at `last` is at least as up to date
    /// as this log (§3.6.1): a later last term, or the same and no shorter.
    pub fn is_up_to_date(&self, last: EntryId) -> bool {
        let own = self.last();
        (last.term, last.index) >= (own.term, own.index)
    }

    /// The last entry at or below `index` whose term is at most `term`: where a
    /// log that ends in conflicting terms can match at the earliest (the
    /// conflict hint, §3.5). `None` when the answer lies before the snapshot.
    pub fn last_at_or_below(&self, index: LogIndex, term: Term) -> Option<EntryId> {
        let top = index.min(self.last().index);
        let base = self.snapshot.last;
        if top > base.index {
            let end = usize::try_from(top.0 - base.index.0).expect("index fits in memory");
            let found = self
                .entries
                .range(..end)
                .rev()
                .find(|entry| entry.id.term <= term);
            if let Some(entry) = found {
                return Some(entry.id);
            }
        }
        (base.index <= top && base.term <= term).then_some(base)
    }

    /// Appends copies of `entries` (cheap: commands are shared).
    pub fn extend(&mut self, entries: &[Entry]) {
        let mut last = self.last();
        for entry in entries {
            assert_eq!(
                entry.id.index,
                last.index.next(),
                "entries are appended in order: {} after {last}",
                entry.id
            );
            assert!(
                entry.id.term >= last.term,
                "terms never decrease along the log: {} after {last}",
                entry.id
            );
            last = entry.id;
            if matches!(entry.payload, EntryPayload::Membership(_)) {
                self.memberships.push_back(entry.id.index);
            }
        }
        self.entries.extend(entries.iter().cloned());
    }

    /// Entries from `from` on, at least one if there is one, then as many as
    /// fit in `bytes_max`.
    pub fn slice(&self, from: LogIndex, bytes_max: u64) -> Vec<Entry> {
        let first = self.snapshot.last.index.next();
        assert!(from >= first, "entries before {first} are compacted");
        let mut bytes = 0;
        let mut slice = Vec::new();
        let start = usize::try_from(from.0 - first.0).expect("index fits in memory");
        for entry in self.entries.range(start..) {
            bytes += entry_bytes(entry);
            if !slice.is_empty() && bytes > bytes_max {
                break;
            }
            slice.push(entry.clone());
        }
        slice
    }

    /// Drops every entry after `after`. `check_commit` is false only for the
    /// planted `cut-below-commit` bug: the assert would stop the simulator
    /// from seeing what the bug does.
    pub fn cut_after(&mut self, after: EntryId, check_commit: bool) {
        if check_commit {
            assert!(
                after.index >= self.commit,
                "never cut at or below the commit index {}: cut after {after}",
                self.commit
            );
        }
        assert!(
            self.matches(after),
            "a cut keeps {after}, which is in the log"
        );
        let keep = usize::try_from(after.index.0 - self.snapshot.last.index.0)
            .expect("index fits in memory");
        self.entries.truncate(keep);
        self.forget_memberships_after(after.index);
        self.durable = self.durable.min(after.index);
    }

    pub fn set_commit(&mut self, index: LogIndex) {
        assert!(
            index >= self.commit,
            "the commit index never decreases: {} to {index}",
            self.commit
        );
        assert!(
            index <= self.last().index,
            "only entries in the log commit: {index} > {}",
            self.last()
        );
        self.commit = index;
    }

    /// `Durable { through }`: ignored when `through` was cut since.
    pub fn set_durable(&mut self, through: EntryId) -> bool {
        if !self.matches(through) || through.index <= self.durable {
            return false;
        }
        self.durable = through.index;
        true
    }

    /// Forgets the entries through `meta.last` (committed, so in the log).
    /// A snapshot no newer than the one held is ignored: the driver may
    /// finish one after the core installed a newer one from the leader.
    pub fn compact(&mut self, meta: SnapshotMeta, data: Vec<u8>) {
        if meta.last.index <= self.snapshot.last.index {
            return;
        }
        assert!(
            meta.last.index <= self.commit,
            "only committed entries are compacted: {} > commit {}",
            meta.last,
            self.commit
        );
        assert!(
            self.matches(meta.last),
            "the snapshot's last entry {} is in the log",
            meta.last
        );
        let drop = usize::try_from(meta.last.index.0 - self.snapshot.last.index.0)
            .expect("index fits in memory");
        // Moved out, not dropped: freeing a compaction's worth of entries
        // (400,000 of 100 bytes: 6.6 ms) would hold up the driver's next batch.
        // The kept entries get the capacity the log had: grown again from
        // their own length, the log doubled its way back, and each doubling
        // copied every entry at once (the last, 256k entries of 40 bytes, a
        // 10 MB copy into fresh pages, stalled the core for up to 29 ms at
        // 95k SET/s; docs/PERFORMANCE.md).
        let mut kept = VecDeque::with_capacity(self.entries.capacity());
        kept.extend(self.entries.drain(drop..));
        self.compacted = std::mem::replace(&mut self.entries, kept);
        self.forget_memberships_through(meta.last.index);
        self.snapshot = meta;
        self.snapshot_data = data;
    }

    /// The entries the last compaction took out of the log, if not taken yet.
    pub fn take_compacted(&mut self) -> VecDeque<Entry> {
        std::mem::take(&mut self.compacted)
    }

    /// Takes a snapshot received from the leader (§5.1, Figure 5.3): the entries after its
    /// last one stay only if that entry is in the log; otherwise all go.
    pub fn install(&mut self, meta: SnapshotMeta, data: Vec<u8>) {
        let last = meta.last;
        if self.matches(last) && last.index >= self.snapshot.last.index {
            let drop = usize::try_from(last.index.0 - self.snapshot.last.index.0)
                .expect("index fits in memory");
            self.entries.drain(..drop);
            self.forget_memberships_through(last.index);
            self.durable = self.durable.max(last.index);
        } else {
            self.entries.clear();
            self.memberships.clear();
            self.durable = last.index;
        }
        self.commit = self.commit.max(last.index);
        self.snapshot = meta;
        self.snapshot_data = data;
    }

    fn forget_memberships_after(&mut self, index: LogIndex) {
        while self.memberships.back().is_some_and(|at| *at > index) {
            self.memberships.pop_back();
        }
    }

    fn forget_memberships_through(&mut self, index: LogIndex) {
        while self.memberships.front().is_some_and(|at| *at <= index) {
            self.memberships.pop_front();
        }
    }
}

/// The entries that follow the snapshot's last entry `base`, as §5.1's rule
/// for an installed snapshot has it: those at or below `base` are covered;
/// the rest are kept only if the log holds `base` itself, or starts right
/// after it with a term no older. Otherwise they belong to a history the
/// committed snapshot superseded: uncommitted, and dropped.
fn following<'a>(base: &EntryId, entries: &'a [Entry]) -> &'a [Entry] {
    let after = entries.partition_point(|entry| entry.id.index <= base.index);
    let rest = &entries[after..];
    let Some(first) = rest.first() else {
        return rest;
    };
    assert_eq!(
        first.id.index,
        base.index.next(),
        "the restored log has a gap after the snapshot's {base}: the driver's WAL and snapshot disagree"
    );
    let chains = match entries[..after].last() {
        Some(at_base) if at_base.id.index == base.index => at_base.id == *base,
        _ => first.id.term >= base.term,
    };
    if chains {
        rest
    } else {
        &[]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NodeId;

    fn log_of_terms(terms: &[u64]) -> Log {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(position, term)| Entry {
                id: EntryId::new(*term, position as u64 + 1),
                payload: EntryPayload::Noop,
            })
            .collect();
        Log::new(SnapshotMeta::default(), Vec::new(), entries)
    }

    #[test]
    fn last_at_or_below_skips_whole_conflicting_terms() {
        let log = log_of_terms(&[1, 1, 2, 2, 3, 3]);
        assert_eq!(
            log.last_at_or_below(LogIndex(6), Term(2)),
            Some(EntryId::new(2, 4))
        );
        assert_eq!(
            log.last_at_or_below(LogIndex(9), Term(9)),
            Some(EntryId::new(3, 6))
        );
        assert_eq!(
            log.last_at_or_below(LogIndex(3), Term(1)),
            Some(EntryId::new(1, 2))
        );
        assert_eq!(
            log.last_at_or_below(LogIndex(6), Term(0)),
            Some(EntryId::ZERO)
        );
    }

    /// An entry at `index` of term 1: a membership of voters 1..=`voters`
    /// when `voters` is not 0, else a no-op.
    fn entry(index: u64, voters: u64) -> Entry {
        let payload = if voters == 0 {
            EntryPayload::Noop
        } else {
            EntryPayload::Membership(Box::new(Membership {
                voters: (1..=voters).map(NodeId).collect(),
                learners: Default::default(),
            }))
        };
        Entry {
            id: EntryId::new(1, index),
            payload,
        }
    }

    /// `membership_at_or_below` at every index the log answers for, against a
    /// scan of its entries.
    fn assert_memberships_match_a_scan(log: &Log) {
        for index in log.snapshot().last.index.0..=log.last().index.0 + 1 {
            let index = LogIndex(index);
            let scanned = log.entries().rev().find_map(|entry| match &entry.payload {
                EntryPayload::Membership(membership) if entry.id.index <= index => {
                    Some((entry.id.index, &**membership))
                }
                _ => None,
            });
            assert_eq!(log.membership_at_or_below(index), scanned, "at {index}");
        }
    }

    #[test]
    fn memberships_are_found_without_a_scan_across_appends_cuts_and_compactions() {
        // Memberships at 2, 5 and 7 among no-ops.
        let voters = [0, 3, 0, 0, 4, 0, 5, 0, 0, 0];
        let entries: Vec<Entry> = (1..=10)
            .map(|index| entry(index, voters[index as usize - 1]))
            .collect();
        let mut log = Log::new(SnapshotMeta::default(), Vec::new(), entries);
        assert_memberships_match_a_scan(&log);
        assert_eq!(
            log.membership_at_or_below(LogIndex(6)).map(|(at, _)| at),
            Some(LogIndex(5))
        );
        log.cut_after(EntryId::new(1, 6), true);
        assert_memberships_match_a_scan(&log);
        assert_eq!(
            log.membership_at_or_below(LogIndex(10)).map(|(at, _)| at),
            Some(LogIndex(5))
        );
        log.extend(&[entry(7, 0), entry(8, 6)]);
        assert_memberships_match_a_scan(&log);
        log.set_commit(LogIndex(8));
        let meta = |index: u64, voters: u64| SnapshotMeta {
            last: EntryId::new(1, index),
            membership: Membership {
                voters: (1..=voters).map(NodeId).collect(),
                learners: Default::default(),
            },
        };
        log.compact(meta(5, 4), Vec::new());
        assert_memberships_match_a_scan(&log);
        assert_eq!(
            log.membership_at_or_below(LogIndex(7)),
            None,
            "5 is the snapshot's now"
        );
        log.install(meta(8, 6), Vec::new());
        assert_memberships_match_a_scan(&log);
        assert_eq!(log.membership_at_or_below(LogIndex(8)), None);
        log.extend(&[entry(9, 2)]);
        log.install(meta(20, 2), Vec::new());
        assert_memberships_match_a_scan(&log);
        log.extend(&[entry(21, 3)]);
        assert_memberships_match_a_scan(&log);
        assert_eq!(
            log.membership_at_or_below(LogIndex(21)).map(|(at, _)| at),
            Some(LogIndex(21))
        );
    }

    #[test]
    fn compaction_keeps_the_capacity_the_log_grew_to() {
        let terms = vec![1; 1000];
        let mut log = log_of_terms(&terms);
        log.set_commit(LogIndex(900));
        let grown = log.entries.capacity();
        log.compact(
            SnapshotMeta {
                last: EntryId::new(1, 900),
                membership: Default::default(),
            },
            Vec::new(),
        );
        assert_eq!(log.entries.len(), 100);
        assert!(
            log.entries.capacity() >= grown,
            "the log refills to its size without reallocating: capacity {} < {grown}",
            log.entries.capacity()
        );
    }

    #[test]
    fn compaction_keeps_ids_and_hides_what_it_dropped() {
        let mut log = log_of_terms(&[1, 1, 2, 2]);
        log.set_commit(LogIndex(3));
        let meta = SnapshotMeta {
            last: EntryId::new(2, 3),
            membership: Default::default(),
        };
        log.compact(meta, vec![7]);
        let ids = |entries: VecDeque<Entry>| -> Vec<EntryId> {
            entries.iter().map(|entry| entry.id).collect()
        };
        assert_eq!(
            ids(log.take_compacted()),
            [EntryId::new(1, 1), EntryId::new(1, 2), EntryId::new(2, 3)],
            "the driver gets what compaction took out, to free"
        );
        assert!(log.take_compacted().is_empty(), "once");
        assert_eq!(log.term_at(LogIndex(3)), Some(Term(2)));
        assert_eq!(log.term_at(LogIndex(2)), None);
        assert_eq!(log.last(), EntryId::new(2, 4));
        assert_eq!(log.last_at_or_below(LogIndex(2), Term(1)), None);
        assert_eq!(log.slice(LogIndex(4), 0).len(), 1, "at least one entry");
        let older = SnapshotMeta {
            last: EntryId::new(1, 2),
            membership: Default::default(),
        };
        log.compact(older, vec![1]);
        assert_eq!(
            log.snapshot().last,
            EntryId::new(2, 3),
            "an older snapshot is ignored"
        );
        assert_eq!(log.snapshot_data(), &[7]);
    }

    #[test]
    fn a_restored_suffix_the_snapshot_superseded_is_dropped() {
        let entry = |term, index| Entry {
            id: EntryId::new(term, index),
            payload: EntryPayload::Noop,
        };
        let snapshot = |last| SnapshotMeta {
            last,
            membership: Default::default(),
        };
        let wal = vec![entry(1, 38), entry(1, 39), entry(1, 40)];
        let stale = Log::new(snapshot(EntryId::new(2, 39)), Vec::new(), wal.clone());
        assert_eq!(
            stale.last(),
            EntryId::new(2, 39),
            "1.39 is not the snapshot's 2.39"
        );
        let held = Log::new(snapshot(EntryId::new(1, 39)), Vec::new(), wal);
        assert_eq!(
            held.last(),
            EntryId::new(1, 40),
            "the WAL holds 1.39: 1.40 follows"
        );
        let older_term = vec![entry(1, 40)];
        let dropped = Log::new(snapshot(EntryId::new(2, 39)), Vec::new(), older_term);
        assert_eq!(
            dropped.last(),
            EntryId::new(2, 39),
            "term 1 cannot follow 2.39"
        );
        let next = vec![entry(2, 40), entry(3, 41)];
        let kept = Log::new(snapshot(EntryId::new(2, 39)), Vec::new(), next);
        assert_eq!(kept.last(), EntryId::new(3, 41));
        assert_eq!(kept.durable(), LogIndex(41));
    }

    #[test]
    #[should_panic(expected = "the restored log has a gap after the snapshot's 1.36")]
    fn a_restored_log_with_a_gap_after_the_snapshot_panics() {
        let snapshot = SnapshotMeta {
            last: EntryId::new(1, 36),
            membership: Default::default(),
        };
        let entries = vec![Entry {
            id: EntryId::new(1, 66),
            payload: EntryPayload::Noop,
        }];
        Log::new(snapshot, Vec::new(), entries);
    }

    #[test]
    #[should_panic(expected = "never cut at or below the commit index")]
    fn a_cut_at_the_commit_index_panics() {
        let mut log = log_of_terms(&[1, 1, 1]);
        log.set_commit(LogIndex(2));
        log.cut_after(EntryId::new(1, 1), true);
    }
}
