//! What damage to synced data may excuse (`--damage`), and nothing more.
//!
//! A damage fault (a flipped bit in a write, a misdirected write) touches the
//! log entries [`FaultEvent::entries`] names. The node may answer it two ways
//! without a failure:
//! - refuse to start, naming (as the entry it expected) one of those entries,
//!   or a damaged snapshot or hard-state file (its term and vote: a guess at
//!   them could vote twice in a term, so the node stops for an operator);
//! - lose acknowledged entries from one of them on (damage to the last
//!   synced batch looks torn, and recovery cuts it: the single-copy limit).
//!
//! A refusal or a loss anywhere else is a failure, whatever else the fault
//! log holds. Once a recovery ends a shard's log at index `i`, damaged entries
//! after `i` are gone for good: a later entry with the same index is a new
//! frame, and damage to the old one excuses nothing about it.

use std::collections::{BTreeMap, BTreeSet};

use keel_engine::node::hard_state::HARD_STATE_FILE;
use keel_engine::node::{shard_dir_name, NodeError, RecoverySummary};
use keel_wal::segment::{file_role, FileRole};
use keel_wal::{RecoveryError, WalError};

use crate::disk::{FaultEvent, FaultMode};
use crate::ledger::Violation;

/// Suffix of snapshot files (and of their temporary names, `.snap.tmp`).
const SNAPSHOT_MARK: &str = ".snap";

/// The damage a run's disk took so far, per shard directory.
#[derive(Debug, Default)]
pub struct DamageExcuses {
    /// Entries a damage fault touched, still in the log or never replaced.
    entries: BTreeMap<String, BTreeSet<u64>>,
    /// Directories where a damage fault hit a snapshot file.
    snapshots: BTreeSet<String>,
    /// Directories where a damage fault hit the hard-state file (or its
    /// temporary name, renamed over it once synced).
    hard_states: BTreeSet<String>,
    /// Faults of the disk's log already taken in.
    faults_seen: usize,
}

impl DamageExcuses {
    /// Takes in the damage faults of `log` (the disk's whole fault log) not
    /// seen before.
    pub fn absorb(&mut self, log: &[FaultEvent]) {
        for fault in &log[self.faults_seen.min(log.len())..] {
            if fault.kind.mode() != FaultMode::Damage {
                continue;
            }
            let file = fault.file.as_deref().unwrap_or_default();
            if file.contains(SNAPSHOT_MARK) {
                self.snapshots.insert(fault.dir.clone());
            }
            if file.starts_with(HARD_STATE_FILE) {
                self.hard_states.insert(fault.dir.clone());
            }
            self.entries
                .entry(fault.dir.clone())
                .or_default()
                .extend(&fault.entries);
        }
        self.faults_seen = log.len();
    }

    fn touched(&self, shard: u32, index: u64) -> bool {
        self.entries
            .get(&shard_dir_name(shard))
            .is_some_and(|entries| entries.contains(&index))
    }

    fn any_in(&self, shard: u32) -> bool {
        let dir = shard_dir_name(shard);
        self.snapshots.contains(&dir) || self.entries.get(&dir).is_some_and(|e| !e.is_empty())
    }

    /// Whether damage explains this refused start: it names a damaged entry
    /// (or segment), or a shard whose snapshot or hard state was hit.
    pub fn explains_refusal(&self, error: &NodeError) -> bool {
        match error {
            NodeError::Wal {
                shard,
                source: WalError::Recovery(RecoveryError::Corrupt { index, .. }),
            } => self.touched(*shard, index.0),
            NodeError::Wal {
                shard,
                source: WalError::Recovery(RecoveryError::Segment { file, .. }),
            } => {
                let name = file.rsplit('/').next().unwrap_or(file);
                matches!(file_role(name), FileRole::Segment(first) if self.touched(*shard, first.0))
            }
            NodeError::Entry { shard, index, .. } => self.touched(*shard, *index),
            NodeError::Snapshot { shard, .. } => self.snapshots.contains(&shard_dir_name(*shard)),
            NodeError::HardState { shard, source } => {
                source.is_damage() && self.hard_states.contains(&shard_dir_name(*shard))
            }
            // Which of the two sides is short is not named: any damage to
            // the shard may explain it.
            NodeError::Gap { shard, .. } => self.any_in(*shard),
            _ => false,
        }
    }

    /// Whether damage explains a ledger violation found at a recovery: a
    /// loss that begins at a damaged entry.
    pub fn explains_loss(&self, violation: &Violation) -> bool {
        match violation {
            Violation::LostAcknowledged {
                shard, recovered, ..
            } => self.touched(*shard, recovered + 1),
            _ => false,
        }
    }

