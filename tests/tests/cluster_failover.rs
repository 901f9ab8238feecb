//! Failover of a real three-node cluster on loopback (`keel serve --id
//! --peers`, every node a voter of every shard), under write load from
//! cluster-aware writers that follow `-MOVED` and retry `-TRYAGAIN`:
//!
//! - a SIGKILLed leader is replaced within `FAILOVER_MS_MAX` (the time from
//!   the kill to the first acknowledged write on its shard, printed), and
//!   every acknowledged write is readable from the survivors and, once the
//!   killed node restarted on its ports and directory and caught up, from it;
//! - a leader paused (SIGSTOP) for 5 s and resumed serves no stale read: a
//!   GET it finds waiting when it resumes, sent after a newer write was
//!   acknowledged by its successor, never returns the older value; and no
//!   acknowledged write is lost;
//! - with two of three nodes killed no write is acknowledged (the survivor
//!   answers `-TRYAGAIN` or `-MOVED`, or holds it unanswered); once one
//!   returns, writes succeed again.
//!
//! A write is acknowledged when it got `+OK`. Every key is written once, with
//! one value, so a retried or duplicated attempt changes nothing. Every wait
//! polls with a deadline; the only fixed wait is the pause itself (the fault,
//! not a guess at readiness).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use keel_tests::cluster::{LocalCluster, ShardSlots};
use keel_tests::cluster_client::{ClusterClient, Failure};
use keel_tests::{wait_a_moment, RawConnection, Resp, REPLY_TIMEOUT_MS};

const MEMBERS: usize = 3;
/// One core per node: three nodes share this machine's CPUs.
const CORES: usize = 1;
/// Two shards, so that the nodes may lead different ones.
const SHARDS: u32 = 2;
/// The bound on a failover: from the leader's death to the first
/// write its shard acknowledges.
const FAILOVER_MS_MAX: u128 = 1_500;
/// How long the first election of every shard may take (three debug
/// processes starting at once on a loaded machine).
const LEADER_DEADLINE: Duration = Duration::from_secs(30);
/// How long one attempt of a writer waits for its reply before it tries
/// another node (a paused node never answers).
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1_000);
/// How long a writer keeps retrying one write before it gives it up.
const WRITE_DEADLINE: Duration = Duration::from_secs(20);
/// How long a member may take to hold every acknowledged write.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(30);
/// How long the load may take to reach a count of acknowledged writes.
const PROGRESS_DEADLINE: Duration = Duration::from_secs(30);
/// Concurrent writers.
const WRITERS: usize = 4;
/// Acknowledged writes per shard before a fault, and after its recovery.
const ACKS_AROUND_FAULT: usize = 50;
/// How long the leader stays paused.
const PAUSE: Duration = Duration::from_secs(5);
/// Write-then-read rounds on the register after the paused leader resumed.
const REGISTER_ROUNDS: usize = 20;
/// How long writes are tried while two of three nodes are down: beyond the
/// longest election timeout (2 s), so the survivor's own step-down and
/// elections fall inside it.
const MINORITY_WINDOW: Duration = Duration::from_secs(3);
/// How long one write is retried while two of three nodes are down.
const MINORITY_WRITE_DEADLINE: Duration = Duration::from_millis(500);
/// GETs sent before their replies are read when reading everything back.
const READ_BACK_PIPELINE: usize = 512;

/// One acknowledged write.
#[derive(Clone, Debug)]
struct Ack {
    shard: usize,
    slot: u16,
    key: String,
    value: String,
    /// When the attempt that got `+OK` was sent.
    sent: Instant,
    /// When its `+OK` came.
    acked: Instant,
}

