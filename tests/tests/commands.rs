//! Each command's edge cases through a real client, against Redis 7's replies.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keel_tests::{error_text, Resp, Server, ServerOptions};
use redis::FromRedisValue;

/// How long a key set to expire in 1 ms may still be seen (lazy expiry).
const EXPIRY_DEADLINE_MS: u64 = 5_000;

struct Client(redis::Connection);

impl Client {
    fn new(server: &Server) -> Client {
        Client(server.connection())
    }

    fn query<T: FromRedisValue>(&mut self, args: &[&str]) -> T {
        redis::cmd(args[0])
            .arg(&args[1..])
            .query(&mut self.0)
            .unwrap_or_else(|error| panic!("{args:?}: {error}"))
    }

    fn ok(&mut self, args: &[&str]) {
        let reply: String = self.query(args);
        assert_eq!(reply, "OK", "{args:?}");
    }

    fn get(&mut self, key: &str) -> Option<String> {
        self.query(&["GET", key])
    }

    fn int(&mut self, args: &[&str]) -> i64 {
        self.query(args)
    }

    fn error(&mut self, args: &[&str]) -> String {
        let result: redis::RedisResult<redis::Value> =
            redis::cmd(args[0]).arg(&args[1..]).query(&mut self.0);
        error_text(&result.expect_err(&format!("{args:?} must fail")))
    }
}

fn server() -> (Server, Client) {
    let server = Server::start(ServerOptions::default());
    let client = Client::new(&server);
    (server, client)
}

fn now_unix_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";
const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

#[test]
fn set_nx_xx_get() {
    let (_server, mut c) = server();
    c.ok(&["SET", "k", "v1", "NX"]);
    assert_eq!(c.query::<Option<String>>(&["SET", "k", "v2", "NX"]), None);
    assert_eq!(c.get("k").as_deref(), Some("v1"));
    c.ok(&["SET", "k", "v3", "XX"]);
    assert_eq!(
        c.query::<Option<String>>(&["SET", "missing", "v", "XX"]),
        None
    );
    assert_eq!(c.int(&["EXISTS", "missing"]), 0);
    assert_eq!(
        c.query::<Option<String>>(&["SET", "k", "v4", "GET"])
            .as_deref(),
        Some("v3")
    );
    assert_eq!(c.get("k").as_deref(), Some("v4"));
    assert_eq!(
        c.query::<Option<String>>(&["SET", "fresh", "v", "GET"]),
        None
    );
    assert_eq!(c.get("fresh").as_deref(), Some("v"));
    assert_eq!(c.error(&["SET", "k", "v", "NX", "XX"]), SYNTAX);
    assert_eq!(c.error(&["SET", "k", "v", "BOGUS"]), SYNTAX);
}

#[test]
fn set_ex_px_keepttl() {
    let (_server, mut c) = server();
    c.ok(&["SET", "k", "v", "EX", "100"]);
    assert!((99..=100).contains(&c.int(&["TTL", "k"])));
    c.ok(&["SET", "k", "v", "PX", "100000"]);
    assert!((99_000..=100_000).contains(&c.int(&["PTTL", "k"])));
    c.ok(&["SET", "k", "v2", "KEEPTTL"]);
    assert!(
        (99_000..=100_000).contains(&c.int(&["PTTL", "k"])),
        "KEEPTTL keeps the TTL"
    );
    c.ok(&["SET", "k", "v3"]);
    assert_eq!(c.int(&["TTL", "k"]), -1, "a plain SET clears the TTL");
    assert_eq!(
        c.error(&["SET", "k", "v", "EX", "0"]),
        "ERR invalid expire time in 'set' command"
    );
    assert_eq!(
        c.error(&["SET", "k", "v", "PX", "-5"]),
        "ERR invalid expire time in 'set' command"
    );
    assert_eq!(c.error(&["SET", "k", "v", "EX", "ten"]), NOT_AN_INTEGER);
    assert_eq!(c.error(&["SET", "k", "v", "EX", "10", "PX", "100"]), SYNTAX);
    assert_eq!(c.error(&["SET", "k", "v", "KEEPTTL", "EX", "10"]), SYNTAX);
    assert_eq!(c.error(&["SET", "k", "v", "EX"]), SYNTAX);
}

