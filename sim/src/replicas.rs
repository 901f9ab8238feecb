//! The cluster checker: what every node's copy of every shard applied and
//! who led it, gathered across the nodes and their boots, and what must hold
//! between them:
//! - the same entry at each index: for each (shard, index), the nodes that
//!   applied it applied one operation ([`ReplicaViolation::Diverged`]);
//! - at most one leader per (shard, term) ([`ReplicaViolation::TwoLeaders`]);
//! - a copy that recovers (or installs its leader's snapshot) holds what it
//!   held before with the entries committed since applied on top
//!   ([`ReplicaViolation::StateDiffers`]), when it held a known state at or
//!   below that index;
//! - once healed and quiet, every live copy of a shard at one index with one
//!   state ([`Replicas::converged`]).
//!
//! It also times failovers: from the moment a shard's leader is lost (killed,
//! paused, or cut off from a majority) to the next reply a leader of a later
//! term releases on that shard.
//!
//! Pure: the simulator's observers report to it with madsim's time as an
//! argument (`crate::cluster`), so it reads no clock itself.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use keel_engine::keyspace::Keyspace;
use keel_engine::node::io::PeerId;
use keel_engine::operation::Operation;

use crate::ledger::{differing_keys, items, Items};

/// Something two nodes did that replication forbids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaViolation {
    /// Two nodes applied different operations at one index of a shard.
    Diverged {
        shard: u32,
        index: u64,
        first: PeerId,
        second: PeerId,
    },
    /// Two nodes became leader of a shard in the same term.
    TwoLeaders {
        shard: u32,
        term: u64,
        first: PeerId,
        second: PeerId,
    },
    /// A node's copy came back (a recovery, an installed snapshot) holding
    /// other than its last state with the entries since applied.
    StateDiffers {
        node: PeerId,
        shard: u32,
        index: u64,
        keys: Vec<String>,
    },
}

impl fmt::Display for ReplicaViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicaViolation::Diverged {
                shard,
                index,
                first,
                second,
            } => write!(
                f,
                "shard {shard}: nodes {first} and {second} applied different operations at \
                 index {index}"
            ),
            ReplicaViolation::TwoLeaders {
                shard,
                term,
                first,
                second,
            } => write!(
                f,
                "shard {shard}: nodes {first} and {second} were both elected in term {term}"
            ),
            ReplicaViolation::StateDiffers {
                node,
                shard,
                index,
                keys,
            } => write!(
                f,
                "shard {shard}: node {node}'s copy came back at index {index} holding other \
                 than the committed entries give, in keys {keys:?}"
            ),
        }
    }
}

/// Why the copies of a shard disagree after the cluster healed and quieted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disagreement {
    /// The live nodes' copies stand at different applied indexes.
    Index {
        shard: u32,
        indexes: Vec<(PeerId, u64)>,
    },
    /// Two copies at the same index hold different keys or values.
    State {
        shard: u32,
        index: u64,
        first: PeerId,
        second: PeerId,
    },
}

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disagreement::Index { shard, indexes } => write!(
                f,
                "shard {shard}'s copies stand at different applied indexes (node, index): \
                 {indexes:?}"
            ),
            Disagreement::State {
                shard,
                index,
                first,
                second,
            } => write!(
                f,
                "shard {shard}: nodes {first} and {second} hold different states at index {index}"
            ),
        }
    }
}

/// One node's copy of one shard, as its observer saw it.
#[derive(Debug, Default)]
struct Copy {
    /// The last index applied (or recovered).
    index: u64,
    /// The state at `index`, rebuilt from the recovered state and the
    /// entries applied since; `None` once an entry skipped an index (then
    /// only the next recovery says what the copy holds).
    state: Option<Keyspace>,
}

/// Why a node was lost to the cluster (the first that holds, in this
/// order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Loss {
    /// Killed (a power loss), not restarted yet.
    Down,
    /// Paused: its tasks stopped, its sockets open (clients wait on it).
    Paused,
    /// Cut off from a majority by a partition.
    CutOff,
}

impl Loss {
    pub const ALL: [Loss; 3] = [Loss::Down, Loss::Paused, Loss::CutOff];

    pub fn name(self) -> &'static str {
        match self {
            Loss::Down => "a kill",
            Loss::Paused => "a pause",
            Loss::CutOff => "a partition",
        }
    }
}

/// A lost leader whose shard has not served since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Outage {
    leader: PeerId,
    cause: Loss,
    term: u64,
    since_us: u64,
    /// A leader of a later term was elected (its time is recorded once).
    replaced: bool,
}

