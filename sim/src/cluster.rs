//! A cluster run (`keel-sim --nodes N`, N of 3 or more): N madsim hosts, each
//! running the real node (as [`crate::run`] runs one) as a member of one
//! cluster whose every shard has all N as voters, over the simulated peer
//! network ([`crate::peer_net`]); clients that follow `-MOVED` and
//! `-TRYAGAIN`; and a seeded [`FaultSchedule`] of partitions (random halves,
//! an isolated node, a bridge, one way), pauses, kills with power loss, and
//! per-message loss, duplication and reordering, plus extra power losses of
//! random nodes, and in-flight disk faults on one node (a minority).
//!
//! The run's phases: **faults** for [`FAULT_MS`]; then, all healed, a write
//! to every shard must be acknowledged within [`PROGRESS_MS_MAX`]
//! (**progress**); the clients finish their operations; a read of every key
//! (**final**); then, quiet, every node's copy of each shard must stand at
//! one index with one state ([`Replicas::converged`]).
//!
//! Checked on every seed, besides the history's linearizability and each
//! host's [`Ledger`] at its recoveries: one operation per (shard, index)
//! across nodes and one leader per (shard, term) ([`crate::replicas`]); the
//! progress and convergence above; and failovers are timed (a leader's loss
//! to the next reply of a later term's leader on its shard) for the summary.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use keel_engine::cluster_config::{self, ClusterConfig, CLUSTER_NAME_DEFAULT};
use keel_engine::keyspace::Keyspace;
use keel_engine::node::core::shard_of_slot;
use keel_engine::node::io::{PeerId, ShardObserver};
use keel_engine::operation::Operation;
use keel_engine::slot::key_slot;
use keel_engine::topology::{self, MemberId, NodeName, Topology};
use keel_replication::{EntryId, Envelope, HardState};
use madsim::rand::{thread_rng, Rng};
use madsim::runtime::Handle;
use madsim::task::NodeId;
use madsim::time::sleep;

use crate::client::{connect, declare_cluster_aware, request, ClientError, ClientStream};
use crate::disk::{DamageRates, FaultMode, FaultRates};
use crate::fault_schedule::{Fault, FaultSchedule, ScheduleConfig};
use crate::history::Operation as Recorded;
use crate::io::{host, Host, DISK_LATENCY, SLOW_DISK_LATENCY};
use crate::linearizability::Verdict;
use crate::models::redis::{RedisInput, RedisOutput};
use crate::network_faults::Partition;
use crate::peer_net::{self, PeerNetwork, PEER_PORT_BASE};
use crate::raft_rules::RaftRules;
use crate::replicas::{Loss, Replicas};
use crate::run::{
    liveness_failures, now_ms, run_keel, trace, unix_us, Boots, Failure, KeelSpec, RunConfig,
    Summary, WallTime, Workload, CLIENTS, CORES_MAX, CORES_MIN, CRASHES_MIN, IN_FLIGHT_RATES,
    REPLY_TIMEOUT_MS, SHARDS,
};
use crate::workload::{all_keys, ClientWorkload, ReplyError};

/// The port every member serves clients on (each host has its own IP).
pub const CLIENT_PORT: u16 = 7379;
/// The cluster's id, which names its members ([`NodeName::of_ids`]).
const CLUSTER_ID: u128 = 0x6b65_656c;
/// How long the faults last, in simulated ms; the schedule's episodes and
/// the extra power losses fall within it.
pub const FAULT_MS: u64 = 3_000;
/// Extra power losses of random nodes in the fault phase, besides the
/// schedule's kills: from [`CRASHES_MIN`] to this.
const EXTRA_CRASHES_MAX: u64 = 5;
/// Time a node stays down after an extra power loss, drawn from this range.
const DOWN_MS_MIN: u64 = 5;
const DOWN_MS_MAX: u64 = 500;
/// A pause of a shard's leader in one seed of this many, besides the
/// schedule's (in every seed, the kills it overlaps would leave no majority
/// often enough to slow most failovers).
const LEADER_PAUSE_ONE_IN: u32 = 2;
/// That pause lasts long enough for the others to elect a new leader, so
/// that the old one wakes deposed with its clients' requests queued (a
/// stop-the-world pause, a VM's steal, SIGSTOP): from this range (ms).
const LEADER_PAUSE_MS_MIN: u64 = 1_000;
const LEADER_PAUSE_MS_MAX: u64 = 1_800;
/// The leader pause begins no earlier than this (ms into the faults): the
/// first elections take about half a second.
const LEADER_PAUSE_AT_MS_MIN: u64 = 800;
/// While a leader is paused, a client with a stale slot map sends it a GET
/// of its shard this often, each on a connection of its own, so that the
/// leader finds reads queued when it wakes deposed; from this far into the
/// pause on, when the others have likely elected a new leader that may
/// have acknowledged newer writes (earlier reads would only add to the
/// history's concurrency).
const STALE_READ_INTERVAL_MS: u64 = 200;
const STALE_READ_AFTER_MS: u64 = 900;
/// Those GETs wait this long for a reply: the pause, and some.
const STALE_READ_TIMEOUT_MS: u64 = LEADER_PAUSE_MS_MAX + 1_000;
/// With every fault healed, each shard must acknowledge a write within this
/// (simulated ms): the progress check.
pub const PROGRESS_MS_MAX: u64 = 10_000;
/// Ops invoked this long after the faults stop must all complete: the time
/// to elect a leader, plus a client's wait on a request sent before.
pub const CLUSTER_LIVENESS_GRACE_MS: u64 = PROGRESS_MS_MAX;
/// How long the copies may take to converge once quiet (simulated ms).
const CONVERGE_MS_MAX: u64 = 5_000;
/// How often the convergence and progress checks look, in ms.
const POLL_MS: u64 = 20;
/// Attempts of one command, following `-MOVED` and `-TRYAGAIN`, before the
/// client gives up on it.
pub const ROUTE_ATTEMPTS_MAX: u64 = 20;
/// How long a client waits after `-TRYAGAIN` (an election) or a refused
/// connection before the next attempt.
const TRYAGAIN_DELAY_MS: u64 = 25;
/// One episode in this many strikes a shard's leader rather than the node
/// the schedule drew (see [`Supervisor::aim`]).
const LEADER_AIM_ONE_IN: u32 = 2;
/// Think time between a client's operations, at most.
const THINK_MS_MAX: u64 = 10;
/// Attempts of the final read of each key.
const FINAL_READ_ATTEMPTS: u64 = 10;
/// How often the supervisor looks at the nodes, at most (µs).
const SUPERVISOR_TICK_US_MAX: u64 = 3_000;
/// Restarts of a node that stopped on its own, per node and run.
const NODE_RESTARTS_MAX: u64 = crate::run::NODE_RESTARTS_MAX;