/// Writers SETting fresh keys on every shard in turn until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    writers: Vec<JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(cluster: &LocalCluster) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let writers = (0..WRITERS)
            .map(|writer| {
                let (stop, acks) = (stop.clone(), acks.clone());
                let (ports, shards) = (cluster.ports(), cluster.shards.clone());
                std::thread::spawn(move || {
                    write_until_stopped(writer, ports, &shards, &stop, &acks)
                })
            })
            .collect();
        Load {
            stop,
            acks,
            writers,
        }
    }

    /// Polls until `found` holds of the acknowledged writes; returns what
    /// it returned.
    fn wait_for<T>(&self, what: &str, found: impl Fn(&[Ack]) -> Option<T>) -> T {
        let started = Instant::now();
        loop {
            if let Some(result) = found(&self.acks.lock().expect("no writer panicked")) {
                return result;
            }
            assert!(
                started.elapsed() < PROGRESS_DEADLINE,
                "{what}: not within {PROGRESS_DEADLINE:?}"
            );
            wait_a_moment();
        }
    }

    /// Waits for `ACKS_AROUND_FAULT` writes on every shard sent after `since`.
    fn wait_for_progress(&self, since: Instant) {
        self.wait_for("progress on every shard", |acks| {
            (0..SHARDS as usize)
                .all(|shard| {
                    acks.iter()
                        .filter(|ack| ack.shard == shard && ack.sent > since)
                        .count()
                        >= ACKS_AROUND_FAULT
                })
                .then_some(())
        });
    }

    /// Stops the writers; returns every acknowledged write. Fails the test
    /// if a write got a reply other than `+OK` and the redirects.
    fn stop(self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        for writer in self.writers {
            let unexpected = writer.join().expect("a writer panicked");
            assert!(unexpected.is_empty(), "unexpected replies: {unexpected:?}");
        }
        Arc::try_unwrap(self.acks)
            .expect("the writers ended")
            .into_inner()
            .expect("no writer panicked")
    }
}

/// One writer: key `{tag}:w<writer>:<n>` gets value `<writer>.<n>`, the
/// shards in turn. Returns the replies that were neither `+OK` nor a
/// redirect.
fn write_until_stopped(
    writer: usize,
    ports: Vec<u16>,
    shards: &[ShardSlots],
    stop: &AtomicBool,
    acks: &Mutex<Vec<Ack>>,
) -> Vec<String> {
    let mut client = ClusterClient::new(ports, ATTEMPT_TIMEOUT);
    let mut unexpected = Vec::new();
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let shard = n % shards.len();
        let slots = &shards[shard];
        let key = format!("{{{}}}:w{writer}:{n}", slots.tag);
        let value = format!("{writer}.{n}");
        let deadline = Instant::now() + WRITE_DEADLINE;
        let set: [&[u8]; 3] = [b"SET", key.as_bytes(), value.as_bytes()];
        match client.command(slots.tag_slot, &set, deadline) {
            Ok(answer) if answer.reply == Resp::Simple("OK".into()) => {
                acks.lock().expect("no writer panicked").push(Ack {
                    shard,
                    slot: slots.tag_slot,
                    key,
                    value,
                    sent: answer.sent,
                    acked: Instant::now(),
                });
            }
            Ok(answer) => unexpected.push(format!("SET {key}: {:?}", answer.reply)),
            // Not acknowledged: it may or may not have been applied.
            Err(_) => {}
        }
    }
    unexpected
}

/// Reads every acknowledged key through the leaders (linearizable reads,
/// following redirects) and asserts its value.
fn assert_readable_through_leaders(cluster: &LocalCluster, acks: &[Ack]) {
    let ports: Vec<u16> = cluster
        .running()
        .into_iter()
        .map(|id| cluster.node(id).port())
        .collect();
    let mut client = ClusterClient::new(ports, ATTEMPT_TIMEOUT);
    for ack in acks {
        let deadline = Instant::now() + WRITE_DEADLINE;
        let get: [&[u8]; 2] = [b"GET", ack.key.as_bytes()];
        let answer = client
            .command(ack.slot, &get, deadline)
            .unwrap_or_else(|failure| panic!("GET {}: no answer: {failure:?}", ack.key));
        assert_eq!(
            answer.reply,
            Resp::Bulk(ack.value.clone().into_bytes()),
            "acknowledged write of {} lost (read from port {})",
            ack.key,
            answer.port
        );
    }
}

