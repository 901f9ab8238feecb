//! The Redis protocol (RESP2 and RESP3): requests in, replies out.
//!
//! Pure and incremental: a connection's [`RequestParser`] takes the bytes as
//! they are received and returns whole commands, "need more bytes", or a
//! protocol error. It keeps what it parsed between reads, so a request costs
//! time linear in its bytes however it is cut into reads; it never blocks,
//! and holds no more than its limits allow, so a client cannot make the
//! server buffer without bound. [`parse_request`] parses one buffer at once.
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

/// Arguments one request may carry (Redis 6: 1024*1024; Redis 7 takes up
/// to 2^31-1 and grows its argument array as they arrive).
pub const REQUEST_ARGS_MAX: usize = 1024 * 1024;
/// Longest inline request line (Redis: PROTO_INLINE_MAX_SIZE, 64 KiB).
pub const INLINE_REQUEST_BYTES_MAX: usize = 64 * 1024;
/// Default largest bulk argument (Redis's proto-max-bulk-len, 512 MiB).
pub const BULK_BYTES_MAX_DEFAULT: usize = 512 * 1024 * 1024;
/// Arguments one request may carry before its connection has given the
/// password (Redis 7: 10), so an anonymous client cannot make the server
/// hold much: AUTH and HELLO need at most 7.
pub const UNAUTHENTICATED_REQUEST_ARGS_MAX: usize = 10;
/// Largest bulk argument before the connection has given the password
/// (Redis 7: 16384): room for any password Keel accepts.
pub const UNAUTHENTICATED_BULK_BYTES_MAX: usize = 16 * 1024;
/// Longest `*<n>` or `$<len>` header line accepted while looking for its end.
pub const HEADER_LINE_BYTES_MAX: usize = 32;
/// Bulk arguments with at least this many bytes still to come are read from
/// the socket straight into the argument, saving a copy through the input
/// buffer (Redis: PROTO_MBULK_BIG_ARG, 32 KiB).
pub const BULK_DIRECT_READ_BYTES_MIN: usize = 32 * 1024;
/// Most bytes of a large argument zeroed ahead of one direct read: the
/// argument's memory grows with what arrives, not with the length claimed.
const BULK_DIRECT_READ_BYTES_MAX: usize = 1 << 20;

/// A parsed request: the command name and its arguments, as bytes.
pub type Request = Vec<Vec<u8>>;

/// Why bytes are not a request. The texts are Redis's own, except the query
/// buffer's (Redis closes such a connection without a reply).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("Protocol error: invalid multibulk length")]
    MultibulkLength,
    #[error("Protocol error: invalid bulk length")]
    BulkLength,
    #[error("Protocol error: unauthenticated multibulk length")]
    UnauthenticatedMultibulkLength,
    #[error("Protocol error: unauthenticated bulk length")]
    UnauthenticatedBulkLength,
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
    #[error("Protocol error: query buffer limit reached")]
    QueryBufferFull { held_bytes: usize, limit: usize },
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
/// to `bulk_bytes_max` bytes: a [`RequestParser`] given the whole buffer.
pub fn parse_request(buf: &[u8], bulk_bytes_max: usize) -> Result<Parsed, ProtocolError> {
    let mut parser = RequestParser::new(bulk_bytes_max, usize::MAX);
    parser.push(buf);
    Ok(match parser.next_request()? {
        Some(request) => Parsed::Request(request, parser.consumed_bytes as usize),
        None => Parsed::Incomplete,
    })
}

/// Where the parser is within the request at the front of the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Between requests.
    Start,
    /// In an inline line whose first `scanned` bytes hold no newline.
    Inline { scanned: usize },
    /// Before the `$<len>` line of the next argument, if any is left.
    Header,
    /// In an argument's data: `filled` of its `len` bytes have arrived.
    Data { len: usize, filled: usize },
    /// After an argument's data, before its CRLF.
    DataEnd,
}

