//! One simulated member: its core and the driver around it, executing the
//! core's outputs in order exactly as the real driver must. `Persist` and
//! `Cut` change the live log at once and the durable one only when a sync
//! completes (after a seeded delay); `SendAfterDurable` waits for that sync; a
//! crash keeps only what a sync made durable, and the restarted core starts
//! from it.

use crate::config::Restored;
use crate::types::{CommandBytes, Entry, EntryId, EntryPayload, HardState, LogIndex, SnapshotMeta};

/// A log as the driver holds it: the entries after a snapshot's last one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Log {
    /// The last entry the snapshot covers (`EntryId::ZERO` if none).
    pub base: EntryId,
    pub entries: Vec<Entry>,
}

impl Log {
    pub fn last(&self) -> EntryId {
        self.entries.last().map_or(self.base, |entry| entry.id)
    }

    /// The entry at `index`, if the log holds it (not compacted, not beyond).
    pub fn get(&self, index: LogIndex) -> Option<&Entry> {
        let offset = index.0.checked_sub(self.base.index.0 + 1)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// The id at `index`: an entry's, or the base's if `index` is the base.
    pub fn id_at(&self, index: LogIndex) -> Option<EntryId> {
        if index == self.base.index {
            return Some(self.base);
        }
        self.get(index).map(|entry| entry.id)
    }

    /// Appends `entries`, skipping those a snapshot already covers. Returns
    /// false (and appends nothing) if they do not follow the log's last entry.
    pub fn append(&mut self, entries: Vec<Entry>) -> bool {
        let base = self.base.index;
        let fresh = entries.iter().position(|entry| entry.id.index > base);
        let Some(fresh) = fresh else {
            return true;
        };
        if entries[fresh].id.index.0 != self.last().index.0 + 1 {
            return false;
        }
        self.entries.extend(entries.into_iter().skip(fresh));
        true
    }

    /// Removes every entry after index `after`.
    pub fn cut(&mut self, after: LogIndex) {
        let keep = after.0.saturating_sub(self.base.index.0);
        self.entries
            .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
    }

    /// Drops what a snapshot through `last` covers: the prefix if the log
    /// holds `last`, else everything (Raft §7: a conflicting log is
    /// discarded).
    pub fn compact(&mut self, last: EntryId) {
        if last.index <= self.base.index {
            return;
        }
        if self.id_at(last.index) == Some(last) {
            let drop = (last.index.0 - self.base.index.0) as usize;
            self.entries.drain(..drop);
        } else {
            self.entries.clear();
        }
        self.base = last;
    }

    /// Drops the entries through `last` if the log holds `last`; otherwise
    /// leaves the log as it is.
    pub fn drop_through(&mut self, last: EntryId) {
        if last.index > self.base.index && self.id_at(last.index) == Some(last) {
            self.compact(last);
        }
    }

    /// The entries after `last`, if the log holds `last` (Raft §7: a log
    /// that does not hold a snapshot's last entry has nothing to add to it).
    pub fn after(&self, last: EntryId) -> Vec<Entry> {
        if self.id_at(last.index) != Some(last) {
            return Vec::new();
        }
        let skip = (last.index.0 - self.base.index.0) as usize;
        self.entries[skip..].to_vec()
    }
}

/// What survives a crash: what syncs made durable. The log is the WAL: the
/// writes in the order they were asked for, whatever snapshots were taken
/// meanwhile; a restart takes from it what follows the snapshot.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub hard_state: HardState,
    /// The newest snapshot and its state machine bytes. A new cluster starts
    /// from one at `EntryId::ZERO` naming the first voters.
    pub snapshot: SnapshotMeta,
    pub snapshot_data: Vec<u8>,
    pub log: Log,
}

