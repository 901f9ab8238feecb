//! A command a member forwards to the leader of the command's shard, and the
//! leader's reply: how a client connected to any member gets an answer
//! without following `-MOVED`. Pure: encoding and decoding; `node::core`
//! sends and serves them over the peer links, beside the replication
//! frames, which start with another magic.
//!
//! # Message (version 2, all integers little-endian, fixed width)
//!
//! ```text
//! offset size field     meaning
//!      0    4 magic     b"KFWD"
//!      4    4 crc       CRC32 (crc32fast) of bytes 8..end
//!      8    1 version   FORWARD_VERSION
//!      9    1 kind      1 Request, 2 Reply, 3 Transaction
//!     10    2 reserved  zero
//!     12    4 body_len  bytes after this header (the message's length - 24)
//!     16    8 id        the forwarding member's number for the request
//!     24    n body
//! ```
//!
//! Request body: `count u32`, then `count` arguments, each `len u32` and
//! its bytes (a command's name is the first).
//!
//! Transaction body (a MULTI/EXEC's queued keyed commands, run at the
//! leader as one EXEC): `watcher u64`, the forwarding member's connection
//! whose keys the leader watches for it (0: none), then `count u32`
//! commands, each a request body. Version 2 added it; version 1 had only
//! requests and replies.
//!
//! Reply body: one reply, each a tag byte then its fields:
//!
//! ```text
//! tag reply      fields
//!   1 Simple     len u32, UTF-8 bytes
//!   2 Error      len u32, UTF-8 bytes
//!   3 Integer    i64
//!   4 Bulk       len u32, bytes
//!   5 Array      count u32, that many replies
//!   6 Null
//!   7 NullArray
//!   8 Double     the f64's bits, u64
//!   9 Boolean    u8, 0 or 1
//!  10 Map        count u32, that many key and value replies
//! ```
//!
//! Bytes from a peer are untrusted: decoding never panics, checks every count
//! against the bytes left before it allocates for it, nests replies at most
//! [`REPLY_DEPTH_MAX`] deep, and accepts one encoding of each message
//! (`encode(decode(bytes)) == bytes`).

use crate::resp::Reply;

/// The first bytes of every forwarding message.
pub const FORWARD_MAGIC: [u8; 4] = *b"KFWD";
/// The version this build speaks.
pub const FORWARD_VERSION: u8 = 2;
/// Bytes before the body.
pub const FORWARD_HEADER_BYTES: usize = 24;
/// How deep replies nest in a reply (no command's reply nests past 3: an
/// EXEC of CLUSTER SLOTS-like arrays would be the deepest).
pub const REPLY_DEPTH_MAX: usize = 8;

const KIND_REQUEST: u8 = 1;
const KIND_REPLY: u8 = 2;
const KIND_TRANSACTION: u8 = 3;

/// One forwarding message.
#[derive(Clone, Debug, PartialEq)]
pub enum Forward {
    Request {
        id: u64,
        args: Vec<Vec<u8>>,
    },
    Reply {
        id: u64,
        reply: Reply,
    },
    /// A transaction's keyed commands, all of one shard, run as one EXEC,
    /// checking the keys the leader watches for connection `watcher` of
    /// the forwarding member (0: none).
    Transaction {
        id: u64,
        watcher: u64,
        commands: Vec<Vec<Vec<u8>>>,
    },
}

/// Why bytes are not a forwarding message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    #[error("the message ends early")]
    Truncated,
    #[error("bad magic")]
    Magic,
    #[error("version {0}, this build speaks {FORWARD_VERSION}")]
    Version(u8),
    #[error("checksum mismatch")]
    Checksum,
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("replies nest deeper than {REPLY_DEPTH_MAX}")]
    TooDeep,
}

/// Whether `frame` is a forwarding message (rather than a replication one).
pub fn is_forward(frame: &[u8]) -> bool {
    frame.starts_with(&FORWARD_MAGIC)
}

