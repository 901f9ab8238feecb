//! The recovery scan of one segment, driven by a decision table.
//!
//! The scan walks a segment's bytes (a memmap2 map of the file, or any slice)
//! from the first frame. At each position it classifies what it finds
//! ([`FrameCheck`]) and looks up what to do in [`RECOVERY_CASES`]. Three facts
//! decide the cases where no valid frame is found:
//!
//! - **later batch**: is there a valid frame of this segment further on that was
//!   written in a *later* batch (its `batch_offset` lies beyond the position)?
//!   The writer syncs one batch before it writes the next, so only the last batch
//!   can be torn by a crash: damage followed by a later batch is corruption of
//!   data that was synced, and possibly acknowledged. A later batch that starts
//!   with a cut frame voiding exactly this position is recovery's own repair of a
//!   torn tail.
//! - **rest zero**: is everything from the position to the end of the segment
//!   zero, as the preallocated space past the last batch is?
//! - **place**: is this the last segment (the only one a crash can tear) or a
//!   sealed one (synced in full before the next segment was created)?
//!
//! | found at the position        | later batch  | rest zero | place  | decision |
//! |------------------------------|--------------|-----------|--------|----------|
//! | valid frame                  | any          | any       | any    | keep it, go on after it |
//! | zeros up to the next block   | any          | any       | any    | padding after a batch: go on at the block |
//! | zero header, foreign frame, bad header or bad body | voiding cut | any | any | skip the torn region to the cut frame |
//! | (the same four)              | other        | any       | any    | **corrupt**: refuse, name segment, offset, index |
//! | zero header                  | none         | yes       | any    | clean end |
//! | zero header                  | none         | no        | last   | torn tail: cut it |
//! | foreign frame, bad header or bad body | none | any     | last   | torn tail: cut it |
//! | zero header                  | none         | no        | sealed | **corrupt** |
//! | foreign frame, bad header or bad body | none | any     | sealed | **corrupt** |
//!
//! A *foreign* frame has valid checksums but is bound to another segment or
//! offset: a stale frame from an earlier use of the bytes, or a misdirected write.
//! Past the last batch it is no different from a torn write, so it ends the log;
//! anywhere else it is corruption. A caveat no single-copy log escapes: damage
//! inside the *last* batch after it was synced looks exactly like a torn write,
//! and is cut; in a cluster the peers still hold those frames.

use std::ops::Range;

use crate::frame::{
    check_body, decode_header, frame_bytes, BodyError, FrameHeader, HeaderError, FRAME_ALIGN_BYTES,
    FRAME_HEADER_BYTES, FRAME_MAGIC,
};
use crate::segment::{
    offset_u32, SegmentHeader, SegmentHeaderError, BLOCK_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::{CutRecord, FrameKind, LogIndex};

/// What the scan finds where it expects a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameCheck {
    /// Both checksums hold and the frame is bound to this segment and offset.
    Valid,
    /// Not on a block boundary, and zero up to the next one: the end of a batch.
    Padding,
    /// The header is all zeros.
    Zero,
    /// Valid checksums, but bound to another segment or offset.
    Foreign,
    BadHeader,
    /// The header is valid and bound here, the payload or its padding is not.
    BadBody,
}

/// Whether a valid frame from a later batch follows the position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LaterBatch {
    None,
    /// The first later frame is a cut frame voiding the bytes from this position.
    VoidingCut,
    Other,
}

/// Where the segment stands in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Place {
    /// The last segment: the only one whose last batch a crash may have torn.
    Last,
    /// An earlier segment, synced in full before the next one was created.
    Sealed,
}

impl Place {
    /// The place of the segment at `position` among `count` in index order.
    pub fn of(position: usize, count: usize) -> Place {
        if position + 1 == count {
            Place::Last
        } else {
            Place::Sealed
        }
    }
}

/// What the scan does at a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    Keep,
    SkipPadding,
    SkipToCut,
    CleanEnd,
    TornTail,
    Corrupt,
}

