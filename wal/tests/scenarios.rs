//! Scenario tests of the writer and recovery on the fault-injecting MemStorage.

use keel_wal::memory::{CrashMode, Faults};
use keel_wal::recovery::Corruption;
use keel_wal::scan::BadFrame;
use keel_wal::segment::{segment_name, SegmentHeader};
use keel_wal::storage::IoError;
use keel_wal::{run_ready, LogIndex, MemStorage, RecoveryError, Term, Wal, WalError, WalOptions};

fn open(disk: &MemStorage) -> Result<(Wal<MemStorage>, keel_wal::OpenReport), WalError> {
    run_ready(Wal::open(disk.clone(), WalOptions::test_min()))
}

fn payload(index: u64) -> Vec<u8> {
    format!("entry {index} ")
        .repeat(1 + (index % 7) as usize)
        .into_bytes()
}

/// Appends entries with payload(i) in batches, syncing after each.
fn write_batches(wal: &mut Wal<MemStorage>, batches: &[u64]) {
    for &count in batches {
        for _ in 0..count {
            let index = wal.last_index().next().0;
            wal.append(Term(1), &payload(index)).unwrap();
        }
        run_ready(wal.sync()).unwrap();
    }
}

fn assert_entries(wal: &Wal<MemStorage>, last: u64) {
    assert_eq!(wal.last_index(), LogIndex(last));
    for index in wal.first_index().0..=last {
        assert_eq!(
            run_ready(wal.read_entry(LogIndex(index))).unwrap(),
            payload(index),
            "entry {index}"
        );
    }
}

#[test]
fn entries_survive_reopen_across_segment_rollover() {
    let disk = MemStorage::new();
    let (mut wal, report) = open(&disk).unwrap();
    assert_eq!(report.last_index, LogIndex(0));
    write_batches(&mut wal, &[1, 5, 30, 2, 60, 1]);
    assert_eq!(wal.durable_index(), LogIndex(99));
    assert!(
        wal.log_map().segments.len() > 3,
        "test_min segments roll over"
    );
    drop(wal);
    let (wal, report) = open(&disk).unwrap();
    assert_eq!(report.repaired, None);
    assert_entries(&wal, 99);
}

/// Regression: a batch that ends fewer than a header's bytes before a block
/// boundary leaves padding that a header-sized window cannot see as zeros
/// (the window reaches into the next batch). The scan once called it damage.
#[test]
fn a_batch_ending_just_before_a_block_boundary_is_padding() {
    let disk = MemStorage::new();
    let (mut wal, _) = open(&disk).unwrap();
    // Two frames of 56 + 1968 bytes end 48 bytes before the first block's end.
    let payload = vec![7; 1968];
    wal.append(Term(1), &payload).unwrap();
    wal.append(Term(1), &payload).unwrap();
    run_ready(wal.sync()).unwrap();
    let second = wal.log_map().entry(LogIndex(2)).copied().unwrap();
    assert_eq!(second.offset as usize + 56 + 1968, 2 * 4096 - 48);
    wal.append(Term(1), b"next batch").unwrap();
    run_ready(wal.sync()).unwrap();
    drop(wal);
    let (wal, report) = open(&disk).unwrap();
    assert_eq!(report.repaired, None);
    assert_eq!(wal.last_index(), LogIndex(3));
}

#[test]
fn unsynced_tail_is_lost_or_cut_and_synced_batches_stay() {
    for seed in 0..200 {
        let disk = MemStorage::new();
        let (mut wal, _) = open(&disk).unwrap();
        write_batches(&mut wal, &[3, 4, 5]);
        for index in 13..=20 {
            wal.append(Term(2), &payload(index)).unwrap();
        }
        disk.fail_next_sync();
        assert!(run_ready(wal.sync()).is_err());
        drop(wal);
        disk.crash(seed);
        let (wal, report) = open(&disk).unwrap();
        let last = wal.last_index().0;
        assert!((12..=20).contains(&last), "seed {seed}: last {last}");
        assert_entries(&wal, last);
        // The repair left a clean tail: a second open finds nothing to cut.
        drop(wal);
        let (wal, again) = open(&disk).unwrap();
        assert_eq!(again.repaired, None, "seed {seed}: {report:?}");
        assert_eq!(wal.last_index().0, last);
    }
}

