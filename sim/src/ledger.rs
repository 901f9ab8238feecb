//! The durability checker: what each shard of a node applied and acknowledged,
//! kept outside the node so that it survives the node's kills, and checked
//! against what the next boot recovers.
//!
//! At every boot of a shard, after the first, when it has read its log back
//! (`restored`, before it logs anything):
//! - nothing acknowledged is lost: the restored log reaches every index a
//!   reply depended on ([`Violation::LostAcknowledged`]);
//! - nothing appears from nowhere: the restored log is no longer than what
//!   was logged (handed to the WAL: an entry may survive a crash durable but
//!   uncommitted, and the restart commits it), and no shorter than what the
//!   last boot restored;
//!
//! and once those entries committed (`recovered`; a boot may stop before):
//! - the recovered key space is exactly the last restored state with the
//!   entries logged after it replayed on top, through the restored index
//!   ([`Violation::StateDiffers`]); entries are applied in the order logged.
//!
//! A boot logs its new term's no-op between the two, and a boot that stops
//! in between may leave that no-op durable: so what a boot logs counts from
//! the moment it restored, not from its recovery.
//!
//! The node reports through [`keel_engine::node::ShardObserver`]; the ledger
//! never changes what the node does.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use keel_engine::keyspace::Keyspace;
use keel_engine::node::io::ShardObserver;
use keel_engine::operation::Operation;

/// A key's value and absolute expiry time.
pub(crate) type Items = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

/// Something a recovery did that it must not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    LostAcknowledged {
        shard: u32,
        recovered: u64,
        acknowledged: u64,
    },
    /// The recovered log is longer than what the shard ever applied, or
    /// shorter than what an earlier recovery found.
    IndexOutOfRange {
        shard: u32,
        recovered: u64,
        least: u64,
        most: u64,
    },
    StateDiffers {
        shard: u32,
        index: u64,
        /// Keys whose value or expiry differs from the applied state's.
        keys: Vec<String>,
    },
    /// An entry applied at an index other than the next one.
    AppliedOutOfOrder {
        shard: u32,
        index: u64,
        expected: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::LostAcknowledged {
                shard,
                recovered,
                acknowledged,
            } => write!(
                f,
                "shard {shard} lost acknowledged entries: recovered to index {recovered}, \
                 but a reply depended on index {acknowledged}"
            ),
            Violation::IndexOutOfRange {
                shard,
                recovered,
                least,
                most,
            } => write!(
                f,
                "shard {shard} recovered to index {recovered}, outside {least}..={most}"
            ),
            Violation::StateDiffers { shard, index, keys } => write!(
                f,
                "shard {shard} recovered a state at index {index} that differs from the \
                 applied one in keys {keys:?}"
            ),
            Violation::AppliedOutOfOrder {
                shard,
                index,
                expected,
            } => write!(
                f,
                "shard {shard} applied index {index}, expected {expected}"
            ),
        }
    }
}

/// One shard's record since its last boot restored its log.
#[derive(Debug, Default)]
struct ShardRecord {
    /// The index the last boot restored, already checked.
    base_index: u64,
    /// The state at `base_index`: the one recovered, or until the boot
    /// recovers, the one it must recover (None when unknown: before the
    /// first recovery, or after a restore out of range).
    base: Option<Items>,
    /// Whether the boot that restored `base_index` has yet to report the
    /// state it recovered.
    awaiting_recovery: bool,
    /// Entries logged since, at `base_index + 1` on (those applied too, if
    /// the node did not report them logged).
    logged: Vec<Operation>,
    /// How many of them were applied.
    applied: u64,
    /// The highest index a released reply depended on, ever.
    acknowledged: u64,
}

/// What every shard of one node applied and acknowledged.
#[derive(Debug, Default)]
pub struct Ledger {
    shards: RefCell<BTreeMap<u32, ShardRecord>>,
    violations: RefCell<Vec<Violation>>,
    /// Shard recoveries checked (the first of each shard is only recorded).
    recoveries_checked: RefCell<u64>,
    entries_applied: RefCell<u64>,
}

impl Ledger {
    /// Everything found wrong so far.
    pub fn violations(&self) -> Vec<Violation> {
        self.violations.borrow().clone()
    }

    /// Removes and returns the violations found since there were `from`.
    pub fn take_violations_from(&self, from: usize) -> Vec<Violation> {
        let mut violations = self.violations.borrow_mut();
        let from = from.min(violations.len());
        violations.split_off(from)
    }

    pub fn recoveries_checked(&self) -> u64 {
        *self.recoveries_checked.borrow()
    }

    pub fn entries_applied(&self) -> u64 {
        *self.entries_applied.borrow()
    }

    fn violation(&self, violation: Violation) {
        self.violations.borrow_mut().push(violation);
    }
}

