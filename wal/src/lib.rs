//! Keel's write-ahead log.
//!
//! Every operation is appended as a checksummed [`frame`] to fixed-size,
//! preallocated [`segment`] files, many frames to one write and one
//! fdatasync ([`Wal::sync`], group commit). On start-up the [recovery
//! scan](scan) reads the segments back through memmap2 and tells a torn tail
//! (cut it) from corruption (refuse, naming segment, offset and index).
//!
//! Reading order: [`frame`] (the format), [`segment`] (files), [`scan`] (the
//! decision table), [`recovery`] (segments into one log), [`wal`] (the writer),
//! [`storage`] and [`memory`] (the disk underneath), [`repair`] (the operator's
//! forced truncation of a corrupt log).
//!
//! Invariants:
//! - nothing is reported durable before the fdatasync that covers it returned;
//! - no block that holds a durable frame is written again (batches are padded to
//!   [`BLOCK_BYTES`] and the next batch starts on a fresh block);
//! - after a failed write or sync the WAL refuses every further call;
//! - a frame is accepted only if both checksums hold, it is bound to the segment
//!   and offset it is read from, and it continues the hash chain.

pub mod codec;
pub mod frame;
pub mod fuzzing;
pub mod memory;
#[cfg(feature = "planted-bugs")]
pub mod planted;
pub mod recovery;
pub mod repair;
mod replay;
pub mod scan;
pub mod segment;
pub mod storage;
pub mod wal;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use frame::{Frame, FrameHeader};
pub use memory::{Faults, MemStorage};
pub use recovery::{LogMap, RecoveryError};
pub use scan::{SegmentEnd, SegmentScan};
pub use segment::{BLOCK_BYTES, SEGMENT_BYTES_MIN};
pub use storage::{run_ready, StdStorage, Storage, StorageFile};
pub use wal::{
    remove_segment_files, OpenReport, TornTailRepair, Wal, WalError, WalOptions,
    SEGMENT_BYTES_DEFAULT,
};

/// The largest log index a frame or a segment name may carry. Far beyond any
/// real log (2^62 entries at a million a second last 146,000 years), it leaves
/// room for index arithmetic on anything recovery accepts from disk, so a
/// forged or damaged index is refused instead of overflowing.
pub const LOG_INDEX_MAX: LogIndex = LogIndex(1 << 62);

/// A position in the log. Index 0 is "before the first entry".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogIndex(pub u64);

impl LogIndex {
    pub fn next(self) -> LogIndex {
        LogIndex(self.0.checked_add(1).expect("log index overflow"))
    }

    /// The index before this one; index 0 has none.
    pub fn prev(self) -> Option<LogIndex> {
        self.0.checked_sub(1).map(LogIndex)
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A consensus term: non-decreasing along the log.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Term(pub u64);

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum FrameKind {
    /// A log entry; its payload belongs to the layer above.
    Entry = 1,
    /// The log continues after the frame's index: entries after it that lie
    /// before this frame are no longer part of the log (a cut), and the bytes
    /// from [`CutRecord::abandoned_from`] up to this frame are void.
    Cut = 2,
}

impl FrameKind {
    pub fn from_u8(byte: u8) -> Option<FrameKind> {
        match byte {
            1 => Some(FrameKind::Entry),
            2 => Some(FrameKind::Cut),
            _ => None,
        }
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameKind::Entry => "entry",
            FrameKind::Cut => "cut",
        })
    }
}

/// The payload of a [`FrameKind::Cut`] frame.
///
/// Layout: `abandoned_from` as 4 little-endian bytes (bincode 2, fixed-width
/// integers). It equals the cut frame's own offset when nothing is voided; it
/// is smaller when recovery seals off a torn tail that began there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutRecord {
    pub abandoned_from: u32,
}

impl CutRecord {
    pub const ENCODED_BYTES: usize = 4;

    pub fn encode(&self) -> Vec<u8> {
        let bytes = bincode::serde::encode_to_vec(self, codec::fixed_config())
            .expect("a u32 always encodes");
        assert_eq!(bytes.len(), Self::ENCODED_BYTES, "cut record layout");
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<CutRecord, codec::CodecError> {
        if bytes.len() != Self::ENCODED_BYTES {
            return Err(codec::CodecError::Length {
                expected: Self::ENCODED_BYTES,
                actual: bytes.len(),
            });
        }
        codec::decode_with(bytes, codec::fixed_config())
    }
}
