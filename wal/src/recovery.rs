//! From segment scans to one log: the hash chain, cuts, and where to go on writing.
//!
//! Segments are read in index order; each one is [scanned](crate::scan), then its
//! valid frames are laid onto the log:
//! - an entry must carry the next index and the checksum of the frame before it;
//! - a cut frame at index `i` must carry the checksum of entry `i`: the entries
//!   after `i` leave the log and the next entry chains to the cut frame;
//! - a segment named `n` must begin with entry `n` or with a cut at `n - 1`, and
//!   an empty segment must be named after the next index.
//!
//! Anything else is corruption, reported with the file, byte offset and the log
//! index expected there. Only the last segment may end torn; the caller decides
//! whether to repair it ([`Wal::open`](crate::Wal::open)) or just report it.

use std::collections::VecDeque;
use std::ops::Range;

use crate::frame::FrameHeader;
use crate::scan::{
    BadFrame, LaterFrame, Place, ScanError, SegmentBytes, SegmentEnd, SegmentScanner,
};
use crate::segment::{file_role, FileRole, BLOCK_BYTES, SEGMENT_HEADER_BYTES};
use crate::storage::{io_error, IoError, Storage};
use crate::{FrameKind, LogIndex, Term};

/// Where an entry of the log lies, and what the writer needs to know of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryPosition {
    pub term: Term,
    pub offset: u32,
    pub payload_len: u32,
    pub crc: u32,
}

/// One segment as recovery left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentState {
    /// The index in the file name.
    pub first_index: LogIndex,
    /// Bytes in the file.
    pub segment_bytes: u64,
    /// Where the next batch would be written (a block boundary).
    pub write_end: u32,
    /// Valid frames, including cut frames and entries later cut.
    pub frames: usize,
    pub voids: Vec<Range<u32>>,
    pub end: SegmentEnd,
}

/// A torn last batch found by recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub segment: LogIndex,
    pub offset: u32,
    /// End of the last block that is not zero: the bytes a repair clears.
    pub dirty_end: u32,
    pub cause: BadFrame,
}

/// Where each entry of the log lies: built by recovery, then kept current by the writer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogMap {
    /// The index just before the first entry, and the checksum its successor chains to.
    pub base_index: LogIndex,
    pub base_term: Term,
    pub base_crc: u32,
    pub entries: VecDeque<EntryPosition>,
    /// The checksum the next frame must chain to.
    pub last_crc: u32,
    pub segments: Vec<SegmentState>,
    pub torn: Option<TornTail>,
    pub scanned_bytes: u64,
    /// Valid frames seen, cut frames and entries later cut included.
    pub frames: u64,
}

impl LogMap {
    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.base_index.0 + self.entries.len() as u64)
    }

    pub fn first_index(&self) -> LogIndex {
        self.base_index.next()
    }

    /// The entry at `index`, if it is in the log.
    pub fn entry(&self, index: LogIndex) -> Option<&EntryPosition> {
        let slot = index.0.checked_sub(self.first_index().0)?;
        self.entries.get(usize::try_from(slot).ok()?)
    }

    /// The checksum a frame following entry `index` chains to (the base's
    /// at the base).
    pub fn crc_at(&self, index: LogIndex) -> Option<u32> {
        if index == self.base_index {
            return Some(self.base_crc);
        }
        self.entry(index).map(|entry| entry.crc)
    }

    /// The term of entry `index` (the base's term at the base).
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.base_index {
            return Some(self.base_term);
        }
        self.entry(index).map(|entry| entry.term)
    }

    /// The position in [`LogMap::segments`] of the segment holding entry `index`.
    pub fn segment_position(&self, index: LogIndex) -> Option<usize> {
        self.entry(index)?;
        let after = self
            .segments
            .partition_point(|segment| segment.first_index <= index);
        after.checked_sub(1)
    }

    /// The segment holding entry `index`.
    pub fn segment_of(&self, index: LogIndex) -> Option<&SegmentState> {
        self.segments.get(self.segment_position(index)?)
    }
}

