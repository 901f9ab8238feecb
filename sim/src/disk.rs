//! SimDisk: the simulated machine disk under a node, which outlives the node.
//!
//! A [`SimDisk`] holds one directory per shard ([`SimDisk::dir`]), each a
//! [`MemStorage`] that keeps live bytes apart from durable ones per 512-byte
//! sector. The node is dropped and restarted on a kill; the disk handle stays
//! with the simulator, and [`SimDisk::crash`] decides what power loss left of
//! every write not yet synced. While the node runs, each operation through a
//! [`SimDir`] may suffer a fault, drawn at the rates of [`FaultRates`] from one
//! seeded PRNG per disk: no clock and no OS randomness, so a seed replays the
//! same faults for the same operations.
//!
//! Faults come in two modes ([`FaultMode`]), because they call for different
//! expected outcomes:
//! - [`FaultMode::InFlight`]: a failed fsync, a flipped bit in what a read
//!   returns, a read that fails. They touch only the operation in flight or
//!   data not yet synced; the node must not acknowledge what they touched,
//!   and must recover with nothing acknowledged lost.
//! - [`FaultMode::Damage`]: a flipped bit in a write, a write that lands
//!   elsewhere in the file. The node cannot see them before it syncs and
//!   acknowledges, so they damage data it holds durable; the expected outcome
//!   is detection (refusing to start, reporting), not silent loss.
//!
//! Every fault is logged ([`SimDisk::fault_log`]) with its directory, file and
//! offset, so the simulator can print what happened and pick the outcome to
//! expect.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use keel_wal::frame::{decode_header, FRAME_ALIGN_BYTES, FRAME_PAYLOAD_BYTES_MAX};
use keel_wal::memory::{CrashMode, CrashReport, MemFile, SplitMix64};
use keel_wal::segment::{SegmentHeader, SEGMENT_HEADER_BYTES};
use keel_wal::{FrameKind, MemStorage, Storage, StorageFile, BLOCK_BYTES};

/// Faults that touch only the operation in flight or data not yet synced.
/// Each rate is a probability per operation, in `0.0..=1.0`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct InFlightRates {
    /// A file or directory sync returns an error without making anything
    /// durable; a later crash keeps, drops or tears each unsynced sector.
    pub fsync_fail: f64,
    /// A read or map returns one flipped bit; the disk is unharmed.
    pub read_bit_flip: f64,
    /// A read or map fails with an IO error; the disk is unharmed.
    pub latent_read_error: f64,
}

/// Faults that damage data the node will hold durable once its sync returns.
/// Each rate is a probability per write, in `0.0..=1.0`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DamageRates {
    /// The write reaches the disk with one bit flipped.
    pub write_bit_flip: f64,
    /// The write lands at another block-aligned offset of the same file,
    /// overwriting what was there and leaving the intended blocks as they were.
    pub misdirected_write: f64,
}

/// The rates of every fault, all zero by default.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultRates {
    pub in_flight: InFlightRates,
    pub damage: DamageRates,
}

impl FaultRates {
    fn assert_valid(&self) {
        let rates = [
            self.in_flight.fsync_fail,
            self.in_flight.read_bit_flip,
            self.in_flight.latent_read_error,
            self.damage.write_bit_flip,
            self.damage.misdirected_write,
        ];
        for rate in rates {
            assert!(
                (0.0..=1.0).contains(&rate),
                "a fault rate is a probability, not {rate}"
            );
        }
    }
}

/// How long the disk takes, drawn per operation from these ranges (inclusive,
/// in microseconds). The delay comes before the operation takes effect, so a
/// kill during a write leaves it undone and a kill during a sync leaves what
/// was written unsynced: power loss then keeps, drops or tears it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Latency {
    pub write_us: (u64, u64),
    pub sync_us: (u64, u64),
}

/// Waits for a while of the simulation's time. The disk takes its clock from
/// its user: madsim's in the simulator, none (no delay) in plain tests.
pub type Sleep = Rc<dyn Fn(Duration) -> Pin<Box<dyn Future<Output = ()>>>>;

