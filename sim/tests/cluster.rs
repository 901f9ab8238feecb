//! Cluster runs (`keel_sim::cluster`): seeds of three nodes pass every check,
//! a seed replays exactly, and each planted bug of the replicated node and
//! of its consensus core is caught within the seeds docs/SIMULATION.md
//! records for it. Built only for madsim (scripts/sim.sh runs the longer
//! ranges).
#![cfg(madsim)]

use keel_engine::config::FsyncPolicy;
use keel_sim::run::{run_on_thread, run_seeds, RunConfig, Summary};

/// Operations per seed: `keel-sim`'s default, so that the seeds recorded in
/// docs/SIMULATION.md are these runs.
const OPS: u64 = 1_000;
/// Cluster seeds every CI run passes.
const SEEDS: u64 = 200;

fn config(seed: u64) -> RunConfig {
    RunConfig {
        seed,
        ops: OPS,
        fsync: FsyncPolicy::Always,
        echo_trace: false,
        damage: false,
        cores: None,
        nodes: 3,
    }
}

fn jobs() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn failed(results: &[(u64, Result<Summary, String>)]) -> Vec<String> {
    results
        .iter()
        .filter_map(|(seed, summary)| match summary {
            Ok(summary) if summary.passed() => None,
            Ok(summary) => Some(format!("seed {seed}: {summary}")),
            Err(panic) => Some(format!("seed {seed} panicked: {panic}")),
        })
        .collect()
}

#[test]
fn a_cluster_seed_replays_exactly() {
    let first = run_on_thread(config(5), || ()).expect("no panic");
    let again = run_on_thread(config(5), || ()).expect("no panic");
    assert_eq!(first, again);
    assert!(first.passed(), "{first}");
    assert_eq!(first.nodes, 3);
    assert!(first.completed > 0, "{first}");
}

/// Every check on every seed of 1..=200: linearizability, no acknowledged
/// write lost, one state per index, one leader per term, progress after
/// healing (docs/SIMULATION.md lists what these seeds found before they
/// passed).
#[test]
fn cluster_seeds_pass_every_check() {
    let started = std::time::Instant::now();
    let results = run_seeds(config(0), 1..=SEEDS, jobs(), false, || ());
    let failed = failed(&results);
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    let failovers: usize = results
        .iter()
        .filter_map(|(_, summary)| summary.as_ref().ok())
        .map(|summary| summary.failovers_us.len())
        .sum();
    assert!(failovers > 0, "no seed timed a failover");
    let unchecked: Vec<u64> = results
        .iter()
        .filter(|(_, summary)| matches!(summary, Ok(summary) if summary.rule_checks == 0))
        .map(|(seed, _)| *seed)
        .collect();
    assert!(
        unchecked.is_empty(),
        "seeds whose members' acts no Raft rule checked: {unchecked:?}"
    );
    eprintln!(
        "{SEEDS} cluster seeds in {:.1} s, {failovers} failovers",
        started.elapsed().as_secs_f64()
    );
}

/// Each plant a cluster run catches (the node's own and the consensus
/// core's) and the last seed by which it must be caught: its first failing
/// seed in docs/SIMULATION.md (`keel-sim --nodes 3 --plant NAME --seeds
/// 1..300 --until-failure`).
#[cfg(feature = "planted-bugs")]
const CLUSTER_PLANTS_CAUGHT_BY: [(&str, u64); 10] = [
    ("apply-before-commit", 1),
    ("reply-on-index-not-entry", 35),
    ("follower-serves-linearizable-read", 1),
    ("commit-without-majority", 36),
    ("skip-log-matching", 164),
    ("vote-before-persist", 1),
    ("commit-previous-term-by-count", 8),
    ("read-index-without-heartbeat", 100),
    ("cut-below-commit", 1),
    ("forget-vote-on-restart", 2),
];

/// Caught means a seed fails with the plant and passes without it: the
/// plant, not one of the open bugs some seeds find, is what the checks saw.
#[cfg(feature = "planted-bugs")]
#[test]
fn cluster_plants_are_caught_within_their_recorded_seeds() {
    use keel_sim::plants::{self, Plant};
    for (name, last_seed) in CLUSTER_PLANTS_CAUGHT_BY {
        let plant = Plant::from_name(name).expect("a plant of that name");
        assert!(
            matches!(plant, Plant::Node(_) | Plant::Core(_)),
            "{name} is a node's or a core's plant"
        );
        let results = run_seeds(config(0), 1..=last_seed, jobs(), false, move || {
            plants::set(Some(plant))
        });
        let caught = results
            .iter()
            .filter(|(_, summary)| !matches!(summary, Ok(summary) if summary.passed()))
            .map(|(seed, _)| *seed)
            .find(|&seed| {
                let clean = run_on_thread(config(seed), || ()).expect("no panic");
                clean.passed()
            });
        assert!(
            caught.is_some(),
            "{name}: no seed of 1..={last_seed} fails with it and passes without it"
        );
    }
}
