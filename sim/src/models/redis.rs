//! Redis strings, as Keel serves them: SET (plain or with PX), GET, DEL, INCR,
//! GETSET, MSET and PEXPIRE. The model of the histories Keel's simulator records.
//!
//! The model keeps time. A history's times are the node's clock in µs (the
//! simulator's clients read the same clock the node does), and an operation
//! takes effect at some instant between its invocation and its return. A key
//! with an expiry at millisecond `d` is there at instant `t` if and only if
//! `t < d * 1000`: the node compares whole milliseconds (`d > now_ms`), and
//! `now_ms = t / 1000`. A relative expiry (PX, PEXPIRE) counts from the
//! instant the command ran, which the history knows only to within its
//! window, so a deadline is a range of milliseconds ([`Deadline`]).
//!
//! One step considers each key the command touches expired or not, wherever
//! the window allows either, and gives a state for each answer the client
//! could see. Each state keeps the earliest instant the operation could have
//! taken effect ([`RedisState::now_us`]): later operations take effect no
//! earlier. Choosing the earliest instant and widening the deadlines to every
//! instant of the window loses precision but never a real execution, so the
//! check stays sound; a key that answers at its expiry millisecond, or is gone
//! a millisecond early, is still caught whenever a read's window lies wholly on
//! the wrong side of the deadline.
//!
//! Partitioned by hash tag (Redis Cluster's rule, [`hash_tag`]), not by key,
//! because MSET writes several keys atomically and splitting it by key would let
//! the checker accept a torn MSET. Keel refuses a multi-key command whose keys map
//! to different slots, so a workload only issues MSETs whose keys share a tag;
//! [`Redis::partition_key`] asserts it. Workloads that want per-key partitions give
//! each key its own tag.

use std::collections::BTreeMap;

use crate::linearizability::{Model, Window};

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
    /// SET key value PX milliseconds (a positive time to live).
    SetPx {
        key: Key,
        value: Value,
        milliseconds: u64,
    },
    /// SET key value PXAT unix-ms: an expiry known to the millisecond.
    SetPxAt {
        key: Key,
        value: Value,
        unix_ms: u64,
    },
    /// Replies 1 if the key exists (and sets its time to live, or deletes it
    /// for a time of zero or less), 0 if not.
    PExpire {
        key: Key,
        milliseconds: i64,
    },
    /// PEXPIREAT key unix-ms: as PEXPIRE, a time already come deleting the key.
    PExpireAt {
        key: Key,
        unix_ms: u64,
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
            RedisInput::SetPx {
                key,
                value,
                milliseconds,
            } => write!(f, "SET {} {} PX {milliseconds}", text(key), text(value)),
            RedisInput::SetPxAt {
                key,
                value,
                unix_ms,
            } => write!(f, "SET {} {} PXAT {unix_ms}", text(key), text(value)),
            RedisInput::PExpire { key, milliseconds } => {
                write!(f, "PEXPIRE {} {milliseconds}", text(key))
            }
            RedisInput::PExpireAt { key, unix_ms } => {
                write!(f, "PEXPIREAT {} {unix_ms}", text(key))
            }
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

/// A key's value and expiry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    pub value: Value,
    pub expiry: Option<Deadline>,
}

/// When a key expires: at some millisecond of `earliest_ms..=latest_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Deadline {
    pub earliest_ms: u64,
    pub latest_ms: u64,
}

/// One hash tag's keys, and the earliest instant (µs, on the history's
/// clock) at which the next operation may take effect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RedisState {
    pub keys: BTreeMap<Key, Entry>,
    pub now_us: u64,
}

/// The instants (µs) an operation may take effect at, within its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Instants {
    from_us: u64,
    to_us: u64,
}

impl Instants {
    /// These instants, split where the outcome of `input` changes with
    /// time alone: a PEXPIREAT sets an expiry before its time and deletes
    /// from it on.
    fn split(self, input: &RedisInput) -> Vec<Instants> {
        let RedisInput::PExpireAt { unix_ms, .. } = input else {
            return vec![self];
        };
        let at_us = unix_ms.saturating_mul(1000);
        let before = Instants {
            from_us: self.from_us,
            to_us: self.to_us.min(at_us.saturating_sub(1)),
        };
        let after = Instants {
            from_us: self.from_us.max(at_us),
            to_us: self.to_us,
        };
        vec![before, after]
    }

    /// The deadline of a time to live of `milliseconds` set at one of these
    /// instants.
    fn deadline_after(&self, milliseconds: u64) -> Deadline {
        Deadline {
            earliest_ms: (self.from_us / 1000).saturating_add(milliseconds),
            latest_ms: (self.to_us / 1000).saturating_add(milliseconds),
        }
    }
}

