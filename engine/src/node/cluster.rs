//! Redis Cluster's client interface over the node's [`Topology`]: CLUSTER
//! and its subcommands, WAIT's arguments, the `-MOVED` and `-TRYAGAIN`
//! errors [`Topology::route`] leads to, and INFO's replication and cluster
//! sections. Pure: the node loop passes the topology, the shards' figures
//! and, for the subcommands that count keys, asks the shards itself.
//!
//! Replies have Redis 7.0's shapes (checked against `redis-server
//! --cluster-enabled yes`), with Keel's shards where Redis has masters:
//! - CLUSTER SLOTS and SHARDS give one entry per Keel shard (a consensus
//!   group): its leader as the master, its other voters and its learners as
//!   replicas. A shard without a leader is left out of SLOTS, as Redis
//!   leaves out slots no master serves.
//! - CLUSTER NODES shows a member leading at least one shard as a master
//!   with the slots it leads; one leading none as a replica of the leader of
//!   the first shard it holds. Keel keeps no ping times (`0 0`).
//! - The epoch is the consensus term: a master's config epoch is the
//!   highest term of the shards it leads, the current epoch the highest
//!   term of all.

use std::fmt::Write as _;

use crate::command::{self, number::parse_i64};
use crate::node::shard::ShardStats;
use crate::resp::Reply;
use crate::slot::{key_slot, SLOT_COUNT};
use crate::topology::{Member, MemberId, ShardPlacement, Topology};

const HELP: &[&str] = &[
    "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "COUNTKEYSINSLOT <slot>",
    "    Return the number of keys in <slot>.",
    "GETKEYSINSLOT <slot> <count>",
    "    Return key names stored by current node in a slot.",
    "INFO",
    "    Return information about the cluster.",
    "KEYSLOT <key>",
    "    Return the hash slot for <key>.",
    "MYID",
    "    Return the node id.",
    "NODES",
    "    Return cluster configuration seen by node. Output format:",
    "    <id> <ip:port@bus-port> <flags> <master> <pings> <pongs> <epoch> <link> <slot> ...",
    "SHARDS",
    "    Return information about slot range mappings and the nodes associated with them.",
    "SLOTS",
    "    Return information about slots range mappings. Each range is made of:",
    "    start, end, master and replicas IP addresses, ports and ids",
    "HELP",
    "    Print this help.",
];

const NOT_INTEGER: &str = "ERR value is not an integer or out of range";

/// What a CLUSTER request needs: a reply made from the topology, or the
/// keys of a slot, which only the slot's shard knows.
#[derive(Debug, PartialEq)]
pub enum ClusterCommand {
    Reply(Reply),
    CountKeysInSlot { slot: u16 },
    GetKeysInSlot { slot: u16, count: usize },
}

/// CLUSTER's subcommands; `args` start with `CLUSTER` itself.
pub fn cluster_command(topology: &Topology, args: &[Vec<u8>]) -> ClusterCommand {
    let sub = args[1].to_ascii_lowercase();
    // Each subcommand's arity counts CLUSTER itself, as Redis's does.
    let arity = match sub.as_slice() {
        b"slots" | b"shards" | b"nodes" | b"myid" | b"info" | b"help" => 2,
        b"keyslot" | b"countkeysinslot" => 3,
        b"getkeysinslot" => 4,
        _ => return ClusterCommand::Reply(unknown_subcommand(&args[1])),
    };
    if args.len() != arity {
        let name = format!("cluster|{}", String::from_utf8_lossy(&sub));
        return ClusterCommand::Reply(command::wrong_arity(&name));
    }
    let reply = match sub.as_slice() {
        b"slots" => slots(topology),
        b"shards" => shards(topology),
        b"nodes" => Reply::Bulk(nodes(topology).into_bytes()),
        b"myid" => Reply::Bulk(topology.myself().name.to_string().into_bytes()),
        b"info" => Reply::Bulk(info(topology).into_bytes()),
        b"keyslot" => Reply::Integer(i64::from(key_slot(&args[2]))),
        b"countkeysinslot" => {
            return match parse_slot(&args[2], "ERR Invalid slot") {
                Ok(slot) => ClusterCommand::CountKeysInSlot { slot },
                Err(error) => ClusterCommand::Reply(error),
            }
        }
        b"getkeysinslot" => return get_keys_in_slot(&args[2], &args[3]),
        _ => Reply::Array(
            HELP.iter()
                .map(|line| Reply::Simple((*line).to_owned()))
                .collect(),
        ),
    };
    ClusterCommand::Reply(reply)
}