/// How often a held sync looks again whether it may go on.
const HELD_SYNC_POLL_US: u64 = 100;

/// Which expected outcome a fault calls for (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultMode {
    InFlight,
    Damage,
}

/// What a fault did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// A file sync failed (offset 0).
    FsyncFail,
    /// A directory sync failed (no file, offset 0).
    DirSyncFail,
    /// The byte at the offset was read with bit `bit` flipped.
    ReadBitFlip { bit: u8 },
    /// A read (or map, then at offset 0) failed.
    LatentReadError,
    /// The byte at the offset was written with bit `bit` flipped.
    WriteBitFlip { bit: u8 },
    /// The write meant for `intended` landed at the offset.
    MisdirectedWrite { intended: u64 },
}

impl FaultKind {
    pub fn mode(&self) -> FaultMode {
        match self {
            FaultKind::FsyncFail
            | FaultKind::DirSyncFail
            | FaultKind::ReadBitFlip { .. }
            | FaultKind::LatentReadError => FaultMode::InFlight,
            FaultKind::WriteBitFlip { .. } | FaultKind::MisdirectedWrite { .. } => {
                FaultMode::Damage
            }
        }
    }
}

/// One injected fault, in the order they happened.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FaultEvent {
    pub dir: String,
    /// The file's name when it was opened or created; `None` for the directory.
    pub file: Option<String>,
    pub offset: u64,
    pub kind: FaultKind,
    /// For a damage fault: the log entries whose frames it touched, the
    /// bytes written and, for a misdirected write, the bytes it overwrote
    /// ([`touched_entries`]). What the fault can excuse is a loss or a
    /// refusal at one of these, nothing else.
    pub entries: BTreeSet<u64>,
}

impl fmt::Display for FaultEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.as_deref().unwrap_or("(directory)");
        write!(
            f,
            "{:?} fault {:?} at {}/{}:{}",
            self.kind.mode(),
            self.kind,
            self.dir,
            file,
            self.offset
        )?;
        if !self.entries.is_empty() {
            write!(f, " touching entries {:?}", self.entries)?;
        }
        Ok(())
    }
}

/// The log entries whose bytes lie in `within` (positions in `bytes`, which
/// start at byte `offset` of a segment file): each valid frame header there
/// names its entry (a cut frame after entry `i` names `i + 1`, the entry a
/// recovery expects next), the padding and zeros after a frame name the entry
/// expected after it, and a segment header at the file's start names the
/// segment's first entry. Frames start on 8-byte boundaries of the file and
/// writes on block boundaries, so every 8th position is tried.
pub fn touched_entries(bytes: &[u8], offset: u64, within: Range<usize>) -> BTreeSet<u64> {
    let overlaps = |range: Range<usize>| range.start < within.end && within.start < range.end;
    let mut entries = BTreeSet::new();
    if offset == 0 && overlaps(0..SEGMENT_HEADER_BYTES) {
        if let Ok(header) = SegmentHeader::decode(bytes) {
            entries.insert(header.first_index.0);
        }
    }
    // Each frame: where it starts and ends, the entry it names and the one
    // expected after it.
    let frames: Vec<(usize, usize, u64, u64)> = (0..bytes.len())
        .step_by(FRAME_ALIGN_BYTES)
        .filter_map(|at| {
            let header = decode_header(&bytes[at..], FRAME_PAYLOAD_BYTES_MAX).ok()?;
            let next = header.index.0 + 1;
            let named = match header.kind {
                FrameKind::Entry => header.index.0,
                FrameKind::Cut => next,
            };
            Some((at, at.saturating_add(header.frame_bytes()), named, next))
        })
        .collect();
    for (position, &(at, end, named, next)) in frames.iter().enumerate() {
        let next_at = frames.get(position + 1).map_or(bytes.len(), |next| next.0);
        if overlaps(at..end) {
            entries.insert(named);
        }
        if overlaps(end..next_at.max(end)) {
            entries.insert(next);
        }
    }
    entries
}

/// What [`SimDisk::crash`] did, summed over every directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimCrashReport {
    /// Unsynced sectors kept, dropped and torn.
    pub sectors: CrashReport,
    /// Names that appeared or disappeared because their directory entries were
    /// not synced (a rename counts twice).
    pub names_reverted: u64,
}

