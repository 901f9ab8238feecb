//! The string commands: GET, SET and its variants, counters, ranges and the
//! multi-key MGET/MSET/MSETNX.

use super::number::{format_f64, parse_f64, parse_i64};
use super::{check_value_size, Context, Outcome, NOT_INTEGER, SYNTAX_ERROR};
use crate::operation::{Operation, SingleOp};
use crate::resp::Reply;

const OVERFLOW: &str = "ERR increment or decrement would overflow";
const NOT_FLOAT: &str = "ERR value is not a valid float";
const STRING_TOO_LONG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

/// The expiry option of SET or GETEX; at most one may be given (repeating
/// the same one is allowed, the last value wins, as in Redis).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExpiryOption {
    Unset,
    /// Seconds from now.
    Ex,
    /// Milliseconds from now.
    Px,
    /// Unix seconds.
    ExAt,
    /// Unix milliseconds.
    PxAt,
    /// SET only: keep the key's current expiry.
    KeepTtl,
    /// GETEX only: remove the key's expiry.
    Persist,
}

/// SET's and GETEX's options as Redis's `parseExtendedStringArgumentsOrReply`
/// accepts them.
#[derive(Debug)]
struct ExtendedOptions<'a> {
    only_if_absent: bool,
    only_if_present: bool,
    get: bool,
    expiry: ExpiryOption,
    expiry_amount: Option<&'a [u8]>,
}

/// Which command's options are parsed: SET takes NX, XX, GET and KEEPTTL,
/// GETEX takes PERSIST; both take the four times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OptionsOf {
    Set,
    GetEx,
}

fn parse_extended(options: &[Vec<u8>], of: OptionsOf) -> Result<ExtendedOptions<'_>, Reply> {
    let mut parsed = ExtendedOptions {
        only_if_absent: false,
        only_if_present: false,
        get: false,
        expiry: ExpiryOption::Unset,
        expiry_amount: None,
    };
    let set = of == OptionsOf::Set;
    let mut position = 0;
    while let Some(option) = options.get(position) {
        let next = options.get(position + 1);
        let is = |name: &str| option.eq_ignore_ascii_case(name.as_bytes());
        // An expiry option conflicts with every other expiry option.
        let expiry_free = |wanted: ExpiryOption| {
            matches!(parsed.expiry, ExpiryOption::Unset) || parsed.expiry == wanted
        };
        let timed = [
            ("ex", ExpiryOption::Ex),
            ("px", ExpiryOption::Px),
            ("exat", ExpiryOption::ExAt),
            ("pxat", ExpiryOption::PxAt),
        ];
        if is("nx") && set && !parsed.only_if_present {
            parsed.only_if_absent = true;
        } else if is("xx") && set && !parsed.only_if_absent {
            parsed.only_if_present = true;
        } else if is("get") && set {
            parsed.get = true;
        } else if is("keepttl") && set && expiry_free(ExpiryOption::KeepTtl) {
            parsed.expiry = ExpiryOption::KeepTtl;
        } else if is("persist") && !set && expiry_free(ExpiryOption::Persist) {
            parsed.expiry = ExpiryOption::Persist;
        } else if let Some((_, timed)) = timed
            .iter()
            .find(|(name, timed)| is(name) && expiry_free(*timed) && next.is_some())
        {
            parsed.expiry = *timed;
            parsed.expiry_amount = next.map(Vec::as_slice);
            position += 1;
        } else {
            return Err(Reply::error(SYNTAX_ERROR));
        }
        position += 1;
    }
    Ok(parsed)
}

/// What the command does to the key's expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NewExpiry {
    Clear,
    Keep,
    At(u64),
}

/// The expiry SET or GETEX asks for. Without an option SET clears the
/// expiry and GETEX keeps it. EX/PX/EXAT/PXAT are made absolute as Redis's
/// `getExpireMillisecondsOrReply` does: the amount must be positive and the
/// result fit in a signed 64-bit millisecond count.
fn resolve_expiry(
    options: &ExtendedOptions<'_>,
    of: OptionsOf,
    now_unix_ms: u64,
) -> Result<NewExpiry, Reply> {
    let (seconds, relative) = match options.expiry {
        ExpiryOption::Unset if of == OptionsOf::Set => return Ok(NewExpiry::Clear),
        ExpiryOption::Unset | ExpiryOption::KeepTtl => return Ok(NewExpiry::Keep),
        ExpiryOption::Persist => return Ok(NewExpiry::Clear),
        ExpiryOption::Ex => (true, true),
        ExpiryOption::Px => (false, true),
        ExpiryOption::ExAt => (true, false),
        ExpiryOption::PxAt => (false, false),
    };
    let command = if of == OptionsOf::Set { "set" } else { "getex" };
    let amount = options.expiry_amount.unwrap_or_default();
    expiry_time(amount, seconds, relative, command, now_unix_ms).map(NewExpiry::At)
}

