//! The cluster part of `keel serve`'s settings: this node's id, every
//! member's peer address (`--peers 1=HOST:PORT,2=HOST:PORT,...`), the peer
//! port and the cluster's name, checked together. Without `--peers` the
//! node runs alone and none of this exists.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};

use sha2::{Digest, Sha256};

use crate::config::ConfigError;
use crate::peer::handshake::{valid_cluster_name, CLUSTER_NAME_BYTES_MAX};
use crate::topology::{Member as TopologyMember, MemberId, Topology};

/// Most members a cluster may list. Raft groups of more than 7 gain no
/// availability worth their extra messages and fsyncs per write.
pub const CLUSTER_MEMBERS_MAX: usize = 7;
/// The cluster name unless told otherwise; the handshake refuses a peer
/// with another.
pub const CLUSTER_NAME_DEFAULT: &str = "keel";
/// Longest host name in a member's address, in bytes (DNS's limit).
pub const HOST_BYTES_MAX: usize = 253;

/// One member: its id and where its peer port (core 0's; core c listens on
/// port + c) is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// An IP address or a host name (resolved when the server starts).
    pub host: String,
    pub port: u16,
}

impl Member {
    /// `host:port`, an IPv6 address in brackets.
    pub fn address(&self) -> String {
        if self.host.parse::<Ipv6Addr>().is_ok() {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The cluster settings in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's id.
    pub id: u64,
    /// Every member, this node included, in id order.
    pub members: Vec<Member>,
    /// This node's peer port: core c listens on `peer_port + c`.
    pub peer_port: u16,
    pub name: String,
}

impl ClusterConfig {
    /// The cluster before any election: every member as the settings list
    /// it, this node serving clients on `client_port`, the others' client
    /// ports learned from their handshakes (0 until then).
    pub fn topology(&self, client_port: u16, shards: u32) -> Topology {
        let members = self
            .members
            .iter()
            .map(|member| {
                let port = if member.id == self.id { client_port } else { 0 };
                TopologyMember::of_cluster(
                    &self.name,
                    member.id,
                    member.host.clone(),
                    port,
                    member.port,
                )
            })
            .collect();
        Topology::cluster(MemberId(self.id), members, shards)
    }

    /// What keys every member's key spaces: the same on every member, so
    /// that a SCAN cursor one leader gave stays good at the next. Derived
    /// from the cluster's name, which every member's settings share (so it
    /// is no secret: a client that knows the name can aim keys at one
    /// bucket chain, as it could at Redis's fixed hash before 2.4's seed).
    pub fn hash_seed(&self) -> u64 {
        let digest = Sha256::new()
            .chain_update(HASH_SEED_DOMAIN)
            .chain_update(self.name.as_bytes())
            .finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
    }
}

/// What the key-space hash seed hashes before the cluster's name.
const HASH_SEED_DOMAIN: &[u8] = b"keel key-space hash seed v1";

/// The cluster settings as given, before they are checked together.
#[derive(Clone, Debug, Default)]
pub struct ClusterSettings {
    pub id: Option<u64>,
    pub peers: Option<String>,
    pub peer_port: Option<u16>,
    pub name: Option<String>,
}

fn invalid<T>(key: &'static str, reason: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid {
        key,
        reason: reason.into(),
    })
}

impl ClusterSettings {
    /// The cluster, `None` for a single node. `cores`, `port` and
    /// `metrics_port` are the node's, for the clash check of the peer ports.
    pub fn resolve(
        self,
        cores: usize,
        port: u16,
        metrics_port: Option<u16>,
    ) -> Result<Option<ClusterConfig>, ConfigError> {
        let Some(peers) = self.peers else {
            return match (self.id, self.peer_port, self.name) {
                (None, None, None) => Ok(None),
                (Some(_), _, _) => invalid("id", "is given without --peers"),
                (_, Some(_), _) => invalid("peer_port", "is given without --peers"),
                (_, _, Some(_)) => invalid("cluster_name", "is given without --peers"),
            };
        };
        let Some(id) = self.id else {
            return invalid("id", "--peers needs --id, this node's id in the list");
        };
        let members = parse_members(&peers)?;
        let Some(me) = members.iter().find(|member| member.id == id) else {
            return invalid("id", format!("{id} is not in --peers"));
        };
        let peer_port = self.peer_port.unwrap_or(me.port);
        if peer_port != me.port {
            return invalid(
                "peer_port",
                format!(
                    "{peer_port} differs from this node's entry in --peers ({})",
                    me.address()
                ),
            );
        }
        check_peer_ports(peer_port, cores, port, metrics_port)?;
        let name = self.name.unwrap_or_else(|| CLUSTER_NAME_DEFAULT.into());
        if !valid_cluster_name(&name) {
            return invalid(
                "cluster_name",
                format!(
                    "must be 1 to {CLUSTER_NAME_BYTES_MAX} bytes of printable ASCII without spaces"
                ),
            );
        }
        Ok(Some(ClusterConfig {
            id,
            members,
            peer_port,
            name,
        }))
    }
}

