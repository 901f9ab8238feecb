//! The small storage interface the WAL writes through, and its std implementation.
//!
//! The WAL never calls the file system directly: a [`Storage`] is one directory,
//! and its files are [`StorageFile`]s. The methods that do IO on the write path
//! are `async` so that an io_uring implementation (glommio, in the server) and a
//! simulated one (in the simulator) fit the same writer; [`StdStorage`] and
//! [`MemStorage`](crate::MemStorage) complete every future at once, and
//! [`run_ready`] drives those without an executor.
//!
//! # Assumptions about the disk
//! - A write that `sync` returned for is durable, and so is a directory entry that
//!   `sync_dir` returned for, and so is a `write_durable_at` that returned.
//!   Nothing else is: a crash may keep, drop or tear (at 512-byte sectors) any
//!   write made since the last sync.
//! - A failed `sync` leaves the file in an unknown state: the kernel may already
//!   have dropped the dirty pages, so the WAL never retries it.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io;
use std::ops::Deref;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use crate::segment::BLOCK_BYTES;

/// One directory of files.
#[allow(async_fn_in_trait)]
pub trait Storage {
    type File: StorageFile;
    /// A read-only view of a whole file.
    type Map: Deref<Target = [u8]>;

    /// How to name `file` in a message to a person (for example its full path).
    fn describe(&self, file: &str) -> String;
    /// The names of the files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Maps a whole file for reading.
    fn map(&self, name: &str) -> io::Result<Self::Map>;
    /// Creates a new, empty file; fails if it exists.
    async fn create(&self, name: &str) -> io::Result<Self::File>;
    /// Opens an existing file for reading and writing.
    async fn open(&self, name: &str) -> io::Result<Self::File>;
    async fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    async fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes creations, renames and removals in the directory durable.
    async fn sync_dir(&self) -> io::Result<()>;
}

/// One open file.
#[allow(async_fn_in_trait)]
pub trait StorageFile {
    /// Fills `buf` from `offset`; fails if the file is shorter.
    async fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, a multiple of the block size, as is `buf`'s length.
    async fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's data durable (fdatasync).
    async fn sync(&mut self) -> io::Result<()>;
    /// Writes `buf` at `offset` as `write_at` does and makes the file's data
    /// durable as `sync` does, before it returns. An implementation may do
    /// both in one step (an `O_DSYNC` write: one round trip to the disk, not
    /// two). A failure leaves the file as a failed `sync` does: unknown.
    async fn write_durable_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_at(buf, offset).await?;
        self.sync().await
    }
    /// Extends an empty file to `len` zero bytes, with its blocks allocated and
    /// written, so that later writes into it need no allocation.
    async fn preallocate(&mut self, len: u64) -> io::Result<()>;
    fn size_bytes(&self) -> io::Result<u64>;
}

/// A storage operation that failed, naming the operation and the file.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {file}: {source}")]
pub struct IoError {
    pub op: &'static str,
    pub file: String,
    #[source]
    pub source: io::Error,
}

/// Wraps an `io::Error` from `op` on `name` in `storage`, for `map_err`.
pub(crate) fn io_error<'a, S: Storage>(
    op: &'static str,
    storage: &'a S,
    name: &'a str,
) -> impl FnOnce(io::Error) -> IoError + 'a {
    move |source| IoError {
        op,
        file: storage.describe(name),
        source,
    }
}

/// Drives a future that completes without waiting, as the futures of
/// [`StdStorage`] and [`MemStorage`](crate::MemStorage) do.
///
/// Panics if the future is not ready when first polled: such a future needs an
/// executor.
pub fn run_ready<F: Future>(future: F) -> F::Output {
    let mut context = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut context) {
        Poll::Ready(output) => output,
        Poll::Pending => {
            panic!("run_ready: a storage future had to wait; drive it with an executor")
        }
    }
}

/// Bytes written per call when filling a new file with zeros (shared with the
/// server's glommio storage, so both fill at the same measured rate).
pub const ZERO_FILL_CHUNK_BYTES: usize = 1 << 20;

/// A directory on the local file system, through std (pwrite, fdatasync, mmap).
#[derive(Clone, Debug)]
pub struct StdStorage {
    dir: PathBuf,
    direct_io: bool,
}

impl StdStorage {
    /// Buffered IO: writes go through the page cache and `sync` flushes them.
    pub fn new(dir: impl Into<PathBuf>) -> StdStorage {
        StdStorage {
            dir: dir.into(),
            direct_io: false,
        }
    }

