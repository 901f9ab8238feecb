//! Entry points for the cargo-fuzz targets in `fuzz/` that feed the engine's
//! decoders bytes from outside (clients' requests; a damaged disk's log
//! entries and snapshots; peers' handshakes and transport frames), kept here so that a stable test replays
//! the committed corpus (`engine/tests/corpus/`) through the very same code
//! (see docs/FUZZING.md).
//!
//! Each function takes arbitrary bytes and must never panic; the checks that
//! would reveal a wrong answer or a wrong acceptance are asserted inside.

use keel_wal::{codec, run_ready, LogIndex, MemStorage, Storage, StorageFile};

use crate::keyspace::Keyspace;
use crate::operation::Operation;
use crate::peer::frame::{encode_frame, FrameDecoder, FrameError};
use crate::peer::handshake;
use crate::resp::{ProtocolError, Request, RequestParser, HEADER_LINE_BYTES_MAX};
use crate::snapshot::{self, SnapshotWriter};

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

/// A key space's whole content, comparable.
type Content = Vec<(Vec<u8>, Vec<u8>, Option<u64>)>;

fn content(keyspace: &Keyspace) -> Content {
    let mut items: Content = keyspace
        .items()
        .map(|(key, value, expire)| (key.to_vec(), value.to_vec(), expire))
        .collect();
    items.sort();
    items
}

/// Decodes arbitrary bytes as a log entry's operation, and tells whether they
/// decoded. An operation that decodes must encode to bytes that decode to it
/// again, show as text, and apply to a key space; applying it twice must give
/// what applying it once gave (every operation is a blind write: see
/// [`crate::operation`]).
pub fn operation_decode(data: &[u8]) -> bool {
    let Ok(op) = codec::decode::<Operation>(data) else {
        return false;
    };
    let encoded = codec::encode(&op).expect("a decoded operation encodes");
    let again = codec::decode::<Operation>(&encoded).expect("an encoded operation decodes");
    assert_eq!(again, op, "decoding what was encoded gives the operation");
    let _shown = op.to_string();
    let mut keyspace = Keyspace::with_hash_seed(0);
    keyspace.apply(&op);
    let once = content(&keyspace);
    let counts = (
        keyspace.len(),
        keyspace.expires_len(),
        keyspace.data_bytes(),
    );
    keyspace.apply(&op);
    assert_eq!(content(&keyspace), once, "{op} applied twice");
    assert_eq!(
        (
            keyspace.len(),
            keyspace.expires_len(),
            keyspace.data_bytes()
        ),
        counts,
        "{op} applied twice: the key space's counts"
    );
    assert_eq!(once.len(), counts.0, "{op}: keys counted and held");
    true
}

/// The offset of the header's last index, which the file name must repeat.
const HEADER_LAST_INDEX_OFFSET: usize = 16;

/// Loads arbitrary bytes as the only snapshot file of a directory, and
/// returns how many keys it held if it loaded; then loads them again with
/// their checksums forged to hold ([`snapshot::forge_checksums`]), as a
/// hostile writer could, so that the checks behind the checksums meet
/// arbitrary structures too (the fuzzer alone almost never forges a CRC32).
///
/// Each file is named for the last index its header claims (0 if it has
/// none), so that the fuzzer reaches past the check of the name. A snapshot
/// that loads must hold as many records as its trailer counts, and writing
/// those records again must give a snapshot that loads to the same records. A
/// refused one must be refused as corrupt (the storage is memory: no IO
/// fails).
pub fn snapshot_load(data: &[u8]) -> Option<u64> {
    let keys = load_checked(data);
    let mut forged = data.to_vec();
    snapshot::forge_checksums(&mut forged);
    load_checked(&forged);
    keys
}

fn load_checked(data: &[u8]) -> Option<u64> {
    let index = data
        .get(HEADER_LAST_INDEX_OFFSET..HEADER_LAST_INDEX_OFFSET + 8)
        .map_or(0, |bytes| {
            u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
        });
    let storage = MemStorage::new();
    let name = snapshot::snapshot_name(LogIndex(index));
    run_ready(async {
        let mut file = storage.create(&name).await?;
        file.write_at(data, 0).await
    })
    .expect("memory writes succeed");
    let loaded = match snapshot::load_newest(&storage) {
        Ok(loaded) => loaded.expect("the directory holds a snapshot"),
        Err(error) => {
            assert!(error.is_corruption(), "{error}");
            return None;
        }
    };
    let items: Vec<_> = loaded.items().collect();
    assert_eq!(
        items.len() as u64,
        loaded.keys(),
        "the records the trailer counts"
    );
    let rewritten = MemStorage::new();
    run_ready(async {
        let mut writer = SnapshotWriter::create(rewritten.clone(), loaded.meta()).await?;
        for (key, value, expire) in &items {
            writer.push(key, value, *expire);
        }
        writer.finish().await
    })
    .expect("memory writes succeed");
    let reloaded = snapshot::load_newest(&rewritten)
        .expect("a written snapshot loads")
        .expect("a snapshot was written");
    assert_eq!(
        reloaded.meta(),
        loaded.meta(),
        "the rewritten snapshot's position"
    );
    assert!(
        reloaded.items().eq(items.iter().copied()),
        "the rewritten snapshot's records"
    );
    Some(loaded.keys())
}

/// Longest read `peer_transport` cuts a stream into, by the first byte's low
/// three bits.
const FUZZ_PEER_READ_BYTES_MAX: [usize; 8] = [1, 2, 5, 11, 12, 13, 100, 70_000];

/// A peer's stream cut into reads of `read_bytes`: the messages decoded (as
/// shard and frame) and the error that ended it, if any.
fn peer_frames(stream: &[u8], read_bytes: usize) -> (Vec<(u32, Vec<u8>)>, Option<FrameError>) {
    let mut decoder = FrameDecoder::default();
    let mut frames = Vec::new();
    for read in stream.chunks(read_bytes) {
        decoder.push(read);
        loop {
            match decoder.next_message(1) {
                Ok(Some(message)) => frames.push((message.shard, message.frame)),
                Ok(None) => break,
                Err(error) => return (frames, Some(error)),
            }
        }
    }
    (frames, None)
}

/// Arbitrary bytes (after a control byte) as what a peer sends: decoded as
/// one handshake message, and as a stream of transport frames, whole and in
/// reads whose size the control byte's low three bits pick. Asserts that a
/// handshake message that decodes encodes back to the same bytes, that both
/// readings of the stream give the same frames and the same error, and that
/// the frames encode back to the stream's first bytes. Returns whether the
/// bytes are a handshake message, how many frames decoded, and whether an
/// error ended the stream.
pub fn peer_transport(data: &[u8]) -> (bool, usize, bool) {
    let Some((control, stream)) = data.split_first() else {
        return (false, 0, false);
    };
    let hello = handshake::decode(stream);
    if let Ok(message) = &hello {
        assert_eq!(
            handshake::encode(message),
            stream,
            "handshake decoding is canonical"
        );
    }
    let whole = peer_frames(stream, stream.len().max(1));
    let read_bytes = FUZZ_PEER_READ_BYTES_MAX[usize::from(control & 7)];
    let pieces = peer_frames(stream, read_bytes);
    assert_eq!(
        whole, pieces,
        "reads of {read_bytes} bytes change what the stream holds"
    );
    let mut encoded = Vec::new();
    for (shard, frame) in &whole.0 {
        encode_frame(*shard, frame, &mut encoded);
    }
    assert!(
        stream.starts_with(&encoded),
        "frames encode back to their bytes"
    );
    (hello.is_ok(), whole.0.len(), whole.1.is_some())
}
