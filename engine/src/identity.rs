//! The data directory's identity: which cluster and node a directory belongs
//! to and how many shards it was made with, in the file [`IDENTITY_FILE`] at
//! its root. It is read (or written) once at start-up, before any executor
//! runs, so this module uses plain `std::fs`.
//!
//! # Format (version 1)
//! 48 bytes, integers little-endian and fixed-width:
//!
//! ```text
//! offset bytes field
//!  0     4     magic b"KLID"
//!  4     4     format version (IDENTITY_FORMAT_VERSION)
//!  8     16    cluster id
//! 24     8     node id
//! 32     4     shard count (never 0)
//! 36     8     created, unix milliseconds
//! 44     4     crc32 of bytes 0..44
//! ```
//!
//! Version changes: 1 is the first.
//!
//! # Decisions at start-up
//! | directory | identity file            | other entries          | decision                          |
//! |-----------|--------------------------|------------------------|-----------------------------------|
//! | absent    | -                        | -                      | create it, write the identity     |
//! | present   | absent                   | none, or only the tmp  | remove the tmp, write the identity|
//! | present   | absent                   | anything else          | refuse: not a Keel data directory |
//! | present   | unreadable               | any                    | IO error, never re-initialise     |
//! | present   | bad magic/version/length/checksum | any           | corrupt                           |
//! | present   | valid, other cluster than expected | any          | foreign                           |
//! | present   | valid                    | any                    | use it                            |
//!
//! A directory with files but no identity is never taken for an empty one:
//! it may be another program's, or a Keel directory whose identity was lost.
//!
//! # Assumptions about the disk
//! A rename is atomic, and it and a new directory entry are durable once the
//! directory holding them is fsynced. So the identity is written to
//! [`IDENTITY_TMP_FILE`], fsynced, renamed, and the directory fsynced, as is
//! the parent of each directory created: a crash leaves no identity (and at
//! most the tmp file, which the next start removes) or the whole one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The identity's file name, at the root of the data directory.
pub const IDENTITY_FILE: &str = "KEEL_IDENTITY";
/// Where the identity is written before its rename.
pub const IDENTITY_TMP_FILE: &str = "KEEL_IDENTITY.tmp";
/// The format written, and the only one read.
pub const IDENTITY_FORMAT_VERSION: u32 = 1;

const IDENTITY_MAGIC: [u8; 4] = *b"KLID";
const IDENTITY_BYTES: usize = 48;
/// The fields the checksum covers.
const IDENTITY_FIELDS_BYTES: usize = 44;
/// Magic and version: what must be read to know the layout of the rest.
const IDENTITY_PREAMBLE_BYTES: usize = 8;

/// Who a data directory belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub cluster_id: u128,
    pub node_id: u64,
    pub shard_count: u32,
    pub created_unix_ms: u64,
}

impl Identity {
    /// The identity a new data directory gets.
    pub fn fresh(
        cluster_id: u128,
        node_id: u64,
        shard_count: u32,
        created_unix_ms: u64,
    ) -> Identity {
        assert!(shard_count > 0, "a node has at least one shard");
        Identity {
            cluster_id,
            node_id,
            shard_count,
            created_unix_ms,
        }
    }