/// The bytes of `message`.
pub fn encode(message: &Forward) -> Vec<u8> {
    let (kind, id) = match message {
        Forward::Request { id, .. } => (KIND_REQUEST, *id),
        Forward::Reply { id, .. } => (KIND_REPLY, *id),
        Forward::Transaction { id, .. } => (KIND_TRANSACTION, *id),
    };
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&FORWARD_MAGIC);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&[FORWARD_VERSION, kind, 0, 0]);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&id.to_le_bytes());
    match message {
        Forward::Request { args, .. } => put_args(&mut out, args),
        Forward::Reply { reply, .. } => put_reply(&mut out, reply),
        Forward::Transaction {
            watcher, commands, ..
        } => {
            out.extend_from_slice(&watcher.to_le_bytes());
            put_len(&mut out, commands.len());
            for args in commands {
                put_args(&mut out, args);
            }
        }
    }
    let body_len = u32::try_from(out.len() - FORWARD_HEADER_BYTES)
        .expect("the sender bounds a message by PEER_FRAME_BYTES_MAX");
    out[12..16].copy_from_slice(&body_len.to_le_bytes());
    let crc = crc32fast::hash(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).expect("the sender bounds a message by PEER_FRAME_BYTES_MAX");
    out.extend_from_slice(&len.to_le_bytes());
}