#[test]
fn a_key_set_to_expire_is_gone_after_it_expires() {
    let (_server, mut c) = server();
    c.ok(&["SET", "short", "v", "PX", "1"]);
    let deadline = Instant::now() + Duration::from_millis(EXPIRY_DEADLINE_MS);
    while c.get("short").is_some() {
        assert!(
            Instant::now() < deadline,
            "the key outlived its TTL by {EXPIRY_DEADLINE_MS} ms"
        );
    }
    assert_eq!(c.int(&["EXISTS", "short"]), 0);
    assert_eq!(c.int(&["TTL", "short"]), -2);
}

#[test]
fn getset_getdel_getex() {
    let (_server, mut c) = server();
    assert_eq!(c.query::<Option<String>>(&["GETSET", "k", "v1"]), None);
    assert_eq!(
        c.query::<Option<String>>(&["GETSET", "k", "v2"]).as_deref(),
        Some("v1")
    );
    assert_eq!(
        c.query::<Option<String>>(&["GETDEL", "k"]).as_deref(),
        Some("v2")
    );
    assert_eq!(c.query::<Option<String>>(&["GETDEL", "k"]), None);
    assert_eq!(c.int(&["EXISTS", "k"]), 0);
    c.ok(&["SET", "k", "v"]);
    assert_eq!(
        c.query::<Option<String>>(&["GETEX", "k", "EX", "100"])
            .as_deref(),
        Some("v")
    );
    assert!((99..=100).contains(&c.int(&["TTL", "k"])));
    assert_eq!(
        c.query::<Option<String>>(&["GETEX", "k", "PX", "50000"])
            .as_deref(),
        Some("v")
    );
    assert!((49_000..=50_000).contains(&c.int(&["PTTL", "k"])));
    assert_eq!(
        c.query::<Option<String>>(&["GETEX", "k"]).as_deref(),
        Some("v")
    );
    assert!(
        c.int(&["TTL", "k"]) > 0,
        "GETEX without options leaves the TTL"
    );
    assert_eq!(
        c.query::<Option<String>>(&["GETEX", "k", "PERSIST"])
            .as_deref(),
        Some("v")
    );
    assert_eq!(c.int(&["TTL", "k"]), -1);
    assert_eq!(
        c.query::<Option<String>>(&["GETEX", "missing", "EX", "10"]),
        None
    );
    assert_eq!(c.error(&["GETEX", "k", "EX", "10", "PX", "10"]), SYNTAX);
    assert_eq!(
        c.error(&["GETEX", "k", "EX", "0"]),
        "ERR invalid expire time in 'getex' command"
    );
}

#[test]
fn del_unlink_exists_count_keys() {
    let (_server, mut c) = server();
    c.ok(&["MSET", "{t}a", "1", "{t}b", "2", "{t}c", "3"]);
    assert_eq!(
        c.int(&["EXISTS", "{t}a", "{t}a", "{t}missing"]),
        2,
        "EXISTS counts repeats"
    );
    assert_eq!(c.int(&["DEL", "{t}a", "{t}b", "{t}missing"]), 2);
    assert_eq!(c.int(&["DEL", "{t}a"]), 0);
    assert_eq!(c.int(&["UNLINK", "{t}c", "{t}c"]), 1);
    assert_eq!(c.int(&["EXISTS", "{t}a", "{t}b", "{t}c"]), 0);
    c.ok(&["SET", "single", "v"]);
    assert_eq!(c.int(&["DEL", "single"]), 1);
}

#[test]
fn incr_family_and_overflow() {
    let (_server, mut c) = server();
    assert_eq!(c.int(&["INCR", "n"]), 1);
    assert_eq!(c.int(&["INCRBY", "n", "10"]), 11);
    assert_eq!(c.int(&["DECR", "n"]), 10);
    assert_eq!(c.int(&["DECRBY", "n", "15"]), -5);
    assert_eq!(c.int(&["INCRBY", "n", "-5"]), -10);
    assert_eq!(c.get("n").as_deref(), Some("-10"));
    c.ok(&["SET", "n", "9223372036854775807"]);
    assert_eq!(
        c.error(&["INCR", "n"]),
        "ERR increment or decrement would overflow"
    );
    c.ok(&["SET", "n", "-9223372036854775808"]);
    assert_eq!(
        c.error(&["DECR", "n"]),
        "ERR increment or decrement would overflow"
    );
    assert_eq!(
        c.error(&["INCRBY", "n", "-1"]),
        "ERR increment or decrement would overflow"
    );
    assert_eq!(
        c.get("n").as_deref(),
        Some("-9223372036854775808"),
        "a failed INCR changes nothing"
    );
    for bad in ["abc", "1.5", " 1", "1 ", "", "99999999999999999999"] {
        c.ok(&["SET", "s", bad]);
        assert_eq!(c.error(&["INCR", "s"]), NOT_AN_INTEGER, "{bad:?}");
    }
    assert_eq!(c.error(&["INCRBY", "n", "x"]), NOT_AN_INTEGER);
    c.ok(&["SET", "ttl", "1", "EX", "100"]);
    assert_eq!(c.int(&["INCR", "ttl"]), 2);
    assert!(c.int(&["TTL", "ttl"]) > 0, "INCR keeps the TTL");
}