#[derive(Debug, Default)]
struct State {
    /// The first operation applied at each (shard, index), and by whom.
    applied: BTreeMap<(u32, u64), (Operation, PeerId)>,
    /// Who was elected in each (shard, term).
    leaders: BTreeMap<(u32, u64), PeerId>,
    /// Each node's latest term as a shard's leader.
    led: BTreeMap<(u32, PeerId), u64>,
    copies: BTreeMap<(u32, PeerId), Copy>,
    outages: BTreeMap<u32, Outage>,
    failovers_us: Vec<(Loss, u64)>,
    /// From a leader's loss to the election of a later term's leader.
    elections_us: Vec<u64>,
    violations: Vec<ReplicaViolation>,
    entries_applied: u64,
    states_checked: u64,
}

/// What the nodes of one cluster run applied and who led (module doc).
#[derive(Debug, Default)]
pub struct Replicas {
    state: RefCell<State>,
}

/// A key space of the same items (Keyspace is not Clone: the node never
/// copies one).
fn copy_of(keyspace: &Keyspace) -> Keyspace {
    let mut copy = Keyspace::with_hash_seed(0);
    for (key, value, expire) in keyspace.items() {
        copy.insert_loaded(key, value, expire);
    }
    copy
}

impl Replicas {
    /// Node `node`'s copy of `shard` holds `keyspace` at `index`: it
    /// recovered there, or installed its leader's snapshot of it. Checked
    /// against its last known state with the entries committed since, if
    /// that state is at or below `index` and every entry between is known.
    pub fn holds(&self, node: PeerId, shard: u32, index: u64, keyspace: &Keyspace) {
        let mut state = self.state.borrow_mut();
        let now = items(keyspace);
        let expected = state.copies.get(&(shard, node)).and_then(|copy| {
            let last = copy.state.as_ref().filter(|_| copy.index <= index)?;
            let mut replayed = copy_of(last);
            for between in copy.index + 1..=index {
                let (op, _) = state.applied.get(&(shard, between))?;
                replayed.apply(op);
            }
            Some(items(&replayed))
        });
        if let Some(expected) = expected {
            state.states_checked += 1;
            if expected != now {
                state.violations.push(ReplicaViolation::StateDiffers {
                    node,
                    shard,
                    index,
                    keys: differing_keys(&expected, &now),
                });
            }
        }
        state.copies.insert(
            (shard, node),
            Copy {
                index,
                state: Some(copy_of(keyspace)),
            },
        );
    }

    /// Node `node` applied `op` at `index` of `shard`.
    pub fn applied(&self, node: PeerId, shard: u32, index: u64, op: &Operation) {
        let mut state = self.state.borrow_mut();
        state.entries_applied += 1;
        let copy = state.copies.entry((shard, node)).or_default();
        match copy.state.as_mut() {
            Some(keyspace) if index == copy.index + 1 => keyspace.apply(op),
            _ => copy.state = None,
        }
        copy.index = index;
        let diverged = match state.applied.get(&(shard, index)) {
            None => {
                state.applied.insert((shard, index), (op.clone(), node));
                None
            }
            Some((first_op, first)) => (first_op != op).then_some(*first),
        };
        if let Some(first) = diverged {
            state.violations.push(ReplicaViolation::Diverged {
                shard,
                index,
                first,
                second: node,
            });
        }
    }

    /// Node `node` became leader of `shard` in `term`, at `now_us`.
    pub fn elected(&self, node: PeerId, shard: u32, term: u64, now_us: u64) {
        let mut state = self.state.borrow_mut();
        let mut replaced = None;
        if let Some(outage) = state.outages.get_mut(&shard) {
            if term > outage.term && !outage.replaced {
                outage.replaced = true;
                replaced = Some(now_us.saturating_sub(outage.since_us));
            }
        }
        state.elections_us.extend(replaced);
        let first = *state.leaders.entry((shard, term)).or_insert(node);
        if first != node {
            state.violations.push(ReplicaViolation::TwoLeaders {
                shard,
                term,
                first,
                second: node,
            });
        }
        let latest = state.led.entry((shard, node)).or_default();
        *latest = (*latest).max(term);
    }

