//! `keel wal` run as a process on real WAL directories, written by
//! `keel_wal::Wal` and then damaged the way crashes and failing disks do.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use keel_engine::operation::Operation;
use keel_wal::frame::frame_bytes;
use keel_wal::recovery::EntryPosition;
use keel_wal::segment::{segment_name, BLOCK_BYTES};
use keel_wal::{codec, run_ready, LogIndex, LogMap, StdStorage, Term, Wal, WalOptions};

/// What a run of `keel` left behind.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn keel(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .output()
        .expect("keel runs");
    Run {
        code: output.status.code().expect("keel exits, not killed"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 output"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 output"),
    }
}

fn keel_wal(command: &str, dir: &Path, flags: &[&str]) -> Run {
    let dir = dir.to_str().expect("UTF-8 temp path");
    let mut args = vec!["wal", command, dir];
    args.extend_from_slice(flags);
    keel(&args)
}

/// Entry `index`'s payload: operations of every kind, with a binary key, and
/// an entry that is not an operation at all.
fn payload(index: u64) -> Vec<u8> {
    let key = format!("user:{index}").into_bytes();
    let operation = match index % 6 {
        0 => return vec![9, 9, 9],
        1 => Operation::Set {
            key,
            value: format!("name {index}").into_bytes(),
            expire_at_unix_ms: None,
        },
        2 => Operation::Set {
            key: b"bin\x00key".to_vec(),
            value: vec![0xff, b'v'],
            expire_at_unix_ms: Some(1_700_000_000_000),
        },
        3 => Operation::Delete {
            keys: vec![key, b"other".to_vec()],
        },
        4 => Operation::Expire {
            key,
            at_unix_ms: 42,
        },
        _ => Operation::Persist { key },
    };
    codec::encode(&operation).expect("operations encode")
}

/// Writes `batches` synced batches of entries to a new WAL in `dir`, with
/// the smallest segments, so that a few batches span several segments.
fn write_log(dir: &Path, batches: &[u64]) -> LogMap {
    fs::create_dir_all(dir).unwrap();
    let storage = StdStorage::new(dir);
    let (mut wal, _) = run_ready(Wal::open(storage, WalOptions::test_min())).unwrap();
    for &count in batches {
        for _ in 0..count {
            let index = wal.last_index().next().0;
            wal.append(Term(1), &payload(index)).unwrap();
        }
        run_ready(wal.sync()).unwrap();
    }
    wal.log_map().clone()
}

fn segment_path(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(segment_name(LogIndex(first_index)))
}

fn entry(log: &LogMap, index: u64) -> EntryPosition {
    *log.entry(LogIndex(index)).expect("the entry is in the log")
}

/// The frame lines of a text dump: their `index=` values.
fn dumped_indexes(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("index="))
        .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
        .collect()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn a_clean_log_is_inspected_verified_and_dumped() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    // test_min segments hold two batches: entries 1..=7 in the first segment.
    write_log(dir, &[3, 4, 5]);

    let inspect = keel_wal("inspect", dir, &[]);
    assert_eq!(inspect.code, 0, "{inspect:?}");
    assert!(inspect.stdout.contains(
        "segment 00000000000000000001.wal: first index 1, entries 1..=7, 7 frames, 12288 of 16384 bytes used"
    ), "{}", inspect.stdout);
    assert!(
        inspect
            .stdout
            .contains("segment 00000000000000000008.wal: first index 8, entries 8..=12, 5 frames"),
        "{}",
        inspect.stdout
    );
    assert!(inspect
        .stdout
        .contains("log: entries 1..=12 (12), 12 frames"));
    assert!(inspect
        .stdout
        .contains("durable tail: last index 12 (term 1), clean"));

    let verify = keel_wal("verify", dir, &[]);
    assert_eq!(verify.code, 0, "{verify:?}");
    assert!(verify
        .stdout
        .contains("clean: entries 1..=12 (12) in 2 segments"));

    let dump = keel_wal("dump", dir, &[]);
    assert_eq!(dump.code, 0, "{dump:?}");
    assert_eq!(dumped_indexes(&dump.stdout), (1..=12).collect::<Vec<_>>());
    for expected in [
        "index=1 term=1 kind=entry bytes=",
        r#"set key="user:1" value="name 1""#,
        r#"set key="bin\x00key" value="\xffv" expire_at_unix_ms=1700000000000"#,
        r#"delete keys=["user:3", "other"]"#,
        r#"expire key="user:4" at_unix_ms=42"#,
        r#"persist key="user:5""#,
        "index=6 term=1 kind=entry bytes=3 undecoded hex=090909 (",
    ] {
        assert!(
            dump.stdout.contains(expected),
            "{expected}: {}",
            dump.stdout
        );
    }

    let range = keel_wal("dump", dir, &["--from", "3", "--to", "9"]);
    assert_eq!(range.code, 0, "{range:?}");
    assert_eq!(dumped_indexes(&range.stdout), (3..=9).collect::<Vec<_>>());

    let json = keel_wal("dump", dir, &["--json", "--from", "5"]);
    assert_eq!(json.code, 0, "{json:?}");
    let lines: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 8);
    assert_eq!(lines[0]["index"], 5);
    assert_eq!(lines[0]["term"], 1);
    assert_eq!(lines[0]["kind"], "entry");
    assert_eq!(lines[0]["op"]["type"], "persist");
    assert_eq!(lines[0]["op"]["key"], "user:5");
    assert_eq!(lines[1]["undecoded"]["hex"], "090909");
    assert_eq!(lines[3]["op"]["key"], "bin\\x00key");
    assert_eq!(lines[3]["op"]["expire_at_unix_ms"], 1_700_000_000_000_u64);
    assert_eq!(lines[4]["op"]["keys"][1], "other");
}

