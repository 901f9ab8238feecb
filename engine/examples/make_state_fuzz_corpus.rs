//! Writes the small corpus of the state fuzz targets (`operation_decode`,
//! `snapshot_load`) that `tests/fuzz_corpus.rs` replays on stable Rust and
//! that seeds the cargo-fuzz targets in `fuzz/`.
//!
//! Regenerate it from the repository root with
//!
//! ```text
//! cargo run -p keel-engine --example make_state_fuzz_corpus
//! ```
//!
//! The output is deterministic. The generator first removes the files it owns
//! (names starting with `valid-` or `bad-`) from
//! `engine/tests/corpus/{operation_decode,snapshot_load}/` and leaves every
//! other file there alone, such as reproducers of crashes the fuzzer found.
//!
//! Naming, which the replay test checks:
//! - `operation_decode/valid-*`: an operation as the log holds it, of every
//!   kind; it must decode. `bad-*`: a nested batch, a cut or overlong entry, a
//!   claimed length beyond the bytes; it must not decode.
//! - `snapshot_load/valid-keys-N-*`: a snapshot written by `SnapshotWriter`;
//!   it must load with N keys. `bad-*`: such a snapshot cut short or with one
//!   bit flipped; it must be refused.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use keel_engine::fuzzing;
use keel_engine::operation::{Operation, SingleOp};
use keel_engine::snapshot::{Item, SnapshotMeta, SnapshotWriter};
use keel_wal::{codec, run_ready, LogIndex, MemStorage, Storage, Term, BLOCK_BYTES};

/// Name prefixes of the files this generator owns.
const OWNED_PREFIXES: [&str; 2] = ["valid-", "bad-"];
/// Nesting depth of the deeply nested batch: deep enough that decoding it
/// recursively would show, small enough for the corpus.
const NESTED_BATCH_DEPTH: usize = 1_000;
/// A claimed length far beyond any corpus input (512 MiB), below bincode's
/// limit so that only the input's end refuses it.
const CLAIMED_BYTES: u32 = 1 << 29;

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let operations = operation_inputs();
    for (name, input) in &operations {
        let decoded = fuzzing::operation_decode(input);
        assert_eq!(decoded, name.starts_with("valid-"), "{name}");
    }
    let snapshots = snapshot_inputs();
    for (name, input) in &snapshots {
        let keys = fuzzing::snapshot_load(input);
        match keys {
            Some(keys) => assert!(name.starts_with(&format!("valid-keys-{keys}-")), "{name}"),
            None => assert!(name.starts_with("bad-"), "{name}"),
        }
    }
    write_dir(&corpus.join("operation_decode"), &operations);
    write_dir(&corpus.join("snapshot_load"), &snapshots);
}

fn single_ops() -> Vec<SingleOp> {
    vec![
        SingleOp::Set {
            key: b"user:1".to_vec(),
            value: b"hello".to_vec(),
            expire_at_unix_ms: None,
        },
        SingleOp::Set {
            key: b"\x00\xff".to_vec(),
            value: vec![7; 300],
            expire_at_unix_ms: Some(1_700_000_000_000),
        },
        SingleOp::Delete {
            keys: vec![b"a".to_vec(), Vec::new(), b"user:1".to_vec()],
        },
        SingleOp::Expire {
            key: b"user:1".to_vec(),
            at_unix_ms: 1_700_000_005_000,
        },
        SingleOp::Persist {
            key: b"user:1".to_vec(),
        },
        SingleOp::FlushAll,
    ]
}

