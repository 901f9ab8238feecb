//! A node's shards and their peers: how a shard's messages leave
//! ([`NodeOutside`]), how the peers' arrive ([`receive`]), and the timing
//! of the groups of a cluster ([`group_config`]).

use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use keel_replication::{Config, NodeId};

use crate::node::core::{Core, Forwarding};
use crate::node::io::{NodeIo, PeerId, PeerSendError, ShardOutside};
use crate::peer::forward::{self, Forward};
use crate::topology::{MemberId, TopologyCell};

/// The shortest election timeout of a cluster's groups. The core's default
/// (1 s) would put every failover above the 1 s a client should wait at
/// most; 400 ms is still 8 heartbeats, and four times the longest stall of
/// an executor this machine showed (`executor_thread`'s 20 ms wake-up
/// bounds a parked executor; a loaded 2-CPU VM descheduled a process for
/// up to ~100 ms).
pub const CLUSTER_ELECTION_TIMEOUT_MS_MIN: u64 = 400;
/// The longest: the spread that resolves split votes (§3.4).
pub const CLUSTER_ELECTION_TIMEOUT_MS_MAX: u64 = 800;
/// How often a cluster's leaders send heartbeats.
pub const CLUSTER_HEARTBEAT_INTERVAL_MS: u64 = 50;

/// The consensus settings of one shard's group on node `me`, seeded with
/// `seed`; a group with peers takes the cluster's timing.
pub fn group_config(me: NodeId, seed: u64, clustered: bool) -> Config {
    let mut config = Config::new(me, seed);
    if clustered {
        config.election_timeout_ms_min = CLUSTER_ELECTION_TIMEOUT_MS_MIN;
        config.election_timeout_ms_max = CLUSTER_ELECTION_TIMEOUT_MS_MAX;
        config.heartbeat_interval_ms = CLUSTER_HEARTBEAT_INTERVAL_MS;
    }
    crate::node::planted::configure(&mut config);
    config.check();
    config
}

/// The way out of one core's shards: its peer links and the node's
/// topology.
pub struct NodeOutside<I: NodeIo> {
    pub io: I,
    pub topology: Arc<TopologyCell>,
}

impl<I: NodeIo> fmt::Debug for NodeOutside<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeOutside").finish_non_exhaustive()
    }
}

impl<I: NodeIo> ShardOutside for NodeOutside<I> {
    fn send(&self, to: PeerId, shard: u32, frame: Vec<u8>) -> Result<(), PeerSendError> {
        self.io.peer_send(to, shard, frame)
    }

    fn leader(&self, shard: u32, leader: Option<PeerId>, term: u64) {
        self.topology
            .update(|topology| topology.set_leader(shard, leader.map(MemberId), term));
    }
}

/// Takes every message the peers send this core's shards, until the node
/// stops: a replication message is decoded (which checks its checksums)
/// and stepped into its shard's group; a forwarded command or its reply
/// goes to the core ([`Core::forwarded_request`], [`Core::forwarded_reply`]). A message that does not decode, names another sender
/// than its link's, or a shard this core does not hold is dropped and
/// counted: a peer is not trusted.
pub async fn receive<I: NodeIo>(core: Rc<Core<I>>) {
    loop {
        let message = core.io.peer_recv().await;
        let Some(shard) = core.shard(message.shard) else {
            crate::metrics::NodeMetrics::add(&core.node.metrics.peer_protocol_errors, 1);
            tracing::warn!(
                from = message.from,
                shard = message.shard,
                "a peer message for a shard this core does not hold; dropped"
            );
            continue;
        };
        if forward::is_forward(&message.frame) {
            match forward::decode(&message.frame) {
                Ok(Forward::Request { id, args }) => core.forwarded_request(
                    message.from,
                    message.shard,
                    id,
                    Forwarding::Command(args),
                ),
                Ok(Forward::Transaction {
                    id,
                    watcher,
                    commands,
                }) => core.forwarded_request(
                    message.from,
                    message.shard,
                    id,
                    Forwarding::Transaction { watcher, commands },
                ),
                Ok(Forward::Reply { id, reply }) => core.forwarded_reply(id, reply),
                Err(error) => {
                    crate::metrics::NodeMetrics::add(&core.node.metrics.peer_protocol_errors, 1);
                    tracing::warn!(from = message.from, shard = message.shard, %error, "a forwarded command does not decode; dropped");
                }
            }
            continue;
        }
        let envelope = match keel_replication::codec::decode(&message.frame) {
            Ok(envelope) if envelope.from == NodeId(message.from) => envelope,
            Ok(envelope) => {
                crate::metrics::NodeMetrics::add(&core.node.metrics.peer_protocol_errors, 1);
                tracing::warn!(link = message.from, claims = %envelope.from, "a peer message claims another sender; dropped");
                continue;
            }
            Err(error) => {
                crate::metrics::NodeMetrics::add(&core.node.metrics.peer_protocol_errors, 1);
                tracing::warn!(from = message.from, shard = message.shard, %error, "a peer message does not decode; dropped");
                continue;
            }
        };
        shard.receive(core.io.monotonic_us() / 1_000, envelope);
    }
}