/// Polls until member `id`'s own copy (a READONLY connection) holds every
/// acknowledged write.
fn assert_caught_up(cluster: &LocalCluster, id: usize, acks: &[Ack]) {
    let started = Instant::now();
    loop {
        let missing = missing_on(cluster.node(id).port(), acks);
        let Some(first) = missing.first() else {
            return;
        };
        assert!(
            started.elapsed() < CATCH_UP_DEADLINE,
            "member {id} lacks {} of {} acknowledged writes after {CATCH_UP_DEADLINE:?}, e.g. {first}",
            missing.len(),
            acks.len()
        );
        wait_a_moment();
    }
}

/// The acknowledged writes the node at `port` does not hold in its own
/// copy, described; pipelined GETs on a READONLY connection.
fn missing_on(port: u16, acks: &[Ack]) -> Vec<String> {
    let mut raw = RawConnection::connect(port).expect("connect to a running member");
    assert_eq!(
        raw.command(&[b"READONLY"]).expect("READONLY"),
        Resp::Simple("OK".into())
    );
    let mut missing = Vec::new();
    for chunk in acks.chunks(READ_BACK_PIPELINE) {
        let requests: Vec<u8> = chunk
            .iter()
            .flat_map(|ack| keel_tests::encode_command(&[b"GET", ack.key.as_bytes()]))
            .collect();
        raw.send(&requests).expect("send the GETs");
        for ack in chunk {
            let reply = raw.read_reply().expect("a reply to GET");
            if reply != Resp::Bulk(ack.value.clone().into_bytes()) {
                missing.push(format!("{} = {:?}", ack.key, reply));
            }
        }
    }
    missing
}

/// One cluster at a time: three nodes already load this machine's CPUs,
/// and a failover is timed.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Stops the load and asserts that every acknowledged write reads back
/// through the leaders and from every running member's own copy; returns
/// the acknowledged writes.
fn stop_and_read_back(load: Load, cluster: &LocalCluster) -> Vec<Ack> {
    let acks = load.stop();
    eprintln!("{} writes acknowledged", acks.len());
    assert_readable_through_leaders(cluster, &acks);
    for id in cluster.running() {
        assert_caught_up(cluster, id, &acks);
    }
    acks
}

/// Starts the cluster once no other test of this file runs one; the guard
/// is held until the test ends.
fn start_cluster() -> (MutexGuard<'static, ()>, LocalCluster) {
    // A test that failed while holding the lock poisons it; the others
    // still run alone.
    let guard = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    (
        guard,
        LocalCluster::start(MEMBERS, CORES, SHARDS, LEADER_DEADLINE),
    )
}

#[test]
fn a_killed_leader_is_replaced_in_time_and_no_acknowledged_write_is_lost() {
    let (_alone, mut cluster) = start_cluster();
    let load = Load::start(&cluster);
    load.wait_for_progress(Instant::now());
    let leader = cluster.leader_of(0).expect("shard 0 has a leader");
    let killed = Instant::now();
    cluster.node_mut(leader).kill9();
    let failover = load.wait_for("a write acknowledged on shard 0 after the kill", |acks| {
        acks.iter()
            .filter(|ack| ack.shard == 0 && ack.sent > killed)
            .map(|ack| ack.acked.duration_since(killed))
            .min()
    });
    eprintln!(
        "failover of shard 0 after SIGKILL of its leader (member {leader}): {} ms to the first acknowledged write",
        failover.as_millis()
    );
    load.wait_for_progress(killed + failover);
    let acks = stop_and_read_back(load, &cluster);
    cluster.node_mut(leader).restart();
    assert_caught_up(&cluster, leader, &acks);
    assert!(
        failover.as_millis() <= FAILOVER_MS_MAX,
        "shard 0 took {} ms to acknowledge a write after its leader was killed (bound {FAILOVER_MS_MAX} ms)",
        failover.as_millis()
    );
}

