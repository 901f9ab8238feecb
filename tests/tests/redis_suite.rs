//! What Redis's own test suite sends before and inside unit/protocol
//! (docs/REDIS_SUITE.md), through the real binary: its harness's set-up
//! commands and the protocol edge cases, with Redis 7's replies. The suite
//! itself runs in `scripts/redis_suite.sh`; these keep the answers it
//! depends on from regressing in a plain `cargo test`.

use keel_tests::{RawConnection, Resp, Server, ServerOptions};

fn error(text: &str) -> Resp {
    Resp::Error(text.into())
}

/// Sends `bytes` on a fresh connection and returns the error reply, after
/// checking that the server then closes that connection, as Redis does
/// after a protocol error.
fn protocol_error(server: &Server, bytes: &[u8]) -> String {
    let mut raw = server.raw();
    raw.send(bytes).expect("send");
    let Resp::Error(text) = raw.read_reply().expect("a reply") else {
        panic!("{bytes:?}: not an error");
    };
    assert_eq!(
        raw.read_to_close().expect("the server closes"),
        b"",
        "{bytes:?}"
    );
    text
}

#[test]
fn the_harness_set_up_commands_answer_as_redis_without_those_features() {
    let server = Server::start(ServerOptions::default());
    let mut raw: RawConnection = server.raw();
    // run_external_server_test: FLUSHALL, FUNCTION FLUSH, then CONFIG SET
    // of the block's overrides.
    assert_eq!(
        raw.command(&[b"FLUSHALL"]).unwrap(),
        Resp::Simple("OK".into())
    );
    assert_eq!(
        raw.command(&[b"FUNCTION", b"FLUSH"]).unwrap(),
        Resp::Simple("OK".into())
    );
    assert_eq!(
        raw.command(&[b"FUNCTION", b"LIST"]).unwrap(),
        Resp::Array(Vec::new())
    );
    assert_eq!(
        raw.command(&[b"CONFIG", b"SET", b"maxmemory", b"1"])
            .unwrap(),
        error("ERR Unknown option or number of arguments for CONFIG SET - 'maxmemory'")
    );
    assert_eq!(
        raw.command(&[b"CONFIG", b"SET", b"appendonly", b"no"]).unwrap(),
        error("ERR CONFIG SET failed (possibly related to argument 'appendonly') - can't set immutable config")
    );
}

#[test]
fn unit_protocol_edge_cases_get_redis_replies() {
    let server = Server::start(ServerOptions::default());
    let mut raw = server.raw();
    // "Handle an empty query" and "Negative multibulk length": skipped,
    // no reply, the connection goes on.
    raw.send(b"\r\n*-10\r\n*0\r\n").unwrap();
    assert_eq!(
        raw.command(&[b"PING"]).unwrap(),
        Resp::Simple("PONG".into())
    );
    // "Generic wrong number of args".
    assert_eq!(
        raw.command(&[b"PING", b"x", b"y", b"z"]).unwrap(),
        error("ERR wrong number of arguments for 'ping' command")
    );
    assert_eq!(
        raw.command(&[b"PING", b"x"]).unwrap(),
        Resp::Bulk(b"x".to_vec())
    );
    let cases: [(&[u8], &str); 6] = [
        (
            b"*3000000000\r\n",
            "ERR Protocol error: invalid multibulk length",
        ),
        (
            b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n",
            "ERR Protocol error: expected '$', got 'f'",
        ),
        (
            b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$-10\r\n",
            "ERR Protocol error: invalid bulk length",
        ),
        (
            b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$2000000000\r\n",
            "ERR Protocol error: invalid bulk length",
        ),
        (
            b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$blabla\r\n",
            "ERR Protocol error: invalid bulk length",
        ),
        (
            b"*1\r\nfoo\r\n",
            "ERR Protocol error: expected '$', got 'f'",
        ),
    ];
    for (bytes, expected) in cases {
        assert_eq!(protocol_error(&server, bytes), expected, "{bytes:?}");
    }
    assert_eq!(
        protocol_error(&server, b"set \"\"\"test-key\"\"\" test-value\r\nping\r\n"),
        "ERR Protocol error: unbalanced quotes in request"
    );
    // The first connection was not disturbed by the others' errors.
    assert_eq!(
        raw.command(&[b"PING"]).unwrap(),
        Resp::Simple("PONG".into())
    );
}
