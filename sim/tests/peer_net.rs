//! The peer network (`keel_sim::peer_net`) under madsim: two and three nodes,
//! each core sending a numbered message to the same core of every other node
//! each millisecond, under each fault of the fault layer and of a drawn
//! schedule. Built only for madsim (see scripts/sim.sh).
#![cfg(madsim)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_engine::node::io::{NodeIo, PeerId, PeerSendError};
use keel_sim::fault_schedule::{Fault, FaultSchedule, ScheduleConfig, TimedFault};
use keel_sim::io::SimIo;
use keel_sim::network_faults::{LinkFaults, Partition};
use keel_sim::peer_net::{
    self, NetCounts, PEER_FRAME_BYTES_MAX, PEER_SEND_QUEUE_BYTES_MAX, PEER_SEND_QUEUE_MESSAGES,
};
use madsim::rand::{thread_rng, Rng};
use madsim::runtime::{Handle, Runtime};
use madsim::time::TimeHandle;

/// Cores of each node: two, so each message is seen to stay on its shard's core.
const CORES: usize = 2;
/// Each core sends to each peer once per this many µs (madsim's timers tick
/// in milliseconds).
const SEND_INTERVAL_US: u64 = 1_000;
/// madsim's latency, narrowed to about 1 ms so that without the fault layer
/// no message overtakes another on a link: every reordering seen is the layer's.
const LATENCY_MIN: Duration = Duration::from_millis(1);
const LATENCY_MAX: Duration = Duration::from_micros(1_001);
/// Longest a message is on its way without the fault layer's delay: madsim
/// sleeps 1 ms in a send and 1 ms in a receive, and the latency is ~1 ms.
const TRANSIT_US_MAX: u64 = 4_000;
/// ... and with an extra delay of up to 20 ms.
const DELAYED_TRANSIT_US_MAX: u64 = 20_000 + TRANSIT_US_MAX;

/// One message as its sender queued it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Sent {
    from: PeerId,
    to: PeerId,
    core: usize,
    seq: u64,
}

/// One message as its receiver took it, at `at_us` of simulated time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Delivery {
    at_us: u64,
    /// The receiving core.
    core: usize,
    shard: u32,
    sent: Sent,
}

#[derive(Debug, Default)]
struct Log {
    sent: Vec<(u64, Sent)>,
    delivered: Vec<Delivery>,
}

/// What one exchange did.
#[derive(Debug, PartialEq)]
struct Outcome {
    /// Each message queued, with when (µs).
    sent: Vec<(u64, Sent)>,
    delivered: Vec<Delivery>,
    counts: NetCounts,
}

impl Outcome {
    /// How many times each message queued was delivered.
    fn copies(&self) -> BTreeMap<Sent, u64> {
        let mut copies: BTreeMap<Sent, u64> =
            self.sent.iter().map(|(_, sent)| (*sent, 0)).collect();
        for delivery in &self.delivered {
            *copies
                .get_mut(&delivery.sent)
                .expect("only queued messages arrive") += 1;
        }
        copies
    }

    /// How many of the messages queued arrived exactly `copies` times.
    fn delivered_times(&self, copies: u64) -> usize {
        let all = self.copies();
        all.values().filter(|&&count| count == copies).count()
    }

    /// When each message was queued (µs).
    fn sent_at(&self) -> BTreeMap<Sent, u64> {
        self.sent.iter().map(|(at, sent)| (*sent, *at)).collect()
    }

    /// Deliveries that came after a later-numbered one on the same link.
    fn overtaken(&self) -> usize {
        let mut newest: BTreeMap<(PeerId, PeerId, usize), u64> = BTreeMap::new();
        let mut overtaken = 0;
        for delivery in &self.delivered {
            let sent = delivery.sent;
            let seen = newest.entry((sent.from, sent.to, sent.core)).or_default();
            if sent.seq < *seen {
                overtaken += 1;
            }
            *seen = (*seen).max(sent.seq);
        }
        overtaken
    }
}

/// An exchange among `nodes` members (ids 1..=nodes): each core sends until
/// `send_ms`, the run ends at `run_ms`, and `faults` strike as scheduled.
struct Exchange {
    seed: u64,
    nodes: u64,
    send_ms: u64,
    run_ms: u64,
    faults: Vec<TimedFault>,
}

fn ip(member: PeerId) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        10,
        0,
        2,
        u8::try_from(member).expect("a small cluster"),
    ))
}

fn now_us() -> u64 {
    TimeHandle::current().elapsed().as_micros() as u64
}

