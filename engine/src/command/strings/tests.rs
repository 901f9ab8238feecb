use crate::command::test_support::*;
use crate::operation::Operation;
use crate::resp::Reply;

const T: u64 = START_UNIX_MS;
const SYNTAX: &str = "ERR syntax error";
const NOT_INTEGER: &str = "ERR value is not an integer or out of range";

#[test]
fn get_reads_live_values_only() {
    let mut h = Harness::new();
    assert_eq!(h.run(&["GET", "k"]), read(Reply::Null));
    h.put("k", "v", None);
    assert_eq!(h.run(&["get", "k"]), read(bulk("v")));
    h.put("k", "v", Some(T));
    assert_eq!(h.run(&["GET", "k"]), read(Reply::Null), "expired at now");
}

#[test]
fn set_plain_replaces_value_and_clears_expiry() {
    let mut h = Harness::new();
    h.put("k", "old", Some(T + 10_000));
    assert_eq!(
        h.run(&["SET", "k", "v"]),
        write(Reply::ok(), set("k", "v", None))
    );
    assert_eq!(h.reply(&["PTTL", "k"]), Reply::Integer(-1));
}

#[test]
fn set_nx_xx_and_get_combinations() {
    let mut h = Harness::new();
    assert_eq!(h.run(&["SET", "k", "a", "XX"]), read(Reply::Null));
    assert_eq!(h.run(&["SET", "k", "a", "XX", "GET"]), read(Reply::Null));
    assert_eq!(
        h.run(&["SET", "k", "a", "NX"]),
        write(Reply::ok(), set("k", "a", None))
    );
    assert_eq!(h.run(&["SET", "k", "b", "NX"]), read(Reply::Null));
    // Redis 7 allows NX with GET: the old value, and nothing set.
    assert_eq!(h.run(&["SET", "k", "b", "NX", "GET"]), read(bulk("a")));
    assert_eq!(
        h.run(&["SET", "k", "b", "XX", "GET"]),
        write(bulk("a"), set("k", "b", None))
    );
    assert_eq!(
        h.run(&["SET", "new", "c", "get"]),
        write(Reply::Null, set("new", "c", None))
    );
    assert_eq!(h.run(&["SET", "k", "b", "NX", "XX"]), read(error(SYNTAX)));
    assert_eq!(h.run(&["SET", "k", "b", "XX", "NX"]), read(error(SYNTAX)));
    assert_eq!(
        h.run(&["SET", "k", "b", "NX", "NX"]),
        read(Reply::Null),
        "repeating an option is allowed"
    );
    assert_eq!(h.run(&["SET", "k", "b", "bogus"]), read(error(SYNTAX)));
}

#[test]
fn set_expiry_options() {
    let mut h = Harness::new();
    assert_eq!(
        h.run(&["SET", "k", "v", "EX", "10"]),
        write(Reply::ok(), set("k", "v", Some(T + 10_000)))
    );
    assert_eq!(
        h.run(&["SET", "k", "v", "px", "1500"]),
        write(Reply::ok(), set("k", "v", Some(T + 1500)))
    );
    assert_eq!(
        h.run(&["SET", "k", "v", "EXAT", "1800000000"]),
        write(Reply::ok(), set("k", "v", Some(1_800_000_000_000)))
    );
    assert_eq!(
        h.run(&["SET", "k", "v", "PXAT", "1800000000123"]),
        write(Reply::ok(), set("k", "v", Some(1_800_000_000_123)))
    );
    assert_eq!(
        h.run(&["SET", "k", "v", "EX", "1", "EX", "2"]),
        write(Reply::ok(), set("k", "v", Some(T + 2000)))
    );
    for conflict in [
        &["EX", "1", "PX", "1"][..],
        &["EX", "1", "KEEPTTL"],
        &["KEEPTTL", "PXAT", "5"],
        &["EXAT", "1", "EX", "1"],
        &["EX"],
        &["PERSIST"],
    ] {
        let request: Vec<&str> = ["SET", "k", "v"].iter().chain(conflict).copied().collect();
        assert_eq!(h.run(&request), read(error(SYNTAX)), "{conflict:?}");
    }
}

