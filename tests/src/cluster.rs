//! A cluster of real `keel serve --id --peers` processes on loopback: free
//! peer ports, every node a [`Server`] (so kills, pauses and restarts on the
//! same ports and directory are the harness's), who leads each shard (from
//! each node's INFO replication), each shard's slots and a hash tag in it.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::{wait_a_moment, RawConnection, Resp, Server, ServerOptions};

/// How long a probe of one node (INFO, CLUSTER) may wait for its reply: a
/// paused node must not stall the test.
pub const PROBE_TIMEOUT_MS: u64 = 500;
/// Hash tags tried when looking for one in each shard.
pub const TAG_CANDIDATES_MAX: u32 = 1_000;

/// A port P with P + 1 .. P + cores - 1 free too (core c of a node listens
/// for peers on P + c).
pub fn free_peer_ports(cores: usize) -> u16 {
    let cores = u16::try_from(cores).expect("a sane number of cores");
    loop {
        let first = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = first.local_addr().expect("an address").port();
        let rest_free = (1..cores).all(|offset| {
            port.checked_add(offset)
                .is_some_and(|next| TcpListener::bind(("127.0.0.1", next)).is_ok())
        });
        if rest_free {
            return port;
        }
    }
}

/// `--peers` for members 1..=peer_ports.len() at those peer ports.
pub fn peers_flag(peer_ports: &[u16]) -> String {
    peer_ports
        .iter()
        .enumerate()
        .map(|(index, port)| format!("{}=127.0.0.1:{port}", index + 1))
        .collect::<Vec<_>>()
        .join(",")
}

/// The cluster flags of member `id`.
pub fn member_args(id: usize, peers: &str) -> Vec<String> {
    vec![
        "--id".into(),
        id.to_string(),
        "--peers".into(),
        peers.into(),
    ]
}

/// A shard as the cluster serves it.
#[derive(Clone, Debug)]
pub struct ShardSlots {
    pub first_slot: u16,
    pub last_slot: u16,
    /// A hash tag whose keys (`{tag}...`) land in this shard, and its slot.
    pub tag: String,
    pub tag_slot: u16,
}

/// Every member of a local cluster; member id N is `nodes[N - 1]`.
#[derive(Debug)]
pub struct LocalCluster {
    pub nodes: Vec<Server>,
    pub shards: Vec<ShardSlots>,
}

impl LocalCluster {
    /// Starts `size` members of `cores` cores and `shards` shards each, waits
    /// until each answers PING and every shard has a leader (within
    /// `leader_deadline`), and finds a hash tag in each shard.
    pub fn start(
        size: usize,
        cores: usize,
        shards: u32,
        leader_deadline: Duration,
    ) -> LocalCluster {
        let peer_ports: Vec<u16> = (0..size).map(|_| free_peer_ports(cores)).collect();
        let peers = peers_flag(&peer_ports);
        let nodes = (1..=size)
            .map(|id| {
                Server::start(ServerOptions {
                    cores,
                    shards,
                    extra_args: member_args(id, &peers),
                    ..ServerOptions::default()
                })
            })
            .collect();
        let mut cluster = LocalCluster {
            nodes,
            shards: Vec::new(),
        };
        cluster.wait_every_shard_led(leader_deadline);
        cluster.shards = cluster.find_shards(shards);
        cluster
    }

