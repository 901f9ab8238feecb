//! The cluster as clients see it: its members, which shard holds which hash
//! slots, and per shard who leads it, who votes and who learns. The CLUSTER
//! commands, `-MOVED` and INFO's replication section read it; the node loop
//! asks [`Topology::route`] where a keyed command may run.
//!
//! A [`Topology`] is a value: the node publishes a new one into its
//! [`TopologyCell`] (a leader change, a member's address learned from a peer)
//! and each core reads it through its own [`TopologyView`], which takes the
//! new value only when the cell's version moved, so that routing a command
//! costs one atomic load, not a lock shared by every core.
//!
//! A single node is one member leading every shard
//! ([`Topology::single_node`]): every route is local.

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::identity::Identity;
use crate::node::core::shard_of_slot;
use crate::slot::SLOT_COUNT;

/// Bytes of a [`NodeName`]: 40 hex digits, what Redis Cluster's node ids
/// look like.
pub const NODE_NAME_BYTES: usize = 20;

/// What the name hashes before the identity, so that a node name is never
/// the hash of anything else Keel hashes.
const NODE_NAME_DOMAIN: &[u8] = b"keel node name v1";

/// A member's stable name, shown as 40 lowercase hex digits in CLUSTER
/// NODES, SLOTS, SHARDS and MYID.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeName([u8; NODE_NAME_BYTES]);

impl NodeName {
    /// The name of the node whose data directory has `identity`: the same
    /// after every restart, different for every node. It is a one-way hash
    /// because the node id also keys the key space's hash function, which a
    /// client must not learn from a reply.
    pub fn of_identity(identity: &Identity) -> NodeName {
        NodeName::of_ids(identity.cluster_id, identity.node_id)
    }

    /// The name of node `node_id` of cluster `cluster_id` (what a data
    /// directory's identity holds).
    pub fn of_ids(cluster_id: u128, node_id: u64) -> NodeName {
        let mut hasher = Sha256::new();
        hasher.update(NODE_NAME_DOMAIN);
        hasher.update(cluster_id.to_le_bytes());
        hasher.update(node_id.to_le_bytes());
        let digest = hasher.finalize();
        let mut name = [0; NODE_NAME_BYTES];
        name.copy_from_slice(&digest[..NODE_NAME_BYTES]);
        NodeName(name)
    }

    /// The name of member `id` of the cluster called `cluster_name`: every
    /// member derives the same name for it from the shared settings.
    pub fn of_member(cluster_name: &str, id: u64) -> NodeName {
        let mut hasher = Sha256::new();
        hasher.update(NODE_NAME_DOMAIN);
        hasher.update(b"member");
        hasher.update((cluster_name.len() as u64).to_le_bytes());
        hasher.update(cluster_name.as_bytes());
        hasher.update(id.to_le_bytes());
        let digest = hasher.finalize();
        let mut name = [0; NODE_NAME_BYTES];
        name.copy_from_slice(&digest[..NODE_NAME_BYTES]);
        NodeName(name)
    }

    pub fn from_bytes(bytes: [u8; NODE_NAME_BYTES]) -> NodeName {
        NodeName(bytes)
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeName({self})")
    }
}

/// A member's number in the cluster (`--id`), as the peers list names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId(pub u64);

/// One node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: MemberId,
    pub name: NodeName,
    /// Where clients reach it, as `-MOVED` and CLUSTER SLOTS name it. Empty
    /// when unknown (a node bound to every interface, alone): Redis shows
    /// its own address so before it meets a peer, and cluster clients then
    /// use the address they connected to.
    pub host: String,
    pub client_port: u16,
    /// The port peers reach it on; 0 for a node without peers.
    pub peer_port: u16,
    /// Whether this node's link to it is up (always, for itself); the peer
    /// transport reports it.
    pub connected: bool,
}

impl Member {
    /// A node without peers (member 1), serving clients on `bind:port`.
    pub fn alone(name: NodeName, bind: IpAddr, client_port: u16) -> Member {
        Member {
            id: MemberId(1),
            name,
            host: if bind.is_unspecified() {
                String::new()
            } else {
                bind.to_string()
            },
            client_port,
            peer_port: 0,
            connected: true,
        }
    }

