//! `keel wal dump`: the entries of a WAL in log order, with their operations.

use std::fmt::Write as _;
use std::io::Write;
use std::ops::RangeInclusive;

use keel_wal::frame::FRAME_HEADER_BYTES;
use keel_wal::recovery::EntryPosition;
use keel_wal::{codec, FrameKind, LogIndex, LogMap};
use serde::Serialize;
use serde_json::{Map, Value};

use super::open::Recovered;
use super::CliError;
use crate::exit::Exit;
use crate::operation::{Escaped, Field, Operation};

/// Bytes of a payload shown, as hex, when it is not an [`Operation`].
const UNDECODED_HEX_BYTES_MAX: usize = 32;

/// Prints the entries whose index lies in `range`. A damaged log prints
/// nothing: the error names the damage.
pub fn run(
    recovered: Recovered,
    range: RangeInclusive<u64>,
    json: bool,
    out: &mut dyn Write,
) -> Result<Exit, CliError> {
    let Recovered {
        dir, segments, log, ..
    } = recovered;
    let log = log?;
    let first = (*range.start()).max(log.first_index().0);
    let last = (*range.end()).min(log.last_index().0);
    if !json {
        writeln!(out, "wal {}", dir.display())?;
    }
    for index in (first..=last).map(LogIndex) {
        let entry = log.entry(index).expect("the index lies in the log");
        let payload = payload(&log, &segments, index, entry);
        let operation = decode_entry(payload);
        if json {
            let line = json_line(&dir.display().to_string(), index, entry, payload, operation);
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{}", text_line(index, entry, payload, operation))?;
        }
    }
    Ok(Exit::Success)
}

/// An entry's operation; `None` for the empty payload of a consensus no-op
/// (the first entry of every term a shard's group leads: see
/// `node::restored_entries`).
fn decode_entry(payload: &[u8]) -> Result<Option<Operation>, codec::CodecError> {
    if payload.is_empty() {
        return Ok(None);
    }
    codec::decode::<Operation>(payload).map(Some)
}

/// The payload of entry `index`, read from its mapped segment.
fn payload<'a, M: std::ops::Deref<Target = [u8]>>(
    log: &LogMap,
    segments: &'a [keel_wal::recovery::SegmentInput<M>],
    index: LogIndex,
    entry: &EntryPosition,
) -> &'a [u8] {
    // Recovery keeps one segment state per mapped segment, in the same order.
    let position = log
        .segment_position(index)
        .expect("an entry lies in a segment");
    let input = &segments[position];
    assert_eq!(input.first_index, log.segments[position].first_index);
    let start = entry.offset as usize + FRAME_HEADER_BYTES;
    &input.bytes[start..start + entry.payload_len as usize]
}

fn text_line(
    index: LogIndex,
    entry: &EntryPosition,
    payload: &[u8],
    operation: Result<Option<Operation>, codec::CodecError>,
) -> String {
    let mut line = format!(
        "index={index} term={} kind={} bytes={} ",
        entry.term,
        FrameKind::Entry,
        entry.payload_len
    );
    match operation {
        Ok(Some(operation)) => write!(line, "{operation}"),
        Ok(None) => write!(line, "noop"),
        Err(error) => write!(line, "undecoded hex={} ({error})", hex_prefix(payload)),
    }
    .expect("writing to a String cannot fail");
    line
}

/// One line of `--json` output: the entry, and its operation or, if the
/// payload is not one, its first bytes.
#[derive(Debug, Serialize)]
struct JsonLine<'a> {
    wal: &'a str,
    index: u64,
    term: u64,
    kind: String,
    payload_bytes: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    op: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    undecoded: Option<Undecoded>,
}

#[derive(Debug, Serialize)]
struct Undecoded {
    hex: String,
    error: String,
}

fn json_line(
    dir: &str,
    index: LogIndex,
    entry: &EntryPosition,
    payload: &[u8],
    operation: Result<Option<Operation>, codec::CodecError>,
) -> String {
    let (op, undecoded) = match operation {
        Ok(Some(operation)) => (
            Some(operation_json(operation.name(), operation.fields())),
            None,
        ),
        Ok(None) => (Some(operation_json("noop", Vec::new())), None),
        Err(error) => {
            let hex = hex_prefix(payload);
            let error = error.to_string();
            (None, Some(Undecoded { hex, error }))
        }
    };
    let line = JsonLine {
        wal: dir,
        index: index.0,
        term: entry.term.0,
        kind: FrameKind::Entry.to_string(),
        payload_bytes: entry.payload_len,
        op,
        undecoded,
    };
    serde_json::to_string(&line).expect("a JSON line always serialises")
}

/// `{"type": "set", "key": "k", ...}`, byte strings [escaped](Escaped).
fn operation_json(kind: &str, fields: Vec<(&str, Field<'_>)>) -> Value {
    let escaped = |bytes: &[u8]| Value::String(Escaped(bytes).to_string());
    let mut object = Map::new();
    object.insert("type".to_owned(), kind.into());
    for (name, field) in fields {
        let value = match field {
            Field::Bytes(bytes) => escaped(bytes),
            Field::BytesList(list) => list.iter().map(|bytes| escaped(bytes)).collect(),
            Field::UnixMs(ms) => ms.into(),
            Field::Ops(ops) => ops
                .iter()
                .map(|op| {
                    let change = op.change();
                    operation_json(change.name(), change.fields())
                })
                .collect(),
        };
        object.insert(name.to_owned(), value);
    }
    Value::Object(object)
}

/// The first bytes of `payload` in hex, with `…` if there are more.
fn hex_prefix(payload: &[u8]) -> String {
    let shown = &payload[..payload.len().min(UNDECODED_HEX_BYTES_MAX)];
    let mut hex: String = shown.iter().map(|byte| format!("{byte:02x}")).collect();
    if shown.len() < payload.len() {
        hex.push('…');
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operation::SingleOp;

    #[test]
    fn a_batch_shows_its_operations_as_objects() {
        let batch = Operation::Batch {
            ops: vec![
                SingleOp::Delete {
                    keys: vec![b"a".to_vec()],
                },
                SingleOp::Set {
                    key: b"b".to_vec(),
                    value: b"\x00".to_vec(),
                    expire_at_unix_ms: Some(5),
                },
            ],
        };
        let json = operation_json(batch.name(), batch.fields());
        let expected = serde_json::json!({
            "type": "batch",
            "ops": [
                {"type": "delete", "keys": ["a"]},
                {"type": "set", "key": "b", "value": "\\x00", "expire_at_unix_ms": 5},
            ],
        });
        assert_eq!(json, expected);
    }

    #[test]
    fn a_no_op_entry_shows_as_noop_and_a_bad_payload_as_undecoded() {
        let entry = EntryPosition {
            term: keel_wal::Term(2),
            offset: 0,
            payload_len: 0,
            crc: 0,
        };
        let line = text_line(LogIndex(7), &entry, &[], decode_entry(&[]));
        assert_eq!(line, "index=7 term=2 kind=entry bytes=0 noop");
        let json = json_line("d", LogIndex(7), &entry, &[], decode_entry(&[]));
        assert!(json.contains(r#""op":{"type":"noop"}"#), "{json}");
        assert!(
            decode_entry(&[0xff]).is_err(),
            "one stray byte is no operation"
        );
    }
}
