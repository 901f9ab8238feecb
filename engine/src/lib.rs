//! Keel's node: the key-value state machine's operations and the `keel`
//! binary's commands. `main.rs` only hands the process arguments to [`cli`].

pub mod cli;
pub mod exit;
pub mod operation;
pub mod resp;
pub mod wal_cli;
