use crate::command::test_support::*;
use crate::operation::Operation;
use crate::resp::Reply;

const T: u64 = START_UNIX_MS;
const SYNTAX: &str = "ERR syntax error";
const NOT_INTEGER: &str = "ERR value is not an integer or out of range";

fn expire_op(key: &str, at_unix_ms: u64) -> Operation {
    Operation::Expire {
        key: key.as_bytes().to_vec(),
        at_unix_ms,
    }
}

#[test]
fn del_counts_live_keys_once() {
    let mut h = Harness::new();
    h.put("a", "1", None);
    h.put("b", "2", None);
    h.put("gone", "3", Some(T));
    assert_eq!(h.run(&["DEL", "x", "gone"]), read(Reply::Integer(0)));
    assert_eq!(
        h.run(&["DEL", "a", "a", "gone", "b"]),
        write(Reply::Integer(2), delete(&["a", "b"]))
    );
    h.put("a", "1", None);
    assert_eq!(
        h.run(&["UNLINK", "a", "b"]),
        write(Reply::Integer(1), delete(&["a"]))
    );
}

#[test]
fn exists_counts_repeats_and_type_names_strings() {
    let mut h = Harness::new();
    h.put("a", "1", None);
    h.put("gone", "1", Some(T - 1));
    assert_eq!(
        h.run(&["EXISTS", "a", "a", "b", "gone"]),
        read(Reply::Integer(2))
    );
    assert_eq!(h.run(&["TYPE", "a"]), read(Reply::Simple("string".into())));
    assert_eq!(h.run(&["TYPE", "gone"]), read(Reply::Simple("none".into())));
}

#[test]
fn expire_family_computes_absolute_times() {
    let mut h = Harness::new();
    assert_eq!(
        h.run(&["EXPIRE", "k", "10"]),
        read(Reply::Integer(0)),
        "absent"
    );
    h.put("k", "v", None);
    assert_eq!(
        h.run(&["EXPIRE", "k", "10"]),
        write(Reply::Integer(1), expire_op("k", T + 10_000))
    );
    assert_eq!(
        h.run(&["PEXPIRE", "k", "1500"]),
        write(Reply::Integer(1), expire_op("k", T + 1500))
    );
    assert_eq!(
        h.run(&["EXPIREAT", "k", "1800000000"]),
        write(Reply::Integer(1), expire_op("k", 1_800_000_000_000))
    );
    assert_eq!(
        h.run(&["PEXPIREAT", "k", "1800000000001"]),
        write(Reply::Integer(1), expire_op("k", 1_800_000_000_001))
    );
    assert_eq!(
        h.reply(&["PEXPIRETIME", "k"]),
        Reply::Integer(1_800_000_000_001)
    );
    assert_eq!(h.reply(&["EXPIRETIME", "k"]), Reply::Integer(1_800_000_000));
}

#[test]
fn expire_at_or_before_now_deletes() {
    let mut h = Harness::new();
    h.put("k", "v", None);
    assert_eq!(
        h.run(&["EXPIRE", "k", "0"]),
        write(Reply::Integer(1), delete(&["k"]))
    );
    h.put("k", "v", None);
    assert_eq!(
        h.run(&["PEXPIRE", "k", "-5"]),
        write(Reply::Integer(1), delete(&["k"]))
    );
    h.put("k", "v", None);
    assert_eq!(
        h.run(&["PEXPIREAT", "k", &T.to_string()]),
        write(Reply::Integer(1), delete(&["k"]))
    );
    h.put("k", "v", None);
    assert_eq!(
        h.run(&["EXPIREAT", "k", "-1"]),
        write(Reply::Integer(1), delete(&["k"]))
    );
    assert_eq!(h.reply(&["EXISTS", "k"]), Reply::Integer(0));
}

#[test]
fn expire_refuses_bad_times_and_options() {
    let mut h = Harness::new();
    h.put("k", "v", None);
    assert_eq!(
        h.run(&["EXPIRE", "k", "x"]),
        read(error("ERR value is not an integer or out of range"))
    );
    assert_eq!(
        h.run(&["EXPIRE", "k", "9223372036854776"]),
        read(error("ERR invalid expire time in 'expire' command"))
    );
    assert_eq!(
        h.run(&["PEXPIRE", "k", "9223372036854775807"]),
        read(error("ERR invalid expire time in 'pexpire' command"))
    );
    assert_eq!(
        h.run(&["EXPIREAT", "k", "-9223372036854776"]),
        read(error("ERR invalid expire time in 'expireat' command"))
    );
    assert_eq!(
        h.run(&["EXPIRE", "k", "1", "YY"]),
        read(error("ERR Unsupported option YY"))
    );
    let nx_conflict = error("ERR NX and XX, GT or LT options at the same time are not compatible");
    for options in [&["NX", "XX"][..], &["nx", "gt"], &["LT", "NX"]] {
        let request: Vec<&str> = ["EXPIRE", "k", "1"]
            .iter()
            .chain(options)
            .copied()
            .collect();
        assert_eq!(h.run(&request), read(nx_conflict.clone()), "{options:?}");
    }
    assert_eq!(
        h.run(&["EXPIRE", "k", "1", "GT", "LT"]),
        read(error(
            "ERR GT and LT options at the same time are not compatible"
        ))
    );
}

