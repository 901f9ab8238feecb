//! `keel-sim`: runs one seed of Keel's deterministic simulation
//! ([`keel_sim::run`]) and prints what happened and every checker's verdict.
//!
//! ```text
//! keel-sim --seed N [--ops M] [--fsync always|interval-ms=N] [--plant NAME]
//!          [--damage] [--cores C] [--check-determinism] [--trace]
//! keel-sim --seeds A..B [--jobs J] [--until-failure] [--ops M] [--fsync P] [--plant NAME]
//!          [--damage] [--cores C]
//! keel-sim --list-plants
//! ```
//!
//! `--seeds` runs seeds A to B (inclusive) on J threads (default: the CPUs),
//! one line per seed, then the replay command of every failing seed and the
//! throughput; `--until-failure` stops at the first failing seed and succeeds
//! only if there is one (how a planted bug is shown to be caught). `--cores`
//! fixes the node's cores (1 to [`CORES_LIMIT`]); by default each seed draws
//! them (`keel_sim::run::CORES_MIN`..=`CORES_MAX`).
//!
//! Exit status: 0 when every check passed, 1 when one failed (or, with
//! `--until-failure`, none did), 2 when the linearizability search gave up,
//! 3 when two runs of the seed differed, 64 for a bad command line. Only a `--cfg madsim` build simulates
//! (`scripts/sim.sh`); a normal build says so and exits.

#[cfg(madsim)]
mod simulation {
    use keel_engine::config::FsyncPolicy;
    use keel_sim::linearizability::Verdict;
    use keel_sim::run::{
        failovers_line, run_on_thread, run_seeds, timing_line, RunConfig, Summary,
    };

    /// Operations the clients send in all unless `--ops` says otherwise.
    const OPS_DEFAULT: u64 = 1_000;
    /// Most cores `--cores` gives the node: more than shards already leaves
    /// cores with none; more than this only adds idle ones.
    const CORES_LIMIT: usize = 8;
    /// Most nodes `--nodes` runs: a cluster's largest ([`CLUSTER_MEMBERS_MAX`]).
    const NODES_MAX: usize = keel_engine::cluster_config::CLUSTER_MEMBERS_MAX;
    const EXIT_FAILED: i32 = 1;
    const EXIT_UNDECIDED: i32 = 2;
    const EXIT_NONDETERMINISTIC: i32 = 3;
    /// A bad command line (sysexits' EX_USAGE).
    const EXIT_USAGE: i32 = 64;
    const USAGE: &str = "usage: keel-sim --seed N [--ops M] [--fsync always|interval-ms=N] \
                         [--plant NAME] [--damage] [--cores C] [--check-determinism] [--trace]\n       \
                         keel-sim --list-plants";

    #[derive(Clone, Debug, PartialEq)]
    enum Command {
        Run {
            config: RunConfig,
            plant: Option<String>,
            check_determinism: bool,
        },
        Range {
            config: RunConfig,
            plant: Option<String>,
            seeds: std::ops::RangeInclusive<u64>,
            jobs: usize,
            until_failure: bool,
        },
        ListPlants,
    }

    /// Parses `A..B` (inclusive).
    fn parse_range(text: &str) -> Result<std::ops::RangeInclusive<u64>, String> {
        let bad = || format!("--seeds takes A..B (inclusive, A <= B), not {text}");
        let (first, last) = text.split_once("..").ok_or_else(bad)?;
        let first: u64 = first.parse().map_err(|_| bad())?;
        let last: u64 = last.parse().map_err(|_| bad())?;
        if first > last {
            return Err(bad());
        }
        Ok(first..=last)
    }

    /// Parses `--cores C`.
    fn parse_cores(text: &str) -> Result<usize, String> {
        match text.parse::<usize>() {
            Ok(cores) if (1..=CORES_LIMIT).contains(&cores) => Ok(cores),
            _ => Err(format!("--cores takes 1 to {CORES_LIMIT}, not {text}")),
        }
    }

