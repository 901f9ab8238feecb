//! The Raft rules each member must keep, checked where it acts from what its
//! shards report ([`keel_engine::node::io::ShardObserver`]), not only
//! through what clients end up seeing:
//! - a granted vote leaves only once the hard state recording it is durable
//!   ([`RuleViolation::VoteSentBeforeDurable`], Raft Figure 2: "persistent
//!   state ... updated on stable storage before responding to RPCs");
//! - a restarted member holds the term and vote it last made durable
//!   ([`RuleViolation::VoteForgotten`]);
//! - a leader commits only an entry of its own term (§5.4.2, Figure 8),
//!   earlier ones with it ([`RuleViolation::EarlierTermCommitted`]);
//! - a read round (§6.4) is confirmed only for a leader that no leader of a
//!   later term had replaced when the read asked for it
//!   ([`RuleViolation::DeposedLeaderRead`]).
//!
//! Why at the node: the client-visible symptoms of these bugs need rare
//! chains (two candidates of one term and a crash between a vote and its
//! sync; a Figure 8 schedule; a read of the very key a newer leader just
//! wrote). The core's own simulator checks the same rules
//! (docs/REPLICATION.md); here they hold the real node loop to them, its
//! driver, its WAL and hard-state file and its peer transport included.
//!
//! Sound without a bug: each rule follows from Raft's safety argument, and
//! the reports only lag the disk (a hard state is reported durable after
//! its sync returns, so a restart may hold a newer one, never an older).
//!
//! Pure: no clock, no IO; the cluster run's observers feed it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use keel_engine::node::io::PeerId;
use keel_replication::{EntryId, Envelope, HardState, Message, Term};

/// A member broke a rule of Raft where it acted (module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleViolation {
    /// A granted vote left before the hard state recording it was durable.
    VoteSentBeforeDurable {
        node: PeerId,
        shard: u32,
        term: u64,
        candidate: u64,
        durable: HardState,
    },
    /// A member restarted with an older term, or another vote in the same
    /// term, than it had made durable.
    VoteForgotten {
        node: PeerId,
        shard: u32,
        durable: HardState,
        restarted: HardState,
    },
    /// A leader committed through an entry of an earlier term.
    EarlierTermCommitted {
        node: PeerId,
        shard: u32,
        term: u64,
        through: EntryId,
    },
    /// A leader confirmed a read asked after a leader of a later term was
    /// elected.
    DeposedLeaderRead {
        node: PeerId,
        shard: u32,
        term: u64,
        newer_term: u64,
    },
}

impl fmt::Display for RuleViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleViolation::VoteSentBeforeDurable {
                node,
                shard,
                term,
                candidate,
                durable,
            } => write!(
                f,
                "shard {shard}: node {node} sent its vote for {candidate} in term {term} while \
                 its durable hard state was term {}, vote {:?}",
                durable.term.0,
                durable.voted_for.map(|id| id.0)
            ),
            RuleViolation::VoteForgotten {
                node,
                shard,
                durable,
                restarted,
            } => write!(
                f,
                "shard {shard}: node {node} restarted with term {}, vote {:?}, after it had \
                 made term {}, vote {:?} durable",
                restarted.term.0,
                restarted.voted_for.map(|id| id.0),
                durable.term.0,
                durable.voted_for.map(|id| id.0)
            ),
            RuleViolation::EarlierTermCommitted {
                node,
                shard,
                term,
                through,
            } => write!(
                f,
                "shard {shard}: node {node}, leader of term {term}, committed through {through}, \
                 an entry of an earlier term"
            ),
            RuleViolation::DeposedLeaderRead {
                node,
                shard,
                term,
                newer_term,
            } => write!(
                f,
                "shard {shard}: node {node} confirmed a read as leader of term {term}, asked \
                 after a leader of term {newer_term} was elected"
            ),
        }
    }
}