thread_local! {
    /// The checkers of the thread's cluster run (one run per thread).
    static CHECKERS: RefCell<Option<Checkers>> = const { RefCell::new(None) };
}

/// What a cluster run's members report to.
#[derive(Clone, Debug, Default)]
struct Checkers {
    replicas: Rc<Replicas>,
    rules: Rc<RaftRules>,
}

fn checkers() -> Checkers {
    CHECKERS.with(|current| {
        current
            .borrow()
            .clone()
            .expect("a cluster run installs its checkers before its nodes start")
    })
}

fn replicas() -> Rc<Replicas> {
    checkers().replicas
}

/// A node's place in the cluster: its settings (as `--peers` would give
/// them) and every member as the topology names them.
#[derive(Clone, Debug)]
pub(crate) struct MemberSpec {
    pub(crate) cluster: ClusterConfig,
    members: Vec<topology::Member>,
}

impl MemberSpec {
    /// The observer of this member's shards: the cluster's checker.
    pub(crate) fn observer(&self) -> Rc<dyn ShardObserver> {
        let Checkers { replicas, rules } = checkers();
        Rc::new(MemberObserver {
            node: self.cluster.id,
            replicas,
            rules,
        })
    }

    /// Every member a voter of every shard, no leader yet.
    pub(crate) fn topology(&self) -> Topology {
        Topology::cluster(MemberId(self.cluster.id), self.members.clone(), SHARDS)
    }
}

/// One member's shard observer: reports to the cluster's [`Replicas`].
/// Not to its host's [`Ledger`](crate::ledger::Ledger): a member's recovery
/// is reported once its restored entries committed, which may be after a
/// new leader replaced its uncommitted tail, and a leader may acknowledge
/// entries a majority holds before its own copy is durable. What a cluster
/// must not lose is checked on the whole history (its final reads) and by
/// [`Replicas::holds`].
#[derive(Debug)]
struct MemberObserver {
    node: PeerId,
    replicas: Rc<Replicas>,
    rules: Rc<RaftRules>,
}

impl ShardObserver for MemberObserver {
    fn recovered(&self, shard: u32, last_index: u64, keyspace: &Keyspace) {
        self.replicas.holds(self.node, shard, last_index, keyspace);
    }

    fn logged(&self, _shard: u32, _index: u64, _op: &Operation) {}

    fn applied(&self, shard: u32, index: u64, op: &Operation) {
        self.replicas.applied(self.node, shard, index, op);
    }

    fn acknowledged(&self, shard: u32, _index: u64) {
        self.replicas.acknowledged(self.node, shard, unix_us());
    }

    fn installed(&self, shard: u32, last_index: u64, keyspace: &Keyspace) {
        trace(format_args!(
            "node {} installed a snapshot of shard {shard} through {last_index}",
            self.node
        ));
        self.replicas.holds(self.node, shard, last_index, keyspace);
    }

    fn elected(&self, shard: u32, term: u64) {
        trace(format_args!(
            "node {} leads shard {shard} in term {term}",
            self.node
        ));
        self.replicas.elected(self.node, shard, term, unix_us());
        self.rules.elected(shard, term);
    }

    fn restarted_with(&self, shard: u32, hard_state: HardState) {
        self.rules.restarted_with(self.node, shard, hard_state);
    }

