//! Entry points for the cargo-fuzz targets in `fuzz/` that decode bytes from
//! outside the node, kept here so that a stable test replays the committed
//! corpus (`engine/tests/corpus/`) through the very same code.
//!
//! Each function takes arbitrary bytes and must never panic; the checks that
//! would reveal a wrong answer are asserted inside.

use crate::resp::{ProtocolError, Request, RequestParser, HEADER_LINE_BYTES_MAX};

/// Largest bulk argument the RESP fuzz entry point accepts: small, so that a
/// claimed length stays within the sanitizer's allocation limit.
const FUZZ_BULK_BYTES_MAX: usize = 1 << 20;
/// Longest read `resp_request` cuts the stream into, by the first byte's
/// low three bits: single bytes, header-sized pieces, socket-sized reads.
const FUZZ_READ_BYTES_MAX: [usize; 8] = [1, 2, 3, 7, 16, 64, 1024, 70_000];

/// Requests parsed from a stream, and whether a protocol error ended it.
type Parse = (Vec<Request>, Option<ProtocolError>);

/// Takes every whole request the parser holds.
fn drain(parser: &mut RequestParser, requests: &mut Vec<Request>) -> Result<(), ProtocolError> {
    while let Some(request) = parser.next_request()? {
        requests.push(request);
    }
    Ok(())
}

/// The stream given to the parser at once.
fn parse_whole(stream: &[u8]) -> Parse {
    let mut parser = RequestParser::new(FUZZ_BULK_BYTES_MAX, usize::MAX);
    let mut requests = Vec::new();
    parser.push(stream);
    let error = drain(&mut parser, &mut requests).err();
    (requests, error)
}

/// The stream as socket reads of pseudo-random sizes (seeded by `control`)
/// bring it, through the same calls the client loop makes. Returns what it
/// parsed and the parser's work.
fn parse_in_reads(control: u8, stream: &[u8]) -> (Parse, u64, u64) {
    let largest = FUZZ_READ_BYTES_MAX[usize::from(control & 7)];
    let mut state = u64::from(control) | 0x9e37_79b9_7f4a_7c00;
    let mut parser = RequestParser::new(FUZZ_BULK_BYTES_MAX, usize::MAX);
    let mut requests = Vec::new();
    let (mut at, mut reads) = (0, 0);
    while at < stream.len() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let want = 1 + (state % largest as u64) as usize;
        let room = parser.unfilled();
        let count = room.len().min(want).min(stream.len() - at);
        room[..count].copy_from_slice(&stream[at..at + count]);
        parser.filled(count);
        at += count;
        reads += 1;
        if let Err(error) = drain(&mut parser, &mut requests) {
            return ((requests, Some(error)), parser.examined_bytes(), reads);
        }
    }
    ((requests, None), parser.examined_bytes(), reads)
}

/// Parses arbitrary bytes as a client's request stream, whole and cut into
/// reads (the first byte chooses how), and asserts both give the same
/// requests and the same error, with work linear in the bytes. Returns how
/// many requests it parsed and whether an error ended the stream, so that
/// the corpus replay can compare them with what a file holds.
pub fn resp_request(data: &[u8]) -> (usize, bool) {
    let Some((control, stream)) = data.split_first() else {
        return (0, false);
    };
    let whole = parse_whole(stream);
    let (in_reads, examined_bytes, reads) = parse_in_reads(*control, stream);
    assert_eq!(
        in_reads, whole,
        "a stream parses the same however it is read"
    );
    // Each byte is searched once and copied or split once; a header line
    // cut by a read is looked at again, at most once per read.
    let bound = 2 * stream.len() as u64 + reads * (HEADER_LINE_BYTES_MAX as u64 + 2);
    assert!(
        examined_bytes <= bound,
        "{examined_bytes} bytes examined for {} bytes in {reads} reads",
        stream.len()
    );
    (whole.0.len(), whole.1.is_some())
}