    /// Parses `--nodes N`: one node alone, or a cluster of 3 to [`NODES_MAX`].
    fn parse_nodes(text: &str) -> Result<usize, String> {
        match text.parse::<usize>() {
            Ok(nodes) if nodes == 1 || (3..=NODES_MAX).contains(&nodes) => Ok(nodes),
            _ => Err(format!("--nodes takes 1, or 3 to {NODES_MAX}, not {text}")),
        }
    }

    /// Parses the command line by hand: clap builds std `HashMap`s, and the
    /// first one of the process fixes the std hash keys, which madsim can only
    /// make deterministic if its runtime comes first.
    fn parse_args(mut words: impl Iterator<Item = String>) -> Result<Command, String> {
        let (mut seed, mut ops, mut fsync) = (None, OPS_DEFAULT, FsyncPolicy::Always);
        let (mut plant, mut check_determinism, mut echo_trace) = (None, false, false);
        let (mut damage, mut cores, mut nodes) = (false, None, 1);
        let (mut seeds, mut jobs, mut until_failure) = (None, None, false);
        while let Some(flag) = words.next() {
            match flag.as_str() {
                "--list-plants" => return Ok(Command::ListPlants),
                "--check-determinism" => check_determinism = true,
                "--trace" => echo_trace = true,
                "--damage" => damage = true,
                "--until-failure" => until_failure = true,
                "--seed" | "--ops" | "--fsync" | "--plant" | "--seeds" | "--jobs" | "--cores"
                | "--nodes" => {
                    let value = words
                        .next()
                        .ok_or_else(|| format!("{flag} needs a value"))?;
                    let number = || {
                        value
                            .parse::<u64>()
                            .map_err(|error| format!("{flag} {value}: {error}"))
                    };
                    match flag.as_str() {
                        "--seed" => seed = Some(number()?),
                        "--ops" => ops = number()?,
                        "--fsync" => fsync = value.parse()?,
                        "--seeds" => seeds = Some(parse_range(&value)?),
                        "--jobs" => jobs = Some(number()?.max(1) as usize),
                        "--cores" => cores = Some(parse_cores(&value)?),
                        "--nodes" => nodes = parse_nodes(&value)?,
                        _ => plant = Some(value),
                    }
                }
                _ => return Err(format!("unknown argument {flag}")),
            }
        }
        let config = RunConfig {
            seed: seed.unwrap_or(0),
            ops,
            fsync,
            echo_trace,
            damage,
            cores,
            nodes,
        };
        match (seed, seeds) {
            (Some(_), None) => Ok(Command::Run {
                config,
                plant,
                check_determinism,
            }),
            (None, Some(seeds)) => Ok(Command::Range {
                config,
                plant,
                seeds,
                jobs: jobs
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
                until_failure,
            }),
            _ => Err("give one of --seed N and --seeds A..B".into()),
        }
    }

    /// The flags that replay a run of `config` (after `--seed N`).
    fn replay_flags(config: &RunConfig, plant: Option<&str>) -> String {
        let mut flags = format!("--ops {}", config.ops);
        if config.fsync != FsyncPolicy::Always {
            flags += &format!(" --fsync {}", config.fsync);
        }
        if let Some(plant) = plant {
            flags += &format!(" --plant {plant}");
        }
        if config.damage {
            flags += " --damage";
        }
        if let Some(cores) = config.cores {
            flags += &format!(" --cores {cores}");
        }
        if config.nodes > 1 {
            flags += &format!(" --nodes {}", config.nodes);
        }
        flags
    }

