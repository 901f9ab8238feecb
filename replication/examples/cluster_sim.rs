//! Runs the cluster simulator of pure cores over a range of seeds and prints
//! seeds per second, stopping at the first seed that breaks a property (with
//! the command that replays it). See docs/REPLICATION.md, "The cluster
//! simulator".
//!
//! ```text
//! cargo run --release -p keel-replication --example cluster_sim -- --seeds 1..10000
//! cargo run --release -p keel-replication --example cluster_sim -- --voters 5 --seeds 1..2000
//! cargo run --release -p keel-replication --features planted-bugs --example cluster_sim -- --plant skip-log-matching --seeds 1..1000
//! cargo run --release -p keel-replication --features planted-bugs --example cluster_sim -- --plants --seeds 1..1000
//! ```
//!
//! With `--plant`, a failing seed is the expected result (the bug was caught)
//! and the exit status is 0 only then; `--plants` runs every planted bug and
//! prints the table of first failing seeds.

mod common;

use std::process::ExitCode;
use std::time::Instant;

use keel_replication::cluster_sim::{self, Options, Stats};

struct Args {
    voters: usize,
    seeds: std::ops::Range<u64>,
    plant: Option<String>,
    all_plants: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        voters: 3,
        seeds: 1..1001,
        plant: None,
        all_plants: false,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut value = || words.next().ok_or(format!("{word} needs a value"));
        match word.as_str() {
            "--voters" => args.voters = value()?.parse().map_err(|_| "--voters N")?,
            "--seeds" => args.seeds = parse_seeds(&value()?)?,
            "--plant" => args.plant = Some(value()?),
            "--plants" => args.all_plants = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.voters != 3 && args.voters != 5 {
        return Err("--voters is 3 or 5".to_owned());
    }
    Ok(args)
}

/// `A..B` (B excluded) or a single seed `N`.
fn parse_seeds(text: &str) -> Result<std::ops::Range<u64>, String> {
    let number = |text: &str| {
        text.parse::<u64>()
            .map_err(|_| format!("bad seed range {text}"))
    };
    match text.split_once("..") {
        Some((start, end)) => Ok(number(start)?..number(end)?),
        None => {
            let seed = number(text)?;
            Ok(seed..seed + 1)
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    if args.all_plants || args.plant.is_some() {
        return run_plants(&args);
    }
    let options = Options::voters(args.voters);
    let failed = run_range(&args, &options);
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs the range, prints the figures and the first failure; true if one failed.
fn run_range(args: &Args, options: &Options) -> bool {
    let started = Instant::now();
    let cpu_started = common::cpu_ns();
    let mut total = Stats::default();
    let mut ran = 0u64;
    let mut failure = None;
    for seed in args.seeds.clone() {
        let outcome = cluster_sim::run_caught(seed, options);
        ran += 1;
        add(&mut total, &outcome.stats);
        if outcome.violation.is_some() {
            failure = Some(outcome);
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = common::per_cpu_second(ran, cpu_started);
    println!(
        "{ran} seeds at {} voters in {seconds:.2} s: {:.0} seeds/s{cpu}; per seed: {:.0} entries committed, \
         {:.1} faults, {:.1} crashes, {:.1} leaders, {:.1} snapshots installed, {:.1} reads, \
         {:.0} messages ({:.0} refused as corrupt), {:.0} events",
        options.voters,
        ran as f64 / seconds,
        total.committed as f64 / ran as f64,
        total.faults as f64 / ran as f64,
        total.crashes as f64 / ran as f64,
        total.elections as f64 / ran as f64,
        total.snapshots_installed as f64 / ran as f64,
        total.reads_served as f64 / ran as f64,
        total.messages as f64 / ran as f64,
        total.corrupted_messages as f64 / ran as f64,
        total.events as f64 / ran as f64,
    );
    match failure {
        Some(outcome) => {
            let (at_ms, violation) = outcome.violation.expect("a failure");
            println!("seed {} FAILED at {at_ms} ms: {violation}", outcome.seed);
            println!(
                "replay: {}",
                cluster_sim::replay_command(outcome.seed, options)
            );
            true
        }
        None => false,
    }
}

fn add(total: &mut Stats, stats: &Stats) {
    total.committed += stats.committed;
    total.elections += stats.elections;
    total.faults += stats.faults;
    total.crashes += stats.crashes;
    total.messages += stats.messages;
    total.corrupted_messages += stats.corrupted_messages;
    total.snapshots_installed += stats.snapshots_installed;
    total.reads_served += stats.reads_served;
    total.membership_changes += stats.membership_changes;
    total.events += stats.events;
}

#[cfg(feature = "planted-bugs")]
fn run_plants(args: &Args) -> ExitCode {
    use keel_replication::planted::Plant;
    let plants: Vec<Plant> = match &args.plant {
        Some(name) => match Plant::from_name(name) {
            Some(plant) => vec![plant],
            None => {
                eprintln!("no planted bug named {name}");
                return ExitCode::from(2);
            }
        },
        None => Plant::ALL.to_vec(),
    };
    let mut missed = false;
    for plant in plants {
        let options = Options {
            plant: Some(plant),
            ..Options::voters(args.voters)
        };
        println!("plant {}: {}", plant.name(), plant.describe());
        if !run_range(args, &options) {
            println!("plant {}: NOT caught", plant.name());
            missed = true;
        }
    }
    if missed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(not(feature = "planted-bugs"))]
fn run_plants(_args: &Args) -> ExitCode {
    eprintln!("built without the planted-bugs feature: add --features planted-bugs");
    ExitCode::from(2)
}
