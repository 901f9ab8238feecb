//! Entry points for the cargo-fuzz targets in `fuzz/`, kept here so that a
//! stable test replays the committed corpus through the very same code.
//!
//! Each function takes arbitrary bytes and must never panic, read out of
//! bounds, or accept a frame whose checksums do not hold; the checks that
//! would reveal a wrong acceptance are asserted inside.

use crate::frame::{decode_frame, FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX};
use crate::recovery::{recover, SegmentInput};
use crate::scan::{scan_segment, Place, SegmentBytes};
use crate::segment::{SegmentHeader, BLOCK_BYTES, SEGMENT_HEADER_BYTES};
use crate::LogIndex;

/// Payload limit the fuzz entry points decode with.
const FUZZ_PAYLOAD_BYTES_MAX: u32 = 1 << 16;

/// Asserts that the frame at the start of `bytes` really has the checksums it
/// was accepted with.
fn assert_checksums_hold(bytes: &[u8]) {
    let frame = decode_frame(bytes, FRAME_PAYLOAD_BYTES_MAX).expect("the frame was accepted");
    assert_eq!(
        crc32fast::hash(&bytes[8..FRAME_HEADER_BYTES]),
        frame.header.header_crc,
        "header checksum"
    );
    assert_eq!(
        crc32fast::hash(frame.payload),
        frame.header.payload_crc,
        "payload checksum"
    );
    assert_eq!(
        frame.payload.len(),
        frame.header.payload_len as usize,
        "payload length"
    );
}

/// Decodes arbitrary bytes as a frame, and tells whether they were accepted
/// (so that the corpus replay can check its valid frames still decode).
pub fn frame_decode(data: &[u8]) -> bool {
    let accepted = decode_frame(data, FUZZ_PAYLOAD_BYTES_MAX).is_ok();
    if accepted {
        assert_checksums_hold(data);
    }
    accepted
}

/// Builds a segment from arbitrary bytes and scans and recovers it as both the
/// last and a sealed segment. Returns how many valid frames the scan kept (the
/// same in either place: the place only decides how the scan ends), so that
/// the corpus replay can compare it with what the log held.
///
/// The first byte is the segment's first index; the rest is the segment's body
/// after its header, zero-padded here to a whole block, so a real segment with
/// its trailing zeros trimmed scans as it did on disk.
pub fn segment_scan(data: &[u8]) -> usize {
    let first_index = LogIndex(data.first().map_or(1, |byte| u64::from(*byte)));
    let body = data.get(1..).unwrap_or_default();
    let segment_bytes = (SEGMENT_HEADER_BYTES + body.len()).next_multiple_of(BLOCK_BYTES);
    let header = SegmentHeader {
        first_index,
        segment_bytes: segment_bytes as u64,
    };
    let mut bytes = header.encode();
    bytes.extend_from_slice(body);
    bytes.resize(segment_bytes, 0);
    let mut kept_frames = 0;
    for place in [Place::Last, Place::Sealed] {
        let segment = SegmentBytes {
            bytes: &bytes,
            first_index,
            place,
            payload_bytes_max: FUZZ_PAYLOAD_BYTES_MAX,
        };
        let scan = scan_segment(segment).expect("the segment header is valid");
        let mut previous_end = SEGMENT_HEADER_BYTES;
        for frame in &scan.frames {
            let offset = frame.offset as usize;
            assert!(
                offset >= previous_end,
                "frames do not overlap and come in order"
            );
            assert_checksums_hold(&bytes[offset..]);
            previous_end = offset + frame.frame_bytes();
        }
        kept_frames = scan.frames.len();
    }
    let input = [SegmentInput {
        name: "fuzz".to_owned(),
        first_index,
        bytes: bytes.as_slice(),
    }];
    if let Ok(log) = recover(&input, FUZZ_PAYLOAD_BYTES_MAX, &mut |_| {}) {
        assert!(
            log.last_index() >= log.base_index,
            "the log never ends before its base"
        );
    }
    kept_frames
}