/// The unix millisecond an expiry argument names, as Redis's
/// `getExpireMillisecondsOrReply` reads it: an integer (else `NOT_INTEGER`),
/// positive, whose time in milliseconds (from now if `relative`) fits a
/// signed 64-bit count (else an invalid expire time in `command`).
fn expiry_time(
    amount: &[u8],
    seconds: bool,
    relative: bool,
    command: &str,
    now_unix_ms: u64,
) -> Result<u64, Reply> {
    let amount = parse_i64(amount).ok_or_else(|| Reply::error(NOT_INTEGER))?;
    let invalid = || Reply::Error(format!("ERR invalid expire time in '{command}' command"));
    if amount <= 0 {
        return Err(invalid());
    }
    let ms = if seconds {
        amount.checked_mul(1000).ok_or_else(invalid)?
    } else {
        amount
    };
    let base = if relative {
        i64::try_from(now_unix_ms).map_err(|_| invalid())?
    } else {
        0
    };
    let at = ms.checked_add(base).ok_or_else(invalid)?;
    Ok(at as u64)
}

fn bulk_or_null(value: Option<&[u8]>) -> Reply {
    value.map_or(Reply::Null, |value| Reply::Bulk(value.to_vec()))
}

pub fn get(context: &Context<'_>) -> Result<Outcome, Reply> {
    let item = context.keyspace.get(&context.args[1], context.now_unix_ms);
    Outcome::read(bulk_or_null(item.map(|item| item.value)))
}

/// SET key value [NX | XX] [GET] [EX s | PX ms | EXAT unix-s | PXAT unix-ms | KEEPTTL]
pub fn set(context: &Context<'_>) -> Result<Outcome, Reply> {
    let (key, value) = (&context.args[1], &context.args[2]);
    let options = parse_extended(&context.args[3..], OptionsOf::Set)?;
    let expiry = resolve_expiry(&options, OptionsOf::Set, context.now_unix_ms)?;
    check_value_size(value.len(), context.limits)?;
    let current = context.keyspace.get(key, context.now_unix_ms);
    let old = bulk_or_null(current.as_ref().map(|item| item.value));
    let refused = (options.only_if_absent && current.is_some())
        || (options.only_if_present && current.is_none());
    let reply = match (options.get, refused) {
        (true, _) => old,
        (false, true) => Reply::Null,
        (false, false) => Reply::ok(),
    };
    if refused {
        return Outcome::read(reply);
    }
    let expire_at_unix_ms = match expiry {
        NewExpiry::Clear => None,
        NewExpiry::Keep => current.as_ref().and_then(|item| item.expire_at_unix_ms),
        NewExpiry::At(at) if at <= context.now_unix_ms => {
            // Already expired: the key ends up absent.
            return match current {
                Some(_) => Outcome::write(
                    reply,
                    Operation::Delete {
                        keys: vec![key.clone()],
                    },
                ),
                None => Outcome::read(reply),
            };
        }
        NewExpiry::At(at) => Some(at),
    };
    Outcome::write(
        reply,
        Operation::Set {
            key: key.clone(),
            value: value.clone(),
            expire_at_unix_ms,
        },
    )
}

/// SETEX key seconds value: SET with EX.
pub fn setex(context: &Context<'_>) -> Result<Outcome, Reply> {
    set_expiring(context, true, "setex")
}

/// PSETEX key milliseconds value: SET with PX.
pub fn psetex(context: &Context<'_>) -> Result<Outcome, Reply> {
    set_expiring(context, false, "psetex")
}

/// SETEX and PSETEX: the time is positive and relative, so the key never
/// ends up expired at once.
fn set_expiring(context: &Context<'_>, seconds: bool, command: &str) -> Result<Outcome, Reply> {
    let (key, value) = (&context.args[1], &context.args[3]);
    let at = expiry_time(
        &context.args[2],
        seconds,
        true,
        command,
        context.now_unix_ms,
    )?;
    check_value_size(value.len(), context.limits)?;
    Outcome::write(
        Reply::ok(),
        Operation::Set {
            key: key.clone(),
            value: value.clone(),
            expire_at_unix_ms: Some(at),
        },
    )
}

pub fn setnx(context: &Context<'_>) -> Result<Outcome, Reply> {
    let (key, value) = (&context.args[1], &context.args[2]);
    check_value_size(value.len(), context.limits)?;
    if context.keyspace.get(key, context.now_unix_ms).is_some() {
        return Outcome::read(Reply::Integer(0));
    }
    Outcome::write(
        Reply::Integer(1),
        Operation::Set {
            key: key.clone(),
            value: value.clone(),
            expire_at_unix_ms: None,
        },
    )
}