/// What recovery found wrong in the frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    #[error("{cause}{}{}", later.map(|later| format!(", yet frame {} follows at offset {} in a later batch", later.index, later.offset)).unwrap_or_default(), if *sealed { " in a sealed segment (later segments were written after it was synced)" } else { "" })]
    Frame {
        cause: BadFrame,
        later: Option<LaterFrame>,
        sealed: bool,
    },
    #[error("the hash chain breaks: found frame {found} chaining to {found_prev:#010x}, expected frame {expected} chaining to {expected_prev:#010x}")]
    Chain {
        found: LogIndex,
        found_prev: u32,
        expected: LogIndex,
        expected_prev: u32,
    },
    #[error("a cut to index {cut} lies outside the log {first}..={last}")]
    CutOutside {
        cut: LogIndex,
        first: LogIndex,
        last: LogIndex,
    },
    #[error("the term goes back from {previous} to {found}")]
    TermRegress { previous: Term, found: Term },
    #[error("the segment's first frame is {kind} {found}, its name says {expected}")]
    Name {
        kind: FrameKind,
        found: LogIndex,
        expected: LogIndex,
    },
    #[error("the segment is empty but the log continues at {expected}")]
    EmptySegment { expected: LogIndex },
}

/// Why the log cannot be recovered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    #[error("{file}: {source}")]
    Segment { file: String, source: ScanError },
    #[error(
        "{file}: corruption at byte offset {offset}, where log index {index} was expected: {cause}"
    )]
    Corrupt {
        file: String,
        segment: LogIndex,
        offset: u32,
        index: LogIndex,
        cause: Corruption,
    },
    #[error(transparent)]
    Io(#[from] IoError),
}

/// One segment's bytes, as recovery reads them.
#[derive(Debug)]
pub struct SegmentInput<M> {
    pub name: String,
    pub first_index: LogIndex,
    pub bytes: M,
}

/// The files of a WAL directory, sorted out.
#[derive(Debug, Default)]
pub struct DirListing {
    /// Segments in index order.
    pub segments: Vec<(String, LogIndex)>,
    /// Segments whose creation never finished.
    pub unfinished: Vec<String>,
    /// Anything else, left alone.
    pub other: Vec<String>,
}

/// Lists and sorts a WAL directory's files.
pub fn list_dir<S: Storage>(storage: &S) -> Result<DirListing, RecoveryError> {
    let names = storage.list().map_err(io_error("list", storage, ""))?;
    let mut listing = DirListing::default();
    for name in names {
        match file_role(&name) {
            FileRole::Segment(index) => listing.segments.push((name, index)),
            FileRole::UnfinishedSegment => listing.unfinished.push(name),
            FileRole::Other => listing.other.push(name),
        }
    }
    listing.segments.sort_by_key(|(_, index)| *index);
    Ok(listing)
}

/// Maps the listed segments for reading.
pub fn map_segments<S: Storage>(
    storage: &S,
    listing: &DirListing,
) -> Result<Vec<SegmentInput<S::Map>>, RecoveryError> {
    listing
        .segments
        .iter()
        .map(|(name, first_index)| {
            let bytes = storage.map(name).map_err(io_error("map", storage, name))?;
            Ok(SegmentInput {
                name: storage.describe(name),
                first_index: *first_index,
                bytes,
            })
        })
        .collect()
}

/// Recovers the log from its segments, in index order. `progress` is told the
/// bytes scanned so far after each segment.
pub fn recover<M: std::ops::Deref<Target = [u8]>>(
    segments: &[SegmentInput<M>],
    payload_bytes_max: u32,
    progress: &mut dyn FnMut(u64),
) -> Result<LogMap, RecoveryError> {
    let mut log = LogMap::default();
    for (position, input) in segments.iter().enumerate() {
        let place = Place::of(position, segments.len());
        lay_segment(&mut log, input, place, payload_bytes_max)?;
        log.scanned_bytes += input.bytes.len() as u64;
        progress(log.scanned_bytes);
    }
    Ok(log)
}

/// Scans one segment and lays its frames onto the log.
fn lay_segment<M: std::ops::Deref<Target = [u8]>>(
    log: &mut LogMap,
    input: &SegmentInput<M>,
    place: Place,
    payload_bytes_max: u32,
) -> Result<(), RecoveryError> {
    let mut scanner = SegmentScanner::new(SegmentBytes {
        bytes: &input.bytes,
        first_index: input.first_index,
        place,
        payload_bytes_max,
    })
    .map_err(|source| RecoveryError::Segment {
        file: input.name.clone(),
        source,
    })?;
    let corrupt = |log: &LogMap, offset, cause| corruption(log, input, offset, cause);
    let frames_before = log.frames;
    if frames_before == 0 {
        log.base_index = input.first_index.prev().unwrap_or_default();
    }
    let next_index = log.last_index().next();
    for frame in &mut scanner {
        if log.frames == frames_before && !names_segment(&frame, input.first_index) {
            let cause = Corruption::Name {
                kind: frame.kind,
                found: frame.index,
                expected: input.first_index,
            };
            return Err(corrupt(log, frame.offset, cause));
        }
        if log.frames == 0 {
            start_at(log, &frame);
        }
        lay_frame(log, input.first_index, &frame)
            .map_err(|cause| corrupt(log, frame.offset, cause))?;
        log.frames += 1;
    }
    let frames = usize::try_from(log.frames - frames_before).expect("a segment's frames fit usize");
    if frames == 0 && frames_before > 0 && input.first_index != next_index {
        let cause = Corruption::EmptySegment {
            expected: next_index,
        };
        return Err(corrupt(log, SEGMENT_HEADER_BYTES as u32, cause));
    }
    let end = scanner.end().expect("an exhausted scanner has ended");
    let end_offset = settle_end(log, input, place, end)?;
    log.segments.push(SegmentState {
        first_index: input.first_index,
        segment_bytes: scanner.header().segment_bytes,
        write_end: end_offset.next_multiple_of(BLOCK_BYTES as u32),
        frames,
        voids: scanner.voids().to_vec(),
        end,
    });
    Ok(())
}