/// One row of the decision table; `None` matches anything.
#[derive(Clone, Copy, Debug)]
pub struct RecoveryCase {
    pub found: &'static [FrameCheck],
    pub later: Option<LaterBatch>,
    pub rest_zero: Option<bool>,
    pub place: Option<Place>,
    pub decision: Decision,
}

const NOT_VALID: &[FrameCheck] = &[
    FrameCheck::Zero,
    FrameCheck::Foreign,
    FrameCheck::BadHeader,
    FrameCheck::BadBody,
];
const NOT_ZERO: &[FrameCheck] = &[
    FrameCheck::Foreign,
    FrameCheck::BadHeader,
    FrameCheck::BadBody,
];

const fn case(
    found: &'static [FrameCheck],
    later: Option<LaterBatch>,
    rest_zero: Option<bool>,
    place: Option<Place>,
    decision: Decision,
) -> RecoveryCase {
    RecoveryCase {
        found,
        later,
        rest_zero,
        place,
        decision,
    }
}

/// The decision table of the module documentation, as the scan runs it.
pub const RECOVERY_CASES: &[RecoveryCase] = {
    use Decision::*;
    use LaterBatch::{None as NoLater, Other, VoidingCut};
    use Place::{Last, Sealed};
    &[
        case(&[FrameCheck::Valid], None, None, None, Keep),
        case(&[FrameCheck::Padding], None, None, None, SkipPadding),
        case(NOT_VALID, Some(VoidingCut), None, None, SkipToCut),
        case(NOT_VALID, Some(Other), None, None, Corrupt),
        case(
            &[FrameCheck::Zero],
            Some(NoLater),
            Some(true),
            None,
            CleanEnd,
        ),
        case(
            &[FrameCheck::Zero],
            Some(NoLater),
            Some(false),
            Some(Last),
            TornTail,
        ),
        case(NOT_ZERO, Some(NoLater), None, Some(Last), TornTail),
        case(
            &[FrameCheck::Zero],
            Some(NoLater),
            Some(false),
            Some(Sealed),
            Corrupt,
        ),
        case(NOT_ZERO, Some(NoLater), None, Some(Sealed), Corrupt),
    ]
};

/// Looks `found` up in [`RECOVERY_CASES`]. The other facts are closures because
/// they cost a look ahead: each is evaluated only if a row needs it.
pub fn decide(
    found: FrameCheck,
    mut later: impl FnMut() -> LaterBatch,
    mut rest_zero: impl FnMut() -> bool,
    place: Place,
) -> Decision {
    let mut later_memo = None;
    let mut rest_zero_memo = None;
    for row in RECOVERY_CASES {
        if !row.found.contains(&found) {
            continue;
        }
        if let Some(want) = row.later {
            if *later_memo.get_or_insert_with(&mut later) != want {
                continue;
            }
        }
        if let Some(want) = row.rest_zero {
            if *rest_zero_memo.get_or_insert_with(&mut rest_zero) != want {
                continue;
            }
        }
        if row.place.is_some_and(|want| want != place) {
            continue;
        }
        return row.decision;
    }
    panic!("RECOVERY_CASES has no row for {found:?}: the exhaustiveness test must catch this")
}

/// What was wrong where the scan expected a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadFrame {
    #[error("the header is all zeros")]
    Zero,
    #[error("{0}")]
    Header(HeaderError),
    #[error("{0}")]
    Body(BodyError),
    #[error("frame {index} belongs to segment {segment} at offset {offset}")]
    Foreign {
        segment: LogIndex,
        offset: u32,
        index: LogIndex,
    },
}

/// How a segment's scan ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Zeros from `offset` to the end of the segment.
    Clean { offset: u32 },
    /// The last batch is torn from `offset`; bytes up to `dirty_end` are not zero.
    Torn {
        offset: u32,
        dirty_end: u32,
        cause: BadFrame,
    },
    /// Damage at `offset`, followed by a valid frame from a later batch (if any).
    Corrupt {
        offset: u32,
        cause: BadFrame,
        later: Option<LaterFrame>,
    },
}

/// A valid frame found past damage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaterFrame {
    pub offset: u32,
    pub index: LogIndex,
}

