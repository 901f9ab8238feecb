//! Elections (§3.4) with pre-vote (§9.6) and the voters' stickiness to a live
//! leader (§4.2.3), check-quorum (§6.2) and leadership transfer (§3.10).

use crate::group::{Group, Leading, Role, Transfer};
use crate::interface::Output;
use crate::message::{AppendResult, Envelope, Message};
use crate::progress::Progress;
use crate::types::{Entry, EntryId, EntryPayload, NodeId, Term};

impl Group {
    /// The checks every message passes first: a newer term is adopted (but
    /// not a pre-vote's, and not a vote request's while this node hears from
    /// a live leader), an older one is answered only so that its sender
    /// learns the current term. Returns whether to go on to the handler.
    pub(crate) fn admit_term(
        &mut self,
        now_ms: u64,
        envelope: &Envelope,
        out: &mut Vec<Output>,
    ) -> bool {
        let current = self.hard.term;
        if envelope.term > current {
            match envelope.message {
                // A pre-vote carries the term its sender would campaign in;
                // a granted reply carries ours plus one: neither is adopted.
                Message::PreVote { .. } => return true,
                Message::PreVoteReply { granted: true } => return true,
                Message::Vote { transfer, .. } if !transfer && self.hears_leader(now_ms) => {
                    // §4.2.3: a server that hears from a live leader ignores
                    // vote requests, so a removed or partitioned server cannot
                    // depose it; leases depend on this too.
                    return false;
                }
                Message::Append { .. } | Message::Snapshot { .. } | Message::TimeoutNow => {
                    self.become_follower(now_ms, envelope.term, Some(envelope.from), out)
                }
                _ => self.become_follower(now_ms, envelope.term, None, out),
            }
            return true;
        }
        if envelope.term < current {
            match envelope.message {
                // A deposed leader learns the new term from the rejection and
                // steps down (with check-quorum it would not otherwise hear).
                Message::Append { .. } | Message::Snapshot { .. } => {
                    let reply = AppendResult::Reject {
                        hint: EntryId::ZERO,
                    };
                    let message = Message::AppendReply {
                        result: reply,
                        read_round: 0,
                    };
                    out.push(Output::Send(self.envelope(envelope.from, message)));
                }
                Message::PreVote { .. } => {
                    let message = Message::PreVoteReply { granted: false };
                    out.push(Output::Send(self.envelope(envelope.from, message)));
                }
                _ => {}
            }
            return false;
        }
        true
    }

    /// Whether this node heard from a leader within the shortest election
    /// timeout (a leader hears from itself).
    pub(crate) fn hears_leader(&self, now_ms: u64) -> bool {
        self.role == Role::Leader
            || now_ms < self.leader_contact_ms + self.config.election_timeout_ms_min
    }

