//! The linearizability checker: is there an order of a history's operations that
//! a sequential model accepts and that respects real time (an operation that
//! returned before another was invoked comes first)?
//!
//! The search is Wing & Gong's, with Lowe's just-in-time linearisation and state
//! memoisation, as in Porcupine (github.com/anishathalye/porcupine, `checker.go`):
//! the call and return events of a partition sit in one time-ordered linked list.
//! Walking it, the checker tries to linearize each call it meets (the model must
//! accept the call's output from the current state, and the pair (set of
//! linearized operations, new state) must not have been explored before). On
//! success it unlinks the call and its return and restarts from the head; on
//! reaching a return whose call is not yet linearized it backtracks, undoing the
//! most recent linearization. The history is linearizable when the list empties,
//! and is not when a return is reached with nothing to undo.
//!
//! Independent parts of the state (keys, hash tags) are checked separately
//! ([`Model::partition_key`]), which is what makes long histories tractable: the
//! search is exponential in the concurrency of one partition, not of the history.
//!
//! The search is bounded by a step count, not by wall time, so that a verdict never
//! depends on the machine: [`SEARCH_STEPS_MAX`] per partition.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;

use hashbrown::{Equivalent, HashSet};

use crate::history::Operation;
#[cfg(doc)]
use crate::history::RETURN_TIME_NEVER;

/// Search steps (list positions visited) allowed per partition before the checker
/// gives up with [`Verdict::Unknown`]. The hardest partition of the external corpus
/// (etcd_002) takes between 1 and 2 million; every step can add one configuration
/// to the memo, so this also bounds its memory (to the order of a gigabyte for
/// small states).
pub const SEARCH_STEPS_MAX: u64 = 10_000_000;

/// Steps one partition's search runs before the next partition's turn.
pub const SEARCH_SLICE_STEPS: u64 = 10_000;

/// A sequential specification: what one partition of the system does when its
/// operations run one at a time.
pub trait Model {
    /// One partition's state. Hashed for every explored configuration, so keep it
    /// small.
    type State: Clone + Eq + Hash + Debug;
    type Input: Debug;
    type Output: Debug;
    /// Names a partition: operations with different keys never touch the same
    /// state, so they are checked separately.
    type PartitionKey: Ord + Clone + Debug;

    /// The state before any operation.
    fn init() -> Self::State;

    /// The states `input` may leave behind when it runs on `state`, taking
    /// effect at some instant of `window`, and answers `output` there; none
    /// when the output is impossible (including an output of the wrong kind).
    /// An unknown output (`None`) is possible whenever `input` is. Models
    /// without time ignore `window` and give at most one state; a model with
    /// time may give several (a key may have expired by then, or not).
    fn step(
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
        window: Window,
    ) -> Vec<Self::State>;

    /// The partition `input` belongs to.
    fn partition_key(input: &Self::Input) -> Self::PartitionKey;
}

/// When an operation may take effect: at some instant from its invocation to
/// its return, on the history's clock (`to` is [`RETURN_TIME_NEVER`] for an
/// operation that never returned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub from: u64,
    pub to: u64,
}

impl Window {
    fn of<I, O>(operation: &Operation<I, O>) -> Window {
        Window {
            from: operation.invoke_time,
            to: operation.return_time,
        }
    }
}

/// An operation of `M`'s history.
pub type ModelOperation<M> = Operation<<M as Model>::Input, <M as Model>::Output>;

/// The checker's answer for a whole history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<K> {
    Linearizable,
    /// No order of `partition`'s `operations` fits the model; at best
    /// `longest_prefix` of them could be linearized.
    NotLinearizable {
        partition: K,
        operations: usize,
        longest_prefix: usize,
    },
    /// The search of `partition` used up its budget of `steps` without an answer.
    Unknown {
        partition: K,
        steps: u64,
    },
}

impl<K> Verdict<K> {
    /// `Some(linearizable)`, or `None` when the search gave up.
    pub fn is_linearizable(&self) -> Option<bool> {
        match self {
            Verdict::Linearizable => Some(true),
            Verdict::NotLinearizable { .. } => Some(false),
            Verdict::Unknown { .. } => None,
        }
    }
}