fn unknown_subcommand(given: &[u8]) -> Reply {
    Reply::Error(format!(
        "ERR unknown subcommand '{}'. Try CLUSTER HELP.",
        String::from_utf8_lossy(given)
    ))
}

/// A slot number, or `invalid` (Redis's text differs by subcommand) when it
/// is an integer outside 0..16384.
fn parse_slot(text: &[u8], invalid: &str) -> Result<u16, Reply> {
    let slot = parse_i64(text).ok_or_else(|| Reply::error(NOT_INTEGER))?;
    u16::try_from(slot)
        .ok()
        .filter(|slot| *slot < SLOT_COUNT)
        .ok_or_else(|| Reply::error(invalid))
}

fn get_keys_in_slot(slot: &[u8], count: &[u8]) -> ClusterCommand {
    const INVALID: &str = "ERR Invalid slot or number of keys";
    // Redis reads both numbers before it checks either.
    let (Some(_), Some(count)) = (parse_i64(slot), parse_i64(count)) else {
        return ClusterCommand::Reply(Reply::error(NOT_INTEGER));
    };
    let Ok(count) = usize::try_from(count) else {
        return ClusterCommand::Reply(Reply::error(INVALID));
    };
    match parse_slot(slot, INVALID) {
        Ok(slot) => ClusterCommand::GetKeysInSlot { slot, count },
        Err(error) => ClusterCommand::Reply(error),
    }
}

/// `-MOVED <slot> <host>:<port>`: the slot's shard is led elsewhere.
pub fn moved(slot: u16, address: &str) -> Reply {
    Reply::Error(format!("MOVED {slot} {address}"))
}

/// `-TRYAGAIN`, which cluster clients retry after a pause. Redis has one
/// text for it (a multi-key request while its slot migrates); Keel sends it
/// while the slot's shard elects a leader, and says so.
pub fn try_again(slot: u16) -> Reply {
    Reply::Error(format!(
        "TRYAGAIN the shard of slot {slot} has no leader yet (an election is under way)"
    ))
}

/// WAIT numreplicas timeout: the arguments checked as Redis checks them.
/// Returns the replicas wanted (a negative count wants none) and the
/// timeout in milliseconds (0: wait for ever).
pub fn check_wait(args: &[Vec<u8>]) -> Result<(u64, u64), Reply> {
    let wanted = parse_i64(&args[1]).ok_or_else(|| Reply::error(NOT_INTEGER))?;
    match parse_i64(&args[2]) {
        None => Err(Reply::error(
            "ERR timeout is not an integer or out of range",
        )),
        Some(timeout) if timeout < 0 => Err(Reply::error("ERR timeout is negative")),
        Some(timeout) => Ok((wanted.max(0) as u64, timeout as u64)),
    }
}

/// One entry of CLUSTER SLOTS and of CLUSTER SHARDS's node list: where a
/// member is, by name.
fn slots_node(member: &Member) -> Reply {
    Reply::Array(vec![
        Reply::Bulk(member.host.clone().into_bytes()),
        Reply::Integer(i64::from(member.client_port)),
        Reply::Bulk(member.name.to_string().into_bytes()),
        // Redis 7's networking metadata (hostname), none here: an empty
        // array in RESP2, an empty map in RESP3.
        Reply::Map(Vec::new()),
    ])
}

fn slots(topology: &Topology) -> Reply {
    let entries = topology.shards.iter().filter_map(|shard| {
        let leader = topology.member(shard.leader?)?;
        let mut entry = vec![
            Reply::Integer(i64::from(shard.first_slot)),
            Reply::Integer(i64::from(shard.last_slot)),
            slots_node(leader),
        ];
        entry.extend(
            shard
                .replicas()
                .filter_map(|member| topology.member(member))
                .map(slots_node),
        );
        Some(Reply::Array(entry))
    });
    Reply::Array(entries.collect())
}

