//! The wire format's properties over arbitrary messages: every message
//! round-trips, and every truncation and every single-bit flip of a valid
//! frame is a typed error, never a panic and never a different message.

use std::collections::BTreeSet;

use keel_replication::codec::{
    self, DecodeError, EncodeError, ENTRIES_PER_MESSAGE_MAX, FRAME_HEADER_BYTES, MEMBERS_MAX,
    MESSAGE_BYTES_MAX,
};
use keel_replication::fuzzing::{decode_message, forge_checksums};
use keel_replication::{
    AppendResult, Entry, EntryId, EntryPayload, Envelope, LogIndex, Membership, Message, NodeId,
    SnapshotMeta, Term,
};
use proptest::prelude::*;

fn entry_id() -> impl Strategy<Value = EntryId> {
    (any::<u64>(), any::<u64>()).prop_map(|(term, index)| EntryId::new(term, index))
}

fn members() -> impl Strategy<Value = BTreeSet<NodeId>> {
    proptest::collection::btree_set(any::<u64>().prop_map(NodeId), 0..6)
}

fn membership() -> impl Strategy<Value = Membership> {
    (members(), members()).prop_map(|(voters, learners)| Membership { voters, learners })
}

fn payload() -> impl Strategy<Value = EntryPayload> {
    prop_oneof![
        Just(EntryPayload::Noop),
        proptest::collection::vec(any::<u8>(), 0..40)
            .prop_map(|bytes| EntryPayload::Command(bytes.into())),
        membership().prop_map(|membership| EntryPayload::Membership(Box::new(membership))),
    ]
}

/// An append as a leader sends it: entries follow `prev` without gaps, their
/// terms never decrease and never pass the leader's.
fn append() -> impl Strategy<Value = (Term, Message)> {
    (
        0..u64::MAX / 2,
        0..u64::MAX / 2,
        proptest::collection::vec((0..3u64, payload()), 0..6),
        any::<u64>(),
        any::<u64>(),
        0..3u64,
    )
        .prop_map(
            |(prev_term, prev_index, steps, commit, read_round, above)| {
                let prev = EntryId::new(prev_term, prev_index);
                let mut term = prev_term;
                let mut entries = Vec::new();
                for (offset, (step, payload)) in steps.into_iter().enumerate() {
                    term += step;
                    let id = EntryId::new(term, prev_index + 1 + offset as u64);
                    entries.push(Entry { id, payload });
                }
                let message = Message::Append {
                    prev,
                    entries,
                    commit: LogIndex(commit),
                    read_round,
                };
                (Term(term + above), message)
            },
        )
}

fn other_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        entry_id().prop_map(|last| Message::PreVote { last }),
        any::<bool>().prop_map(|granted| Message::PreVoteReply { granted }),
        (entry_id(), any::<bool>()).prop_map(|(last, transfer)| Message::Vote { last, transfer }),
        any::<bool>().prop_map(|granted| Message::VoteReply { granted }),
        (entry_id(), any::<bool>(), any::<u64>()).prop_map(|(id, ok, read_round)| {
            let result = if ok {
                AppendResult::Ok { matched: id }
            } else {
                AppendResult::Reject { hint: id }
            };
            Message::AppendReply { result, read_round }
        }),
        (
            entry_id(),
            membership(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<bool>()
        )
            .prop_map(|(last, membership, offset, data, done)| Message::Snapshot {
                meta: SnapshotMeta { last, membership },
                offset,
                data,
                done,
            }),
        (entry_id(), any::<u64>(), any::<bool>()).prop_map(|(last, received, installed)| {
            Message::SnapshotReply {
                last,
                received,
                installed,
            }
        }),
        Just(Message::TimeoutNow),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    let message = prop_oneof![
        append(),
        (any::<u64>(), other_message()).prop_map(|(term, message)| (Term(term), message)),
    ];
    (any::<u64>(), any::<u64>(), message).prop_map(|(from, to, (term, message))| Envelope {
        from: NodeId(from),
        to: NodeId(to),
        term,
        message,
    })
}

