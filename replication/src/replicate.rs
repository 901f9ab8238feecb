//! Log replication (§3.5): proposals, appends with the log-matching check,
//! pipelining and flow control in bytes (§10.2.2), and the commit rule
//! (§3.6.2, Figure 3.7: only an entry of the leader's own term commits by
//! counting replicas).

use crate::group::{Group, Role};
use crate::interface::{NotLeader, Output, Refusal};
use crate::log::entry_bytes;
use crate::message::{AppendResult, Message};
use crate::progress::Mode;
use crate::types::{CommandBytes, Entry, EntryId, EntryPayload, LogIndex, NodeId, ProposalId};

impl Group {
    /// Why this node takes no proposal now, if it takes none.
    pub(crate) fn refusal(&self) -> Option<Refusal> {
        let Some(lead) = &self.lead else {
            return Some(Refusal::NotLeader(NotLeader {
                leader: self.leader,
            }));
        };
        lead.transfer
            .map(|transfer| Refusal::Transferring { to: transfer.to })
    }

    pub(crate) fn propose(
        &mut self,
        proposals: Vec<(ProposalId, CommandBytes)>,
        out: &mut Vec<Output>,
    ) {
        if let Some(refusal) = self.refusal() {
            for (proposal, _) in proposals {
                out.push(Output::Resolve {
                    proposal,
                    result: Err(refusal),
                });
            }
            return;
        }
        let term = self.hard.term;
        let mut index = self.log.last().index;
        let mut entries = Vec::with_capacity(proposals.len());
        for (proposal, command) in proposals {
            index = index.next();
            let id = EntryId { term, index };
            entries.push(Entry {
                id,
                payload: EntryPayload::Command(command),
            });
            out.push(Output::Resolve {
                proposal,
                result: Ok(id),
            });
        }
        self.append_as_leader(entries, out);
        self.broadcast_append(out);
    }

    /// Appends the leader's own new entries and has them persisted; followers
    /// get them at once, while the leader's own write runs (§10.2.1).
    pub(crate) fn append_as_leader(&mut self, entries: Vec<Entry>, out: &mut Vec<Output>) {
        if entries.is_empty() {
            return;
        }
        self.log.extend(&entries);
        out.push(Output::Persist {
            hard_state: None,
            entries,
        });
    }

    /// Sends every follower what flow control lets through.
    pub(crate) fn broadcast_append(&mut self, out: &mut Vec<Output>) {
        let followers: Vec<NodeId> = match &self.lead {
            Some(lead) => lead.progress.keys().copied().collect(),
            None => return,
        };
        for follower in followers {
            self.send_append(follower, out);
        }
    }

    /// Sends `to` the entries it lacks, as many appends as its window allows
    /// (one if probing), or a snapshot chunk if they are compacted.
    pub(crate) fn send_append(&mut self, to: NodeId, out: &mut Vec<Output>) {
        loop {
            let lead = self.lead.as_mut().expect("only a leader sends appends");
            let Some(progress) = lead.progress.get_mut(&to) else {
                return;
            };
            if let Mode::Snapshot { .. } = progress.mode {
                return self.send_snapshot_chunk(to, out);
            }
            if !progress.can_send(self.config.inflight_bytes_max) {
                return;
            }
            let Some(prev) = self.log.id_at(LogIndex(progress.next.0 - 1)) else {
                // The entries it needs were compacted (§5.1).
                progress.become_snapshot();
                return self.send_snapshot_chunk(to, out);
            };
            let entries = if progress.next > self.log.last().index {
                Vec::new()
            } else {
                self.log.slice(progress.next, self.config.append_bytes_max)
            };
            if entries.is_empty() && progress.mode == Mode::Replicate {
                return;
            }
            let last = entries.last().map_or(prev.index, |entry| entry.id.index);
            let bytes = entries.iter().map(entry_bytes).sum();
            progress.sent(last, bytes);
            let message = Message::Append {
                prev,
                entries,
                commit: self.log.commit(),
                read_round: lead.read_round,
            };
            out.push(Output::Send(self.envelope(to, message)));
        }
    }

