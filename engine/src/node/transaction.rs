//! One connection's transaction state: MULTI's queue and the slot its
//! WATCHed keys hash to. Pure: the node loop ([`crate::node::core`]) sends
//! what it decides to the shards.
//!
//! # Rules (Redis 7.0's, with Redis Cluster's slot rule)
//! - Inside MULTI every command is queued (`+QUEUED`) except EXEC, DISCARD,
//!   MULTI, WATCH, QUIT and RESET, which run at once (MULTI and WATCH with an
//!   error that does not abort the transaction).
//! - A command refused while queuing (unknown, wrong arity, keys of two slots
//!   in one command, a command Keel cannot run inside a transaction, a queue
//!   over its limits) gets its error now, and EXEC then answers `EXECABORT`.
//! - All keys of the queued commands and the WATCHed keys hash to one slot.
//!   A WATCH of keys in another slot than those watched before is refused at
//!   once; queued commands of different slots are found at EXEC, which then
//!   answers `-CROSSSLOT` and discards the transaction, as Redis Cluster
//!   does (it checks each command when it is queued and the whole
//!   transaction at EXEC).
//! - Keyless commands that neither read nor change the key space nor the
//!   connection ([`KEYLESS_IN_TRANSACTION`]) may be queued and are answered
//!   at EXEC by the connection; the others (`DBSIZE`, `KEYS`, `FLUSHALL`,
//!   `HELLO`, ...) span every shard or change the connection, so they are
//!   refused inside MULTI with Redis's `Command not allowed inside a
//!   transaction`.
//! - EXEC, DISCARD and RESET end the transaction and unwatch, as UNWATCH
//!   does; so does closing the connection.

use crate::command::{self, CommandSpec};
use crate::resp::Reply;
use crate::slot::key_slot;

/// Commands one transaction may queue: each is held until EXEC.
pub const TRANSACTION_COMMANDS_MAX: usize = 64 * 1024;
/// Bytes of arguments one transaction may queue: what a connection holds
/// until EXEC (the log entry EXEC makes is bounded by the WAL's entry size).
pub const TRANSACTION_BYTES_MAX: usize = 512 << 20;
/// Keys one connection may watch (counting a key once per WATCH naming it):
/// each costs the shard an entry until EXEC, DISCARD, UNWATCH or the
/// connection's end.
pub const WATCHED_KEYS_MAX: usize = 64 * 1024;

/// Keyless commands a transaction may hold: they neither read nor change
/// the key space or the connection (their reply depends on their arguments,
/// the node's fixed settings and, for TIME, the clock), so the connection may
/// answer them when EXEC starts.
pub const KEYLESS_IN_TRANSACTION: &[&str] =
    &["command", "config", "echo", "ping", "select", "time"];

const QUEUED: &str = "QUEUED";
const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// The commands that manage transactions themselves.
pub fn is_transaction_command(name: &str) -> bool {
    matches!(name, "multi" | "exec" | "discard" | "watch" | "unwatch")
}

/// Whether a command runs at once inside MULTI rather than being queued.
fn runs_inside_multi(name: &str) -> bool {
    matches!(
        name,
        "exec" | "discard" | "multi" | "watch" | "quit" | "reset"
    )
}

/// The slot all `keys` hash to, `None` without keys; `Err` if they span
/// several.
pub fn one_slot<'a>(keys: impl IntoIterator<Item = &'a [u8]>) -> Result<Option<u16>, Reply> {
    let mut found = None;
    for key in keys {
        let slot = key_slot(key);
        if found.is_some_and(|other| other != slot) {
            return Err(Reply::Error(CROSSSLOT.into()));
        }
        found = Some(slot);
    }
    Ok(found)
}

/// A command waiting for EXEC.
#[derive(Debug)]
struct Queued {
    args: Vec<Vec<u8>>,
    /// The slot of its keys; `None` for a keyless command.
    slot: Option<u16>,
}

#[derive(Debug, Default)]
struct Queue {
    commands: Vec<Queued>,
    bytes: usize,
    /// A command was refused while queuing: EXEC aborts.
    refused: bool,
}