impl Exchange {
    fn new(seed: u64, nodes: u64) -> Exchange {
        Exchange {
            seed,
            nodes,
            send_ms: 900,
            run_ms: 1_000,
            faults: Vec::new(),
        }
    }

    fn faults(mut self, faults: Vec<(u64, Fault)>) -> Exchange {
        self.faults = faults
            .into_iter()
            .map(|(at_ms, fault)| TimedFault { at_ms, fault })
            .collect();
        self
    }

    /// Runs the exchange on a thread of its own (one simulation per thread).
    fn run(self) -> Outcome {
        std::thread::spawn(move || self.simulate())
            .join()
            .expect("the simulation does not panic")
    }

    fn simulate(self) -> Outcome {
        let mut config = madsim::Config::default();
        config.net.send_latency = LATENCY_MIN..LATENCY_MAX;
        let runtime = Runtime::with_seed_and_config(self.seed, config);
        let log = Arc::new(Mutex::new(Log::default()));
        let counts = runtime.block_on(self.drive(Arc::clone(&log)));
        let log = std::mem::take(&mut *log.lock().expect("log lock"));
        Outcome {
            sent: log.sent,
            delivered: log.delivered,
            counts,
        }
    }

    async fn drive(self, log: Arc<Mutex<Log>>) -> NetCounts {
        let members: Vec<(PeerId, IpAddr)> = (1..=self.nodes).map(|id| (id, ip(id))).collect();
        let network = peer_net::install(&members, thread_rng().gen());
        let mut hosts = BTreeMap::new();
        for &(me, address) in &members {
            let (log, send_ms) = (Arc::clone(&log), self.send_ms);
            let others: Vec<PeerId> = (1..=self.nodes).filter(|&id| id != me).collect();
            let host = Handle::current()
                .create_node()
                .name(format!("member-{me}"))
                .ip(address)
                .init(move || member(me, others.clone(), send_ms, Arc::clone(&log)))
                .build();
            hosts.insert(me, host.id());
        }
        let schedule = FaultSchedule::from_faults(self.faults);
        network.play(&schedule, |peer| hosts[&peer]).await;
        let left =
            Duration::from_millis(self.run_ms).saturating_sub(TimeHandle::current().elapsed());
        madsim::time::sleep(left).await;
        network.counts()
    }
}

/// The ledger of the current host, as the members' shards' observer.
fn host_ledger() -> std::rc::Rc<dyn keel_engine::node::io::ShardObserver> {
    keel_sim::io::host(madsim::plugin::node()).ledger
}

/// One member: binds its cores, and on each sends numbered messages and
/// records what arrives. Restarted from here after a kill.
async fn member(me: PeerId, others: Vec<PeerId>, send_ms: u64, log: Arc<Mutex<Log>>) {
    let client_address = SocketAddr::new(ip(me), 7379);
    let cores = SimIo::bind_member(client_address, CORES, me, host_ledger())
        .await
        .expect("the member binds");
    for io in cores {
        let sender = send_numbered(io.clone(), me, others.clone(), send_ms, Arc::clone(&log));
        drop(madsim::task::spawn_local(sender));
        drop(madsim::task::spawn_local(record(io, me, Arc::clone(&log))));
    }
    std::future::pending::<()>().await;
}

/// Sends message `now / SEND_INTERVAL_US` to every peer, each interval, on
/// this core's shard, so a restarted member goes on numbering from the clock.
async fn send_numbered(
    io: SimIo,
    me: PeerId,
    others: Vec<PeerId>,
    send_ms: u64,
    log: Arc<Mutex<Log>>,
) {
    let (core, _) = io.core();
    let shard = core as u32;
    while now_us() < send_ms * 1_000 {
        let at_us = now_us();
        let seq = at_us / SEND_INTERVAL_US;
        for &to in &others {
            let queued = io.peer_send(to, shard, seq.to_le_bytes().to_vec());
            assert_eq!(
                queued,
                Ok(()),
                "the queue has room at one message a millisecond"
            );
            let sent = Sent {
                from: me,
                to,
                core,
                seq,
            };
            log.lock().expect("log lock").sent.push((at_us, sent));
        }
        madsim::time::sleep(Duration::from_micros(SEND_INTERVAL_US)).await;
    }
}

async fn record(io: SimIo, me: PeerId, log: Arc<Mutex<Log>>) {
    let (core, _) = io.core();
    loop {
        let message = io.peer_recv().await;
        let seq = u64::from_le_bytes(message.frame.try_into().expect("an 8-byte number"));
        let sent = Sent {
            from: message.from,
            to: me,
            core: message.shard as usize,
            seq,
        };
        let delivery = Delivery {
            at_us: now_us(),
            core,
            shard: message.shard,
            sent,
        };
        log.lock().expect("log lock").delivered.push(delivery);
    }
}

