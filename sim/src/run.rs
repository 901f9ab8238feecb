//! One random simulation run: a Keel node (the real node loop) on a madsim
//! host, clients sending a random mix of commands, and seeded faults; then
//! every checker's verdict.
//!
//! The run has three phases:
//! 1. **Faults**: power losses (kill the host, crash its [`SimDisk`], restart),
//!    network partitions of the node, and in-flight disk faults (failed
//!    fsyncs, flipped or failed reads) at seeded rates, at seeded points of
//!    the first [`FAULT_PHASE_PERCENT`] of the operations.
//! 2. **Calm**: no faults; every operation must complete (liveness).
//! 3. **Final**: one more power loss and restart, then a read of every key,
//!    so the last boot's state is checked too.
//!
//! Checked: linearizability of the whole history (with the Redis model,
//! per hash tag), the [`Ledger`](crate::ledger) at every recovery, liveness
//! after the faults, and that the node stopped only when a disk fault gave it
//! cause. Everything random comes from madsim's seeded generator and all time
//! is madsim's, so a seed replays exactly; run one per thread (see [`run`]).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_engine::config::{FsyncPolicy, ServeConfig};
use keel_engine::limits::Limits;
use keel_engine::metrics::NodeMetrics;
use keel_engine::node::io::NodeIo;
use keel_engine::node::local::Signal;
use keel_engine::node::{recover_core, NodeError, NodeShared, RecoverySummary};
use keel_engine::topology::{Member, NodeName, Topology};
use madsim::rand::{thread_rng, Rng};
use madsim::runtime::{Handle, Runtime};
use madsim::task::NodeId;
use madsim::time::{sleep, TimeHandle};

use crate::client::{connect, request, ClientError, ClientStream};
use crate::disk::{DamageRates, FaultMode, FaultRates, InFlightRates};
use crate::excuse::DamageExcuses;
use crate::history::{Recorder, RETURN_TIME_NEVER};
use crate::io::{host, Host, SimIo};
use crate::ledger::{Ledger, Violation};
use crate::linearizability::{check, shortest_failing_prefix, Verdict};
use crate::models::redis::{Redis, RedisInput, RedisOutput};
use crate::raft_rules::RuleViolation;
use crate::replicas::{Disagreement, Loss, ReplicaViolation};
use crate::trace::Trace;
use crate::workload::{all_keys, is_read, ClientWorkload};

/// Shards of the simulated node: more than one, so routing is exercised.
pub const SHARDS: u32 = 2;
/// Cores of the simulated node, drawn per seed unless `--cores` says: at
/// least two, so every seed hops between cores and starts several; up to one
/// more than [`SHARDS`], a core that owns no shard and hops every command
/// (what a data directory keeps when restarted with more `--cores`).
pub const CORES_MIN: usize = 2;
pub const CORES_MAX: usize = SHARDS as usize + 1;
/// Clients sending commands concurrently.
pub const CLIENTS: u64 = 3;
/// Small segments, so runs roll over to new segments (and sync their names).
pub const WAL_SEGMENT_BYTES: u64 = 16 << 10;
/// WAL bytes between snapshots: a few per run, and some segments between.
pub const SNAPSHOT_WAL_BYTES: u64 = 8 << 10;
/// Largest key and value the node accepts; the workload stays far below.
const KEY_BYTES_MAX: usize = 1 << 10;
const VALUE_BYTES_MAX: usize = 1 << 10;
const CONNECTIONS_MAX: usize = 64;
/// The least time a message takes from one simulated host to another:
/// madsim (0.2) delivers a message with a `sleep_until`, which sleeps at
/// least 1 ms. So a request takes effect no sooner than this after the
/// client sent it, and no later than this before the client has the reply,
/// and the history records that narrower window. It is what lets the
/// checker place a read within one millisecond of the node's clock, and
/// see a key that answers a millisecond late or early. (Were a message ever
/// faster, a completed operation's window would close before it opens, and
/// the recorder's assertion would stop the run.)
pub const MESSAGE_DELAY_US_MIN: u64 = 1_000;
/// How long a client waits for a reply (or a connection) before giving up.
pub const REPLY_TIMEOUT_MS: u64 = 1_000;
/// How long a client waits before reconnecting after a failure.
const RECONNECT_DELAY_MS: u64 = 50;
/// Think time between a client's operations, at most.
const THINK_MS_MAX: u64 = 10;
/// Faults strike within this share of the operations; the rest run calm.
pub const FAULT_PHASE_PERCENT: u64 = 75;
/// Power losses and partitions per run, drawn from these ranges.
pub const CRASHES_MIN: u64 = 3;
const CRASHES_MAX: u64 = 5;
const PARTITIONS_MIN: u64 = 1;
const PARTITIONS_MAX: u64 = 3;
/// How often the supervisor looks at the run, at most (drawn per look, so a
/// kill lands anywhere in a write or a sync).
const SUPERVISOR_TICK_US_MAX: u64 = 3_000;
/// How often the supervisor looks for a sync in flight when a power loss
/// should catch one: shorter than the shortest sync.
const SYNC_WATCH_US: u64 = 20;
/// Time the node stays down after a power loss, drawn from this range.
const DOWN_MS_MIN: u64 = 5;
const DOWN_MS_MAX: u64 = 300;
/// Time the node is cut off from the clients, drawn from this range: often
/// longer than a client waits.
const PARTITION_MS_MIN: u64 = 50;
const PARTITION_MS_MAX: u64 = 1_500;
/// In-flight disk faults while faults strike: per sync, per read.
pub(crate) const IN_FLIGHT_RATES: InFlightRates = InFlightRates {
    fsync_fail: 0.002,
    read_bit_flip: 0.002,
    latent_read_error: 0.002,
};
/// Faults to data the node holds durable, per write, with `--damage` only.
const DAMAGE_RATES: DamageRates = DamageRates {
    write_bit_flip: 0.001,
    misdirected_write: 0.0005,
};
/// Operations invoked this long after the faults stop must all complete: a
/// client may still be waiting out a request sent before, then reconnect.
pub const LIVENESS_GRACE_MS: u64 = REPLY_TIMEOUT_MS + RECONNECT_DELAY_MS + 100;
/// Attempts of the final read of each key.
const FINAL_READ_ATTEMPTS: u64 = 5;
/// How long the final phase waits for the node to recover, in simulated time.
const FINAL_RECOVERY_MS_MAX: u64 = 10_000;
/// Virtual time after which a run is declared hung.
const RUN_TIME_LIMIT_S: u64 = 3_600;
/// Restarts of a node that stopped on its own (a failed fsync, a refused
/// start), per run; then it stays down and the run fails. Seeds 1..2,000 need
/// at most 13; a node that never comes back would otherwise be restarted
/// until [`RUN_TIME_LIMIT_S`] (some 23,000 times, and 5 s of real time).
pub const NODE_RESTARTS_MAX: u64 = 50;

pub(crate) const KEEL_ADDRESS: &str = "10.0.0.1:7379";

