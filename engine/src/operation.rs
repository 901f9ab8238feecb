//! The operations the key-value state machine applies, one per log entry.
//!
//! An [`Operation`] is the payload of a WAL entry, encoded with bincode 2
//! through [`keel_wal::codec`]. bincode names a variant by its position, so
//! variants are only ever appended (never reordered or removed): an old log
//! then still decodes. The WAL frame around the payload carries its checksum.
//!
//! # Encoding
//! bincode's standard configuration: an integer is a varint (below 251 one
//! byte; 251, 252 and 253 announce a little-endian u16, u32 and u64), a
//! variant is its position as a varint followed by its fields in order, a byte
//! string is its length then its bytes, a list its count then its elements,
//! and an `Option` is 0 (none) or 1 then the value.
//!
//! ```text
//! position  variant   fields
//! 0         Set       key, value, expire_at_unix_ms: Option<u64>
//! 1         Delete    keys: list of byte strings
//! 2         Expire    key, at_unix_ms: u64
//! 3         Persist   key
//! 4         FlushAll  (none)
//! 5         Batch     ops: list of operations of positions 0 to 4
//! ```
//!
//! A batch inside a batch (position 5 in `ops`) never was written, and does
//! not decode: [`SingleOp`] has no such variant, so decoding is not recursive
//! and its depth is fixed whatever the bytes say. Every other entry has the
//! bytes it had when `Batch` held operations of any kind (the tests compare
//! with that recursive type, and the committed fuzz corpus holds one of each). Nor does a claimed length
//! make decoding allocate: see `wire` below.
//!
//! # Every operation is a blind write
//! An operation fixes the final state of the keys it names (value and expiry,
//! or absence) without reading them: `INCR` logs the `Set` of the new number,
//! `RENAME` a `Batch` of a `Delete` and a `Set`. The only exceptions, `Expire`
//! and `Persist`, change the expiry of a key that exists and leave its value.
//! So applying a run of operations twice gives what applying it once gives
//! (per key, everything after the first `Set`/`Delete` is a constant, and before
//! it only expiry assignments that do not change whether the key exists). A
//! snapshot may therefore be taken while writes go on ("fuzzy"): replaying the
//! log from the index at which it started yields the exact state.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One change to the key space: a log entry's payload.
///
/// Its first five variants and [`SingleOp`]'s are the same, in the same order,
/// so a single operation has the same bytes as either type; only a `Batch` is
/// not a [`SingleOp`], so a batch cannot hold a batch and decoding never
/// recurses (an entry from a damaged disk or, later, a peer is just bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    Set {
        #[serde(with = "wire::bytes")]
        key: Vec<u8>,
        #[serde(with = "wire::bytes")]
        value: Vec<u8>,
        expire_at_unix_ms: Option<u64>,
    },
    Delete {
        #[serde(with = "wire::byte_lists")]
        keys: Vec<Vec<u8>>,
    },
    Expire {
        #[serde(with = "wire::bytes")]
        key: Vec<u8>,
        at_unix_ms: u64,
    },
    Persist {
        #[serde(with = "wire::bytes")]
        key: Vec<u8>,
    },
    FlushAll,
    /// Several operations applied together, as one log entry (MSET, RENAME,
    /// the writes of a MULTI/EXEC transaction, in order): a crash keeps all
    /// of them or none.
    Batch {
        #[serde(deserialize_with = "wire::growing_seq")]
        ops: Vec<SingleOp>,
    },
}

/// An operation that is not a batch: what a [`Operation::Batch`] holds. Each
/// variant means, and encodes as, the [`Operation`] variant of its name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SingleOp {
    Set {
        #[serde(with = "wire::bytes")]
        key: Vec<u8>,
        #[serde(with = "wire::bytes")]
        value: Vec<u8>,
        expire_at_unix_ms: Option<u64>,
    },
    Delete {
        #[serde(with = "wire::byte_lists")]
        keys: Vec<Vec<u8>>,
    },
    Expire {
        #[serde(with = "wire::bytes")]
        key: Vec<u8>,
        at_unix_ms: u64,
    },
    Persist {
        #[serde(with = "wire::bytes")]
        key: Vec<u8>,
    },
    FlushAll,
}

