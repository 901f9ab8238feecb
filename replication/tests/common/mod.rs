//! A tiny in-test cluster of pure cores: messages delivered by hand, a disk
//! per node that is durable at once, crashes that rebuild a core from its
//! disk. Enough for the scenarios the dissertation draws; the seeded cluster
//! simulator with faults and checkers is elsewhere.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use keel_replication::{
    Config, Entry, EntryId, Envelope, Group, HardState, Input, Membership, NodeId, Output,
    Restored, SnapshotMeta,
};

pub fn ids(ids: &[u64]) -> BTreeSet<NodeId> {
    ids.iter().map(|id| NodeId(*id)).collect()
}

/// A fresh cluster's starting point: a snapshot at zero naming the voters.
pub fn bootstrap(voters: &[u64]) -> Restored {
    Restored {
        snapshot: SnapshotMeta {
            last: EntryId::ZERO,
            membership: Membership {
                voters: ids(voters),
                learners: BTreeSet::new(),
            },
        },
        ..Restored::default()
    }
}

/// What a node has on disk.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub hard_state: HardState,
    pub snapshot: SnapshotMeta,
    pub snapshot_data: Vec<u8>,
    pub entries: Vec<Entry>,
}

impl Disk {
    fn restored(&self) -> Restored {
        Restored {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            snapshot_data: self.snapshot_data.clone(),
            entries: self.entries.clone(),
        }
    }

    pub fn last(&self) -> EntryId {
        self.entries
            .last()
            .map_or(self.snapshot.last, |entry| entry.id)
    }

    pub fn entry(&self, index: u64) -> Option<&Entry> {
        self.entries.iter().find(|entry| entry.id.index.0 == index)
    }

    /// Executes one write the core asked for.
    fn apply(&mut self, output: Output) {
        match output {
            Output::Persist {
                hard_state,
                entries,
            } => {
                if let Some(hard_state) = hard_state {
                    self.hard_state = hard_state;
                }
                self.entries.extend(entries);
            }
            Output::Cut { after } => self.entries.retain(|entry| entry.id.index <= after.index),
            Output::InstallSnapshot { meta, data } => {
                if !self.entries.iter().any(|entry| entry.id == meta.last) {
                    self.entries.clear();
                }
                self.entries
                    .retain(|entry| entry.id.index > meta.last.index);
                self.snapshot = meta;
                self.snapshot_data = data;
            }
            other => unreachable!("not a write: {other:?}"),
        }
    }
}

pub struct Node {
    pub group: Group,
    pub disk: Disk,
    pub up: bool,
    /// Every `Commit` this node reported, in order.
    pub commits: Vec<EntryId>,
    /// Every output other than sends, persists and commits, in order.
    pub events: Vec<Output>,
    /// Writes not yet durable (lost on a crash), in order.
    pub unsynced: Vec<Output>,
    /// Sends waiting for `unsynced` to be durable.
    pub held: Vec<Envelope>,
}

/// Which messages a scenario loses on purpose.
pub type DropRule = Box<dyn Fn(&Envelope) -> bool>;

pub struct Cluster {
    pub nodes: BTreeMap<NodeId, Node>,
    pub now_ms: u64,
    pub queue: VecDeque<Envelope>,
    /// Links that drop every message: (from, to).
    pub cut_links: BTreeSet<(NodeId, NodeId)>,
    /// Drops the messages it is true of (beyond the cut links).
    pub drop_if: Option<DropRule>,
    /// Whether every write is durable as soon as it is made.
    pub instant_durability: bool,
    config: fn(NodeId) -> Config,
}

pub fn test_config(id: NodeId) -> Config {
    Config::test_min(id, 7)
}

impl Cluster {
    pub fn new(size: u64) -> Cluster {
        Cluster::with_config(size, test_config)
    }