struct DiskState {
    dirs: BTreeMap<String, MemStorage>,
    rates: FaultRates,
    rng: SplitMix64,
    log: Vec<FaultEvent>,
    /// A read bit flip planned for the next read of a file: (directory,
    /// file, offset in the file, bit).
    planned_flip: Option<(String, String, u64, u8)>,
    latency: Latency,
    /// Absent: the disk takes no time, whatever `latency` says.
    sleep: Option<Sleep>,
    /// Syncs that have started but may not finish yet (see [`SimDisk::hold_syncs`]).
    holding_syncs: Rc<Cell<bool>>,
    syncs_held: Rc<Cell<u64>>,
    /// Syncs started and not yet finished (held or not).
    syncs_in_flight: Rc<Cell<u64>>,
}

impl fmt::Debug for DiskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskState")
            .field("dirs", &self.dirs)
            .field("rates", &self.rates)
            .field("latency", &self.latency)
            .field("faults_logged", &self.log.len())
            .finish_non_exhaustive()
    }
}

impl DiskState {
    /// Whether a fault of probability `rate` strikes now. A zero rate draws
    /// nothing, so a fault-free disk leaves the sequence untouched.
    fn strikes(&mut self, rate: f64) -> bool {
        self.rng.chance(rate)
    }
}

/// A cheap handle to one simulated machine disk; clones share it.
#[derive(Clone, Debug)]
pub struct SimDisk {
    state: Rc<RefCell<DiskState>>,
}

impl SimDisk {
    /// An empty disk whose faults are drawn from `seed`, with every rate zero,
    /// that takes no time.
    pub fn new(seed: u64) -> SimDisk {
        SimDisk {
            state: Rc::new(RefCell::new(DiskState {
                dirs: BTreeMap::new(),
                rates: FaultRates::default(),
                rng: SplitMix64::new(seed),
                log: Vec::new(),
                planned_flip: None,
                latency: Latency::default(),
                sleep: None,
                holding_syncs: Rc::default(),
                syncs_held: Rc::default(),
                syncs_in_flight: Rc::default(),
            })),
        }
    }

    /// An empty disk like [`SimDisk::new`] whose operations take `latency`,
    /// waited for with `sleep`.
    pub fn with_latency(seed: u64, latency: Latency, sleep: Sleep) -> SimDisk {
        assert!(
            latency.write_us.0 <= latency.write_us.1 && latency.sync_us.0 <= latency.sync_us.1,
            "a latency range runs from its least to its most: {latency:?}"
        );
        let disk = SimDisk::new(seed);
        {
            let mut state = disk.state.borrow_mut();
            state.latency = latency;
            state.sleep = Some(sleep);
        }
        disk
    }

    /// From now on, operations take `latency` (a disk that slows down, or
    /// recovers). Only a disk with a clock has a latency.
    pub fn set_latency(&self, latency: Latency) {
        assert!(
            latency.write_us.0 <= latency.write_us.1 && latency.sync_us.0 <= latency.sync_us.1,
            "a latency range runs from its least to its most: {latency:?}"
        );
        let mut state = self.state.borrow_mut();
        assert!(
            state.sleep.is_some(),
            "only a disk with a clock has a latency"
        );
        state.latency = latency;
    }

    /// While `hold` is true, file and directory syncs that start wait (they
    /// need a disk with a clock): a scenario can then crash the disk with a
    /// batch written but not synced.
    pub fn hold_syncs(&self, hold: bool) {
        let state = self.state.borrow();
        assert!(
            state.sleep.is_some() || !hold,
            "only a disk with a clock can hold syncs"
        );
        state.holding_syncs.set(hold);
    }

    /// Flips bit `bit` of the byte at `offset` of `dir/file` in what the next
    /// read or map of that file returns, once: a transient fault put exactly
    /// where a test needs it.
    pub fn flip_next_read(&self, dir: &str, file: &str, offset: u64, bit: u8) {
        assert!(bit < 8, "a byte has bits 0..8, not {bit}");
        self.state.borrow_mut().planned_flip = Some((dir.into(), file.into(), offset, bit));
    }

