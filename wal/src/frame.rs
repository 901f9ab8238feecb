//! The frame: one log entry as it lies on disk.
//!
//! # Byte layout (version 1, all integers little-endian)
//!
//! ```text
//! offset size field         meaning
//!      0    4 magic         b"KLFR"
//!      4    4 header_crc    CRC32 (crc32fast) of bytes 8..56 of this header
//!      8    1 version       FRAME_VERSION
//!      9    1 kind          FrameKind as u8
//!     10    2 reserved      zero
//!     12    4 payload_len   payload bytes that follow the header
//!     16    8 segment       first index of the segment file this frame was written to
//!     24    8 index         log index
//!     32    8 term          consensus term
//!     40    4 prev_crc      header_crc of the frame before it in the log (a hash chain)
//!     44    4 payload_crc   CRC32 of the payload
//!     48    4 offset        byte offset of this frame inside its segment
//!     52    4 batch_offset  byte offset of the first frame of the write batch it came in
//!     56    n payload       payload_len bytes (serde + bincode 2 for entries)
//!   56+n    p padding       zero bytes up to a multiple of FRAME_ALIGN_BYTES
//! ```
//!
//! `header_crc` covers `payload_crc`, so one check of the header checksum and one
//! of the payload checksum cover every byte of the frame; `header_crc` is also
//! the frame's identity in the hash chain. `segment` and `offset` bind a frame to
//! the place it was written: a misdirected write, or a frame left behind by an
//! earlier use of the same bytes, decodes with a valid checksum but the wrong
//! binding, and the scan treats it as foreign. `batch_offset` tells recovery
//! which frames were written (and synced) together: only the last batch can be
//! torn by a crash.
//!
//! # Version changes
//! - 1: first version.

use crate::{FrameKind, LogIndex, Term, LOG_INDEX_MAX};

/// `b"KLFR"` read as a little-endian u32.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"KLFR");
/// The frame format version this code writes and reads.
pub const FRAME_VERSION: u8 = 1;
/// Size of the fixed frame header.
pub const FRAME_HEADER_BYTES: usize = 56;
/// Frames start at multiples of this, so a scan for lost frames may step by it.
pub const FRAME_ALIGN_BYTES: usize = 8;
/// Hard upper bound on a payload, whatever the options say: a frame must fit in a
/// segment, and a segment's offsets are u32.
pub const FRAME_PAYLOAD_BYTES_MAX: u32 = 1 << 30;

const _: () = assert!(FRAME_HEADER_BYTES % FRAME_ALIGN_BYTES == 0);
const HEADER_CRC_START: usize = 8;

/// The decoded, checked fields of a frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub header_crc: u32,
    pub kind: FrameKind,
    pub payload_len: u32,
    pub segment: LogIndex,
    pub index: LogIndex,
    pub term: Term,
    pub prev_crc: u32,
    pub payload_crc: u32,
    pub offset: u32,
    pub batch_offset: u32,
}

impl FrameHeader {
    /// Bytes the whole frame takes on disk, padding included.
    pub fn frame_bytes(&self) -> usize {
        frame_bytes(self.payload_len as usize)
    }
}

/// Bytes a frame with a payload of `payload_len` takes on disk.
pub fn frame_bytes(payload_len: usize) -> usize {
    (FRAME_HEADER_BYTES + payload_len).next_multiple_of(FRAME_ALIGN_BYTES)
}

/// Why bytes are not a valid frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    #[error("fewer than {FRAME_HEADER_BYTES} bytes left for a header")]
    Truncated,
    #[error("the header is all zero bytes")]
    Zero,
    #[error("bad magic {found:#010x}")]
    BadMagic { found: u32 },
    #[error("header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("unsupported frame version {found}")]
    Version { found: u8 },
    #[error("unknown frame kind {found}")]
    Kind { found: u8 },
    #[error("reserved header bytes are not zero")]
    Reserved,
    #[error("payload of {payload_len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { payload_len: u32, limit: u32 },
    #[error("index {index} (or segment {segment}) is beyond the largest log index")]
    IndexRange { index: LogIndex, segment: LogIndex },
}

