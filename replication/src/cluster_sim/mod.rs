//! The cluster simulator of pure cores: 3 or 5 [`Group`]s (plus a spare that
//! joins as a learner) exchanging messages through a seeded network that
//! drops, duplicates, delays, reorders, corrupts (through the codec, which
//! must refuse them) and partitions; a driver
//! per node that executes the outputs in order as the real one must; crashes
//! that lose what no sync covered; a client workload of writes and
//! linearizable reads; membership changes, leadership transfers and
//! compaction (so snapshot transfer) in the middle of it all. The
//! [`checker`] judges every seed; then the network heals and the cluster must
//! make progress within a bound.
//!
//! Everything is a function of the seed: no clock, no thread, no hash map
//! iterated. A failing seed replays bit for bit (`Outcome::trace_hash`), with
//! the command [`replay_command`] prints. See docs/REPLICATION.md, "The
//! cluster simulator".

pub mod checker;
pub mod network;
pub mod node;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use keel_wal::memory::SplitMix64;

use crate::config::Config;
use crate::interface::{Input, MembershipChange, NotLeader, Output, Refusal};
use crate::message::{Envelope, Message};
use crate::types::{
    Entry, EntryId, EntryPayload, HardState, LogIndex, Membership, NodeId, ProposalId, ReadId,
    SnapshotMeta,
};
use crate::{Group, Role};
use checker::{Checker, Violation};
use network::{Network, Partition, Weather};
use node::{command_bytes, Disk, Log, PendingWrite, StateMachine};

/// How long faults are injected, in simulated milliseconds.
pub const CHAOS_MS: u64 = 1_000;
/// After the chaos the network heals and every crashed node restarts; within
/// this bound a write proposed after the heal must commit, and by its end
/// every member must have caught up (Raft's liveness under a quiet network).
pub const PROGRESS_BOUND_MS: u64 = 2_000;
/// After the heal the client writes until a write proposed after the heal
/// commits (the progress asked for), or until this long before the end; then
/// it stops, so that the last commits reach every member before the end.
pub const SETTLE_MS: u64 = 300;
/// Shortest and longest pause between two faults.
pub const FAULT_INTERVAL_MS_MIN: u64 = 50;
pub const FAULT_INTERVAL_MS_MAX: u64 = 250;
/// Longest a crashed node stays down during the chaos.
pub const DOWN_MS_MAX: u64 = 400;
/// Longest a node crashed right after voting stays down: it is back while
/// the campaigns of that term still run.
pub const DOWN_AFTER_VOTE_MS_MAX: u64 = 10;
/// Longest a sync (fsync) takes.
pub const SYNC_MS_MAX: u64 = 8;
/// Longest pause between two client actions.
pub const CLIENT_INTERVAL_MS_MAX: u64 = 30;
/// Most commands the client proposes at once (one batch).
pub const PROPOSALS_PER_ACTION_MAX: u64 = 32;
/// One client action in this many also reads.
pub const READ_EVERY_ACTIONS: u64 = 3;
/// Heartbeat interval of the simulated groups: `Config::test_min`'s small
/// snapshot chunks, but a slower beat and appends of a client batch or two,
/// so that a seed spends its events on the workload and the faults.
pub const SIM_HEARTBEAT_INTERVAL_MS: u64 = 25;
/// The shortest election timeout of the simulated groups lies between these
/// (chosen per seed).
pub const SIM_ELECTION_TIMEOUT_MS_MIN_LOW: u64 = 100;
pub const SIM_ELECTION_TIMEOUT_MS_MIN_HIGH: u64 = 250;
/// How much longer the longest election timeout is than the shortest (one
/// of these, per seed): the narrow spreads make split votes, where two
/// candidates campaign in one term, common; the wide ones let a campaign
/// outlast a voter's crash and restart.
pub const SIM_ELECTION_TIMEOUT_SPREADS_MS: [u64; 4] = [40, 80, 200, 600];
/// One granted vote in this many crashes its voter as soon as it is sent
/// (before any sync that was not already due), during the chaos: where a
/// vote not yet durable would be lost. Every one: the vote bugs need this
/// crash and a rival campaign in the same term, and the second is rare.
pub const CRASH_AFTER_VOTE_EVERY: u64 = 1;
/// Most entry bytes per append, and unacknowledged per follower, in the
/// simulated groups: a few appends' worth, so a lagging follower meets flow
/// control.
pub const SIM_APPEND_BYTES_MAX: u64 = 1_024;
pub const SIM_INFLIGHT_BYTES_MAX: u64 = 4_096;
/// Mixed with the seed to choose lease reads, apart from the seed's random
/// stream (so the choice leaves the rest of the seed as it was).
const LEASE_SEED_SALT: u64 = 0x1ea5e;
/// Mixed with the seed and a node's index to choose that node's clock rate.
const CLOCK_SEED_SALT: u64 = 0xc10c;
/// Parts per million: a clock rate of `PPM` keeps real time.
const PPM: u64 = 1_000_000;
/// Fewest and most applied entries between two snapshots of a node's state.
pub const COMPACT_ENTRIES_MIN: u64 = 16;
pub const COMPACT_ENTRIES_MAX: u64 = 128;