fn bulk(text: &str) -> Reply {
    Reply::Bulk(text.as_bytes().to_vec())
}

fn shards(topology: &Topology) -> Reply {
    let shard_entry = |shard: &ShardPlacement| {
        let nodes = shard
            .leader
            .into_iter()
            .chain(shard.replicas())
            .filter_map(|id| topology.member(id))
            .map(|member| {
                let role = if Some(member.id) == shard.leader {
                    "master"
                } else {
                    "replica"
                };
                Reply::Map(vec![
                    (bulk("id"), bulk(&member.name.to_string())),
                    (bulk("port"), Reply::Integer(i64::from(member.client_port))),
                    (bulk("ip"), bulk(&member.host)),
                    (bulk("endpoint"), bulk(&member.host)),
                    (bulk("role"), bulk(role)),
                    // Redis's byte offset in its replication stream: Keel's
                    // log has no such offset per node.
                    (bulk("replication-offset"), Reply::Integer(0)),
                    (
                        bulk("health"),
                        bulk(if member.connected { "online" } else { "failed" }),
                    ),
                ])
            });
        Reply::Map(vec![
            (
                bulk("slots"),
                Reply::Array(vec![
                    Reply::Integer(i64::from(shard.first_slot)),
                    Reply::Integer(i64::from(shard.last_slot)),
                ]),
            ),
            (bulk("nodes"), Reply::Array(nodes.collect())),
        ])
    };
    Reply::Array(topology.shards.iter().map(shard_entry).collect())
}

/// Slot ranges as CLUSTER NODES writes them: adjacent ranges merged, a
/// range of one slot as the slot alone.
fn ranges_text<'a>(shards: impl Iterator<Item = &'a ShardPlacement>) -> String {
    let mut merged: Vec<(u16, u16)> = Vec::new();
    for shard in shards {
        match merged.last_mut() {
            Some(last) if u32::from(last.1) + 1 == u32::from(shard.first_slot) => {
                last.1 = shard.last_slot;
            }
            _ => merged.push((shard.first_slot, shard.last_slot)),
        }
    }
    let mut text = String::new();
    for (first, last) in merged {
        if first == last {
            let _ = write!(text, " {first}");
        } else {
            let _ = write!(text, " {first}-{last}");
        }
    }
    text
}

fn nodes(topology: &Topology) -> String {
    let mut out = String::new();
    for member in &topology.members {
        let led: Vec<&ShardPlacement> = topology.led_by(member.id).collect();
        let held = || {
            topology.shards.iter().filter(|shard| {
                shard.voters.contains(&member.id) || shard.learners.contains(&member.id)
            })
        };
        let (role, master, epoch) = if led.is_empty() {
            let master = held()
                .find_map(|shard| topology.member(shard.leader?))
                .map_or_else(|| "-".to_owned(), |leader| leader.name.to_string());
            let epoch = held().map(|shard| shard.term).max().unwrap_or(0);
            ("slave", master, epoch)
        } else {
            let epoch = led.iter().map(|shard| shard.term).max().unwrap_or(0);
            ("master", "-".to_owned(), epoch)
        };
        let flags = if member.id == topology.myself {
            format!("myself,{role}")
        } else {
            role.to_owned()
        };
        let link = if member.connected {
            "connected"
        } else {
            "disconnected"
        };
        let _ = writeln!(
            out,
            "{} {}:{}@{} {flags} {master} 0 0 {epoch} {link}{}",
            member.name,
            member.host,
            member.client_port,
            member.peer_port,
            ranges_text(led.into_iter())
        );
    }
    out
}

/// CLUSTER INFO: the state is `ok` while every slot's shard has a leader.
fn info(topology: &Topology) -> String {
    let served: u32 = topology
        .shards
        .iter()
        .filter(|shard| shard.leader.is_some())
        .map(ShardPlacement::slot_count)
        .sum();
    let unserved = u32::from(SLOT_COUNT) - served;
    let leaders: std::collections::BTreeSet<MemberId> = topology
        .shards
        .iter()
        .filter_map(|shard| shard.leader)
        .collect();
    let my_epoch = topology
        .led_by(topology.myself)
        .map(|shard| shard.term)
        .max()
        .unwrap_or(0);
    format!(
        "cluster_state:{}\r\ncluster_slots_assigned:{SLOT_COUNT}\r\ncluster_slots_ok:{served}\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:{unserved}\r\ncluster_known_nodes:{}\r\ncluster_size:{}\r\ncluster_current_epoch:{}\r\ncluster_my_epoch:{my_epoch}\r\n",
        if unserved == 0 { "ok" } else { "fail" },
        topology.members.len(),
        leaders.len(),
        topology.current_epoch(),
    )
}

