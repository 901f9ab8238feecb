//! `keel wal`: offline inspection, verification, dump and repair of WALs.
//!
//! [`discover`] finds the WAL directories in DIR; [`open`] recovers each one
//! read-only (the shared first step of every command); [`inspect`],
//! [`verify`], [`dump`] and [`repair`] report on or act on the result.

pub mod discover;
pub mod dump;
pub mod inspect;
pub mod open;
pub mod repair;
pub mod verify;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use keel_wal::recovery::RecoveryError;
use keel_wal::repair::RepairError;
use keel_wal::WalError;

use crate::cli::WalCommand;
use crate::exit::Exit;

/// Why a `keel wal` command could not do its work. Corruption found in a log
/// is a result, not an error; it appears here only where a command cannot go
/// on past it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "{}: no WAL here: no directory up to {} levels down holds *.wal segment files",
        dir.display(),
        discover::WAL_SEARCH_DEPTH_MAX
    )]
    NoWal { dir: PathBuf },
    #[error("--from {from} is after --to {to}")]
    EmptyRange { from: u64, to: u64 },
    #[error("{} exists with other bytes (from an earlier repair?): move it away and run again", path.display())]
    SalvageExists { path: PathBuf },
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    #[error(transparent)]
    Repair(#[from] RepairError),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("cannot write the report: {0}")]
    Output(#[from] io::Error),
}

impl CliError {
    pub fn exit(&self) -> Exit {
        match self {
            CliError::NoWal { .. } => Exit::NoWal,
            CliError::EmptyRange { .. } => Exit::Usage,
            CliError::Recovery(error) | CliError::Wal(WalError::Recovery(error)) => match error {
                RecoveryError::Io(_) => Exit::Io,
                _ => Exit::Corrupt,
            },
            CliError::Io { .. }
            | CliError::SalvageExists { .. }
            | CliError::Repair(_)
            | CliError::Wal(_)
            | CliError::Output(_) => Exit::Io,
        }
    }
}

/// An IO error on `path`, for `map_err`.
pub(crate) fn io_error<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> CliError + 'a {
    move |source| CliError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Runs `command` on every WAL directory in its DIR, and returns the highest
/// exit code among them.
pub fn run(command: &WalCommand, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    let dirs = check_range(command).and_then(|()| discover::find_wal_dirs(command.dir()));
    let dirs = match dirs {
        Ok(dirs) => dirs,
        Err(error) => return report_error(err, &error),
    };
    let mut worst = Exit::Success;
    for dir in dirs {
        let exit = run_one(command, &dir, out)
            .and_then(|exit| out.flush().map(|()| exit).map_err(CliError::Output))
            .unwrap_or_else(|error| report_error(err, &error));
        worst = worst.max(exit);
    }
    worst
}

fn check_range(command: &WalCommand) -> Result<(), CliError> {
    match command {
        WalCommand::Dump {
            from: Some(from),
            to: Some(to),
            ..
        } if from > to => Err(CliError::EmptyRange {
            from: *from,
            to: *to,
        }),
        _ => Ok(()),
    }
}

fn run_one(command: &WalCommand, dir: &Path, out: &mut dyn Write) -> Result<Exit, CliError> {
    let recovered = open::recover_dir(dir)?;
    match command {
        WalCommand::Inspect { .. } => inspect::run(&recovered, out),
        WalCommand::Verify { .. } => verify::run(&recovered, out),
        WalCommand::Dump { from, to, json, .. } => {
            let range = from.unwrap_or(0)..=to.unwrap_or(u64::MAX);
            dump::run(recovered, range, *json, out)
        }
        WalCommand::Repair {
            dry_run,
            force_truncate,
            ..
        } => repair::run(recovered, *dry_run, *force_truncate, out),
    }
}

/// Prints `error` (unless the reader of stdout went away, which needs no
/// telling) and returns its exit code.
fn report_error(err: &mut dyn Write, error: &CliError) -> Exit {
    let reader_gone =
        matches!(error, CliError::Output(source) if source.kind() == io::ErrorKind::BrokenPipe);
    if !reader_gone {
        // Nothing is left to tell the user if stderr fails too.
        writeln!(err, "error: {error}").ok();
    }
    error.exit()
}
