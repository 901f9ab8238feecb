//! The command table and the keyed commands' pure execution.
//!
//! [`lookup`] finds a command's [`CommandSpec`] (arity, flags, where its keys
//! are, its documentation); the node loop checks [`check_arity`], routes keyed
//! commands to the shard owning their keys, and the shard calls [`execute`].
//!
//! [`execute`] never changes the key space: it reads it (an expired key reads
//! as absent), computes the reply and at most one [`Operation`], which the
//! shard logs and then applies. Every operation is a blind write (see
//! [`crate::operation`]): `INCR` logs the `Set` of the new number, `RENAME` a
//! `Batch` of a `Delete` and a `Set`, `SETBIT` and `BITOP` the `Set` of the
//! resulting string, `COPY` a `Set` of the source's value and expiry, and
//! `SETEX` a `Set` whose expiry is already absolute. Nothing is logged when
//! nothing changes.
//! The time arrives as an argument, so the same request on the same key space
//! always gives the same outcome.
//!
//! Replies and error texts are Redis 7's, so clients and their tests see what a
//! Redis server would say; the limits on key and value sizes are Keel's own.

mod bits;
mod docs;
mod generic;
mod lcs;
pub(crate) mod number;
mod strings;
mod table;

use crate::limits::Limits;
use crate::operation::Operation;
use crate::overlay::View;
use crate::resp::Reply;

pub use docs::command_reply;
pub use table::lookup;

/// Longest command name or argument prefix quoted in an unknown-command
/// or unknown-subcommand error (Redis's own bound).
const UNKNOWN_COMMAND_QUOTE_BYTES_MAX: usize = 128;

const SYNTAX_ERROR: &str = "ERR syntax error";
const NOT_INTEGER: &str = "ERR value is not an integer or out of range";

/// Runs one keyed command on the key space; an `Err` is the reply of a
/// request that changes nothing.
type Handler = fn(&Context<'_>) -> Result<Outcome, Reply>;

/// What a command handler reads.
#[derive(Debug)]
struct Context<'a> {
    /// The key space as the command sees it: committed entries under the
    /// leader's uncommitted ones (`crate::overlay`).
    keyspace: View<'a>,
    /// The whole request, the command name first.
    args: &'a [Vec<u8>],
    now_unix_ms: u64,
    limits: &'a Limits,
}

/// Where a command's keys are among its arguments, as `COMMAND INFO` reports
/// them: from `first` to `last` (negative: counted from the end, -1 the last
/// argument) every `step`-th argument. All zero for commands without keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub first: i32,
    pub last: i32,
    pub step: i32,
}

/// One command: how it is called, where its keys are, its documentation.
#[derive(Debug)]
pub struct CommandSpec {
    /// Lowercase, as Redis names commands in replies.
    pub name: &'static str,
    /// Exact argument count including the name, or `-n`: at least `n`.
    pub arity: i32,
    /// Runs on the shard owning its keys (with [`execute`]) rather than on
    /// the connection's node loop.
    pub keyed: bool,
    pub keys: KeyRange,
    /// Redis's command flags (`write`, `readonly`, `fast`, `denyoom`, ...).
    pub flags: &'static [&'static str],
    /// Redis's ACL categories (`@read`, `@string`, ...).
    pub acl_categories: &'static [&'static str],
    /// Redis's documentation group (`string`, `generic`, `connection`, `server`).
    pub group: &'static str,
    /// The Redis version that introduced the command.
    pub since: &'static str,
    pub summary: &'static str,
    pub complexity: &'static str,
    /// The keyed command's execution; `None` for node commands.
    handler: Option<Handler>,
}

impl CommandSpec {
    /// Whether the command changes keys (Redis's `write` flag): it runs on
    /// the shard's leader.
    pub fn is_write(&self) -> bool {
        self.flags.contains(&"write")
    }
}

/// A keyed command's reply and the change it makes, if any.
#[derive(Debug, PartialEq)]
pub struct Outcome {
    pub reply: Reply,
    pub op: Option<Operation>,
}

impl Outcome {
    fn read(reply: Reply) -> Result<Outcome, Reply> {
        Ok(Outcome { reply, op: None })
    }

    fn write(reply: Reply, op: Operation) -> Result<Outcome, Reply> {
        Ok(Outcome {
            reply,
            op: Some(op),
        })
    }

    /// A write that gives `key` a new value and keeps the expiry of its
    /// `current` item (none if it had none or did not exist): a blind Set, as
    /// INCR, APPEND, SETRANGE and SETBIT log.
    fn overwrite(
        reply: Reply,
        key: &[u8],
        value: Vec<u8>,
        current: Option<crate::keyspace::Item<'_>>,
    ) -> Result<Outcome, Reply> {
        let expire_at_unix_ms = current.and_then(|item| item.expire_at_unix_ms);
        Outcome::write(
            reply,
            Operation::Set {
                key: key.to_vec(),
                value,
                expire_at_unix_ms,
            },
        )
    }
}

