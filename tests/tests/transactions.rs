//! Transactions (MULTI/EXEC/DISCARD/WATCH/UNWATCH) against the real server:
//! the redis crate's atomic pipelines (MULTI ... EXEC in one write), WATCH
//! against writers on other connections, `-CROSSSLOT`, and a transaction
//! recovered whole or not at all after SIGKILL.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use keel_tests::{Resp, Rng, Server, ServerOptions, REPLY_TIMEOUT_MS};

/// Keys one crash-test transaction writes, all in one slot.
const CRASH_TRANSACTION_KEYS: usize = 16;
/// Threads incrementing one counter through WATCH ... EXEC.
const COUNTER_CLIENTS: usize = 4;
/// Increments each of them makes.
const INCREMENTS_PER_CLIENT: i64 = 50;

/// Two cores and four shards: some slots' shards live on the other core
/// than the connection's, so EXEC hops there as one request.
fn two_cores() -> ServerOptions {
    ServerOptions {
        cores: 2,
        shards: 4,
        ..ServerOptions::default()
    }
}

fn simple(text: &str) -> Resp {
    Resp::Simple(text.into())
}

fn bulk(text: &str) -> Resp {
    Resp::Bulk(text.as_bytes().to_vec())
}

#[test]
fn an_atomic_pipeline_runs_as_one_transaction_on_every_shard() {
    let server = Server::start(two_cores());
    let mut connection = server.connection();
    // Tags spread over the slots, so over every shard of both cores.
    for tag in 0..16 {
        let (a, b) = (format!("{{t{tag}}}a"), format!("{{t{tag}}}b"));
        let (counter, value): (i64, String) = redis::pipe()
            .atomic()
            .set(&a, "1")
            .ignore()
            .incr(&b, 5)
            .get(&a)
            .query(&mut connection)
            .expect("the transaction runs");
        assert_eq!((counter, value.as_str()), (5, "1"), "tag {tag}");
    }
}

#[test]
fn replies_and_errors_are_redis_s() {
    let server = Server::start(two_cores());
    let mut raw = server.raw();
    let mut command = |args: &[&str]| {
        let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
        raw.command(&args).expect("a reply")
    };
    assert_eq!(command(&["MULTI"]), simple("OK"));
    assert_eq!(command(&["SET", "{k}a", "x"]), simple("QUEUED"));
    assert_eq!(command(&["INCR", "{k}a"]), simple("QUEUED"));
    assert_eq!(command(&["ECHO", "e"]), simple("QUEUED"));
    assert_eq!(
        command(&["EXEC"]),
        Resp::Array(vec![
            simple("OK"),
            Resp::Error("ERR value is not an integer or out of range".into()),
            bulk("e"),
        ])
    );
    assert_eq!(command(&["MULTI"]), simple("OK"));
    assert_eq!(command(&["SET", "a", "1"]), simple("QUEUED"));
    assert_eq!(command(&["SET", "b", "1"]), simple("QUEUED"));
    assert_eq!(
        command(&["EXEC"]),
        Resp::Error("CROSSSLOT Keys in request don't hash to the same slot".into())
    );
    assert_eq!(command(&["EXISTS", "a"]), Resp::Integer(0), "nothing ran");
    assert_eq!(command(&["MULTI"]), simple("OK"));
    assert_eq!(command(&["SET", "a", "1"]), simple("QUEUED"));
    assert_eq!(
        command(&["SET", "a"]),
        Resp::Error("ERR wrong number of arguments for 'set' command".into())
    );
    assert_eq!(
        command(&["EXEC"]),
        Resp::Error("EXECABORT Transaction discarded because of previous errors.".into())
    );
    assert_eq!(
        command(&["EXEC"]),
        Resp::Error("ERR EXEC without MULTI".into())
    );
}

/// One connection WATCHes, another writes: EXEC runs nothing (a null
/// reply); after UNWATCH or EXEC the next transaction runs.
#[test]
fn exec_fails_when_another_connection_wrote_a_watched_key() {
    let server = Server::start(two_cores());
    let mut watcher = server.raw();
    let mut writer = server.connection();
    let mut command = |args: &[&[u8]]| watcher.command(args).expect("a reply");
    assert_eq!(command(&[b"WATCH", b"w:key"]), simple("OK"));
    redis::cmd("SET")
        .arg("w:key")
        .arg("theirs")
        .query::<()>(&mut writer)
        .expect("the other write");
    assert_eq!(command(&[b"MULTI"]), simple("OK"));
    assert_eq!(command(&[b"SET", b"w:key", b"mine"]), simple("QUEUED"));
    assert_eq!(command(&[b"EXEC"]), Resp::Null);
    assert_eq!(command(&[b"GET", b"w:key"]), bulk("theirs"));
    assert_eq!(command(&[b"WATCH", b"w:key"]), simple("OK"));
    assert_eq!(command(&[b"MULTI"]), simple("OK"));
    assert_eq!(command(&[b"SET", b"w:key", b"mine"]), simple("QUEUED"));
    assert_eq!(command(&[b"EXEC"]), Resp::Array(vec![simple("OK")]));
    assert_eq!(command(&[b"GET", b"w:key"]), bulk("mine"));
}

