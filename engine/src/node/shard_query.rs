//! A request over the whole of one shard's key space (what DBSIZE, KEYS,
//! SCAN, RANDOMKEY and FLUSHALL ask each shard), about a connection's
//! watched keys, or about the shard's followers (WAIT), as a member
//! forwards it to the shard's leader for a plain connection: the arguments
//! of a forwarded command (`peer::forward`, whose frame names the shard),
//! and the answer as a reply. Pure.
//!
//! # Arguments (numbers in decimal ASCII)
//!
//! ```text
//! shard-count
//! shard-keys      pattern
//! shard-randomkey pick
//! shard-scan      cursor count [pattern]
//! shard-flushall
//! shard-watch     connection key...
//! shard-unwatch   connection
//! shard-replicas  [term index]
//! ```
//!
//! `connection` is the forwarding member's id of the client connection: the
//! leader watches the keys for it under an id of its own. `shard-replicas`
//! asks how many followers hold the log through the entry `term index`
//! (the leader's commit index when it has none).
//!
//! The names are no Redis command's (a hyphen), so a leader never takes
//! one for a client's command. Answers: COUNT an integer; KEYS an array of
//! bulks; RANDOMKEY a bulk or null; SCAN an array of the next cursor (a
//! bulk) and an array of bulks; FLUSHALL the shard's own reply; REPLICAS an
//! array of three integers, the term and index of the entry counted
//! through and the count. An error reply stands for itself.

use keel_replication::EntryId;

use crate::node::io::{ShardReply, ShardRequest};
use crate::resp::Reply;

const COUNT: &[u8] = b"shard-count";
const KEYS: &[u8] = b"shard-keys";
const RANDOM_KEY: &[u8] = b"shard-randomkey";
const SCAN: &[u8] = b"shard-scan";
const FLUSH_ALL: &[u8] = b"shard-flushall";
const WATCH: &[u8] = b"shard-watch";
const UNWATCH: &[u8] = b"shard-unwatch";
const REPLICAS: &[u8] = b"shard-replicas";

fn number(value: u64) -> Vec<u8> {
    value.to_string().into_bytes()
}

fn parse(bytes: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(bytes).ok()?;
    // One spelling of each number: no sign, no leading zero.
    if text.starts_with('+') || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse().ok()
}

/// The arguments that carry `request`, if it is a whole-shard query.
pub fn encode(request: &ShardRequest) -> Option<Vec<Vec<u8>>> {
    Some(match request {
        ShardRequest::Count => vec![COUNT.to_vec()],
        ShardRequest::Keys { pattern } => vec![KEYS.to_vec(), pattern.clone()],
        ShardRequest::RandomKey { pick } => vec![RANDOM_KEY.to_vec(), number(*pick)],
        ShardRequest::Scan {
            cursor,
            count,
            pattern,
        } => {
            let mut args = vec![SCAN.to_vec(), number(*cursor), number(*count as u64)];
            args.extend(pattern.clone());
            args
        }
        ShardRequest::FlushAll => vec![FLUSH_ALL.to_vec()],
        ShardRequest::Watch { client, keys } => {
            let mut args = vec![WATCH.to_vec(), number(*client)];
            args.extend(keys.iter().cloned());
            args
        }
        ShardRequest::Unwatch { client } => vec![UNWATCH.to_vec(), number(*client)],
        ShardRequest::Replicas { through: None } => vec![REPLICAS.to_vec()],
        ShardRequest::Replicas {
            through: Some(through),
        } => vec![
            REPLICAS.to_vec(),
            number(through.term.0),
            number(through.index.0),
        ],
        _ => return None,
    })
}

/// The query `args` carry, if they are one (exactly as [`encode`] writes).
pub fn decode(args: &[Vec<u8>]) -> Option<ShardRequest> {
    let (name, rest) = args.split_first()?;
    Some(match (name.as_slice(), rest) {
        (COUNT, []) => ShardRequest::Count,
        (KEYS, [pattern]) => ShardRequest::Keys {
            pattern: pattern.clone(),
        },
        (RANDOM_KEY, [pick]) => ShardRequest::RandomKey { pick: parse(pick)? },
        (SCAN, [cursor, count, pattern @ ..]) if pattern.len() <= 1 => ShardRequest::Scan {
            cursor: parse(cursor)?,
            count: usize::try_from(parse(count)?).ok()?,
            pattern: pattern.first().cloned(),
        },
        (FLUSH_ALL, []) => ShardRequest::FlushAll,
        (WATCH, [client, keys @ ..]) if !keys.is_empty() => ShardRequest::Watch {
            client: parse(client)?,
            keys: keys.to_vec(),
        },
        (UNWATCH, [client]) => ShardRequest::Unwatch {
            client: parse(client)?,
        },
        (REPLICAS, []) => ShardRequest::Replicas { through: None },
        (REPLICAS, [term, index]) => ShardRequest::Replicas {
            through: Some(EntryId::new(parse(term)?, parse(index)?)),
        },
        _ => return None,
    })
}