#[test]
fn incrbyfloat() {
    let (_server, mut c) = server();
    c.ok(&["SET", "f", "10.50"]);
    assert_eq!(c.query::<String>(&["INCRBYFLOAT", "f", "0.1"]), "10.6");
    assert_eq!(c.query::<String>(&["INCRBYFLOAT", "f", "-5"]), "5.6");
    c.ok(&["SET", "f", "5.0e3"]);
    assert_eq!(c.query::<String>(&["INCRBYFLOAT", "f", "2.0e2"]), "5200");
    assert_eq!(c.query::<String>(&["INCRBYFLOAT", "new", "3"]), "3");
    assert_eq!(
        c.error(&["INCRBYFLOAT", "f", "abc"]),
        "ERR value is not a valid float"
    );
    c.ok(&["SET", "s", "abc"]);
    assert_eq!(
        c.error(&["INCRBYFLOAT", "s", "1"]),
        "ERR value is not a valid float"
    );
}

#[test]
fn append_strlen_getrange_setrange() {
    let (_server, mut c) = server();
    assert_eq!(c.int(&["APPEND", "k", "Hello"]), 5);
    assert_eq!(c.int(&["APPEND", "k", " World"]), 11);
    assert_eq!(c.get("k").as_deref(), Some("Hello World"));
    assert_eq!(c.int(&["STRLEN", "k"]), 11);
    assert_eq!(c.int(&["STRLEN", "missing"]), 0);
    for (start, end, expected) in [
        ("0", "4", "Hello"),
        ("-5", "-1", "World"),
        ("0", "-1", "Hello World"),
        ("5", "2", ""),
        ("100", "200", ""),
        ("-100", "2", "Hel"),
    ] {
        assert_eq!(
            c.query::<String>(&["GETRANGE", "k", start, end]),
            expected,
            "{start}..{end}"
        );
    }
    assert_eq!(c.query::<String>(&["GETRANGE", "missing", "0", "-1"]), "");
    assert_eq!(c.int(&["SETRANGE", "k", "6", "Redis"]), 11);
    assert_eq!(c.get("k").as_deref(), Some("Hello Redis"));
    assert_eq!(c.int(&["SETRANGE", "pad", "5", "x"]), 6);
    assert_eq!(c.query::<Vec<u8>>(&["GET", "pad"]), b"\0\0\0\0\0x");
    assert_eq!(
        c.error(&["SETRANGE", "k", "-1", "x"]),
        "ERR offset is out of range"
    );
    assert_eq!(c.int(&["SETRANGE", "missing", "0", ""]), 0);
    assert_eq!(
        c.int(&["EXISTS", "missing"]),
        0,
        "an empty SETRANGE creates nothing"
    );
}

#[test]
fn mget_mset_msetnx_on_one_hash_tag() {
    let (_server, mut c) = server();
    c.ok(&["MSET", "{u}a", "1", "{u}b", "2"]);
    assert_eq!(
        c.query::<Vec<Option<String>>>(&["MGET", "{u}a", "{u}b", "{u}c"]),
        [Some("1".into()), Some("2".into()), None]
    );
    assert_eq!(c.int(&["MSETNX", "{u}c", "3", "{u}a", "9"]), 0);
    assert_eq!(c.get("{u}c"), None, "MSETNX sets all or nothing");
    assert_eq!(c.get("{u}a").as_deref(), Some("1"));
    assert_eq!(c.int(&["MSETNX", "{u}c", "3", "{u}d", "4"]), 1);
    assert_eq!(
        c.query::<Vec<String>>(&["MGET", "{u}c", "{u}d"]),
        ["3", "4"]
    );
    assert_eq!(
        c.error(&["MSET", "{u}a", "1", "{u}b"]),
        "ERR wrong number of arguments for 'mset' command"
    );
}