/// What one step of the parser came to.
enum Step {
    Continue,
    /// Needs more bytes.
    Wait,
    Done(Request),
}

/// One connection's request parser. It keeps the arguments parsed so far
/// and where it is, so every received byte is looked at a bounded number of
/// times however the request is cut into reads: the cost is linear in the
/// request's bytes (a request re-parsed from its start on every read costs
/// the square of its reads).
///
/// Bytes come in through [`RequestParser::unfilled`] and
/// [`RequestParser::filled`] (a socket read in between), or
/// [`RequestParser::push`]; [`RequestParser::next_request`] takes the
/// requests out. After an error the stream is out of step: drop the parser.
#[derive(Debug)]
pub struct RequestParser {
    bulk_bytes_max: usize,
    held_bytes_max: usize,
    /// False while the connection still owes the password: requests are
    /// held to [`UNAUTHENTICATED_REQUEST_ARGS_MAX`] and
    /// [`UNAUTHENTICATED_BULK_BYTES_MAX`].
    authenticated: bool,
    /// `buf[start..end]` is received but not parsed; `buf[end..]` is zeroed
    /// room for the next read.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    stage: Stage,
    /// The request being parsed; in `Data`, its last argument is the one
    /// arriving, whose `Vec` length may run ahead of `filled` (zeroed room).
    args: Request,
    args_left: usize,
    /// The lengths the request's arguments claimed, summed.
    args_bytes: usize,
    consumed_bytes: u64,
    examined_bytes: u64,
}

impl RequestParser {
    /// A parser taking bulk arguments up to `bulk_bytes_max` bytes, that
    /// refuses to hold more than `held_bytes_max` bytes of an incomplete
    /// request (arguments claimed plus unparsed input).
    pub fn new(bulk_bytes_max: usize, held_bytes_max: usize) -> RequestParser {
        RequestParser {
            bulk_bytes_max,
            held_bytes_max,
            authenticated: true,
            buf: Vec::new(),
            start: 0,
            end: 0,
            stage: Stage::Start,
            args: Vec::new(),
            args_left: 0,
            args_bytes: 0,
            consumed_bytes: 0,
            examined_bytes: 0,
        }
    }

    /// Whether the connection has given the password (a parser starts as
    /// if it had). Set before each [`Self::next_request`]: a request's
    /// headers are read in the call that returns it, after the requests
    /// before it (an AUTH among them) have run.
    pub fn set_authenticated(&mut self, authenticated: bool) {
        self.authenticated = authenticated;
    }

    /// Bytes looked at so far, counting each look: the parser's work, which
    /// stays within a constant times the bytes received.
    pub fn examined_bytes(&self) -> u64 {
        self.examined_bytes
    }

    /// Whether the parser is between requests with nothing received and
    /// not parsed: the connection's state is all in its client then.
    pub fn is_idle(&self) -> bool {
        matches!(self.stage, Stage::Start) && self.start == self.end
    }

    /// Bytes held for the request not yet complete: what its arguments
    /// claimed plus what is received and not parsed.
    pub fn held_bytes(&self) -> usize {
        self.args_bytes.saturating_add(self.end - self.start)
    }