#[test]
fn repaired_tail_stays_repaired_after_more_writes() {
    let disk = MemStorage::new();
    let (mut wal, _) = open(&disk).unwrap();
    write_batches(&mut wal, &[3]);
    let name = segment_name(LogIndex(1));
    // Garbage right after the last frame, as a torn write leaves it.
    let end = wal.log_map().segments[0].write_end as usize;
    let last_frame_end = {
        let bytes = disk.contents(&name).unwrap();
        (4096..end).rev().find(|at| bytes[*at] != 0).unwrap() + 1
    };
    let garbage_at = last_frame_end.next_multiple_of(8);
    for offset in garbage_at..garbage_at + 100 {
        disk.corrupt(&name, offset, 0x5a);
    }
    drop(wal);
    let (mut wal, report) = open(&disk).unwrap();
    let repair = report.repaired.expect("torn tail repaired");
    assert_eq!(repair.offset as usize, garbage_at);
    assert_eq!(repair.last_index, LogIndex(3));
    write_batches(&mut wal, &[4, 40]);
    drop(wal);
    let (wal, report) = open(&disk).unwrap();
    assert_eq!(report.repaired, None);
    assert_entries(&wal, 47);
}

#[test]
fn damage_before_the_last_batch_is_reported_with_file_offset_and_index() {
    let disk = MemStorage::new();
    let (mut wal, _) = open(&disk).unwrap();
    write_batches(&mut wal, &[2, 2, 2]);
    // test_min segments hold two one-block batches: entries 1..=4 share the first.
    let second = wal.log_map().entry(LogIndex(2)).copied().unwrap();
    let fourth = wal.log_map().entry(LogIndex(4)).copied().unwrap();
    assert_eq!(
        wal.log_map().segment_of(LogIndex(5)).unwrap().first_index,
        LogIndex(5)
    );
    drop(wal);
    let name = segment_name(LogIndex(1));
    disk.corrupt(&name, second.offset as usize + 60, 0x01);
    match open(&disk) {
        Err(WalError::Recovery(RecoveryError::Corrupt {
            file,
            offset,
            index,
            cause:
                Corruption::Frame {
                    cause: BadFrame::Body(_),
                    later: Some(later),
                    sealed: true,
                },
            ..
        })) => {
            assert!(file.ends_with(&name));
            assert_eq!(offset, second.offset);
            assert_eq!(index, LogIndex(2));
            assert_eq!(later.index, LogIndex(3));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // Damage in the last batch of a sealed segment: no later batch in the
    // segment, but the segment after it proves the batch had been synced.
    disk.corrupt(&name, second.offset as usize + 60, 0x01);
    disk.corrupt(&name, fourth.offset as usize + 8, 0x80);
    match open(&disk) {
        Err(WalError::Recovery(RecoveryError::Corrupt {
            index,
            cause:
                Corruption::Frame {
                    cause: BadFrame::Header(_),
                    later: None,
                    sealed: true,
                },
            ..
        })) => assert_eq!(index, LogIndex(4)),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn cut_after_removes_entries_durably_and_respects_the_floor() {
    let disk = MemStorage::new();
    let (mut wal, _) = open(&disk).unwrap();
    write_batches(&mut wal, &[20, 20, 20]);
    let segments_before = wal.log_map().segments.len();
    assert!(matches!(
        run_ready(wal.cut_after(LogIndex(10), LogIndex(11))),
        Err(WalError::CutBelowFloor { .. })
    ));
    assert!(matches!(
        run_ready(wal.cut_after(LogIndex(61), LogIndex(0))),
        Err(WalError::CutOutsideLog { .. })
    ));
    run_ready(wal.cut_after(LogIndex(10), LogIndex(5))).unwrap();
    assert_eq!(wal.last_index(), LogIndex(10));
    // The segment of entries 41.. is gone; the first one is full, so the cut
    // frame opened a segment named after the entry that comes next.
    let names: Vec<_> = wal
        .log_map()
        .segments
        .iter()
        .map(|segment| segment.first_index.0)
        .collect();
    assert_eq!(segments_before, 2);
    assert_eq!(names, vec![1, 11]);
    for index in 11..=15 {
        assert_eq!(
            wal.append(Term(3), &payload(index)).unwrap(),
            LogIndex(index)
        );
    }
    run_ready(wal.sync()).unwrap();
    drop(wal);
    let (wal, _) = open(&disk).unwrap();
    assert_entries(&wal, 15);
    assert_eq!(wal.term_at(LogIndex(11)), Some(Term(3)));
    assert_eq!(wal.term_at(LogIndex(10)), Some(Term(1)));
}

#[test]
fn cut_without_new_entries_survives_reopen() {
    let disk = MemStorage::new();
    let (mut wal, _) = open(&disk).unwrap();
    write_batches(&mut wal, &[8]);
    run_ready(wal.cut_after(LogIndex(5), LogIndex(0))).unwrap();
    drop(wal);
    let (wal, _) = open(&disk).unwrap();
    assert_entries(&wal, 5);
}

#[test]
fn remove_below_drops_whole_segments_only() {
    let disk = MemStorage::new();
    let (mut wal, _) = open(&disk).unwrap();
    write_batches(&mut wal, &[30, 30, 30]);
    let second = wal.log_map().segments[1].first_index;
    assert_eq!(
        run_ready(wal.remove_below(LogIndex(second.0 - 1))).unwrap(),
        0
    );
    assert_eq!(run_ready(wal.remove_below(second)).unwrap(), 1);
    assert_eq!(wal.first_index(), second);
    write_batches(&mut wal, &[5]);
    drop(wal);
    let (wal, report) = open(&disk).unwrap();
    assert_eq!(report.first_index, second);
    assert_entries(&wal, 95);
}

#[test]
fn detached_segments_stay_readable_until_their_files_are_removed() {
    let disk = MemStorage::new();
    let (mut wal, _) = open(&disk).unwrap();
    write_batches(&mut wal, &[30, 30, 30]);
    let first_name = segment_name(wal.log_map().segments[0].first_index);
    let second = wal.log_map().segments[1].first_index;
    let detached = wal.detach_below(second).unwrap();
    assert_eq!(detached, std::slice::from_ref(&first_name));
    assert_eq!(wal.first_index(), second, "out of the log at once");
    write_batches(&mut wal, &[5]);
    // A crash before the files go: the log reopens with them, from its
    // first entry, as after a crash between a snapshot and its compaction.
    let (reopened, report) = open(&disk).unwrap();
    assert_eq!(report.first_index, LogIndex(1));
    assert_entries(&reopened, 95);
    drop(reopened);
    run_ready(keel_wal::remove_segment_files(&disk, &detached)).unwrap();
    assert!(!keel_wal::Storage::list(&disk)
        .unwrap()
        .contains(&first_name));
    drop(wal);
    let (wal, report) = open(&disk).unwrap();
    assert_eq!(report.first_index, second);
    assert_entries(&wal, 95);
}

#[test]
fn a_failed_sync_poisons_the_wal() {
    let disk = MemStorage::new();
    let (mut wal, _) = open(&disk).unwrap();
    write_batches(&mut wal, &[3]);
    disk.fail_next_sync();
    wal.append(Term(1), b"x").unwrap();
    assert!(matches!(
        run_ready(wal.sync()),
        Err(WalError::Io(IoError {
            op: "write and sync",
            ..
        }))
    ));
    assert_eq!(wal.durable_index(), LogIndex(3));
    assert!(matches!(
        wal.append(Term(1), b"y"),
        Err(WalError::Poisoned {
            op: "write and sync",
            ..
        })
    ));
    assert!(matches!(
        run_ready(wal.sync()),
        Err(WalError::Poisoned { .. })
    ));
}

#[test]
fn oversized_payloads_are_refused() {
    let disk = MemStorage::new();
    let (mut wal, _) = open(&disk).unwrap();
    let limit = WalOptions::test_min().payload_bytes_max as usize;
    assert!(matches!(
        wal.append(Term(1), &vec![0; limit + 1]),
        Err(WalError::PayloadTooLarge { .. })
    ));
    assert_eq!(wal.append(Term(1), &vec![0; limit]).unwrap(), LogIndex(1));
}

#[test]
fn unfinished_segment_creation_is_cleaned_up() {
    let disk = MemStorage::new();
    let (mut wal, _) = open(&disk).unwrap();
    write_batches(&mut wal, &[2]);
    let segments = wal.log_map().segments.len();
    drop(wal);
    // A creation interrupted before its rename: the temporary file is on disk.
    run_ready(keel_wal::Storage::create(
        &disk,
        "00000000000000000003.wal.tmp",
    ))
    .unwrap();
    let (wal, report) = open(&disk).unwrap();
    assert_eq!(
        report.removed_unfinished,
        vec!["00000000000000000003.wal.tmp".to_owned()]
    );
    assert_eq!(wal.log_map().segments.len(), segments);
    assert_entries(&wal, 2);
}

/// Regression: a cut whose frame opens a new segment (the tail segment is
/// full) names that segment after the entry after the cut, below the next
/// index. The segment used to get its name before the cut frame was written,
/// so a failed write or a crash in between left a named, empty segment that
/// every later open refused as corruption (`EmptySegment`), though nothing was
/// damaged. Now a new segment is named only once it holds its first batch.
#[test]
fn a_cut_interrupted_while_opening_a_segment_leaves_an_openable_log() {
    for fail_at in 0..4 {
        for faults in [
            Faults {
                fail_write_after: Some(fail_at),
                ..Faults::default()
            },
            Faults {
                fail_sync_after: Some(fail_at),
                ..Faults::default()
            },
        ] {
            for seed in 0..20 {
                let disk = MemStorage::new();
                let (mut wal, _) = open(&disk).unwrap();
                // test_min segments: entries 1..=12 fill the first segment.
                write_batches(&mut wal, &[6, 6, 6, 6]);
                assert_eq!(wal.log_map().segments.len(), 2);
                disk.set_faults(faults);
                let cut = run_ready(wal.cut_after(LogIndex(5), LogIndex(0)));
                drop(wal);
                disk.set_faults(Faults::default());
                disk.crash(seed);
                let (wal, _) = open(&disk).unwrap_or_else(|error| {
                    panic!("{faults:?} seed {seed}, cut {cut:?}: cannot reopen: {error}")
                });
                let last = wal.last_index().0;
                assert!(
                    [5, 12, 24].contains(&last),
                    "{faults:?} seed {seed}: last {last}"
                );
                assert_entries(&wal, last);
            }
        }
    }
}

/// Replay hands over each entry once, in order, across rollovers, cuts and
/// compaction, exactly as `read_entry` reads it.
#[test]
fn replay_visits_every_entry_in_order_after_cuts_and_compaction() {
    let disk = MemStorage::new();
    let (mut wal, _) = open(&disk).unwrap();
    write_batches(&mut wal, &[20, 20, 20]);
    run_ready(wal.cut_after(LogIndex(30), LogIndex(0))).unwrap();
    write_batches(&mut wal, &[40, 3]);
    let removed = run_ready(wal.remove_below(LogIndex(45))).unwrap();
    assert!(removed > 0, "compaction removed a segment");
    drop(wal);
    let (wal, _) = open(&disk).unwrap();
    for from in [0, wal.first_index().0, 50, 73, 74] {
        let mut seen = Vec::new();
        wal.replay(LogIndex(from), |index, bytes| {
            assert_eq!(bytes, payload(index.0), "entry {}", index.0);
            seen.push(index.0);
            Ok::<(), WalError>(())
        })
        .unwrap();
        let start = from.max(wal.first_index().0);
        assert_eq!(seen, (start..=73).collect::<Vec<_>>(), "replay from {from}");
    }
}

/// A frame larger than a regular segment gets a segment of its own size; small
/// frames around it in the same batch go where they fit, and recovery reads
/// the mix of sizes back.
#[test]
fn an_oversize_frame_gets_a_segment_of_its_own_size() {
    let disk = MemStorage::new();
    let options = WalOptions {
        payload_bytes_max: 64 << 10,
        ..WalOptions::test_min()
    };
    let (mut wal, _) = run_ready(Wal::open(disk.clone(), options)).unwrap();
    let big = |fill: u8| vec![fill; 40 << 10];
    let payloads = [
        b"small".to_vec(),
        big(1),
        b"after".to_vec(),
        big(2),
        big(3),
        b"last".to_vec(),
    ];
    for payload in &payloads {
        wal.append(Term(1), payload).unwrap();
    }
    run_ready(wal.sync()).unwrap();
    let sizes: Vec<u64> = wal
        .log_map()
        .segments
        .iter()
        .map(|s| s.segment_bytes)
        .collect();
    assert!(
        sizes.iter().any(|size| *size > options.segment_bytes),
        "a big frame made a bigger segment: {sizes:?}"
    );
    drop(wal);
    let (wal, report) = run_ready(Wal::open(disk.clone(), options)).unwrap();
    assert_eq!(report.repaired, None);
    for (index, payload) in (1..).zip(&payloads) {
        assert_eq!(
            &run_ready(wal.read_entry(LogIndex(index))).unwrap(),
            payload
        );
    }
}

/// The length of every segment file, and the length its header gives.
fn segment_lengths(disk: &MemStorage) -> Vec<(String, usize, u64)> {
    keel_wal::Storage::list(disk)
        .unwrap()
        .into_iter()
        .filter(|name| name.ends_with(".wal"))
        .map(|name| {
            let bytes = disk.contents(&name).unwrap();
            let header = SegmentHeader::decode(&bytes).unwrap();
            (name, bytes.len(), header.segment_bytes)
        })
        .collect()
}

/// Regression (simulator seed 60): a torn tail inside a segment's reserved
/// last block. Recovery had sealed a torn tail with a cut frame at the start
/// of that block, its sync failed, and the power loss kept the cut frame's
/// sector but tore a later one. The next open found torn bytes just after that
/// cut frame, placed its own cut frame on the next block boundary, which is
/// the segment's end, and grew the file by a block; every open after that
/// refused the segment ("the segment header says 16384 bytes, the file has
/// 20480"). Now the repair clears the torn bytes in that block instead.
#[test]
fn a_torn_repair_in_the_reserved_block_is_repaired_in_place() {
    let disk = MemStorage::new();
    let (mut wal, _) = open(&disk).unwrap();
    // test_min segments: block 1 takes the first batch, block 2 the second,
    // block 3 (12288..16384) is the reserved tail.
    write_batches(&mut wal, &[6, 2]);
    let seventh = wal.log_map().entry(LogIndex(7)).copied().unwrap();
    let eighth = wal.log_map().entry(LogIndex(8)).copied().unwrap();
    assert_eq!(seventh.offset, 8192);
    drop(wal);
    let name = segment_name(LogIndex(1));
    // Entry 8 torn: the repair's cut frame goes to the reserved block.
    disk.corrupt(&name, eighth.offset as usize + 8, 0x5a);
    // The open's own sync passes, the repair's fails.
    disk.set_faults(Faults {
        fail_sync_after: Some(1),
        ..Faults::default()
    });
    assert!(matches!(
        open(&disk),
        Err(WalError::Io(IoError {
            op: "write and sync",
            ..
        }))
    ));
    disk.set_faults(Faults::default());
    disk.crash_with(0, CrashMode::Keep);
    let cut_frame_end = 12288 + 64;
    assert_ne!(disk.contents(&name).unwrap()[12288..cut_frame_end], [0; 64]);
    // The power loss tore a later sector of the block the cut frame lies in.
    disk.corrupt(&name, 13000, 0xa5);

    let (mut wal, report) = open(&disk).unwrap();
    let repair = report.repaired.expect("the torn bytes are sealed off");
    assert_eq!(repair.offset as usize, cut_frame_end);
    assert_eq!(repair.last_index, LogIndex(7));
    assert_eq!(
        segment_lengths(&disk),
        vec![(name.clone(), 16384, 16384)],
        "the repair stays inside the segment"
    );
    assert_entries(&wal, 7);
    write_batches(&mut wal, &[3]);
    drop(wal);
    let (wal, report) = open(&disk).unwrap();
    assert_eq!(report.repaired, None);
    assert_entries(&wal, 10);
}

/// Regression (simulator `--damage` seed 1437): a torn tail that fills a
/// segment holding no entries. The first batch of segment 9 is lost (a
/// misdirected write left zeros at its place and its frame further on), so
/// recovery seals the segment with a cut frame after entry 8 and clears the
/// torn bytes up to the reserved block: the segment is full. The next entry
/// then opened a new segment under the same name, replacing the one holding
/// the cut frame, yet chained to that cut frame: every later open refused the
/// log ("the hash chain breaks"), so the node could never start again.
#[test]
fn a_repair_that_fills_an_empty_segment_leaves_a_log_that_reopens() {
    let disk = MemStorage::new();
    let (mut wal, _) = open(&disk).unwrap();
    // Entries 1..=8 fill segment 1's two batch blocks; entry 9 opens segment 9.
    write_batches(&mut wal, &[6, 2, 1]);
    let name = segment_name(LogIndex(9));
    assert_eq!(
        wal.log_map().segments.last().unwrap().first_index,
        LogIndex(9)
    );
    drop(wal);
    // Entry 9's header is gone and garbage lies in the next block too.
    disk.corrupt(&name, 4096 + 8, 0x5a);
    disk.corrupt(&name, 8192 + 100, 0xa5);

    let (mut wal, report) = open(&disk).unwrap();
    let repair = report.repaired.expect("the torn bytes are sealed off");
    assert_eq!((repair.offset, repair.cut_bytes), (4096, 8192));
    assert_eq!(repair.last_index, LogIndex(8));
    write_batches(&mut wal, &[1, 3]);
    drop(wal);
    let (wal, report) = open(&disk).unwrap();
    assert_eq!(report.repaired, None);
    assert_entries(&wal, 12);
}

/// A replica that installed a snapshot past its log starts the log over
/// after the snapshot's entry: both behind the old log's end and ahead of
/// it, with the base's term kept, and it survives a reopen and a crash.
#[test]
fn restart_after_starts_the_log_over_at_any_base() {
    for (base, before) in [(200u64, 40u64), (10, 40), (40, 40)] {
        let disk = MemStorage::new();
        let (mut wal, _) = open(&disk).unwrap();
        write_batches(&mut wal, &[before / 2, before - before / 2]);
        run_ready(wal.restart_after(LogIndex(base), Term(3))).unwrap();
        assert_eq!(wal.first_index(), LogIndex(base + 1), "base {base}");
        assert_eq!(wal.last_index(), LogIndex(base));
        assert_eq!(wal.durable_index(), LogIndex(base));
        assert_eq!(wal.term_at(LogIndex(base)), Some(Term(3)));
        for _ in 0..5 {
            let index = wal.last_index().next().0;
            wal.append(Term(3), &payload(index)).unwrap();
        }
        run_ready(wal.sync()).unwrap();
        drop(wal);
        disk.crash(base);
        let (wal, report) = open(&disk).unwrap();
        assert_eq!(report.first_index, LogIndex(base + 1), "base {base}");
        assert_eq!(wal.term_at(LogIndex(base)), Some(Term(3)));
        assert_entries(&wal, base + 5);
    }
}
