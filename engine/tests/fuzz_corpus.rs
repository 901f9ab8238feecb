//! Replays the committed fuzz corpus of the engine's decoders on stable Rust
//! through the same entry points the cargo-fuzz targets call
//! (`keel_engine::fuzzing`), so every `cargo test` runs what the fuzzer was
//! seeded with and every crash it found (see docs/FUZZING.md).
//!
//! Besides "no panic", the file names carry expectations that a broken decoder
//! would miss: a `resp_request` input named `ok-N-*` parses to exactly N
//! requests with no error, one named `err-*` ends in a protocol error;
//! `valid-*` operations and snapshots (written by
//! `examples/make_state_fuzz_corpus.rs`) are accepted (a `valid-keys-N-*`
//! snapshot with N keys) and `bad-*` ones refused. The valid operations are
//! also the log's format: an entry written by an older build must keep
//! decoding. A `peer_transport` input named `hello-*` is a handshake message
//! (`bad-hello-*` is not), `frames-N-*` holds N transport frames and no
//! error, `err-*` ends in an error. Other names (reproducers of crashes the fuzzer found) must only
//! not panic.

use std::fs;
use std::path::PathBuf;

use keel_engine::fuzzing::{operation_decode, peer_transport, resp_request, snapshot_load};

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

/// The N of a `<prefix>N-*` name (`ok-N-*`, `frames-N-*`).
fn counted(name: &str, prefix: &str) -> Option<usize> {
    let (count, _) = name.strip_prefix(prefix)?.split_once('-')?;
    Some(count.parse().expect("counted names carry a number"))
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
        if let Some(expected) = counted(name, "ok-") {
            assert_eq!((requests, failed), (expected, false), "{name}");
        }
        if name.starts_with("err-") {
            assert!(failed, "{name}: no protocol error");
        }
    }
}

/// How many inputs are named `valid-*` and `bad-*`.
fn valid_and_bad(inputs: &[(String, Vec<u8>)]) -> (usize, usize) {
    let named = |prefix: &str| {
        inputs
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .count()
    };
    (named("valid-"), named("bad-"))
}

#[test]
fn operation_decode_corpus_replays() {
    let inputs = corpus("operation_decode");
    let (valid, bad) = valid_and_bad(&inputs);
    assert!(valid > 0, "the corpus holds valid operations");
    assert!(bad > 0, "the corpus holds bytes that must not decode");
    for (name, bytes) in &inputs {
        let decoded = operation_decode(bytes);
        if name.starts_with("valid-") {
            assert!(decoded, "{name}: a valid operation was rejected");
        }
        if name.starts_with("bad-") {
            assert!(!decoded, "{name}: bad bytes decoded");
        }
    }
}

/// The N of a `valid-keys-N-*` name.
fn expected_keys(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("valid-keys-")?;
    let (count, _) = rest.split_once('-')?;
    Some(count.parse().expect("valid-keys-N- names carry a number"))
}

#[test]
fn snapshot_load_corpus_replays() {
    let inputs = corpus("snapshot_load");
    let (valid, bad) = valid_and_bad(&inputs);
    assert!(valid > 0, "the corpus holds valid snapshots");
    assert!(bad > 0, "the corpus holds damaged snapshots");
    for (name, bytes) in &inputs {
        let keys = snapshot_load(bytes);
        if name.starts_with("valid-") {
            let expected = expected_keys(name).expect("valid snapshots are named valid-keys-N-");
            assert_eq!(keys, Some(expected), "{name}: keys loaded");
        }
        if name.starts_with("bad-") {
            assert_eq!(keys, None, "{name}: a damaged snapshot loaded");
        }
    }
}

#[test]
fn peer_transport_corpus_replays() {
    let inputs = corpus("peer_transport");
    for prefix in ["hello-", "bad-hello-", "frames-", "err-"] {
        assert!(
            inputs.iter().any(|(name, _)| name.starts_with(prefix)),
            "the corpus holds {prefix}* inputs"
        );
    }
    for (name, bytes) in &inputs {
        let (is_handshake, frames, failed) = peer_transport(bytes);
        if name.starts_with("hello-") {
            assert!(is_handshake, "{name}: not a handshake message");
        }
        if name.starts_with("bad-hello-") {
            assert!(!is_handshake, "{name}: accepted");
        }
        if let Some(expected) = counted(name, "frames-") {
            assert_eq!((frames, failed), (expected, false), "{name}");
        }
        if name.starts_with("err-") {
            assert!(failed, "{name}: no error");
        }
    }
}
