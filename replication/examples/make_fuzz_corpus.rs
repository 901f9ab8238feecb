//! Writes the small corpus of the `replication_message` fuzz target that
//! `tests/fuzz_corpus.rs` replays on stable Rust and that seeds the
//! cargo-fuzz target in `fuzz/`.
//!
//! Regenerate it from the repository root with
//!
//! ```text
//! cargo run -p keel-replication --example make_fuzz_corpus
//! ```
//!
//! The output is deterministic. The generator first removes the files it owns
//! (names starting with `valid-` or `bad-`) from
//! `replication/tests/corpus/replication_message/` and leaves every other file
//! there alone, such as reproducers of crashes the fuzzer found.
//!
//! Naming, which the replay test checks: `valid-*` is a message of every kind
//! as a member sends it; it must decode. `bad-*` is such a message cut short,
//! with a byte appended, with one bit flipped, or with a count claiming more
//! than the bytes hold; it must not decode.

use std::fs;
use std::path::Path;

use keel_replication::codec::{self, FRAME_HEADER_BYTES};
use keel_replication::fuzzing::{self, forge_checksums};
use keel_replication::{
    AppendResult, Entry, EntryId, EntryPayload, Envelope, LogIndex, Membership, Message, NodeId,
    SnapshotMeta, Term,
};

/// Name prefixes of the files this generator owns.
const OWNED_PREFIXES: [&str; 2] = ["valid-", "bad-"];
/// Offset of an Append's entry count in its frame.
const APPEND_COUNT_OFFSET: usize = FRAME_HEADER_BYTES + 24 + 32;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/replication_message");
    let inputs = inputs();
    for (name, input) in &inputs {
        let decoded = fuzzing::decode_message(input);
        assert_eq!(decoded, name.starts_with("valid-"), "{name}");
    }
    fs::create_dir_all(&dir).expect("create the corpus directory");
    for entry in fs::read_dir(&dir).expect("list the corpus directory") {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        if OWNED_PREFIXES.iter().any(|prefix| name.starts_with(prefix)) {
            fs::remove_file(&path).expect("remove an owned corpus file");
        }
    }
    for (name, input) in &inputs {
        fs::write(dir.join(name), input).expect("write a corpus file");
    }
    println!("{} inputs in {}", inputs.len(), dir.display());
}

fn membership() -> Membership {
    Membership {
        voters: [NodeId(1), NodeId(2), NodeId(3)].into(),
        learners: [NodeId(4)].into(),
    }
}

fn messages() -> Vec<(&'static str, Term, Message)> {
    let last = EntryId::new(3, 17);
    let entries = vec![
        Entry {
            id: EntryId::new(3, 18),
            payload: EntryPayload::Noop,
        },
        Entry {
            id: EntryId::new(4, 19),
            payload: EntryPayload::Command(b"set key value"[..].into()),
        },
        Entry {
            id: EntryId::new(4, 20),
            payload: EntryPayload::Membership(Box::new(membership())),
        },
        Entry {
            id: EntryId::new(4, 21),
            payload: EntryPayload::Command(vec![0xA5; 300].into()),
        },
    ];
    let append = |entries: Vec<Entry>| Message::Append {
        prev: last,
        entries,
        commit: LogIndex(15),
        read_round: 9,
    };
    vec![
        ("pre-vote", Term(5), Message::PreVote { last }),
        (
            "pre-vote-reply",
            Term(4),
            Message::PreVoteReply { granted: true },
        ),
        (
            "vote",
            Term(5),
            Message::Vote {
                last,
                transfer: false,
            },
        ),
        (
            "vote-transfer",
            Term(5),
            Message::Vote {
                last,
                transfer: true,
            },
        ),
        ("vote-reply", Term(5), Message::VoteReply { granted: false }),
        ("heartbeat", Term(4), append(Vec::new())),
        ("append", Term(4), append(entries)),
        (
            "append-reply-ok",
            Term(4),
            Message::AppendReply {
                result: AppendResult::Ok {
                    matched: EntryId::new(4, 21),
                },
                read_round: 9,
            },
        ),
        (
            "append-reply-reject",
            Term(4),
            Message::AppendReply {
                result: AppendResult::Reject {
                    hint: EntryId::new(2, 12),
                },
                read_round: 0,
            },
        ),
        (
            "snapshot",
            Term(4),
            Message::Snapshot {
                meta: SnapshotMeta {
                    last,
                    membership: membership(),
                },
                offset: 4096,
                data: (0..200).map(|byte| byte as u8).collect(),
                done: true,
            },
        ),
        (
            "snapshot-reply",
            Term(4),
            Message::SnapshotReply {
                last,
                received: 4296,
                installed: true,
            },
        ),
        ("timeout-now", Term(4), Message::TimeoutNow),
    ]
}

fn inputs() -> Vec<(String, Vec<u8>)> {
    let mut inputs = Vec::new();
    for (number, (kind, term, message)) in messages().into_iter().enumerate() {
        let envelope = Envelope {
            from: NodeId(1),
            to: NodeId(2),
            term,
            message,
        };
        let bytes = codec::encode(&envelope).expect("corpus messages encode");
        let name = format!("{number:02}-{kind}");
        inputs.push((format!("bad-cut-{name}"), bytes[..bytes.len() - 1].to_vec()));
        let mut longer = bytes.clone();
        longer.push(0);
        inputs.push((format!("bad-trailing-{name}"), longer));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x01;
        inputs.push((format!("bad-flip-last-{name}"), flipped));
        inputs.push((format!("valid-{name}"), bytes));
    }
    let appended = codec::encode(&Envelope {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(4),
        message: Message::Append {
            prev: EntryId::ZERO,
            entries: Vec::new(),
            commit: LogIndex(0),
            read_round: 0,
        },
    })
    .expect("encodes");
    let mut claimed = appended.clone();
    claimed[APPEND_COUNT_OFFSET..APPEND_COUNT_OFFSET + 4]
        .copy_from_slice(&(1u32 << 20).to_le_bytes());
    forge_checksums(&mut claimed);
    inputs.push(("bad-claimed-entries".to_owned(), claimed));
    let mut magic = appended;
    magic[0] ^= 0xFF;
    inputs.push(("bad-magic".to_owned(), magic));
    inputs.push(("bad-empty".to_owned(), Vec::new()));
    inputs.sort();
    inputs
}