    /// Where the next read should go: the rest of a large argument when it
    /// is all that is awaited, else room in the input buffer.
    pub fn unfilled(&mut self) -> &mut [u8] {
        if let Some((len, filled)) = self.direct_read() {
            let arg = self.args.last_mut().expect("a Data stage has its argument");
            if arg.len() == filled {
                arg.resize(len.min(filled + BULK_DIRECT_READ_BYTES_MAX), 0);
            }
            return &mut arg[filled..];
        }
        self.compact();
        if self.buf.len() - self.end < crate::limits::READ_CHUNK_BYTES {
            self.buf
                .resize(self.end + crate::limits::READ_CHUNK_BYTES, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Records that a read put `read` bytes at the start of [`Self::unfilled`].
    pub fn filled(&mut self, read: usize) {
        match self.direct_read() {
            Some((len, filled)) => {
                let filled = filled + read;
                let arg = self.args.last().expect("a Data stage has its argument");
                assert!(filled <= arg.len(), "a direct read past its room");
                self.examined_bytes += read as u64;
                self.consumed_bytes += read as u64;
                self.stage = Stage::Data { len, filled };
                self.end_data_if_complete();
            }
            None => {
                assert!(self.end + read <= self.buf.len(), "a read past its room");
                self.end += read;
            }
        }
    }

    /// Appends `bytes` as if read from the socket (for tests and fuzzing).
    pub fn push(&mut self, mut bytes: &[u8]) {
        while self.direct_read().is_some() && !bytes.is_empty() {
            let room = self.unfilled();
            let count = room.len().min(bytes.len());
            room[..count].copy_from_slice(&bytes[..count]);
            self.filled(count);
            bytes = &bytes[count..];
        }
        self.compact();
        self.buf.truncate(self.end);
        self.buf.extend_from_slice(bytes);
        self.end += bytes.len();
    }

    /// The next whole request, if the bytes so far complete one.
    pub fn next_request(&mut self) -> Result<Option<Request>, ProtocolError> {
        loop {
            let step = match self.stage {
                Stage::Start => self.request_start()?,
                Stage::Inline { scanned } => self.inline(scanned)?,
                Stage::Header => self.bulk_header()?,
                Stage::Data { len, filled } => self.data(len, filled),
                Stage::DataEnd => self.data_end()?,
            };
            match step {
                Step::Continue => {}
                Step::Done(request) => return Ok(Some(request)),
                Step::Wait if self.held_bytes() > self.held_bytes_max => {
                    return Err(ProtocolError::QueryBufferFull {
                        held_bytes: self.held_bytes(),
                        limit: self.held_bytes_max,
                    })
                }
                Step::Wait => return Ok(None),
            }
        }
    }

    /// The argument a read may fill directly: `(len, filled)`.
    fn direct_read(&self) -> Option<(usize, usize)> {
        match self.stage {
            Stage::Data { len, filled }
                if self.start == self.end && len - filled >= BULK_DIRECT_READ_BYTES_MIN =>
            {
                Some((len, filled))
            }
            _ => None,
        }
    }

    /// Moves the unparsed bytes to the front when that copies no more than
    /// was parsed since the last move, so moving stays linear too.
    fn compact(&mut self) {
        let unparsed = self.end - self.start;
        if self.start > 0 && self.start >= unparsed {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = unparsed;
        }
    }

    fn unparsed(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, bytes: usize) {
        assert!(self.start + bytes <= self.end, "consumed past the input");
        self.start += bytes;
        self.consumed_bytes += bytes as u64;
    }

    /// The header line at the start of the unparsed bytes (without its
    /// `\r\n`) and its length with it; `Err` if it runs too long.
    fn header_line(&mut self) -> Result<Option<(&[u8], usize)>, ()> {
        let unparsed = &self.buf[self.start..self.end];
        let window = &unparsed[..unparsed.len().min(HEADER_LINE_BYTES_MAX + 2)];
        let found = window.windows(2).position(|pair| pair == b"\r\n");
        self.examined_bytes += found.map_or(window.len(), |end| end + 2) as u64;
        match found {
            Some(end) => Ok(Some((&window[..end], end + 2))),
            None if window.len() >= HEADER_LINE_BYTES_MAX + 2 => Err(()),
            None => Ok(None),
        }
    }

    fn request_start(&mut self) -> Result<Step, ProtocolError> {
        match self.unparsed().first() {
            None => Ok(Step::Wait),
            Some(b'*') => self.multibulk_header(),
            Some(_) => {
                self.stage = Stage::Inline { scanned: 0 };
                Ok(Step::Continue)
            }
        }
    }

    fn multibulk_header(&mut self) -> Result<Step, ProtocolError> {
        let Some((header, used)) = self
            .header_line()
            .map_err(|()| ProtocolError::HeaderTooBig)?
        else {
            return Ok(Step::Wait);
        };
        let count = match header_number(&header[1..]) {
            // A count of zero or less (`*0`, `*-1`, `*-10`) is an empty
            // request that Redis skips.
            Some(count) if count <= 0 => 0,
            Some(count) if count as u64 <= REQUEST_ARGS_MAX as u64 => count as usize,
            _ => return Err(ProtocolError::MultibulkLength),
        };
        if !self.authenticated && count > UNAUTHENTICATED_REQUEST_ARGS_MAX {
            return Err(ProtocolError::UnauthenticatedMultibulkLength);
        }
        self.consume(used);
        // Never reserve from the count alone: a client may claim a million
        // arguments and send none.
        self.args = Vec::with_capacity(count.min(64));
        self.args_left = count;
        self.stage = Stage::Header;
        Ok(Step::Continue)
    }

    fn bulk_header(&mut self) -> Result<Step, ProtocolError> {
        if self.args_left == 0 {
            self.stage = Stage::Start;
            self.args_bytes = 0;
            return Ok(Step::Done(std::mem::take(&mut self.args)));
        }
        let bulk_bytes_max = self.bulk_bytes_max;
        let Some((header, used)) = self.header_line().map_err(|()| ProtocolError::BulkLength)?
        else {
            return Ok(Step::Wait);
        };
        match header.first() {
            Some(b'$') => {}
            other => {
                let found = other.map_or(' ', |byte| char::from(*byte));
                return Err(ProtocolError::ExpectedBulk { found });
            }
        }
        let len = header_number(&header[1..])
            .and_then(|len| usize::try_from(len).ok())
            .filter(|len| *len <= bulk_bytes_max)
            .ok_or(ProtocolError::BulkLength)?;
        if !self.authenticated && len > UNAUTHENTICATED_BULK_BYTES_MAX {
            return Err(ProtocolError::UnauthenticatedBulkLength);
        }
        self.consume(used);
        // Reserving the claimed length takes address space only: the pages
        // are touched as the data arrives.
        self.args.push(Vec::with_capacity(len));
        self.args_bytes = self.args_bytes.saturating_add(len);
        self.stage = Stage::Data { len, filled: 0 };
        self.end_data_if_complete();
        Ok(Step::Continue)
    }

    /// Copies what has arrived of the argument being received.
    fn data(&mut self, len: usize, filled: usize) -> Step {
        let count = (self.end - self.start).min(len - filled);
        if count == 0 {
            return Step::Wait;
        }
        let arg = self.args.last_mut().expect("a Data stage has its argument");
        arg.truncate(filled);
        arg.extend_from_slice(&self.buf[self.start..self.start + count]);
        self.examined_bytes += count as u64;
        self.consume(count);
        self.stage = Stage::Data {
            len,
            filled: filled + count,
        };
        self.end_data_if_complete();
        Step::Continue
    }

    fn end_data_if_complete(&mut self) {
        if let Stage::Data { len, filled } = self.stage {
            if filled == len {
                let arg = self.args.last().expect("a Data stage has its argument");
                assert_eq!(arg.len(), len, "an argument holds exactly its bytes");
                self.stage = Stage::DataEnd;
            }
        }
    }

    fn data_end(&mut self) -> Result<Step, ProtocolError> {
        let Some(crlf) = self.unparsed().get(..2) else {
            return Ok(Step::Wait);
        };
        if crlf != b"\r\n" {
            return Err(ProtocolError::MissingCrlf);
        }
        self.examined_bytes += 2;
        self.consume(2);
        self.args_left -= 1;
        self.stage = Stage::Header;
        Ok(Step::Continue)
    }

    /// An inline line: looks for its newline only in the bytes not yet
    /// searched.
    fn inline(&mut self, scanned: usize) -> Result<Step, ProtocolError> {
        let unparsed = &self.buf[self.start..self.end];
        let searched = unparsed.len().min(INLINE_REQUEST_BYTES_MAX + 1);
        let window = &unparsed[scanned..searched];
        let found = window.iter().position(|byte| *byte == b'\n');
        self.examined_bytes += found.map_or(window.len(), |at| at + 1) as u64;
        let Some(newline) = found else {
            if unparsed.len() > INLINE_REQUEST_BYTES_MAX {
                return Err(ProtocolError::InlineTooBig);
            }
            self.stage = Stage::Inline { scanned: searched };
            return Ok(Step::Wait);
        };
        let newline = scanned + newline;
        let line = &unparsed[..newline];
        let words = split_inline(line.strip_suffix(b"\r").unwrap_or(line))?;
        self.examined_bytes += newline as u64;
        self.consume(newline + 1);
        self.stage = Stage::Start;
        Ok(Step::Done(words))
    }
}

/// The number of a `*<n>` or `$<len>` header line as Redis's `string2ll`
/// reads it: an optional `-`, then digits with no leading zero (`0` alone is
/// the only number starting with one; `-0`, `+1`, `01` and ` 1` are not
/// numbers), within `i64`.
fn header_number(text: &[u8]) -> Option<i64> {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    let canonical = match digits {
        [b'0'] => text.len() == 1,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse::<i64>().ok()
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

    /// Memory the reply holds, in bytes: what bounds the replies a
    /// connection keeps before writing them.
    pub fn held_bytes(&self) -> usize {
        let own = std::mem::size_of::<Reply>();
        match self {
            Reply::Simple(text) | Reply::Error(text) => own + text.len(),
            Reply::Bulk(bytes) => own + bytes.len(),
            Reply::Array(items) => own + items.iter().map(Reply::held_bytes).sum::<usize>(),
            Reply::Map(pairs) => {
                own + pairs
                    .iter()
                    .map(|(key, value)| key.held_bytes() + value.held_bytes())
                    .sum::<usize>()
            }
            Reply::Integer(_)
            | Reply::Null
            | Reply::NullArray
            | Reply::Double(_)
            | Reply::Boolean(_) => own,
        }
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

    /// Redis's unit/protocol "Negative multibulk length": `*-10` is skipped
    /// like `*0`, and the connection goes on.
    #[test]
    fn a_negative_multibulk_count_is_an_empty_request() {
        for header in ["*-1\r\n", "*-10\r\n", "*-9223372036854775808\r\n"] {
            let mut parser = RequestParser::new(1024, usize::MAX);
            parser.push(header.as_bytes());
            parser.push(b"*1\r\n$4\r\nPING\r\n");
            assert_eq!(parser.next_request(), Ok(Some(Vec::new())), "{header:?}");
            assert_eq!(parser.next_request(), Ok(Some(request(&["PING"]))));
        }
    }

    /// Header numbers are read as Redis's `string2ll` reads them, and each
    /// kind of header has Redis's error (unit/protocol's texts).
    #[test]
    fn header_numbers_are_read_as_redis_reads_them() {
        for header in [
            "*01\r\n",
            "*-0\r\n",
            "*+1\r\n",
            "* 1\r\n",
            "*\r\n",
            "*3000000000\r\n",
        ] {
            assert_eq!(
                parse(header.as_bytes()),
                Err(ProtocolError::MultibulkLength),
                "{header:?}"
            );
        }
        for length in [
            "$-10",
            "$01",
            "$-0",
            "$blabla",
            "$2000000000",
            "$",
            "$9223372036854775808",
        ] {
            let wire = format!("*3\r\n$3\r\nSET\r\n$1\r\nx\r\n{length}\r\n");
            assert_eq!(
                parse(wire.as_bytes()),
                Err(ProtocolError::BulkLength),
                "{length:?}"
            );
        }
        assert_eq!(
            parse(b"*1\r\n$0\r\n\r\n"),
            Ok(Parsed::Request(vec![Vec::new()], 10))
        );
        assert_eq!(
            ProtocolError::BulkLength.to_string(),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            ProtocolError::MultibulkLength.to_string(),
            "Protocol error: invalid multibulk length"
        );
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

    /// A deterministic xorshift64* generator: the tests' random source.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound as u64) as usize
        }
    }

    const SPLIT_BULK_BYTES_MAX: usize = 1 << 20;

    /// Everything a stream parses to: its requests, and the error that ended
    /// it if one did.
    type Outcome = (Vec<Request>, Option<ProtocolError>);

    fn drain(parser: &mut RequestParser, requests: &mut Vec<Request>) -> Result<(), ProtocolError> {
        while let Some(request) = parser.next_request()? {
            requests.push(request);
        }
        Ok(())
    }

    /// The stream given at once.
    fn parse_whole(stream: &[u8]) -> Outcome {
        let mut parser = RequestParser::new(SPLIT_BULK_BYTES_MAX, usize::MAX);
        let mut requests = Vec::new();
        parser.push(stream);
        let error = drain(&mut parser, &mut requests).err();
        (requests, error)
    }

    /// The stream as reads of the given sizes would bring it (a read never
    /// takes more than the parser offers), taking requests after each.
    fn parse_in_reads(
        parser: &mut RequestParser,
        stream: &[u8],
        sizes: &mut dyn FnMut() -> usize,
    ) -> Outcome {
        let mut requests = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let room = parser.unfilled();
            let count = room.len().min(sizes()).min(stream.len() - at);
            room[..count].copy_from_slice(&stream[at..at + count]);
            parser.filled(count);
            at += count;
            if let Err(error) = drain(parser, &mut requests) {
                return (requests, Some(error));
            }
        }
        (requests, None)
    }

    fn random_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
        (0..len).map(|_| rng.next() as u8).collect()
    }

    /// A stream of multibulk, inline and empty requests; some arguments are
    /// large enough to be read in place.
    fn random_stream(rng: &mut Rng, large: bool) -> Vec<u8> {
        let mut stream = Vec::new();
        for _ in 0..1 + rng.below(6) {
            match rng.below(5) {
                0 => {
                    let words = ["GET", "set", "k", "\"a b\"", "'x'"];
                    let line: Vec<&str> =
                        (0..1 + rng.below(4)).map(|_| words[rng.below(5)]).collect();
                    stream.extend_from_slice(line.join(" ").as_bytes());
                    stream.extend_from_slice(if rng.below(2) == 0 { b"\r\n" } else { b"\n" });
                }
                1 => stream.extend_from_slice(
                    [b"*0\r\n".as_slice(), b"*-1\r\n", b"*-10\r\n", b"\r\n"][rng.below(4)],
                ),
                _ => {
                    let args: Vec<Reply> = (0..1 + rng.below(5))
                        .map(|_| {
                            let len = match rng.below(8) {
                                0 if large => {
                                    BULK_DIRECT_READ_BYTES_MIN
                                        + rng.below(3 * BULK_DIRECT_READ_BYTES_MIN)
                                }
                                1 => 0,
                                _ => rng.below(24),
                            };
                            Reply::Bulk(random_bytes(rng, len))
                        })
                        .collect();
                    Reply::Array(args).encode(Protocol::Resp2, &mut stream);
                }
            }
        }
        stream
    }

    /// Damages a stream now and then, so errors are compared too.
    fn maybe_damage(rng: &mut Rng, stream: &mut Vec<u8>) {
        match rng.below(4) {
            0 => {
                let at = rng.below(stream.len());
                stream[at] = rng.next() as u8;
            }
            1 => stream.truncate(rng.below(stream.len())),
            _ => {}
        }
    }

    #[test]
    fn a_stream_split_at_any_byte_parses_as_it_does_whole() {
        let mut rng = Rng(0x5eed_0001);
        for _ in 0..60 {
            let mut stream = random_stream(&mut rng, false);
            maybe_damage(&mut rng, &mut stream);
            let whole = parse_whole(&stream);
            for cut in 0..=stream.len() {
                let mut parser = RequestParser::new(SPLIT_BULK_BYTES_MAX, usize::MAX);
                let mut sizes = [cut, usize::MAX].into_iter().cycle();
                let split = parse_in_reads(&mut parser, &stream, &mut || sizes.next().unwrap());
                assert_eq!(
                    split,
                    whole,
                    "cut at byte {cut} of {:?}",
                    String::from_utf8_lossy(&stream)
                );
            }
        }
    }

    #[test]
    fn a_stream_in_random_reads_parses_as_it_does_whole() {
        let mut rng = Rng(0x5eed_0002);
        for round in 0..200 {
            let mut stream = random_stream(&mut rng, true);
            maybe_damage(&mut rng, &mut stream);
            let whole = parse_whole(&stream);
            let mut parser = RequestParser::new(SPLIT_BULK_BYTES_MAX, usize::MAX);
            let largest = [1, 7, 100, 5000, 70_000][round % 5];
            let mut sizes = || 1 + rng.below(largest);
            let chunked = parse_in_reads(&mut parser, &stream, &mut sizes);
            assert_eq!(chunked, whole, "round {round}");
        }
    }

    /// Issue 9: every read re-parsed the request from its start and copied
    /// its arguments again, so one large MSET cost the square of its reads.
    #[test]
    fn parsing_work_is_linear_in_the_request_bytes() {
        let args: Vec<Reply> = (0..100_000)
            .map(|index| Reply::Bulk(format!("{{tag}}:key:{index:08}").into_bytes()))
            .collect();
        let mut stream = Vec::new();
        Reply::Array(args).encode(Protocol::Resp2, &mut stream);
        for largest in [1, 9, 1000] {
            let mut rng = Rng(0x5eed_0003);
            let mut parser = RequestParser::new(SPLIT_BULK_BYTES_MAX, usize::MAX);
            let mut reads = 0;
            let (requests, error) = parse_in_reads(&mut parser, &stream, &mut || {
                reads += 1;
                1 + rng.below(largest)
            });
            assert_eq!(
                (requests.len(), requests[0].len(), error),
                (1, 100_000, None)
            );
            // Each byte is parsed once; a header cut by a read is looked at
            // again, at most a header line's length per read.
            let bound = stream.len() as u64 + reads * (HEADER_LINE_BYTES_MAX as u64 + 2);
            assert!(
                parser.examined_bytes() <= bound,
                "reads of up to {largest} bytes: {} bytes examined for a request of {} in {reads} reads",
                parser.examined_bytes(),
                stream.len()
            );
            // What is parsed leaves the input buffer as it is parsed.
            assert!(
                parser.buf.len() <= 2 * crate::limits::READ_CHUNK_BYTES,
                "the input buffer grew to {}",
                parser.buf.len()
            );
        }
    }

    #[test]
    fn an_inline_line_in_one_byte_reads_is_searched_once() {
        let mut line = vec![b'a'; INLINE_REQUEST_BYTES_MAX - 2];
        line.extend_from_slice(b"\r\n");
        let mut parser = RequestParser::new(SPLIT_BULK_BYTES_MAX, usize::MAX);
        let (requests, error) = parse_in_reads(&mut parser, &line, &mut || 1);
        assert_eq!((requests.len(), error), (1, None));
        assert!(
            parser.examined_bytes() <= 2 * line.len() as u64,
            "{} bytes examined",
            parser.examined_bytes()
        );
    }

    #[test]
    fn a_large_argument_is_read_in_place_as_it_arrives() {
        let len = 200 * 1024;
        let mut parser = RequestParser::new(SPLIT_BULK_BYTES_MAX, usize::MAX);
        parser.push(format!("*1\r\n${len}\r\n").as_bytes());
        assert_eq!(parser.next_request(), Ok(None));
        // The read goes into the argument: as much as is left of it.
        let room = parser.unfilled();
        assert_eq!(room.len(), len);
        room[..150 * 1024].fill(b'x');
        parser.filled(150 * 1024);
        assert_eq!(parser.next_request(), Ok(None));
        assert_eq!(parser.unfilled().len(), 50 * 1024);
        parser.filled(0);
        // Less than a large argument is left: it comes through the buffer.
        let mut rest = vec![b'x'; 50 * 1024];
        rest.extend_from_slice(b"\r\n");
        parser.push(&rest);
        assert_eq!(parser.next_request(), Ok(Some(vec![vec![b'x'; len]])));
        assert!(parser.buf.len() <= 2 * crate::limits::READ_CHUNK_BYTES);
    }

    #[test]
    fn a_request_holding_more_than_the_limit_is_refused() {
        let mut parser = RequestParser::new(1024, 100);
        parser.push(b"*3\r\n$60\r\n");
        assert_eq!(parser.next_request(), Ok(None));
        assert_eq!(parser.held_bytes(), 60);
        parser.push(&[b'a'; 60]);
        parser.push(b"\r\n$41\r\n");
        assert_eq!(
            parser.next_request(),
            Err(ProtocolError::QueryBufferFull {
                held_bytes: 101,
                limit: 100
            })
        );
        let mut parser = RequestParser::new(1024, 100);
        parser.push(b"*3\r\n$60\r\n");
        parser.push(&[b'a'; 60]);
        parser.push(b"\r\n$40\r\n");
        assert_eq!(parser.next_request(), Ok(None));
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

    #[test]
    fn an_unauthenticated_connection_gets_small_requests_only() {
        let mut parser = RequestParser::new(BULK_BYTES_MAX_DEFAULT, usize::MAX);
        parser.set_authenticated(false);
        let small = b"*2\r\n$4\r\nAUTH\r\n$3\r\npw!\r\n";
        parser.push(small);
        assert_eq!(parser.next_request(), Ok(Some(request(&["AUTH", "pw!"]))));
        parser.push(b"*11\r\n");
        assert_eq!(
            parser.next_request(),
            Err(ProtocolError::UnauthenticatedMultibulkLength)
        );
        let mut parser = RequestParser::new(BULK_BYTES_MAX_DEFAULT, usize::MAX);
        parser.set_authenticated(false);
        parser.push(
            format!(
                "*2\r\n$4\r\nAUTH\r\n${}\r\n",
                UNAUTHENTICATED_BULK_BYTES_MAX + 1
            )
            .as_bytes(),
        );
        assert_eq!(
            parser.next_request(),
            Err(ProtocolError::UnauthenticatedBulkLength)
        );
        assert_eq!(
            ProtocolError::UnauthenticatedBulkLength.to_string(),
            "Protocol error: unauthenticated bulk length"
        );
        // Once authenticated, the same request parses.
        let mut parser = RequestParser::new(BULK_BYTES_MAX_DEFAULT, usize::MAX);
        parser.set_authenticated(false);
        parser.push(small);
        assert!(parser.next_request().unwrap().is_some());
        parser.set_authenticated(true);
        let args = vec!["a"; UNAUTHENTICATED_REQUEST_ARGS_MAX + 1];
        let mut wire = Vec::new();
        Reply::Array(
            args.iter()
                .map(|arg| Reply::Bulk(arg.as_bytes().to_vec()))
                .collect(),
        )
        .encode(Protocol::Resp2, &mut wire);
        parser.push(&wire);
        assert_eq!(parser.next_request(), Ok(Some(request(&args))));
    }
}
