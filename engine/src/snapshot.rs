//! Per-shard snapshots: the key space at one log index, written to a file in
//! the shard's directory (the same [`Storage`] as its WAL, which ignores files
//! not named like its segments) so that the WAL before that index can go.
//!
//! A [`SnapshotWriter`] buffers records in memory ([`SnapshotWriter::push`] does
//! no IO) and writes whole blocks on [`SnapshotWriter::flush`], as the O_DIRECT
//! contract of [`StorageFile::write_at`] asks; [`SnapshotWriter::finish`] adds
//! the trailer, syncs, and renames `snapshot-{index:020}.snap.tmp` to
//! `snapshot-{index:020}.snap`. [`load_newest`] maps the newest `.snap` and
//! verifies every byte of it before handing out its records.
//!
//! # Format (version 1)
//! All integers are little-endian and fixed-width. A file is a header block, a
//! stream of chunks, zero padding, and a trailer that ends the file; the file's
//! length is a multiple of [`BLOCK_BYTES`] (4096).
//!
//! ```text
//! offset          bytes  field
//! 0               4096   header block
//! 4096            D      chunk stream: chunks back to back, no alignment
//! 4096 + D        P      zeros, P < 4096, so that the file ends on a block
//! 4096 + D + P    32     trailer
//!
//! Header block
//!  0  4  magic b"KLSN"
//!  4  4  format version (SNAPSHOT_FORMAT_VERSION)
//!  8  4  shard
//! 12  4  zero
//! 16  8  last_index: the snapshot reflects every entry up to this one,
//!        and maybe some after it (a fuzzy snapshot: see node::shard)
//! 24  8  last_term: the term of that entry
//! 32  4  header CRC: crc32 of bytes 0..32
//! 36  4060 zeros
//!
//! Chunk (records are never split across chunks; no chunk is empty)
//!  0  4  body length B
//!  4  4  chunk CRC: crc32 of bytes 0..4 followed by the body
//!  8  B  body: records back to back
//!
//! Record
//!  0  4  key length K
//!  4  4  value length V
//!  8  8  expire_at_unix_ms; u64::MAX means none (an expiry 584 million
//!        years away is no expiry)
//! 16  K  key
//! 16+K V value
//!
//! Trailer (the last 32 bytes of the file)
//!  0  8  record count
//!  8  8  D, the chunk stream's length in bytes
//! 16  4  chunks CRC: crc32 of every chunk CRC in order, each as 4 bytes
//! 20  4  the header CRC again, binding the trailer to its header
//! 24  4  trailer CRC: crc32 of bytes 0..24
//! 28  4  magic b"KLSE"
//! ```
//!
//! Every byte is covered: the header fields and the trailer by their CRCs, the
//! padding in the header block and before the trailer by being zero, each chunk
//! by its CRC, and the chunk sequence (none lost, none swapped) by the chunks
//! CRC; the records must fill each body exactly and add up to the count. A
//! truncated file loses its trailer (the trailer sits at the end, wherever the
//! end is). So a single damaged byte anywhere, or a cut anywhere, is refused on
//! load with the file and byte offset, never read as data.
//!
//! Version changes: 1 is the first.
//!
//! # Assumptions about the disk
//! Those of [`keel_wal::storage`]: only synced writes and synced directory
//! entries survive a crash. So the `.tmp` file is synced before its rename, and
//! the directory after it: a crash at any point leaves either the previous
//! snapshot or the new one newest, each whole. Until `finish` returns, the WAL
//! the new snapshot replaces must stay.

use std::fmt;
use std::io;
use std::ops::{Deref, Range};

use keel_wal::{LogIndex, Storage, StorageFile, Term, BLOCK_BYTES};

/// The format written, and the only one read.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
/// The body size at which the writer closes a chunk, and so the granularity of
/// the verification: a chunk holds records up to this many bytes, or one
/// larger record alone.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// The largest record (header, key and value) a snapshot holds: far above any
/// key and value the limits allow (64 KiB and 512 MiB), and it keeps a chunk's
/// body length within its 4-byte field.
pub const SNAPSHOT_RECORD_BYTES_MAX: usize = 1 << 31;

const HEADER_MAGIC: [u8; 4] = *b"KLSN";
const TRAILER_MAGIC: [u8; 4] = *b"KLSE";
const HEADER_BLOCK_BYTES: usize = BLOCK_BYTES;
/// The header fields the header CRC covers.
const HEADER_FIELDS_BYTES: usize = 32;
/// The header fields and their CRC; the rest of the block is zeros.
const HEADER_BYTES: usize = HEADER_FIELDS_BYTES + 4;
const CHUNK_HEADER_BYTES: usize = 8;
const RECORD_HEADER_BYTES: usize = 16;
const TRAILER_BYTES: usize = 32;
/// The trailer fields the trailer CRC covers.
const TRAILER_FIELDS_BYTES: usize = 24;
const NO_EXPIRY: u64 = u64::MAX;
const NAME_PREFIX: &str = "snapshot-";
const SNAPSHOT_SUFFIX: &str = ".snap";
const TMP_SUFFIX: &str = ".snap.tmp";
const NAME_INDEX_DIGITS: usize = 20;

const _: () = assert!(HEADER_BYTES <= HEADER_BLOCK_BYTES);
const _: () = assert!(TRAILER_BYTES < BLOCK_BYTES);
const _: () = assert!(SNAPSHOT_CHUNK_BYTES <= SNAPSHOT_RECORD_BYTES_MAX);
const _: () = assert!(SNAPSHOT_RECORD_BYTES_MAX <= u32::MAX as usize);

/// Which shard a snapshot belongs to and the log position it reflects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub shard: u32,
    pub last_index: LogIndex,
    pub last_term: Term,
}

