//! `requirepass`, AUTH, HELLO's AUTH option and protected mode, against the
//! real binary. The replies are redis-server 7.0.15's, read off a server
//! started with `--requirepass secret`. No test listens on anything but
//! loopback: protected mode is tested where it refuses, before any bind.

use keel_tests::{metric_sample, RawConnection, Resp, Server, ServerOptions};

const PASSWORD: &str = "correct horse battery staple";
const NOAUTH: &str = "NOAUTH Authentication required.";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

fn with_password() -> ServerOptions {
    ServerOptions {
        requirepass: Some(PASSWORD.into()),
        ..ServerOptions::default()
    }
}

fn send(raw: &mut RawConnection, args: &[&str]) -> Resp {
    let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
    raw.command(&args).expect("a reply")
}

fn ok() -> Resp {
    Resp::Simple("OK".into())
}

fn error(text: &str) -> Resp {
    Resp::Error(text.into())
}

#[test]
fn commands_are_refused_until_auth_and_served_after() {
    let server = Server::start(with_password());
    let mut raw = server.raw();
    for refused in [
        &["GET", "k"][..],
        &["SET", "k", "v"],
        &["PING"],
        &["CLIENT", "ID"],
        &["CONFIG", "GET", "*"],
        &["COMMAND", "COUNT"],
        &["DBSIZE"],
    ] {
        assert_eq!(send(&mut raw, refused), error(NOAUTH), "{refused:?}");
    }
    // As Redis: an unknown command and a wrong arity are answered first.
    let unknown = send(&mut raw, &["NOSUCH", "x"]);
    assert!(matches!(&unknown, Resp::Error(text) if text.starts_with("ERR unknown command")));
    assert_eq!(
        send(&mut raw, &["GET"]),
        error("ERR wrong number of arguments for 'get' command")
    );
    assert_eq!(send(&mut raw, &["AUTH", "wrong"]), error(WRONGPASS));
    assert_eq!(send(&mut raw, &["AUTH", "bob", PASSWORD]), error(WRONGPASS));
    assert_eq!(
        send(&mut raw, &["AUTH", "a", "b", "c"]),
        error("ERR syntax error")
    );
    assert_eq!(send(&mut raw, &["GET", "k"]), error(NOAUTH));
    assert_eq!(send(&mut raw, &["AUTH", PASSWORD]), ok());
    assert_eq!(send(&mut raw, &["SET", "k", "v"]), ok());
    assert_eq!(send(&mut raw, &["GET", "k"]), Resp::Bulk(b"v".to_vec()));
    // A wrong AUTH afterwards does not log the connection out.
    assert_eq!(send(&mut raw, &["AUTH", "wrong"]), error(WRONGPASS));
    assert_eq!(send(&mut raw, &["PING"]), Resp::Simple("PONG".into()));
    // RESET does.
    assert_eq!(send(&mut raw, &["RESET"]), Resp::Simple("RESET".into()));
    assert_eq!(send(&mut raw, &["GET", "k"]), error(NOAUTH));
    assert_eq!(send(&mut raw, &["AUTH", "default", PASSWORD]), ok());
    assert_eq!(send(&mut raw, &["GET", "k"]), Resp::Bulk(b"v".to_vec()));
    // Each connection logs in for itself.
    let mut other = server.raw();
    assert_eq!(send(&mut other, &["GET", "k"]), error(NOAUTH));
    assert_eq!(send(&mut other, &["QUIT"]), ok());
}

