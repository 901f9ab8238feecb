//! The node's IO on glommio: one executor per core, sockets with
//! SO_REUSEPORT (every core accepts) polled through the core's epoll instance
//! ([`crate::readiness`]), DMA files for the WAL, bounded queues between
//! cores for hops and moved connections ([`crate::cross_core`]), and the
//! core's links to its peers ([`crate::glommio_peer`]).

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::cross_core::CrossCore;
use crate::glommio_disk::DurableWrites;
use crate::node::admin::ClientInfo;
use crate::node::io::{
    Connection, Hop, Listener, NodeIo, PeerId, PeerMessage, PeerSendError, ShardReply, ShardRequest,
};
use crate::peer::links::Links;
use crate::readiness::{PolledListener, PolledStream, Poller};
use crate::resp::Reply;

/// Connections the kernel queues for a listening socket before `accept`
/// (the backlog). Redis's default `tcp-backlog` is 511; the kernel caps it at
/// `net.core.somaxconn`.
pub const LISTEN_BACKLOG_CONNECTIONS: i32 = 1024;

/// What the cores pass each other: hops, and client connections moving
/// to another core. Made before the executors start; cloned into each.
#[derive(Clone, Debug)]
pub struct CoreChannels {
    hops: CrossCore<Hop>,
    moves: CrossCore<MovedSocket>,
}

impl CoreChannels {
    pub fn new(cores: usize) -> CoreChannels {
        CoreChannels {
            hops: CrossCore::new(cores),
            moves: CrossCore::new(cores),
        }
    }
}

/// A client connection on its way to another core: its socket, out of
/// the first core's poller, and its client.
#[derive(Debug)]
struct MovedSocket {
    stream: std::net::TcpStream,
    peer: String,
    client: ClientInfo,
}

/// One core's IO.
#[derive(Clone)]
pub struct GlommioIo {
    inner: Rc<Inner>,
}

struct Inner {
    core: usize,
    cores: usize,
    data_dir: PathBuf,
    /// Accepted by one task at a time (the node loop's accept loop).
    clients: PolledListener,
    metrics: Option<PolledListener>,
    epoch: Instant,
    channels: CoreChannels,
    /// This core's links to its peers; `None`: a single node.
    peers: Option<Rc<Links>>,
    /// The core's epoll instance: client sockets, and peer connections once
    /// their handshake passed ([`crate::glommio_peer`]).
    poller: Poller,
    /// How the shards' WALs wait for their group commits.
    durable_writes: DurableWrites,
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
    /// connections over the cores). Must run on the core's executor.
    /// `peers` are the core's links, which [`crate::glommio_peer::start`]
    /// then connects.
    pub fn new(
        core: usize,
        cores: usize,
        data_dir: PathBuf,
        clients: SocketAddr,
        metrics: Option<SocketAddr>,
        channels: CoreChannels,
        peers: Option<Rc<Links>>,
    ) -> io::Result<GlommioIo> {
        let poller = Poller::new()?;
        let clients = poller.listener(listen_socket(clients)?)?;
        let metrics = match metrics {
            Some(address) if core == 0 => Some(poller.listener(listen_socket(address)?)?),
            _ => None,
        };
        Ok(GlommioIo {
            inner: Rc::new(Inner {
                core,
                cores,
                data_dir,
                clients,
                metrics,
                epoch: Instant::now(),
                channels,
                peers,
                poller,
                durable_writes: DurableWrites::Ring,
            }),
        })
    }

    /// Sets how the shards' WALs wait for their group commits: inline
    /// where `shards_on_core` is 1 ([`DurableWrites`]).
    pub fn with_shards_on_core(mut self, shards_on_core: usize) -> GlommioIo {
        let inner = Rc::get_mut(&mut self.inner).expect("set before the IO is shared");
        inner.durable_writes = if shards_on_core == 1 {
            DurableWrites::Inline
        } else {
            DurableWrites::Ring
        };
        self
    }

    pub(crate) fn poller(&self) -> &Poller {
        &self.inner.poller
    }
}

/// A listening socket with SO_REUSEPORT, so that every core binds the port
/// and the kernel spreads connections over them, and SO_REUSEADDR, so that
/// the sockets of connections this process accepted before it died (left in
/// FIN-WAIT or TIME-WAIT, and inheriting the listener's options) do not stop
/// the next start from binding the same port. A server already listening on
/// the port is refused before this, by [`port_is_free`].
pub fn listen_socket(address: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = bound_socket(address, true)?;
    socket.listen(LISTEN_BACKLOG_CONNECTIONS)?;
    Ok(socket.into())
}

/// A TCP socket bound to `address` with SO_REUSEADDR, and SO_REUSEPORT if
/// `reuse_port`.
fn bound_socket(address: SocketAddr, reuse_port: bool) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    socket.bind(&address.into())?;
    Ok(socket)
}

/// Fails if a socket listens on `address`, in this process or another.
/// The cores' sockets share the port through SO_REUSEPORT, which would also
/// let a second server share it and silently take part of the connections.
/// A socket with SO_REUSEADDR alone conflicts with a listening socket on the
/// port but not with the closing connections of an earlier run (whose
/// sockets have SO_REUSEADDR too, inherited from [`listen_socket`]).
pub fn port_is_free(address: SocketAddr) -> io::Result<()> {
    let socket = bound_socket(address, false)?;
    // Linux checks a bind against listening sockets only at listen() when
    // every socket on the port was bound with SO_REUSEADDR.
    socket.listen(1)
}