/// `SET key value` through `client` until acknowledged.
fn set_acknowledged(
    client: &mut ClusterClient,
    slot: u16,
    key: &str,
    value: &str,
    deadline: Instant,
) {
    let set: [&[u8]; 3] = [b"SET", key.as_bytes(), value.as_bytes()];
    match client.command(slot, &set, deadline) {
        Ok(answer) => assert_eq!(answer.reply, Resp::Simple("OK".into()), "SET {key} {value}"),
        Err(failure) => panic!("SET {key} {value} not acknowledged in time: {failure:?}"),
    }
}

/// A GET's reply from a node that may have lost its leadership: the value
/// last acknowledged, or a redirect, never an older value.
fn assert_not_stale(reply: &Resp, expected: &str, from: &str) {
    let fresh = *reply == Resp::Bulk(expected.as_bytes().to_vec());
    let redirect = matches!(reply, Resp::Error(text) if text.starts_with("MOVED ") || text.starts_with("TRYAGAIN"));
    assert!(
        fresh || redirect,
        "stale read from {from}: {reply:?}, after {expected:?} was acknowledged"
    );
}

#[test]
fn a_paused_leader_serves_no_stale_read_and_no_acknowledged_write_is_lost() {
    let (_alone, cluster) = start_cluster();
    let load = Load::start(&cluster);
    load.wait_for_progress(Instant::now());
    let shard = &cluster.shards[0];
    let register = format!("{{{}}}:register", shard.tag);
    let mut client = ClusterClient::new(cluster.ports(), ATTEMPT_TIMEOUT);
    let deadline = Instant::now() + WRITE_DEADLINE;
    set_acknowledged(&mut client, shard.tag_slot, &register, "before", deadline);
    let leader = cluster.leader_of(0).expect("shard 0 has a leader");
    let mut old_leader = cluster.node(leader).raw();
    assert_eq!(
        old_leader.command(&[b"PING"]).unwrap(),
        Resp::Simple("PONG".into())
    );

    cluster.node(leader).signal(libc::SIGSTOP);
    let paused = Instant::now();
    set_acknowledged(
        &mut client,
        shard.tag_slot,
        &register,
        "after",
        paused + PAUSE,
    );
    eprintln!(
        "shard 0 acknowledged a write {} ms after its leader (member {leader}) was paused \
         (the client first waits up to {ATTEMPT_TIMEOUT:?} on the paused leader)",
        paused.elapsed().as_millis()
    );
    // Waiting in the paused leader's socket: the first thing it reads.
    old_leader
        .send(&keel_tests::encode_command(&[b"GET", register.as_bytes()]))
        .expect("send GET to the paused leader");
    while paused.elapsed() < PAUSE {
        wait_a_moment();
    }
    cluster.node(leader).signal(libc::SIGCONT);
    let reply = old_leader.read_reply().expect("the resumed leader answers");
    assert_not_stale(&reply, "after", "the resumed leader");

    // Linearizable reads after acknowledged writes, through a client and
    // straight from the former leader, while it rejoins. This client never
    // gives up on an attempt: a SET of an older round that timed out and
    // was applied later would look like a stale read.
    let mut client = ClusterClient::new(cluster.ports(), Duration::from_millis(REPLY_TIMEOUT_MS));
    let mut direct = cluster.node(leader).raw();
    for round in 0..REGISTER_ROUNDS {
        let value = format!("round {round}");
        let deadline = Instant::now() + WRITE_DEADLINE;
        set_acknowledged(&mut client, shard.tag_slot, &register, &value, deadline);
        let get: [&[u8]; 2] = [b"GET", register.as_bytes()];
        let answer = client
            .command(shard.tag_slot, &get, deadline)
            .unwrap_or_else(|failure| panic!("GET {register}: {failure:?}"));
        assert_eq!(
            answer.reply,
            Resp::Bulk(value.clone().into_bytes()),
            "stale read through the client"
        );
        let reply = direct.command(&get).expect("the former leader answers");
        assert_not_stale(&reply, &value, "the former leader");
    }

    load.wait_for_progress(paused + PAUSE);
    stop_and_read_back(load, &cluster);
}

/// Keys shown in a failure message.
const KEYS_SHOWN_MAX: usize = 5;