/// What to run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunConfig {
    /// Seeds madsim: the same seed, the same run.
    pub seed: u64,
    /// Operations the clients send in all.
    pub ops: u64,
    /// The node's fsync policy: `interval-ms=N` loses acknowledged writes in
    /// a power loss, which the checks must catch.
    pub fsync: FsyncPolicy,
    /// Print every traced event.
    pub echo_trace: bool,
    /// Also damage data the node already synced ([`DAMAGE_RATES`]): then the
    /// node must detect it (refuse to start) rather than lose data silently.
    pub damage: bool,
    /// The node's cores; drawn from [`CORES_MIN`]..=[`CORES_MAX`] by the seed
    /// when `None`.
    pub cores: Option<usize>,
    /// Nodes: 1 runs one node alone (this module); more, a cluster of them
    /// ([`crate::cluster`]).
    pub nodes: usize,
}

/// A reason the run failed, other than the history's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The ledger's finding at a recovery.
    Durability(Violation),
    /// An operation invoked after the faults stopped got no answer.
    Liveness {
        client: u64,
        invoked_ms: u64,
        input: String,
        error: String,
    },
    /// The node stopped (or refused to start) with no disk fault to cause it.
    NodeStopped { boot: u64, reason: String },
    /// The node never came back for the final read.
    FinalRead { key: String, error: String },
    /// Two nodes of a cluster broke replication ([`crate::replicas`]).
    Replicas(ReplicaViolation),
    /// A member broke a rule of Raft where it acted ([`crate::raft_rules`]).
    RaftRule(RuleViolation),
    /// Once healed and quiet, the copies of a shard still disagreed.
    NotConverged(Disagreement),
    /// With every fault healed, no write to `shard` was acknowledged within
    /// `waited_ms`.
    NoProgress { shard: u32, waited_ms: u64 },
    /// The node stopped on its own more than [`NODE_RESTARTS_MAX`] times.
    /// `boot` and `reason` are the first refused start since the node last
    /// recovered, or its last stop if it did recover every time.
    RestartsExhausted {
        restarts: u64,
        boot: u64,
        reason: String,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Durability(violation) => write!(f, "durability: {violation}"),
            Failure::Liveness {
                client,
                invoked_ms,
                input,
                error,
            } => write!(
                f,
                "liveness: client {client}'s {input} at {invoked_ms} ms, after the faults \
                 stopped, got no answer: {error}"
            ),
            Failure::NodeStopped { boot, reason } => {
                write!(
                    f,
                    "boot {boot} stopped with no disk fault to cause it: {reason}"
                )
            }
            Failure::FinalRead { key, error } => write!(f, "final read of {key}: {error}"),
            Failure::Replicas(violation) => write!(f, "replication: {violation}"),
            Failure::RaftRule(violation) => write!(f, "raft rule: {violation}"),
            Failure::NotConverged(disagreement) => {
                write!(f, "after healing and quiet: {disagreement}")
            }
            Failure::NoProgress { shard, waited_ms } => write!(
                f,
                "progress: with every fault healed, no write to shard {shard} was \
                 acknowledged within {waited_ms} ms"
            ),
            Failure::RestartsExhausted {
                restarts,
                boot,
                reason,
            } => write!(
                f,
                "the node never came back: left down after {restarts} restarts; boot {boot} \
                 {reason} (the first refused start since the node last recovered, else its \
                 last stop)"
            ),
        }
    }
}

/// What one run did, and every checker's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub seed: u64,
    pub nodes: usize,
    pub cores: usize,
    pub ops: u64,
    pub completed: u64,
    pub unanswered: u64,
    pub crashes: u64,
    pub partitions: u64,
    /// Times the node stopped on its own (a failed fsync, a refused start).
    pub node_stops: u64,
    /// In-flight disk faults injected.
    pub disk_faults: u64,
    /// Unsynced sectors the power losses dropped or tore, and directory
    /// entries they reverted.
    pub sectors_lost: u64,
    pub names_reverted: u64,
    pub boots: u64,
    /// Hops between the node's cores, and those that waited for room.
    pub hops: u64,
    pub hop_waits: u64,
    /// Client connections moved to another core (at most once each).
    pub connections_moved: u64,
    pub snapshots: u64,
    pub entries_applied: u64,
    pub recoveries_checked: u64,
    /// In a cluster: the members' acts checked against Raft's rules
    /// ([`crate::raft_rules`]).
    pub rule_checks: u64,
    pub virtual_ms: u64,
    /// With `--damage`: a start refused for corruption, after which the node
    /// stays down (the expected outcome of damage).
    pub damage_detected: bool,
    /// In a cluster: each failover timed, from a leader's loss to the next
    /// reply a later term's leader released on its shard (µs, sorted), with
    /// what began it.
    pub failovers_us: Vec<(Loss, u64)>,
    /// In a cluster: from a leader's loss to the election of a later
    /// term's leader of its shard (µs, sorted).
    pub elections_us: Vec<u64>,
    /// With `--damage`: ledger violations at a recovery that cut a torn tail,
    /// the single-copy limit (damage to the last synced batch looks torn).
    pub losses_at_torn_cuts: u64,
    /// With `--damage`: when (unix µs) the first boot that lost damaged
    /// entries started. The linearizability check stops there: the history
    /// after it rests on a state the excused loss changed.
    pub history_cut_us: Option<u64>,
    pub verdict: Verdict<Vec<u8>>,
    /// When the history is not linearizable: the last operations of the
    /// shortest prefix of the failing tag's operations that is not, one line
    /// each (client, invoke and return µs, input, output).
    pub counterexample: Vec<String>,
    pub failures: Vec<Failure>,
    pub trace_hash: u64,
    pub trace_events: u64,
    /// How long the linearizability check took.
    pub check_time: WallTime,
}

/// A duration of real time, which differs between runs of one seed: it
/// compares equal to any other, so that a summary's equality is the
/// simulation's.
#[derive(Clone, Copy, Debug, Default)]
pub struct WallTime(pub Duration);

impl PartialEq for WallTime {
    fn eq(&self, _: &WallTime) -> bool {
        true
    }
}

impl Eq for WallTime {}

/// The history of one run, as the checker takes it.
type History = Vec<crate::history::Operation<RedisInput, RedisOutput>>;

impl Summary {
    /// Whether every checker passed.
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Linearizable && self.failures.is_empty()
    }
}

/// The median and the largest of `sorted`, if it holds any.
pub fn median_and_worst(sorted: &[u64]) -> Option<(u64, u64)> {
    let worst = *sorted.last()?;
    Some((sorted[sorted.len() / 2], worst))
}

/// `name: N timed, median M ms, worst W ms` of sorted µs figures.
pub fn timing_line(name: &str, sorted_us: &[u64]) -> String {
    match median_and_worst(sorted_us) {
        Some((median_us, worst_us)) => format!(
            "{name}: {} timed, median {:.1} ms, worst {:.1} ms",
            sorted_us.len(),
            median_us as f64 / 1e3,
            worst_us as f64 / 1e3
        ),
        None => format!("{name}: none timed"),
    }
}