#[test]
fn multi_key_commands_across_slots_are_refused() {
    let (_server, mut c) = server();
    assert_eq!(c.error(&["MSET", "a", "1", "b", "2"]), CROSSSLOT);
    assert_eq!(c.error(&["MSETNX", "a", "1", "b", "2"]), CROSSSLOT);
    assert_eq!(c.error(&["MGET", "a", "b"]), CROSSSLOT);
    assert_eq!(c.error(&["DEL", "a", "b"]), CROSSSLOT);
    assert_eq!(c.error(&["RENAME", "a", "b"]), CROSSSLOT);
    assert_eq!(c.error(&["EXISTS", "a", "b"]), CROSSSLOT);
    assert_eq!(
        c.int(&["EXISTS", "a"]) + c.int(&["EXISTS", "b"]),
        0,
        "nothing was written"
    );
}

#[test]
fn expire_nx_xx_gt_lt() {
    let (_server, mut c) = server();
    assert_eq!(c.int(&["EXPIRE", "missing", "10"]), 0);
    c.ok(&["SET", "k", "v"]);
    assert_eq!(c.int(&["EXPIRE", "k", "10", "XX"]), 0, "XX needs a TTL");
    assert_eq!(
        c.int(&["EXPIRE", "k", "10", "GT"]),
        0,
        "no TTL is infinite, so nothing is greater"
    );
    assert_eq!(c.int(&["EXPIRE", "k", "100", "NX"]), 1);
    assert_eq!(c.int(&["EXPIRE", "k", "50", "NX"]), 0);
    assert_eq!(c.int(&["EXPIRE", "k", "200", "XX"]), 1);
    assert_eq!(c.int(&["EXPIRE", "k", "100", "GT"]), 0);
    assert_eq!(c.int(&["EXPIRE", "k", "300", "GT"]), 1);
    assert_eq!(c.int(&["EXPIRE", "k", "400", "LT"]), 0);
    assert_eq!(c.int(&["EXPIRE", "k", "50", "LT"]), 1);
    assert!((49..=50).contains(&c.int(&["TTL", "k"])));
    c.ok(&["SET", "p", "v"]);
    assert_eq!(
        c.int(&["EXPIRE", "p", "10", "LT"]),
        1,
        "any TTL is less than none"
    );
    assert_eq!(
        c.error(&["EXPIRE", "k", "10", "NX", "XX"]),
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(
        c.error(&["EXPIRE", "k", "10", "GT", "LT"]),
        "ERR GT and LT options at the same time are not compatible"
    );
    assert_eq!(c.error(&["EXPIRE", "k", "ten"]), NOT_AN_INTEGER);
    assert_eq!(
        c.error(&["EXPIRE", "k", "10", "SOON"]),
        "ERR Unsupported option SOON"
    );
    assert_eq!(c.int(&["PEXPIRE", "k", "100000"]), 1);
    assert!((99_000..=100_000).contains(&c.int(&["PTTL", "k"])));
    assert_eq!(c.int(&["EXPIRE", "k", "-1"]), 1, "a past time deletes");
    assert_eq!(c.int(&["EXISTS", "k"]), 0);
}

#[test]
fn ttl_pttl_expiretime_persist() {
    let (_server, mut c) = server();
    assert_eq!(c.int(&["TTL", "missing"]), -2);
    assert_eq!(c.int(&["PTTL", "missing"]), -2);
    assert_eq!(c.int(&["EXPIRETIME", "missing"]), -2);
    c.ok(&["SET", "k", "v"]);
    assert_eq!(c.int(&["TTL", "k"]), -1);
    assert_eq!(c.int(&["PTTL", "k"]), -1);
    assert_eq!(c.int(&["EXPIRETIME", "k"]), -1);
    assert_eq!(c.int(&["PERSIST", "k"]), 0);
    let at = now_unix_s() + 1_000;
    assert_eq!(c.int(&["EXPIREAT", "k", &at.to_string()]), 1);
    assert_eq!(c.int(&["EXPIRETIME", "k"]), at);
    assert_eq!(c.int(&["PEXPIRETIME", "k"]), at * 1000);
    assert_eq!(
        c.int(&["PEXPIREAT", "k", &(at * 1000 + 500).to_string()]),
        1
    );
    assert_eq!(c.int(&["PEXPIRETIME", "k"]), at * 1000 + 500);
    assert_eq!(c.int(&["PERSIST", "k"]), 1);
    assert_eq!(c.int(&["TTL", "k"]), -1);
    assert_eq!(c.int(&["PERSIST", "missing"]), 0);
}

#[test]
fn type_of_strings_and_missing_keys() {
    let (_server, mut c) = server();
    c.ok(&["SET", "k", "v"]);
    assert_eq!(c.query::<String>(&["TYPE", "k"]), "string");
    assert_eq!(c.query::<String>(&["TYPE", "missing"]), "none");
}

#[test]
fn rename_and_renamenx() {
    let (_server, mut c) = server();
    c.ok(&["SET", "{r}a", "1", "EX", "100"]);
    c.ok(&["RENAME", "{r}a", "{r}b"]);
    assert_eq!(c.int(&["EXISTS", "{r}a"]), 0);
    assert_eq!(c.get("{r}b").as_deref(), Some("1"));
    assert!(c.int(&["TTL", "{r}b"]) > 0, "RENAME moves the TTL along");
    assert_eq!(
        c.error(&["RENAME", "{r}missing", "{r}x"]),
        "ERR no such key"
    );
    assert_eq!(
        c.error(&["RENAMENX", "{r}missing", "{r}x"]),
        "ERR no such key"
    );
    assert_eq!(c.int(&["RENAMENX", "{r}b", "{r}c"]), 1);
    c.ok(&["SET", "{r}d", "4"]);
    assert_eq!(c.int(&["RENAMENX", "{r}c", "{r}d"]), 0);
    assert_eq!(c.get("{r}d").as_deref(), Some("4"));
    c.ok(&["RENAME", "{r}c", "{r}d"]);
    assert_eq!(c.get("{r}d").as_deref(), Some("1"), "RENAME overwrites");
    c.ok(&["RENAME", "{r}d", "{r}d"]);
    assert_eq!(c.get("{r}d").as_deref(), Some("1"));
}

#[test]
fn keys_matches_glob_patterns_across_shards() {
    let (_server, mut c) = server();
    for key in ["hello", "hallo", "hxllo", "heeello", "user:1", "user:2"] {
        c.ok(&["SET", key, "v"]);
    }
    let mut keys = |pattern: &str| {
        let mut keys: Vec<String> = c.query(&["KEYS", pattern]);
        keys.sort();
        keys
    };
    assert_eq!(keys("user:*"), ["user:1", "user:2"]);
    assert_eq!(keys("h[ae]llo"), ["hallo", "hello"]);
    assert_eq!(keys("h?llo"), ["hallo", "hello", "hxllo"]);
    assert_eq!(keys("*").len(), 6);
    assert!(keys("nothing*").is_empty());
}

#[test]
fn scan_visits_every_key_across_shards() {
    let (_server, mut c) = server();
    let expected: HashSet<String> = (0..300).map(|index| format!("scan:{index}")).collect();
    for key in &expected {
        c.ok(&["SET", key, "v"]);
    }
    c.ok(&["SET", "other", "v"]);
    let scan_all = |c: &mut Client, extra: &[&str]| {
        let mut seen = Vec::new();
        let mut cursor = "0".to_string();
        for _ in 0..10_000 {
            let mut args = vec!["SCAN", &cursor];
            args.extend_from_slice(extra);
            let (next, keys): (String, Vec<String>) = c.query(&args);
            seen.extend(keys);
            cursor = next;
            if cursor == "0" {
                return seen;
            }
        }
        panic!("SCAN did not finish");
    };
    let seen = scan_all(&mut c, &["COUNT", "7"]);
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert!(seen.len() >= 301);
    assert_eq!(unique.len(), 301, "every key at least once");
    let matched: HashSet<String> = scan_all(&mut c, &["MATCH", "scan:*", "COUNT", "50"])
        .into_iter()
        .collect();
    assert_eq!(matched, expected);
    assert_eq!(c.error(&["SCAN", "notanumber"]), "ERR invalid cursor");
}

#[test]
fn dbsize_and_flushall_survive_a_restart() {
    let (mut server, mut c) = server();
    assert_eq!(c.int(&["DBSIZE"]), 0);
    for index in 0..10 {
        c.ok(&["SET", &format!("key:{index}"), "v"]);
    }
    assert_eq!(c.int(&["DBSIZE"]), 10);
    c.ok(&["FLUSHALL"]);
    assert_eq!(c.int(&["DBSIZE"]), 0);
    c.ok(&["SET", "after", "v"]);
    server.restart();
    let mut c = Client::new(&server);
    assert_eq!(c.int(&["DBSIZE"]), 1, "the FLUSHALL is durable");
    assert_eq!(c.get("after").as_deref(), Some("v"));
}

#[test]
fn ping_echo_select() {
    let (_server, mut c) = server();
    assert_eq!(c.query::<String>(&["PING"]), "PONG");
    assert_eq!(c.query::<String>(&["PING", "hi"]), "hi");
    assert_eq!(
        c.error(&["PING", "a", "b"]),
        "ERR wrong number of arguments for 'ping' command"
    );
    assert_eq!(c.query::<String>(&["ECHO", "hello world"]), "hello world");
    c.ok(&["SELECT", "0"]);
    assert!(c.error(&["SELECT", "1"]).starts_with("ERR "));
    assert_eq!(
        c.error(&["ECHO"]),
        "ERR wrong number of arguments for 'echo' command"
    );
}

#[test]
fn hello_3_switches_to_resp3() {
    let server = Server::start(ServerOptions::default());
    let mut raw = server.raw();
    assert_eq!(raw.command(&[b"GET", b"missing"]).expect("GET"), Resp::Null);
    let Resp::Map(pairs) = raw.command(&[b"HELLO", b"3"]).expect("HELLO 3") else {
        panic!("HELLO 3 replies with a map");
    };
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(key, _)| key.text().as_deref() == Some(name))
            .map(|(_, value)| value.clone())
    };
    assert_eq!(field("proto"), Some(Resp::Integer(3)));
    assert!(
        field("server").is_some() && field("version").is_some() && field("id").is_some(),
        "{pairs:?}"
    );
    raw.send(&keel_tests::encode_command(&[b"GET", b"missing"]))
        .expect("send");
    assert_eq!(raw.read_line().expect("a reply"), "_", "a RESP3 null");
    let reply = raw.command(&[b"HELLO", b"4"]).expect("HELLO 4");
    assert_eq!(
        reply,
        Resp::Error("NOPROTO unsupported protocol version".into())
    );
    let Resp::Array(_) = raw.command(&[b"HELLO", b"2"]).expect("HELLO 2") else {
        panic!("HELLO 2 replies with a flat array");
    };
    raw.send(&keel_tests::encode_command(&[b"GET", b"missing"]))
        .expect("send");
    assert_eq!(
        raw.read_line().expect("a reply"),
        "$-1",
        "a RESP2 null again"
    );
}

