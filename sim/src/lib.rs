//! Keel under madsim: the simulated IO, cluster harness, workloads and checkers.
//!
//! Built so far: the linearizability checker ([`linearizability`]) over recorded
//! histories ([`history`]), the sequential models it checks against ([`models`]),
//! parsers for the external histories that prove it agrees with Knossos and
//! Porcupine ([`external`]), [`disk`], the seeded fault-injecting disk whose
//! state outlives a node's kill, and (in `--cfg madsim` builds) `io`, the
//! madsim `NodeIo` that runs Keel's real node loop in the `keel-sim` binary
//! (`scripts/sim.sh`); for a cluster, the peer network between nodes
//! (`peer_net`, madsim datagrams through a fault layer: [`network_faults`])
//! and the seeded schedule of a cluster's faults ([`fault_schedule`]). Not
//! yet: the cluster run itself, which waits for the replicated node loop.

#[cfg(madsim)]
pub mod client;
#[cfg(madsim)]
pub mod cluster;
pub mod disk;
pub mod excuse;
pub mod external;
pub mod fault_schedule;
pub mod history;
#[cfg(madsim)]
pub mod io;
pub mod ledger;
pub mod linearizability;
pub mod models;
pub mod network_faults;
#[cfg(madsim)]
pub mod peer_net;
#[cfg(feature = "planted-bugs")]
pub mod plants;
pub mod raft_rules;
pub mod replicas;
#[cfg(madsim)]
pub mod run;
#[cfg(madsim)]
pub mod scenario;
pub mod trace;
pub mod workload;
