//! The bitmap commands: SETBIT, GETBIT, BITCOUNT, BITPOS and BITOP, over
//! string values read as bit arrays, most significant bit of the first byte
//! first (bit 0), as Redis reads them.
//!
//! A write logs the resulting value as a `Set` (with the key's expiry for
//! SETBIT, none for BITOP, as Redis's `setKey`): a blind write, at the cost of
//! logging the whole bitmap for a one-bit change.

use super::number::parse_i64;
use super::{Context, Outcome, NOT_INTEGER, SYNTAX_ERROR};
use crate::operation::Operation;
use crate::resp::Reply;

const BIT_OFFSET_INVALID: &str = "ERR bit offset is not an integer or out of range";
const BIT_INVALID: &str = "ERR bit is not an integer or out of range";

/// A bit offset as Redis's `getBitOffsetFromArgument` reads it: not negative,
/// and its byte within the largest value (Redis's proto-max-bulk-len; Keel's
/// max-value-bytes).
fn parse_bit_offset(context: &Context<'_>, text: &[u8]) -> Result<u64, Reply> {
    let offset = parse_i64(text).ok_or_else(|| Reply::error(BIT_OFFSET_INVALID))?;
    let offset = u64::try_from(offset).map_err(|_| Reply::error(BIT_OFFSET_INVALID))?;
    if offset >> 3 >= context.limits.value_bytes_max as u64 {
        return Err(Reply::error(BIT_OFFSET_INVALID));
    }
    Ok(offset)
}

/// The bit at `offset`; bits past the end are 0.
fn bit_at(value: &[u8], offset: u64) -> u8 {
    let byte = usize::try_from(offset >> 3)
        .ok()
        .and_then(|index| value.get(index));
    byte.map_or(0, |byte| (byte >> (7 - (offset & 7))) & 1)
}

/// SETBIT key offset 0|1: the previous bit; the string grows with zero bytes
/// to hold the offset, and keeps its expiry.
pub fn setbit(context: &Context<'_>) -> Result<Outcome, Reply> {
    let key = &context.args[1];
    let offset = parse_bit_offset(context, &context.args[2])?;
    let bit = match context.args[3].as_slice() {
        b"0" => 0,
        b"1" => 1,
        _ => return Err(Reply::error(BIT_INVALID)),
    };
    let current = context.keyspace.get(key, context.now_unix_ms);
    let old = current.as_ref().map_or(&[][..], |item| item.value);
    let previous = bit_at(old, offset);
    // `offset >> 3` is below max-value-bytes, a usize.
    let byte = (offset >> 3) as usize;
    let reply = Reply::Integer(i64::from(previous));
    if current.is_some() && previous == bit && byte < old.len() {
        return Outcome::read(reply);
    }
    let mut value = old.to_vec();
    if value.len() <= byte {
        value.resize(byte + 1, 0);
    }
    let mask = 1u8 << (7 - (offset & 7));
    if bit == 1 {
        value[byte] |= mask;
    } else {
        value[byte] &= !mask;
    }
    Outcome::overwrite(reply, key, value, current)
}

/// GETBIT key offset: 0 past the end or for an absent key.
pub fn getbit(context: &Context<'_>) -> Result<Outcome, Reply> {
    let offset = parse_bit_offset(context, &context.args[2])?;
    let item = context.keyspace.get(&context.args[1], context.now_unix_ms);
    let value = item.map_or(&[][..], |item| item.value);
    Outcome::read(Reply::Integer(i64::from(bit_at(value, offset))))
}

/// The unit of BITCOUNT's and BITPOS's range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    Byte,
    Bit,
}

fn parse_unit(text: &[u8]) -> Result<Unit, Reply> {
    if text.eq_ignore_ascii_case(b"byte") {
        Ok(Unit::Byte)
    } else if text.eq_ignore_ascii_case(b"bit") {
        Ok(Unit::Bit)
    } else {
        Err(Reply::error(SYNTAX_ERROR))
    }
}

