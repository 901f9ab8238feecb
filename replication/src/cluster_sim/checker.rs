//! The properties every seed must keep, checked as the outputs happen (Raft
//! Figure 3.2's safety properties, and what Keel's clients are promised):
//! - election safety: at most one leader per term (a leader is whoever sends
//!   appends in a term);
//! - log matching: two logs holding the same entry id hold the same payload
//!   there and the same entry before it;
//! - leader completeness: a node that starts leading a term holds every
//!   entry committed in an earlier term;
//! - the leader's commit rule: a leader commits by counting replicas of an
//!   entry of its own term only (§3.6.2, Figure 3.7);
//! - state machine safety: every node commits the same entry at each index,
//!   and a committed entry is never lost (a later commit of another entry at
//!   its index is this failure);
//! - no cut below a node's commit index, nor of an entry committed anywhere;
//! - linearizable reads: a read's index covers every write committed before
//!   the read began.
//!
//! Progress after the heal is judged by the cluster itself
//! (`Cluster::check_progress`).

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use super::node::Log;
use crate::types::{Entry, EntryId, EntryPayload, LogIndex, NodeId, Term};

/// A property broken: which, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub checker: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.checker, self.detail)
    }
}

fn violation(checker: &'static str, detail: String) -> Result<(), Violation> {
    Err(Violation { checker, detail })
}

/// The multiplier of [`FastHasher`] (FxHash's).
const FAST_HASH_MULTIPLIER: u64 = 0x517c_c1b7_2722_0a95;

/// A fast, deterministic hasher for the checkers' maps of entry ids: they
/// are looked up on every append and commit of every node, and no peer
/// chooses their keys (so no flooding to defend against).
#[derive(Debug, Default)]
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(FAST_HASH_MULTIPLIER);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

fn bytes_fingerprint(bytes: &[u8]) -> u64 {
    let mut hasher = FastHasher::default();
    hasher.write_u64(bytes.len() as u64);
    hasher.write(bytes);
    hasher.finish()
}

/// A payload's fingerprint, to compare entries cheaply (the workload's
/// commands are unique, so equal fingerprints mean equal entries but for a
/// 2^-64 chance).
fn fingerprint(entry: &Entry) -> u64 {
    let mut hasher = FastHasher::default();
    match &entry.payload {
        EntryPayload::Noop => hasher.write_u64(1),
        EntryPayload::Command(bytes) => {
            hasher.write_u64(2 ^ (bytes.len() as u64) << 8);
            hasher.write(bytes);
        }
        EntryPayload::Membership(membership) => {
            hasher.write_u64(3 ^ (membership.voters.len() as u64) << 8);
            for node in membership.voters.iter().chain(&membership.learners) {
                hasher.write_u64(node.0);
            }
        }
    }
    hasher.finish()
}

#[derive(Debug, Default)]
pub struct Checker {
    leaders: FastMap<Term, NodeId>,
    /// Every entry id any log has held: its payload's fingerprint and the
    /// term of the entry before it in that log.
    seen: FastMap<EntryId, (u64, Term)>,
    /// Every committed index (at `index - 1`), `None` where no node has
    /// reported it (a snapshot can skip a few).
    committed: Vec<Option<Committed>>,
    /// The highest index any node has reported committed.
    pub max_committed: LogIndex,
    /// A fingerprint of the bytes of every snapshot a driver took, by its
    /// last entry: what a follower installs must be one of them, byte for
    /// byte (chunks reassembled in order, none lost or repeated).
    snapshots_taken: FastMap<EntryId, u64>,
}

/// What is known of a committed index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Committed {
    id: EntryId,
    fingerprint: u64,
    /// The lowest term a node was in when it reported the commit. A node
    /// learns a commit from a leader of its own term, which committed it in
    /// that term or learned it from an earlier one: so this is at least the
    /// term the entry was committed in, and every leader of a later term
    /// must hold the entry (leader completeness).
    term: Term,
}

impl Checker {
    /// `node` acts as leader of `term` (it sent an append in it). On its
    /// first act, its log must hold every entry committed in an earlier term
    /// (a leader of an old term can still win late, through slow votes, and
    /// need not hold what later terms committed).
    pub fn on_leading(&mut self, node: NodeId, term: Term, log: &Log) -> Result<(), Violation> {
        match self.leaders.insert(term, node) {
            Some(other) if other != node => violation(
                "election safety",
                format!("{other} and {node} both lead term {term}"),
            ),
            Some(_) => Ok(()),
            None => self.check_completeness(node, term, log),
        }
    }