/// The valid frames of one segment, in the order they lie in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    pub header: SegmentHeader,
    pub frames: Vec<FrameHeader>,
    /// Torn regions skipped because a cut frame voids them.
    pub voids: Vec<Range<u32>>,
    pub end: SegmentEnd,
}

/// Why a segment cannot be scanned at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    #[error("bad segment header: {0}")]
    Header(#[from] SegmentHeaderError),
    #[error("the segment header says first index {found}, the file name {expected}")]
    NameMismatch { expected: LogIndex, found: LogIndex },
    #[error("the segment header says {header} bytes, the file has {actual}")]
    SizeMismatch { header: u64, actual: u64 },
}

/// One segment's bytes and what the scan needs to know about them.
#[derive(Clone, Copy, Debug)]
pub struct SegmentBytes<'a> {
    pub bytes: &'a [u8],
    /// The first index in the file's name.
    pub first_index: LogIndex,
    pub place: Place,
    pub payload_bytes_max: u32,
}

fn is_zero(bytes: &[u8]) -> bool {
    // Folding a block at a time lets the compiler vectorise the check.
    bytes
        .chunks(BLOCK_BYTES)
        .all(|chunk| chunk.iter().fold(0, |acc, byte| acc | byte) == 0)
}

impl SegmentBytes<'_> {
    /// Classifies the bytes at `offset`; for a valid frame also returns its header.
    pub fn check(&self, offset: usize) -> (FrameCheck, Result<FrameHeader, BadFrame>) {
        let rest = &self.bytes[offset..];
        let header = match decode_header(rest, self.payload_bytes_max) {
            Ok(header) => header,
            Err(error) => return self.not_a_frame(offset, error),
        };
        let bound = header.segment == self.first_index
            && header.offset as usize == offset
            && header.batch_offset <= header.offset
            && header.batch_offset as usize % BLOCK_BYTES == 0;
        if !bound {
            let foreign = BadFrame::Foreign {
                segment: header.segment,
                offset: header.offset,
                index: header.index,
            };
            return (FrameCheck::Foreign, Err(foreign));
        }
        match check_body(&header, rest) {
            Ok(payload) if header.kind == FrameKind::Cut && CutRecord::decode(payload).is_err() => {
                (
                    FrameCheck::BadBody,
                    Err(BadFrame::Body(BodyError::CutRecord)),
                )
            }
            Ok(_) => (FrameCheck::Valid, Ok(header)),
            Err(error) => (FrameCheck::BadBody, Err(BadFrame::Body(error))),
        }
    }

    /// Classifies bytes that are not a valid frame header. Padding (zeros from
    /// here to the next block) is checked only here, off the path of valid
    /// frames; it must be checked whatever the header error, because fewer than
    /// a header's bytes may be left in the block, and the window then reaches
    /// into the next batch.
    fn not_a_frame(
        &self,
        offset: usize,
        error: HeaderError,
    ) -> (FrameCheck, Result<FrameHeader, BadFrame>) {
        let block_end = offset.next_multiple_of(BLOCK_BYTES).min(self.bytes.len());
        if offset % BLOCK_BYTES != 0 && is_zero(&self.bytes[offset..block_end]) {
            return (FrameCheck::Padding, Err(BadFrame::Zero));
        }
        match error {
            HeaderError::Zero => (FrameCheck::Zero, Err(BadFrame::Zero)),
            HeaderError::Truncated if is_zero(&self.bytes[offset..]) => {
                (FrameCheck::Zero, Err(BadFrame::Zero))
            }
            error => (FrameCheck::BadHeader, Err(BadFrame::Header(error))),
        }
    }

    /// Valid frames of this segment that start after `offset`, in order. Frames
    /// start on multiples of [`FRAME_ALIGN_BYTES`], so each such place is tried.
    pub fn valid_frames_after(&self, offset: usize) -> impl Iterator<Item = FrameHeader> + '_ {
        let last_start = self.bytes.len().saturating_sub(FRAME_HEADER_BYTES);
        (offset + FRAME_ALIGN_BYTES..=last_start)
            .step_by(FRAME_ALIGN_BYTES)
            .filter(|at| self.bytes[*at..*at + 4] == FRAME_MAGIC.to_le_bytes())
            .filter_map(|at| self.check(at).1.ok())
    }

    /// The first frame written in a batch after the one `offset` lies in.
    fn later_batch(&self, offset: usize) -> (LaterBatch, Option<FrameHeader>) {
        let later = self
            .valid_frames_after(offset)
            .find(|frame| frame.batch_offset as usize > offset);
        let Some(frame) = later else {
            return (LaterBatch::None, None);
        };
        let voids_here = frame.kind == FrameKind::Cut
            && self
                .cut_record(&frame)
                .is_some_and(|cut| cut.abandoned_from as usize == offset);
        let kind = if voids_here {
            LaterBatch::VoidingCut
        } else {
            LaterBatch::Other
        };
        (kind, Some(frame))
    }

    /// The record inside a valid cut frame, if it decodes.
    fn cut_record(&self, frame: &FrameHeader) -> Option<CutRecord> {
        let start = frame.offset as usize + FRAME_HEADER_BYTES;
        CutRecord::decode(&self.bytes[start..start + frame.payload_len as usize]).ok()
    }
}