    /// Syncs waiting because syncs are held.
    pub fn syncs_held(&self) -> u64 {
        self.state.borrow().syncs_held.get()
    }

    /// Syncs started and not finished: a power loss now catches their data
    /// written but not durable.
    pub fn syncs_in_flight(&self) -> u64 {
        self.state.borrow().syncs_in_flight.get()
    }

    /// The directory `name`, created empty on first use.
    pub fn dir(&self, name: &str) -> SimDir {
        let storage = self
            .state
            .borrow_mut()
            .dirs
            .entry(name.to_owned())
            .or_default()
            .clone();
        SimDir {
            state: Rc::clone(&self.state),
            name: name.into(),
            storage,
        }
    }

    /// The names of the directories, in order.
    pub fn dir_names(&self) -> Vec<String> {
        self.state.borrow().dirs.keys().cloned().collect()
    }

    /// Sets the fault rates from the next operation on. Panics on a rate
    /// outside `0.0..=1.0`.
    pub fn set_rates(&self, rates: FaultRates) {
        rates.assert_valid();
        self.state.borrow_mut().rates = rates;
    }

    pub fn rates(&self) -> FaultRates {
        self.state.borrow().rates
    }

    /// Every fault injected so far, oldest first.
    pub fn fault_log(&self) -> Vec<FaultEvent> {
        self.state.borrow().log.clone()
    }

    /// Power loss: in every directory, each sector written since its file's
    /// last sync is kept, dropped or torn with garbage, and directory entries
    /// not synced revert. Drop every handle to open files first: a file whose
    /// entry reverts no longer exists. The faults are drawn from `rng_seed`,
    /// not from the disk's running sequence, so a crash replays on its own.
    pub fn crash(&self, rng_seed: u64) -> SimCrashReport {
        self.crash_with(rng_seed, CrashMode::Random)
    }

    /// Power loss in which every unsynced sector meets the fate `mode` gives.
    pub fn crash_with(&self, rng_seed: u64, mode: CrashMode) -> SimCrashReport {
        let dirs: Vec<MemStorage> = {
            let state = self.state.borrow();
            // The syncs that were held died with the node.
            state.holding_syncs.set(false);
            state.syncs_held.set(0);
            state.syncs_in_flight.set(0);
            state.dirs.values().cloned().collect()
        };
        let mut seeds = SplitMix64::new(rng_seed);
        let mut report = SimCrashReport::default();
        for storage in dirs {
            let before = names(&storage);
            let sectors = storage.crash_with(seeds.next_u64(), mode);
            let after = names(&storage);
            report.sectors.kept_sectors += sectors.kept_sectors;
            report.sectors.dropped_sectors += sectors.dropped_sectors;
            report.sectors.torn_sectors += sectors.torn_sectors;
            report.names_reverted += before.symmetric_difference(&after).count() as u64;
        }
        report
    }

    /// The bytes every file holds now, by directory and file name: what a
    /// reader would see, without faults.
    pub fn contents(&self) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
        let dirs = self.state.borrow().dirs.clone();
        dirs.into_iter()
            .map(|(name, storage)| {
                let files = names(&storage)
                    .into_iter()
                    .filter_map(|file| Some((file.clone(), storage.contents(&file)?)))
                    .collect();
                (name, files)
            })
            .collect()
    }
}

fn names(storage: &MemStorage) -> BTreeSet<String> {
    storage
        .list()
        .expect("listing a MemStorage cannot fail")
        .into_iter()
        .collect()
}

/// One directory of a [`SimDisk`], through which every operation may fault.
#[derive(Clone, Debug)]
pub struct SimDir {
    state: Rc<RefCell<DiskState>>,
    name: Rc<str>,
    storage: MemStorage,
}

impl SimDir {
    /// Draws a fault at the rate `rate` picks from the current rates.
    fn strikes(&self, rate: impl FnOnce(&FaultRates) -> f64) -> bool {
        let mut state = self.state.borrow_mut();
        let rate = rate(&state.rates);
        state.strikes(rate)
    }