    fn hard_state_durable(&self, shard: u32, hard_state: HardState) {
        self.rules.hard_state_durable(self.node, shard, hard_state);
    }

    fn sent(&self, shard: u32, envelope: &Envelope) {
        self.rules.sent(self.node, shard, envelope);
    }

    fn leader_committed(&self, shard: u32, term: u64, through: EntryId) {
        self.rules.leader_committed(self.node, shard, term, through);
    }

    fn read_asked(&self, shard: u32, read: u64, term: u64) {
        self.rules.read_asked(self.node, shard, read, term);
    }

    fn read_confirmed(&self, shard: u32, read: u64) {
        self.rules.read_confirmed(self.node, shard, read);
    }
}

fn member_ip(id: PeerId) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        10,
        0,
        0,
        u8::try_from(id).expect("few members"),
    ))
}

fn client_address(id: PeerId) -> String {
    SocketAddr::new(member_ip(id), CLIENT_PORT).to_string()
}

/// A client of the cluster: sends each command to the node it last heard
/// from, follows `-MOVED` to the node named and retries `-TRYAGAIN` after a
/// pause, up to [`ROUTE_ATTEMPTS_MAX`] attempts.
struct Router {
    addresses: Vec<String>,
    /// Whether its connections declare themselves cluster-aware (READWRITE)
    /// and so are redirected with `-MOVED`, or are plain and have their
    /// commands forwarded to the leader.
    cluster_aware: bool,
    target: String,
    connections: BTreeMap<String, ClientStream>,
}

impl Router {
    fn new(addresses: Vec<String>, first: usize, cluster_aware: bool) -> Router {
        let target = addresses[first % addresses.len()].clone();
        Router {
            addresses,
            cluster_aware,
            target,
            connections: BTreeMap::new(),
        }
    }

    /// Moves on to another node, drawn at random.
    fn next_node(&mut self) {
        let pick = thread_rng().gen_range(0..self.addresses.len());
        self.target = self.addresses[pick].clone();
    }

    async fn connect(address: &str, cluster_aware: bool) -> Result<ClientStream, ClientError> {
        let mut stream = connect(address, REPLY_TIMEOUT_MS).await?;
        if cluster_aware {
            declare_cluster_aware(&mut stream, REPLY_TIMEOUT_MS).await?;
        }
        Ok(stream)
    }

    /// Sends `input` and follows redirections until a node answers. An
    /// error after which the command may have taken effect (a timeout, a
    /// broken connection, a forward left unanswered) leaves its outcome
    /// unknown, and is returned at once.
    async fn request(&mut self, input: &RedisInput) -> Result<RedisOutput, ClientError> {
        let mut last_error = None;
        for _ in 0..ROUTE_ATTEMPTS_MAX {
            let address = self.target.clone();
            let stream = match self.connections.entry(address.clone()) {
                std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::btree_map::Entry::Vacant(entry) => {
                    match Router::connect(&address, self.cluster_aware).await {
                        Ok(stream) => entry.insert(stream),
                        Err(error) => {
                            // Nothing was sent: another node may answer.
                            last_error = Some(error);
                            self.next_node();
                            sleep(Duration::from_millis(TRYAGAIN_DELAY_MS)).await;
                            continue;
                        }
                    }
                }
            };
            match request(stream, input, REPLY_TIMEOUT_MS).await {
                Err(ClientError::Reply(ReplyError::Error(text))) => {
                    trace(format_args!("redirected: {text}"));
                    if let Some(moved_to) = moved_address(&text) {
                        // One connection at a time: one left idle could die
                        // with its node unseen and fail a later command.
                        self.connections.remove(&address);
                        self.target = moved_to;
                    } else if text.starts_with("TRYAGAIN") {
                        sleep(Duration::from_millis(TRYAGAIN_DELAY_MS)).await;
                    } else {
                        return Err(ClientError::Reply(ReplyError::Error(text)));
                    }
                    last_error = Some(ClientError::Reply(ReplyError::Error(text)));
                }
                Err(error) => {
                    self.connections.remove(&address);
                    self.next_node();
                    return Err(error);
                }
                Ok(output) => return Ok(output),
            }
        }
        Err(last_error.expect("an attempt was made"))
    }
}

/// The address a `-MOVED <slot> <host:port>` error names.
fn moved_address(text: &str) -> Option<String> {
    let mut words = text.strip_prefix("MOVED ")?.split(' ');
    let _slot = words.next()?;
    words.next().map(str::to_string)
}

/// One client: random commands until the budget is spent.
async fn run_client(
    client: u64,
    seed: u64,
    ops: u64,
    workload: Arc<Workload>,
    addresses: Vec<String>,
) {
    let mut commands = ClientWorkload::new(client, seed);
    // Half the clients speak Redis Cluster (and follow -MOVED), half are
    // plain (and have their commands forwarded).
    let mut router = Router::new(addresses, client as usize, client % 2 == 1);
    while workload.take_ticket(ops) {
        let input = commands.next_input(unix_us() / 1000);
        workload
            .perform_with(client, &input, router.request(&input))
            .await;
        let think = commands
            .probe_wait_ms(unix_us() / 1000)
            .unwrap_or_else(|| thread_rng().gen_range(0..=THINK_MS_MAX));
        sleep(Duration::from_millis(think)).await;
    }
    workload.clients_done.fetch_add(1, Ordering::SeqCst);
}

