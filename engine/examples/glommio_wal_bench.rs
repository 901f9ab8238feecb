//! The WAL on glommio against the disk's own ceiling. Prints measured figures;
//! asserts nothing.
//!
//! ```text
//! cargo run --release -p keel-engine --example glommio_wal_bench -- [--seconds S] [--spin-us US]
//! ```
//!
//! On one executor built as the server builds its cores' (floating), optionally
//! spinning `--spin-us` before it parks, in a temporary directory
//! under the current one, for S seconds each (default 3) and for the bytes one
//! WAL batch of 1 and of 256 100-byte frames writes:
//! - `std`: blocking O_DIRECT pwrite + fdatasync into a zero-filled file
//!   (through `StdFile`, which for an aligned buffer is exactly those calls);
//! - `glommio`: `DmaFile::write_at` + `fdatasync` into a zero-filled file;
//! - `glommio O_DSYNC`: the same file opened `O_DSYNC`, `write_at` alone (a
//!   write that is durable when it completes: a FUA write, or a write and a
//!   flush, as the device allows), to weigh one round trip against two;
//! - `WAL`: `Wal::append` x batch, then `Wal::sync`, over `GlommioStorage`
//!   (a sync that rolls over zero-fills the new segment).

use std::path::Path;
use std::time::{Duration, Instant};

use glommio::io::{DmaFile, OpenOptions};
use keel_engine::glommio_disk::{executor_builder, GlommioStorage};
use keel_wal::frame::frame_bytes;
use keel_wal::{run_ready, StdStorage, Storage, StorageFile, Term, Wal, WalOptions, BLOCK_BYTES};

const PAYLOAD_BYTES: usize = 100;
const BATCH_SIZES: [usize; 2] = [1, 256];
/// Size of the zero-filled file the raw loops write round.
const RAW_FILE_BYTES: u64 = 64 << 20;