/// What is wrong with a damaged snapshot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Damage {
    #[error("the file is {len_bytes} bytes: not a whole number of blocks, or too short for a header and a trailer (truncated?)")]
    Length { len_bytes: u64 },
    #[error("bad magic {found:?}")]
    Magic { found: [u8; 4] },
    #[error("unknown format version {found} (this build reads {SNAPSHOT_FORMAT_VERSION})")]
    Version { found: u32 },
    #[error("checksum {stored:#010x} stored, {actual:#010x} computed")]
    Checksum { stored: u32, actual: u32 },
    #[error("a byte that must be zero is {found:#04x}")]
    NotZero { found: u8 },
    #[error("the header says last index {in_header}, the file name {in_name}")]
    NameMismatch { in_name: u64, in_header: u64 },
    #[error("the trailer belongs to a header with checksum {in_trailer:#010x}, not this one's {in_header:#010x}")]
    ForeignTrailer { in_trailer: u32, in_header: u32 },
    #[error("the trailer's data length {data_bytes} does not fit a file of {len_bytes} bytes")]
    DataLength { data_bytes: u64, len_bytes: u64 },
    #[error("a chunk runs past the end of the data")]
    ChunkOverrun,
    #[error("a record runs past the end of its chunk")]
    RecordOverrun,
    #[error("the trailer counts {in_trailer} records, the chunks hold {found}")]
    RecordCount { in_trailer: u64, found: u64 },
    #[error("the snapshot is shard {found}'s, not shard {expected}'s")]
    Shard { expected: u32, found: u32 },
}

/// A failed snapshot operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error("cannot {op} {file}: {source}")]
    Io {
        op: &'static str,
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("snapshot {file} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        file: String,
        offset: u64,
        reason: Damage,
    },
}

impl SnapshotError {
    /// The file's bytes are wrong, as opposed to the IO failing.
    pub fn is_corruption(&self) -> bool {
        matches!(self, SnapshotError::Corrupt { .. })
    }
}

/// A snapshot made durable by [`SnapshotWriter::finish`].
#[derive(Debug)]
pub struct Written {
    /// The snapshot file, as its storage describes it.
    pub file: String,
    pub bytes: u64,
    pub keys: u64,
}

pub(crate) fn snapshot_name(index: LogIndex) -> String {
    format!(
        "{NAME_PREFIX}{:0width$}{SNAPSHOT_SUFFIX}",
        index.0,
        width = NAME_INDEX_DIGITS
    )
}

/// The log index in `name` if it is a snapshot file name ending in `suffix`.
fn name_index(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(NAME_PREFIX)?.strip_suffix(suffix)?;
    if digits.len() != NAME_INDEX_DIGITS || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn io_error<'a, S: Storage>(
    op: &'static str,
    storage: &'a S,
    name: &'a str,
) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        op,
        file: storage.describe(name),
        source,
    }
}

fn crc(parts: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

fn encode_header(meta: &SnapshotMeta) -> [u8; HEADER_BYTES] {
    let mut header = [0; HEADER_BYTES];
    header[0..4].copy_from_slice(&HEADER_MAGIC);
    header[4..8].copy_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    header[8..12].copy_from_slice(&meta.shard.to_le_bytes());
    header[16..24].copy_from_slice(&meta.last_index.0.to_le_bytes());
    header[24..32].copy_from_slice(&meta.last_term.0.to_le_bytes());
    let header_crc = crc(&[&header[..HEADER_FIELDS_BYTES]]);
    header[HEADER_FIELDS_BYTES..].copy_from_slice(&header_crc.to_le_bytes());
    header
}

/// Writes one snapshot: records are pushed in memory and flushed in whole blocks.
pub struct SnapshotWriter<S: Storage> {
    storage: S,
    file: S::File,
    meta: SnapshotMeta,
    tmp_name: String,
    /// The bytes from file offset `written_bytes` on, not written yet.
    pending: Vec<u8>,
    /// A multiple of [`BLOCK_BYTES`].
    written_bytes: u64,
    /// Where in `pending` the chunk being filled starts (its header, filled
    /// in when the chunk is sealed).
    open_chunk: Option<usize>,
    chunk_crcs: crc32fast::Hasher,
    header_crc: u32,
    keys: u64,
}

impl<S: Storage> fmt::Debug for SnapshotWriter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotWriter")
            .field("file", &self.tmp_name)
            .field("meta", &self.meta)
            .field("written_bytes", &self.written_bytes)
            .field("buffered_bytes", &self.pending.len())
            .field("keys", &self.keys)
            .finish()
    }
}

impl<S: Storage> SnapshotWriter<S> {
    /// Creates the `.tmp` file for `meta`, first removing one left by a crash.
    pub async fn create(storage: S, meta: SnapshotMeta) -> Result<Self, SnapshotError> {
        let tmp_name = format!("{}.tmp", snapshot_name(meta.last_index));
        match storage.remove(&tmp_name).await {
            Err(error) if error.kind() != io::ErrorKind::NotFound => {
                return Err(io_error("remove the stale", &storage, &tmp_name)(error))
            }
            _ => {}
        }
        let file = storage
            .create(&tmp_name)
            .await
            .map_err(io_error("create", &storage, &tmp_name))?;
        let header = encode_header(&meta);
        let mut pending = Vec::with_capacity(SNAPSHOT_CHUNK_BYTES + BLOCK_BYTES);
        pending.extend_from_slice(&header);
        pending.resize(HEADER_BLOCK_BYTES, 0);
        Ok(SnapshotWriter {
            storage,
            file,
            meta,
            tmp_name,
            pending,
            written_bytes: 0,
            open_chunk: None,
            chunk_crcs: crc32fast::Hasher::new(),
            header_crc: u32_at(&header, HEADER_FIELDS_BYTES),
            keys: 0,
        })
    }