#[test]
fn client_setname_getname_id_list() {
    let (_server, mut c) = server();
    assert_eq!(c.query::<Option<String>>(&["CLIENT", "GETNAME"]), None);
    c.ok(&["CLIENT", "SETNAME", "tester"]);
    assert_eq!(
        c.query::<Option<String>>(&["CLIENT", "GETNAME"]).as_deref(),
        Some("tester")
    );
    let id = c.int(&["CLIENT", "ID"]);
    assert!(id > 0);
    let list: String = c.query(&["CLIENT", "LIST"]);
    let line = list
        .lines()
        .find(|line| line.contains(&format!("id={id} ")))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(line.contains("name=tester"), "{line}");
    assert_eq!(
        c.error(&["CLIENT", "SETNAME", "with space"]),
        "ERR Client names cannot contain spaces, newlines or special characters."
    );
}

#[test]
fn config_get_command_count_and_docs() {
    let (_server, mut c) = server();
    assert_eq!(
        c.query::<Vec<String>>(&["CONFIG", "GET", "maxclients"]),
        ["maxclients", "10000"]
    );
    assert!(c.int(&["COMMAND", "COUNT"]) > 40);
    let docs: redis::Value = c.query(&["COMMAND", "DOCS", "GET"]);
    let redis::Value::Array(items) = docs else {
        panic!("COMMAND DOCS is an array in RESP2: {docs:?}");
    };
    assert_eq!(
        items.first(),
        Some(&redis::Value::BulkString(b"get".to_vec())),
        "{items:?}"
    );
    assert!(
        matches!(items.get(1), Some(redis::Value::Array(doc)) if !doc.is_empty()),
        "{items:?}"
    );
}

