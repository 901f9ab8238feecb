//! The writer: append, group commit, cut, compaction.
//!
//! [`Wal::append`] encodes a frame into the pending batch and returns its index
//! at once; [`Wal::sync`] writes every pending batch with one write and one
//! fdatasync per segment it touches and reports the durable index. Appends made
//! between two syncs are one group commit. Each batch starts on a block and is
//! padded to one, so no block that holds a synced frame is written again. The
//! one exception is recovery's repair of a torn reserved block, which puts the
//! cut frame it holds back byte for byte (see `reserved_block_cleared`).
//!
//! A failed write, sync or directory operation poisons the WAL: the kernel may
//! have dropped the dirty pages, so no later call can know what is on disk and
//! every later call fails with [`WalError::Poisoned`]. The owner must reopen the
//! WAL, which recovers from what the disk really holds.

use std::io;

use crate::frame::{encode_frame, frame_bytes, FrameFields, FRAME_PAYLOAD_BYTES_MAX};
use crate::recovery::{
    list_dir, map_segments, recover, EntryPosition, LogMap, RecoveryError, SegmentInput,
    SegmentState, TornTail,
};
use crate::scan::{BadFrame, SegmentEnd};
use crate::segment::{
    offset_u32, segment_name, temp_segment_name, SegmentHeader, BLOCK_BYTES, SEGMENT_BYTES_MAX,
    SEGMENT_BYTES_MIN, SEGMENT_HEADER_BYTES, SEGMENT_RESERVED_TAIL_BYTES,
};
use crate::storage::{io_error, IoError, Storage, StorageFile};
use crate::{CutRecord, FrameKind, LogIndex, Term, LOG_INDEX_MAX};

/// Default segment size: large enough that rollover is rare, small enough that
/// compaction frees space in useful steps.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// Default largest payload of one entry.
pub const PAYLOAD_BYTES_MAX_DEFAULT: u32 = 16 << 20;

/// Limits of one WAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// Size of each new segment file; a multiple of [`BLOCK_BYTES`].
    pub segment_bytes: u64,
    /// Largest payload accepted by [`Wal::append`] and by recovery.
    pub payload_bytes_max: u32,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            payload_bytes_max: PAYLOAD_BYTES_MAX_DEFAULT,
        }
    }
}

impl WalOptions {
    /// The smallest useful limits, so that tests reach rollover and the
    /// reserved tail block within a few frames.
    pub fn test_min() -> WalOptions {
        WalOptions {
            segment_bytes: SEGMENT_BYTES_MIN,
            payload_bytes_max: 2048,
        }
    }

    /// The size of a new segment whose first frame takes `first_frame_bytes`:
    /// `segment_bytes`, or more for a frame that would not fit in that (a
    /// large value gets a segment of its own size rather than a limit every
    /// segment must be preallocated for). The header records each segment's
    /// size, so recovery reads any mix.
    fn segment_bytes_for(segment_bytes: u64, first_frame_bytes: usize) -> u64 {
        let need = (SEGMENT_HEADER_BYTES + first_frame_bytes + SEGMENT_RESERVED_TAIL_BYTES)
            .next_multiple_of(BLOCK_BYTES) as u64;
        segment_bytes.max(need)
    }

    /// Bytes of a segment that regular batches may use.
    fn capacity(segment_bytes: u64) -> usize {
        usize::try_from(segment_bytes).expect("segment size fits usize")
            - SEGMENT_RESERVED_TAIL_BYTES
    }

    pub fn validate(&self) -> Result<(), WalError> {
        let invalid = |reason| Err(WalError::InvalidOptions { reason });
        if self.segment_bytes % BLOCK_BYTES as u64 != 0 {
            return invalid("segment_bytes must be a multiple of the 4096-byte block");
        }
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return invalid("segment_bytes must be between 16 KiB and 2 GiB");
        }
        if self.payload_bytes_max > FRAME_PAYLOAD_BYTES_MAX {
            return invalid("payload_bytes_max must be at most 1 GiB");
        }
        if Self::segment_bytes_for(
            self.segment_bytes,
            frame_bytes(self.payload_bytes_max as usize),
        ) > SEGMENT_BYTES_MAX
        {
            return invalid("a frame of payload_bytes_max must fit in a segment of at most 2 GiB");
        }
        Ok(())
    }
}