    /// Adds one key to the snapshot, in memory.
    pub fn push(&mut self, key: &[u8], value: &[u8], expire_at_unix_ms: Option<u64>) {
        let record_bytes = RECORD_HEADER_BYTES + key.len() + value.len();
        assert!(
            record_bytes <= SNAPSHOT_RECORD_BYTES_MAX,
            "a record of {record_bytes} bytes is beyond any limit on keys and values"
        );
        if let Some(start) = self.open_chunk {
            let body_bytes = self.pending.len() - start - CHUNK_HEADER_BYTES;
            if body_bytes + record_bytes > SNAPSHOT_CHUNK_BYTES {
                self.seal_chunk();
            }
        }
        if self.open_chunk.is_none() {
            self.open_chunk = Some(self.pending.len());
            self.pending.extend_from_slice(&[0; CHUNK_HEADER_BYTES]);
        }
        let pending = &mut self.pending;
        pending.extend_from_slice(&(key.len() as u32).to_le_bytes());
        pending.extend_from_slice(&(value.len() as u32).to_le_bytes());
        pending.extend_from_slice(&expire_at_unix_ms.unwrap_or(NO_EXPIRY).to_le_bytes());
        pending.extend_from_slice(key);
        pending.extend_from_slice(value);
        self.keys += 1;
    }

    /// Bytes pushed (or framing) not yet written.
    pub fn buffered_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Writes the whole blocks pushed so far (closing the open chunk) and keeps
    /// the rest, under a block. Each call ends a chunk, so call it when
    /// [`buffered_bytes`](Self::buffered_bytes) reaches [`SNAPSHOT_CHUNK_BYTES`],
    /// not after every push. After a failed write, calling again rewrites the
    /// same blocks.
    pub async fn flush(&mut self) -> Result<(), SnapshotError> {
        self.seal_chunk();
        let whole_bytes = self.pending.len() / BLOCK_BYTES * BLOCK_BYTES;
        self.write_pending(whole_bytes).await
    }

    /// Completes the snapshot and makes it the newest durable one, then removes
    /// the older ones. The node may drop the WAL up to `last_index` only after
    /// this returned `Ok`.
    pub async fn finish(mut self) -> Result<Written, SnapshotError> {
        self.seal_chunk();
        let data_bytes = self.written_bytes + self.pending.len() as u64 - HEADER_BLOCK_BYTES as u64;
        let padded_bytes = (self.pending.len() + TRAILER_BYTES).next_multiple_of(BLOCK_BYTES);
        self.pending.resize(padded_bytes - TRAILER_BYTES, 0);
        let mut trailer = [0; TRAILER_BYTES];
        trailer[0..8].copy_from_slice(&self.keys.to_le_bytes());
        trailer[8..16].copy_from_slice(&data_bytes.to_le_bytes());
        trailer[16..20].copy_from_slice(&self.chunk_crcs.clone().finalize().to_le_bytes());
        trailer[20..24].copy_from_slice(&self.header_crc.to_le_bytes());
        let trailer_crc = crc(&[&trailer[..TRAILER_FIELDS_BYTES]]);
        trailer[24..28].copy_from_slice(&trailer_crc.to_le_bytes());
        trailer[28..32].copy_from_slice(&TRAILER_MAGIC);
        self.pending.extend_from_slice(&trailer);
        assert_eq!(
            self.pending.len() % BLOCK_BYTES,
            0,
            "the trailer ends a block"
        );
        self.write_pending(self.pending.len()).await?;
        let storage = &self.storage;
        let tmp_name = self.tmp_name.as_str();
        self.file
            .sync()
            .await
            .map_err(io_error("sync", storage, tmp_name))?;
        let name = snapshot_name(self.meta.last_index);
        storage
            .rename(tmp_name, &name)
            .await
            .map_err(io_error("rename", storage, tmp_name))?;
        storage
            .sync_dir()
            .await
            .map_err(io_error("sync the directory of", storage, &name))?;
        remove_older(storage, self.meta.last_index).await?;
        Ok(Written {
            file: storage.describe(&name),
            bytes: self.written_bytes,
            keys: self.keys,
        })
    }

    /// Fills in the open chunk's header; a no-op when no chunk is open.
    fn seal_chunk(&mut self) {
        let Some(start) = self.open_chunk.take() else {
            return;
        };
        let body_start = start + CHUNK_HEADER_BYTES;
        let body_bytes = u32::try_from(self.pending.len() - body_start)
            .expect("push keeps a chunk's body under SNAPSHOT_RECORD_BYTES_MAX");
        assert!(body_bytes > 0, "a chunk is opened only for a record");
        self.pending[start..start + 4].copy_from_slice(&body_bytes.to_le_bytes());
        let chunk_crc = crc(&[&self.pending[start..start + 4], &self.pending[body_start..]]);
        self.pending[start + 4..body_start].copy_from_slice(&chunk_crc.to_le_bytes());
        self.chunk_crcs.update(&chunk_crc.to_le_bytes());
    }

    async fn write_pending(&mut self, len_bytes: usize) -> Result<(), SnapshotError> {
        assert_eq!(len_bytes % BLOCK_BYTES, 0, "the writer writes whole blocks");
        if len_bytes == 0 {
            return Ok(());
        }
        self.file
            .write_at(&self.pending[..len_bytes], self.written_bytes)
            .await
            .map_err(io_error("write", &self.storage, &self.tmp_name))?;
        self.pending.drain(..len_bytes);
        self.written_bytes += len_bytes as u64;
        Ok(())
    }
}

/// Removes the snapshots (and `.tmp` files left by crashes) older than `index`.
async fn remove_older<S: Storage>(storage: &S, index: LogIndex) -> Result<(), SnapshotError> {
    let names = storage.list().map_err(io_error("list", storage, ""))?;
    let mut removed = false;
    for name in names {
        let older = [SNAPSHOT_SUFFIX, TMP_SUFFIX]
            .iter()
            .any(|suffix| name_index(&name, suffix).is_some_and(|found| found < index.0));
        if older {
            storage.remove(&name).await.map_err(io_error(
                "remove the older snapshot",
                storage,
                &name,
            ))?;
            removed = true;
        }
    }
    if removed {
        storage
            .sync_dir()
            .await
            .map_err(io_error("sync the directory of", storage, ""))?;
    }
    Ok(())
}

/// A verified snapshot, mapped.
pub struct Loaded<M> {
    map: M,
    file: String,
    meta: SnapshotMeta,
    keys: u64,
    data_bytes: usize,
}