/// [`timing_line`] of every failover, then of those after each cause of a
/// leader's loss (sorted by µs).
pub fn failovers_line(sorted: &[(Loss, u64)]) -> String {
    let all: Vec<u64> = sorted.iter().map(|&(_, us)| us).collect();
    let mut line = timing_line("failovers", &all);
    for cause in Loss::ALL {
        let after: Vec<u64> = sorted
            .iter()
            .filter(|&&(of, _)| of == cause)
            .map(|&(_, us)| us)
            .collect();
        if !after.is_empty() {
            line += &format!(
                " ({})",
                timing_line(&format!("after {}", cause.name()), &after)
            );
        }
    }
    line
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} cores {} ops {} completed {} unanswered {} crashes {} partitions {} \
             node_stops {} disk_faults {} sectors_lost {} names_reverted {} boots {} \
             hops {} hop_waits {} connections_moved {} snapshots {} entries_applied {} recoveries_checked {} \
             virtual_s {:.1} \
             damage_detected {} losses_at_torn_cuts {} \
             trace {:016x} ({} events) check_ms {:.1}",
            self.seed,
            self.cores,
            self.ops,
            self.completed,
            self.unanswered,
            self.crashes,
            self.partitions,
            self.node_stops,
            self.disk_faults,
            self.sectors_lost,
            self.names_reverted,
            self.boots,
            self.hops,
            self.hop_waits,
            self.connections_moved,
            self.snapshots,
            self.entries_applied,
            self.recoveries_checked,
            self.virtual_ms as f64 / 1e3,
            self.damage_detected,
            self.losses_at_torn_cuts,
            self.trace_hash,
            self.trace_events,
            self.check_time.0.as_secs_f64() * 1e3,
        )?;
        if self.nodes > 1 {
            write!(
                f,
                "\nnodes {}; rule_checks {}; {}; {}",
                self.nodes,
                self.rule_checks,
                failovers_line(&self.failovers_us),
                timing_line("elections", &self.elections_us)
            )?;
        }
        write!(f, "\nlinearizability: ")?;
        if self.history_cut_us.is_some() {
            write!(f, "(up to the boot that lost damaged entries) ")?;
        }
        let key = |key: &[u8]| String::from_utf8_lossy(key).into_owned();
        match &self.verdict {
            Verdict::Linearizable => write!(f, "ok")?,
            Verdict::NotLinearizable {
                partition,
                operations,
                longest_prefix,
            } => write!(
                f,
                "FAILED (tag {}: only {longest_prefix} of its {operations} operations linearize)",
                key(partition)
            )?,
            Verdict::Unknown { partition, steps } => write!(
                f,
                "UNDECIDED (tag {}: no answer in {steps} search steps)",
                key(partition)
            )?,
        }
        for line in &self.counterexample {
            write!(f, "\n  {line}")?;
        }
        if self.failures.is_empty() {
            write!(f, "\ndurability, liveness, node stops: ok")?;
        }
        for failure in &self.failures {
            write!(f, "\nFAILED {failure}")?;
        }
        Ok(())
    }
}

thread_local! {
    /// The run's event trace: one run per thread.
    static TRACE: RefCell<Trace> = RefCell::default();
}

/// Adds `event` to the run's trace, stamped with madsim's time.
pub fn trace(event: impl fmt::Display) {
    let now_us = TimeHandle::current().elapsed().as_micros() as u64;
    TRACE.with(|trace| trace.borrow_mut().record(now_us, event));
}

/// Runs one simulation on the calling thread. Run at most one per thread:
/// madsim seeds std's hash keys only if its runtime is the thread's first
/// user of them, and hosts ([`host`]) and the trace live as long as the
/// thread.
pub fn run(config: RunConfig) -> Summary {
    let mut runtime = Runtime::with_seed_and_config(config.seed, madsim::Config::default());
    // RUST_LOG=info shows the node's log; without it the node's errors (the
    // faults it meets, on purpose) would drown the verdicts. After the
    // runtime: see above.
    if std::env::var_os("RUST_LOG").is_some() {
        madsim::runtime::init_logger();
    }
    runtime.set_time_limit(Duration::from_secs(RUN_TIME_LIMIT_S));
    TRACE.with(|trace| *trace.borrow_mut() = Trace::new(config.echo_trace));
    let (mut summary, history) = if config.nodes > 1 {
        runtime.block_on(crate::cluster::simulate(config))
    } else {
        runtime.block_on(simulate(config))
    };
    // Outside the runtime: madsim's clock stands still inside it.
    let started = std::time::Instant::now();
    let history = match summary.history_cut_us {
        Some(cut_us) => history_before(history, cut_us),
        None => history,
    };
    summary.verdict = check::<Redis>(&history);
    if let Verdict::NotLinearizable { partition, .. } = &summary.verdict {
        summary.counterexample = counterexample(&history, partition);
    }
    summary.check_time = WallTime(started.elapsed());
    TRACE.with(|trace| {
        let trace = trace.borrow();
        summary.trace_hash = trace.hash();
        summary.trace_events = trace.events();
    });
    summary
}

/// Operations a counterexample shows: the failing prefix's last ones.
const COUNTEREXAMPLE_OPERATIONS_MAX: usize = 12;

/// The end of the shortest failing prefix of `partition`'s operations, a line
/// each, the operation that makes it fail last.
fn counterexample(history: &History, partition: &Vec<u8>) -> Vec<String> {
    let Some(prefix) = shortest_failing_prefix::<Redis>(history, partition) else {
        return Vec::new();
    };
    let shown = prefix.len().saturating_sub(COUNTEREXAMPLE_OPERATIONS_MAX);
    prefix[shown..]
        .iter()
        .map(|operation| {
            let output = operation
                .output
                .as_ref()
                .map_or("(unknown)".to_string(), |output| output.to_string());
            let returned = if operation.return_time == RETURN_TIME_NEVER {
                "never".to_string()
            } else {
                operation.return_time.to_string()
            };
            format!(
                "client {} {}..{}: {} -> {output}",
                operation.client, operation.invoke_time, returned, operation.input
            )
        })
        .collect()
}

/// Runs `config` on a thread of its own, as [`run`] requires, after
/// `prepare` there (to switch on a planted bug: they are thread-local); a
/// panic comes back as its message.
pub fn run_on_thread(
    config: RunConfig,
    prepare: impl FnOnce() + Send + 'static,
) -> Result<Summary, String> {
    std::thread::spawn(move || {
        prepare();
        run(config)
    })
    .join()
    .map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

/// Runs each of `seeds` of `config` ([`run_on_thread`], after `prepare`)
/// on `jobs` threads at a time; with `until_failure`, takes no more seeds
/// once one failed (so "first" may be a seed or so late with several jobs).
/// The results in seed order.
pub fn run_seeds(
    config: RunConfig,
    seeds: RangeInclusive<u64>,
    jobs: usize,
    until_failure: bool,
    prepare: impl Fn() + Clone + Send + Sync + 'static,
) -> Vec<(u64, Result<Summary, String>)> {
    let next = AtomicU64::new(*seeds.start());
    let stop = AtomicBool::new(false);
    let (sender, results) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            let sender = sender.clone();
            let (next, stop, seeds, prepare) = (&next, &stop, &seeds, &prepare);
            scope.spawn(move || loop {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed > *seeds.end() || stop.load(Ordering::SeqCst) {
                    return;
                }
                let summary = run_on_thread(RunConfig { seed, ..config }, prepare.clone());
                if until_failure && !matches!(&summary, Ok(summary) if summary.passed()) {
                    stop.store(true, Ordering::SeqCst);
                }
                if sender.send((seed, summary)).is_err() {
                    return;
                }
            });
        }
    });
    drop(sender);
    let mut results: Vec<_> = results.into_iter().collect();
    results.sort_by_key(|(seed, _)| *seed);
    results
}