/// What EXEC does.
#[derive(Debug, PartialEq)]
pub enum Exec {
    /// Answer this (an error) and run nothing.
    Refuse(Reply),
    /// Run `keyed` on the shard of `slot` as one unit (checking the
    /// connection's watched keys there first if `watching`), and answer
    /// `keyless` (request positions and arguments) on the connection.
    Run {
        slot: Option<u16>,
        watching: bool,
        keyed: Vec<Vec<Vec<u8>>>,
        keyless: Vec<(usize, Vec<Vec<u8>>)>,
    },
}

/// A connection's transaction state.
#[derive(Debug, Default)]
pub struct Transaction {
    queue: Option<Queue>,
    /// The slot of the watched keys, and how many WATCH named.
    watching: Option<(u16, usize)>,
}

impl Transaction {
    /// Whether MULTI was called and the transaction not yet ended.
    pub fn in_multi(&self) -> bool {
        self.queue.is_some()
    }

    /// Whether the connection neither queues a transaction nor watches keys.
    pub fn is_idle(&self) -> bool {
        self.queue.is_none() && self.watching.is_none()
    }

    /// Whether the command is to be queued rather than run.
    pub fn queues(&self, spec: &CommandSpec) -> bool {
        self.in_multi() && !runs_inside_multi(spec.name)
    }

    /// A command inside MULTI could not be queued (unknown, wrong arity):
    /// EXEC will abort. Outside MULTI, nothing.
    pub fn refuse(&mut self) {
        if let Some(queue) = &mut self.queue {
            queue.refused = true;
        }
    }

    /// MULTI.
    pub fn multi(&mut self) -> Reply {
        if self.in_multi() {
            return Reply::Error("ERR MULTI calls can not be nested".into());
        }
        self.queue = Some(Queue::default());
        Reply::ok()
    }

    /// Queues a command whose arity was checked; returns `+QUEUED` or the
    /// error that makes EXEC abort.
    pub fn queue(&mut self, spec: &CommandSpec, args: Vec<Vec<u8>>) -> Reply {
        let queue = self.queue.as_mut().expect("queue only inside MULTI");
        let slot = if command::is_keyed(spec) {
            one_slot(command::key_indexes(spec, &args).map(|index| args[index].as_slice()))
        } else if KEYLESS_IN_TRANSACTION.contains(&spec.name) {
            Ok(None)
        } else {
            Err(Reply::Error(
                "ERR Command not allowed inside a transaction".into(),
            ))
        };
        let bytes = args.iter().map(Vec::len).sum::<usize>();
        let checked = slot.and_then(|slot| {
            if queue.commands.len() >= TRANSACTION_COMMANDS_MAX
                || queue.bytes + bytes > TRANSACTION_BYTES_MAX
            {
                Err(Reply::Error(format!(
                    "ERR a transaction holds at most {TRANSACTION_COMMANDS_MAX} commands and {TRANSACTION_BYTES_MAX} bytes"
                )))
            } else {
                Ok(slot)
            }
        });
        match checked {
            Ok(slot) => {
                queue.bytes += bytes;
                queue.commands.push(Queued { args, slot });
                Reply::Simple(QUEUED.into())
            }
            Err(error) => {
                queue.refused = true;
                error
            }
        }
    }

    /// WATCH `keys`: `Ok(shard)` where the keys' slot is to be registered
    /// (`route` says which, or refuses with `-MOVED`), or the error to
    /// answer.
    pub fn watch(
        &mut self,
        keys: &[Vec<u8>],
        route: impl FnOnce(u16) -> Result<u32, Reply>,
    ) -> Result<u32, Reply> {
        if self.in_multi() {
            return Err(Reply::Error("ERR WATCH inside MULTI is not allowed".into()));
        }
        let slot = one_slot(keys.iter().map(Vec::as_slice))?.expect("WATCH's arity needs a key");
        let (watched_slot, count) = self.watching.unwrap_or((slot, 0));
        if watched_slot != slot {
            return Err(Reply::Error(CROSSSLOT.into()));
        }
        if count + keys.len() > WATCHED_KEYS_MAX {
            return Err(Reply::Error(format!(
                "ERR a connection watches at most {WATCHED_KEYS_MAX} keys"
            )));
        }
        // A WATCH sent elsewhere (-MOVED) leaves nothing watched here.
        let shard = route(slot)?;
        self.watching = Some((slot, count + keys.len()));
        Ok(shard)
    }