impl<M> fmt::Debug for Loaded<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loaded")
            .field("file", &self.file)
            .field("meta", &self.meta)
            .field("keys", &self.keys)
            .field("data_bytes", &self.data_bytes)
            .finish()
    }
}

impl<M: Deref<Target = [u8]>> Loaded<M> {
    pub fn meta(&self) -> SnapshotMeta {
        self.meta
    }

    /// The file, as its storage describes it.
    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// The whole file: what a leader sends a replica that needs the
    /// snapshot ([`install`] on its side checks every byte again).
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Every record as (key, value, expire_at_unix_ms), borrowed from the map.
    pub fn items(&self) -> impl Iterator<Item = Item<'_>> + '_ {
        Records {
            data: &self.map[HEADER_BLOCK_BYTES..HEADER_BLOCK_BYTES + self.data_bytes],
            position: 0,
            chunk_end: 0,
        }
    }
}

/// A record: key, value and expiry.
pub type Item<'a> = (&'a [u8], &'a [u8], Option<u64>);

/// The newest snapshot in `storage`, verified whole; `None` if there is none.
/// `.tmp` files are ignored (the next [`SnapshotWriter::create`] of the same
/// index removes its own). A damaged newest snapshot is an error, not a reason
/// to fall back to an older one: the WAL it replaced may be gone.
pub fn load_newest<S: Storage>(storage: &S) -> Result<Option<Loaded<S::Map>>, SnapshotError> {
    let names = storage.list().map_err(io_error("list", storage, ""))?;
    let newest = names
        .iter()
        .filter_map(|name| Some((name_index(name, SNAPSHOT_SUFFIX)?, name)))
        .max();
    let Some((index, name)) = newest else {
        return Ok(None);
    };
    let map = storage.map(name).map_err(io_error("map", storage, name))?;
    let file = storage.describe(name);
    let verified = match verify(&map, index) {
        Ok(verified) => verified,
        Err((offset, reason)) => {
            return Err(SnapshotError::Corrupt {
                file,
                offset: offset as u64,
                reason,
            })
        }
    };
    Ok(Some(Loaded {
        map,
        file,
        meta: verified.meta,
        keys: verified.keys,
        data_bytes: verified.data_bytes,
    }))
}

/// Checks `bytes`, a whole snapshot file from a peer, as [`load_newest`]
/// checks a file (every byte), and that it is shard `shard`'s through
/// `last_index`: the snapshot over the bytes, to load a key space from and
/// to [`store`].
pub fn from_peer(
    bytes: Vec<u8>,
    shard: u32,
    last_index: LogIndex,
) -> Result<Loaded<Vec<u8>>, SnapshotError> {
    let file = format!("a peer's {}", snapshot_name(last_index));
    let verified = match verify(&bytes, last_index.0) {
        Ok(verified) if verified.meta.shard == shard => verified,
        Ok(verified) => {
            return Err(SnapshotError::Corrupt {
                file,
                offset: 8,
                reason: Damage::Shard {
                    expected: shard,
                    found: verified.meta.shard,
                },
            })
        }
        Err((offset, reason)) => {
            return Err(SnapshotError::Corrupt {
                file,
                offset: offset as u64,
                reason,
            })
        }
    };
    Ok(Loaded {
        file,
        meta: verified.meta,
        keys: verified.keys,
        data_bytes: verified.data_bytes,
        map: bytes,
    })
}

/// Makes a peer's snapshot ([`from_peer`]) this shard's newest durable one,
/// as [`SnapshotWriter::finish`] does its own (a `.tmp` file synced,
/// renamed, the directory synced), and removes the older ones.
pub async fn store<S: Storage>(
    storage: &S,
    snapshot: &Loaded<Vec<u8>>,
) -> Result<(), SnapshotError> {
    let name = snapshot_name(snapshot.meta.last_index);
    let tmp_name = format!("{name}.tmp");
    match storage.remove(&tmp_name).await {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            return Err(io_error("remove the stale", storage, &tmp_name)(error))
        }
        _ => {}
    }
    let mut file = storage
        .create(&tmp_name)
        .await
        .map_err(io_error("create", storage, &tmp_name))?;
    file.write_at(snapshot.bytes(), 0)
        .await
        .map_err(io_error("write", storage, &tmp_name))?;
    file.sync()
        .await
        .map_err(io_error("sync", storage, &tmp_name))?;
    drop(file);
    storage
        .rename(&tmp_name, &name)
        .await
        .map_err(io_error("rename", storage, &tmp_name))?;
    storage
        .sync_dir()
        .await
        .map_err(io_error("sync the directory of", storage, &name))?;
    remove_older(storage, snapshot.meta.last_index).await
}

/// Rewrites the checksums of a would-be snapshot file so that they hold, as far
/// as its structure can be followed: the header's, each chunk's while chunks
/// fit the data length the trailer claims, and the trailer's three. A hostile
/// writer (a peer sending a snapshot, later) can do as much; the fuzz target
/// does it to reach the checks that sit behind the checksums, which a fuzzer
/// alone almost never passes. A file too short for a header and a trailer is
/// left as it is.
pub(crate) fn forge_checksums(bytes: &mut [u8]) {
    if bytes.len() < HEADER_BLOCK_BYTES + TRAILER_BYTES {
        return;
    }
    let header_crc = crc(&[&bytes[..HEADER_FIELDS_BYTES]]);
    bytes[HEADER_FIELDS_BYTES..HEADER_BYTES].copy_from_slice(&header_crc.to_le_bytes());
    let trailer_start = bytes.len() - TRAILER_BYTES;
    let data_end = usize::try_from(u64_at(bytes, trailer_start + 8))
        .ok()
        .and_then(|data| HEADER_BLOCK_BYTES.checked_add(data))
        .map_or(trailer_start, |end| end.min(trailer_start));
    let data = &mut bytes[HEADER_BLOCK_BYTES..data_end];
    let mut chunk_crcs = crc32fast::Hasher::new();
    let mut position = 0;
    while let Some(body) = chunk_body(data, position) {
        let chunk_crc = crc(&[&data[position..position + 4], &data[body.clone()]]);
        data[position + 4..body.start].copy_from_slice(&chunk_crc.to_le_bytes());
        chunk_crcs.update(&chunk_crc.to_le_bytes());
        position = body.end;
    }
    let trailer = &mut bytes[trailer_start..];
    trailer[16..20].copy_from_slice(&chunk_crcs.finalize().to_le_bytes());
    trailer[20..24].copy_from_slice(&header_crc.to_le_bytes());
    let trailer_crc = crc(&[&trailer[..TRAILER_FIELDS_BYTES]]);
    trailer[24..28].copy_from_slice(&trailer_crc.to_le_bytes());
}