/// A write the core asked for that no sync has covered yet.
#[derive(Clone, Debug)]
pub enum PendingWrite {
    Cut(EntryId),
    Persist {
        hard_state: Option<HardState>,
        entries: Vec<Entry>,
    },
    Install {
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
}

impl Disk {
    /// A sync completed: `write` is durable.
    pub fn apply(&mut self, write: PendingWrite) {
        match write {
            PendingWrite::Cut(after) => self.log.cut(after.index),
            PendingWrite::Persist {
                hard_state,
                entries,
            } => {
                if let Some(hard_state) = hard_state {
                    self.hard_state = hard_state;
                }
                assert!(
                    self.log.append(entries),
                    "durable writes apply in the order the live log took them"
                );
            }
            PendingWrite::Install { meta, data } => {
                // In the order of the writes: the log is the core's at the
                // install, which keeps what follows `meta.last` if it holds it.
                self.log.compact(meta.last);
                // The driver may have saved a newer snapshot of its own
                // meanwhile (it applied further before this sync): an older
                // one must not replace it (seed 26328 at 5 voters).
                if meta.last.index > self.snapshot.last.index {
                    self.snapshot = meta;
                    self.snapshot_data = data;
                }
            }
        }
    }

    /// The driver's own snapshot through `meta.last`, written whole at once
    /// (a new file, synced and renamed) while writes may still be pending:
    /// the WAL drops its prefix only if it already holds `meta.last`.
    pub fn save_snapshot(&mut self, meta: SnapshotMeta, data: Vec<u8>) {
        self.log.drop_through(meta.last);
        self.snapshot = meta;
        self.snapshot_data = data;
    }

    /// Recovery at start-up: the WAL keeps only what follows the snapshot.
    pub fn recover(&mut self) {
        self.log = Log {
            base: self.snapshot.last,
            entries: self.log.after(self.snapshot.last),
        };
    }

    /// What a restarted core starts from.
    pub fn restored(&self) -> Restored {
        Restored {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            snapshot_data: self.snapshot_data.clone(),
            entries: self.log.after(self.snapshot.last),
        }
    }
}

/// Number of keys of the simulated state machine.
pub const STATE_KEYS: usize = 16;
/// Bytes a snapshot of the state machine takes (padded), so that snapshot
/// transfer needs several chunks whenever the core's chunk size is small.
pub const SNAPSHOT_BYTES: usize = 256;

/// The replicated state machine: `STATE_KEYS` registers, each set by a
/// command, and a hash chain over every applied entry (so two replicas that
/// applied different entries differ).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateMachine {
    pub values: [u64; STATE_KEYS],
    pub chain: u64,
    pub applied: EntryId,
}

/// A command: which register, and the value (unique per write).
pub fn command_bytes(key: u8, value: u64) -> CommandBytes {
    let mut bytes = vec![key];
    bytes.extend_from_slice(&value.to_le_bytes());
    bytes.into()
}

fn parse_command(bytes: &[u8]) -> Option<(usize, u64)> {
    let (key, value) = bytes.split_first()?;
    let value = u64::from_le_bytes(value.try_into().ok()?);
    Some((usize::from(*key) % STATE_KEYS, value))
}

impl StateMachine {
    /// Applies the next entry; returns the value a command wrote.
    pub fn apply(&mut self, entry: &Entry) -> Option<u64> {
        assert_eq!(
            entry.id.index.0,
            self.applied.index.0 + 1,
            "entries apply in order"
        );
        self.chain = super::mix(self.chain ^ entry.id.term.0, entry.id.index.0);
        self.applied = entry.id;
        let EntryPayload::Command(command) = &entry.payload else {
            return None;
        };
        let (key, value) = parse_command(command).expect("the workload's commands parse");
        self.values[key] = value;
        Some(value)
    }

