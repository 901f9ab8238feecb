//! The WAL's storage on glommio: segment files are DMA files (O_DIRECT, written
//! and synced through io_uring), and the executors that drive them are built
//! here so that their io memory and park latency are set in one place.
//!
//! Only the write path is asynchronous. Listing and mapping the directory stay
//! synchronous std calls, shared with [`StdStorage`]: recovery runs them once
//! at start-up, before the core serves anyone.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use glommio::io::{DmaBuffer, DmaFile, OpenOptions};
use glommio::{LocalExecutorBuilder, Placement};
use keel_wal::storage::ZERO_FILL_CHUNK_BYTES;
use keel_wal::{run_ready, StdStorage, Storage, StorageFile, BLOCK_BYTES};

/// Memory each executor sets aside for DMA buffers. glommio's default (10 MiB)
/// exceeds this machine's `ulimit -l` (8 MiB) on its own, and the server runs
/// one executor per core. A request larger than what is free is not refused:
/// glommio then allocates the buffer on the heap (4096-aligned, so still valid
/// for O_DIRECT), only without io_uring's registered-buffer fast path.
pub const IO_MEMORY_BYTES: usize = 1 << 20;

/// The largest single write: a piece fits [`IO_MEMORY_BYTES`] several times
/// over, so its buffer comes from that registered (resident) memory. A
/// buffer of a whole interval's batch (`--fsync interval-ms`, megabytes)
/// came from the heap, and copying into its fresh pages held the core for
/// 12-25 ms (page faults; docs/PERFORMANCE.md).
pub const WRITE_PIECE_BYTES: usize = 128 << 10;
/// Pieces of one write in flight at once: together they take half of
/// [`IO_MEMORY_BYTES`], the rest left for the other shards of the core.
pub const WRITE_PIECES_IN_FLIGHT_MAX: usize = 4;
const _: () = assert!(
    WRITE_PIECE_BYTES % BLOCK_BYTES == 0
        && WRITE_PIECE_BYTES * WRITE_PIECES_IN_FLIGHT_MAX <= IO_MEMORY_BYTES / 2
);

/// How a file's durable writes (the WAL's group commits) wait for the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurableWrites {
    /// Through io_uring: the core runs its other tasks meanwhile, and the
    /// syncs of several shards on one core overlap. Where a core runs
    /// more than one shard.
    Ring,
    /// A blocking `pwrite` on the executor's thread, as redis-server's
    /// `appendfsync always` fsyncs on its event loop: where a core runs
    /// one shard (the default). Through the ring, the write's completion
    /// (a cache flush on a kernel worker, then the executor woken) took
    /// twice as long under load: 330-370 us per group commit against
    /// 140-200 us inline, and durable SET -P 1 reached 0.80-0.91x
    /// redis-server against 1.04-1.22x inline (docs/PERFORMANCE.md). Other
    /// shards on the core would wait out each other's syncs: with four,
    /// inline was 0.84-0.95x the ring. Inline writes slower on average
    /// than [`INLINE_WRITE_SLOW_US`] send the file's next
    /// [`INLINE_BACKOFF_WRITES`] through the ring: a slow disk does not
    /// hold every client of the core for each sync.
    Inline,
}

/// The moving average of a file's inline durable writes (each weighing
/// 1/[`INLINE_AVERAGE_WEIGHT`]) above which its writes go through the ring
/// for a while: 4-7x the 140-250 us measured here. One write over 16 ms
/// passes it on its own, 1.2 ms writes after 29 of them; one write of a
/// few milliseconds, which this host shows now and then, does not.
pub const INLINE_WRITE_SLOW_US: u64 = 1_000;
/// The inverse weight of each inline write in the moving average.
pub const INLINE_AVERAGE_WEIGHT: u64 = 16;
/// Durable writes a file sends through the ring once its inline writes
/// are slow (about half a second of group commits at 2,000 a second).
pub const INLINE_BACKOFF_WRITES: u32 = 1_000;

/// Whether a file's next durable write goes inline ([`DurableWrites`]).
#[derive(Debug, Default)]
struct InlineGuard {
    /// The moving average of its inline writes, in microseconds.
    average_us: u64,
    ring_writes_left: u32,
}