/// Per-sync latencies of one run.
struct Run {
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Run {
    fn syncs_per_second(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_us(&mut self, percent: usize) -> u64 {
        self.latencies_us.sort_unstable();
        let at = (self.latencies_us.len() * percent / 100).min(self.latencies_us.len() - 1);
        self.latencies_us[at]
    }
}

/// Runs `sync_once` until `seconds` have passed, timing each call.
async fn timed<F: std::future::Future<Output = ()>>(
    seconds: f64,
    mut sync_once: impl FnMut() -> F,
) -> Run {
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut latencies_us = Vec::new();
    while start.elapsed() < budget {
        let before = Instant::now();
        sync_once().await;
        latencies_us.push(before.elapsed().as_micros() as u64);
    }
    Run {
        elapsed: start.elapsed(),
        latencies_us,
    }
}

/// The bytes one WAL batch of `batch` frames writes: frames padded to a block.
fn batch_write_bytes(batch: usize) -> usize {
    (batch * frame_bytes(PAYLOAD_BYTES)).next_multiple_of(BLOCK_BYTES)
}

async fn run_std(dir: &Path, write_bytes: usize, seconds: f64) -> Run {
    let storage = StdStorage::with_direct_io(dir);
    let mut file = storage.create("std.raw").await.expect("create");
    file.preallocate(RAW_FILE_BYTES).await.expect("zero-fill");
    file.sync().await.expect("sync the zero-fill");
    let backing = vec![0xab; write_bytes + BLOCK_BYTES];
    let start = backing.as_ptr().align_offset(BLOCK_BYTES);
    let buffer = &backing[start..start + write_bytes];
    let mut offset = 0;
    let run = timed(seconds, || {
        if offset + write_bytes as u64 > RAW_FILE_BYTES {
            offset = 0;
        }
        run_ready(file.write_at(buffer, offset)).expect("pwrite");
        run_ready(file.sync()).expect("fdatasync");
        offset += write_bytes as u64;
        std::future::ready(())
    })
    .await;
    storage.remove("std.raw").await.expect("remove");
    run
}

async fn run_glommio_raw(dir: &Path, write_bytes: usize, seconds: f64) -> Run {
    run_glommio_raw_with(dir, write_bytes, seconds, false).await
}

async fn run_glommio_dsync(dir: &Path, write_bytes: usize, seconds: f64) -> Run {
    run_glommio_raw_with(dir, write_bytes, seconds, true).await
}

async fn run_glommio_raw_with(dir: &Path, write_bytes: usize, seconds: f64, dsync: bool) -> Run {
    let storage = GlommioStorage::new(dir);
    let mut filled = storage.create("glommio.raw").await.expect("create");
    filled.preallocate(RAW_FILE_BYTES).await.expect("zero-fill");
    filled.sync().await.expect("sync the zero-fill");
    drop(filled);
    let file: DmaFile = OpenOptions::new()
        .write(true)
        .custom_flags(if dsync { libc::O_DSYNC } else { 0 })
        .dma_open(dir.join("glommio.raw"))
        .await
        .expect("open");
    let file = &file;
    let mut offset = 0;
    let run = timed(seconds, || {
        if offset + write_bytes as u64 > RAW_FILE_BYTES {
            offset = 0;
        }
        let at = offset;
        offset += write_bytes as u64;
        async move {
            let mut buffer = file.alloc_dma_buffer(write_bytes);
            buffer.as_bytes_mut().fill(0xab);
            let written = file.write_at(buffer, at).await.expect("write");
            assert_eq!(written, write_bytes, "a short write");
            if !dsync {
                file.fdatasync().await.expect("fdatasync");
            }
        }
    })
    .await;
    storage.remove("glommio.raw").await.expect("remove");
    run
}

// One task runs the closure, one call at a time: no other borrow can meet
// the one held across the sync.
#[allow(clippy::await_holding_refcell_ref)]
async fn run_wal(dir: &Path, batch: usize, seconds: f64) -> (Run, usize) {
    let wal_dir = dir.join("wal");
    std::fs::create_dir(&wal_dir).expect("create the WAL directory");
    let (wal, _) = Wal::open(GlommioStorage::new(&wal_dir), WalOptions::default())
        .await
        .expect("open the WAL");
    let wal = std::cell::RefCell::new(wal);
    let payload = vec![0xab; PAYLOAD_BYTES];
    let run = timed(seconds, || async {
        let mut wal = wal.borrow_mut();
        for _ in 0..batch {
            wal.append(Term(1), &payload).expect("append");
        }
        wal.sync().await.expect("sync");
    })
    .await;
    let segments = wal.borrow().log_map().segments.len();
    std::fs::remove_dir_all(&wal_dir).expect("clean up");
    (run, segments)
}

fn row(name: &str, batch: usize, run: &mut Run) -> f64 {
    let syncs = run.syncs_per_second();
    println!(
        "| {name} | {batch} | {} | {}/{} | {syncs:.0} | {:.0} |",
        batch_write_bytes(batch),
        run.percentile_us(50),
        run.percentile_us(99),
        syncs * batch as f64,
    );
    syncs
}

struct Args {
    seconds: f64,
    spin_us: Option<u64>,
}

fn parse_args() -> Args {
    let mut args = Args {
        seconds: 3.0,
        spin_us: None,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(flag) = iter.next() {
        let value = iter
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => args.seconds = value.parse().expect("--seconds takes a number"),
            "--spin-us" => args.spin_us = Some(value.parse().expect("--spin-us takes a number")),
            other => panic!("unknown flag {other}; see the doc comment of glommio_wal_bench.rs"),
        }
    }
    args
}

fn main() {
    let args = parse_args();
    let seconds = args.seconds;
    let mut builder = executor_builder(0);
    if let Some(spin_us) = args.spin_us {
        builder = builder.spin_before_park(Duration::from_micros(spin_us));
    }
    let dir = tempfile::tempdir_in(".").expect("a temp dir under the current directory");
    let path = dir.path().to_path_buf();
    let handle = builder
    .spawn(move || async move {
        println!(
            "# glommio_wal_bench: {PAYLOAD_BYTES}-byte payloads, {seconds} s per run, --spin-us {:?}, in {}",
            args.spin_us,
            path.display()
        );
        println!();
        println!("| run | frames/sync | bytes/sync | p50/p99 us per sync | syncs/s | frames/s |");
        println!("|---|---|---|---|---|---|");
        let mut ratios = Vec::new();
        for batch in BATCH_SIZES {
            let bytes = batch_write_bytes(batch);
            let std = row(
                "std O_DIRECT",
                batch,
                &mut run_std(&path, bytes, seconds).await,
            );
            let glommio = row(
                "glommio DmaFile",
                batch,
                &mut run_glommio_raw(&path, bytes, seconds).await,
            );
            row(
                "glommio DmaFile O_DSYNC, no fdatasync",
                batch,
                &mut run_glommio_dsync(&path, bytes, seconds).await,
            );
            let (mut wal, segments) = run_wal(&path, batch, seconds).await;
            let wal = row(
                &format!("WAL on GlommioStorage ({segments} segments)"),
                batch,
                &mut wal,
            );
            ratios.push((batch, wal / std, glommio / std));
        }
        println!();
        for (batch, wal, glommio) in ratios {
            println!(
                "{batch} frames/sync: WAL/std syncs {:.0}%, glommio/std syncs {:.0}%",
                wal * 100.0,
                glommio * 100.0
            );
        }
    })
    .expect("start the executor");
    handle.join().expect("the bench thread");
}