/// Core c listens on `peer_port + c`: the range must fit and hold neither
/// the client port nor the metrics port.
fn check_peer_ports(
    peer_port: u16,
    cores: usize,
    port: u16,
    metrics_port: Option<u16>,
) -> Result<(), ConfigError> {
    let last = usize::from(peer_port) + cores.max(1) - 1;
    if last > usize::from(u16::MAX) {
        return invalid(
            "peer_port",
            format!("{peer_port} + {cores} cores runs past port 65535 (core c listens on peer_port + c)"),
        );
    }
    let range = usize::from(peer_port)..=last;
    for (key, taken) in [("port", Some(port)), ("metrics_port", metrics_port)] {
        if let Some(taken) = taken.filter(|taken| range.contains(&usize::from(*taken))) {
            return invalid(
                "peer_port",
                format!("the peer ports {peer_port}..={last} (one per core) include {key} {taken}"),
            );
        }
    }
    Ok(())
}

/// Parses `1=HOST:PORT,2=HOST:PORT,...` into members in id order.
pub fn parse_members(list: &str) -> Result<Vec<Member>, ConfigError> {
    let mut members = Vec::new();
    for item in list.split(',').map(str::trim) {
        members.push(parse_member(item)?);
    }
    if members.len() > CLUSTER_MEMBERS_MAX {
        return invalid(
            "peers",
            format!(
                "lists {} members; the most is {CLUSTER_MEMBERS_MAX}",
                members.len()
            ),
        );
    }
    members.sort_by_key(|member| member.id);
    if let Some(pair) = members.windows(2).find(|pair| pair[0].id == pair[1].id) {
        return invalid("peers", format!("id {} is listed twice", pair[0].id));
    }
    let mut addresses = BTreeSet::new();
    if let Some(member) = members
        .iter()
        .find(|member| !addresses.insert(member.address()))
    {
        return invalid(
            "peers",
            format!("address {} is listed twice", member.address()),
        );
    }
    Ok(members)
}

fn parse_member(item: &str) -> Result<Member, ConfigError> {
    let Some((id, address)) = item.split_once('=') else {
        return invalid("peers", format!("{item:?} is not ID=HOST:PORT"));
    };
    let id = match id.trim().parse::<u64>() {
        Ok(0) => return invalid("peers", "node ids start at 1 (0 means no node)"),
        Ok(id) => id,
        Err(_) => return invalid("peers", format!("{id:?} is not a node id")),
    };
    let bad_address = || invalid("peers", format!("{address:?} (id {id}) is not HOST:PORT"));
    let Some((host, port)) = address.trim().rsplit_once(':') else {
        return bad_address();
    };
    let port = match port.parse::<u16>() {
        Ok(port) if port > 0 => port,
        _ => return bad_address(),
    };
    let host = match host
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    {
        Some(v6) if v6.parse::<Ipv6Addr>().is_ok() => v6.to_owned(),
        Some(_) => return bad_address(),
        None if host.parse::<IpAddr>().is_ok() || valid_host_name(host) => host.to_owned(),
        None => return bad_address(),
    };
    Ok(Member { id, host, port })
}

