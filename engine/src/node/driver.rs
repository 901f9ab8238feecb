//! One shard's driver: its consensus [`Group`], its key space and the
//! leader's overlay, as a plain struct with no runtime. The shard's tasks
//! (`node::shard`) feed it inputs and carry out the IO it queues: the
//! [`Write`]s for the WAL and the hard-state file, and the peer messages.
//!
//! It executes the group's outputs in order (docs/REPLICATION.md, "The
//! driver contract"):
//!
//! | output | what the driver does |
//! |---|---|
//! | `Persist` | queues the hard state and the entries as [`Write`]s, in order; the entries wait in `unapplied` for their commit |
//! | `Cut` | queues the cut, forgets the unapplied entries after it |
//! | `Send`, `SendAfterDurable` | queued in the outbox; the shard sends the first now and the second after its next sync |
//! | `Commit` | applies the unapplied entries through it to the key space, in index order, dropping each from the overlay |
//! | `Resolve` | the proposal's `EntryId` (every proposal resolves in the step that makes it) |
//!
//! A reply waits for the commit of its own `EntryId`, term and index: if
//! another entry commits at its index, it was superseded ([`Driver::outcome`]).
//! Entries restored from the WAL are applied only when the group commits them
//! (a group of one: once its new term's no-op commits).
//!
//! # Reads
//! A command runs against the key space under the overlay of this leader's
//! uncommitted entries, and only once the leader's no-op has committed
//! ([`Driver::readable`]): before that, entries of earlier terms may still be
//! unapplied and in no overlay. A group of one needs no ReadIndex round: no
//! other node can lead. With peers, a read asks `Input::Read` here and runs
//! once `ReadReady` says the key space applied the index it names (the
//! `Output::ReadReady` arm of `execute_outputs` is where that goes).

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use keel_replication::{
    CommandBytes, Config, Entry, EntryId, EntryPayload, Envelope, Group, HardState, Input,
    LogIndex, NotLeader, Output, ProposalId, ReadId, Refusal, Restored, Role, Term,
};

use crate::keyspace::Keyspace;
use crate::node::io::ShardObserver;
use crate::node::planted::NodePlant;
use crate::operation::Operation;
use crate::overlay::{Overlay, View};
use crate::snapshot;

/// How many changes of term among committed entries the driver remembers to
/// tell a reply whether its own entry committed (one per election). A reply
/// waiting on an entry older than all of them fails safe: `-TRYAGAIN`.
pub const COMMITTED_TERMS_MAX: usize = 4_096;

/// A write the group asked for that the WAL (or the hard-state file) has not
/// taken yet, in the order asked.
#[derive(Debug)]
pub enum Write {
    HardState(HardState),
    Entries(Vec<Entry>),
    Cut {
        after: EntryId,
        /// The index applied when the group decided the cut: the WAL
        /// refuses to cut below it. Taken then, not when the cut is carried
        /// out: the same step may commit entries that follow the cut (a
        /// deposed leader's conflicting tail replaced by the new leader's
        /// entries and commit index), and those are written after it.
        floor: LogIndex,
    },
    /// A snapshot from the leader, verified, that the key space now holds.
    Snapshot(Box<snapshot::Loaded<Vec<u8>>>),
}

/// A message for a peer, and whether it must wait for the next sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub envelope: Envelope,
    pub after_durable: bool,
}

/// Writes are equal when they write the same bytes (tests compare them).
impl PartialEq for Write {
    fn eq(&self, other: &Write) -> bool {
        match (self, other) {
            (Write::HardState(a), Write::HardState(b)) => a == b,
            (Write::Entries(a), Write::Entries(b)) => a == b,
            (
                Write::Cut {
                    after: a,
                    floor: floor_a,
                },
                Write::Cut {
                    after: b,
                    floor: floor_b,
                },
            ) => a == b && floor_a == floor_b,
            (Write::Snapshot(a), Write::Snapshot(b)) => {
                a.meta() == b.meta() && a.bytes() == b.bytes()
            }
            _ => false,
        }
    }
}

/// An entry in the log, not yet applied to the key space.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Unapplied {
    id: EntryId,
    held: Held,
}

