//! `Group`: one member of one consensus group, its state and the dispatch of
//! every input to the handler named for it. The handlers live beside it, one
//! module per part of the protocol: `election`, `replicate`, `read`,
//! `membership`, `snapshot`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use keel_wal::memory::SplitMix64;

use crate::config::{Config, Restored};
use crate::interface::{Input, NotLeader, Output};
use crate::log::Log;
use crate::message::{Envelope, Message};
use crate::progress::Progress;
use crate::types::{EntryId, HardState, LogIndex, Membership, NodeId, ReadId, SnapshotMeta, Term};

/// A member's part in its group's current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    /// Asking for pre-votes: has not yet adopted the next term (§9.6).
    PreCandidate,
    Candidate,
    Leader,
}

/// One member of one consensus group: a pure state machine. The driver feeds
/// it inputs with the current time (`step`), executes the outputs in order,
/// and calls `step(.., Input::Tick, ..)` at `next_deadline_ms`.
#[derive(Debug)]
pub struct Group {
    pub(crate) config: Config,
    pub(crate) rng: SplitMix64,
    pub(crate) hard: HardState,
    pub(crate) log: Log,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    /// The membership in force: the newest in the log, committed or not (§4.1).
    pub(crate) membership: Membership,
    /// The index of the entry that set `membership` (the snapshot's if none).
    pub(crate) membership_index: LogIndex,
    /// Pre-votes or votes granted in this campaign, own included.
    pub(crate) votes: BTreeSet<NodeId>,
    /// `None` until the first step: the core has no clock until given one.
    pub(crate) election_deadline_ms: Option<u64>,
    /// When this node last heard from a leader of its term (or started): it
    /// grants no vote within an election timeout of it (§4.2.3).
    pub(crate) leader_contact_ms: u64,
    pub(crate) lead: Option<Leading>,
    /// A snapshot being received: its metadata and the bytes so far.
    pub(crate) incoming: Option<(SnapshotMeta, Vec<u8>)>,
}

/// The state only a leader has.
#[derive(Debug)]
pub(crate) struct Leading {
    pub progress: BTreeMap<NodeId, Progress>,
    /// The no-op this leader appended at the start of its term (§6.4): reads
    /// wait for its commit.
    pub noop_index: LogIndex,
    pub heartbeat_due_ms: u64,
    pub check_quorum_due_ms: u64,
    /// The newest read round started and the newest a majority acknowledged.
    pub read_round: u64,
    pub confirmed_round: u64,
    /// When each unconfirmed round was started (for the lease).
    pub round_sent_ms: VecDeque<(u64, u64)>,
    pub reads: VecDeque<PendingRead>,
    pub lease_until_ms: u64,
    /// Set once a `TimeoutNow` went out: the target's campaign bypasses the
    /// voters' stickiness, so no lease is safe for the rest of the term.
    pub lease_forfeited: bool,
    pub transfer: Option<Transfer>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingRead {
    pub read: ReadId,
    /// The commit index the read must see (the leader's commit index when it
    /// arrived, or its no-op's index if higher).
    pub index: LogIndex,
    /// The read round that must be acknowledged by a majority: one started
    /// after the read arrived.
    pub round: u64,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Transfer {
    pub to: NodeId,
    pub deadline_ms: u64,
    pub timeout_now_sent: bool,
}

impl Group {
    pub fn new(config: Config, restored: Restored) -> Group {
        let Restored {
            mut hard_state,
            snapshot,
            snapshot_data,
            entries,
        } = restored;
        config.check();
        let rng = SplitMix64::new(config.seed ^ config.id.0.rotate_left(32));
        let mut group = Group {
            rng,
            hard: HardState::default(),
            log: Log::new(snapshot, snapshot_data, entries),
            role: Role::Follower,
            leader: None,
            membership: Membership::default(),
            membership_index: LogIndex(0),
            votes: BTreeSet::new(),
            election_deadline_ms: None,
            leader_contact_ms: 0,
            lead: None,
            incoming: None,
            config,
        };
        if group.planted(crate::Plant::ForgetVoteOnRestart) {
            hard_state.voted_for = None;
        }
        group.hard = hard_state;
        (group.membership_index, group.membership) = group.membership_from_log();
        group
    }

    /// Feeds one input at `now_ms` (the driver's monotonic clock) and appends
    /// the effects to `out`, which the driver executes in order (and may reuse
    /// across steps).
    pub fn step(&mut self, now_ms: u64, input: Input, out: &mut Vec<Output>) {
        if self.election_deadline_ms.is_none() {
            // The first step: a restarted node counts its start as contact
            // with a leader, so it votes for no one within an election timeout
            // of a lease it may have helped grant before it crashed.
            self.leader_contact_ms = now_ms;
            self.reset_election_deadline(now_ms);
            if self.is_sole_voter() {
                // Nobody else can lead, hold a lease or need this node's
                // vote: a group of one elects itself at its first tick
                // instead of sitting out an election timeout at each start.
                self.election_deadline_ms = Some(now_ms);
            }
        }
        match input {
            Input::Tick => self.on_tick(now_ms, out),
            Input::Propose { proposal, command } => self.propose(vec![(proposal, command)], out),
            Input::ProposeBatch { proposals } => self.propose(proposals, out),
            Input::Read { read } => self.on_read(now_ms, read, out),
            Input::Receive(envelope) => self.on_receive(now_ms, envelope, out),
            Input::Durable { through } => self.on_durable(now_ms, through, out),
            Input::TransferLeadership { to } => self.transfer_leadership(now_ms, to, out),
            Input::ChangeMembership { proposal, change } => {
                self.change_membership(now_ms, proposal, change, out)
            }
            Input::Compacted { meta, data } => self.on_compacted(meta, data),
        }
    }

    /// When the driver must call `step(.., Input::Tick, ..)` next: an
    /// election timeout, or a leader's heartbeat, check-quorum or transfer
    /// deadline. `Some(0)` before the first step; `None` for a node that has
    /// nothing to time (a learner, a removed member).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let Some(election_deadline_ms) = self.election_deadline_ms else {
            return Some(0);
        };
        match &self.lead {
            Some(lead) => {
                let transfer = lead
                    .transfer
                    .map_or(u64::MAX, |transfer| transfer.deadline_ms);
                Some(
                    lead.heartbeat_due_ms
                        .min(lead.check_quorum_due_ms)
                        .min(transfer),
                )
            }
            None if self.may_campaign() => Some(election_deadline_ms),
            None => None,
        }
    }