    /// Writes with O_DIRECT, bypassing the page cache (the file system must
    /// support it: tmpfs does not).
    pub fn with_direct_io(dir: impl Into<PathBuf>) -> StdStorage {
        StdStorage {
            dir: dir.into(),
            direct_io: true,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn open_file(&self, name: &str, create: bool) -> io::Result<StdFile> {
        let path = self.dir.join(name);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create_new(create);
        if self.direct_io {
            options.custom_flags(libc::O_DIRECT);
        }
        let file = options.open(&path)?;
        let reader = File::open(&path)?;
        Ok(StdFile {
            file,
            reader,
            path,
            direct_io: self.direct_io,
            bounce: Vec::new(),
        })
    }
}

impl Storage for StdStorage {
    type File = StdFile;
    type Map = memmap2::Mmap;

    fn describe(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            match entry.file_name().into_string() {
                Ok(name) => names.push(name),
                Err(name) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("file name {name:?} is not UTF-8"),
                    ))
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn map(&self, name: &str) -> io::Result<memmap2::Mmap> {
        let file = File::open(self.dir.join(name))?;
        // SAFETY: the WAL maps only segments that no writer is changing while
        // the map lives (recovery maps before the writer opens the tail; the
        // CLI reads a directory no server is writing, which the docs require).
        let map = unsafe { memmap2::Mmap::map(&file) }?;
        // The scan reads each segment once, front to back: ask for large
        // read-ahead, started now, rather than one page fault at a time.
        map.advise(memmap2::Advice::WillNeed)?;
        Ok(map)
    }

    async fn create(&self, name: &str) -> io::Result<StdFile> {
        self.open_file(name, true)
    }

    async fn open(&self, name: &str) -> io::Result<StdFile> {
        self.open_file(name, false)
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.dir.join(from), self.dir.join(to))
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.dir.join(name))
    }

    async fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

/// A file of [`StdStorage`].
#[derive(Debug)]
pub struct StdFile {
    file: File,
    /// A buffered descriptor for reads: O_DIRECT reads would need aligned buffers.
    reader: File,
    path: PathBuf,
    direct_io: bool,
    /// Block-aligned staging for O_DIRECT writes (grown once, then reused).
    bounce: Vec<u8>,
}

/// `buf` copied into a block-aligned part of `bounce`, as O_DIRECT needs.
fn stage_aligned<'a>(bounce: &'a mut Vec<u8>, buf: &'a [u8]) -> &'a [u8] {
    if buf.as_ptr().align_offset(BLOCK_BYTES) == 0 {
        return buf;
    }
    let staged = aligned_part(bounce, buf.len());
    staged.copy_from_slice(buf);
    staged
}

/// A block-aligned slice of `len` bytes inside `backing`, grown (with zeros)
/// to make room for the alignment when it is too small.
fn aligned_part(backing: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if backing.len() < len + BLOCK_BYTES {
        *backing = vec![0; len + BLOCK_BYTES];
    }
    let start = backing.as_ptr().align_offset(BLOCK_BYTES);
    &mut backing[start..start + len]
}

impl StorageFile for StdFile {
    async fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.reader.read_exact_at(buf, offset)
    }

    async fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        assert_eq!(offset % BLOCK_BYTES as u64, 0, "writes start on a block");
        assert_eq!(buf.len() % BLOCK_BYTES, 0, "writes are whole blocks");
        let staged = if self.direct_io {
            stage_aligned(&mut self.bounce, buf)
        } else {
            buf
        };
        self.file.write_all_at(staged, offset)
    }

    async fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Writes the zeros with O_DIRECT where the file system allows it. Through
    /// the page cache they are throttled: the kernel sizes a device's allowance
    /// of dirty pages by its measured write bandwidth, and a stream of small
    /// fdatasyncs makes that look low. Measured here, 64 MiB of buffered zeros
    /// took 22 ms on a fresh log and 300 ms after a few segments of commits.
    async fn preallocate(&mut self, len: u64) -> io::Result<()> {
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&self.path);
        let writer = match &direct {
            Ok(file) => file,
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => &self.file,
            Err(_) => return direct.map(|_| ()),
        };
        let mut backing = Vec::new();
        let zeros = aligned_part(&mut backing, ZERO_FILL_CHUNK_BYTES);
        let mut offset = 0;
        while offset < len {
            let chunk = (len - offset).min(ZERO_FILL_CHUNK_BYTES as u64) as usize;
            writer.write_all_at(&zeros[..chunk], offset)?;
            offset += chunk as u64;
        }
        Ok(())
    }

    fn size_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}