/// An unapplied entry's operation as the driver holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Held {
    /// An entry that changes no key (a no-op).
    Nothing,
    /// This leader's own proposal, as the command made it.
    Decoded(Operation),
    /// An entry restored from the WAL or received, decoded when applied:
    /// the bytes are shared with the group's log, so holding many of them
    /// (a restart's whole WAL tail) costs no allocation each.
    Encoded(CommandBytes),
}

/// The operation in entry `id`'s bytes (checksummed in the WAL and on the
/// wire: recovery decodes each once before serving, so a failure here means
/// an incompatible leader).
fn decode_entry(id: EntryId, bytes: &[u8]) -> Operation {
    keel_wal::codec::decode(bytes).unwrap_or_else(|error| {
        panic!("entry {id} does not decode ({error}): an incompatible leader")
    })
}

impl Held {
    fn into_operation(self, id: EntryId) -> Option<Operation> {
        match self {
            Held::Nothing => None,
            Held::Decoded(op) => Some(op),
            Held::Encoded(bytes) => Some(decode_entry(id, &bytes)),
        }
    }
}

/// Why a command cannot run on this shard now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotReady {
    /// Another node leads, or none yet: `leader` if known.
    NotLeader(Option<keel_replication::NodeId>),
    /// This node leads but its no-op has not committed: wait for `noop`.
    Catching { noop: EntryId },
}

/// The driver of one shard (see the module doc).
pub struct Driver {
    group: Group,
    keyspace: Keyspace,
    overlay: Overlay,
    unapplied: VecDeque<Unapplied>,
    writes: Vec<Write>,
    outbox: Vec<Outgoing>,
    /// Reads the group answered since the last call of `take_ready_reads`.
    ready_reads: Vec<(ReadId, Result<LogIndex, NotLeader>)>,
    /// The last entry applied to the key space.
    applied: EntryId,
    /// This node's no-op, while it leads: commands wait for its commit.
    leading_since: Option<EntryId>,
    /// `(first index, term)` of each run of committed entries of one term.
    committed_terms: VecDeque<(LogIndex, Term)>,
    /// The proposal being made, with its operation (its entry's bytes are
    /// the encoding: applying the kept operation spares a decode).
    proposing: Option<(ProposalId, Operation)>,
    proposed: Option<(EntryId, Operation)>,
    resolved: Option<Result<EntryId, Refusal>>,
    next_proposal: u64,
    out: Vec<Output>,
    shard: u32,
    observer: Option<Rc<dyn ShardObserver>>,
    /// The last entry restored from the WAL: the state after it is what
    /// recovery led to, once committed.
    restored_last: LogIndex,
    /// Whether the observer has been told that state.
    recovery_reported: bool,
    #[cfg(feature = "planted-bugs")]
    pub plant: Option<NodePlant>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("shard", &self.shard)
            .field("role", &self.group.role())
            .field("term", &self.group.term())
            .field("last", &self.group.last())
            .field("applied", &self.applied)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// A driver for a group restarting from `restored`, whose key space
    /// `keyspace` holds the snapshot (`restored.snapshot.last`).
    pub fn new(
        config: Config,
        restored: Restored,
        keyspace: Keyspace,
        shard: u32,
        observer: Option<Rc<dyn ShardObserver>>,
    ) -> Driver {
        let applied = restored.snapshot.last;
        let held: Vec<Unapplied> = restored
            .entries
            .iter()
            .map(|entry| Unapplied {
                id: entry.id,
                held: match &entry.payload {
                    EntryPayload::Noop => Held::Nothing,
                    EntryPayload::Command(bytes) => Held::Encoded(bytes.clone()),
                    EntryPayload::Membership(_) => {
                        panic!(
                            "entry {}: membership entries are never logged by a group of one",
                            entry.id
                        )
                    }
                },
            })
            .collect();
        let group = Group::new(config, restored);
        if let Some(observer) = &observer {
            observer.restarted_with(shard, group.hard_state());
            observer.restored(shard, group.last().index.0);
        }
        // The core keeps only the entries that follow the snapshot (§5.1).
        let unapplied = held
            .into_iter()
            .filter(|entry| {
                entry.id.index > applied.index && group.id_at(entry.id.index) == Some(entry.id)
            })
            .collect();
        Driver {
            restored_last: group.last().index,
            group,
            keyspace,
            overlay: Overlay::default(),
            unapplied,
            writes: Vec::new(),
            outbox: Vec::new(),
            ready_reads: Vec::new(),
            applied,
            leading_since: None,
            committed_terms: VecDeque::new(),
            proposing: None,
            proposed: None,
            resolved: None,
            next_proposal: 1,
            out: Vec::new(),
            shard,
            observer,
            recovery_reported: false,
            #[cfg(feature = "planted-bugs")]
            plant: crate::node::planted::node(),
        }
    }

