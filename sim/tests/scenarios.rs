//! Scripted crash scenarios, beside the random runs: each names the faults
//! and the outcome it expects (see `keel_sim::scenario`). Built only for
//! madsim: `RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim cargo test -p keel-sim`.
#![cfg(madsim)]

use keel_sim::scenario::Scenario;
use keel_wal::memory::CrashMode;

#[test]
fn a_torn_last_batch_loses_only_that_batch() {
    Scenario::new(1)
        .write_keys(0..=98)
        .write_unsynced(99..=99)
        .crash(CrashMode::Tear)
        .expect_keys(0..=98)
        .expect_absent(99..=99)
        .run();
}

#[test]
fn an_unacknowledged_batch_that_reached_the_disk_may_survive() {
    Scenario::new(2)
        // Key 98's entry lands inside an existing segment. With 16 KiB segments
        // every second one-entry batch opens a new segment, whose file keeps a
        // temporary name until that sync completes, so such a batch never
        // survives (key 99 since each shard's log starts with a no-op).
        .write_keys(0..=97)
        .write_unsynced(98..=98)
        .crash(CrashMode::Keep)
        .expect_keys(0..=98)
        .run();
}

#[test]
fn a_dropped_batch_of_many_writes_leaves_the_acknowledged_ones() {
    Scenario::new(3)
        .write_keys(0..=49)
        .write_unsynced(50..=79)
        .crash(CrashMode::Drop)
        .expect_keys(0..=49)
        .expect_absent(50..=79)
        .write_keys(50..=59)
        .crash(CrashMode::Random)
        .expect_keys(0..=59)
        .run();
}

/// Enough writes to roll over WAL segments and take snapshots, then repeated
/// power losses: every acknowledged key comes back each time.
#[test]
fn acknowledged_writes_survive_snapshots_and_segment_rollover() {
    Scenario::new(4)
        .write_keys(0..=1_499)
        .crash(CrashMode::Tear)
        .expect_keys(0..=1_499)
        .write_unsynced(1_500..=1_509)
        .crash(CrashMode::Random)
        .expect_keys(0..=1_499)
        .write_keys(1_500..=1_599)
        .crash(CrashMode::Drop)
        .expect_keys(0..=1_599)
        .run();
}