/// A read waiting for its round: the asker's term, and the latest term any
/// member had been elected in when it asked.
#[derive(Clone, Copy, Debug)]
struct AskedRead {
    term: u64,
    newest_elected: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Each member's last hard state reported durable, per shard.
    durable: BTreeMap<(PeerId, u32), HardState>,
    /// The latest term a leader was elected in, per shard.
    newest_elected: BTreeMap<u32, u64>,
    reads: BTreeMap<(PeerId, u32, u64), AskedRead>,
    violations: Vec<RuleViolation>,
    /// How many acts were checked against a rule.
    checked: u64,
}

/// The rules' checker for one cluster run (module doc).
#[derive(Debug, Default)]
pub struct RaftRules {
    state: RefCell<State>,
}

impl RaftRules {
    /// `node`'s group of `shard` starts with `restarted` as its term and
    /// vote.
    pub fn restarted_with(&self, node: PeerId, shard: u32, restarted: HardState) {
        let mut state = self.state.borrow_mut();
        state.checked += 1;
        // Reads asked before the restart are never confirmed.
        state
            .reads
            .retain(|&(asker, of, _), _| (asker, of) != (node, shard));
        let Some(&durable) = state.durable.get(&(node, shard)) else {
            return;
        };
        let forgotten = restarted.term < durable.term
            || (restarted.term == durable.term
                && durable.voted_for.is_some()
                && restarted.voted_for != durable.voted_for);
        if forgotten {
            state.violations.push(RuleViolation::VoteForgotten {
                node,
                shard,
                durable,
                restarted,
            });
        }
    }

    /// `node`'s hard-state file for `shard` holds `hard_state`, durably.
    pub fn hard_state_durable(&self, node: PeerId, shard: u32, hard_state: HardState) {
        self.state
            .borrow_mut()
            .durable
            .insert((node, shard), hard_state);
    }

    /// `node` sends `envelope` for `shard`: a granted vote must be durable
    /// (or overtaken by a durable later term, after which it binds nothing).
    pub fn sent(&self, node: PeerId, shard: u32, envelope: &Envelope) {
        if !matches!(envelope.message, Message::VoteReply { granted: true }) {
            return;
        }
        let mut state = self.state.borrow_mut();
        state.checked += 1;
        let durable = state
            .durable
            .get(&(node, shard))
            .copied()
            .unwrap_or_default();
        let recorded = durable.term > envelope.term
            || (durable.term == envelope.term && durable.voted_for == Some(envelope.to));
        if !recorded {
            state.violations.push(RuleViolation::VoteSentBeforeDurable {
                node,
                shard,
                term: envelope.term.0,
                candidate: envelope.to.0,
                durable,
            });
        }
    }

    /// A leader of `shard` was elected in `term`.
    pub fn elected(&self, shard: u32, term: u64) {
        let mut state = self.state.borrow_mut();
        let newest = state.newest_elected.entry(shard).or_default();
        *newest = (*newest).max(term);
    }

    /// `node`, leader of `term`, committed `shard` through `through`.
    pub fn leader_committed(&self, node: PeerId, shard: u32, term: u64, through: EntryId) {
        let mut state = self.state.borrow_mut();
        state.checked += 1;
        if through.term != Term(term) {
            state.violations.push(RuleViolation::EarlierTermCommitted {
                node,
                shard,
                term,
                through,
            });
        }
    }

    /// `node`, leader of `term`, asks its group to confirm read `read`.
    pub fn read_asked(&self, node: PeerId, shard: u32, read: u64, term: u64) {
        let mut state = self.state.borrow_mut();
        let newest_elected = state.newest_elected.get(&shard).copied().unwrap_or(0);
        state.reads.insert(
            (node, shard, read),
            AskedRead {
                term,
                newest_elected,
            },
        );
    }

    /// `node`'s group confirmed read `read`.
    pub fn read_confirmed(&self, node: PeerId, shard: u32, read: u64) {
        let mut state = self.state.borrow_mut();
        state.checked += 1;
        let asked = state
            .reads
            .remove(&(node, shard, read))
            .expect("a read is confirmed once, after it was asked, in the same boot");
        if asked.newest_elected > asked.term {
            state.violations.push(RuleViolation::DeposedLeaderRead {
                node,
                shard,
                term: asked.term,
                newer_term: asked.newest_elected,
            });
        }
    }