    /// Whether this driver runs with `plant` (never without the feature).
    #[allow(unused_variables)]
    fn planted(&self, plant: NodePlant) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.plant == Some(plant);
        #[cfg(not(feature = "planted-bugs"))]
        return false;
    }

    pub fn group(&self) -> &Group {
        &self.group
    }

    /// What the last compaction took out of the group's memory, to free.
    pub fn take_compacted(&mut self) -> VecDeque<Entry> {
        self.group.take_compacted()
    }

    /// The committed key space (what snapshots hold).
    pub fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    pub fn applied(&self) -> EntryId {
        self.applied
    }

    /// The newest uncommitted entry of this leader, if any.
    pub fn overlay_last(&self) -> Option<EntryId> {
        self.overlay.last()
    }

    /// What commands read: the key space under the overlay, noting the
    /// newest uncommitted entry read in `observed`.
    pub fn view<'a>(&'a self, observed: &'a Cell<Option<EntryId>>) -> View<'a> {
        View::new(&self.keyspace, &self.overlay, observed)
    }

    /// Whether a command may run now (see the module doc).
    pub fn readable(&self) -> Result<(), NotReady> {
        if self.group.role() != Role::Leader {
            return Err(NotReady::NotLeader(self.group.leader()));
        }
        let noop = self.leading_since.expect("a leader knows its no-op");
        if self.applied.index < noop.index {
            return Err(NotReady::Catching { noop });
        }
        Ok(())
    }

    /// Feeds one input and executes the outputs.
    pub fn step(&mut self, now_ms: u64, input: Input) {
        let was_leader = self.group.role() == Role::Leader;
        let mut out = std::mem::take(&mut self.out);
        self.group.step(now_ms, input, &mut out);
        let leads = self.group.role() == Role::Leader;
        if was_leader && !leads {
            // Its uncommitted entries may be cut and replaced (by the outputs
            // of this very step): no command may read them any more.
            self.overlay.clear();
            self.leading_since = None;
        }
        if leads && !was_leader {
            // `become_leader` appended the no-op last, in this very step.
            self.leading_since = Some(self.group.last());
        }
        self.execute_outputs(&mut out);
        self.out = out;
    }

    /// Proposes `op`, encoded as `payload`: its entry id, or why none. On
    /// success the overlay holds its writes.
    pub fn propose(
        &mut self,
        now_ms: u64,
        op: Operation,
        command: Arc<[u8]>,
    ) -> Result<EntryId, Refusal> {
        let proposal = ProposalId(self.next_proposal);
        self.next_proposal += 1;
        self.proposing = Some((proposal, op));
        self.step(now_ms, Input::Propose { proposal, command });
        self.proposing = None;
        self.resolved
            .take()
            .expect("a proposal resolves in the step that makes it")
    }

    /// Every `Persist` so far is durable through `through`.
    pub fn durable(&mut self, now_ms: u64, through: EntryId) {
        self.step(now_ms, Input::Durable { through });
    }

    /// The writes queued since the last call, in order.
    pub fn take_writes(&mut self) -> Vec<Write> {
        std::mem::take(&mut self.writes)
    }

    pub fn has_writes(&self) -> bool {
        !self.writes.is_empty()
    }

    /// The messages queued since the last call, in order.
    pub fn take_outbox(&mut self) -> Vec<Outgoing> {
        std::mem::take(&mut self.outbox)
    }

    /// The reads the group answered since the last call, in order.
    pub fn take_ready_reads(&mut self) -> Vec<(ReadId, Result<LogIndex, NotLeader>)> {
        std::mem::take(&mut self.ready_reads)
    }

    /// Whether another node could lead this group: its reads must then be
    /// confirmed by a round (a sole voter needs none).
    pub fn has_peers(&self) -> bool {
        let membership = self.group.membership();
        membership.voters.len() + membership.learners.len() > 1
    }

    /// Whether the reply waiting for entry `id` may go: `None` while its
    /// index is not applied, then whether `id` itself committed there.
    pub fn outcome(&self, id: EntryId) -> Option<Result<(), Superseded>> {
        if self.applied.index < id.index {
            return None;
        }
        if self.planted(NodePlant::ReplyOnIndexNotEntry) {
            return Some(Ok(()));
        }
        let committed = self
            .committed_terms
            .iter()
            .rev()
            .find(|(first, _)| *first <= id.index)
            .map(|(_, term)| *term);
        Some(if committed == Some(id.term) {
            Ok(())
        } else {
            Err(Superseded {
                entry: id,
                committed,
            })
        })
    }

    fn execute_outputs(&mut self, out: &mut Vec<Output>) {
        for output in out.drain(..) {
            match output {
                Output::Cut { after } => {
                    assert!(
                        self.overlay.is_empty(),
                        "a leader never cuts its own log: its overlay is dropped on step-down"
                    );
                    self.unapplied.retain(|entry| entry.id.index <= after.index);
                    self.writes.push(Write::Cut {
                        after,
                        floor: self.applied.index,
                    });
                }
                Output::Persist {
                    hard_state,
                    entries,
                } => self.on_persist(hard_state, entries),
                Output::Send(envelope) => self.outbox.push(Outgoing {
                    envelope,
                    after_durable: false,
                }),
                Output::SendAfterDurable(envelope) => self.outbox.push(Outgoing {
                    envelope,
                    after_durable: true,
                }),
                Output::Commit { through } => {
                    if let (Some(observer), Role::Leader) = (&self.observer, self.group.role()) {
                        observer.leader_committed(self.shard, self.group.term().0, through);
                    }
                    self.apply_through(through);
                }
                Output::Resolve { proposal, result } => self.on_resolve(proposal, result),
                Output::ReadReady { read, result } => self.ready_reads.push((read, result)),
                Output::InstallSnapshot { meta, data } => self.on_install(meta.last, data),
                // Routing and metrics follow the membership; a group of one
                // has nothing to route.
                Output::MembershipChanged(_) => {}
            }
        }
    }

    /// The leader's snapshot through `last` replaces the key space (applied
    /// through `last` now), and goes to the disk before anything that
    /// follows it. A snapshot that does not verify came from an incompatible
    /// or damaged leader past the wire's checksums: the node stops.
    fn on_install(&mut self, last: EntryId, data: Vec<u8>) {
        assert!(
            self.overlay.is_empty() && self.group.role() != Role::Leader,
            "only a follower installs a snapshot"
        );
        let snapshot = snapshot::from_peer(data, self.shard, last.index).unwrap_or_else(|error| {
            panic!(
                "shard {}: the leader's snapshot through {last} does not verify: {error}",
                self.shard
            )
        });
        assert_eq!(
            snapshot.meta().last_term,
            last.term,
            "the snapshot's file names the entry the group installs"
        );
        self.report_recovery();
        let mut keyspace = self.keyspace.empty_like();
        keyspace.reserve(usize::try_from(snapshot.keys()).unwrap_or(usize::MAX));
        for (key, value, expire) in snapshot.items() {
            keyspace.insert_loaded(key, value, expire);
        }
        self.keyspace = keyspace;
        let group = &self.group;
        self.unapplied.retain(|entry| {
            entry.id.index > last.index && group.id_at(entry.id.index) == Some(entry.id)
        });
        // Which terms the skipped entries had is not known: a reply waiting
        // on one of them fails safe (`outcome`), as for a forgotten term.
        self.note_committed_term(self.applied.index.next(), Term(0));
        self.note_committed_term(last.index, last.term);
        self.applied = last;
        if let Some(observer) = &self.observer {
            observer.installed(self.shard, last.index.0, &self.keyspace);
        }
        self.writes.push(Write::Snapshot(Box::new(snapshot)));
    }

    /// Entries from `first` on committed in `term` (until the next run).
    fn note_committed_term(&mut self, first: LogIndex, term: Term) {
        if self
            .committed_terms
            .back()
            .is_some_and(|(_, last)| *last == term)
        {
            return;
        }
        if self.committed_terms.len() == COMMITTED_TERMS_MAX {
            self.committed_terms.pop_front();
        }
        self.committed_terms.push_back((first, term));
    }

    fn on_resolve(&mut self, proposal: ProposalId, result: Result<EntryId, Refusal>) {
        let (expected, op) = self
            .proposing
            .take()
            .expect("only a proposal being made resolves");
        assert_eq!(proposal, expected, "the proposal being made resolves");
        if let Ok(id) = result {
            self.proposed = Some((id, op));
        }
        self.resolved = Some(result);
    }

    fn on_persist(&mut self, hard_state: Option<HardState>, entries: Vec<Entry>) {
        if let Some(hard_state) = hard_state {
            self.writes.push(Write::HardState(hard_state));
        }
        if entries.is_empty() {
            return;
        }
        for entry in &entries {
            let held = match &entry.payload {
                EntryPayload::Noop => Held::Nothing,
                EntryPayload::Command(bytes) => match self.proposed.take() {
                    Some((proposed, op)) if proposed == entry.id => Held::Decoded(op),
                    other => {
                        self.proposed = other;
                        Held::Encoded(bytes.clone())
                    }
                },
                EntryPayload::Membership(_) => panic!(
                    "membership entry {}: membership changes come with the peer seam, not built yet",
                    entry.id
                ),
            };
            if let Held::Decoded(op) = &held {
                assert_eq!(self.group.role(), Role::Leader, "only a leader proposes");
                let below = View::from(&self.keyspace);
                self.overlay.write(below, op, entry.id);
            }
            self.report_logged(entry.id, &held);
            if self.planted(NodePlant::ApplyBeforeCommit) {
                if let Some(op) = held.clone().into_operation(entry.id) {
                    self.keyspace.apply(&op);
                }
            }
            self.unapplied.push_back(Unapplied { id: entry.id, held });
        }
        self.writes.push(Write::Entries(entries));
    }

    /// Applies every unapplied entry through `through`, in index order.
    fn apply_through(&mut self, through: EntryId) {
        while let Some(next) = self
            .unapplied
            .front()
            .filter(|entry| entry.id.index <= through.index)
        {
            if next.id.index > self.restored_last {
                self.report_recovery();
            }
            let Unapplied { id, held } = self.unapplied.pop_front().expect("a front entry");
            let op = held.into_operation(id);
            assert_eq!(
                id.index.0,
                self.applied.index.0 + 1,
                "entries apply in index order, none skipped"
            );
            if let Some(op) = &op {
                if !self.planted(NodePlant::ApplyBeforeCommit) {
                    self.keyspace.apply(op);
                }
            }
            self.overlay.committed(id);
            self.applied = id;
            self.note_committed_term(id.index, id.term);
            self.report_applied(id, op.as_ref());
        }
        if self.applied.index >= self.restored_last {
            self.report_recovery();
        }
    }

    /// Tells the observer of each entry applied after those restored from
    /// the WAL (a no-op as the empty batch, which changes nothing); the
    /// restored ones it learns of as the state recovery led to.
    fn report_applied(&self, id: EntryId, op: Option<&Operation>) {
        let (Some(observer), true) = (&self.observer, self.recovery_reported) else {
            return;
        };
        let nothing = Operation::Batch { ops: Vec::new() };
        observer.applied(self.shard, id.index.0, op.unwrap_or(&nothing));
    }

    fn report_recovery(&mut self) {
        if self.recovery_reported {
            return;
        }
        self.recovery_reported = true;
        if let Some(observer) = &self.observer {
            observer.recovered(self.shard, self.applied.index.0, &self.keyspace);
        }
    }

    /// Tells the observer that entry `id`, holding `held`, goes to the WAL:
    /// at once, even before recovery is reported (the new term's no-op), as
    /// a boot may stop with it durable before then.
    fn report_logged(&self, id: EntryId, held: &Held) {
        let Some(observer) = &self.observer else {
            return;
        };
        let op = held
            .clone()
            .into_operation(id)
            .unwrap_or(Operation::Batch { ops: Vec::new() });
        observer.logged(self.shard, id.index.0, &op);
    }
}