    /// Forgets the watched keys; returns their slot, whose shard must forget
    /// them too.
    pub fn unwatch(&mut self) -> Option<u16> {
        self.watching.take().map(|(slot, _)| slot)
    }

    /// Ends the transaction without running it (DISCARD, RESET); returns
    /// whether there was one.
    pub fn discard(&mut self) -> bool {
        self.queue.take().is_some()
    }

    /// EXEC: ends the transaction and unwatches, and says what to run. On a
    /// refusal, the caller unwatches the slot [`Transaction::unwatch`]
    /// would have returned (taken here first).
    pub fn exec(&mut self) -> (Exec, Option<u16>) {
        let Some(queue) = self.queue.take() else {
            return (
                Exec::Refuse(Reply::Error("ERR EXEC without MULTI".into())),
                None,
            );
        };
        let watched = self.unwatch();
        if queue.refused {
            let abort = "EXECABORT Transaction discarded because of previous errors.";
            return (Exec::Refuse(Reply::Error(abort.into())), watched);
        }
        let slots = queue.commands.iter().filter_map(|queued| queued.slot);
        let slot = match one_slot_of(watched.into_iter().chain(slots)) {
            Ok(slot) => slot,
            Err(error) => return (Exec::Refuse(error), watched),
        };
        let (mut keyed, mut keyless) = (Vec::new(), Vec::new());
        for (position, queued) in queue.commands.into_iter().enumerate() {
            match queued.slot {
                Some(_) => keyed.push(queued.args),
                None => keyless.push((position, queued.args)),
            }
        }
        let run = Exec::Run {
            slot,
            watching: watched.is_some(),
            keyed,
            keyless,
        };
        (run, None)
    }
}