/// The part of `history` a boot starting at `cut_us` cannot have touched:
/// operations invoked before it, those still waiting then made open-ended
/// (a write) or dropped (a read), as the outcome is unknown.
fn history_before(history: History, cut_us: u64) -> History {
    history
        .into_iter()
        .filter(|operation| operation.invoke_time < cut_us)
        .filter_map(|mut operation| {
            if operation.return_time < cut_us {
                return Some(operation);
            }
            if is_read(&operation.input) {
                return None;
            }
            operation.output = None;
            operation.return_time = RETURN_TIME_NEVER;
            Some(operation)
        })
        .collect()
}

/// What the node's boots did, gathered across kills.
#[derive(Debug)]
pub(crate) struct Boots {
    pub(crate) count: AtomicU64,
    /// Boots that finished recovery.
    pub(crate) recovered: AtomicU64,
    /// Each boot's metrics (they die with the host, so are kept here).
    pub(crate) metrics: Mutex<Vec<Arc<NodeMetrics>>>,
    /// Set when a boot ends on its own; the supervisor restarts the node.
    pub(crate) stopped: AtomicBool,
    /// Boots that ended with no disk fault to cause it.
    pub(crate) failures: Mutex<Vec<Failure>>,
    /// A start was refused for corruption (see [`RunConfig::damage`]).
    detected: AtomicBool,
    losses_at_torn_cuts: AtomicU64,
    /// The first boot that refused to start since one last recovered, and why.
    first_refused: Mutex<Option<(u64, String)>>,
    /// The last boot that ended on its own, and why.
    last_stop: Mutex<Option<(u64, String)>>,
    /// What the damage faults so far may excuse.
    excuses: Mutex<DamageExcuses>,
    /// When (virtual µs) the first boot that lost damaged entries started;
    /// `u64::MAX` if none did. The history is checked up to there.
    excused_loss_at_us: AtomicU64,
}

impl Default for Boots {
    fn default() -> Boots {
        Boots {
            count: AtomicU64::default(),
            recovered: AtomicU64::default(),
            metrics: Mutex::default(),
            stopped: AtomicBool::default(),
            failures: Mutex::default(),
            detected: AtomicBool::default(),
            losses_at_torn_cuts: AtomicU64::default(),
            first_refused: Mutex::default(),
            last_stop: Mutex::default(),
            excuses: Mutex::default(),
            excused_loss_at_us: AtomicU64::new(u64::MAX),
        }
    }
}

/// One operation as the liveness check sees it.
#[derive(Debug)]
pub(crate) struct Timed {
    pub(crate) client: u64,
    pub(crate) invoked_ms: u64,
    pub(crate) input: String,
    /// Why it got no answer, if it did not.
    pub(crate) error: Option<String>,
}

/// What the clients share: the history, the operation budget and counts.
#[derive(Debug)]
pub(crate) struct Workload {
    pub(crate) recorder: Mutex<Recorder<RedisInput, RedisOutput>>,
    pub(crate) timed: Mutex<Vec<Timed>>,
    /// Operations started or starting, against the budget.
    pub(crate) tickets_taken: AtomicU64,
    pub(crate) clients_done: AtomicU64,
    /// When the faults stopped (virtual ms); `u64::MAX` until they do.
    pub(crate) faults_stopped_ms: AtomicU64,
    /// Clients that could not even connect after the faults stopped.
    pub(crate) stalled: Mutex<Vec<Failure>>,
}

impl Default for Workload {
    fn default() -> Workload {
        Workload {
            recorder: Mutex::default(),
            timed: Mutex::default(),
            tickets_taken: AtomicU64::default(),
            clients_done: AtomicU64::default(),
            faults_stopped_ms: AtomicU64::new(u64::MAX),
            stalled: Mutex::default(),
        }
    }
}

impl Workload {
    /// Whether another operation may start; at most `ops` do.
    pub(crate) fn take_ticket(&self, ops: u64) -> bool {
        self.tickets_taken
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |taken| {
                (taken < ops).then_some(taken + 1)
            })
            .is_ok()
    }

    /// Gives back a ticket that started no operation.
    pub(crate) fn return_ticket(&self) {
        self.tickets_taken.fetch_sub(1, Ordering::SeqCst);
    }

    /// Sends `input` as `client` over `stream` and records it; returns
    /// whether it got an answer.
    async fn perform(&self, client: u64, stream: &mut ClientStream, input: RedisInput) -> bool {
        self.perform_with(client, &input, request(stream, &input, REPLY_TIMEOUT_MS))
            .await
    }

    /// Records `input` as `client`'s, sent by `exchange`; returns whether it
    /// got an answer.
    pub(crate) async fn perform_with(
        &self,
        client: u64,
        input: &RedisInput,
        exchange: impl std::future::Future<Output = Result<RedisOutput, ClientError>>,
    ) -> bool {
        let invoked_ms = now_ms();
        trace(format_args!("client {client} sends {input}"));
        self.recorder.lock().expect("recorder lock").invoke_at(
            client,
            input.clone(),
            unix_us() + MESSAGE_DELAY_US_MIN,
        );
        let result = exchange.await;
        let mut recorder = self.recorder.lock().expect("recorder lock");
        let error = match result {
            Ok(output) => {
                trace(format_args!("client {client} got {output}"));
                recorder
                    .complete_at(client, Some(output), unix_us() - MESSAGE_DELAY_US_MIN)
                    .map(|_| None)
            }
            Err(error) => {
                trace(format_args!("client {client} got no answer: {error}"));
                // A read that never answered changed nothing; a write may
                // still take effect, at any later time.
                let recorded = if is_read(input) {
                    recorder.discard(client)
                } else {
                    recorder.abandon(client)
                };
                recorded.map(|_| Some(error.to_string()))
            }
        }
        .expect("the client has an operation outstanding");
        let answered = error.is_none();
        self.timed.lock().expect("timed lock").push(Timed {
            client,
            invoked_ms,
            input: input.to_string(),
            error,
        });
        answered
    }
}

/// The operations invoked at or after `from_ms` that got no answer.
pub(crate) fn liveness_failures(workload: &Workload, from_ms: u64) -> Vec<Failure> {
    workload
        .timed
        .lock()
        .expect("timed lock")
        .iter()
        .filter(|op| op.invoked_ms >= from_ms)
        .filter_map(|op| {
            Some(Failure::Liveness {
                client: op.client,
                invoked_ms: op.invoked_ms,
                input: op.input.clone(),
                error: op.error.clone()?,
            })
        })
        .collect()
}

pub(crate) fn now_ms() -> u64 {
    TimeHandle::current().elapsed().as_millis() as u64
}