/// A reply's entry did not commit: another entry did at its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superseded {
    pub entry: EntryId,
    /// The term committed at its index, if still known.
    pub committed: Option<Term>,
}

#[cfg(test)]
mod tests {
    use keel_replication::{AppendResult, Membership, Message, NodeId, SnapshotMeta};

    use super::*;

    fn set(key: &str, value: &str) -> Operation {
        Operation::Set {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            expire_at_unix_ms: None,
        }
    }

    fn command(op: &Operation) -> Entry {
        Entry {
            id: EntryId::ZERO,
            payload: EntryPayload::Command(
                keel_wal::codec::encode_shared(op, usize::MAX).expect("encodes"),
            ),
        }
    }

    fn with_id(mut entry: Entry, term: u64, index: u64) -> Entry {
        entry.id = EntryId::new(term, index);
        entry
    }

    fn noop(term: u64, index: u64) -> Entry {
        Entry {
            id: EntryId::new(term, index),
            payload: EntryPayload::Noop,
        }
    }

    fn driver(voters: &[u64], entries: Vec<Entry>) -> Driver {
        driver_with(voters, HardState::default(), entries)
    }

    fn driver_with(voters: &[u64], hard_state: HardState, entries: Vec<Entry>) -> Driver {
        let restored = Restored {
            hard_state,
            snapshot: SnapshotMeta {
                last: EntryId::ZERO,
                membership: Membership {
                    voters: voters.iter().map(|id| NodeId(*id)).collect(),
                    learners: Default::default(),
                },
            },
            entries,
            ..Restored::default()
        };
        Driver::new(
            Config::new(NodeId(1), 0),
            restored,
            Keyspace::new(),
            0,
            None,
        )
    }