pub fn getset(context: &Context<'_>) -> Result<Outcome, Reply> {
    let (key, value) = (&context.args[1], &context.args[2]);
    check_value_size(value.len(), context.limits)?;
    let current = context.keyspace.get(key, context.now_unix_ms);
    let reply = bulk_or_null(current.map(|item| item.value));
    Outcome::write(
        reply,
        Operation::Set {
            key: key.clone(),
            value: value.clone(),
            expire_at_unix_ms: None,
        },
    )
}

pub fn getdel(context: &Context<'_>) -> Result<Outcome, Reply> {
    let key = &context.args[1];
    match context.keyspace.get(key, context.now_unix_ms) {
        Some(item) => Outcome::write(
            Reply::Bulk(item.value.to_vec()),
            Operation::Delete {
                keys: vec![key.clone()],
            },
        ),
        None => Outcome::read(Reply::Null),
    }
}

/// GETEX key [EX s | PX ms | EXAT unix-s | PXAT unix-ms | PERSIST]
pub fn getex(context: &Context<'_>) -> Result<Outcome, Reply> {
    let key = &context.args[1];
    let options = parse_extended(&context.args[2..], OptionsOf::GetEx)?;
    // As Redis: an absent key answers nil before the time is read.
    let Some(item) = context.keyspace.get(key, context.now_unix_ms) else {
        return Outcome::read(Reply::Null);
    };
    let expiry = resolve_expiry(&options, OptionsOf::GetEx, context.now_unix_ms)?;
    let reply = Reply::Bulk(item.value.to_vec());
    match expiry {
        NewExpiry::At(at) if at <= context.now_unix_ms => Outcome::write(
            reply,
            Operation::Delete {
                keys: vec![key.clone()],
            },
        ),
        NewExpiry::At(at) => Outcome::write(
            reply,
            Operation::Expire {
                key: key.clone(),
                at_unix_ms: at,
            },
        ),
        NewExpiry::Clear if item.expire_at_unix_ms.is_some() => {
            Outcome::write(reply, Operation::Persist { key: key.clone() })
        }
        NewExpiry::Clear | NewExpiry::Keep => Outcome::read(reply),
    }
}

pub fn incr(context: &Context<'_>) -> Result<Outcome, Reply> {
    increment(context, 1)
}

pub fn decr(context: &Context<'_>) -> Result<Outcome, Reply> {
    increment(context, -1)
}

pub fn incrby(context: &Context<'_>) -> Result<Outcome, Reply> {
    let by = parse_i64(&context.args[2]).ok_or_else(|| Reply::error(NOT_INTEGER))?;
    increment(context, by)
}

pub fn decrby(context: &Context<'_>) -> Result<Outcome, Reply> {
    let by = parse_i64(&context.args[2]).ok_or_else(|| Reply::error(NOT_INTEGER))?;
    let by = by
        .checked_neg()
        .ok_or_else(|| Reply::error("ERR decrement would overflow"))?;
    increment(context, by)
}

/// Adds `by` to the key's integer (0 if absent), keeping its expiry.
fn increment(context: &Context<'_>, by: i64) -> Result<Outcome, Reply> {
    let key = &context.args[1];
    let current = context.keyspace.get(key, context.now_unix_ms);
    let value = match &current {
        Some(item) => parse_i64(item.value).ok_or_else(|| Reply::error(NOT_INTEGER))?,
        None => 0,
    };
    let sum = value
        .checked_add(by)
        .ok_or_else(|| Reply::error(OVERFLOW))?;
    Outcome::overwrite(
        Reply::Integer(sum),
        key,
        sum.to_string().into_bytes(),
        current,
    )
}

pub fn incrbyfloat(context: &Context<'_>) -> Result<Outcome, Reply> {
    let key = &context.args[1];
    let current = context.keyspace.get(key, context.now_unix_ms);
    let value = match &current {
        Some(item) => parse_f64(item.value).ok_or_else(|| Reply::error(NOT_FLOAT))?,
        None => 0.0,
    };
    let by = parse_f64(&context.args[2]).ok_or_else(|| Reply::error(NOT_FLOAT))?;
    let sum = value + by;
    if !sum.is_finite() {
        return Err(Reply::error("ERR increment would produce NaN or Infinity"));
    }
    let text = format_f64(sum).into_bytes();
    Outcome::overwrite(Reply::Bulk(text.clone()), key, text, current)
}

pub fn append(context: &Context<'_>) -> Result<Outcome, Reply> {
    let (key, suffix) = (&context.args[1], &context.args[2]);
    let current = context.keyspace.get(key, context.now_unix_ms);
    let old = current.as_ref().map_or(&[][..], |item| item.value);
    let len = old.len() + suffix.len();
    if len > context.limits.value_bytes_max {
        return Err(Reply::error(STRING_TOO_LONG));
    }
    if suffix.is_empty() && current.is_some() {
        return Outcome::read(Reply::Integer(len as i64));
    }
    let value = [old, suffix.as_slice()].concat();
    Outcome::overwrite(Reply::Integer(len as i64), key, value, current)
}