/// The clock the node reads (`SimIo::now_unix_ms`), in µs: the history's
/// times, so that the checker can tell when an operation may have run.
pub(crate) fn unix_us() -> u64 {
    TimeHandle::current()
        .now_time()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

/// Runs the simulation; returns what it did and the history to check.
async fn simulate(config: RunConfig) -> (Summary, History) {
    let handle = Handle::current();
    let boots = Arc::new(Boots::default());
    let keel_boots = Arc::clone(&boots);
    let (fsync, damage) = (config.fsync, config.damage);
    let cores = config
        .cores
        .unwrap_or_else(|| thread_rng().gen_range(CORES_MIN..=CORES_MAX));
    let keel = handle
        .create_node()
        .name("keel")
        .ip([10, 0, 0, 1].into())
        .init(move || {
            let spec = KeelSpec::alone(fsync, damage, cores);
            run_keel(spec, Arc::clone(&keel_boots))
        })
        .build();
    let workload = Arc::new(Workload::default());
    for client in 0..CLIENTS {
        let workload = Arc::clone(&workload);
        let seed = thread_rng().gen();
        handle
            .create_node()
            .name(format!("client-{client}"))
            .ip([10, 0, 1, client as u8 + 1].into())
            .init(move || run_client(client, seed, config.ops, Arc::clone(&workload)))
            .build();
    }
    let mut supervisor = Supervisor {
        handle: handle.clone(),
        keel: keel.id(),
        boots: Arc::clone(&boots),
        counts: Counts::default(),
        failures: Vec::new(),
        left_down: false,
    };
    let faults_stopped_ms = supervisor.fault_phase(&config, &workload).await;
    while workload.clients_done.load(Ordering::SeqCst) < CLIENTS {
        supervisor.tick().await;
    }
    supervisor.final_phase(&workload).await;
    let Host { disk, ledger, hops } = host(keel.id());
    let disk_faults = disk
        .fault_log()
        .iter()
        .inspect(|fault| trace(fault))
        .filter(|fault| fault.kind.mode() == FaultMode::InFlight)
        .count() as u64;
    let detected = boots.detected.load(Ordering::SeqCst);
    // A node left down fails the run already (`RestartsExhausted`); what it
    // could not serve afterwards would only repeat that.
    let down_for_good = detected || supervisor.left_down;
    let mut failures = supervisor.failures;
    failures.append(&mut boots.failures.lock().expect("boots lock"));
    failures.extend(ledger.violations().into_iter().map(Failure::Durability));
    if down_for_good {
        // The node refused to start for good, as damage calls for: what it
        // could not serve afterwards is the expected outcome.
        failures.retain(|failure| !matches!(failure, Failure::FinalRead { .. }));
    } else {
        failures.append(&mut workload.stalled.lock().expect("stalled lock"));
    }
    if !down_for_good {
        failures.extend(liveness_failures(
            &workload,
            faults_stopped_ms + LIVENESS_GRACE_MS,
        ));
    }
    let recorder = std::mem::take(&mut *workload.recorder.lock().expect("recorder lock"));
    let history = recorder.finish();
    let timed = workload.timed.lock().expect("timed lock");
    let counts = supervisor.counts;
    let summary_snapshots = boots
        .metrics
        .lock()
        .expect("boots lock")
        .iter()
        .map(|metrics| metrics.snapshots.load(Ordering::SeqCst))
        .sum();
    let summary = Summary {
        seed: config.seed,
        nodes: 1,
        cores,
        ops: timed.len() as u64,
        completed: timed.iter().filter(|op| op.error.is_none()).count() as u64,
        unanswered: timed.iter().filter(|op| op.error.is_some()).count() as u64,
        crashes: counts.crashes,
        partitions: counts.partitions,
        node_stops: counts.node_stops,
        disk_faults,
        sectors_lost: counts.sectors_lost,
        names_reverted: counts.names_reverted,
        boots: boots.count.load(Ordering::SeqCst),
        hops: hops.sent.get(),
        hop_waits: hops.waited.get(),
        connections_moved: hops.moved.get(),
        snapshots: summary_snapshots,
        entries_applied: ledger.entries_applied(),
        recoveries_checked: ledger.recoveries_checked(),
        rule_checks: 0,
        virtual_ms: now_ms(),
        damage_detected: detected,
        failovers_us: Vec::new(),
        elections_us: Vec::new(),
        losses_at_torn_cuts: boots.losses_at_torn_cuts.load(Ordering::SeqCst),
        history_cut_us: Some(boots.excused_loss_at_us.load(Ordering::SeqCst))
            .filter(|cut_us| *cut_us != u64::MAX),
        // `run` checks the history outside the runtime and sets the verdict.
        verdict: Verdict::Linearizable,
        counterexample: Vec::new(),
        failures,
        trace_hash: 0,
        trace_events: 0,
        check_time: WallTime::default(),
    };
    (summary, history)
}

#[derive(Debug, Default)]
struct Counts {
    crashes: u64,
    partitions: u64,
    node_stops: u64,
    sectors_lost: u64,
    names_reverted: u64,
}

/// A fault the supervisor applies once the clients have taken `at_ticket`
/// operation tickets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    PowerLoss,
    Partition,
}

/// Injects faults, restarts the node when it stops, and checks why it did.
struct Supervisor {
    handle: Handle,
    keel: NodeId,
    boots: Arc<Boots>,
    counts: Counts,
    failures: Vec<Failure>,
    /// The node stopped on its own too often and is no longer restarted.
    left_down: bool,
}

impl Supervisor {
    /// Applies the seeded faults over the first operations; returns when
    /// they stopped (virtual ms), with the node up and reachable.
    async fn fault_phase(&mut self, config: &RunConfig, workload: &Workload) -> u64 {
        let mut rng = thread_rng();
        let last_ticket = config.ops * FAULT_PHASE_PERCENT / 100;
        let mut schedule: Vec<(u64, Fault)> = Vec::new();
        for _ in 0..rng.gen_range(CRASHES_MIN..=CRASHES_MAX) {
            schedule.push((rng.gen_range(1..=last_ticket.max(1)), Fault::PowerLoss));
        }
        for _ in 0..rng.gen_range(PARTITIONS_MIN..=PARTITIONS_MAX) {
            schedule.push((rng.gen_range(1..=last_ticket.max(1)), Fault::Partition));
        }
        schedule.sort();
        let disk = host(self.keel).disk;
        disk.set_rates(FaultRates {
            in_flight: IN_FLIGHT_RATES,
            damage: if config.damage {
                DAMAGE_RATES
            } else {
                DamageRates::default()
            },
        });
        for (at_ticket, fault) in schedule {
            while workload.tickets_taken.load(Ordering::SeqCst) < at_ticket
                && workload.clients_done.load(Ordering::SeqCst) < CLIENTS
                && !self.stays_down()
            {
                self.tick().await;
            }
            if self.stays_down() {
                break;
            }
            match fault {
                Fault::PowerLoss => {
                    // Half the power losses wait for a sync in flight, so
                    // that they catch a batch written but not durable.
                    if rng.gen_bool(0.5) {
                        self.until_sync_in_flight(workload).await;
                    }
                    self.power_loss().await;
                }
                Fault::Partition => self.partition().await,
            }
        }
        while workload.tickets_taken.load(Ordering::SeqCst) < last_ticket
            && workload.clients_done.load(Ordering::SeqCst) < CLIENTS
            && !self.stays_down()
        {
            self.tick().await;
        }
        disk.set_rates(FaultRates::default());
        trace("faults stop");
        workload.faults_stopped_ms.store(now_ms(), Ordering::SeqCst);
        now_ms()
    }

