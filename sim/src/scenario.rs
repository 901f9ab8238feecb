//! Scripted simulations: one Keel node, one client, and faults exactly where
//! the script puts them, written as a short list of steps:
//!
//! ```ignore
//! Scenario::new(1)
//!     .write_keys(0..=98)      // each SET acknowledged
//!     .write_unsynced(99..=99) // written to the log, its sync held
//!     .crash(CrashMode::Tear)  // power loss tears what was not synced
//!     .expect_keys(0..=98)
//!     .expect_absent(99..=99)
//!     .run();
//! ```
//!
//! Key `i` is `key:i` and its value `value:i`. The node is the same as in the
//! random runs ([`crate::run`]), so the durability ledger checks every
//! recovery here too; `run` panics, naming the step, on any failure.

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use keel_engine::config::FsyncPolicy;
use keel_wal::memory::CrashMode;
use madsim::runtime::{Handle, Runtime};
use madsim::task::NodeId;
use madsim::time::sleep;

use crate::client::{connect, request, ClientStream};
use crate::io::host;
use crate::models::redis::{RedisInput, RedisOutput};
use crate::run::{run_keel, Boots, KeelSpec, KEEL_ADDRESS, REPLY_TIMEOUT_MS};
use crate::workload::encode;

/// How often a step looks again whether the node is ready or a sync is held.
const POLL_MS: u64 = 1;
/// How long a step waits for the node, in simulated time.
const STEP_TIMEOUT_MS: u64 = 10_000;
/// The node's cores: one shard each, so that every other key hops.
const CORES: usize = 2;

/// One step of a [`Scenario`].
#[derive(Clone, Debug)]
enum Step {
    WriteKeys(RangeInclusive<u64>),
    WriteUnsynced(RangeInclusive<u64>),
    Crash(CrashMode),
    ExpectKeys(RangeInclusive<u64>),
    ExpectAbsent(RangeInclusive<u64>),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::WriteKeys(keys) => write!(f, "write keys {keys:?}"),
            Step::WriteUnsynced(keys) => write!(f, "write keys {keys:?} with syncs held"),
            Step::Crash(mode) => write!(f, "crash ({mode:?}) and restart"),
            Step::ExpectKeys(keys) => write!(f, "expect keys {keys:?}"),
            Step::ExpectAbsent(keys) => write!(f, "expect keys {keys:?} absent"),
        }
    }
}

/// A scripted simulation (see the module doc).
#[derive(Clone, Debug)]
pub struct Scenario {
    seed: u64,
    steps: Vec<Step>,
}

fn key(i: u64) -> Vec<u8> {
    format!("key:{i}").into_bytes()
}

fn value(i: u64) -> Vec<u8> {
    format!("value:{i}").into_bytes()
}

impl Scenario {
    pub fn new(seed: u64) -> Scenario {
        Scenario {
            seed,
            steps: Vec::new(),
        }
    }

    fn step(mut self, step: Step) -> Scenario {
        self.steps.push(step);
        self
    }

    /// SETs each key, one at a time, each acknowledged.
    pub fn write_keys(self, keys: RangeInclusive<u64>) -> Scenario {
        self.step(Step::WriteKeys(keys))
    }

    /// Holds the disk's syncs and sends SETs of the keys without waiting
    /// for their replies, until the node's group commit is waiting on a
    /// held sync: the batch is written, not synced, not acknowledged.
    pub fn write_unsynced(self, keys: RangeInclusive<u64>) -> Scenario {
        self.step(Step::WriteUnsynced(keys))
    }

    /// Power loss, in which every unsynced sector meets `mode`, then a restart.
    pub fn crash(self, mode: CrashMode) -> Scenario {
        self.step(Step::Crash(mode))
    }

    /// Each key holds its value.
    pub fn expect_keys(self, keys: RangeInclusive<u64>) -> Scenario {
        self.step(Step::ExpectKeys(keys))
    }

    /// No key exists.
    pub fn expect_absent(self, keys: RangeInclusive<u64>) -> Scenario {
        self.step(Step::ExpectAbsent(keys))
    }