/// The Redis string model; a partition's state is the keys of one hash tag.
#[derive(Debug)]
pub struct Redis;

impl Model for Redis {
    type State = RedisState;
    type Input = RedisInput;
    type Output = RedisOutput;
    type PartitionKey = Vec<u8>;

    fn init() -> Self::State {
        RedisState::default()
    }

    fn step(
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
        window: Window,
    ) -> Vec<Self::State> {
        let from_us = state.now_us.max(window.from);
        if from_us > window.to {
            return Vec::new();
        }
        // The touched keys that may expire: each is there or gone at the
        // instant the command runs.
        let mut expiring: Vec<(&Key, Deadline)> = touched_keys(input)
            .into_iter()
            .filter_map(|key| Some((key, state.keys.get(key)?.expiry?)))
            .collect();
        expiring.dedup_by(|a, b| a.0 == b.0);
        let mut next_states = Vec::new();
        for gone_mask in 0..1u32 << expiring.len() {
            let gone = |position: usize| gone_mask & (1 << position) != 0;
            let mut instants = Instants {
                from_us,
                to_us: window.to,
            };
            for (position, (_, deadline)) in expiring.iter().enumerate() {
                if gone(position) {
                    let expired_us = deadline.earliest_ms.saturating_mul(1000);
                    instants.from_us = instants.from_us.max(expired_us);
                } else {
                    let last_live_us = deadline.latest_ms.saturating_mul(1000).saturating_sub(1);
                    instants.to_us = instants.to_us.min(last_live_us);
                }
            }
            for instants in instants.split(input) {
                let next = Self::step_at(state, input, instants, &expiring, gone);
                if let Some((next, expected)) = next {
                    if output.is_none_or(|output| *output == expected)
                        && !next_states.contains(&next)
                    {
                        next_states.push(next);
                    }
                }
            }
        }
        next_states
    }

    fn partition_key(input: &Self::Input) -> Self::PartitionKey {
        let keys = touched_keys(input);
        let tag = hash_tag(keys.first().expect("a command touches at least one key"));
        assert!(
            keys.iter().all(|key| hash_tag(key) == tag),
            "the keys of an MSET share a hash tag (Keel refuses cross-slot MSETs)"
        );
        tag.to_vec()
    }
}

impl Redis {
    /// The state and reply of `input` run at one of `instants`, with the
    /// keys of `expiring` gone where `gone` says; `None` if `instants` is
    /// empty.
    fn step_at(
        state: &RedisState,
        input: &RedisInput,
        instants: Instants,
        expiring: &[(&Key, Deadline)],
        gone: impl Fn(usize) -> bool,
    ) -> Option<(RedisState, RedisOutput)> {
        if instants.from_us > instants.to_us {
            return None;
        }
        let mut keys = state.keys.clone();
        for (position, (key, _)) in expiring.iter().enumerate() {
            if gone(position) {
                keys.remove(*key);
            } else if let Some(deadline) = keys.get_mut(*key).and_then(|e| e.expiry.as_mut()) {
                // There at `from_us` or later: its deadline is after it.
                let after_ms = instants.from_us / 1000 + 1;
                deadline.earliest_ms = deadline.earliest_ms.max(after_ms);
            }
        }
        let expected = apply(&mut keys, input, instants);
        let next = RedisState {
            keys,
            now_us: instants.from_us,
        };
        Some((next, expected))
    }
}

/// The keys `input` reads or writes, in order.
fn touched_keys(input: &RedisInput) -> Vec<&Key> {
    match input {
        RedisInput::Set { key, .. }
        | RedisInput::SetPx { key, .. }
        | RedisInput::Get { key }
        | RedisInput::Del { key }
        | RedisInput::Incr { key }
        | RedisInput::GetSet { key, .. }
        | RedisInput::SetPxAt { key, .. }
        | RedisInput::PExpire { key, .. }
        | RedisInput::PExpireAt { key, .. } => vec![key],
        RedisInput::MSet { pairs } => pairs.iter().map(|(key, _)| key).collect(),
    }
}