/// The payload bytes a hop carries, for the lanes' byte bound.
fn hop_bytes(hop: &Hop) -> usize {
    match hop {
        Hop::Request { request, .. } => match request {
            ShardRequest::Command { args, .. }
            | ShardRequest::Watch { keys: args, .. }
            | ShardRequest::Forward { args, .. }
            | ShardRequest::ForwardQuery { args } => args.iter().map(Vec::len).sum(),
            ShardRequest::Exec { commands, .. } | ShardRequest::ForwardExec { commands, .. } => {
                commands.iter().flatten().map(Vec::len).sum()
            }
            ShardRequest::Keys { pattern } => pattern.len(),
            ShardRequest::Scan { pattern, .. } => pattern.as_ref().map_or(0, Vec::len),
            ShardRequest::Count
            | ShardRequest::RandomKey { .. }
            | ShardRequest::FlushAll
            | ShardRequest::Stats
            | ShardRequest::Replicas { .. }
            | ShardRequest::Unwatch { .. } => 0,
        },
        Hop::Reply { reply, .. } => match reply {
            ShardReply::Reply(reply) => reply_bytes(reply),
            ShardReply::Keys(keys) | ShardReply::Scan { keys, .. } => {
                keys.iter().map(Vec::len).sum()
            }
            ShardReply::Key(key) => key.as_ref().map_or(0, Vec::len),
            ShardReply::Count(_) | ShardReply::Stats(_) | ShardReply::Replicas { .. } => 0,
        },
    }
}

fn reply_bytes(reply: &Reply) -> usize {
    match reply {
        Reply::Simple(text) | Reply::Error(text) => text.len(),
        Reply::Bulk(bytes) => bytes.len(),
        Reply::Array(items) => items.iter().map(reply_bytes).sum(),
        Reply::Map(pairs) => pairs
            .iter()
            .map(|(key, value)| reply_bytes(key) + reply_bytes(value))
            .sum(),
        Reply::Integer(_)
        | Reply::Null
        | Reply::NullArray
        | Reply::Double(_)
        | Reply::Boolean(_) => 0,
    }
}

/// A client connection.
#[derive(Debug)]
pub struct GlommioConn {
    stream: PolledStream,
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
        Ok(Self::Storage::new(dir).with_durable_writes(self.inner.durable_writes))
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
        let listener = match listener {
            Listener::Clients => &self.inner.clients,
            Listener::Metrics => match &self.inner.metrics {
                Some(listener) => listener,
                None => return std::future::pending().await,
            },
        };
        let stream = listener.accept().await?;
        stream.set_nodelay(true)?;
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "?".to_string(), |address| address.to_string());
        Ok(GlommioConn { stream, peer })
    }

    fn core(&self) -> (usize, usize) {
        (self.inner.core, self.inner.cores)
    }

    async fn send_hop(&self, core: usize, hop: Hop) {
        let bytes = hop_bytes(&hop);
        self.inner
            .channels
            .hops
            .send(self.inner.core, core, hop, bytes)
            .await;
    }

    async fn recv_hop(&self) -> Hop {
        self.inner.channels.hops.recv(self.inner.core).await
    }

    async fn move_connection(
        &self,
        core: usize,
        conn: GlommioConn,
        client: ClientInfo,
    ) -> Result<(), (GlommioConn, ClientInfo)> {
        let GlommioConn { stream, peer } = conn;
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err((stream, error)) => {
                tracing::debug!(client = client.id, %error, "the connection cannot move");
                return Err((GlommioConn { stream, peer }, client));
            }
        };
        let moved = MovedSocket {
            stream,
            peer,
            client,
        };
        // One moved connection weighs little; the lane's message bound
        // holds them back if the core does not take them.
        self.inner
            .channels
            .moves
            .send(self.inner.core, core, moved, 0)
            .await;
        Ok(())
    }

    async fn moved_in(&self) -> (io::Result<GlommioConn>, ClientInfo) {
        let MovedSocket {
            stream,
            peer,
            client,
        } = self.inner.channels.moves.recv(self.inner.core).await;
        let conn = self
            .inner
            .poller
            .stream(stream)
            .map(|stream| GlommioConn { stream, peer });
        (conn, client)
    }

    fn peer_send(&self, to: PeerId, shard: u32, frame: Vec<u8>) -> Result<(), PeerSendError> {
        match &self.inner.peers {
            Some(links) => links.send(to, shard, frame),
            None => Err(PeerSendError::UnknownPeer),
        }
    }

    async fn peer_recv(&self) -> PeerMessage {
        match &self.inner.peers {
            Some(links) => links.recv().await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::{poll_fn, Future};
    use std::pin::pin;
    use std::task::Poll;

    /// More polls of one pending accept than a glommio task's waker count
    /// (an `i16`) can take.
    const ACCEPT_POLLS: usize = 40_000;

    /// glommio 0.9's own `listener.accept()` adds a clone of the waker to the
    /// pending accept's source on every poll and drops none until it
    /// completes; a task's waker count is an `i16`, so a pending accept
    /// polled 32,767 times panicked ("Waker invariant broken"): a release
    /// server aborted so after 11 minutes under `restart_loop.sh`, since the
    /// node loop polls `accept` in the task that also runs the stop watch.
    /// The poller's accept keeps one waker: polled [`ACCEPT_POLLS`] times
    /// with the task's own waker, it stays pending.
    #[test]
    fn a_pending_accept_can_be_polled_any_number_of_times() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(|| async {
                let address = "127.0.0.1:0".parse().expect("an address");
                let poller = Poller::new().expect("a poller");
                let listener = poller
                    .listener(listen_socket(address).expect("listen"))
                    .expect("register");
                let mut accept = pin!(listener.accept());
                poll_fn(|context| {
                    for _ in 0..ACCEPT_POLLS {
                        assert!(accept.as_mut().poll(context).is_pending());
                    }
                    Poll::Ready(())
                })
                .await;
            })
            .expect("an executor")
            .join()
            .expect("the accept panicked");
    }
}