    /// The election timeout passed: ask for pre-votes in the next term
    /// without adopting it (§9.6), so a node that was partitioned away cannot
    /// raise the term and depose a leader when it rejoins.
    pub(crate) fn campaign_pre(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.config.id);
        if self.has_quorum(&self.votes) {
            return self.campaign(now_ms, false, out);
        }
        let last = self.log.last();
        let term = Term(self.hard.term.0 + 1);
        for voter in self.other_voters() {
            out.push(Output::Send(Envelope {
                from: self.config.id,
                to: voter,
                term,
                message: Message::PreVote { last },
            }));
        }
    }

    /// A real campaign: adopt the next term, vote for itself durably, and ask
    /// for votes only once that is durable (§3.4, §3.8).
    pub(crate) fn campaign(&mut self, now_ms: u64, transfer: bool, out: &mut Vec<Output>) {
        self.set_term(Term(self.hard.term.0 + 1));
        self.record_vote(self.config.id);
        self.persist_hard_state(out);
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.config.id);
        self.reset_election_deadline(now_ms);
        if self.has_quorum(&self.votes) {
            return self.become_leader(now_ms, out);
        }
        let last = self.log.last();
        for voter in self.other_voters() {
            let message = Message::Vote { last, transfer };
            out.push(Output::SendAfterDurable(self.envelope(voter, message)));
        }
    }

    pub(crate) fn on_pre_vote(
        &mut self,
        now_ms: u64,
        from: NodeId,
        term: Term,
        last: EntryId,
        out: &mut Vec<Output>,
    ) {
        let granted =
            term > self.hard.term && !self.hears_leader(now_ms) && self.log.is_up_to_date(last);
        let reply_term = if granted { term } else { self.hard.term };
        out.push(Output::Send(Envelope {
            from: self.config.id,
            to: from,
            term: reply_term,
            message: Message::PreVoteReply { granted },
        }));
    }

    pub(crate) fn on_pre_vote_reply(
        &mut self,
        now_ms: u64,
        from: NodeId,
        term: Term,
        granted: bool,
        out: &mut Vec<Output>,
    ) {
        let campaign_term = Term(self.hard.term.0 + 1);
        if self.role != Role::PreCandidate || !granted || term != campaign_term {
            return;
        }
        if !self.is_voter(from) {
            return;
        }
        self.votes.insert(from);
        if self.has_quorum(&self.votes) {
            self.campaign(now_ms, false, out);
        }
    }

    /// RequestVote (§3.4): one vote per term, only for a log at least as up
    /// to date (§3.6.1), sent only once the vote is durable.
    pub(crate) fn on_vote(
        &mut self,
        now_ms: u64,
        from: NodeId,
        last: EntryId,
        transfer: bool,
        out: &mut Vec<Output>,
    ) {
        let free = self.hard.voted_for.is_none() || self.hard.voted_for == Some(from);
        let sticky = !transfer && self.leader.is_some() && self.hears_leader(now_ms);
        let granted = free && !sticky && self.log.is_up_to_date(last);
        if !granted {
            let message = Message::VoteReply { granted: false };
            out.push(Output::Send(self.envelope(from, message)));
            return;
        }
        self.record_vote(from);
        self.persist_hard_state(out);
        self.reset_election_deadline(now_ms);
        let reply = self.envelope(from, Message::VoteReply { granted: true });
        if self.planted(crate::Plant::VoteBeforePersist) {
            out.push(Output::Send(reply));
        } else {
            out.push(Output::SendAfterDurable(reply));
        }
    }

    pub(crate) fn on_vote_reply(
        &mut self,
        now_ms: u64,
        from: NodeId,
        granted: bool,
        out: &mut Vec<Output>,
    ) {
        if self.role != Role::Candidate || !granted || !self.is_voter(from) {
            return;
        }
        self.votes.insert(from);
        if self.has_quorum(&self.votes) {
            self.become_leader(now_ms, out);
        }
    }

    /// Won the election: append a no-op of the new term, which lets entries
    /// of earlier terms commit (§3.6.2) and reads start (§6.4), and ship it
    /// while it is being made durable here (§10.2.1).
    pub(crate) fn become_leader(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.votes.clear();
        let next = self.log.last().index.next();
        let progress = self
            .membership
            .voters
            .iter()
            .chain(&self.membership.learners)
            .filter(|member| **member != self.config.id)
            .map(|member| (*member, Progress::new(next)))
            .collect();
        self.lead = Some(Leading {
            progress,
            noop_index: next,
            heartbeat_due_ms: now_ms + self.config.heartbeat_interval_ms,
            check_quorum_due_ms: now_ms + self.config.election_timeout_ms_min,
            read_round: 0,
            confirmed_round: 0,
            round_sent_ms: Default::default(),
            reads: Default::default(),
            lease_until_ms: 0,
            lease_forfeited: false,
            transfer: None,
        });
        let noop = Entry {
            id: EntryId {
                term: self.hard.term,
                index: next,
            },
            payload: EntryPayload::Noop,
        };
        self.append_as_leader(vec![noop], out);
        self.broadcast_append(out);
        self.maybe_commit(now_ms, out);
    }

    /// Check-quorum (§6.2): a leader that has not heard from a majority for an
    /// election timeout steps down, so that clients find the real leader and a
    /// partitioned leader stops answering.
    pub(crate) fn check_quorum(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        let lead = self.lead.as_mut().expect("only a leader checks its quorum");
        lead.check_quorum_due_ms = now_ms + self.config.election_timeout_ms_min;
        let mut active: std::collections::BTreeSet<NodeId> = lead
            .progress
            .iter_mut()
            .filter_map(|(member, progress)| {
                std::mem::take(&mut progress.active).then_some(*member)
            })
            .collect();
        active.insert(self.config.id);
        if !self.has_quorum(&active) {
            self.become_follower(now_ms, self.hard.term, None, out);
        }
    }

    /// Hand leadership to `to` (§3.10): stop taking proposals, bring its log
    /// up to date, then tell it to campaign at once. Aborted after an election
    /// timeout if `to` has not taken over.
    pub(crate) fn transfer_leadership(&mut self, now_ms: u64, to: NodeId, out: &mut Vec<Output>) {
        if self.role != Role::Leader || to == self.config.id || !self.is_voter(to) {
            return;
        }
        let lead = self.lead.as_mut().expect("a leader leads");
        lead.transfer = Some(Transfer {
            to,
            deadline_ms: now_ms + self.config.election_timeout_ms_max,
            timeout_now_sent: false,
        });
        self.maybe_send_timeout_now(out);
        self.send_append(to, out);
    }

    /// Sends `TimeoutNow` once the transfer's target holds the whole log.
    pub(crate) fn maybe_send_timeout_now(&mut self, out: &mut Vec<Output>) {
        let last = self.log.last();
        let lead = self.lead.as_mut().expect("a leader leads");
        let Some(transfer) = lead.transfer.as_mut() else {
            return;
        };
        let caught_up = lead
            .progress
            .get(&transfer.to)
            .is_some_and(|progress| progress.matched == last);
        if transfer.timeout_now_sent || !caught_up {
            return;
        }
        transfer.timeout_now_sent = true;
        lead.lease_forfeited = true;
        lead.lease_until_ms = 0;
        let to = transfer.to;
        out.push(Output::Send(self.envelope(to, Message::TimeoutNow)));
    }

    /// `TimeoutNow` from this term's leader: campaign at once, skipping
    /// pre-vote, and ask voters to set their stickiness aside (§3.10).
    pub(crate) fn on_timeout_now(&mut self, now_ms: u64, from: NodeId, out: &mut Vec<Output>) {
        if self.role != Role::Follower || self.leader != Some(from) {
            return;
        }
        if self.may_campaign() {
            self.campaign(now_ms, true, out);
        }
    }
}
