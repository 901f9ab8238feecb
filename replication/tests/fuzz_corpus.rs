//! Replays the committed fuzz corpus of the message decoder on stable Rust
//! through the entry point the cargo-fuzz target calls
//! (`keel_replication::fuzzing`), so every `cargo test` runs what the fuzzer
//! was seeded with and every crash it found (see docs/FUZZING.md).
//!
//! `valid-*` messages (written by `examples/make_fuzz_corpus.rs`) must decode,
//! and they are the wire format: a message an older build sent must keep
//! decoding, so a change to the format that changes their bytes fails this
//! test. `bad-*` must not decode. Other names (reproducers of crashes the
//! fuzzer found) must only not panic.

use std::fs;
use std::path::PathBuf;

use keel_replication::fuzzing::decode_message;

#[test]
fn replication_message_corpus_replays() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/replication_message");
    let mut inputs: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .expect("corpus file names are UTF-8")
                .to_owned();
            (name, fs::read(&path).expect("read a corpus file"))
        })
        .collect();
    inputs.sort();
    let named = |prefix: &str| {
        inputs
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .count()
    };
    assert!(
        named("valid-") >= 9,
        "the corpus holds a message of every kind"
    );
    assert!(
        named("bad-") > 0,
        "the corpus holds bytes that must not decode"
    );
    for (name, bytes) in &inputs {
        let decoded = decode_message(bytes);
        if name.starts_with("valid-") {
            assert!(decoded, "{name}: a valid message was rejected");
        }
        if name.starts_with("bad-") {
            assert!(!decoded, "{name}: bad bytes decoded");
        }
    }
}
