//! Replays the committed fuzz corpus on stable Rust through the same entry
//! points the cargo-fuzz targets call (`keel_engine::fuzzing`), so every
//! `cargo test` runs what the fuzzer was seeded with and every crash it found.
//!
//! Besides "no panic", the file names carry expectations: a `resp_request`
//! input named `ok-N-*` parses to exactly N requests with no error, one named
//! `err-*` ends in a protocol error. Other names (reproducers of crashes the
//! fuzzer found) must only not panic.

use std::fs;
use std::path::PathBuf;

use keel_engine::fuzzing::resp_request;

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

/// The N of an `ok-N-*` name.
fn expected_requests(name: &str) -> Option<usize> {
    let (count, _) = name.strip_prefix("ok-")?.split_once('-')?;
    Some(count.parse().expect("ok-N- names carry a number"))
}

#[test]
fn resp_request_corpus_replays() {
    let inputs = corpus("resp_request");
    assert!(
        inputs.iter().any(|(name, _)| name.starts_with("ok-")),
        "the corpus holds streams that parse"
    );
    assert!(
        inputs.iter().any(|(name, _)| name.starts_with("err-")),
        "the corpus holds streams that fail"
    );
    for (name, bytes) in &inputs {
        let (requests, failed) = resp_request(bytes);
        if let Some(expected) = expected_requests(name) {
            assert_eq!((requests, failed), (expected, false), "{name}");
        }
        if name.starts_with("err-") {
            assert!(failed, "{name}: no protocol error");
        }
    }
}