    fn get(driver: &Driver, key: &str) -> Option<Vec<u8>> {
        let observed = Cell::new(None);
        driver
            .view(&observed)
            .get(key.as_bytes(), 0)
            .map(|item| item.value.to_vec())
    }

    fn committed(driver: &Driver, key: &str) -> Option<Vec<u8>> {
        driver
            .keyspace()
            .get(key.as_bytes(), 0)
            .map(|item| item.value.to_vec())
    }

    fn from(node: u64, term: u64, message: Message) -> Input {
        Input::Receive(Envelope {
            from: NodeId(node),
            to: NodeId(1),
            term: keel_replication::Term(term),
            message,
        })
    }

    #[test]
    fn a_group_of_one_elects_itself_at_its_first_tick_and_serves_once_its_noop_commits() {
        let mut driver = driver(&[1], Vec::new());
        driver.step(0, Input::Tick);
        assert_eq!(
            driver.group().role(),
            Role::Leader,
            "no election timeout sat out"
        );
        assert_eq!(
            driver.take_writes(),
            vec![
                Write::HardState(HardState {
                    term: Term(1),
                    voted_for: Some(NodeId(1))
                }),
                Write::Entries(vec![noop(1, 1)]),
            ]
        );
        assert_eq!(
            driver.readable(),
            Err(NotReady::Catching {
                noop: EntryId::new(1, 1)
            })
        );
        driver.durable(0, EntryId::new(1, 1));
        assert_eq!(driver.applied(), EntryId::new(1, 1));
        assert_eq!(driver.readable(), Ok(()));
        assert!(
            driver.take_outbox().is_empty(),
            "nothing to send in a group of one"
        );
    }