/// The one slot of `slots`, `None` if empty.
fn one_slot_of(slots: impl IntoIterator<Item = u16>) -> Result<Option<u16>, Reply> {
    let mut slots = slots.into_iter();
    let first = slots.next();
    match first {
        Some(slot) if slots.any(|other| other != slot) => Err(Reply::Error(CROSSSLOT.into())),
        _ => Ok(first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route that runs every slot here, on the shard of the slot's number.
    fn local(slot: u16) -> Result<u32, Reply> {
        Ok(u32::from(slot))
    }

    fn args(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|word| word.as_bytes().to_vec()).collect()
    }

    fn queue(transaction: &mut Transaction, words: &[&str]) -> Reply {
        let spec = command::lookup(words[0].as_bytes()).expect("a known command");
        transaction.queue(spec, args(words))
    }

    fn error(text: &str) -> Reply {
        Reply::Error(text.into())
    }

    #[test]
    fn exec_runs_keyed_commands_on_their_slot_and_keyless_ones_here() {
        let mut transaction = Transaction::default();
        assert_eq!(transaction.multi(), Reply::ok());
        assert_eq!(
            transaction.multi(),
            error("ERR MULTI calls can not be nested")
        );
        assert_eq!(
            queue(&mut transaction, &["SET", "{u}a", "1"]),
            Reply::Simple("QUEUED".into())
        );
        assert_eq!(
            queue(&mut transaction, &["PING"]),
            Reply::Simple("QUEUED".into())
        );
        assert_eq!(
            queue(&mut transaction, &["MGET", "{u}a", "{u}b"]),
            Reply::Simple("QUEUED".into())
        );
        let (exec, unwatch) = transaction.exec();
        assert_eq!(unwatch, None);
        assert_eq!(
            exec,
            Exec::Run {
                slot: Some(key_slot(b"{u}a")),
                watching: false,
                keyed: vec![args(&["SET", "{u}a", "1"]), args(&["MGET", "{u}a", "{u}b"])],
                keyless: vec![(1, args(&["PING"]))],
            }
        );
        assert!(!transaction.in_multi());
        assert_eq!(
            transaction.exec().0,
            Exec::Refuse(error("ERR EXEC without MULTI"))
        );
    }

    #[test]
    fn a_refused_command_aborts_exec_and_exec_unwatches() {
        let mut transaction = Transaction::default();
        assert_eq!(
            transaction.watch(&args(&["k"]), local),
            Ok(u32::from(key_slot(b"k")))
        );
        transaction.multi();
        assert_eq!(
            transaction.watch(&args(&["k"]), local),
            Err(error("ERR WATCH inside MULTI is not allowed"))
        );
        assert_eq!(
            queue(&mut transaction, &["DBSIZE"]),
            error("ERR Command not allowed inside a transaction")
        );
        assert_eq!(
            transaction.exec(),
            (
                Exec::Refuse(error(
                    "EXECABORT Transaction discarded because of previous errors."
                )),
                Some(key_slot(b"k"))
            )
        );
        assert_eq!(transaction.unwatch(), None, "EXEC unwatched");
    }

    #[test]
    fn keys_of_two_slots_are_refused_in_one_command_at_once_and_across_commands_at_exec() {
        let mut transaction = Transaction::default();
        transaction.multi();
        assert_eq!(
            queue(&mut transaction, &["MSET", "a", "1", "b", "2"]),
            error(CROSSSLOT)
        );
        transaction.discard();
        transaction.multi();
        queue(&mut transaction, &["SET", "a", "1"]);
        queue(&mut transaction, &["SET", "b", "1"]);
        assert_eq!(transaction.exec().0, Exec::Refuse(error(CROSSSLOT)));
        assert_eq!(
            transaction.watch(&args(&["a"]), local),
            Ok(u32::from(key_slot(b"a")))
        );
        assert_eq!(
            transaction.watch(&args(&["b"]), local),
            Err(error(CROSSSLOT))
        );
        transaction.multi();
        queue(&mut transaction, &["GET", "b"]);
        assert_eq!(
            transaction.exec(),
            (Exec::Refuse(error(CROSSSLOT)), Some(key_slot(b"a")))
        );
    }

    #[test]
    fn watching_alone_runs_on_the_watched_slot() {
        let mut transaction = Transaction::default();
        transaction.watch(&args(&["a", "a"]), local).unwrap();
        transaction.multi();
        let (exec, _) = transaction.exec();
        assert_eq!(
            exec,
            Exec::Run {
                slot: Some(key_slot(b"a")),
                watching: true,
                keyed: Vec::new(),
                keyless: Vec::new(),
            }
        );
    }

    #[test]
    fn the_queue_and_the_watched_keys_are_bounded() {
        let mut transaction = Transaction::default();
        transaction.multi();
        for _ in 0..TRANSACTION_COMMANDS_MAX {
            assert_eq!(
                queue(&mut transaction, &["PING"]),
                Reply::Simple("QUEUED".into())
            );
        }
        assert!(matches!(
            queue(&mut transaction, &["PING"]),
            Reply::Error(_)
        ));
        assert!(matches!(transaction.exec().0, Exec::Refuse(_)));
        let keys = vec![b"k".to_vec(); WATCHED_KEYS_MAX];
        assert!(transaction.watch(&keys, local).is_ok());
        assert!(transaction.watch(&keys[..1], local).is_err());
    }

    /// A WATCH the route sends elsewhere (`-MOVED`) watches nothing.
    #[test]
    fn a_watch_routed_elsewhere_leaves_nothing_watched() {
        let mut transaction = Transaction::default();
        let moved = |_| Err(Reply::Error("MOVED 1 elsewhere:1".into()));
        assert!(transaction.watch(&args(&["k"]), moved).is_err());
        assert_eq!(transaction.unwatch(), None);
    }
}
