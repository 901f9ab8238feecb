//! Forced truncation of a corrupt log: the operator's last resort.
//!
//! Recovery refuses a log that is damaged before its last batch (see
//! [`scan`](crate::scan)): the frames after the damage were synced, and may have
//! been acknowledged, so only a person may decide to drop them (in a cluster the
//! peers still hold them). This module drops the log from the damage on:
//! [`plan_truncate`] works out what that involves without changing anything,
//! the caller saves the [`TruncatePlan::salvage`] byte ranges, [`truncate`]
//! removes and zeroes, and [`Wal::open`](crate::Wal::open) then seals what is
//! left of the damaged batch with a cut frame, as it does a torn tail.
//!
//! | the damage                                   | the damaged segment   | done |
//! |----------------------------------------------|-----------------------|------|
//! | the segment header is unusable               | any                   | remove it |
//! | at the segment's first frame                 | not the log's first   | remove it |
//! | a frame that checks out but breaks the chain | stays                 | zero from that frame: recovery would keep it |
//! | anything else                                | stays                 | zero from the next block boundary; `Wal::open` cuts the bytes before it |
//!
//! Segments after the damaged one are always removed, newest first, so that a
//! crash part way leaves a log that ends at a segment, never one with a gap.
//! A first segment that loses all its frames stays, empty, so that the log keeps
//! its base index. Zeroing from a block boundary keeps the rule that no block
//! holding a synced frame is written again; only the chain-break case rewrites
//! the head of one block, with the bytes it already holds.

use std::ops::Deref;

use crate::frame::FrameHeader;
use crate::recovery::{RecoveryError, SegmentInput};
use crate::scan::{dirty_end, scan_segment, FrameCheck, Place, SegmentBytes, SegmentEnd};
use crate::segment::{offset_u32, segment_name, BLOCK_BYTES, SEGMENT_HEADER_BYTES};
use crate::storage::{io_error, IoError, Storage, StorageFile};
use crate::{FrameKind, LogIndex, Term};

/// Bytes written per call when zeroing the end of a segment.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

const _: () = assert!(ZERO_CHUNK_BYTES % BLOCK_BYTES == 0);

/// Where recovery found the log damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The first index of the damaged segment (its name).
    pub segment: LogIndex,
    /// Byte offset of the first bad frame; 0 when the segment header is unusable.
    pub offset: u32,
    /// The log index expected there (for an unusable header, the one its name gives).
    pub index: LogIndex,
}

impl Damage {
    /// The damage a recovery error reports; `None` for errors that are not
    /// damage to the segments (IO).
    pub fn of<M>(error: &RecoveryError, segments: &[SegmentInput<M>]) -> Option<Damage> {
        match error {
            RecoveryError::Corrupt {
                segment,
                offset,
                index,
                ..
            } => Some(Damage {
                segment: *segment,
                offset: *offset,
                index: *index,
            }),
            RecoveryError::Segment { file, .. } => {
                let input = segments.iter().find(|input| input.name == *file)?;
                Some(Damage {
                    segment: input.first_index,
                    offset: 0,
                    index: input.first_index,
                })
            }
            _ => None,
        }
    }
}

/// Bytes `from..to` of the segment named after `segment`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentRange {
    pub segment: LogIndex,
    pub from: u32,
    pub to: u32,
}

impl SegmentRange {
    /// The name of the file that keeps these bytes when they leave the log:
    /// `<segment file name>.cut-at-<from>`, beside the segment. Recovery ignores it.
    pub fn salvage_name(&self) -> String {
        format!("{}.cut-at-{}", segment_name(self.segment), self.from)
    }

    pub fn len_bytes(&self) -> u32 {
        self.to - self.from
    }
}

/// A valid frame that leaves the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LostFrame {
    pub segment: LogIndex,
    pub offset: u32,
    pub index: LogIndex,
    pub term: Term,
    pub kind: FrameKind,
}

impl LostFrame {
    fn new(header: &FrameHeader) -> LostFrame {
        LostFrame {
            segment: header.segment,
            offset: header.offset,
            index: header.index,
            term: header.term,
            kind: header.kind,
        }
    }
}

/// What dropping the log from the damage on involves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruncatePlan {
    pub damage: Damage,
    /// The bytes that leave the log, one range per affected file, for the
    /// caller to save (see [`SegmentRange::salvage_name`]) before [`truncate`].
    /// A removed segment is saved whole, so that it can be put back by a rename.
    pub salvage: Vec<SegmentRange>,
    /// Segments removed whole, in index order.
    pub remove: Vec<LogIndex>,
    /// The bytes of the damaged segment that are zeroed, if it stays.
    pub zero: Option<SegmentRange>,
    /// Valid frames that leave the log besides the damaged one, in file order.
    pub lost: Vec<LostFrame>,
}