/// EXPIRE key 100 with each option, on a key without expiry, with a later
/// expiry and with an earlier one: 1 when applied, 0 when refused.
#[test]
fn expire_condition_matrix() {
    let cases: [(&[&str], [i64; 3]); 6] = [
        (&[], [1, 1, 1]),
        (&["NX"], [1, 0, 0]),
        (&["XX"], [0, 1, 1]),
        (&["GT"], [0, 0, 1]),
        (&["LT"], [1, 1, 0]),
        (&["XX", "GT"], [0, 0, 1]),
    ];
    for (options, expected) in cases {
        for (current, want) in [None, Some(T + 200_000), Some(T + 50_000)]
            .into_iter()
            .zip(expected)
        {
            let mut h = Harness::new();
            h.put("k", "v", current);
            let request: Vec<&str> = ["EXPIRE", "k", "100"]
                .iter()
                .chain(options)
                .copied()
                .collect();
            let outcome = h.run(&request);
            assert_eq!(
                outcome.reply,
                Reply::Integer(want),
                "{options:?} on {current:?}"
            );
            let op = (want == 1).then(|| expire_op("k", T + 100_000));
            assert_eq!(outcome.op, op, "{options:?} on {current:?}");
        }
    }
}

#[test]
fn ttl_rounds_to_the_nearest_second() {
    let mut h = Harness::new();
    assert_eq!(h.run(&["TTL", "k"]), read(Reply::Integer(-2)));
    assert_eq!(h.run(&["PTTL", "k"]), read(Reply::Integer(-2)));
    assert_eq!(h.run(&["EXPIRETIME", "k"]), read(Reply::Integer(-2)));
    h.put("k", "v", None);
    assert_eq!(h.run(&["TTL", "k"]), read(Reply::Integer(-1)));
    assert_eq!(h.run(&["PEXPIRETIME", "k"]), read(Reply::Integer(-1)));
    h.put("k", "v", Some(T + 1499));
    assert_eq!(h.reply(&["TTL", "k"]), Reply::Integer(1));
    assert_eq!(h.reply(&["PTTL", "k"]), Reply::Integer(1499));
    h.put("k", "v", Some(T + 1500));
    assert_eq!(h.reply(&["TTL", "k"]), Reply::Integer(2));
    h.put("k", "v", Some(T + 499));
    assert_eq!(h.reply(&["TTL", "k"]), Reply::Integer(0));
    h.advance_ms(499);
    assert_eq!(h.reply(&["TTL", "k"]), Reply::Integer(-2), "expired");
}

#[test]
fn persist_removes_an_expiry_only_when_there_is_one() {
    let mut h = Harness::new();
    assert_eq!(h.run(&["PERSIST", "k"]), read(Reply::Integer(0)));
    h.put("k", "v", None);
    assert_eq!(h.run(&["PERSIST", "k"]), read(Reply::Integer(0)));
    h.put("k", "v", Some(T + 10));
    assert_eq!(
        h.run(&["PERSIST", "k"]),
        write(Reply::Integer(1), Operation::Persist { key: b"k".to_vec() })
    );
    assert_eq!(h.reply(&["TTL", "k"]), Reply::Integer(-1));
}

#[test]
fn rename_moves_value_and_expiry() {
    let mut h = Harness::new();
    assert_eq!(h.run(&["RENAME", "a", "b"]), read(error("ERR no such key")));
    assert_eq!(
        h.run(&["RENAMENX", "a", "b"]),
        read(error("ERR no such key"))
    );
    h.put("a", "v", Some(T + 5000));
    h.put("b", "old", None);
    let batch = Operation::Batch {
        ops: vec![delete(&["a"]), set("b", "v", Some(T + 5000))],
    };
    assert_eq!(h.run(&["RENAME", "a", "b"]), write(Reply::ok(), batch));
    assert_eq!(h.reply(&["PTTL", "b"]), Reply::Integer(5000));
    assert_eq!(h.reply(&["EXISTS", "a"]), Reply::Integer(0));
    assert_eq!(h.run(&["RENAME", "b", "b"]), read(Reply::ok()));
    assert_eq!(h.run(&["RENAMENX", "b", "b"]), read(Reply::Integer(0)));
    h.put("c", "x", None);
    assert_eq!(h.run(&["RENAMENX", "b", "c"]), read(Reply::Integer(0)));
    let batch = Operation::Batch {
        ops: vec![delete(&["b"]), set("d", "v", Some(T + 5000))],
    };
    assert_eq!(
        h.run(&["RENAMENX", "b", "d"]),
        write(Reply::Integer(1), batch)
    );
}

