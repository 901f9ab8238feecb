//! Redis strings, as Keel serves them: SET, GET, DEL, INCR, GETSET, MSET and
//! EXPIRE. The model of the histories Keel's simulator records.
//!
//! The model keeps no clock: an EXPIRE with a positive time must outlast the
//! history (the simulator's times do: see `workload`), and one with a time of
//! zero or less deletes the key at once, as in Redis.
//!
//! Partitioned by hash tag (Redis Cluster's rule, [`hash_tag`]), not by key,
//! because MSET writes several keys atomically and splitting it by key would let
//! the checker accept a torn MSET. Keel refuses a multi-key command whose keys map
//! to different slots, so a workload only issues MSETs whose keys share a tag;
//! [`Redis::partition_key`] asserts it. Workloads that want per-key partitions give
//! each key its own tag.

use std::collections::BTreeMap;

use crate::linearizability::Model;

pub type Key = Vec<u8>;
pub type Value = Vec<u8>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisInput {
    Set {
        key: Key,
        value: Value,
    },
    Get {
        key: Key,
    },
    Del {
        key: Key,
    },
    Incr {
        key: Key,
    },
    GetSet {
        key: Key,
        value: Value,
    },
    /// Keys must share a hash tag; a repeated key takes its last value, as in Redis.
    MSet {
        pairs: Vec<(Key, Value)>,
    },
    /// Replies 1 if the key exists (and sets its time to live), 0 if not.
    Expire {
        key: Key,
        seconds: i64,
    },
}

/// Longest value [`RedisInput`]'s `Display` prints before eliding the rest.
const SHOWN_VALUE_BYTES_MAX: usize = 16;

/// Bytes as text for a trace line: lossy UTF-8, long values cut short with
/// their length.
fn text(bytes: &[u8]) -> String {
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN_VALUE_BYTES_MAX)]);
    if bytes.len() > SHOWN_VALUE_BYTES_MAX {
        format!("{shown}...({} bytes)", bytes.len())
    } else {
        shown.into_owned()
    }
}

impl std::fmt::Display for RedisInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisInput::Set { key, value } => write!(f, "SET {} {}", text(key), text(value)),
            RedisInput::Get { key } => write!(f, "GET {}", text(key)),
            RedisInput::Del { key } => write!(f, "DEL {}", text(key)),
            RedisInput::Incr { key } => write!(f, "INCR {}", text(key)),
            RedisInput::GetSet { key, value } => {
                write!(f, "GETSET {} {}", text(key), text(value))
            }
            RedisInput::MSet { pairs } => {
                write!(f, "MSET")?;
                for (key, value) in pairs {
                    write!(f, " {} {}", text(key), text(value))?;
                }
                Ok(())
            }
            RedisInput::Expire { key, seconds } => write!(f, "EXPIRE {} {seconds}", text(key)),
        }
    }
}

impl std::fmt::Display for RedisOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisOutput::Ok => write!(f, "OK"),
            RedisOutput::Bulk(Some(value)) => write!(f, "{}", text(value)),
            RedisOutput::Bulk(None) => write!(f, "(nil)"),
            RedisOutput::Integer(value) => write!(f, "(integer) {value}"),
            RedisOutput::NotAnInteger => write!(f, "ERR not an integer"),
        }
    }
}

/// The reply a client got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisOutput {
    /// `+OK` (SET, MSET).
    Ok,
    /// A bulk string or nil (GET, GETSET).
    Bulk(Option<Value>),
    /// An integer (DEL: keys removed; INCR: the new value).
    Integer(i64),
    /// The error INCR replies when the value is not a decimal i64 or would overflow.
    NotAnInteger,
}

/// The Redis string model; a partition's state is the keys of one hash tag.
#[derive(Debug)]
pub struct Redis;

impl Model for Redis {
    type State = BTreeMap<Key, Value>;
    type Input = RedisInput;
    type Output = RedisOutput;
    type PartitionKey = Vec<u8>;

    fn init() -> Self::State {
        BTreeMap::new()
    }