/// How far a follower of a shard this node leads has come.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowerLag {
    pub member: MemberId,
    /// The highest entry known to be in its log.
    pub match_index: u64,
    /// Entries the leader has that it lacks.
    pub lag_entries: u64,
    /// Their payload bytes.
    pub lag_bytes: u64,
}

/// One shard's replication progress as INFO shows it, beside what the
/// topology says (role, term, leader).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardProgress {
    pub shard: u32,
    /// The highest entry known committed.
    pub commit_index: u64,
    /// On the leader, each follower's lag; empty elsewhere.
    pub followers: Vec<FollowerLag>,
}

impl ShardProgress {
    /// What a shard's figures say of its replication: its commit index and,
    /// on the leader, each follower's lag (a group of one has none).
    pub fn of(stats: &ShardStats) -> ShardProgress {
        ShardProgress {
            shard: stats.shard,
            commit_index: stats.commit_index,
            followers: stats.followers.clone(),
        }
    }
}

/// INFO's replication section: `role:master` while this node leads any
/// shard, then a line per shard and per follower of the shards it leads.
pub fn replication_section(topology: &Topology, progress: &[ShardProgress], out: &mut String) {
    let myself = topology.myself;
    let leads = topology.led_by(myself).count();
    let name = |id: Option<MemberId>| {
        id.and_then(|id| topology.member(id))
            .map_or_else(|| "-".to_owned(), |member| member.name.to_string())
    };
    let followers: std::collections::BTreeSet<MemberId> = progress
        .iter()
        .flat_map(|shard| shard.followers.iter().map(|follower| follower.member))
        .collect();
    let _ = write!(
        out,
        "# Replication\r\nrole:{}\r\nconnected_slaves:{}\r\nshards_led:{leads}\r\n",
        if leads > 0 { "master" } else { "slave" },
        followers.len(),
    );
    for shard in progress {
        let placement = &topology.shards[shard.shard as usize];
        let role = if placement.leader == Some(myself) {
            "leader"
        } else if placement.voters.contains(&myself) {
            "follower"
        } else if placement.learners.contains(&myself) {
            "learner"
        } else {
            "none"
        };
        let _ = write!(
            out,
            "shard{}:role={role},term={},commit_index={},leader={},followers={}\r\n",
            shard.shard,
            placement.term,
            shard.commit_index,
            name(placement.leader),
            shard.followers.len(),
        );
        for (index, follower) in shard.followers.iter().enumerate() {
            let _ = write!(
                out,
                "shard{}_follower{index}:node={},match_index={},lag_entries={},lag_bytes={}\r\n",
                shard.shard,
                name(Some(follower.member)),
                follower.match_index,
                follower.lag_entries,
                follower.lag_bytes,
            );
        }
    }
    out.push_str("\r\n");
}

/// A gauge per shard: its name, its help, its value from the shard's
/// placement, its progress and this node's id.
type ShardGauge = (
    &'static str,
    &'static str,
    fn(&ShardPlacement, &ShardProgress, MemberId) -> u64,
);
/// A gauge per follower: its name, its help, its value.
type FollowerGauge = (&'static str, &'static str, fn(&FollowerLag) -> u64);

