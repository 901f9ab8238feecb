//! Replies checked against redis-server 7.0.15.

use crate::command::test_support::*;
use crate::operation::Operation;
use crate::resp::Reply;

const T: u64 = START_UNIX_MS;
const SYNTAX: &str = "ERR syntax error";
const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const BAD_OFFSET: &str = "ERR bit offset is not an integer or out of range";

fn int(value: i64) -> Reply {
    Reply::Integer(value)
}

fn set_bytes(key: &str, value: &[u8], expire_at_unix_ms: Option<u64>) -> Operation {
    Operation::Set {
        key: key.as_bytes().to_vec(),
        value: value.to_vec(),
        expire_at_unix_ms,
    }
}

#[test]
fn setbit_grows_the_string_and_logs_the_whole_value_with_its_expiry() {
    let mut h = Harness::new();
    assert_eq!(
        h.run(&["SETBIT", "new", "10", "0"]),
        write(int(0), set_bytes("new", &[0, 0], None)),
        "an absent key is created even for a 0"
    );
    h.put("k", "\u{0}", Some(T + 10_000));
    assert_eq!(
        h.run(&["SETBIT", "k", "7", "1"]),
        write(int(0), set_bytes("k", &[1], Some(T + 10_000)))
    );
    assert_eq!(
        h.run(&["SETBIT", "k", "7", "1"]),
        read(int(1)),
        "no change, nothing logged"
    );
    assert_eq!(
        h.run(&["setbit", "k", "0", "1"]),
        write(int(0), set_bytes("k", &[0x81], Some(T + 10_000)))
    );
    assert_eq!(
        h.reply(&["SETBIT", "k", "7", "2"]),
        error("ERR bit is not an integer or out of range")
    );
    assert_eq!(h.reply(&["SETBIT", "k", "-1", "1"]), error(BAD_OFFSET));
    assert_eq!(h.reply(&["SETBIT", "k", "x", "1"]), error(BAD_OFFSET));
    assert_eq!(
        h.reply(&["SETBIT", "k", "4294967296", "1"]),
        error(BAD_OFFSET),
        "past 512 MiB"
    );
    h.limits.value_bytes_max = 2;
    assert_eq!(h.reply(&["SETBIT", "k", "16", "1"]), error(BAD_OFFSET));
    assert_eq!(h.reply(&["SETBIT", "k", "15", "1"]), int(0));
}

#[test]
fn getbit_reads_zero_past_the_end_and_for_absent_keys() {
    let mut h = Harness::new();
    h.put("k", "\u{1}", None);
    assert_eq!(h.run(&["GETBIT", "k", "7"]), read(int(1)));
    assert_eq!(h.reply(&["GETBIT", "k", "6"]), int(0));
    assert_eq!(h.reply(&["GETBIT", "k", "1000"]), int(0));
    assert_eq!(h.reply(&["GETBIT", "missing", "0"]), int(0));
    assert_eq!(h.reply(&["GETBIT", "k", "4294967296"]), error(BAD_OFFSET));
}

#[test]
fn bitcount_ranges_in_bytes_and_bits() {
    let mut h = Harness::new();
    h.put("s", "foobar", None);
    let count = |h: &mut Harness, args: &[&str]| {
        let mut request = vec!["BITCOUNT", "s"];
        request.extend_from_slice(args);
        h.reply(&request)
    };
    assert_eq!(count(&mut h, &[]), int(26));
    assert_eq!(count(&mut h, &["1", "1"]), int(6));
    assert_eq!(count(&mut h, &["1", "1", "bit"]), int(1));
    assert_eq!(count(&mut h, &["5", "30", "BIT"]), int(17));
    assert_eq!(count(&mut h, &["-3", "-1", "bit"]), int(1));
    assert_eq!(
        count(&mut h, &["-100", "-50"]),
        int(4),
        "both clamped to byte 0"
    );
    assert_eq!(count(&mut h, &["-1", "-5"]), int(0));
    assert_eq!(
        count(&mut h, &["-1", "-5", "word"]),
        int(0),
        "an empty range answers before the unit is read"
    );
    assert_eq!(count(&mut h, &["-100", "-5"]), int(10));
    assert_eq!(count(&mut h, &["1", "0"]), int(0));
    assert_eq!(count(&mut h, &["0"]), error(SYNTAX));
    assert_eq!(count(&mut h, &["0", "1", "2"]), error(SYNTAX));
    assert_eq!(count(&mut h, &["0", "1", "byte", "x"]), error(SYNTAX));
    assert_eq!(count(&mut h, &["a", "b"]), error(NOT_INTEGER));
    assert_eq!(
        h.reply(&["BITCOUNT", "missing", "0", "1", "foo"]),
        int(0),
        "an absent key answers before the arguments are read"
    );
}

