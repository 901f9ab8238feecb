//! The generic key commands: existence, deletion, expiry, type, renaming,
//! copying and OBJECT.

use super::number::parse_i64;
use super::{
    arity_fits, unknown_subcommand, wrong_arity, Context, Outcome, NOT_INTEGER, SYNTAX_ERROR,
};
use crate::operation::{Operation, SingleOp};
use crate::resp::Reply;

/// DEL and UNLINK: the number of live keys removed (a key named twice counts
/// once).
pub fn del(context: &Context<'_>) -> Result<Outcome, Reply> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for key in &context.args[1..] {
        if context.keyspace.get(key, context.now_unix_ms).is_some() && !keys.contains(key) {
            keys.push(key.clone());
        }
    }
    if keys.is_empty() {
        return Outcome::read(Reply::Integer(0));
    }
    Outcome::write(
        Reply::Integer(keys.len() as i64),
        Operation::Delete { keys },
    )
}

/// EXISTS: a key named twice counts twice, as in Redis.
pub fn exists(context: &Context<'_>) -> Result<Outcome, Reply> {
    let live = context.args[1..]
        .iter()
        .filter(|key| context.keyspace.get(key, context.now_unix_ms).is_some());
    Outcome::read(Reply::Integer(live.count() as i64))
}

pub fn type_of(context: &Context<'_>) -> Result<Outcome, Reply> {
    let found = context
        .keyspace
        .get(&context.args[1], context.now_unix_ms)
        .is_some();
    Outcome::read(Reply::Simple(
        if found { "string" } else { "none" }.to_owned(),
    ))
}

/// How EXPIRE's family reads its time argument.
#[derive(Clone, Copy, Debug)]
struct TimeArgument {
    command: &'static str,
    seconds: bool,
    /// From now (EXPIRE, PEXPIRE) rather than from the unix epoch.
    relative: bool,
}

pub fn expire(context: &Context<'_>) -> Result<Outcome, Reply> {
    expire_generic(
        context,
        TimeArgument {
            command: "expire",
            seconds: true,
            relative: true,
        },
    )
}

pub fn pexpire(context: &Context<'_>) -> Result<Outcome, Reply> {
    expire_generic(
        context,
        TimeArgument {
            command: "pexpire",
            seconds: false,
            relative: true,
        },
    )
}

pub fn expireat(context: &Context<'_>) -> Result<Outcome, Reply> {
    expire_generic(
        context,
        TimeArgument {
            command: "expireat",
            seconds: true,
            relative: false,
        },
    )
}

pub fn pexpireat(context: &Context<'_>) -> Result<Outcome, Reply> {
    expire_generic(
        context,
        TimeArgument {
            command: "pexpireat",
            seconds: false,
            relative: false,
        },
    )
}

/// EXPIRE's NX, XX, GT and LT conditions.
#[derive(Clone, Copy, Debug, Default)]
struct Conditions {
    no_expiry: bool,
    has_expiry: bool,
    greater: bool,
    less: bool,
}

