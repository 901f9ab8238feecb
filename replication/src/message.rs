//! The messages group members exchange. Every message names the sender's term;
//! its handler first drops stale or foreign messages (term, membership), then acts.
//! The byte layout lives in `codec`.

use crate::types::{Entry, EntryId, NodeId, SnapshotMeta, Term};

/// One message between two members of the same group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's current term (for a pre-vote request: the term it would
    /// campaign in, without having adopted it: Raft §9.6).
    pub term: Term,
    pub message: Message,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// "Would you vote for me?" without disturbing anyone's term (§9.6).
    PreVote {
        last: EntryId,
    },
    PreVoteReply {
        granted: bool,
    },
    /// RequestVote (§3.4, Figure 3.1). `transfer` marks a campaign started by
    /// `TimeoutNow`, which a voter grants even while it hears from a leader (§3.10).
    Vote {
        last: EntryId,
        transfer: bool,
    },
    VoteReply {
        granted: bool,
    },
    /// AppendEntries (Figure 3.1): the entries follow `prev`; an empty `entries`
    /// is a heartbeat. `read_round` is the leader's ReadIndex round this message
    /// confirms leadership for (§6.4), echoed in the reply.
    Append {
        prev: EntryId,
        entries: Vec<Entry>,
        commit: crate::types::LogIndex,
        read_round: u64,
    },
    /// `Ok { matched }`: the follower's log matches the leader's through
    /// `matched` (durably, once sent: a reply to an append is sent only after
    /// the appended entries are durable). `Reject { hint }`: `prev` did not
    /// match; `hint` is the follower's last entry at or below `prev.index`
    /// whose term is at most `prev.term`, so the leader skips a whole
    /// conflicting term per round trip (§5.3's optimization).
    AppendReply {
        result: AppendResult,
        read_round: u64,
    },
    /// One chunk of a snapshot (§7): bounded bytes at `offset`; `done` on the last.
    Snapshot {
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    },
    /// The follower holds the snapshot's bytes through `received` (resumable);
    /// `installed` once it has taken the whole snapshot.
    SnapshotReply {
        last: EntryId,
        received: u64,
        installed: bool,
    },
    /// Leadership transfer: campaign now, skipping pre-vote (§3.10).
    TimeoutNow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendResult {
    Ok { matched: EntryId },
    Reject { hint: EntryId },
}