/// What changes the supervisor makes, in time order.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    /// One of the schedule's faults (a kill is a power loss).
    Scheduled(Fault),
    /// A power loss of the node, besides the schedule's.
    PowerLoss(PeerId),
    Restart(PeerId),
    /// The pause of a random shard's latest leader, and its end.
    LeaderPause {
        pause_ms: u64,
    },
    LeaderResume,
}

#[derive(Debug, Default)]
struct Counts {
    crashes: u64,
    partitions: u64,
    node_stops: u64,
    sectors_lost: u64,
    names_reverted: u64,
}

/// Applies the faults, restarts nodes that stop on their own, and tells the
/// checker when a node is lost to the cluster (for the failover times).
struct Supervisor {
    handle: Handle,
    hosts: BTreeMap<PeerId, NodeId>,
    boots: BTreeMap<PeerId, Arc<Boots>>,
    network: Rc<PeerNetwork>,
    /// Why each node is down: the kills in force on it (a power loss of the
    /// schedule's and an extra one may overlap).
    kills: BTreeMap<PeerId, u32>,
    paused: BTreeSet<PeerId>,
    workload: Arc<Workload>,
    /// The leader [`Step::LeaderPause`] paused, until its resume.
    leader_paused: Option<PeerId>,
    partition: Partition,
    /// Nodes cut off from a majority, down or paused: lost to the cluster.
    lost: BTreeSet<PeerId>,
    /// The leaders episodes were aimed at, by the node drawn for them.
    aimed: BTreeMap<PeerId, PeerId>,
    /// Nodes that stopped on their own too often, left down.
    left_down: BTreeSet<PeerId>,
    restarts: BTreeMap<PeerId, u64>,
    counts: Counts,
    failures: Vec<Failure>,
}

impl Supervisor {
    fn members(&self) -> Vec<PeerId> {
        self.hosts.keys().copied().collect()
    }

    /// The seeded faults (module doc); returns when they stopped (virtual
    /// ms), with every node up and the network whole.
    async fn fault_phase(&mut self) -> u64 {
        let mut rng = thread_rng();
        let members = self.members();
        let schedule = FaultSchedule::draw(
            rng.gen(),
            &ScheduleConfig::every_fault(members.clone(), FAULT_MS),
        );
        let mut steps: Vec<(u64, Step)> = schedule
            .faults()
            .iter()
            .map(|timed| (timed.at_ms, Step::Scheduled(timed.fault.clone())))
            .collect();
        for _ in 0..rng.gen_range(CRASHES_MIN..=EXTRA_CRASHES_MAX) {
            let node = members[rng.gen_range(0..members.len())];
            let at_ms = rng.gen_range(0..FAULT_MS);
            let down_ms = rng.gen_range(DOWN_MS_MIN..=DOWN_MS_MAX);
            steps.push((at_ms, Step::PowerLoss(node)));
            steps.push(((at_ms + down_ms).min(FAULT_MS), Step::Restart(node)));
        }
        let pause_ms = rng.gen_range(LEADER_PAUSE_MS_MIN..=LEADER_PAUSE_MS_MAX);
        let at_ms = rng.gen_range(LEADER_PAUSE_AT_MS_MIN..FAULT_MS - pause_ms);
        if rng.gen_range(0..LEADER_PAUSE_ONE_IN) == 0 {
            steps.push((at_ms, Step::LeaderPause { pause_ms }));
            steps.push((at_ms + pause_ms, Step::LeaderResume));
        }
        // Stable: a node's restart never comes before its power loss.
        steps.sort_by_key(|(at_ms, _)| *at_ms);
        // In-flight disk faults on one node only: a minority.
        let faulty = members[rng.gen_range(0..members.len())];
        let disk = host(self.hosts[&faulty]).disk;
        disk.set_rates(FaultRates {
            in_flight: IN_FLIGHT_RATES,
            damage: DamageRates::default(),
        });
        // A slow disk on one node, maybe the same: a minority too.
        let slow = members[rng.gen_range(0..members.len())];
        let slow_disk = host(self.hosts[&slow]).disk;
        slow_disk.set_latency(SLOW_DISK_LATENCY);
        trace(format_args!(
            "disk faults on node {faulty}, a slow disk on node {slow}; {} steps",
            steps.len()
        ));
        let start_ms = now_ms();
        for (at_ms, step) in steps {
            while now_ms() < start_ms + at_ms {
                self.tick().await;
            }
            self.apply(step).await;
        }
        disk.set_rates(FaultRates::default());
        slow_disk.set_latency(DISK_LATENCY);
        self.network.heal();
        self.network
            .set_link_faults(crate::network_faults::LinkFaults::NONE);
        self.partition = Partition::default();
        for node in members {
            if self.paused.remove(&node) {
                self.handle.resume(self.hosts[&node]);
            }
            if self.kills.remove(&node).is_some() && !self.left_down.contains(&node) {
                self.handle.restart(self.hosts[&node]);
            }
        }
        self.note_losses();
        trace("faults stop");
        now_ms()
    }