#[test]
fn hello_logs_in_with_its_auth_option_only() {
    let server = Server::start(with_password());
    let mut raw = server.raw();
    let needs_auth = send(&mut raw, &["HELLO", "3"]);
    assert!(
        matches!(&needs_auth, Resp::Error(text) if text.starts_with("NOAUTH HELLO must be called with the client already authenticated")),
        "{needs_auth:?}"
    );
    assert_eq!(
        send(&mut raw, &["HELLO", "3", "AUTH", "default", "wrong"]),
        error(WRONGPASS)
    );
    assert_eq!(send(&mut raw, &["PING"]), error(NOAUTH));
    let hello = send(
        &mut raw,
        &["HELLO", "3", "AUTH", "default", PASSWORD, "SETNAME", "app"],
    );
    let Resp::Map(fields) = hello else {
        panic!("HELLO 3 answers a map: {hello:?}")
    };
    assert!(fields.contains(&(Resp::Bulk(b"proto".to_vec()), Resp::Integer(3))));
    assert_eq!(
        send(&mut raw, &["CLIENT", "GETNAME"]),
        Resp::Bulk(b"app".to_vec())
    );
}

#[test]
fn clients_with_the_password_in_their_url_work_and_others_are_refused() {
    let server = Server::start(with_password());
    let mut connection = server.connection();
    let _: () = redis::cmd("SET")
        .arg("key")
        .arg("value")
        .query(&mut connection)
        .expect("SET after the client's AUTH");
    let url = format!("redis://127.0.0.1:{}/", server.port());
    let mut anonymous = redis::Client::open(url).unwrap().get_connection().unwrap();
    let refused = redis::cmd("GET")
        .arg("key")
        .query::<Option<String>>(&mut anonymous)
        .unwrap_err();
    assert!(
        keel_tests::error_text(&refused).contains("Authentication required"),
        "{refused}"
    );
}