/// INFO replication's figures as Prometheus gauges, labelled by shard (and
/// by follower name for the lag of a shard this node leads).
pub fn replication_metrics(topology: &Topology, progress: &[ShardProgress], out: &mut String) {
    let per_shard: [ShardGauge; 3] = [
        (
            "keel_shard_leader",
            "Whether this node leads the shard (1) or not (0).",
            |placement, _, myself| u64::from(placement.leader == Some(myself)),
        ),
        (
            "keel_shard_term",
            "The consensus term of the shard's leader, as this node knows it.",
            |placement, _, _| placement.term,
        ),
        (
            "keel_shard_commit_index",
            "The highest entry of the shard known committed.",
            |_, shard, _| shard.commit_index,
        ),
    ];
    for (name, help, value) in per_shard {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for shard in progress {
            let placement = &topology.shards[shard.shard as usize];
            let value = value(placement, shard, topology.myself);
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {value}", shard.shard);
        }
    }
    let per_follower: [FollowerGauge; 2] = [
        (
            "keel_follower_lag_entries",
            "Entries a follower of a shard this node leads lacks.",
            |follower| follower.lag_entries,
        ),
        (
            "keel_follower_lag_bytes",
            "Payload bytes of the entries a follower lacks.",
            |follower| follower.lag_bytes,
        ),
    ];
    for (name, help, value) in per_follower {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for shard in progress {
            for follower in &shard.followers {
                let node = topology
                    .member(follower.member)
                    .map_or_else(|| "-".to_owned(), |member| member.name.to_string());
                let _ = writeln!(
                    out,
                    "{name}{{shard=\"{}\",node=\"{node}\"}} {}",
                    shard.shard,
                    value(follower)
                );
            }
        }
    }
}