    /// A leader to aim an episode at instead of the node drawn, one time in
    /// [`LEADER_AIM_ONE_IN`]: the latest leader of a random shard, if one
    /// was elected and it is not `drawn`.
    fn leader_to_aim_at(&self, drawn: PeerId) -> Option<PeerId> {
        let mut rng = thread_rng();
        if rng.gen_range(0..LEADER_AIM_ONE_IN) != 0 {
            return None;
        }
        let shard = rng.gen_range(0..SHARDS);
        replicas().leader(shard).filter(|&leader| leader != drawn)
    }

    /// An episode's first fault strikes `drawn`, or a leader instead (its
    /// end then follows it there).
    fn aim(&mut self, drawn: PeerId) -> PeerId {
        match self.leader_to_aim_at(drawn) {
            Some(leader) => {
                self.aimed.insert(drawn, leader);
                leader
            }
            None => drawn,
        }
    }

    /// The node an episode's end applies to: the one its start struck.
    fn aimed_at(&mut self, drawn: PeerId) -> PeerId {
        self.aimed.remove(&drawn).unwrap_or(drawn)
    }

    /// `partition`, aimed at a leader: a node it leaves without a majority
    /// trades places with the leader (the isolated or minority leader).
    fn aim_partition(&mut self, partition: Partition) -> Partition {
        let members = self.members();
        let cut_off = members
            .iter()
            .copied()
            .find(|&node| !reaches_majority(&members, &partition, node, |_| true));
        let Some(cut_off) = cut_off else {
            return partition;
        };
        match self.leader_to_aim_at(cut_off) {
            Some(leader) => partition.swapped(cut_off, leader),
            None => partition,
        }
    }

    async fn apply(&mut self, step: Step) {
        trace(format_args!("step {step:?}"));
        match step {
            Step::Scheduled(Fault::Kill(drawn)) => {
                let node = self.aim(drawn);
                self.kill(node);
            }
            Step::PowerLoss(node) => self.kill(node),
            Step::Scheduled(Fault::Restart(drawn)) => {
                let node = self.aimed_at(drawn);
                self.restart(node);
            }
            Step::Restart(node) => self.restart(node),
            Step::LeaderPause { pause_ms } => {
                let shard = thread_rng().gen_range(0..SHARDS);
                if let Some(leader) = replicas().leader(shard) {
                    if self.paused.insert(leader) {
                        self.handle.pause(self.hosts[&leader]);
                        self.leader_paused = Some(leader);
                        self.start_stale_reads(leader, shard, pause_ms);
                    }
                }
            }
            Step::LeaderResume => {
                // Unless the schedule resumed it meanwhile.
                if let Some(node) = self.leader_paused.take() {
                    if self.paused.remove(&node) {
                        self.handle.resume(self.hosts[&node]);
                    }
                }
            }
            Step::Scheduled(Fault::Pause(drawn)) => {
                let node = self.aim(drawn);
                if self.paused.insert(node) {
                    self.handle.pause(self.hosts[&node]);
                }
            }
            Step::Scheduled(Fault::Resume(drawn)) => {
                let node = self.aimed_at(drawn);
                if self.paused.remove(&node) {
                    self.handle.resume(self.hosts[&node]);
                }
            }
            Step::Scheduled(Fault::Partition(drawn)) => {
                let partition = self.aim_partition(drawn);
                trace(format_args!("partition {partition:?}"));
                self.counts.partitions += 1;
                self.partition = partition.clone();
                self.network.partition(partition);
            }
            Step::Scheduled(Fault::Heal) => {
                self.partition = Partition::default();
                self.network.heal();
            }
            Step::Scheduled(Fault::Links(links)) => self.network.set_link_faults(links),
        }
        self.note_losses();
    }

    /// A client whose slot map still names `leader` for `shard` sends it a
    /// GET of one of the shard's keys every [`STALE_READ_INTERVAL_MS`]
    /// from [`STALE_READ_AFTER_MS`] to `pause_ms` into the pause, each on a connection of its own and recorded in the
    /// history as a client of its own.
    fn start_stale_reads(&mut self, leader: PeerId, shard: u32, pause_ms: u64) {
        let keys: Vec<Vec<u8>> = all_keys()
            .into_iter()
            .filter(|key| shard_of_slot(key_slot(key), SHARDS) == shard)
            .collect();
        let address = client_address(leader);
        let workload = Arc::clone(&self.workload);
        let first_client = CLIENTS + 1;
        self.handle
            .create_node()
            .name("stale-reader")
            .ip([10, 0, 2, 3].into())
            .init(move || {
                let (keys, address, workload) =
                    (keys.clone(), address.clone(), Arc::clone(&workload));
                async move {
                    sleep(Duration::from_millis(STALE_READ_AFTER_MS)).await;
                    let reads =
                        pause_ms.saturating_sub(STALE_READ_AFTER_MS) / STALE_READ_INTERVAL_MS;
                    for (client, read) in (first_client..).zip(0..reads) {
                        let key = keys[read as usize % keys.len()].clone();
                        let (address, workload) = (address.clone(), Arc::clone(&workload));
                        madsim::task::spawn_local(async move {
                            let input = RedisInput::Get { key };
                            let exchange = async {
                                let mut stream = connect(&address, STALE_READ_TIMEOUT_MS).await?;
                                request(&mut stream, &input, STALE_READ_TIMEOUT_MS).await
                            };
                            workload.perform_with(client, &input, exchange).await;
                        });
                        sleep(Duration::from_millis(STALE_READ_INTERVAL_MS)).await;
                    }
                }
            })
            .build();
    }