#[test]
fn info_has_the_standard_sections() {
    let (_server, mut c) = server();
    c.ok(&["SET", "k", "v"]);
    let info: String = c.query(&["INFO"]);
    for section in [
        "# Server",
        "# Clients",
        "# Persistence",
        "# Stats",
        "# Replication",
        "# Cluster",
        "# Keyspace",
    ] {
        assert!(info.contains(section), "{section}: {info}");
    }
    assert!(info.contains("db0:keys=1"), "{info}");
    let server: String = c.query(&["INFO", "server"]);
    assert!(
        server.contains("# Server") && !server.contains("# Clients"),
        "{server}"
    );
}

#[test]
fn wrong_arity_and_unknown_commands() {
    let (server, mut c) = server();
    for (args, name) in [
        (&["GET"][..], "get"),
        (&["SET", "k"], "set"),
        (&["GET", "a", "b"], "get"),
        (&["INCR"], "incr"),
        (&["EXPIRE", "k"], "expire"),
    ] {
        assert_eq!(
            c.error(args),
            format!("ERR wrong number of arguments for '{name}' command"),
            "{args:?}"
        );
    }
    assert_eq!(c.get("k"), None, "a refused SET writes nothing");
    let mut raw = server.raw();
    assert_eq!(
        raw.command(&[b"FOO", b"bar", b"baz"]).expect("a reply"),
        Resp::Error("ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' ".into())
    );
    assert_eq!(
        raw.command(&[b"PING"]).expect("still serving"),
        Resp::Simple("PONG".into())
    );
}