/// One mixing step of the trace hash (splitmix64's finalizer over `hash ^ value`).
pub fn mix(hash: u64, value: u64) -> u64 {
    let mut z = (hash ^ value).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a run simulates besides its seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Voters at the start: 3 or 5 (a spare joins as a learner).
    pub voters: usize,
    /// The planted bug every group runs with.
    #[cfg(feature = "planted-bugs")]
    pub plant: Option<crate::planted::Plant>,
}

impl Options {
    pub fn voters(voters: usize) -> Options {
        Options {
            voters,
            #[cfg(feature = "planted-bugs")]
            plant: None,
        }
    }

    fn plant_name(&self) -> Option<&'static str> {
        #[cfg(feature = "planted-bugs")]
        return self.plant.map(|plant| plant.name());
        #[cfg(not(feature = "planted-bugs"))]
        None
    }
}

/// What a seed did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub committed: u64,
    pub elections: u64,
    pub faults: u64,
    pub crashes: u64,
    pub messages: u64,
    pub corrupted_messages: u64,
    pub snapshots_installed: u64,
    pub reads_served: u64,
    pub membership_changes: u64,
    pub events: u64,
}

/// How a seed ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub seed: u64,
    /// A hash of every event in order: equal for two runs of one seed.
    pub trace_hash: u64,
    pub stats: Stats,
    /// The first property broken, and the simulated time it broke at.
    pub violation: Option<(u64, Violation)>,
}

/// The command that replays `seed` with `options`.
pub fn replay_command(seed: u64, options: &Options) -> String {
    let mut command = format!(
        "cargo run --release -p keel-replication --example cluster_sim -- --voters {} --seeds {seed}",
        options.voters
    );
    if let Some(plant) = options.plant_name() {
        command = format!(
            "cargo run --release -p keel-replication --features planted-bugs --example cluster_sim -- --voters {} --seeds {seed} --plant {plant}",
            options.voters
        );
    }
    command
}

/// Runs one seed to its end or its first violation.
pub fn run(seed: u64, options: &Options) -> Outcome {
    let mut cluster = Cluster::new(seed, options);
    let violation = cluster.run().err();
    Outcome {
        seed,
        trace_hash: cluster.trace,
        stats: cluster.stats(),
        violation: violation.map(|violation| (cluster.now_ms, violation)),
    }
}

/// Runs one seed, counting a panic (a core's assertion) as a violation.
pub fn run_caught(seed: u64, options: &Options) -> Outcome {
    std::panic::catch_unwind(|| run(seed, options)).unwrap_or_else(|panic| {
        let detail = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
            .unwrap_or_default();
        Outcome {
            seed,
            trace_hash: 0,
            stats: Stats::default(),
            violation: Some((
                0,
                Violation {
                    checker: "panic",
                    detail,
                },
            )),
        }
    })
}

/// The first seed of `seeds` that breaks a property, and how many ran.
pub fn first_failure(seeds: std::ops::Range<u64>, options: &Options) -> (Option<Outcome>, u64) {
    let mut ran = 0;
    for seed in seeds {
        ran += 1;
        let outcome = run_caught(seed, options);
        if outcome.violation.is_some() {
            return (Some(outcome), ran);
        }
    }
    (None, ran)
}

/// Something due at a time, besides messages and the cores' own deadlines.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Sync {
        node: usize,
        incarnation: u64,
    },
    /// A crash right after a vote (see `CRASH_AFTER_VOTE_EVERY`).
    CrashAfterVote {
        node: usize,
        incarnation: u64,
    },
    Restart {
        node: usize,
    },
    Fault,
    Client,
    Heal,
    End,
}