#[test]
fn without_a_password_auth_answers_as_redis_does() {
    let server = Server::start(ServerOptions::default());
    let mut raw = server.raw();
    let reply = send(&mut raw, &["AUTH", "x"]);
    assert_eq!(reply, error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"));
    assert_eq!(send(&mut raw, &["AUTH", "default", "anything"]), ok());
    assert_eq!(send(&mut raw, &["AUTH", "bob", "x"]), error(WRONGPASS));
    assert_eq!(send(&mut raw, &["RESET"]), Resp::Simple("RESET".into()));
    assert_eq!(send(&mut raw, &["SET", "k", "v"]), ok());
}

/// Protected mode: listening on all interfaces without a password is
/// refused with exit code 64 (EX_USAGE) and a message naming the fixes. The
/// data directory is a plain file, so that a server that wrongly went on
/// would fail on it, before binding anything.
#[test]
fn an_exposed_bind_without_a_password_is_refused_before_listening() {
    let temp = tempfile::tempdir().unwrap();
    let not_a_dir = temp.path().join("file");
    std::fs::write(&not_a_dir, b"not a data directory").unwrap();
    for bind in ["0.0.0.0", "::"] {
        let exited = Server::refused(ServerOptions {
            bind: bind.into(),
            dir: Some(not_a_dir.clone()),
            ..ServerOptions::default()
        });
        assert_eq!(exited.status.code(), Some(64), "{bind}: {}", exited.stderr);
        for expected in [
            "protected mode",
            "--requirepass",
            "--bind 127.0.0.1",
            "--protected-mode no",
        ] {
            assert!(
                exited.stderr.contains(expected),
                "{bind}: {}",
                exited.stderr
            );
        }
    }
}

/// The password appears in no log line (at every level), no reply of
/// CONFIG GET, INFO or CLIENT LIST, and no metric, after failed and
/// successful logins.
#[test]
fn the_password_never_shows_in_logs_replies_or_metrics() {
    let mut server = Server::start(ServerOptions {
        metrics: true,
        env: vec![("RUST_LOG".into(), "trace".into())],
        ..with_password()
    });
    let mut raw = server.raw();
    let mut replies = Vec::new();
    for request in [
        &["AUTH", "not-the-password"][..],
        &["HELLO", "3", "AUTH", "default", "also-wrong"],
        &["AUTH", PASSWORD],
        &["HELLO", "2", "AUTH", "default", PASSWORD],
        &["CONFIG", "GET", "*"],
        &["CONFIG", "GET", "requirepass"],
        &["INFO", "everything"],
        &["CLIENT", "LIST"],
        &["COMMAND", "DOCS", "auth"],
    ] {
        replies.push(format!("{:?}", send(&mut raw, request)));
    }
    assert_eq!(
        send(&mut raw, &["CONFIG", "GET", "requirepass"]),
        Resp::Array(Vec::new())
    );
    let metrics = server.scrape_metrics();
    assert_eq!(metric_sample(&metrics, "keel_auth_failures_total"), 2.0);
    let exited = server.terminate();
    assert!(
        exited.stderr.contains("ready to accept connections"),
        "{}",
        exited.stderr
    );
    for (place, text) in [
        ("the log", exited.stderr.as_str()),
        ("the metrics", metrics.as_str()),
        ("the replies", replies.concat().as_str()),
    ] {
        assert!(
            !text.contains(PASSWORD),
            "{place} shows the password:\n{text}"
        );
    }
}

/// As Redis 7: before AUTH a request may have at most 10 arguments and
/// 16 KiB per argument; more is a protocol error that closes the connection,
/// so an anonymous client cannot make the server hold a large request.
#[test]
fn anonymous_requests_are_held_to_a_small_size() {
    let server = Server::start(with_password());
    for (wire, expected) in [
        (
            "*11\r\n".to_string(),
            "ERR Protocol error: unauthenticated multibulk length",
        ),
        (
            format!("*2\r\n$4\r\nAUTH\r\n${}\r\n", 16 * 1024 + 1),
            "ERR Protocol error: unauthenticated bulk length",
        ),
    ] {
        let mut raw = server.raw();
        raw.send(wire.as_bytes()).unwrap();
        assert_eq!(raw.read_reply().unwrap(), error(expected));
        assert_eq!(raw.read_to_close().unwrap(), b"");
    }
    // The limits end with the AUTH before a request, even when both come
    // in one write (the parser reads each request's headers after the
    // requests before it have run).
    let mut raw = server.raw();
    let mset = [
        "MSET", "{k}1", "v", "{k}2", "v", "{k}3", "v", "{k}4", "v", "{k}5", "v",
    ];
    let large = "v".repeat(64 * 1024);
    let mut pipeline = keel_tests::encode_command(&[b"AUTH", PASSWORD.as_bytes()]);
    let mset_args: Vec<&[u8]> = mset.iter().map(|arg| arg.as_bytes()).collect();
    pipeline.extend(keel_tests::encode_command(&mset_args));
    pipeline.extend(keel_tests::encode_command(&[
        b"SET",
        b"large",
        large.as_bytes(),
    ]));
    raw.send(&pipeline).unwrap();
    for _ in 0..3 {
        assert_eq!(raw.read_reply().unwrap(), ok());
    }
    assert_eq!(
        send(&mut raw, &["STRLEN", "large"]),
        Resp::Integer(large.len() as i64)
    );
}

/// A config file that holds the password and that other users can read is
/// warned about (by name, without the password); chmod 600 silences it.
#[test]
fn a_readable_config_file_holding_the_password_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let temp = tempfile::tempdir().unwrap();
    let file = temp.path().join("keel.toml");
    std::fs::write(&file, format!("requirepass = \"{PASSWORD}\"\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut server = Server::start(ServerOptions {
        extra_args: vec!["--config".into(), file.display().to_string()],
        ..ServerOptions::default()
    });
    let mut raw = server.raw();
    assert_eq!(send(&mut raw, &["GET", "k"]), error(NOAUTH));
    assert_eq!(send(&mut raw, &["AUTH", PASSWORD]), ok());
    let warned = server.stderr();
    assert!(warned.contains("chmod 600"), "{warned}");
    assert!(!warned.contains(PASSWORD), "{warned}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    server.terminate();
    server.restart();
    // Logged by each core before it serves, so present once PING answers.
    let quiet = server.stderr();
    assert!(quiet.contains("shards recovered"), "{quiet}");
    assert!(!quiet.contains("chmod 600"), "{quiet}");
}