proptest! {
    #[test]
    fn every_message_round_trips(envelope in envelope()) {
        let bytes = codec::encode(&envelope).expect("encodes");
        let header: [u8; FRAME_HEADER_BYTES] = bytes[..FRAME_HEADER_BYTES].try_into().unwrap();
        prop_assert_eq!(codec::frame_bytes(&header), Ok(bytes.len()));
        prop_assert_eq!(codec::decode(&bytes), Ok(envelope.clone()));
        let mut stream = vec![0xAB];
        codec::encode_into(&envelope, &mut stream).expect("encodes");
        prop_assert_eq!(&stream[1..], &bytes[..], "encode_into appends the same frame");
    }

    #[test]
    fn every_truncation_is_an_error(envelope in envelope()) {
        let bytes = codec::encode(&envelope).expect("encodes");
        for length in 0..bytes.len() {
            prop_assert!(codec::decode(&bytes[..length]).is_err(), "cut at {}", length);
        }
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(codec::decode(&longer).is_err(), "a byte appended");
    }

    #[test]
    fn every_bit_flip_is_an_error(envelope in envelope()) {
        let bytes = codec::encode(&envelope).expect("encodes");
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(codec::decode(&flipped).is_err(), "bit {} flipped", bit);
        }
    }

    /// With the frame's checksum forged, a flipped bit inside an entry is
    /// still caught by the entry's own checksum (or by a structural check),
    /// never accepted as another entry.
    #[test]
    fn an_entry_flip_behind_a_forged_frame_checksum_is_an_error(
        (term, message) in append(),
        bit in any::<prop::sample::Index>(),
    ) {
        let envelope = Envelope { from: NodeId(1), to: NodeId(2), term, message };
        let bytes = codec::encode(&envelope).expect("encodes");
        let entries_start = FRAME_HEADER_BYTES + 24 + 36;
        prop_assume!(bytes.len() > entries_start);
        let bit = entries_start * 8 + bit.index((bytes.len() - entries_start) * 8);
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let crc = crc32fast::hash(&flipped[8..]);
        flipped[4..8].copy_from_slice(&crc.to_le_bytes());
        prop_assert!(codec::decode(&flipped).is_err(), "bit {} flipped", bit);
    }
}

