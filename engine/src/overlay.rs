//! The leader's view of a shard: the committed key space plus an overlay of
//! its own proposed, not yet committed operations.
//!
//! Every operation is a blind write (see [`crate::operation`]): it names the
//! final state of each key it touches. So the overlay is a map from key to
//! that final state (a value with its expiry, or absence), tagged with the
//! entry that wrote it; applying an entry to the key space at its commit
//! drops the keys that entry was the last to write. A FLUSHALL in the overlay
//! hides every key the map does not name. The overlay is pure (no clock, no
//! IO) and dropped whole when its leader steps down: its entries may never
//! commit.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};

use keel_replication::EntryId;

use crate::keyspace::{is_live, Item, Keyspace};
use crate::operation::{Change, Operation};

/// A key's state as an uncommitted entry left it: `None` is deleted.
type Record = Option<(Vec<u8>, Option<u64>)>;

/// One key's newest uncommitted state, and the entry that wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Written {
    record: Record,
    by: EntryId,
}

/// The uncommitted writes of one leader, newest state per key.
#[derive(Clone, Debug, Default)]
pub struct Overlay {
    keys: HashMap<Vec<u8>, Written>,
    /// The newest uncommitted FLUSHALL: keys the map does not name are absent.
    flushed_by: Option<EntryId>,
    /// Each entry in the overlay with the keys it wrote, in log order: what
    /// its commit drops.
    entries: VecDeque<(EntryId, Vec<Vec<u8>>)>,
}

impl Overlay {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The newest entry in the overlay.
    pub fn last(&self) -> Option<EntryId> {
        self.entries.back().map(|(id, _)| *id)
    }

    /// Records `op`, proposed as entry `by`, over `below` (what an `Expire`
    /// or `Persist` of a key this overlay does not hold reads).
    pub fn write(&mut self, below: View<'_>, op: &Operation, by: EntryId) {
        assert!(
            self.last().is_none_or(|last| last.index < by.index),
            "overlay entries follow the log: {by} after {:?}",
            self.last()
        );
        let mut written = Vec::new();
        for change in op.changes() {
            match change {
                Change::Set {
                    key,
                    value,
                    expire_at_unix_ms,
                } => {
                    self.put(key, Some((value.to_vec(), expire_at_unix_ms)), by);
                    written.push(key.to_vec());
                }
                Change::Delete { keys } => {
                    for key in keys {
                        self.put(key, None, by);
                        written.push(key.clone());
                    }
                }
                Change::Expire { key, at_unix_ms } => {
                    if let Some(value) = self.value_over(below, key) {
                        self.put(key, Some((value, Some(at_unix_ms))), by);
                        written.push(key.to_vec());
                    }
                }
                Change::Persist { key } => {
                    if let Some(value) = self.value_over(below, key) {
                        self.put(key, Some((value, None)), by);
                        written.push(key.to_vec());
                    }
                }
                Change::FlushAll => {
                    self.keys.clear();
                    self.flushed_by = Some(by);
                }
            }
        }
        self.entries.push_back((by, written));
    }

    fn put(&mut self, key: &[u8], record: Record, by: EntryId) {
        self.keys.insert(key.to_vec(), Written { record, by });
    }

    /// The value `key` holds in this overlay over `below`.
    fn value_over(&self, below: View<'_>, key: &[u8]) -> Option<Vec<u8>> {
        match self.keys.get(key) {
            Some(written) => written.record.as_ref().map(|(value, _)| value.clone()),
            None if self.flushed_by.is_some() => None,
            None => below.record(key).map(|item| item.value.to_vec()),
        }
    }

    /// Entry `id` was applied to the key space: what it wrote leaves the
    /// overlay, unless a later entry wrote it again. Entries not in the
    /// overlay (a no-op, an earlier leader's) change nothing.
    pub fn committed(&mut self, id: EntryId) {
        while let Some((front, _)) = self.entries.front() {
            if front.index > id.index {
                return;
            }
            assert_eq!(
                *front, id,
                "the leader's own entries commit in order, as proposed"
            );
            let (_, keys) = self.entries.pop_front().expect("a front entry");
            for key in keys {
                if self.keys.get(&key).is_some_and(|written| written.by == id) {
                    self.keys.remove(&key);
                }
            }
            if self.flushed_by == Some(id) {
                self.flushed_by = None;
            }
        }
    }

    /// Drops every uncommitted write (its leader stepped down).
    pub fn clear(&mut self) {
        *self = Overlay::default();
    }
}

/// What a command reads: the key space as its committed entries left it,
/// under the overlay of uncommitted entries, and inside EXEC under a second
/// overlay of the transaction's own writes so far (`scratch`, whose ids are
/// only an order). It notes the newest uncommitted entry it read: the reply
/// must wait for that entry's commit.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    keyspace: &'a Keyspace,
    overlay: Option<&'a Overlay>,
    scratch: Option<&'a Overlay>,
    observed: Option<&'a Cell<Option<EntryId>>>,
}

impl<'a> From<&'a Keyspace> for View<'a> {
    fn from(keyspace: &'a Keyspace) -> View<'a> {
        View {
            keyspace,
            overlay: None,
            scratch: None,
            observed: None,
        }
    }
}

