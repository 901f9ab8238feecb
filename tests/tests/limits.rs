//! Limits and hostile input: oversized keys and values, protocol garbage,
//! too many connections, absurd declared lengths. The server answers with an
//! error and keeps serving everyone else.

use std::time::{Duration, Instant};

use keel_tests::{error_text, Resp, Server, ServerOptions};

/// `--max-value-bytes` for these tests: small, so an oversized value is cheap.
const VALUE_BYTES_MAX: usize = 1 << 20;
/// `--max-key-bytes` for these tests.
const KEY_BYTES_MAX: usize = 1024;
/// How long a closed connection may stay registered.
const PROBE_GONE_DEADLINE_MS: u64 = 5_000;
/// `--max-connections` for the refusal test.
const CONNECTIONS_MAX: usize = 3;

fn limited_server() -> Server {
    Server::start(ServerOptions {
        max_value_bytes: Some(VALUE_BYTES_MAX),
        max_key_bytes: Some(KEY_BYTES_MAX),
        ..ServerOptions::default()
    })
}

fn assert_serves(connection: &mut redis::Connection) {
    let pong: String = redis::cmd("PING")
        .query(connection)
        .expect("PING after the error");
    assert_eq!(pong, "PONG");
}

#[test]
fn a_value_over_the_limit_is_refused_and_the_connection_still_serves() {
    let server = limited_server();
    let mut connection = server.connection();
    let value = vec![b'v'; VALUE_BYTES_MAX + 1];
    let error = redis::cmd("SET")
        .arg("big")
        .arg(&value)
        .query::<()>(&mut connection)
        .expect_err("over the limit");
    assert!(error_text(&error).starts_with("ERR"), "{error}");
    assert_serves(&mut connection);
    let stored: Option<Vec<u8>> = redis::cmd("GET")
        .arg("big")
        .query(&mut connection)
        .expect("GET");
    assert_eq!(stored, None);
    let at_limit = vec![b'v'; VALUE_BYTES_MAX];
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&at_limit)
        .query(&mut connection)
        .expect("a value at the limit fits");
    let stored: Vec<u8> = redis::cmd("GET")
        .arg("big")
        .query(&mut connection)
        .expect("GET");
    assert_eq!(stored.len(), VALUE_BYTES_MAX);
}

#[test]
fn a_key_over_the_limit_is_refused_and_the_connection_still_serves() {
    let server = limited_server();
    let mut connection = server.connection();
    let key = vec![b'k'; KEY_BYTES_MAX + 1];
    let error = redis::cmd("SET")
        .arg(&key)
        .arg("v")
        .query::<()>(&mut connection)
        .expect_err("over the limit");
    assert!(error_text(&error).starts_with("ERR"), "{error}");
    assert_serves(&mut connection);
    let key = vec![b'k'; KEY_BYTES_MAX];
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("v")
        .query(&mut connection)
        .expect("a key at the limit fits");
}

#[test]
fn protocol_garbage_gets_a_protocol_error_and_closes_only_that_connection() {
    let server = Server::start(ServerOptions::default());
    let mut bystander = server.connection();
    let garbage: [&[u8]; 5] = [
        b"*\x9c\x01\xfe\xd3\x00\x7f\r\n",
        b"SET \"unbalanced value\r\n",
        b"*3000000000\r\n",
        b"*1\r\n$abc\r\n",
        b"*2\r\n$3\r\nGET\r\n:12\r\n",
    ];
    for bytes in garbage {
        let mut raw = server.raw();
        raw.send(bytes).expect("send garbage");
        match raw.read_reply().expect("a reply to garbage") {
            Resp::Error(text) => {
                assert!(text.starts_with("ERR Protocol error"), "{bytes:?}: {text}")
            }
            other => panic!("{bytes:?}: not an error: {other:?}"),
        }
        assert_eq!(
            raw.read_to_close().expect("the server closes"),
            b"",
            "{bytes:?}"
        );
        assert_serves(&mut bystander);
    }
}

#[test]
fn connections_beyond_the_limit_are_refused() {
    let server = Server::start(ServerOptions {
        max_connections: Some(CONNECTIONS_MAX),
        ..ServerOptions::default()
    });
    let mut first = server.raw();
    // The readiness probe's connection may not be unregistered yet: wait
    // until the server counts only this one.
    let deadline = Instant::now() + Duration::from_millis(PROBE_GONE_DEADLINE_MS);
    loop {
        let list = first.command(&[b"CLIENT", b"LIST"]).expect("CLIENT LIST");
        let list = list.text().expect("CLIENT LIST is a string");
        if list.lines().count() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "closed connections still listed: {list}"
        );
    }
    let mut others: Vec<_> = (1..CONNECTIONS_MAX).map(|_| server.raw()).collect();
    for raw in &mut others {
        assert_eq!(
            raw.command(&[b"PING"]).expect("PING"),
            Resp::Simple("PONG".into())
        );
    }
    let mut refused = server.raw();
    assert_eq!(
        refused.read_reply().expect("the refusal"),
        Resp::Error("ERR max number of clients reached".into())
    );
    assert_eq!(refused.read_to_close().expect("the server closes"), b"");
    drop(others);
    assert_eq!(
        first.command(&[b"PING"]).expect("PING"),
        Resp::Simple("PONG".into())
    );
}

#[test]
fn a_huge_declared_bulk_length_is_refused_and_the_server_stays_up() {
    let server = Server::start(ServerOptions::default());
    let mut raw = server.raw();
    raw.send(b"*1\r\n$999999999999\r\n").expect("send");
    match raw.read_reply().expect("a reply") {
        Resp::Error(text) => assert!(text.starts_with("ERR"), "{text}"),
        other => panic!("not an error: {other:?}"),
    }
    assert_serves(&mut server.connection());
}