/// The corruption error for `cause` at `offset` of `input`, naming the index
/// the log expected there.
fn corruption<M>(
    log: &LogMap,
    input: &SegmentInput<M>,
    offset: u32,
    cause: Corruption,
) -> RecoveryError {
    RecoveryError::Corrupt {
        file: input.name.clone(),
        segment: input.first_index,
        offset,
        index: log.last_index().next(),
        cause,
    }
}

/// Where the segment's frames end: a torn tail is noted for the writer to
/// seal; corruption is an error.
fn settle_end<M>(
    log: &mut LogMap,
    input: &SegmentInput<M>,
    place: Place,
    end: SegmentEnd,
) -> Result<u32, RecoveryError> {
    match end {
        SegmentEnd::Clean { offset } => Ok(offset),
        SegmentEnd::Torn {
            offset,
            dirty_end,
            cause,
        } => {
            log.torn = Some(TornTail {
                segment: input.first_index,
                offset,
                dirty_end,
                cause,
            });
            Ok(offset)
        }
        SegmentEnd::Corrupt {
            offset,
            cause,
            later,
        } => {
            let sealed = place == Place::Sealed;
            let cause = Corruption::Frame {
                cause,
                later,
                sealed,
            };
            Err(corruption(log, input, offset, cause))
        }
    }
}

/// A segment named `name` begins with entry `name` or with a cut at `name - 1`.
fn names_segment(first: &FrameHeader, name: LogIndex) -> bool {
    match first.kind {
        FrameKind::Entry => first.index == name,
        FrameKind::Cut => first.index.next() == name,
    }
}

/// The first frame of the log fixes its base: the frames before it are gone.
fn start_at(log: &mut LogMap, first: &FrameHeader) {
    (log.base_index, log.base_term) = match first.kind {
        FrameKind::Entry => (first.index.prev().unwrap_or_default(), Term(0)),
        FrameKind::Cut => (first.index, first.term),
    };
    log.base_crc = first.prev_crc;
    log.last_crc = first.prev_crc;
}

fn lay_frame(log: &mut LogMap, segment: LogIndex, frame: &FrameHeader) -> Result<(), Corruption> {
    match frame.kind {
        FrameKind::Entry => {
            let expected = log.last_index().next();
            if frame.index != expected || frame.prev_crc != log.last_crc {
                return Err(Corruption::Chain {
                    found: frame.index,
                    found_prev: frame.prev_crc,
                    expected,
                    expected_prev: log.last_crc,
                });
            }
            let previous = log.term_at(log.last_index()).unwrap_or_default();
            if frame.term < previous {
                return Err(Corruption::TermRegress {
                    previous,
                    found: frame.term,
                });
            }
            log.entries.push_back(EntryPosition {
                term: frame.term,
                offset: frame.offset,
                payload_len: frame.payload_len,
                crc: frame.header_crc,
            });
        }
        FrameKind::Cut => {
            let Some(expected_prev) = log.crc_at(frame.index) else {
                return Err(Corruption::CutOutside {
                    cut: frame.index,
                    first: log.first_index(),
                    last: log.last_index(),
                });
            };
            if frame.prev_crc != expected_prev {
                return Err(Corruption::Chain {
                    found: frame.index,
                    found_prev: frame.prev_crc,
                    expected: frame.index,
                    expected_prev,
                });
            }
            // Only a segment's first frame may cut into the segment before it.
            if frame.index.next() < segment {
                return Err(Corruption::CutOutside {
                    cut: frame.index,
                    first: segment,
                    last: log.last_index(),
                });
            }
            let keep = usize::try_from(frame.index.0 - log.base_index.0).expect("within the log");
            log.entries.truncate(keep);
        }
    }
    log.last_crc = frame.header_crc;
    Ok(())
}
