//! Writes the small fuzz corpus that `tests/fuzz_corpus.rs` replays on stable
//! Rust and that seeds the cargo-fuzz targets in `fuzz/`.
//!
//! Regenerate it from the repository root with
//!
//! ```text
//! cargo run -p keel-wal --example make_fuzz_corpus
//! ```
//!
//! The output is deterministic. The generator first removes the files it owns
//! (names starting with `valid-`, `bad-` or `log-`) from
//! `wal/tests/corpus/{frame_decode,segment_scan}/` and leaves every other file
//! there alone, such as reproducers of crashes the fuzzer found.
//!
//! Every input comes from real logs, written with [`Wal`] over [`MemStorage`]
//! with [`WalOptions::test_min`]: payloads from empty to the largest allowed,
//! several group commits, segment rollover, a cut, and a torn tail left by a
//! crash after a failed sync (before and after [`Wal::open`] seals it off).
//!
//! Naming, which the replay test checks:
//! - `frame_decode/valid-*`: one whole frame as it lay in a segment; it must decode.
//! - `frame_decode/bad-*`: such a frame with one bit flipped, or cut short;
//!   it must not decode.
//! - `segment_scan/log-frames-N-*`: one segment in the input format of
//!   [`keel_wal::fuzzing::segment_scan`]; its scan must keep exactly N frames.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use keel_wal::frame::FrameHeader;
use keel_wal::memory::SplitMix64;
use keel_wal::recovery::{list_dir, map_segments, recover, SegmentInput};
use keel_wal::scan::{scan_segment, Place, SegmentBytes};
use keel_wal::segment::SEGMENT_HEADER_BYTES;
use keel_wal::{
    fuzzing, run_ready, Faults, FrameKind, LogIndex, MemStorage, Term, Wal, WalOptions,
};

/// Name prefixes of the files this generator owns.
const OWNED_PREFIXES: [&str; 3] = ["valid-", "bad-", "log-"];
/// Payload sizes of the entry frames in the frame corpus: empty, around the
/// 8-byte frame alignment, and at the `test_min` limit of 2048 bytes.
const ENTRY_PAYLOAD_LENS: [u32; 8] = [0, 1, 7, 8, 9, 56, 2047, 2048];
/// Bound that keeps the committed segment corpus small.
const SEGMENTS_MAX: usize = 30;
/// Crash seeds tried to find torn tails (a crash tears each unsynced sector
/// with probability 1/3).
const CRASH_SEEDS_MAX: u64 = 100;

/// One segment of a log, as the disk held it at some moment.
struct SegmentSample {
    /// Which log and moment it comes from, for the file name.
    scenario: String,
    first_index: LogIndex,
    bytes: Vec<u8>,
    /// Valid frames recovery found in it.
    frames: usize,
}

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let segments = sample_logs();
    let mut segment_inputs = BTreeMap::new();
    for sample in &segments {
        let name = format!(
            "log-frames-{}-{}-seg{:03}",
            sample.frames, sample.scenario, sample.first_index.0
        );
        segment_inputs.insert(name, segment_scan_input(sample.first_index, &sample.bytes));
    }
    segment_inputs.extend(damaged_segments(&segments));
    assert!(
        segment_inputs.len() <= SEGMENTS_MAX,
        "keep the corpus small"
    );
    for (name, input) in &segment_inputs {
        let kept = fuzzing::segment_scan(input);
        assert!(
            name.starts_with(&format!("log-frames-{kept}-")),
            "{name}: scan kept {kept}"
        );
    }
    let frame_inputs = frame_inputs(&segments);
    for (name, input) in &frame_inputs {
        assert_eq!(
            fuzzing::frame_decode(input),
            name.starts_with("valid-"),
            "{name}"
        );
    }
    write_dir(&corpus.join("segment_scan"), &segment_inputs);
    write_dir(&corpus.join("frame_decode"), &frame_inputs);
    println!(
        "wrote {} segment_scan and {} frame_decode inputs under {}",
        segment_inputs.len(),
        frame_inputs.len(),
        corpus.display()
    );
}

fn open(disk: &MemStorage) -> Wal<MemStorage> {
    run_ready(Wal::open(disk.clone(), WalOptions::test_min()))
        .expect("the log opens")
        .0
}

