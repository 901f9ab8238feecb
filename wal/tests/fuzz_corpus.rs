//! Replays the committed fuzz corpus on stable Rust through the same entry
//! points the cargo-fuzz targets call, so every `cargo test` runs what the
//! fuzzer was seeded with and every crash it found (see docs/FUZZING.md).
//!
//! Besides "no panic", the file names carry expectations that a broken decoder
//! or scan would miss (`examples/make_fuzz_corpus.rs` writes them):
//! `valid-*` frames decode, `bad-*` frames do not, and a `log-frames-N-*`
//! segment keeps exactly N frames. Other names (reproducers of crashes the
//! fuzzer found) must only not panic.

use std::fs;
use std::path::PathBuf;

use keel_wal::fuzzing::{frame_decode, segment_scan};

/// Every file in one corpus directory, as (name, bytes), sorted by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target);
    let mut inputs: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .expect("corpus file names are UTF-8")
                .to_owned();
            let bytes = fs::read(&path).expect("read a corpus file");
            (name, bytes)
        })
        .collect();
    inputs.sort();
    inputs
}

#[test]
fn frame_decode_corpus_replays() {
    let inputs = corpus("frame_decode");
    let valid = inputs.iter().filter(|(name, _)| name.starts_with("valid-"));
    let bad = inputs.iter().filter(|(name, _)| name.starts_with("bad-"));
    assert!(valid.count() > 0, "the corpus holds valid frames");
    assert!(bad.count() > 0, "the corpus holds damaged frames");
    for (name, bytes) in &inputs {
        let accepted = frame_decode(bytes);
        if name.starts_with("valid-") {
            assert!(accepted, "{name}: a valid frame was rejected");
        }
        if name.starts_with("bad-") {
            assert!(!accepted, "{name}: a damaged frame was accepted");
        }
    }
}

/// The N of a `log-frames-N-*` name.
fn expected_frames(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("log-frames-")?;
    let (count, _) = rest.split_once('-')?;
    Some(count.parse().expect("log-frames-N- names carry a number"))
}

#[test]
fn segment_scan_corpus_replays() {
    let inputs = corpus("segment_scan");
    let from_logs = inputs
        .iter()
        .filter(|(name, _)| expected_frames(name).is_some());
    assert!(
        from_logs.count() > 0,
        "the corpus holds segments of real logs"
    );
    for (name, bytes) in &inputs {
        let kept = segment_scan(bytes);
        if let Some(expected) = expected_frames(name) {
            assert_eq!(kept, expected, "{name}: frames the scan kept");
        }
    }
}
