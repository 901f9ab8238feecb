//! Segment files: fixed-size, preallocated, named by the index of their first frame.
//!
//! A segment is `segment_bytes` long (a multiple of [`BLOCK_BYTES`]) and is
//! zero-filled before it gets its name, so unwritten space reads as zeros and the
//! disk never has to allocate blocks on the write path. Its first block is the
//! segment header; frames start at [`SEGMENT_HEADER_BYTES`]. Regular batches never
//! use the last block: it is kept free so that recovery can always write the
//! [`Cut`](crate::FrameKind::Cut) frame that seals off a torn tail.
//!
//! # Segment header layout (version 1, little-endian, in block 0)
//!
//! ```text
//! offset size field          meaning
//!      0    4 magic          b"KLSG"
//!      4    4 header_crc     CRC32 of bytes 8..40
//!      8    1 version        SEGMENT_VERSION
//!      9    7 reserved       zero
//!     16    8 first_index    the index in the file name
//!     24    8 segment_bytes  length of the file
//!     32    4 block_bytes    BLOCK_BYTES when written
//!     36    4 reserved       zero
//!     40 4056 reserved       zero up to the end of the block
//! ```
//!
//! # File names
//! `{first_index:020}.wal`, so that names sort by index. A segment is created as
//! `{first_index:020}.wal.tmp`, zero-filled, given its header and its first batch,
//! synced, then renamed and the directory synced: a name ending in `.wal` always
//! denotes a complete segment holding at least one batch, and a leftover `.tmp`
//! is an unfinished creation that is removed.

use crate::{LogIndex, LOG_INDEX_MAX};

/// The unit of writing: every batch starts on a block boundary and is padded to one.
pub const BLOCK_BYTES: usize = 4096;
/// Space taken by the segment header at the start of each segment.
pub const SEGMENT_HEADER_BYTES: usize = BLOCK_BYTES;
/// Space at the end of each segment kept free for recovery's cut frame.
pub const SEGMENT_RESERVED_TAIL_BYTES: usize = BLOCK_BYTES;
/// Smallest allowed segment (header, one block of frames, the reserved block).
pub const SEGMENT_BYTES_MIN: u64 = 4 * BLOCK_BYTES as u64;
/// Largest allowed segment: frame offsets are u32.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 31;
/// `b"KLSG"` read as a little-endian u32.
pub const SEGMENT_MAGIC: u32 = u32::from_le_bytes(*b"KLSG");
/// The segment header version this code writes and reads.
pub const SEGMENT_VERSION: u8 = 1;

const SEGMENT_FIELDS_BYTES: usize = 40;
const SEGMENT_SUFFIX: &str = ".wal";
const TEMP_SUFFIX: &str = ".wal.tmp";

/// A byte offset inside a segment as stored in frames; segments are at most
/// [`SEGMENT_BYTES_MAX`], so it always fits.
pub fn offset_u32(offset: usize) -> u32 {
    u32::try_from(offset).expect("segment offsets fit u32: segment size is bounded")
}

/// The decoded header of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub first_index: LogIndex,
    pub segment_bytes: u64,
}

/// Why a segment header is not valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentHeaderError {
    #[error("the file is shorter than a segment header")]
    Truncated,
    #[error("bad magic {found:#010x}")]
    BadMagic { found: u32 },
    #[error("header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("unsupported segment version {found}")]
    Version { found: u8 },
    #[error("reserved header bytes are not zero")]
    Reserved,
    #[error("written with {found}-byte blocks, this build uses {BLOCK_BYTES}")]
    BlockSize { found: u32 },
}

impl SegmentHeader {
    /// The full header block.
    pub fn encode(&self) -> Vec<u8> {
        let mut block = vec![0; SEGMENT_HEADER_BYTES];
        block[0..4].copy_from_slice(&SEGMENT_MAGIC.to_le_bytes());
        block[8] = SEGMENT_VERSION;
        block[16..24].copy_from_slice(&self.first_index.0.to_le_bytes());
        block[24..32].copy_from_slice(&self.segment_bytes.to_le_bytes());
        let block_bytes = u32::try_from(BLOCK_BYTES).expect("block size fits u32");
        block[32..36].copy_from_slice(&block_bytes.to_le_bytes());
        let crc = crc32fast::hash(&block[8..SEGMENT_FIELDS_BYTES]);
        block[4..8].copy_from_slice(&crc.to_le_bytes());
        block
    }