/// What went wrong in a WAL call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    #[error("invalid WAL options: {reason}")]
    InvalidOptions { reason: &'static str },
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(
        "the WAL refuses writes since it failed to {op} {file} ({kind}); reopen it to recover"
    )]
    Poisoned {
        op: &'static str,
        file: String,
        kind: io::ErrorKind,
    },
    #[error("payload of {payload_len} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge { payload_len: usize, limit: u32 },
    #[error("cannot cut after {index}: entries up to {floor} must stay")]
    CutBelowFloor { index: LogIndex, floor: LogIndex },
    #[error("cannot cut after {index}: the log holds {first}..={last}")]
    CutOutsideLog {
        index: LogIndex,
        first: LogIndex,
        last: LogIndex,
    },
    #[error("entry {index} is not in the log {first}..={last}")]
    NoEntry {
        index: LogIndex,
        first: LogIndex,
        last: LogIndex,
    },
    #[error(
        "{file} read back differently twice, so its torn-looking tail was not cut: \
         the disk returns unstable data (retry; if it persists, check the disk)"
    )]
    UnstableRead { file: String },
    #[error("entry {index} read back from {file} is damaged: {cause}")]
    Damaged {
        index: LogIndex,
        file: String,
        cause: crate::frame::FrameError,
    },
}

/// Reads the torn segment again before its tail is cut for good: a torn tail
/// and a synced batch that was read back with a flipped bit look the same to
/// one read, and cutting on a bad read would destroy acknowledged entries. The
/// simulator found exactly that (a transient read fault in the last synced
/// batch). Two reads that differ refuse the open; a retry reads afresh.
fn confirm_torn_read<S: Storage>(
    storage: &S,
    inputs: &[SegmentInput<S::Map>],
    segment: LogIndex,
) -> Result<(), WalError> {
    let name = segment_name(segment);
    let first = inputs
        .iter()
        .find(|input| input.first_index == segment)
        .expect("the torn segment was read");
    let again = storage
        .map(&name)
        .map_err(io_error("map", storage, &name))?;
    if *again != *first.bytes {
        return Err(WalError::UnstableRead {
            file: storage.describe(&name),
        });
    }
    Ok(())
}

/// A torn tail that [`Wal::open`] sealed off with a cut frame (or, torn bytes
/// after an earlier repair's cut frame in the reserved block, cleared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTailRepair {
    pub file: String,
    /// Where the torn bytes began.
    pub offset: u32,
    /// Bytes from `offset` that are void now.
    pub cut_bytes: u32,
    pub cause: BadFrame,
    /// The last entry kept.
    pub last_index: LogIndex,
}

/// What [`Wal::open`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenReport {
    pub segments: usize,
    pub first_index: LogIndex,
    pub last_index: LogIndex,
    pub scanned_bytes: u64,
    pub repaired: Option<TornTailRepair>,
    /// Leftovers of segment creations a crash interrupted, now removed.
    pub removed_unfinished: Vec<String>,
    /// Files that are not the WAL's, left alone.
    pub ignored: Vec<String>,
}

/// A batch not yet written: frames for one segment, from a block boundary.
#[derive(Debug)]
struct PendingWrite {
    segment: LogIndex,
    create: bool,
    offset: usize,
    bytes: Vec<u8>,
}

#[derive(Clone, Debug)]
struct Poison {
    op: &'static str,
    file: String,
    kind: io::ErrorKind,
}

/// An open write-ahead log in one directory.
#[derive(Debug)]
pub struct Wal<S: Storage> {
    storage: S,
    options: WalOptions,
    log: LogMap,
    /// The open file of the last segment.
    tail: Option<S::File>,
    pending: Vec<PendingWrite>,
    /// The buffer of the last flushed batch, kept for the next one so that a
    /// steady stream of batches does not allocate.
    spare_buffer: Vec<u8>,
    durable_index: LogIndex,
    poisoned: Option<Poison>,
}

