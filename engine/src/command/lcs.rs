//! LCS: the longest common subsequence of two string values, by the
//! textbook dynamic programme, with Redis 7's walk back through the table so
//! that the subsequence and the matched ranges are the ones Redis reports.

use super::number::parse_i64;
use super::{Context, Outcome, NOT_INTEGER, SYNTAX_ERROR};
use crate::resp::Reply;

/// LCS's options.
#[derive(Debug, Default)]
struct LcsOptions {
    len: bool,
    idx: bool,
    with_match_len: bool,
    min_match_len: u64,
}

fn parse_options(options: &[Vec<u8>]) -> Result<LcsOptions, Reply> {
    let mut parsed = LcsOptions::default();
    let mut position = 0;
    while let Some(option) = options.get(position) {
        let is = |name: &str| option.eq_ignore_ascii_case(name.as_bytes());
        if is("idx") {
            parsed.idx = true;
        } else if is("len") {
            parsed.len = true;
        } else if is("withmatchlen") {
            parsed.with_match_len = true;
        } else if let (true, Some(amount)) = (is("minmatchlen"), options.get(position + 1)) {
            let amount = parse_i64(amount).ok_or_else(|| Reply::error(NOT_INTEGER))?;
            // A negative length means none, as in Redis.
            parsed.min_match_len = amount.max(0) as u64;
            position += 1;
        } else {
            return Err(Reply::error(SYNTAX_ERROR));
        }
        position += 1;
    }
    if parsed.idx && parsed.len {
        return Err(Reply::error(
            "ERR If you want both the length and indexes, please just use IDX.",
        ));
    }
    Ok(parsed)
}

/// LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]: absent keys
/// are empty strings. The table takes 4 bytes per pair of positions, refused
/// past max-value-bytes, as Redis refuses it past proto-max-bulk-len.
pub fn lcs(context: &Context<'_>) -> Result<Outcome, Reply> {
    let value = |key: &[u8]| {
        let item = context.keyspace.get(key, context.now_unix_ms);
        item.map_or(&[][..], |item| item.value)
    };
    let (a, b) = (value(&context.args[1]), value(&context.args[2]));
    let options = parse_options(&context.args[3..])?;
    let cells = (a.len() as u128 + 1) * (b.len() as u128 + 1);
    if cells * 4 > context.limits.value_bytes_max as u128 {
        return Err(Reply::error(
            "ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len",
        ));
    }
    let table = Table::new(a, b);
    let total = table.at(a.len(), b.len());
    if options.len {
        return Outcome::read(Reply::Integer(i64::from(total)));
    }
    let (sequence, matches) = table.walk_back(a, b, &options);
    if !options.idx {
        return Outcome::read(Reply::Bulk(sequence));
    }
    Outcome::read(Reply::Map(vec![
        (Reply::Bulk(b"matches".to_vec()), Reply::Array(matches)),
        (
            Reply::Bulk(b"len".to_vec()),
            Reply::Integer(i64::from(total)),
        ),
    ]))
}

/// `at(i, j)`: the length of the longest common subsequence of `a[..i]` and
/// `b[..j]`.
struct Table {
    columns: usize,
    lengths: Vec<u32>,
}

impl Table {
    fn new(a: &[u8], b: &[u8]) -> Table {
        let columns = b.len() + 1;
        let mut table = Table {
            columns,
            lengths: vec![0; (a.len() + 1) * columns],
        };
        for i in 1..=a.len() {
            for j in 1..=b.len() {
                let length = if a[i - 1] == b[j - 1] {
                    table.at(i - 1, j - 1) + 1
                } else {
                    table.at(i - 1, j).max(table.at(i, j - 1))
                };
                table.lengths[i * columns + j] = length;
            }
        }
        table
    }

    fn at(&self, i: usize, j: usize) -> u32 {
        self.lengths[i * self.columns + j]
    }