/// What [`verify`] learnt from a sound file.
struct Verified {
    meta: SnapshotMeta,
    keys: u64,
    data_bytes: usize,
}

/// Damage, at a byte offset in the file.
type Found = (usize, Damage);

/// Checks every byte of a snapshot file named for `name_index`.
fn verify(bytes: &[u8], name_index: u64) -> Result<Verified, Found> {
    let len_bytes = bytes.len();
    if len_bytes < HEADER_BLOCK_BYTES + BLOCK_BYTES || len_bytes % BLOCK_BYTES != 0 {
        return Err((
            len_bytes,
            Damage::Length {
                len_bytes: len_bytes as u64,
            },
        ));
    }
    let meta = verify_header(&bytes[..HEADER_BLOCK_BYTES], name_index)?;
    let header_crc = u32_at(bytes, HEADER_FIELDS_BYTES);
    let trailer_start = len_bytes - TRAILER_BYTES;
    let trailer = &bytes[trailer_start..];
    let in_trailer = |(offset, damage): Found| (trailer_start + offset, damage);
    verify_trailer(trailer, header_crc).map_err(in_trailer)?;
    let data_bytes = u64_at(trailer, 8);
    let data_end = usize::try_from(data_bytes)
        .ok()
        .and_then(|data| HEADER_BLOCK_BYTES.checked_add(data))
        .filter(|&end| end <= trailer_start && trailer_start - end < BLOCK_BYTES)
        .ok_or((
            trailer_start + 8,
            Damage::DataLength {
                data_bytes,
                len_bytes: len_bytes as u64,
            },
        ))?;
    zeros(bytes, data_end..trailer_start)?;
    let (keys, chunks_crc) = verify_chunks(&bytes[HEADER_BLOCK_BYTES..data_end])
        .map_err(|(offset, damage)| (HEADER_BLOCK_BYTES + offset, damage))?;
    let counted = u64_at(trailer, 0);
    if keys != counted {
        return Err(in_trailer((
            0,
            Damage::RecordCount {
                in_trailer: counted,
                found: keys,
            },
        )));
    }
    checksum(u32_at(trailer, 16), chunks_crc, trailer_start + 16)?;
    Ok(Verified {
        meta,
        keys,
        data_bytes: data_end - HEADER_BLOCK_BYTES,
    })
}

fn verify_header(block: &[u8], name_index: u64) -> Result<SnapshotMeta, Found> {
    magic(block, 0, HEADER_MAGIC)?;
    let actual = crc(&[&block[..HEADER_FIELDS_BYTES]]);
    checksum(
        u32_at(block, HEADER_FIELDS_BYTES),
        actual,
        HEADER_FIELDS_BYTES,
    )?;
    let version = u32_at(block, 4);
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err((4, Damage::Version { found: version }));
    }
    zeros(block, 12..16)?;
    zeros(block, HEADER_BYTES..HEADER_BLOCK_BYTES)?;
    let in_header = u64_at(block, 16);
    if in_header != name_index {
        return Err((
            16,
            Damage::NameMismatch {
                in_name: name_index,
                in_header,
            },
        ));
    }
    Ok(SnapshotMeta {
        shard: u32_at(block, 8),
        last_index: LogIndex(in_header),
        last_term: Term(u64_at(block, 24)),
    })
}

fn verify_trailer(trailer: &[u8], header_crc: u32) -> Result<(), Found> {
    magic(trailer, 28, TRAILER_MAGIC)?;
    let actual = crc(&[&trailer[..TRAILER_FIELDS_BYTES]]);
    checksum(u32_at(trailer, 24), actual, 24)?;
    let in_trailer = u32_at(trailer, 20);
    if in_trailer != header_crc {
        return Err((
            20,
            Damage::ForeignTrailer {
                in_trailer,
                in_header: header_crc,
            },
        ));
    }
    Ok(())
}

/// Checks each chunk's CRC and records; returns the record count and the
/// chunks CRC.
fn verify_chunks(data: &[u8]) -> Result<(u64, u32), Found> {
    let mut keys = 0;
    let mut chunk_crcs = crc32fast::Hasher::new();
    let mut position = 0;
    while position < data.len() {
        let body = chunk_body(data, position).ok_or((position, Damage::ChunkOverrun))?;
        let stored = u32_at(data, position + 4);
        let actual = crc(&[&data[position..position + 4], &data[body.clone()]]);
        checksum(stored, actual, position + 4)?;
        let mut at = body.start;
        while at < body.end {
            let (_, next) = record_at(&data[..body.end], at).ok_or((at, Damage::RecordOverrun))?;
            at = next;
            keys += 1;
        }
        chunk_crcs.update(&stored.to_le_bytes());
        position = body.end;
    }
    Ok((keys, chunk_crcs.finalize()))
}

fn magic(bytes: &[u8], offset: usize, expected: [u8; 4]) -> Result<(), Found> {
    let found: [u8; 4] = bytes[offset..offset + 4].try_into().expect("4 bytes");
    if found != expected {
        return Err((offset, Damage::Magic { found }));
    }
    Ok(())
}

fn checksum(stored: u32, actual: u32, offset: usize) -> Result<(), Found> {
    if stored != actual {
        return Err((offset, Damage::Checksum { stored, actual }));
    }
    Ok(())
}