fn integer(value: u64) -> Reply {
    Reply::Integer(i64::try_from(value).unwrap_or(i64::MAX))
}

/// The reply that carries a query's answer back to the forwarding member.
pub fn reply(answer: ShardReply) -> Reply {
    let bulks = |keys: Vec<Vec<u8>>| Reply::Array(keys.into_iter().map(Reply::Bulk).collect());
    match answer {
        ShardReply::Reply(reply) => reply,
        ShardReply::Count(count) => integer(count),
        ShardReply::Keys(keys) => bulks(keys),
        ShardReply::Key(Some(key)) => Reply::Bulk(key),
        ShardReply::Key(None) => Reply::Null,
        ShardReply::Scan { next, keys } => {
            Reply::Array(vec![Reply::Bulk(number(next)), bulks(keys)])
        }
        ShardReply::Replicas { through, count } => Reply::Array(vec![
            integer(through.term.0),
            integer(through.index.0),
            integer(count as u64),
        ]),
        ShardReply::Stats(_) => unreachable!("a shard's statistics are never forwarded"),
    }
}

/// The answer to `request` that the leader's `reply` carries; an error
/// reply, or one that is not an answer to it, becomes an error.
pub fn answer(request: &ShardRequest, reply: Reply) -> ShardReply {
    let keys = |items: Vec<Reply>| -> Option<Vec<Vec<u8>>> {
        items
            .into_iter()
            .map(|item| match item {
                Reply::Bulk(key) => Some(key),
                _ => None,
            })
            .collect()
    };
    let answer = match (request, reply) {
        (_, error @ Reply::Error(_)) => return ShardReply::Reply(error),
        (ShardRequest::Count, Reply::Integer(count)) => {
            u64::try_from(count).ok().map(ShardReply::Count)
        }
        (ShardRequest::Keys { .. }, Reply::Array(items)) => keys(items).map(ShardReply::Keys),
        (ShardRequest::RandomKey { .. }, Reply::Bulk(key)) => Some(ShardReply::Key(Some(key))),
        (ShardRequest::RandomKey { .. }, Reply::Null) => Some(ShardReply::Key(None)),
        (ShardRequest::Scan { .. }, Reply::Array(pair)) => match <[Reply; 2]>::try_from(pair) {
            Ok([Reply::Bulk(next), Reply::Array(items)]) => parse(&next)
                .zip(keys(items))
                .map(|(next, keys)| ShardReply::Scan { next, keys }),
            _ => None,
        },
        (ShardRequest::FlushAll, reply) => Some(ShardReply::Reply(reply)),
        (ShardRequest::Replicas { .. }, Reply::Array(fields)) => match fields.as_slice() {
            [Reply::Integer(term), Reply::Integer(index), Reply::Integer(count)] => {
                match (
                    u64::try_from(*term),
                    u64::try_from(*index),
                    usize::try_from(*count),
                ) {
                    (Ok(term), Ok(index), Ok(count)) => Some(ShardReply::Replicas {
                        through: EntryId::new(term, index),
                        count,
                    }),
                    _ => None,
                }
            }
            _ => None,
        },
        _ => None,
    };
    answer.unwrap_or_else(|| {
        ShardReply::Reply(Reply::Error(
            "ERR the shard's leader answered a forwarded query with something else".into(),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queries() -> Vec<ShardRequest> {
        vec![
            ShardRequest::Count,
            ShardRequest::Keys {
                pattern: b"a*".to_vec(),
            },
            ShardRequest::RandomKey { pick: u64::MAX },
            ShardRequest::Scan {
                cursor: 0,
                count: 10,
                pattern: None,
            },
            ShardRequest::Scan {
                cursor: 1 << 40,
                count: 1,
                pattern: Some(b"k:*".to_vec()),
            },
            ShardRequest::FlushAll,
            ShardRequest::Watch {
                client: 12,
                keys: vec![b"a".to_vec(), b"b".to_vec()],
            },
            ShardRequest::Unwatch { client: 12 },
            ShardRequest::Replicas { through: None },
            ShardRequest::Replicas {
                through: Some(EntryId::new(3, 1 << 40)),
            },
        ]
    }

    #[test]
    fn every_query_round_trips_and_nothing_else_encodes() {
        for query in queries() {
            let args = encode(&query).expect("a query");
            assert_eq!(
                format!("{:?}", decode(&args).expect("decodes")),
                format!("{query:?}")
            );
        }
        assert_eq!(encode(&ShardRequest::Stats), None);
        let command = ShardRequest::Command {
            args: vec![b"GET".to_vec(), b"k".to_vec()],
            stale: false,
        };
        assert_eq!(encode(&command), None);
    }

    #[test]
    fn client_commands_and_malformed_queries_are_not_queries() {
        for args in [
            vec![b"DBSIZE".to_vec()],
            vec![b"GET".to_vec(), b"shard-count".to_vec()],
            vec![b"shard-count".to_vec(), b"x".to_vec()],
            vec![b"shard-keys".to_vec()],
            vec![b"shard-randomkey".to_vec(), b"-1".to_vec()],
            vec![b"shard-randomkey".to_vec(), b"01".to_vec()],
            vec![b"shard-randomkey".to_vec(), b"+1".to_vec()],
            vec![b"shard-scan".to_vec(), b"0".to_vec()],
            vec![b"shard-watch".to_vec(), b"1".to_vec()],
            vec![b"shard-unwatch".to_vec()],
            vec![b"shard-replicas".to_vec(), b"1".to_vec()],
            vec![b"shard-replicas".to_vec(), b"1".to_vec(), b"x".to_vec()],
            vec![
                b"shard-scan".to_vec(),
                b"0".to_vec(),
                b"1".to_vec(),
                b"a".to_vec(),
                b"b".to_vec(),
            ],
            Vec::new(),
        ] {
            assert!(decode(&args).is_none(), "{args:?}");
        }
    }

    #[test]
    fn answers_round_trip_and_a_mismatch_is_an_error() {
        let cases = [
            (ShardRequest::Count, ShardReply::Count(7)),
            (
                ShardRequest::Keys {
                    pattern: b"*".to_vec(),
                },
                ShardReply::Keys(vec![b"a".to_vec(), Vec::new()]),
            ),
            (ShardRequest::RandomKey { pick: 3 }, ShardReply::Key(None)),
            (
                ShardRequest::RandomKey { pick: 3 },
                ShardReply::Key(Some(b"k".to_vec())),
            ),
            (
                ShardRequest::Scan {
                    cursor: 0,
                    count: 10,
                    pattern: None,
                },
                ShardReply::Scan {
                    next: 99,
                    keys: vec![b"k".to_vec()],
                },
            ),
            (ShardRequest::FlushAll, ShardReply::Reply(Reply::ok())),
            (
                ShardRequest::Replicas { through: None },
                ShardReply::Replicas {
                    through: EntryId::new(4, 120),
                    count: 2,
                },
            ),
        ];
        for (query, shard_reply) in cases {
            let expected = format!("{shard_reply:?}");
            assert_eq!(
                format!("{:?}", answer(&query, reply(shard_reply))),
                expected
            );
        }
        let error = Reply::Error("TRYAGAIN no leader".into());
        assert!(matches!(
            answer(&ShardRequest::Count, error.clone()),
            ShardReply::Reply(reply) if reply == error
        ));
        for (query, wrong) in [
            (ShardRequest::Count, Reply::Integer(-1)),
            (ShardRequest::Count, Reply::Null),
            (
                ShardRequest::Keys {
                    pattern: b"*".to_vec(),
                },
                Reply::Array(vec![Reply::Integer(1)]),
            ),
            (
                ShardRequest::Scan {
                    cursor: 0,
                    count: 1,
                    pattern: None,
                },
                Reply::Array(vec![Reply::Bulk(b"x".to_vec()), Reply::Array(Vec::new())]),
            ),
            (
                ShardRequest::Replicas { through: None },
                Reply::Array(vec![
                    Reply::Integer(4),
                    Reply::Integer(-1),
                    Reply::Integer(2),
                ]),
            ),
            (
                ShardRequest::Replicas { through: None },
                Reply::Array(vec![Reply::Integer(4), Reply::Integer(1)]),
            ),
        ] {
            assert!(
                matches!(answer(&query, wrong), ShardReply::Reply(Reply::Error(_))),
                "{query:?}"
            );
        }
    }
}
