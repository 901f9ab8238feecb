//! The durable term and vote of one shard's consensus group: a file of its
//! own in the shard's directory, replaced atomically.
//!
//! # Byte layout (version 1, all integers little-endian)
//!
//! ```text
//! offset size field       meaning
//!      0    4 magic       b"KLHS"
//!      4    4 crc         CRC32 (crc32fast) of bytes 8..32
//!      8    1 version     HARD_STATE_VERSION
//!      9    1 has_vote    0: no vote in this term, 1: voted_for holds it
//!     10    6 reserved    zero
//!     16    8 term        the current term
//!     24    8 voted_for   the node voted for in `term` (0 when has_vote is 0)
//!     32 4064 padding     zero, up to one block (HARD_STATE_FILE_BYTES)
//! ```
//!
//! # Why a file, not a WAL frame
//! The term and vote change once per election, not per write, and must be
//! readable before the log is: a record in a file of its own is read with one
//! map and never scanned for, and compacting the WAL can never remove it. It
//! is written as every complete file here is (the snapshot, the identity):
//! under a temporary name, synced, renamed over the old one, the directory
//! synced. A crash leaves either the old record or the new one, whole; the
//! temporary file a crash leaves is removed by the next write. The driver
//! writes it before the entries of the same `Persist` and awaits it, so it
//! is durable before any message sent after that `Persist` is durable.
//!
//! # Version changes
//! - 1: first version.

use keel_replication::{HardState, NodeId, Term};
use keel_wal::{Storage, StorageFile};

/// `b"KLHS"` read as a little-endian u32.
pub const HARD_STATE_MAGIC: u32 = u32::from_le_bytes(*b"KLHS");
pub const HARD_STATE_VERSION: u8 = 1;
/// The file's size: one block, so a direct-IO write of it is aligned.
pub const HARD_STATE_FILE_BYTES: usize = 4096;
/// The bytes that hold the record; the rest is zero padding.
const RECORD_BYTES: usize = 32;
pub const HARD_STATE_FILE: &str = "hardstate";
const HARD_STATE_TEMP_FILE: &str = "hardstate.tmp";

/// Why the hard-state file cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HardStateError {
    #[error("cannot {op} {file}: {source}")]
    Io {
        op: &'static str,
        file: String,
        source: std::io::Error,
    },
    #[error("{file} is {len_bytes} bytes, not {HARD_STATE_FILE_BYTES}")]
    Length { file: String, len_bytes: usize },
    #[error("{file}: bad magic {found:#010x}")]
    Magic { file: String, found: u32 },
    #[error("{file}: checksum {actual:#010x}, expected {expected:#010x}")]
    Checksum {
        file: String,
        expected: u32,
        actual: u32,
    },
    #[error("{file}: version {found}, this build reads {HARD_STATE_VERSION}")]
    Version { file: String, found: u8 },
    #[error("{file}: malformed record (vote flag {has_vote}, reserved bytes or padding not zero)")]
    Malformed { file: String, has_vote: u8 },
}

impl HardStateError {
    /// Whether the file is there but its bytes are wrong (rather than
    /// unreachable, or of another version).
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            HardStateError::Checksum { .. }
                | HardStateError::Magic { .. }
                | HardStateError::Length { .. }
                | HardStateError::Malformed { .. }
        )
    }

    fn io<S: Storage>(
        op: &'static str,
        storage: &S,
        name: &str,
    ) -> impl FnOnce(std::io::Error) -> HardStateError {
        let file = storage.describe(name);
        move |source| HardStateError::Io { op, file, source }
    }
}

/// The file's bytes for `hard`.
pub fn encode(hard: HardState) -> Vec<u8> {
    let mut bytes = vec![0; HARD_STATE_FILE_BYTES];
    bytes[0..4].copy_from_slice(&HARD_STATE_MAGIC.to_le_bytes());
    bytes[8] = HARD_STATE_VERSION;
    bytes[9] = u8::from(hard.voted_for.is_some());
    bytes[16..24].copy_from_slice(&hard.term.0.to_le_bytes());
    let vote = hard.voted_for.map_or(0, |node| node.0);
    bytes[24..32].copy_from_slice(&vote.to_le_bytes());
    let crc = crc32fast::hash(&bytes[8..RECORD_BYTES]);
    bytes[4..8].copy_from_slice(&crc.to_le_bytes());
    bytes
}

