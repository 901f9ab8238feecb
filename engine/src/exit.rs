//! The exit codes of `keel`, and their description in `--help`.

use std::process::ExitCode;

/// How a `keel` command ended. Codes above 2 follow sysexits.h.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    Success = 0,
    /// The log ends in a torn tail (`keel wal verify`).
    Torn = 1,
    /// The log is damaged before its tail, or a repair was refused.
    Corrupt = 2,
    /// EX_USAGE: the command line is wrong (for `keel serve`, also its
    /// settings, as protected mode's refusal).
    Usage = 64,
    /// EX_NOINPUT: the directory holds no WAL.
    NoWal = 66,
    /// EX_SOFTWARE: `keel serve` found a core gone without a report (a bug).
    Internal = 70,
    /// EX_IOERR: a file could not be read or written.
    Io = 74,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// The `--help` text that documents [`Exit`].
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0   success; verify: the log is clean; repair: the log is clean now
  1   verify: the log ends in a torn tail (a crash cut its last write short),
      which `keel wal repair` cuts
  2   the log is damaged before its tail: the report names the file, the byte
      offset and the log index of the first bad frame; repair refuses unless
      --force-truncate
  64  usage error; serve: invalid settings, or a --bind other machines can
      reach without --requirepass (protected mode)
  66  DIR holds no WAL
  70  serve: internal error (a core stopped without a report); a panic
      aborts the process instead (SIGABRT) after logging its message
  74  IO error: DIR or a file in it cannot be read, or a file cannot be written
When DIR holds several WAL directories, each is reported and the highest code
is the exit code.";