    /// A number in `0..bound` from the disk's sequence.
    fn below(&self, bound: u64) -> u64 {
        self.state.borrow_mut().rng.below(bound)
    }

    /// Waits for as long as an operation takes, drawn from `range`.
    async fn delay(&self, range: impl FnOnce(&Latency) -> (u64, u64)) {
        let (sleep, us) = {
            let mut state = self.state.borrow_mut();
            let Some(sleep) = state.sleep.clone() else {
                return;
            };
            let (least, most) = range(&state.latency);
            (sleep, least + state.rng.below(most - least + 1))
        };
        sleep(Duration::from_micros(us)).await;
    }

    /// A sync's wait: its latency, and for as long as syncs are held.
    async fn sync_delay(&self) {
        let in_flight = Rc::clone(&self.state.borrow().syncs_in_flight);
        in_flight.set(in_flight.get() + 1);
        self.delay(|latency| latency.sync_us).await;
        let (sleep, holding, held) = {
            let state = self.state.borrow();
            (
                state.sleep.clone(),
                Rc::clone(&state.holding_syncs),
                Rc::clone(&state.syncs_held),
            )
        };
        if let Some(sleep) = sleep.filter(|_| holding.get()) {
            held.set(held.get() + 1);
            while holding.get() {
                sleep(Duration::from_micros(HELD_SYNC_POLL_US)).await;
            }
            held.set(held.get() - 1);
        }
        // A kill drops this future before here; the crash resets the count.
        in_flight.set(in_flight.get() - 1);
    }

    fn log(&self, file: Option<&str>, offset: u64, kind: FaultKind) {
        self.log_damage(file, offset, kind, BTreeSet::new());
    }

    fn log_damage(&self, file: Option<&str>, offset: u64, kind: FaultKind, entries: BTreeSet<u64>) {
        self.state.borrow_mut().log.push(FaultEvent {
            dir: self.name.to_string(),
            file: file.map(str::to_owned),
            offset,
            kind,
            entries,
        });
    }

    /// Applies the read faults to `bytes`, read from `offset` of `file`.
    fn read_faults(&self, file: &str, bytes: &mut [u8], offset: u64) -> io::Result<()> {
        if self.strikes(|rates| rates.in_flight.latent_read_error) {
            self.log(Some(file), offset, FaultKind::LatentReadError);
            return Err(io::Error::other(format!(
                "injected latent read error in {file} at {offset}"
            )));
        }
        if !bytes.is_empty() && self.strikes(|rates| rates.in_flight.read_bit_flip) {
            let (at, bit) = self.flip_bit(bytes);
            self.log(Some(file), offset + at, FaultKind::ReadBitFlip { bit });
        }
        let planned = {
            let mut state = self.state.borrow_mut();
            let here = |(dir, name, at, _): &(String, String, u64, u8)| {
                **dir == *self.name
                    && name == file
                    && (offset..offset + bytes.len() as u64).contains(at)
            };
            state.planned_flip.take_if(|plan| here(plan))
        };
        if let Some((_, _, at, bit)) = planned {
            bytes[(at - offset) as usize] ^= 1 << bit;
            self.log(Some(file), at, FaultKind::ReadBitFlip { bit });
        }
        Ok(())
    }

    /// Flips one random bit of `bytes`; returns its byte index and bit.
    fn flip_bit(&self, bytes: &mut [u8]) -> (u64, u8) {
        let at = self.below(bytes.len() as u64);
        let bit = self.below(8) as u8;
        bytes[at as usize] ^= 1 << bit;
        (at, bit)
    }

    fn file(&self, file: MemFile, name: &str) -> SimFile {
        SimFile {
            dir: self.clone(),
            name: name.into(),
            file,
        }
    }
}

impl Storage for SimDir {
    type File = SimFile;
    type Map = Vec<u8>;

    fn describe(&self, file: &str) -> String {
        format!("sim:{}/{file}", self.name)
    }

    fn list(&self) -> io::Result<Vec<String>> {
        self.storage.list()
    }