    /// Node `node` released a reply that depended on `shard`'s entries, at
    /// `now_us`: the end of the shard's outage if it leads a later term than
    /// the lost leader did.
    pub fn acknowledged(&self, node: PeerId, shard: u32, now_us: u64) {
        let mut state = self.state.borrow_mut();
        let Some(outage) = state.outages.get(&shard).copied() else {
            return;
        };
        let term = state.led.get(&(shard, node)).copied().unwrap_or(0);
        if term > outage.term {
            state.outages.remove(&shard);
            state
                .failovers_us
                .push((outage.cause, now_us.saturating_sub(outage.since_us)));
        } else if node == outage.leader && term == outage.term {
            // The lost leader is back (a short pause or partition) before
            // any successor: no failover took place, and a later change of
            // leader (a transfer) would not be one either.
            state.outages.remove(&shard);
        }
    }

    /// `node` was lost to the cluster at `now_us`, by `cause`: each shard
    /// whose latest leader it is begins an outage (unless one is already
    /// running).
    pub fn leader_lost(&self, node: PeerId, cause: Loss, now_us: u64) {
        let mut state = self.state.borrow_mut();
        let mut latest: BTreeMap<u32, (u64, PeerId)> = BTreeMap::new();
        for (&(shard, term), &leader) in &state.leaders {
            latest.insert(shard, (term, leader));
        }
        for (shard, (term, leader)) in latest {
            if leader == node {
                state.outages.entry(shard).or_insert(Outage {
                    leader,
                    cause,
                    term,
                    since_us: now_us,
                    replaced: false,
                });
            }
        }
    }

    /// The latest known leader of `shard`, if any was elected.
    pub fn leader(&self, shard: u32) -> Option<PeerId> {
        let state = self.state.borrow();
        state
            .leaders
            .range((shard, 0)..=(shard, u64::MAX))
            .next_back()
            .map(|(_, &leader)| leader)
    }

    /// Failovers timed so far, in µs, each with what began its outage.
    pub fn failovers_us(&self) -> Vec<(Loss, u64)> {
        self.state.borrow().failovers_us.clone()
    }

    /// Elections after a leader's loss timed so far, in µs.
    pub fn elections_us(&self) -> Vec<u64> {
        self.state.borrow().elections_us.clone()
    }

    /// Outages that never ended: the lost leaders, by shard.
    pub fn open_outages(&self) -> Vec<(u32, PeerId)> {
        let state = self.state.borrow();
        state
            .outages
            .iter()
            .map(|(&shard, outage)| (shard, outage.leader))
            .collect()
    }

    pub fn violations(&self) -> Vec<ReplicaViolation> {
        self.state.borrow().violations.clone()
    }

    /// Entries applied, over every node and boot.
    pub fn entries_applied(&self) -> u64 {
        self.state.borrow().entries_applied
    }

    /// Recovered or installed states checked against the committed entries.
    pub fn states_checked(&self) -> u64 {
        self.state.borrow().states_checked
    }