/// A payload of `len` bytes that differs from entry to entry.
fn payload(index: LogIndex, len: usize) -> Vec<u8> {
    let mut rng = SplitMix64::new(index.0);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// Appends one entry per length and syncs them as one batch.
fn write_batch(wal: &mut Wal<MemStorage>, term: Term, lengths: &[usize]) {
    for &len in lengths {
        let index = wal.last_index().next();
        wal.append(term, &payload(index, len)).expect("append");
    }
    run_ready(wal.sync()).expect("sync");
}

/// The segments the disk holds now, with the frames recovery finds in each.
fn snapshot(disk: &MemStorage, scenario: &str) -> Vec<SegmentSample> {
    let listing = list_dir(disk).expect("list");
    let inputs: Vec<SegmentInput<Vec<u8>>> = map_segments(disk, &listing).expect("map");
    let payload_bytes_max = WalOptions::test_min().payload_bytes_max;
    let log = recover(&inputs, payload_bytes_max, &mut |_| {}).expect("the log recovers");
    inputs
        .into_iter()
        .zip(&log.segments)
        .map(|(input, state)| SegmentSample {
            scenario: scenario.to_owned(),
            first_index: input.first_index,
            bytes: input.bytes,
            frames: state.frames,
        })
        .collect()
}

fn sample_logs() -> Vec<SegmentSample> {
    let payload_bytes_max = WalOptions::test_min().payload_bytes_max as usize;
    let mut samples = Vec::new();

    // Group commits of varied sizes that roll over several segments.
    let disk = MemStorage::new();
    let mut wal = open(&disk);
    let batches: [&[usize]; 6] = [
        &[0],
        &[1, 7, 8, 9],
        &[payload_bytes_max],
        &[100, 0, 300, payload_bytes_max - 1],
        &[2000, 2000, 2000],
        &[56, 64, 1],
    ];
    for (term, lengths) in (1..).zip(batches) {
        write_batch(&mut wal, Term(term), lengths);
    }
    let appended: usize = batches.iter().map(|lengths| lengths.len()).sum();
    let rollover = snapshot(&disk, "rollover");
    let recovered: usize = rollover.iter().map(|sample| sample.frames).sum();
    assert_eq!(recovered, appended, "every synced entry is a frame");

    // A cut: entries after the cut point leave the log, and the log goes on.
    let last = wal.last_index();
    let cut_at = LogIndex(last.0 - 2);
    run_ready(wal.cut_after(cut_at, LogIndex(0))).expect("cut");
    write_batch(&mut wal, Term(10), &[5, 500]);
    drop(wal);
    // Only the segments the cut changed or made are new.
    let changed: Vec<_> = snapshot(&disk, "cut")
        .into_iter()
        .filter(|sample| rollover.iter().all(|before| before.bytes != sample.bytes))
        .collect();
    samples.extend(rollover);
    samples.extend(changed);

    // A torn tail: the last batch's sync fails and the crash tears what the
    // disk held of it; opening the log again seals it off with a cut frame.
    // One crash per number of frames that survived, so that the cut frame of
    // some repairs lies past the kept frames and voids torn bytes before it.
    let mut crashes = BTreeMap::new();
    for (torn, repaired) in (0..CRASH_SEEDS_MAX).filter_map(torn_tail) {
        crashes.entry(torn.frames).or_insert((torn, repaired));
    }
    assert!(
        crashes.len() >= 2,
        "crashes tear the last batch in different places"
    );
    for (torn, repaired) in crashes.into_values() {
        samples.push(torn);
        samples.push(repaired);
    }
    samples
}

/// Crashes a log during the sync of its last batch with the given seed, and
/// returns the last segment as the crash left it and after [`Wal::open`]
/// repaired it; `None` if this crash left nothing to repair.
fn torn_tail(seed: u64) -> Option<(SegmentSample, SegmentSample)> {
    let disk = MemStorage::new();
    let mut wal = open(&disk);
    // Both batches fit in the first segment's two blocks: a batch that opened
    // a new segment would fail before it wrote a byte.
    write_batch(&mut wal, Term(1), &[10, 20, 30, 40]);
    for len in [700, 0, 1500, 9] {
        let index = wal.last_index().next();
        wal.append(Term(2), &payload(index, len)).expect("append");
    }
    disk.set_faults(Faults {
        fail_sync_after: Some(0),
        ..Faults::default()
    });
    assert!(run_ready(wal.sync()).is_err(), "the injected sync failure");
    drop(wal);
    disk.set_faults(Faults::default());
    disk.crash(seed);
    // The file names tell crashes apart by their seed.
    let torn = snapshot(&disk, &format!("torn{seed}"));
    let (_, report) = run_ready(Wal::open(disk.clone(), WalOptions::test_min())).expect("open");
    report.repaired?;
    let repaired = snapshot(&disk, &format!("repaired{seed}"));
    Some((torn.into_iter().last()?, repaired.into_iter().last()?))
}

/// The input [`fuzzing::segment_scan`] turns back into this segment: the first
/// index as one byte, then the body after the segment header without the
/// trailing zeros, which the harness pads back.
fn segment_scan_input(first_index: LogIndex, segment: &[u8]) -> Vec<u8> {
    let first = u8::try_from(first_index.0).expect("the sample logs stay below index 256");
    let body = &segment[SEGMENT_HEADER_BYTES..];
    let used = body
        .iter()
        .rposition(|byte| *byte != 0)
        .map_or(0, |at| at + 1);
    let mut input = vec![first];
    input.extend_from_slice(&body[..used]);
    input
}

/// The valid frames of a segment, as the scan finds them.
fn frames_of(sample: &SegmentSample) -> Vec<FrameHeader> {
    let segment = SegmentBytes {
        bytes: &sample.bytes,
        first_index: sample.first_index,
        place: Place::Last,
        payload_bytes_max: WalOptions::test_min().payload_bytes_max,
    };
    scan_segment(segment).expect("a real segment header").frames
}

/// Segments damaged where the scan must stop: a flipped byte in a synced
/// frame, and a whole segment read under another segment's name (every frame
/// is then bound elsewhere, so foreign).
fn damaged_segments(samples: &[SegmentSample]) -> Vec<(String, Vec<u8>)> {
    let mut damaged = Vec::new();
    let rollover = samples
        .iter()
        .filter(|sample| sample.scenario == "rollover");
    for sample in rollover.filter(|sample| sample.frames >= 2) {
        let frames = frames_of(sample);
        let victim = frames.len() / 2;
        let mut bytes = sample.bytes.clone();
        // Byte 24 of a header is the low byte of its index: the header
        // checksum no longer holds.
        bytes[frames[victim].offset as usize + 24] ^= 0x01;
        let name = format!("log-frames-{victim}-flipped-seg{:03}", sample.first_index.0);
        damaged.push((name, segment_scan_input(sample.first_index, &bytes)));
    }
    if let Some(sample) = samples.iter().find(|sample| sample.frames > 0) {
        let elsewhere = LogIndex(sample.first_index.0 + 100);
        let name = format!("log-frames-0-renamed-seg{:03}", sample.first_index.0);
        damaged.push((name, segment_scan_input(elsewhere, &sample.bytes)));
    }
    damaged
}

/// Whole frames of varied kinds and sizes, each also with one bit flipped and
/// cut short by a byte.
fn frame_inputs(samples: &[SegmentSample]) -> BTreeMap<String, Vec<u8>> {
    let mut chosen = BTreeMap::new();
    for sample in samples {
        for frame in frames_of(sample) {
            let kind = match frame.kind {
                FrameKind::Entry if ENTRY_PAYLOAD_LENS.contains(&frame.payload_len) => "entry",
                FrameKind::Entry => continue,
                FrameKind::Cut => "cut",
            };
            let start = frame.offset as usize;
            let bytes = sample.bytes[start..start + frame.frame_bytes()].to_vec();
            // One frame per kind and payload size keeps the corpus varied and small.
            let name = format!("{kind}-len{}", frame.payload_len);
            chosen.entry(name).or_insert(bytes);
        }
    }
    let mut rng = SplitMix64::new(1);
    let mut inputs = BTreeMap::new();
    for (name, bytes) in chosen {
        let at = rng.below(bytes.len() as u64) as usize;
        let mut flipped = bytes.clone();
        flipped[at] ^= 1 << rng.below(8);
        inputs.insert(format!("bad-flip{at}-{name}"), flipped);
        let cut = bytes[..bytes.len() - 1].to_vec();
        inputs.insert(format!("bad-short-{name}"), cut);
        inputs.insert(format!("valid-{name}"), bytes);
    }
    inputs
}

/// Replaces the generated files in `dir` with `inputs`.
fn write_dir(dir: &Path, inputs: &BTreeMap<String, Vec<u8>>) {
    fs::create_dir_all(dir).expect("create the corpus directory");
    for entry in fs::read_dir(dir).expect("list the corpus directory") {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        if OWNED_PREFIXES.iter().any(|prefix| name.starts_with(prefix)) {
            fs::remove_file(&path).expect("remove a stale corpus file");
        }
    }
    for (name, bytes) in inputs {
        fs::write(dir.join(name), bytes).expect("write a corpus file");
    }
}
