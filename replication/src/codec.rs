//! The wire format of [`Envelope`]: what one member sends another. Bytes from a
//! peer are untrusted, so decoding never panics, never allocates more than the
//! input's own length, accepts exactly one encoding of each message (it is
//! canonical: `encode(decode(bytes)) == bytes`), and verifies each entry's own
//! checksum before the entry reaches the core (entries outlive the frame that
//! carried them: the follower re-frames them into its WAL).
//!
//! Hand-written rather than bincode: every count is bounded by the bytes that
//! remain before anything is allocated for it, which a derive cannot promise.
//!
//! # Frame (version 1, all integers little-endian, fixed width)
//!
//! ```text
//! offset size field      meaning
//!      0    4 magic      b"KLRM"
//!      4    4 frame_crc  CRC32 (crc32fast) of bytes 8..16+body_len
//!      8    1 version    MESSAGE_VERSION
//!      9    1 kind       the message's tag (below)
//!     10    2 reserved   zero
//!     12    4 body_len   bytes of the body that follows (at most
//!                        MESSAGE_BYTES_MAX - FRAME_HEADER_BYTES)
//!     16    8 from       sender's node id
//!     24    8 to         receiver's node id
//!     32    8 term       sender's term (Envelope::term)
//!     40    n message    the fields of the message's kind
//! ```
//!
//! An entry id is `term u64, index u64` (16 bytes); a bool is one byte, 0 or 1.
//!
//! # Messages (offsets from the start of `message`)
//!
//! ```text
//! kind message        fields
//!    1 PreVote        0 last: entry id
//!    2 PreVoteReply   0 granted: bool
//!    3 Vote           0 last: entry id, 16 transfer: bool
//!    4 VoteReply      0 granted: bool
//!    5 Append         0 prev: entry id, 16 commit u64, 24 read_round u64,
//!                     32 entry_count u32, 36 entries (below), one after another
//!    6 AppendReply    0 result u8 (0 Ok, 1 Reject), 1 reserved 7 zero bytes,
//!                     8 id: entry id (matched or hint), 24 read_round u64
//!    7 Snapshot       0 last: entry id, 16 membership (below), m offset u64,
//!                     m+8 done: bool, m+9 data_len u32, m+13 data
//!    8 SnapshotReply  0 last: entry id, 16 received u64, 24 installed: bool
//!    9 TimeoutNow     (nothing)
//! ```
//!
//! # Entry (inside Append)
//!
//! ```text
//! offset size field        meaning
//!      0    4 entry_crc    CRC32 of bytes 4..28+payload_len of this entry
//!      4    1 payload_kind 0 Noop, 1 Command, 2 Membership
//!      5    3 reserved     zero
//!      8    8 term
//!     16    8 index
//!     24    4 payload_len
//!     28    n payload      Noop: nothing; Command: the command's bytes;
//!                          Membership: a membership (below)
//! ```
//!
//! The entries of an Append follow `prev` without gaps (`prev.index + 1`, ...)
//! with terms that never decrease, starting at or above `prev.term`, and never
//! above the envelope's term: a leader sends nothing else, so anything else is
//! refused before the core sees it.
//!
//! # Membership
//!
//! ```text
//! voter_count u32, voter ids u64 each, learner_count u32, learner ids u64 each
//! ```
//!
//! Ids strictly ascending within each list (a set has one encoding).
//!
//! # Version changes
//! - 1: first version.

use std::collections::BTreeSet;

use crate::message::{AppendResult, Envelope, Message};
use crate::types::{
    Entry, EntryId, EntryPayload, LogIndex, Membership, NodeId, SnapshotMeta, Term,
};

/// `b"KLRM"` read as a little-endian u32.
pub const MESSAGE_MAGIC: u32 = u32::from_le_bytes(*b"KLRM");
/// The message format version this code writes and reads.
pub const MESSAGE_VERSION: u8 = 1;
/// Size of the frame header before the body.
pub const FRAME_HEADER_BYTES: usize = 16;
/// Largest whole frame, header included: bounds an append batch and a
/// snapshot chunk (the core's flow control and chunk sizes stay below it).
pub const MESSAGE_BYTES_MAX: usize = 64 << 20;
/// Most entries one Append may carry.
pub const ENTRIES_PER_MESSAGE_MAX: u32 = 1 << 20;
/// Most voters, and most learners, a membership may name.
pub const MEMBERS_MAX: u32 = 1 << 10;
/// Size of an entry's fixed fields before its payload.
pub const ENTRY_HEADER_BYTES: usize = 28;
/// Offset of the frame's checksummed bytes (version onwards).
const FRAME_CRC_START: usize = 8;
/// Offset of the entry's checksummed bytes (payload kind onwards).
const ENTRY_CRC_START: usize = 4;

