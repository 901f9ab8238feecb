//! `keel wal verify`: one line per WAL, and an exit code scripts can act on.

use std::io::Write;

use super::open::{count, describe_entries, describe_torn_tail, Recovered};
use super::CliError;
use crate::exit::Exit;

pub fn run(recovered: &Recovered, out: &mut dyn Write) -> Result<Exit, CliError> {
    let dir = recovered.dir.display();
    let log = match &recovered.log {
        Ok(log) => log,
        Err(error) => {
            let corruption = recovered.describe_corruption(error);
            writeln!(out, "wal {dir}: corrupt: {corruption}")?;
            return Ok(Exit::Corrupt);
        }
    };
    let segments = count(log.segments.len(), "segment");
    match &log.torn {
        None => {
            let entries = describe_entries(log);
            writeln!(out, "wal {dir}: clean: {entries} in {segments}")?;
            Ok(Exit::Success)
        }
        Some(torn) => {
            let torn = describe_torn_tail(recovered, torn);
            let last = log.last_index();
            writeln!(
                out,
                "wal {dir}: torn tail: {torn}; last index kept {last}; `keel wal repair` cuts it"
            )?;
            Ok(Exit::Torn)
        }
    }
}
