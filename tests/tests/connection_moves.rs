//! A connection whose keyed commands keep going to another core's shards
//! moves to that core, once (`node::affinity`), between two requests; its
//! client sees nothing of it: the same id, name, protocol and flags, every
//! reply in order, a pipeline sent across the move answered whole.

use keel_engine::node::affinity::CONNECTION_MOVE_AFTER_COMMANDS;
use keel_engine::node::core::{core_of_shard, shard_of_slot};
use keel_engine::slot::key_slot;
use keel_tests::{encode_command, RawConnection, Resp, Server, ServerOptions};

const CORES: usize = 2;
const SHARDS: u32 = 4;
/// Connections in the test: some the kernel gives each core, most likely.
const CONNECTIONS: usize = 6;
/// Commands of a pipeline each connection sends in one write once it
/// has used both cores' keys.
const PIPELINE_COMMANDS: usize = 50;

/// The first key `prefix:N` whose shard lives on `core`.
fn key_on(prefix: &str, core: usize) -> String {
    (0..)
        .map(|n| format!("{prefix}:{n}"))
        .find(|key| core_of_shard(shard_of_slot(key_slot(key.as_bytes()), SHARDS), CORES) == core)
        .expect("some key lives on every core")
}

fn text(reply: Resp) -> String {
    match reply {
        Resp::Bulk(bytes) => String::from_utf8(bytes).expect("UTF-8"),
        Resp::Verbatim(text) | Resp::Simple(text) => text,
        other => panic!("expected text, got {other:?}"),
    }
}

fn ok() -> Resp {
    Resp::Simple("OK".into())
}

fn bulk(text: &str) -> Resp {
    Resp::Bulk(text.as_bytes().to_vec())
}

fn start() -> Server {
    Server::start(ServerOptions {
        cores: CORES,
        shards: SHARDS,
        ..ServerOptions::default()
    })
}

#[test]
fn a_connection_moves_once_to_the_core_of_its_keys_and_keeps_its_state() {
    let server = start();
    let mut connections = Vec::new();
    for index in 0..CONNECTIONS {
        let mut connection = server.raw();
        let name = format!("mover{index}");
        assert_eq!(
            connection
                .command(&[b"CLIENT", b"SETNAME", name.as_bytes()])
                .unwrap(),
            ok()
        );
        assert!(matches!(
            connection.command(&[b"HELLO", b"3"]).unwrap(),
            Resp::Map(_)
        ));
        let Resp::Integer(id) = connection.command(&[b"CLIENT", b"ID"]).unwrap() else {
            panic!("CLIENT ID answers an integer");
        };
        connections.push((connection, name, id));
    }
    // Every connection runs commands on core 0's keys, then on core 1's:
    // whichever core accepted it, one of the two runs is long enough on
    // the other core to move it there, and it moves at most once.
    for (connection, name, _) in &mut connections {
        for core in 0..CORES {
            let key = key_on(&format!("{name}:{core}"), core);
            for round in 0..CONNECTION_MOVE_AFTER_COMMANDS {
                let value = format!("{round}");
                let set: [&[u8]; 3] = [b"SET", key.as_bytes(), value.as_bytes()];
                assert_eq!(connection.command(&set).unwrap(), ok());
                let get: [&[u8]; 2] = [b"GET", key.as_bytes()];
                assert_eq!(connection.command(&get).unwrap(), bulk(&value));
            }
        }
    }
    let mut pipeline = Vec::new();
    for (connection, name, id) in &mut connections {
        let info = text(connection.command(&[b"CLIENT", b"INFO"]).unwrap());
        assert!(info.starts_with(&format!("id={id} ")), "{info}");
        assert!(info.contains(&format!(" name={name} ")), "{info}");
        assert!(info.contains(" resp=3 "), "{info}");
        // A pipeline over keys of both cores, in one write: every reply
        // comes back, in order.
        pipeline.clear();
        for n in 0..PIPELINE_COMMANDS {
            let key = key_on(&format!("{name}:pipelined:{n}"), n % CORES);
            pipeline.extend(encode_command(&[b"SET", key.as_bytes(), b"x"]));
        }
        connection.send(&pipeline).unwrap();
        for _ in 0..PIPELINE_COMMANDS {
            assert_eq!(connection.read_reply().unwrap(), ok());
        }
    }
    let mut observer = server.raw();
    let stats = text(observer.command(&[b"INFO", b"stats"]).unwrap());
    assert!(
        stats.contains(&format!("\r\nconnections_moved:{CONNECTIONS}\r\n")),
        "every connection moved exactly once: {stats}"
    );
    let clients = text(observer.command(&[b"CLIENT", b"LIST"]).unwrap());
    for (_, name, id) in &connections {
        assert!(
            clients.contains(&format!("id={id} ")) && clients.contains(&format!(" name={name} ")),
            "{clients}"
        );
    }
    assert_eq!(clients.lines().count(), CONNECTIONS + 1, "{clients}");
    // Closing a moved connection unregisters it on the core it moved to.
    drop(connections);
    let started = std::time::Instant::now();
    loop {
        let clients = text(observer.command(&[b"CLIENT", b"LIST"]).unwrap());
        if clients.lines().count() == 1 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "closed connections stay listed: {clients}"
        );
        keel_tests::wait_a_moment();
    }
}

#[test]
fn a_connection_whose_keys_alternate_between_cores_does_not_move() {
    let server = start();
    let mut connection = RawConnection::connect(server.port()).unwrap();
    let keys = [key_on("alternating", 0), key_on("alternating", 1)];
    for round in 0..4 * CONNECTION_MOVE_AFTER_COMMANDS as usize {
        let key = &keys[round % CORES];
        let set: [&[u8]; 3] = [b"SET", key.as_bytes(), b"v"];
        assert_eq!(connection.command(&set).unwrap(), ok());
    }
    let stats = text(connection.command(&[b"INFO", b"stats"]).unwrap());
    assert!(stats.contains("\r\nconnections_moved:0\r\n"), "{stats}");
}