#[test]
fn a_torn_tail_is_reported_then_cut_with_its_bytes_saved() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let log = write_log(dir, &[3, 4]);
    // Garbage right after the last frame, as a torn write leaves it.
    let last = entry(&log, 7);
    let torn_at = last.offset as usize + frame_bytes(last.payload_len as usize);
    let segment = segment_path(dir, 1);
    let file = fs::OpenOptions::new().write(true).open(&segment).unwrap();
    file.write_all_at(&[0x5a; 100], torn_at as u64).unwrap();
    drop(file);
    let torn_bytes = fs::read(&segment).unwrap();
    let dirty_end = (torn_at + 100).next_multiple_of(BLOCK_BYTES);

    let verify = keel_wal("verify", dir, &[]);
    assert_eq!(verify.code, 1, "{verify:?}");
    let where_torn = format!(
        "{}: {} bytes from byte offset {torn_at} up to {dirty_end} are torn",
        segment.display(),
        dirty_end - torn_at
    );
    assert!(verify.stdout.contains(&where_torn), "{}", verify.stdout);
    assert!(verify.stdout.contains("last index kept 7"));
    let inspect = keel_wal("inspect", dir, &[]);
    assert_eq!(inspect.code, 0, "{inspect:?}");
    assert!(inspect
        .stdout
        .contains("durable tail: last index 7 (term 1), torn"));

    let dry_run = keel_wal("repair", dir, &["--dry-run"]);
    assert_eq!(dry_run.code, 0, "{dry_run:?}");
    let salvage_name = format!("{}.cut-at-{torn_at}", segment_name(LogIndex(1)));
    assert!(dry_run.stdout.contains(&salvage_name), "{}", dry_run.stdout);
    assert!(dry_run.stdout.contains("dry run: nothing changed"));
    assert_eq!(fs::read(&segment).unwrap(), torn_bytes);
    assert_eq!(files_in(dir), vec![segment_name(LogIndex(1))]);

    let repair = keel_wal("repair", dir, &[]);
    assert_eq!(repair.code, 0, "{repair:?}");
    let cut = format!("cut {} at byte offset {torn_at}", segment.display());
    assert!(repair.stdout.contains(&cut), "{}", repair.stdout);
    assert!(repair.stdout.contains("last index kept 7"));
    let saved = fs::read(dir.join(&salvage_name)).expect("the cut bytes are saved");
    assert_eq!(saved, torn_bytes[torn_at..dirty_end]);

    let verify = keel_wal("verify", dir, &[]);
    assert_eq!(verify.code, 0, "{verify:?}");
    let dump = keel_wal("dump", dir, &[]);
    assert_eq!(dumped_indexes(&dump.stdout), (1..=7).collect::<Vec<_>>());
    let again = keel_wal("repair", dir, &[]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("clean: nothing to repair"));
}

