//! What the simulated clients send: random Redis string commands over a few
//! keys, as RESP requests, and how their replies read back as model outputs.
//!
//! Keys come in hash-tag groups (`{t0}a`, `{t0}b`, ...) so that an MSET can
//! write a whole group atomically and the checker partitions by group (see
//! [`crate::models::redis`]). Few keys, so operations on one key overlap and a
//! lost or reordered write shows. SET and GETSET values are unique
//! (`c<client>-<sequence>.` and filler), so a read names the write it saw.

use keel_engine::resp::{Protocol, Reply};
use keel_wal::memory::SplitMix64;

use crate::models::redis::{RedisInput, RedisOutput};

/// Hash-tag groups of keys.
pub const TAGS: u64 = 3;
/// Keys in each group.
pub const KEYS_PER_TAG: u64 = 2;
/// Longest time to live a SET PX or PEXPIRE asks for: a few hundred ms, so
/// keys expire while the clients still read them.
pub const TTL_MS_MAX: u64 = 300;
/// Longest of the short times to live most expiries get: a key is written
/// every few tens of ms, so a longer one is mostly overwritten before it
/// fires, and a read at the deadline's millisecond (what shows a boundary
/// error) comes rarely.
pub const TTL_SHORT_MS_MAX: u64 = 20;
/// Most filler bytes after a value's unique prefix: values of a few hundred
/// bytes make log frames straddle 512-byte sectors, so a torn sector can
/// leave a frame's header intact and its payload garbage.
pub const VALUE_PADDING_BYTES_MAX: u64 = 400;
/// Largest reply a client buffers: a GET of the longest value, and its header.
pub const REPLY_BYTES_MAX: usize = 1 << 10;

/// The reply INCR gives for a value that is not a decimal i64 or would
/// overflow (Redis's text).
const NOT_AN_INTEGER: &[u8] = b"ERR value is not an integer or out of range";

/// Percentages of each command in the mix, in the order [`next_input`] draws them.
const MIX_PERCENT: [(Command, u64); 10] = [
    (Command::Set, 18),
    (Command::SetPx, 2),
    (Command::SetPxAt, 5),
    (Command::Get, 30),
    (Command::Del, 4),
    (Command::Incr, 12),
    (Command::GetSet, 9),
    (Command::MSet, 8),
    (Command::PExpire, 3),
    (Command::PExpireAt, 9),
];

#[derive(Clone, Copy, Debug)]
enum Command {
    Set,
    SetPx,
    SetPxAt,
    Get,
    Del,
    Incr,
    GetSet,
    MSet,
    PExpire,
    PExpireAt,
}

/// The key `index` of hash-tag group `tag`.
pub fn key(tag: u64, index: u64) -> Vec<u8> {
    let suffix = char::from(b'a' + u8::try_from(index).expect("few keys per tag"));
    format!("{{t{tag}}}{suffix}").into_bytes()
}

/// Every key the workload uses, in order.
pub fn all_keys() -> Vec<Vec<u8>> {
    (0..TAGS)
        .flat_map(|tag| (0..KEYS_PER_TAG).map(move |index| key(tag, index)))
        .collect()
}

/// One client's stream of commands.
#[derive(Debug)]
pub struct ClientWorkload {
    client: u64,
    rng: SplitMix64,
    /// Unique values written so far.
    written: u64,
    /// A read planned at an absolute expiry's boundary: the key, and the
    /// millisecond to send it in (see [`ClientWorkload::probe_wait_ms`]).
    probe: Option<(Vec<u8>, u64)>,
}

impl ClientWorkload {
    pub fn new(client: u64, seed: u64) -> ClientWorkload {
        ClientWorkload {
            client,
            rng: SplitMix64::new(seed),
            written: 0,
            probe: None,
        }
    }

    /// The next command to send, at `now_unix_ms` on the node's clock (an
    /// absolute expiry is a short time after it).
    pub fn next_input(&mut self, now_unix_ms: u64) -> RedisInput {
        if let Some((key, _)) = self.probe.take_if(|(_, send_ms)| *send_ms <= now_unix_ms) {
            return RedisInput::Get { key };
        }
        let total: u64 = MIX_PERCENT.iter().map(|(_, percent)| percent).sum();
        let mut draw = self.rng.below(total);
        let command = MIX_PERCENT
            .iter()
            .find(|(_, percent)| {
                let hit = draw < *percent;
                draw = draw.saturating_sub(*percent);
                hit
            })
            .map(|(command, _)| *command)
            .expect("the draw falls in the mix");
        let tag = self.rng.below(TAGS);
        let key = key(tag, self.rng.below(KEYS_PER_TAG));
        match command {
            Command::Set => RedisInput::Set {
                key,
                value: self.unique_value(),
            },
            Command::Get => RedisInput::Get { key },
            Command::Del => RedisInput::Del { key },
            Command::Incr => RedisInput::Incr { key },
            Command::GetSet => RedisInput::GetSet {
                key,
                value: self.unique_value(),
            },
            Command::MSet => RedisInput::MSet {
                pairs: (0..KEYS_PER_TAG)
                    .map(|index| (self::key(tag, index), self.unique_value()))
                    .collect(),
            },
            Command::SetPx => RedisInput::SetPx {
                key,
                value: self.unique_value(),
                milliseconds: self.ttl_ms(),
            },
            Command::SetPxAt => {
                let unix_ms = self.deadline_probed(&key, now_unix_ms);
                RedisInput::SetPxAt {
                    key,
                    value: self.unique_value(),
                    unix_ms,
                }
            }
            Command::PExpireAt => {
                let unix_ms = self.deadline_probed(&key, now_unix_ms);
                RedisInput::PExpireAt { key, unix_ms }
            }
            // One in four deletes the key at once, as a time of zero does.
            Command::PExpire => RedisInput::PExpire {
                key,
                milliseconds: if self.rng.below(4) == 0 {
                    0
                } else {
                    i64::try_from(self.ttl_ms()).expect("a short time to live")
                },
            },
        }
    }

