//! `keel wal inspect`: the segments, the entries and the durable tail of a WAL.

use std::io::Write;

use keel_wal::recovery::SegmentState;
use keel_wal::segment::segment_name;
use keel_wal::{LogIndex, LogMap, SegmentEnd};

use super::open::{count, describe_entries, describe_torn_bytes, describe_torn_tail, Recovered};
use super::CliError;
use crate::exit::Exit;

pub fn run(recovered: &Recovered, out: &mut dyn Write) -> Result<Exit, CliError> {
    writeln!(out, "wal {}", recovered.dir.display())?;
    let exit = match &recovered.log {
        Ok(log) => {
            write_segments(log, out)?;
            write_log(recovered, log, out)?;
            Exit::Success
        }
        Err(error) => {
            for input in &recovered.segments {
                let (first, size) = (input.first_index, input.bytes.len());
                let name = segment_name(first);
                writeln!(out, "  segment {name}: first index {first}, {size} bytes")?;
            }
            writeln!(out, "  corrupt: {}", recovered.describe_corruption(error))?;
            Exit::Corrupt
        }
    };
    let listing = &recovered.listing;
    if !listing.unfinished.is_empty() {
        let names = listing.unfinished.join(", ");
        writeln!(
            out,
            "  unfinished segment creations (removed on open): {names}"
        )?;
    }
    if !listing.other.is_empty() {
        writeln!(out, "  other files: {}", listing.other.join(", "))?;
    }
    Ok(exit)
}

fn write_segments(log: &LogMap, out: &mut dyn Write) -> Result<(), CliError> {
    for (position, segment) in log.segments.iter().enumerate() {
        let next = log.segments.get(position + 1).map(|next| next.first_index);
        let voids = match segment.voids.len() {
            0 => String::new(),
            voids => format!(", {} voided by cut frames", count(voids, "torn region")),
        };
        writeln!(
            out,
            "  segment {}: first index {}, {}, {}, {} of {} bytes used{voids}, {}",
            segment_name(segment.first_index),
            segment.first_index,
            segment_entries(log, segment, next),
            count(segment.frames, "frame"),
            segment.write_end,
            segment.segment_bytes,
            describe_end(&segment.end),
        )?;
    }
    Ok(())
}

/// The entries of the log that lie in `segment`: a segment named `n` holds
/// entries from `n` up to the one before the next segment's name.
fn segment_entries(log: &LogMap, segment: &SegmentState, next: Option<LogIndex>) -> String {
    let first = segment.first_index.max(log.first_index());
    let last = next
        .and_then(LogIndex::prev)
        .map_or(log.last_index(), |before_next| {
            before_next.min(log.last_index())
        });
    if first > last {
        return "no entries".to_owned();
    }
    format!("entries {first}..={last}")
}

fn describe_end(end: &SegmentEnd) -> String {
    match end {
        SegmentEnd::Clean { offset } => format!("clean end at byte offset {offset}"),
        SegmentEnd::Torn {
            offset,
            dirty_end,
            cause,
        } => format!("torn: {}", describe_torn_bytes(*offset, *dirty_end, cause)),
        SegmentEnd::Corrupt { offset, cause, .. } => {
            format!("corrupt at byte offset {offset}: {cause}")
        }
    }
}

fn write_log(recovered: &Recovered, log: &LogMap, out: &mut dyn Write) -> Result<(), CliError> {
    writeln!(
        out,
        "  log: {}, {}, {} bytes scanned",
        describe_entries(log),
        count(log.frames as usize, "frame"),
        log.scanned_bytes
    )?;
    let last = log.last_index();
    let term = log.term_at(last).unwrap_or_default();
    let tail = match &log.torn {
        None => "clean".to_owned(),
        Some(torn) => format!(
            "torn: {}; `keel wal repair` cuts it",
            describe_torn_tail(recovered, torn)
        ),
    };
    writeln!(
        out,
        "  durable tail: last index {last} (term {term}), {tail}"
    )?;
    Ok(())
}