proptest! {
    /// The fuzz target's checks (`fuzzing::decode_message`: no panic, what
    /// decodes re-encodes to the same bytes, again with checksums forged) on
    /// valid frames with a few bytes overwritten, so that the structure
    /// behind the forged checksums meets damage on stable Rust too.
    #[test]
    fn damaged_frames_pass_the_fuzz_targets_checks(
        envelope in envelope(),
        damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = codec::encode(&envelope).expect("encodes");
        for (at, byte) in damage {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        decode_message(&bytes);
    }

    #[test]
    fn arbitrary_bytes_pass_the_fuzz_targets_checks(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        prop_assert!(!decode_message(&bytes) || bytes.len() >= FRAME_HEADER_BYTES);
    }
}

fn append_of(entries: Vec<Entry>) -> Envelope {
    Envelope {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(5),
        message: Message::Append {
            prev: EntryId::new(1, 10),
            entries,
            commit: LogIndex(10),
            read_round: 3,
        },
    }
}

fn command(term: u64, index: u64, bytes: &[u8]) -> Entry {
    Entry {
        id: EntryId::new(term, index),
        payload: EntryPayload::Command(bytes.into()),
    }
}

#[test]
fn a_damaged_entry_is_refused_by_its_own_checksum() {
    let bytes = codec::encode(&append_of(vec![command(2, 11, b"set a 1")])).unwrap();
    let mut damaged = bytes.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x20;
    forge_checksums(&mut damaged);
    // forge_checksums rewrites the entry checksums too: restore the original
    // entry checksum so that only the frame's is forged.
    let entry_crc_at = FRAME_HEADER_BYTES + 24 + 36;
    damaged[entry_crc_at..entry_crc_at + 4].copy_from_slice(&bytes[entry_crc_at..entry_crc_at + 4]);
    let crc = crc32fast::hash(&damaged[8..]);
    damaged[4..8].copy_from_slice(&crc.to_le_bytes());
    assert!(
        matches!(codec::decode(&damaged), Err(DecodeError::EntryChecksum { id, .. }) if id == EntryId::new(2, 11)),
        "{:?}",
        codec::decode(&damaged)
    );
}

#[test]
fn entries_that_do_not_follow_prev_are_refused() {
    let cases = [
        vec![command(2, 12, b"gap")],
        vec![command(0, 11, b"term below prev")],
        vec![command(6, 11, b"term above the leader's")],
        vec![command(3, 11, b"a"), command(2, 12, b"term goes back")],
    ];
    for entries in cases {
        let bytes = codec::encode(&append_of(entries.clone())).unwrap();
        assert!(
            matches!(codec::decode(&bytes), Err(DecodeError::EntryOrder { .. })),
            "{entries:?}"
        );
    }
}

#[test]
fn a_claimed_entry_count_beyond_the_bytes_is_refused_before_allocating() {
    let mut bytes = codec::encode(&append_of(Vec::new())).unwrap();
    let count_at = FRAME_HEADER_BYTES + 24 + 32;
    bytes[count_at..count_at + 4].copy_from_slice(&ENTRIES_PER_MESSAGE_MAX.to_le_bytes());
    forge_checksums(&mut bytes);
    assert!(matches!(
        codec::decode(&bytes),
        Err(DecodeError::Truncated { .. })
    ));
    bytes[count_at..count_at + 4].copy_from_slice(&(ENTRIES_PER_MESSAGE_MAX + 1).to_le_bytes());
    forge_checksums(&mut bytes);
    assert_eq!(
        codec::decode(&bytes),
        Err(DecodeError::TooManyEntries {
            count: ENTRIES_PER_MESSAGE_MAX + 1
        })
    );
}

#[test]
fn a_claimed_frame_beyond_the_bound_is_refused_from_its_header() {
    let mut bytes = codec::encode(&append_of(Vec::new())).unwrap();
    bytes[12..16].copy_from_slice(&(MESSAGE_BYTES_MAX as u32).to_le_bytes());
    let header: [u8; FRAME_HEADER_BYTES] = bytes[..FRAME_HEADER_BYTES].try_into().unwrap();
    assert_eq!(
        codec::frame_bytes(&header),
        Err(DecodeError::TooLarge {
            bytes: MESSAGE_BYTES_MAX + FRAME_HEADER_BYTES
        })
    );
}

#[test]
fn members_out_of_order_and_too_many_are_refused_or_not_encoded() {
    let meta = SnapshotMeta {
        last: EntryId::new(1, 1),
        membership: Membership {
            voters: [NodeId(1), NodeId(2)].into(),
            learners: BTreeSet::new(),
        },
    };
    let envelope = Envelope {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(1),
        message: Message::Snapshot {
            meta: meta.clone(),
            offset: 0,
            data: Vec::new(),
            done: true,
        },
    };
    let mut bytes = codec::encode(&envelope).unwrap();
    // Swap the two voter ids (at the body's offset 16 + 4) so they descend.
    let voters_at = FRAME_HEADER_BYTES + 24 + 16 + 4;
    bytes[voters_at] = 2;
    bytes[voters_at + 8] = 1;
    forge_checksums(&mut bytes);
    assert!(matches!(
        codec::decode(&bytes),
        Err(DecodeError::MembersOrder { .. })
    ));
    let crowd = Membership {
        voters: (0..u64::from(MEMBERS_MAX) + 1).map(NodeId).collect(),
        learners: BTreeSet::new(),
    };
    let too_many = Envelope {
        message: Message::Snapshot {
            meta: SnapshotMeta {
                membership: crowd,
                ..meta
            },
            offset: 0,
            data: Vec::new(),
            done: true,
        },
        ..envelope
    };
    let mut out = vec![7];
    assert_eq!(
        codec::encode_into(&too_many, &mut out),
        Err(EncodeError::TooManyMembers {
            count: MEMBERS_MAX as usize + 1
        })
    );
    assert_eq!(out, vec![7], "a failed encode leaves the buffer as it was");
}