#[test]
fn set_keepttl_keeps_the_current_expiry() {
    let mut h = Harness::new();
    h.put("k", "old", Some(T + 5000));
    assert_eq!(
        h.run(&["SET", "k", "v", "KEEPTTL"]),
        write(Reply::ok(), set("k", "v", Some(T + 5000)))
    );
    assert_eq!(
        h.run(&["SET", "absent", "v", "KEEPTTL"]),
        write(Reply::ok(), set("absent", "v", None))
    );
}

#[test]
fn set_refuses_invalid_expire_times() {
    let mut h = Harness::new();
    let invalid = error("ERR invalid expire time in 'set' command");
    assert_eq!(h.run(&["SET", "k", "v", "EX", "0"]), read(invalid.clone()));
    assert_eq!(h.run(&["SET", "k", "v", "EX", "-5"]), read(invalid.clone()));
    assert_eq!(h.run(&["SET", "k", "v", "PX", "0"]), read(invalid.clone()));
    assert_eq!(
        h.run(&["SET", "k", "v", "EX", "9223372036854775"]),
        read(invalid.clone()),
        "seconds to ms, then + now overflows"
    );
    assert_eq!(
        h.run(&["SET", "k", "v", "EX", "9223372036854776"]),
        read(invalid.clone()),
        "seconds to ms overflows"
    );
    assert_eq!(
        h.run(&["SET", "k", "v", "PX", "9223372036854775807"]),
        read(invalid.clone())
    );
    assert_eq!(
        h.run(&["SET", "k", "v", "EX", "ten"]),
        read(error(NOT_INTEGER))
    );
    assert_eq!(
        h.run(&["SET", "k", "v", "EX", "+1"]),
        read(error(NOT_INTEGER))
    );
    h.put("k", "v", None);
    assert_eq!(
        h.run(&["GETEX", "k", "PX", "0"]),
        read(error("ERR invalid expire time in 'getex' command"))
    );
    assert_eq!(
        h.run(&["GETEX", "missing", "PX", "0"]),
        read(Reply::Null),
        "an absent key answers before the time is read, as in Redis"
    );
}

#[test]
fn set_with_an_expiry_in_the_past_deletes() {
    let mut h = Harness::new();
    assert_eq!(
        h.run(&["SET", "k", "v", "PXAT", "1"]),
        read(Reply::ok()),
        "absent stays absent"
    );
    h.put("k", "old", None);
    assert_eq!(
        h.run(&["SET", "k", "v", "PXAT", &T.to_string(), "GET"]),
        write(bulk("old"), delete(&["k"]))
    );
    assert_eq!(h.reply(&["EXISTS", "k"]), Reply::Integer(0));
}

#[test]
fn set_checks_value_and_key_sizes() {
    let mut h = Harness::new();
    h.limits.value_bytes_max = 3;
    h.limits.key_bytes_max = 2;
    assert_eq!(
        h.run(&["SET", "k", "abcd"]),
        read(error("ERR value of 4 bytes exceeds max-value-bytes (3)"))
    );
    assert_eq!(
        h.run(&["SET", "key", "v"]),
        read(error("ERR key of 3 bytes exceeds max-key-bytes (2)"))
    );
    assert_eq!(
        h.run(&["MSET", "a", "v", "key", "v"]),
        read(error("ERR key of 3 bytes exceeds max-key-bytes (2)"))
    );
    assert_eq!(
        h.run(&["RENAME", "a", "key"]),
        read(error("ERR key of 3 bytes exceeds max-key-bytes (2)"))
    );
    assert_eq!(
        h.run(&["GET", "key"]),
        read(Reply::Null),
        "reads of long keys are harmless"
    );
    assert_eq!(
        h.run(&["SET", "k", "abc"]),
        write(Reply::ok(), set("k", "abc", None))
    );
}

#[test]
fn setnx_getset_getdel() {
    let mut h = Harness::new();
    assert_eq!(
        h.run(&["SETNX", "k", "a"]),
        write(Reply::Integer(1), set("k", "a", None))
    );
    assert_eq!(h.run(&["SETNX", "k", "b"]), read(Reply::Integer(0)));
    h.put("k", "a", Some(T + 1000));
    assert_eq!(
        h.run(&["GETSET", "k", "b"]),
        write(bulk("a"), set("k", "b", None))
    );
    assert_eq!(
        h.run(&["GETSET", "n", "b"]),
        write(Reply::Null, set("n", "b", None))
    );
    assert_eq!(h.run(&["GETDEL", "k"]), write(bulk("b"), delete(&["k"])));
    assert_eq!(h.run(&["GETDEL", "k"]), read(Reply::Null));
}