    /// Waits until the node's disk has a sync in flight (or the clients are
    /// done), looking as often as a sync can start.
    async fn until_sync_in_flight(&mut self, workload: &Workload) {
        let disk = host(self.keel).disk;
        while disk.syncs_in_flight() == 0 && workload.clients_done.load(Ordering::SeqCst) < CLIENTS
        {
            sleep(Duration::from_micros(SYNC_WATCH_US)).await;
            if self.boots.stopped.load(Ordering::SeqCst) {
                return;
            }
        }
    }

    /// Whether the node refused to start for corruption (it then stays down).
    fn detected(&self) -> bool {
        self.boots.detected.load(Ordering::SeqCst)
    }

    /// Whether the node stays down for the rest of the run: it refused to
    /// start for corruption, or never came back.
    fn stays_down(&self) -> bool {
        self.detected() || self.left_down
    }

    /// Waits a little, and restarts the node if it stopped on its own, up to
    /// [`NODE_RESTARTS_MAX`] times.
    async fn tick(&mut self) {
        let wait = thread_rng().gen_range(1..=SUPERVISOR_TICK_US_MAX);
        sleep(Duration::from_micros(wait)).await;
        // A node that refused to start for corruption stays down: restarting
        // it would only refuse again.
        if !self.boots.stopped.swap(false, Ordering::SeqCst) || self.detected() {
            return;
        }
        if self.counts.node_stops == NODE_RESTARTS_MAX {
            self.leave_down();
            return;
        }
        self.counts.node_stops += 1;
        self.power_loss().await;
    }

    /// Gives up on a node that keeps stopping: kills it for good (so that
    /// clients are refused at once rather than wait on a dead listener) and
    /// fails the run with the stop that began it.
    fn leave_down(&mut self) {
        self.handle.kill(self.keel);
        self.left_down = true;
        let first_refused = self.boots.first_refused.lock().expect("boots lock").clone();
        let last_stop = self.boots.last_stop.lock().expect("boots lock").clone();
        let (boot, reason) = first_refused
            .or(last_stop)
            .expect("a node that stopped on its own has a last stop");
        trace(format_args!(
            "left down after {} restarts",
            self.counts.node_stops
        ));
        self.failures.push(Failure::RestartsExhausted {
            restarts: self.counts.node_stops,
            boot,
            reason,
        });
    }

    /// Kills the node, loses power on its disk, and restarts it a while later.
    async fn power_loss(&mut self) {
        self.handle.kill(self.keel);
        let report = host(self.keel).disk.crash(thread_rng().gen());
        trace(format_args!("power loss: {report:?}"));
        self.counts.crashes += 1;
        self.counts.sectors_lost += report.sectors.dropped_sectors + report.sectors.torn_sectors;
        self.counts.names_reverted += report.names_reverted;
        let down = thread_rng().gen_range(DOWN_MS_MIN..=DOWN_MS_MAX);
        sleep(Duration::from_millis(down)).await;
        self.handle.restart(self.keel);
        trace("restart");
    }

    /// Cuts the node off from everyone for a while. Packets wait (TCP
    /// retransmits) until the partition heals: clients time out while the
    /// node lives, and their requests may take effect long after.
    async fn partition(&mut self) {
        let network = madsim::net::NetSim::current();
        network.clog_node(self.keel);
        self.counts.partitions += 1;
        trace("partition");
        let cut = thread_rng().gen_range(PARTITION_MS_MIN..=PARTITION_MS_MAX);
        sleep(Duration::from_millis(cut)).await;
        network.unclog_node(self.keel);
        trace("partition heals");
    }

    /// One more power loss, then a read of every key by a client of its own,
    /// so that the state the last boot recovered is in the history.
    async fn final_phase(&mut self, workload: &Arc<Workload>) {
        if self.stays_down() {
            return;
        }
        let recovered = self.boots.recovered.load(Ordering::SeqCst);
        self.power_loss().await;
        let deadline = now_ms() + FINAL_RECOVERY_MS_MAX;
        while self.boots.recovered.load(Ordering::SeqCst) == recovered
            && now_ms() < deadline
            && !self.left_down
        {
            self.tick().await;
        }
        if self.left_down {
            return;
        }
        let checker = self
            .handle
            .create_node()
            .name("final-reader")
            .ip([10, 0, 2, 1].into())
            .build();
        let reads = checker.spawn(read_every_key(Arc::clone(workload)));
        let failures = reads.await.expect("the final reader runs");
        self.failures.extend(failures);
    }
}

/// Reads every key once, as client [`CLIENTS`] (a client of its own).
async fn read_every_key(workload: Arc<Workload>) -> Vec<Failure> {
    let client = CLIENTS;
    let mut stream = None;
    let mut failures = Vec::new();
    for key in all_keys() {
        let mut last_error = String::new();
        for _ in 0..FINAL_READ_ATTEMPTS {
            let connection = match stream.as_mut() {
                Some(connection) => connection,
                None => match connect(KEEL_ADDRESS, REPLY_TIMEOUT_MS).await {
                    Ok(connection) => stream.insert(connection),
                    Err(error) => {
                        last_error = error.to_string();
                        sleep(Duration::from_millis(RECONNECT_DELAY_MS)).await;
                        continue;
                    }
                },
            };
            let input = RedisInput::Get { key: key.clone() };
            if workload.perform(client, connection, input).await {
                last_error.clear();
                break;
            }
            stream = None;
            last_error = "no answer".into();
        }
        if !last_error.is_empty() {
            failures.push(Failure::FinalRead {
                key: String::from_utf8_lossy(&key).into_owned(),
                error: last_error,
            });
        }
    }
    failures
}

/// What one node of a run is: how it syncs and how many cores it runs, where
/// clients reach it, and its place in a cluster, if it is in one.
#[derive(Clone, Debug)]
pub(crate) struct KeelSpec {
    pub(crate) fsync: FsyncPolicy,
    pub(crate) damage: bool,
    pub(crate) cores: usize,
    pub(crate) address: SocketAddr,
    pub(crate) member: Option<crate::cluster::MemberSpec>,
}

impl KeelSpec {
    /// The node of a one-node run, at [`KEEL_ADDRESS`].
    pub(crate) fn alone(fsync: FsyncPolicy, damage: bool, cores: usize) -> KeelSpec {
        KeelSpec {
            fsync,
            damage,
            cores,
            address: KEEL_ADDRESS.parse().expect("a valid address"),
            member: None,
        }
    }
}