fn parse_conditions(options: &[Vec<u8>]) -> Result<Conditions, Reply> {
    let mut conditions = Conditions::default();
    for option in options {
        let flag = match option.to_ascii_lowercase().as_slice() {
            b"nx" => &mut conditions.no_expiry,
            b"xx" => &mut conditions.has_expiry,
            b"gt" => &mut conditions.greater,
            b"lt" => &mut conditions.less,
            _ => {
                return Err(Reply::Error(format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(option)
                )))
            }
        };
        *flag = true;
    }
    if conditions.no_expiry && (conditions.has_expiry || conditions.greater || conditions.less) {
        return Err(Reply::error(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if conditions.greater && conditions.less {
        return Err(Reply::error(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    Ok(conditions)
}

impl Conditions {
    /// Whether the new expiry `at` may replace `current` (`None`: no expiry,
    /// which GT and LT treat as infinite).
    fn allow(&self, current: Option<i64>, at: i64) -> bool {
        match current {
            None => !self.has_expiry && !self.greater,
            Some(current) => {
                let refused = self.no_expiry
                    || (self.greater && at <= current)
                    || (self.less && at >= current);
                !refused
            }
        }
    }
}

/// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT key time [NX | XX | GT | LT], as
/// Redis's `expireGenericCommand`: a time at or before now deletes the key.
fn expire_generic(context: &Context<'_>, time: TimeArgument) -> Result<Outcome, Reply> {
    let key = &context.args[1];
    let conditions = parse_conditions(&context.args[3..])?;
    let amount = parse_i64(&context.args[2]).ok_or_else(|| Reply::error(NOT_INTEGER))?;
    let invalid = || {
        Reply::Error(format!(
            "ERR invalid expire time in '{}' command",
            time.command
        ))
    };
    let ms = if time.seconds {
        amount.checked_mul(1000).ok_or_else(invalid)?
    } else {
        amount
    };
    let now = i64::try_from(context.now_unix_ms).map_err(|_| invalid())?;
    let at = if time.relative {
        ms.checked_add(now).ok_or_else(invalid)?
    } else {
        ms
    };
    let Some(item) = context.keyspace.get(key, context.now_unix_ms) else {
        return Outcome::read(Reply::Integer(0));
    };
    let current = item
        .expire_at_unix_ms
        .map(|current| current.min(i64::MAX as u64) as i64);
    if !conditions.allow(current, at) {
        return Outcome::read(Reply::Integer(0));
    }
    if at <= now {
        return Outcome::write(
            Reply::Integer(1),
            Operation::Delete {
                keys: vec![key.clone()],
            },
        );
    }
    Outcome::write(
        Reply::Integer(1),
        Operation::Expire {
            key: key.clone(),
            at_unix_ms: at as u64,
        },
    )
}

/// Half a second: TTL and EXPIRETIME round milliseconds to the nearest second.
const HALF_SECOND_MS: u64 = 500;

pub fn ttl(context: &Context<'_>) -> Result<Outcome, Reply> {
    expiry_report(
        context,
        ExpiryReport {
            seconds: true,
            absolute: false,
        },
    )
}

pub fn pttl(context: &Context<'_>) -> Result<Outcome, Reply> {
    expiry_report(
        context,
        ExpiryReport {
            seconds: false,
            absolute: false,
        },
    )
}

pub fn expiretime(context: &Context<'_>) -> Result<Outcome, Reply> {
    expiry_report(
        context,
        ExpiryReport {
            seconds: true,
            absolute: true,
        },
    )
}

pub fn pexpiretime(context: &Context<'_>) -> Result<Outcome, Reply> {
    expiry_report(
        context,
        ExpiryReport {
            seconds: false,
            absolute: true,
        },
    )
}

/// Which of TTL, PTTL, EXPIRETIME and PEXPIRETIME answers.
#[derive(Clone, Copy, Debug)]
struct ExpiryReport {
    seconds: bool,
    /// The unix time of expiry rather than the time left.
    absolute: bool,
}

/// -2 when the key is absent, -1 when it has no expiry, else the time left
/// or the time of expiry, rounded to the nearest second for TTL and
/// EXPIRETIME, as Redis's `ttlGenericCommand` does.
fn expiry_report(context: &Context<'_>, report: ExpiryReport) -> Result<Outcome, Reply> {
    let reply = match context.keyspace.get(&context.args[1], context.now_unix_ms) {
        None => -2,
        Some(item) => match item.expire_at_unix_ms {
            None => -1,
            Some(at) => {
                let ms = if report.absolute {
                    at
                } else {
                    at.saturating_sub(context.now_unix_ms)
                };
                let ms = ms.min(i64::MAX as u64 - HALF_SECOND_MS);
                let reported = if report.seconds {
                    (ms + HALF_SECOND_MS) / 1000
                } else {
                    ms
                };
                reported as i64
            }
        },
    };
    Outcome::read(Reply::Integer(reply))
}

pub fn persist(context: &Context<'_>) -> Result<Outcome, Reply> {
    let key = &context.args[1];
    match context.keyspace.get(key, context.now_unix_ms) {
        Some(item) if item.expire_at_unix_ms.is_some() => {
            Outcome::write(Reply::Integer(1), Operation::Persist { key: key.clone() })
        }
        _ => Outcome::read(Reply::Integer(0)),
    }
}

pub fn rename(context: &Context<'_>) -> Result<Outcome, Reply> {
    rename_generic(context, false)
}

pub fn renamenx(context: &Context<'_>) -> Result<Outcome, Reply> {
    rename_generic(context, true)
}

/// RENAME and RENAMENX: the value and its expiry move to the new name.
fn rename_generic(context: &Context<'_>, only_if_absent: bool) -> Result<Outcome, Reply> {
    let (from, to) = (&context.args[1], &context.args[2]);
    let Some(item) = context.keyspace.get(from, context.now_unix_ms) else {
        return Err(Reply::error("ERR no such key"));
    };
    let done = if only_if_absent {
        Reply::Integer(1)
    } else {
        Reply::ok()
    };
    if from == to {
        return Outcome::read(if only_if_absent {
            Reply::Integer(0)
        } else {
            done
        });
    }
    if only_if_absent && context.keyspace.get(to, context.now_unix_ms).is_some() {
        return Outcome::read(Reply::Integer(0));
    }
    let ops = vec![
        SingleOp::Delete {
            keys: vec![from.clone()],
        },
        SingleOp::Set {
            key: to.clone(),
            value: item.value.to_vec(),
            expire_at_unix_ms: item.expire_at_unix_ms,
        },
    ];
    Outcome::write(done, Operation::Batch { ops })
}

/// COPY source destination [DB 0] [REPLACE]: the value and its expiry. Keel
/// has one database, so `DB` names 0 or is out of range, as a Redis server
/// with one database answers (a cluster-mode Redis refuses other databases
/// too).
pub fn copy(context: &Context<'_>) -> Result<Outcome, Reply> {
    let (source, destination) = (&context.args[1], &context.args[2]);
    let options = &context.args[3..];
    let mut replace = false;
    let mut position = 0;
    while let Some(option) = options.get(position) {
        if option.eq_ignore_ascii_case(b"replace") {
            replace = true;
        } else if let (true, Some(db)) = (
            option.eq_ignore_ascii_case(b"db"),
            options.get(position + 1),
        ) {
            // Redis reads a C int.
            let db = parse_i64(db).ok_or_else(|| Reply::error(NOT_INTEGER))?;
            if i32::try_from(db).is_err() {
                return Err(Reply::error(
                    "ERR value is out of range, value must between -2147483648 and 2147483647",
                ));
            }
            if db != 0 {
                return Err(Reply::error("ERR DB index is out of range"));
            }
            position += 1;
        } else {
            return Err(Reply::error(SYNTAX_ERROR));
        }
        position += 1;
    }
    if source == destination {
        return Err(Reply::error(
            "ERR source and destination objects are the same",
        ));
    }
    let Some(item) = context.keyspace.get(source, context.now_unix_ms) else {
        return Outcome::read(Reply::Integer(0));
    };
    if !replace
        && context
            .keyspace
            .get(destination, context.now_unix_ms)
            .is_some()
    {
        return Outcome::read(Reply::Integer(0));
    }
    Outcome::write(
        Reply::Integer(1),
        Operation::Set {
            key: destination.clone(),
            value: item.value.to_vec(),
            expire_at_unix_ms: item.expire_at_unix_ms,
        },
    )
}

const OBJECT_HELP: &[&str] = &[
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "IDLETIME <key>",
    "    Return the idle time of the <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP",
    "    Prints this help.",
];

/// Longest value Redis stores inline with its object header (`embstr`).
const EMBSTR_BYTES_MAX: usize = 44;
/// Longest value Redis tries to store as an integer.
const INT_ENCODING_BYTES_MAX: usize = 20;

/// OBJECT ENCODING | REFCOUNT | IDLETIME | FREQ key, and OBJECT HELP.
///
/// - ENCODING names the encoding Redis's `tryObjectEncoding` gives a value
///   SET stores: `int` for a 64-bit decimal as Redis reads one, `embstr` up
///   to 44 bytes, `raw` beyond. Keel keeps only the bytes, so a value that
///   APPEND, SETRANGE or SETBIT made (Redis says `raw` for those) is named
///   by its bytes too.
/// - REFCOUNT is 1: Keel shares no values between keys.
/// - IDLETIME and FREQ are errors for a key that exists: Keel tracks no
///   access times or frequencies (a read would have to change state); FREQ's
///   is the error of a Redis without an LFU policy.
pub fn object(context: &Context<'_>) -> Result<Outcome, Reply> {
    let subcommand = context.args[1].to_ascii_lowercase();
    let (arity, full_name) = match subcommand.as_slice() {
        b"help" => (2, "object|help"),
        b"encoding" => (3, "object|encoding"),
        b"refcount" => (3, "object|refcount"),
        b"idletime" => (3, "object|idletime"),
        b"freq" => (3, "object|freq"),
        _ => return Err(unknown_subcommand("OBJECT", &context.args[1])),
    };
    if !arity_fits(arity, context.args.len()) {
        return Err(wrong_arity(full_name));
    }
    if subcommand == b"help" {
        let lines = OBJECT_HELP
            .iter()
            .map(|line| Reply::Simple((*line).to_owned()));
        return Outcome::read(Reply::Array(lines.collect()));
    }
    let Some(item) = context.keyspace.get(&context.args[2], context.now_unix_ms) else {
        return Outcome::read(Reply::Null);
    };
    match subcommand.as_slice() {
        b"encoding" => Outcome::read(Reply::Bulk(encoding(item.value).as_bytes().to_vec())),
        b"refcount" => Outcome::read(Reply::Integer(1)),
        b"idletime" => Err(Reply::error(
            "ERR Keel does not track key access, idle time not tracked.",
        )),
        _ => Err(Reply::error(
            "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.",
        )),
    }
}

/// The encoding Redis gives a string value SET stores.
fn encoding(value: &[u8]) -> &'static str {
    if value.len() <= INT_ENCODING_BYTES_MAX && parse_i64(value).is_some() {
        "int"
    } else if value.len() <= EMBSTR_BYTES_MAX {
        "embstr"
    } else {
        "raw"
    }
}

#[cfg(test)]
mod tests;