/// Why a frame whose header is valid has a bad body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    #[error("the frame runs past the end of its segment")]
    Truncated,
    #[error("payload checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("padding after the payload is not zero")]
    Padding,
    #[error("the record of a cut frame does not decode")]
    CutRecord,
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4-byte slice"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8-byte slice"))
}

/// Decodes and checks the header at the start of `bytes`. Checks everything that
/// the header alone can tell, including the header checksum and that the payload
/// is within `payload_bytes_max`; it does not look at the payload.
pub fn decode_header(bytes: &[u8], payload_bytes_max: u32) -> Result<FrameHeader, HeaderError> {
    let Some(header) = bytes.get(..FRAME_HEADER_BYTES) else {
        return Err(HeaderError::Truncated);
    };
    let magic = read_u32(header, 0);
    if magic != FRAME_MAGIC {
        if header.iter().all(|byte| *byte == 0) {
            return Err(HeaderError::Zero);
        }
        return Err(HeaderError::BadMagic { found: magic });
    }
    let stored = read_u32(header, 4);
    let computed = crc32fast::hash(&header[HEADER_CRC_START..]);
    if stored != computed {
        return Err(HeaderError::Checksum { stored, computed });
    }
    if header[8] != FRAME_VERSION {
        return Err(HeaderError::Version { found: header[8] });
    }
    let kind = FrameKind::from_u8(header[9]).ok_or(HeaderError::Kind { found: header[9] })?;
    if header[10] != 0 || header[11] != 0 {
        return Err(HeaderError::Reserved);
    }
    let payload_len = read_u32(header, 12);
    let limit = payload_bytes_max.min(FRAME_PAYLOAD_BYTES_MAX);
    if payload_len > limit {
        return Err(HeaderError::TooLarge { payload_len, limit });
    }
    let segment = LogIndex(read_u64(header, 16));
    let index = LogIndex(read_u64(header, 24));
    if index > LOG_INDEX_MAX || segment > LOG_INDEX_MAX {
        return Err(HeaderError::IndexRange { index, segment });
    }
    Ok(FrameHeader {
        header_crc: stored,
        kind,
        payload_len,
        segment,
        index,
        term: Term(read_u64(header, 32)),
        prev_crc: read_u32(header, 40),
        payload_crc: read_u32(header, 44),
        offset: read_u32(header, 48),
        batch_offset: read_u32(header, 52),
    })
}

/// Checks the body of the frame whose header was decoded from the start of
/// `bytes`, and returns its payload.
pub fn check_body<'a>(header: &FrameHeader, bytes: &'a [u8]) -> Result<&'a [u8], BodyError> {
    let end = header.frame_bytes();
    let Some(frame) = bytes.get(..end) else {
        return Err(BodyError::Truncated);
    };
    let payload_end = FRAME_HEADER_BYTES + header.payload_len as usize;
    let payload = &frame[FRAME_HEADER_BYTES..payload_end];
    let computed = crc32fast::hash(payload);
    #[cfg(feature = "planted-bugs")]
    let computed = if crate::planted::active(crate::planted::Plant::ReplayPastCorruption) {
        header.payload_crc
    } else {
        computed
    };
    if computed != header.payload_crc {
        return Err(BodyError::Checksum {
            stored: header.payload_crc,
            computed,
        });
    }
    if frame[payload_end..].iter().any(|byte| *byte != 0) {
        return Err(BodyError::Padding);
    }
    Ok(payload)
}

/// A frame decoded from bytes: its header and its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub header: FrameHeader,
    pub payload: &'a [u8],
}

/// Either half of a frame can be bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad frame header: {0}")]
    Header(#[from] HeaderError),
    #[error("bad frame body: {0}")]
    Body(#[from] BodyError),
}

/// Decodes and fully checks the frame at the start of `bytes`.
pub fn decode_frame(bytes: &[u8], payload_bytes_max: u32) -> Result<Frame<'_>, FrameError> {
    let header = decode_header(bytes, payload_bytes_max)?;
    let payload = check_body(&header, bytes)?;
    Ok(Frame { header, payload })
}

