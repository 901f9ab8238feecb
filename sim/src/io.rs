//! The node's IO under madsim: the real node loop ([`keel_engine::node`]) runs on
//! a simulated host, with madsim's TCP for clients, madsim's clock and timers,
//! and a [`SimDisk`] that outlives the host.
//!
//! madsim kills a host by dropping its tasks, so whatever the host must find
//! again after a restart lives outside it: each host's [`Host`] (disk and
//! durability ledger) sits in a registry on the simulation's thread, keyed by
//! madsim node id. (A madsim plugin cannot hold it: plugins are `Send + Sync`,
//! and the disk is `Rc`-based, as the single-threaded node loop is.) The
//! supervisor reaches the same disk to crash it between a kill and a restart.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use keel_engine::node::io::{Connection, Hop, Listener, NodeIo, ShardObserver};
use keel_engine::node::shard_dir_name;
use madsim::net::{TcpListener, TcpStream};
use madsim::rand::{thread_rng, Rng};
use madsim::task::NodeId;
use madsim::time::TimeHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::disk::{Latency, SimDir, SimDisk, Sleep};
use crate::ledger::Ledger;

/// How long the simulated disk takes: about what this machine's SSD takes
/// for a 4 KiB O_DIRECT write and an fdatasync (README: the disk).
pub const DISK_LATENCY: Latency = Latency {
    write_us: (10, 60),
    sync_us: (80, 400),
};

/// What of a host outlives its kills: its disk, and the ledger of what its
/// shards applied and acknowledged. Clones share them.
#[derive(Clone, Debug)]
pub struct Host {
    pub disk: SimDisk,
    pub ledger: Rc<Ledger>,
}

thread_local! {
    /// Every host's lasting part. madsim runs the whole simulation on one thread.
    static HOSTS: RefCell<BTreeMap<NodeId, Host>> = RefCell::default();
}

/// The lasting part of host `node`, created on first use: an empty disk that
/// takes [`DISK_LATENCY`] of madsim's time, its faults seeded from madsim's
/// generator. Hosts live as long as the thread, so run one simulation per
/// thread.
pub fn host(node: NodeId) -> Host {
    HOSTS.with(|hosts| {
        hosts
            .borrow_mut()
            .entry(node)
            .or_insert_with(|| {
                let sleep: Sleep = Rc::new(|duration| Box::pin(madsim::time::sleep(duration)));
                Host {
                    disk: SimDisk::with_latency(thread_rng().gen(), DISK_LATENCY, sleep),
                    ledger: Rc::default(),
                }
            })
            .clone()
    })
}

/// One core's IO on a simulated host (one core: nothing ever hops).
#[derive(Clone, Debug)]
pub struct SimIo {
    inner: Rc<Inner>,
}

#[derive(Debug)]
struct Inner {
    host: Host,
    clients: TcpListener,
    epoch: Instant,
}

impl SimIo {
    /// Listens for clients on `address` and keeps the node's data on the
    /// current host's disk.
    pub async fn bind(address: std::net::SocketAddr) -> io::Result<SimIo> {
        let clients = TcpListener::bind(address).await?;
        Ok(SimIo {
            inner: Rc::new(Inner {
                host: host(madsim::plugin::node()),
                clients,
                epoch: TimeHandle::current().now_instant(),
            }),
        })
    }
}

/// A client connection over madsim's TCP.
#[derive(Debug)]
pub struct SimConn {
    stream: TcpStream,
    peer: String,
}

impl Connection for SimConn {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf).await
    }

    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.stream.write_all(buf).await?;
        // madsim's stream only buffers writes; the flush sends them.
        self.stream.flush().await
    }

    fn peer(&self) -> String {
        self.peer.clone()
    }
}

impl NodeIo for SimIo {
    type Storage = SimDir;
    type Conn = SimConn;

    async fn shard_storage(&self, shard: u32) -> io::Result<SimDir> {
        Ok(self.inner.host.disk.dir(&shard_dir_name(shard)))
    }

    fn shard_observer(&self, _shard: u32) -> Option<Rc<dyn ShardObserver>> {
        Some(Rc::clone(&self.inner.host.ledger) as Rc<dyn ShardObserver>)
    }

    fn now_unix_ms(&self) -> u64 {
        TimeHandle::current()
            .now_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64)
    }

    fn monotonic_us(&self) -> u64 {
        let now = TimeHandle::current().now_instant();
        now.duration_since(self.inner.epoch).as_micros() as u64
    }

    async fn sleep(&self, duration: Duration) {
        madsim::time::sleep(duration).await;
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + 'static) {
        // Dropping madsim's join handle detaches the task.
        drop(madsim::task::spawn_local(task));
    }

    async fn accept(&self, listener: Listener) -> io::Result<SimConn> {
        match listener {
            Listener::Clients => {
                let (stream, peer) = self.inner.clients.accept().await?;
                Ok(SimConn {
                    stream,
                    peer: peer.to_string(),
                })
            }
            Listener::Metrics => std::future::pending().await,
        }
    }

    fn core(&self) -> (usize, usize) {
        (0, 1)
    }

    async fn send_hop(&self, core: usize, _hop: Hop) {
        unreachable!("a one-core node sends no hops (asked to send to core {core})");
    }

    async fn recv_hop(&self) -> Hop {
        std::future::pending().await
    }
}
