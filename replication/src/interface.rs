//! What the driver feeds a [`crate::Group`] and what it gets back. The driver
//! executes a step's outputs in order; their order is the durability contract.

use crate::message::Envelope;
use crate::types::{
    Entry, EntryId, HardState, LogIndex, Membership, NodeId, ProposalId, ReadId, SnapshotMeta,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The deadline from `next_deadline_ms` has passed (or any wake-up: a tick
    /// with nothing due does nothing).
    Tick,
    /// Append a command (leader only; elsewhere resolved `NotLeader`).
    Propose {
        proposal: ProposalId,
        command: Vec<u8>,
    },
    /// A linearizable read: answered `ReadReady` once the read index is known
    /// to be current and applied (ReadIndex, §6.4).
    Read { read: ReadId },
    /// A message from a peer (untrusted: already decoded and checksummed).
    Receive(Envelope),
    /// Every `Persist` output emitted so far, through this entry, is durable.
    Durable { through: EntryId },
    /// Hand leadership to `to` (§3.10).
    TransferLeadership { to: NodeId },
    /// Propose a membership change (one server at a time, §4.1).
    ChangeMembership { change: MembershipChange },
    /// The driver has a snapshot through `meta.last`: entries up to it may be
    /// dropped from the core's memory, and a follower that needs them gets the
    /// snapshot instead.
    Compacted { meta: SnapshotMeta },
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
    /// A proposal's fate: the id its entry got, or why it got none.
    Resolve {
        proposal: ProposalId,
        result: Result<EntryId, NotLeader>,
    },
    /// A read may be served once the state machine has applied `index`.
    ReadReady {
        read: ReadId,
        result: Result<LogIndex, NotLeader>,
    },
    /// A whole snapshot was received: install it, then report `Compacted`.
    InstallSnapshot { meta: SnapshotMeta, data: Vec<u8> },
    /// The membership in force changed (for the driver's routing and metrics).
    MembershipChanged(Membership),
}

/// This node cannot serve the request; `leader` is its best knowledge of who can.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotLeader {
    pub leader: Option<NodeId>,
}
