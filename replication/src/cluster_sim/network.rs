//! The seeded network between simulated members: each message may be
//! dropped, duplicated, delayed (and so reordered), corrupted (one bit of its
//! encoding flipped: the receiver's decoder must refuse it), or blocked by a
//! partition, which may be one-way. A sample of the messages also makes a
//! round trip through the codec, which must give the message back.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use keel_wal::memory::SplitMix64;

use super::checker::Violation;
use crate::codec;
use crate::message::Envelope;

/// One-way latency floor of every message, in simulated milliseconds.
pub const LATENCY_MIN_MS: u64 = 1;
/// Most extra latency a message may get on top of the floor: this jitter is
/// what reorders messages.
pub const JITTER_MS_MAX: u64 = 12;
/// One message in this many makes a round trip through the codec (all of
/// them would cost a third of the simulator's time; the proptests of
/// `tests/codec.rs` cover the codec's corners).
pub const CODEC_ROUND_TRIP_EVERY: u64 = 32;
/// Shortest and longest latency of the rare slow message (a retransmission,
/// a long queue): up to a few election timeouts, so that a request can
/// outlive its sender's patience and a voter's restart.
pub const SLOW_MESSAGE_MS_MIN: u64 = 50;
pub const SLOW_MESSAGE_MS_MAX: u64 = 600;

/// The network's weather: per-message probabilities in parts per thousand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Weather {
    pub drop_per_mille: u64,
    pub duplicate_per_mille: u64,
    pub slow_per_mille: u64,
    pub corrupt_per_mille: u64,
}

impl Weather {
    /// Random weather for a chaotic period: up to 10% loss, 5% duplicates,
    /// 15% slow messages, 1% corrupted.
    pub fn random(rng: &mut SplitMix64) -> Weather {
        Weather {
            drop_per_mille: rng.below(101),
            duplicate_per_mille: rng.below(51),
            slow_per_mille: rng.below(151),
            corrupt_per_mille: rng.below(11),
        }
    }
}

/// Which member may reach which: `blocked[from][to]`.
#[derive(Clone, Debug)]
pub struct Partition {
    blocked: Vec<Vec<bool>>,
}

impl Partition {
    pub fn none(nodes: usize) -> Partition {
        Partition {
            blocked: vec![vec![false; nodes]; nodes],
        }
    }

    /// Blocks both directions between every member of `side` and every one
    /// outside it.
    pub fn split(nodes: usize, side: &[usize]) -> Partition {
        let mut partition = Partition::none(nodes);
        for from in 0..nodes {
            for to in 0..nodes {
                partition.blocked[from][to] = side.contains(&from) != side.contains(&to);
            }
        }
        partition
    }

    /// Two sides that cannot reach each other, and a bridge that reaches both.
    pub fn bridge(nodes: usize, bridge: usize, side: &[usize]) -> Partition {
        let mut partition = Partition::split(nodes, side);
        for other in 0..nodes {
            partition.blocked[bridge][other] = false;
            partition.blocked[other][bridge] = false;
        }
        partition
    }

    /// `node` cannot send (if `outgoing`) or cannot receive (else); the other
    /// direction works.
    pub fn one_way(nodes: usize, node: usize, outgoing: bool) -> Partition {
        let mut partition = Partition::none(nodes);
        for other in (0..nodes).filter(|other| *other != node) {
            if outgoing {
                partition.blocked[node][other] = true;
            } else {
                partition.blocked[other][node] = true;
            }
        }
        partition
    }

    pub fn blocks(&self, from: usize, to: usize) -> bool {
        self.blocked[from][to]
    }
}

/// A message on its way, ordered by arrival (then by sending order).
#[derive(Debug)]
struct InFlight {
    deliver_at_ms: u64,
    sequence: u64,
    to: usize,
    envelope: Box<Envelope>,
}

