//! WATCH on one shard: which connections watch which keys, and whether a key
//! one of them watches changed since it called WATCH.
//!
//! # What "changed" means
//! As in Redis 7.0, a watched key changed if a log entry applied after the
//! WATCH wrote it (any write, even of the same value; a deletion, by a
//! command or by active expiry; a FLUSHALL of a key that existed), or if it
//! was live at WATCH time and its expiry time has come by EXEC. A key that
//! had already expired when it was watched does not change by being deleted
//! (it was logically absent all along); written again, it does.
//!
//! The registry lives in memory only: a restart drops every connection and
//! with it every WATCH, so nothing of it is logged or snapshotted. A client
//! that reconnects watches again, and compares with what it reads then.
//!
//! # Cost
//! A write pays one lookup in [`Watches::by_key`] per key it names, and
//! nothing when no connection watches anything. Each connection may watch
//! up to [`crate::node::transaction::WATCHED_KEYS_MAX`] keys.

use std::collections::HashMap;

use crate::operation::{Change, Operation};
use crate::overlay::View;

/// The keys watched on one shard, by key and by connection.
#[derive(Debug, Default)]
pub struct Watches {
    /// The connections watching each key.
    by_key: HashMap<Vec<u8>, Vec<u64>>,
    by_client: HashMap<u64, ClientWatch>,
}

/// One connection's watched keys on this shard.
#[derive(Debug, Default)]
struct ClientWatch {
    keys: Vec<WatchedKey>,
    /// A watched key was written since it was watched.
    changed: bool,
}

#[derive(Debug)]
struct WatchedKey {
    key: Vec<u8>,
    /// The key was held but past its expiry time when it was watched.
    expired_at_watch: bool,
}

/// Whether `key` is held but past its expiry time.
fn is_expired(keyspace: View<'_>, key: &[u8], now_unix_ms: u64) -> bool {
    keyspace.record(key).is_some() && keyspace.get(key, now_unix_ms).is_none()
}

impl Watches {
    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    /// Connection `client` watches `keys` (again: a key it watches already
    /// keeps its first registration, as in Redis).
    pub fn watch(&mut self, client: u64, keys: &[Vec<u8>], keyspace: View<'_>, now_unix_ms: u64) {
        let watch = self.by_client.entry(client).or_default();
        for key in keys {
            if watch.keys.iter().any(|watched| watched.key == *key) {
                continue;
            }
            watch.keys.push(WatchedKey {
                key: key.clone(),
                expired_at_watch: is_expired(keyspace, key, now_unix_ms),
            });
            self.by_key.entry(key.clone()).or_default().push(client);
        }
    }

    /// Forgets what `client` watches; returns whether it watched anything
    /// that changed (see the module doc), as EXEC must know.
    pub fn unwatch(&mut self, client: u64, keyspace: View<'_>, now_unix_ms: u64) -> bool {
        let Some(watch) = self.by_client.remove(&client) else {
            return false;
        };
        for watched in &watch.keys {
            let clients = self
                .by_key
                .get_mut(&watched.key)
                .expect("a watched key is indexed by key");
            clients.retain(|other| *other != client);
            if clients.is_empty() {
                self.by_key.remove(&watched.key);
            }
        }
        watch.changed
            || watch.keys.iter().any(|watched| {
                !watched.expired_at_watch && is_expired(keyspace, &watched.key, now_unix_ms)
            })
    }

    /// The watched keys `keyspace` holds: what a FLUSHALL about to be
    /// applied changes.
    pub fn held_keys(&self, keyspace: View<'_>) -> Vec<Vec<u8>> {
        self.by_key
            .keys()
            .filter(|key| keyspace.record(key).is_some())
            .cloned()
            .collect()
    }

    /// Notes the keys `op`, just written to `keyspace` (the overlay, for a
    /// proposal), wrote; `flushed` are
    /// the watched keys held before, if `op` flushed the key space.
    pub fn note_applied(&mut self, op: &Operation, keyspace: View<'_>, flushed: &[Vec<u8>]) {
        if self.is_empty() {
            return;
        }
        for change in op.changes() {
            match change {
                Change::Set { key, .. } | Change::Expire { key, .. } | Change::Persist { key } => {
                    self.touched(key, keyspace.record(key).is_some());
                }
                Change::Delete { keys } => {
                    for key in keys {
                        self.touched(key, keyspace.record(key).is_some());
                    }
                }
                Change::FlushAll => {
                    for key in flushed {
                        self.touched(key, false);
                    }
                }
            }
        }
    }