fn parse_integer(text: &[u8]) -> Result<i64, Reply> {
    parse_i64(text).ok_or_else(|| Reply::error(NOT_INTEGER))
}

/// The bits `first..=last` a range `start..=end` in `unit`s names in a
/// string of `len` bytes, as Redis's BITCOUNT and BITPOS resolve it:
/// negative indexes count from the end, then both are clamped into the
/// string; `None` when nothing is left.
fn bit_range(len: usize, start: i64, end: i64, unit: Unit) -> Option<(u64, u64)> {
    let units = match unit {
        Unit::Byte => len as i128,
        Unit::Bit => len as i128 * 8,
    };
    let from_end = |index: i64| {
        let index = i128::from(index);
        if index < 0 {
            (units + index).max(0)
        } else {
            index
        }
    };
    let start = from_end(start);
    let end = from_end(end).min(units - 1);
    if start > end {
        return None;
    }
    // Both are within 0..units, which fits a u64 (8 × a usize length).
    let (start, end) = (start as u64, end as u64);
    Some(match unit {
        Unit::Byte => (start * 8, end * 8 + 7),
        Unit::Bit => (start, end),
    })
}

/// Set bits among bits `first..=last` of `value`, which holds them.
fn count_bits(value: &[u8], first: u64, last: u64) -> u64 {
    let (first_byte, last_byte) = ((first >> 3) as usize, (last >> 3) as usize);
    let whole: u64 = value[first_byte..=last_byte]
        .iter()
        .map(|byte| u64::from(byte.count_ones()))
        .sum();
    // Take off the bits of the edge bytes outside the range.
    let before_mask = !(0xffu8 >> (first & 7));
    // No bit after the last when it ends its byte (a shift by 8 would overflow).
    let after_mask = 0xffu8.checked_shr((last & 7) as u32 + 1).unwrap_or(0);
    let before = u64::from((value[first_byte] & before_mask).count_ones());
    let after = u64::from((value[last_byte] & after_mask).count_ones());
    whole - before - after
}

/// BITCOUNT key [start end [BYTE | BIT]]: an absent key counts 0 whatever
/// the arguments, as in Redis, which looks the key up first.
pub fn bitcount(context: &Context<'_>) -> Result<Outcome, Reply> {
    let args = &context.args[2..];
    let Some(item) = context.keyspace.get(&context.args[1], context.now_unix_ms) else {
        return Outcome::read(Reply::Integer(0));
    };
    let value = item.value;
    let range = match args.len() {
        0 => bit_range(value.len(), 0, -1, Unit::Byte),
        2 | 3 => {
            let start = parse_integer(&args[0])?;
            let end = parse_integer(&args[1])?;
            // Redis answers this empty range before it reads the unit.
            if start < 0 && end < 0 && start > end {
                return Outcome::read(Reply::Integer(0));
            }
            let unit = args
                .get(2)
                .map_or(Ok(Unit::Byte), |unit| parse_unit(unit))?;
            bit_range(value.len(), start, end, unit)
        }
        _ => return Err(Reply::error(SYNTAX_ERROR)),
    };
    let count = range.map_or(0, |(first, last)| count_bits(value, first, last));
    Outcome::read(Reply::Integer(count as i64))
}

/// BITPOS key 0|1 [start [end [BYTE | BIT]]]: the first bit of that value in
/// the range, or -1. An absent key is all zeros. Looking for a 0 without an
/// end given, the string counts as followed by zeros: the bit just past the
/// range answers when the range is all ones.
pub fn bitpos(context: &Context<'_>) -> Result<Outcome, Reply> {
    let wanted = parse_integer(&context.args[2])?;
    if wanted != 0 && wanted != 1 {
        return Err(Reply::error("ERR The bit argument must be 1 or 0."));
    }
    let Some(item) = context.keyspace.get(&context.args[1], context.now_unix_ms) else {
        return Outcome::read(Reply::Integer(if wanted == 1 { -1 } else { 0 }));
    };
    let value = item.value;
    let args = &context.args[3..];
    if args.len() > 3 {
        return Err(Reply::error(SYNTAX_ERROR));
    }
    let start = args.first().map_or(Ok(0), |start| parse_integer(start))?;
    let unit = args
        .get(2)
        .map_or(Ok(Unit::Byte), |unit| parse_unit(unit))?;
    let end = args.get(1).map_or(Ok(-1), |end| parse_integer(end))?;
    let end_given = args.len() >= 2;
    let Some((first, last)) = bit_range(value.len(), start, end, unit) else {
        return Outcome::read(Reply::Integer(-1));
    };
    let found = find_bit(value, wanted == 1, first, last);
    let position = match found {
        Some(offset) => offset as i64,
        None if wanted == 0 && !end_given => last as i64 + 1,
        None => -1,
    };
    Outcome::read(Reply::Integer(position))
}

