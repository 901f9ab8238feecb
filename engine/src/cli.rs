//! The command line of `keel`: clap definitions, and parsing with exit codes
//! of our own (clap's would exit 2, which `keel wal` uses for corruption).

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::exit::{Exit, EXIT_CODES_HELP};
use crate::wal_cli;

/// Keel, a replicated, crash-safe key-value store.
#[derive(Debug, Parser)]
#[command(name = "keel", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect, verify, dump and repair write-ahead logs offline (no server
    /// may be running on the directory).
    Wal(WalArgs),
    /// Run the server: a node serving the Redis protocol (alone, or with
    /// --peers a cluster member: each shard's log replicated by Raft).
    // Boxed: the flags are many times the size of the other variant.
    Serve(Box<crate::config::ServeArgs>),
}

#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct WalArgs {
    #[command(subcommand)]
    pub command: WalCommand,
}

/// The directory a `keel wal` command works on.
#[derive(Debug, Args)]
pub struct DirArg {
    /// A server's data directory (each directory up to 4 levels below it that
    /// holds *.wal segment files is a WAL, reported in turn), or a WAL directory.
    pub dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Show the segments (first index, frames, bytes used, how each ends),
    /// the entries, and the durable tail.
    #[command(after_help = EXIT_CODES_HELP)]
    Inspect {
        #[command(flatten)]
        target: DirArg,
    },
    /// Check the log: exit 0 if clean, 1 on a torn tail, 2 on corruption.
    #[command(after_help = EXIT_CODES_HELP)]
    Verify {
        #[command(flatten)]
        target: DirArg,
    },
    /// Print one line per entry, in log order, with its decoded operation.
    #[command(after_help = EXIT_CODES_HELP)]
    Dump {
        #[command(flatten)]
        target: DirArg,
        /// First log index to print.
        #[arg(long, value_name = "INDEX")]
        from: Option<u64>,
        /// Last log index to print.
        #[arg(long, value_name = "INDEX")]
        to: Option<u64>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Cut a torn tail, saving the cut bytes beside the segment first. Refuses
    /// a log damaged before its tail unless --force-truncate.
    #[command(after_help = EXIT_CODES_HELP)]
    Repair {
        #[command(flatten)]
        target: DirArg,
        /// Say what would be done, and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// On damage before the tail, drop the log from the damage on (saving
        /// the dropped bytes first). Those entries may have been acknowledged.
        #[arg(long)]
        force_truncate: bool,
    },
}

impl WalCommand {
    pub fn dir(&self) -> &Path {
        match self {
            WalCommand::Inspect { target }
            | WalCommand::Verify { target }
            | WalCommand::Dump { target, .. }
            | WalCommand::Repair { target, .. } => &target.dir,
        }
    }
}

/// Parses `args` (the program name first) and runs the command. Reports go to
/// stdout, errors and progress to stderr.
pub fn run(args: impl IntoIterator<Item = OsString>) -> Exit {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version are printed on request, everything else is misuse.
            let exit = if error.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            };
            return match error.print() {
                Ok(()) => exit,
                Err(_) => Exit::Io,
            };
        }
    };
    match &cli.command {
        Command::Wal(wal) => {
            let mut out = io::BufWriter::new(io::stdout().lock());
            let exit = wal_cli::run(&wal.command, &mut out, &mut io::stderr().lock());
            match out.flush() {
                Ok(()) => exit,
                Err(_) => exit.max(Exit::Io),
            }
        }
        // No lock on stdout or stderr here: the server's threads log to stderr.
        Command::Serve(args) => crate::serve::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Doc comments cannot name the constant, so a test keeps them in step.
    #[test]
    fn the_help_states_the_search_depth() {
        let help = Cli::try_parse_from(["keel", "wal", "verify", "--help"])
            .expect_err("--help stops parsing")
            .to_string();
        let depth = crate::wal_cli::discover::WAL_SEARCH_DEPTH_MAX;
        assert!(help.contains(&format!("up to {depth} levels")), "{help}");
    }
}