    fn map(&self, name: &str) -> io::Result<Vec<u8>> {
        let mut bytes = self.storage.map(name)?;
        self.read_faults(name, &mut bytes, 0)?;
        Ok(bytes)
    }

    async fn create(&self, name: &str) -> io::Result<SimFile> {
        let file = self.storage.create(name).await?;
        Ok(self.file(file, name))
    }

    async fn open(&self, name: &str) -> io::Result<SimFile> {
        let file = self.storage.open(name).await?;
        Ok(self.file(file, name))
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.storage.rename(from, to).await
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        self.storage.remove(name).await
    }

    async fn sync_dir(&self) -> io::Result<()> {
        self.sync_delay().await;
        if self.strikes(|rates| rates.in_flight.fsync_fail) {
            self.log(None, 0, FaultKind::DirSyncFail);
            return Err(io::Error::other("injected directory sync failure"));
        }
        self.storage.sync_dir().await
    }
}

/// A file of a [`SimDir`].
#[derive(Debug)]
pub struct SimFile {
    dir: SimDir,
    /// The name it was opened by, for the fault log (a later rename is not seen).
    name: Rc<str>,
    file: MemFile,
}

impl SimFile {
    /// Another block-aligned offset where `len` bytes fit inside the file, if any.
    fn misdirect(&self, len: usize, intended: u64) -> io::Result<Option<u64>> {
        let block_bytes = BLOCK_BYTES as u64;
        let Some(room) = self.file.size_bytes()?.checked_sub(len as u64) else {
            return Ok(None);
        };
        let blocks = room / block_bytes + 1;
        let intended_block = intended / block_bytes;
        let intended_inside = intended % block_bytes == 0 && intended_block < blocks;
        let choices = blocks - u64::from(intended_inside);
        if choices == 0 {
            return Ok(None);
        }
        let mut block = self.dir.below(choices);
        if intended_inside && block >= intended_block {
            block += 1;
        }
        Ok(Some(block * block_bytes))
    }
}

impl StorageFile for SimFile {
    async fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_at(buf, offset).await?;
        self.dir.read_faults(&self.name, buf, offset)
    }

    async fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.dir.delay(|latency| latency.write_us).await;
        let mut target = offset;
        if self.dir.strikes(|rates| rates.damage.misdirected_write) {
            if let Some(elsewhere) = self.misdirect(buf.len(), offset)? {
                // The entries written never reach their place, and the ones
                // they land on are gone.
                let mut overwritten = vec![0; buf.len()];
                self.file.read_at(&mut overwritten, elsewhere).await?;
                let mut entries = touched_entries(buf, offset, 0..buf.len());
                entries.extend(touched_entries(&overwritten, elsewhere, 0..buf.len()));
                let kind = FaultKind::MisdirectedWrite { intended: offset };
                self.dir
                    .log_damage(Some(&self.name), elsewhere, kind, entries);
                target = elsewhere;
            }
        }
        if !buf.is_empty() && self.dir.strikes(|rates| rates.damage.write_bit_flip) {
            let mut flipped = buf.to_vec();
            let (at, bit) = self.dir.flip_bit(&mut flipped);
            let at_usize = at as usize;
            let entries = touched_entries(buf, target, at_usize..at_usize + 1);
            let kind = FaultKind::WriteBitFlip { bit };
            self.dir
                .log_damage(Some(&self.name), target + at, kind, entries);
            return self.file.write_at(&flipped, target).await;
        }
        self.file.write_at(buf, target).await
    }

    async fn sync(&mut self) -> io::Result<()> {
        self.dir.sync_delay().await;
        if self.dir.strikes(|rates| rates.in_flight.fsync_fail) {
            self.dir.log(Some(&self.name), 0, FaultKind::FsyncFail);
            return Err(io::Error::other(format!(
                "injected sync failure of {}",
                self.name
            )));
        }
        self.file.sync().await
    }

    /// Without faults: the zeros of a new file carry nothing to damage.
    async fn preallocate(&mut self, len: u64) -> io::Result<()> {
        self.file.preallocate(len).await
    }

    fn size_bytes(&self) -> io::Result<u64> {
        self.file.size_bytes()
    }
}
