//! Entries committed per second through an in-memory 3-node cluster of cores:
//! the leader, two followers, messages handed over in memory and every
//! `Persist` durable at once. What remains is the consensus work itself
//! (appends, acknowledgements, commit counting, log bookkeeping), so this
//! shows the core is not what bounds the server. Prints one line per mode:
//!
//! - `batched`: `ProposeBatch` of `--batch` commands, then the cluster runs
//!   until they commit (one Persist and one append per follower per batch);
//! - `pipelined`: `--batch` single `Propose`s, then the cluster runs (the core
//!   may coalesce the appends);
//! - `unbatched`: one `Propose` at a time, each committed before the next.
//!
//! ```text
//! cargo run --release -p keel-replication --example bench -- [--entries N] [--batch B] [--command-bytes C]
//! ```

mod common;

use std::collections::VecDeque;
use std::time::Instant;

use keel_replication::{
    CommandBytes, Config, Envelope, Group, Input, LogIndex, Membership, NodeId, Output, ProposalId,
    Restored, Role, SnapshotMeta,
};

/// Voters in the benchmark's group.
const NODES: usize = 3;
/// Entries kept in each core's memory before the driver reports a snapshot
/// (so the log's memory stays bounded over millions of entries).
const COMPACT_EVERY_ENTRIES: u64 = 1 << 16;
/// The benchmark's clock while it measures: time stands still, so only the
/// workload steps the cores (no heartbeats or elections interleave).
const BENCH_NOW_MS: u64 = 10_000;

struct Node {
    group: Group,
    /// `SendAfterDurable` messages of the step being executed.
    held: Vec<Envelope>,
}

struct Cluster {
    nodes: Vec<Node>,
    queue: VecDeque<(usize, Input)>,
    outputs: Vec<Output>,
    next_proposal: u64,
    leader: usize,
}