    /// A recovery ended each shard's log where `summaries` say: damaged
    /// entries after that are gone (see the module doc).
    pub fn recovered(&mut self, summaries: &[RecoverySummary]) {
        for summary in summaries {
            if let Some(entries) = self.entries.get_mut(&shard_dir_name(summary.shard)) {
                entries.retain(|index| *index <= summary.last_index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use keel_wal::recovery::Corruption;
    use keel_wal::scan::BadFrame;
    use keel_wal::segment::segment_name;
    use keel_wal::{run_ready, LogIndex, MemStorage, Term, Wal, WalOptions};

    use keel_engine::node::hard_state::HardStateError;

    use super::*;
    use crate::disk::{touched_entries, FaultKind};

    /// A segment holding entries 1..=3 in one batch at 4096.
    fn segment_bytes() -> Vec<u8> {
        let disk = MemStorage::new();
        let (mut wal, _) = run_ready(Wal::open(disk.clone(), WalOptions::test_min())).unwrap();
        for index in 1..=3 {
            wal.append(Term(1), format!("entry {index}").as_bytes())
                .unwrap();
        }
        run_ready(wal.sync()).unwrap();
        disk.contents(&segment_name(LogIndex(1))).unwrap()
    }

    #[test]
    fn a_fault_touches_the_entries_of_the_frames_it_hits() {
        let bytes = segment_bytes();
        let batch = &bytes[4096..8192];
        let all: BTreeSet<u64> = [1, 2, 3, 4].into();
        // The whole batch: its entries, and the one expected after them.
        assert_eq!(touched_entries(batch, 4096, 0..batch.len()), all);
        // A byte of the first frame's header; the padding after the last.
        assert_eq!(touched_entries(batch, 4096, 8..9), [1].into());
        assert_eq!(touched_entries(batch, 4096, 4000..4001), [4].into());
        // The segment header names the segment's first entry.
        assert_eq!(touched_entries(&bytes[..4096], 0, 100..101), [1].into());
    }

    fn fault(entries: &[u64]) -> FaultEvent {
        FaultEvent {
            dir: shard_dir_name(1),
            file: Some(segment_name(LogIndex(5))),
            offset: 4096,
            kind: FaultKind::MisdirectedWrite { intended: 8192 },
            entries: entries.iter().copied().collect(),
        }
    }

    fn refusal(shard: u32, index: u64) -> NodeError {
        let source = WalError::Recovery(RecoveryError::Corrupt {
            file: "sim:shard-0001/00000000000000000005.wal".into(),
            segment: LogIndex(5),
            offset: 4096,
            index: LogIndex(index),
            cause: Corruption::Frame {
                cause: BadFrame::Zero,
                later: None,
                sealed: false,
            },
        });
        NodeError::Wal { shard, source }
    }

    fn lost(shard: u32, recovered: u64) -> Violation {
        Violation::LostAcknowledged {
            shard,
            recovered,
            acknowledged: recovered + 2,
        }
    }

    /// Damage excuses a refusal or a loss at the entries it touched, in its
    /// shard, until a recovery cuts them off; nothing else.
    #[test]
    fn only_what_damage_touched_is_excused() {
        let mut excuses = DamageExcuses::default();
        assert!(!excuses.explains_refusal(&refusal(1, 6)));
        excuses.absorb(&[fault(&[6, 7])]);
        assert!(excuses.explains_refusal(&refusal(1, 6)));
        assert!(!excuses.explains_refusal(&refusal(1, 8)));
        assert!(!excuses.explains_refusal(&refusal(0, 6)));
        assert!(excuses.explains_loss(&lost(1, 5)));
        assert!(!excuses.explains_loss(&lost(1, 7)));
        let summary = RecoverySummary {
            shard: 1,
            last_index: 5,
            ..RecoverySummary::default()
        };
        excuses.recovered(&[summary]);
        assert!(!excuses.explains_refusal(&refusal(1, 6)));
        assert!(!excuses.explains_loss(&lost(1, 5)));
    }

    /// A flipped bit in the hard-state file (written under its temporary
    /// name) excuses that shard's refusal of a malformed hard state, and
    /// not of an unreadable one.
    #[test]
    fn damage_to_the_hard_state_excuses_its_refusal() {
        let hard_state_refusal =
            |shard: u32, source: HardStateError| NodeError::HardState { shard, source };
        let malformed = || HardStateError::Malformed {
            file: "sim:shard-0001/hardstate".into(),
            has_vote: 1,
        };
        let unreadable = || HardStateError::Io {
            op: "map",
            file: "sim:shard-0001/hardstate".into(),
            source: std::io::Error::other("injected latent read error"),
        };
        let mut excuses = DamageExcuses::default();
        assert!(!excuses.explains_refusal(&hard_state_refusal(1, malformed())));
        excuses.absorb(&[FaultEvent {
            dir: shard_dir_name(1),
            file: Some("hardstate.tmp".into()),
            offset: 325,
            kind: FaultKind::WriteBitFlip { bit: 4 },
            entries: BTreeSet::new(),
        }]);
        assert!(excuses.explains_refusal(&hard_state_refusal(1, malformed())));
        assert!(!excuses.explains_refusal(&hard_state_refusal(0, malformed())));
        assert!(!excuses.explains_refusal(&hard_state_refusal(1, unreadable())));
    }
}