    fn encode(&self) -> [u8; IDENTITY_BYTES] {
        let mut bytes = [0; IDENTITY_BYTES];
        bytes[0..4].copy_from_slice(&IDENTITY_MAGIC);
        bytes[4..8].copy_from_slice(&IDENTITY_FORMAT_VERSION.to_le_bytes());
        bytes[8..24].copy_from_slice(&self.cluster_id.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.node_id.to_le_bytes());
        bytes[32..36].copy_from_slice(&self.shard_count.to_le_bytes());
        bytes[36..44].copy_from_slice(&self.created_unix_ms.to_le_bytes());
        let checksum = crc32fast::hash(&bytes[..IDENTITY_FIELDS_BYTES]);
        bytes[IDENTITY_FIELDS_BYTES..].copy_from_slice(&checksum.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Identity, IdentityDamage> {
        let len_bytes = bytes.len() as u64;
        let preamble = bytes
            .get(..IDENTITY_PREAMBLE_BYTES)
            .ok_or(IdentityDamage::Length { len_bytes })?;
        let magic: [u8; 4] = preamble[0..4].try_into().expect("4 bytes");
        if magic != IDENTITY_MAGIC {
            return Err(IdentityDamage::Magic { found: magic });
        }
        let version = u32::from_le_bytes(preamble[4..8].try_into().expect("4 bytes"));
        if version != IDENTITY_FORMAT_VERSION {
            return Err(IdentityDamage::Version { found: version });
        }
        let bytes: &[u8; IDENTITY_BYTES] = bytes
            .try_into()
            .map_err(|_| IdentityDamage::Length { len_bytes })?;
        let stored = u32::from_le_bytes(bytes[44..48].try_into().expect("4 bytes"));
        let actual = crc32fast::hash(&bytes[..IDENTITY_FIELDS_BYTES]);
        if stored != actual {
            return Err(IdentityDamage::Checksum { stored, actual });
        }
        let shard_count = u32::from_le_bytes(bytes[32..36].try_into().expect("4 bytes"));
        if shard_count == 0 {
            return Err(IdentityDamage::NoShards);
        }
        Ok(Identity {
            cluster_id: u128::from_le_bytes(bytes[8..24].try_into().expect("16 bytes")),
            node_id: u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes")),
            shard_count,
            created_unix_ms: u64::from_le_bytes(bytes[36..44].try_into().expect("8 bytes")),
        })
    }
}

/// What is wrong with an identity file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityDamage {
    #[error("it is {len_bytes} bytes, not {IDENTITY_BYTES}")]
    Length { len_bytes: u64 },
    #[error("bad magic {found:?}")]
    Magic { found: [u8; 4] },
    #[error("unknown format version {found} (this build reads {IDENTITY_FORMAT_VERSION})")]
    Version { found: u32 },
    #[error("checksum {stored:#010x} stored, {actual:#010x} computed")]
    Checksum { stored: u32, actual: u32 },
    #[error("it records zero shards")]
    NoShards,
}

/// Why a data directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("not a Keel data directory: {dir} holds other files (such as {example:?}) and no {IDENTITY_FILE}")]
    NotKeelDir { dir: PathBuf, example: String },
    #[error("{file} is corrupt: {reason}")]
    Corrupt {
        file: PathBuf,
        reason: IdentityDamage,
    },
    #[error("{file} belongs to cluster {found:032x}, not the expected cluster {expected:032x}")]
    Foreign {
        file: PathBuf,
        expected: u128,
        found: u128,
    },
    #[error("{file} is locked: another keel process uses this data directory")]
    InUse { file: PathBuf },
}

impl IdentityError {
    /// The file system failed or another process holds the directory, as
    /// opposed to the directory holding the wrong thing.
    pub fn is_io(&self) -> bool {
        matches!(self, IdentityError::Io { .. } | IdentityError::InUse { .. })
    }
}

/// An exclusive lock on a data directory, held by one `keel serve` until it
/// drops this: two processes appending to the same WAL would destroy it.
#[derive(Debug)]
pub struct DirLock {
    _identity: File,
}

/// Locks the data directory `dir` (an advisory `flock` on its identity file,
/// which the kernel releases when the process dies, SIGKILL included).
pub fn lock_dir(dir: &Path) -> Result<DirLock, IdentityError> {
    let path = dir.join(IDENTITY_FILE);
    let file = File::open(&path).map_err(io_error("open", &path))?;
    // SAFETY: flock reads no memory of ours; the descriptor is open for as
    // long as `file` lives, which outlives the call.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked == 0 {
        return Ok(DirLock { _identity: file });
    }
    let source = io::Error::last_os_error();
    if source.kind() == io::ErrorKind::WouldBlock {
        return Err(IdentityError::InUse { file: path });
    }
    Err(IdentityError::Io {
        op: "lock",
        path,
        source,
    })
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> IdentityError + 'a {
    move |source| IdentityError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Opens the data directory `dir`, or makes it one with the identity `fresh`
/// (see the decision table in the module doc). Returns the identity and
/// whether it was created now.
pub fn open_or_init_dir(
    dir: &Path,
    fresh: Identity,
    expected_cluster: Option<u128>,
) -> Result<(Identity, bool), IdentityError> {
    assert!(
        expected_cluster.is_none_or(|expected| expected == fresh.cluster_id),
        "a directory made for an expected cluster is made with its id"
    );
    let names = match fs::read_dir(dir) {
        Ok(entries) => entry_names(dir, entries)?,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            create_dirs(dir)?;
            write_identity(dir, &fresh)?;
            return Ok((fresh, true));
        }
        Err(error) => return Err(io_error("read the directory", dir)(error)),
    };
    if names.iter().any(|name| name == IDENTITY_FILE) {
        return read_identity(dir, expected_cluster).map(|identity| (identity, false));
    }
    if let Some(example) = names.iter().find(|name| *name != IDENTITY_TMP_FILE) {
        return Err(IdentityError::NotKeelDir {
            dir: dir.to_path_buf(),
            example: example.clone(),
        });
    }
    if !names.is_empty() {
        let tmp = dir.join(IDENTITY_TMP_FILE);
        fs::remove_file(&tmp).map_err(io_error("remove the leftover", &tmp))?;
    }
    write_identity(dir, &fresh)?;
    Ok((fresh, true))
}

