//! `keel wal repair`: cut a torn tail, or (forced) drop a damaged log's end.
//!
//! Whatever leaves the log is first saved beside its segment, as
//! `<segment file name>.cut-at-<offset>` (written, synced, directory synced),
//! so that nothing is destroyed that a person could not look at again. Then a
//! forced truncation removes and zeroes ([`keel_wal::repair`]), and
//! [`Wal::open`] seals the torn bytes that are left with a cut frame.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use keel_wal::repair::{plan_truncate, truncate, Damage, SegmentRange, TruncatePlan};
use keel_wal::{run_ready, FrameKind, LogIndex, StdStorage, Wal};

use super::open::{count, describe_torn_tail, payload_bytes_max, Recovered};
use super::{io_error, CliError};
use crate::exit::Exit;

/// What a repair does.
#[derive(Debug)]
enum Repair {
    /// Save the torn bytes, then let `Wal::open` seal them off.
    CutTornTail {
        salvage: SegmentRange,
        last_kept: LogIndex,
    },
    /// Save what goes, remove and zero it, then let `Wal::open` seal the rest.
    Truncate(TruncatePlan),
}

impl Repair {
    fn salvage(&self) -> &[SegmentRange] {
        match self {
            Repair::CutTornTail { salvage, .. } => std::slice::from_ref(salvage),
            Repair::Truncate(plan) => &plan.salvage,
        }
    }
}

pub fn run(
    recovered: Recovered,
    dry_run: bool,
    force_truncate: bool,
    out: &mut dyn Write,
) -> Result<Exit, CliError> {
    writeln!(out, "wal {}", recovered.dir.display())?;
    let Some(repair) = choose(&recovered, force_truncate, out)? else {
        return Ok(match recovered.log {
            Ok(_) => Exit::Success,
            Err(_) => Exit::Corrupt,
        });
    };
    write_steps(&recovered, &repair, out)?;
    if dry_run {
        writeln!(out, "  dry run: nothing changed")?;
        return Ok(Exit::Success);
    }
    save(&recovered, repair.salvage())?;
    // The maps are dropped before the segments change under them.
    let dir = recovered.dir.clone();
    drop(recovered);
    if let Repair::Truncate(plan) = &repair {
        run_ready(truncate(&StdStorage::new(&dir), plan))?;
    }
    let (wal, report) = run_ready(Wal::open(
        StdStorage::new(&dir),
        crate::node::wal_options(keel_wal::SEGMENT_BYTES_DEFAULT),
    ))?;
    for name in &report.removed_unfinished {
        writeln!(out, "  removed unfinished segment creation {name}")?;
    }
    match report.repaired {
        Some(cut) => writeln!(
            out,
            "  cut {} at byte offset {}: {} bytes void ({}); last index kept {}",
            cut.file, cut.offset, cut.cut_bytes, cut.cause, cut.last_index
        )?,
        None => writeln!(out, "  the log ends clean at index {}", wal.last_index())?,
    }
    Ok(Exit::Success)
}

/// Reports the state of the log and picks the repair, if there is one to do.
fn choose(
    recovered: &Recovered,
    force_truncate: bool,
    out: &mut dyn Write,
) -> Result<Option<Repair>, CliError> {
    let error = match &recovered.log {
        Ok(log) => {
            let Some(torn) = &log.torn else {
                writeln!(out, "  clean: nothing to repair")?;
                return Ok(None);
            };
            writeln!(out, "  torn tail: {}", describe_torn_tail(recovered, torn))?;
            return Ok(Some(Repair::CutTornTail {
                salvage: SegmentRange {
                    segment: torn.segment,
                    from: torn.offset,
                    to: torn.dirty_end,
                },
                last_kept: log.last_index(),
            }));
        }
        Err(error) => error,
    };
    writeln!(out, "  corrupt: {}", recovered.describe_corruption(error))?;
    let Some(damage) = Damage::of(error, &recovered.segments) else {
        writeln!(out, "  no repair is known for this damage")?;
        return Ok(None);
    };
    let plan = plan_truncate(&recovered.segments, damage, payload_bytes_max());
    write_losses(&plan, out)?;
    if !force_truncate {
        writeln!(out, "  refusing to drop them without --force-truncate")?;
        return Ok(None);
    }
    Ok(Some(Repair::Truncate(plan)))
}