/// Why a planned truncation could not be carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepairError {
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Works out how to drop the log from `damage` on. `segments` are the WAL's
/// segments in index order, as recovery read them.
///
/// Panics if `damage` does not lie in one of `segments`.
pub fn plan_truncate<M: Deref<Target = [u8]>>(
    segments: &[SegmentInput<M>],
    damage: Damage,
    payload_bytes_max: u32,
) -> TruncatePlan {
    let position = segments
        .iter()
        .position(|input| input.first_index == damage.segment)
        .expect("the damage lies in one of the segments");
    let damaged = segment_bytes(segments, position, payload_bytes_max);
    let offset = damage.offset as usize;
    let header_unusable = offset < SEGMENT_HEADER_BYTES;
    let keeps_frames = offset > SEGMENT_HEADER_BYTES;
    let first_removed = if header_unusable || (!keeps_frames && position > 0) {
        position
    } else {
        position + 1
    };
    let mut plan = TruncatePlan {
        damage,
        salvage: Vec::new(),
        remove: Vec::new(),
        zero: None,
        lost: frames_from(&damaged, offset.max(SEGMENT_HEADER_BYTES))
            .iter()
            .map(LostFrame::new)
            .collect(),
    };
    if first_removed > position {
        plan.salvage.push(SegmentRange {
            segment: damage.segment,
            from: damage.offset,
            to: offset_u32(dirty_end(damaged.bytes, offset)),
        });
        // A frame that checks out would be kept by the next recovery: it must
        // go too. Anything else there is torn bytes to Wal::open.
        let from = match damaged.check(offset).0 {
            FrameCheck::Valid => offset,
            _ => offset.next_multiple_of(BLOCK_BYTES),
        };
        plan.zero = Some(SegmentRange {
            segment: damage.segment,
            from: offset_u32(from),
            to: offset_u32(dirty_end(damaged.bytes, from)),
        });
    }
    for later in position + 1..segments.len() {
        let frames = later_segment_frames(segment_bytes(segments, later, payload_bytes_max));
        plan.lost.extend(frames.iter().map(LostFrame::new));
    }
    for input in &segments[first_removed..] {
        plan.salvage.push(SegmentRange {
            segment: input.first_index,
            from: 0,
            to: offset_u32(input.bytes.len()),
        });
        plan.remove.push(input.first_index);
    }
    plan.salvage.retain(|range| range.from < range.to);
    plan.zero = plan.zero.filter(|range| range.from < range.to);
    plan
}

/// The segment at `position`, placed as recovery places it.
fn segment_bytes<M: Deref<Target = [u8]>>(
    segments: &[SegmentInput<M>],
    position: usize,
    payload_bytes_max: u32,
) -> SegmentBytes<'_> {
    SegmentBytes {
        bytes: &segments[position].bytes,
        first_index: segments[position].first_index,
        place: Place::of(position, segments.len()),
        payload_bytes_max,
    }
}

/// Carries out `plan`: removes the segments it names (newest first, then syncs
/// the directory) and zeroes the damaged segment's range (then syncs the file).
/// The caller saves [`TruncatePlan::salvage`] first, and opens the WAL after.
pub async fn truncate<S: Storage>(storage: &S, plan: &TruncatePlan) -> Result<(), RepairError> {
    for segment in plan.remove.iter().rev() {
        let name = segment_name(*segment);
        storage
            .remove(&name)
            .await
            .map_err(io_error("remove", storage, &name))?;
    }
    if !plan.remove.is_empty() {
        storage
            .sync_dir()
            .await
            .map_err(io_error("sync", storage, ""))?;
    }
    if let Some(range) = &plan.zero {
        zero_range(storage, range).await?;
    }
    Ok(())
}

/// Zeroes `range` of a segment; `range.to` is a block boundary. When
/// `range.from` is not, the block holding it is rewritten with its own bytes
/// before `from`, since writes are whole blocks.
async fn zero_range<S: Storage>(storage: &S, range: &SegmentRange) -> Result<(), RepairError> {
    let name = segment_name(range.segment);
    let (from, to) = (range.from as usize, range.to as usize);
    assert_eq!(to % BLOCK_BYTES, 0, "zeroing ends on a block boundary");
    let mut file = storage
        .open(&name)
        .await
        .map_err(io_error("open", storage, &name))?;
    let mut at = from - from % BLOCK_BYTES;
    if at < from {
        let mut block = vec![0; BLOCK_BYTES];
        file.read_at(&mut block[..from - at], at as u64)
            .await
            .map_err(io_error("read", storage, &name))?;
        file.write_at(&block, at as u64)
            .await
            .map_err(io_error("write", storage, &name))?;
        at += BLOCK_BYTES;
    }
    let zeros = vec![0; ZERO_CHUNK_BYTES.min(to.saturating_sub(at))];
    while at < to {
        let chunk = (to - at).min(ZERO_CHUNK_BYTES);
        file.write_at(&zeros[..chunk], at as u64)
            .await
            .map_err(io_error("write", storage, &name))?;
        at += chunk;
    }
    file.sync()
        .await
        .map_err(io_error("sync", storage, &name))?;
    Ok(())
}