/// How the writes tried without a majority ended.
#[derive(Debug, Default)]
struct MinorityOutcomes {
    acknowledged: Vec<String>,
    /// Final replies other than `+OK` (errors).
    refused: Vec<String>,
    /// No final reply in time; how many of them met a redirect on the way.
    unanswered: usize,
    redirected: usize,
}

impl MinorityOutcomes {
    fn record(&mut self, key: &str, outcome: Result<Resp, Failure>) {
        match outcome {
            Ok(Resp::Simple(ok)) if ok == "OK" => self.acknowledged.push(key.to_owned()),
            Ok(reply) => self.refused.push(format!("{key}: {reply:?}")),
            Err(failure) => {
                self.unanswered += 1;
                self.redirected += usize::from(!failure.redirects.is_empty());
            }
        }
    }
}

#[test]
fn without_a_majority_no_write_is_acknowledged_and_writes_resume_when_one_returns() {
    let (_alone, mut cluster) = start_cluster();
    let leader = cluster.leader_of(0).expect("shard 0 has a leader");
    let other = (1..=MEMBERS)
        .find(|&id| id != leader)
        .expect("three members");
    cluster.node_mut(leader).kill9();
    cluster.node_mut(other).kill9();
    let both_down = Instant::now();

    let mut client = ClusterClient::new(cluster.ports(), ATTEMPT_TIMEOUT);
    let mut outcomes = MinorityOutcomes::default();
    for n in 0.. {
        if both_down.elapsed() >= MINORITY_WINDOW {
            break;
        }
        let shard = &cluster.shards[n % cluster.shards.len()];
        let key = format!("{{{}}}:minority:{n}", shard.tag);
        let set: [&[u8]; 3] = [b"SET", key.as_bytes(), b"x"];
        let deadline = Instant::now() + MINORITY_WRITE_DEADLINE;
        let outcome = client.command(shard.tag_slot, &set, deadline);
        outcomes.record(&key, outcome.map(|answer| answer.reply));
    }
    let survivor = (1..=MEMBERS)
        .find(|&id| id != leader && id != other)
        .expect("a survivor");
    let mut direct = cluster.node(survivor).raw();
    for shard in &cluster.shards {
        let key = format!("{{{}}}:minority:direct", shard.tag);
        let reply = direct
            .command(&[b"SET", key.as_bytes(), b"x"])
            .expect("the survivor answers");
        eprintln!("SET straight to the survivor: {reply:?}");
        assert!(
            matches!(&reply, Resp::Error(text) if text.starts_with("TRYAGAIN") || text.starts_with("MOVED ")),
            "the survivor alone answered SET {key} with {reply:?}"
        );
        outcomes.record(&key, Ok(reply));
    }
    eprintln!(
        "writes with one member of three: {} acknowledged, {} refused, {} unanswered ({} of them redirected)",
        outcomes.acknowledged.len(),
        outcomes.refused.len(),
        outcomes.unanswered,
        outcomes.redirected
    );
    assert!(
        outcomes.acknowledged.is_empty(),
        "{} writes acknowledged without a majority, e.g. {:?}",
        outcomes.acknowledged.len(),
        &outcomes.acknowledged[..outcomes.acknowledged.len().min(KEYS_SHOWN_MAX)]
    );
    assert!(
        !outcomes.refused.is_empty() || outcomes.redirected > 0,
        "no write met an error from the survivor: {outcomes:?}"
    );

    cluster.node_mut(other).restart();
    let mut client = ClusterClient::new(cluster.ports(), Duration::from_millis(REPLY_TIMEOUT_MS));
    for shard in &cluster.shards {
        let key = format!("{{{}}}:majority-again", shard.tag);
        let deadline = Instant::now() + PROGRESS_DEADLINE;
        set_acknowledged(&mut client, shard.tag_slot, &key, "back", deadline);
        let get: [&[u8]; 2] = [b"GET", key.as_bytes()];
        let answer = client
            .command(shard.tag_slot, &get, deadline)
            .unwrap_or_else(|failure| panic!("GET {key}: {failure:?}"));
        assert_eq!(answer.reply, Resp::Bulk(b"back".to_vec()));
    }
}
