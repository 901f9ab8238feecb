//! An in-memory [`Storage`] that can lose, tear and damage data, for tests.
//!
//! Each file keeps what a reader sees now (`live`) apart from what the disk
//! holds for certain (`durable`), and which 512-byte sectors were written since
//! the last sync. The directory likewise keeps its live entries apart from those
//! made durable by [`Storage::sync_dir`]. [`MemStorage::crash`] decides, sector
//! by sector from a seed, whether each unsynced write was kept, dropped, or torn
//! into garbage, and reverts the directory to its durable entries. Clones share
//! one disk, so a test keeps a handle while the WAL owns another, and a crashed
//! disk can be opened again.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::rc::Rc;

use crate::storage::{Storage, StorageFile};

/// The unit in which a crash tears writes.
pub const SECTOR_BYTES: usize = 512;

/// Faults injected while running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// The sync (file or directory) after this many more successful ones fails.
    pub fail_sync_after: Option<u32>,
    /// The write after this many more successful ones fails.
    pub fail_write_after: Option<u32>,
}

/// What a crash does to each sector written since its file's last sync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CrashMode {
    /// Kept, dropped or torn, each with probability 1/3.
    #[default]
    Random,
    /// Every one reached the disk.
    Keep,
    /// None reached the disk.
    Drop,
    /// Every one holds garbage: the power failed mid-write.
    Tear,
}

/// What a crash did to the unsynced sectors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashReport {
    pub kept_sectors: u64,
    pub dropped_sectors: u64,
    pub torn_sectors: u64,
}

#[derive(Debug, Default)]
struct MemFileData {
    live: Vec<u8>,
    durable: Vec<u8>,
    unsynced_sectors: BTreeSet<usize>,
}

#[derive(Debug, Default)]
struct MemDisk {
    files: BTreeMap<u64, MemFileData>,
    live_names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    next_id: u64,
    faults: Faults,
}

/// A seeded pseudo-random sequence (splitmix64): the same seed, the same crash.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "below(0) has no value to return");
        self.next_u64() % bound
    }

    /// True with probability `rate` (0 never draws).
    pub fn chance(&mut self, rate: f64) -> bool {
        if rate == 0.0 {
            return false;
        }
        // 53 random bits: the precision of an f64 in 0.0..1.0.
        let draw = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        draw < rate
    }
}

fn countdown(counter: &mut Option<u32>, what: &str) -> io::Result<()> {
    match counter {
        Some(0) => {
            *counter = None;
            Err(io::Error::other(format!("injected {what} failure")))
        }
        Some(left) => {
            *left -= 1;
            Ok(())
        }
        None => Ok(()),
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file {name}"))
}

/// A shared, in-memory disk holding one directory.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    disk: Rc<RefCell<MemDisk>>,
}

impl MemStorage {
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    pub fn set_faults(&self, faults: Faults) {
        self.disk.borrow_mut().faults = faults;
    }

    /// Makes the next sync (file or directory) fail, once.
    pub fn fail_next_sync(&self) {
        self.disk.borrow_mut().faults.fail_sync_after = Some(0);
    }

    /// The bytes a reader of `name` sees now.
    pub fn contents(&self, name: &str) -> Option<Vec<u8>> {
        let disk = self.disk.borrow();
        let id = disk.live_names.get(name)?;
        Some(disk.files[id].live.clone())
    }

    /// Flips bits of a byte as a failing medium would: in what is read now and
    /// in what survives a crash.
    pub fn corrupt(&self, name: &str, offset: usize, xor: u8) {
        let mut disk = self.disk.borrow_mut();
        let id = disk.live_names[name];
        let file = disk.files.get_mut(&id).expect("named files exist");
        file.live[offset] ^= xor;
        if offset < file.durable.len() {
            file.durable[offset] ^= xor;
        }
    }

    /// Power loss: every sector written since its file's last sync is kept,
    /// dropped or torn (filled with garbage), each with probability 1/3, and
    /// the directory reverts to its last synced entries.
    pub fn crash(&self, seed: u64) -> CrashReport {
        self.crash_with(seed, CrashMode::Random)
    }

