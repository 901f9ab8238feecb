//! The random differential: the same seeded sequence of string and generic
//! commands (with random options, wrong argument counts and errors) goes to
//! Keel and to a redis-server this test starts, and every reply must match.
//!
//! redis-server must be installed (`scripts/test.sh` installs it): without it
//! the test fails, it never skips.
//!
//! # What is compared, and what is not
//! The first half of the sequence speaks RESP2, the second RESP3 (after
//! `HELLO 3`). Replies are compared exactly, except where the two servers may honestly
//! differ:
//! - `TTL`, `PTTL`, `EXPIRETIME`, `PEXPIRETIME` of a key given a relative
//!   expiry: each server adds its own clock, read a few milliseconds apart, so
//!   their times agree within [`CLOCK_SKEW_MS`] (-1 and -2 must be exact).
//! - `KEYS`: the same keys in any order.
//! - `RANDOMKEY`: both nil, or both a key (the key sets are the same).
//! - `INCRBYFLOAT`: the one known mismatch class. Keel computes in 64-bit
//!   floats, Redis in x87 long doubles, so `0.1 + 0.2` is
//!   `0.30000000000000004` on Keel and `0.3` on Redis, and a value such as
//!   `922337203685473e307` is a number to Redis but beyond a 64-bit float.
//!   A differing INCRBYFLOAT reply is excused only if both are numbers within
//!   a relative [`FLOAT_RELATIVE_TOLERANCE`], or Redis's is beyond the 64-bit
//!   range and Keel refused it as not a float; the key is then set on Keel to
//!   Redis's value (expiry kept) so later commands compare the same state.
//!   The number excused is printed.
//!
//! Not sent: `OBJECT ENCODING` (Redis's depends on how the value was made:
//! APPEND makes `raw`; Keel's on its bytes alone), `OBJECT REFCOUNT` (Redis
//! shares small integers), `OBJECT IDLETIME` (Keel tracks no access time),
//! `TIME`, `SCAN` (cursors are each server's own), `DBSIZE` (a Redis counts
//! a key that SET gave a past time until its expiry cycle removes it; Keel
//! removes it at once, so their counts differ for a moment), `COPY ... DB n` for a
//! database 1 to 15 (Keel has one; a Redis with 16 copies there), expiries
//! short enough to pass during the run, `EXPIRE`/`PEXPIRE` with GT or LT
//! (two relative times set in one millisecond on one server and in two on
//! the other compare differently), and SETRANGE/SETBIT offsets that would
//! allocate hundreds of megabytes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keel_tests::{
    free_port, wait_a_moment, RawConnection, Resp, Server, ServerOptions, READY_DEADLINE_MS,
};
use keel_wal::memory::SplitMix64;

/// The sequence's seed: a fixed one, so a failure replays
/// (`KEEL_TEST_SEED` runs another).
const SEED: u64 = 20_261_202;
/// Commands sent to each server.
const COMMANDS: usize = 5_000;
/// The whole run's bound.
const RUN_DEADLINE_MS: u64 = 30_000;
/// How far apart the two servers' clocks may read the same instant: their
/// relative expiries are set and read a few milliseconds apart.
const CLOCK_SKEW_MS: i64 = 2_000;
/// How far apart two INCRBYFLOAT results may be, relative to their size
/// (a 64-bit float holds 15 to 17 significant digits).
const FLOAT_RELATIVE_TOLERANCE: f64 = 1e-12;
/// Mismatches printed when the test fails.
const MISMATCHES_SHOWN_MAX: usize = 20;

/// Every key shares the hash tag `{t}`: Keel refuses multi-key commands
/// across slots, which a Redis that is not a cluster accepts.
const KEYS: &[&str] = &["{t}a", "{t}b", "{t}c", "{t}d", "{t}e"];