fn entry_names(dir: &Path, entries: fs::ReadDir) -> Result<Vec<String>, IdentityError> {
    entries
        .map(|entry| {
            entry
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .map_err(io_error("read the directory", dir))
        })
        .collect()
}

fn read_identity(dir: &Path, expected_cluster: Option<u128>) -> Result<Identity, IdentityError> {
    let file = dir.join(IDENTITY_FILE);
    let bytes = fs::read(&file).map_err(io_error("read", &file))?;
    let identity = match Identity::decode(&bytes) {
        Ok(identity) => identity,
        Err(reason) => return Err(IdentityError::Corrupt { file, reason }),
    };
    match expected_cluster {
        Some(expected) if expected != identity.cluster_id => Err(IdentityError::Foreign {
            file,
            expected,
            found: identity.cluster_id,
        }),
        _ => Ok(identity),
    }
}

/// Creates `dir` and its missing ancestors, and makes their entries durable.
fn create_dirs(dir: &Path) -> Result<(), IdentityError> {
    let mut missing = Vec::new();
    for ancestor in dir.ancestors().filter(|path| !path.as_os_str().is_empty()) {
        match fs::metadata(ancestor) {
            Ok(_) => break,
            Err(error) if error.kind() == io::ErrorKind::NotFound => missing.push(ancestor),
            Err(error) => return Err(io_error("inspect", ancestor)(error)),
        }
    }
    fs::create_dir_all(dir).map_err(io_error("create the directory", dir))?;
    for created in missing {
        let parent = created
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(parent)?;
    }
    Ok(())
}

fn write_identity(dir: &Path, identity: &Identity) -> Result<(), IdentityError> {
    let tmp = dir.join(IDENTITY_TMP_FILE);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io_error("create", &tmp))?;
    file.write_all(&identity.encode())
        .map_err(io_error("write", &tmp))?;
    file.sync_all().map_err(io_error("sync", &tmp))?;
    let target = dir.join(IDENTITY_FILE);
    fs::rename(&tmp, &target).map_err(io_error("rename", &tmp))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), IdentityError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error("sync the directory", dir))
}

#[cfg(test)]
mod lock_tests {
    use super::*;

    #[test]
    fn a_locked_directory_is_refused_until_the_lock_is_dropped() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        open_or_init_dir(&dir, Identity::fresh(1, 2, 1, 3), None).unwrap();
        let held = lock_dir(&dir).unwrap();
        let error = lock_dir(&dir).unwrap_err();
        assert!(matches!(error, IdentityError::InUse { .. }), "{error}");
        assert!(error.is_io());
        drop(held);
        lock_dir(&dir).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: u128 = 0x0123_4567_89ab_cdef_0011_2233_4455_6677;

    fn fresh() -> Identity {
        Identity::fresh(CLUSTER, 42, 4, 1_700_000_000_000)
    }

    fn other() -> Identity {
        Identity::fresh(7, 8, 9, 10)
    }

    fn identity_bytes(dir: &Path) -> Vec<u8> {
        fs::read(dir.join(IDENTITY_FILE)).expect("the identity exists")
    }

    fn corrupt_error(dir: &Path) -> IdentityDamage {
        match open_or_init_dir(dir, other(), None) {
            Err(IdentityError::Corrupt { file, reason }) => {
                assert_eq!(file, dir.join(IDENTITY_FILE));
                reason
            }
            result => panic!("expected a corrupt identity, got {result:?}"),
        }
    }

    #[test]
    fn an_absent_directory_is_created_with_its_parents_and_then_kept() {
        let root = tempfile::tempdir().expect("a temporary directory");
        let dir = root.path().join("a/b/data");
        assert_eq!(
            open_or_init_dir(&dir, fresh(), None).expect("created"),
            (fresh(), true)
        );
        assert_eq!(identity_bytes(&dir).len(), IDENTITY_BYTES);
        assert_eq!(
            open_or_init_dir(&dir, other(), None).expect("reopened"),
            (fresh(), false),
            "an existing identity wins over the fresh one"
        );
    }

