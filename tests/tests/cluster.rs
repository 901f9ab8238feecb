//! Redis Cluster's client interface of one Keel node, as cluster-aware
//! clients use it: `redis-cli -c` and the redis crate's `ClusterClient`
//! read CLUSTER SLOTS and send SET, GET and MGET with hash tags; a
//! multi-key command across slots gets `-CROSSSLOT`; the node's name is
//! the same after a restart. (redis-py's `RedisCluster` runs in
//! `scripts/redis_py_cluster.sh`.) redis-cli must be installed
//! (`scripts/test.sh` installs it): without it the test fails.

use std::process::Command;

use keel_tests::{Resp, Server, ServerOptions};
use redis::Commands;

/// Two cores and four shards: CLUSTER SLOTS has four ranges, and some of
/// their shards live on the other core than the connection's.
fn two_cores() -> ServerOptions {
    ServerOptions {
        cores: 2,
        shards: 4,
        ..ServerOptions::default()
    }
}

/// Runs `redis-cli -c -p PORT ARGS...` and returns what it printed.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-c", "-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run redis-cli ({error}): this test needs it; install it with \
                 `apt-get install -y redis-tools` (scripts/test.sh does)"
            )
        });
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    String::from_utf8(output.stdout).expect("redis-cli prints text")
}

fn text(reply: &Resp) -> String {
    reply
        .text()
        .unwrap_or_else(|| panic!("{reply:?} is not text"))
}

#[test]
fn cluster_slots_names_this_node_for_every_slot() {
    let server = Server::start(two_cores());
    let mut raw = server.raw();
    let myid = text(&raw.command(&[b"CLUSTER", b"MYID"]).unwrap());
    assert_eq!(myid.len(), 40, "{myid}");
    let Resp::Array(ranges) = raw.command(&[b"CLUSTER", b"SLOTS"]).unwrap() else {
        panic!("CLUSTER SLOTS is an array");
    };
    let mut next_slot = 0;
    for range in &ranges {
        let Resp::Array(fields) = range else {
            panic!("a range is an array: {range:?}");
        };
        assert_eq!(fields.len(), 3, "start, end, the leader: {fields:?}");
        assert_eq!(fields[0], Resp::Integer(next_slot));
        let Resp::Integer(last) = fields[1] else {
            panic!("a range ends with a slot: {fields:?}");
        };
        next_slot = last + 1;
        assert_eq!(
            fields[2],
            Resp::Array(vec![
                Resp::Bulk(b"127.0.0.1".to_vec()),
                Resp::Integer(i64::from(server.port())),
                Resp::Bulk(myid.clone().into_bytes()),
                Resp::Array(Vec::new()),
            ])
        );
    }
    assert_eq!((ranges.len(), next_slot), (4, 16384));
    let nodes = text(&raw.command(&[b"CLUSTER", b"NODES"]).unwrap());
    assert_eq!(
        nodes,
        // Epoch 1: a fresh node's group of one elected itself in term 1.
        format!(
            "{myid} 127.0.0.1:{}@0 myself,master - 0 0 1 connected 0-16383\n",
            server.port()
        )
    );
    let info = text(&raw.command(&[b"CLUSTER", b"INFO"]).unwrap());
    assert!(
        info.starts_with(
            "cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\n"
        ),
        "{info}"
    );
}

#[test]
fn the_node_name_survives_a_restart() {
    let mut server = Server::start(ServerOptions::default());
    let myid = text(&server.raw().command(&[b"CLUSTER", b"MYID"]).unwrap());
    server.restart();
    assert_eq!(
        text(&server.raw().command(&[b"CLUSTER", b"MYID"]).unwrap()),
        myid
    );
    let other = Server::start(ServerOptions::default());
    assert_ne!(
        text(&other.raw().command(&[b"CLUSTER", b"MYID"]).unwrap()),
        myid
    );
}