fn zeros(bytes: &[u8], range: Range<usize>) -> Result<(), Found> {
    let start = range.start;
    match bytes[range].iter().position(|&byte| byte != 0) {
        Some(at) => Err((
            start + at,
            Damage::NotZero {
                found: bytes[start + at],
            },
        )),
        None => Ok(()),
    }
}

/// The body of the chunk at `position` in the chunk stream, if it fits.
fn chunk_body(data: &[u8], position: usize) -> Option<Range<usize>> {
    let body_start = position.checked_add(CHUNK_HEADER_BYTES)?;
    if body_start > data.len() {
        return None;
    }
    let body_end = body_start + u32_at(data, position) as usize;
    (body_end <= data.len()).then_some(body_start..body_end)
}

/// The record at `position` and where the next begins, if it ends within `bytes`.
fn record_at(bytes: &[u8], position: usize) -> Option<(Item<'_>, usize)> {
    let header = bytes.get(position..position + RECORD_HEADER_BYTES)?;
    let key_bytes = u32_at(header, 0) as usize;
    let value_bytes = u32_at(header, 4) as usize;
    let expire = u64_at(header, 8);
    let key_start = position + RECORD_HEADER_BYTES;
    let value_start = key_start + key_bytes;
    let end = value_start + value_bytes;
    let key = bytes.get(key_start..value_start)?;
    let value = bytes.get(value_start..end)?;
    let expire = (expire != NO_EXPIRY).then_some(expire);
    Some(((key, value, expire), end))
}

/// The records of a verified chunk stream.
struct Records<'a> {
    data: &'a [u8],
    position: usize,
    chunk_end: usize,
}

impl<'a> Iterator for Records<'a> {
    type Item = Item<'a>;

    fn next(&mut self) -> Option<Item<'a>> {
        while self.position == self.chunk_end {
            if self.position == self.data.len() {
                return None;
            }
            let body =
                chunk_body(self.data, self.position).expect("load_newest verified every chunk");
            self.position = body.start;
            self.chunk_end = body.end;
        }
        let (item, next) = record_at(&self.data[..self.chunk_end], self.position)
            .expect("load_newest verified every record");
        self.position = next;
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use keel_wal::{run_ready, Faults, MemStorage, StdStorage};

    use super::*;