#[test]
fn setex_and_psetex_set_a_value_with_an_expiry() {
    let (_server, mut c) = server();
    c.ok(&["SETEX", "k", "100", "v"]);
    assert_eq!(c.get("k").as_deref(), Some("v"));
    let ttl = c.int(&["TTL", "k"]);
    assert!((99..=100).contains(&ttl), "TTL {ttl}");
    c.ok(&["PSETEX", "k", "100000", "w"]);
    let pttl = c.int(&["PTTL", "k"]);
    assert!((90_000..=100_000).contains(&pttl), "PTTL {pttl}");
    assert_eq!(
        c.error(&["SETEX", "k", "0", "v"]),
        "ERR invalid expire time in 'setex' command"
    );
    assert_eq!(
        c.error(&["PSETEX", "k", "-1", "v"]),
        "ERR invalid expire time in 'psetex' command"
    );
    assert_eq!(c.error(&["SETEX", "k", "x", "v"]), NOT_AN_INTEGER);
    assert_eq!(
        c.get("k").as_deref(),
        Some("w"),
        "refused writes change nothing"
    );
    c.ok(&["PSETEX", "short", "1", "v"]);
    let deadline = Instant::now() + Duration::from_millis(EXPIRY_DEADLINE_MS);
    while c.get("short").is_some() {
        assert!(Instant::now() < deadline, "PSETEX 1 ms never expired");
    }
}

#[test]
fn bit_commands() {
    let (_server, mut c) = server();
    assert_eq!(c.int(&["SETBIT", "b", "7", "1"]), 0);
    assert_eq!(c.int(&["SETBIT", "b", "7", "0"]), 1);
    assert_eq!(c.int(&["SETBIT", "b", "9", "1"]), 0);
    assert_eq!(c.int(&["GETBIT", "b", "9"]), 1);
    assert_eq!(c.int(&["GETBIT", "b", "1000"]), 0);
    assert_eq!(c.int(&["STRLEN", "b"]), 2);
    assert_eq!(
        c.error(&["SETBIT", "b", "-1", "1"]),
        "ERR bit offset is not an integer or out of range"
    );
    assert_eq!(
        c.error(&["SETBIT", "b", "1", "2"]),
        "ERR bit is not an integer or out of range"
    );
    c.ok(&["SET", "s", "foobar"]);
    assert_eq!(c.int(&["BITCOUNT", "s"]), 26);
    assert_eq!(c.int(&["BITCOUNT", "s", "1", "1"]), 6);
    assert_eq!(c.int(&["BITCOUNT", "s", "5", "30", "BIT"]), 17);
    assert_eq!(c.error(&["BITCOUNT", "s", "0"]), SYNTAX);
    assert_eq!(c.int(&["BITPOS", "s", "1", "2", "-1", "BIT"]), 2);
    assert_eq!(c.int(&["BITPOS", "missing", "0"]), 0);
    assert_eq!(
        c.error(&["BITPOS", "s", "2"]),
        "ERR The bit argument must be 1 or 0."
    );
    c.ok(&["SET", "{x}a", "abc"]);
    c.ok(&["SET", "{x}b", "x"]);
    assert_eq!(c.int(&["BITOP", "OR", "{x}d", "{x}a", "{x}b"]), 3);
    assert_eq!(c.get("{x}d").as_deref(), Some("ybc"));
    assert_eq!(c.int(&["BITOP", "AND", "{x}d", "{x}m1", "{x}m2"]), 0);
    assert_eq!(c.int(&["EXISTS", "{x}d"]), 0, "an empty result deletes");
    assert_eq!(
        c.error(&["BITOP", "NOT", "{x}d", "{x}a", "{x}b"]),
        "ERR BITOP NOT must be called with a single source key."
    );
    assert_eq!(c.error(&["BITOP", "OR", "d", "a", "b"]), CROSSSLOT);
}