    #[test]
    fn a_write_is_in_the_overlay_until_it_commits_then_in_the_key_space() {
        let mut driver = driver(&[1], Vec::new());
        driver.step(0, Input::Tick);
        driver.durable(0, EntryId::new(1, 1));
        driver.take_writes();
        let op = set("k", "v");
        let payload = keel_wal::codec::encode_shared(&op, usize::MAX).expect("encodes");
        let id = driver
            .propose(0, op.clone(), payload)
            .expect("the leader takes it");
        assert_eq!(id, EntryId::new(1, 2));
        assert_eq!(
            driver.take_writes(),
            vec![Write::Entries(vec![with_id(command(&op), 1, 2)])]
        );
        assert_eq!(
            get(&driver, "k"),
            Some(b"v".to_vec()),
            "the overlay shows it"
        );
        assert_eq!(
            committed(&driver, "k"),
            None,
            "not applied before its commit"
        );
        assert_eq!(driver.outcome(id), None);
        let observed = Cell::new(None);
        driver.view(&observed).get(b"k", 0);
        assert_eq!(
            observed.get(),
            Some(id),
            "a read of it waits for its commit"
        );
        driver.durable(0, id);
        assert_eq!(committed(&driver, "k"), Some(b"v".to_vec()));
        assert_eq!(
            driver.overlay_last(),
            None,
            "dropped from the overlay at commit"
        );
        assert_eq!(driver.outcome(id), Some(Ok(())));
    }