    #[test]
    fn an_empty_directory_is_initialised() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        assert_eq!(
            open_or_init_dir(dir.path(), fresh(), None).expect("created"),
            (fresh(), true)
        );
        assert_eq!(Identity::decode(&identity_bytes(dir.path())), Ok(fresh()));
    }

    #[test]
    fn a_directory_with_other_files_and_no_identity_is_refused() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        fs::write(dir.path().join("notes.txt"), b"mine").expect("a file is written");
        fs::write(dir.path().join(IDENTITY_TMP_FILE), b"half").expect("a file is written");
        let error = open_or_init_dir(dir.path(), fresh(), None).expect_err("refused");
        assert!(
            matches!(&error, IdentityError::NotKeelDir { example, .. } if example == "notes.txt"),
            "{error}"
        );
        assert!(
            error.to_string().starts_with("not a Keel data directory: "),
            "{error}"
        );
        assert!(!error.is_io());
        assert!(
            !dir.path().join(IDENTITY_FILE).exists(),
            "nothing is written"
        );
        assert_eq!(
            fs::read(dir.path().join(IDENTITY_TMP_FILE)).expect("kept"),
            b"half"
        );
    }

    #[test]
    fn a_leftover_tmp_in_an_otherwise_empty_directory_is_replaced() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        fs::write(dir.path().join(IDENTITY_TMP_FILE), b"torn").expect("a file is written");
        assert_eq!(
            open_or_init_dir(dir.path(), fresh(), None).expect("created"),
            (fresh(), true)
        );
        assert!(!dir.path().join(IDENTITY_TMP_FILE).exists());
        assert_eq!(Identity::decode(&identity_bytes(dir.path())), Ok(fresh()));
    }

    #[test]
    fn an_unreadable_identity_is_an_io_error_and_is_left_alone() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        fs::create_dir(dir.path().join(IDENTITY_FILE)).expect("a directory in the way");
        let error = open_or_init_dir(dir.path(), fresh(), None).expect_err("unreadable");
        assert!(error.is_io(), "{error}");
        assert!(error.to_string().contains(IDENTITY_FILE), "{error}");
        assert!(
            dir.path().join(IDENTITY_FILE).is_dir(),
            "never re-initialised"
        );
    }

    #[test]
    fn a_data_path_that_is_a_file_is_an_io_error() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("data");
        fs::write(&path, b"not a directory").expect("a file is written");
        assert!(open_or_init_dir(&path, fresh(), None)
            .expect_err("a file")
            .is_io());
    }

    #[test]
    fn every_flipped_byte_is_corruption() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        open_or_init_dir(dir.path(), fresh(), None).expect("created");
        let good = identity_bytes(dir.path());
        for offset in 0..good.len() {
            let mut bad = good.clone();
            bad[offset] ^= 0x04;
            fs::write(dir.path().join(IDENTITY_FILE), &bad).expect("rewritten");
            corrupt_error(dir.path());
        }
    }

    #[test]
    fn bad_magic_unknown_version_and_wrong_length_are_named() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join(IDENTITY_FILE);
        let good = fresh().encode();
        let mut magic = good;
        magic[0..4].copy_from_slice(b"KLSN");
        fs::write(&file, magic).expect("rewritten");
        assert_eq!(
            corrupt_error(dir.path()),
            IdentityDamage::Magic { found: *b"KLSN" }
        );
        let mut version = good;
        version[4..8].copy_from_slice(&2u32.to_le_bytes());
        fs::write(&file, version).expect("rewritten");
        assert_eq!(
            corrupt_error(dir.path()),
            IdentityDamage::Version { found: 2 }
        );
        fs::write(&file, &good[..40]).expect("rewritten");
        assert_eq!(
            corrupt_error(dir.path()),
            IdentityDamage::Length { len_bytes: 40 }
        );
        fs::write(&file, b"").expect("rewritten");
        assert_eq!(
            corrupt_error(dir.path()),
            IdentityDamage::Length { len_bytes: 0 }
        );
    }

    #[test]
    fn another_clusters_directory_is_foreign() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        open_or_init_dir(dir.path(), fresh(), Some(CLUSTER)).expect("created");
        assert_eq!(
            open_or_init_dir(dir.path(), fresh(), Some(CLUSTER)).expect("same cluster"),
            (fresh(), false)
        );
        let found = open_or_init_dir(dir.path(), other(), None)
            .map(|(identity, _)| identity.cluster_id)
            .expect("no expectation, no check");
        assert_eq!(found, CLUSTER);
        let error = open_or_init_dir(dir.path(), other(), Some(7)).expect_err("foreign");
        assert!(
            matches!(
                error,
                IdentityError::Foreign {
                    expected: 7,
                    found: CLUSTER,
                    ..
                }
            ),
            "{error}"
        );
        let message = error.to_string();
        assert!(
            message.contains("0123456789abcdef0011223344556677"),
            "{message}"
        );
        assert!(
            message.contains("00000000000000000000000000000007"),
            "{message}"
        );
    }
}