    type Owned = (Vec<u8>, Vec<u8>, Option<u64>);

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            shard: 3,
            last_index: LogIndex(index),
            last_term: Term(7),
        }
    }

    /// Writes `items` as the snapshot at `index`, flushing whenever a chunk's
    /// worth is buffered, as the node does.
    fn write_items<S: Storage>(storage: S, index: u64, items: &[Owned]) -> Written {
        run_ready(async {
            let mut writer = SnapshotWriter::create(storage, meta(index)).await?;
            for (key, value, expire) in items {
                writer.push(key, value, *expire);
                if writer.buffered_bytes() >= SNAPSHOT_CHUNK_BYTES {
                    writer.flush().await?;
                    assert!(
                        writer.buffered_bytes() < BLOCK_BYTES,
                        "flush keeps under a block"
                    );
                }
            }
            writer.finish().await
        })
        .expect("the snapshot is written")
    }

    fn loaded_items<S: Storage>(storage: &S) -> (SnapshotMeta, Vec<Owned>) {
        let loaded = load_newest(storage)
            .expect("the snapshot loads")
            .expect("there is a snapshot");
        let items: Vec<Owned> = loaded
            .items()
            .map(|(key, value, expire)| (key.to_vec(), value.to_vec(), expire))
            .collect();
        assert_eq!(loaded.keys(), items.len() as u64);
        (loaded.meta(), items)
    }

    fn assert_round_trip(items: &[Owned]) {
        let storage = MemStorage::new();
        let written = write_items(storage.clone(), 42, items);
        assert_eq!(written.keys, items.len() as u64);
        assert_eq!(written.file, "mem:snapshot-00000000000000000042.snap");
        assert_eq!(written.bytes % BLOCK_BYTES as u64, 0);
        let (loaded_meta, loaded) = loaded_items(&storage);
        assert_eq!(loaded_meta, meta(42));
        assert_eq!(loaded, items);
    }

    fn binary_items(count: usize, value_bytes: usize) -> Vec<Owned> {
        (0..count)
            .map(|i| {
                let key = [&[0u8, 0xff, b'\n'][..], &(i as u64).to_le_bytes()].concat();
                let value = vec![(i % 251) as u8; value_bytes + i % 7];
                let expire = (i % 3 == 0).then_some(1_700_000_000_000 + i as u64);
                (key, value, expire)
            })
            .collect()
    }

    fn small_items() -> Vec<Owned> {
        vec![
            (b"alpha".to_vec(), b"one".to_vec(), None),
            (vec![0, 1, 2, 255], Vec::new(), Some(1_700_000_000_000)),
            (Vec::new(), b"empty key".to_vec(), Some(0)),
        ]
    }

    /// A replica installs a leader's snapshot bytes: damaged bytes or
    /// another shard's are refused; good ones become its newest snapshot,
    /// and older ones go.
    #[test]
    fn a_peers_snapshot_is_verified_then_stored_as_the_newest() {
        let leader = MemStorage::new();
        let items = binary_items(300, 100);
        write_items(leader.clone(), 90, &items);
        let bytes = load_newest(&leader).unwrap().unwrap().bytes().to_vec();
        let replica = MemStorage::new();
        write_items(replica.clone(), 40, &small_items());
        let mut damaged = bytes.clone();
        damaged[HEADER_BLOCK_BYTES + 20] ^= 1;
        for (bad, index, shard) in [
            (damaged, 90, 3),
            (bytes.clone(), 91, 3),
            (bytes.clone(), 90, 4),
        ] {
            let refused = from_peer(bad, shard, LogIndex(index));
            assert!(
                matches!(&refused, Err(error) if error.is_corruption()),
                "{refused:?}"
            );
        }
        let installed = from_peer(bytes, 3, LogIndex(90)).expect("verifies");
        assert_eq!(loaded_items(&replica), (meta(40), small_items()));
        run_ready(store(&replica, &installed)).expect("stores");
        let from_bytes: Vec<Owned> = installed
            .items()
            .map(|(key, value, expire)| (key.to_vec(), value.to_vec(), expire))
            .collect();
        assert_eq!(from_bytes, items);
        assert_eq!(loaded_items(&replica), (meta(90), items));
        assert_eq!(
            replica.list().unwrap().len(),
            1,
            "the older snapshot is gone"
        );
    }

    #[test]
    fn round_trips_no_keys() {
        assert_round_trip(&[]);
    }

    #[test]
    fn round_trips_one_key() {
        assert_round_trip(&[(b"key".to_vec(), b"value".to_vec(), Some(5))]);
    }

    #[test]
    fn round_trips_binary_keys_and_expiries() {
        assert_round_trip(&small_items());
    }

    #[test]
    fn round_trips_many_keys_across_chunks_and_a_record_larger_than_a_chunk() {
        let mut items = binary_items(30_000, 100);
        items.insert(
            10_000,
            (b"big".to_vec(), vec![9; 3 * SNAPSHOT_CHUNK_BYTES / 2], None),
        );
        let storage = MemStorage::new();
        let written = write_items(storage.clone(), 42, &items);
        assert!(
            written.bytes > 5 * SNAPSHOT_CHUNK_BYTES as u64,
            "several chunks"
        );
        assert_eq!(loaded_items(&storage).1, items);
    }

    #[test]
    fn round_trips_through_std_storage() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let items = binary_items(20_000, 100);
        write_items(StdStorage::new(dir.path()), 9, &items);
        let (loaded_meta, loaded) = loaded_items(&StdStorage::new(dir.path()));
        assert_eq!(loaded_meta, meta(9));
        assert_eq!(loaded, items);
    }

    #[test]
    fn an_expiry_at_the_end_of_time_is_no_expiry() {
        let storage = MemStorage::new();
        write_items(
            storage.clone(),
            1,
            &[(b"k".to_vec(), b"v".to_vec(), Some(u64::MAX))],
        );
        assert_eq!(
            loaded_items(&storage).1,
            [(b"k".to_vec(), b"v".to_vec(), None)]
        );
    }

    fn load_error(storage: &MemStorage) -> SnapshotError {
        load_newest(storage).expect_err("the damage is detected")
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let storage = MemStorage::new();
        write_items(storage.clone(), 42, &small_items());
        let name = snapshot_name(LogIndex(42));
        let len = storage.contents(&name).expect("the snapshot exists").len();
        assert_eq!(len, 2 * BLOCK_BYTES, "a header block and a data block");
        for offset in 0..len {
            for xor in [0x01, 0x80, 0xff] {
                storage.corrupt(&name, offset, xor);
                let error = load_error(&storage);
                assert!(error.is_corruption(), "offset {offset}: {error}");
                let SnapshotError::Corrupt { file, .. } = &error else {
                    unreachable!("is_corruption")
                };
                assert_eq!(file, "mem:snapshot-00000000000000000042.snap");
                storage.corrupt(&name, offset, xor);
            }
        }
        assert_eq!(loaded_items(&storage).1, small_items());
    }

    #[test]
    fn a_damaged_chunk_is_reported_at_its_offset() {
        let storage = MemStorage::new();
        write_items(storage.clone(), 42, &small_items());
        let name = snapshot_name(LogIndex(42));
        storage.corrupt(&name, HEADER_BLOCK_BYTES + 20, 0x10);
        let error = load_error(&storage);
        assert!(
            matches!(error, SnapshotError::Corrupt { offset, reason: Damage::Checksum { .. }, .. } if offset == HEADER_BLOCK_BYTES as u64 + 4),
            "{error}"
        );
        assert!(error.to_string().contains("at byte 4100"), "{error}");
    }

    /// A copy of `name`'s bytes, cut to `len`, as the only file of a new storage.
    fn truncated_copy(storage: &MemStorage, name: &str, len: usize) -> MemStorage {
        let bytes = storage.contents(name).expect("the snapshot exists");
        let copy = MemStorage::new();
        run_ready(async {
            let mut file = copy.create(name).await?;
            file.write_at(&bytes[..len], 0).await
        })
        .expect("memory writes succeed");
        copy
    }

    #[test]
    fn truncation_anywhere_is_detected() {
        let storage = MemStorage::new();
        let items = binary_items(12_000, 100);
        let written = write_items(storage.clone(), 42, &items);
        assert!(
            written.bytes > SNAPSHOT_CHUNK_BYTES as u64,
            "more than one chunk"
        );
        let name = snapshot_name(LogIndex(42));
        let len = written.bytes as usize;
        let cuts = (0..len).step_by(BLOCK_BYTES).chain([
            1,
            HEADER_BLOCK_BYTES + 1,
            len - 1,
            len - TRAILER_BYTES,
        ]);
        for cut in cuts {
            let error = load_error(&truncated_copy(&storage, &name, cut));
            assert!(error.is_corruption(), "cut at {cut}: {error}");
        }
    }

    #[test]
    fn every_truncation_of_a_small_snapshot_is_refused() {
        let storage = MemStorage::new();
        let written = write_items(storage.clone(), 42, &small_items());
        let name = snapshot_name(LogIndex(42));
        for cut in 0..written.bytes as usize {
            let error = load_error(&truncated_copy(&storage, &name, cut));
            assert!(error.is_corruption(), "cut at {cut}: {error}");
        }
    }

    /// The checks behind the checksums hold against a writer that forges
    /// them: a record that runs past its chunk, and a count that is not the
    /// records', are refused as such; an untouched file forges to itself.
    #[test]
    fn forged_checksums_do_not_pass_a_broken_structure() {
        let storage = MemStorage::new();
        write_items(storage.clone(), 42, &small_items());
        let name = snapshot_name(LogIndex(42));
        let bytes = storage.contents(&name).expect("the snapshot exists");
        let mut forged = bytes.clone();
        forge_checksums(&mut forged);
        assert_eq!(forged, bytes, "a sound file's checksums already hold");
        let damaged = |offset: usize, xor: u8| {
            let mut damaged = bytes.clone();
            damaged[offset] ^= xor;
            forge_checksums(&mut damaged);
            let copy = MemStorage::new();
            run_ready(async {
                let mut file = copy.create(&name).await?;
                file.write_at(&damaged, 0).await
            })
            .expect("memory writes succeed");
            load_error(&copy)
        };
        // The first record's key length, just after the chunk header.
        let error = damaged(HEADER_BLOCK_BYTES + CHUNK_HEADER_BYTES, 0x40);
        assert!(
            matches!(
                error,
                SnapshotError::Corrupt {
                    reason: Damage::RecordOverrun,
                    ..
                }
            ),
            "{error}"
        );
        let trailer_start = bytes.len() - TRAILER_BYTES;
        let error = damaged(trailer_start, 0x01);
        assert!(
            matches!(
                error,
                SnapshotError::Corrupt {
                    reason: Damage::RecordCount { .. },
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn a_file_renamed_to_another_index_is_refused() {
        let storage = MemStorage::new();
        write_items(storage.clone(), 42, &small_items());
        run_ready(storage.rename(&snapshot_name(LogIndex(42)), &snapshot_name(LogIndex(43))))
            .expect("memory renames succeed");
        let error = load_error(&storage);
        assert!(
            matches!(
                error,
                SnapshotError::Corrupt {
                    reason: Damage::NameMismatch {
                        in_name: 43,
                        in_header: 42
                    },
                    ..
                }
            ),
            "{error}"
        );
    }

    fn snapshot_files(storage: &MemStorage) -> Vec<String> {
        storage.list().expect("memory lists")
    }

    #[test]
    fn a_crash_before_finish_leaves_the_previous_snapshot_newest() {
        for seed in 0..16 {
            let storage = MemStorage::new();
            let old = small_items();
            write_items(storage.clone(), 10, &old);
            run_ready(async {
                let mut writer = SnapshotWriter::create(storage.clone(), meta(20)).await?;
                for (key, value, expire) in binary_items(20_000, 100) {
                    writer.push(&key, &value, expire);
                }
                writer.flush().await
            })
            .expect("the new snapshot is half written");
            let tmp_entry_durable = seed % 2 == 0;
            if tmp_entry_durable {
                run_ready(storage.sync_dir()).expect("memory syncs succeed");
            }
            let report = storage.crash(seed);
            if tmp_entry_durable {
                assert!(
                    report.torn_sectors > 0,
                    "seed {seed}: the unsynced .tmp is torn"
                );
            }
            let (loaded_meta, loaded) = loaded_items(&storage);
            assert_eq!(loaded_meta, meta(10), "seed {seed}");
            assert_eq!(loaded, old);
        }
    }

    #[test]
    fn a_failed_sync_in_finish_leaves_the_previous_snapshot_newest() {
        let storage = MemStorage::new();
        write_items(storage.clone(), 10, &small_items());
        storage.set_faults(Faults {
            fail_sync_after: Some(0),
            fail_write_after: None,
        });
        let result = run_ready(async {
            let mut writer = SnapshotWriter::create(storage.clone(), meta(20)).await?;
            writer.push(b"new", b"value", None);
            writer.finish().await
        });
        let error = result.expect_err("the sync fails");
        assert!(!error.is_corruption());
        assert!(
            error
                .to_string()
                .contains("snapshot-00000000000000000020.snap.tmp"),
            "{error}"
        );
        storage.crash(1);
        assert_eq!(loaded_items(&storage).0, meta(10));
    }

    #[test]
    fn a_finished_snapshot_survives_a_crash_and_replaces_the_older_ones() {
        let storage = MemStorage::new();
        write_items(storage.clone(), 10, &small_items());
        run_ready(async {
            let mut stale = SnapshotWriter::create(storage.clone(), meta(15)).await?;
            stale.push(b"k", b"v", None);
            stale.flush().await
        })
        .expect("a stale .tmp is left");
        let items = binary_items(100, 10);
        write_items(storage.clone(), 20, &items);
        storage.crash(3);
        assert_eq!(snapshot_files(&storage), [snapshot_name(LogIndex(20))]);
        assert_eq!(loaded_items(&storage), (meta(20), items));
    }

    #[test]
    fn load_ignores_tmp_files_and_create_replaces_its_own() {
        let storage = MemStorage::new();
        assert!(load_newest(&storage)
            .expect("an empty directory loads")
            .is_none());
        write_items(storage.clone(), 10, &small_items());
        let half_written = || {
            run_ready(async {
                let mut writer = SnapshotWriter::create(storage.clone(), meta(20)).await?;
                writer.push(b"k", b"v", None);
                writer.flush().await
            })
        };
        half_written().expect("a .tmp is left");
        let tmp = format!("{}.tmp", snapshot_name(LogIndex(20)));
        assert!(snapshot_files(&storage).contains(&tmp));
        assert_eq!(loaded_items(&storage).0, meta(10));
        half_written().expect("create removes the stale .tmp of its own name");
        let items = small_items();
        write_items(storage.clone(), 20, &items);
        assert_eq!(loaded_items(&storage), (meta(20), items));
    }

    #[test]
    fn names_are_parsed_strictly() {
        assert_eq!(
            name_index("snapshot-00000000000000000042.snap", SNAPSHOT_SUFFIX),
            Some(42)
        );
        assert_eq!(
            name_index("snapshot-00000000000000000042.snap.tmp", SNAPSHOT_SUFFIX),
            None
        );
        assert_eq!(
            name_index("snapshot-00000000000000000042.snap.tmp", TMP_SUFFIX),
            Some(42)
        );
        assert_eq!(name_index("snapshot-42.snap", SNAPSHOT_SUFFIX), None);
        assert_eq!(
            name_index("snapshot-+0000000000000000042.snap", SNAPSHOT_SUFFIX),
            None
        );
        assert_eq!(
            name_index("00000000000000000001.wal", SNAPSHOT_SUFFIX),
            None
        );
    }
}