fn write_losses(plan: &TruncatePlan, out: &mut dyn Write) -> Result<(), CliError> {
    let entries: Vec<u64> = plan
        .lost
        .iter()
        .filter(|frame| frame.kind == FrameKind::Entry)
        .map(|frame| frame.index.0)
        .collect();
    let cuts = plan.lost.len() - entries.len();
    let later = match (entries.is_empty(), cuts) {
        (true, 0) => "no valid frame after it".to_owned(),
        (false, 0) => format!("entries {}", index_ranges(entries)),
        (true, cuts) => count(cuts, "cut frame"),
        (false, cuts) => format!(
            "entries {} and {}",
            index_ranges(entries),
            count(cuts, "cut frame")
        ),
    };
    writeln!(
        out,
        "  truncating at the damage drops the frame expected to hold index {} and, after it, {later}",
        plan.damage.index
    )?;
    writeln!(
        out,
        "  they may have been acknowledged to clients: unless a peer holds them, they are lost"
    )?;
    Ok(())
}

/// `3..=7, 9, 12..=20`: sorted, each index once.
fn index_ranges(mut indexes: Vec<u64>) -> String {
    indexes.sort_unstable();
    indexes.dedup();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for index in indexes {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == index => *end = index,
            _ => ranges.push((index, index)),
        }
    }
    let shown: Vec<String> = ranges
        .iter()
        .map(|(first, last)| match first == last {
            true => first.to_string(),
            false => format!("{first}..={last}"),
        })
        .collect();
    shown.join(", ")
}

fn write_steps(
    recovered: &Recovered,
    repair: &Repair,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    writeln!(out, "  plan:")?;
    for range in repair.salvage() {
        writeln!(
            out,
            "    save {} bytes of {} from byte offset {} to {}",
            range.len_bytes(),
            recovered.segment_path(range.segment).display(),
            range.from,
            recovered.dir.join(range.salvage_name()).display()
        )?;
    }
    match repair {
        Repair::CutTornTail { last_kept, .. } => writeln!(
            out,
            "    open the WAL, which seals the torn bytes with a cut frame; last index kept {last_kept}"
        )?,
        Repair::Truncate(plan) => {
            for segment in plan.remove.iter().rev() {
                let path = recovered.segment_path(*segment);
                writeln!(out, "    remove {}", path.display())?;
            }
            if let Some(zero) = &plan.zero {
                writeln!(
                    out,
                    "    zero {} from byte offset {} up to {}",
                    recovered.segment_path(zero.segment).display(),
                    zero.from,
                    zero.to
                )?;
            }
            writeln!(
                out,
                "    open the WAL, which seals what is left of the damaged batch with a cut frame"
            )?;
        }
    }
    Ok(())
}

/// Saves each range beside its segment, then syncs the directory.
fn save(recovered: &Recovered, salvage: &[SegmentRange]) -> Result<(), CliError> {
    for range in salvage {
        let input = recovered
            .segments
            .iter()
            .find(|input| input.first_index == range.segment)
            .expect("salvage is planned from the mapped segments");
        let bytes = &input.bytes[range.from as usize..range.to as usize];
        save_file(&recovered.dir.join(range.salvage_name()), bytes)?;
    }
    let dir = &recovered.dir;
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("sync", dir))
}

/// Writes and syncs a new file. A file of that name holding the same bytes is
/// the work of an earlier run that stopped before it cut: it is kept.
fn save_file(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let file = match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(mut file) => {
            file.write_all(bytes).map_err(io_error("write", path))?;
            file
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            if fs::read(path).map_err(io_error("read", path))? != bytes {
                return Err(CliError::SalvageExists {
                    path: path.to_owned(),
                });
            }
            File::open(path).map_err(io_error("open", path))?
        }
        Err(error) => return Err(io_error("create", path)(error)),
    };
    file.sync_all().map_err(io_error("sync", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_ranges_are_merged() {
        assert_eq!(
            index_ranges(vec![9, 3, 4, 5, 12, 13, 4]),
            "3..=5, 9, 12..=13"
        );
        assert_eq!(index_ranges(vec![]), "");
    }
}