pub fn strlen(context: &Context<'_>) -> Result<Outcome, Reply> {
    let item = context.keyspace.get(&context.args[1], context.now_unix_ms);
    Outcome::read(Reply::Integer(
        item.map_or(0, |item| item.value.len() as i64),
    ))
}

/// GETRANGE key start end: inclusive, negative indexes count from the end,
/// clamped to the string as Redis's `getrangeCommand` does.
pub fn getrange(context: &Context<'_>) -> Result<Outcome, Reply> {
    let start = parse_i64(&context.args[2]).ok_or_else(|| Reply::error(NOT_INTEGER))?;
    let end = parse_i64(&context.args[3]).ok_or_else(|| Reply::error(NOT_INTEGER))?;
    let item = context.keyspace.get(&context.args[1], context.now_unix_ms);
    let value = item.map_or(&[][..], |item| item.value);
    Outcome::read(Reply::Bulk(byte_range(value, start, end).to_vec()))
}

fn byte_range(value: &[u8], start: i64, end: i64) -> &[u8] {
    if start < 0 && end < 0 && start > end {
        return &[];
    }
    let len = value.len() as i128;
    let from_end = |index: i64| {
        if index < 0 {
            len + i128::from(index)
        } else {
            i128::from(index)
        }
    };
    let start = from_end(start).max(0);
    let end = from_end(end).max(0).min(len - 1);
    if value.is_empty() || start > end {
        return &[];
    }
    &value[start as usize..=end as usize]
}

/// SETRANGE key offset value: overwrites from `offset`, padding with zero
/// bytes when the string is shorter.
pub fn setrange(context: &Context<'_>) -> Result<Outcome, Reply> {
    let (key, patch) = (&context.args[1], &context.args[3]);
    let offset = parse_i64(&context.args[2]).ok_or_else(|| Reply::error(NOT_INTEGER))?;
    let offset = usize::try_from(offset).map_err(|_| Reply::error("ERR offset is out of range"))?;
    let current = context.keyspace.get(key, context.now_unix_ms);
    let old = current.as_ref().map_or(&[][..], |item| item.value);
    if patch.is_empty() {
        return Outcome::read(Reply::Integer(old.len() as i64));
    }
    match offset.checked_add(patch.len()) {
        Some(end) if end <= context.limits.value_bytes_max => {}
        _ => return Err(Reply::error(STRING_TOO_LONG)),
    }
    let mut value = old.to_vec();
    if value.len() < offset + patch.len() {
        value.resize(offset + patch.len(), 0);
    }
    value[offset..offset + patch.len()].copy_from_slice(patch);
    let reply = Reply::Integer(value.len() as i64);
    Outcome::overwrite(reply, key, value, current)
}

pub fn mget(context: &Context<'_>) -> Result<Outcome, Reply> {
    let values = context.args[1..]
        .iter()
        .map(|key| {
            bulk_or_null(
                context
                    .keyspace
                    .get(key, context.now_unix_ms)
                    .map(|item| item.value),
            )
        })
        .collect();
    Outcome::read(Reply::Array(values))
}

pub fn mset(context: &Context<'_>) -> Result<Outcome, Reply> {
    Outcome::write(Reply::ok(), pairs_batch(context, "mset")?)
}

/// MSETNX: sets every pair, or none if any key exists.
pub fn msetnx(context: &Context<'_>) -> Result<Outcome, Reply> {
    let batch = pairs_batch(context, "msetnx")?;
    let keys = context.args[1..].iter().step_by(2);
    if keys
        .into_iter()
        .any(|key| context.keyspace.get(key, context.now_unix_ms).is_some())
    {
        return Outcome::read(Reply::Integer(0));
    }
    Outcome::write(Reply::Integer(1), batch)
}

/// The `Set`s of MSET's key-value pairs, in order (a repeated key's last
/// value wins), with no expiry.
fn pairs_batch(context: &Context<'_>, command: &str) -> Result<Operation, Reply> {
    let pairs = &context.args[1..];
    if pairs.len() % 2 != 0 {
        return Err(super::wrong_arity(command));
    }
    let mut ops = Vec::with_capacity(pairs.len() / 2);
    for pair in pairs.chunks_exact(2) {
        check_value_size(pair[1].len(), context.limits)?;
        ops.push(SingleOp::Set {
            key: pair[0].clone(),
            value: pair[1].clone(),
            expire_at_unix_ms: None,
        });
    }
    Ok(Operation::Batch { ops })
}

#[cfg(test)]
mod tests;