/// The first of bits `first..=last` of `value` (which holds them) that is
/// set (`set`) or clear; whole bytes without one are skipped at once.
fn find_bit(value: &[u8], set: bool, first: u64, last: u64) -> Option<u64> {
    let skipped = if set { 0x00 } else { 0xff };
    let mut offset = first;
    while offset <= last {
        let byte = value[(offset >> 3) as usize];
        if offset & 7 == 0 && offset + 7 <= last && byte == skipped {
            offset += 8;
            continue;
        }
        if bit_at(value, offset) == u8::from(set) {
            return Some(offset);
        }
        offset += 1;
    }
    None
}

/// BITOP's operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BitOperator {
    And,
    Or,
    Xor,
    Not,
}

/// BITOP AND|OR|XOR|NOT destkey key [key ...]: the result is as long as the
/// longest source (absent sources and missing bytes are zeros); it replaces
/// the destination without expiry, or deletes it when empty. Replies with its
/// length.
pub fn bitop(context: &Context<'_>) -> Result<Outcome, Reply> {
    let name = &context.args[1];
    let operator = [
        ("and", BitOperator::And),
        ("or", BitOperator::Or),
        ("xor", BitOperator::Xor),
        ("not", BitOperator::Not),
    ]
    .into_iter()
    .find(|(text, _)| name.eq_ignore_ascii_case(text.as_bytes()))
    .map(|(_, operator)| operator)
    .ok_or_else(|| Reply::error(SYNTAX_ERROR))?;
    let destination = &context.args[2];
    let sources = &context.args[3..];
    if operator == BitOperator::Not && sources.len() != 1 {
        return Err(Reply::error(
            "ERR BITOP NOT must be called with a single source key.",
        ));
    }
    let values: Vec<&[u8]> = sources
        .iter()
        .map(|key| {
            let item = context.keyspace.get(key, context.now_unix_ms);
            item.map_or(&[][..], |item| item.value)
        })
        .collect();
    let result = combine(operator, &values);
    let reply = Reply::Integer(result.len() as i64);
    if result.is_empty() {
        if context
            .keyspace
            .get(destination, context.now_unix_ms)
            .is_none()
        {
            return Outcome::read(reply);
        }
        return Outcome::write(
            reply,
            Operation::Delete {
                keys: vec![destination.clone()],
            },
        );
    }
    Outcome::write(
        reply,
        Operation::Set {
            key: destination.clone(),
            value: result,
            expire_at_unix_ms: None,
        },
    )
}

fn combine(operator: BitOperator, values: &[&[u8]]) -> Vec<u8> {
    let len = values.iter().map(|value| value.len()).max().unwrap_or(0);
    let byte_of = |value: &[u8], index: usize| value.get(index).copied().unwrap_or(0);
    (0..len)
        .map(|index| {
            let mut bytes = values.iter().map(|value| byte_of(value, index));
            match operator {
                BitOperator::And => bytes.fold(0xff, |all, byte| all & byte),
                BitOperator::Or => bytes.fold(0, |any, byte| any | byte),
                BitOperator::Xor => bytes.fold(0, |odd, byte| odd ^ byte),
                BitOperator::Not => !bytes.next().unwrap_or(0),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
