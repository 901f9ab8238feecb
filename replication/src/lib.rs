//! Keel's consensus core: a pure, synchronous Raft state machine. No clock, no IO,
//! no async, no randomness of its own: time and a seed arrive as arguments, and
//! every effect leaves as an [`Output`] whose order is the durability contract.
//! See docs/REPLICATION.md. Section numbers in comments (§) are those of Diego
//! Ongaro's dissertation, "Consensus: Bridging Theory and Practice" (2014).
//!
//! Reading order: `types`, `message`, `interface` (the contract), `config`,
//! `group` (state and dispatch), then one module per part of the protocol:
//! `election`, `replicate` (with `log` and `progress`), `read`, `membership`,
//! `snapshot`.

pub mod cluster_sim;
pub mod codec;
pub mod config;
mod election;
pub mod fuzzing;
mod group;
pub mod interface;
mod log;
mod membership;
pub mod message;
pub mod planted;
mod progress;
mod read;
mod replicate;
mod snapshot;
pub mod types;

pub use config::{Config, Restored};
pub use group::{Group, Role};
pub use interface::{Input, MembershipChange, NotLeader, Output, Refusal};
pub use log::{entry_bytes, ENTRY_OVERHEAD_BYTES};
pub use message::{AppendResult, Envelope, Message};
pub use planted::Plant;
pub use types::{
    CommandBytes, Entry, EntryId, EntryPayload, HardState, LogIndex, Membership, NodeId,
    ProposalId, ReadId, SnapshotMeta, Term,
};
