//! Crash safety: SIGKILL at a random moment under concurrent writers loses no
//! acknowledged write, with and without frequent snapshots; SIGTERM loses nothing.

use std::collections::HashMap;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use keel_tests::{
    metric_sample, Rng, Server, ServerOptions, REPLY_TIMEOUT_MS, SNAPSHOT_WAL_BYTES_MIN,
};

/// Writer threads, each with keys of its own.
const WRITERS: usize = 4;
/// Keys per writer: few enough that keys are overwritten many times.
const KEYS_PER_WRITER: u64 = 64;
/// Crash-and-restart rounds per test.
const ROUNDS: usize = 3;

/// What a writer knows of one key: the last value acknowledged, and the one
/// sent without a reply when the server died (which may or may not be stored).
#[derive(Clone, Debug, Default)]
struct KeyState {
    acknowledged: Option<Vec<u8>>,
    in_flight: Option<Vec<u8>>,
}

type Known = HashMap<String, KeyState>;

fn value(writer: usize, round: usize, sequence: u64, value_bytes: usize) -> Vec<u8> {
    let mut value = format!("w{writer}-r{round}-s{sequence}-").into_bytes();
    value.resize(value_bytes.max(value.len()), b'.');
    value
}

/// Writes until the connection fails; reports each acknowledgement on
/// `acks` and returns what it knows.
fn write_until_killed(
    server_port: u16,
    writer: usize,
    round: usize,
    value_bytes: usize,
    acks: mpsc::Sender<()>,
) -> Known {
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{server_port}/")).expect("a valid URL");
    let mut known = Known::new();
    let Ok(mut connection) = client.get_connection() else {
        return known;
    };
    // A server that stops answering ends the writer instead of hanging it.
    if connection
        .set_read_timeout(Some(Duration::from_millis(REPLY_TIMEOUT_MS)))
        .is_err()
    {
        return known;
    }
    for sequence in 0.. {
        let key = format!("crash:{writer}:{}", sequence % KEYS_PER_WRITER);
        let value = value(writer, round, sequence, value_bytes);
        let state = known.entry(key.clone()).or_default();
        state.in_flight = Some(value.clone());
        match redis::cmd("SET")
            .arg(&key)
            .arg(&value)
            .query::<()>(&mut connection)
        {
            Ok(()) => {
                state.acknowledged = state.in_flight.take();
                // The receiver is gone once the kill is decided; keep writing.
                let _ = acks.send(());
            }
            Err(_) => break,
        }
    }
    known
}

/// Runs writers, SIGKILLs the server after a random number of acknowledged
/// writes, and merges what the writers learnt into `expected`.
fn crash_round(
    server: &mut Server,
    rng: &mut Rng,
    round: usize,
    value_bytes: usize,
    acks_before_kill: (u64, u64),
    expected: &mut Known,
    snapshots: &mut u64,
) {
    let (acks, acked) = mpsc::channel();
    let port = server.port();
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let acks = acks.clone();
            thread::spawn(move || write_until_killed(port, writer, round, value_bytes, acks))
        })
        .collect();
    drop(acks);
    let kill_after = rng.range(acks_before_kill.0, acks_before_kill.1);
    for _ in 0..kill_after {
        acked
            .recv_timeout(Duration::from_millis(REPLY_TIMEOUT_MS))
            .unwrap_or_else(|error| {
                panic!(
                    "no write acknowledged within {REPLY_TIMEOUT_MS} ms ({error})\n{}",
                    server.stderr()
                )
            });
    }
    if server.metrics_port().is_some() {
        *snapshots += metric_sample(&server.scrape_metrics(), "keel_snapshots_total") as u64;
    }
    server.kill9();
    for writer in writers {
        for (key, state) in writer.join().expect("a writer thread") {
            let entry = expected.entry(key).or_default();
            if state.acknowledged.is_some() {
                entry.acknowledged = state.acknowledged;
            }
            entry.in_flight = state.in_flight;
        }
    }
}

/// Every acknowledged write is there with its last acknowledged value, or
/// the value of the write in flight at the kill. Forgets the in-flight values
/// afterwards: what the restarted server holds is now the known state.
fn check_and_settle(server: &Server, expected: &mut Known) {
    let mut connection = server.connection();
    for (key, state) in expected.iter_mut() {
        let stored: Option<Vec<u8>> = redis::cmd("GET")
            .arg(key)
            .query(&mut connection)
            .expect("GET");
        assert!(
            stored == state.acknowledged || (stored.is_some() && stored == state.in_flight),
            "{key}: stored {:?}, last acknowledged {:?}, in flight {:?}",
            stored.as_deref().map(String::from_utf8_lossy),
            state.acknowledged.as_deref().map(String::from_utf8_lossy),
            state.in_flight.as_deref().map(String::from_utf8_lossy),
        );
        state.acknowledged = stored;
        state.in_flight = None;
    }
}

/// Returns the snapshots written, as counted just before each kill when the
/// server serves metrics.
fn crash_rounds(options: ServerOptions, value_bytes: usize, acks_before_kill: (u64, u64)) -> u64 {
    let mut rng = Rng::from_env_or_clock();
    let mut server = Server::start(options);
    let mut expected = Known::new();
    let mut snapshots = 0;
    for round in 0..ROUNDS {
        crash_round(
            &mut server,
            &mut rng,
            round,
            value_bytes,
            acks_before_kill,
            &mut expected,
            &mut snapshots,
        );
        server.restart();
        check_and_settle(&server, &mut expected);
    }
    assert!(
        expected.values().any(|state| state.acknowledged.is_some()),
        "some writes were acknowledged"
    );
    snapshots
}

#[test]
fn sigkill_under_concurrent_writers_loses_no_acknowledged_write() {
    crash_rounds(ServerOptions::default(), 16, (100, 1_500));
}

#[test]
fn sigkill_with_frequent_snapshots_loses_no_acknowledged_write() {
    let options = ServerOptions {
        snapshot_wal_bytes: Some(SNAPSHOT_WAL_BYTES_MIN),
        metrics: true,
        ..ServerOptions::default()
    };
    // 1 KiB values: 3,000 writes over two shards are at least 1.5 MiB of WAL
    // per shard on average, past the 1 MiB that starts a snapshot.
    let snapshots = crash_rounds(options, 1024, (3_000, 6_000));
    assert!(
        snapshots >= 1,
        "no snapshot was written, so none was tested"
    );
}

#[test]
fn sigterm_then_restart_keeps_everything() {
    let mut server = Server::start(ServerOptions::default());
    let mut connection = server.connection();
    let pairs: Vec<(String, String)> = (0..500)
        .map(|index| (format!("term:{index}"), format!("value {index}")))
        .collect();
    for (key, value) in &pairs {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query(&mut connection)
            .expect("SET");
    }
    drop(connection);
    let exited = server.terminate();
    assert!(
        exited.status.success(),
        "SIGTERM is a clean stop: {exited:?}"
    );
    server.restart();
    let mut connection = server.connection();
    for (key, value) in &pairs {
        let stored: Option<String> = redis::cmd("GET")
            .arg(key)
            .query(&mut connection)
            .expect("GET");
        assert_eq!(stored.as_ref(), Some(value), "{key}");
    }
}