#[test]
fn without_faults_every_message_arrives_once_in_order_on_its_core() {
    for nodes in [2, 3] {
        let outcome = Exchange::new(1, nodes).run();
        let expected = (nodes * (nodes - 1)) as usize * CORES * 900;
        assert!(
            outcome.sent.len() >= expected * 9 / 10,
            "{} sent",
            outcome.sent.len()
        );
        assert!(outcome.copies().values().all(|&copies| copies == 1));
        for delivery in &outcome.delivered {
            assert_eq!(delivery.core, delivery.shard as usize, "{delivery:?}");
        }
        assert_eq!(outcome.overtaken(), 0);
        let counts = outcome.counts;
        assert_eq!(counts.queued, outcome.sent.len() as u64);
        assert_eq!(counts.delivered, counts.queued);
        assert_eq!(
            (counts.lost, counts.duplicated, counts.delayed, counts.cut),
            (0, 0, 0, 0)
        );
    }
}

#[test]
fn peer_send_refuses_what_it_cannot_queue() {
    let refusals = std::thread::spawn(|| {
        let runtime = Runtime::with_seed_and_config(2, madsim::Config::default());
        let found = Arc::new(Mutex::new(Vec::new()));
        let report = Arc::clone(&found);
        runtime.block_on(async move {
            peer_net::install(&[(1, ip(1)), (2, ip(2))], 2);
            let _member = Handle::current()
                .create_node()
                .ip(ip(1))
                .init(move || refusals(Arc::clone(&report)))
                .build();
            madsim::time::sleep(Duration::from_millis(10)).await;
        });
        let mut answers = Vec::new();
        std::mem::swap(&mut answers, &mut *found.lock().expect("lock"));
        answers
    })
    .join()
    .expect("the simulation does not panic");
    let queue_full = vec![Ok(()); PEER_SEND_QUEUE_MESSAGES - 1]
        .into_iter()
        .chain([Err(PeerSendError::QueueFull)]);
    let bytes_full = vec![Ok(()); PEER_SEND_QUEUE_BYTES_MAX / PEER_FRAME_BYTES_MAX]
        .into_iter()
        .chain([Err(PeerSendError::QueueFull)]);
    let expected: Vec<Result<(), PeerSendError>> = [
        Err(PeerSendError::UnknownPeer),
        Err(PeerSendError::UnknownPeer),
        Err(PeerSendError::UnknownPeer),
        Err(PeerSendError::TooLarge),
        Ok(()),
    ]
    .into_iter()
    .chain(queue_full)
    .chain(bytes_full)
    .collect();
    assert_eq!(refusals, expected);
}

/// What `peer_send` answers: a single node (bound without peers), an
/// unknown member, itself, a frame one byte too large and the largest, then
/// sends until a core's queue is full in messages, and another core's in
/// bytes (nothing is sent meanwhile: no await).
async fn refusals(report: Arc<Mutex<Vec<Result<(), PeerSendError>>>>) {
    let alone = SimIo::bind(SocketAddr::new(ip(1), 6379), 1)
        .await
        .expect("binds");
    let cores = SimIo::bind_member(SocketAddr::new(ip(1), 7379), 2, 1, host_ledger())
        .await
        .expect("binds");
    let (member, other_core) = (&cores[0], &cores[1]);
    let mut answers = vec![
        alone[0].peer_send(2, 0, vec![1]),
        member.peer_send(3, 0, vec![1]),
        member.peer_send(1, 0, vec![1]),
        member.peer_send(2, 0, vec![0; PEER_FRAME_BYTES_MAX + 1]),
        member.peer_send(2, 0, vec![0; PEER_FRAME_BYTES_MAX]),
    ];
    for _ in 0..PEER_SEND_QUEUE_MESSAGES {
        answers.push(member.peer_send(2, 0, vec![1]));
    }
    // The other core's queue, which fills up by bytes first.
    for _ in 0..=PEER_SEND_QUEUE_BYTES_MAX / PEER_FRAME_BYTES_MAX {
        answers.push(other_core.peer_send(2, 1, vec![0; PEER_FRAME_BYTES_MAX]));
    }
    *report.lock().expect("lock") = answers;
}

