use super::table::COMMANDS;
use super::test_support::*;
use super::*;
use crate::keyspace::Keyspace;
use crate::resp::Protocol;

fn spec(name: &str) -> &'static CommandSpec {
    lookup(name.as_bytes()).unwrap()
}

fn command(request: &[&str]) -> Reply {
    command_reply(&args(request))
}

#[test]
fn unknown_commands_quote_name_and_arguments_as_redis_7() {
    assert_eq!(
        unknown_command(&args(&["foo", "a", "b"])),
        error("ERR unknown command 'foo', with args beginning with: 'a' 'b' ")
    );
    assert_eq!(
        unknown_command(&args(&["foo"])),
        error("ERR unknown command 'foo', with args beginning with: ")
    );
    assert_eq!(
        unknown_command(&args(&["x\r\ny", "a\nb"])),
        error("ERR unknown command 'x  y', with args beginning with: 'a b' ")
    );
    let long = "z".repeat(300);
    let Reply::Error(text) = unknown_command(&args(&[&long, &long, "next"])) else {
        panic!("an error reply");
    };
    let quoted = format!(
        "'{}', with args beginning with: '{}' ",
        "z".repeat(128),
        "z".repeat(128)
    );
    assert!(text.ends_with(&quoted), "{text}");
}

#[test]
fn unknown_subcommands_are_quoted_on_one_line() {
    assert_eq!(
        unknown_subcommand("OBJECT", b"no\r\npe"),
        error("ERR unknown subcommand 'no  pe'. Try OBJECT HELP.")
    );
    let long = vec![b'x'; 300];
    let Reply::Error(text) = unknown_subcommand("COMMAND", &long) else {
        panic!("an error");
    };
    assert!(text.contains(&format!(
        "'{}'",
        "x".repeat(UNKNOWN_COMMAND_QUOTE_BYTES_MAX)
    )));
}

#[test]
fn arity_is_exact_or_a_minimum() {
    assert_eq!(check_arity(spec("get"), 2), Ok(()));
    assert_eq!(
        check_arity(spec("get"), 3),
        Err(error("ERR wrong number of arguments for 'get' command"))
    );
    assert_eq!(
        check_arity(spec("set"), 2),
        Err(error("ERR wrong number of arguments for 'set' command"))
    );
    assert_eq!(check_arity(spec("SET"), 9), Ok(()));
    assert_eq!(check_arity(spec("ping"), 1), Ok(()));
    assert_eq!(
        check_arity(spec("del"), 1),
        Err(error("ERR wrong number of arguments for 'del' command"))
    );
}

/// Arities and key ranges of the commands added for issue 11, as redis-server
/// 7.0.15's `COMMAND INFO` gives them (OBJECT's key range is Keel's: Redis
/// gives its subcommands theirs).
#[test]
fn new_commands_have_redis_arity_and_keys() {
    for (name, arity, first, last, step) in [
        ("setex", 4, 1, 1, 1),
        ("psetex", 4, 1, 1, 1),
        ("setbit", 4, 1, 1, 1),
        ("getbit", 3, 1, 1, 1),
        ("bitcount", -2, 1, 1, 1),
        ("bitpos", -3, 1, 1, 1),
        ("bitop", -4, 2, -1, 1),
        ("lcs", -3, 1, 2, 1),
        ("substr", 4, 1, 1, 1),
        ("copy", -3, 1, 2, 1),
        ("touch", -2, 1, -1, 1),
        ("randomkey", 1, 0, 0, 0),
        ("time", 1, 0, 0, 0),
        ("object", -2, 2, 2, 1),
    ] {
        let spec = spec(name);
        assert_eq!(spec.arity, arity, "{name}");
        assert_eq!(spec.keys, KeyRange { first, last, step }, "{name}");
    }
    let keys = |request: &[&str]| -> Vec<usize> {
        key_indexes(spec(request[0]), &args(request)).collect()
    };
    assert_eq!(keys(&["BITOP", "AND", "d", "a", "b"]), vec![2, 3, 4]);
    assert_eq!(keys(&["OBJECT", "ENCODING", "k"]), vec![2]);
    assert_eq!(
        keys(&["OBJECT", "HELP"]),
        Vec::<usize>::new(),
        "any shard answers"
    );
}

#[test]
fn key_indexes_follow_the_key_ranges() {
    let keys = |request: &[&str]| -> Vec<usize> {
        key_indexes(lookup(request[0].as_bytes()).unwrap(), &args(request)).collect()
    };
    assert_eq!(keys(&["GET", "k"]), vec![1]);
    assert_eq!(keys(&["SET", "k", "v", "EX", "5"]), vec![1]);
    assert_eq!(keys(&["DEL", "a", "b", "c"]), vec![1, 2, 3]);
    assert_eq!(keys(&["MSET", "a", "1", "b", "2", "c", "3"]), vec![1, 3, 5]);
    assert_eq!(keys(&["RENAME", "a", "b"]), vec![1, 2]);
    assert_eq!(keys(&["EXPIRE", "k", "10", "NX"]), vec![1]);
    assert_eq!(keys(&["PING"]), Vec::<usize>::new());
    assert_eq!(keys(&["KEYS", "*"]), Vec::<usize>::new());
    assert!(is_keyed(spec("mget")) && !is_keyed(spec("dbsize")));
}

