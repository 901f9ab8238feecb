//! The Redis protocol (RESP2 and RESP3): requests in, replies out.
//!
//! Pure and incremental: [`parse_request`] looks at the bytes a connection has
//! received so far and returns a whole command, "need more bytes", or a
//! protocol error; it never blocks and never allocates more than the limits
//! allow, so a client cannot make the server buffer without bound.
//!
//! # Requests
//! - Multibulk (what every client library and redis-cli send):
//!   `*<n>\r\n` then `n` times `$<len>\r\n<len bytes>\r\n`.
//! - Inline (telnet): one line of space-separated words, with `"..."` and
//!   `'...'` quoting as Redis accepts it.
//!
//! Errors carry Redis's texts, so clients see what a Redis server would say;
//! after one the connection is closed (the stream is out of step).
//!
//! # Replies
//! [`Reply::encode`] writes RESP3 types natively after `HELLO 3`, and their
//! RESP2 equivalents otherwise (a map becomes a flat array, a null `$-1` or
//! `*-1`, a double a bulk string, a boolean an integer), as Redis does.

/// Arguments one request may carry (Redis: 1024*1024).
pub const REQUEST_ARGS_MAX: usize = 1024 * 1024;
/// Longest inline request line (Redis: PROTO_INLINE_MAX_SIZE, 64 KiB).
pub const INLINE_REQUEST_BYTES_MAX: usize = 64 * 1024;
/// Default largest bulk argument (Redis's proto-max-bulk-len, 512 MiB).
pub const BULK_BYTES_MAX_DEFAULT: usize = 512 * 1024 * 1024;
/// Longest `*<n>` or `$<len>` header line accepted while looking for its end.
const HEADER_LINE_BYTES_MAX: usize = 32;

/// A parsed request: the command name and its arguments, as bytes.
pub type Request = Vec<Vec<u8>>;

/// Why bytes are not a request. The texts are Redis's own.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("Protocol error: invalid multibulk length")]
    MultibulkLength,
    #[error("Protocol error: invalid bulk length")]
    BulkLength,
    #[error("Protocol error: expected '$', got '{found}'")]
    ExpectedBulk { found: char },
    #[error("Protocol error: too big inline request")]
    InlineTooBig,
    #[error("Protocol error: too big mbulk count string")]
    HeaderTooBig,
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("Protocol error: bulk data not followed by CRLF")]
    MissingCrlf,
}

/// What [`parse_request`] found at the start of the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole request, and the bytes it took. An empty inline line parses to
    /// an empty request, which the caller skips, as Redis does.
    Request(Request, usize),
    /// The request is not complete yet.
    Incomplete,
}

/// Parses one request from the start of `buf`, accepting bulk arguments of up
/// to `bulk_bytes_max` bytes.
pub fn parse_request(buf: &[u8], bulk_bytes_max: usize) -> Result<Parsed, ProtocolError> {
    match buf.first() {
        None => Ok(Parsed::Incomplete),
        Some(b'*') => parse_multibulk(buf, bulk_bytes_max),
        Some(_) => parse_inline(buf),
    }
}

/// The line starting at `from` (without its `\r\n`) and the offset after it.
fn line_at(buf: &[u8], from: usize, max_bytes: usize) -> Result<Option<(&[u8], usize)>, ()> {
    let window = &buf[from..buf.len().min(from + max_bytes + 2)];
    match window.windows(2).position(|pair| pair == b"\r\n") {
        Some(end) => Ok(Some((&window[..end], from + end + 2))),
        None if window.len() >= max_bytes + 2 => Err(()),
        None => Ok(None),
    }
}

/// A decimal in a header line, within `0..=max`; `-1` is not a length here.
fn parse_length(digits: &[u8], max: usize) -> Option<usize> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits)
        .ok()?
        .parse::<usize>()
        .ok()
        .filter(|n| *n <= max)
}