#[test]
fn loss_drops_close_to_its_rate() {
    let loss = LinkFaults {
        loss: 0.25,
        ..LinkFaults::NONE
    };
    let outcome = Exchange::new(3, 3)
        .faults(vec![(0, Fault::Links(loss))])
        .run();
    let (arrived, sent) = (outcome.delivered_times(1), outcome.sent.len());
    let share = arrived as f64 / sent as f64;
    assert!((share - 0.75).abs() < 0.02, "{arrived} of {sent} arrived");
    assert_eq!(outcome.delivered_times(0) + arrived, sent, "none doubled");
    let counts = outcome.counts;
    assert_eq!(counts.lost + counts.delivered, counts.queued, "{counts:?}");
}

#[test]
fn duplicates_arrive_twice_at_close_to_their_rate() {
    let duplicate = LinkFaults {
        duplicate: 0.2,
        ..LinkFaults::NONE
    };
    let outcome = Exchange::new(4, 2)
        .faults(vec![(0, Fault::Links(duplicate))])
        .run();
    let (doubled, sent) = (outcome.delivered_times(2), outcome.sent.len());
    let share = doubled as f64 / sent as f64;
    assert!((share - 0.2).abs() < 0.03, "{doubled} of {sent} doubled");
    assert_eq!(outcome.delivered_times(1) + doubled, sent, "none lost");
    assert_eq!(outcome.counts.duplicated, doubled as u64);
}

#[test]
fn held_back_messages_are_overtaken() {
    let delay = LinkFaults {
        delay: 0.2,
        delay_us_max: 20_000,
        ..LinkFaults::NONE
    };
    let outcome = Exchange::new(5, 2)
        .faults(vec![(0, Fault::Links(delay))])
        .run();
    assert!(outcome.copies().values().all(|&copies| copies == 1));
    let overtaken = outcome.overtaken();
    // A held-back message arrives after those sent in its delay's
    // milliseconds after it; most are overtaken.
    assert!(
        overtaken as u64 > outcome.counts.delayed / 2,
        "{overtaken} overtaken, {} delayed",
        outcome.counts.delayed
    );
}

/// Under each partition between 200 and 600 ms: nothing arrives over a cut
/// link meanwhile, everything over the others does, and every message sent
/// after healing arrives.
#[test]
fn nothing_crosses_a_partition_and_everything_crosses_after_healing() {
    let partitions = [
        Partition::halves(&[1], &[2, 3]),
        Partition::isolate(2, &[1, 2, 3]),
        Partition::bridge(3, &[1], &[2]),
        Partition::one_way(1, 2),
    ];
    let (cut_ms, heal_ms) = (200, 600);
    for (seed, partition) in (6..).zip(partitions) {
        let outcome = Exchange::new(seed, 3)
            .faults(vec![
                (cut_ms, Fault::Partition(partition.clone())),
                (heal_ms, Fault::Heal),
            ])
            .run();
        let during = |at_us: u64| at_us > cut_ms * 1_000 && at_us < heal_ms * 1_000;
        for delivery in &outcome.delivered {
            let sent = delivery.sent;
            assert!(
                !(during(delivery.at_us) && partition.is_cut(sent.from, sent.to)),
                "{delivery:?} crossed {partition:?}"
            );
        }
        let sent_at = outcome.sent_at();
        let mut crossed_after_healing = 0;
        for (sent, copies) in outcome.copies() {
            let at_us = sent_at[&sent];
            let cut_then = during(at_us) && partition.is_cut(sent.from, sent.to);
            if !cut_then && (at_us + TRANSIT_US_MAX < cut_ms * 1_000 || at_us > cut_ms * 1_000) {
                assert_eq!(copies, 1, "{sent:?} sent at {at_us} µs, across no cut");
            }
            if at_us >= heal_ms * 1_000 && partition.is_cut(sent.from, sent.to) {
                crossed_after_healing += copies;
            }
        }
        assert!(crossed_after_healing > 0, "{partition:?}");
        assert!(outcome.counts.cut > 0, "{partition:?}");
    }
}

/// A paused member runs nothing: it neither sends nor takes messages; what
/// was sent to it waits (in madsim's mailbox) and arrives when it resumes.
#[test]
fn a_paused_member_takes_what_waited_for_it_when_it_resumes() {
    let (pause_ms, resume_ms) = (200, 500);
    let outcome = Exchange::new(10, 3)
        .faults(vec![
            (pause_ms, Fault::Pause(3)),
            (resume_ms, Fault::Resume(3)),
        ])
        .run();
    let paused =
        |at_us: u64| at_us > pause_ms * 1_000 + TRANSIT_US_MAX && at_us < resume_ms * 1_000;
    assert!(outcome.copies().values().all(|&copies| copies == 1));
    let mut waited = 0;
    let sent_at = outcome.sent_at();
    for delivery in &outcome.delivered {
        let sent = delivery.sent;
        assert!(
            !(paused(delivery.at_us) && (sent.to == 3 || sent.from == 3)),
            "{delivery:?}"
        );
        assert!(
            !(paused(sent_at[&sent]) && sent.from == 3),
            "{sent:?} sent while paused"
        );
        waited += u64::from(sent.to == 3 && paused(sent_at[&sent]));
    }
    assert!(
        waited > 0,
        "messages sent to the paused member arrived after it resumed"
    );
}

