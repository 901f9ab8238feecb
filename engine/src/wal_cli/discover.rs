//! Finding the WAL directories in a server's data directory.

use std::fs;
use std::path::{Path, PathBuf};

use keel_wal::segment::{file_role, FileRole};

use super::{io_error, CliError};

/// How many directory levels below DIR are searched for WAL directories: a
/// data directory holds a WAL per shard, a few levels down at most.
pub const WAL_SEARCH_DEPTH_MAX: usize = 4;

/// The directories at or below `dir` (down to [`WAL_SEARCH_DEPTH_MAX`] levels)
/// that hold segment files, sorted. Symbolic links to directories are not
/// followed. Fails if `dir` cannot be read or holds no WAL.
pub fn find_wal_dirs(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let mut found = Vec::new();
    visit(dir, 0, &mut found)?;
    if found.is_empty() {
        return Err(CliError::NoWal {
            dir: dir.to_owned(),
        });
    }
    found.sort();
    Ok(found)
}

fn visit(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) -> Result<(), CliError> {
    let mut holds_segments = false;
    for entry in fs::read_dir(dir).map_err(io_error("read directory", dir))? {
        let entry = entry.map_err(io_error("read directory", dir))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(io_error("stat", &path))?;
        if file_type.is_dir() {
            if depth < WAL_SEARCH_DEPTH_MAX {
                visit(&path, depth + 1, found)?;
            }
        } else if let Some(name) = entry.file_name().to_str() {
            holds_segments |= matches!(file_role(name), FileRole::Segment(_));
        }
    }
    if holds_segments {
        found.push(dir.to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"").unwrap();
    }

    #[test]
    fn finds_wal_directories_down_to_the_depth_limit() {
        let data = tempfile::tempdir().unwrap();
        let root = data.path();
        let segment = "00000000000000000001.wal";
        touch(&root.join("shards/2/wal").join(segment));
        touch(&root.join("shards/1/wal").join(segment));
        touch(&root.join("a/b/c/d/e").join(segment));
        touch(&root.join("notes/x.wal"));
        touch(&root.join("tmp").join("00000000000000000001.wal.tmp"));
        let found = find_wal_dirs(root).unwrap();
        assert_eq!(
            found,
            vec![root.join("shards/1/wal"), root.join("shards/2/wal")]
        );
        assert_eq!(
            find_wal_dirs(&root.join("shards/1/wal")).unwrap(),
            vec![root.join("shards/1/wal")]
        );
    }

    #[test]
    fn a_directory_without_segments_or_at_all_is_an_error() {
        let data = tempfile::tempdir().unwrap();
        assert!(matches!(
            find_wal_dirs(data.path()),
            Err(CliError::NoWal { .. })
        ));
        assert!(matches!(
            find_wal_dirs(&data.path().join("missing")),
            Err(CliError::Io { .. })
        ));
    }
}
