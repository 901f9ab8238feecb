//! Damaged data directories at start-up: a torn tail is cut and the server
//! starts; damage before the tail, or a directory that is not Keel's, makes it
//! refuse with a non-zero exit and a message that says what to do.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use keel_tests::{Server, ServerOptions};
use keel_wal::frame::{FRAME_ALIGN_BYTES, FRAME_HEADER_BYTES, FRAME_MAGIC};
use keel_wal::segment::{BLOCK_BYTES, SEGMENT_HEADER_BYTES};
use keel_wal::{run_ready, StdStorage, Term, Wal, WalError, WalOptions};

/// One shard, so that every write lands in one WAL.
fn one_shard(dir: Option<PathBuf>) -> ServerOptions {
    ServerOptions {
        dir,
        shards: 1,
        ..ServerOptions::default()
    }
}

/// The first segment of shard 0's WAL.
fn first_segment(dir: &Path) -> PathBuf {
    dir.join("shard-0000").join("00000000000000000001.wal")
}

/// The byte offset just past the last frame of `segment`: frames follow one
/// another within a batch, and each batch starts on a block boundary.
fn end_of_frames(segment: &Path) -> usize {
    let bytes = fs::read(segment).expect("read the segment");
    let magic_at =
        |offset: usize| bytes.get(offset..offset + 4) == Some(&FRAME_MAGIC.to_le_bytes()[..]);
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut end = offset;
    loop {
        if !magic_at(offset) {
            offset = offset.next_multiple_of(BLOCK_BYTES);
            if !magic_at(offset) {
                return end;
            }
        }
        let len = u32::from_le_bytes(bytes[offset + 12..offset + 16].try_into().expect("4 bytes"));
        end = offset + (FRAME_HEADER_BYTES + len as usize).next_multiple_of(FRAME_ALIGN_BYTES);
        offset = end;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Each SET on its own connection, so each is its own synced batch.
fn set_each(server: &Server, pairs: &[(&str, &[u8])]) {
    for (key, value) in pairs {
        let mut connection = server.connection();
        let _: () = redis::cmd("SET")
            .arg(*key)
            .arg(*value)
            .query(&mut connection)
            .expect("SET");
    }
}

fn get(server: &Server, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut server.connection())
        .expect("GET")
}

#[test]
fn garbage_after_the_last_batch_is_cut_and_earlier_writes_kept() {
    let mut server = Server::start(one_shard(None));
    set_each(&server, &[("a", b"1"), ("b", b"2"), ("c", b"3")]);
    server.kill9();
    let segment = first_segment(server.dir());
    let end = end_of_frames(&segment);
    let file = fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("open the segment");
    file.write_all_at(&[0x5a; 100], end as u64)
        .expect("write garbage");
    drop(file);
    server.restart();
    for (key, value) in [("a", b"1"), ("b", b"2"), ("c", b"3")] {
        assert_eq!(get(&server, key).as_deref(), Some(&value[..]), "{key}");
    }
    let stderr = server.stderr();
    assert!(stderr.contains("torn tail cut"), "{stderr}");
}

#[test]
fn a_half_zeroed_last_batch_is_cut_and_earlier_writes_kept() {
    let mut server = Server::start(one_shard(None));
    set_each(&server, &[("a", b"1"), ("b", b"2")]);
    // The last batch spans several blocks; zero the second half of its first.
    let big = vec![b'x'; 3 * BLOCK_BYTES];
    set_each(&server, &[("big", &big)]);
    server.kill9();
    let segment = first_segment(server.dir());
    let bytes = fs::read(&segment).expect("read the segment");
    let big_at = find(&bytes, &big[..64]).expect("the big value is in the log");
    let block = big_at / BLOCK_BYTES * BLOCK_BYTES;
    let file = fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("open the segment");
    file.write_all_at(&[0; BLOCK_BYTES / 2], (block + BLOCK_BYTES / 2) as u64)
        .expect("zero half a block");
    drop(file);
    server.restart();
    assert_eq!(get(&server, "a").as_deref(), Some(&b"1"[..]));
    assert_eq!(get(&server, "b").as_deref(), Some(&b"2"[..]));
    assert_eq!(
        get(&server, "big"),
        None,
        "the torn write was never acknowledged whole"
    );
    let stderr = server.stderr();
    assert!(stderr.contains("torn tail cut"), "{stderr}");
}

#[test]
fn a_flipped_byte_before_the_tail_refuses_to_start_and_names_the_file() {
    let mut server = Server::start(one_shard(None));
    set_each(
        &server,
        &[
            ("first", b"payload-of-the-first-batch"),
            ("second", b"2"),
            ("third", b"3"),
        ],
    );
    server.kill9();
    let segment = first_segment(server.dir());
    let bytes = fs::read(&segment).expect("read the segment");
    let at = find(&bytes, b"payload-of-the-first-batch").expect("the first value is in the log");
    let file = fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("open the segment");
    file.write_all_at(&[bytes[at + 3] ^ 0x01], (at + 3) as u64)
        .expect("flip a byte");
    drop(file);
    let exited = server
        .try_restart()
        .expect_err("a corrupt log must not be served");
    assert!(!exited.status.success(), "{exited:?}");
    assert!(
        exited.stderr.contains("00000000000000000001.wal"),
        "{}",
        exited.stderr
    );
    assert!(exited.stderr.contains("keel wal"), "{}", exited.stderr);
    assert!(exited.stderr.contains("offset"), "{}", exited.stderr);
    assert!(exited.stderr.contains("index"), "{}", exited.stderr);
}

#[test]
fn a_data_dir_that_is_a_file_is_refused() {
    let temp = tempfile::tempdir().expect("a temp dir");
    let path = temp.path().join("not-a-dir");
    fs::write(&path, b"hello").expect("write a file");
    let exited =
        Server::try_start(one_shard(Some(path.clone()))).expect_err("a file is not a data dir");
    assert!(!exited.status.success(), "{exited:?}");
    assert!(exited.stderr.contains("not-a-dir"), "{}", exited.stderr);
    assert_eq!(fs::read(&path).expect("the file is intact"), b"hello");
}

#[test]
fn a_dir_with_foreign_files_and_no_identity_is_refused() {
    let temp = tempfile::tempdir().expect("a temp dir");
    let dir = temp.path().join("someone-elses");
    fs::create_dir(&dir).expect("create the dir");
    fs::write(dir.join("photo.jpg"), b"\xff\xd8\xff").expect("write a foreign file");
    let exited = Server::try_start(one_shard(Some(dir.clone())))
        .expect_err("a foreign dir is not a data dir");
    assert!(!exited.status.success(), "{exited:?}");
    assert!(exited.stderr.contains("someone-elses"), "{}", exited.stderr);
    let names: Vec<_> = fs::read_dir(&dir)
        .expect("list")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(
        names,
        ["photo.jpg"],
        "nothing is written into a foreign dir"
    );
}

/// Two servers appending to one WAL would destroy it: the second is refused
/// while the first runs, and starts once it is gone.
#[test]
fn a_data_dir_in_use_by_another_server_is_refused() {
    let mut first = Server::start(one_shard(None));
    let dir = first.dir().to_path_buf();
    let exited = Server::try_start(one_shard(Some(dir.clone())))
        .expect_err("the directory is locked by the first server");
    assert!(!exited.status.success(), "{exited:?}");
    assert!(
        exited.stderr.contains("another keel process"),
        "{}",
        exited.stderr
    );
    first.kill9();
    let second = Server::start(one_shard(Some(dir)));
    let mut connection = second.connection();
    let pong: String = redis::cmd("PING").query(&mut connection).expect("PING");
    assert_eq!(pong, "PONG");
}

/// A log entry from a damaged disk (or, later, a peer) is only bytes: one
/// holding a batch inside a batch, which no build ever wrote, is refused at
/// start with the entry named, instead of panicking the server mid-replay.
#[test]
fn a_nested_batch_in_the_log_refuses_to_start_and_names_the_entry() {
    let mut server = Server::start(one_shard(None));
    set_each(&server, &[("kept", b"1")]);
    server.kill9();
    let storage = StdStorage::new(server.dir().join("shard-0000"));
    let index = run_ready(async {
        let (mut wal, _) = Wal::open(storage, WalOptions::default()).await?;
        // A batch (variant 5) of one operation, itself a batch of none; 1 is
        // the single node's term.
        let index = wal.append(Term(1), &[5, 1, 5, 0])?;
        wal.sync().await?;
        Ok::<_, WalError>(index)
    })
    .expect("append to the log");
    let exited = server
        .try_restart()
        .expect_err("an entry that does not decode must not be served");
    assert!(!exited.status.success(), "{exited:?}");
    let expected = format!("log entry {} does not decode", index.0);
    assert!(exited.stderr.contains(&expected), "{}", exited.stderr);
    assert!(!exited.stderr.contains("panicked"), "{}", exited.stderr);
}