    pub fn with_config(size: u64, config: fn(NodeId) -> Config) -> Cluster {
        let voters: Vec<u64> = (1..=size).collect();
        let restored = bootstrap(&voters);
        let nodes = voters
            .iter()
            .map(|id| {
                let disk = Disk {
                    snapshot: restored.snapshot.clone(),
                    ..Disk::default()
                };
                let node = Node {
                    group: Group::new(config(NodeId(*id)), disk.restored()),
                    disk,
                    up: true,
                    commits: Vec::new(),
                    events: Vec::new(),
                    unsynced: Vec::new(),
                    held: Vec::new(),
                };
                (NodeId(*id), node)
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            now_ms: 0,
            queue: VecDeque::new(),
            cut_links: BTreeSet::new(),
            drop_if: None,
            instant_durability: true,
            config,
        };
        for id in cluster.ids() {
            cluster.step(id, Input::Tick);
        }
        cluster
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[&NodeId(id)]
    }

    pub fn group(&self, id: u64) -> &Group {
        &self.node(id).group
    }

    /// Steps one node and executes its outputs. With `instant_durability`
    /// every write is durable at once (and reported so); otherwise writes and
    /// the sends that wait for them are held until `flush`, and a crash loses
    /// them.
    pub fn step(&mut self, id: NodeId, input: Input) -> Vec<Output> {
        let now_ms = self.now_ms;
        let node = self.nodes.get_mut(&id).expect("a member");
        if !node.up {
            return Vec::new();
        }
        let mut out = Vec::new();
        node.group.step(now_ms, input, &mut out);
        for output in &out {
            match output {
                Output::Persist { .. } | Output::Cut { .. } | Output::InstallSnapshot { .. } => {
                    node.unsynced.push(output.clone())
                }
                Output::Send(envelope) => self.queue.push_back(envelope.clone()),
                Output::SendAfterDurable(envelope) if node.unsynced.is_empty() => {
                    self.queue.push_back(envelope.clone())
                }
                Output::SendAfterDurable(envelope) => node.held.push(envelope.clone()),
                Output::Commit { through } => node.commits.push(*through),
                other => node.events.push(other.clone()),
            }
            if let Output::InstallSnapshot { .. } = output {
                node.events.push(output.clone());
            }
        }
        if self.instant_durability {
            out.extend(self.flush(id));
        }
        out
    }

    /// Makes everything `id` wrote durable, releases the sends that waited
    /// for it, and reports `Durable`.
    pub fn flush(&mut self, id: NodeId) -> Vec<Output> {
        let node = self.nodes.get_mut(&id).expect("a member");
        if !node.up || node.unsynced.is_empty() {
            return Vec::new();
        }
        for output in std::mem::take(&mut node.unsynced) {
            node.disk.apply(output);
        }
        self.queue.extend(std::mem::take(&mut node.held));
        let through = node.disk.last();
        let mut out = Vec::new();
        node.group
            .step(self.now_ms, Input::Durable { through }, &mut out);
        for output in &out {
            match output {
                Output::Send(envelope) => self.queue.push_back(envelope.clone()),
                Output::Commit { through } => node.commits.push(*through),
                other => node.events.push(other.clone()),
            }
        }
        out
    }

    /// Delivers queued messages (and what they cause) until none are left.
    pub fn deliver_all(&mut self) {
        let mut delivered = 0;
        while let Some(envelope) = self.queue.pop_front() {
            delivered += 1;
            assert!(delivered < 100_000, "the cluster does not quiesce");
            if self.cut_links.contains(&(envelope.from, envelope.to)) {
                continue;
            }
            if self.drop_if.as_ref().is_some_and(|drop| drop(&envelope)) {
                continue;
            }
            if self.nodes.get(&envelope.to).is_some_and(|node| node.up) {
                self.step(envelope.to, Input::Receive(envelope));
            }
        }
    }

    /// Delivers the oldest queued message from `from` to `to`, if any.
    pub fn deliver_one(&mut self, from: u64, to: u64) -> bool {
        let (from, to) = (NodeId(from), NodeId(to));
        let found = self
            .queue
            .iter()
            .position(|envelope| envelope.from == from && envelope.to == to);
        let Some(at) = found else {
            return false;
        };
        let envelope = self.queue.remove(at).expect("found");
        self.step(to, Input::Receive(envelope));
        true
    }

    /// Drops every message queued now.
    pub fn drop_queued(&mut self) {
        self.queue.clear();
    }

    /// Cuts every link between `side` and the rest, both ways.
    pub fn isolate(&mut self, side: &[u64]) {
        let side = ids(side);
        for a in self.ids() {
            for b in self.ids() {
                if side.contains(&a) != side.contains(&b) {
                    self.cut_links.insert((a, b));
                }
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut_links.clear();
    }

    /// Runs time forward to `until_ms`, ticking each node at its deadline and
    /// delivering everything in between.
    pub fn run_until(&mut self, until_ms: u64) {
        loop {
            self.deliver_all();
            let due = self
                .nodes
                .iter()
                .filter(|(_, node)| node.up)
                .filter_map(|(id, node)| node.group.next_deadline_ms().map(|at| (at, *id)))
                .min();
            match due {
                Some((at, id)) if at <= until_ms => {
                    self.now_ms = self.now_ms.max(at);
                    self.step(id, Input::Tick);
                }
                _ => break,
            }
        }
        self.now_ms = until_ms;
    }

    /// Makes `id` campaign now (as if its election timeout passed) and runs
    /// the election to its end.
    pub fn campaign(&mut self, id: u64) {
        let deadline = self.group(id).next_deadline_ms().expect("a voter");
        self.now_ms = self.now_ms.max(deadline);
        self.step(NodeId(id), Input::Tick);
        self.deliver_all();
    }

    /// Lets an election timeout pass without ticking anyone, so that no node
    /// still counts on a leader it heard from.
    pub fn forget_leaders(&mut self) {
        self.now_ms += 1_000;
    }

    pub fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, node)| node.up && node.group.role() == keel_replication::Role::Leader)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Crashes `id`: what it had not made durable is lost.
    pub fn crash(&mut self, id: u64) {
        let node = self.nodes.get_mut(&NodeId(id)).expect("a member");
        node.up = false;
        node.unsynced.clear();
        node.held.clear();
        self.queue
            .retain(|envelope| envelope.from != NodeId(id) && envelope.to != NodeId(id));
    }

    /// Restarts a crashed node from its disk.
    pub fn restart(&mut self, id: u64) {
        let config = (self.config)(NodeId(id));
        let node = self.nodes.get_mut(&NodeId(id)).expect("a member");
        node.group = Group::new(config, node.disk.restored());
        node.up = true;
        self.step(NodeId(id), Input::Tick);
    }

    pub fn propose(&mut self, id: u64, proposal: u64, command: &[u8]) -> Vec<Output> {
        self.step(
            NodeId(id),
            Input::Propose {
                proposal: keel_replication::ProposalId(proposal),
                command: command.into(),
            },
        )
    }
}