/// A redis-server on a free loopback port, in a temporary directory, with
/// persistence off; killed when dropped.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run redis-server ({error}): the differential test needs it; \
                     install it with `apt-get install -y redis-server` (scripts/test.sh does)"
                )
            });
        let mut server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(READY_DEADLINE_MS);
        loop {
            let answered = RawConnection::connect(self.port)
                .and_then(|mut connection| connection.command(&[b"PING"]));
            if matches!(answered, Ok(Resp::Simple(ref pong)) if pong == "PONG") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("redis-server exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING within {READY_DEADLINE_MS} ms"
            );
            wait_a_moment();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How two replies to one command are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compare {
    Exact,
    /// A time that each server's clock went into; `unit_ms` per unit.
    Clock {
        unit_ms: i64,
    },
    /// A list in any order.
    AnyOrder,
    /// Nil, or any key.
    AnyKey,
    /// INCRBYFLOAT.
    Float,
}

/// The generator of the command sequence.
struct Generator {
    rng: SplitMix64,
    /// Unix seconds at the start: absolute expiries are far after it.
    start_unix_s: u64,
}

impl Generator {
    fn below(&mut self, bound: u64) -> u64 {
        self.rng.below(bound)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn key(&mut self) -> String {
        self.pick(KEYS).to_owned()
    }

    fn keys(&mut self, at_least: u64) -> Vec<String> {
        let count = at_least + self.below(3);
        (0..count).map(|_| self.key()).collect()
    }

    fn value(&mut self) -> String {
        let values = [
            "0",
            "1",
            "-5",
            "123",
            "10.5",
            "0.1",
            "3e3",
            "9223372036854775807",
            "-9223372036854775808",
            "foobar",
            "abc",
            "",
            "hello world",
            "\u{ff}\u{0}x",
            "01",
            " 1",
            "0123456789abcdefghijklmnopqrstuvwxyz0123456789",
        ];
        self.pick(&values).to_owned()
    }

    fn integer(&mut self) -> String {
        let integers = [
            "0",
            "1",
            "2",
            "-1",
            "-3",
            "7",
            "100",
            "-100",
            "9223372036854775807",
            "-9223372036854775808",
            "x",
            "1.5",
        ];
        self.pick(&integers).to_owned()
    }

    fn float(&mut self) -> String {
        let floats = [
            "0.1", "-0.2", "1.5", "3", "-7", "1e3", "2.5e-3", "abc", "inf", "0",
        ];
        self.pick(&floats).to_owned()
    }

    /// A relative time that outlasts the run (or is not positive: the key
    /// goes at once, or the time is refused).
    fn relative(&mut self, seconds: bool) -> String {
        let scale = if seconds { 1 } else { 1000 };
        match self.below(10) {
            0 => "0".into(),
            1 => "-5".into(),
            2 => "x".into(),
            3 => "99999999999999999".into(),
            step => ((step - 3) * 100 * scale).to_string(),
        }
    }

    /// An absolute time far after the run, or long past.
    fn absolute(&mut self, seconds: bool) -> String {
        let scale = if seconds { 1 } else { 1000 };
        match self.below(8) {
            0 => (1000 * scale).to_string(),
            1 => "0".into(),
            2 => "-1".into(),
            3 => "x".into(),
            step => ((self.start_unix_s + step * 1_000_000) * scale).to_string(),
        }
    }

    fn expiry_option(&mut self, set: bool) -> Vec<String> {
        let mut words = Vec::new();
        match self.below(if set { 7 } else { 6 }) {
            0 => {}
            1 => words.extend(["EX".into(), self.relative(true)]),
            2 => words.extend(["PX".into(), self.relative(false)]),
            3 => words.extend(["EXAT".into(), self.absolute(true)]),
            4 => words.extend(["PXAT".into(), self.absolute(false)]),
            5 if set => words.push("KEEPTTL".into()),
            _ => words.push(if set { "EX" } else { "PERSIST" }.into()),
        }
        words
    }

    fn set_options(&mut self) -> Vec<String> {
        let mut options = Vec::new();
        for _ in 0..self.below(3) {
            match self.below(5) {
                0 => options.push("NX".into()),
                1 => options.push("XX".into()),
                2 => options.push("GET".into()),
                3 => options.push("bogus".into()),
                _ => options.extend(self.expiry_option(true)),
            }
        }
        options
    }

    /// One command, and how its replies compare.
    fn command(&mut self) -> (Vec<String>, Compare) {
        let mut compare = Compare::Exact;
        let words: Vec<String> = match self.below(52) {
            0..=3 => vec!["GET".into(), self.key()],
            4..=6 => {
                let mut words = vec!["SET".into(), self.key(), self.value()];
                words.extend(self.set_options());
                words
            }
            7 => vec!["SETNX".into(), self.key(), self.value()],
            8 => vec!["GETSET".into(), self.key(), self.value()],
            9 => vec!["GETDEL".into(), self.key()],
            10 => {
                let mut words = vec!["GETEX".into(), self.key()];
                words.extend(self.expiry_option(false));
                words
            }
            11 => [vec!["DEL".into()], self.keys(1)].concat(),
            12 => [vec!["UNLINK".into()], self.keys(1)].concat(),
            13 => [vec!["EXISTS".into()], self.keys(1)].concat(),
            14 => vec!["INCR".into(), self.key()],
            15 => vec!["DECR".into(), self.key()],
            16 => vec!["INCRBY".into(), self.key(), self.integer()],
            17 => vec!["DECRBY".into(), self.key(), self.integer()],
            18 => {
                compare = Compare::Float;
                vec!["INCRBYFLOAT".into(), self.key(), self.float()]
            }
            19 => vec!["APPEND".into(), self.key(), self.value()],
            20 => vec!["STRLEN".into(), self.key()],
            21 => {
                let name = self.pick(&["GETRANGE", "SUBSTR"]);
                vec![name.into(), self.key(), self.integer(), self.integer()]
            }
            22 => {
                let offset = if self.chance(5) {
                    "536870912".to_owned()
                } else {
                    self.below(20).to_string()
                };
                vec!["SETRANGE".into(), self.key(), offset, self.value()]
            }
            23 => [vec!["MGET".into()], self.keys(1)].concat(),
            24 => {
                let name = self.pick(&["MSET", "MSETNX"]);
                let mut words = vec![name.into()];
                for _ in 0..1 + self.below(3) {
                    words.extend([self.key(), self.value()]);
                }
                words
            }
            25..=26 => {
                let (name, relative, seconds) = match self.below(4) {
                    0 => ("EXPIRE", true, true),
                    1 => ("PEXPIRE", true, false),
                    2 => ("EXPIREAT", false, true),
                    _ => ("PEXPIREAT", false, false),
                };
                let time = if relative {
                    self.relative(seconds)
                } else {
                    self.absolute(seconds)
                };
                let mut words = vec![name.into(), self.key(), time];
                let conditions: &[&str] = if relative {
                    &["NX", "XX", "nx"]
                } else {
                    &["NX", "XX", "GT", "LT", "gt", "bogus"]
                };
                for _ in 0..self.below(3) {
                    words.push(self.pick(conditions).into());
                }
                words
            }
            27 => {
                let (name, unit_ms) = match self.below(4) {
                    0 => ("TTL", 1000),
                    1 => ("PTTL", 1),
                    2 => ("EXPIRETIME", 1000),
                    _ => ("PEXPIRETIME", 1),
                };
                compare = Compare::Clock { unit_ms };
                vec![name.into(), self.key()]
            }
            28 => vec!["PERSIST".into(), self.key()],
            29 => vec!["TYPE".into(), self.key()],
            30 => {
                let name = self.pick(&["RENAME", "RENAMENX"]);
                vec![name.into(), self.key(), self.key()]
            }
            31 => {
                let name = self.pick(&["SETEX", "PSETEX"]);
                let time = self.relative(name == "SETEX");
                vec![name.into(), self.key(), time, self.value()]
            }
            32..=33 => {
                let offset = match self.below(20) {
                    0 => "-1".into(),
                    1 => "4294967296".into(),
                    2 => "x".into(),
                    _ => self.below(200).to_string(),
                };
                let bit = self.pick(&["0", "1", "1", "0", "2", "x"]);
                vec!["SETBIT".into(), self.key(), offset, bit.into()]
            }
            34 => {
                let offset = match self.below(10) {
                    0 => "4294967296".into(),
                    1 => "-1".into(),
                    _ => self.below(300).to_string(),
                };
                vec!["GETBIT".into(), self.key(), offset]
            }
            35..=36 => {
                let mut words = vec!["BITCOUNT".into(), self.key()];
                if self.chance(70) {
                    words.extend([self.integer(), self.integer()]);
                    if self.chance(50) {
                        words.push(self.pick(&["BYTE", "BIT", "bit", "word"]).into());
                    }
                } else if self.chance(20) {
                    words.push(self.integer());
                }
                words
            }
            37..=38 => {
                let bit = self.pick(&["0", "1", "0", "1", "2"]);
                let mut words = vec!["BITPOS".into(), self.key(), bit.into()];
                for _ in 0..self.below(4) {
                    words.push(self.integer());
                }
                if words.len() == 5 && self.chance(60) {
                    words.push(self.pick(&["BYTE", "BIT", "bit", "word"]).into());
                }
                words
            }
            39..=40 => {
                let operator = self.pick(&["AND", "OR", "XOR", "NOT", "not", "nand"]);
                let sources = if operator.eq_ignore_ascii_case("not") && self.chance(80) {
                    vec![self.key()]
                } else {
                    self.keys(1)
                };
                [vec!["BITOP".into(), operator.into(), self.key()], sources].concat()
            }
            41..=42 => {
                let mut words = vec!["LCS".into(), self.key(), self.key()];
                for _ in 0..self.below(3) {
                    match self.below(5) {
                        0 => words.push("LEN".into()),
                        1 => words.push("IDX".into()),
                        2 => words.push("WITHMATCHLEN".into()),
                        3 => words.extend(["MINMATCHLEN".into(), self.integer()]),
                        _ => words.push("bogus".into()),
                    }
                }
                words
            }
            43..=44 => {
                let mut words = vec!["COPY".into(), self.key(), self.key()];
                for _ in 0..self.below(3) {
                    match self.below(3) {
                        0 => words.push("REPLACE".into()),
                        1 => {
                            let db = self.pick(&["0", "0", "16", "-1", "x", "99999999999"]);
                            words.extend(["DB".into(), db.into()]);
                        }
                        _ => words.push("bogus".into()),
                    }
                }
                words
            }
            45 => [vec!["TOUCH".into()], self.keys(1)].concat(),
            46 => {
                compare = Compare::AnyKey;
                vec!["RANDOMKEY".into()]
            }
            47 => match self.below(4) {
                0 => vec!["OBJECT".into(), "FREQ".into(), self.key()],
                1 => vec!["OBJECT".into(), "HELP".into()],
                2 => vec!["OBJECT".into(), "nope".into(), self.key()],
                _ => vec!["OBJECT".into(), "FREQ".into()],
            },
            48 => {
                compare = Compare::AnyOrder;
                let pattern = self.pick(&["*", "{t}[ab]*", "{t}?", "x*"]);
                vec!["KEYS".into(), pattern.into()]
            }
            49 => {
                let mut words = vec!["PING".into()];
                for _ in 0..self.below(3) {
                    words.push(self.value());
                }
                words
            }
            50 if self.chance(10) => vec!["FLUSHALL".into()],
            _ => vec!["NOSUCHCOMMAND".into(), self.key()],
        };
        (self.mangle(words), compare)
    }

    /// Sometimes drops arguments or adds one, for arity errors.
    fn mangle(&mut self, mut words: Vec<String>) -> Vec<String> {
        match self.below(40) {
            0 if words.len() > 1 => {
                let keep = 1 + self.below(words.len() as u64 - 1) as usize;
                words.truncate(keep);
            }
            // In the keys' slot: it may be read as a key.
            1 => words.push("{t}extra".into()),
            _ => {}
        }
        words
    }
}

/// A reply reduced to what must match under `compare`.
fn comparable(reply: &Resp, compare: Compare) -> Resp {
    match (compare, reply) {
        (Compare::AnyOrder, Resp::Array(items)) => {
            let mut items = items.clone();
            items.sort_by_key(|item| format!("{item:?}"));
            Resp::Array(items)
        }
        (Compare::AnyKey, Resp::Bulk(_)) => Resp::Simple("a key".into()),
        _ => reply.clone(),
    }
}

/// Whether two replies agree under `compare`.
fn agree(redis: &Resp, keel: &Resp, compare: Compare) -> bool {
    if comparable(redis, compare) == comparable(keel, compare) {
        return true;
    }
    match (compare, redis, keel) {
        (Compare::Clock { unit_ms }, Resp::Integer(redis), Resp::Integer(keel)) => {
            *redis >= 0 && *keel >= 0 && (redis - keel).abs() * unit_ms <= CLOCK_SKEW_MS
        }
        _ => false,
    }
}

/// Whether two INCRBYFLOAT replies differ only as a 64-bit float and an x87
/// long double differ: both numbers within [`FLOAT_RELATIVE_TOLERANCE`], or
/// Redis's beyond the 64-bit range (up to 1.2e4932 in a long double) where
/// Keel refuses the value or the sum as not a (finite) float.
fn float_precision_only(redis: &Resp, keel: &Resp) -> bool {
    let number = |reply: &Resp| reply.text().and_then(|text| text.parse::<f64>().ok());
    match (number(redis), number(keel), keel) {
        (Some(redis), Some(keel), _) if redis.is_finite() && keel.is_finite() => {
            (redis - keel).abs() <= FLOAT_RELATIVE_TOLERANCE * redis.abs().max(keel.abs())
        }
        (Some(redis), None, Resp::Error(error)) => {
            redis.is_infinite()
                && (error == "ERR value is not a valid float"
                    || error == "ERR increment would produce NaN or Infinity")
        }
        _ => false,
    }
}

fn send(connection: &mut RawConnection, words: &[String]) -> Resp {
    let args: Vec<&[u8]> = words.iter().map(|word| word.as_bytes()).collect();
    connection
        .command(&args)
        .unwrap_or_else(|error| panic!("{words:?}: {error}"))
}

/// Sets `key` on Keel to the value Redis holds, keeping Keel's expiry.
fn resync(redis: &mut RawConnection, keel: &mut RawConnection, key: &str) {
    let value = match send(redis, &["GET".into(), key.into()]) {
        Resp::Bulk(value) => value,
        other => panic!("GET {key} on redis-server after INCRBYFLOAT: {other:?}"),
    };
    let args: [&[u8]; 4] = [b"SET", key.as_bytes(), &value, b"KEEPTTL"];
    let reply = keel.command(&args).expect("resync SET");
    assert_eq!(reply, Resp::Simple("OK".into()), "resync {key}");
}

fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn command_exists(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| Path::new(&dir).join(name).is_file())
    })
}