/// INFO's cluster section. `cluster_enabled:1` because redis-py's
/// RedisCluster refuses a node without it before it asks CLUSTER SLOTS
/// (`redis-cli -c` reads nothing but `-MOVED`). INFO's `redis_mode` and
/// HELLO's `mode` stay `standalone`: no client checked needs them, and
/// plain clients keep working against any node.
pub fn cluster_section(out: &mut String) {
    out.push_str("# Cluster\r\ncluster_enabled:1\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::Protocol;
    use crate::topology::tests::{member, three_nodes};

    fn run(topology: &Topology, words: &[&str]) -> ClusterCommand {
        let args: Vec<Vec<u8>> = words.iter().map(|word| word.as_bytes().to_vec()).collect();
        cluster_command(topology, &args)
    }

    fn reply(topology: &Topology, words: &[&str]) -> Reply {
        match run(topology, words) {
            ClusterCommand::Reply(reply) => reply,
            other => panic!("{words:?} needs the shards: {other:?}"),
        }
    }

    fn wire(reply: &Reply, protocol: Protocol) -> String {
        let mut out = Vec::new();
        reply.encode(protocol, &mut out);
        String::from_utf8(out).unwrap()
    }

    const NAME_1: &str = "1111111111111111111111111111111111111111";
    const NAME_2: &str = "2222222222222222222222222222222222222222";
    const NAME_3: &str = "3333333333333333333333333333333333333333";

    /// The same bytes redis-server 7.0.15 sends for its three masters
    /// (names, ports and slot split aside), then each replica after its
    /// master; the hostname metadata is `*0` in RESP2, `%0` in RESP3.
    #[test]
    fn cluster_slots_lists_each_shard_leader_first() {
        let topology = three_nodes(1);
        let node = |port: u16, name: &str, empty: &str| {
            format!("*4\r\n$9\r\n127.0.0.1\r\n:{port}\r\n$40\r\n{name}\r\n{empty}\r\n")
        };
        for (protocol, empty) in [(Protocol::Resp2, "*0"), (Protocol::Resp3, "%0")] {
            let expected = format!(
                "*3\r\n*5\r\n:0\r\n:5461\r\n{}{}{}*5\r\n:5462\r\n:10922\r\n{}{}{}*5\r\n:10923\r\n:16383\r\n{}{}{}",
                node(7001, NAME_1, empty),
                node(7002, NAME_2, empty),
                node(7003, NAME_3, empty),
                node(7002, NAME_2, empty),
                node(7001, NAME_1, empty),
                node(7003, NAME_3, empty),
                node(7003, NAME_3, empty),
                node(7001, NAME_1, empty),
                node(7002, NAME_2, empty),
            );
            assert_eq!(
                wire(&reply(&topology, &["CLUSTER", "SLOTS"]), protocol),
                expected
            );
        }
        // A shard between leaders is left out, as slots no master serves.
        let mut electing = topology;
        electing.shards[1].leader = None;
        let Reply::Array(entries) = reply(&electing, &["cluster", "slots"]) else {
            panic!("CLUSTER SLOTS is an array");
        };
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn cluster_slots_of_a_single_node_gives_it_every_shard() {
        let topology = Topology::single_node(member(1), 4);
        let mut expected = "*4\r\n".to_owned();
        for (first, last) in [(0, 4095), (4096, 8191), (8192, 12287), (12288, 16383)] {
            expected += &format!(
                "*3\r\n:{first}\r\n:{last}\r\n*4\r\n$9\r\n127.0.0.1\r\n:7001\r\n$40\r\n{NAME_1}\r\n*0\r\n"
            );
        }
        assert_eq!(
            wire(&reply(&topology, &["CLUSTER", "SLOTS"]), Protocol::Resp2),
            expected
        );
    }

    /// Redis 7.0.15's shape: a map per shard of `slots` and `nodes`, each
    /// node a map of seven fields (flattened to arrays in RESP2).
    #[test]
    fn cluster_shards_names_the_leader_master_and_the_rest_replicas() {
        let topology = three_nodes(2);
        let node = |port: u16, name: &str, role: &str| {
            format!(
                "%7\r\n$2\r\nid\r\n$40\r\n{name}\r\n$4\r\nport\r\n:{port}\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n${}\r\n{role}\r\n$18\r\nreplication-offset\r\n:0\r\n$6\r\nhealth\r\n$6\r\nonline\r\n",
                role.len()
            )
        };
        let shard = |first: u16, last: u16, nodes: &[(u16, &str)]| {
            let mut text = format!(
                "%2\r\n$5\r\nslots\r\n*2\r\n:{first}\r\n:{last}\r\n$5\r\nnodes\r\n*{}\r\n",
                nodes.len()
            );
            for (index, (port, name)) in nodes.iter().enumerate() {
                text += &node(*port, name, if index == 0 { "master" } else { "replica" });
            }
            text
        };
        let expected = format!(
            "*3\r\n{}{}{}",
            shard(0, 5461, &[(7001, NAME_1), (7002, NAME_2), (7003, NAME_3)]),
            shard(
                5462,
                10922,
                &[(7002, NAME_2), (7001, NAME_1), (7003, NAME_3)]
            ),
            shard(
                10923,
                16383,
                &[(7003, NAME_3), (7001, NAME_1), (7002, NAME_2)]
            ),
        );
        let shards = reply(&topology, &["CLUSTER", "SHARDS"]);
        assert_eq!(wire(&shards, Protocol::Resp3), expected);
        let resp2 = wire(&shards, Protocol::Resp2);
        assert!(resp2.starts_with("*3\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5461\r\n$5\r\nnodes\r\n*3\r\n*14\r\n$2\r\nid\r\n"), "{resp2}");
    }

    #[test]
    fn cluster_nodes_marks_myself_and_gives_each_leader_its_slots() {
        let mut topology = three_nodes(2);
        topology.members[2].connected = false;
        assert_eq!(
            reply(&topology, &["CLUSTER", "NODES"]),
            Reply::Bulk(
                format!(
                    "{NAME_1} 127.0.0.1:7001@17001 master - 0 0 5 connected 0-5461\n\
                     {NAME_2} 127.0.0.1:7002@17002 myself,master - 0 0 6 connected 5462-10922\n\
                     {NAME_3} 127.0.0.1:7003@17003 master - 0 0 7 disconnected 10923-16383\n"
                )
                .into_bytes()
            )
        );
        // Member 1 leads two adjacent shards: one range; member 3 leads
        // none and shows as a replica of the first shard's leader.
        topology.shards[2].leader = Some(MemberId(1));
        assert_eq!(
            reply(&topology, &["CLUSTER", "NODES"]),
            Reply::Bulk(
                format!(
                    "{NAME_1} 127.0.0.1:7001@17001 master - 0 0 7 connected 0-5461 10923-16383\n\
                     {NAME_2} 127.0.0.1:7002@17002 myself,master - 0 0 6 connected 5462-10922\n\
                     {NAME_3} 127.0.0.1:7003@17003 slave {NAME_1} 0 0 7 disconnected\n"
                )
                .into_bytes()
            )
        );
        let single = Topology::single_node(member(1), 4);
        assert_eq!(
            reply(&single, &["CLUSTER", "NODES"]),
            Reply::Bulk(
                format!("{NAME_1} 127.0.0.1:7001@17001 myself,master - 0 0 0 connected 0-16383\n")
                    .into_bytes()
            )
        );
    }

    #[test]
    fn cluster_info_counts_the_slots_served_and_the_epochs() {
        let topology = three_nodes(3);
        assert_eq!(
            reply(&topology, &["CLUSTER", "INFO"]),
            Reply::Bulk(
                b"cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:3\r\ncluster_size:3\r\ncluster_current_epoch:7\r\ncluster_my_epoch:7\r\n"
                    .to_vec()
            )
        );
        let mut electing = topology;
        electing.shards[0].leader = None;
        let Reply::Bulk(text) = reply(&electing, &["CLUSTER", "INFO"]) else {
            panic!("CLUSTER INFO is a bulk string");
        };
        let text = String::from_utf8(text).unwrap();
        assert!(text.starts_with("cluster_state:fail\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:10922\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:5462\r\ncluster_known_nodes:3\r\ncluster_size:2\r\n"), "{text}");
    }

    #[test]
    fn myid_keyslot_and_slot_counts_as_redis() {
        let topology = three_nodes(3);
        assert_eq!(reply(&topology, &["CLUSTER", "MYID"]), bulk(NAME_3));
        assert_eq!(
            reply(&topology, &["cluster", "keyslot", "foo"]),
            Reply::Integer(12182)
        );
        assert_eq!(
            reply(&topology, &["CLUSTER", "KEYSLOT", "{user1000}.following"]),
            Reply::Integer(i64::from(key_slot(b"user1000")))
        );
        assert_eq!(
            run(&topology, &["CLUSTER", "COUNTKEYSINSLOT", "16383"]),
            ClusterCommand::CountKeysInSlot { slot: 16383 }
        );
        assert_eq!(
            run(&topology, &["CLUSTER", "GETKEYSINSLOT", "7", "0"]),
            ClusterCommand::GetKeysInSlot { slot: 7, count: 0 }
        );
    }

    /// The texts redis-server 7.0.15 answers to the same requests.
    #[test]
    fn bad_cluster_requests_get_redis_errors() {
        let topology = three_nodes(1);
        let error = |text: &str| Reply::Error(text.to_owned());
        for (words, text) in [
            (&["CLUSTER", "COUNTKEYSINSLOT", "x"][..], NOT_INTEGER),
            (&["CLUSTER", "COUNTKEYSINSLOT", "99999"], "ERR Invalid slot"),
            (&["CLUSTER", "COUNTKEYSINSLOT", "-1"], "ERR Invalid slot"),
            (
                &["CLUSTER", "GETKEYSINSLOT", "1", "-1"],
                "ERR Invalid slot or number of keys",
            ),
            (&["CLUSTER", "GETKEYSINSLOT", "x", "1"], NOT_INTEGER),
            (&["CLUSTER", "GETKEYSINSLOT", "1", "x"], NOT_INTEGER),
            (
                &["CLUSTER", "GETKEYSINSLOT", "16384", "1"],
                "ERR Invalid slot or number of keys",
            ),
            (
                &["CLUSTER", "KEYSLOT"],
                "ERR wrong number of arguments for 'cluster|keyslot' command",
            ),
            (
                &["CLUSTER", "KEYSLOT", "a", "b"],
                "ERR wrong number of arguments for 'cluster|keyslot' command",
            ),
            (
                &["CLUSTER", "NOPE"],
                "ERR unknown subcommand 'NOPE'. Try CLUSTER HELP.",
            ),
            (
                &["CLUSTER", "MYID", "x"],
                "ERR wrong number of arguments for 'cluster|myid' command",
            ),
            (
                &["CLUSTER", "SLOTS", "x"],
                "ERR wrong number of arguments for 'cluster|slots' command",
            ),
            (
                &["CLUSTER", "ADDSLOTS", "1"],
                "ERR unknown subcommand 'ADDSLOTS'. Try CLUSTER HELP.",
            ),
        ] {
            assert_eq!(reply(&topology, words), error(text), "{words:?}");
        }
    }

    #[test]
    fn wait_checks_its_arguments_as_redis() {
        let args = |words: &[&str]| -> Vec<Vec<u8>> {
            words.iter().map(|word| word.as_bytes().to_vec()).collect()
        };
        assert_eq!(check_wait(&args(&["WAIT", "5", "10"])), Ok((5, 10)));
        assert_eq!(check_wait(&args(&["WAIT", "-1", "0"])), Ok((0, 0)));
        assert_eq!(
            check_wait(&args(&["WAIT", "x", "0"])),
            Err(Reply::error(NOT_INTEGER))
        );
        assert_eq!(
            check_wait(&args(&["WAIT", "0", "x"])),
            Err(Reply::error(
                "ERR timeout is not an integer or out of range"
            ))
        );
        assert_eq!(
            check_wait(&args(&["WAIT", "0", "-1"])),
            Err(Reply::error("ERR timeout is negative"))
        );
    }

    #[test]
    fn moved_and_try_again_start_with_their_codes() {
        assert_eq!(
            moved(12182, "127.0.0.1:7003"),
            Reply::error("MOVED 12182 127.0.0.1:7003")
        );
        let Reply::Error(text) = try_again(3) else {
            panic!("an error");
        };
        assert!(text.starts_with("TRYAGAIN "), "{text}");
    }

    /// Seen from member 1 of [`three_nodes`]: it leads shard 0 (entry 40
    /// committed; member 2 has it all, member 3 lacks 3 entries of 120
    /// bytes) and follows shard 1 (entry 12 committed).
    fn progress() -> [ShardProgress; 2] {
        let follower = |member, match_index, lag_entries, lag_bytes| FollowerLag {
            member: MemberId(member),
            match_index,
            lag_entries,
            lag_bytes,
        };
        [
            ShardProgress {
                shard: 0,
                commit_index: 40,
                followers: vec![follower(2, 40, 0, 0), follower(3, 37, 3, 120)],
            },
            ShardProgress {
                shard: 1,
                commit_index: 12,
                followers: Vec::new(),
            },
        ]
    }

    #[test]
    fn the_replication_metrics_label_each_shard_and_follower() {
        let mut out = String::new();
        replication_metrics(&three_nodes(1), &progress(), &mut out);
        let samples: Vec<&str> = out.lines().filter(|line| !line.starts_with('#')).collect();
        let lag = |name: &str, node: &str, value: u64| {
            format!("keel_follower_lag_{name}{{shard=\"0\",node=\"{node}\"}} {value}")
        };
        let lags = [
            lag("entries", NAME_2, 0),
            lag("entries", NAME_3, 3),
            lag("bytes", NAME_2, 0),
            lag("bytes", NAME_3, 120),
        ];
        let mut expected = vec![
            "keel_shard_leader{shard=\"0\"} 1",
            "keel_shard_leader{shard=\"1\"} 0",
            "keel_shard_term{shard=\"0\"} 5",
            "keel_shard_term{shard=\"1\"} 6",
            "keel_shard_commit_index{shard=\"0\"} 40",
            "keel_shard_commit_index{shard=\"1\"} 12",
        ];
        expected.extend(lags.iter().map(String::as_str));
        assert_eq!(samples, expected);
        assert!(
            out.contains("# TYPE keel_follower_lag_bytes gauge\n"),
            "{out}"
        );
    }

    #[test]
    fn the_replication_section_shows_each_shard_and_follower() {
        let mut out = String::new();
        replication_section(&three_nodes(1), &progress(), &mut out);
        assert_eq!(
            out,
            format!(
                "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nshards_led:1\r\n\
                 shard0:role=leader,term=5,commit_index=40,leader={NAME_1},followers=2\r\n\
                 shard0_follower0:node={NAME_2},match_index=40,lag_entries=0,lag_bytes=0\r\n\
                 shard0_follower1:node={NAME_3},match_index=37,lag_entries=3,lag_bytes=120\r\n\
                 shard1:role=follower,term=6,commit_index=12,leader={NAME_2},followers=0\r\n\r\n"
            )
        );
    }
}