fn put_args(out: &mut Vec<u8>, args: &[Vec<u8>]) {
    put_len(out, args.len());
    for arg in args {
        put_bytes(out, arg);
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn put_reply(out: &mut Vec<u8>, reply: &Reply) {
    match reply {
        Reply::Simple(text) => {
            out.push(1);
            put_bytes(out, text.as_bytes());
        }
        Reply::Error(text) => {
            out.push(2);
            put_bytes(out, text.as_bytes());
        }
        Reply::Integer(value) => {
            out.push(3);
            out.extend_from_slice(&value.to_le_bytes());
        }
        Reply::Bulk(bytes) => {
            out.push(4);
            put_bytes(out, bytes);
        }
        Reply::Array(items) => {
            out.push(5);
            put_len(out, items.len());
            for item in items {
                put_reply(out, item);
            }
        }
        Reply::Null => out.push(6),
        Reply::NullArray => out.push(7),
        Reply::Double(value) => {
            out.push(8);
            out.extend_from_slice(&value.to_bits().to_le_bytes());
        }
        Reply::Boolean(value) => {
            out.push(9);
            out.push(u8::from(*value));
        }
        Reply::Map(pairs) => {
            out.push(10);
            put_len(out, pairs.len());
            for (key, value) in pairs {
                put_reply(out, key);
                put_reply(out, value);
            }
        }
    }
}

/// Decodes one whole message.
pub fn decode(bytes: &[u8]) -> Result<Forward, ForwardError> {
    if bytes.len() < FORWARD_HEADER_BYTES {
        return Err(ForwardError::Truncated);
    }
    if !is_forward(bytes) {
        return Err(ForwardError::Magic);
    }
    if bytes[8] != FORWARD_VERSION {
        return Err(ForwardError::Version(bytes[8]));
    }
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[8..]) != crc {
        return Err(ForwardError::Checksum);
    }
    if bytes[10..12] != [0, 0] {
        return Err(ForwardError::Malformed("reserved"));
    }
    let body_len = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    if body_len as usize != bytes.len() - FORWARD_HEADER_BYTES {
        return Err(ForwardError::Malformed("body_len"));
    }
    let id = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let mut body = Reader {
        bytes: &bytes[FORWARD_HEADER_BYTES..],
    };
    let message = match bytes[9] {
        KIND_REQUEST => Forward::Request {
            id,
            args: body.args()?,
        },
        KIND_TRANSACTION => {
            let watcher = body.u64()?;
            // Each command takes at least its 4-byte count.
            let count = body.len(4)?;
            let mut commands = Vec::with_capacity(count);
            for _ in 0..count {
                commands.push(body.args()?);
            }
            Forward::Transaction {
                id,
                watcher,
                commands,
            }
        }
        KIND_REPLY => Forward::Reply {
            id,
            reply: body.reply(0)?,
        },
        _ => return Err(ForwardError::Malformed("kind")),
    };
    if !body.bytes.is_empty() {
        return Err(ForwardError::Malformed("trailing bytes"));
    }
    Ok(message)
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], ForwardError> {
        if self.bytes.len() < count {
            return Err(ForwardError::Truncated);
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, ForwardError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, ForwardError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    /// A count of items each at least `item_bytes` long: refused if the
    /// bytes left cannot hold them, before anything is allocated.
    fn len(&mut self, item_bytes: usize) -> Result<usize, ForwardError> {
        let count = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        if count.saturating_mul(item_bytes) > self.bytes.len() {
            return Err(ForwardError::Truncated);
        }
        Ok(count)
    }

    fn bytes(&mut self) -> Result<&'a [u8], ForwardError> {
        let len = self.len(1)?;
        self.take(len)
    }

    fn args(&mut self) -> Result<Vec<Vec<u8>>, ForwardError> {
        // Each argument takes at least its 4-byte length.
        let count = self.len(4)?;
        let mut args = Vec::with_capacity(count);
        for _ in 0..count {
            args.push(self.bytes()?.to_vec());
        }
        Ok(args)
    }

    fn text(&mut self) -> Result<String, ForwardError> {
        std::str::from_utf8(self.bytes()?)
            .map(str::to_owned)
            .map_err(|_| ForwardError::Malformed("text"))
    }

    fn reply(&mut self, depth: usize) -> Result<Reply, ForwardError> {
        if depth > REPLY_DEPTH_MAX {
            return Err(ForwardError::TooDeep);
        }
        Ok(match self.u8()? {
            1 => Reply::Simple(self.text()?),
            2 => Reply::Error(self.text()?),
            3 => Reply::Integer(self.u64()? as i64),
            4 => Reply::Bulk(self.bytes()?.to_vec()),
            5 => {
                // Each reply takes at least its tag byte.
                let count = self.len(1)?;
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(self.reply(depth + 1)?);
                }
                Reply::Array(items)
            }
            6 => Reply::Null,
            7 => Reply::NullArray,
            8 => Reply::Double(f64::from_bits(self.u64()?)),
            9 => match self.u8()? {
                0 => Reply::Boolean(false),
                1 => Reply::Boolean(true),
                _ => return Err(ForwardError::Malformed("boolean")),
            },
            10 => {
                let count = self.len(2)?;
                let mut pairs = Vec::with_capacity(count);
                for _ in 0..count {
                    pairs.push((self.reply(depth + 1)?, self.reply(depth + 1)?));
                }
                Reply::Map(pairs)
            }
            _ => return Err(ForwardError::Malformed("reply tag")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn every_reply() -> Reply {
        Reply::Array(vec![
            Reply::Simple("OK".into()),
            Reply::Error("TRYAGAIN later".into()),
            Reply::Integer(-7),
            Reply::Bulk(vec![0, 255, b'\r', b'\n']),
            Reply::Null,
            Reply::NullArray,
            Reply::Double(1.5),
            Reply::Boolean(true),
            Reply::Map(vec![(Reply::Bulk(b"k".to_vec()), Reply::Integer(1))]),
        ])
    }

    #[test]
    fn requests_and_every_kind_of_reply_round_trip() {
        for message in [
            Forward::Request {
                id: 9,
                args: vec![b"SET".to_vec(), b"k".to_vec(), Vec::new()],
            },
            Forward::Request {
                id: 0,
                args: Vec::new(),
            },
            Forward::Reply {
                id: u64::MAX,
                reply: every_reply(),
            },
            Forward::Transaction {
                id: 4,
                watcher: 0,
                commands: vec![
                    vec![b"INCR".to_vec(), b"k".to_vec()],
                    Vec::new(),
                    vec![b"SET".to_vec(), b"k".to_vec(), vec![0; 3]],
                ],
            },
            Forward::Transaction {
                id: 5,
                watcher: u64::MAX,
                commands: Vec::new(),
            },
        ] {
            let bytes = encode(&message);
            assert!(is_forward(&bytes));
            assert_eq!(decode(&bytes), Ok(message));
        }
    }

    #[test]
    fn the_header_is_as_documented() {
        let bytes = encode(&Forward::Request {
            id: 5,
            args: vec![b"GET".to_vec()],
        });
        assert_eq!(&bytes[0..4], b"KFWD");
        assert_eq!(bytes[8], FORWARD_VERSION);
        assert_eq!(bytes[9], KIND_REQUEST);
        assert_eq!(&bytes[12..16], &(bytes.len() as u32 - 24).to_le_bytes());
        assert_eq!(&bytes[16..24], &5u64.to_le_bytes());
        assert_eq!(&bytes[24..28], &1u32.to_le_bytes());
        assert_eq!(&bytes[28..32], &3u32.to_le_bytes());
        assert_eq!(&bytes[32..35], b"GET");
    }

    /// Damage and hostile counts are refused; nothing panics or allocates
    /// past the input.
    #[test]
    fn damaged_truncated_deep_and_oversized_messages_are_refused() {
        let good = encode(&Forward::Reply {
            id: 1,
            reply: every_reply(),
        });
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = good.clone();
        flipped[30] ^= 1;
        assert_eq!(decode(&flipped), Err(ForwardError::Checksum));
        let mut deep = Reply::Integer(1);
        for _ in 0..=REPLY_DEPTH_MAX {
            deep = Reply::Array(vec![deep]);
        }
        let too_deep = encode(&Forward::Reply { id: 1, reply: deep });
        assert_eq!(decode(&too_deep), Err(ForwardError::TooDeep));
        // A request claiming four billion arguments in a few bytes.
        let mut huge = encode(&Forward::Request {
            id: 1,
            args: Vec::new(),
        });
        huge[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32fast::hash(&huge[8..]);
        huge[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&huge), Err(ForwardError::Truncated));
        // A transaction claiming four billion commands, and one whose one
        // command claims four billion arguments.
        for (at, count) in [(32, u32::MAX), (36, u32::MAX)] {
            let mut huge = encode(&Forward::Transaction {
                id: 1,
                watcher: 7,
                commands: vec![Vec::new()],
            });
            huge[at..at + 4].copy_from_slice(&count.to_le_bytes());
            let crc = crc32fast::hash(&huge[8..]);
            huge[4..8].copy_from_slice(&crc.to_le_bytes());
            assert_eq!(decode(&huge), Err(ForwardError::Truncated), "count at {at}");
        }
        let transaction = encode(&Forward::Transaction {
            id: 2,
            watcher: 1,
            commands: vec![vec![b"GET".to_vec(), b"k".to_vec()]],
        });
        for cut in 0..transaction.len() {
            assert!(decode(&transaction[..cut]).is_err(), "cut at {cut}");
        }
    }

    proptest! {
        #[test]
        fn any_bytes_decode_without_panic_and_canonically(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut framed = encode(&Forward::Request { id: 3, args: Vec::new() });
            framed.truncate(FORWARD_HEADER_BYTES);
            framed.extend_from_slice(&bytes);
            let body_len = bytes.len() as u32;
            framed[12..16].copy_from_slice(&body_len.to_le_bytes());
            let crc = crc32fast::hash(&framed[8..]);
            framed[4..8].copy_from_slice(&crc.to_le_bytes());
            if let Ok(message) = decode(&framed) {
                prop_assert_eq!(encode(&message), framed);
            }
        }
    }
}