const KIND_PRE_VOTE: u8 = 1;
const KIND_PRE_VOTE_REPLY: u8 = 2;
const KIND_VOTE: u8 = 3;
const KIND_VOTE_REPLY: u8 = 4;
const KIND_APPEND: u8 = 5;
const KIND_APPEND_REPLY: u8 = 6;
const KIND_SNAPSHOT: u8 = 7;
const KIND_SNAPSHOT_REPLY: u8 = 8;
const KIND_TIMEOUT_NOW: u8 = 9;

const PAYLOAD_NOOP: u8 = 0;
const PAYLOAD_COMMAND: u8 = 1;
const PAYLOAD_MEMBERSHIP: u8 = 2;

const APPEND_OK: u8 = 0;
const APPEND_REJECT: u8 = 1;

const _: () = assert!(MESSAGE_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(FRAME_CRC_START < FRAME_HEADER_BYTES);

/// Why a message could not be encoded: the core built one beyond the wire's
/// limits (a bug in its bounds, reported rather than sent).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("message of {bytes} bytes exceeds MESSAGE_BYTES_MAX")]
    TooLarge { bytes: usize },
    #[error("{count} entries exceed ENTRIES_PER_MESSAGE_MAX")]
    TooManyEntries { count: usize },
    #[error("a membership of {count} ids exceeds MEMBERS_MAX")]
    TooManyMembers { count: usize },
}

/// Why bytes are not a message. Every way a peer's bytes can be wrong is one of
/// these; none is a panic.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("{needed} bytes needed at offset {offset}, {available} left")]
    Truncated {
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("bad magic {found:#010x}")]
    Magic { found: u32 },
    #[error("frame checksum {actual:#010x}, header says {expected:#010x}")]
    FrameChecksum { expected: u32, actual: u32 },
    #[error("unknown message version {version}")]
    Version { version: u8 },
    #[error("frame of {bytes} bytes exceeds MESSAGE_BYTES_MAX")]
    TooLarge { bytes: usize },
    #[error("frame header claims {claimed} bytes, the input holds {actual}")]
    Length { claimed: usize, actual: usize },
    #[error("unknown message kind {kind}")]
    Kind { kind: u8 },
    #[error("non-zero reserved byte at offset {offset}")]
    Reserved { offset: usize },
    #[error("byte {value} at offset {offset} is not a bool")]
    Bool { offset: usize, value: u8 },
    #[error("unknown append result {tag}")]
    AppendResult { tag: u8 },
    #[error("{count} entries exceed ENTRIES_PER_MESSAGE_MAX")]
    TooManyEntries { count: u32 },
    #[error("{count} members exceed MEMBERS_MAX")]
    TooManyMembers { count: u32 },
    #[error("member ids not strictly ascending at offset {offset}")]
    MembersOrder { offset: usize },
    #[error("entry {id}: checksum {actual:#010x}, entry says {expected:#010x}")]
    EntryChecksum {
        id: EntryId,
        expected: u32,
        actual: u32,
    },
    #[error("entry {id}: unknown payload kind {kind}")]
    PayloadKind { id: EntryId, kind: u8 },
    #[error("entry {id}: a no-op with {bytes} payload bytes")]
    NoopPayload { id: EntryId, bytes: usize },
    #[error("entry {id} does not follow {previous} in an append from term {term}")]
    EntryOrder {
        id: EntryId,
        previous: EntryId,
        term: Term,
    },
    #[error("{trailing} bytes after the message's last field")]
    Trailing { trailing: usize },
}

/// Encodes `envelope` as one frame.
pub fn encode(envelope: &Envelope) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + 64);
    encode_into(envelope, &mut out)?;
    Ok(out)
}