/// Checks `history` against `M` with the default budget, [`SEARCH_STEPS_MAX`].
pub fn check<M: Model>(history: &[ModelOperation<M>]) -> Verdict<M::PartitionKey> {
    check_with_budget::<M>(history, SEARCH_STEPS_MAX)
}

/// Checks `history` against `M`, allowing `search_steps_max` steps per partition.
///
/// The partitions are searched round-robin, [`SEARCH_SLICE_STEPS`] at a time, and
/// the first to prove itself not linearizable decides the verdict: one
/// counterexample is enough, and refuting one partition is often far cheaper than
/// refuting (or exhausting the budget on) another. This is Porcupine's parallel
/// search with its kill switch, made deterministic.
pub fn check_with_budget<M: Model>(
    history: &[ModelOperation<M>],
    search_steps_max: u64,
) -> Verdict<M::PartitionKey> {
    let mut partitions: BTreeMap<M::PartitionKey, Vec<&ModelOperation<M>>> = BTreeMap::new();
    for operation in history {
        partitions
            .entry(M::partition_key(&operation.input))
            .or_default()
            .push(operation);
    }
    let mut undecided: Vec<(M::PartitionKey, Search<'_, M>)> = partitions
        .into_iter()
        .map(|(partition, operations)| (partition, Search::new(operations)))
        .collect();
    let mut exhausted = None;
    while !undecided.is_empty() {
        let mut still_undecided = Vec::with_capacity(undecided.len());
        for (partition, mut search) in undecided {
            let slice_steps = SEARCH_SLICE_STEPS.min(search_steps_max - search.steps);
            match search.run(slice_steps) {
                Some(Outcome::Linearizable) => {}
                Some(Outcome::NotLinearizable { longest_prefix }) => {
                    return Verdict::NotLinearizable {
                        partition,
                        operations: search.operations.len(),
                        longest_prefix,
                    };
                }
                None if search.steps < search_steps_max => {
                    still_undecided.push((partition, search));
                }
                None => {
                    let steps = search.steps;
                    exhausted.get_or_insert(Verdict::Unknown { partition, steps });
                }
            }
        }
        undecided = still_undecided;
    }
    exhausted.unwrap_or(Verdict::Linearizable)
}

enum Outcome {
    Linearizable,
    NotLinearizable { longest_prefix: usize },
}

/// The search of one partition, resumable between slices.
struct Search<'a, M: Model> {
    operations: Vec<&'a ModelOperation<M>>,
    list: EventList,
    linearized: Bitset,
    /// Every (linearized set, state) reached so far: reaching one again cannot
    /// lead anywhere new.
    explored: HashSet<(Bitset, M::State)>,
    /// The linearized calls, most recent last.
    undo: Vec<Undone<M::State>>,
    state: M::State,
    /// The next node to visit; `None` once the list is empty.
    node: Option<usize>,
    longest_prefix: usize,
    steps: u64,
}

impl<'a, M: Model> Search<'a, M> {
    fn new(operations: Vec<&'a ModelOperation<M>>) -> Self {
        let list = EventList::new(&operations);
        Self {
            linearized: Bitset::new(operations.len()),
            node: list.first(),
            operations,
            list,
            explored: HashSet::new(),
            undo: Vec::new(),
            state: M::init(),
            longest_prefix: 0,
            steps: 0,
        }
    }

    /// Searches for at most `slice_steps` steps; `None` if still undecided.
    fn run(&mut self, slice_steps: u64) -> Option<Outcome> {
        for _ in 0..slice_steps {
            let Some(node) = self.node else {
                return Some(Outcome::Linearizable);
            };
            self.steps += 1;
            match self.list.call_operation(node) {
                Some(index) => self.try_linearize(node, index),
                // A return whose call is not linearized yet: the order so far is
                // wrong.
                None if self.undo.is_empty() => {
                    return Some(Outcome::NotLinearizable {
                        longest_prefix: self.longest_prefix,
                    })
                }
                None => self.backtrack(),
            }
        }
        self.node.is_none().then_some(Outcome::Linearizable)
    }

