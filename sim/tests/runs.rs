//! Whole random runs (`keel_sim::run`): a seed replays exactly and passes
//! every check, with hops between the node's cores; and a node that
//! acknowledges before its writes are durable is caught. Built only for madsim (see scripts/sim.sh for the long runs).
#![cfg(madsim)]

use keel_engine::config::FsyncPolicy;
use keel_sim::run::{run, RunConfig, Summary, CRASHES_MIN};

/// Runs a simulation on a thread of its own, as `run` requires.
fn run_alone(seed: u64, fsync: FsyncPolicy) -> Summary {
    run_config(seed, fsync, false)
}

fn run_config(seed: u64, fsync: FsyncPolicy, damage: bool) -> Summary {
    let config = RunConfig {
        seed,
        ops: 1_000,
        fsync,
        echo_trace: false,
        damage,
        cores: None,
        nodes: 1,
    };
    std::thread::spawn(move || run(config))
        .join()
        .expect("the simulation does not panic")
}

#[test]
fn a_seed_replays_exactly_and_passes_every_check() {
    let first = run_alone(7, FsyncPolicy::Always);
    assert_eq!(first, run_alone(7, FsyncPolicy::Always));
    assert!(first.passed(), "{first}");
    assert!(first.ops >= 1_000, "{first}");
    assert!(first.crashes >= CRASHES_MIN, "{first}");
    assert!(first.recoveries_checked > 0, "{first}");
    assert!(first.snapshots > 0, "{first}");
    assert!(first.cores >= 2, "{first}");
    assert!(first.hops > 0, "{first}");
    assert!(
        first.hop_waits > 0,
        "a full hop queue made a sender wait: {first}"
    );
}

/// Seeds that found real bugs, replayed: 60 (a torn-tail repair that wrote
/// past its segment's end, so the node never started again), 844 (a read
/// bit flip in the last synced batch, cut as a torn tail: acknowledged
/// entries lost) and 2290 with `--damage` (a repair that filled an empty
/// segment, after which every start refused the log's hash chain). And
/// seeds that found checker bugs: 1914 (a no-op logged by a boot that
/// stopped before its recovery), 915 with `--damage` (damage taken by
/// recovery's own write, refused by that boot). A later change to the
/// workload or the schedule may steer a seed elsewhere; the bugs' own tests
/// are in keel-wal and in the checkers' modules.
#[test]
fn seeds_that_found_bugs_now_pass() {
    for (seed, damage) in [
        (60, false),
        (844, false),
        (2290, true),
        (1914, false),
        (915, true),
    ] {
        let summary = run_config(seed, FsyncPolicy::Always, damage);
        assert!(summary.passed(), "{summary}");
    }
}

/// With `--fsync interval-ms`, replies go out before the fsync: a power loss
/// loses acknowledged writes, and the checks must say so.
#[test]
fn acknowledged_writes_lost_in_a_power_loss_are_caught() {
    let caught = (1..=10)
        .map(|seed| run_alone(seed, FsyncPolicy::IntervalMs(200)))
        .find(|summary| !summary.passed());
    assert!(caught.is_some(), "no seed of 1..=10 caught the lost writes");
}