/// Appends `envelope`'s frame to `out` (which may already hold earlier frames:
/// a connection's send buffer). On an error `out` is left as it was.
pub fn encode_into(envelope: &Envelope, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    let result = encode_frame(envelope, start, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_frame(envelope: &Envelope, start: usize, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.extend_from_slice(&MESSAGE_MAGIC.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // frame_crc, filled below
    out.push(MESSAGE_VERSION);
    out.push(kind_of(&envelope.message));
    out.extend_from_slice(&[0; 2]);
    out.extend_from_slice(&[0; 4]); // body_len, filled below
    put_u64(out, envelope.from.0);
    put_u64(out, envelope.to.0);
    put_u64(out, envelope.term.0);
    encode_message(&envelope.message, out)?;
    let bytes = out.len() - start;
    if bytes > MESSAGE_BYTES_MAX {
        return Err(EncodeError::TooLarge { bytes });
    }
    let body_len = (bytes - FRAME_HEADER_BYTES) as u32;
    out[start + 12..start + 16].copy_from_slice(&body_len.to_le_bytes());
    let crc = crc32fast::hash(&out[start + FRAME_CRC_START..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

fn kind_of(message: &Message) -> u8 {
    match message {
        Message::PreVote { .. } => KIND_PRE_VOTE,
        Message::PreVoteReply { .. } => KIND_PRE_VOTE_REPLY,
        Message::Vote { .. } => KIND_VOTE,
        Message::VoteReply { .. } => KIND_VOTE_REPLY,
        Message::Append { .. } => KIND_APPEND,
        Message::AppendReply { .. } => KIND_APPEND_REPLY,
        Message::Snapshot { .. } => KIND_SNAPSHOT,
        Message::SnapshotReply { .. } => KIND_SNAPSHOT_REPLY,
        Message::TimeoutNow => KIND_TIMEOUT_NOW,
    }
}

fn encode_message(message: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match message {
        Message::PreVote { last } => put_id(out, *last),
        Message::PreVoteReply { granted } | Message::VoteReply { granted } => {
            out.push(u8::from(*granted))
        }
        Message::Vote { last, transfer } => {
            put_id(out, *last);
            out.push(u8::from(*transfer));
        }
        Message::Append {
            prev,
            entries,
            commit,
            read_round,
        } => {
            put_id(out, *prev);
            put_u64(out, commit.0);
            put_u64(out, *read_round);
            let count = u32::try_from(entries.len())
                .ok()
                .filter(|count| *count <= ENTRIES_PER_MESSAGE_MAX)
                .ok_or(EncodeError::TooManyEntries {
                    count: entries.len(),
                })?;
            put_u32(out, count);
            for entry in entries {
                encode_entry(entry, out)?;
            }
        }
        Message::AppendReply { result, read_round } => {
            let (tag, id) = match result {
                AppendResult::Ok { matched } => (APPEND_OK, matched),
                AppendResult::Reject { hint } => (APPEND_REJECT, hint),
            };
            out.push(tag);
            out.extend_from_slice(&[0; 7]);
            put_id(out, *id);
            put_u64(out, *read_round);
        }
        Message::Snapshot {
            meta,
            offset,
            data,
            done,
        } => {
            put_id(out, meta.last);
            encode_membership(&meta.membership, out)?;
            put_u64(out, *offset);
            out.push(u8::from(*done));
            put_bytes(out, data)?;
        }
        Message::SnapshotReply {
            last,
            received,
            installed,
        } => {
            put_id(out, *last);
            put_u64(out, *received);
            out.push(u8::from(*installed));
        }
        Message::TimeoutNow => {}
    }
    Ok(())
}

fn encode_entry(entry: &Entry, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]); // entry_crc, filled below
    let kind = match entry.payload {
        EntryPayload::Noop => PAYLOAD_NOOP,
        EntryPayload::Command(_) => PAYLOAD_COMMAND,
        EntryPayload::Membership(_) => PAYLOAD_MEMBERSHIP,
    };
    out.push(kind);
    out.extend_from_slice(&[0; 3]);
    put_id(out, entry.id);
    match &entry.payload {
        EntryPayload::Noop => put_u32(out, 0),
        EntryPayload::Command(command) => put_bytes(out, command)?,
        EntryPayload::Membership(membership) => {
            let length_at = out.len();
            put_u32(out, 0);
            encode_membership(membership, out)?;
            let payload_len = out.len() - length_at - 4;
            let payload_len = u32::try_from(payload_len)
                .map_err(|_| EncodeError::TooLarge { bytes: payload_len })?;
            out[length_at..length_at + 4].copy_from_slice(&payload_len.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&out[start + ENTRY_CRC_START..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// The checksum an entry travels with: CRC32 of its encoding after the
/// checksum field (payload kind, term, index, payload). A follower that keeps
/// it can tell later that the entry it holds is the one the leader sent.
pub fn entry_checksum(entry: &Entry) -> Result<u32, EncodeError> {
    let mut bytes = Vec::with_capacity(ENTRY_HEADER_BYTES);
    encode_entry(entry, &mut bytes)?;
    Ok(u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")))
}

fn encode_membership(membership: &Membership, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    for set in [&membership.voters, &membership.learners] {
        let count = u32::try_from(set.len())
            .ok()
            .filter(|count| *count <= MEMBERS_MAX)
            .ok_or(EncodeError::TooManyMembers { count: set.len() })?;
        put_u32(out, count);
        for id in set {
            put_u64(out, id.0);
        }
    }
    Ok(())
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_id(out: &mut Vec<u8>, id: EntryId) {
    put_u64(out, id.term.0);
    put_u64(out, id.index.0);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), EncodeError> {
    let length =
        u32::try_from(bytes.len()).map_err(|_| EncodeError::TooLarge { bytes: bytes.len() })?;
    put_u32(out, length);
    out.extend_from_slice(bytes);
    Ok(())
}

/// How many bytes the frame starting with `header` takes in all, from its
/// first [`FRAME_HEADER_BYTES`]: what a stream reader waits for before it
/// calls [`decode`]. Checks the magic, version and bound, not the checksum.
pub fn frame_bytes(header: &[u8; FRAME_HEADER_BYTES]) -> Result<usize, DecodeError> {
    let mut reader = Reader::new(header);
    let magic = reader.u32()?;
    if magic != MESSAGE_MAGIC {
        return Err(DecodeError::Magic { found: magic });
    }
    let _crc = reader.u32()?;
    let version = reader.u8()?;
    if version != MESSAGE_VERSION {
        return Err(DecodeError::Version { version });
    }
    reader.skip(3)?;
    let body_len = reader.u32()? as usize;
    let bytes = FRAME_HEADER_BYTES + body_len;
    if bytes > MESSAGE_BYTES_MAX {
        return Err(DecodeError::TooLarge { bytes });
    }
    Ok(bytes)
}

/// Decodes exactly one frame, the whole of `bytes`, checking its checksum and
/// every entry's.
pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    let header: &[u8; FRAME_HEADER_BYTES] = bytes
        .get(..FRAME_HEADER_BYTES)
        .and_then(|header| header.try_into().ok())
        .ok_or(DecodeError::Truncated {
            offset: 0,
            needed: FRAME_HEADER_BYTES,
            available: bytes.len(),
        })?;
    let claimed = frame_bytes(header)?;
    if claimed != bytes.len() {
        return Err(DecodeError::Length {
            claimed,
            actual: bytes.len(),
        });
    }
    let expected = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let actual = crc32fast::hash(&bytes[FRAME_CRC_START..]);
    if expected != actual {
        return Err(DecodeError::FrameChecksum { expected, actual });
    }
    let mut reader = Reader::new(bytes);
    reader.skip(9)?;
    let kind = reader.u8()?;
    reader.reserved(2)?;
    reader.skip(4)?;
    let from = NodeId(reader.u64()?);
    let to = NodeId(reader.u64()?);
    let term = Term(reader.u64()?);
    let message = decode_message(kind, term, &mut reader)?;
    if reader.remaining() != 0 {
        return Err(DecodeError::Trailing {
            trailing: reader.remaining(),
        });
    }
    Ok(Envelope {
        from,
        to,
        term,
        message,
    })
}

fn decode_message(kind: u8, term: Term, reader: &mut Reader) -> Result<Message, DecodeError> {
    Ok(match kind {
        KIND_PRE_VOTE => Message::PreVote { last: reader.id()? },
        KIND_PRE_VOTE_REPLY => Message::PreVoteReply {
            granted: reader.bool()?,
        },
        KIND_VOTE => Message::Vote {
            last: reader.id()?,
            transfer: reader.bool()?,
        },
        KIND_VOTE_REPLY => Message::VoteReply {
            granted: reader.bool()?,
        },
        KIND_APPEND => decode_append(term, reader)?,
        KIND_APPEND_REPLY => {
            let tag = reader.u8()?;
            reader.reserved(7)?;
            let id = reader.id()?;
            let result = match tag {
                APPEND_OK => AppendResult::Ok { matched: id },
                APPEND_REJECT => AppendResult::Reject { hint: id },
                tag => return Err(DecodeError::AppendResult { tag }),
            };
            Message::AppendReply {
                result,
                read_round: reader.u64()?,
            }
        }
        KIND_SNAPSHOT => Message::Snapshot {
            meta: SnapshotMeta {
                last: reader.id()?,
                membership: decode_membership(reader)?,
            },
            offset: reader.u64()?,
            done: reader.bool()?,
            data: reader.bytes()?.to_vec(),
        },
        KIND_SNAPSHOT_REPLY => Message::SnapshotReply {
            last: reader.id()?,
            received: reader.u64()?,
            installed: reader.bool()?,
        },
        KIND_TIMEOUT_NOW => Message::TimeoutNow,
        kind => return Err(DecodeError::Kind { kind }),
    })
}

fn decode_append(term: Term, reader: &mut Reader) -> Result<Message, DecodeError> {
    let prev = reader.id()?;
    let commit = LogIndex(reader.u64()?);
    let read_round = reader.u64()?;
    let count = reader.u32()?;
    if count > ENTRIES_PER_MESSAGE_MAX {
        return Err(DecodeError::TooManyEntries { count });
    }
    // Each entry takes at least its header: the capacity is bounded by the
    // bytes at hand, whatever the count claims.
    reader.require(count as usize * ENTRY_HEADER_BYTES)?;
    let mut entries = Vec::with_capacity(count as usize);
    let mut previous = prev;
    for _ in 0..count {
        let entry = decode_entry(reader)?;
        let follows = Some(entry.id.index.0) == previous.index.0.checked_add(1)
            && entry.id.term >= previous.term
            && entry.id.term <= term;
        if !follows {
            return Err(DecodeError::EntryOrder {
                id: entry.id,
                previous,
                term,
            });
        }
        previous = entry.id;
        entries.push(entry);
    }
    Ok(Message::Append {
        prev,
        entries,
        commit,
        read_round,
    })
}

/// Reads one entry and verifies its checksum before anything else of it is
/// believed (the follower-side check of issue 12: a damaged entry is an error,
/// never appended).
fn decode_entry(reader: &mut Reader) -> Result<Entry, DecodeError> {
    let start = reader.at;
    let expected = reader.u32()?;
    let kind = reader.u8()?;
    reader.reserved(3)?;
    let id = reader.id()?;
    let payload = reader.bytes()?;
    let actual = crc32fast::hash(&reader.bytes[start + ENTRY_CRC_START..reader.at]);
    if expected != actual {
        return Err(DecodeError::EntryChecksum {
            id,
            expected,
            actual,
        });
    }
    let payload = match kind {
        PAYLOAD_NOOP if payload.is_empty() => EntryPayload::Noop,
        PAYLOAD_NOOP => {
            return Err(DecodeError::NoopPayload {
                id,
                bytes: payload.len(),
            })
        }
        PAYLOAD_COMMAND => EntryPayload::Command(payload.into()),
        PAYLOAD_MEMBERSHIP => {
            let mut inner = Reader::new(payload);
            let membership = decode_membership(&mut inner)?;
            if inner.remaining() != 0 {
                return Err(DecodeError::Trailing {
                    trailing: inner.remaining(),
                });
            }
            EntryPayload::Membership(Box::new(membership))
        }
        kind => return Err(DecodeError::PayloadKind { id, kind }),
    };
    Ok(Entry { id, payload })
}

fn decode_membership(reader: &mut Reader) -> Result<Membership, DecodeError> {
    Ok(Membership {
        voters: decode_members(reader)?,
        learners: decode_members(reader)?,
    })
}

fn decode_members(reader: &mut Reader) -> Result<BTreeSet<NodeId>, DecodeError> {
    let count = reader.u32()?;
    if count > MEMBERS_MAX {
        return Err(DecodeError::TooManyMembers { count });
    }
    let mut members = BTreeSet::new();
    let mut last = None;
    for _ in 0..count {
        let offset = reader.at;
        let id = reader.u64()?;
        if last.is_some_and(|last| id <= last) {
            return Err(DecodeError::MembersOrder { offset });
        }
        last = Some(id);
        members.insert(NodeId(id));
    }
    Ok(members)
}

/// A cursor over untrusted bytes: every read checks what remains first.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn require(&self, needed: usize) -> Result<(), DecodeError> {
        if needed > self.remaining() {
            return Err(DecodeError::Truncated {
                offset: self.at,
                needed,
                available: self.remaining(),
            });
        }
        Ok(())
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        self.require(count)?;
        let taken = &self.bytes[self.at..self.at + count];
        self.at += count;
        Ok(taken)
    }

    fn skip(&mut self, count: usize) -> Result<(), DecodeError> {
        self.take(count).map(|_| ())
    }

    fn reserved(&mut self, count: usize) -> Result<(), DecodeError> {
        let offset = self.at;
        match self.take(count)?.iter().position(|byte| *byte != 0) {
            Some(position) => Err(DecodeError::Reserved {
                offset: offset + position,
            }),
            None => Ok(()),
        }
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn bool(&mut self) -> Result<bool, DecodeError> {
        let offset = self.at;
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::Bool { offset, value }),
        }
    }

    fn id(&mut self) -> Result<EntryId, DecodeError> {
        Ok(EntryId {
            term: Term(self.u64()?),
            index: LogIndex(self.u64()?),
        })
    }

    /// A u32 length and that many bytes, borrowed: nothing is allocated
    /// before the length is checked against the input.
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let length = self.u32()? as usize;
        self.take(length)
    }
}