    #[test]
    fn restored_entries_are_applied_only_when_the_new_terms_noop_commits() {
        let op = set("k", "restored");
        let entries = vec![noop(1, 1), with_id(command(&op), 1, 2)];
        let term_1 = HardState {
            term: Term(1),
            voted_for: Some(NodeId(1)),
        };
        let mut driver = driver_with(&[1], term_1, entries);
        driver.step(0, Input::Tick);
        assert_eq!(committed(&driver, "k"), None);
        assert_eq!(
            driver.take_writes(),
            vec![
                Write::HardState(HardState {
                    term: Term(2),
                    voted_for: Some(NodeId(1))
                }),
                Write::Entries(vec![noop(2, 3)]),
            ]
        );
        assert_eq!(
            driver.applied(),
            EntryId::ZERO,
            "term 1's entries wait for term 2's no-op"
        );
        driver.durable(0, EntryId::new(2, 3));
        assert_eq!(committed(&driver, "k"), Some(b"restored".to_vec()));
        assert_eq!(driver.applied(), EntryId::new(2, 3));
    }

    /// Node 1 leads term 1 of a group of three and proposes a write; node
    /// 3, elected in term 2 without it, replaces it at its index and
    /// commits there. Returns node 1's driver and its write's entry.
    fn a_write_replaced_by_a_competing_leader(
        #[allow(unused_variables)] plant: Option<NodePlant>,
    ) -> (Driver, EntryId) {
        let mut driver = driver(&[1, 2, 3], Vec::new());
        #[cfg(feature = "planted-bugs")]
        {
            driver.plant = plant;
        }
        driver.step(0, Input::Tick);
        driver.step(5_000, Input::Tick);
        driver.step(5_000, from(2, 1, Message::PreVoteReply { granted: true }));
        driver.step(5_000, from(2, 1, Message::VoteReply { granted: true }));
        assert_eq!(driver.group().role(), Role::Leader);
        let mine = set("k", "mine");
        let payload = keel_wal::codec::encode_shared(&mine, usize::MAX).expect("encodes");
        let id = driver
            .propose(5_000, mine, payload)
            .expect("the leader takes it");
        assert_eq!(id, EntryId::new(1, 2));
        driver.take_writes();
        driver.take_outbox();
        let theirs = with_id(command(&set("k", "theirs")), 2, 2);
        let append = Message::Append {
            prev: EntryId::ZERO,
            entries: vec![noop(2, 1), theirs.clone()],
            commit: LogIndex(2),
            read_round: 0,
        };
        driver.step(5_001, from(3, 2, append));
        assert_eq!(driver.group().role(), Role::Follower);
        assert_eq!(
            driver.take_writes(),
            vec![
                Write::HardState(HardState {
                    term: Term(2),
                    voted_for: None
                }),
                Write::Cut {
                    after: EntryId::ZERO,
                    floor: LogIndex(0),
                },
                Write::Entries(vec![noop(2, 1), theirs]),
            ]
        );
        let outbox = driver.take_outbox();
        assert!(
            matches!(
                &outbox[..],
                [Outgoing {
                    envelope: Envelope {
                        message: Message::AppendReply {
                            result: AppendResult::Ok { .. },
                            ..
                        },
                        ..
                    },
                    after_durable: true
                }]
            ),
            "the ack waits for the write: {outbox:?}"
        );
        (driver, id)
    }

    #[test]
    fn a_reply_whose_entry_is_replaced_at_its_index_is_superseded() {
        let (driver, id) = a_write_replaced_by_a_competing_leader(None);
        assert_eq!(driver.applied(), EntryId::new(2, 2));
        assert_eq!(committed(&driver, "k"), Some(b"theirs".to_vec()));
        assert_eq!(
            get(&driver, "k"),
            Some(b"theirs".to_vec()),
            "the overlay was dropped"
        );
        assert_eq!(
            driver.outcome(id),
            Some(Err(Superseded {
                entry: id,
                committed: Some(Term(2))
            })),
            "the client gets -TRYAGAIN, not OK"
        );
    }