/// A DNS name: labels of letters, digits and `-`, not starting or ending
/// with `-`, joined by dots.
fn valid_host_name(host: &str) -> bool {
    (1..=HOST_BYTES_MAX).contains(&host.len())
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(id: u64, peers: &str) -> ClusterSettings {
        ClusterSettings {
            id: Some(id),
            peers: Some(peers.into()),
            ..ClusterSettings::default()
        }
    }

    fn refusal(settings: ClusterSettings) -> (&'static str, String) {
        match settings.resolve(2, 7379, Some(9100)) {
            Err(ConfigError::Invalid { key, reason }) => (key, reason),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_list_resolves_to_sorted_members_and_this_nodes_port() {
        let cluster = settings(2, "3=node-c.example:7400, 1=10.0.0.1:7400,2=[::1]:7500")
            .resolve(2, 7379, None)
            .unwrap()
            .expect("a cluster");
        assert_eq!(cluster.id, 2);
        assert_eq!(cluster.peer_port, 7500);
        assert_eq!(cluster.name, CLUSTER_NAME_DEFAULT);
        let ids: Vec<_> = cluster.members.iter().map(|member| member.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(cluster.members[1].address(), "[::1]:7500");
        assert_eq!(cluster.members[2].address(), "node-c.example:7400");
    }

    #[test]
    fn no_peers_is_a_single_node_and_cluster_flags_alone_are_refused() {
        assert_eq!(
            ClusterSettings::default().resolve(2, 7379, None).unwrap(),
            None
        );
        for (alone, key) in [
            (
                ClusterSettings {
                    id: Some(1),
                    ..Default::default()
                },
                "id",
            ),
            (
                ClusterSettings {
                    peer_port: Some(7400),
                    ..Default::default()
                },
                "peer_port",
            ),
            (
                ClusterSettings {
                    name: Some("x".into()),
                    ..Default::default()
                },
                "cluster_name",
            ),
        ] {
            assert_eq!(refusal(alone).0, key);
        }
        let no_id = ClusterSettings {
            peers: Some("1=127.0.0.1:7400".into()),
            ..Default::default()
        };
        assert_eq!(refusal(no_id).0, "id");
    }

    #[test]
    fn each_bad_list_is_refused_with_a_reason() {
        let cases = [
            (
                settings(4, "1=127.0.0.1:7400,2=127.0.0.1:7401"),
                "id",
                "not in --peers",
            ),
            (
                settings(1, "1=127.0.0.1:7400,1=127.0.0.2:7400"),
                "peers",
                "listed twice",
            ),
            (
                settings(1, "1=127.0.0.1:7400,2=127.0.0.1:7400"),
                "peers",
                "listed twice",
            ),
            (
                settings(1, "0=127.0.0.1:7400,1=127.0.0.1:7401"),
                "peers",
                "start at 1",
            ),
            (settings(1, "1=127.0.0.1"), "peers", "HOST:PORT"),
            (settings(1, "1=127.0.0.1:0"), "peers", "HOST:PORT"),
            (settings(1, "1=127.0.0.1:x"), "peers", "HOST:PORT"),
            (settings(1, "1=:7400"), "peers", "HOST:PORT"),
            (settings(1, "1=bad_host:7400"), "peers", "HOST:PORT"),
            (settings(1, "1=[zz]:7400"), "peers", "HOST:PORT"),
            (settings(1, "1=-a.b:7400"), "peers", "HOST:PORT"),
            (settings(1, "1127.0.0.1:7400"), "peers", "ID=HOST:PORT"),
            (settings(1, "x=127.0.0.1:7400"), "peers", "node id"),
            (settings(1, ""), "peers", "ID=HOST:PORT"),
            (
                settings(1, "1=h:1,2=h:2,3=h:3,4=h:4,5=h:5,6=h:6,7=h:7,8=h:8"),
                "peers",
                "the most is 7",
            ),
        ];
        for (settings, key, words) in cases {
            let peers = settings.peers.clone();
            let (refused_key, reason) = refusal(settings);
            assert_eq!(refused_key, key, "{peers:?}: {reason}");
            assert!(reason.contains(words), "{peers:?}: {reason}");
        }
    }

    #[test]
    fn peer_ports_must_not_take_the_client_or_metrics_port_or_run_past_65535() {
        let with_port = |peer_port: u16, list: &str| ClusterSettings {
            peer_port: Some(peer_port),
            ..settings(1, list)
        };
        // Two cores: 7378 and 7379, the client port.
        let (key, reason) = refusal(with_port(7378, "1=127.0.0.1:7378"));
        assert_eq!(key, "peer_port");
        assert!(reason.contains("port 7379"), "{reason}");
        let (_, reason) = refusal(with_port(9100, "1=127.0.0.1:9100"));
        assert!(reason.contains("metrics_port 9100"), "{reason}");
        let (_, reason) = refusal(with_port(65535, "1=127.0.0.1:65535"));
        assert!(reason.contains("65535"), "{reason}");
        let (_, reason) = refusal(with_port(7400, "1=127.0.0.1:7401"));
        assert!(reason.contains("differs"), "{reason}");
        assert!(with_port(7401, "1=127.0.0.1:7401")
            .resolve(2, 7379, Some(9100))
            .is_ok());
    }

    #[test]
    fn the_cluster_name_is_checked() {
        for bad in [
            "",
            "has space",
            &"x".repeat(CLUSTER_NAME_BYTES_MAX + 1),
            "é",
        ] {
            let named = ClusterSettings {
                name: Some(bad.into()),
                ..settings(1, "1=127.0.0.1:7400")
            };
            assert_eq!(refusal(named).0, "cluster_name", "{bad:?}");
        }
    }
}