impl InlineGuard {
    /// Whether the next durable write goes inline (counts one off the
    /// back-off otherwise).
    fn next_inline(&mut self) -> bool {
        if self.ring_writes_left == 0 {
            return true;
        }
        self.ring_writes_left -= 1;
        false
    }

    /// An inline write took `took_us`. The average starts over with each
    /// back-off, so that the writes after it are judged on their own.
    fn took(&mut self, took_us: u64) {
        self.average_us =
            (self.average_us * (INLINE_AVERAGE_WEIGHT - 1) + took_us) / INLINE_AVERAGE_WEIGHT;
        if self.average_us > INLINE_WRITE_SLOW_US {
            self.ring_writes_left = INLINE_BACKOFF_WRITES;
            self.average_us = 0;
        }
    }
}

/// How long an idle executor polls before it sleeps in the kernel: not at all.
/// io_uring runs fdatasync on a kernel worker thread (io-wq) that inherits the
/// executor's CPU affinity, so a pinned executor spinning for its completion
/// keeps that worker off the CPU until the spin ends. Measured here (4 KiB
/// DMA write + fdatasync, p50, glommio_wal_bench): pinned, 500 us of spin
/// gave ~720 us and no spin ~215 us; unpinned, both gave ~135 us, against
/// ~115-180 us for blocking std calls. An earlier report of ~4 ms without
/// spin was not reproduced, on glommio's polled ring or off it.
pub const SPIN_BEFORE_PARK_US: u64 = 0;

/// How long a task queue runs before the executor looks at its rings again.
/// glommio's default, 100 ms, lets a core busy with many clients notice a
/// completed fdatasync (and the replies it releases) up to that late; 1 ms
/// bounds it. Measured with `redis-benchmark -c 50 -P 1`: one run gave GET
/// 65k -> 117k/s, but an hour later both settings gave 65-72k/s; the figure
/// that moves this benchmark on this VM is whether the client shares the
/// executor's CPU (docs/PERFORMANCE.md), not this timer.
pub const PREEMPT_TIMER_US: u64 = 1_000;

/// The builder of core `core`'s executor. Executors float (the kernel places
/// them): pinned, io_uring's fdatasync worker inherits the executor's CPU and
/// waits for it (4 KiB write + fdatasync p50 ~215 us pinned, ~135 us
/// floating), and `redis-benchmark` on a 2-CPU machine then shares a CPU with
/// an executor (GET at -c 50 -P 1: 52k/s pinned, 58k/s floating with 2 cores;
/// 65k/s and 67k/s with one). Measured with `glommio_wal_bench` and
/// `redis-benchmark`, docs/PERFORMANCE.md.
pub fn executor_builder(core: usize) -> LocalExecutorBuilder {
    LocalExecutorBuilder::new(Placement::Unbound)
        .name(&format!("keel-{core}"))
        .io_memory(IO_MEMORY_BYTES)
        .spin_before_park(Duration::from_micros(SPIN_BEFORE_PARK_US))
        .preempt_timer(Duration::from_micros(PREEMPT_TIMER_US))
}

/// One directory whose files are glommio DMA files. Must be used on a glommio
/// executor's thread.
#[derive(Clone, Debug)]
pub struct GlommioStorage {
    /// Does the directory operations that are the same as std's: naming,
    /// listing, mapping, and the directory fsync.
    std: StdStorage,
    durable_writes: DurableWrites,
}

impl GlommioStorage {
    /// Storage whose durable writes go through the ring.
    pub fn new(dir: impl Into<PathBuf>) -> GlommioStorage {
        GlommioStorage {
            std: StdStorage::new(dir),
            durable_writes: DurableWrites::Ring,
        }
    }

    pub fn with_durable_writes(self, durable_writes: DurableWrites) -> GlommioStorage {
        GlommioStorage {
            durable_writes,
            ..self
        }
    }

    pub fn dir(&self) -> &Path {
        self.std.dir()
    }

    async fn open_file(&self, name: &str, create: bool) -> io::Result<GlommioFile> {
        self.probe_device().await?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(create)
            .dma_open(self.dir().join(name))
            .await?;
        Ok(GlommioFile {
            file,
            durable: None,
            inline: (self.durable_writes == DurableWrites::Inline).then(InlineGuard::default),
        })
    }