    /// The subsequence, and the ranges it matched (last first, each
    /// `[[a_start, a_end], [b_start, b_end]]` plus its length if asked), of
    /// at least the minimum length. From the table's far corner: a common
    /// byte extends the current range, otherwise the walk steps towards the
    /// larger neighbour (`b` first on a tie), closing the current range.
    fn walk_back(&self, a: &[u8], b: &[u8], options: &LcsOptions) -> (Vec<u8>, Vec<Reply>) {
        let mut sequence = Vec::with_capacity(self.at(a.len(), b.len()) as usize);
        let mut matches = Vec::new();
        // (a_start, a_end, b_start, b_end) of the range being matched.
        let mut range: Option<(usize, usize, usize, usize)> = None;
        let (mut i, mut j) = (a.len(), b.len());
        while i > 0 && j > 0 {
            let close;
            if a[i - 1] == b[j - 1] {
                sequence.push(a[i - 1]);
                let extended = match range {
                    None => (i - 1, i - 1, j - 1, j - 1),
                    Some((_, a_end, _, b_end)) => (i - 1, a_end, j - 1, b_end),
                };
                range = Some(extended);
                // Nothing can precede a match at the start of either string.
                close = extended.0 == 0 || extended.2 == 0;
                i -= 1;
                j -= 1;
            } else {
                if self.at(i - 1, j) > self.at(i, j - 1) {
                    i -= 1;
                } else {
                    j -= 1;
                }
                close = range.is_some();
            }
            if close {
                if let Some(closed) = range.take() {
                    self.emit(closed, options, &mut matches);
                }
            }
        }
        sequence.reverse();
        (sequence, matches)
    }

    fn emit(
        &self,
        (a_start, a_end, b_start, b_end): (usize, usize, usize, usize),
        options: &LcsOptions,
        matches: &mut Vec<Reply>,
    ) {
        let length = (a_end - a_start + 1) as u64;
        if length < options.min_match_len {
            return;
        }
        let pair = |start: usize, end: usize| {
            Reply::Array(vec![
                Reply::Integer(start as i64),
                Reply::Integer(end as i64),
            ])
        };
        let mut entry = vec![pair(a_start, a_end), pair(b_start, b_end)];
        if options.with_match_len {
            entry.push(Reply::Integer(length as i64));
        }
        matches.push(Reply::Array(entry));
    }
}

#[cfg(test)]
mod tests {
    use crate::command::test_support::*;
    use crate::resp::Reply;

    fn pair(start: i64, end: i64) -> Reply {
        Reply::Array(vec![Reply::Integer(start), Reply::Integer(end)])
    }

    #[test]
    fn lcs_of_redis_documentation_example() {
        let mut h = Harness::new();
        h.put("key1", "ohmytext", None);
        h.put("key2", "mynewtext", None);
        assert_eq!(h.run(&["LCS", "key1", "key2"]), read(bulk("mytext")));
        assert_eq!(
            h.run(&["lcs", "key1", "key2", "LEN"]),
            read(Reply::Integer(6))
        );
        let idx = Reply::Map(vec![
            (
                bulk("matches"),
                Reply::Array(vec![
                    Reply::Array(vec![pair(4, 7), pair(5, 8)]),
                    Reply::Array(vec![pair(2, 3), pair(0, 1)]),
                ]),
            ),
            (bulk("len"), Reply::Integer(6)),
        ]);
        assert_eq!(h.reply(&["LCS", "key1", "key2", "IDX"]), idx);
        let long_only = Reply::Map(vec![
            (
                bulk("matches"),
                Reply::Array(vec![Reply::Array(vec![
                    pair(4, 7),
                    pair(5, 8),
                    Reply::Integer(4),
                ])]),
            ),
            (bulk("len"), Reply::Integer(6)),
        ]);
        assert_eq!(
            h.reply(&[
                "LCS",
                "key1",
                "key2",
                "IDX",
                "MINMATCHLEN",
                "4",
                "WITHMATCHLEN"
            ]),
            long_only
        );
    }

    #[test]
    fn lcs_of_absent_keys_is_empty_and_options_are_checked() {
        let mut h = Harness::new();
        assert_eq!(h.reply(&["LCS", "a", "b"]), bulk(""));
        assert_eq!(h.reply(&["LCS", "a", "b", "LEN"]), Reply::Integer(0));
        assert_eq!(
            h.reply(&["LCS", "a", "b", "LEN", "IDX"]),
            error("ERR If you want both the length and indexes, please just use IDX.")
        );
        assert_eq!(
            h.reply(&["LCS", "a", "b", "MINMATCHLEN"]),
            error("ERR syntax error")
        );
        assert_eq!(
            h.reply(&["LCS", "a", "b", "MINMATCHLEN", "x"]),
            error("ERR value is not an integer or out of range")
        );
        assert_eq!(
            h.reply(&["LCS", "a", "b", "bogus"]),
            error("ERR syntax error")
        );
        h.limits.value_bytes_max = 15;
        h.put("a", "ab", None);
        h.put("b", "c", None);
        assert_eq!(
            h.reply(&["LCS", "a", "b"]),
            error("ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len")
        );
    }
}