    /// A heartbeat: an append of nothing after what `to` is known to hold,
    /// carrying the commit index and the newest read round.
    pub(crate) fn send_heartbeat(&mut self, to: NodeId, out: &mut Vec<Output>) {
        let lead = self.lead.as_ref().expect("only a leader sends heartbeats");
        let Some(progress) = lead.progress.get(&to) else {
            return;
        };
        let message = Message::Append {
            prev: progress.matched,
            entries: Vec::new(),
            commit: self.log.commit(),
            read_round: lead.read_round,
        };
        out.push(Output::Send(self.envelope(to, message)));
    }

    /// A leader's timer: heartbeats (each a new read round), check-quorum, and
    /// the transfer's deadline.
    pub(crate) fn leader_tick(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        let lead = self.lead.as_mut().expect("a leader leads");
        if lead
            .transfer
            .is_some_and(|transfer| now_ms >= transfer.deadline_ms)
        {
            lead.transfer = None;
        }
        if now_ms >= lead.heartbeat_due_ms {
            lead.heartbeat_due_ms = now_ms + self.config.heartbeat_interval_ms;
            self.start_read_round(now_ms);
            let lead = self.lead.as_mut().expect("a leader leads");
            let followers: Vec<NodeId> = lead.progress.keys().copied().collect();
            for follower in followers {
                let lead = self.lead.as_mut().expect("a leader leads");
                let progress = lead.progress.get_mut(&follower).expect("listed");
                progress.on_heartbeat();
                if progress.mode == Mode::Replicate {
                    self.send_heartbeat(follower, out);
                }
                self.send_append(follower, out);
            }
            self.check_reads(now_ms, out);
        }
        let lead = self.lead.as_ref().expect("a leader leads");
        if now_ms >= lead.check_quorum_due_ms {
            self.check_quorum(now_ms, out);
        }
    }