    /// Runs `seeds` on `jobs` threads; see the module doc.
    fn run_range(
        config: RunConfig,
        plant_name: Option<&str>,
        plant: Option<plants::Plant>,
        seeds: std::ops::RangeInclusive<u64>,
        jobs: usize,
        until_failure: bool,
    ) -> i32 {
        let started = std::time::Instant::now();
        let results = run_seeds(config, seeds, jobs, until_failure, move || {
            plants::set(plant)
        });
        let (mut failed, mut ops, mut crashes) = (Vec::new(), 0, 0);
        let mut slowest_check = std::time::Duration::ZERO;
        let (mut failovers_us, mut elections_us) = (Vec::new(), Vec::new());
        for (seed, summary) in &results {
            match summary {
                Ok(summary) => {
                    ops += summary.ops;
                    crashes += summary.crashes;
                    slowest_check = slowest_check.max(summary.check_time.0);
                    failovers_us.extend_from_slice(&summary.failovers_us);
                    elections_us.extend_from_slice(&summary.elections_us);
                    let status = if summary.passed() { "ok" } else { "FAILED" };
                    println!(
                        "seed {seed}: {status} ({} nodes, {} cores, {} ops, {} crashes, \
                         {} partitions, {} disk faults)",
                        summary.nodes,
                        summary.cores,
                        summary.ops,
                        summary.crashes,
                        summary.partitions,
                        summary.disk_faults
                    );
                    if !summary.passed() {
                        println!("{summary}");
                        failed.push(*seed);
                    }
                }
                Err(panic) => {
                    println!("seed {seed}: FAILED, the simulation panicked: {panic}");
                    failed.push(*seed);
                }
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{} of {} seeds failed; {:.1} seeds/s, {:.0} simulated ops/s, {:.1} crashes per seed, \
             slowest history check {:.1} ms, {jobs} jobs, {seconds:.1} s",
            failed.len(),
            results.len(),
            results.len() as f64 / seconds,
            ops as f64 / seconds,
            crashes as f64 / results.len().max(1) as f64,
            slowest_check.as_secs_f64() * 1e3,
        );
        if config.nodes > 1 {
            failovers_us.sort_unstable_by_key(|&(_, us)| us);
            elections_us.sort_unstable();
            println!("{}", failovers_line(&failovers_us));
            println!("{}", timing_line("elections", &elections_us));
        }
        let flags = replay_flags(&config, plant_name);
        for seed in &failed {
            println!("replay: scripts/sim.sh --seed {seed} {flags}");
        }
        match (until_failure, failed.is_empty()) {
            (true, true) => {
                println!("no seed failed: the planted bug was not caught");
                EXIT_FAILED
            }
            (true, false) | (false, true) => 0,
            (false, false) => EXIT_FAILED,
        }
    }

    pub fn main() -> i32 {
        let command = match parse_args(std::env::args().skip(1)) {
            Ok(command) => command,
            Err(error) => {
                eprintln!("{error}\n{USAGE}");
                return EXIT_USAGE;
            }
        };
        match command {
            Command::ListPlants => plants::list(),
            Command::Range {
                config,
                plant: name,
                seeds,
                jobs,
                until_failure,
            } => match name.as_deref().map(plants::parse).transpose() {
                Ok(plant) => run_range(config, name.as_deref(), plant, seeds, jobs, until_failure),
                Err(error) => {
                    eprintln!("{error}");
                    EXIT_USAGE
                }
            },
            Command::Run {
                config,
                plant,
                check_determinism,
            } => {
                let plant = match plant.as_deref().map(plants::parse).transpose() {
                    Ok(plant) => plant,
                    Err(error) => {
                        eprintln!("{error}");
                        return EXIT_USAGE;
                    }
                };
                let summary = match run_alone(config, plant) {
                    Ok(summary) => summary,
                    Err(panic) => {
                        println!(
                            "seed {}: FAILED, the simulation panicked: {panic}",
                            config.seed
                        );
                        return EXIT_FAILED;
                    }
                };
                println!("{summary}");
                if check_determinism {
                    let Ok(again) = run_alone(config, plant) else {
                        println!("determinism: FAILED, the second run panicked");
                        return EXIT_NONDETERMINISTIC;
                    };
                    if again != summary {
                        println!("determinism: FAILED, the second run differs:\n{again}");
                        return EXIT_NONDETERMINISTIC;
                    }
                    println!(
                        "determinism: ok, two runs gave trace {:016x} ({} events)",
                        summary.trace_hash, summary.trace_events
                    );
                }
                exit_status(&summary)
            }
        }
    }

    fn exit_status(summary: &Summary) -> i32 {
        match summary.verdict {
            _ if !summary.failures.is_empty() => EXIT_FAILED,
            Verdict::Linearizable => 0,
            Verdict::NotLinearizable { .. } => EXIT_FAILED,
            Verdict::Unknown { .. } => EXIT_UNDECIDED,
        }
    }

    /// Runs a simulation on a thread of its own (see [`run`]), with `plant`
    /// switched on there; a panic comes back as its message.
    fn run_alone(config: RunConfig, plant: Option<plants::Plant>) -> Result<Summary, String> {
        run_on_thread(config, move || plants::set(plant))
    }

    #[cfg(feature = "planted-bugs")]
    mod plants {
        pub use keel_sim::plants::{set, Plant};

        /// One line per plant: its name, the nodes of the runs that catch
        /// it (`--nodes`), and what it does.
        pub fn list() -> i32 {
            for plant in Plant::all() {
                println!("{}\t{}\t{}", plant.name(), plant.nodes(), plant.describe());
            }
            0
        }

        pub fn parse(name: &str) -> Result<Plant, String> {
            Plant::from_name(name).ok_or_else(|| {
                format!("no planted bug named {name} (keel-sim --list-plants lists them)")
            })
        }
    }

    /// Without the `planted-bugs` feature there is nothing to plant.
    #[cfg(not(feature = "planted-bugs"))]
    mod plants {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Plant {}

        pub fn set(_: Option<Plant>) {}

        pub fn list() -> i32 {
            eprintln!("built without the planted-bugs feature (scripts/sim.sh enables it)");
            super::EXIT_USAGE
        }

        pub fn parse(name: &str) -> Result<Plant, String> {
            Err(format!(
                "cannot plant {name}: built without the planted-bugs feature"
            ))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn words(text: &str) -> impl Iterator<Item = String> + '_ {
            text.split(' ').map(String::from)
        }

        #[test]
        fn the_command_line_needs_a_seed() {
            let Ok(Command::Run {
                config,
                plant,
                check_determinism,
            }) = parse_args(words(
                "--seed 3 --fsync interval-ms=5 --plant x --check-determinism",
            ))
            else {
                panic!("a valid command line");
            };
            assert_eq!(
                (config.seed, config.ops, config.cores),
                (3, OPS_DEFAULT, None)
            );
            assert_eq!(config.fsync, FsyncPolicy::IntervalMs(5));
            assert_eq!(plant.as_deref(), Some("x"));
            assert!(check_determinism);
            assert_eq!(parse_args(words("--list-plants")), Ok(Command::ListPlants));
            assert!(parse_args(words("--ops 3")).is_err());
            assert!(parse_args(words("--seed x")).is_err());
            assert!(parse_args(words("--seed 1 --bogus")).is_err());
            assert!(parse_args(words("--seed 1 --seeds 1..2")).is_err());
            let Ok(Command::Range {
                seeds,
                jobs,
                until_failure,
                ..
            }) = parse_args(words("--seeds 5..9 --jobs 3 --until-failure"))
            else {
                panic!("a valid range");
            };
            assert_eq!((seeds, jobs, until_failure), (5..=9, 3, true));
            assert!(parse_args(words("--seeds 9..5")).is_err());
            assert!(parse_args(words("--seeds 5")).is_err());
            let Ok(Command::Run { config, .. }) = parse_args(words("--seed 1 --cores 3")) else {
                panic!("a valid core count");
            };
            assert_eq!(config.cores, Some(3));
            assert_eq!(replay_flags(&config, None), "--ops 1000 --cores 3");
            assert!(parse_args(words("--seed 1 --cores 0")).is_err());
            assert!(parse_args(words("--seed 1 --cores 9")).is_err());
        }
    }
}

/// The exit status of a build that cannot simulate (sysexits' EX_USAGE).
#[cfg(not(madsim))]
const EXIT_NOT_SIMULATION_BUILD: i32 = 64;

#[cfg(not(madsim))]
fn main() {
    eprintln!("build with RUSTFLAGS=\"--cfg madsim\" (scripts/sim.sh)");
    std::process::exit(EXIT_NOT_SIMULATION_BUILD);
}

#[cfg(madsim)]
fn main() {
    std::process::exit(simulation::main());
}