#[test]
fn getex_changes_or_removes_the_expiry() {
    let mut h = Harness::new();
    assert_eq!(h.run(&["GETEX", "k", "EX", "5"]), read(Reply::Null));
    h.put("k", "v", None);
    assert_eq!(h.run(&["GETEX", "k"]), read(bulk("v")));
    assert_eq!(
        h.run(&["GETEX", "k", "PERSIST"]),
        read(bulk("v")),
        "no expiry to remove"
    );
    let expire = Operation::Expire {
        key: b"k".to_vec(),
        at_unix_ms: T + 5000,
    };
    assert_eq!(h.run(&["GETEX", "k", "EX", "5"]), write(bulk("v"), expire));
    assert_eq!(
        h.run(&["GETEX", "k", "PERSIST"]),
        write(bulk("v"), Operation::Persist { key: b"k".to_vec() })
    );
    assert_eq!(h.reply(&["TTL", "k"]), Reply::Integer(-1));
    assert_eq!(
        h.run(&["GETEX", "k", "EXAT", "1"]),
        write(bulk("v"), delete(&["k"]))
    );
    assert_eq!(
        h.run(&["GETEX", "k", "PERSIST", "EX", "1"]),
        read(error(SYNTAX))
    );
    assert_eq!(h.run(&["GETEX", "k", "KEEPTTL"]), read(error(SYNTAX)));
    assert_eq!(h.run(&["GETEX", "k", "NX"]), read(error(SYNTAX)));
}

#[test]
fn counters_keep_the_expiry_and_refuse_non_integers() {
    let mut h = Harness::new();
    assert_eq!(
        h.run(&["INCR", "n"]),
        write(Reply::Integer(1), set("n", "1", None))
    );
    h.put("n", "10", Some(T + 9000));
    assert_eq!(
        h.run(&["INCRBY", "n", "-15"]),
        write(Reply::Integer(-5), set("n", "-5", Some(T + 9000)))
    );
    assert_eq!(
        h.run(&["DECR", "n"]),
        write(Reply::Integer(-6), set("n", "-6", Some(T + 9000)))
    );
    assert_eq!(
        h.run(&["DECRBY", "n", "4"]),
        write(Reply::Integer(-10), set("n", "-10", Some(T + 9000)))
    );
    for value in ["abc", " 1", "1.5", "01", "", "99999999999999999999"] {
        h.put("s", value, None);
        assert_eq!(h.run(&["INCR", "s"]), read(error(NOT_INTEGER)), "{value:?}");
    }
    assert_eq!(h.run(&["INCRBY", "n", "x"]), read(error(NOT_INTEGER)));
}

#[test]
fn counters_refuse_overflow() {
    let mut h = Harness::new();
    let overflow = error("ERR increment or decrement would overflow");
    h.put("n", "9223372036854775807", None);
    assert_eq!(h.run(&["INCR", "n"]), read(overflow.clone()));
    h.put("n", "-9223372036854775808", None);
    assert_eq!(h.run(&["DECR", "n"]), read(overflow.clone()));
    assert_eq!(h.run(&["INCRBY", "n", "-1"]), read(overflow));
    assert_eq!(
        h.run(&["DECRBY", "z", "-9223372036854775808"]),
        read(error("ERR decrement would overflow"))
    );
    assert_eq!(
        h.run(&["DECRBY", "z", "-9223372036854775807"]),
        write(
            Reply::Integer(i64::MAX),
            set("z", "9223372036854775807", None)
        )
    );
}

#[test]
fn incrbyfloat_formats_like_redis() {
    let mut h = Harness::new();
    h.put("f", "10.50", Some(T + 1));
    assert_eq!(
        h.run(&["INCRBYFLOAT", "f", "0.1"]),
        write(bulk("10.6"), set("f", "10.6", Some(T + 1)))
    );
    assert_eq!(
        h.run(&["INCRBYFLOAT", "g", "5.0e3"]),
        write(bulk("5000"), set("g", "5000", None))
    );
    assert_eq!(
        h.run(&["INCRBYFLOAT", "g", "-5000"]),
        write(bulk("0"), set("g", "0", None))
    );
    assert_eq!(
        h.run(&["INCRBYFLOAT", "g", "1e-5"]),
        write(bulk("0.00001"), set("g", "0.00001", None))
    );
    h.put("n", "3", None);
    assert_eq!(h.reply(&["INCRBYFLOAT", "n", "1.5"]), bulk("4.5"));
    assert_eq!(
        h.reply(&["INCR", "n"]),
        error(NOT_INTEGER),
        "a float is no longer an integer"
    );
}