fn parse_multibulk(buf: &[u8], bulk_bytes_max: usize) -> Result<Parsed, ProtocolError> {
    let Some((header, mut at)) =
        line_at(buf, 0, HEADER_LINE_BYTES_MAX).map_err(|()| ProtocolError::HeaderTooBig)?
    else {
        return Ok(Parsed::Incomplete);
    };
    let count = match &header[1..] {
        // `*-1` and `*0` are empty requests that Redis skips.
        b"-1" | b"0" => return Ok(Parsed::Request(Vec::new(), at)),
        digits => parse_length(digits, REQUEST_ARGS_MAX).ok_or(ProtocolError::MultibulkLength)?,
    };
    // Never reserve from the count alone: a client may claim a million
    // arguments and send none.
    let mut request = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let Some((header, data)) =
            line_at(buf, at, HEADER_LINE_BYTES_MAX).map_err(|()| ProtocolError::BulkLength)?
        else {
            return Ok(Parsed::Incomplete);
        };
        match header.first() {
            Some(b'$') => {}
            other => {
                let found = other.map_or(' ', |byte| char::from(*byte));
                return Err(ProtocolError::ExpectedBulk { found });
            }
        }
        let len = parse_length(&header[1..], bulk_bytes_max).ok_or(ProtocolError::BulkLength)?;
        let end = data + len;
        if buf.len() < end + 2 {
            return Ok(Parsed::Incomplete);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::MissingCrlf);
        }
        request.push(buf[data..end].to_vec());
        at = end + 2;
    }
    Ok(Parsed::Request(request, at))
}

fn parse_inline(buf: &[u8]) -> Result<Parsed, ProtocolError> {
    let Some(newline) = buf
        .iter()
        .take(INLINE_REQUEST_BYTES_MAX + 1)
        .position(|byte| *byte == b'\n')
    else {
        return if buf.len() > INLINE_REQUEST_BYTES_MAX {
            Err(ProtocolError::InlineTooBig)
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let line = buf[..newline]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..newline]);
    Ok(Parsed::Request(split_inline(line)?, newline + 1))
}

/// Splits an inline line into words as Redis's `sdssplitargs` does: spaces
/// separate, `"..."` takes `\n \r \t \b \a \\ \" \xHH` escapes, `'...'` takes `\'`,
/// and a closing quote must be followed by a space or the end.
fn split_inline(line: &[u8]) -> Result<Request, ProtocolError> {
    let mut words = Vec::new();
    let mut at = 0;
    loop {
        while at < line.len() && line[at].is_ascii_whitespace() {
            at += 1;
        }
        if at == line.len() {
            return Ok(words);
        }
        let (word, next) = match line[at] {
            b'"' => double_quoted(line, at + 1)?,
            b'\'' => single_quoted(line, at + 1)?,
            _ => {
                let end = line[at..]
                    .iter()
                    .position(u8::is_ascii_whitespace)
                    .map_or(line.len(), |n| at + n);
                (line[at..end].to_vec(), end)
            }
        };
        words.push(word);
        at = next;
    }
}

/// Checks that a closing quote at `closing` ends the word, and returns where to go on.
fn after_quote(line: &[u8], closing: usize) -> Result<usize, ProtocolError> {
    match line.get(closing + 1) {
        None => Ok(closing + 1),
        Some(byte) if byte.is_ascii_whitespace() => Ok(closing + 1),
        Some(_) => Err(ProtocolError::UnbalancedQuotes),
    }
}

fn double_quoted(line: &[u8], mut at: usize) -> Result<(Vec<u8>, usize), ProtocolError> {
    let mut word = Vec::new();
    loop {
        match line.get(at) {
            None => return Err(ProtocolError::UnbalancedQuotes),
            Some(b'"') => return Ok((word, after_quote(line, at)?)),
            Some(b'\\') => {
                let hex = line
                    .get(at + 1..at + 4)
                    .filter(|h| h[0] == b'x' && h[1..].iter().all(u8::is_ascii_hexdigit));
                if let Some(hex) = hex {
                    let text = std::str::from_utf8(&hex[1..]).expect("hex digits are ASCII");
                    word.push(u8::from_str_radix(text, 16).expect("two hex digits"));
                    at += 4;
                    continue;
                }
                let escaped = match line.get(at + 1) {
                    None => return Err(ProtocolError::UnbalancedQuotes),
                    Some(b'n') => b'\n',
                    Some(b'r') => b'\r',
                    Some(b't') => b'\t',
                    Some(b'b') => 0x08,
                    Some(b'a') => 0x07,
                    Some(other) => *other,
                };
                word.push(escaped);
                at += 2;
            }
            Some(byte) => {
                word.push(*byte);
                at += 1;
            }
        }
    }
}

fn single_quoted(line: &[u8], mut at: usize) -> Result<(Vec<u8>, usize), ProtocolError> {
    let mut word = Vec::new();
    loop {
        match (line.get(at), line.get(at + 1)) {
            (None, _) => return Err(ProtocolError::UnbalancedQuotes),
            (Some(b'\\'), Some(b'\'')) => {
                word.push(b'\'');
                at += 2;
            }
            (Some(b'\''), _) => return Ok((word, after_quote(line, at)?)),
            (Some(byte), _) => {
                word.push(*byte);
                at += 1;
            }
        }
    }
}