#[test]
fn bitpos_finds_set_and_clear_bits() {
    let mut h = Harness::new();
    h.put("s", "foobar", None);
    h.put("ones", "\u{7f}\u{7f}", None);
    h.keyspace.apply(&set_bytes("ff", &[0xff, 0xff], None));
    h.put("empty", "", None);
    assert_eq!(h.reply(&["BITPOS", "s", "1", "2", "-1", "bit"]), int(2));
    assert_eq!(h.reply(&["BITPOS", "s", "0", "7", "15", "bit"]), int(7));
    assert_eq!(h.reply(&["BITPOS", "s", "0", "-100", "-50"]), int(0));
    assert_eq!(
        h.reply(&["BITPOS", "s", "1", "-100", "-90", "bit"]),
        int(-1)
    );
    assert_eq!(h.reply(&["BITPOS", "ones", "0", "1"]), int(8));
    assert_eq!(h.reply(&["BITPOS", "ff", "0"]), int(16), "past the end");
    assert_eq!(h.reply(&["BITPOS", "ff", "0", "0"]), int(16));
    assert_eq!(
        h.reply(&["BITPOS", "ff", "0", "0", "-1"]),
        int(-1),
        "end given"
    );
    assert_eq!(h.reply(&["BITPOS", "ff", "1", "1"]), int(8));
    assert_eq!(h.reply(&["BITPOS", "empty", "0"]), int(-1));
    assert_eq!(h.reply(&["BITPOS", "empty", "1"]), int(-1));
    assert_eq!(h.reply(&["BITPOS", "missing", "0"]), int(0));
    assert_eq!(h.reply(&["BITPOS", "missing", "1"]), int(-1));
    assert_eq!(
        h.reply(&["BITPOS", "s", "2"]),
        error("ERR The bit argument must be 1 or 0.")
    );
    assert_eq!(
        h.reply(&["BITPOS", "ff", "0", "3", "bit"]),
        error(NOT_INTEGER)
    );
    assert_eq!(
        h.reply(&["BITPOS", "s", "0", "0", "1", "2", "3"]),
        error(SYNTAX)
    );
    assert_eq!(
        h.reply(&["BITPOS", "s", "0", "0", "1", "word"]),
        error(SYNTAX)
    );
}

#[test]
fn bitop_combines_sources_as_long_as_the_longest() {
    let mut h = Harness::new();
    h.put("a", "abc", None);
    h.put("b", "x", None);
    h.put("d", "old", Some(T + 10_000));
    assert_eq!(
        h.run(&["BITOP", "AND", "d", "a", "b"]),
        write(int(3), set_bytes("d", b"`\0\0", None)),
        "missing bytes are zeros; the expiry goes"
    );
    assert_eq!(
        h.run(&["bitop", "or", "d", "a", "b", "missing"]),
        write(int(3), set_bytes("d", b"ybc", None))
    );
    assert_eq!(
        h.run(&["BITOP", "XOR", "d", "a", "b"]),
        write(int(3), set_bytes("d", b"\x19bc", None))
    );
    assert_eq!(
        h.run(&["BITOP", "NOT", "d", "a"]),
        write(int(3), set_bytes("d", b"\x9e\x9d\x9c", None))
    );
    assert_eq!(
        h.reply(&["BITOP", "NOT", "d", "a", "b"]),
        error("ERR BITOP NOT must be called with a single source key.")
    );
    assert_eq!(h.reply(&["BITOP", "NOPE", "d", "a"]), error(SYNTAX));
    assert_eq!(
        h.run(&["BITOP", "AND", "d", "m1", "m2"]),
        write(int(0), delete(&["d"])),
        "an empty result deletes the destination"
    );
    assert_eq!(h.run(&["BITOP", "AND", "d", "m1"]), read(int(0)));
}