impl<S: Storage> Wal<S> {
    /// Opens the WAL in `storage`, creating nothing until the first sync.
    /// Recovers the log, makes what it holds durable, and seals off a torn tail.
    pub async fn open(storage: S, options: WalOptions) -> Result<(Wal<S>, OpenReport), WalError> {
        options.validate()?;
        let listing = list_dir(&storage)?;
        for name in &listing.unfinished {
            storage
                .remove(name)
                .await
                .map_err(io_error("remove", &storage, name))?;
        }
        if !listing.unfinished.is_empty() {
            storage
                .sync_dir()
                .await
                .map_err(io_error("sync", &storage, ""))?;
        }
        let log = {
            let inputs = map_segments(&storage, &listing)?;
            let log = recover(&inputs, options.payload_bytes_max, &mut |_| {})?;
            if let Some(torn) = &log.torn {
                confirm_torn_read(&storage, &inputs, torn.segment)?;
            }
            log
        };
        let mut wal = Wal {
            storage,
            options,
            log,
            tail: None,
            pending: Vec::new(),
            spare_buffer: Vec::new(),
            durable_index: LogIndex(0),
            poisoned: None,
        };
        wal.open_tail().await?;
        // What recovery read may still sit only in the page cache after a
        // process crash: sync it before anything is built on it.
        if let Some(tail) = wal.tail.as_mut() {
            tail.sync()
                .await
                .map_err(io_error("sync", &wal.storage, &wal.tail_name()))?;
        }
        let repaired = match wal.log.torn.take() {
            Some(torn) => Some(wal.repair_torn_tail(torn).await?),
            None => None,
        };
        wal.durable_index = wal.log.last_index();
        let report = OpenReport {
            segments: wal.log.segments.len(),
            first_index: wal.first_index(),
            last_index: wal.last_index(),
            scanned_bytes: wal.log.scanned_bytes,
            repaired,
            removed_unfinished: listing.unfinished,
            ignored: listing.other,
        };
        Ok((wal, report))
    }

    /// The first entry in the log (one past the last if it is empty).
    pub fn first_index(&self) -> LogIndex {
        self.log.first_index()
    }

