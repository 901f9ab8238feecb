//! The first step of every `keel wal` command: recover one WAL directory
//! read-only, with a progress bar, and the phrases the reports share.

use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use keel_wal::recovery::{list_dir, map_segments, recover, DirListing, SegmentInput, TornTail};
use keel_wal::repair::Damage;
use keel_wal::scan::BadFrame;
use keel_wal::segment::segment_name;
use keel_wal::{LogMap, RecoveryError, StdStorage, Storage};

use super::CliError;

/// A WAL directory as recovery read it, without changing a byte.
#[derive(Debug)]
pub struct Recovered {
    pub dir: PathBuf,
    pub listing: DirListing,
    /// The mapped segments, in index order.
    pub segments: Vec<SegmentInput<<StdStorage as Storage>::Map>>,
    /// The log, or the corruption that stops recovery (never an IO error:
    /// those fail [`recover_dir`]).
    pub log: Result<LogMap, RecoveryError>,
}

/// The payload limit the CLI reads with: the server's.
pub fn payload_bytes_max() -> u32 {
    crate::node::wal_options(keel_wal::SEGMENT_BYTES_DEFAULT).payload_bytes_max
}

/// Lists, maps and recovers the WAL in `dir`, showing progress on stderr when
/// it is a terminal.
pub fn recover_dir(dir: &Path) -> Result<Recovered, CliError> {
    let storage = StdStorage::new(dir);
    let listing = list_dir(&storage)?;
    let segments = map_segments(&storage, &listing)?;
    let total_bytes = segments.iter().map(|input| input.bytes.len() as u64).sum();
    let progress = progress_bar(total_bytes);
    let log = recover(&segments, payload_bytes_max(), &mut |scanned_bytes| {
        progress.set_position(scanned_bytes)
    });
    progress.finish_and_clear();
    if let Err(error @ RecoveryError::Io(_)) = log {
        return Err(error.into());
    }
    Ok(Recovered {
        dir: dir.to_owned(),
        listing,
        segments,
        log,
    })
}

fn progress_bar(total_bytes: u64) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("scanning {wide_bar} {bytes}/{total_bytes} {eta}")
        .expect("the progress template is valid");
    bar.set_style(style);
    bar
}

impl Recovered {
    /// The corruption that stopped recovery, naming file, byte offset and index.
    pub fn describe_corruption(&self, error: &RecoveryError) -> String {
        match (error, Damage::of(error, &self.segments)) {
            (RecoveryError::Segment { file, source }, Some(damage)) => format!(
                "{file}: unusable segment at byte offset 0, where log index {} begins by its name: {source}",
                damage.index
            ),
            _ => error.to_string(),
        }
    }

    /// The path of the segment named after `first_index`.
    pub fn segment_path(&self, first_index: keel_wal::LogIndex) -> PathBuf {
        self.dir.join(segment_name(first_index))
    }
}

/// `N bytes from byte offset O up to D are torn (cause)`.
pub fn describe_torn_bytes(offset: u32, dirty_end: u32, cause: &BadFrame) -> String {
    format!(
        "{} bytes from byte offset {offset} up to {dirty_end} are torn ({cause})",
        dirty_end - offset
    )
}

/// `FILE: N bytes from byte offset O ...`, for a log's torn tail.
pub fn describe_torn_tail(recovered: &Recovered, torn: &TornTail) -> String {
    format!(
        "{}: {}",
        recovered.segment_path(torn.segment).display(),
        describe_torn_bytes(torn.offset, torn.dirty_end, &torn.cause)
    )
}

/// `1 frame`, `2 frames`.
pub fn count(count: usize, noun: &str) -> String {
    match count {
        1 => format!("1 {noun}"),
        _ => format!("{count} {noun}s"),
    }
}

/// `entries 1..=12 (12)`, or `no entries (base index N)`.
pub fn describe_entries(log: &LogMap) -> String {
    if log.entries.is_empty() {
        return format!("no entries (base index {})", log.base_index);
    }
    format!(
        "entries {}..={} ({})",
        log.first_index(),
        log.last_index(),
        log.entries.len()
    )
}