    /// Runs the steps on a thread of its own (see [`crate::run::run`]);
    /// panics on the first step that fails, or on a durability violation.
    pub fn run(self) {
        std::thread::spawn(move || {
            let runtime = Runtime::with_seed_and_config(self.seed, madsim::Config::default());
            runtime.block_on(self.script());
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    }

    async fn script(self) {
        let handle = Handle::current();
        let boots = Arc::new(Boots::default());
        let keel_boots = Arc::clone(&boots);
        let keel = handle
            .create_node()
            .name("keel")
            .ip([10, 0, 0, 1].into())
            .init(move || {
                let spec = KeelSpec::alone(FsyncPolicy::Always, false, CORES);
                run_keel(spec, Arc::clone(&keel_boots))
            })
            .build();
        let client = handle
            .create_node()
            .name("client")
            .ip([10, 0, 1, 1].into())
            .build();
        for step in &self.steps {
            let done = match step {
                Step::Crash(mode) => {
                    crash(&handle, keel.id(), self.seed, *mode).await;
                    Ok(())
                }
                Step::WriteUnsynced(keys) => write_unsynced(&client, keel.id(), keys.clone()).await,
                _ => client
                    .spawn(talk(step.clone()))
                    .await
                    .expect("the client runs"),
            };
            if let Err(error) = done {
                panic!("seed {}, step `{step}`: {error}", self.seed);
            }
        }
        let violations = host(keel.id()).ledger.violations();
        assert!(
            violations.is_empty(),
            "seed {}: durability violations: {violations:?}",
            self.seed
        );
        let stops = boots.failures.lock().expect("boots lock").clone();
        assert!(stops.is_empty(), "seed {}: {stops:?}", self.seed);
    }
}

async fn crash(handle: &Handle, keel: NodeId, seed: u64, mode: CrashMode) {
    handle.kill(keel);
    host(keel).disk.crash_with(seed, mode);
    handle.restart(keel);
}

/// Connects, retrying while the node starts.
async fn connected() -> Result<ClientStream, String> {
    for _ in 0..STEP_TIMEOUT_MS / POLL_MS {
        if let Ok(stream) = connect(KEEL_ADDRESS, REPLY_TIMEOUT_MS).await {
            return Ok(stream);
        }
        sleep(Duration::from_millis(POLL_MS)).await;
    }
    Err(format!("no connection in {STEP_TIMEOUT_MS} ms"))
}

/// Runs a step that is only requests and replies, on the client's host.
async fn talk(step: Step) -> Result<(), String> {
    let mut stream = connected().await?;
    let (keys, expect) = match &step {
        Step::WriteKeys(keys) => (keys.clone(), None),
        Step::ExpectKeys(keys) => (keys.clone(), Some(true)),
        Step::ExpectAbsent(keys) => (keys.clone(), Some(false)),
        other => unreachable!("{other} is not a client step"),
    };
    for i in keys {
        let (input, wanted) = match expect {
            None => (
                RedisInput::Set {
                    key: key(i),
                    value: value(i),
                },
                RedisOutput::Ok,
            ),
            Some(present) => (
                RedisInput::Get { key: key(i) },
                RedisOutput::Bulk(present.then(|| value(i))),
            ),
        };
        let output = request(&mut stream, &input, REPLY_TIMEOUT_MS)
            .await
            .map_err(|error| format!("{input}: {error}"))?;
        if output != wanted {
            return Err(format!("{input} answered {output}, not {wanted}"));
        }
    }
    Ok(())
}

/// Holds syncs, sends the SETs without reading replies, and waits until a
/// sync is held with them written.
async fn write_unsynced(
    client: &madsim::runtime::NodeHandle,
    keel: NodeId,
    keys: RangeInclusive<u64>,
) -> Result<(), String> {
    let disk = host(keel).disk;
    disk.hold_syncs(true);
    let sent = client.spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut stream = connected().await?;
        for i in keys {
            let input = RedisInput::Set {
                key: key(i),
                value: value(i),
            };
            stream
                .write_all(&encode(&input))
                .await
                .map_err(|error| error.to_string())?;
        }
        stream.flush().await.map_err(|error| error.to_string())?;
        // The connection stays open, unanswered, until the crash.
        std::future::pending::<()>().await;
        Ok::<(), String>(())
    });
    for _ in 0..STEP_TIMEOUT_MS / POLL_MS {
        if disk.syncs_held() > 0 {
            drop(sent);
            return Ok(());
        }
        sleep(Duration::from_millis(POLL_MS)).await;
    }
    Err(format!("no sync was held within {STEP_TIMEOUT_MS} ms"))
}
