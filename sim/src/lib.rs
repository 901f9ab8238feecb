//! Keel under madsim: the simulated IO, cluster harness, workloads and checkers.
//!
//! Built so far: the linearizability checker ([`linearizability`]) over recorded
//! histories ([`history`]), the sequential models it checks against ([`models`]),
//! and parsers for the external histories that prove it agrees with Knossos and
//! Porcupine ([`external`]). The simulated cluster itself is still to come: see the
//! simulation issue.

pub mod external;
pub mod history;
#[cfg(madsim)]
pub mod io;
pub mod linearizability;
pub mod models;