impl<'a> View<'a> {
    /// `overlay` over `keyspace`; each read of an uncommitted key raises
    /// `observed` to the entry that wrote it.
    pub fn new(
        keyspace: &'a Keyspace,
        overlay: &'a Overlay,
        observed: &'a Cell<Option<EntryId>>,
    ) -> View<'a> {
        View {
            keyspace,
            overlay: Some(overlay),
            scratch: None,
            observed: Some(observed),
        }
    }

    /// This view under a transaction's own writes.
    pub fn with_scratch(self, scratch: &'a Overlay) -> View<'a> {
        View {
            scratch: Some(scratch),
            ..self
        }
    }

    /// The key as held (even past its expiry time, as
    /// [`Keyspace::record`]).
    pub fn record(&self, key: &[u8]) -> Option<Item<'a>> {
        if let Some(scratch) = self.scratch {
            if let Some(found) = scratch.lookup(key) {
                return found;
            }
        }
        if let Some(overlay) = self.overlay {
            if let Some(found) = overlay.lookup(key) {
                let by = overlay
                    .keys
                    .get(key)
                    .map_or(overlay.flushed_by, |written| Some(written.by));
                self.observe(by.expect("the overlay decided the key"));
                return found;
            }
        }
        self.keyspace.record(key)
    }

    /// The key if it is live at `now_unix_ms` (as [`Keyspace::get`]).
    pub fn get(&self, key: &[u8], now_unix_ms: u64) -> Option<Item<'a>> {
        self.record(key)
            .filter(|item| is_live(item.expire_at_unix_ms, now_unix_ms))
    }

    fn observe(&self, id: EntryId) {
        if let Some(observed) = self.observed {
            if observed.get().is_none_or(|seen| seen < id) {
                observed.set(Some(id));
            }
        }
    }
}

impl Overlay {
    /// What this overlay says of `key`: `None` if it leaves the key to the
    /// layer below, `Some(None)` if the key is absent.
    fn lookup(&self, key: &[u8]) -> Option<Option<Item<'_>>> {
        if let Some(written) = self.keys.get(key) {
            return Some(written.record.as_ref().map(|(value, expire)| Item {
                value,
                expire_at_unix_ms: *expire,
            }));
        }
        self.flushed_by.map(|_| None)
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

    fn value(view: View<'_>, key: &str) -> Option<Vec<u8>> {
        view.get(key.as_bytes(), 0).map(|item| item.value.to_vec())
    }

    #[test]
    fn a_key_leaves_the_overlay_when_its_last_writer_commits() {
        let mut keyspace = Keyspace::new();
        let mut overlay = Overlay::default();
        let (first, second) = (EntryId::new(1, 1), EntryId::new(1, 2));
        overlay.write(View::from(&keyspace), &set("k", "a"), first);
        overlay.write(View::from(&keyspace), &set("k", "b"), second);
        let observed = Cell::new(None);
        assert_eq!(
            value(View::new(&keyspace, &overlay, &observed), "k"),
            Some(b"b".to_vec())
        );
        assert_eq!(
            observed.get(),
            Some(second),
            "the read waits for the newer write"
        );
        keyspace.apply(&set("k", "a"));
        overlay.committed(first);
        let observed = Cell::new(None);
        assert_eq!(
            value(View::new(&keyspace, &overlay, &observed), "k"),
            Some(b"b".to_vec())
        );
        keyspace.apply(&set("k", "b"));
        overlay.committed(second);
        assert!(overlay.is_empty());
        let observed = Cell::new(None);
        assert_eq!(
            value(View::new(&keyspace, &overlay, &observed), "k"),
            Some(b"b".to_vec())
        );
        assert_eq!(observed.get(), None, "committed state: nothing to wait for");
    }

    #[test]
    fn a_flush_hides_the_key_space_and_an_expiry_reads_the_layer_below() {
        let mut keyspace = Keyspace::new();
        keyspace.apply(&set("old", "x"));
        let mut overlay = Overlay::default();
        let expire = Operation::Expire {
            key: b"old".to_vec(),
            at_unix_ms: 5,
        };
        overlay.write(View::from(&keyspace), &expire, EntryId::new(1, 1));
        let observed = Cell::new(None);
        let view = View::new(&keyspace, &overlay, &observed);
        let record = view.record(b"old").expect("held");
        assert_eq!(
            (record.value, record.expire_at_unix_ms),
            (&b"x"[..], Some(5))
        );
        assert_eq!(
            view.get(b"old", 5),
            None,
            "gone from its expiry millisecond"
        );
        overlay.write(
            View::from(&keyspace),
            &Operation::FlushAll,
            EntryId::new(1, 2),
        );
        overlay.write(View::from(&keyspace), &set("new", "y"), EntryId::new(1, 3));
        let view = View::new(&keyspace, &overlay, &observed);
        assert_eq!(value(view, "old"), None);
        assert_eq!(value(view, "new"), Some(b"y".to_vec()));
        overlay.clear();
        let view = View::new(&keyspace, &overlay, &observed);
        assert_eq!(
            value(view, "old"),
            Some(b"x".to_vec()),
            "step-down drops it all"
        );
    }
}
