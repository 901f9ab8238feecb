//! The cluster simulator over fixed seed ranges: every property holds on
//! every seed (a failure prints the command that replays it), a seed replays
//! bit for bit, and (with `planted-bugs`) each planted bug is caught within
//! 1,000 seeds.

use keel_replication::cluster_sim::{self, Options};

/// Seeds run at 3 voters in the debug build of `cargo test`.
const SEEDS_AT_THREE_VOTERS: u64 = 200;
/// Seeds run at 5 voters.
const SEEDS_AT_FIVE_VOTERS: u64 = 60;

fn assert_no_failure(voters: usize, seeds: u64) {
    let options = Options::voters(voters);
    let (failure, ran) = cluster_sim::first_failure(1..seeds + 1, &options);
    if let Some(outcome) = failure {
        let (at_ms, violation) = outcome.violation.expect("a failure has a violation");
        panic!(
            "seed {} failed at {at_ms} ms: {violation}\nreplay: {}",
            outcome.seed,
            cluster_sim::replay_command(outcome.seed, &options)
        );
    }
    assert_eq!(ran, seeds);
}

#[test]
fn every_property_holds_at_three_voters() {
    assert_no_failure(3, SEEDS_AT_THREE_VOTERS);
}

#[test]
fn every_property_holds_at_five_voters() {
    assert_no_failure(5, SEEDS_AT_FIVE_VOTERS);
}

/// The seeds do what the simulator claims: faults, crashes, elections,
/// snapshot transfers, reads and membership changes all happen, and several
/// hundred entries commit per seed on average.
#[test]
fn seeds_exercise_every_fault_and_feature() {
    let options = Options::voters(3);
    let outcomes: Vec<_> = (1..=40)
        .map(|seed| cluster_sim::run(seed, &options))
        .collect();
    let sum = |field: fn(&cluster_sim::Stats) -> u64| -> u64 {
        outcomes.iter().map(|outcome| field(&outcome.stats)).sum()
    };
    assert!(outcomes.iter().all(|outcome| outcome.violation.is_none()));
    assert!(sum(|stats| stats.committed) / 40 >= 200, "entries per seed");
    assert!(sum(|stats| stats.crashes) >= 40, "a crash per seed");
    assert!(sum(|stats| stats.faults) / 40 >= 5, "faults per seed");
    assert!(sum(|stats| stats.elections) > 40, "elections");
    assert!(
        sum(|stats| stats.snapshots_installed) > 0,
        "snapshots installed"
    );
    assert!(sum(|stats| stats.reads_served) > 0, "reads served");
    assert!(
        sum(|stats| stats.membership_changes) > 0,
        "membership changes"
    );
    assert!(
        sum(|stats| stats.corrupted_messages) > 0,
        "corrupt messages refused"
    );
}

#[test]
fn a_seed_replays_bit_for_bit() {
    for voters in [3, 5] {
        let options = Options::voters(voters);
        for seed in [1, 7, 42] {
            let first = cluster_sim::run(seed, &options);
            let second = cluster_sim::run(seed, &options);
            assert_eq!(first, second, "seed {seed} at {voters} voters");
        }
        let one = cluster_sim::run(1, &options);
        let two = cluster_sim::run(2, &options);
        assert_ne!(
            one.trace_hash, two.trace_hash,
            "the trace depends on the seed"
        );
    }
}

/// Each planted bug is caught within 1,000 seeds at 3 voters, and by the
/// checker meant for it (a panic would be a core's own assertion).
#[cfg(feature = "planted-bugs")]
#[test]
fn every_planted_bug_is_caught_within_a_thousand_seeds() {
    use keel_replication::planted::Plant;
    /// Every planted bug must be caught within this many seeds.
    const PLANT_SEEDS_MAX: u64 = 1_000;
    let checkers = [
        (Plant::CommitWithoutMajority, "leader completeness"),
        (Plant::SkipLogMatching, "log matching"),
        (Plant::VoteBeforePersist, "election safety"),
        (Plant::CommitPreviousTermByCount, "leader commit rule"),
        (Plant::ReadIndexWithoutHeartbeat, "linearizable reads"),
        (Plant::CutBelowCommit, "no cut below commit"),
        (Plant::ForgetVoteOnRestart, "election safety"),
    ];
    for (plant, checker) in checkers {
        let options = Options {
            plant: Some(plant),
            ..Options::voters(3)
        };
        let (failure, ran) = cluster_sim::first_failure(1..PLANT_SEEDS_MAX + 1, &options);
        let outcome =
            failure.unwrap_or_else(|| panic!("{} not caught in {ran} seeds", plant.name()));
        let (_, violation) = outcome.violation.expect("a failure has a violation");
        assert_eq!(violation.checker, checker, "{}: {violation}", plant.name());
    }
}
