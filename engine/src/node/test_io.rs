//! The node loop's unit tests' world: one core over one in-memory disk.

use std::fmt;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use keel_wal::MemStorage;

use crate::config::{FsyncPolicy, ServeConfig};
use crate::node::io::{Connection, Hop, Listener, NodeIo, ShardObserver};
use crate::node::{recover_core, NodeShared, Recovered};
use crate::topology::{Member, NodeName, Topology};

/// One core over one in-memory disk: the clock stands at 0, sleeps end at
/// once, no other core exists and nothing may be spawned (a test that needs
/// a task runs it itself); each shard is watched by `observer`, if set.
/// `C` is the connection a test scripts.
pub(crate) struct MemIo<C> {
    pub disk: MemStorage,
    pub observer: Option<Rc<dyn ShardObserver>>,
    connection: PhantomData<fn() -> C>,
}

impl<C> MemIo<C> {
    pub fn watched(observer: Rc<dyn ShardObserver>) -> MemIo<C> {
        MemIo {
            observer: Some(observer),
            ..MemIo::default()
        }
    }
}

impl<C> Default for MemIo<C> {
    fn default() -> MemIo<C> {
        MemIo {
            disk: MemStorage::default(),
            observer: None,
            connection: PhantomData,
        }
    }
}

impl<C> Clone for MemIo<C> {
    fn clone(&self) -> MemIo<C> {
        MemIo {
            disk: self.disk.clone(),
            observer: self.observer.clone(),
            connection: PhantomData,
        }
    }
}

impl<C> fmt::Debug for MemIo<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemIo").finish_non_exhaustive()
    }
}

impl<C: Connection + 'static> NodeIo for MemIo<C> {
    type Storage = MemStorage;
    type Conn = C;

    async fn shard_storage(&self, _shard: u32) -> io::Result<MemStorage> {
        Ok(self.disk.clone())
    }
    fn now_unix_ms(&self) -> u64 {
        0
    }
    fn monotonic_us(&self) -> u64 {
        0
    }
    async fn sleep(&self, _duration: Duration) {}
    fn spawn(&self, _task: impl Future<Output = ()> + 'static) {
        panic!("the node loop's unit tests spawn no task");
    }
    async fn accept(&self, _listener: Listener) -> io::Result<C> {
        future::pending().await
    }
    fn core(&self) -> (usize, usize) {
        (0, 1)
    }
    async fn send_hop(&self, _core: usize, _hop: Hop) {
        panic!("one core sends no hops");
    }
    async fn recv_hop(&self) -> Hop {
        future::pending().await
    }
    fn shard_observer(&self, _shard: u32) -> Option<Rc<dyn ShardObserver>> {
        self.observer.clone()
    }
}

/// A node of one core and one shard over `io`'s disk, recovered, with the
/// smallest WAL segments and `fsync`.
pub(crate) fn recover_one_shard<C: Connection + 'static>(
    io: MemIo<C>,
    fsync: FsyncPolicy,
) -> Recovered<MemIo<C>> {
    let mut config = ServeConfig::resolve(&Default::default(), 1).expect("the defaults are valid");
    config.wal_segment_bytes = keel_wal::SEGMENT_BYTES_MIN;
    config.fsync = fsync;
    let myself = Member::alone(NodeName::of_ids(0, 0), config.bind, config.port);
    let topology = Topology::single_node(myself, 1);
    let node = Arc::new(NodeShared::new(config, 1, String::new(), 0, 0, topology));
    future::block_on(recover_core(io, node)).expect("the disk recovers")
}