    /// An absolute deadline a short time after `now_unix_ms`, and a read of
    /// `key` planned to reach the node in the deadline's millisecond (one
    /// time in three) or the one before (a message takes a millisecond),
    /// where a key that expires a millisecond late or early shows. The one
    /// before more often: a read there shows an early expiry only if no
    /// write holds its reply past the deadline.
    fn deadline_probed(&mut self, key: &[u8], now_unix_ms: u64) -> u64 {
        let deadline = now_unix_ms + self.ttl_ms();
        let arrive_ms = deadline - u64::from(self.rng.below(3) != 0);
        self.probe = Some((key.to_vec(), arrive_ms.saturating_sub(1)));
        deadline
    }

    /// How long to wait before the next command when a boundary read is
    /// planned: until its millisecond (none if it is due, or none planned).
    pub fn probe_wait_ms(&self, now_unix_ms: u64) -> Option<u64> {
        self.probe
            .as_ref()
            .map(|(_, send_ms)| send_ms.saturating_sub(now_unix_ms))
    }

    /// Three times in four a short time to live, else up to [`TTL_MS_MAX`].
    fn ttl_ms(&mut self) -> u64 {
        let most = if self.rng.below(4) == 0 {
            TTL_MS_MAX
        } else {
            TTL_SHORT_MS_MAX
        };
        1 + self.rng.below(most)
    }

    fn unique_value(&mut self) -> Vec<u8> {
        self.written += 1;
        let mut value = format!("c{}-{}.", self.client, self.written).into_bytes();
        let padding = self.rng.below(VALUE_PADDING_BYTES_MAX + 1) as usize;
        value.resize(value.len() + padding, b'x');
        value
    }
}

/// Whether `input` changes nothing: an unanswered read can be dropped from the
/// history, an unanswered write may still take effect.
pub fn is_read(input: &RedisInput) -> bool {
    matches!(input, RedisInput::Get { .. })
}

/// The request for `input`, as a RESP array of bulk strings.
pub fn encode(input: &RedisInput) -> Vec<u8> {
    let milliseconds_text;
    let args: Vec<&[u8]> = match input {
        RedisInput::Set { key, value } => vec![b"SET", key, value],
        RedisInput::Get { key } => vec![b"GET", key],
        RedisInput::Del { key } => vec![b"DEL", key],
        RedisInput::Incr { key } => vec![b"INCR", key],
        RedisInput::GetSet { key, value } => vec![b"GETSET", key, value],
        RedisInput::MSet { pairs } => std::iter::once(&b"MSET"[..])
            .chain(pairs.iter().flat_map(|(key, value)| [&key[..], &value[..]]))
            .collect(),
        RedisInput::SetPx {
            key,
            value,
            milliseconds,
        } => {
            milliseconds_text = milliseconds.to_string();
            vec![b"SET", key, value, b"PX", milliseconds_text.as_bytes()]
        }
        RedisInput::SetPxAt {
            key,
            value,
            unix_ms,
        } => {
            milliseconds_text = unix_ms.to_string();
            vec![b"SET", key, value, b"PXAT", milliseconds_text.as_bytes()]
        }
        RedisInput::PExpire { key, milliseconds } => {
            milliseconds_text = milliseconds.to_string();
            vec![b"PEXPIRE", key, milliseconds_text.as_bytes()]
        }
        RedisInput::PExpireAt { key, unix_ms } => {
            milliseconds_text = unix_ms.to_string();
            vec![b"PEXPIREAT", key, milliseconds_text.as_bytes()]
        }
    };
    let request = Reply::Array(
        args.into_iter()
            .map(|arg| Reply::Bulk(arg.to_vec()))
            .collect(),
    );
    let mut out = Vec::new();
    request.encode(Protocol::Resp2, &mut out);
    out
}