/// Redis 7's reply to a command it does not know, quoting the name and the
/// start of the arguments.
pub fn unknown_command(args: &[Vec<u8>]) -> Reply {
    let name = args.first().map_or(&[][..], Vec::as_slice);
    let name = &name[..name.len().min(UNKNOWN_COMMAND_QUOTE_BYTES_MAX)];
    let mut quoted = Vec::new();
    for arg in args.iter().skip(1) {
        if quoted.len() >= UNKNOWN_COMMAND_QUOTE_BYTES_MAX {
            break;
        }
        let room = UNKNOWN_COMMAND_QUOTE_BYTES_MAX - quoted.len();
        quoted.push(b'\'');
        quoted.extend_from_slice(&arg[..arg.len().min(room)]);
        quoted.extend_from_slice(b"' ");
    }
    let text = format!(
        "ERR unknown command '{}', with args beginning with: {}",
        String::from_utf8_lossy(name),
        String::from_utf8_lossy(&quoted)
    );
    // An error is one line: Redis blanks line breaks a client sent.
    Reply::Error(text.replace(['\r', '\n'], " "))
}

/// Redis 7's reply to an unknown subcommand of `command` (uppercase, as
/// the error names it): the start of what was given, on one line.
fn unknown_subcommand(command: &str, given: &[u8]) -> Reply {
    let quoted = &given[..given.len().min(UNKNOWN_COMMAND_QUOTE_BYTES_MAX)];
    let text = format!(
        "ERR unknown subcommand '{}'. Try {command} HELP.",
        String::from_utf8_lossy(quoted)
    );
    Reply::Error(text.replace(['\r', '\n'], " "))
}

/// Checks the argument count (including the command name) against the spec.
pub fn check_arity(spec: &CommandSpec, argc: usize) -> Result<(), Reply> {
    if arity_fits(spec.arity, argc) {
        Ok(())
    } else {
        Err(wrong_arity(spec.name))
    }
}

/// Whether `argc` arguments (the name included) fit `arity`: exactly `n`, or
/// at least `n` when given as `-n`.
fn arity_fits(arity: i32, argc: usize) -> bool {
    let count = arity.unsigned_abs() as usize;
    if arity >= 0 {
        argc == count
    } else {
        argc >= count
    }
}

/// Redis 7's reply to a command (or `container|subcommand`) given the wrong
/// number of arguments.
pub fn wrong_arity(name: &str) -> Reply {
    Reply::Error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

pub fn is_keyed(spec: &CommandSpec) -> bool {
    spec.keyed
}

/// The positions of the keys in `args` (the command name at 0): MSET's are
/// 1, 3, 5, ..., DEL's 1 to the end, RENAME's 1 and 2.
pub fn key_indexes(spec: &CommandSpec, args: &[Vec<u8>]) -> impl Iterator<Item = usize> {
    let KeyRange { first, last, step } = spec.keys;
    let argc = args.len() as i64;
    let last = if last < 0 {
        argc + i64::from(last)
    } else {
        i64::from(last)
    };
    // A keyless spec (first or step not positive) gives an empty range.
    let (first, last) = if first <= 0 || step <= 0 {
        (1, 0)
    } else {
        (i64::from(first), last.min(argc - 1))
    };
    (first..=last)
        .step_by(step.max(1) as usize)
        .map(|index| index as usize)
}

/// Runs a keyed command (one whose spec is [`CommandSpec::keyed`]) whose
/// arity the caller has checked.
pub fn execute<'a>(
    keyspace: impl Into<View<'a>>,
    args: &'a [Vec<u8>],
    now_unix_ms: u64,
    limits: &'a Limits,
) -> Outcome {
    let Some(spec) = args.first().and_then(|name| lookup(name)) else {
        return Outcome {
            reply: unknown_command(args),
            op: None,
        };
    };
    let Some(handler) = spec.handler else {
        panic!(
            "'{}' is a node command: the node loop runs it, not a shard",
            spec.name
        );
    };
    let context = Context {
        keyspace: keyspace.into(),
        args,
        now_unix_ms,
        limits,
    };
    let checked = check_key_sizes(spec, &context).and_then(|()| handler(&context));
    checked.unwrap_or_else(|reply| Outcome { reply, op: None })
}

/// Refuses a write naming a key over the limit: the key would be copied into
/// every log entry and index node that names it.
fn check_key_sizes(spec: &CommandSpec, context: &Context<'_>) -> Result<(), Reply> {
    if !spec.is_write() {
        return Ok(());
    }
    let key_bytes_max = context.limits.key_bytes_max;
    match key_indexes(spec, context.args)
        .map(|index| context.args[index].len())
        .find(|len| *len > key_bytes_max)
    {
        Some(len) => Err(Reply::Error(format!(
            "ERR key of {len} bytes exceeds max-key-bytes ({key_bytes_max})"
        ))),
        None => Ok(()),
    }
}

/// Refuses a value over the limit (Redis's proto-max-bulk-len).
fn check_value_size(len: usize, limits: &Limits) -> Result<(), Reply> {
    if len > limits.value_bytes_max {
        return Err(Reply::Error(format!(
            "ERR value of {len} bytes exceeds max-value-bytes ({})",
            limits.value_bytes_max
        )));
    }
    Ok(())
}

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests;