/// Runs `input` on `keys` (every expired key already gone) at one of
/// `instants`, and returns its reply.
fn apply(keys: &mut BTreeMap<Key, Entry>, input: &RedisInput, instants: Instants) -> RedisOutput {
    let persistent = |value: &Value| Entry {
        value: value.clone(),
        expiry: None,
    };
    match input {
        RedisInput::Set { key, value } => {
            keys.insert(key.clone(), persistent(value));
            RedisOutput::Ok
        }
        RedisInput::SetPx {
            key,
            value,
            milliseconds,
        } => {
            let entry = Entry {
                value: value.clone(),
                expiry: Some(instants.deadline_after(*milliseconds)),
            };
            keys.insert(key.clone(), entry);
            RedisOutput::Ok
        }
        RedisInput::SetPxAt {
            key,
            value,
            unix_ms,
        } => {
            let entry = Entry {
                value: value.clone(),
                expiry: Some(Deadline {
                    earliest_ms: *unix_ms,
                    latest_ms: *unix_ms,
                }),
            };
            keys.insert(key.clone(), entry);
            RedisOutput::Ok
        }
        RedisInput::Get { key } => RedisOutput::Bulk(keys.get(key).map(|e| e.value.clone())),
        RedisInput::Del { key } => RedisOutput::Integer(i64::from(keys.remove(key).is_some())),
        RedisInput::Incr { key } => {
            let current = keys
                .get(key)
                .map_or(Some(0), |entry| parse_integer(&entry.value));
            match current.and_then(|current| current.checked_add(1)) {
                Some(incremented) => {
                    // INCR keeps the key's expiry, as Redis does.
                    let expiry = keys.get(key).and_then(|entry| entry.expiry);
                    let value = incremented.to_string().into_bytes();
                    keys.insert(key.clone(), Entry { value, expiry });
                    RedisOutput::Integer(incremented)
                }
                None => RedisOutput::NotAnInteger,
            }
        }
        RedisInput::GetSet { key, value } => RedisOutput::Bulk(
            keys.insert(key.clone(), persistent(value))
                .map(|entry| entry.value),
        ),
        RedisInput::MSet { pairs } => {
            for (key, value) in pairs {
                keys.insert(key.clone(), persistent(value));
            }
            RedisOutput::Ok
        }
        RedisInput::PExpire { key, milliseconds } => {
            let exists = match u64::try_from(*milliseconds) {
                Ok(milliseconds) if milliseconds > 0 => match keys.get_mut(key) {
                    Some(entry) => {
                        entry.expiry = Some(instants.deadline_after(milliseconds));
                        true
                    }
                    None => false,
                },
                _ => keys.remove(key).is_some(),
            };
            RedisOutput::Integer(i64::from(exists))
        }
        RedisInput::PExpireAt { key, unix_ms } => {
            // `instants` lie wholly before the time or wholly after it
            // (`Instants::split`).
            let exists = if instants.to_us < unix_ms.saturating_mul(1000) {
                keys.get_mut(key).map(|entry| {
                    entry.expiry = Some(Deadline {
                        earliest_ms: *unix_ms,
                        latest_ms: *unix_ms,
                    });
                })
            } else {
                keys.remove(key).map(drop)
            };
            RedisOutput::Integer(i64::from(exists.is_some()))
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
        let mut state = BTreeMap::new();
        let incr = RedisInput::Incr { key: key("n") };
        assert_eq!(run(&mut state, &incr), RedisOutput::Integer(1));
        assert_eq!(run(&mut state, &incr), RedisOutput::Integer(2));
        let getset = RedisInput::GetSet {
            key: key("n"),
            value: key("x"),
        };
        assert_eq!(run(&mut state, &getset), bulk(Some("2")));
        assert_eq!(run(&mut state, &incr), RedisOutput::NotAnInteger);
        let del = RedisInput::Del { key: key("n") };
        assert_eq!(run(&mut state, &del), RedisOutput::Integer(1));
        assert_eq!(run(&mut state, &del), RedisOutput::Integer(0));
        let set = RedisInput::Set {
            key: key("n"),
            value: i64::MAX.to_string().into_bytes(),
        };
        assert_eq!(run(&mut state, &set), RedisOutput::Ok);
        assert_eq!(run(&mut state, &incr), RedisOutput::NotAnInteger);
        let set = RedisInput::Set {
            key: key("n"),
            value: key("007"),
        };
        run(&mut state, &set);
        assert_eq!(run(&mut state, &incr), RedisOutput::NotAnInteger);
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

    /// Runs `input` at instant 0.
    fn run(state: &mut BTreeMap<Key, Entry>, input: &RedisInput) -> RedisOutput {
        let instants = Instants {
            from_us: 0,
            to_us: 0,
        };
        apply(state, input, instants)
    }

    fn pexpire(text: &str, milliseconds: i64) -> RedisInput {
        RedisInput::PExpire {
            key: key(text),
            milliseconds,
        }
    }

    #[test]
    fn pexpire_of_zero_deletes_and_a_positive_one_keeps() {
        let mut state = BTreeMap::new();
        assert_eq!(run(&mut state, &pexpire("k", 100)), RedisOutput::Integer(0));
        run(&mut state, &mset(&[("k", "v")]));
        assert_eq!(run(&mut state, &pexpire("k", 100)), RedisOutput::Integer(1));
        assert_eq!(run(&mut state, &get("k")), bulk(Some("v")));
        assert_eq!(run(&mut state, &pexpire("k", 0)), RedisOutput::Integer(1));
        assert_eq!(run(&mut state, &get("k")), bulk(None));
        assert_eq!(run(&mut state, &pexpire("k", -1)), RedisOutput::Integer(0));
    }

    fn get_at(
        output: Option<&str>,
        from_us: u64,
        to_us: u64,
    ) -> Operation<RedisInput, RedisOutput> {
        Operation::completed(1, get("k"), from_us, bulk(output), to_us)
    }

    /// SET PX 10 runs within millisecond 1, so the key expires at exactly
    /// millisecond 11 (instant 11,000 µs).
    #[test]
    fn a_key_is_gone_from_its_expiry_millisecond_and_not_before() {
        let set = RedisInput::SetPx {
            key: key("k"),
            value: key("v"),
            milliseconds: 10,
        };
        let verdict = |read| {
            let history = vec![
                Operation::completed(0, set.clone(), 1_000, RedisOutput::Ok, 1_500),
                read,
            ];
            check::<Redis>(&history).is_linearizable()
        };
        assert_eq!(verdict(get_at(Some("v"), 10_000, 10_999)), Some(true));
        assert_eq!(verdict(get_at(None, 11_000, 11_200)), Some(true));
        // Still there at its expiry millisecond, or gone one early.
        assert_eq!(verdict(get_at(Some("v"), 11_000, 11_200)), Some(false));
        assert_eq!(verdict(get_at(None, 10_000, 10_999)), Some(false));
        // A read whose window holds the deadline may see either.
        assert_eq!(verdict(get_at(Some("v"), 10_900, 11_100)), Some(true));
        assert_eq!(verdict(get_at(None, 10_900, 11_100)), Some(true));
    }

    /// PEXPIRE 10 somewhere in milliseconds 1..=3: the key expires at 11, 12
    /// or 13, but once a read saw it gone, it stays gone.
    #[test]
    fn a_relative_expiry_is_known_to_the_window_of_its_command() {
        let history = |reads: Vec<Operation<RedisInput, RedisOutput>>| {
            let mut history = vec![
                Operation::completed(0, mset(&[("k", "v")]), 0, RedisOutput::Ok, 1),
                Operation::completed(0, pexpire("k", 10), 1_000, RedisOutput::Integer(1), 3_000),
            ];
            history.extend(reads);
            check::<Redis>(&history).is_linearizable()
        };
        assert_eq!(history(vec![get_at(Some("v"), 12_000, 12_500)]), Some(true));
        assert_eq!(history(vec![get_at(None, 12_000, 12_500)]), Some(true));
        assert_eq!(
            history(vec![get_at(Some("v"), 13_000, 13_500)]),
            Some(false)
        );
        assert_eq!(history(vec![get_at(None, 10_000, 10_999)]), Some(false));
        assert_eq!(
            history(vec![
                get_at(None, 12_000, 12_100),
                get_at(Some("v"), 12_200, 12_300)
            ]),
            Some(false)
        );
    }

    /// INCR keeps the expiry; SET without PX clears it.
    #[test]
    fn incr_keeps_the_expiry_and_set_clears_it() {
        let set = RedisInput::SetPx {
            key: key("k"),
            value: key("1"),
            milliseconds: 10,
        };
        let incr = RedisInput::Incr { key: key("k") };
        let history = vec![
            Operation::completed(0, set, 0, RedisOutput::Ok, 500),
            Operation::completed(0, incr, 1_000, RedisOutput::Integer(2), 1_500),
            get_at(None, 10_000, 10_500),
        ];
        assert_eq!(check::<Redis>(&history).is_linearizable(), Some(true));
        let mut later = history.clone();
        later[2] = get_at(Some("2"), 10_000, 10_500);
        assert_eq!(check::<Redis>(&later).is_linearizable(), Some(false));
        let plain = RedisInput::Set {
            key: key("k"),
            value: key("3"),
        };
        later.insert(
            2,
            Operation::completed(0, plain, 2_000, RedisOutput::Ok, 2_500),
        );
        later[3] = get_at(Some("3"), 10_000, 10_500);
        assert_eq!(check::<Redis>(&later).is_linearizable(), Some(true));
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