    /// Makes glommio's first DMA open on this thread and device read real data.
    ///
    /// glommio (0.9) decides once per thread and device whether to poll for
    /// completions (io_uring IOPOLL) by reading the first block of the first
    /// DMA file it opens there. When that file is empty (a new segment), the
    /// read succeeds without touching the device and polling is wrongly turned
    /// on: here (virtio, `queue/io_poll` = 0) every later DMA read then fails
    /// with EOPNOTSUPP.
    async fn probe_device(&self) -> io::Result<()> {
        let device = std::fs::metadata(self.dir())?.dev();
        if PROBED_DEVICES.with(|probed| probed.borrow().contains(&device)) {
            return Ok(());
        }
        let path = self.dir().join(IOPOLL_PROBE_FILE);
        std::fs::write(&path, [0; BLOCK_BYTES])?;
        let probe = OpenOptions::new().read(true).dma_open(&path).await;
        std::fs::remove_file(&path)?;
        probe?.close().await?;
        PROBED_DEVICES.with(|probed| probed.borrow_mut().insert(device));
        Ok(())
    }
}

/// The one-block file [`GlommioStorage::probe_device`] creates and removes; a
/// crash may leave it behind, which recovery ignores as an unknown file.
const IOPOLL_PROBE_FILE: &str = ".keel-iopoll-probe";

thread_local! {
    /// Devices (`st_dev`) that glommio has probed on this thread.
    static PROBED_DEVICES: RefCell<HashSet<u64>> = RefCell::new(HashSet::new());
}

impl Storage for GlommioStorage {
    type File = GlommioFile;
    type Map = <StdStorage as Storage>::Map;

    fn describe(&self, file: &str) -> String {
        self.std.describe(file)
    }

    fn list(&self) -> io::Result<Vec<String>> {
        self.std.list()
    }

    fn map(&self, name: &str) -> io::Result<Self::Map> {
        self.std.map(name)
    }

    async fn create(&self, name: &str) -> io::Result<GlommioFile> {
        self.open_file(name, true).await
    }

    async fn open(&self, name: &str) -> io::Result<GlommioFile> {
        self.open_file(name, false).await
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        Ok(glommio::io::rename(self.dir().join(from), self.dir().join(to)).await?)
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        Ok(glommio::io::remove(self.dir().join(name)).await?)
    }

    /// A full fsync of the directory, as std does, on glommio's blocking
    /// thread pool: glommio's own directory sync is an fdatasync, which need
    /// not carry a rename's entry, and a blocking fsync here would stall every
    /// other task of the core for the disk's latency.
    async fn sync_dir(&self) -> io::Result<()> {
        let std = self.std.clone();
        glommio::executor()
            .spawn_blocking(move || run_ready(std.sync_dir()))
            .await
    }
}

/// A file of [`GlommioStorage`].
#[derive(Debug)]
pub struct GlommioFile {
    file: DmaFile,
    /// The same file opened `O_DSYNC`, on its first `write_durable_at`
    /// (the WAL's tail segment: every group commit): a write through it is
    /// durable when it completes, a FUA write or a write and a cache flush
    /// as the device allows, in one io_uring round trip. A write and an
    /// fdatasync are two, and the fdatasync runs on an io-wq thread: 4 KiB
    /// p50 160 us against 435 us here (glommio_wal_bench, docs/PERFORMANCE.md).
    /// Not the only handle: zero-filling and a new segment's first batch
    /// stay plain writes under one `sync`, not a flush per write.
    durable: Option<DmaFile>,
    /// `Some` where durable writes go inline ([`DurableWrites::Inline`]).
    inline: Option<InlineGuard>,
}

/// Writes `buf` whole at `offset` of `file`: a short write (a full disk) is
/// an error, since O_DIRECT cannot resume inside a block.
async fn write_whole(file: &DmaFile, buf: Rc<DmaBuffer>, offset: u64) -> io::Result<()> {
    let len = buf.len();
    let written = file.write_rc_at(buf, offset).await?;
    if written == len {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("wrote {written} of {len} bytes at offset {offset}"),
        ))
    }
}