/// One simulated member and its driver.
#[derive(Debug)]
struct SimNode {
    id: NodeId,
    core: Option<Group>,
    /// Bumped by every crash, so that a sync the crash cut short is ignored.
    incarnation: u64,
    disk: Disk,
    /// The log as the core sees it: the disk's plus every pending write.
    live: Log,
    pending: Vec<PendingWrite>,
    /// `SendAfterDurable` messages waiting for the pending writes' sync.
    held: Vec<Envelope>,
    sync_scheduled: bool,
    state: StateMachine,
    /// The membership in force at `state.applied` (a snapshot's).
    applied_membership: Membership,
    /// The newest `MembershipChanged`.
    membership: Membership,
    /// Reads answered with an index not yet applied.
    reads_waiting: Vec<(ReadId, LogIndex)>,
    compact_every: u64,
    /// How fast this node's clock runs, in parts per million of real time:
    /// anywhere within the drift bound the cores assume
    /// (`CLOCK_DRIFT_BOUND_PPM`), so leases meet the drift they must survive.
    clock_rate_ppm: u64,
}

impl SimNode {
    /// Node `index`, never started, whose disk holds only the snapshot at
    /// `EntryId::ZERO` naming `membership` (the first voters, or no one for
    /// the spare).
    fn new(index: usize, membership: Membership, compact_every: u64, seed: u64) -> SimNode {
        let disk = Disk {
            snapshot: SnapshotMeta {
                last: EntryId::ZERO,
                membership: membership.clone(),
            },
            snapshot_data: StateMachine::default().snapshot(),
            ..Disk::default()
        };
        SimNode {
            id: NodeId(index as u64 + 1),
            core: None,
            incarnation: 0,
            live: disk.log.clone(),
            disk,
            pending: Vec::new(),
            held: Vec::new(),
            sync_scheduled: false,
            state: StateMachine::default(),
            applied_membership: membership.clone(),
            membership,
            reads_waiting: Vec::new(),
            compact_every,
            clock_rate_ppm: clock_rate_ppm(seed, index),
        }
    }

    /// This node's clock at simulated time `now_ms`.
    fn local_ms(&self, now_ms: u64) -> u64 {
        (u128::from(now_ms) * u128::from(self.clock_rate_ppm) / u128::from(PPM)) as u64
    }

    /// The first simulated time at which this node's clock reads `local_ms`.
    fn global_ms(&self, local_ms: u64) -> u64 {
        (u128::from(local_ms) * u128::from(PPM)).div_ceil(u128::from(self.clock_rate_ppm)) as u64
    }

    fn up(&self) -> bool {
        self.core.is_some()
    }

    fn commit(&self) -> LogIndex {
        self.state.applied.index
    }
}

struct Cluster {
    seed: u64,
    #[cfg(feature = "planted-bugs")]
    plant: Option<crate::planted::Plant>,
    now_ms: u64,
    /// The groups' shortest and longest election timeouts.
    election_timeout_ms: (u64, u64),
    /// Whether the groups serve reads under leader leases (half the seeds):
    /// clocks drift only within the bound the lease assumes, so lease reads
    /// must be as linearizable as ReadIndex ones.
    lease_reads: bool,
    rng: SplitMix64,
    events: BinaryHeap<Reverse<(u64, u64, Event)>>,
    event_sequence: u64,
    nodes: Vec<SimNode>,
    network: Network,
    checker: Checker,
    client: Client,
    /// The node that most recently started leading a term, and that term.
    last_leader: Option<(usize, u64)>,
    healed: bool,
    /// The first value the client wrote after the heal.
    heal_value: u64,
    /// When a write proposed after the heal first committed.
    progress_at_ms: Option<u64>,
    trace: u64,
    stats: Stats,
    outputs: Vec<Output>,
}

/// The workload: writes and reads sent to whichever node it believes leads,
/// and the membership script.
#[derive(Debug, Default)]
struct Client {
    guess: usize,
    next_proposal: u64,
    next_read: u64,
    next_value: u64,
    /// Each read in flight: the highest index committed when it began.
    reads: BTreeMap<ReadId, LogIndex>,
    /// The membership changes still to make, first first.
    script: Vec<MembershipChange>,
}

/// Node `index`'s clock rate: real time give or take up to the drift bound,
/// chosen apart from the seed's random stream.
fn clock_rate_ppm(seed: u64, index: usize) -> u64 {
    let bound = crate::config::CLOCK_DRIFT_BOUND_PPM;
    PPM - bound + mix(seed, CLOCK_SEED_SALT ^ index as u64) % (2 * bound + 1)
}

