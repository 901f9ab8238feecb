//! Entry point of the cargo-fuzz target `replication_message` (in `fuzz/`),
//! kept here so that a stable test replays the committed corpus
//! (`replication/tests/corpus/`) through the very same code (see
//! docs/FUZZING.md).

use crate::codec::{self, ENTRY_HEADER_BYTES, FRAME_HEADER_BYTES};

/// Offset of the message kind in the frame header.
const KIND_OFFSET: usize = 9;
/// Offset of an Append's entry count: the envelope's 24 bytes, then `prev`
/// (16), `commit` (8), `read_round` (8).
const APPEND_COUNT_OFFSET: usize = FRAME_HEADER_BYTES + 24 + 32;
/// The Append kind's tag (see `codec`'s layout table).
const KIND_APPEND: u8 = 5;

/// Decodes arbitrary bytes as a peer's message, then again with their
/// checksums forged to hold ([`forge_checksums`]), as a hostile peer could:
/// the fuzzer alone almost never forges a CRC32, and without this the fields
/// behind the checksums would meet only the corpus's valid messages. Whatever
/// decodes must encode back to the very bytes it came from (the format is
/// canonical). Returns whether the bytes decoded as they are.
pub fn decode_message(data: &[u8]) -> bool {
    let decoded = decode_checked(data);
    let mut forged = data.to_vec();
    forge_checksums(&mut forged);
    decode_checked(&forged);
    decoded
}

fn decode_checked(data: &[u8]) -> bool {
    let Ok(envelope) = codec::decode(data) else {
        return false;
    };
    let encoded = codec::encode(&envelope).expect("a decoded message encodes");
    assert_eq!(encoded, data, "{envelope:?} encodes to other bytes");
    true
}

/// Rewrites every checksum in `bytes` to match what it covers, as far as the
/// structure can be followed: each entry's of an Append, then the frame's.
pub fn forge_checksums(bytes: &mut [u8]) {
    if bytes.len() < FRAME_HEADER_BYTES {
        return;
    }
    if bytes[KIND_OFFSET] == KIND_APPEND {
        forge_entry_checksums(bytes);
    }
    let crc = crc32fast::hash(&bytes[8..]);
    bytes[4..8].copy_from_slice(&crc.to_le_bytes());
}

fn forge_entry_checksums(bytes: &mut [u8]) {
    let Some(count) = read_u32(bytes, APPEND_COUNT_OFFSET) else {
        return;
    };
    let mut at = APPEND_COUNT_OFFSET + 4;
    for _ in 0..count {
        let Some(payload_len) = read_u32(bytes, at + 24) else {
            return;
        };
        let end = at + ENTRY_HEADER_BYTES + payload_len as usize;
        if end > bytes.len() {
            return;
        }
        let crc = crc32fast::hash(&bytes[at + 4..end]);
        bytes[at..at + 4].copy_from_slice(&crc.to_le_bytes());
        at = end;
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let field = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(field.try_into().expect("4 bytes")))
}
