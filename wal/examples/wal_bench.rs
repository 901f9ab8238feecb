//! The WAL benchmark: durable frames/s of group commit against the disk's own
//! ceiling, and the recovery scan's speed. Prints measured figures; asserts nothing.
//!
//! ```text
//! cargo run --release -p keel-wal --example wal_bench -- [--dir DIR] [--seconds S] [--scan-mib N] [--direct]
//! ```
//!
//! For each batch size (1, 16, 256 frames of 100-byte payloads) it runs, in the
//! same process and directory, for S seconds each:
//! - `wal`: `Wal::append` x batch, then `Wal::sync` (one write + one fdatasync;
//!   the sync that rolls over also zero-fills the new segment);
//! - `raw`: a plain loop that writes the same number of bytes per sync (the
//!   WAL's padded batch) with pwrite + fdatasync into a preallocated, zero-filled
//!   file: what the disk allows for that write pattern.
//!
//! Then it writes an N MiB log (default 1024) and times the recovery scan (list,
//! memmap2, scan, chain checks), first with the files' pages dropped from the
//! page cache (posix_fadvise DONTNEED), then warm.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_wal::frame::{frame_bytes, FRAME_HEADER_BYTES};
use keel_wal::recovery::{list_dir, map_segments, recover};
use keel_wal::segment::BLOCK_BYTES;
use keel_wal::{run_ready, StdStorage, Term, Wal, WalOptions};

const PAYLOAD_BYTES: usize = 100;
const BATCH_SIZES: [usize; 3] = [1, 16, 256];
const RAW_FILE_BYTES: u64 = 64 << 20;

