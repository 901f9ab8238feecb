//! Membership changes, one server at a time (§4.1, §4.2-4.3).
//!
//! Why single-server changes rather than joint consensus: adding or removing
//! one voter at a time guarantees that any majority of the old voters and any
//! majority of the new ones overlap, so no two leaders can be elected in one
//! term across the change, with no intermediate joint configuration to
//! implement, persist and test (§4.1). Keel changes membership rarely and one
//! node at a time (add a learner, promote it, remove an old node), which is
//! exactly what single-server steps express. The rules that keep it safe:
//! - a configuration takes effect when appended, not when committed, so every
//!   node uses the newest one in its log (and falls back if it is cut);
//! - at most one uncommitted configuration at a time, and none before the
//!   leader has committed an entry of its own term (the no-op): the fix Ongaro
//!   posted to raft-dev in 2015 for a flaw in §4.1's single-server changes;
//! - new nodes join as learners (§4.2.1), which receive the log but neither
//!   vote nor count for commit, so a blank node cannot stall commits; a
//!   learner is promoted only once it holds everything committed;
//! - a leader that removes itself keeps leading, without counting itself,
//!   until the change commits, then steps down (§4.2.2);
//! - a node that the newest, uncommitted configuration removed still
//!   campaigns (its own vote not counted) until the removal commits: the
//!   nodes with the newest logs may be exactly those (§4.1);
//! - a snapshot names the membership in force at its last entry, never a
//!   later, uncommitted one.

use std::collections::BTreeSet;

use crate::group::Group;
use crate::interface::{MembershipChange, Output, Refusal};
use crate::progress::Progress;
use crate::types::{Entry, EntryId, EntryPayload, LogIndex, Membership, NodeId, ProposalId};

impl Group {
    pub(crate) fn is_voter(&self, node: NodeId) -> bool {
        self.membership.voters.contains(&node)
    }

    /// Whether this node starts elections: a voter does; so does a node that
    /// its newest, still uncommitted configuration removed, since it may be
    /// needed until that configuration commits (§4.1: it campaigns without
    /// counting its own vote). A learner and a node whose removal committed
    /// do not.
    pub(crate) fn may_campaign(&self) -> bool {
        let own = self.config.id;
        let removal_pending =
            self.membership_index > self.log.commit() && !self.membership.learners.contains(&own);
        self.is_voter(own) || removal_pending
    }

    /// Whether `granted` holds a majority of the voters.
    pub(crate) fn has_quorum(&self, granted: &BTreeSet<NodeId>) -> bool {
        let count = self.membership.voters.intersection(granted).count();
        count > self.membership.voters.len() / 2
    }

    pub(crate) fn other_voters(&self) -> Vec<NodeId> {
        let own = self.config.id;
        let voters = self.membership.voters.iter();
        voters.copied().filter(|voter| *voter != own).collect()
    }

    /// The newest membership in the log and the index of its entry.
    pub(crate) fn membership_from_log(&self) -> (LogIndex, Membership) {
        self.membership_at(self.log.last().index)
    }

    /// The membership in force at `index` (the newest at or below it) and the
    /// index of its entry; `index` at or after the snapshot's last entry. A
    /// driver names it in the `SnapshotMeta` of a snapshot through `index`.
    pub fn membership_at(&self, index: LogIndex) -> (LogIndex, Membership) {
        match self.log.membership_at_or_below(index) {
            Some((at, membership)) => (at, membership.clone()),
            None => {
                let snapshot = self.log.snapshot();
                (snapshot.last.index, snapshot.membership.clone())
            }
        }
    }

    /// Re-reads the membership in force after the log changed; tells the
    /// driver and, on a leader, follows it with the set of followers.
    pub(crate) fn refresh_membership(&mut self, out: &mut Vec<Output>) {
        let (index, membership) = self.membership_from_log();
        self.membership_index = index;
        if membership == self.membership {
            return;
        }
        self.membership = membership;
        out.push(Output::MembershipChanged(self.membership.clone()));
        let own = self.config.id;
        let next = self.log.last().index.next();
        if let Some(lead) = self.lead.as_mut() {
            let members: BTreeSet<NodeId> = self
                .membership
                .voters
                .union(&self.membership.learners)
                .copied()
                .filter(|member| *member != own)
                .collect();
            lead.progress.retain(|member, _| members.contains(member));
            for member in members {
                lead.progress
                    .entry(member)
                    .or_insert_with(|| Progress::new(next));
            }
        }
    }

    /// A leader proposes one change of membership (§4.1).
    pub(crate) fn change_membership(
        &mut self,
        now_ms: u64,
        proposal: ProposalId,
        change: MembershipChange,
        out: &mut Vec<Output>,
    ) {
        let result = self.membership_entry(change).map(|entry| {
            let id = entry.id;
            self.append_as_leader(vec![entry], out);
            self.refresh_membership(out);
            id
        });
        out.push(Output::Resolve { proposal, result });
        if result.is_ok() {
            self.broadcast_append(out);
            // A change can shrink the majority (removing a lagging voter).
            self.maybe_commit(now_ms, out);
        }
    }

    /// The entry that makes `change`, or why there is none.
    fn membership_entry(&self, change: MembershipChange) -> Result<Entry, Refusal> {
        if let Some(refusal) = self.refusal() {
            return Err(refusal);
        }
        let lead = self
            .lead
            .as_ref()
            .expect("only a leader changes membership");
        let commit = self.log.commit();
        if self.membership_index > commit || lead.noop_index > commit {
            return Err(Refusal::MembershipChangePending);
        }
        let mut next = self.membership.clone();
        let valid = match change {
            MembershipChange::AddLearner(node) => {
                !next.voters.contains(&node) && next.learners.insert(node)
            }
            MembershipChange::Promote(node) => {
                next.learners.remove(&node) && next.voters.insert(node)
            }
            MembershipChange::Remove(node) => {
                next.learners.remove(&node) || (next.voters.len() > 1 && next.voters.remove(&node))
            }
        };
        if !valid {
            return Err(Refusal::InvalidChange);
        }
        if let MembershipChange::Promote(node) = change {
            let matched = lead
                .progress
                .get(&node)
                .map(|progress| progress.matched.index);
            if matched.is_none_or(|matched| matched < commit) {
                return Err(Refusal::LearnerBehind);
            }
        }
        Ok(Entry {
            id: EntryId {
                term: self.hard.term,
                index: self.log.last().index.next(),
            },
            payload: EntryPayload::Membership(Box::new(next)),
        })
    }
}