    /// Decodes and checks the header at the start of a segment file.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, SegmentHeaderError> {
        let Some(block) = bytes.get(..SEGMENT_HEADER_BYTES) else {
            return Err(SegmentHeaderError::Truncated);
        };
        let field = |at: usize, len: usize| &block[at..at + len];
        let magic = u32::from_le_bytes(field(0, 4).try_into().expect("4 bytes"));
        if magic != SEGMENT_MAGIC {
            return Err(SegmentHeaderError::BadMagic { found: magic });
        }
        let stored = u32::from_le_bytes(field(4, 4).try_into().expect("4 bytes"));
        let computed = crc32fast::hash(&block[8..SEGMENT_FIELDS_BYTES]);
        if stored != computed {
            return Err(SegmentHeaderError::Checksum { stored, computed });
        }
        if block[8] != SEGMENT_VERSION {
            return Err(SegmentHeaderError::Version { found: block[8] });
        }
        let reserved_zero = field(9, 7).iter().chain(field(36, 4)).all(|b| *b == 0)
            && block[SEGMENT_FIELDS_BYTES..].iter().all(|b| *b == 0);
        if !reserved_zero {
            return Err(SegmentHeaderError::Reserved);
        }
        let block_bytes = u32::from_le_bytes(field(32, 4).try_into().expect("4 bytes"));
        if block_bytes as usize != BLOCK_BYTES {
            return Err(SegmentHeaderError::BlockSize { found: block_bytes });
        }
        Ok(SegmentHeader {
            first_index: LogIndex(u64::from_le_bytes(
                field(16, 8).try_into().expect("8 bytes"),
            )),
            segment_bytes: u64::from_le_bytes(field(24, 8).try_into().expect("8 bytes")),
        })
    }
}

/// The file name of the segment whose first frame has index `first_index`.
pub fn segment_name(first_index: LogIndex) -> String {
    format!("{:020}{SEGMENT_SUFFIX}", first_index.0)
}

/// The name a segment has while it is being created.
pub fn temp_segment_name(first_index: LogIndex) -> String {
    format!("{:020}{TEMP_SUFFIX}", first_index.0)
}

/// What a file name in a WAL directory denotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileRole {
    Segment(LogIndex),
    UnfinishedSegment,
    Other,
}

/// Classifies a file name found in a WAL directory.
pub fn file_role(name: &str) -> FileRole {
    let index_of = |stem: &str| {
        (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
            .then(|| stem.parse::<u64>().ok())
            .flatten()
            .filter(|index| *index <= LOG_INDEX_MAX.0)
    };
    if let Some(stem) = name.strip_suffix(TEMP_SUFFIX) {
        if index_of(stem).is_some() {
            return FileRole::UnfinishedSegment;
        }
    } else if let Some(index) = name.strip_suffix(SEGMENT_SUFFIX).and_then(index_of) {
        return FileRole::Segment(LogIndex(index));
    }
    FileRole::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_damage() {
        let header = SegmentHeader {
            first_index: LogIndex(42),
            segment_bytes: 1 << 20,
        };
        let block = header.encode();
        assert_eq!(SegmentHeader::decode(&block), Ok(header));
        for byte in 0..SEGMENT_HEADER_BYTES {
            let mut damaged = block.clone();
            damaged[byte] ^= 0x10;
            assert!(SegmentHeader::decode(&damaged).is_err(), "byte {byte}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(segment_name(LogIndex(17)), "00000000000000000017.wal");
        assert_eq!(
            file_role("00000000000000000017.wal"),
            FileRole::Segment(LogIndex(17))
        );
        assert_eq!(
            file_role("00000000000000000017.wal.tmp"),
            FileRole::UnfinishedSegment
        );
        assert_eq!(file_role("17.wal"), FileRole::Other);
        assert_eq!(file_role("0000000000000000001x.wal"), FileRole::Other);
        assert_eq!(file_role("notes.txt"), FileRole::Other);
        assert_eq!(file_role("18446744073709551615.wal"), FileRole::Other);
    }
}
