//! The node's IO under madsim: the real node loop ([`keel_engine::node`]) runs on
//! a simulated host, with madsim's TCP for clients, madsim's clock and timers, and
//! in-memory disks that outlive the host.
//!
//! madsim kills a host by dropping its tasks, so whatever the host must find again
//! after a restart lives outside it: each host's [`HostDisk`] sits in a registry
//! on the simulation's thread, keyed by madsim node id. (A madsim plugin cannot
//! hold it: plugins are `Send + Sync`, and `MemStorage` is `Rc`-based, as the
//! single-threaded node loop is.) The supervisor reaches the same disk to crash it
//! between a kill and a restart.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use keel_engine::node::io::{Connection, Hop, Listener, NodeIo};
use keel_wal::memory::CrashReport;
use keel_wal::MemStorage;
use madsim::net::{TcpListener, TcpStream};
use madsim::task::NodeId;
use madsim::time::TimeHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The disks of one simulated host: one [`MemStorage`] per shard, created on
/// first use. Clones share the disks.
#[derive(Clone, Debug, Default)]
pub struct HostDisk {
    shards: Rc<RefCell<BTreeMap<u32, MemStorage>>>,
}

impl HostDisk {
    /// The storage of `shard`'s directory.
    pub fn shard(&self, shard: u32) -> MemStorage {
        self.shards.borrow_mut().entry(shard).or_default().clone()
    }

    /// Power loss on every shard's storage: what was not synced is kept,
    /// dropped or torn, as `seed` decides.
    pub fn crash(&self, seed: u64) -> CrashReport {
        let mut total = CrashReport::default();
        for (shard, storage) in self.shards.borrow().iter() {
            let report = storage.crash(seed ^ u64::from(*shard).wrapping_mul(0x9e37_79b9));
            total.kept_sectors += report.kept_sectors;
            total.dropped_sectors += report.dropped_sectors;
            total.torn_sectors += report.torn_sectors;
        }
        total
    }
}

thread_local! {
    /// Every host's disk. madsim runs the whole simulation on one thread.
    static HOST_DISKS: RefCell<BTreeMap<NodeId, HostDisk>> = RefCell::default();
}

/// The disk of host `node`, created empty on first use. Disks live as long as
/// the thread, so run one simulation per thread.
pub fn host_disk(node: NodeId) -> HostDisk {
    HOST_DISKS.with(|disks| disks.borrow_mut().entry(node).or_default().clone())
}

/// One core's IO on a simulated host (one core: nothing ever hops).
#[derive(Clone, Debug)]
pub struct SimIo {
    inner: Rc<Inner>,
}

#[derive(Debug)]
struct Inner {
    disk: HostDisk,
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
                disk: host_disk(madsim::plugin::node()),
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
    type Storage = MemStorage;
    type Conn = SimConn;

    async fn shard_storage(&self, shard: u32) -> io::Result<MemStorage> {
        Ok(self.inner.disk.shard(shard))
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