impl From<SingleOp> for Operation {
    fn from(op: SingleOp) -> Operation {
        match op {
            SingleOp::Set {
                key,
                value,
                expire_at_unix_ms,
            } => Operation::Set {
                key,
                value,
                expire_at_unix_ms,
            },
            SingleOp::Delete { keys } => Operation::Delete { keys },
            SingleOp::Expire { key, at_unix_ms } => Operation::Expire { key, at_unix_ms },
            SingleOp::Persist { key } => Operation::Persist { key },
            SingleOp::FlushAll => Operation::FlushAll,
        }
    }
}

/// An operation that is not a batch as a [`SingleOp`]; a batch is returned
/// as it was.
impl TryFrom<Operation> for SingleOp {
    type Error = Operation;

    fn try_from(op: Operation) -> Result<SingleOp, Operation> {
        Ok(match op {
            Operation::Set {
                key,
                value,
                expire_at_unix_ms,
            } => SingleOp::Set {
                key,
                value,
                expire_at_unix_ms,
            },
            Operation::Delete { keys } => SingleOp::Delete { keys },
            Operation::Expire { key, at_unix_ms } => SingleOp::Expire { key, at_unix_ms },
            Operation::Persist { key } => SingleOp::Persist { key },
            Operation::FlushAll => SingleOp::FlushAll,
            batch @ Operation::Batch { .. } => return Err(batch),
        })
    }
}

/// One change, borrowed from a [`SingleOp`] or from an [`Operation`] that is
/// not a batch: what the key space applies and tools show, written once for
/// both types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change<'a> {
    Set {
        key: &'a [u8],
        value: &'a [u8],
        expire_at_unix_ms: Option<u64>,
    },
    Delete {
        keys: &'a [Vec<u8>],
    },
    Expire {
        key: &'a [u8],
        at_unix_ms: u64,
    },
    Persist {
        key: &'a [u8],
    },
    FlushAll,
}

/// One field of an operation, as tools show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field<'a> {
    Bytes(&'a [u8]),
    BytesList(&'a [Vec<u8>]),
    UnixMs(u64),
    Ops(&'a [SingleOp]),
}

impl Operation {
    /// The change this operation is; `None` for a batch.
    pub fn as_change(&self) -> Option<Change<'_>> {
        Some(match self {
            Operation::Set {
                key,
                value,
                expire_at_unix_ms,
            } => Change::Set {
                key,
                value,
                expire_at_unix_ms: *expire_at_unix_ms,
            },
            Operation::Delete { keys } => Change::Delete { keys },
            Operation::Expire { key, at_unix_ms } => Change::Expire {
                key,
                at_unix_ms: *at_unix_ms,
            },
            Operation::Persist { key } => Change::Persist { key },
            Operation::FlushAll => Change::FlushAll,
            Operation::Batch { .. } => return None,
        })
    }

    /// The changes to apply, in order: this one, or each of the batch's.
    pub fn changes(&self) -> impl Iterator<Item = Change<'_>> + '_ {
        self.as_change()
            .into_iter()
            .chain(self.batch().iter().map(SingleOp::change))
    }

    /// The batch's operations; none for a single operation.
    fn batch(&self) -> &[SingleOp] {
        match self {
            Operation::Batch { ops } => ops,
            _ => &[],
        }
    }

    /// The operation's name in tools' output.
    pub fn name(&self) -> &'static str {
        self.as_change().map_or("batch", |change| change.name())
    }

    /// The fields tools show, by name; absent optional fields are left out.
    pub fn fields(&self) -> Vec<(&'static str, Field<'_>)> {
        match self.as_change() {
            Some(change) => change.fields(),
            None => vec![("ops", Field::Ops(self.batch()))],
        }
    }
}

impl SingleOp {
    pub fn change(&self) -> Change<'_> {
        match self {
            SingleOp::Set {
                key,
                value,
                expire_at_unix_ms,
            } => Change::Set {
                key,
                value,
                expire_at_unix_ms: *expire_at_unix_ms,
            },
            SingleOp::Delete { keys } => Change::Delete { keys },
            SingleOp::Expire { key, at_unix_ms } => Change::Expire {
                key,
                at_unix_ms: *at_unix_ms,
            },
            SingleOp::Persist { key } => Change::Persist { key },
            SingleOp::FlushAll => Change::FlushAll,
        }
    }
}