    fn step(
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State> {
        let mut next = state.clone();
        let expected = apply(&mut next, input);
        output
            .is_none_or(|output| *output == expected)
            .then_some(next)
    }

    fn partition_key(input: &Self::Input) -> Self::PartitionKey {
        match input {
            RedisInput::Set { key, .. }
            | RedisInput::Get { key }
            | RedisInput::Del { key }
            | RedisInput::Incr { key }
            | RedisInput::GetSet { key, .. }
            | RedisInput::Expire { key, .. } => hash_tag(key).to_vec(),
            RedisInput::MSet { pairs } => {
                let (first, _) = pairs.first().expect("an MSET sets at least one key");
                let tag = hash_tag(first);
                assert!(
                    pairs.iter().all(|(key, _)| hash_tag(key) == tag),
                    "the keys of an MSET share a hash tag (Keel refuses cross-slot MSETs)"
                );
                tag.to_vec()
            }
        }
    }
}

/// Runs `input` on `state` and returns its reply.
fn apply(state: &mut BTreeMap<Key, Value>, input: &RedisInput) -> RedisOutput {
    match input {
        RedisInput::Set { key, value } => {
            state.insert(key.clone(), value.clone());
            RedisOutput::Ok
        }
        RedisInput::Get { key } => RedisOutput::Bulk(state.get(key).cloned()),
        RedisInput::Del { key } => RedisOutput::Integer(i64::from(state.remove(key).is_some())),
        RedisInput::Incr { key } => {
            let current = state.get(key).map_or(Some(0), |value| parse_integer(value));
            match current.and_then(|current| current.checked_add(1)) {
                Some(incremented) => {
                    state.insert(key.clone(), incremented.to_string().into_bytes());
                    RedisOutput::Integer(incremented)
                }
                None => RedisOutput::NotAnInteger,
            }
        }
        RedisInput::GetSet { key, value } => {
            RedisOutput::Bulk(state.insert(key.clone(), value.clone()))
        }
        RedisInput::MSet { pairs } => {
            for (key, value) in pairs {
                state.insert(key.clone(), value.clone());
            }
            RedisOutput::Ok
        }
        RedisInput::Expire { key, seconds } => {
            let exists = if *seconds <= 0 {
                state.remove(key).is_some()
            } else {
                state.contains_key(key)
            };
            RedisOutput::Integer(i64::from(exists))
        }
    }
}

/// The value as INCR reads it: a canonical decimal i64 (no sign on zero, no
/// leading zeros or spaces), as Redis's `string2ll` requires.
fn parse_integer(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let parsed: i64 = text.parse().ok()?;
    (parsed.to_string() == text).then_some(parsed)
}

/// The part of `key` that decides its slot: the bytes between the first `{` and
/// the first `}` after it, when there are any; otherwise the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&byte| byte == b'{') else {
        return key;
    };
    let rest = &key[open + 1..];
    match rest.iter().position(|&byte| byte == b'}') {
        Some(close) if close > 0 => &rest[..close],
        _ => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Operation;
    use crate::linearizability::{check, Verdict};

    fn key(text: &str) -> Key {
        text.as_bytes().to_vec()
    }

    fn mset(pairs: &[(&str, &str)]) -> RedisInput {
        let pairs = pairs.iter().map(|(k, v)| (key(k), key(v))).collect();
        RedisInput::MSet { pairs }
    }

    fn get(text: &str) -> RedisInput {
        RedisInput::Get { key: key(text) }
    }

    fn bulk(text: Option<&str>) -> RedisOutput {
        RedisOutput::Bulk(text.map(key))
    }

    #[test]
    fn hash_tags_follow_the_cluster_rule() {
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"plain"), b"plain");
        assert_eq!(hash_tag(b"open{only"), b"open{only");
    }

    #[test]
    fn mset_partitions_by_tag() {
        assert_eq!(
            Redis::partition_key(&mset(&[("{t}a", "1"), ("{t}b", "2")])),
            b"t"
        );
        assert_eq!(Redis::partition_key(&get("{t}b")), b"t");
    }

    #[test]
    #[should_panic(expected = "share a hash tag")]
    fn mset_across_tags_is_a_workload_bug() {
        Redis::partition_key(&mset(&[("{t}a", "1"), ("{u}b", "2")]));
    }

    /// Two readers overlap an MSET of `{t}a` and `{t}b`. Each key alone could
    /// explain its reader, but one sees the new `a` and then, strictly later, the
    /// other sees the old `b`: a torn MSET, caught only because the tag is one
    /// partition.
    #[test]
    fn a_torn_mset_is_not_linearizable() {
        let history = vec![
            Operation::completed(
                0,
                mset(&[("{t}a", "1"), ("{t}b", "1")]),
                0,
                RedisOutput::Ok,
                10,
            ),
            Operation::completed(1, get("{t}a"), 1, bulk(Some("1")), 2),
            Operation::completed(2, get("{t}b"), 3, bulk(None), 4),
        ];
        assert_eq!(
            check::<Redis>(&history),
            Verdict::NotLinearizable {
                partition: key("t"),
                operations: 3,
                longest_prefix: 2
            }
        );
        let consistent = vec![
            history[0].clone(),
            history[1].clone(),
            Operation::completed(2, get("{t}b"), 3, bulk(Some("1")), 4),
        ];
        assert_eq!(check::<Redis>(&consistent), Verdict::Linearizable);
    }

    #[test]
    fn incr_del_and_getset_follow_redis() {
        let mut state = Redis::init();
        let incr = RedisInput::Incr { key: key("n") };
        assert_eq!(apply(&mut state, &incr), RedisOutput::Integer(1));
        assert_eq!(apply(&mut state, &incr), RedisOutput::Integer(2));
        let getset = RedisInput::GetSet {
            key: key("n"),
            value: key("x"),
        };
        assert_eq!(apply(&mut state, &getset), bulk(Some("2")));
        assert_eq!(apply(&mut state, &incr), RedisOutput::NotAnInteger);
        let del = RedisInput::Del { key: key("n") };
        assert_eq!(apply(&mut state, &del), RedisOutput::Integer(1));
        assert_eq!(apply(&mut state, &del), RedisOutput::Integer(0));
        let set = RedisInput::Set {
            key: key("n"),
            value: i64::MAX.to_string().into_bytes(),
        };
        assert_eq!(apply(&mut state, &set), RedisOutput::Ok);
        assert_eq!(apply(&mut state, &incr), RedisOutput::NotAnInteger);
        let set = RedisInput::Set {
            key: key("n"),
            value: key("007"),
        };
        apply(&mut state, &set);
        assert_eq!(apply(&mut state, &incr), RedisOutput::NotAnInteger);
    }

    #[test]
    fn inputs_print_as_commands_with_long_values_elided() {
        let set = RedisInput::Set {
            key: key("{t0}a"),
            value: vec![b'x'; 40],
        };
        assert_eq!(set.to_string(), "SET {t0}a xxxxxxxxxxxxxxxx...(40 bytes)");
        assert_eq!(mset(&[("a", "1"), ("b", "2")]).to_string(), "MSET a 1 b 2");
        assert_eq!(RedisOutput::Bulk(None).to_string(), "(nil)");
    }

    #[test]
    fn expire_of_zero_deletes_and_a_positive_one_keeps() {
        let mut state = Redis::init();
        let expire = |seconds| RedisInput::Expire {
            key: key("k"),
            seconds,
        };
        assert_eq!(apply(&mut state, &expire(100)), RedisOutput::Integer(0));
        apply(&mut state, &mset(&[("k", "v")]));
        assert_eq!(apply(&mut state, &expire(100)), RedisOutput::Integer(1));
        assert_eq!(apply(&mut state, &get("k")), bulk(Some("v")));
        assert_eq!(apply(&mut state, &expire(0)), RedisOutput::Integer(1));
        assert_eq!(apply(&mut state, &get("k")), bulk(None));
        assert_eq!(apply(&mut state, &expire(-1)), RedisOutput::Integer(0));
    }

    /// An INCR whose reply was lost still counts: a later read of 2 needs both.
    #[test]
    fn a_lost_incr_reply_can_explain_a_later_read() {
        let incr = RedisInput::Incr { key: key("n") };
        let history = vec![
            Operation::completed(0, incr.clone(), 0, RedisOutput::Integer(1), 1),
            Operation::abandoned(1, incr, 2),
            Operation::completed(2, get("n"), 3, bulk(Some("2")), 4),
        ];
        assert_eq!(check::<Redis>(&history), Verdict::Linearizable);
    }
}