#[test]
fn incrbyfloat_refuses_bad_floats_and_infinity() {
    let mut h = Harness::new();
    let not_float = error("ERR value is not a valid float");
    assert_eq!(h.run(&["INCRBYFLOAT", "f", "abc"]), read(not_float.clone()));
    assert_eq!(h.run(&["INCRBYFLOAT", "f", "nan"]), read(not_float.clone()));
    assert_eq!(
        h.run(&["INCRBYFLOAT", "f", "1e400"]),
        read(not_float.clone())
    );
    h.put("s", "x1", None);
    assert_eq!(h.run(&["INCRBYFLOAT", "s", "1"]), read(not_float));
    let infinite = error("ERR increment would produce NaN or Infinity");
    assert_eq!(h.run(&["INCRBYFLOAT", "f", "inf"]), read(infinite.clone()));
    h.put("big", "1.7e308", None);
    assert_eq!(h.run(&["INCRBYFLOAT", "big", "1.7e308"]), read(infinite));
}

#[test]
fn append_and_strlen() {
    let mut h = Harness::new();
    assert_eq!(h.run(&["STRLEN", "k"]), read(Reply::Integer(0)));
    assert_eq!(
        h.run(&["APPEND", "k", ""]),
        write(Reply::Integer(0), set("k", "", None)),
        "creates the key"
    );
    h.put("k", "ab", Some(T + 7));
    assert_eq!(
        h.run(&["APPEND", "k", "cd"]),
        write(Reply::Integer(4), set("k", "abcd", Some(T + 7)))
    );
    assert_eq!(h.run(&["APPEND", "k", ""]), read(Reply::Integer(4)));
    assert_eq!(h.run(&["STRLEN", "k"]), read(Reply::Integer(4)));
    h.limits.value_bytes_max = 5;
    let too_long = error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
    assert_eq!(h.run(&["APPEND", "k", "ef"]), read(too_long));
    assert_eq!(
        h.run(&["APPEND", "k", "e"]),
        write(Reply::Integer(5), set("k", "abcde", Some(T + 7)))
    );
}

#[test]
fn getrange_clamps_like_redis() {
    let mut h = Harness::new();
    h.put("k", "Hello World", None);
    let range = |h: &mut Harness, start: &str, end: &str| h.reply(&["GETRANGE", "k", start, end]);
    assert_eq!(range(&mut h, "0", "4"), bulk("Hello"));
    assert_eq!(range(&mut h, "-5", "-1"), bulk("World"));
    assert_eq!(range(&mut h, "0", "-1"), bulk("Hello World"));
    assert_eq!(range(&mut h, "-100", "2"), bulk("Hel"));
    assert_eq!(range(&mut h, "6", "100"), bulk("World"));
    assert_eq!(range(&mut h, "5", "3"), bulk(""));
    assert_eq!(range(&mut h, "-1", "-5"), bulk(""));
    assert_eq!(range(&mut h, "11", "20"), bulk(""));
    assert_eq!(
        range(&mut h, "-9223372036854775808", "9223372036854775807"),
        bulk("Hello World")
    );
    assert_eq!(range(&mut h, "0", "x"), error(NOT_INTEGER));
    assert_eq!(h.run(&["GETRANGE", "absent", "0", "-1"]), read(bulk("")));
    h.put("e", "", None);
    assert_eq!(h.reply(&["GETRANGE", "e", "0", "-1"]), bulk(""));
}

