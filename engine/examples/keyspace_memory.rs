//! Memory and insertion rate of one [`Keyspace`]: inserts N keys
//! `key:{i:012}` (16 bytes) with 100-byte values through `apply(Set)`, as the
//! node does, and prints the process RSS before and after. Redis holds the
//! same million keys in about 202 MB of RSS.
//!
//! `cargo run --release -p keel-engine --example keyspace_memory [N]`

use std::time::Instant;

use anyhow::Context;
use keel_engine::keyspace::Keyspace;
use keel_engine::operation::Operation;

const KEYS_DEFAULT: u64 = 1_000_000;
const VALUE_BYTES: usize = 100;
/// The unit of /proc/self/statm (Linux on x86-64 and most aarch64 kernels).
const PAGE_BYTES: u64 = 4096;

fn resident_bytes() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").context("reading /proc/self/statm")?;
    let resident_pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .context("/proc/self/statm has no resident field")?
        .parse()
        .context("/proc/self/statm's resident field is not a number")?;
    Ok(resident_pages * PAGE_BYTES)
}

fn main() -> anyhow::Result<()> {
    let keys = match std::env::args().nth(1) {
        Some(text) => text
            .parse::<u64>()
            .with_context(|| format!("key count {text:?}"))?,
        None => KEYS_DEFAULT,
    };
    let mut keyspace = Keyspace::new();
    let before_bytes = resident_bytes()?;
    let started = Instant::now();
    for index in 0..keys {
        keyspace.apply(&Operation::Set {
            key: format!("key:{index:012}").into_bytes(),
            value: vec![b'x'; VALUE_BYTES],
            expire_at_unix_ms: None,
        });
    }
    let elapsed = started.elapsed();
    let after_bytes = resident_bytes()?;
    let grown_bytes = after_bytes.saturating_sub(before_bytes);
    const MIB: f64 = 1024.0 * 1024.0;
    println!("keys:            {}", keyspace.len());
    println!(
        "data bytes:      {} ({:.1} MiB)",
        keyspace.data_bytes(),
        keyspace.data_bytes() as f64 / MIB
    );
    println!("RSS before:      {:.1} MiB", before_bytes as f64 / MIB);
    println!("RSS after:       {:.1} MiB", after_bytes as f64 / MIB);
    println!(
        "bytes per key:   {:.1} (RSS growth / keys)",
        grown_bytes as f64 / keys.max(1) as f64
    );
    println!(
        "bytes per key:   {:.1} (total RSS / keys)",
        after_bytes as f64 / keys.max(1) as f64
    );
    println!(
        "insertion:       {:.2} s, {:.0} keys/s",
        elapsed.as_secs_f64(),
        keys as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
