//! Keel's checker must agree with Knossos and Porcupine on every history of the
//! external corpus (`shared/linearizability`, beside the repository; another
//! location can be given in `KEEL_LINEARIZABILITY_DIR`), within a time bound each.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_sim::external::{parse_jepsen_register, parse_kv, ParseError};
use keel_sim::linearizability::check;
use keel_sim::models::kv::Kv;
use keel_sim::models::register::Register;

/// Wall time allowed to parse and check one history in a debug build.
const HISTORY_CHECK_SECONDS_MAX: u64 = 10;

fn corpus_dir() -> PathBuf {
    match std::env::var_os("KEEL_LINEARIZABILITY_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/linearizability"),
    }
}

/// The checker's verdict on the history in `path`, named relative to the corpus:
/// its directory says its format.
fn verdict(dir: &Path, path: &str) -> Option<bool> {
    let file = dir.join(path);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|error| {
        panic!(
            "VERDICTS lists {path}, which cannot be read ({}): {error}",
            file.display()
        )
    });
    let failed = |error: ParseError| -> ! { panic!("{path}: {error}") };
    if path.starts_with("jepsen-etcd/") {
        let history = parse_jepsen_register(&text).unwrap_or_else(|error| failed(error));
        check::<Register>(&history).is_linearizable()
    } else if path.starts_with("kv/") {
        let history = parse_kv(&text).unwrap_or_else(|error| failed(error));
        check::<Kv>(&history).is_linearizable()
    } else {
        panic!("{path}: no parser for this directory")
    }
}

#[test]
fn verdicts_agree_with_the_external_corpus() {
    let dir = corpus_dir();
    let listing = dir.join("VERDICTS");
    let verdicts = std::fs::read_to_string(&listing)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", listing.display()));
    let mut disagreements = Vec::new();
    let mut histories = 0;
    let mut slowest = (Duration::ZERO, String::new());
    let started = Instant::now();
    for line in verdicts
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
    {
        let (path, expected) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("VERDICTS line {line:?}"));
        let expected: bool = expected
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("VERDICTS line {line:?}"));
        let history_started = Instant::now();
        let actual = verdict(&dir, path);
        let elapsed = history_started.elapsed();
        eprintln!("{path}: {actual:?} (expected {expected}) in {elapsed:?}");
        if actual != Some(expected) {
            disagreements.push(format!(
                "{path}: expected {expected}, checker said {actual:?}"
            ));
        }
        if elapsed > Duration::from_secs(HISTORY_CHECK_SECONDS_MAX) {
            disagreements.push(format!("{path}: took {elapsed:?}"));
        }
        if elapsed > slowest.0 {
            slowest = (elapsed, path.to_owned());
        }
        histories += 1;
    }
    eprintln!(
        "{histories} histories in {:?}; slowest {} in {:?}",
        started.elapsed(),
        slowest.1,
        slowest.0
    );
    assert!(histories > 0, "VERDICTS lists no histories");
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

/// Porcupine reads Jepsen events split by any whitespace: every log of the
/// corpus with its tabs turned into runs of spaces reads as the same history.
#[test]
fn jepsen_logs_read_the_same_with_spaces_for_tabs() {
    let dir = corpus_dir().join("jepsen-etcd");
    let mut logs = 0;
    for entry in std::fs::read_dir(&dir).expect("the Jepsen logs of the corpus") {
        let path = entry.expect("a directory entry").path();
        let text = std::fs::read_to_string(&path).expect("a readable log");
        let spaced = text.replace('\t', "  ");
        assert_ne!(spaced, text, "{} has tab-separated fields", path.display());
        let history = parse_jepsen_register(&text).expect("the corpus parses");
        assert!(!history.is_empty(), "{} holds events", path.display());
        assert_eq!(
            parse_jepsen_register(&spaced).as_ref(),
            Ok(&history),
            "{}",
            path.display()
        );
        logs += 1;
    }
    assert!(
        logs >= 90,
        "found only {logs} Jepsen logs in {}",
        dir.display()
    );
}
