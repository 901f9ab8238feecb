//! What the driver feeds a [`crate::Group`] and what it gets back. The driver
//! executes a step's outputs in order; their order is the durability contract.

use crate::message::Envelope;
use crate::types::{
    CommandBytes, Entry, EntryId, HardState, LogIndex, Membership, NodeId, ProposalId, ReadId,
    SnapshotMeta,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The deadline from `next_deadline_ms` has passed (or any wake-up: a tick
    /// with nothing due does nothing).
    Tick,
    /// Append a command (leader only; elsewhere resolved with a `Refusal`).
    Propose {
        proposal: ProposalId,
        command: CommandBytes,
    },
    /// Append several commands at once: one `Persist` and one message per
    /// follower for the whole batch (the batched path of the benchmark).
    ProposeBatch {
        proposals: Vec<(ProposalId, CommandBytes)>,
    },
    /// A linearizable read: answered `ReadReady` with the index the state
    /// machine must have applied before serving it (ReadIndex, §6.4).
    Read { read: ReadId },
    /// A message from a peer (untrusted: already decoded and checksummed).
    Receive(Envelope),
    /// Every `Persist` output emitted so far, through this entry, is durable.
    Durable { through: EntryId },
    /// Hand leadership to `to` (§3.10).
    TransferLeadership { to: NodeId },
    /// Propose a membership change (one server at a time, §4.1), resolved like
    /// a proposal.
    ChangeMembership {
        proposal: ProposalId,
        change: MembershipChange,
    },
    /// The driver has a snapshot through `meta.last` (at or below the commit
    /// index; `meta.membership` the one in force there, `Group::membership_at`):
    /// entries up to it are dropped from the core's memory, and a follower
    /// that needs them gets `data` in chunks instead (the core keeps the
    /// newest snapshot's bytes: docs/REPLICATION.md, "The driver contract").
    Compacted { meta: SnapshotMeta, data: Vec<u8> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    AddLearner(NodeId),
    Promote(NodeId),
    Remove(NodeId),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Remove every entry after `after` from the log (never at or below the commit
    /// index). Precedes the `Persist` of the entries that replace them.
    Cut { after: EntryId },
    /// Make this durable: the hard state (if any), then the entries, appended.
    Persist {
        hard_state: Option<HardState>,
        entries: Vec<Entry>,
    },
    /// Send now: depends on nothing not yet durable.
    Send(Envelope),
    /// Send only once every `Persist` before it is durable (votes, append acks).
    SendAfterDurable(Envelope),
    /// Entries through this one are committed: apply them in order.
    Commit { through: EntryId },
    /// A proposal's fate: the id its entry got (the driver then waits for a
    /// `Commit` through it, and gives up if another entry commits at its
    /// index), or why it got none.
    Resolve {
        proposal: ProposalId,
        result: Result<EntryId, Refusal>,
    },
    /// A read may be served once the state machine has applied `index`.
    ReadReady {
        read: ReadId,
        result: Result<LogIndex, NotLeader>,
    },
    /// A whole snapshot was received: install it as the state machine's state
    /// (applied through `meta.last`), durably, like a `Persist`: a
    /// `SendAfterDurable` after it waits for it. The log keeps the entries
    /// after `meta.last` only if the entry at `meta.last` was in it with the
    /// same term; otherwise every entry is dropped (they were all uncommitted).
    /// No `Compacted` follows: the core has already taken the snapshot.
    InstallSnapshot { meta: SnapshotMeta, data: Vec<u8> },
    /// The membership in force changed (for the driver's routing and metrics).
    MembershipChanged(Membership),
}

/// This node cannot serve the request; `leader` is its best knowledge of who can.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotLeader {
    pub leader: Option<NodeId>,
}

/// Why a proposal or membership change got no entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// This node is not the leader.
    NotLeader(NotLeader),
    /// Leadership is being handed to `to` (§3.10): proposals wait for it.
    Transferring { to: NodeId },
    /// A membership change is still uncommitted, or this leader has not yet
    /// committed an entry of its term: one change at a time (§4.1).
    MembershipChangePending,
    /// The learner to promote has not caught up with the commit index yet: a
    /// voter that lags would stall commits (§4.2.1). Retry once it has.
    LearnerBehind,
    /// The change does not apply to the membership in force (adding a member,
    /// promoting a non-learner, removing a stranger or the last voter).
    InvalidChange,
}