    fn check_completeness(&self, node: NodeId, term: Term, log: &Log) -> Result<(), Violation> {
        let known = self
            .committed
            .iter()
            .enumerate()
            .skip(log.base.index.0 as usize);
        for (offset, fact) in known {
            let Some(Committed {
                id,
                term: committed_in,
                ..
            }) = fact
            else {
                continue;
            };
            if *committed_in < term && log.id_at(LogIndex(offset as u64 + 1)) != Some(*id) {
                return violation(
                    "leader completeness",
                    format!(
                        "{node} leads term {term} without committed entry {id} (holds {:?})",
                        log.id_at(id.index)
                    ),
                );
            }
        }
        Ok(())
    }

    /// `entries` were appended to `node`'s log after `prev`.
    pub fn on_append(
        &mut self,
        node: NodeId,
        prev: EntryId,
        entries: &[Entry],
    ) -> Result<(), Violation> {
        let mut before = prev;
        for entry in entries {
            let fact = (fingerprint(entry), before.term);
            match self.seen.get(&entry.id) {
                Some(known) if *known != fact => {
                    return violation(
                        "log matching",
                        format!(
                            "{node} holds {} after a term-{} entry with fingerprint {:#x}; \
                             another log holds it after term {} with {:#x}",
                            entry.id, fact.1, fact.0, known.1, known.0
                        ),
                    )
                }
                Some(_) => {}
                None => {
                    self.seen.insert(entry.id, fact);
                }
            }
            before = entry.id;
        }
        Ok(())
    }

    /// `node`, in `term`, committed `entry`.
    pub fn on_commit(&mut self, node: NodeId, term: Term, entry: &Entry) -> Result<(), Violation> {
        let fingerprint = fingerprint(entry);
        let offset = entry.id.index.0 as usize - 1;
        if self.committed.len() <= offset {
            self.committed.resize(offset + 1, None);
        }
        match &mut self.committed[offset] {
            Some(known) if (known.id, known.fingerprint) != (entry.id, fingerprint) => violation(
                "state machine safety",
                format!(
                    "{node} committed {} where {} was committed before",
                    entry.id, known.id
                ),
            ),
            Some(known) => {
                known.term = known.term.min(term);
                Ok(())
            }
            unknown => {
                *unknown = Some(Committed {
                    id: entry.id,
                    fingerprint,
                    term,
                });
                self.max_committed = self.max_committed.max(entry.id.index);
                Ok(())
            }
        }
    }

    /// `node`, leading `term`, moved its commit index to `through`: a leader
    /// commits only by counting replicas of an entry of its own term, the
    /// earlier ones following (§3.6.2, Figure 3.7: an earlier term's entry on
    /// a majority can still be overwritten). The loss itself needs a rare
    /// chain of crashes and elections, so the rule is checked where it acts.
    pub fn on_leader_commit(node: NodeId, term: Term, through: EntryId) -> Result<(), Violation> {
        if through.term != term {
            return violation(
                "leader commit rule",
                format!("{node}, leading term {term}, committed through {through} by counting"),
            );
        }
        Ok(())
    }

    /// A driver took a snapshot through `last` holding `data`.
    pub fn on_snapshot_taken(&mut self, last: EntryId, data: &[u8]) {
        self.snapshots_taken.insert(last, bytes_fingerprint(data));
    }

    /// `node` installed a snapshot through `last` holding `data`: it must end
    /// at a committed entry and be the bytes a driver took there.
    pub fn on_snapshot(&self, node: NodeId, last: EntryId, data: &[u8]) -> Result<(), Violation> {
        if let Some(id) = self.committed_at(last.index).filter(|id| *id != last) {
            return violation(
                "state machine safety",
                format!("{node} installed a snapshot through {last}, but {id} was committed"),
            );
        }
        match self.snapshots_taken.get(&last) {
            Some(taken) if *taken == bytes_fingerprint(data) => Ok(()),
            _ => violation(
                "snapshot transfer",
                format!("{node} installed bytes through {last} that no driver's snapshot held"),
            ),
        }
    }

    /// `node`, with its commit index at `commit`, cuts `log` after `after`:
    /// neither below its own commit index nor any entry committed anywhere
    /// (a follower's own commit index may lag the cluster's).
    pub fn on_cut(
        &self,
        node: NodeId,
        after: EntryId,
        commit: LogIndex,
        log: &Log,
    ) -> Result<(), Violation> {
        if after.index < commit {
            return violation(
                "no cut below commit",
                format!("{node} cut after {after}, below its commit index {commit}"),
            );
        }
        let cut = log
            .entries
            .iter()
            .filter(|entry| entry.id.index > after.index);
        for entry in cut {
            if self.committed_at(entry.id.index) == Some(entry.id) {
                return violation(
                    "no cut below commit",
                    format!(
                        "{node} cut after {after}, dropping committed entry {}",
                        entry.id
                    ),
                );
            }
        }
        Ok(())
    }