#[test]
fn keel_answers_as_redis_server_over_a_random_sequence() {
    assert!(
        command_exists("redis-server"),
        "redis-server is not installed: the differential test needs it; install it with \
         `apt-get install -y redis-server` (scripts/test.sh does)"
    );
    let redis_server = RedisServer::start();
    // Replies, not durability, are compared: a write need not wait for its
    // fdatasync (the redis-server keeps nothing on disk either).
    let keel_server = Server::start(ServerOptions {
        fsync: "interval-ms=10".into(),
        ..ServerOptions::default()
    });
    let mut redis = RawConnection::connect(redis_server.port).expect("connect to redis-server");
    let mut keel = RawConnection::connect(keel_server.port()).expect("connect to keel");
    let seed = std::env::var("KEEL_TEST_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(SEED);
    let mut generator = Generator {
        rng: SplitMix64::new(seed),
        start_unix_s: unix_now_s(),
    };
    let started = Instant::now();
    let mut mismatches = Vec::new();
    let mut float_excused = 0;
    let mut errors = 0;
    for index in 0..COMMANDS {
        if index == COMMANDS / 2 {
            // The second half in RESP3: nulls, maps and doubles are typed.
            for connection in [&mut redis, &mut keel] {
                let hello = send(connection, &["HELLO".into(), "3".into()]);
                assert!(matches!(hello, Resp::Map(_)), "HELLO 3: {hello:?}");
            }
        }
        let (words, compare) = generator.command();
        let redis_reply = send(&mut redis, &words);
        let keel_reply = send(&mut keel, &words);
        errors += usize::from(matches!(redis_reply, Resp::Error(_)));
        if agree(&redis_reply, &keel_reply, compare) {
            continue;
        }
        if compare == Compare::Float && float_precision_only(&redis_reply, &keel_reply) {
            float_excused += 1;
            resync(&mut redis, &mut keel, &words[1]);
            continue;
        }
        mismatches.push(format!(
            "#{index} {words:?}\n  redis-server: {redis_reply:?}\n  keel:         {keel_reply:?}"
        ));
    }
    // The final state, key by key.
    for key in KEYS {
        for (name, compare) in [
            ("GET", Compare::Exact),
            ("PTTL", Compare::Clock { unit_ms: 1 }),
        ] {
            let words = vec![name.to_owned(), (*key).to_owned()];
            let (redis_reply, keel_reply) = (send(&mut redis, &words), send(&mut keel, &words));
            if !agree(&redis_reply, &keel_reply, compare) {
                mismatches.push(format!(
                    "final {words:?}\n  redis-server: {redis_reply:?}\n  keel:         {keel_reply:?}"
                ));
            }
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "seed {seed}: {COMMANDS} commands ({errors} answered with an error) in {elapsed:?}: {} \
         mismatches, {float_excused} INCRBYFLOAT replies excused as precision only",
        mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} of {COMMANDS} replies differ (seed {seed}); the first:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(MISMATCHES_SHOWN_MAX)].join("\n")
    );
    assert!(
        elapsed < Duration::from_millis(RUN_DEADLINE_MS),
        "the run took {elapsed:?}, over {RUN_DEADLINE_MS} ms"
    );
}