impl InFlight {
    fn key(&self) -> (u64, u64) {
        (self.deliver_at_ms, self.sequence)
    }
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

#[derive(Debug)]
pub struct Network {
    in_flight: BinaryHeap<Reverse<InFlight>>,
    sequence: u64,
    pub weather: Weather,
    pub partition: Partition,
    pub stats: NetworkStats,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub corrupted: u64,
    pub blocked: u64,
}

impl Network {
    pub fn new(nodes: usize) -> Network {
        Network {
            in_flight: BinaryHeap::new(),
            sequence: 0,
            weather: Weather::default(),
            partition: Partition::none(nodes),
            stats: NetworkStats::default(),
        }
    }

    /// Sends `envelope` from `from` to `to` at `now_ms`, through the weather
    /// and the partition in force now. A codec that fails the message is a
    /// violation.
    pub fn send(
        &mut self,
        rng: &mut SplitMix64,
        now_ms: u64,
        from: usize,
        to: usize,
        envelope: Envelope,
    ) -> Result<(), Violation> {
        self.stats.sent += 1;
        if self.partition.blocks(from, to) {
            self.stats.blocked += 1;
            return Ok(());
        }
        if rng.below(1000) < self.weather.drop_per_mille {
            self.stats.dropped += 1;
            return Ok(());
        }
        if rng.below(1000) < self.weather.corrupt_per_mille {
            self.stats.corrupted += 1;
            return corrupt(rng, &envelope);
        }
        let envelope = if rng.below(CODEC_ROUND_TRIP_EVERY) == 0 {
            round_trip(envelope)?
        } else {
            envelope
        };
        if rng.below(1000) < self.weather.duplicate_per_mille {
            self.stats.duplicated += 1;
            self.push(rng, now_ms, to, envelope.clone());
        }
        self.push(rng, now_ms, to, envelope);
        Ok(())
    }

    fn push(&mut self, rng: &mut SplitMix64, now_ms: u64, to: usize, envelope: Envelope) {
        let latency_ms = if rng.below(1000) < self.weather.slow_per_mille {
            SLOW_MESSAGE_MS_MIN + rng.below(SLOW_MESSAGE_MS_MAX - SLOW_MESSAGE_MS_MIN + 1)
        } else {
            LATENCY_MIN_MS + rng.below(JITTER_MS_MAX + 1)
        };
        self.sequence += 1;
        self.in_flight.push(Reverse(InFlight {
            deliver_at_ms: now_ms + latency_ms,
            sequence: self.sequence,
            to,
            envelope: Box::new(envelope),
        }));
    }

    /// When the next message arrives, if any is on its way.
    pub fn next_delivery_ms(&self) -> Option<u64> {
        self.in_flight
            .peek()
            .map(|Reverse(message)| message.deliver_at_ms)
    }

    /// The next message due at or before `now_ms`, and its receiver.
    pub fn deliver(&mut self, now_ms: u64) -> Option<(usize, Envelope)> {
        if self.next_delivery_ms()? > now_ms {
            return None;
        }
        let Reverse(message) = self.in_flight.pop().expect("peeked");
        Some((message.to, *message.envelope))
    }
}

fn encode(envelope: &Envelope) -> Result<Vec<u8>, Violation> {
    codec::encode(envelope).map_err(|error| Violation {
        checker: "codec",
        detail: format!("{envelope:?} does not encode: {error}"),
    })
}

/// The message as the receiver decodes it from its encoding.
fn round_trip(envelope: Envelope) -> Result<Envelope, Violation> {
    let decoded = codec::decode(&encode(&envelope)?);
    match decoded {
        Ok(decoded) if decoded == envelope => Ok(decoded),
        other => Err(Violation {
            checker: "codec",
            detail: format!("{envelope:?} decodes as {other:?}"),
        }),
    }
}

/// The message's encoding with one bit flipped: the receiver must refuse it
/// (a CRC32 catches every single-bit error), so it never arrives.
fn corrupt(rng: &mut SplitMix64, envelope: &Envelope) -> Result<(), Violation> {
    let mut bytes = encode(envelope)?;
    let bit = rng.below(bytes.len() as u64 * 8);
    bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
    match codec::decode(&bytes) {
        Err(_) => Ok(()),
        Ok(decoded) => Err(Violation {
            checker: "codec",
            detail: format!("bit {bit} of {envelope:?} flipped, and it decoded as {decoded:?}"),
        }),
    }
}