/// Optimistic increments by WATCH, GET, MULTI, SET, EXEC from several
/// connections at once (the redis crate's `transaction` helper retries
/// while EXEC answers null): none is lost, so every EXEC that ran saw no
/// other write between its WATCH and itself.
#[test]
fn concurrent_watch_increments_lose_no_update() {
    let server = Server::start(two_cores());
    let port = server.port();
    let clients: Vec<_> = (0..COUNTER_CLIENTS)
        .map(|_| {
            thread::spawn(move || {
                let client =
                    redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("a valid URL");
                let mut connection = client.get_connection().expect("a connection");
                let mut retries = 0u64;
                for _ in 0..INCREMENTS_PER_CLIENT {
                    let () =
                        redis::transaction(&mut connection, &["counter"], |connection, pipe| {
                            let value: Option<i64> =
                                redis::cmd("GET").arg("counter").query(connection)?;
                            retries += 1;
                            pipe.set("counter", value.unwrap_or(0) + 1)
                                .ignore()
                                .query::<Option<()>>(connection)
                        })
                        .expect("the increment");
                }
                retries
            })
        })
        .collect();
    let attempts: u64 = clients
        .into_iter()
        .map(|client| client.join().expect("a client thread"))
        .sum();
    let mut connection = server.connection();
    let total: i64 = redis::cmd("GET")
        .arg("counter")
        .query(&mut connection)
        .expect("the counter");
    assert_eq!(total, COUNTER_CLIENTS as i64 * INCREMENTS_PER_CLIENT);
    assert!(attempts >= total as u64, "{attempts} attempts");
}

/// Writes transactions of [`CRASH_TRANSACTION_KEYS`] SETs of one number
/// until the connection fails; reports each acknowledged number.
fn transactions_until_killed(port: u16, acknowledged: mpsc::Sender<u64>) {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("a valid URL");
    let Ok(mut connection) = client.get_connection() else {
        return;
    };
    if connection
        .set_read_timeout(Some(Duration::from_millis(REPLY_TIMEOUT_MS)))
        .is_err()
    {
        return;
    }
    for number in 1.. {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for key in 0..CRASH_TRANSACTION_KEYS {
            pipe.set(format!("{{crash}}{key}"), number).ignore();
        }
        if pipe.query::<()>(&mut connection).is_err() {
            return;
        }
        // The receiver is gone once the kill is decided; keep writing.
        let _ = acknowledged.send(number);
    }
}

/// SIGKILL while transactions are written: after the restart every key
/// holds the same number (one transaction, whole), at least the last one
/// acknowledged.
#[test]
fn a_transaction_is_recovered_whole_or_not_at_all_after_sigkill() {
    let mut rng = Rng::from_env_or_clock();
    let mut server = Server::start(two_cores());
    for round in 0..3 {
        let (sender, receiver) = mpsc::channel();
        let port = server.port();
        let writer = thread::spawn(move || transactions_until_killed(port, sender));
        let kill_after = rng.range(1, 200);
        let mut last_acknowledged = 0;
        for number in receiver.iter().take(kill_after as usize) {
            last_acknowledged = number;
        }
        server.kill9();
        writer.join().expect("the writer thread");
        for number in receiver.try_iter() {
            last_acknowledged = number;
        }
        server.restart();
        let mut connection = server.connection();
        let keys: Vec<String> = (0..CRASH_TRANSACTION_KEYS)
            .map(|key| format!("{{crash}}{key}"))
            .collect();
        let values: Vec<Option<u64>> = redis::cmd("MGET")
            .arg(&keys)
            .query(&mut connection)
            .expect("MGET");
        let first = values[0];
        assert!(
            values.iter().all(|value| *value == first),
            "round {round}: a transaction recovered in part: {values:?}"
        );
        assert!(
            first.unwrap_or(0) >= last_acknowledged,
            "round {round}: transaction {last_acknowledged} was acknowledged, {first:?} recovered"
        );
        redis::cmd("DEL")
            .arg(&keys)
            .query::<()>(&mut connection)
            .expect("DEL");
    }
}