    /// AppendEntries at a follower (§3.5, Figure 3.1).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_append(
        &mut self,
        now_ms: u64,
        from: NodeId,
        prev: EntryId,
        entries: Vec<Entry>,
        commit: LogIndex,
        read_round: u64,
        out: &mut Vec<Output>,
    ) {
        // A malformed append is a peer's bug: dropped, never a panic here.
        if !well_formed(prev, &entries) || !self.follow(now_ms, from, out) {
            return;
        }
        let message_last = entries.last().map_or(prev, |entry| entry.id);
        let reply = |result| Message::AppendReply { result, read_round };
        // Entries at or below the snapshot are committed, so they match.
        let base = self.log.snapshot().last;
        let (prev, entries) = if prev.index < base.index {
            let kept = entries
                .into_iter()
                .filter(|entry| entry.id.index > base.index)
                .collect();
            (base, kept)
        } else {
            (prev, entries)
        };
        if !self.prev_matches(prev) {
            let hint = self
                .log
                .last_at_or_below(prev.index, prev.term)
                .unwrap_or(base);
            let message = reply(AppendResult::Reject { hint });
            out.push(Output::Send(self.envelope(from, message)));
            return;
        }
        self.append_as_follower(entries, message_last, out);
        let matched = message_last;
        let known = commit.min(matched.index);
        if known > self.log.commit() && known <= self.log.last().index {
            self.advance_commit(now_ms, known, out);
        }
        let message = reply(AppendResult::Ok { matched });
        out.push(Output::SendAfterDurable(self.envelope(from, message)));
    }

    /// The log-matching check (§3.5); the planted `skip-log-matching` bug
    /// checks only that `prev` is not past the end.
    fn prev_matches(&self, prev: EntryId) -> bool {
        if self.planted(crate::Plant::SkipLogMatching) {
            return prev.index <= self.log.last().index;
        }
        self.log.matches(prev)
    }

    /// Appends what follows `prev` and is new; cuts a conflicting suffix
    /// first, never at or below the commit index (§3.5).
    fn append_as_follower(
        &mut self,
        entries: Vec<Entry>,
        message_last: EntryId,
        out: &mut Vec<Output>,
    ) {
        let first_new = entries
            .iter()
            .position(|entry| !self.log.matches(entry.id))
            .unwrap_or(entries.len());
        let cut_below_commit = self.planted(crate::Plant::CutBelowCommit);
        let mut new = entries;
        new.drain(..first_new);
        let mut cut = None;
        if let Some(first) = new.first() {
            if first.id.index <= self.log.last().index {
                cut = Some(
                    self.log
                        .id_at(LogIndex(first.id.index.0 - 1))
                        .expect("the entry before a conflict is in the log"),
                );
            }
        } else if cut_below_commit && message_last.index < self.log.last().index {
            // The planted bug: truncate to the message's end even though
            // nothing conflicts (a stale or duplicated append).
            cut = self.log.id_at(message_last.index);
        }
        if let Some(after) = cut {
            self.log.cut_after(after, !cut_below_commit);
            out.push(Output::Cut { after });
            self.refresh_membership(out);
        }
        if new.is_empty() {
            return;
        }
        let changes_membership = new
            .iter()
            .any(|entry| matches!(entry.payload, EntryPayload::Membership(_)));
        self.log.extend(&new);
        out.push(Output::Persist {
            hard_state: None,
            entries: new,
        });
        if changes_membership {
            self.refresh_membership(out);
        }
    }

    /// A follower's answer to an append (§3.5).
    pub(crate) fn on_append_reply(
        &mut self,
        now_ms: u64,
        from: NodeId,
        result: AppendResult,
        read_round: u64,
        out: &mut Vec<Output>,
    ) {
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        let Some(progress) = lead.progress.get_mut(&from) else {
            return;
        };
        progress.active = true;
        progress.acked_round = progress.acked_round.max(read_round);
        match result {
            AppendResult::Ok { matched } => {
                // Within a term the leader's log only grows, so an entry it
                // sent is still in it; anything else is not a real reply.
                if !self.log.matches(matched) && matched.index > self.log.snapshot().last.index {
                    return;
                }
                let news = progress.on_matched(matched);
                if matches!(progress.mode, Mode::Probe { .. }) {
                    progress.become_replicate();
                }
                if news {
                    self.maybe_commit(now_ms, out);
                    if self.lead.is_some() {
                        self.maybe_send_timeout_now(out);
                    }
                }
            }
            AppendResult::Reject { hint } => {
                if hint.index < progress.matched.index
                    || matches!(progress.mode, Mode::Snapshot { .. })
                {
                    return; // Stale: the follower holds more than that.
                }
                let next = self
                    .log
                    .last_at_or_below(hint.index, hint.term)
                    .map_or(self.log.snapshot().last.index, |id| id.index.next());
                progress.become_probe(next);
            }
        }
        self.check_reads(now_ms, out);
        if self.lead.is_some() {
            self.send_append(from, out);
        }
    }

    /// Commits the newest entry a majority of voters hold durably, if it is of
    /// this leader's term (§3.6.2: Figure 3.7 shows why an older term's entry
    /// must not commit by being counted). The leader counts itself only
    /// through its own durable index (§10.2.1).
    pub(crate) fn maybe_commit(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        let lead = self
            .lead
            .as_ref()
            .expect("only a leader commits by counting");
        let own = self.log.durable();
        let mut matched: Vec<LogIndex> = self
            .membership
            .voters
            .iter()
            .map(|voter| match lead.progress.get(voter) {
                Some(progress) => progress.matched.index,
                None if *voter == self.config.id => own,
                None => LogIndex(0),
            })
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&quorum_index) = matched.get(self.membership.voters.len() / 2) else {
            return;
        };
        let candidate = if self.planted(crate::Plant::CommitWithoutMajority) {
            matched[0].min(self.log.last().index)
        } else {
            quorum_index
        };
        if candidate <= self.log.commit() {
            return;
        }
        let own_term = self.log.term_at(candidate) == Some(self.hard.term);
        if own_term || self.planted(crate::Plant::CommitPreviousTermByCount) {
            self.advance_commit(now_ms, candidate, out);
        }
    }

    /// Moves the commit index to `index` and tells the driver.
    pub(crate) fn advance_commit(&mut self, now_ms: u64, index: LogIndex, out: &mut Vec<Output>) {
        self.log.set_commit(index);
        let through = self
            .log
            .id_at(index)
            .expect("a committed entry is in the log");
        out.push(Output::Commit { through });
        if self.role == Role::Leader {
            self.on_leader_commit(now_ms, out);
        }
    }
}

/// Whether `entries` follow `prev` as a log must: consecutive indexes, terms
/// never decreasing.
fn well_formed(prev: EntryId, entries: &[Entry]) -> bool {
    let mut before = prev;
    for entry in entries {
        if entry.id.index.0 != before.index.0.wrapping_add(1) || entry.id.term < before.term {
            return false;
        }
        before = entry.id;
    }
    true
}