/// The Keel node: recovers from the host's disk and serves until killed, on
/// `cores` cores. A boot that ends on its own must have had a disk fault to
/// cause it.
/// With `damage`, a start refused for corruption is the expected outcome,
/// and acknowledged entries lost where recovery cut a torn tail are counted
/// apart (the single-copy limit) rather than failed.
pub(crate) async fn run_keel(spec: KeelSpec, boots: Arc<Boots>) {
    let KeelSpec {
        fsync,
        damage,
        cores,
        address,
        member,
    } = spec;
    let boot = boots.count.fetch_add(1, Ordering::SeqCst) + 1;
    let ios = match &member {
        None => SimIo::bind(address, cores).await,
        Some(member) => {
            let observer = member.observer();
            SimIo::bind_member(address, cores, member.cluster.id, observer).await
        }
    }
    .expect("the node's address is free");
    let Host { disk, ledger, .. } = host(madsim::plugin::node());
    let faults_before = disk.fault_log().len();
    let violations_before = ledger.violations().len();
    trace(format_args!("boot {boot} on {cores} cores"));
    let config = ServeConfig {
        dir: "keel-data".into(),
        port: address.port(),
        bind: address.ip(),
        cores,
        fsync,
        metrics_port: None,
        shards: SHARDS,
        limits: Limits {
            key_bytes_max: KEY_BYTES_MAX,
            value_bytes_max: VALUE_BYTES_MAX,
        },
        connections_max: CONNECTIONS_MAX,
        snapshot_wal_bytes: SNAPSHOT_WAL_BYTES,
        wal_segment_bytes: WAL_SEGMENT_BYTES,
        requirepass: None,
        cluster: member.as_ref().map(|member| member.cluster.clone()),
    };
    // Drawn in this order (the run's id, then the seed) so seeds replay
    // as before.
    let run_id = format!("{:040x}", thread_rng().gen::<u128>());
    let hash_seed = thread_rng().gen();
    let topology = match &member {
        None => {
            let myself = Member::alone(NodeName::of_ids(0, hash_seed), config.bind, config.port);
            Topology::single_node(myself, SHARDS)
        }
        Some(member) => member.topology(),
    };
    let node = Arc::new(NodeShared::new(
        config,
        SHARDS,
        run_id,
        ios[0].now_unix_ms(),
        hash_seed,
        topology,
    ));
    boots
        .metrics
        .lock()
        .expect("boots lock")
        .push(Arc::clone(&node.metrics));
    let booted_us = unix_us();
    boots
        .excuses
        .lock()
        .expect("boots lock")
        .absorb(&disk.fault_log());
    let mut refusal_excused = false;
    let cores = BootCores::start(ios, &node);
    let reason = match cores.recovered().await {
        Ok(summaries) => {
            boots.recovered.fetch_add(1, Ordering::SeqCst);
            *boots.first_refused.lock().expect("boots lock") = None;
            judge_losses(boot, damage, &boots, &ledger, violations_before, booted_us);
            {
                let mut excuses = boots.excuses.lock().expect("boots lock");
                excuses.recovered(&summaries);
                // Damage to what recovery itself wrote (a cut, its new
                // term's no-op) is in the log after the index it ended at:
                // it stays.
                excuses.absorb(&disk.fault_log());
            }
            let replayed: u64 = summaries.iter().map(|s| s.frames_replayed).sum();
            trace(format_args!(
                "boot {boot} recovered, {replayed} frames replayed"
            ));
            match cores.stopped().await {
                Ok(()) => "asked to stop".to_string(),
                Err(error) => format!("stopped: {error}"),
            }
        }
        Err(error) => {
            // The cores that did recover stop, as the server's would exit;
            // then every shard has recovered what it could, and what they
            // lost is judged.
            let _ = cores.stopped().await;
            // Recovery writes too (a cut, a new segment): damage it took
            // there may be what it then refused.
            boots
                .excuses
                .lock()
                .expect("boots lock")
                .absorb(&disk.fault_log());
            judge_losses(boot, damage, &boots, &ledger, violations_before, booted_us);
            let excused = boots
                .excuses
                .lock()
                .expect("boots lock")
                .explains_refusal(&error);
            if damage && error.is_corruption() && excused {
                boots.detected.store(true, Ordering::SeqCst);
                refusal_excused = true;
            }
            let reason = format!("recovery refused: {error}");
            let mut first = boots.first_refused.lock().expect("boots lock");
            first.get_or_insert_with(|| (boot, reason.clone()));
            reason
        }
    };
    trace(format_args!("boot {boot} {reason}"));
    // An in-flight fault must be this boot's; damage explains only a refusal
    // that names what it touched (see `excuse`).
    let had_cause = refusal_excused
        || disk.fault_log()[faults_before..]
            .iter()
            .any(|fault| fault.kind.mode() == FaultMode::InFlight);
    if !had_cause {
        boots
            .failures
            .lock()
            .expect("boots lock")
            .push(Failure::NodeStopped {
                boot,
                reason: reason.clone(),
            });
    }
    *boots.last_stop.lock().expect("boots lock") = Some((boot, reason));
    boots.stopped.store(true, Ordering::SeqCst);
}

/// The cores of one boot, each a task of the node's host running the node
/// loop as `keel serve`'s executors do: recover its shards, then serve. A
/// core that fails asks the others to stop (the server exits).
struct BootCores {
    count: usize,
    state: Rc<CoreOutcomes>,
}

/// What the cores of a boot did so far.
#[derive(Debug, Default)]
struct CoreOutcomes {
    /// Raised at each change; only the boot's own task waits on it.
    changed: Signal,
    /// Cores whose recovery ended, either way.
    recoveries_ended: Cell<usize>,
    summaries: RefCell<Vec<RecoverySummary>>,
    /// The first core to refuse to start, and why.
    refused: RefCell<Option<NodeError>>,
    /// The first core whose serving failed, and why.
    failed: RefCell<Option<NodeError>>,
    stopped: Cell<usize>,
}

impl BootCores {
    fn start(ios: Vec<SimIo>, node: &Arc<NodeShared>) -> BootCores {
        let state = Rc::new(CoreOutcomes::default());
        let count = ios.len();
        for io in ios {
            let (state, node) = (Rc::clone(&state), Arc::clone(node));
            // Detached: it ends when the node stops, or dies with the host.
            drop(madsim::task::spawn_local(run_core(io, node, state)));
        }
        BootCores { count, state }
    }

    /// Waits until every core recovered (their summaries), or one refused.
    async fn recovered(&self) -> Result<Vec<RecoverySummary>, NodeError> {
        let state = &self.state;
        while state.recoveries_ended.get() < self.count && state.refused.borrow().is_none() {
            state.changed.wait().await;
        }
        match state.refused.borrow_mut().take() {
            Some(error) => Err(error),
            None => Ok(state.summaries.take()),
        }
    }

