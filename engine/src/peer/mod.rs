//! The peer transport's pure parts: what travels between two nodes' copies
//! of a core, and each core's links to its peers. The sockets and tasks that
//! carry it in the server are in [`crate::glommio_peer`].
//!
//! One TCP connection joins each pair of nodes per core index (shard s lives
//! on core `core_of_shard(s, cores)` on every node, so its messages never
//! hop between cores). The node with the larger id dials; core c of a node
//! listens on its peer port + c. A connection starts with the
//! [`handshake`], then carries [`frame`]s both ways.

pub mod forward;
pub mod frame;
pub mod handshake;
pub mod links;
pub mod replays;