impl<'a> Change<'a> {
    /// The name in tools' output.
    pub fn name(&self) -> &'static str {
        match self {
            Change::Set { .. } => "set",
            Change::Delete { .. } => "delete",
            Change::Expire { .. } => "expire",
            Change::Persist { .. } => "persist",
            Change::FlushAll => "flush_all",
        }
    }

    /// The fields tools show, by name; absent optional fields are left out.
    pub fn fields(&self) -> Vec<(&'static str, Field<'a>)> {
        match *self {
            Change::Set {
                key,
                value,
                expire_at_unix_ms,
            } => {
                let mut fields = vec![("key", Field::Bytes(key)), ("value", Field::Bytes(value))];
                if let Some(at) = expire_at_unix_ms {
                    fields.push(("expire_at_unix_ms", Field::UnixMs(at)));
                }
                fields
            }
            Change::Delete { keys } => vec![("keys", Field::BytesList(keys))],
            Change::Expire { key, at_unix_ms } => vec![
                ("key", Field::Bytes(key)),
                ("at_unix_ms", Field::UnixMs(at_unix_ms)),
            ],
            Change::Persist { key } => vec![("key", Field::Bytes(key))],
            Change::FlushAll => Vec::new(),
        }
    }
}

/// `set key="k" value="v" expire_at_unix_ms=5`: byte strings quoted and
/// [escaped](Escaped).
impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        show(f, self.name(), self.fields())
    }
}

impl fmt::Display for SingleOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let change = self.change();
        show(f, change.name(), change.fields())
    }
}

/// An operation as its name and its `name=value` fields.
fn show(f: &mut fmt::Formatter<'_>, name: &str, fields: Vec<(&str, Field<'_>)>) -> fmt::Result {
    f.write_str(name)?;
    for (name, field) in fields {
        write!(f, " {name}=")?;
        match field {
            Field::Bytes(bytes) => write!(f, "\"{}\"", Escaped(bytes))?,
            Field::BytesList(list) => {
                f.write_str("[")?;
                for (position, bytes) in list.iter().enumerate() {
                    let separator = if position == 0 { "" } else { ", " };
                    write!(f, "{separator}\"{}\"", Escaped(bytes))?;
                }
                f.write_str("]")?;
            }
            Field::UnixMs(ms) => write!(f, "{ms}")?,
            Field::Ops(ops) => {
                f.write_str("[")?;
                for (position, op) in ops.iter().enumerate() {
                    let separator = if position == 0 { "" } else { "; " };
                    write!(f, "{separator}{op}")?;
                }
                f.write_str("]")?;
            }
        }
    }
    Ok(())
}