/// A killed member's sockets are gone: what its peers send it until it has
/// restarted is lost; after that, everything arrives again.
#[test]
fn a_killed_member_loses_what_is_sent_to_it_until_it_restarts() {
    let (kill_ms, restart_ms) = (200, 500);
    let outcome = Exchange::new(11, 3)
        .faults(vec![
            (kill_ms, Fault::Kill(3)),
            (restart_ms, Fault::Restart(3)),
        ])
        .run();
    let down = |at_us: u64| at_us > kill_ms * 1_000 && at_us < restart_ms * 1_000;
    // Sent this long before the restart, a message lands before the member binds again.
    let lost_for_sure = |at_us: u64| down(at_us) && at_us + TRANSIT_US_MAX < restart_ms * 1_000;
    let sent_at = outcome.sent_at();
    let (mut lost, mut after_restart) = (0, 0);
    for (sent, copies) in outcome.copies() {
        let at_us = sent_at[&sent];
        if sent.to == 3 && lost_for_sure(at_us) {
            assert_eq!(copies, 0, "{sent:?} reached a killed member");
            lost += 1;
        }
        assert!(
            !(sent.from == 3 && down(at_us)),
            "{sent:?} sent by a killed member"
        );
        if at_us > restart_ms * 1_000 + TRANSIT_US_MAX || at_us + TRANSIT_US_MAX < kill_ms * 1_000 {
            assert_eq!(copies, 1, "{sent:?} sent at {at_us} µs");
            after_restart +=
                u64::from(at_us > restart_ms * 1_000 && (sent.to == 3 || sent.from == 3));
        }
    }
    assert!(
        lost > 0 && after_restart > 0,
        "{lost} lost, {after_restart} after restart"
    );
}

/// A drawn schedule of every fault: the faults strike (counted), and once
/// they end every message sent arrives exactly once.
#[test]
fn a_drawn_schedule_strikes_and_the_network_recovers_after_it() {
    let fault_ms = 1_500;
    let schedule = FaultSchedule::draw(12, &ScheduleConfig::every_fault(vec![1, 2, 3], fault_ms));
    let outcome = Exchange {
        seed: 12,
        nodes: 3,
        send_ms: 2_000,
        run_ms: 2_100,
        faults: schedule.faults().to_vec(),
    }
    .run();
    let counts = outcome.counts;
    assert!(
        counts.lost > 0 && counts.duplicated > 0 && counts.delayed > 0,
        "{counts:?}"
    );
    let sent_at = outcome.sent_at();
    let calm_us = fault_ms * 1_000 + DELAYED_TRANSIT_US_MAX;
    let mut calm = 0;
    for (sent, copies) in outcome.copies() {
        if sent_at[&sent] > calm_us {
            assert_eq!(copies, 1, "{sent:?} sent after the faults");
            calm += 1;
        }
    }
    assert!(calm > 1_000, "{calm} messages sent after the faults");
}

/// The same seed delivers the same messages at the same times; another
/// seed, under the same faults, does not.
#[test]
fn a_seed_replays_its_deliveries_exactly() {
    let faults = LinkFaults {
        loss: 0.1,
        duplicate: 0.1,
        delay: 0.1,
        delay_us_max: 10_000,
    };
    let run = |seed| {
        Exchange::new(seed, 3)
            .faults(vec![
                (0, Fault::Links(faults)),
                (300, Fault::Kill(2)),
                (400, Fault::Restart(2)),
            ])
            .run()
    };
    let first = run(13);
    assert!(first.delivered.len() > 1_000);
    assert_eq!(first, run(13));
    let other = run(14);
    assert_ne!(first.delivered, other.delivered);
    let lost = |outcome: &Outcome| -> BTreeSet<Sent> {
        outcome
            .copies()
            .into_iter()
            .filter_map(|(sent, copies)| (copies == 0).then_some(sent))
            .collect()
    };
    assert_ne!(
        lost(&first),
        lost(&other),
        "another seed loses other messages"
    );
}