    /// Linearizes the call `node` (of operation `index`) next if the model allows
    /// it and that leads somewhere unexplored; otherwise moves on.
    fn try_linearize(&mut self, node: usize, index: usize) {
        let operation = self.operations[index];
        self.node = self.list.next(node);
        let successors = M::step(
            &self.state,
            &operation.input,
            operation.output.as_ref(),
            Window::of(operation),
        );
        self.linearize_first_new(node, index, successors);
    }

    /// Linearizes the call `node` (of operation `index`) into the first of
    /// `successors` not explored before; the others stay with it on the undo
    /// stack, to be tried when the search comes back to it. Leaves the walk
    /// where it was if none is new.
    fn linearize_first_new(&mut self, node: usize, index: usize, mut successors: Vec<M::State>) {
        self.linearized.set(index);
        while let Some(next_state) = successors.pop() {
            let explored_before = self.explored.len();
            // Looked up by reference so that a configuration seen before (most
            // of them, in a hard search) costs a hash and no clone.
            self.explored
                .get_or_insert_with(&Configuration(&self.linearized, &next_state), |new| {
                    (new.0.clone(), new.1.clone())
                });
            if self.explored.len() > explored_before {
                let previous = std::mem::replace(&mut self.state, next_state);
                self.undo.push(Undone {
                    call: node,
                    previous,
                    alternatives: successors,
                });
                self.longest_prefix = self.longest_prefix.max(self.undo.len());
                self.list.unlink(node);
                self.node = self.list.first();
                return;
            }
        }
        self.linearized.clear(index);
    }

    /// Undoes the most recent linearization; tries its call's other
    /// successor states, then the calls after it.
    fn backtrack(&mut self) {
        let Undone {
            call,
            previous,
            alternatives,
        } = self
            .undo
            .pop()
            .expect("backtracking needs a linearized call");
        self.state = previous;
        let index = self
            .list
            .call_operation(call)
            .expect("only calls are undone");
        self.linearized.clear(index);
        self.list.relink(call);
        self.node = self.list.next(call);
        if !alternatives.is_empty() {
            self.linearize_first_new(call, index, alternatives);
        }
    }
}

/// A linearized call, with the state before it and the other states it may
/// have left, not tried yet.
struct Undone<S> {
    call: usize,
    previous: S,
    alternatives: Vec<S>,
}

/// A (linearized set, state) pair borrowed, to look up in the memo of owned pairs;
/// hashes as the owned tuple does.
#[derive(Hash)]
struct Configuration<'a, S>(&'a Bitset, &'a S);

impl<S: Eq> Equivalent<(Bitset, S)> for Configuration<'_, S> {
    fn equivalent(&self, (linearized, state): &(Bitset, S)) -> bool {
        self.0 == linearized && self.1 == state
    }
}

/// Marker for "no node" in the links of [`EventList`].
const NONE: usize = usize::MAX;

/// The call and return events of a partition, ordered by time, as a doubly linked
/// list over indices from which a call can be unlinked with its return and put
/// back in LIFO order (dancing links).
///
/// Node 0 is the head sentinel; nodes `1..` are the events in time order. At equal
/// times calls come before returns, as in Porcupine: operations that touch at an
/// instant are treated as concurrent, the permissive reading.
struct EventList {
    next: Vec<usize>,
    previous: Vec<usize>,
    /// For each node: the operation index if it is a call, `None` if a return or
    /// the head.
    call: Vec<Option<usize>>,
    /// For each call node, the node of its return.
    return_of: Vec<usize>,
}

impl EventList {
    const HEAD: usize = 0;