#[test]
fn setrange_pads_with_zeros_and_checks_offsets() {
    let mut h = Harness::new();
    let op = Operation::Set {
        key: b"k".to_vec(),
        value: b"\0\0\0ab".to_vec(),
        expire_at_unix_ms: None,
    };
    assert_eq!(
        h.run(&["SETRANGE", "k", "3", "ab"]),
        write(Reply::Integer(5), op)
    );
    h.put("k", "Hello World", Some(T + 3));
    assert_eq!(
        h.run(&["SETRANGE", "k", "6", "Redis"]),
        write(Reply::Integer(11), set("k", "Hello Redis", Some(T + 3)))
    );
    assert_eq!(
        h.run(&["SETRANGE", "k", "100", ""]),
        read(Reply::Integer(11)),
        "empty patch changes nothing"
    );
    assert_eq!(
        h.run(&["SETRANGE", "absent", "5", ""]),
        read(Reply::Integer(0))
    );
    assert_eq!(
        h.run(&["SETRANGE", "k", "-1", "x"]),
        read(error("ERR offset is out of range"))
    );
    h.limits.value_bytes_max = 12;
    let too_long = error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
    assert_eq!(
        h.run(&["SETRANGE", "k", "11", "xy"]),
        read(too_long.clone())
    );
    assert_eq!(
        h.run(&["SETRANGE", "k", "9223372036854775807", "x"]),
        read(too_long)
    );
    assert_eq!(
        h.run(&["SETRANGE", "k", "11", "!"]),
        write(Reply::Integer(12), set("k", "Hello Redis!", Some(T + 3)))
    );
}

#[test]
fn mget_mset_msetnx() {
    let mut h = Harness::new();
    let batch = Operation::Batch {
        ops: vec![
            set("a", "1", None),
            set("b", "2", None),
            set("a", "3", None),
        ],
    };
    assert_eq!(
        h.run(&["MSET", "a", "1", "b", "2", "a", "3"]),
        write(Reply::ok(), batch)
    );
    assert_eq!(
        h.run(&["MGET", "a", "b", "c"]),
        read(Reply::Array(vec![bulk("3"), bulk("2"), Reply::Null]))
    );
    assert_eq!(
        h.run(&["MSET", "a", "1", "b"]),
        read(error("ERR wrong number of arguments for 'mset' command"))
    );
    assert_eq!(
        h.run(&["MSETNX", "c", "1", "b", "9"]),
        read(Reply::Integer(0)),
        "b exists: nothing is set"
    );
    assert_eq!(h.reply(&["EXISTS", "c"]), Reply::Integer(0));
    let batch = Operation::Batch {
        ops: vec![set("c", "1", None), set("d", "2", None)],
    };
    assert_eq!(
        h.run(&["MSETNX", "c", "1", "d", "2"]),
        write(Reply::Integer(1), batch)
    );
    assert_eq!(
        h.run(&["MSETNX", "e", "1", "f"]),
        read(error("ERR wrong number of arguments for 'msetnx' command"))
    );
}

#[test]
fn setex_and_psetex_set_with_a_relative_expiry() {
    let mut h = Harness::new();
    assert_eq!(
        h.run(&["SETEX", "k", "10", "v"]),
        write(Reply::ok(), set("k", "v", Some(T + 10_000)))
    );
    assert_eq!(
        h.run(&["psetex", "k", "10", "w"]),
        write(Reply::ok(), set("k", "w", Some(T + 10)))
    );
    for (command, amount) in [("SETEX", "0"), ("SETEX", "-1"), ("PSETEX", "0")] {
        let name = command.to_ascii_lowercase();
        assert_eq!(
            h.run(&[command, "k", amount, "v"]),
            read(error(&format!(
                "ERR invalid expire time in '{name}' command"
            )))
        );
    }
    assert_eq!(
        h.reply(&["SETEX", "k", "99999999999999999", "v"]),
        error("ERR invalid expire time in 'setex' command"),
        "overflows in milliseconds"
    );
    assert_eq!(
        h.reply(&["PSETEX", "k", "9223372036854775807", "v"]),
        error("ERR invalid expire time in 'psetex' command"),
        "overflows once added to now"
    );
    assert_eq!(h.reply(&["SETEX", "k", "abc", "v"]), error(NOT_INTEGER));
    h.limits.value_bytes_max = 1;
    assert!(matches!(
        h.reply(&["SETEX", "k", "1", "vv"]),
        Reply::Error(text) if text.contains("max-value-bytes")
    ));
}

#[test]
fn substr_is_getrange() {
    let mut h = Harness::new();
    h.put("k", "Hello World", None);
    assert_eq!(h.run(&["SUBSTR", "k", "0", "4"]), read(bulk("Hello")));
    assert_eq!(h.reply(&["SUBSTR", "k", "-5", "-1"]), bulk("World"));
    assert_eq!(h.reply(&["SUBSTR", "k", "x", "1"]), error(NOT_INTEGER));
}