    pub fn snapshot(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(SNAPSHOT_BYTES);
        for value in self.values {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        bytes.extend_from_slice(&self.chain.to_le_bytes());
        bytes.extend_from_slice(&self.applied.term.0.to_le_bytes());
        bytes.extend_from_slice(&self.applied.index.0.to_le_bytes());
        bytes.resize(SNAPSHOT_BYTES, 0xAA);
        bytes
    }

    /// The state a snapshot holds, or None if its bytes are not one of ours.
    pub fn restore(bytes: &[u8]) -> Option<StateMachine> {
        if bytes.len() != SNAPSHOT_BYTES {
            return None;
        }
        let words: Vec<u64> = bytes
            .chunks_exact(8)
            .take(STATE_KEYS + 3)
            .map(|word| u64::from_le_bytes(word.try_into().expect("8 bytes")))
            .collect();
        let mut values = [0; STATE_KEYS];
        values.copy_from_slice(&words[..STATE_KEYS]);
        Some(StateMachine {
            values,
            chain: words[STATE_KEYS],
            applied: EntryId::new(words[STATE_KEYS + 1], words[STATE_KEYS + 2]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            id: EntryId::new(term, index),
            payload: EntryPayload::Noop,
        }
    }

    #[test]
    fn a_log_appends_cuts_and_compacts_by_index() {
        let mut log = Log::default();
        assert!(log.append(vec![entry(1, 1), entry(1, 2), entry(2, 3)]));
        assert!(!log.append(vec![entry(2, 5)]), "a gap is refused");
        assert_eq!(log.last(), EntryId::new(2, 3));
        log.cut(LogIndex(2));
        assert_eq!(log.last(), EntryId::new(1, 2));
        log.compact(EntryId::new(1, 1));
        assert_eq!(log.get(LogIndex(1)), None);
        assert_eq!(log.id_at(LogIndex(1)), Some(EntryId::new(1, 1)));
        assert_eq!(log.get(LogIndex(2)), Some(&entry(1, 2)));
        log.compact(EntryId::new(9, 2));
        assert_eq!((log.base, log.entries.len()), (EntryId::new(9, 2), 0));
    }

    /// A regression (seed 25325): a deposed leader's WAL held a stale tail
    /// when the driver snapshotted a later term's entries; the sync that
    /// followed appended the stale writes still pending, in order, to a WAL
    /// the snapshot had already emptied.
    #[test]
    fn a_snapshot_saved_while_writes_are_pending_leaves_the_wal_in_order() {
        let mut disk = Disk::default();
        disk.apply(PendingWrite::Persist {
            hard_state: None,
            entries: vec![entry(1, 1), entry(1, 2)],
        });
        let pending = [
            PendingWrite::Persist {
                hard_state: None,
                entries: vec![entry(1, 3)],
            },
            PendingWrite::Cut(EntryId::new(1, 1)),
            PendingWrite::Persist {
                hard_state: None,
                entries: vec![entry(2, 2), entry(2, 3)],
            },
        ];
        let meta = SnapshotMeta {
            last: EntryId::new(2, 2),
            ..SnapshotMeta::default()
        };
        disk.save_snapshot(meta.clone(), Vec::new());
        assert_eq!(
            disk.restored().entries,
            Vec::new(),
            "nothing follows 2.2 yet"
        );
        for write in pending {
            disk.apply(write);
        }
        assert_eq!(disk.restored().entries, vec![entry(2, 3)]);
        disk.save_snapshot(meta, Vec::new());
        assert_eq!(disk.log.base, EntryId::new(2, 2), "now the prefix goes");
    }

    /// A regression (seed 26328 at 5 voters): a received snapshot's install
    /// was still pending when the driver saved a newer snapshot of its own;
    /// the sync must not bring the older one back.
    #[test]
    fn a_pending_install_does_not_replace_a_newer_saved_snapshot() {
        let mut disk = Disk::default();
        let older = SnapshotMeta {
            last: EntryId::new(1, 136),
            ..SnapshotMeta::default()
        };
        let newer = SnapshotMeta {
            last: EntryId::new(1, 165),
            ..SnapshotMeta::default()
        };
        disk.save_snapshot(newer.clone(), vec![1]);
        disk.apply(PendingWrite::Install {
            meta: older,
            data: vec![2],
        });
        assert_eq!(
            (disk.snapshot.clone(), disk.snapshot_data.clone()),
            (newer, vec![1])
        );
    }

    #[test]
    fn a_snapshot_restores_the_state_it_was_taken_from() {
        let mut state = StateMachine::default();
        state.apply(&Entry {
            id: EntryId::new(1, 1),
            payload: EntryPayload::Command(command_bytes(3, 77)),
        });
        assert_eq!(StateMachine::restore(&state.snapshot()), Some(state));
    }
}