    /// Whether this node is the only voter of the membership in force.
    fn is_sole_voter(&self) -> bool {
        self.membership.voters.len() == 1 && self.membership.voters.contains(&self.config.id)
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn term(&self) -> Term {
        self.hard.term
    }

    pub fn hard_state(&self) -> HardState {
        self.hard
    }

    /// Who this node believes leads its term.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The newest committed entry. Its term reads 0 only after the planted
    /// `cut-below-commit` bug dropped it from the log.
    pub fn commit(&self) -> EntryId {
        let index = self.log.commit();
        self.log.id_at(index).unwrap_or(EntryId {
            term: Term(0),
            index,
        })
    }

    pub fn last(&self) -> EntryId {
        self.log.last()
    }

    /// The id of the entry at `index`, if the log holds it (the snapshot's
    /// last entry included, compacted ones not).
    pub fn id_at(&self, index: LogIndex) -> Option<EntryId> {
        self.log.id_at(index)
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    pub fn snapshot(&self) -> &SnapshotMeta {
        self.log.snapshot()
    }

    /// On a leader, each other member and the newest entry known to be in
    /// its log (what INFO's lag and WAIT count); empty on any other node.
    pub fn followers(&self) -> Vec<(NodeId, EntryId)> {
        self.lead.as_ref().map_or_else(Vec::new, |lead| {
            lead.progress
                .iter()
                .map(|(id, progress)| (*id, progress.matched))
                .collect()
        })
    }

    /// The entries the last `Input::Compacted` took out of memory, for the
    /// driver to free in slices between its batches (freeing them at once
    /// held the next batch up); the next compaction frees them if they are
    /// not taken.
    pub fn take_compacted(&mut self) -> std::collections::VecDeque<crate::types::Entry> {
        self.log.take_compacted()
    }

    /// Bytes of the entries after `index` that the log holds, as flow
    /// control charges them (what a follower matched through `index`
    /// still lacks, compacted entries not counted).
    pub fn bytes_after(&self, index: LogIndex) -> u64 {
        self.log
            .entries()
            .rev()
            .take_while(|entry| entry.id.index > index)
            .map(crate::log::entry_bytes)
            .sum()
    }

    /// Whether this build runs with `plant` switched on (always false without
    /// the `planted-bugs` feature).
    #[allow(unused_variables)]
    pub(crate) fn planted(&self, plant: crate::Plant) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.config.plant == Some(plant);
        #[cfg(not(feature = "planted-bugs"))]
        return false;
    }

    fn on_tick(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        if self.role == Role::Leader {
            self.leader_tick(now_ms, out);
        } else if self
            .election_deadline_ms
            .is_some_and(|deadline| now_ms >= deadline)
        {
            self.reset_election_deadline(now_ms);
            if self.may_campaign() {
                self.campaign_pre(now_ms, out);
            }
        }
    }

    fn on_receive(&mut self, now_ms: u64, envelope: Envelope, out: &mut Vec<Output>) {
        if envelope.to != self.config.id || envelope.from == self.config.id {
            return;
        }
        if !self.admit_term(now_ms, &envelope, out) {
            return;
        }
        let from = envelope.from;
        let term = envelope.term;
        match envelope.message {
            Message::PreVote { last } => self.on_pre_vote(now_ms, from, term, last, out),
            Message::PreVoteReply { granted } => {
                self.on_pre_vote_reply(now_ms, from, term, granted, out)
            }
            Message::Vote { last, transfer } => self.on_vote(now_ms, from, last, transfer, out),
            Message::VoteReply { granted } => self.on_vote_reply(now_ms, from, granted, out),
            Message::Append {
                prev,
                entries,
                commit,
                read_round,
            } => self.on_append(now_ms, from, prev, entries, commit, read_round, out),
            Message::AppendReply { result, read_round } => {
                self.on_append_reply(now_ms, from, result, read_round, out)
            }
            Message::Snapshot {
                meta,
                offset,
                data,
                done,
            } => self.on_snapshot(now_ms, from, meta, offset, data, done, out),
            Message::SnapshotReply {
                last,
                received,
                installed,
            } => self.on_snapshot_reply(now_ms, from, last, received, installed, out),
            Message::TimeoutNow => self.on_timeout_now(now_ms, from, out),
        }
    }

    fn on_durable(&mut self, now_ms: u64, through: EntryId, out: &mut Vec<Output>) {
        // A `Durable` for an entry cut since is stale: ignored by `set_durable`.
        if self.log.set_durable(through) && self.role == Role::Leader {
            self.maybe_commit(now_ms, out);
        }
    }

    /// The driver's snapshot must name the membership in force at its last
    /// entry (a later, uncommitted one could still be cut, and a follower
    /// that installs the snapshot would then believe it).
    fn on_compacted(&mut self, meta: SnapshotMeta, data: Vec<u8>) {
        if meta.last.index > self.log.snapshot().last.index {
            let (_, membership) = self.membership_at(meta.last.index);
            assert_eq!(
                meta.membership, membership,
                "a snapshot through {} names the membership in force there",
                meta.last
            );
        }
        self.log.compact(meta, data);
    }

    pub(crate) fn envelope(&self, to: NodeId, message: Message) -> Envelope {
        Envelope {
            from: self.config.id,
            to,
            term: self.hard.term,
            message,
        }
    }

    pub(crate) fn persist_hard_state(&self, out: &mut Vec<Output>) {
        out.push(Output::Persist {
            hard_state: Some(self.hard),
            entries: Vec::new(),
        });
    }

    /// Adopts a newer term (forgetting the vote of the old one).
    pub(crate) fn set_term(&mut self, term: Term) {
        assert!(
            term >= self.hard.term,
            "the term never decreases: {} to {term}",
            self.hard.term
        );
        if term > self.hard.term {
            self.hard = HardState {
                term,
                voted_for: None,
            };
        }
    }

    /// Records a vote: at most one candidate per term (§3.4).
    pub(crate) fn record_vote(&mut self, candidate: NodeId) {
        assert!(
            self.hard.voted_for.is_none() || self.hard.voted_for == Some(candidate),
            "one vote per term: voted for {:?} in term {}, now {candidate}",
            self.hard.voted_for,
            self.hard.term
        );
        self.hard.voted_for = Some(candidate);
    }

    pub(crate) fn reset_election_deadline(&mut self, now_ms: u64) {
        let spread = self.config.election_timeout_ms_max - self.config.election_timeout_ms_min;
        let jitter = self.rng.below(spread + 1);
        self.election_deadline_ms = Some(now_ms + self.config.election_timeout_ms_min + jitter);
    }

    /// An append or snapshot from `from`, leader of this term: follow it
    /// (a candidate of the same term steps down, §3.4) and count the contact.
    /// Returns false for a leader, which drops it: two leaders in one term
    /// happen only with a planted bug, which the simulator's checker reports.
    pub(crate) fn follow(&mut self, now_ms: u64, from: NodeId, out: &mut Vec<Output>) -> bool {
        if self.role == Role::Leader {
            return false;
        }
        if self.role != Role::Follower {
            self.become_follower(now_ms, self.hard.term, Some(from), out);
        }
        self.leader = Some(from);
        self.leader_contact_ms = now_ms;
        self.reset_election_deadline(now_ms);
        true
    }

    /// Steps down to follower in `term` (adopting it if newer, durably),
    /// following `leader` if known. A leader's waiting reads fail.
    pub(crate) fn become_follower(
        &mut self,
        now_ms: u64,
        term: Term,
        leader: Option<NodeId>,
        out: &mut Vec<Output>,
    ) {
        if term > self.hard.term {
            self.set_term(term);
            self.persist_hard_state(out);
        }
        self.role = Role::Follower;
        self.votes.clear();
        self.leader = leader;
        if let Some(lead) = self.lead.take() {
            // A deposed leader counts its own last lease as contact with a
            // leader: it grants no vote that could end that lease early.
            self.leader_contact_ms = now_ms;
            for pending in lead.reads {
                out.push(Output::ReadReady {
                    read: pending.read,
                    result: Err(NotLeader { leader }),
                });
            }
        }
        self.reset_election_deadline(now_ms);
    }
}