fn word(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// The hard state `bytes` (the file named `file`) hold.
pub fn decode(bytes: &[u8], file: &str) -> Result<HardState, HardStateError> {
    let file = file.to_owned();
    if bytes.len() != HARD_STATE_FILE_BYTES {
        let len_bytes = bytes.len();
        return Err(HardStateError::Length { file, len_bytes });
    }
    let magic = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    if magic != HARD_STATE_MAGIC {
        return Err(HardStateError::Magic { file, found: magic });
    }
    let expected = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let actual = crc32fast::hash(&bytes[8..RECORD_BYTES]);
    if expected != actual {
        return Err(HardStateError::Checksum {
            file,
            expected,
            actual,
        });
    }
    if bytes[8] != HARD_STATE_VERSION {
        return Err(HardStateError::Version {
            file,
            found: bytes[8],
        });
    }
    let has_vote = bytes[9];
    let vote = word(bytes, 24);
    let zeros = bytes[10..16]
        .iter()
        .chain(&bytes[RECORD_BYTES..])
        .all(|byte| *byte == 0);
    let voted_for = match (has_vote, vote) {
        (1, node) => Some(NodeId(node)),
        (0, 0) => None,
        _ => return Err(HardStateError::Malformed { file, has_vote }),
    };
    if !zeros {
        return Err(HardStateError::Malformed { file, has_vote });
    }
    Ok(HardState {
        term: Term(word(bytes, 16)),
        voted_for,
    })
}

/// The hard state in `storage`: the default (term 0, no vote) if the group
/// never wrote one.
pub fn load<S: Storage>(storage: &S) -> Result<HardState, HardStateError> {
    let names = storage
        .list()
        .map_err(HardStateError::io("list", storage, ""))?;
    if !names.iter().any(|name| name == HARD_STATE_FILE) {
        return Ok(HardState::default());
    }
    let map = storage.map(HARD_STATE_FILE).map_err(HardStateError::io(
        "map",
        storage,
        HARD_STATE_FILE,
    ))?;
    decode(&map, &storage.describe(HARD_STATE_FILE))
}

/// Replaces the hard state in `storage` with `hard`, durably (temporary
/// file, sync, rename, directory sync). An error leaves the old record or
/// the new one; the caller must stop the shard (no retry after a failed
/// sync: the kernel may have dropped the pages).
pub async fn store<S: Storage>(storage: &S, hard: HardState) -> Result<(), HardStateError> {
    let temp = HARD_STATE_TEMP_FILE;
    match storage.remove(temp).await {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(HardStateError::io("remove the stale", storage, temp)(error))
        }
        _ => {}
    }
    let mut file = storage
        .create(temp)
        .await
        .map_err(HardStateError::io("create", storage, temp))?;
    file.write_at(&encode(hard), 0)
        .await
        .map_err(HardStateError::io("write", storage, temp))?;
    file.sync()
        .await
        .map_err(HardStateError::io("sync", storage, temp))?;
    storage
        .rename(temp, HARD_STATE_FILE)
        .await
        .map_err(HardStateError::io("rename", storage, temp))?;
    storage
        .sync_dir()
        .await
        .map_err(HardStateError::io("sync", storage, ""))
}

#[cfg(test)]
mod tests {
    use keel_wal::memory::CrashMode;
    use keel_wal::{run_ready, MemStorage};

    use super::*;

    fn voted(term: u64, node: u64) -> HardState {
        HardState {
            term: Term(term),
            voted_for: Some(NodeId(node)),
        }
    }

    #[test]
    fn a_record_round_trips_and_its_layout_is_as_documented() {
        for hard in [HardState::default(), voted(7, 3), voted(u64::MAX, 0)] {
            assert_eq!(decode(&encode(hard), "f").expect("decodes"), hard);
        }
        let bytes = encode(voted(5, 2));
        assert_eq!(&bytes[0..4], b"KLHS");
        assert_eq!((bytes[8], bytes[9]), (HARD_STATE_VERSION, 1));
        assert_eq!(word(&bytes, 16), 5);
        assert_eq!(word(&bytes, 24), 2);
    }

    #[test]
    fn every_flipped_bit_of_the_record_is_refused() {
        let good = encode(voted(9, 1));
        for bit in 0..RECORD_BYTES * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&bad, "f").is_err(), "bit {bit} flipped was accepted");
        }
        let mut padded = good.clone();
        padded[HARD_STATE_FILE_BYTES - 1] = 1;
        assert!(matches!(
            decode(&padded, "f"),
            Err(HardStateError::Malformed { .. })
        ));
        assert!(matches!(
            decode(&good[..100], "f"),
            Err(HardStateError::Length { .. })
        ));
    }

    #[test]
    fn a_stored_record_survives_power_loss_and_a_crash_mid_write_keeps_the_old_one() {
        let disk = MemStorage::new();
        assert_eq!(
            load(&disk).expect("loads"),
            HardState::default(),
            "none yet"
        );
        run_ready(store(&disk, voted(1, 1))).expect("stored");
        disk.crash(0);
        assert_eq!(load(&disk).expect("loads"), voted(1, 1));
        // The rename of the next record never becomes durable: the old one
        // stays, and the next store removes the temporary file left behind.
        disk.fail_next_sync();
        assert!(run_ready(store(&disk, voted(2, 1))).is_err());
        disk.crash_with(3, CrashMode::Drop);
        assert_eq!(load(&disk).expect("loads"), voted(1, 1));
        run_ready(store(&disk, voted(3, 1))).expect("stored over the leftovers");
        disk.crash(1);
        assert_eq!(load(&disk).expect("loads"), voted(3, 1));
    }
}