pub(crate) fn items(keyspace: &Keyspace) -> Items {
    keyspace
        .items()
        .map(|(key, value, expire)| (key.to_vec(), (value.to_vec(), expire)))
        .collect()
}

/// `base` with `ops` applied, by Keel's own state machine (the ledger checks
/// recovery, not the commands).
fn replayed(base: &Items, ops: &[Operation]) -> Items {
    let mut keyspace = Keyspace::with_hash_seed(0);
    for (key, (value, expire)) in base {
        keyspace.insert_loaded(key, value, *expire);
    }
    for op in ops {
        keyspace.apply(op);
    }
    items(&keyspace)
}

/// The keys whose entries differ between `left` and `right`, as text.
pub(crate) fn differing_keys(left: &Items, right: &Items) -> Vec<String> {
    let mut keys: Vec<&Vec<u8>> = left.keys().chain(right.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|key| left.get(*key) != right.get(*key))
        .map(|key| String::from_utf8_lossy(key).into_owned())
        .collect()
}

impl ShardObserver for Ledger {
    fn restored(&self, shard: u32, last_index: u64) {
        let mut shards = self.shards.borrow_mut();
        let Some(record) = shards.get_mut(&shard) else {
            shards.insert(
                shard,
                ShardRecord {
                    base_index: last_index,
                    awaiting_recovery: true,
                    ..ShardRecord::default()
                },
            );
            return;
        };
        *self.recoveries_checked.borrow_mut() += 1;
        let most = record.base_index + record.logged.len() as u64;
        if last_index < record.acknowledged {
            self.violation(Violation::LostAcknowledged {
                shard,
                recovered: last_index,
                acknowledged: record.acknowledged,
            });
        }
        let in_range = (record.base_index..=most).contains(&last_index);
        if !in_range {
            self.violation(Violation::IndexOutOfRange {
                shard,
                recovered: last_index,
                least: record.base_index,
                most,
            });
        }
        let kept = (last_index.saturating_sub(record.base_index)) as usize;
        record.base = match &record.base {
            Some(base) if in_range => Some(replayed(base, &record.logged[..kept])),
            _ => None,
        };
        record.base_index = last_index;
        record.awaiting_recovery = true;
        record.logged.clear();
        record.applied = 0;
        // What was acknowledged and lost is reported once; later boots are
        // checked against what they acknowledge themselves.
        record.acknowledged = record.acknowledged.min(last_index);
    }

    fn recovered(&self, shard: u32, last_index: u64, keyspace: &Keyspace) {
        let recovered = items(keyspace);
        let mut shards = self.shards.borrow_mut();
        let record = shards
            .get_mut(&shard)
            .expect("a shard recovers only after it restored its log");
        assert!(
            record.awaiting_recovery,
            "shard {shard}: one recovery per restore"
        );
        record.awaiting_recovery = false;
        if last_index != record.base_index {
            self.violation(Violation::IndexOutOfRange {
                shard,
                recovered: last_index,
                least: record.base_index,
                most: record.base_index,
            });
        } else if let Some(expected) = &record.base {
            if *expected != recovered {
                self.violation(Violation::StateDiffers {
                    shard,
                    index: last_index,
                    keys: differing_keys(expected, &recovered),
                });
            }
        }
        record.base = Some(recovered);
    }

    fn logged(&self, shard: u32, index: u64, op: &Operation) {
        let mut shards = self.shards.borrow_mut();
        let record = shards
            .get_mut(&shard)
            .expect("a shard logs entries only after it restored its log");
        let next = record.base_index + record.logged.len() as u64 + 1;
        if index <= record.base_index || index > next {
            self.violation(Violation::AppliedOutOfOrder {
                shard,
                index,
                expected: next,
            });
            return;
        }
        // An entry logged again at an index replaces the one cut there.
        record
            .logged
            .truncate((index - record.base_index - 1) as usize);
        record.logged.push(op.clone());
    }

    fn applied(&self, shard: u32, index: u64, op: &Operation) {
        let mut shards = self.shards.borrow_mut();
        let record = shards
            .get_mut(&shard)
            .expect("a shard applies entries only after it restored its log");
        let expected = record.base_index + record.applied + 1;
        if index != expected {
            self.violation(Violation::AppliedOutOfOrder {
                shard,
                index,
                expected,
            });
        }
        record.applied += 1;
        if record.logged.len() < record.applied as usize {
            record.logged.push(op.clone());
        }
        *self.entries_applied.borrow_mut() += 1;
    }