    /// A power loss: the node's tasks die and its disk loses what it had
    /// not synced. It stays down until every kill in force on it ends.
    fn kill(&mut self, node: PeerId) {
        let kills = self.kills.entry(node).or_default();
        *kills += 1;
        if *kills > 1 || self.left_down.contains(&node) {
            return;
        }
        let id = self.hosts[&node];
        self.handle.kill(id);
        let report = host(id).disk.crash(thread_rng().gen());
        trace(format_args!("power loss of node {node}: {report:?}"));
        self.counts.crashes += 1;
        self.counts.sectors_lost += report.sectors.dropped_sectors + report.sectors.torn_sectors;
        self.counts.names_reverted += report.names_reverted;
    }

    fn restart(&mut self, node: PeerId) {
        let Some(kills) = self.kills.get_mut(&node) else {
            return;
        };
        *kills -= 1;
        if *kills == 0 {
            self.kills.remove(&node);
            if !self.left_down.contains(&node) {
                self.handle.restart(self.hosts[&node]);
                trace(format_args!("restart of node {node}"));
            }
        }
    }

    /// Tells the checker of each node newly lost to the cluster: down,
    /// paused, or cut off from a majority of the nodes up.
    fn note_losses(&mut self) {
        let members = self.members();
        for &node in &members {
            let up = |member: PeerId| {
                !self.kills.contains_key(&member)
                    && !self.paused.contains(&member)
                    && !self.left_down.contains(&member)
            };
            if reaches_majority(&members, &self.partition, node, up) {
                self.lost.remove(&node);
            } else if self.lost.insert(node) {
                let cause = if self.kills.contains_key(&node) || self.left_down.contains(&node) {
                    Loss::Down
                } else if self.paused.contains(&node) {
                    Loss::Paused
                } else {
                    Loss::CutOff
                };
                replicas().leader_lost(node, cause, unix_us());
            }
        }
    }

    /// Waits a little, and restarts a node that stopped on its own, up to
    /// [`NODE_RESTARTS_MAX`] times each.
    async fn tick(&mut self) {
        let wait = thread_rng().gen_range(1..=SUPERVISOR_TICK_US_MAX);
        sleep(Duration::from_micros(wait)).await;
        for node in self.members() {
            let boots = &self.boots[&node];
            if !boots.stopped.swap(false, Ordering::SeqCst) || self.left_down.contains(&node) {
                continue;
            }
            let restarts = self.restarts.entry(node).or_default();
            if *restarts == NODE_RESTARTS_MAX {
                self.handle.kill(self.hosts[&node]);
                self.left_down.insert(node);
                trace(format_args!("node {node} left down"));
                self.failures.push(Failure::RestartsExhausted {
                    restarts: *restarts,
                    boot: boots.count.load(Ordering::SeqCst),
                    reason: format!("node {node} kept stopping"),
                });
                continue;
            }
            *restarts += 1;
            self.counts.node_stops += 1;
            self.kill(node);
            self.restart(node);
        }
    }

    /// Once healed, a write to every shard: each must be acknowledged within
    /// [`PROGRESS_MS_MAX`]. Its keys are the prober's own, outside the
    /// workload's, so the history does not hold them.
    async fn progress(&mut self, addresses: Vec<String>) {
        let prober = self
            .handle
            .create_node()
            .name("prober")
            .ip([10, 0, 2, 2].into())
            .build();
        let waited = prober
            .spawn(async move {
                let mut router = Router::new(addresses, 0, false);
                let mut waited_ms = Vec::new();
                for shard in 0..SHARDS {
                    let input = RedisInput::Set {
                        key: probe_key(shard),
                        value: b"probe".to_vec(),
                    };
                    let started_ms = now_ms();
                    while now_ms() < started_ms + PROGRESS_MS_MAX {
                        if matches!(router.request(&input).await, Ok(RedisOutput::Ok)) {
                            break;
                        }
                        sleep(Duration::from_millis(POLL_MS)).await;
                    }
                    waited_ms.push(now_ms() - started_ms);
                }
                waited_ms
            })
            .await
            .expect("the prober runs");
        for (shard, waited_ms) in (0..SHARDS).zip(waited) {
            trace(format_args!("progress: shard {shard} in {waited_ms} ms"));
            if waited_ms >= PROGRESS_MS_MAX {
                self.failures.push(Failure::NoProgress { shard, waited_ms });
            }
        }
    }