    /// The bytes of a snapshot file of shard 0 through `last` holding `items`.
    fn snapshot_bytes(last: EntryId, items: &[(&str, &str)]) -> Vec<u8> {
        let storage = keel_wal::MemStorage::new();
        keel_wal::run_ready(async {
            let meta = snapshot::SnapshotMeta {
                shard: 0,
                last_index: last.index,
                last_term: last.term,
            };
            let mut writer = snapshot::SnapshotWriter::create(storage.clone(), meta).await?;
            for (key, value) in items {
                writer.push(key.as_bytes(), value.as_bytes(), None);
            }
            writer.finish().await
        })
        .expect("the snapshot is written");
        let loaded = snapshot::load_newest(&storage)
            .expect("loads")
            .expect("exists");
        loaded.bytes().to_vec()
    }

    /// A follower behind a leader's compaction gets its snapshot: its key
    /// space becomes the snapshot's (an unapplied entry of its own log that
    /// the snapshot supersedes is gone), it is applied through the
    /// snapshot's entry, and the file is queued for the disk before the
    /// acknowledgement may leave.
    #[test]
    fn a_follower_installs_its_leaders_snapshot_over_its_key_space() {
        let mine = with_id(command(&set("old", "mine")), 1, 1);
        let mut driver = driver(&[1, 2, 3], vec![mine]);
        driver.step(0, Input::Tick);
        let last = EntryId::new(2, 10);
        let data = snapshot_bytes(last, &[("k", "from the leader")]);
        let meta = SnapshotMeta {
            last,
            membership: Membership {
                voters: [1, 2, 3].into_iter().map(NodeId).collect(),
                learners: Default::default(),
            },
        };
        let message = Message::Snapshot {
            meta,
            offset: 0,
            data: data.clone(),
            done: true,
        };
        driver.step(100, from(2, 2, message));
        assert_eq!(driver.applied(), last);
        assert_eq!(committed(&driver, "k"), Some(b"from the leader".to_vec()));
        assert_eq!(committed(&driver, "old"), None);
        let writes = driver.take_writes();
        assert!(
            matches!(writes.last(), Some(Write::Snapshot(snapshot)) if snapshot.bytes() == data),
            "{writes:?}"
        );
        assert!(
            driver
                .take_outbox()
                .iter()
                .all(|message| message.after_durable),
            "the acknowledgement waits for the install to be durable"
        );
        assert_eq!(
            driver.outcome(EntryId::new(1, 1)),
            Some(Err(Superseded {
                entry: EntryId::new(1, 1),
                committed: Some(Term(0))
            })),
            "an entry the snapshot skipped over is not known to have committed"
        );
    }

    #[cfg(feature = "planted-bugs")]
    mod planted {
        use super::*;

        /// Caught only with a competing leader: a multi-node simulation.
        #[test]
        fn reply_on_index_not_entry_acknowledges_a_replaced_write() {
            let (driver, id) =
                a_write_replaced_by_a_competing_leader(Some(NodePlant::ReplyOnIndexNotEntry));
            assert_eq!(driver.outcome(id), Some(Ok(())), "the contract breaks");
        }

        /// A follower given an entry that never commits: with the plant the
        /// key space shows it at once.
        #[test]
        fn apply_before_commit_shows_an_entry_that_may_never_commit() {
            for plant in [None, Some(NodePlant::ApplyBeforeCommit)] {
                let mut driver = driver(&[1, 2, 3], Vec::new());
                driver.plant = plant;
                driver.step(0, Input::Tick);
                let append = Message::Append {
                    prev: EntryId::ZERO,
                    entries: vec![with_id(command(&set("k", "uncommitted")), 1, 1)],
                    commit: LogIndex(0),
                    read_round: 0,
                };
                driver.step(1, from(2, 1, append));
                assert_eq!(driver.applied(), EntryId::ZERO, "nothing committed");
                let shown = committed(&driver, "k");
                assert_eq!(shown.is_some(), plant.is_some(), "{plant:?}: {shown:?}");
            }
        }
    }
}