    /// Member `id` of cluster `cluster_name`, whose peers reach it at
    /// `host:peer_port`; `client_port` 0 until it tells its peers (the
    /// handshake carries it).
    pub fn of_cluster(
        cluster_name: &str,
        id: u64,
        host: String,
        client_port: u16,
        peer_port: u16,
    ) -> Member {
        Member {
            id: MemberId(id),
            name: NodeName::of_member(cluster_name, id),
            host,
            client_port,
            peer_port,
            connected: false,
        }
    }

    /// `host:port`, as `-MOVED` gives it.
    pub fn client_address(&self) -> String {
        format!("{}:{}", self.host, self.client_port)
    }
}

/// One shard (a consensus group): its slots and who holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardPlacement {
    pub shard: u32,
    pub first_slot: u16,
    /// Inclusive, as Redis gives ranges.
    pub last_slot: u16,
    /// The leader this node knows of in `term`; `None` during an election.
    pub leader: Option<MemberId>,
    /// The consensus term the leader was elected in (Redis's epoch).
    pub term: u64,
    /// The members that vote, the leader among them.
    pub voters: Vec<MemberId>,
    /// The members that receive entries without voting.
    pub learners: Vec<MemberId>,
}

impl ShardPlacement {
    fn holds(&self, member: MemberId) -> bool {
        self.voters.contains(&member) || self.learners.contains(&member)
    }

    /// The members other than the leader, voters first: Redis's replicas.
    pub fn replicas(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.voters
            .iter()
            .chain(&self.learners)
            .copied()
            .filter(move |member| Some(*member) != self.leader)
    }

    pub fn slot_count(&self) -> u32 {
        u32::from(self.last_slot - self.first_slot) + 1
    }
}

/// What a command does with its keys, which decides where it may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Write,
    /// A read that must see every acknowledged write: the leader's.
    Read,
    /// A read on a `READONLY` connection: any member holding the shard may
    /// answer from its own, possibly stale, state.
    StaleRead,
}

/// Where a keyed command runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// On this node's copy of `shard`.
    Local { shard: u32 },
    /// Another member leads the slot's shard: Redis Cluster's `-MOVED`.
    Moved { slot: u16, address: String },
    /// The slot's shard has no known leader (an election): ask again soon.
    TryAgain { slot: u16 },
}

/// The cluster: its members and its shards, as this node knows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// This node.
    pub myself: MemberId,
    /// Sorted by id.
    pub members: Vec<Member>,
    /// Sorted by shard, slot ranges contiguous from 0 to the last slot.
    pub shards: Vec<ShardPlacement>,
}

impl Topology {
    /// Checks what every reader relies on (see the fields' docs).
    pub fn new(myself: MemberId, members: Vec<Member>, shards: Vec<ShardPlacement>) -> Topology {
        assert!(
            members.windows(2).all(|pair| pair[0].id < pair[1].id),
            "members are sorted by id, each once"
        );
        let topology = Topology {
            myself,
            members,
            shards,
        };
        assert!(topology.member(myself).is_some(), "this node is a member");
        let mut next_slot = 0u32;
        for (index, shard) in topology.shards.iter().enumerate() {
            assert_eq!(shard.shard as usize, index, "shards are in order");
            assert_eq!(
                u32::from(shard.first_slot),
                next_slot,
                "shard {index} starts where the one before it ends"
            );
            assert!(
                shard.first_slot <= shard.last_slot,
                "shard {index} has slots"
            );
            next_slot = u32::from(shard.last_slot) + 1;
            for member in shard.voters.iter().chain(&shard.learners) {
                assert!(
                    topology.member(*member).is_some(),
                    "shard {index} names member {member:?}, which is unknown"
                );
            }
            if let Some(leader) = shard.leader {
                assert!(
                    shard.voters.contains(&leader),
                    "shard {index}'s leader votes"
                );
            }
        }
        assert_eq!(next_slot, u32::from(SLOT_COUNT), "every slot has a shard");
        topology
    }

    /// One node leading all `shard_count` shards, in term 0 (it never held
    /// an election).
    pub fn single_node(myself: Member, shard_count: u32) -> Topology {
        let id = myself.id;
        let shards = slot_ranges(shard_count)
            .into_iter()
            .enumerate()
            .map(|(shard, (first_slot, last_slot))| ShardPlacement {
                shard: shard as u32,
                first_slot,
                last_slot,
                leader: Some(id),
                term: 0,
                voters: vec![id],
                learners: Vec::new(),
            })
            .collect();
        Topology::new(id, vec![myself], shards)
    }