#[test]
fn lcs_and_substr() {
    let (_server, mut c) = server();
    c.ok(&["MSET", "{l}1", "ohmytext", "{l}2", "mynewtext"]);
    assert_eq!(
        c.query::<String>(&["LCS", "{l}1", "{l}2"]),
        "mytext".to_owned()
    );
    assert_eq!(c.int(&["LCS", "{l}1", "{l}2", "LEN"]), 6);
    let idx: redis::Value = c.query(&["LCS", "{l}1", "{l}2", "IDX", "MINMATCHLEN", "4"]);
    let redis::Value::Array(items) = idx else {
        panic!("IDX is a flat map in RESP2: {idx:?}");
    };
    assert_eq!(items.len(), 4);
    assert_eq!(items[3], redis::Value::Int(6));
    assert_eq!(c.error(&["LCS", "a", "b"]), CROSSSLOT);
    assert_eq!(
        c.query::<String>(&["SUBSTR", "{l}1", "2", "3"]),
        "my".to_owned()
    );
}

#[test]
fn copy_touch_object() {
    let (_server, mut c) = server();
    c.ok(&["SET", "{c}src", "12345", "EX", "100"]);
    assert_eq!(c.int(&["COPY", "{c}src", "{c}dst"]), 1);
    assert_eq!(c.get("{c}dst").as_deref(), Some("12345"));
    assert!(c.int(&["TTL", "{c}dst"]) > 0, "COPY takes the expiry along");
    assert_eq!(c.int(&["COPY", "{c}src", "{c}dst"]), 0);
    assert_eq!(
        c.int(&["COPY", "{c}src", "{c}dst", "DB", "0", "REPLACE"]),
        1
    );
    assert_eq!(
        c.error(&["COPY", "{c}src", "{c}dst", "DB", "1"]),
        "ERR DB index is out of range"
    );
    assert_eq!(c.error(&["COPY", "a", "b"]), CROSSSLOT);
    assert_eq!(c.int(&["TOUCH", "{c}src", "{c}dst", "{c}none"]), 2);
    assert_eq!(
        c.query::<String>(&["OBJECT", "ENCODING", "{c}src"]),
        "int".to_owned()
    );
    c.ok(&["SET", "long", &"x".repeat(45)]);
    assert_eq!(
        c.query::<String>(&["OBJECT", "ENCODING", "long"]),
        "raw".to_owned()
    );
    assert_eq!(c.int(&["OBJECT", "REFCOUNT", "long"]), 1);
    assert_eq!(
        c.query::<Option<String>>(&["OBJECT", "ENCODING", "missing"]),
        None
    );
    let help: Vec<String> = c.query(&["OBJECT", "HELP"]);
    assert_eq!(help.len(), 15, "OBJECT HELP names no key: {help:?}");
    assert_eq!(
        c.error(&["OBJECT", "ENCODING"]),
        "ERR wrong number of arguments for 'object|encoding' command"
    );
    assert_eq!(
        c.error(&["OBJECT", "nope"]),
        "ERR unknown subcommand 'nope'. Try OBJECT HELP."
    );
}

#[test]
fn randomkey_names_live_keys_of_every_shard() {
    let (_server, mut c) = server();
    assert_eq!(c.query::<Option<String>>(&["RANDOMKEY"]), None);
    let keys: HashSet<String> = (0..20).map(|index| format!("r:{index}")).collect();
    for key in &keys {
        c.ok(&["SET", key, "v"]);
    }
    c.ok(&["SET", "gone", "v", "PX", "1"]);
    let mut seen = HashSet::new();
    for _ in 0..2_000 {
        let key: Option<String> = c.query(&["RANDOMKEY"]);
        let key = key.expect("keys exist");
        if key != "gone" {
            assert!(keys.contains(&key), "{key}");
        }
        seen.insert(key);
        if seen.len() >= keys.len() {
            break;
        }
    }
    assert!(
        keys.is_subset(&seen),
        "2,000 draws of 20 keys named only {} of them",
        seen.len()
    );
}

#[test]
fn time_is_the_servers_clock() {
    let (_server, mut c) = server();
    let before = now_unix_s();
    let (seconds, microseconds): (String, String) = c.query(&["TIME"]);
    let after = now_unix_s();
    let seconds: i64 = seconds.parse().expect("seconds");
    let microseconds: i64 = microseconds.parse().expect("microseconds");
    assert!((before..=after).contains(&seconds), "{seconds}");
    assert!((0..1_000_000).contains(&microseconds), "{microseconds}");
    assert_eq!(
        c.error(&["TIME", "x"]),
        "ERR wrong number of arguments for 'time' command"
    );
}