/// Bytes shown as text, as redis-cli shows them: printable UTF-8 as it is;
/// `\\`, `\"`, `\n`, `\r`, `\t`, `\a`, `\b` escaped; every other byte
/// (control characters, invalid UTF-8) as `\xHH`. Nothing is lost: the bytes
/// can be read back from the text.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for character in chunk.valid().chars() {
                match character {
                    '\\' => f.write_str("\\\\")?,
                    '"' => f.write_str("\\\"")?,
                    '\n' => f.write_str("\\n")?,
                    '\r' => f.write_str("\\r")?,
                    '\t' => f.write_str("\\t")?,
                    '\u{7}' => f.write_str("\\a")?,
                    '\u{8}' => f.write_str("\\b")?,
                    control if control.is_control() => {
                        let mut utf8 = [0; 4];
                        for byte in control.encode_utf8(&mut utf8).bytes() {
                            write!(f, "\\x{byte:02x}")?;
                        }
                    }
                    printable => write!(f, "{printable}")?,
                }
            }
            for byte in chunk.invalid() {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

/// Serde helpers that decode without trusting a claimed length.
///
/// bincode's own decoding of a byte string (what `serde_bytes` asks for)
/// allocates the length its prefix claims before it reads a byte of it, and
/// its limit is the largest frame's payload (1 GiB), not this payload's: a
/// payload of six bytes claiming a 512 MiB key allocated 512 MiB. serde's
/// sequences reserve up to 1 MiB from a claimed count. Here a byte string is
/// borrowed from the input (bincode checks that the input holds that many bytes
/// before anything is allocated) and copied once, and a sequence grows as its
/// elements decode, so what decoding allocates is bounded by a small multiple
/// of the payload's length, whatever it claims. The encoding is bincode's
/// usual one: a length, then the bytes or the elements.
mod wire {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};

    /// A byte string: `#[serde(with = "wire::bytes")]` on a `Vec<u8>`.
    pub mod bytes {
        use serde::{Deserializer, Serializer};

        pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(bytes)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Vec<u8>, D::Error> {
            deserializer.deserialize_bytes(super::ByteString)
        }
    }

    /// A list of byte strings: `#[serde(with = "wire::byte_lists")]` on a
    /// `Vec<Vec<u8>>`.
    pub mod byte_lists {
        use serde::{Deserializer, Serializer};

        use super::{growing_seq, OwnedBytes};

        pub fn serialize<S: Serializer>(
            list: &[Vec<u8>],
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            serializer.collect_seq(list.iter().map(|bytes| serde_bytes::Bytes::new(bytes)))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Vec<Vec<u8>>, D::Error> {
            let list: Vec<OwnedBytes> = growing_seq(deserializer)?;
            Ok(list.into_iter().map(|bytes| bytes.0).collect())
        }
    }

    /// A sequence that reserves nothing from its claimed length.
    pub fn growing_seq<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        deserializer: D,
    ) -> Result<Vec<T>, D::Error> {
        deserializer.deserialize_seq(GrowingSeq(PhantomData))
    }

    struct GrowingSeq<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for GrowingSeq<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            Ok(items)
        }
    }

    struct OwnedBytes(Vec<u8>);

    impl<'de> Deserialize<'de> for OwnedBytes {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            bytes::deserialize(deserializer).map(OwnedBytes)
        }
    }

    struct ByteString;

    impl Visitor<'_> for ByteString {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_show_as_text_when_printable_and_escaped_otherwise() {
        let shown = |bytes: &[u8]| Escaped(bytes).to_string();
        assert_eq!(shown(b"user:1"), "user:1");
        assert_eq!(shown("clé".as_bytes()), "clé");
        assert_eq!(shown(b"a\x00b"), "a\\x00b");
        assert_eq!(shown(b"\xff\xfe"), "\\xff\\xfe");
        assert_eq!(shown(b"say \"hi\"\\\n"), "say \\\"hi\\\"\\\\\\n");
        assert_eq!(shown("\u{85}".as_bytes()), "\\xc2\\x85");
        assert_eq!(shown(b"\x07\x08\t\r\x7f"), "\\a\\b\\t\\r\\x7f");
    }

    #[test]
    fn operations_display_with_their_fields() {
        let set = Operation::Set {
            key: b"k\x01".to_vec(),
            value: b"v".to_vec(),
            expire_at_unix_ms: Some(5),
        };
        assert_eq!(
            set.to_string(),
            "set key=\"k\\x01\" value=\"v\" expire_at_unix_ms=5"
        );
        let delete = Operation::Delete {
            keys: vec![b"a".to_vec(), b"b".to_vec()],
        };
        assert_eq!(delete.to_string(), "delete keys=[\"a\", \"b\"]");
        assert_eq!(Operation::FlushAll.to_string(), "flush_all");
    }

    /// Variants are appended only: their positions are the log's format.
    #[test]
    fn encoding_names_variants_by_position() {
        let encoded = keel_wal::codec::encode(&Operation::FlushAll).unwrap();
        assert_eq!(encoded, vec![4]);
        let persist = Operation::Persist { key: b"k".to_vec() };
        let encoded = keel_wal::codec::encode(&persist).unwrap();
        assert_eq!(encoded, vec![3, 1, b'k']);
        assert_eq!(
            keel_wal::codec::decode::<Operation>(&encoded).unwrap(),
            persist
        );
    }

    /// The operation type before batches held [`SingleOp`]s, as it was
    /// declared: recursive, with `serde_bytes` byte strings. Its encoding is
    /// the format of every log written before.
    #[derive(Debug, Serialize, Deserialize)]
    enum OldOperation {
        Set {
            #[serde(with = "serde_bytes")]
            key: Vec<u8>,
            #[serde(with = "serde_bytes")]
            value: Vec<u8>,
            expire_at_unix_ms: Option<u64>,
        },
        Delete {
            keys: Vec<Vec<u8>>,
        },
        Expire {
            #[serde(with = "serde_bytes")]
            key: Vec<u8>,
            at_unix_ms: u64,
        },
        Persist {
            #[serde(with = "serde_bytes")]
            key: Vec<u8>,
        },
        FlushAll,
        Batch {
            ops: Vec<OldOperation>,
        },
    }

    fn old_change(change: Change<'_>) -> OldOperation {
        match change {
            Change::Set {
                key,
                value,
                expire_at_unix_ms,
            } => OldOperation::Set {
                key: key.to_vec(),
                value: value.to_vec(),
                expire_at_unix_ms,
            },
            Change::Delete { keys } => OldOperation::Delete {
                keys: keys.to_vec(),
            },
            Change::Expire { key, at_unix_ms } => OldOperation::Expire {
                key: key.to_vec(),
                at_unix_ms,
            },
            Change::Persist { key } => OldOperation::Persist { key: key.to_vec() },
            Change::FlushAll => OldOperation::FlushAll,
        }
    }

    /// `op` as the old type would have held it.
    fn old_shape(op: &Operation) -> OldOperation {
        match op {
            Operation::Batch { ops } => OldOperation::Batch {
                ops: ops.iter().map(|op| old_change(op.change())).collect(),
            },
            single => old_change(single.as_change().expect("not a batch")),
        }
    }

    /// Every kind of single operation, with byte strings and numbers on both
    /// sides of bincode's one-byte varint (250) and of the u16 and u32 ones.
    fn single_ops() -> Vec<SingleOp> {
        let long_key = vec![b'k'; 300];
        let long_value: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        vec![
            SingleOp::Set {
                key: Vec::new(),
                value: Vec::new(),
                expire_at_unix_ms: None,
            },
            SingleOp::Set {
                key: b"user:1".to_vec(),
                value: b"v".to_vec(),
                expire_at_unix_ms: Some(250),
            },
            SingleOp::Set {
                key: long_key.clone(),
                value: long_value,
                expire_at_unix_ms: Some(1_700_000_000_000),
            },
            SingleOp::Set {
                key: b"k".to_vec(),
                value: vec![0xff; 251],
                expire_at_unix_ms: Some(u64::MAX),
            },
            SingleOp::Delete { keys: Vec::new() },
            SingleOp::Delete {
                keys: vec![b"a".to_vec(), Vec::new(), long_key.clone()],
            },
            SingleOp::Delete {
                keys: (0..300u32).map(|i| i.to_le_bytes().to_vec()).collect(),
            },
            SingleOp::Expire {
                key: b"k".to_vec(),
                at_unix_ms: 0,
            },
            SingleOp::Expire {
                key: long_key.clone(),
                at_unix_ms: 65_536,
            },
            SingleOp::Persist { key: Vec::new() },
            SingleOp::Persist { key: long_key },
            SingleOp::FlushAll,
        ]
    }

    /// Each single operation alone and in batches: empty, of one, of all,
    /// and of more than 250.
    fn every_kind() -> Vec<Operation> {
        let singles = single_ops();
        let mut ops: Vec<Operation> = singles.iter().cloned().map(Operation::from).collect();
        ops.push(Operation::Batch { ops: Vec::new() });
        ops.extend(singles.iter().map(|op| Operation::Batch {
            ops: vec![op.clone()],
        }));
        ops.push(Operation::Batch {
            ops: singles.clone(),
        });
        ops.push(Operation::Batch {
            ops: singles.iter().cycle().take(300).cloned().collect(),
        });
        ops
    }

    #[test]
    fn every_kind_encodes_as_the_recursive_type_did() {
        for op in every_kind() {
            let encoded = keel_wal::codec::encode(&op).unwrap();
            let old = keel_wal::codec::encode(&old_shape(&op)).unwrap();
            assert!(encoded == old, "{op}: the bytes changed");
            assert_eq!(keel_wal::codec::decode::<Operation>(&old).unwrap(), op);
        }
    }

    #[test]
    fn a_nested_batch_does_not_decode() {
        let old_nested = OldOperation::Batch {
            ops: vec![OldOperation::Batch { ops: Vec::new() }],
        };
        let encoded = keel_wal::codec::encode(&old_nested).unwrap();
        assert_eq!(encoded, [5, 1, 5, 0]);
        keel_wal::codec::decode::<Operation>(&encoded).expect_err("a batch in a batch");
    }

    /// The recursive type overflowed the stack here.
    #[test]
    fn deeply_nested_batches_are_an_error_not_a_deep_recursion() {
        const DEPTH: usize = 1_000_000;
        let mut bytes = [5, 1].repeat(DEPTH);
        bytes.push(4);
        keel_wal::codec::decode::<Operation>(&bytes).expect_err("a batch in a batch");
    }

    #[test]
    fn a_batch_displays_its_operations() {
        let batch = Operation::Batch {
            ops: vec![
                SingleOp::Delete {
                    keys: vec![b"a".to_vec()],
                },
                SingleOp::FlushAll,
            ],
        };
        assert_eq!(
            batch.to_string(),
            "batch ops=[delete keys=[\"a\"]; flush_all]"
        );
        assert_eq!(batch.changes().count(), 2);
    }
}