    /// Waits until the copies of every shard on the nodes left up converge,
    /// for at most [`CONVERGE_MS_MAX`]; a failure if they do not.
    async fn converge(&mut self) {
        let live: Vec<PeerId> = self
            .members()
            .into_iter()
            .filter(|node| !self.left_down.contains(node))
            .collect();
        let deadline_ms = now_ms() + CONVERGE_MS_MAX;
        loop {
            match replicas().converged(SHARDS, &live) {
                Ok(()) => return,
                Err(disagreement) if now_ms() >= deadline_ms => {
                    self.failures.push(Failure::NotConverged(disagreement));
                    return;
                }
                Err(_) => sleep(Duration::from_millis(POLL_MS)).await,
            }
        }
    }
}

/// Whether `node`, if `up`, reaches a majority of `members` (itself
/// included) that are `up`, both ways across `partition`.
fn reaches_majority(
    members: &[PeerId],
    partition: &Partition,
    node: PeerId,
    up: impl Fn(PeerId) -> bool,
) -> bool {
    let linked = |member: PeerId| {
        member == node || (!partition.is_cut(node, member) && !partition.is_cut(member, node))
    };
    let reached = members
        .iter()
        .filter(|&&member| up(member) && linked(member))
        .count();
    up(node) && reached > members.len() / 2
}

/// A key of shard `shard` that the workload never uses.
fn probe_key(shard: u32) -> Vec<u8> {
    (0u32..)
        .map(|n| format!("{{probe{n}}}").into_bytes())
        .find(|key| shard_of_slot(key_slot(key), SHARDS) == shard)
        .expect("some key maps to every shard")
}

/// Reads every key once, as client [`CLIENTS`] (a client of its own).
async fn read_every_key(workload: Arc<Workload>, addresses: Vec<String>) -> Vec<Failure> {
    let client = CLIENTS;
    let mut router = Router::new(addresses, 0, false);
    let mut failures = Vec::new();
    for key in all_keys() {
        let input = RedisInput::Get { key: key.clone() };
        let mut answered = false;
        for _ in 0..FINAL_READ_ATTEMPTS {
            if workload
                .perform_with(client, &input, router.request(&input))
                .await
            {
                answered = true;
                break;
            }
        }
        if !answered {
            failures.push(Failure::FinalRead {
                key: String::from_utf8_lossy(&key).into_owned(),
                error: "no answer".into(),
            });
        }
    }
    failures
}