    /// `key` was written and is `held_after` (or not): every connection
    /// watching it sees a change, unless the key had expired before it was
    /// watched and is now gone (Redis 7's rule: no change, but a later write
    /// is one).
    fn touched(&mut self, key: &[u8], held_after: bool) {
        let Some(clients) = self.by_key.get(key) else {
            return;
        };
        for client in clients {
            let watch = self
                .by_client
                .get_mut(client)
                .expect("a key's watcher is registered");
            let watched = watch
                .keys
                .iter_mut()
                .find(|watched| watched.key == key)
                .expect("a watcher watches the key it is indexed under");
            if watched.expired_at_watch && !held_after {
                watched.expired_at_watch = false;
                continue;
            }
            watch.changed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::Keyspace;

    fn set(key: &[u8], expire_at_unix_ms: Option<u64>) -> Operation {
        Operation::Set {
            key: key.to_vec(),
            value: b"v".to_vec(),
            expire_at_unix_ms,
        }
    }

    fn delete(key: &[u8]) -> Operation {
        Operation::Delete {
            keys: vec![key.to_vec()],
        }
    }

    /// Applies `op` and notes it, as the shard does.
    fn write(watches: &mut Watches, keyspace: &mut Keyspace, op: &Operation) {
        let flushed = watches.held_keys(View::from(&*keyspace));
        keyspace.apply(op);
        watches.note_applied(op, View::from(&*keyspace), &flushed);
    }

    #[test]
    fn a_write_to_a_watched_key_is_a_change_for_its_watchers_only() {
        let mut keyspace = Keyspace::new();
        let mut watches = Watches::default();
        watches.watch(1, &[b"a".to_vec()], View::from(&keyspace), 0);
        watches.watch(2, &[b"b".to_vec()], View::from(&keyspace), 0);
        write(&mut watches, &mut keyspace, &set(b"a", None));
        assert!(
            watches.unwatch(1, View::from(&keyspace), 0),
            "a was written"
        );
        assert!(!watches.unwatch(2, View::from(&keyspace), 0), "b was not");
        assert!(watches.is_empty());
        assert!(watches.by_key.is_empty(), "nothing left indexed");
    }

    #[test]
    fn unwatching_forgets_the_keys_and_an_unknown_client_saw_no_change() {
        let mut keyspace = Keyspace::new();
        let mut watches = Watches::default();
        watches.watch(1, &[b"a".to_vec(), b"a".to_vec()], View::from(&keyspace), 0);
        assert_eq!(watches.by_key[&b"a".to_vec()], vec![1], "watched once");
        assert!(!watches.unwatch(1, View::from(&keyspace), 0));
        write(&mut watches, &mut keyspace, &set(b"a", None));
        assert!(!watches.unwatch(1, View::from(&keyspace), 0));
    }

    #[test]
    fn a_flush_changes_the_watched_keys_it_removed_and_no_others() {
        let mut keyspace = Keyspace::new();
        keyspace.apply(&set(b"held", None));
        let mut watches = Watches::default();
        watches.watch(1, &[b"held".to_vec()], View::from(&keyspace), 0);
        watches.watch(2, &[b"absent".to_vec()], View::from(&keyspace), 0);
        write(&mut watches, &mut keyspace, &Operation::FlushAll);
        assert!(watches.unwatch(1, View::from(&keyspace), 0));
        assert!(!watches.unwatch(2, View::from(&keyspace), 0));
    }

    #[test]
    fn expiry_after_watch_is_a_change_but_deleting_a_key_expired_before_is_not() {
        let mut keyspace = Keyspace::new();
        keyspace.apply(&set(b"later", Some(100)));
        keyspace.apply(&set(b"stale", Some(10)));
        let mut watches = Watches::default();
        watches.watch(1, &[b"later".to_vec()], View::from(&keyspace), 50);
        assert!(
            watches.unwatch(1, View::from(&keyspace), 100),
            "expired since WATCH"
        );
        watches.watch(2, &[b"stale".to_vec()], View::from(&keyspace), 50);
        write(&mut watches, &mut keyspace, &delete(b"stale"));
        assert!(
            !watches.unwatch(2, View::from(&keyspace), 50),
            "an expired key's deletion"
        );
        keyspace.apply(&set(b"stale", Some(10)));
        watches.watch(3, &[b"stale".to_vec()], View::from(&keyspace), 50);
        write(&mut watches, &mut keyspace, &delete(b"stale"));
        write(&mut watches, &mut keyspace, &set(b"stale", None));
        assert!(
            watches.unwatch(3, View::from(&keyspace), 50),
            "written after it went"
        );
    }
}
