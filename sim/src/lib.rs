//! Keel under madsim: the simulated IO, cluster harness, workloads and checkers.
//!
//! Built so far: the linearizability checker ([`linearizability`]) over recorded
//! histories ([`history`]), the sequential models it checks against ([`models`]),
//! parsers for the external histories that prove it agrees with Knossos and
//! Porcupine ([`external`]), and [`disk`], the seeded fault-injecting disk whose
//! state outlives a node's kill. The simulated cluster itself is still to come:
//! see the simulation issue.

pub mod disk;
pub mod external;
pub mod history;
pub mod linearizability;
pub mod models;