/// Operations of every kind as the log holds them, and bytes that must not
/// decode.
fn operation_inputs() -> BTreeMap<String, Vec<u8>> {
    let singles = single_ops();
    let mut valid: Vec<Operation> = singles.iter().cloned().map(Operation::from).collect();
    valid.push(Operation::Batch { ops: Vec::new() });
    // RENAME's batch, then every kind in one batch, then more than 250 (a
    // count that takes a varint of three bytes).
    valid.push(Operation::Batch {
        ops: vec![
            SingleOp::Delete {
                keys: vec![b"from".to_vec()],
            },
            SingleOp::Set {
                key: b"to".to_vec(),
                value: b"v".to_vec(),
                expire_at_unix_ms: Some(5),
            },
        ],
    });
    valid.push(Operation::Batch {
        ops: singles.clone(),
    });
    valid.push(Operation::Batch {
        ops: (0..300u32)
            .map(|i| SingleOp::Set {
                key: i.to_le_bytes().to_vec(),
                value: Vec::new(),
                expire_at_unix_ms: None,
            })
            .collect(),
    });
    let mut inputs = BTreeMap::new();
    for (position, op) in valid.iter().enumerate() {
        let bytes = codec::encode(op).expect("an operation encodes");
        let name = op.name();
        inputs.insert(
            format!("bad-cut-{position:02}-{name}"),
            bytes[..bytes.len() - 1].to_vec(),
        );
        let mut overlong = bytes.clone();
        overlong.push(0);
        inputs.insert(format!("bad-trailing-{position:02}-{name}"), overlong);
        inputs.insert(format!("valid-{position:02}-{name}"), bytes);
    }
    let claimed = CLAIMED_BYTES.to_le_bytes();
    // bincode's varint: 252 announces a u32.
    let claim = |prefix: &[u8]| [prefix, &[252], &claimed].concat();
    let mut deep = [5, 1].repeat(NESTED_BATCH_DEPTH);
    deep.push(4);
    inputs.extend([
        ("bad-nested-batch".to_owned(), vec![5, 1, 5, 0]),
        ("bad-nested-batch-deep".to_owned(), deep),
        ("bad-unknown-variant".to_owned(), vec![6]),
        ("bad-empty".to_owned(), Vec::new()),
        ("bad-claimed-key".to_owned(), claim(&[0])),
        ("bad-claimed-keys".to_owned(), claim(&[1])),
        ("bad-claimed-ops".to_owned(), claim(&[5])),
    ]);
    inputs
}

/// The bytes of a snapshot holding `items`, with a chunk ending after each
/// group of `items`.
fn snapshot_file(groups: &[&[Item<'_>]]) -> Vec<u8> {
    let storage = MemStorage::new();
    let meta = SnapshotMeta {
        shard: 1,
        last_index: LogIndex(42),
        last_term: Term(3),
    };
    run_ready(async {
        let mut writer = SnapshotWriter::create(storage.clone(), meta).await?;
        for group in groups {
            for (key, value, expire) in *group {
                writer.push(key, value, *expire);
            }
            writer.flush().await?;
        }
        writer.finish().await
    })
    .expect("memory writes succeed");
    let names = storage.list().expect("memory lists");
    let [name] = names.as_slice() else {
        panic!("one snapshot file, not {names:?}");
    };
    storage.contents(name).expect("the snapshot exists")
}

/// Snapshots as `SnapshotWriter` writes them, and some cut short or with a
/// bit flipped.
fn snapshot_inputs() -> BTreeMap<String, Vec<u8>> {
    let big_value = vec![0xa5; BLOCK_BYTES + 1000];
    let small: &[Item<'_>] = &[
        (b"user:1", b"hello", None),
        (b"", b"", Some(1_700_000_000_000)),
        (b"\xff\x00", b"v", Some(0)),
    ];
    let large: &[Item<'_>] = &[(b"big", &big_value, None)];
    let tail: &[Item<'_>] = &[(b"last", b"x", Some(u64::MAX - 1))];
    let mut inputs = BTreeMap::from([
        ("valid-keys-0-empty".to_owned(), snapshot_file(&[])),
        ("valid-keys-3-small".to_owned(), snapshot_file(&[small])),
        (
            "valid-keys-5-three-chunks".to_owned(),
            snapshot_file(&[small, large, tail]),
        ),
    ]);
    let bytes = snapshot_file(&[small]);
    let len = bytes.len();
    for cut in [
        0,
        1,
        BLOCK_BYTES,
        len - BLOCK_BYTES + 100,
        len - 32,
        len - 1,
    ] {
        inputs.insert(format!("bad-cut-{cut:05}-small"), bytes[..cut].to_vec());
    }
    // The header's magic, last index, checksum and padding; a chunk's length
    // and a record's key; the zeros before the trailer; the trailer's count,
    // chunks checksum and magic.
    let flips = [
        0,
        17,
        33,
        100,
        BLOCK_BYTES,
        BLOCK_BYTES + 8 + 16,
        len - 100,
        len - 32,
        len - 16,
        len - 1,
    ];
    for at in flips {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x04;
        inputs.insert(format!("bad-flip-{at:05}-small"), flipped);
    }
    inputs
}

/// Replaces the files this generator owns in `dir` with `inputs`.
fn write_dir(dir: &Path, inputs: &BTreeMap<String, Vec<u8>>) {
    fs::create_dir_all(dir).expect("create the corpus directory");
    for entry in fs::read_dir(dir).expect("list the corpus directory") {
        let path = entry.expect("directory entry").path();
        let owned = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| OWNED_PREFIXES.iter().any(|prefix| name.starts_with(prefix)));
        if owned {
            fs::remove_file(&path).expect("remove a stale corpus file");
        }
    }
    for (name, bytes) in inputs {
        fs::write(dir.join(name), bytes).expect("write a corpus file");
    }
}