    /// A cluster of `members` before any election: each votes in every
    /// shard, none leads yet.
    pub fn cluster(myself: MemberId, mut members: Vec<Member>, shard_count: u32) -> Topology {
        members.sort_by_key(|member| member.id);
        for member in &mut members {
            member.connected |= member.id == myself;
        }
        let voters: Vec<MemberId> = members.iter().map(|member| member.id).collect();
        let shards = slot_ranges(shard_count)
            .into_iter()
            .enumerate()
            .map(|(shard, (first_slot, last_slot))| ShardPlacement {
                shard: shard as u32,
                first_slot,
                last_slot,
                leader: None,
                term: 0,
                voters: voters.clone(),
                learners: Vec::new(),
            })
            .collect();
        Topology::new(myself, members, shards)
    }

    /// What this node learned of shard `shard`: `leader` leads it in
    /// `term` (`None`: an election). An older term never replaces a newer.
    pub fn set_leader(&mut self, shard: u32, leader: Option<MemberId>, term: u64) {
        let placement = &mut self.shards[shard as usize];
        if term >= placement.term {
            placement.term = term;
            placement.leader = leader;
        }
    }

    /// Member `member` serves clients on `client_port` (its handshake said).
    pub fn set_client_port(&mut self, member: MemberId, client_port: u16) {
        if let Ok(index) = self.members.binary_search_by_key(&member, |m| m.id) {
            self.members[index].client_port = client_port;
            self.members[index].connected = true;
        }
    }

    pub fn member(&self, id: MemberId) -> Option<&Member> {
        self.members
            .binary_search_by_key(&id, |member| member.id)
            .ok()
            .map(|index| &self.members[index])
    }

    pub fn myself(&self) -> &Member {
        self.member(self.myself).expect("checked by Topology::new")
    }

    /// The shard holding `slot`.
    pub fn shard_of_slot(&self, slot: u16) -> &ShardPlacement {
        assert!(slot < SLOT_COUNT, "slot {slot} out of range");
        let index = self.shards.partition_point(|shard| shard.last_slot < slot);
        &self.shards[index]
    }

    /// Where a command touching `slot` runs: here if this node leads the
    /// slot's shard (or holds it, for a stale read), else `-MOVED` to the
    /// leader, or `-TRYAGAIN` while there is none.
    pub fn route(&self, slot: u16, access: Access) -> Route {
        let shard = self.shard_of_slot(slot);
        let local = Route::Local { shard: shard.shard };
        if shard.leader == Some(self.myself) {
            return local;
        }
        if access == Access::StaleRead && shard.holds(self.myself) {
            return local;
        }
        // A leader whose client port no handshake told yet cannot be named.
        match shard
            .leader
            .and_then(|leader| self.member(leader))
            .filter(|leader| leader.client_port != 0)
        {
            Some(leader) => Route::Moved {
                slot,
                address: leader.client_address(),
            },
            None => Route::TryAgain { slot },
        }
    }

    /// The shards `member` leads.
    pub fn led_by(&self, member: MemberId) -> impl Iterator<Item = &ShardPlacement> {
        self.shards
            .iter()
            .filter(move |shard| shard.leader == Some(member))
    }

    /// The highest term of any shard: Redis's current epoch.
    pub fn current_epoch(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| shard.term)
            .max()
            .unwrap_or(0)
    }
}

/// Each shard's first and last slot when `shard_count` shards split the
/// slots as [`shard_of_slot`] assigns them.
pub fn slot_ranges(shard_count: u32) -> Vec<(u16, u16)> {
    let mut ranges: Vec<(u16, u16)> = Vec::with_capacity(shard_count as usize);
    for slot in 0..SLOT_COUNT {
        let shard = shard_of_slot(slot, shard_count) as usize;
        match ranges.get_mut(shard) {
            Some(range) => range.1 = slot,
            None => ranges.push((slot, slot)),
        }
        assert_eq!(
            ranges.len(),
            shard + 1,
            "shards take contiguous slot ranges"
        );
    }
    ranges
}