#[test]
fn every_node_command_core_matches_is_in_the_table() {
    for name in [
        "auth",
        "ping",
        "echo",
        "select",
        "hello",
        "quit",
        "reset",
        "info",
        "config",
        "function",
        "command",
        "client",
        "dbsize",
        "keys",
        "scan",
        "flushdb",
        "flushall",
        "randomkey",
        "time",
    ] {
        let spec = spec(name);
        assert_eq!(spec.name, name);
        assert!(!spec.keyed, "{name}");
    }
}

#[test]
#[should_panic(expected = "node command")]
fn executing_a_node_command_on_a_shard_is_a_bug() {
    execute(
        &Keyspace::new(),
        &args(&["DBSIZE"]),
        START_UNIX_MS,
        &Limits::default(),
    );
}

#[test]
fn command_count_and_list_cover_the_table() {
    assert_eq!(command(&["COUNT"]), Reply::Integer(COMMANDS.len() as i64));
    assert_eq!(
        command(&["count", "x"]),
        error("ERR wrong number of arguments for 'command|count' command")
    );
    let Reply::Array(names) = command(&["LIST"]) else {
        panic!("an array")
    };
    assert_eq!(names.len(), COMMANDS.len());
    assert!(names.contains(&bulk("getex")));
    let Reply::Array(names) = command(&["LIST", "FILTERBY", "ACLCAT", "STRING"]) else {
        panic!("an array")
    };
    assert!(names.contains(&bulk("incrbyfloat")) && !names.contains(&bulk("del")));
    assert_eq!(
        command(&["LIST", "FILTERBY", "PATTERN", "getex"]),
        Reply::Array(vec![bulk("getex")])
    );
    assert_eq!(
        command(&["LIST", "FILTERBY", "MODULE", "m"]),
        Reply::Array(Vec::new())
    );
    assert_eq!(command(&["LIST", "FILTERBY"]), error("ERR syntax error"));
    let Reply::Array(all) = command(&[]) else {
        panic!("an array")
    };
    assert_eq!(all.len(), COMMANDS.len());
}

#[test]
fn command_info_has_redis_7_shape() {
    let simple = |text: &str| Reply::Simple(text.to_owned());
    let empty = || Reply::Array(Vec::new());
    let mset = Reply::Array(vec![
        bulk("mset"),
        Reply::Integer(-3),
        Reply::Array(vec![simple("write"), simple("denyoom")]),
        Reply::Integer(1),
        Reply::Integer(-1),
        Reply::Integer(2),
        Reply::Array(vec![simple("@write"), simple("@string"), simple("@slow")]),
        empty(),
        empty(),
        empty(),
    ]);
    assert_eq!(
        command(&["INFO", "MSET", "nope"]),
        Reply::Array(vec![mset, Reply::Null])
    );
    let Reply::Array(all) = command(&["info"]) else {
        panic!("an array")
    };
    assert_eq!(all.len(), COMMANDS.len());
}

#[test]
fn command_docs_is_a_map_of_bulk_string_maps() {
    let Reply::Map(entries) = command(&["DOCS", "get", "nope"]) else {
        panic!("a map")
    };
    assert_eq!(entries.len(), 1, "unknown names are left out");
    let (name, Reply::Map(fields)) = &entries[0] else {
        panic!("a map of fields")
    };
    assert_eq!(name, &bulk("get"));
    assert!(fields.contains(&(bulk("summary"), bulk("Returns the string value of a key."))));
    assert!(fields.contains(&(bulk("since"), bulk("1.0.0"))));
    assert!(fields.contains(&(bulk("group"), bulk("string"))));
    let Reply::Map(all) = command(&["DOCS"]) else {
        panic!("a map")
    };
    assert_eq!(all.len(), COMMANDS.len());
    // RESP2 clients (redis-cli) read the map flattened to an array.
    let mut wire = Vec::new();
    command(&["DOCS", "get"]).encode(Protocol::Resp2, &mut wire);
    assert!(
        wire.starts_with(b"*2\r\n$3\r\nget\r\n*8\r\n$7\r\nsummary\r\n"),
        "{}",
        String::from_utf8_lossy(&wire)
    );
}

#[test]
fn command_getkeys_help_and_errors() {
    assert_eq!(
        command(&["GETKEYS", "MSET", "a", "1", "b", "2"]),
        Reply::Array(vec![bulk("a"), bulk("b")])
    );
    assert_eq!(
        command(&["GETKEYS", "nope", "a"]),
        error("ERR Invalid command specified")
    );
    assert_eq!(
        command(&["GETKEYS", "GET", "a", "b"]),
        error("ERR Invalid number of arguments specified for command")
    );
    assert_eq!(
        command(&["GETKEYS", "PING", "a"]),
        error("ERR The command has no key arguments")
    );
    assert_eq!(
        command(&["GETKEYS", "GET"]),
        error("ERR Invalid number of arguments specified for command")
    );
    assert_eq!(
        command(&["GETKEYS"]),
        error("ERR wrong number of arguments for 'command|getkeys' command")
    );
    let Reply::Array(lines) = command(&["HELP"]) else {
        panic!("an array")
    };
    assert!(lines.len() > 5);
    assert_eq!(
        command(&["bogus"]),
        error("ERR unknown subcommand 'bogus'. Try COMMAND HELP.")
    );
}

#[test]
fn writes_refuse_keys_over_the_default_limit() {
    let mut h = Harness::new();
    let key = "k".repeat(70_000);
    let refused = error("ERR key of 70000 bytes exceeds max-key-bytes (65536)");
    assert_eq!(h.run(&["SET", &key, "v"]), read(refused.clone()));
    assert_eq!(h.run(&["DEL", "a", &key]), read(refused));
    assert_eq!(h.run(&["EXISTS", &key]), read(Reply::Integer(0)));
}
