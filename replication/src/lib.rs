//! Keel's consensus core: a pure, synchronous Raft state machine. No clock, no IO,
//! no async, no randomness of its own: time and a seed arrive as arguments, and
//! every effect leaves as an [`Output`] whose order is the durability contract.
//! See docs/REPLICATION.md.

pub mod codec;
pub mod fuzzing;
pub mod interface;
pub mod message;
pub mod types;

pub use interface::{Input, MembershipChange, NotLeader, Output};
pub use message::{AppendResult, Envelope, Message};
pub use types::{
    Entry, EntryId, EntryPayload, HardState, LogIndex, Membership, NodeId, ProposalId, ReadId,
    SnapshotMeta, Term,
};