/// The node's current topology, shared by its cores: written when a leader
/// or a member changes, read by every command.
#[derive(Debug)]
pub struct TopologyCell {
    /// Bumped by every publish, under the lock: a view whose version is
    /// this one holds the current topology.
    version: AtomicU64,
    current: Mutex<Arc<Topology>>,
}

impl TopologyCell {
    pub fn new(topology: Topology) -> TopologyCell {
        TopologyCell {
            version: AtomicU64::new(0),
            current: Mutex::new(Arc::new(topology)),
        }
    }

    /// Replaces the topology; every core's view sees it at its next command.
    pub fn publish(&self, topology: Topology) {
        let mut current = self.current.lock().expect("topology lock");
        *current = Arc::new(topology);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Changes the current topology in place (a leader elected, a member's
    /// link down) and publishes the result.
    pub fn update(&self, change: impl FnOnce(&mut Topology)) {
        let mut current = self.current.lock().expect("topology lock");
        let mut next = Topology::clone(&current);
        change(&mut next);
        let checked = Topology::new(next.myself, next.members, next.shards);
        *current = Arc::new(checked);
        self.version.fetch_add(1, Ordering::Release);
    }

    pub fn get(&self) -> Arc<Topology> {
        Arc::clone(&self.current.lock().expect("topology lock"))
    }

    fn get_with_version(&self) -> (u64, Arc<Topology>) {
        let current = self.current.lock().expect("topology lock");
        (self.version.load(Ordering::Acquire), Arc::clone(&current))
    }
}

/// One core's copy of the topology, refreshed when the cell's version moves.
#[derive(Debug)]
pub struct TopologyView {
    version: u64,
    current: Arc<Topology>,
}

impl TopologyView {
    pub fn new(cell: &TopologyCell) -> TopologyView {
        let (version, current) = cell.get_with_version();
        TopologyView { version, current }
    }

    /// The current topology.
    pub fn current(&mut self, cell: &TopologyCell) -> &Topology {
        if cell.version.load(Ordering::Acquire) != self.version {
            (self.version, self.current) = cell.get_with_version();
        }
        &self.current
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A member of the hand-built three-node cluster: names `11..`, `22..`,
    /// `33..`; client ports 7001..7003, peer ports 17001..17003.
    pub(crate) fn member(id: u64) -> Member {
        Member {
            id: MemberId(id),
            name: NodeName::from_bytes([(id as u8) * 0x11; NODE_NAME_BYTES]),
            host: "127.0.0.1".into(),
            client_port: 7000 + id as u16,
            peer_port: 17000 + id as u16,
            connected: true,
        }
    }

    /// Three members, three shards (Redis's split of the slots), shard s
    /// led by member s + 1 in term 5 + s, every member a voter of every
    /// shard, as seen from member `myself`.
    pub(crate) fn three_nodes(myself: u64) -> Topology {
        let mut topology = Topology::single_node(member(1), 3);
        let all = vec![MemberId(1), MemberId(2), MemberId(3)];
        for shard in &mut topology.shards {
            shard.leader = Some(MemberId(u64::from(shard.shard) + 1));
            shard.term = 5 + u64::from(shard.shard);
            shard.voters = all.clone();
        }
        let members = vec![member(1), member(2), member(3)];
        Topology::new(MemberId(myself), members, topology.shards)
    }

    #[test]
    fn shards_take_contiguous_slot_ranges() {
        // One slot off `redis-cli --cluster create`'s 0-5460: the mapping
        // is Keel's own, fixed by the data on disk.
        assert_eq!(
            slot_ranges(3),
            vec![(0, 5461), (5462, 10922), (10923, 16383)]
        );
        assert_eq!(slot_ranges(1), vec![(0, 16383)]);
        let ranges = slot_ranges(16384);
        assert!(ranges
            .iter()
            .enumerate()
            .all(|(slot, range)| *range == (slot as u16, slot as u16)));
    }

    #[test]
    fn a_single_node_runs_every_command_here() {
        let topology = Topology::single_node(member(1), 4);
        for slot in [0, 4095, 4096, 16383] {
            for access in [Access::Write, Access::Read, Access::StaleRead] {
                assert_eq!(
                    topology.route(slot, access),
                    Route::Local {
                        shard: shard_of_slot(slot, 4)
                    }
                );
            }
        }
        assert_eq!(topology.current_epoch(), 0);
    }

    #[test]
    fn a_slot_another_member_leads_moves_to_its_client_address() {
        let topology = three_nodes(1);
        assert_eq!(
            topology.route(100, Access::Write),
            Route::Local { shard: 0 }
        );
        assert_eq!(
            topology.route(12182, Access::Write),
            Route::Moved {
                slot: 12182,
                address: "127.0.0.1:7003".into()
            }
        );
        assert_eq!(
            topology.route(5462, Access::Read),
            Route::Moved {
                slot: 5462,
                address: "127.0.0.1:7002".into()
            }
        );
        // A READONLY connection reads a follower's copy.
        assert_eq!(
            topology.route(5462, Access::StaleRead),
            Route::Local { shard: 1 }
        );
        assert_eq!(topology.current_epoch(), 7);
    }

    #[test]
    fn a_shard_without_a_leader_says_try_again_and_a_non_member_moves() {
        let mut topology = three_nodes(1);
        topology.shards[2].leader = None;
        assert_eq!(
            topology.route(16000, Access::Write),
            Route::TryAgain { slot: 16000 }
        );
        assert_eq!(
            topology.route(16000, Access::StaleRead),
            Route::Local { shard: 2 }
        );
        // A node outside a shard never reads it, even stale.
        topology.shards[1]
            .voters
            .retain(|member| *member != MemberId(1));
        assert_eq!(
            topology.route(6000, Access::StaleRead),
            Route::Moved {
                slot: 6000,
                address: "127.0.0.1:7002".into()
            }
        );
    }

    #[test]
    fn a_view_sees_what_the_cell_publishes() {
        let cell = TopologyCell::new(three_nodes(1));
        let mut view = TopologyView::new(&cell);
        assert_eq!(
            view.current(&cell).route(0, Access::Write),
            Route::Local { shard: 0 }
        );
        cell.update(|topology| topology.shards[0].leader = Some(MemberId(2)));
        assert_eq!(
            view.current(&cell).route(0, Access::Write),
            Route::Moved {
                slot: 0,
                address: "127.0.0.1:7002".into()
            }
        );
        cell.publish(Topology::single_node(member(1), 1));
        assert_eq!(view.current(&cell).members.len(), 1);
        assert_eq!(cell.get().shards.len(), 1);
    }

    /// A node bound to every interface does not know which address its
    /// clients use: it names none, as a Redis that has met no peer, and
    /// cluster clients (redis-py) use the address they connected to.
    #[test]
    fn a_lone_member_names_its_bind_address_unless_it_is_unspecified() {
        let name = NodeName::of_ids(1, 2);
        let loopback = Member::alone(name, "127.0.0.1".parse().unwrap(), 6379);
        assert_eq!(loopback.client_address(), "127.0.0.1:6379");
        for any in ["0.0.0.0", "::"] {
            let member = Member::alone(name, any.parse().unwrap(), 6379);
            assert_eq!(member.client_address(), ":6379");
        }
    }

    #[test]
    #[should_panic(expected = "leader votes")]
    fn a_leader_outside_the_voters_is_refused() {
        let cell = TopologyCell::new(three_nodes(1));
        cell.update(|topology| topology.shards[0].voters = vec![MemberId(2)]);
    }

    #[test]
    fn node_names_are_stable_distinct_and_forty_hex_digits() {
        let identity = Identity::fresh(7, 9, 4, 0);
        let name = NodeName::of_identity(&identity).to_string();
        assert_eq!(name.len(), 2 * NODE_NAME_BYTES);
        assert!(name
            .bytes()
            .all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase()));
        assert_eq!(
            NodeName::of_identity(&Identity::fresh(7, 9, 8, 5)).to_string(),
            name
        );
        assert_ne!(
            NodeName::of_identity(&Identity::fresh(7, 10, 4, 0)).to_string(),
            name
        );
        assert_ne!(
            NodeName::of_identity(&Identity::fresh(8, 9, 4, 0)).to_string(),
            name
        );
        assert_eq!(member(1).name.to_string(), "11".repeat(20));
    }
}
