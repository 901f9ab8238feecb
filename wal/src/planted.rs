//! Bugs planted on purpose, so that the simulator can prove its checkers
//! catch real ones.
//!
//! Compiled only with the `planted-bugs` feature, and then off until a
//! thread switches one on with [`set`]: each bug is a small branch at the
//! real spot in the WAL or the engine that asks [`active`]. The setting is
//! per thread because the simulator runs one simulation per thread, each
//! with its own bug (or none).

use std::cell::Cell;

/// One planted bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plant {
    AckBeforeFsync,
    ReplayPastCorruption,
    SkipDirFsync,
    LoseBatchTail,
    ExpireOneMsLate,
    ExpireOneMsEarly,
}

impl Plant {
    pub const ALL: [Plant; 6] = [
        Plant::AckBeforeFsync,
        Plant::ReplayPastCorruption,
        Plant::SkipDirFsync,
        Plant::LoseBatchTail,
        Plant::ExpireOneMsLate,
        Plant::ExpireOneMsEarly,
    ];

    /// The name the simulator's command line uses.
    pub fn name(self) -> &'static str {
        match self {
            Plant::AckBeforeFsync => "ack-before-fsync",
            Plant::ReplayPastCorruption => "replay-past-corruption",
            Plant::SkipDirFsync => "skip-dir-fsync",
            Plant::LoseBatchTail => "lose-batch-tail",
            Plant::ExpireOneMsLate => "expire-one-ms-late",
            Plant::ExpireOneMsEarly => "expire-one-ms-early",
        }
    }

    pub fn from_name(name: &str) -> Option<Plant> {
        Plant::ALL.into_iter().find(|plant| plant.name() == name)
    }

    /// What the bug does, in one line.
    pub fn describe(self) -> &'static str {
        match self {
            Plant::AckBeforeFsync => {
                "under fsync=always a reply is released before the entries it depends on are durable"
            }
            Plant::ReplayPastCorruption => {
                "recovery accepts a frame whose header is valid but whose payload checksum is wrong"
            }
            Plant::SkipDirFsync => {
                "a new WAL segment is named without syncing the directory, so a power loss can lose it"
            }
            Plant::LoseBatchTail => {
                "group commit syncs only the first half of a batch but reports the whole batch durable"
            }
            Plant::ExpireOneMsLate => {
                "a key is still there during its expiry millisecond (`at >= now` for `at > now`)"
            }
            Plant::ExpireOneMsEarly => "a key is gone one millisecond before its expiry",
        }
    }
}

thread_local! {
    static ACTIVE: Cell<Option<Plant>> = const { Cell::new(None) };
}

/// Switches the planted bug on for this thread (None: all off). Thread-local:
/// the simulator runs one simulation per thread.
pub fn set(plant: Option<Plant>) {
    ACTIVE.with(|active| active.set(plant));
}

/// Whether `plant` is switched on for this thread.
pub fn active(plant: Plant) -> bool {
    ACTIVE.with(|active| active.get()) == Some(plant)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::segment_name;
    use crate::{run_ready, LogIndex, MemStorage, Term, Wal, WalOptions};

    /// Switches a plant on for one test and off again, even if it panics.
    struct Planted;

    impl Planted {
        fn on(plant: Plant) -> Planted {
            set(Some(plant));
            Planted
        }
    }

    impl Drop for Planted {
        fn drop(&mut self) {
            set(None);
        }
    }

    fn open(disk: &MemStorage) -> Wal<MemStorage> {
        run_ready(Wal::open(disk.clone(), WalOptions::test_min()))
            .expect("the WAL opens")
            .0
    }

    fn payload(index: u64) -> Vec<u8> {
        format!("entry {index} ").repeat(20).into_bytes()
    }

    /// Appends `count` entries, one synced batch each.
    fn write(wal: &mut Wal<MemStorage>, count: u64) {
        for _ in 0..count {
            let index = wal.last_index().next().0;
            wal.append(Term(1), &payload(index)).expect("append");
            run_ready(wal.sync()).expect("sync");
        }
    }

    #[test]
    fn names_round_trip_and_are_distinct() {
        for plant in Plant::ALL {
            assert_eq!(Plant::from_name(plant.name()), Some(plant));
            assert!(!plant.describe().is_empty());
        }
        assert_eq!(Plant::from_name("no-such-bug"), None);
        assert!(
            Plant::ALL.iter().all(|plant| !active(*plant)),
            "all off unless set"
        );
    }

    #[test]
    fn set_switches_one_plant_for_this_thread_only() {
        let _planted = Planted::on(Plant::SkipDirFsync);
        assert!(active(Plant::SkipDirFsync));
        assert!(!active(Plant::LoseBatchTail));
        let elsewhere = std::thread::spawn(|| active(Plant::SkipDirFsync))
            .join()
            .expect("the thread runs");
        assert!(!elsewhere, "another thread has its own setting");
    }

    /// The first entry's payload damaged after both entries were synced: a
    /// later batch follows, so recovery must refuse; with the plant on it
    /// replays the damaged payload as if it were what was written.
    fn damaged_log() -> MemStorage {
        let disk = MemStorage::new();
        let mut wal = open(&disk);
        write(&mut wal, 2);
        let name = segment_name(LogIndex(1));
        let entry = *wal.log_map().entry(LogIndex(1)).expect("entry 1");
        drop(wal);
        let payload_at = entry.offset as usize + crate::frame::FRAME_HEADER_BYTES;
        disk.corrupt(&name, payload_at, 0x01);
        disk
    }

    #[test]
    fn replay_past_corruption_accepts_a_bad_payload() {
        let disk = damaged_log();
        assert!(
            run_ready(Wal::open(disk.clone(), WalOptions::test_min())).is_err(),
            "without the plant a damaged synced entry is refused"
        );
        let _planted = Planted::on(Plant::ReplayPastCorruption);
        let wal = open(&disk);
        assert_eq!(wal.last_index(), LogIndex(2));
        let read = run_ready(wal.read_entry(LogIndex(1))).expect("accepted");
        assert_ne!(read, payload(1), "the damaged bytes are handed out");
        assert_eq!(read.len(), payload(1).len());
    }

    /// Syncs entries until a second segment exists, then loses power.
    fn roll_over_and_crash() -> (LogIndex, LogIndex) {
        let disk = MemStorage::new();
        let mut wal = open(&disk);
        while wal.log_map().segments.len() < 2 {
            write(&mut wal, 1);
        }
        let durable = wal.durable_index();
        drop(wal);
        disk.crash(7);
        (durable, open(&disk).last_index())
    }

    #[test]
    fn skip_dir_fsync_loses_a_synced_segment_on_power_loss() {
        let (durable, recovered) = roll_over_and_crash();
        assert_eq!(
            recovered, durable,
            "without the plant nothing synced is lost"
        );
        let _planted = Planted::on(Plant::SkipDirFsync);
        let (durable, recovered) = roll_over_and_crash();
        assert!(
            recovered < durable,
            "the new segment's name was never synced: {recovered} < {durable}"
        );
    }
}