    fn acknowledged(&self, shard: u32, index: u64) {
        let mut shards = self.shards.borrow_mut();
        let record = shards
            .get_mut(&shard)
            .expect("a shard acknowledges only after it restored its log");
        record.acknowledged = record.acknowledged.max(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: &str) -> Operation {
        Operation::Set {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            expire_at_unix_ms: None,
        }
    }

    /// A key space holding `ops` applied to an empty one.
    fn state(ops: &[Operation]) -> Keyspace {
        let mut keyspace = Keyspace::with_hash_seed(7);
        for op in ops {
            keyspace.apply(op);
        }
        keyspace
    }

    /// A boot of shard 0 that restores its log through `index` and
    /// recovers `keyspace` there.
    fn recover(ledger: &Ledger, index: u64, keyspace: &Keyspace) {
        ledger.restored(0, index);
        ledger.recovered(0, index, keyspace);
    }

    /// A shard that recovered empty, applied three sets, acknowledged the
    /// first two, and crashed.
    fn ledger_after_three_sets() -> (Ledger, Vec<Operation>) {
        let ledger = Ledger::default();
        recover(&ledger, 0, &state(&[]));
        let ops = vec![set("a", "1"), set("b", "2"), set("a", "3")];
        for (index, op) in (1..).zip(&ops) {
            ledger.applied(0, index, op);
        }
        ledger.acknowledged(0, 2);
        (ledger, ops)
    }

    #[test]
    fn a_recovery_of_an_acknowledged_prefix_passes() {
        for kept in 2..=3 {
            let (ledger, ops) = ledger_after_three_sets();
            recover(&ledger, kept as u64, &state(&ops[..kept]));
            assert_eq!(ledger.violations(), vec![], "kept {kept}");
        }
    }

    #[test]
    fn a_lost_acknowledged_entry_is_caught() {
        let (ledger, ops) = ledger_after_three_sets();
        recover(&ledger, 1, &state(&ops[..1]));
        assert_eq!(
            ledger.violations(),
            vec![Violation::LostAcknowledged {
                shard: 0,
                recovered: 1,
                acknowledged: 2
            }]
        );
    }

    /// Also when a boot in between stopped after its restore, before its
    /// recovery: it leaves the state it had to recover to the next boot.
    #[test]
    fn a_state_other_than_the_applied_one_is_caught() {
        for boot_in_between in [false, true] {
            let (ledger, ops) = ledger_after_three_sets();
            if boot_in_between {
                ledger.restored(0, 3);
            }
            let mut wrong = ops[..2].to_vec();
            wrong.push(set("b", "9"));
            recover(&ledger, 3, &state(&wrong));
            assert_eq!(
                ledger.violations(),
                vec![Violation::StateDiffers {
                    shard: 0,
                    index: 3,
                    keys: vec!["a".into(), "b".into()]
                }],
                "a boot in between: {boot_in_between}"
            );
        }
    }

    #[test]
    fn entries_from_nowhere_are_caught() {
        let (ledger, ops) = ledger_after_three_sets();
        let mut more = ops.clone();
        more.push(set("c", "4"));
        recover(&ledger, 4, &state(&more));
        assert!(matches!(
            ledger.violations()[..],
            [Violation::IndexOutOfRange { recovered: 4, .. }]
        ));
    }

    /// An entry logged but never applied (the crash came between its
    /// write and its commit) may be recovered: the restart commits it.
    #[test]
    fn a_logged_entry_never_applied_may_be_recovered_but_not_more() {
        let (ledger, mut ops) = ledger_after_three_sets();
        ledger.logged(0, 4, &set("c", "4"));
        ops.push(set("c", "4"));
        recover(&ledger, 4, &state(&ops));
        assert_eq!(ledger.violations(), vec![]);
        ops.push(set("d", "5"));
        recover(&ledger, 5, &state(&ops));
        assert!(matches!(
            ledger.violations()[..],
            [Violation::IndexOutOfRange { recovered: 5, .. }]
        ));
    }

    /// A boot logs its new term's no-op before its restored entries commit
    /// and it reports its recovery; if it stops in between with the no-op
    /// durable, the next boot restores the no-op too (seed 1914 of the
    /// one-node simulation, before the ledger counted it).
    #[test]
    fn a_no_op_logged_by_a_boot_that_never_recovered_may_be_restored() {
        let (ledger, ops) = ledger_after_three_sets();
        ledger.restored(0, 3);
        ledger.logged(0, 4, &Operation::Batch { ops: Vec::new() });
        recover(&ledger, 4, &state(&ops));
        assert_eq!(ledger.violations(), vec![]);
    }

    /// After a checked recovery, the next one is checked from there.
    #[test]
    fn checks_chain_across_boots() {
        let (ledger, ops) = ledger_after_three_sets();
        recover(&ledger, 2, &state(&ops[..2]));
        ledger.applied(0, 3, &set("c", "5"));
        let mut now = ops[..2].to_vec();
        now.push(set("c", "5"));
        recover(&ledger, 3, &state(&now));
        assert_eq!(ledger.violations(), vec![]);
        assert_eq!(ledger.recoveries_checked(), 2);
    }
}