    /// Client ports of every member, killed ones included.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(Server::port).collect()
    }

    /// Member `id` (1-based).
    pub fn node(&self, id: usize) -> &Server {
        &self.nodes[id - 1]
    }

    pub fn node_mut(&mut self, id: usize) -> &mut Server {
        &mut self.nodes[id - 1]
    }

    /// Ids of the members whose process runs (paused ones included).
    pub fn running(&self) -> Vec<usize> {
        (1..=self.nodes.len())
            .filter(|&id| self.node(id).is_running())
            .collect()
    }

    /// The member that leads `shard` in the highest term any running,
    /// answering member reports (INFO replication's `shardS:role=leader`).
    pub fn leader_of(&self, shard: usize) -> Option<usize> {
        self.running()
            .into_iter()
            .filter_map(|id| {
                let term = shard_role(self.node(id).port(), shard)?;
                Some((term, id))
            })
            .max()
            .map(|(_, id)| id)
    }

    /// Polls until every running member's CLUSTER INFO says every slot's
    /// shard has a leader.
    pub fn wait_every_shard_led(&self, deadline: Duration) {
        let started = Instant::now();
        loop {
            let unled: Vec<usize> = self
                .running()
                .into_iter()
                .filter(|&id| !cluster_state_ok(self.node(id).port()))
                .collect();
            if unled.is_empty() {
                return;
            }
            assert!(
                started.elapsed() < deadline,
                "members {unled:?} still see a shard without a leader after {deadline:?}"
            );
            wait_a_moment();
        }
    }

    /// Each shard's slots (CLUSTER SHARDS of a running member) and a hash
    /// tag in it (CLUSTER KEYSLOT of `{tN}` for N = 0, 1, ...).
    fn find_shards(&self, shards: u32) -> Vec<ShardSlots> {
        let id = *self.running().first().expect("a running member");
        let mut raw = self.node(id).raw();
        let ranges = shard_ranges(&mut raw);
        assert_eq!(
            ranges.len(),
            shards as usize,
            "CLUSTER SHARDS lists every shard"
        );
        ranges
            .into_iter()
            .map(|(first_slot, last_slot)| {
                let (tag, tag_slot) = (0..TAG_CANDIDATES_MAX)
                    .map(|n| format!("t{n}"))
                    .map(|tag| {
                        let slot = key_slot(&mut raw, &format!("{{{tag}}}"));
                        (tag, slot)
                    })
                    .find(|(_, slot)| (first_slot..=last_slot).contains(slot))
                    .expect("a hash tag in every shard");
                ShardSlots {
                    first_slot,
                    last_slot,
                    tag,
                    tag_slot,
                }
            })
            .collect()
    }
}

/// A connection for one short probe, or `None` if the node does not accept.
fn probe(port: u16) -> Option<RawConnection> {
    let raw = RawConnection::connect(port).ok()?;
    raw.stream
        .set_read_timeout(Some(Duration::from_millis(PROBE_TIMEOUT_MS)))
        .ok()?;
    Some(raw)
}

/// The term in which the node at `port` leads `shard`, if it says it does.
pub fn shard_role(port: u16, shard: usize) -> Option<u64> {
    let info = probe(port)?
        .command(&[b"INFO", b"replication"])
        .ok()?
        .text()?;
    let prefix = format!("shard{shard}:role=leader,term=");
    let line = info.lines().find_map(|line| line.strip_prefix(&prefix))?;
    line.split(',').next()?.parse().ok()
}

fn cluster_state_ok(port: u16) -> bool {
    probe(port)
        .and_then(|mut raw| raw.command(&[b"CLUSTER", b"INFO"]).ok())
        .and_then(|reply| reply.text())
        .is_some_and(|info| info.contains("cluster_state:ok"))
}

/// CLUSTER KEYSLOT `key`.
pub fn key_slot(raw: &mut RawConnection, key: &str) -> u16 {
    match raw.command(&[b"CLUSTER", b"KEYSLOT", key.as_bytes()]) {
        Ok(Resp::Integer(slot)) => u16::try_from(slot).expect("a slot fits u16"),
        other => panic!("CLUSTER KEYSLOT {key}: {other:?}"),
    }
}

/// Each shard's slot range, in shard order, from CLUSTER SHARDS (RESP2: a
/// map is a flat array of names and values).
fn shard_ranges(raw: &mut RawConnection) -> Vec<(u16, u16)> {
    let Ok(Resp::Array(shards)) = raw.command(&[b"CLUSTER", b"SHARDS"]) else {
        panic!("CLUSTER SHARDS is an array");
    };
    shards
        .iter()
        .map(|shard| {
            let Resp::Array(fields) = shard else {
                panic!("a shard is a map: {shard:?}");
            };
            let slots = fields
                .chunks(2)
                .find(|pair| pair[0].text().as_deref() == Some("slots"))
                .map(|pair| &pair[1]);
            match slots {
                Some(Resp::Array(range)) => match range.as_slice() {
                    [Resp::Integer(first), Resp::Integer(last)] => (
                        u16::try_from(*first).expect("a slot"),
                        u16::try_from(*last).expect("a slot"),
                    ),
                    other => panic!("one slot range per shard: {other:?}"),
                },
                other => panic!("a shard has slots: {other:?}"),
            }
        })
        .collect()
}
