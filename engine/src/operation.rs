//! The operations the key-value state machine applies, one per log entry.
//!
//! An [`Operation`] is the payload of a WAL entry, encoded with bincode 2
//! through [`keel_wal::codec`]. bincode names a variant by its position, so
//! variants are only ever appended (never reordered or removed): an old log
//! then still decodes.
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

/// One change to the key space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
// `serde_bytes` encodes a byte string exactly as bincode encodes a `Vec<u8>`
// (length, then the bytes) but decodes it with one copy instead of one call
// per byte: a third of start-up replay time before it.
pub enum Operation {
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
    /// Several operations applied together, as one log entry (MSET, RENAME):
    /// a crash keeps all of them or none. Never nested.
    Batch {
        ops: Vec<Operation>,
    },
}

/// One field of an operation, as tools show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field<'a> {
    Bytes(&'a [u8]),
    BytesList(&'a [Vec<u8>]),
    UnixMs(u64),
    Ops(&'a [Operation]),
}

impl Operation {
    /// The operation's name in tools' output.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Set { .. } => "set",
            Operation::Delete { .. } => "delete",
            Operation::Expire { .. } => "expire",
            Operation::Persist { .. } => "persist",
            Operation::FlushAll => "flush_all",
            Operation::Batch { .. } => "batch",
        }
    }

    /// The fields tools show, by name; absent optional fields are left out.
    pub fn fields(&self) -> Vec<(&'static str, Field<'_>)> {
        match self {
            Operation::Set {
                key,
                value,
                expire_at_unix_ms,
            } => {
                let mut fields = vec![("key", Field::Bytes(key)), ("value", Field::Bytes(value))];
                if let Some(at) = expire_at_unix_ms {
                    fields.push(("expire_at_unix_ms", Field::UnixMs(*at)));
                }
                fields
            }
            Operation::Delete { keys } => vec![("keys", Field::BytesList(keys))],
            Operation::Expire { key, at_unix_ms } => vec![
                ("key", Field::Bytes(key)),
                ("at_unix_ms", Field::UnixMs(*at_unix_ms)),
            ],
            Operation::Persist { key } => vec![("key", Field::Bytes(key))],
            Operation::FlushAll => Vec::new(),
            Operation::Batch { ops } => vec![("ops", Field::Ops(ops))],
        }
    }
}

/// `set key="k" value="v" expire_at_unix_ms=5`: byte strings quoted and
/// [escaped](Escaped).
impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        for (name, field) in self.fields() {
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
}