/// End of the last block at or after `from` that holds a non-zero byte
/// (`from` itself if there is none): the bytes a repair must clear.
pub fn dirty_end(bytes: &[u8], from: usize) -> usize {
    let mut end = bytes.len();
    while end > from {
        let block_start = (end - 1) / BLOCK_BYTES * BLOCK_BYTES;
        if !is_zero(&bytes[block_start.max(from)..end]) {
            return end;
        }
        end = block_start;
    }
    from
}

/// Walks one segment, yielding its valid frames in order; once it is
/// exhausted, [`SegmentScanner::end`] tells how the segment ended. Recovery
/// consumes frames as they come, so a scan holds no per-frame memory.
#[derive(Debug)]
pub struct SegmentScanner<'a> {
    segment: SegmentBytes<'a>,
    header: SegmentHeader,
    offset: usize,
    voids: Vec<Range<u32>>,
    end: Option<SegmentEnd>,
}

impl<'a> SegmentScanner<'a> {
    /// Checks the segment header. Damage to frames is not an error here: it is
    /// how the segment ends.
    pub fn new(segment: SegmentBytes<'a>) -> Result<SegmentScanner<'a>, ScanError> {
        let header = SegmentHeader::decode(segment.bytes)?;
        if header.first_index != segment.first_index {
            return Err(ScanError::NameMismatch {
                expected: segment.first_index,
                found: header.first_index,
            });
        }
        let actual = segment.bytes.len() as u64;
        if header.segment_bytes != actual {
            return Err(ScanError::SizeMismatch {
                header: header.segment_bytes,
                actual,
            });
        }
        Ok(SegmentScanner {
            segment,
            header,
            offset: SEGMENT_HEADER_BYTES,
            voids: Vec::new(),
            end: None,
        })
    }

    pub fn header(&self) -> SegmentHeader {
        self.header
    }

    /// Torn regions skipped so far because a cut frame voids them.
    pub fn voids(&self) -> &[Range<u32>] {
        &self.voids
    }

    /// How the segment ended; `None` until every frame has been yielded.
    pub fn end(&self) -> Option<SegmentEnd> {
        self.end
    }

    /// Decides what lies at the current offset: a frame to yield, or the end.
    fn step(&mut self) -> Result<Option<FrameHeader>, SegmentEnd> {
        let segment = &self.segment;
        let offset = self.offset;
        if offset >= segment.bytes.len() {
            return Err(SegmentEnd::Clean {
                offset: offset_u32(offset),
            });
        }
        let (found, detail) = segment.check(offset);
        let mut later = None;
        let decision = decide(
            found,
            || {
                let (kind, frame) = segment.later_batch(offset);
                later = frame;
                kind
            },
            || is_zero(&segment.bytes[offset..]),
            segment.place,
        );
        match (decision, detail) {
            (Decision::Keep, Ok(frame)) => {
                self.offset += frame_bytes(frame.payload_len as usize);
                Ok(Some(frame))
            }
            (Decision::SkipPadding, _) => {
                self.offset = offset.next_multiple_of(BLOCK_BYTES);
                Ok(None)
            }
            (Decision::SkipToCut, _) => {
                let cut = later.expect("a voiding cut was found").offset;
                self.voids.push(offset_u32(offset)..cut);
                self.offset = cut as usize;
                Ok(None)
            }
            (Decision::CleanEnd, _) => Err(SegmentEnd::Clean {
                offset: offset_u32(offset),
            }),
            (Decision::TornTail, Err(cause)) => Err(SegmentEnd::Torn {
                offset: offset_u32(offset),
                dirty_end: offset_u32(dirty_end(segment.bytes, offset)),
                cause,
            }),
            (Decision::Corrupt, Err(cause)) => Err(SegmentEnd::Corrupt {
                offset: offset_u32(offset),
                cause,
                later: later.map(|frame| LaterFrame {
                    offset: frame.offset,
                    index: frame.index,
                }),
            }),
            (decision, detail) => {
                panic!("decision {decision:?} does not fit what was found: {detail:?}")
            }
        }
    }
}

impl Iterator for SegmentScanner<'_> {
    type Item = FrameHeader;