    /// The last entry appended, durable or not.
    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }

    /// Every entry up to this one is durable.
    pub fn durable_index(&self) -> LogIndex {
        self.durable_index
    }

    /// The term of entry `index`, or of the log's base.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term_at(index)
    }

    /// Where each entry lies.
    pub fn log_map(&self) -> &LogMap {
        &self.log
    }

    pub(crate) fn storage(&self) -> &S {
        &self.storage
    }

    fn check_poison(&self) -> Result<(), WalError> {
        match &self.poisoned {
            Some(poison) => Err(WalError::Poisoned {
                op: poison.op,
                file: poison.file.clone(),
                kind: poison.kind,
            }),
            None => Ok(()),
        }
    }

    fn tail_name(&self) -> String {
        self.log
            .segments
            .last()
            .map(|segment| segment_name(segment.first_index))
            .unwrap_or_default()
    }

    async fn open_tail(&mut self) -> Result<(), WalError> {
        self.tail = None;
        if let Some(last) = self.log.segments.last() {
            let name = segment_name(last.first_index);
            let file =
                self.storage
                    .open(&name)
                    .await
                    .map_err(io_error("open", &self.storage, &name))?;
            let size_bytes = file
                .size_bytes()
                .map_err(io_error("stat", &self.storage, &name))?;
            assert_eq!(
                size_bytes, last.segment_bytes,
                "the tail file is the one recovery scanned"
            );
            self.tail = Some(file);
        }
        Ok(())
    }

    /// Buffers an entry for the next [`sync`](Wal::sync) and returns its index.
    ///
    /// Panics if `term` is below the last entry's: terms never go back.
    pub fn append(&mut self, term: Term, payload: &[u8]) -> Result<LogIndex, WalError> {
        self.check_poison()?;
        let limit = self.options.payload_bytes_max;
        if payload.len() > limit as usize {
            return Err(WalError::PayloadTooLarge {
                payload_len: payload.len(),
                limit,
            });
        }
        let last = self.last_index();
        let last_term = self.log.term_at(last).unwrap_or_default();
        assert!(
            term >= last_term,
            "term {term} after term {last_term}: terms never go back along the log"
        );
        let index = last.next();
        assert!(
            index <= LOG_INDEX_MAX,
            "the log is full: index {index} is beyond LOG_INDEX_MAX"
        );
        let offset = self.place_frame(index, payload.len());
        let crc = self.encode_pending(FrameKind::Entry, index, term, payload);
        self.log.entries.push_back(EntryPosition {
            term,
            offset: offset_u32(offset),
            payload_len: u32::try_from(payload.len()).expect("checked against the limit"),
            crc,
        });
        Ok(index)
    }

    /// Makes room for a frame in the pending batches and returns its offset. A
    /// frame that does not fit in the tail segment opens a new segment, named
    /// after the first entry it will hold.
    fn place_frame(&mut self, first_entry: LogIndex, payload_len: usize) -> usize {
        let need = frame_bytes(payload_len);
        let next_offset = match (self.pending.last(), self.log.segments.last()) {
            (Some(write), Some(segment)) => Some((write.offset + write.bytes.len(), segment)),
            (None, Some(segment)) => Some((segment.write_end as usize, segment)),
            (_, None) => None,
        };
        let fits = next_offset.filter(|(offset, segment)| {
            offset + need <= WalOptions::capacity(segment.segment_bytes)
        });
        match fits {
            Some((offset, segment)) => {
                if self.pending.is_empty() {
                    self.pending.push(PendingWrite {
                        segment: segment.first_index,
                        create: false,
                        offset,
                        bytes: std::mem::take(&mut self.spare_buffer),
                    });
                }
                offset
            }
            None => {
                // A tail already named after `first_entry` holds no entry, only
                // the cut frame of a repair that filled it. The new segment
                // takes its name and replaces it (`create_segment` renames over
                // it), so it restates that cut first: otherwise its first entry
                // would chain to a frame no longer on disk.
                let replaces_tail = self
                    .log
                    .segments
                    .last()
                    .is_some_and(|tail| tail.first_index == first_entry);
                let restated_cut_bytes = if replaces_tail {
                    assert!(
                        self.pending.is_empty(),
                        "a segment holding no entry has no pending write when the next entry replaces it"
                    );
                    self.log.segments.pop();
                    frame_bytes(CutRecord::ENCODED_BYTES)
                } else {
                    0
                };
                self.log.segments.push(SegmentState {
                    first_index: first_entry,
                    segment_bytes: WalOptions::segment_bytes_for(
                        self.options.segment_bytes,
                        need + restated_cut_bytes,
                    ),
                    write_end: offset_u32(SEGMENT_HEADER_BYTES),
                    frames: 0,
                    voids: Vec::new(),
                    end: SegmentEnd::Clean {
                        offset: offset_u32(SEGMENT_HEADER_BYTES),
                    },
                });
                self.pending.push(PendingWrite {
                    segment: first_entry,
                    create: true,
                    offset: SEGMENT_HEADER_BYTES,
                    bytes: std::mem::take(&mut self.spare_buffer),
                });
                if replaces_tail {
                    let last = self.last_index();
                    let term = self
                        .log
                        .term_at(last)
                        .expect("the last index is in the log");
                    let record = CutRecord {
                        abandoned_from: offset_u32(SEGMENT_HEADER_BYTES),
                    };
                    self.encode_pending(FrameKind::Cut, last, term, &record.encode());
                }
                SEGMENT_HEADER_BYTES + restated_cut_bytes
            }
        }
    }

    /// Encodes a frame into the last pending batch, chained to the log's last
    /// frame, and returns its checksum.
    fn encode_pending(
        &mut self,
        kind: FrameKind,
        index: LogIndex,
        term: Term,
        payload: &[u8],
    ) -> u32 {
        let prev_crc = match kind {
            FrameKind::Entry => self.log.last_crc,
            FrameKind::Cut => self
                .log
                .crc_at(index)
                .expect("a cut keeps an index within the log"),
        };
        let write = self
            .pending
            .last_mut()
            .expect("place_frame made a pending batch");
        let fields = FrameFields {
            kind,
            segment: write.segment,
            index,
            term,
            prev_crc,
            offset: offset_u32(write.offset + write.bytes.len()),
            batch_offset: offset_u32(write.offset),
        };
        let crc = encode_frame(&mut write.bytes, &fields, payload);
        self.log.last_crc = crc;
        crc
    }

    /// Writes and syncs everything appended, and returns the durable index.
    pub async fn sync(&mut self) -> Result<LogIndex, WalError> {
        self.check_poison()?;
        for write in std::mem::take(&mut self.pending) {
            let result = self.flush(write).await;
            self.poison_on_io(result)?;
        }
        self.durable_index = self.last_index();
        Ok(self.durable_index)
    }

    async fn flush(&mut self, mut write: PendingWrite) -> Result<(), WalError> {
        write
            .bytes
            .resize(write.bytes.len().next_multiple_of(BLOCK_BYTES), 0);
        let segment_bytes = self
            .log
            .segments
            .iter()
            .rev()
            .find(|segment| segment.first_index == write.segment)
            .expect("a pending batch has a segment")
            .segment_bytes;
        assert!(
            (write.offset + write.bytes.len()) as u64 <= segment_bytes,
            "a write of {} bytes at {} would grow segment {} past its {segment_bytes} bytes",
            write.bytes.len(),
            write.offset,
            write.segment
        );
        if write.create {
            assert_eq!(
                write.offset, SEGMENT_HEADER_BYTES,
                "a new segment's first batch follows its header"
            );
            self.tail = Some(
                self.create_segment(write.segment, segment_bytes, &write.bytes)
                    .await?,
            );
        } else {
            let name = segment_name(write.segment);
            let tail = self
                .tail
                .as_mut()
                .expect("a pending batch has a tail segment");
            tail.write_durable_at(&write.bytes, write.offset as u64)
                .await
                .map_err(io_error("write and sync", &self.storage, &name))?;
        }
        // A batch that rolled over is two writes: the segment list already ends
        // with the new segment while the old one's write is flushed.
        let segment = self
            .log
            .segments
            .iter_mut()
            .rev()
            .find(|segment| segment.first_index == write.segment)
            .expect("a pending batch has a segment");
        segment.write_end = offset_u32(write.offset + write.bytes.len());
        write.bytes.clear();
        self.spare_buffer = write.bytes;
        Ok(())
    }

    /// Creates a zero-filled segment under a temporary name, writes its header
    /// and its first batch, then gives it its name: a segment file either holds
    /// its first batch or does not exist. A named but empty segment would be
    /// corruption to recovery when a cut frame opened it (it is named below the
    /// next index), so its name must not become durable before the frame does.
    ///
    /// Zero-filling costs a segment's worth of writes, inside the sync that
    /// rolls over. Doing it ahead, concurrently, was measured to be worse on
    /// this disk (docs/PERFORMANCE.md): the concurrent writes stall the
    /// commit path's fdatasync far more than the inline fill costs.
    async fn create_segment(
        &mut self,
        first_index: LogIndex,
        segment_bytes: u64,
        first_batch: &[u8],
    ) -> Result<S::File, WalError> {
        let storage = &self.storage;
        let temp = temp_segment_name(first_index);
        let mut file = storage
            .create(&temp)
            .await
            .map_err(io_error("create", storage, &temp))?;
        let header = SegmentHeader {
            first_index,
            segment_bytes,
        };
        file.preallocate(header.segment_bytes)
            .await
            .map_err(io_error("preallocate", storage, &temp))?;
        file.write_at(&header.encode(), 0)
            .await
            .map_err(io_error("write", storage, &temp))?;
        file.write_at(first_batch, SEGMENT_HEADER_BYTES as u64)
            .await
            .map_err(io_error("write", storage, &temp))?;
        file.sync()
            .await
            .map_err(io_error("sync", storage, &temp))?;
        let name = segment_name(first_index);
        storage
            .rename(&temp, &name)
            .await
            .map_err(io_error("rename", storage, &temp))?;
        #[cfg(feature = "planted-bugs")]
        if crate::planted::active(crate::planted::Plant::SkipDirFsync) {
            return Ok(file);
        }
        storage
            .sync_dir()
            .await
            .map_err(io_error("sync", storage, ""))?;
        Ok(file)
    }

    /// Cuts the log after `index`: later entries leave it, durably, before this
    /// returns. Refuses to cut below `floor` (entries that must stay, such as
    /// committed ones). Pending entries are synced first.
    pub async fn cut_after(&mut self, index: LogIndex, floor: LogIndex) -> Result<(), WalError> {
        self.check_poison()?;
        if index < floor {
            return Err(WalError::CutBelowFloor { index, floor });
        }
        if index < self.log.base_index || index > self.last_index() {
            return Err(WalError::CutOutsideLog {
                index,
                first: self.first_index(),
                last: self.last_index(),
            });
        }
        self.sync().await?;
        if index == self.last_index() {
            return Ok(());
        }
        let result = self.cut_synced(index).await;
        self.poison_on_io(result)
    }

    async fn cut_synced(&mut self, index: LogIndex) -> Result<(), WalError> {
        // Segments named after `index` hold only entries past it: remove them
        // (newest first), so that the cut frame lands where entry `index` is.
        let mut removed = false;
        while let Some(last) = self
            .log
            .segments
            .last()
            .filter(|segment| segment.first_index > index)
        {
            let name = segment_name(last.first_index);
            self.tail = None;
            self.storage
                .remove(&name)
                .await
                .map_err(io_error("remove", &self.storage, &name))?;
            self.log.segments.pop();
            removed = true;
        }
        if removed {
            self.storage
                .sync_dir()
                .await
                .map_err(io_error("sync", &self.storage, ""))?;
            self.open_tail().await?;
        }
        let keep =
            usize::try_from(index.0 - self.log.base_index.0).expect("index is within the log");
        self.log.entries.truncate(keep);
        let term = self.log.term_at(index).expect("index is within the log");
        let offset = self.place_frame(index.next(), CutRecord::ENCODED_BYTES);
        let record = CutRecord {
            abandoned_from: offset_u32(offset),
        };
        self.encode_pending(FrameKind::Cut, index, term, &record.encode());
        self.sync().await?;
        Ok(())
    }

    /// Seals off a torn tail: a cut frame on the first free block voids the torn
    /// bytes, and the same write clears the rest of them, so the next recovery
    /// finds the tail clean. Torn bytes inside the reserved last block have no
    /// free block after them: they are cleared in place instead.
    async fn repair_torn_tail(&mut self, torn: TornTail) -> Result<TornTailRepair, WalError> {
        let last = self.last_index();
        let tail = self
            .log
            .segments
            .last()
            .expect("a torn tail lies in a segment");
        assert_eq!(
            tail.first_index, torn.segment,
            "only the last segment can be torn"
        );
        let reserved_start = WalOptions::capacity(tail.segment_bytes);
        let torn_offset = torn.offset as usize;
        if torn_offset > reserved_start {
            let block = self
                .reserved_block_cleared(reserved_start, torn_offset)
                .await?;
            self.pending.push(PendingWrite {
                segment: torn.segment,
                create: false,
                offset: reserved_start,
                bytes: block,
            });
        } else {
            self.push_cut_frame(torn, last);
        }
        self.sync().await?;
        Ok(TornTailRepair {
            file: self.storage.describe(&segment_name(torn.segment)),
            offset: torn.offset,
            cut_bytes: torn.dirty_end.saturating_sub(torn.offset),
            cause: torn.cause,
            last_index: last,
        })
    }

    /// Queues a cut frame after entry `last` on the first block boundary at or
    /// after the torn bytes, padded with zeros up to their end.
    fn push_cut_frame(&mut self, torn: TornTail, last: LogIndex) {
        let term = self
            .log
            .term_at(last)
            .expect("the last index is in the log");
        let at = torn.offset.next_multiple_of(BLOCK_BYTES as u32) as usize;
        self.pending.push(PendingWrite {
            segment: torn.segment,
            create: false,
            offset: at,
            bytes: Vec::new(),
        });
        let record = CutRecord {
            abandoned_from: torn.offset,
        };
        self.encode_pending(FrameKind::Cut, last, term, &record.encode());
        let write = self.pending.last_mut().expect("pushed above");
        let cleared_end = (torn.dirty_end as usize).max(at + write.bytes.len());
        write.bytes.resize(cleared_end - at, 0);
    }

    /// The reserved last block of the tail segment as it must become when it
    /// is torn from `torn_offset`: its bytes before that offset as they are,
    /// zeros after.
    ///
    /// Regular batches never use this block, so the only frames in it are cut
    /// frames of earlier repairs (one, at its start): a repair whose sync
    /// failed, or whose power failed, before the rest of the block was written.
    /// Rewriting those frames breaks the rule that a block holding synced
    /// frames is not written again, and is safe because of what they are. A cut
    /// frame voids only bytes that were never durable (a torn last batch), no
    /// entry lies in this block, and the write puts the frames back byte for
    /// byte. If this write is torn and they survive, the next open finds what
    /// this one found. If they are lost, the log returns to the torn state the
    /// earlier repair found (the same entries, the torn bytes before this
    /// block), which the next open seals again with a cut frame at the start of
    /// this block.
    async fn reserved_block_cleared(
        &self,
        reserved_start: usize,
        torn_offset: usize,
    ) -> Result<Vec<u8>, WalError> {
        let name = self.tail_name();
        let tail = self.tail.as_ref().expect("a torn tail has an open file");
        let mut block = vec![0; torn_offset - reserved_start];
        tail.read_at(&mut block, reserved_start as u64)
            .await
            .map_err(io_error("read", &self.storage, &name))?;
        let mut at = 0;
        while at < block.len() {
            let frame = crate::frame::decode_frame(&block[at..], self.options.payload_bytes_max)
                .unwrap_or_else(|error| {
                    panic!(
                        "recovery kept a frame at {name}:{} that does not decode: {error}",
                        reserved_start + at
                    )
                });
            assert_eq!(
                frame.header.kind,
                FrameKind::Cut,
                "only a repair's cut frame lies in the reserved block of {name}"
            );
            assert_eq!(
                frame.header.offset as usize,
                reserved_start + at,
                "the frames before the torn bytes of {name} tile the reserved block"
            );
            at += frame_bytes(frame.header.payload_len as usize);
        }
        assert_eq!(
            at,
            block.len(),
            "the frames in the reserved block of {name} end where the torn bytes begin"
        );
        block.resize(BLOCK_BYTES, 0);
        Ok(block)
    }

    /// Starts the log over after `base` (of term `base_term`): every segment
    /// is removed and a new one, named after the entry that follows `base`,
    /// begins with a cut frame that names the base, as a repaired segment's
    /// does; the next [`append`](Wal::append) gets index `base + 1`. For a
    /// replica that installed a snapshot through `base` which its log does
    /// not reach, or leaves behind: what the log held is superseded.
    ///
    /// Durable when this returns. A crash between the removals and the new
    /// segment leaves a log ending below `base` (or none): the caller, whose
    /// snapshot through `base` is durable first, restarts it again.
    pub async fn restart_after(&mut self, base: LogIndex, base_term: Term) -> Result<(), WalError> {
        self.check_poison()?;
        let result = self.restart_synced(base, base_term).await;
        self.poison_on_io(result)
    }

    async fn restart_synced(&mut self, base: LogIndex, base_term: Term) -> Result<(), WalError> {
        self.sync().await?;
        self.tail = None;
        // Newest first: a crash part way leaves a prefix of the log, which
        // recovery reads as a log that ends early.
        while let Some(last) = self.log.segments.last() {
            let name = segment_name(last.first_index);
            self.storage
                .remove(&name)
                .await
                .map_err(io_error("remove", &self.storage, &name))?;
            self.log.segments.pop();
        }
        self.storage
            .sync_dir()
            .await
            .map_err(io_error("sync", &self.storage, ""))?;
        self.log = LogMap {
            base_index: base,
            base_term,
            base_crc: 0,
            last_crc: 0,
            ..LogMap::default()
        };
        let offset = self.place_frame(base.next(), CutRecord::ENCODED_BYTES);
        let record = CutRecord {
            abandoned_from: offset_u32(offset),
        };
        self.encode_pending(FrameKind::Cut, base, base_term, &record.encode());
        self.durable_index = base;
        self.sync().await?;
        Ok(())
    }

    /// Removes whole segments whose entries all lie below `index` (never the
    /// last segment), and returns how many. For compaction after a snapshot.
    pub async fn remove_below(&mut self, index: LogIndex) -> Result<usize, WalError> {
        let names = self.detach_below(index)?;
        let result = remove_segment_files(&self.storage, &names).await;
        self.poison_on_io(result)?;
        Ok(names.len())
    }

    /// Takes the whole segments whose entries all lie below `index` (never
    /// the last segment) out of the log, in memory only, and returns their
    /// file names for [`remove_segment_files`], which the caller runs when
    /// it suits it: removing files and syncing the directory take
    /// milliseconds that the next batch need not wait for. Until the files
    /// are gone, and after a crash before that, they are a prefix of the
    /// log below the snapshot, as after a crash between a snapshot and its
    /// compaction, which recovery already meets.
    pub fn detach_below(&mut self, index: LogIndex) -> Result<Vec<String>, WalError> {
        self.check_poison()?;
        let removable = self
            .log
            .segments
            .windows(2)
            .take_while(|pair| pair[1].first_index <= index)
            .count();
        if removable == 0 {
            return Ok(Vec::new());
        }
        let new_base = self.log.segments[removable]
            .first_index
            .prev()
            .expect("a later segment is named after index 1 or above");
        let base_term = self
            .log
            .term_at(new_base)
            .expect("the new base is in the log");
        let base_crc = self
            .log
            .crc_at(new_base)
            .expect("the new base is in the log");
        let names = self
            .log
            .segments
            .drain(..removable)
            .map(|segment| segment_name(segment.first_index))
            .collect();
        let dropped = usize::try_from(new_base.0 - self.log.base_index.0).expect("within the log");
        self.log.entries.drain(..dropped);
        self.log.base_index = new_base;
        self.log.base_term = base_term;
        self.log.base_crc = base_crc;
        Ok(names)
    }

    fn poison_on_io<T>(&mut self, result: Result<T, WalError>) -> Result<T, WalError> {
        if let Err(WalError::Io(error)) = &result {
            self.poisoned = Some(Poison {
                op: error.op,
                file: error.file.clone(),
                kind: error.source.kind(),
            });
        }
        result
    }

    /// Reads entry `index` back from its segment and checks it.
    pub async fn read_entry(&self, index: LogIndex) -> Result<Vec<u8>, WalError> {
        let no_entry = || WalError::NoEntry {
            index,
            first: self.first_index(),
            last: self.last_index(),
        };
        let entry = *self.log.entry(index).ok_or_else(no_entry)?;
        let segment = self.log.segment_of(index).ok_or_else(no_entry)?;
        let name = segment_name(segment.first_index);
        let file =
            self.storage
                .open(&name)
                .await
                .map_err(io_error("open", &self.storage, &name))?;
        let mut bytes = vec![0; frame_bytes(entry.payload_len as usize)];
        file.read_at(&mut bytes, u64::from(entry.offset))
            .await
            .map_err(io_error("read", &self.storage, &name))?;
        let frame = crate::frame::decode_frame(&bytes, self.options.payload_bytes_max).map_err(
            |cause| WalError::Damaged {
                index,
                file: self.storage.describe(&name),
                cause,
            },
        )?;
        assert_eq!(
            frame.header.index, index,
            "the log map points at the wrong frame"
        );
        assert_eq!(
            frame.header.header_crc, entry.crc,
            "the log map points at the wrong frame"
        );
        Ok(frame.payload.to_vec())
    }
}

/// Removes the segment files `names` ([`Wal::detach_below`]'s) from
/// `storage`, in order, then syncs the directory so that they stay gone.
pub async fn remove_segment_files<S: Storage>(
    storage: &S,
    names: &[String],
) -> Result<(), WalError> {
    if names.is_empty() {
        return Ok(());
    }
    for name in names {
        storage
            .remove(name)
            .await
            .map_err(io_error("remove", storage, name))?;
    }
    storage
        .sync_dir()
        .await
        .map_err(io_error("sync", storage, ""))?;
    Ok(())
}