    /// Waits until every core stopped; the first failure, if one failed.
    async fn stopped(self) -> Result<(), NodeError> {
        while self.state.stopped.get() < self.count {
            self.state.changed.wait().await;
        }
        match self.state.failed.borrow_mut().take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// One core of a boot (see [`BootCores`]).
async fn run_core(io: SimIo, node: Arc<NodeShared>, state: Rc<CoreOutcomes>) {
    match recover_core(io, Arc::clone(&node)).await {
        Ok(recovered) => {
            state
                .summaries
                .borrow_mut()
                .extend(recovered.summaries.iter().cloned());
            state.recoveries_ended.set(state.recoveries_ended.get() + 1);
            state.changed.raise();
            if let Err(error) = recovered.serve().await {
                node.request_stop();
                state.failed.borrow_mut().get_or_insert(error);
            }
        }
        Err(error) => {
            node.request_stop();
            state.refused.borrow_mut().get_or_insert(error);
            state.recoveries_ended.set(state.recoveries_ended.get() + 1);
        }
    }
    state.stopped.set(state.stopped.get() + 1);
    state.changed.raise();
}

/// Judges what a boot's recovery lost (the ledger's findings since
/// `violations_before`), whether the boot then started or not (a shard may
/// cut a torn tail and another refuse): with `damage`, a loss that begins at
/// a damaged entry is excused (counted, and the history checked only up to
/// the boot, at `booted_us`); any other finding stays a failure.
fn judge_losses(
    boot: u64,
    damage: bool,
    boots: &Boots,
    ledger: &Ledger,
    violations_before: usize,
    booted_us: u64,
) {
    if !damage {
        return;
    }
    let excuses = boots.excuses.lock().expect("boots lock");
    let (excused, unexcused): (Vec<_>, Vec<_>) = ledger
        .take_violations_from(violations_before)
        .into_iter()
        .partition(|violation| excuses.explains_loss(violation));
    if !excused.is_empty() {
        trace(format_args!(
            "boot {boot} lost damaged entries at a torn-tail cut: {excused:?}"
        ));
        boots
            .excused_loss_at_us
            .fetch_min(booted_us, Ordering::SeqCst);
    }
    boots
        .losses_at_torn_cuts
        .fetch_add(excused.len() as u64, Ordering::SeqCst);
    boots
        .failures
        .lock()
        .expect("boots lock")
        .extend(unexcused.into_iter().map(Failure::Durability));
}

/// One client: random commands until the budget is spent, reconnecting
/// whenever the node goes away.
async fn run_client(client: u64, seed: u64, ops: u64, workload: Arc<Workload>) {
    let mut commands = ClientWorkload::new(client, seed);
    let mut connection: Option<ClientStream> = None;
    while workload.take_ticket(ops) {
        let stream = match connection.as_mut() {
            Some(stream) => stream,
            None => match connect(KEEL_ADDRESS, REPLY_TIMEOUT_MS).await {
                Ok(stream) => connection.insert(stream),
                Err(error) => {
                    workload.return_ticket();
                    let stopped = workload.faults_stopped_ms.load(Ordering::SeqCst);
                    let invoked_ms = now_ms();
                    if invoked_ms >= stopped.saturating_add(LIVENESS_GRACE_MS) {
                        // The node is gone for good: waiting longer only
                        // hides the failure behind the run's time limit.
                        let failure = Failure::Liveness {
                            client,
                            invoked_ms,
                            input: "a connection".into(),
                            error: error.to_string(),
                        };
                        workload.stalled.lock().expect("stalled lock").push(failure);
                        break;
                    }
                    sleep(Duration::from_millis(RECONNECT_DELAY_MS)).await;
                    continue;
                }
            },
        };
        if !workload
            .perform(client, stream, commands.next_input(unix_us() / 1000))
            .await
        {
            connection = None;
        }
        let think = commands
            .probe_wait_ms(unix_us() / 1000)
            .unwrap_or_else(|| thread_rng().gen_range(0..=THINK_MS_MAX));
        sleep(Duration::from_millis(think)).await;
    }
    workload.clients_done.fetch_add(1, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::redis::RedisOutput;

    /// Simulated time within which the supervisor must give up on a node
    /// that never comes back: [`NODE_RESTARTS_MAX`] restarts, each down at
    /// most [`DOWN_MS_MAX`] plus a supervisor's tick and a refused start.
    const GIVE_UP_MS_MAX: u64 = (NODE_RESTARTS_MAX + 1) * (DOWN_MS_MAX + 50);

    /// A node that acknowledged a write, then lost power on a disk whose
    /// every read now fails: no start gets past reading its WAL. The
    /// supervisor must give up at the restart bound, naming the first refused
    /// start, long before madsim's time limit (which random runs reached
    /// before, with a panic, after some 23,000 restarts).
    #[test]
    fn a_node_that_never_comes_back_is_left_down_at_the_restart_bound() {
        let (failures, boots, given_up_ms) = std::thread::spawn(|| {
            let mut runtime = Runtime::with_seed_and_config(1, madsim::Config::default());
            runtime.set_time_limit(Duration::from_secs(RUN_TIME_LIMIT_S));
            runtime.block_on(never_comes_back())
        })
        .join()
        .expect("the simulation ends without a panic");
        assert!(given_up_ms < GIVE_UP_MS_MAX, "gave up at {given_up_ms} ms");
        assert_eq!(boots, NODE_RESTARTS_MAX + 2, "{failures:?}");
        let [Failure::RestartsExhausted {
            restarts,
            boot,
            reason,
        }] = failures.as_slice()
        else {
            panic!("one failure, the restart bound: {failures:?}");
        };
        assert_eq!((*restarts, *boot), (NODE_RESTARTS_MAX, 2), "{reason}");
        assert!(
            reason.starts_with("recovery refused: shard ") && reason.contains("latent read error"),
            "{reason}"
        );
        let message = failures[0].to_string();
        assert!(message.contains("never came back"), "{message}");
    }

    /// The scenario above; returns the supervisor's failures, the boots and
    /// when it gave up (simulated ms).
    async fn never_comes_back() -> (Vec<Failure>, u64, u64) {
        let handle = Handle::current();
        let boots = Arc::new(Boots::default());
        let keel_boots = Arc::clone(&boots);
        let keel = handle
            .create_node()
            .name("keel")
            .ip([10, 0, 0, 1].into())
            .init(move || {
                let spec = KeelSpec::alone(FsyncPolicy::Always, false, CORES_MIN);
                run_keel(spec, Arc::clone(&keel_boots))
            })
            .build();
        let client = handle
            .create_node()
            .name("client")
            .ip([10, 0, 1, 1].into())
            .build();
        let set = RedisInput::Set {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        };
        let written = client.spawn(async move {
            loop {
                if let Ok(mut stream) = connect(KEEL_ADDRESS, REPLY_TIMEOUT_MS).await {
                    if let Ok(output) = request(&mut stream, &set, REPLY_TIMEOUT_MS).await {
                        return output;
                    }
                }
                sleep(Duration::from_millis(RECONNECT_DELAY_MS)).await;
            }
        });
        assert_eq!(written.await.expect("the client runs"), RedisOutput::Ok);
        let mut supervisor = Supervisor {
            handle,
            keel: keel.id(),
            boots: Arc::clone(&boots),
            counts: Counts::default(),
            failures: Vec::new(),
            left_down: false,
        };
        host(keel.id()).disk.set_rates(FaultRates {
            in_flight: InFlightRates {
                latent_read_error: 1.0,
                ..InFlightRates::default()
            },
            damage: DamageRates::default(),
        });
        supervisor.power_loss().await;
        while !supervisor.left_down {
            supervisor.tick().await;
        }
        let boots = boots.count.load(Ordering::SeqCst);
        (supervisor.failures, boots, now_ms())
    }
}