/// Runs a cluster simulation; returns what it did and the history to check.
pub(crate) async fn simulate(
    config: RunConfig,
) -> (Summary, Vec<Recorded<RedisInput, RedisOutput>>) {
    assert!(config.nodes >= 2, "a cluster has two nodes or more");
    let handle = Handle::current();
    let mut rng = thread_rng();
    let cores = config
        .cores
        .unwrap_or_else(|| rng.gen_range(CORES_MIN..=CORES_MAX));
    let ids: Vec<PeerId> = (1..=config.nodes as u64).collect();
    let ips: Vec<(PeerId, IpAddr)> = ids.iter().map(|&id| (id, member_ip(id))).collect();
    let network = peer_net::install(&ips, rng.gen());
    CHECKERS.with(|current| *current.borrow_mut() = Some(Checkers::default()));
    let peers: Vec<cluster_config::Member> = ids
        .iter()
        .map(|&id| cluster_config::Member {
            id,
            host: member_ip(id).to_string(),
            port: PEER_PORT_BASE,
        })
        .collect();
    let members: Vec<topology::Member> = ids
        .iter()
        .map(|&id| topology::Member {
            id: MemberId(id),
            name: NodeName::of_ids(CLUSTER_ID, id),
            host: member_ip(id).to_string(),
            client_port: CLIENT_PORT,
            peer_port: PEER_PORT_BASE,
            connected: true,
        })
        .collect();
    let mut hosts = BTreeMap::new();
    let mut boots = BTreeMap::new();
    for &id in &ids {
        let spec = KeelSpec {
            fsync: config.fsync,
            damage: false,
            cores,
            address: SocketAddr::new(member_ip(id), CLIENT_PORT),
            member: Some(MemberSpec {
                cluster: ClusterConfig {
                    id,
                    members: peers.clone(),
                    peer_port: PEER_PORT_BASE,
                    name: CLUSTER_NAME_DEFAULT.into(),
                },
                members: members.clone(),
            }),
        };
        let node_boots = Arc::new(Boots::default());
        let keel_boots = Arc::clone(&node_boots);
        let node = handle
            .create_node()
            .name(format!("keel-{id}"))
            .ip(member_ip(id))
            .init(move || run_keel(spec.clone(), Arc::clone(&keel_boots)))
            .build();
        hosts.insert(id, node.id());
        boots.insert(id, node_boots);
    }
    let addresses: Vec<String> = ids.iter().map(|&id| client_address(id)).collect();
    let workload = Arc::new(Workload::default());
    for client in 0..CLIENTS {
        let (workload, addresses) = (Arc::clone(&workload), addresses.clone());
        let seed = rng.gen();
        handle
            .create_node()
            .name(format!("client-{client}"))
            .ip([10, 0, 1, client as u8 + 1].into())
            .init(move || {
                run_client(
                    client,
                    seed,
                    config.ops,
                    Arc::clone(&workload),
                    addresses.clone(),
                )
            })
            .build();
    }
    let mut supervisor = Supervisor {
        handle: handle.clone(),
        hosts,
        boots,
        network: Rc::clone(&network),
        kills: BTreeMap::new(),
        aimed: BTreeMap::new(),
        paused: BTreeSet::new(),
        leader_paused: None,
        workload: Arc::clone(&workload),
        partition: Partition::default(),
        lost: BTreeSet::new(),
        left_down: BTreeSet::new(),
        restarts: BTreeMap::new(),
        counts: Counts::default(),
        failures: Vec::new(),
    };
    let faults_stopped_ms = supervisor.fault_phase().await;
    workload
        .faults_stopped_ms
        .store(faults_stopped_ms, Ordering::SeqCst);
    supervisor.progress(addresses.clone()).await;
    while workload.clients_done.load(Ordering::SeqCst) < CLIENTS {
        supervisor.tick().await;
    }
    let reader = handle
        .create_node()
        .name("final-reader")
        .ip([10, 0, 2, 1].into())
        .build();
    let reads = reader.spawn(read_every_key(Arc::clone(&workload), addresses));
    let read_failures = reads.await.expect("the final reader runs");
    supervisor.failures.extend(read_failures);
    supervisor.converge().await;
    let Checkers {
        replicas: checker,
        rules,
    } = checkers();
    // Killing the hosts drops their tasks, whose queues hold each other's
    // wakers: left to the runtime's drop, those cycles leaked some 30 MB a
    // seed.
    for node in supervisor.hosts.values() {
        handle.kill(*node);
    }
    let mut failures = std::mem::take(&mut supervisor.failures);
    failures.extend(checker.violations().into_iter().map(Failure::Replicas));
    failures.extend(rules.violations().into_iter().map(Failure::RaftRule));
    let (mut disk_faults, mut hops, mut hop_waits, mut connections_moved) = (0, 0, 0, 0);
    let (mut boots_total, mut snapshots) = (0, 0);
    for (&id, node) in &supervisor.hosts {
        let Host {
            disk, hops: counts, ..
        } = host(*node);
        disk_faults += disk
            .fault_log()
            .iter()
            .inspect(|fault| trace(format_args!("node {id}: {fault}")))
            .filter(|fault| fault.kind.mode() == FaultMode::InFlight)
            .count() as u64;
        hops += counts.sent.get();
        hop_waits += counts.waited.get();
        connections_moved += counts.moved.get();
        let node_boots = &supervisor.boots[&id];
        failures.append(&mut node_boots.failures.lock().expect("boots lock"));
        boots_total += node_boots.count.load(Ordering::SeqCst);
        snapshots += node_boots
            .metrics
            .lock()
            .expect("boots lock")
            .iter()
            .map(|metrics| metrics.snapshots.load(Ordering::SeqCst))
            .sum::<u64>();
    }
    failures.append(&mut workload.stalled.lock().expect("stalled lock"));
    failures.extend(liveness_failures(
        &workload,
        faults_stopped_ms + CLUSTER_LIVENESS_GRACE_MS,
    ));
    let mut failovers_us = checker.failovers_us();
    failovers_us.sort_unstable_by_key(|&(_, us)| us);
    let mut elections_us = checker.elections_us();
    elections_us.sort_unstable();
    let recorder = std::mem::take(&mut *workload.recorder.lock().expect("recorder lock"));
    let history = recorder.finish();
    let timed = workload.timed.lock().expect("timed lock");
    let counts = &supervisor.counts;
    let net = network.counts();
    trace(format_args!("network: {net:?}"));
    let summary = Summary {
        seed: config.seed,
        nodes: config.nodes,
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
        boots: boots_total,
        hops,
        hop_waits,
        connections_moved,
        snapshots,
        entries_applied: checker.entries_applied(),
        recoveries_checked: checker.states_checked(),
        rule_checks: rules.checked(),
        virtual_ms: now_ms(),
        damage_detected: false,
        failovers_us,
        elections_us,
        losses_at_torn_cuts: 0,
        history_cut_us: None,
        verdict: Verdict::Linearizable,
        counterexample: Vec::new(),
        failures,
        trace_hash: 0,
        trace_events: 0,
        check_time: WallTime::default(),
    };
    (summary, history)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moved_names_the_address() {
        assert_eq!(
            moved_address("MOVED 3999 10.0.0.2:7379").as_deref(),
            Some("10.0.0.2:7379")
        );
        assert_eq!(moved_address("TRYAGAIN no leader"), None);
    }

    #[test]
    fn probe_keys_land_on_their_shards() {
        for shard in 0..SHARDS {
            assert_eq!(shard_of_slot(key_slot(&probe_key(shard)), SHARDS), shard);
        }
    }
}