    fn new<I, O>(operations: &[&Operation<I, O>]) -> Self {
        // (time, is_return, operation): sorting puts calls first at equal times.
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * operations.len());
        for (index, operation) in operations.iter().enumerate() {
            assert!(
                operation.invoke_time <= operation.return_time,
                "operation {index} returns before it is invoked"
            );
            events.push((operation.invoke_time, false, index));
            events.push((operation.return_time, true, index));
        }
        events.sort_unstable();
        let nodes = events.len() + 1;
        let mut list = Self {
            next: (1..=nodes)
                .map(|n| if n == nodes { NONE } else { n })
                .collect(),
            previous: (0..nodes).map(|n| n.wrapping_sub(1)).collect(),
            call: vec![None; nodes],
            return_of: vec![NONE; nodes],
        };
        let mut call_node = vec![NONE; operations.len()];
        for (position, &(_, is_return, index)) in events.iter().enumerate() {
            let node = position + 1;
            if is_return {
                list.return_of[call_node[index]] = node;
            } else {
                list.call[node] = Some(index);
                call_node[index] = node;
            }
        }
        list
    }

    fn first(&self) -> Option<usize> {
        self.next(Self::HEAD)
    }

    fn next(&self, node: usize) -> Option<usize> {
        Some(self.next[node]).filter(|&next| next != NONE)
    }

    fn call_operation(&self, node: usize) -> Option<usize> {
        self.call[node]
    }

    /// Takes the call `node` and its return out of the list.
    fn unlink(&mut self, node: usize) {
        self.unlink_one(node);
        self.unlink_one(self.return_of[node]);
    }

    /// Undoes the most recent [`EventList::unlink`], which must be of `node`.
    fn relink(&mut self, node: usize) {
        self.relink_one(self.return_of[node]);
        self.relink_one(node);
    }

    fn unlink_one(&mut self, node: usize) {
        let (previous, next) = (self.previous[node], self.next[node]);
        self.next[previous] = next;
        if next != NONE {
            self.previous[next] = previous;
        }
    }

    fn relink_one(&mut self, node: usize) {
        let (previous, next) = (self.previous[node], self.next[node]);
        self.next[previous] = node;
        if next != NONE {
            self.previous[next] = node;
        }
    }
}

/// The set of linearized operations of a partition, one bit each.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct Bitset(Box<[u64]>);

impl Bitset {
    fn new(bits: usize) -> Self {
        Self(vec![0; bits.div_ceil(64)].into_boxed_slice())
    }