    /// A read that began when `committed_at_start` was committed was answered
    /// with `read_index`.
    pub fn on_read(
        node: NodeId,
        read_index: LogIndex,
        committed_at_start: LogIndex,
    ) -> Result<(), Violation> {
        if read_index < committed_at_start {
            return violation(
                "linearizable reads",
                format!(
                    "{node} answered a read at index {read_index}, but {committed_at_start} was \
                     committed before the read began"
                ),
            );
        }
        Ok(())
    }

    /// The committed entry id at `index`, if any node committed one.
    pub fn committed_at(&self, index: LogIndex) -> Option<EntryId> {
        let offset = usize::try_from(index.0.checked_sub(1)?).ok()?;
        self.committed.get(offset)?.map(|known| known.id)
    }

    pub fn leaders_elected(&self) -> usize {
        self.leaders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(term: u64, index: u64, byte: u8) -> Entry {
        Entry {
            id: EntryId::new(term, index),
            payload: EntryPayload::Command(vec![byte].into()),
        }
    }

    #[test]
    fn two_leaders_of_one_term_are_caught() {
        let mut checker = Checker::default();
        let log = Log::default();
        assert!(checker.on_leading(NodeId(1), Term(2), &log).is_ok());
        assert!(checker.on_leading(NodeId(1), Term(2), &log).is_ok());
        let error = checker.on_leading(NodeId(2), Term(2), &log).unwrap_err();
        assert_eq!(error.checker, "election safety");
    }

    #[test]
    fn an_entry_with_another_payload_or_predecessor_is_caught() {
        let mut checker = Checker::default();
        let first = [command(1, 1, 7), command(1, 2, 8)];
        assert!(checker.on_append(NodeId(1), EntryId::ZERO, &first).is_ok());
        assert!(checker.on_append(NodeId(2), EntryId::ZERO, &first).is_ok());
        let other_payload = [command(1, 2, 9)];
        let error = checker
            .on_append(NodeId(3), EntryId::new(1, 1), &other_payload)
            .unwrap_err();
        assert_eq!(error.checker, "log matching");
        let other_prev = [command(1, 2, 8)];
        assert!(checker
            .on_append(NodeId(3), EntryId::new(0, 1), &other_prev)
            .is_err());
    }

    #[test]
    fn a_second_commit_at_an_index_and_an_incomplete_leader_are_caught() {
        let mut checker = Checker::default();
        assert!(checker
            .on_commit(NodeId(1), Term(1), &command(1, 1, 7))
            .is_ok());
        assert!(checker
            .on_commit(NodeId(2), Term(2), &command(1, 1, 7))
            .is_ok());
        let error = checker
            .on_commit(NodeId(3), Term(2), &command(2, 1, 7))
            .unwrap_err();
        assert_eq!(error.checker, "state machine safety");
        let error = checker
            .on_leading(NodeId(3), Term(3), &Log::default())
            .unwrap_err();
        assert_eq!(error.checker, "leader completeness");
    }

    #[test]
    fn a_snapshot_installed_with_other_bytes_is_caught() {
        let mut checker = Checker::default();
        let last = EntryId::new(1, 4);
        checker.on_snapshot_taken(last, &[1, 2, 3]);
        assert!(checker.on_snapshot(NodeId(2), last, &[1, 2, 3]).is_ok());
        let error = checker
            .on_snapshot(NodeId(2), last, &[1, 3, 2])
            .unwrap_err();
        assert_eq!(error.checker, "snapshot transfer");
    }

    #[test]
    fn a_leader_committing_an_earlier_terms_entry_is_caught() {
        let own = Checker::on_leader_commit(NodeId(1), Term(3), EntryId::new(3, 9));
        assert!(own.is_ok());
        let error = Checker::on_leader_commit(NodeId(1), Term(3), EntryId::new(2, 8)).unwrap_err();
        assert_eq!(error.checker, "leader commit rule");
    }

    #[test]
    fn cuts_below_commit_and_stale_reads_are_caught() {
        let mut checker = Checker::default();
        let mut log = Log::default();
        let entries = vec![command(1, 1, 7), command(1, 2, 8)];
        assert!(log.append(entries.clone()));
        let (after, commit) = (EntryId::new(1, 1), LogIndex(1));
        assert!(checker.on_cut(NodeId(1), after, commit, &log).is_ok());
        assert!(checker
            .on_cut(NodeId(1), EntryId::ZERO, commit, &log)
            .is_err());
        assert!(checker.on_commit(NodeId(2), Term(1), &entries[1]).is_ok());
        let error = checker.on_cut(NodeId(1), after, commit, &log).unwrap_err();
        assert!(
            error.detail.contains("dropping committed entry 1.2"),
            "{error}"
        );
        assert!(Checker::on_read(NodeId(1), LogIndex(5), LogIndex(5)).is_ok());
        assert!(Checker::on_read(NodeId(1), LogIndex(4), LogIndex(5)).is_err());
    }
}
