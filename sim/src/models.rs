//! Sequential models for the linearizability checker: a register (the Jepsen etcd
//! histories), a string map (the Porcupine kv histories) and Redis strings (Keel's
//! own histories).
//!
//! All three are deterministic: the input and the state decide both the output and
//! the next state, so an unknown output changes nothing but the check.

pub mod kv;
pub mod redis;
pub mod register;