    fn set(&mut self, bit: usize) {
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    fn clear(&mut self, bit: usize) {
        self.0[bit / 64] &= !(1 << (bit % 64));
    }
}

/// The shortest prefix (by invocation time) of `partition`'s operations that
/// is not linearizable, found by bisection: its last operations are where
/// to look for the anomaly. `None` when the whole partition linearizes (or
/// the search gives up). Dropping later invocations only removes
/// constraints, except for a read that saw a write invoked after the cut,
/// which is itself the anomaly this points at.
pub fn shortest_failing_prefix<'a, M: Model>(
    history: &'a [ModelOperation<M>],
    partition: &M::PartitionKey,
) -> Option<Vec<&'a ModelOperation<M>>>
where
    M::Input: Clone,
    M::Output: Clone,
{
    let mut operations: Vec<&ModelOperation<M>> = history
        .iter()
        .filter(|operation| M::partition_key(&operation.input) == *partition)
        .collect();
    operations.sort_by_key(|operation| operation.invoke_time);
    let fails = |length: usize| {
        let prefix: Vec<ModelOperation<M>> = operations[..length]
            .iter()
            .map(|operation| (*operation).clone())
            .collect();
        check::<M>(&prefix).is_linearizable() == Some(false)
    };
    if !fails(operations.len()) {
        return None;
    }
    // Invariant: the prefix of `passing` operations linearizes, that of
    // `failing` does not.
    let (mut passing, mut failing) = (0, operations.len());
    while failing - passing > 1 {
        let middle = passing + (failing - passing) / 2;
        if fails(middle) {
            failing = middle;
        } else {
            passing = middle;
        }
    }
    operations.truncate(failing);
    Some(operations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::kv::{Kv, KvInput, KvOperation, KvOutput};
    use crate::models::register::{Register, RegisterInput, RegisterOutput};

    type RegisterOperation = Operation<RegisterInput, RegisterOutput>;

    fn write(client: u64, value: i64, invoke: u64, return_: u64) -> RegisterOperation {
        Operation::completed(
            client,
            RegisterInput::Write(value),
            invoke,
            RegisterOutput::Written,
            return_,
        )
    }

    fn read(client: u64, value: Option<i64>, invoke: u64, return_: u64) -> RegisterOperation {
        let output = RegisterOutput::Read(value);
        Operation::completed(client, RegisterInput::Read, invoke, output, return_)
    }

    fn verdict(history: &[RegisterOperation]) -> Option<bool> {
        check::<Register>(history).is_linearizable()
    }

    #[test]
    fn the_shortest_failing_prefix_ends_at_the_stale_read() {
        let history = [
            write(0, 1, 0, 10),
            read(1, Some(1), 20, 30),
            write(0, 2, 40, 50),
            read(1, Some(1), 60, 70),
            write(0, 3, 80, 90),
            read(1, Some(3), 100, 110),
        ];
        assert_eq!(verdict(&history), Some(false));
        let prefix = shortest_failing_prefix::<Register>(&history, &()).expect("it fails");
        assert_eq!(prefix.len(), 4, "{prefix:?}");
        assert_eq!(*prefix[3], history[3]);
        assert!(shortest_failing_prefix::<Register>(&history[..3], &()).is_none());
    }

    #[test]
    fn a_stale_read_after_a_write_completes_is_not_linearizable() {
        let history = [write(0, 1, 0, 1), read(1, None, 2, 3)];
        assert_eq!(
            check::<Register>(&history),
            Verdict::NotLinearizable {
                partition: (),
                operations: 2,
                longest_prefix: 1
            }
        );
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either_value() {
        assert_eq!(
            verdict(&[write(0, 1, 0, 3), read(1, None, 1, 2)]),
            Some(true)
        );
        assert_eq!(
            verdict(&[write(0, 1, 0, 3), read(1, Some(1), 1, 2)]),
            Some(true)
        );
        assert_eq!(
            verdict(&[write(0, 1, 0, 3), read(1, Some(2), 1, 2)]),
            Some(false)
        );
    }

    #[test]
    fn operations_touching_at_an_instant_are_concurrent() {
        assert_eq!(
            verdict(&[write(0, 1, 0, 5), read(1, None, 5, 6)]),
            Some(true)
        );
    }

    #[test]
    fn reads_may_not_go_back_in_time() {
        // Both reads overlap the write, but the second starts after the first saw 1.
        let history = [
            write(0, 1, 0, 10),
            read(1, Some(1), 1, 2),
            read(2, None, 3, 4),
        ];
        assert_eq!(verdict(&history), Some(false));
    }

    #[test]
    fn an_abandoned_write_may_explain_a_later_read() {
        let abandoned = Operation::abandoned(0, RegisterInput::Write(7), 0);
        assert_eq!(
            verdict(&[abandoned.clone(), read(1, Some(7), 5, 6)]),
            Some(true)
        );
        // ... or never happen at all.
        assert_eq!(
            verdict(&[abandoned.clone(), read(1, None, 5, 6)]),
            Some(true)
        );
        // But not take effect before it was invoked.
        let late = Operation::abandoned(0, RegisterInput::Write(7), 10);
        assert_eq!(verdict(&[late, read(1, Some(7), 5, 6)]), Some(false));
        // Nor un-happen once seen.
        let history = [abandoned, read(1, Some(7), 5, 6), read(2, None, 7, 8)];
        assert_eq!(verdict(&history), Some(false));
    }

    #[test]
    /// A returned operation whose output is unknown did take effect: the cas found
    /// 1 and swapped, so reading 1 afterwards is impossible. Only an abandoned
    /// cas (no return) could still be pending then.
    fn an_unknown_output_still_took_effect_by_its_return() {
        let cas = RegisterInput::Cas { from: 1, to: 2 };
        let timed_out = Operation {
            client: 1,
            input: cas,
            invoke_time: 2,
            output: None,
            return_time: 3,
        };
        assert_eq!(
            verdict(&[write(0, 1, 0, 1), timed_out.clone(), read(2, Some(2), 4, 5)]),
            Some(true)
        );
        assert_eq!(
            verdict(&[write(0, 1, 0, 1), timed_out.clone(), read(2, Some(1), 4, 5)]),
            Some(false)
        );
        let abandoned = Operation::abandoned(1, cas, 2);
        assert_eq!(
            verdict(&[write(0, 1, 0, 1), abandoned, read(2, Some(1), 4, 5)]),
            Some(true)
        );
        assert_eq!(
            verdict(&[write(0, 3, 0, 1), timed_out, read(2, Some(2), 4, 5)]),
            Some(false)
        );
    }

    fn kv(
        client: u64,
        key: &str,
        operation: KvOperation,
        output: KvOutput,
        (invoke_time, return_time): (u64, u64),
    ) -> Operation<KvInput, KvOutput> {
        let key = key.to_owned();
        let input = KvInput { key, operation };
        Operation::completed(client, input, invoke_time, output, return_time)
    }

    fn value(text: &str) -> KvOutput {
        KvOutput::Value(text.to_owned())
    }

    #[test]
    fn partitions_are_checked_separately_and_named() {
        let history = [
            kv(
                0,
                "a",
                KvOperation::Put("x".to_owned()),
                KvOutput::Done,
                (0, 1),
            ),
            kv(
                1,
                "b",
                KvOperation::Append("y".to_owned()),
                KvOutput::Done,
                (0, 1),
            ),
            kv(2, "a", KvOperation::Get, value("x"), (2, 3)),
            kv(3, "b", KvOperation::Get, value(""), (2, 3)),
        ];
        let verdict = Verdict::NotLinearizable {
            partition: "b".to_owned(),
            operations: 2,
            longest_prefix: 1,
        };
        assert_eq!(check::<Kv>(&history), verdict);
        assert_eq!(check::<Kv>(&history[..3]), Verdict::Linearizable);
    }

    /// Partition "a" (eight concurrent appends, then a read no order explains)
    /// takes far more than a slice to refute; partition "b" (a stale read) takes a
    /// few steps, and decides the verdict though it comes second.
    #[test]
    fn a_cheap_counterexample_is_found_beside_an_expensive_one() {
        let mut history: Vec<_> = (0..8)
            .map(|client| {
                let append = KvOperation::Append(client.to_string());
                kv(client, "a", append, KvOutput::Done, (0, 10))
            })
            .collect();
        history.push(kv(8, "a", KvOperation::Get, value("impossible"), (11, 12)));
        let expensive = history.clone();
        history.push(kv(
            9,
            "b",
            KvOperation::Put("x".to_owned()),
            KvOutput::Done,
            (0, 1),
        ));
        history.push(kv(10, "b", KvOperation::Get, value(""), (2, 3)));
        let budget = 2 * SEARCH_SLICE_STEPS;
        let verdict = check_with_budget::<Kv>(&history, budget);
        assert_eq!(verdict.is_linearizable(), Some(false));
        assert!(
            matches!(&verdict, Verdict::NotLinearizable { partition, .. } if partition == "b"),
            "{verdict:?}"
        );
        let verdict = check_with_budget::<Kv>(&expensive, budget);
        let unknown = Verdict::Unknown {
            partition: "a".to_owned(),
            steps: budget,
        };
        assert_eq!(verdict, unknown);
    }

    #[test]
    fn an_exhausted_budget_gives_no_verdict() {
        let history: Vec<_> = (0..20).map(|client| write(client, 1, 0, 100)).collect();
        assert_eq!(
            check_with_budget::<Register>(&history, 10),
            Verdict::Unknown {
                partition: (),
                steps: 10
            }
        );
        assert_eq!(check::<Register>(&history), Verdict::Linearizable);
    }

    #[test]
    fn the_empty_history_is_linearizable() {
        assert_eq!(verdict(&[]), Some(true));
    }
}
