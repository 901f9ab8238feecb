//! The values every other module of the core names: nodes, entries, the durable
//! state a node must never forget, and the group's membership.

use std::collections::BTreeSet;
use std::fmt;

pub use keel_wal::{LogIndex, Term};

/// A member of a group, unique within its cluster for the cluster's lifetime: a
/// wiped node rejoins under a new id (a node never forgets a promise).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// Names one entry everywhere: an index alone is ambiguous, since a deposed
/// leader's uncommitted entry and its successor's can share an index (Raft §5.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    pub term: Term,
    pub index: LogIndex,
}

impl EntryId {
    /// The position before the first entry: term 0, index 0.
    pub const ZERO: EntryId = EntryId {
        term: Term(0),
        index: LogIndex(0),
    };

    pub fn new(term: u64, index: u64) -> EntryId {
        EntryId {
            term: Term(term),
            index: LogIndex(index),
        }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.term, self.index)
    }
}

/// A command's bytes, shared: an entry is held by the log, the `Persist` output
/// and one message per follower at once, and copying it for each would cost
/// more than the rest of the core together (an allocation each).
pub type CommandBytes = std::sync::Arc<[u8]>;

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EntryPayload {
    /// The empty entry a new leader appends at the start of its term, so that it
    /// can commit entries of earlier terms (Raft §5.4.2, §6.4).
    Noop,
    /// An operation of the layer above, opaque to the core.
    Command(CommandBytes),
    /// The group's membership from this entry on (takes effect when appended,
    /// not when committed: Raft §4.1). Boxed: it is rare, and unboxed it
    /// would make every entry twice as large.
    Membership(Box<Membership>),
}

/// One log entry as the core and its peers see it. On the wire it also carries a
/// checksum of its payload (`codec`); on disk the layer above frames it into
/// its own WAL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    pub id: EntryId,
    pub payload: EntryPayload,
}

/// The group's members: voters decide elections and commits; learners receive
/// the log but neither vote nor count towards a majority (Raft §4.2.1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Membership {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
}

/// What a node must have durable before it sends any message that depends on it:
/// its term and its vote in that term (Raft Figure 2, "persistent state").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    pub term: Term,
    pub voted_for: Option<NodeId>,
}

/// A snapshot's identity: the last entry it includes and the membership in force
/// there. The bytes themselves belong to the layer above.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    pub last: EntryId,
    pub membership: Membership,
}

/// The driver's name for a proposal, echoed back in its `Resolve`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProposalId(pub u64);

/// The driver's name for a linearizable read, echoed back in its `ReadReady`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadId(pub u64);