/// The protocol version a connection speaks (`HELLO 2|3`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

/// A reply, in RESP3's terms; [`Reply::encode`] maps it to RESP2 when needed.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Simple(String),
    /// An error line; the text starts with its code (`ERR`, `WRONGTYPE`, ...).
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Array(Vec<Reply>),
    /// A missing value: `$-1` in RESP2, `_` in RESP3.
    Null,
    /// A missing array: `*-1` in RESP2, `_` in RESP3.
    NullArray,
    Double(f64),
    Boolean(bool),
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Simple("OK".to_owned())
    }

    pub fn error(text: impl Into<String>) -> Reply {
        Reply::Error(text.into())
    }

    /// Appends the reply's wire form in `protocol` to `out`.
    pub fn encode(&self, protocol: Protocol, out: &mut Vec<u8>) {
        let resp3 = protocol == Protocol::Resp3;
        match self {
            Reply::Simple(text) => line(out, b'+', text.as_bytes()),
            Reply::Error(text) => line(out, b'-', text.as_bytes()),
            Reply::Integer(value) => line(out, b':', value.to_string().as_bytes()),
            Reply::Bulk(bytes) => {
                line(out, b'$', bytes.len().to_string().as_bytes());
                out.extend_from_slice(bytes);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Array(items) => {
                line(out, b'*', items.len().to_string().as_bytes());
                for item in items {
                    item.encode(protocol, out);
                }
            }
            Reply::Null if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::Null => out.extend_from_slice(b"$-1\r\n"),
            Reply::NullArray if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Reply::Double(value) if resp3 => line(out, b',', format_double(*value).as_bytes()),
            Reply::Double(value) => {
                Reply::Bulk(format_double(*value).into_bytes()).encode(protocol, out)
            }
            Reply::Boolean(value) if resp3 => line(out, b'#', if *value { b"t" } else { b"f" }),
            Reply::Boolean(value) => Reply::Integer(i64::from(*value)).encode(protocol, out),
            Reply::Map(pairs) => {
                let (marker, count) = if resp3 {
                    (b'%', pairs.len())
                } else {
                    (b'*', pairs.len() * 2)
                };
                line(out, marker, count.to_string().as_bytes());
                for (key, value) in pairs {
                    key.encode(protocol, out);
                    value.encode(protocol, out);
                }
            }
        }
    }
}

fn line(out: &mut Vec<u8>, marker: u8, body: &[u8]) {
    out.push(marker);
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
}

