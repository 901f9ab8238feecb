//! The node's IO on glommio: one executor per core, io_uring sockets with
//! SO_REUSEPORT (every core accepts), DMA files for the WAL, and a channel
//! mesh between cores for hops.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::channel_mesh::{Receivers, Senders};
use glommio::net::{TcpListener, TcpStream};

use crate::node::io::{Connection, Hop, Listener, NodeIo};
use crate::node::local::Signal;

/// Messages a core may have in flight to each other core before senders wait.
pub const HOP_QUEUE_MESSAGES: usize = 4096;

/// One core's IO.
#[derive(Clone)]
pub struct GlommioIo {
    inner: Rc<Inner>,
}

struct Inner {
    core: usize,
    cores: usize,
    data_dir: PathBuf,
    clients: TcpListener,
    metrics: Option<TcpListener>,
    epoch: Instant,
    hops_out: Senders<Hop>,
    hops_in: RefCell<VecDeque<Hop>>,
    hop_arrived: Signal,
}

impl std::fmt::Debug for GlommioIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GlommioIo {{ core: {}/{} }}",
            self.inner.core, self.inner.cores
        )
    }
}

impl GlommioIo {
    /// Binds this core's listeners (SO_REUSEPORT: the kernel spreads
    /// connections over the cores) and starts receiving hops.
    pub fn new(
        core: usize,
        cores: usize,
        data_dir: PathBuf,
        clients: SocketAddr,
        metrics: Option<SocketAddr>,
        mesh: (Senders<Hop>, Receivers<Hop>),
    ) -> io::Result<GlommioIo> {
        let clients = TcpListener::bind(clients).map_err(io::Error::from)?;
        let metrics = match metrics {
            Some(address) if core == 0 => {
                Some(TcpListener::bind(address).map_err(io::Error::from)?)
            }
            _ => None,
        };
        let (hops_out, mut hops_in) = mesh;
        let io = GlommioIo {
            inner: Rc::new(Inner {
                core,
                cores,
                data_dir,
                clients,
                metrics,
                epoch: Instant::now(),
                hops_out,
                hops_in: RefCell::new(VecDeque::new()),
                hop_arrived: Signal::default(),
            }),
        };
        for (_, receiver) in hops_in.streams() {
            let inner = Rc::clone(&io.inner);
            glommio::spawn_local(async move {
                while let Some(hop) = receiver.recv().await {
                    inner.hops_in.borrow_mut().push_back(hop);
                    inner.hop_arrived.raise();
                }
            })
            .detach();
        }
        Ok(io)
    }
}

/// A client connection.
#[derive(Debug)]
pub struct GlommioConn {
    stream: TcpStream,
    peer: String,
}

impl Connection for GlommioConn {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf).await
    }

    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.stream.write_all(buf).await
    }

    fn peer(&self) -> String {
        self.peer.clone()
    }
}

impl NodeIo for GlommioIo {
    type Storage = crate::glommio_disk::GlommioStorage;
    type Conn = GlommioConn;

    async fn shard_storage(&self, shard: u32) -> io::Result<Self::Storage> {
        let dir = self.inner.data_dir.join(crate::node::shard_dir_name(shard));
        std::fs::create_dir_all(&dir)?;
        // The shard directory's own entry lives in the data directory.
        keel_wal::Storage::sync_dir(&Self::Storage::new(&self.inner.data_dir)).await?;
        Ok(Self::Storage::new(dir))
    }

    fn now_unix_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64)
    }

    fn monotonic_us(&self) -> u64 {
        self.inner.epoch.elapsed().as_micros() as u64
    }

    async fn sleep(&self, duration: Duration) {
        glommio::timer::sleep(duration).await;
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + 'static) {
        glommio::spawn_local(task).detach();
    }

    async fn accept(&self, listener: Listener) -> io::Result<GlommioConn> {
        let socket = match listener {
            Listener::Clients => &self.inner.clients,
            Listener::Metrics => match &self.inner.metrics {
                Some(socket) => socket,
                None => return std::future::pending().await,
            },
        };
        let stream = socket.accept().await.map_err(io::Error::from)?;
        stream.set_nodelay(true).map_err(io::Error::from)?;
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "?".to_string(), |address| address.to_string());
        Ok(GlommioConn { stream, peer })
    }

    fn core(&self) -> (usize, usize) {
        (self.inner.core, self.inner.cores)
    }

    async fn send_hop(&self, core: usize, hop: Hop) {
        if self.inner.hops_out.send_to(core, hop).await.is_err() {
            panic!("core {core} stopped receiving hops while this core runs");
        }
    }

    async fn recv_hop(&self) -> Hop {
        loop {
            if let Some(hop) = self.inner.hops_in.borrow_mut().pop_front() {
                return hop;
            }
            self.inner.hop_arrived.wait().await;
        }
    }
}