    pub fn violations(&self) -> Vec<RuleViolation> {
        self.state.borrow().violations.clone()
    }

    /// How many acts were checked against a rule.
    pub fn checked(&self) -> u64 {
        self.state.borrow().checked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_replication::NodeId;

    fn hard(term: u64, voted_for: Option<u64>) -> HardState {
        HardState {
            term: Term(term),
            voted_for: voted_for.map(NodeId),
        }
    }

    fn vote(from: u64, to: u64, term: u64) -> Envelope {
        Envelope {
            from: NodeId(from),
            to: NodeId(to),
            term: Term(term),
            message: Message::VoteReply { granted: true },
        }
    }

    #[test]
    fn a_vote_may_leave_once_durable_or_overtaken() {
        let rules = RaftRules::default();
        rules.sent(1, 0, &vote(1, 2, 3));
        rules.hard_state_durable(1, 0, hard(3, Some(2)));
        rules.sent(1, 0, &vote(1, 2, 3));
        rules.hard_state_durable(1, 0, hard(4, None));
        rules.sent(1, 0, &vote(1, 3, 3));
        rules.sent(1, 1, &vote(1, 3, 3));
        assert_eq!(
            rules.violations(),
            vec![
                RuleViolation::VoteSentBeforeDurable {
                    node: 1,
                    shard: 0,
                    term: 3,
                    candidate: 2,
                    durable: HardState::default(),
                },
                RuleViolation::VoteSentBeforeDurable {
                    node: 1,
                    shard: 1,
                    term: 3,
                    candidate: 3,
                    durable: HardState::default(),
                },
            ]
        );
    }

    #[test]
    fn a_restart_may_hold_a_newer_hard_state_never_an_older_or_another_vote() {
        let rules = RaftRules::default();
        rules.restarted_with(1, 0, hard(0, None));
        rules.hard_state_durable(1, 0, hard(5, Some(2)));
        rules.restarted_with(1, 0, hard(5, Some(2)));
        rules.restarted_with(1, 0, hard(6, None));
        rules.restarted_with(1, 0, hard(5, None));
        rules.restarted_with(1, 0, hard(4, Some(2)));
        let forgotten: Vec<HardState> = rules
            .violations()
            .into_iter()
            .map(|violation| match violation {
                RuleViolation::VoteForgotten { restarted, .. } => restarted,
                other => panic!("{other}"),
            })
            .collect();
        assert_eq!(forgotten, vec![hard(5, None), hard(4, Some(2))]);
    }

    #[test]
    fn a_leader_commits_through_its_own_terms_entries_only() {
        let rules = RaftRules::default();
        rules.leader_committed(1, 0, 3, EntryId::new(3, 10));
        rules.leader_committed(1, 0, 4, EntryId::new(3, 11));
        assert_eq!(
            rules.violations(),
            vec![RuleViolation::EarlierTermCommitted {
                node: 1,
                shard: 0,
                term: 4,
                through: EntryId::new(3, 11),
            }]
        );
    }

    #[test]
    fn a_read_asked_after_a_newer_election_is_not_confirmed() {
        let rules = RaftRules::default();
        rules.elected(0, 2);
        rules.read_asked(1, 0, 7, 2);
        rules.elected(0, 3);
        // Asked before the election: the round may have been confirmed
        // before the new leader's voters adopted its term.
        rules.read_confirmed(1, 0, 7);
        rules.read_asked(1, 0, 8, 2);
        rules.read_asked(2, 0, 1, 3);
        rules.read_confirmed(2, 0, 1);
        rules.read_confirmed(1, 0, 8);
        assert_eq!(
            rules.violations(),
            vec![RuleViolation::DeposedLeaderRead {
                node: 1,
                shard: 0,
                term: 2,
                newer_term: 3,
            }]
        );
        assert_eq!(rules.checked(), 3);
    }
}