impl Cluster {
    fn new() -> Cluster {
        let membership = Membership {
            voters: (1..=NODES as u64).map(NodeId).collect(),
            learners: Default::default(),
        };
        let nodes = (1..=NODES as u64)
            .map(|id| {
                let restored = Restored {
                    snapshot: SnapshotMeta {
                        membership: membership.clone(),
                        ..SnapshotMeta::default()
                    },
                    ..Restored::default()
                };
                Node {
                    group: Group::new(Config::new(NodeId(id), id), restored),
                    held: Vec::new(),
                }
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            queue: VecDeque::new(),
            outputs: Vec::new(),
            next_proposal: 0,
            leader: 0,
        };
        cluster.elect();
        cluster
    }

    /// Runs the clocks until a leader is elected (and its no-op committed).
    fn elect(&mut self) {
        let mut now_ms = 0;
        while now_ms < BENCH_NOW_MS {
            for node in 0..NODES {
                if self.nodes[node]
                    .group
                    .next_deadline_ms()
                    .is_some_and(|at| at <= now_ms)
                {
                    self.queue.push_back((node, Input::Tick));
                }
            }
            self.run(now_ms);
            now_ms += 1;
        }
        self.leader = (0..NODES)
            .find(|node| self.nodes[*node].group.role() == Role::Leader)
            .expect("a leader within the benchmark's start-up time");
    }

    /// Steps nodes until no message is left.
    fn run(&mut self, now_ms: u64) {
        while let Some((node, input)) = self.queue.pop_front() {
            self.step(now_ms, node, input);
        }
    }

    /// One step of `node`, its outputs executed as a driver with an instant
    /// disk would: what it persisted is durable at the end of the step.
    fn step(&mut self, now_ms: u64, node: usize, input: Input) {
        let mut outputs = std::mem::take(&mut self.outputs);
        self.nodes[node].group.step(now_ms, input, &mut outputs);
        let mut persisted = false;
        for output in outputs.drain(..) {
            match output {
                Output::Persist { .. } | Output::Cut { .. } => persisted = true,
                Output::Send(envelope) => self.deliver(envelope),
                Output::SendAfterDurable(envelope) => self.nodes[node].held.push(envelope),
                Output::Commit { through } => self.compact(now_ms, node, through.index),
                _ => {}
            }
        }
        self.outputs = outputs;
        for envelope in std::mem::take(&mut self.nodes[node].held) {
            self.deliver(envelope);
        }
        if persisted {
            let through = self.nodes[node].group.last();
            self.step(now_ms, node, Input::Durable { through });
        }
    }

    fn deliver(&mut self, envelope: Envelope) {
        let to = envelope.to.0 as usize - 1;
        self.queue.push_back((to, Input::Receive(envelope)));
    }

    /// Reports a snapshot at the commit index once enough entries piled up.
    fn compact(&mut self, now_ms: u64, node: usize, commit: LogIndex) {
        let group = &self.nodes[node].group;
        if commit.0 < group.snapshot().last.index.0 + COMPACT_EVERY_ENTRIES {
            return;
        }
        let meta = SnapshotMeta {
            last: group.commit(),
            membership: group.membership().clone(),
        };
        let input = Input::Compacted {
            meta,
            data: Vec::new(),
        };
        self.nodes[node].group.step(now_ms, input, &mut Vec::new());
    }

    fn committed(&self) -> u64 {
        self.nodes[self.leader].group.commit().index.0
    }

    fn proposal(&mut self, command_bytes: usize) -> (ProposalId, CommandBytes) {
        self.next_proposal += 1;
        let mut command = vec![0; command_bytes];
        let stamp = self.next_proposal.to_le_bytes();
        let stamped = command_bytes.min(stamp.len());
        command[..stamped].copy_from_slice(&stamp[..stamped]);
        (ProposalId(self.next_proposal), command.into())
    }

    /// Proposes `count` commands as `mode` says and runs until all commit.
    fn propose(&mut self, mode: Mode, count: u64, command_bytes: usize) {
        let target = self.committed() + count;
        let leader = self.leader;
        match mode {
            Mode::Batched => {
                let proposals = (0..count).map(|_| self.proposal(command_bytes)).collect();
                self.queue
                    .push_back((leader, Input::ProposeBatch { proposals }));
                self.run(BENCH_NOW_MS);
            }
            Mode::Pipelined => {
                for _ in 0..count {
                    let (proposal, command) = self.proposal(command_bytes);
                    self.queue
                        .push_back((leader, Input::Propose { proposal, command }));
                }
                self.run(BENCH_NOW_MS);
            }
            Mode::Unbatched => {
                for _ in 0..count {
                    let (proposal, command) = self.proposal(command_bytes);
                    self.queue
                        .push_back((leader, Input::Propose { proposal, command }));
                    self.run(BENCH_NOW_MS);
                }
            }
        }
        assert_eq!(self.committed(), target, "every proposal committed");
    }
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Batched,
    Pipelined,
    Unbatched,
}

struct Args {
    entries: u64,
    batch: u64,
    command_bytes: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        entries: 2_000_000,
        batch: 1_000,
        command_bytes: 16,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let value = words.next().ok_or(format!("{word} needs a value"))?;
        let number = value
            .parse::<u64>()
            .map_err(|_| format!("{word} takes a number"))?;
        match word.as_str() {
            "--entries" => args.entries = number,
            "--batch" => args.batch = number.max(1),
            "--command-bytes" => args.command_bytes = number as usize,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = parse_args().unwrap_or_else(|error| {
        eprintln!("{error}");
        std::process::exit(2);
    });
    for mode in [Mode::Batched, Mode::Pipelined, Mode::Unbatched] {
        let mut cluster = Cluster::new();
        // Unbatched commits are a whole round trip each: a tenth of the entries.
        let entries = match mode {
            Mode::Unbatched => args.entries / 10,
            _ => args.entries,
        };
        let started = Instant::now();
        let cpu_started = common::cpu_ns();
        let mut done = 0;
        while done < entries {
            let count = args.batch.min(entries - done);
            cluster.propose(mode, count, args.command_bytes);
            done += count;
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{mode:?}: {done} entries of {} bytes (batches of {}) committed by a 3-node cluster \
             in {seconds:.2} s: {:.0} entries/s{}",
            args.command_bytes,
            match mode {
                Mode::Unbatched => 1,
                _ => args.batch,
            },
            done as f64 / seconds,
            common::per_cpu_second(done, cpu_started)
        );
    }
}