/// Writes `buf`, whole blocks, at `offset` of `file`, through DMA buffers
/// of at most [`WRITE_PIECE_BYTES`], up to [`WRITE_PIECES_IN_FLIGHT_MAX`] at
/// once (one after another, a 9 MB write took 40-75 ms; the kernel splits
/// one large write into requests in flight together the same way). Until
/// a sync, a crash may keep any of the pieces, as it may any sectors of
/// one write.
async fn write_blocks(file: &DmaFile, buf: &[u8], offset: u64) -> io::Result<()> {
    assert_eq!(offset % BLOCK_BYTES as u64, 0, "writes start on a block");
    assert_eq!(buf.len() % BLOCK_BYTES, 0, "writes are whole blocks");
    let mut pieces = buf
        .chunks(WRITE_PIECE_BYTES)
        .zip((offset..).step_by(WRITE_PIECE_BYTES));
    let mut in_flight: Vec<Pin<Box<dyn Future<Output = io::Result<()>> + '_>>> = Vec::new();
    loop {
        while in_flight.len() < WRITE_PIECES_IN_FLIGHT_MAX {
            let Some((piece, at)) = pieces.next() else {
                break;
            };
            let mut staged = file.alloc_dma_buffer(piece.len());
            staged.as_bytes_mut().copy_from_slice(piece);
            in_flight.push(Box::pin(write_whole(file, Rc::new(staged), at)));
        }
        if in_flight.is_empty() {
            return Ok(());
        }
        // Until at least one piece is written (or one failed).
        futures_lite::future::poll_fn(|cx| {
            let before = in_flight.len();
            let mut at = 0;
            while at < in_flight.len() {
                match in_flight[at].as_mut().poll(cx) {
                    Poll::Ready(result) => {
                        result?;
                        drop(in_flight.swap_remove(at));
                    }
                    Poll::Pending => at += 1,
                }
            }
            if in_flight.len() < before {
                Poll::Ready(Ok::<(), io::Error>(()))
            } else {
                Poll::Pending
            }
        })
        .await?;
    }
}

/// Writes `buf`, whole blocks, at `offset` of `file` with a blocking
/// `pwrite` on this thread ([`DurableWrites::Inline`]).
fn write_inline(file: &DmaFile, buf: &[u8], offset: u64) -> io::Result<()> {
    assert_eq!(offset % BLOCK_BYTES as u64, 0, "writes start on a block");
    assert_eq!(buf.len() % BLOCK_BYTES, 0, "writes are whole blocks");
    let mut staged = file.alloc_dma_buffer(buf.len());
    staged.as_bytes_mut().copy_from_slice(buf);
    let at = libc::off_t::try_from(offset).map_err(io::Error::other)?;
    loop {
        // SAFETY: `staged` is an aligned buffer of `staged.len()` bytes that
        // outlives the call, and the descriptor belongs to `file`.
        let written =
            unsafe { libc::pwrite(file.as_raw_fd(), staged.as_ptr().cast(), staged.len(), at) };
        if written < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        let written = written as usize;
        return if written == staged.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "wrote {written} of {} bytes at offset {offset}",
                    staged.len()
                ),
            ))
        };
    }
}

impl GlommioFile {
    fn zeros(&self, len: usize) -> Rc<DmaBuffer> {
        let mut zeros = self.file.alloc_dma_buffer(len);
        zeros.as_bytes_mut().fill(0);
        Rc::new(zeros)
    }
}