/// Doubles as Redis prints them: `inf`, `-inf`, `nan`, else the shortest form
/// that reads back to the same value.
fn format_double(value: f64) -> String {
    if value.is_nan() {
        "nan".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(words: &[&str]) -> Request {
        words.iter().map(|word| word.as_bytes().to_vec()).collect()
    }

    fn parse(bytes: &[u8]) -> Result<Parsed, ProtocolError> {
        parse_request(bytes, 1024)
    }

    #[test]
    fn multibulk_requests_parse_whole_and_report_their_length() {
        let wire = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\nx!\r\n*1\r\n$4\r\nPING\r\n";
        let first = parse(wire).unwrap();
        assert_eq!(
            first,
            Parsed::Request(
                vec![b"SET".to_vec(), b"k".to_vec(), b"v\r\nx!".to_vec()],
                31
            )
        );
        assert_eq!(
            parse(&wire[31..]).unwrap(),
            Parsed::Request(request(&["PING"]), 14)
        );
    }

    #[test]
    fn every_prefix_of_a_request_is_incomplete() {
        let wire = b"*2\r\n$4\r\nECHO\r\n$11\r\nhello world\r\n";
        for end in 0..wire.len() {
            assert_eq!(
                parse(&wire[..end]),
                Ok(Parsed::Incomplete),
                "prefix of {end} bytes"
            );
        }
        assert!(matches!(parse(wire), Ok(Parsed::Request(_, n)) if n == wire.len()));
    }

    #[test]
    fn limits_and_malformed_headers_are_errors() {
        assert_eq!(parse(b"*x\r\n"), Err(ProtocolError::MultibulkLength));
        assert_eq!(parse(b"*1048577\r\n"), Err(ProtocolError::MultibulkLength));
        assert_eq!(parse(b"*1\r\n$1025\r\n"), Err(ProtocolError::BulkLength));
        assert_eq!(parse(b"*1\r\n$-1\r\n"), Err(ProtocolError::BulkLength));
        assert_eq!(
            parse(b"*1\r\n:1\r\n"),
            Err(ProtocolError::ExpectedBulk { found: ':' })
        );
        assert_eq!(
            parse(b"*1\r\n$1\r\nab\r\n"),
            Err(ProtocolError::MissingCrlf)
        );
        assert_eq!(
            parse(&[b"*".as_slice(), &[b'1'; 40]].concat()),
            Err(ProtocolError::HeaderTooBig)
        );
        let long_inline = vec![b'a'; INLINE_REQUEST_BYTES_MAX + 1];
        assert_eq!(parse(&long_inline), Err(ProtocolError::InlineTooBig));
        assert_eq!(parse(b"*0\r\n"), Ok(Parsed::Request(Vec::new(), 4)));
    }

    #[test]
    fn a_huge_claimed_count_allocates_nothing_until_data_arrives() {
        assert_eq!(parse(b"*1048576\r\n"), Ok(Parsed::Incomplete));
    }

    #[test]
    fn inline_requests_split_like_redis() {
        assert_eq!(
            parse(b"PING\r\n"),
            Ok(Parsed::Request(request(&["PING"]), 6))
        );
        assert_eq!(
            parse(b"  set  k   v\n"),
            Ok(Parsed::Request(request(&["set", "k", "v"]), 13))
        );
        let quoted = b"SET \"a b\\x41\\n\" 'it\\'s'\r\n";
        assert_eq!(
            parse(quoted),
            Ok(Parsed::Request(
                vec![b"SET".to_vec(), b"a bA\n".to_vec(), b"it's".to_vec()],
                quoted.len()
            ))
        );
        assert_eq!(parse(b"\r\n"), Ok(Parsed::Request(Vec::new(), 2)));
        assert_eq!(parse(b"SET \"a\r\n"), Err(ProtocolError::UnbalancedQuotes));
        assert_eq!(
            parse(b"SET \"a\"b\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(parse(b"GET k"), Ok(Parsed::Incomplete));
    }

    fn encoded(reply: &Reply, protocol: Protocol) -> String {
        let mut out = Vec::new();
        reply.encode(protocol, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn replies_encode_in_both_protocols() {
        let map = Reply::Map(vec![(Reply::Bulk(b"a".to_vec()), Reply::Integer(1))]);
        assert_eq!(encoded(&map, Protocol::Resp2), "*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(encoded(&map, Protocol::Resp3), "%1\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(encoded(&Reply::Null, Protocol::Resp2), "$-1\r\n");
        assert_eq!(encoded(&Reply::NullArray, Protocol::Resp2), "*-1\r\n");
        assert_eq!(encoded(&Reply::Null, Protocol::Resp3), "_\r\n");
        assert_eq!(
            encoded(&Reply::Double(1.5), Protocol::Resp2),
            "$3\r\n1.5\r\n"
        );
        assert_eq!(
            encoded(&Reply::Double(f64::INFINITY), Protocol::Resp3),
            ",inf\r\n"
        );
        assert_eq!(encoded(&Reply::Boolean(true), Protocol::Resp2), ":1\r\n");
        assert_eq!(encoded(&Reply::Boolean(false), Protocol::Resp3), "#f\r\n");
        assert_eq!(encoded(&Reply::ok(), Protocol::Resp2), "+OK\r\n");
        assert_eq!(
            encoded(&Reply::error("ERR no"), Protocol::Resp3),
            "-ERR no\r\n"
        );
        let nested = Reply::Array(vec![Reply::Bulk(Vec::new()), Reply::Array(Vec::new())]);
        assert_eq!(encoded(&nested, Protocol::Resp2), "*2\r\n$0\r\n\r\n*0\r\n");
    }

    #[test]
    fn encoded_requests_parse_back() {
        let words = vec![
            b"MSET".to_vec(),
            b"\x00\r\n".to_vec(),
            Vec::new(),
            vec![b'x'; 1000],
        ];
        let mut wire = Vec::new();
        Reply::Array(words.iter().cloned().map(Reply::Bulk).collect())
            .encode(Protocol::Resp2, &mut wire);
        assert_eq!(parse(&wire), Ok(Parsed::Request(words, wire.len())));
    }
}