/// The valid frame at `offset` (if it is one) and the valid frames after it.
fn frames_from(segment: &SegmentBytes<'_>, offset: usize) -> Vec<FrameHeader> {
    if offset >= segment.bytes.len() {
        return Vec::new();
    }
    let here = segment.check(offset).1.ok();
    here.into_iter()
        .chain(segment.valid_frames_after(offset))
        .collect()
}

/// The frames of a segment after the damaged one: those its scan keeps, and
/// any valid ones past damage of its own.
fn later_segment_frames(segment: SegmentBytes<'_>) -> Vec<FrameHeader> {
    match scan_segment(segment) {
        Ok(scan) => {
            let mut frames = scan.frames;
            if let SegmentEnd::Corrupt { offset, .. } = scan.end {
                frames.extend(segment.valid_frames_after(offset as usize));
            }
            frames
        }
        Err(_) => frames_from(&segment, SEGMENT_HEADER_BYTES),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode_frame, encode_frame, FrameFields};
    use crate::recovery::{list_dir, map_segments, recover, Corruption, LogMap};
    use crate::{run_ready, MemStorage, Wal, WalOptions};
    use std::io;

    fn open(disk: &MemStorage) -> (Wal<MemStorage>, crate::OpenReport) {
        run_ready(Wal::open(disk.clone(), WalOptions::test_min())).unwrap()
    }

    /// A WAL of `batches` synced batches of 100-byte entries, in term 1.
    fn write(disk: &MemStorage, batches: &[u64]) -> LogMap {
        let (mut wal, _) = open(disk);
        for &count in batches {
            for _ in 0..count {
                wal.append(Term(1), &[7; 100]).unwrap();
            }
            run_ready(wal.sync()).unwrap();
        }
        wal.log_map().clone()
    }

    fn recover_disk(
        disk: &MemStorage,
    ) -> (Vec<SegmentInput<Vec<u8>>>, Result<LogMap, RecoveryError>) {
        let listing = list_dir(disk).unwrap();
        let inputs = map_segments(disk, &listing).unwrap();
        let log = recover(
            &inputs,
            WalOptions::test_min().payload_bytes_max,
            &mut |_| {},
        );
        (inputs, log)
    }

    fn plan(disk: &MemStorage) -> TruncatePlan {
        let (inputs, log) = recover_disk(disk);
        let error = log.expect_err("the log is corrupt");
        let damage = Damage::of(&error, &inputs).expect("damage, not IO");
        plan_truncate(&inputs, damage, WalOptions::test_min().payload_bytes_max)
    }

    fn lost_indexes(plan: &TruncatePlan) -> Vec<u64> {
        plan.lost.iter().map(|frame| frame.index.0).collect()
    }

    /// Truncates, reopens (which seals what is left), and checks that a second
    /// open finds the log clean and ending at `last`.
    fn truncate_and_reopen(disk: &MemStorage, plan: &TruncatePlan, last: u64) {
        run_ready(truncate(disk, plan)).unwrap();
        let (wal, _) = open(disk);
        assert_eq!(wal.last_index(), LogIndex(last));
        drop(wal);
        let (wal, report) = open(disk);
        assert_eq!(report.repaired, None, "the first open left a clean tail");
        assert_eq!(wal.last_index(), LogIndex(last));
    }

    #[test]
    fn damage_mid_segment_drops_the_rest_of_the_log() {
        let disk = MemStorage::new();
        // test_min segments hold two one-block batches of 100-byte entries:
        // entries 1..=6 and 7..=12 in the first segment, 13.. in the next.
        let log = write(&disk, &[6, 6, 6, 6]);
        assert_eq!(log.segments.len(), 2);
        let second = log.entry(LogIndex(2)).copied().unwrap();
        disk.corrupt(&segment_name(LogIndex(1)), second.offset as usize + 60, 1);
        let plan = plan(&disk);
        assert_eq!(plan.damage.segment, LogIndex(1));
        assert_eq!(plan.damage.offset, second.offset);
        assert_eq!(plan.damage.index, LogIndex(2));
        assert_eq!(lost_indexes(&plan), (3..=24).collect::<Vec<_>>());
        assert_eq!(plan.remove, vec![LogIndex(13)]);
        let zero = plan.zero.unwrap();
        assert_eq!(
            zero.from as usize,
            2 * BLOCK_BYTES,
            "the next block boundary"
        );
        assert_eq!(
            zero.to as usize,
            3 * BLOCK_BYTES,
            "the end of the second batch"
        );
        assert_eq!(plan.salvage[0].from, second.offset);
        assert_eq!(plan.salvage[0].to, zero.to);
        assert_eq!(
            plan.salvage[1],
            SegmentRange {
                segment: LogIndex(13),
                from: 0,
                to: WalOptions::test_min().segment_bytes as u32,
            }
        );
        assert_eq!(
            plan.salvage[1].salvage_name(),
            "00000000000000000013.wal.cut-at-0"
        );
        truncate_and_reopen(&disk, &plan, 1);
        assert_eq!(disk.contents(&segment_name(LogIndex(13))), None);
    }

    #[test]
    fn damage_at_the_first_frame_of_a_later_segment_removes_it() {
        let disk = MemStorage::new();
        let log = write(&disk, &[6, 6, 6, 6]);
        let first_of_second = log.entry(LogIndex(13)).copied().unwrap();
        assert_eq!(first_of_second.offset as usize, SEGMENT_HEADER_BYTES);
        // Damage in the first batch of the last segment, followed by its
        // second batch: corruption, at the segment's first frame.
        disk.corrupt(&segment_name(LogIndex(13)), SEGMENT_HEADER_BYTES + 70, 4);
        let plan = plan(&disk);
        assert_eq!(plan.damage.offset as usize, SEGMENT_HEADER_BYTES);
        assert_eq!(plan.remove, vec![LogIndex(13)]);
        assert_eq!(plan.zero, None);
        assert_eq!(lost_indexes(&plan), (14..=24).collect::<Vec<_>>());
        truncate_and_reopen(&disk, &plan, 12);
    }

    #[test]
    fn an_unusable_segment_header_removes_that_segment() {
        let disk = MemStorage::new();
        write(&disk, &[6, 6, 6, 6, 6, 6]);
        let (inputs, _) = recover_disk(&disk);
        assert_eq!(inputs.len(), 3);
        disk.corrupt(&segment_name(LogIndex(13)), 17, 0xff);
        let plan = plan(&disk);
        assert_eq!(plan.damage.offset, 0);
        assert_eq!(plan.remove, vec![LogIndex(13), LogIndex(25)]);
        assert_eq!(lost_indexes(&plan), (13..=36).collect::<Vec<_>>());
        truncate_and_reopen(&disk, &plan, 12);
    }

    #[test]
    fn a_frame_that_checks_out_but_breaks_the_chain_is_zeroed_itself() {
        let disk = MemStorage::new();
        let log = write(&disk, &[6, 6]);
        let name = segment_name(LogIndex(1));
        // Rewrite entry 3 with a wrong link to entry 2: both checksums hold.
        let third = log.entry(LogIndex(3)).copied().unwrap();
        let at = third.offset as usize;
        let bytes = disk.contents(&name).unwrap();
        let frame = decode_frame(&bytes[at..], 1 << 16).unwrap();
        let mut forged = Vec::new();
        let fields = FrameFields {
            kind: frame.header.kind,
            segment: frame.header.segment,
            index: frame.header.index,
            term: frame.header.term,
            prev_crc: frame.header.prev_crc ^ 1,
            offset: frame.header.offset,
            batch_offset: frame.header.batch_offset,
        };
        encode_frame(&mut forged, &fields, frame.payload);
        for (position, byte) in forged.iter().enumerate() {
            disk.corrupt(&name, at + position, byte ^ bytes[at + position]);
        }
        let (_, log) = recover_disk(&disk);
        assert!(matches!(
            log,
            Err(RecoveryError::Corrupt {
                cause: Corruption::Chain { .. },
                ..
            })
        ));
        let plan = plan(&disk);
        assert_eq!(
            plan.zero.unwrap().from,
            third.offset,
            "the forged frame goes"
        );
        assert_eq!(lost_indexes(&plan), (3..=12).collect::<Vec<_>>());
        truncate_and_reopen(&disk, &plan, 2);
        let kept = disk.contents(&name).unwrap();
        assert_eq!(kept[..at], bytes[..at], "frames before the damage are kept");
    }

    #[test]
    fn io_errors_are_not_damage() {
        let error = RecoveryError::Io(IoError {
            op: "map",
            file: "x".to_owned(),
            source: io::Error::other("gone"),
        });
        assert_eq!(Damage::of::<Vec<u8>>(&error, &[]), None);
    }
}