/// A reply a client cannot take as an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// An error reply other than INCR's: the client learns nothing certain.
    #[error("error reply: {0}")]
    Error(String),
    #[error("malformed reply: {0}")]
    Malformed(String),
    #[error("reply longer than {REPLY_BYTES_MAX} bytes")]
    TooLong,
}

/// The reply at the start of `buf` if it is all there.
pub fn parse_reply(buf: &[u8]) -> Result<Option<RedisOutput>, ReplyError> {
    let Some(line_end) = buf.windows(2).position(|pair| pair == b"\r\n") else {
        return if buf.len() > REPLY_BYTES_MAX {
            Err(ReplyError::TooLong)
        } else {
            Ok(None)
        };
    };
    let line = &buf[1..line_end];
    let text = || String::from_utf8_lossy(line).into_owned();
    let number = || -> Result<i64, ReplyError> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| ReplyError::Malformed(text()))
    };
    match buf[0] {
        b'+' if line == b"OK" => Ok(Some(RedisOutput::Ok)),
        b':' => Ok(Some(RedisOutput::Integer(number()?))),
        b'-' if line == NOT_AN_INTEGER => Ok(Some(RedisOutput::NotAnInteger)),
        b'-' => Err(ReplyError::Error(text())),
        b'$' => {
            let Ok(length) = usize::try_from(number()?) else {
                return Ok(Some(RedisOutput::Bulk(None)));
            };
            if length > REPLY_BYTES_MAX {
                return Err(ReplyError::TooLong);
            }
            let start = line_end + 2;
            if buf.len() < start + length + 2 {
                return Ok(None);
            }
            Ok(Some(RedisOutput::Bulk(Some(
                buf[start..start + length].to_vec(),
            ))))
        }
        _ => Err(ReplyError::Malformed(text())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::redis::hash_tag;

    #[test]
    fn replies_parse_once_complete() {
        assert_eq!(parse_reply(b"+OK\r\n"), Ok(Some(RedisOutput::Ok)));
        assert_eq!(parse_reply(b":12\r\n"), Ok(Some(RedisOutput::Integer(12))));
        assert_eq!(parse_reply(b"$-1\r\n"), Ok(Some(RedisOutput::Bulk(None))));
        assert_eq!(parse_reply(b"$3\r\nab"), Ok(None));
        assert_eq!(parse_reply(b":1"), Ok(None));
        assert_eq!(
            parse_reply(b"$3\r\nabc\r\n"),
            Ok(Some(RedisOutput::Bulk(Some(b"abc".to_vec()))))
        );
        assert_eq!(
            parse_reply(b"-ERR value is not an integer or out of range\r\n"),
            Ok(Some(RedisOutput::NotAnInteger))
        );
        assert!(matches!(
            parse_reply(b"-ERR shard 0 stopped\r\n"),
            Err(ReplyError::Error(_))
        ));
        assert!(matches!(
            parse_reply(b"*1\r\n"),
            Err(ReplyError::Malformed(_))
        ));
        assert_eq!(parse_reply(&[b'x'; 2000]), Err(ReplyError::TooLong));
    }

    #[test]
    fn requests_are_resp_arrays() {
        let expire = RedisInput::PExpire {
            key: b"k".to_vec(),
            milliseconds: 0,
        };
        assert_eq!(
            encode(&expire),
            b"*3\r\n$7\r\nPEXPIRE\r\n$1\r\nk\r\n$1\r\n0\r\n"
        );
        let mset = RedisInput::MSet {
            pairs: vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec()),
            ],
        };
        assert_eq!(
            encode(&mset),
            b"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n"
        );
    }

    /// Every command kind comes up, MSETs stay in one tag, and values never repeat.
    #[test]
    fn the_mix_covers_every_command_with_unique_values() {
        let mut workload = ClientWorkload::new(4, 9);
        let inputs: Vec<RedisInput> = (0..2_000).map(|_| workload.next_input(1_000)).collect();
        let kinds: std::collections::HashSet<_> =
            inputs.iter().map(std::mem::discriminant).collect();
        assert_eq!(kinds.len(), MIX_PERCENT.len());
        let mut values = std::collections::BTreeSet::new();
        for input in &inputs {
            let written: Vec<&Vec<u8>> = match input {
                RedisInput::Set { value, .. }
                | RedisInput::SetPx { value, .. }
                | RedisInput::SetPxAt { value, .. }
                | RedisInput::GetSet { value, .. } => vec![value],
                RedisInput::MSet { pairs } => {
                    let tag = hash_tag(&pairs[0].0);
                    assert!(pairs.iter().all(|(key, _)| hash_tag(key) == tag));
                    pairs.iter().map(|(_, value)| value).collect()
                }
                _ => Vec::new(),
            };
            for value in written {
                assert!(values.insert(value.clone()), "{value:?} written twice");
            }
        }
        assert_eq!(all_keys().len() as u64, TAGS * KEYS_PER_TAG);
    }
}