/// The seed's shortest and longest election timeouts.
fn election_timeout_ms(rng: &mut SplitMix64) -> (u64, u64) {
    let spread = SIM_ELECTION_TIMEOUT_MS_MIN_HIGH - SIM_ELECTION_TIMEOUT_MS_MIN_LOW;
    let timeout_ms_min = SIM_ELECTION_TIMEOUT_MS_MIN_LOW + rng.below(spread + 1);
    let choice = rng.below(SIM_ELECTION_TIMEOUT_SPREADS_MS.len() as u64) as usize;
    (
        timeout_ms_min,
        timeout_ms_min + SIM_ELECTION_TIMEOUT_SPREADS_MS[choice],
    )
}

impl Client {
    /// In three seeds of four, the membership script: the spare (the node
    /// after the `voters` first) joins as a learner, is promoted, then a
    /// random first voter is removed.
    fn new(rng: &mut SplitMix64, voters: usize) -> Client {
        let mut client = Client::default();
        if rng.below(4) != 0 {
            let spare = NodeId(voters as u64 + 1);
            let victim = NodeId(1 + rng.below(voters as u64));
            client.script = vec![
                MembershipChange::Remove(victim),
                MembershipChange::Promote(spare),
                MembershipChange::AddLearner(spare),
            ];
        }
        client
    }
}

impl Cluster {
    fn new(seed: u64, options: &Options) -> Cluster {
        let mut rng = SplitMix64::new(seed);
        let members = options.voters + 1;
        let voters: Membership = Membership {
            voters: (1..=options.voters as u64).map(NodeId).collect(),
            learners: Default::default(),
        };
        let nodes = (0..members)
            .map(|index| {
                let membership = if index < options.voters {
                    voters.clone()
                } else {
                    Membership::default()
                };
                let compact_every =
                    COMPACT_ENTRIES_MIN + rng.below(COMPACT_ENTRIES_MAX - COMPACT_ENTRIES_MIN + 1);
                SimNode::new(index, membership, compact_every, seed)
            })
            .collect();
        let election_timeout_ms = election_timeout_ms(&mut rng);
        let client = Client::new(&mut rng, options.voters);
        let mut cluster = Cluster {
            seed,
            #[cfg(feature = "planted-bugs")]
            plant: options.plant,
            now_ms: 0,
            election_timeout_ms,
            lease_reads: mix(seed, LEASE_SEED_SALT) & 1 == 1,
            network: Network::new(members),
            rng,
            events: BinaryHeap::new(),
            event_sequence: 0,
            nodes,
            checker: Checker::default(),
            client,
            last_leader: None,
            healed: false,
            heal_value: u64::MAX,
            progress_at_ms: None,
            trace: seed,
            stats: Stats::default(),
            outputs: Vec::new(),
        };
        for node in 0..members {
            cluster.boot(node);
        }
        cluster.network.weather = Weather::random(&mut cluster.rng);
        cluster.schedule(FAULT_INTERVAL_MS_MIN, Event::Fault);
        cluster.schedule(1, Event::Client);
        cluster.schedule(CHAOS_MS, Event::Heal);
        cluster.schedule(CHAOS_MS + PROGRESS_BOUND_MS, Event::End);
        cluster
    }

    fn stats(&self) -> Stats {
        Stats {
            committed: self.checker.max_committed.0,
            elections: self.checker.leaders_elected() as u64,
            messages: self.network.stats.sent,
            corrupted_messages: self.network.stats.corrupted,
            ..self.stats
        }
    }

    fn schedule(&mut self, after_ms: u64, event: Event) {
        self.event_sequence += 1;
        self.events.push(Reverse((
            self.now_ms + after_ms,
            self.event_sequence,
            event,
        )));
    }

    fn config(&self, id: NodeId) -> Config {
        Config {
            heartbeat_interval_ms: SIM_HEARTBEAT_INTERVAL_MS,
            election_timeout_ms_min: self.election_timeout_ms.0,
            election_timeout_ms_max: self.election_timeout_ms.1,
            append_bytes_max: SIM_APPEND_BYTES_MAX,
            inflight_bytes_max: SIM_INFLIGHT_BYTES_MAX,
            lease_reads: self.lease_reads,
            #[cfg(feature = "planted-bugs")]
            plant: self.plant,
            ..Config::test_min(id, self.seed)
        }
    }

    /// Starts node `index`'s core from its disk.
    fn boot(&mut self, index: usize) {
        let config = self.config(self.nodes[index].id);
        let node = &mut self.nodes[index];
        let state = StateMachine::restore(&node.disk.snapshot_data)
            .expect("the driver's own snapshots restore");
        node.disk.recover();
        node.core = Some(Group::new(config, node.disk.restored()));
        node.live = node.disk.log.clone();
        node.state = state;
        node.applied_membership = node.disk.snapshot.membership.clone();
    }

