//! Keel's node: the key-value state machine's operations and the `keel`
//! binary's commands. `main.rs` only hands the process arguments to [`cli`].

pub mod cli;
pub mod cluster_config;
pub mod command;
pub mod config;
pub mod cross_core;
pub mod entropy;
pub mod executor_thread;
pub mod exit;
pub mod fuzzing;
pub mod glommio_disk;
pub mod glommio_io;
pub mod glommio_peer;
pub mod identity;
pub mod keyspace;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod operation;
pub mod overlay;
pub mod peer;
pub mod readiness;
pub mod resp;
pub mod secret;
pub mod serve;
pub mod slot;
pub mod snapshot;
pub mod topology;
pub mod wal_cli;