impl StorageFile for GlommioFile {
    async fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        // O_DIRECT reads whole aligned blocks. glommio's own unaligned
        // `read_at` (0.9) measures a short read from the aligned start, not
        // from `offset`, so it would hide a read past the end of the file.
        let alignment = self.file.alignment();
        let start = offset - offset % alignment;
        let skip = (offset - start) as usize;
        let span = (skip + buf.len()).next_multiple_of(alignment as usize);
        let read = self.file.read_at_aligned(start, span).await?;
        if read.len() < skip + buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read {} of {} bytes at offset {offset}",
                    read.len().saturating_sub(skip),
                    buf.len()
                ),
            ));
        }
        buf.copy_from_slice(&read[skip..skip + buf.len()]);
        Ok(())
    }

    async fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        write_blocks(&self.file, buf, offset).await
    }

    async fn sync(&mut self) -> io::Result<()> {
        Ok(self.file.fdatasync().await?)
    }

    async fn write_durable_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        if buf.len() > WRITE_PIECE_BYTES * WRITE_PIECES_IN_FLIGHT_MAX {
            // More pieces than go at once: through `O_DSYNC` each round
            // would wait for cache flushes of its own (an interval's 9 MB
            // batch took 38-105 ms one piece after another); one fdatasync
            // after them all is one flush.
            self.write_at(buf, offset).await?;
            return self.sync().await;
        }
        if self.durable.is_none() {
            // Through the descriptor, not the name: a new segment is renamed
            // after it is created. O_DSYNC cannot be added with fcntl.
            let this = format!("/proc/self/fd/{}", self.file.as_raw_fd());
            let durable = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DSYNC)
                .dma_open(this)
                .await?;
            self.durable = Some(durable);
        }
        let durable = self.durable.as_ref().expect("opened above");
        let inline = buf.len() <= WRITE_PIECE_BYTES
            && self.inline.as_mut().is_some_and(InlineGuard::next_inline);
        if !inline {
            return write_blocks(durable, buf, offset).await;
        }
        let started = Instant::now();
        write_inline(durable, buf, offset)?;
        let guard = self.inline.as_mut().expect("an inline write has a guard");
        guard.took(started.elapsed().as_micros() as u64);
        Ok(())
    }

    /// Zero-fills with DMA writes rather than fallocate: an fallocated extent
    /// is unwritten, and converting it on first write doubled the cost of
    /// every later sync (docs/PERFORMANCE.md).
    async fn preallocate(&mut self, len: u64) -> io::Result<()> {
        assert_eq!(len % BLOCK_BYTES as u64, 0, "files are whole blocks");
        let chunk = self.zeros(ZERO_FILL_CHUNK_BYTES.min(len as usize));
        let mut offset = 0;
        while len - offset >= chunk.len() as u64 {
            write_whole(&self.file, Rc::clone(&chunk), offset).await?;
            offset += chunk.len() as u64;
        }
        if offset < len {
            let tail = self.zeros((len - offset) as usize);
            write_whole(&self.file, tail, offset).await?;
        }
        Ok(())
    }

    fn size_bytes(&self) -> io::Result<u64> {
        // SAFETY: the descriptor belongs to `self.file`, which stays open for
        // as long as the borrow (this call) lasts.
        let descriptor = unsafe { BorrowedFd::borrow_raw(self.file.as_raw_fd()) };
        Ok(File::from(descriptor.try_clone_to_owned()?)
            .metadata()?
            .len())
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use keel_wal::{LogIndex, Term, Wal, WalOptions};

    use super::*;

    /// Runs `future` on a fresh executor, built as the server builds them but
    /// unpinned, since tests run side by side.
    fn run<T>(future: impl Future<Output = T>) -> T {
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(IO_MEMORY_BYTES)
            .spin_before_park(Duration::from_micros(SPIN_BEFORE_PARK_US))
            .make()
            .expect("build a test executor")
            .run(future)
    }

    fn payload(index: usize) -> Vec<u8> {
        let len = 1 + (index * 37) % 700;
        (0..len).map(|at| (index + at) as u8).collect()
    }

    /// Also the regression test of [`GlommioStorage::probe_device`]: this
    /// thread's first DMA file is a new, empty segment, and without the probe
    /// every `read_entry` failed with EOPNOTSUPP.
    #[test]
    fn wal_reads_back_every_entry_across_rollovers_and_reopen() {
        let batches = 40;
        let per_batch = 3;
        for durable_writes in [DurableWrites::Ring, DurableWrites::Inline] {
            let dir = tempfile::tempdir().expect("temp dir");
            run(async {
                let storage = GlommioStorage::new(dir.path()).with_durable_writes(durable_writes);
                let (mut wal, _) = Wal::open(storage, WalOptions::test_min())
                    .await
                    .expect("open");
                for batch in 0..batches {
                    for entry in 0..per_batch {
                        wal.append(Term(1), &payload(batch * per_batch + entry))
                            .expect("append");
                    }
                    wal.sync().await.expect("sync");
                }
                assert!(
                    wal.log_map().segments.len() > 2,
                    "the batches rolled over segments"
                );
                drop(wal);

                let storage = GlommioStorage::new(dir.path());
                let (wal, _) = Wal::open(storage, WalOptions::test_min())
                    .await
                    .expect("reopen");
                assert_eq!(wal.last_index().0, (batches * per_batch) as u64);
                for index in 1..=wal.last_index().0 {
                    let entry = wal.read_entry(LogIndex(index)).await.expect("read");
                    assert_eq!(
                        entry,
                        payload(index as usize - 1),
                        "{durable_writes:?}: entry {index}"
                    );
                }
            });
        }
    }

    #[test]
    #[should_panic(expected = "writes are whole blocks")]
    fn write_at_refuses_a_partial_block() {
        let dir = tempfile::tempdir().expect("temp dir");
        run(async {
            let mut file = GlommioStorage::new(dir.path())
                .create("partial")
                .await
                .expect("create");
            let _ = file.write_at(&[1; BLOCK_BYTES + 100], 0).await;
        });
    }

    /// Storage with inline durable writes: a group commit's write lands
    /// (read back through the ring and through a map), and one too large
    /// for a piece goes through the ring as before.
    #[test]
    fn inline_durable_writes_land_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        run(async {
            let storage =
                GlommioStorage::new(dir.path()).with_durable_writes(DurableWrites::Inline);
            let mut file = storage.create("inline").await.expect("create");
            assert!(file.inline.is_some());
            let first: Vec<u8> = (0..2 * BLOCK_BYTES).map(|at| at as u8).collect();
            let second = vec![7; WRITE_PIECE_BYTES * WRITE_PIECES_IN_FLIGHT_MAX + BLOCK_BYTES];
            file.write_durable_at(&first, 0)
                .await
                .expect("inline write");
            file.write_durable_at(&second, first.len() as u64)
                .await
                .expect("write through the ring");
            let mut back = vec![0; first.len()];
            file.read_at(&mut back, 0).await.expect("read");
            assert_eq!(back, first);
            let mapped = storage.map("inline").expect("map");
            assert_eq!(&mapped[..first.len()], &first[..]);
            assert_eq!(&mapped[first.len()..], &second[..]);
            // An inline write that fails is an error, not a panic or a
            // silent loss: a descriptor open for reading only.
            let read_only = OpenOptions::new()
                .read(true)
                .dma_open(dir.path().join("inline"))
                .await
                .expect("open");
            let error = write_inline(&read_only, &first, 0).expect_err("not writable");
            assert_eq!(error.raw_os_error(), Some(libc::EBADF));
            let ring = GlommioStorage::new(dir.path())
                .create("ring")
                .await
                .expect("create");
            assert!(
                ring.inline.is_none(),
                "storage writes through the ring by default"
            );
        });
    }

    /// Inline writes that are slow on average, or one very slow one, send
    /// the next [`INLINE_BACKOFF_WRITES`] durable writes through the ring;
    /// then they go inline again. One write of a few milliseconds does not.
    #[test]
    fn slow_inline_writes_back_off_to_the_ring() {
        let backs_off_after = |took_us: &[u64]| {
            let mut guard = InlineGuard::default();
            for (write, took) in took_us.iter().enumerate() {
                assert!(guard.next_inline(), "write {write} goes inline");
                guard.took(*took);
                if guard.ring_writes_left > 0 {
                    return Some(write + 1);
                }
            }
            None
        };
        let typical = [200; 1_000];
        assert_eq!(backs_off_after(&typical), None);
        let mut one_slow = vec![200; 100];
        one_slow.push(4_000);
        one_slow.extend([200; 100]);
        assert_eq!(backs_off_after(&one_slow), None, "one 4 ms write");
        assert_eq!(
            backs_off_after(&[200, 200, 20_000]),
            Some(3),
            "one 20 ms write"
        );
        assert_eq!(
            backs_off_after(&[1_200; 100]),
            Some(29),
            "a run of 1.2 ms writes"
        );

        let mut guard = InlineGuard::default();
        guard.took(20_000);
        for write in 0..INLINE_BACKOFF_WRITES {
            assert!(!guard.next_inline(), "write {write} of the back-off");
        }
        assert!(guard.next_inline(), "inline again after the back-off");
        guard.took(200);
        assert!(guard.next_inline(), "judged on its own: one typical write");
    }

    /// A write larger than [`WRITE_PIECE_BYTES`] goes in pieces (the last
    /// one shorter); plain or durable, a few or more than its io memory, it
    /// must land whole and in place.
    #[test]
    fn large_writes_land_whole_in_pieces() {
        let dir = tempfile::tempdir().expect("temp dir");
        run(async {
            let storage = GlommioStorage::new(dir.path());
            // Pieces all in flight at once, and more pieces than that.
            let lengths = [
                3 * WRITE_PIECE_BYTES + BLOCK_BYTES,
                2 * IO_MEMORY_BYTES + 3 * BLOCK_BYTES,
            ];
            for (name, len, durable) in [
                ("some", lengths[0], false),
                ("some-durable", lengths[0], true),
                ("many", lengths[1], false),
                ("many-durable", lengths[1], true),
            ] {
                let mut file = storage.create(name).await.expect("create");
                let bytes: Vec<u8> = (0..len).map(|at| (at / BLOCK_BYTES) as u8).collect();
                file.write_at(&[0xff; BLOCK_BYTES], 0).await.expect("write");
                if durable {
                    file.write_durable_at(&bytes, BLOCK_BYTES as u64)
                        .await
                        .expect("write");
                } else {
                    file.write_at(&bytes, BLOCK_BYTES as u64)
                        .await
                        .expect("write");
                    file.sync().await.expect("sync");
                }
                let mut back = vec![0; bytes.len()];
                file.read_at(&mut back, BLOCK_BYTES as u64)
                    .await
                    .expect("read");
                assert!(back == bytes, "{name}: the large write reads back");
                let mapped = storage.map(name).expect("map");
                assert_eq!(&mapped[..BLOCK_BYTES], &[0xff; BLOCK_BYTES][..]);
                assert_eq!(&mapped[BLOCK_BYTES..], &bytes[..]);
            }
        });
    }

    #[test]
    fn preallocate_writes_zeros_and_unaligned_reads_work() {
        let dir = tempfile::tempdir().expect("temp dir");
        let len = ZERO_FILL_CHUNK_BYTES as u64 + 3 * BLOCK_BYTES as u64;
        run(async {
            let storage = GlommioStorage::new(dir.path());
            let mut file = storage.create("filled").await.expect("create");
            file.preallocate(len).await.expect("preallocate");
            assert_eq!(file.size_bytes().expect("size"), len);
            assert!(storage
                .map("filled")
                .expect("map")
                .iter()
                .all(|&byte| byte == 0));

            file.write_at(&[7; BLOCK_BYTES], BLOCK_BYTES as u64)
                .await
                .expect("write");
            let mut middle = [0; 10];
            file.read_at(&mut middle, BLOCK_BYTES as u64 - 5)
                .await
                .expect("read");
            assert_eq!(middle, [0, 0, 0, 0, 0, 7, 7, 7, 7, 7]);
            let mut past_end = [0; 10];
            let error = file
                .read_at(&mut past_end, len - 5)
                .await
                .expect_err("past the end");
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        });
    }

    #[test]
    fn directory_operations_keep_error_kinds() {
        let dir = tempfile::tempdir().expect("temp dir");
        run(async {
            let storage = GlommioStorage::new(dir.path());
            drop(storage.create("a").await.expect("create"));
            let exists = storage.create("a").await.expect_err("create twice");
            assert_eq!(exists.kind(), io::ErrorKind::AlreadyExists);
            let missing = storage.open("b").await.expect_err("open a missing file");
            assert_eq!(missing.kind(), io::ErrorKind::NotFound);

            storage.rename("a", "b").await.expect("rename");
            storage.sync_dir().await.expect("sync dir");
            assert_eq!(storage.list().expect("list"), ["b"]);
            storage.remove("b").await.expect("remove");
            let gone = storage.remove("b").await.expect_err("remove twice");
            assert_eq!(gone.kind(), io::ErrorKind::NotFound);
            assert!(storage.list().expect("list").is_empty());
            assert_eq!(
                storage.describe("b"),
                dir.path().join("b").display().to_string()
            );
        });
    }
}