#[test]
fn copy_takes_value_and_expiry_and_database_zero_only() {
    let mut h = Harness::new();
    h.put("k", "v", Some(T + 5000));
    assert_eq!(
        h.run(&["COPY", "k", "k"]),
        read(error("ERR source and destination objects are the same"))
    );
    assert_eq!(h.run(&["COPY", "missing", "d"]), read(Reply::Integer(0)));
    assert_eq!(
        h.run(&["COPY", "k", "d"]),
        write(Reply::Integer(1), set("d", "v", Some(T + 5000)))
    );
    assert_eq!(h.run(&["COPY", "k", "d"]), read(Reply::Integer(0)));
    h.put("k", "w", None);
    assert_eq!(
        h.run(&["copy", "k", "d", "db", "0", "replace"]),
        write(Reply::Integer(1), set("d", "w", None))
    );
    assert_eq!(
        h.reply(&["COPY", "k", "d", "REPLACE", "DB", "0"]),
        Reply::Integer(1)
    );
    assert_eq!(h.reply(&["COPY", "k", "d", "DB"]), error(SYNTAX));
    assert_eq!(h.reply(&["COPY", "k", "d", "DB", "0", "x"]), error(SYNTAX));
    assert_eq!(
        h.reply(&["COPY", "k", "d", "DB", "1"]),
        error("ERR DB index is out of range")
    );
    assert_eq!(h.reply(&["COPY", "k", "d", "DB", "x"]), error(NOT_INTEGER));
    assert_eq!(
        h.reply(&["COPY", "k", "d", "DB", "99999999999"]),
        error("ERR value is out of range, value must between -2147483648 and 2147483647")
    );
}

#[test]
fn object_subcommands_answer_for_strings() {
    let mut h = Harness::new();
    h.put("n", "123", None);
    h.put("e", "0123", None);
    h.put("big", "12345678901234567890", None);
    h.put("short", &"x".repeat(44), None);
    h.put("long", &"x".repeat(45), None);
    for (key, encoding) in [
        ("n", "int"),
        ("e", "embstr"),
        ("big", "embstr"),
        ("short", "embstr"),
        ("long", "raw"),
    ] {
        assert_eq!(
            h.run(&["OBJECT", "ENCODING", key]),
            read(bulk(encoding)),
            "{key}"
        );
    }
    assert_eq!(h.reply(&["object", "refcount", "long"]), Reply::Integer(1));
    assert_eq!(h.reply(&["OBJECT", "ENCODING", "missing"]), Reply::Null);
    assert_eq!(h.reply(&["OBJECT", "FREQ", "missing"]), Reply::Null);
    assert!(matches!(
        h.reply(&["OBJECT", "FREQ", "n"]),
        Reply::Error(text) if text.starts_with("ERR An LFU maxmemory policy is not selected")
    ));
    assert!(matches!(
        h.reply(&["OBJECT", "IDLETIME", "n"]),
        Reply::Error(_)
    ));
    assert_eq!(
        h.reply(&["OBJECT", "foo"]),
        error("ERR unknown subcommand 'foo'. Try OBJECT HELP.")
    );
    assert_eq!(
        h.reply(&["OBJECT", "ENCODING"]),
        error("ERR wrong number of arguments for 'object|encoding' command")
    );
    assert_eq!(
        h.reply(&["OBJECT", "HELP", "x"]),
        error("ERR wrong number of arguments for 'object|help' command")
    );
    let Reply::Array(help) = h.reply(&["OBJECT", "HELP"]) else {
        panic!("HELP is an array");
    };
    assert_eq!(help.len(), 15);
}

#[test]
fn touch_counts_live_keys_as_named() {
    let mut h = Harness::new();
    h.put("a", "v", None);
    h.put("gone", "v", Some(T));
    assert_eq!(
        h.run(&["TOUCH", "a", "a", "gone", "missing"]),
        read(Reply::Integer(2))
    );
}