    fn next(&mut self) -> Option<FrameHeader> {
        while self.end.is_none() {
            match self.step() {
                Ok(Some(frame)) => return Some(frame),
                Ok(None) => {}
                Err(end) => self.end = Some(end),
            }
        }
        None
    }
}

/// Scans one segment and collects its valid frames. Fails only if the segment
/// header is unusable; damage to frames is reported in [`SegmentScan::end`].
pub fn scan_segment(segment: SegmentBytes<'_>) -> Result<SegmentScan, ScanError> {
    let mut scanner = SegmentScanner::new(segment)?;
    let frames = scanner.by_ref().collect();
    Ok(SegmentScan {
        header: scanner.header,
        frames,
        voids: scanner.voids,
        end: scanner.end.expect("an exhausted scanner has ended"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_FOUND: [FrameCheck; 6] = [
        FrameCheck::Valid,
        FrameCheck::Padding,
        FrameCheck::Zero,
        FrameCheck::Foreign,
        FrameCheck::BadHeader,
        FrameCheck::BadBody,
    ];
    const ALL_LATER: [LaterBatch; 3] =
        [LaterBatch::None, LaterBatch::VoidingCut, LaterBatch::Other];

    fn matches(
        row: &RecoveryCase,
        found: FrameCheck,
        later: LaterBatch,
        rest_zero: bool,
        place: Place,
    ) -> bool {
        row.found.contains(&found)
            && row.later.is_none_or(|want| want == later)
            && row.rest_zero.is_none_or(|want| want == rest_zero)
            && row.place.is_none_or(|want| want == place)
    }

    /// Every combination of facts is decided by exactly one row.
    #[test]
    fn recovery_cases_are_exhaustive_and_unambiguous() {
        for found in ALL_FOUND {
            for later in ALL_LATER {
                for rest_zero in [false, true] {
                    for place in [Place::Last, Place::Sealed] {
                        let rows: Vec<_> = RECOVERY_CASES
                            .iter()
                            .filter(|row| matches(row, found, later, rest_zero, place))
                            .collect();
                        assert_eq!(
                            rows.len(),
                            1,
                            "{found:?} {later:?} rest_zero={rest_zero} {place:?}: {rows:?}"
                        );
                        let decided = decide(found, || later, || rest_zero, place);
                        assert_eq!(decided, rows[0].decision);
                    }
                }
            }
        }
    }

    #[test]
    fn valid_frames_need_no_look_ahead() {
        let decided = decide(
            FrameCheck::Valid,
            || panic!("looked for a later batch"),
            || panic!("looked at the rest"),
            Place::Sealed,
        );
        assert_eq!(decided, Decision::Keep);
    }
}