#[test]
fn early_corruption_is_refused_until_forced_then_truncated() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    // Entries 1..=7 in the first segment, 8..=18 in the second.
    let log = write_log(dir, &[3, 4, 5, 6]);
    let second = entry(&log, 2);
    let segment = segment_path(dir, 1);
    let mut bytes = fs::read(&segment).unwrap();
    bytes[second.offset as usize + 60] ^= 0x01;
    fs::write(&segment, &bytes).unwrap();
    let before: Vec<Vec<u8>> = files_in(dir)
        .iter()
        .map(|name| fs::read(dir.join(name)).unwrap())
        .collect();

    let verify = keel_wal("verify", dir, &[]);
    assert_eq!(verify.code, 2, "{verify:?}");
    let named = format!(
        "{}: corruption at byte offset {}, where log index 2 was expected",
        segment.display(),
        second.offset
    );
    assert!(verify.stdout.contains(&named), "{}", verify.stdout);
    let dump = keel_wal("dump", dir, &[]);
    assert_eq!(dump.code, 2, "{dump:?}");
    assert!(dump.stderr.contains(&named), "{}", dump.stderr);

    let refused = keel_wal("repair", dir, &[]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused
            .stdout
            .contains("drops the frame expected to hold index 2 and, after it, entries 3..=18"),
        "{}",
        refused.stdout
    );
    assert!(refused.stdout.contains("may have been acknowledged"));
    assert!(refused.stdout.contains("refusing"));
    let dry_run = keel_wal("repair", dir, &["--force-truncate", "--dry-run"]);
    assert_eq!(dry_run.code, 0, "{dry_run:?}");
    let after: Vec<Vec<u8>> = files_in(dir)
        .iter()
        .map(|name| fs::read(dir.join(name)).unwrap())
        .collect();
    assert_eq!(after, before, "refusals and dry runs change nothing");

    let forced = keel_wal("repair", dir, &["--force-truncate"]);
    assert_eq!(forced.code, 0, "{forced:?}");
    assert!(
        forced.stdout.contains("last index kept 1"),
        "{}",
        forced.stdout
    );
    let damaged_salvage = format!("{}.cut-at-{}", segment_name(LogIndex(1)), second.offset);
    let later_salvage = format!("{}.cut-at-0", segment_name(LogIndex(8)));
    assert_eq!(
        files_in(dir),
        vec![
            segment_name(LogIndex(1)),
            damaged_salvage.clone(),
            later_salvage.clone()
        ]
    );
    let saved = fs::read(dir.join(damaged_salvage)).unwrap();
    assert_eq!(saved, bytes[second.offset as usize..3 * BLOCK_BYTES]);
    assert_eq!(fs::read(dir.join(later_salvage)).unwrap(), before[1]);

    let verify = keel_wal("verify", dir, &[]);
    assert_eq!(verify.code, 0, "{verify:?}");
    let dump = keel_wal("dump", dir, &[]);
    assert_eq!(dumped_indexes(&dump.stdout), vec![1]);
}

#[test]
fn a_data_directory_reports_every_shard_wal_and_the_worst_code() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path();
    let first = data.join("shards/1/wal");
    let second = data.join("shards/2/wal");
    write_log(&first, &[2]);
    let log = write_log(&second, &[2]);
    let last = entry(&log, 2);
    let torn_at = last.offset as usize + frame_bytes(last.payload_len as usize);
    let file = fs::OpenOptions::new()
        .write(true)
        .open(segment_path(&second, 1))
        .unwrap();
    file.write_all_at(&[0xa5; 8], torn_at as u64).unwrap();
    fs::write(data.join("config.toml"), b"").unwrap();

    let verify = keel_wal("verify", data, &[]);
    assert_eq!(verify.code, 1, "{verify:?}");
    let lines: Vec<&str> = verify.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", verify.stdout);
    assert!(lines[0].starts_with(&format!("wal {}: clean", first.display())));
    assert!(lines[1].starts_with(&format!("wal {}: torn tail", second.display())));

    let inspect = keel_wal("inspect", data, &[]);
    assert_eq!(inspect.code, 0, "{inspect:?}");
    assert!(inspect
        .stdout
        .contains(&format!("wal {}\n", first.display())));
    assert!(inspect
        .stdout
        .contains(&format!("wal {}\n", second.display())));
}

#[test]
fn missing_or_empty_directories_and_bad_usage_have_their_own_codes() {
    let temp = tempfile::tempdir().unwrap();
    let missing = keel_wal("verify", &temp.path().join("missing"), &[]);
    assert_eq!(missing.code, 74, "{missing:?}");
    assert!(missing.stderr.contains("missing"), "{}", missing.stderr);
    assert!(missing.stdout.is_empty());

    let empty = keel_wal("verify", temp.path(), &[]);
    assert_eq!(empty.code, 66, "{empty:?}");
    assert!(empty.stderr.contains("no WAL"), "{}", empty.stderr);

    assert_eq!(keel(&["wal", "verify"]).code, 64);
    assert_eq!(keel(&["wal", "frobnicate", "x"]).code, 64);
    assert_eq!(keel(&[]).code, 64);
    let backwards = keel_wal("dump", temp.path(), &["--from", "5", "--to", "3"]);
    assert_eq!(backwards.code, 64, "{backwards:?}");

    let help = keel(&["wal", "verify", "--help"]);
    assert_eq!(help.code, 0, "{help:?}");
    assert!(help.stdout.contains("Exit codes:"));
    assert!(help.stdout.contains("74  IO error"));
    assert_eq!(keel(&["--version"]).code, 0);
}