    fn run(&mut self) -> Result<(), Violation> {
        loop {
            let next_event = self.events.peek().map(|Reverse((at, _, _))| *at);
            let next_delivery = self.network.next_delivery_ms();
            let next_tick = self.next_tick();
            let now = [next_event, next_delivery, next_tick.map(|(at, _)| at)]
                .into_iter()
                .flatten()
                .min()
                .expect("the end is always scheduled");
            self.now_ms = self.now_ms.max(now);
            self.stats.events += 1;
            if next_event == Some(now) {
                let Reverse((_, _, event)) = self.events.pop().expect("peeked");
                self.trace = mix(self.trace, now ^ 1);
                if event == Event::End {
                    return self.check_progress();
                }
                self.on_event(event)?;
            } else if next_delivery == Some(now) {
                let (to, envelope) = self.network.deliver(now).expect("due");
                self.on_delivery(to, envelope)?;
            } else {
                let (_, node) = next_tick.expect("the earliest is a tick");
                self.trace = mix(self.trace, now ^ (node as u64) << 48);
                self.step(node, Input::Tick)?;
            }
        }
    }

    /// The earliest core deadline, and whose.
    fn next_tick(&self) -> Option<(u64, usize)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(index, node)| {
                let deadline = node.core.as_ref()?.next_deadline_ms()?;
                Some((node.global_ms(deadline).max(self.now_ms), index))
            })
            .min()
    }

    fn on_event(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::Sync { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation {
                    self.sync(node)?;
                }
            }
            Event::CrashAfterVote { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation {
                    self.crash(node, DOWN_AFTER_VOTE_MS_MAX);
                }
            }
            Event::Restart { node } => {
                if !self.nodes[node].up() {
                    self.boot(node);
                }
            }
            Event::Fault if !self.healed => {
                self.fault()?;
                let pause = FAULT_INTERVAL_MS_MIN
                    + self
                        .rng
                        .below(FAULT_INTERVAL_MS_MAX - FAULT_INTERVAL_MS_MIN + 1);
                self.schedule(pause, Event::Fault);
            }
            Event::Fault => {}
            Event::Client => {
                let progressing = self.healed && self.progress_at_ms.is_none();
                if !self.healed
                    || progressing && self.now_ms + SETTLE_MS < CHAOS_MS + PROGRESS_BOUND_MS
                {
                    self.client_action()?;
                }
                let pause = 1 + self.rng.below(CLIENT_INTERVAL_MS_MAX);
                self.schedule(pause, Event::Client);
            }
            Event::Heal => self.heal(),
            Event::End => unreachable!("the run loop ends at End"),
        }
        Ok(())
    }

    fn heal(&mut self) {
        self.healed = true;
        self.heal_value = self.client.next_value + 1;
        self.network.weather = Weather::default();
        self.network.partition = Partition::none(self.nodes.len());
        for node in 0..self.nodes.len() {
            if !self.nodes[node].up() {
                self.boot(node);
            }
        }
    }

    /// One fault, chosen by the seed.
    fn fault(&mut self) -> Result<(), Violation> {
        self.stats.faults += 1;
        let count = self.nodes.len();
        let kind = self.rng.below(9);
        self.trace = mix(self.trace, kind);
        let leader = self.last_leader.map(|(node, _)| node);
        let random = self.rng.below(count as u64) as usize;
        match kind {
            0 => self.crash(random, DOWN_MS_MAX),
            1 => self.crash(leader.unwrap_or(random), DOWN_MS_MAX),
            2 => {
                let side: Vec<usize> = (0..count).filter(|_| self.rng.below(2) == 0).collect();
                self.network.partition = Partition::split(count, &side);
            }
            3 => self.network.partition = Partition::split(count, &[leader.unwrap_or(random)]),
            4 => {
                let side: Vec<usize> = (0..count)
                    .filter(|node| *node != random && self.rng.below(2) == 0)
                    .collect();
                self.network.partition = Partition::bridge(count, random, &side);
            }
            5 => {
                let outgoing = self.rng.below(2) == 0;
                self.network.partition =
                    Partition::one_way(count, leader.unwrap_or(random), outgoing);
            }
            6 => self.network.partition = Partition::none(count),
            7 => self.network.weather = Weather::random(&mut self.rng),
            _ => {
                if let Some(leader) = leader {
                    let to = self.nodes[random].id;
                    self.step(leader, Input::TransferLeadership { to })?;
                }
            }
        }
        Ok(())
    }

    /// Node `index` loses power: what no sync covered is gone.
    fn crash(&mut self, index: usize, down_ms_max: u64) {
        let incarnation = {
            let node = &mut self.nodes[index];
            if !node.up() {
                return;
            }
            node.core = None;
            node.incarnation += 1;
            node.pending.clear();
            node.held.clear();
            node.sync_scheduled = false;
            node.reads_waiting.clear();
            node.incarnation
        };
        self.stats.crashes += 1;
        self.trace = mix(self.trace, incarnation ^ index as u64);
        let down_ms = 1 + self.rng.below(down_ms_max);
        self.schedule(down_ms, Event::Restart { node: index });
    }

    fn client_action(&mut self) -> Result<(), Violation> {
        if !self.nodes[self.client.guess].up() {
            self.client.guess = self.rng.below(self.nodes.len() as u64) as usize;
            return Ok(());
        }
        let target = self.client.guess;
        let commands = 1 + self.rng.below(PROPOSALS_PER_ACTION_MAX);
        let proposals = (0..commands)
            .map(|_| {
                self.client.next_proposal += 1;
                self.client.next_value += 1;
                let key = self.rng.below(node::STATE_KEYS as u64) as u8;
                let command = command_bytes(key, self.client.next_value);
                (ProposalId(self.client.next_proposal), command)
            })
            .collect();
        self.step(target, Input::ProposeBatch { proposals })?;
        if self.rng.below(READ_EVERY_ACTIONS) == 0 {
            self.client.next_read += 1;
            let read = ReadId(self.client.next_read);
            self.client.reads.insert(read, self.checker.max_committed);
            self.step(target, Input::Read { read })?;
        }
        if !self.healed && self.rng.below(16) == 0 {
            self.membership_action(target)?;
        }
        Ok(())
    }

    /// Proposes the script's next membership change once the previous one is
    /// committed everywhere it is judged (in the target's applied state).
    fn membership_action(&mut self, target: usize) -> Result<(), Violation> {
        let Some(change) = self.client.script.last().copied() else {
            return Ok(());
        };
        let applied = &self.nodes[target].applied_membership;
        let done = match change {
            MembershipChange::AddLearner(id) => applied.learners.contains(&id),
            MembershipChange::Promote(id) => applied.voters.contains(&id),
            MembershipChange::Remove(id) => {
                !applied.voters.contains(&id) && !applied.learners.contains(&id)
            }
        };
        if done {
            self.client.script.pop();
            self.stats.membership_changes += 1;
            return Ok(());
        }
        self.client.next_proposal += 1;
        let proposal = ProposalId(self.client.next_proposal);
        self.step(target, Input::ChangeMembership { proposal, change })
    }

    fn on_delivery(&mut self, to: usize, envelope: Envelope) -> Result<(), Violation> {
        self.trace = mix(
            self.trace,
            self.now_ms ^ envelope.from.0 << 40 ^ (to as u64) << 56,
        );
        if !self.nodes[to].up() {
            return Ok(());
        }
        self.step(to, Input::Receive(envelope))
    }

    /// Feeds `input` to node `index` and executes its outputs in order.
    fn step(&mut self, index: usize, input: Input) -> Result<(), Violation> {
        let mut outputs = std::mem::take(&mut self.outputs);
        outputs.clear();
        let now_ms = self.nodes[index].local_ms(self.now_ms);
        let Some(core) = self.nodes[index].core.as_mut() else {
            self.outputs = outputs;
            return Ok(());
        };
        core.step(now_ms, input, &mut outputs);
        let mut result = Ok(());
        let mut follow_ups = Vec::new();
        for output in outputs.drain(..) {
            result = self.execute(index, output, &mut follow_ups);
            if result.is_err() {
                break;
            }
        }
        self.outputs = outputs;
        result?;
        for input in follow_ups {
            self.step(index, input)?;
        }
        Ok(())
    }

    /// Executes one output of node `index`; inputs it leads to (a snapshot
    /// taken) go to `follow_ups`, fed after the step's outputs.
    fn execute(
        &mut self,
        index: usize,
        output: Output,
        follow_ups: &mut Vec<Input>,
    ) -> Result<(), Violation> {
        match output {
            Output::Cut { after } => {
                let node = &mut self.nodes[index];
                self.checker
                    .on_cut(node.id, after, node.commit(), &node.live)?;
                node.live.cut(after.index);
                node.pending.push(PendingWrite::Cut(after));
                self.schedule_sync(index);
            }
            Output::Persist {
                hard_state,
                entries,
            } => self.persist(index, hard_state, entries)?,
            Output::Send(envelope) => self.send(index, envelope)?,
            Output::SendAfterDurable(envelope) => {
                if self.nodes[index].pending.is_empty() {
                    self.send(index, envelope)?;
                } else {
                    self.nodes[index].held.push(envelope);
                }
            }
            Output::Commit { through } => self.commit(index, through, follow_ups)?,
            Output::Resolve { result, .. } => {
                if let Err(Refusal::NotLeader(not_leader)) = result {
                    self.redirect(not_leader);
                }
            }
            Output::ReadReady { read, result } => match result {
                Ok(read_index) => {
                    self.nodes[index].reads_waiting.push((read, read_index));
                    self.serve_reads(index)?;
                }
                Err(not_leader) => {
                    self.client.reads.remove(&read);
                    self.redirect(not_leader);
                }
            },
            Output::InstallSnapshot { meta, data } => self.install_snapshot(index, meta, data)?,
            Output::MembershipChanged(membership) => self.nodes[index].membership = membership,
        }
        Ok(())
    }

    /// Appends `entries` to node `index`'s live log; they (and the hard
    /// state) become durable at the next sync.
    fn persist(
        &mut self,
        index: usize,
        hard_state: Option<HardState>,
        entries: Vec<Entry>,
    ) -> Result<(), Violation> {
        let node = &mut self.nodes[index];
        self.checker
            .on_append(node.id, node.live.last(), &entries)?;
        if !node.live.append(entries.clone()) {
            return Err(Violation {
                checker: "driver contract",
                detail: format!(
                    "{} persisted entries from {:?} after {}",
                    node.id,
                    entries.first().map(|entry| entry.id),
                    node.live.last()
                ),
            });
        }
        node.pending.push(PendingWrite::Persist {
            hard_state,
            entries,
        });
        self.schedule_sync(index);
        Ok(())
    }

    /// Replaces node `index`'s state machine with a received snapshot; the
    /// snapshot becomes durable at the next sync.
    fn install_snapshot(
        &mut self,
        index: usize,
        meta: SnapshotMeta,
        data: Vec<u8>,
    ) -> Result<(), Violation> {
        let node = &mut self.nodes[index];
        self.checker.on_snapshot(node.id, meta.last, &data)?;
        node.state = StateMachine::restore(&data)
            .filter(|state| state.applied == meta.last)
            .ok_or_else(|| Violation {
                checker: "snapshot transfer",
                detail: format!(
                    "{} received bytes that are not the snapshot through {}",
                    node.id, meta.last
                ),
            })?;
        node.applied_membership = meta.membership.clone();
        node.live.compact(meta.last);
        node.pending.push(PendingWrite::Install { meta, data });
        self.stats.snapshots_installed += 1;
        self.schedule_sync(index);
        self.serve_reads(index)
    }

    fn redirect(&mut self, not_leader: NotLeader) {
        self.client.guess = match not_leader.leader {
            Some(leader) => (leader.0 as usize).saturating_sub(1) % self.nodes.len(),
            None => self.rng.below(self.nodes.len() as u64) as usize,
        };
    }

    fn send(&mut self, index: usize, envelope: Envelope) -> Result<(), Violation> {
        let from = &self.nodes[index];
        if matches!(envelope.message, Message::Append { .. }) {
            self.checker
                .on_leading(from.id, envelope.term, &from.live)?;
            if self
                .last_leader
                .is_none_or(|(_, term)| term < envelope.term.0)
            {
                self.last_leader = Some((index, envelope.term.0));
            }
        }
        let granted = matches!(envelope.message, Message::VoteReply { granted: true });
        if granted && !self.healed && self.rng.below(CRASH_AFTER_VOTE_EVERY) == 0 {
            let incarnation = from.incarnation;
            self.schedule(
                0,
                Event::CrashAfterVote {
                    node: index,
                    incarnation,
                },
            );
        }
        let from = &self.nodes[index];
        let to = (envelope.to.0 as usize).wrapping_sub(1);
        if to >= self.nodes.len() || envelope.from != from.id {
            return Err(Violation {
                checker: "routing",
                detail: format!("{} sent {envelope:?}", from.id),
            });
        }
        self.network
            .send(&mut self.rng, self.now_ms, index, to, envelope)
    }

    fn schedule_sync(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        if node.sync_scheduled {
            return;
        }
        node.sync_scheduled = true;
        let event = Event::Sync {
            node: index,
            incarnation: node.incarnation,
        };
        let after_ms = self.rng.below(SYNC_MS_MAX + 1);
        self.schedule(after_ms, event);
    }

    /// A sync completed: every pending write is durable, the messages that
    /// waited for it go, and the core hears how far the log is durable.
    fn sync(&mut self, index: usize) -> Result<(), Violation> {
        let node = &mut self.nodes[index];
        node.sync_scheduled = false;
        for write in node.pending.drain(..) {
            node.disk.apply(write);
        }
        let through = node.live.last();
        for envelope in std::mem::take(&mut node.held) {
            self.send(index, envelope)?;
        }
        self.step(index, Input::Durable { through })
    }

    /// Applies node `index`'s entries through `through`, checking each, then
    /// takes a snapshot if enough have been applied since the last.
    fn commit(
        &mut self,
        index: usize,
        through: EntryId,
        follow_ups: &mut Vec<Input>,
    ) -> Result<(), Violation> {
        let node = &mut self.nodes[index];
        let leading = node
            .core
            .as_ref()
            .filter(|core| core.role() == Role::Leader);
        if let Some(core) = leading.filter(|_| through.index > node.commit()) {
            Checker::on_leader_commit(node.id, core.term(), through)?;
        }
        if node.live.id_at(through.index) != Some(through) && through.index > node.commit() {
            return Err(Violation {
                checker: "driver contract",
                detail: format!(
                    "{} committed {through}, which its log does not hold",
                    node.id
                ),
            });
        }
        let term = node.core.as_ref().expect("a core committed").term();
        while node.state.applied.index < through.index {
            let next = LogIndex(node.state.applied.index.0 + 1);
            let entry = node.live.get(next).expect("held: checked above");
            self.checker.on_commit(node.id, term, entry)?;
            if let EntryPayload::Membership(membership) = &entry.payload {
                node.applied_membership = (**membership).clone();
            }
            let value = node.state.apply(entry);
            if value.is_some_and(|value| value >= self.heal_value) {
                self.progress_at_ms.get_or_insert(self.now_ms);
            }
        }
        self.serve_reads(index)?;
        let node = &mut self.nodes[index];
        if node.state.applied.index.0 >= node.disk.snapshot.last.index.0 + node.compact_every {
            let meta = SnapshotMeta {
                last: node.state.applied,
                membership: node.applied_membership.clone(),
            };
            let data = node.state.snapshot();
            self.checker.on_snapshot_taken(meta.last, &data);
            node.disk.save_snapshot(meta.clone(), data.clone());
            node.live.compact(meta.last);
            follow_ups.push(Input::Compacted { meta, data });
        }
        Ok(())
    }

    /// Serves the reads whose index node `index` has applied.
    fn serve_reads(&mut self, index: usize) -> Result<(), Violation> {
        let node = &mut self.nodes[index];
        let applied = node.state.applied.index;
        let mut result = Ok(());
        node.reads_waiting.retain(|(read, read_index)| {
            if *read_index > applied {
                return true;
            }
            if let Some(committed_at_start) = self.client.reads.remove(read) {
                self.stats.reads_served += 1;
                if result.is_ok() {
                    result = Checker::on_read(node.id, *read_index, committed_at_start);
                }
            }
            false
        });
        result
    }

    /// Each node's state as its core sees it, for a failure's message.
    fn describe_nodes(&self) -> String {
        let describe = |node: &SimNode| {
            match &node.core {
            Some(core) => format!(
                "{} {:?} term {} leader {:?} commit {} last {} applied {} voters {:?} learners {:?}",
                node.id,
                core.role(),
                core.term(),
                core.leader(),
                core.commit(),
                core.last(),
                node.state.applied,
                core.membership().voters,
                core.membership().learners
            ),
            None => format!("{} down", node.id),
        }
        };
        self.nodes
            .iter()
            .map(describe)
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// At the end: a write proposed after the heal committed, and every member
    /// (of the membership the most advanced node holds) caught up.
    fn check_progress(&mut self) -> Result<(), Violation> {
        if self.progress_at_ms.is_none() {
            return Err(Violation {
                checker: "progress",
                detail: format!(
                    "no write proposed after the heal committed within {PROGRESS_BOUND_MS} ms; nodes: {}",
                    self.describe_nodes()
                ),
            });
        }
        let most_advanced = self
            .nodes
            .iter()
            .max_by_key(|node| node.commit())
            .expect("nodes");
        let membership = most_advanced.applied_membership.clone();
        for node in &self.nodes {
            let member =
                membership.voters.contains(&node.id) || membership.learners.contains(&node.id);
            if member && node.commit() < self.checker.max_committed {
                return Err(Violation {
                    checker: "progress",
                    detail: format!(
                        "{} applied only through {} of {} by the end; nodes: {}",
                        node.id,
                        node.commit(),
                        self.checker.max_committed,
                        self.describe_nodes()
                    ),
                });
            }
        }
        Ok(())
    }
}