    /// Power loss in which every unsynced sector meets the fate `mode` gives.
    pub fn crash_with(&self, seed: u64, mode: CrashMode) -> CrashReport {
        let mut rng = SplitMix64::new(seed);
        let mut report = CrashReport::default();
        let mut disk = self.disk.borrow_mut();
        let durable_names = disk.durable_names.clone();
        disk.files
            .retain(|id, _| durable_names.values().any(|kept| kept == id));
        for file in disk.files.values_mut() {
            if file.durable.len() < file.live.len() {
                file.durable.resize(file.live.len(), 0);
            }
            for sector in std::mem::take(&mut file.unsynced_sectors) {
                let range =
                    sector * SECTOR_BYTES..((sector + 1) * SECTOR_BYTES).min(file.live.len());
                let fate = match mode {
                    CrashMode::Random => rng.below(3),
                    CrashMode::Keep => 0,
                    CrashMode::Drop => 1,
                    CrashMode::Tear => 2,
                };
                match fate {
                    0 => {
                        file.durable[range.clone()].copy_from_slice(&file.live[range]);
                        report.kept_sectors += 1;
                    }
                    1 => report.dropped_sectors += 1,
                    _ => {
                        for byte in &mut file.durable[range] {
                            *byte = rng.next_u64() as u8;
                        }
                        report.torn_sectors += 1;
                    }
                }
            }
            file.live = file.durable.clone();
        }
        disk.live_names = durable_names;
        report
    }

    fn new_file(&self, name: &str) -> io::Result<MemFile> {
        let mut disk = self.disk.borrow_mut();
        if disk.live_names.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{name} exists"),
            ));
        }
        let id = disk.next_id;
        disk.next_id += 1;
        disk.files.insert(id, MemFileData::default());
        disk.live_names.insert(name.to_owned(), id);
        Ok(MemFile {
            disk: Rc::clone(&self.disk),
            id,
        })
    }
}

impl Storage for MemStorage {
    type File = MemFile;
    type Map = Vec<u8>;

    fn describe(&self, file: &str) -> String {
        format!("mem:{file}")
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.disk.borrow().live_names.keys().cloned().collect())
    }

    fn map(&self, name: &str) -> io::Result<Vec<u8>> {
        self.contents(name).ok_or_else(|| not_found(name))
    }

    async fn create(&self, name: &str) -> io::Result<MemFile> {
        self.new_file(name)
    }

    async fn open(&self, name: &str) -> io::Result<MemFile> {
        let id = *self
            .disk
            .borrow()
            .live_names
            .get(name)
            .ok_or_else(|| not_found(name))?;
        Ok(MemFile {
            disk: Rc::clone(&self.disk),
            id,
        })
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        let id = disk
            .live_names
            .remove(from)
            .ok_or_else(|| not_found(from))?;
        disk.live_names.insert(to.to_owned(), id);
        Ok(())
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        disk.live_names
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| not_found(name))
    }

    async fn sync_dir(&self) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        countdown(&mut disk.faults.fail_sync_after, "directory sync")?;
        disk.durable_names = disk.live_names.clone();
        Ok(())
    }
}

/// A file of [`MemStorage`].
#[derive(Debug)]
pub struct MemFile {
    disk: Rc<RefCell<MemDisk>>,
    id: u64,
}

impl MemFile {
    fn with<T>(&self, action: impl FnOnce(&mut MemFileData, &mut Faults) -> T) -> T {
        let mut disk = self.disk.borrow_mut();
        let disk = &mut *disk;
        let file = disk
            .files
            .get_mut(&self.id)
            .expect("open files exist until a crash");
        action(file, &mut disk.faults)
    }
}

impl StorageFile for MemFile {
    async fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with(|file, _| {
            let start = usize::try_from(offset).map_err(io::Error::other)?;
            let source = file
                .live
                .get(start..start + buf.len())
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
            buf.copy_from_slice(source);
            Ok(())
        })
    }

    async fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with(|file, faults| {
            countdown(&mut faults.fail_write_after, "write")?;
            let start = usize::try_from(offset).map_err(io::Error::other)?;
            let end = start + buf.len();
            if file.live.len() < end {
                file.live.resize(end, 0);
            }
            file.live[start..end].copy_from_slice(buf);
            let sectors = start / SECTOR_BYTES..end.div_ceil(SECTOR_BYTES);
            file.unsynced_sectors.extend(sectors);
            Ok(())
        })
    }

    async fn sync(&mut self) -> io::Result<()> {
        self.with(|file, faults| {
            countdown(&mut faults.fail_sync_after, "sync")?;
            file.durable.resize(file.live.len(), 0);
            for sector in std::mem::take(&mut file.unsynced_sectors) {
                let range =
                    sector * SECTOR_BYTES..((sector + 1) * SECTOR_BYTES).min(file.live.len());
                file.durable[range.clone()].copy_from_slice(&file.live[range]);
            }
            Ok(())
        })
    }

    async fn preallocate(&mut self, len: u64) -> io::Result<()> {
        let zeros = vec![0; usize::try_from(len).map_err(io::Error::other)?];
        self.write_at(&zeros, 0).await
    }

    fn size_bytes(&self) -> io::Result<u64> {
        self.with(|file, _| Ok(file.live.len() as u64))
    }
}