    /// Whether the copies of each of `shards` on the `live` nodes stand at
    /// one index with one state: `Ok` if so, else the first disagreement.
    /// A copy whose state is unknown (see [`Copy::state`]) is compared by
    /// index only.
    pub fn converged(&self, shards: u32, live: &[PeerId]) -> Result<(), Disagreement> {
        let state = self.state.borrow();
        for shard in 0..shards {
            let copies: Vec<(PeerId, &Copy)> = live
                .iter()
                .filter_map(|&node| state.copies.get(&(shard, node)).map(|copy| (node, copy)))
                .collect();
            let indexes: Vec<(PeerId, u64)> = copies
                .iter()
                .map(|(node, copy)| (*node, copy.index))
                .collect();
            if copies.len() < live.len() || indexes.windows(2).any(|w| w[0].1 != w[1].1) {
                return Err(Disagreement::Index { shard, indexes });
            }
            let known: Vec<(PeerId, Items)> = copies
                .iter()
                .filter_map(|(node, copy)| copy.state.as_ref().map(|s| (*node, items(s))))
                .collect();
            if let Some(pair) = known.windows(2).find(|w| w[0].1 != w[1].1) {
                return Err(Disagreement::State {
                    shard,
                    index: indexes[0].1,
                    first: pair[0].0,
                    second: pair[1].0,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: &str) -> Operation {
        Operation::Set {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            expire_at_unix_ms: None,
        }
    }

    #[test]
    fn one_operation_per_index_across_nodes() {
        let replicas = Replicas::default();
        replicas.applied(1, 0, 1, &set("a", "1"));
        replicas.applied(2, 0, 1, &set("a", "1"));
        assert_eq!(replicas.violations(), vec![]);
        replicas.applied(3, 0, 1, &set("a", "2"));
        assert_eq!(
            replicas.violations(),
            vec![ReplicaViolation::Diverged {
                shard: 0,
                index: 1,
                first: 1,
                second: 3
            }]
        );
    }

    #[test]
    fn one_leader_per_term() {
        let replicas = Replicas::default();
        replicas.elected(1, 0, 3, 0);
        replicas.elected(1, 0, 3, 0);
        replicas.elected(2, 1, 3, 0);
        replicas.elected(2, 0, 4, 0);
        assert_eq!(replicas.violations(), vec![]);
        assert_eq!(replicas.leader(0), Some(2));
        replicas.elected(3, 0, 4, 0);
        assert_eq!(
            replicas.violations(),
            vec![ReplicaViolation::TwoLeaders {
                shard: 0,
                term: 4,
                first: 2,
                second: 3
            }]
        );
    }

    #[test]
    fn a_failover_ends_at_a_later_terms_reply() {
        let replicas = Replicas::default();
        replicas.elected(1, 0, 1, 0);
        replicas.elected(1, 1, 1, 0);
        replicas.leader_lost(2, Loss::Down, 50);
        assert_eq!(replicas.open_outages(), vec![]);
        replicas.leader_lost(1, Loss::Down, 100);
        assert_eq!(replicas.open_outages(), vec![(0, 1), (1, 1)]);
        // A reply of another node in the old term ends nothing.
        replicas.acknowledged(2, 0, 150);
        replicas.elected(2, 0, 2, 600);
        replicas.acknowledged(2, 0, 900);
        assert_eq!(replicas.failovers_us(), vec![(Loss::Down, 800)]);
        assert_eq!(replicas.elections_us(), vec![500]);
        assert_eq!(replicas.open_outages(), vec![(1, 1)]);
    }

    #[test]
    fn a_lost_leader_that_replies_again_in_its_term_ends_its_outage_without_a_failover() {
        let replicas = Replicas::default();
        replicas.elected(1, 0, 1, 0);
        replicas.leader_lost(1, Loss::Paused, 100);
        assert_eq!(replicas.open_outages(), vec![(0, 1)]);
        replicas.acknowledged(1, 0, 400);
        assert_eq!(replicas.open_outages(), vec![]);
        assert_eq!(replicas.failovers_us(), vec![]);
        // A later transfer of the lead is no failover either.
        replicas.elected(2, 0, 2, 600);
        replicas.acknowledged(2, 0, 700);
        assert_eq!(replicas.failovers_us(), vec![]);
    }

    #[test]
    fn copies_converge_only_at_one_index_and_state() {
        let replicas = Replicas::default();
        let empty = Keyspace::with_hash_seed(0);
        for node in [1, 2] {
            replicas.holds(node, 0, 0, &empty);
        }
        replicas.applied(1, 0, 1, &set("a", "1"));
        assert!(matches!(
            replicas.converged(1, &[1, 2]),
            Err(Disagreement::Index { shard: 0, .. })
        ));
        replicas.applied(2, 0, 1, &set("a", "1"));
        assert_eq!(replicas.converged(1, &[1, 2]), Ok(()));
        // A copy recovered to a state the log does not give is caught.
        let mut other = Keyspace::with_hash_seed(0);
        other.apply(&set("a", "2"));
        replicas.holds(2, 0, 1, &other);
        assert_eq!(
            replicas.violations(),
            vec![ReplicaViolation::StateDiffers {
                node: 2,
                shard: 0,
                index: 1,
                keys: vec!["a".into()]
            }]
        );
        assert_eq!(
            replicas.converged(1, &[1, 2]),
            Err(Disagreement::State {
                shard: 0,
                index: 1,
                first: 1,
                second: 2
            })
        );
        assert!(replicas.converged(1, &[1, 2, 3]).is_err());
    }

    #[test]
    fn a_copy_comes_back_with_the_committed_entries_on_its_last_state() {
        let replicas = Replicas::default();
        let empty = Keyspace::with_hash_seed(0);
        replicas.holds(1, 0, 0, &empty);
        replicas.applied(1, 0, 1, &set("a", "1"));
        replicas.applied(2, 0, 2, &set("b", "2"));
        let mut both = Keyspace::with_hash_seed(0);
        both.apply(&set("a", "1"));
        both.apply(&set("b", "2"));
        replicas.holds(1, 0, 2, &both);
        assert_eq!(
            (replicas.violations(), replicas.states_checked()),
            (vec![], 1)
        );
        // Behind its last state, or past what any node applied: not checkable.
        replicas.holds(1, 0, 1, &empty);
        replicas.holds(1, 0, 5, &empty);
        assert_eq!(
            (replicas.violations(), replicas.states_checked()),
            (vec![], 1)
        );
    }
}