/// What the writer knows about a frame before it is encoded.
#[derive(Clone, Copy, Debug)]
pub struct FrameFields {
    pub kind: FrameKind,
    pub segment: LogIndex,
    pub index: LogIndex,
    pub term: Term,
    pub prev_crc: u32,
    pub offset: u32,
    pub batch_offset: u32,
}

/// Appends the encoded frame to `out` and returns its header checksum.
///
/// Panics if the payload exceeds [`FRAME_PAYLOAD_BYTES_MAX`]: callers check the
/// configured limit first and return an error.
pub fn encode_frame(out: &mut Vec<u8>, fields: &FrameFields, payload: &[u8]) -> u32 {
    let payload_len = u32::try_from(payload.len())
        .ok()
        .filter(|len| *len <= FRAME_PAYLOAD_BYTES_MAX)
        .expect("payload size is checked against the limit before encoding");
    // Built on the stack and appended once: this runs for every frame of every
    // batch, on the commit path.
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let mut put = |at: usize, bytes: &[u8]| header[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, &FRAME_MAGIC.to_le_bytes());
    put(8, &[FRAME_VERSION, fields.kind as u8]);
    put(12, &payload_len.to_le_bytes());
    put(16, &fields.segment.0.to_le_bytes());
    put(24, &fields.index.0.to_le_bytes());
    put(32, &fields.term.0.to_le_bytes());
    put(40, &fields.prev_crc.to_le_bytes());
    put(44, &crc32fast::hash(payload).to_le_bytes());
    put(48, &fields.offset.to_le_bytes());
    put(52, &fields.batch_offset.to_le_bytes());
    let header_crc = crc32fast::hash(&header[HEADER_CRC_START..]);
    header[4..8].copy_from_slice(&header_crc.to_le_bytes());
    let start = out.len();
    out.reserve(frame_bytes(payload.len()));
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    out.resize(start + frame_bytes(payload.len()), 0);
    header_crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> FrameFields {
        FrameFields {
            kind: FrameKind::Entry,
            segment: LogIndex(1),
            index: LogIndex(7),
            term: Term(3),
            prev_crc: 0xdead_beef,
            offset: 4096,
            batch_offset: 4096,
        }
    }

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        let crc = encode_frame(&mut out, &fields(), b"hello");
        assert_eq!(out.len(), 64);
        let frame = decode_frame(&out, 1024).unwrap();
        assert_eq!(frame.payload, b"hello");
        assert_eq!(frame.header.header_crc, crc);
        assert_eq!(frame.header.index, LogIndex(7));
        assert_eq!(frame.header.term, Term(3));
        assert_eq!(frame.header.prev_crc, 0xdead_beef);
        assert_eq!(frame.header.offset, 4096);
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let mut out = Vec::new();
        encode_frame(&mut out, &fields(), b"payload bytes");
        for bit in 0..out.len() * 8 {
            let mut damaged = out.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_frame(&damaged, 1024).is_err(),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn limits_are_enforced() {
        let mut out = Vec::new();
        encode_frame(&mut out, &fields(), &[7; 100]);
        assert_eq!(
            decode_header(&out, 99),
            Err(HeaderError::TooLarge {
                payload_len: 100,
                limit: 99
            })
        );
        assert_eq!(decode_header(&out[..55], 1024), Err(HeaderError::Truncated));
        assert_eq!(decode_header(&[0; 56], 1024), Err(HeaderError::Zero));
        let mut beyond = Vec::new();
        let fields = FrameFields {
            index: LogIndex(LOG_INDEX_MAX.0 + 1),
            ..fields()
        };
        encode_frame(&mut beyond, &fields, b"");
        assert!(matches!(
            decode_header(&beyond, 1024),
            Err(HeaderError::IndexRange { .. })
        ));
        assert_eq!(
            decode_frame(&out[..out.len() - 8], 1024),
            Err(FrameError::Body(BodyError::Truncated))
        );
    }
}