struct Args {
    dir: PathBuf,
    seconds: f64,
    scan_mib: u64,
    direct_io: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        dir: PathBuf::from("target/wal-bench"),
        seconds: 3.0,
        scan_mib: 1024,
        direct_io: false,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(flag) = iter.next() {
        let mut value = || {
            iter.next()
                .unwrap_or_else(|| panic!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--dir" => args.dir = PathBuf::from(value()),
            "--seconds" => args.seconds = value().parse().expect("--seconds takes a number"),
            "--scan-mib" => args.scan_mib = value().parse().expect("--scan-mib takes a number"),
            "--direct" => args.direct_io = true,
            other => panic!("unknown flag {other}; see the doc comment of wal_bench.rs"),
        }
    }
    args
}

fn storage(dir: &Path, direct_io: bool) -> StdStorage {
    if direct_io {
        StdStorage::with_direct_io(dir)
    } else {
        StdStorage::new(dir)
    }
}

fn fresh_dir(path: &Path) -> PathBuf {
    if path.exists() {
        std::fs::remove_dir_all(path).expect("clear the bench directory");
    }
    std::fs::create_dir_all(path).expect("create the bench directory");
    path.to_path_buf()
}

struct Run {
    syncs: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
    /// Syncs that opened a new segment (zero-filling it), and their total time.
    rollovers: u64,
    rollover_time: Duration,
    /// Time spent before the IO: encoding the batch.
    encode_time: Duration,
}

impl Run {
    fn per_second(&self, count: u64) -> f64 {
        count as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_us(&mut self, percent: usize) -> u64 {
        self.latencies_us.sort_unstable();
        let at = (self.latencies_us.len() * percent / 100).min(self.latencies_us.len() - 1);
        self.latencies_us[at]
    }
}

/// What one timed call did.
struct Call {
    /// It opened a new segment.
    rolled_over: bool,
    /// Time it spent before its IO.
    encode_time: Duration,
}

/// Calls `sync_once` until `seconds` have passed, timing each call.
fn timed(seconds: f64, mut sync_once: impl FnMut() -> Call) -> Run {
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut latencies_us = Vec::new();
    let (mut rollovers, mut rollover_time) = (0, Duration::ZERO);
    let mut encode_time = Duration::ZERO;
    while start.elapsed() < budget {
        let before = Instant::now();
        let call = sync_once();
        let took = before.elapsed();
        encode_time += call.encode_time;
        let rolled_over = call.rolled_over;
        latencies_us.push(took.as_micros() as u64);
        if rolled_over {
            rollovers += 1;
            rollover_time += took;
        }
    }
    Run {
        syncs: latencies_us.len() as u64,
        elapsed: start.elapsed(),
        latencies_us,
        rollovers,
        rollover_time,
        encode_time,
    }
}

fn run_wal(dir: &Path, direct_io: bool, batch: usize, seconds: f64) -> Run {
    let (mut wal, _) =
        run_ready(Wal::open(storage(dir, direct_io), WalOptions::default())).expect("open the WAL");
    let payload = vec![0xab; PAYLOAD_BYTES];
    timed(seconds, || {
        let segments = wal.log_map().segments.len();
        let start = Instant::now();
        for _ in 0..batch {
            wal.append(Term(1), &payload).expect("append");
        }
        let encode_time = start.elapsed();
        run_ready(wal.sync()).expect("sync");
        Call {
            rolled_over: wal.log_map().segments.len() != segments,
            encode_time,
        }
    })
}

/// The bytes one WAL batch of `batch` frames writes: frames padded to a block.
fn batch_write_bytes(batch: usize) -> usize {
    (batch * frame_bytes(PAYLOAD_BYTES)).next_multiple_of(BLOCK_BYTES)
}

fn run_raw(dir: &Path, direct_io: bool, batch: usize, seconds: f64) -> Run {
    let path = dir.join("raw.dat");
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(true);
    if direct_io {
        options.custom_flags(libc::O_DIRECT);
    }
    let file = options.open(&path).expect("open the raw file");
    let write_bytes = batch_write_bytes(batch);
    // A block-aligned buffer, as O_DIRECT needs.
    let mut backing = vec![0u8; RAW_FILE_BYTES.max(write_bytes as u64) as usize + BLOCK_BYTES];
    let start = backing.as_ptr().align_offset(BLOCK_BYTES);
    let zeros = &mut backing[start..start + (1 << 20)];
    for offset in (0..RAW_FILE_BYTES).step_by(1 << 20) {
        file.write_all_at(zeros, offset).expect("zero-fill");
    }
    file.sync_data().expect("sync the zero-filled file");
    let buffer = &mut backing[start..start + write_bytes];
    buffer.fill(0xab);
    let mut offset = 0u64;
    let run = timed(seconds, || {
        if offset + write_bytes as u64 > RAW_FILE_BYTES {
            offset = 0;
        }
        file.write_all_at(buffer, offset).expect("write");
        file.sync_data().expect("fdatasync");
        offset += write_bytes as u64;
        Call {
            rolled_over: false,
            encode_time: Duration::ZERO,
        }
    });
    std::fs::remove_file(&path).expect("remove the raw file");
    run
}

fn group_commit_table(args: &Args) {
    let mode = if args.direct_io {
        "O_DIRECT"
    } else {
        "buffered"
    };
    println!(
        "## Group commit: {PAYLOAD_BYTES}-byte payloads, {mode} writes, {} s per run",
        args.seconds
    );
    println!();
    println!("`raw`: pwrite + fdatasync of the same bytes per sync into a zero-filled file.");
    println!("`WAL`: append x frames/sync, then sync; a sync that rolls over zero-fills the new segment.");
    println!();
    println!("| frames/sync | bytes/sync | raw syncs/s | raw p50/p99 us | WAL frames/s | WAL MB/s payload | WAL p50/p99 us | encode us/sync | rollovers (ms) | WAL/raw syncs | WAL/raw without rollovers |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for batch in BATCH_SIZES {
        let dir = fresh_dir(&args.dir.join(format!("commit-{batch}")));
        let mut raw = run_raw(&dir, args.direct_io, batch, args.seconds);
        let mut wal = run_wal(&dir, args.direct_io, batch, args.seconds);
        let raw_syncs = raw.per_second(raw.syncs);
        let frames = wal.syncs * batch as u64;
        let steady_syncs =
            (wal.syncs - wal.rollovers) as f64 / (wal.elapsed - wal.rollover_time).as_secs_f64();
        println!(
            "| {batch} | {} | {raw_syncs:.0} | {}/{} | {:.0} | {:.1} | {}/{} | {:.1} | {} ({:.0}) | {:.0}% | {:.0}% |",
            batch_write_bytes(batch),
            raw.percentile_us(50),
            raw.percentile_us(99),
            wal.per_second(frames),
            wal.per_second(frames * PAYLOAD_BYTES as u64) / 1e6,
            wal.percentile_us(50),
            wal.percentile_us(99),
            wal.encode_time.as_secs_f64() * 1e6 / wal.syncs as f64,
            wal.rollovers,
            wal.rollover_time.as_secs_f64() * 1e3,
            wal.per_second(wal.syncs) / raw_syncs * 100.0,
            steady_syncs / raw_syncs * 100.0,
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
    println!();
}

/// Asks the kernel to drop the file's cached pages, so the next read goes to disk.
fn drop_from_page_cache(path: &Path) {
    let file = std::fs::File::open(path).expect("open for fadvise");
    // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is
    // open for the duration of the call.
    let result = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(result, 0, "posix_fadvise failed");
}

fn scan_once(dir: &Path) -> (Duration, u64, u64) {
    let store = StdStorage::new(dir);
    let start = Instant::now();
    let listing = list_dir(&store).expect("list");
    let inputs = map_segments(&store, &listing).expect("map");
    let log = recover(
        &inputs,
        WalOptions::default().payload_bytes_max,
        &mut |_| {},
    )
    .expect("recover");
    (start.elapsed(), log.scanned_bytes, log.entries.len() as u64)
}

fn scan_table(args: &Args) {
    let dir = fresh_dir(&args.dir.join("scan"));
    let target_bytes = args.scan_mib << 20;
    let (mut wal, _) =
        run_ready(Wal::open(StdStorage::new(&dir), WalOptions::default())).expect("open");
    let payload = vec![0xcd; PAYLOAD_BYTES];
    let write_start = Instant::now();
    while wal.last_index().0 * (frame_bytes(PAYLOAD_BYTES) as u64) < target_bytes {
        for _ in 0..256 {
            wal.append(Term(1), &payload).expect("append");
        }
        run_ready(wal.sync()).expect("sync");
    }
    let write_elapsed = write_start.elapsed();
    let frames = wal.last_index().0;
    drop(wal);
    println!("## Recovery scan");
    println!();
    println!(
        "Wrote {frames} frames ({} MiB of segments) in {:.2} s ({:.0} frames/s, batches of 256, buffered).",
        std::fs::read_dir(&dir).expect("list").count() as u64 * (WalOptions::default().segment_bytes >> 20),
        write_elapsed.as_secs_f64(),
        frames as f64 / write_elapsed.as_secs_f64()
    );
    println!();
    println!("| run | scanned bytes | frames | seconds | GB/s |");
    println!("|---|---|---|---|---|");
    for entry in std::fs::read_dir(&dir).expect("list") {
        drop_from_page_cache(&entry.expect("entry").path());
    }
    for run in ["cold (pages dropped)", "warm 1", "warm 2", "warm 3"] {
        let (elapsed, bytes, entries) = scan_once(&dir);
        assert_eq!(entries, frames, "the scan recovers every frame");
        println!(
            "| {run} | {bytes} | {entries} | {:.3} | {:.2} |",
            elapsed.as_secs_f64(),
            bytes as f64 / elapsed.as_secs_f64() / 1e9
        );
    }
    println!();
    std::fs::remove_dir_all(&dir).expect("clean up");
}

fn main() {
    let args = parse_args();
    println!(
        "# wal_bench: frame header {FRAME_HEADER_BYTES} B, frame {} B, segment {} MiB",
        frame_bytes(PAYLOAD_BYTES),
        WalOptions::default().segment_bytes >> 20
    );
    println!();
    group_commit_table(&args);
    if args.scan_mib > 0 {
        scan_table(&args);
    }
}