#[test]
fn redis_cli_in_cluster_mode_sets_gets_and_is_refused_across_slots() {
    let server = Server::start(two_cores());
    let port = server.port();
    assert_eq!(redis_cli(port, &["SET", "{user1}name", "ada"]), "OK\n");
    assert_eq!(redis_cli(port, &["SET", "{user1}lang", "en"]), "OK\n");
    assert_eq!(redis_cli(port, &["GET", "{user1}name"]), "ada\n");
    assert_eq!(
        redis_cli(port, &["MGET", "{user1}name", "{user1}lang", "{user1}none"]),
        "ada\nen\n\n"
    );
    assert_eq!(
        redis_cli(port, &["MGET", "a", "b"]),
        // As redis-cli prints redis-server's error when not on a terminal.
        "CROSSSLOT Keys in request don't hash to the same slot\n\n"
    );
    assert_eq!(redis_cli(port, &["CLUSTER", "KEYSLOT", "foo"]), "12182\n");
    let slot = redis_cli(port, &["CLUSTER", "KEYSLOT", "{user1}"]);
    let slot = slot.trim();
    assert_eq!(
        redis_cli(port, &["CLUSTER", "COUNTKEYSINSLOT", slot]),
        "2\n"
    );
    let mut keys: Vec<String> = redis_cli(port, &["CLUSTER", "GETKEYSINSLOT", slot, "10"])
        .lines()
        .map(str::to_owned)
        .collect();
    keys.sort();
    assert_eq!(keys, ["{user1}lang", "{user1}name"]);
}

#[test]
fn the_redis_crate_s_cluster_client_reads_and_writes() {
    let server = Server::start(two_cores());
    let url = format!("redis://127.0.0.1:{}/", server.port());
    let client = redis::cluster::ClusterClient::new(vec![url]).expect("a cluster client");
    let mut connection = client
        .get_connection()
        .expect("the client reads CLUSTER SLOTS");
    for index in 0..32 {
        let _: () = connection
            .set(format!("{{tag{index}}}a"), index)
            .expect("SET");
        let _: () = connection
            .set(format!("{{tag{index}}}b"), index * 2)
            .expect("SET");
        let values: Vec<i64> = connection
            .mget(&[format!("{{tag{index}}}a"), format!("{{tag{index}}}b")])
            .expect("MGET within a slot");
        assert_eq!(values, [index, index * 2]);
    }
    let value: Option<String> = connection.get("{tag3}a").expect("GET");
    assert_eq!(value.as_deref(), Some("3"));
}

#[test]
fn readonly_wait_and_the_replication_section_of_a_single_node() {
    let server = Server::start(two_cores());
    let mut raw = server.raw();
    assert_eq!(
        raw.command(&[b"READONLY"]).unwrap(),
        Resp::Simple("OK".into())
    );
    let clients = text(&raw.command(&[b"CLIENT", b"INFO"]).unwrap());
    assert!(clients.contains(" flags=r "), "{clients}");
    assert_eq!(
        raw.command(&[b"SET", b"k", b"v"]).unwrap(),
        Resp::Simple("OK".into())
    );
    assert_eq!(
        raw.command(&[b"GET", b"k"]).unwrap(),
        Resp::Bulk(b"v".to_vec())
    );
    assert_eq!(
        raw.command(&[b"READWRITE"]).unwrap(),
        Resp::Simple("OK".into())
    );
    assert_eq!(
        raw.command(&[b"ASKING"]).unwrap(),
        Resp::Simple("OK".into())
    );
    assert_eq!(
        raw.command(&[b"WAIT", b"1", b"100"]).unwrap(),
        Resp::Integer(0)
    );
    let info = text(&raw.command(&[b"INFO", b"replication"]).unwrap());
    assert!(
        info.starts_with("# Replication\r\nrole:master\r\nconnected_slaves:0\r\nshards_led:4\r\nshard0:role=leader,term=1,commit_index="),
        "{info}"
    );
    let info = text(&raw.command(&[b"INFO", b"cluster"]).unwrap());
    assert_eq!(info, "# Cluster\r\ncluster_enabled:1\r\n");
}
