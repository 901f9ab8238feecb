//! The peer transport on glommio: each core listens on its peer port
//! (`peer_port + core`), dials every peer of a smaller id on the same core
//! index, runs the handshake ([`crate::peer::handshake`]) with a deadline,
//! then moves the connection to the core's epoll instance
//! ([`crate::readiness`], as client sockets) and runs a writer task and a
//! reader task on it over the core's [`Links`]. Sleeps and spawns go through
//! the core's [`NodeIo`].
//!
//! Why a port per core rather than one port and a handoff: a glommio socket
//! belongs to the executor whose ring it was made on, so a connection the
//! kernel gave core 0 for core 1 would have to move as a raw descriptor
//! through a cross-core lane and be wrapped again there; with a port per
//! core the kernel delivers it where it belongs and the handshake only
//! checks the core index. The price is a range of `cores` ports per node.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::glommio_io::GlommioIo;
use crate::metrics::NodeMetrics;
use crate::node::io::{NodeIo, PeerId};
use crate::peer::frame::{FrameDecoder, FrameError};
use crate::peer::handshake::{
    self, Expected, HandshakeError, Hello, Message, Refusal, Side, MESSAGE_HEADER_BYTES,
};
use crate::peer::links::{Connection, Links};
use crate::readiness::PolledStream;
use crate::secret::Secret;
use crate::topology::{MemberId, TopologyCell};

/// Longest a dial or an accepted connection may take to finish the
/// handshake (connect included) before it is dropped.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// Wait before dialling again after a failure or a lost connection, doubled
/// after each failure up to [`RECONNECT_BACKOFF_MS_MAX`].
pub const RECONNECT_BACKOFF_MS_MIN: u64 = 50;
pub const RECONNECT_BACKOFF_MS_MAX: u64 = 2_000;
/// Accepted connections in their handshake at once on one core; more are
/// closed at once (each holds a task until its deadline).
pub const PEER_HANDSHAKES_MAX: usize = 16;
/// Pause after a failed accept (out of descriptors, say) before the next.
pub const PEER_ACCEPT_ERROR_PAUSE_MS: u64 = 100;
/// Bytes one read of a peer connection takes at most.
pub const PEER_READ_BYTES: usize = 64 << 10;

/// Who this node is in its cluster and where the others are.
#[derive(Clone, Debug)]
pub struct PeerPlan {
    pub me: PeerId,
    /// Every member's core-0 peer address, this node's included, by id.
    pub members: Vec<(PeerId, SocketAddr)>,
    pub cluster_name: String,
    /// The node's shard count (the data directory's).
    pub shards: u32,
    /// The cluster's password, if set: the handshake proves it.
    pub secret: Option<Secret>,
    /// This node's client port, which its hello tells the peers.
    pub client_port: u16,
    /// Where the peers' client ports go as their hellos tell them (`None`:
    /// nowhere, as in the transport's own tests).
    pub topology: Option<Arc<TopologyCell>>,
}

impl PeerPlan {
    /// Where `peer`'s core `core` listens.
    fn address(&self, peer: PeerId, core: usize) -> SocketAddr {
        let (_, base) = self
            .members
            .iter()
            .find(|(id, _)| *id == peer)
            .expect("links exist for members only");
        let port = usize::from(base.port()) + core;
        SocketAddr::new(
            base.ip(),
            u16::try_from(port).expect("the config checked the range"),
        )
    }

    fn ids(&self) -> Vec<PeerId> {
        self.members.iter().map(|(id, _)| *id).collect()
    }

    /// The peers this node's links reach: every member but itself.
    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.members
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| *id != self.me)
    }

    fn hello(&self, to: PeerId, (core, cores): (usize, usize)) -> Hello {
        Hello {
            from: self.me,
            to,
            core: u16::try_from(core).expect("cores fit 16 bits"),
            cores: u16::try_from(cores).expect("cores fit 16 bits"),
            shards: self.shards,
            nonce: crate::entropy::random_u128().to_le_bytes(),
            password: self.secret.is_some(),
            cluster_name: self.cluster_name.clone(),
            client_port: self.client_port,
        }
    }

    /// Peer `peer` said (in its hello) that it serves clients on `port`.
    fn learned(&self, peer: PeerId, port: u16) {
        if let Some(topology) = &self.topology {
            let member = MemberId(peer);
            let known = topology
                .get()
                .member(member)
                .is_some_and(|m| m.client_port == port && m.connected);
            if !known {
                topology.update(|topology| topology.set_client_port(member, port));
            }
        }
    }
}

/// Why a peer connection did not come up, or ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Handshake(#[from] HandshakeError),
    #[error("refused the peer: {0}")]
    Refused(Refusal),
    #[error("the peer refused us: {0}")]
    RefusedBy(Refusal),
    #[error("the peer sent a handshake message out of turn")]
    OutOfTurn,
    #[error("the handshake took over {HANDSHAKE_TIMEOUT_MS} ms")]
    TimedOut,
}

impl PeerError {
    fn is_refusal(&self) -> bool {
        matches!(self, PeerError::Refused(_) | PeerError::RefusedBy(_))
    }
}

/// Starts core `io.core()`'s side of the transport: accepts on `listener`
/// (this core's peer port) and dials every peer of a smaller id, until
/// [`Links::stop`].
pub fn start(
    io: &GlommioIo,
    links: Rc<Links>,
    plan: Rc<PeerPlan>,
    listener: std::net::TcpListener,
) {
    // SAFETY: the descriptor is a bound, listening TCP socket that this
    // function owns (into_raw_fd gives up std's ownership).
    let listener = unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) };
    io.spawn(accept_loop(
        io.clone(),
        Rc::clone(&links),
        Rc::clone(&plan),
        listener,
    ));
    for peer in plan.peers().filter(|peer| *peer < plan.me) {
        io.spawn(dial_loop(
            io.clone(),
            Rc::clone(&links),
            Rc::clone(&plan),
            peer,
        ));
    }
}

/// `work`, or [`PeerError::TimedOut`] after [`HANDSHAKE_TIMEOUT_MS`].
async fn within_deadline<T, IO: NodeIo>(
    io: &IO,
    work: impl Future<Output = Result<T, PeerError>>,
) -> Result<T, PeerError> {
    futures_lite::future::or(work, async {
        io.sleep(Duration::from_millis(HANDSHAKE_TIMEOUT_MS)).await;
        Err(PeerError::TimedOut)
    })
    .await
}

async fn dial_loop(io: GlommioIo, links: Rc<Links>, plan: Rc<PeerPlan>, peer: PeerId) {
    let core = io.core();
    let address = plan.address(peer, core.0);
    let mut backoff_ms = RECONNECT_BACKOFF_MS_MIN;
    let mut failures = 0u64;
    while !links.is_stopped() {
        let dialled = within_deadline(&io, async {
            let mut stream = TcpStream::connect(address).await.map_err(io::Error::from)?;
            stream.set_nodelay(true).map_err(io::Error::from)?;
            let client_port = dial_handshake(&mut stream, &plan, core, peer).await?;
            Ok((stream, client_port))
        })
        .await;
        match dialled {
            Ok((stream, client_port)) => {
                plan.learned(peer, client_port);
                tracing::info!(peer, core = core.0, %address, "peer connected");
                (failures, backoff_ms) = (0, RECONNECT_BACKOFF_MS_MIN);
                let connection = run_connection(&io, &links, peer, stream);
                connection.ended().await;
                tracing::info!(peer, core = core.0, %address, "peer connection lost; dialling again");
            }
            Err(error) => {
                if error.is_refusal() {
                    NodeMetrics::add(&links.metrics().peer_handshake_refusals, 1);
                }
                // The first failure in a row is news; the rest, while the
                // peer stays down, are not.
                if failures == 0 || error.is_refusal() {
                    tracing::warn!(peer, core = core.0, %address, %error, "cannot reach peer; retrying");
                } else {
                    tracing::debug!(peer, core = core.0, %address, %error, "cannot reach peer; retrying");
                }
                failures += 1;
            }
        }
        io.sleep(Duration::from_millis(backoff_ms)).await;
        backoff_ms = (backoff_ms * 2).min(RECONNECT_BACKOFF_MS_MAX);
    }
}

async fn accept_loop(io: GlommioIo, links: Rc<Links>, plan: Rc<PeerPlan>, listener: TcpListener) {
    let handshakes = Rc::new(std::cell::Cell::new(0usize));
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            links.stopped().await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(stream)) => stream,
            Some(Err(error)) => {
                tracing::warn!(%error, "peer accept failed");
                io.sleep(Duration::from_millis(PEER_ACCEPT_ERROR_PAUSE_MS))
                    .await;
                continue;
            }
        };
        if handshakes.get() >= PEER_HANDSHAKES_MAX {
            tracing::warn!(
                limit = PEER_HANDSHAKES_MAX,
                "too many peer handshakes at once; closing a new connection"
            );
            continue;
        }
        handshakes.set(handshakes.get() + 1);
        let (task_io, links, plan, handshakes) = (
            io.clone(),
            Rc::clone(&links),
            Rc::clone(&plan),
            Rc::clone(&handshakes),
        );
        io.spawn(async move {
            let accepted = accept_one(&task_io, &links, &plan, stream).await;
            handshakes.set(handshakes.get() - 1);
            if let Err((address, error)) = accepted {
                if error.is_refusal() {
                    NodeMetrics::add(&links.metrics().peer_handshake_refusals, 1);
                }
                tracing::warn!(%address, core = task_io.core().0, %error, "refused a peer connection");
            }
        });
    }
}

/// Runs the acceptor's handshake on `stream`, then its connection.
async fn accept_one(
    io: &GlommioIo,
    links: &Rc<Links>,
    plan: &PeerPlan,
    mut stream: TcpStream,
) -> Result<(), (String, PeerError)> {
    let address = stream
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |address| address.to_string());
    let accepted = within_deadline(io, async {
        stream.set_nodelay(true).map_err(io::Error::from)?;
        accept_handshake(&mut stream, plan, io.core()).await
    })
    .await;
    match accepted {
        Ok((peer, client_port)) => {
            plan.learned(peer, client_port);
            tracing::info!(peer, core = io.core().0, %address, "peer connected");
            run_connection(io, links, peer, stream);
            Ok(())
        }
        Err(error) => Err((address, error)),
    }
}

/// Reads one whole handshake message; also returns its bytes (the proofs
/// cover them).
async fn read_message<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Message, Vec<u8>), PeerError> {
    let mut bytes = vec![0u8; MESSAGE_HEADER_BYTES];
    stream.read_exact(&mut bytes).await?;
    let total = handshake::message_bytes(&bytes)?;
    bytes.resize(total, 0);
    stream
        .read_exact(&mut bytes[MESSAGE_HEADER_BYTES..])
        .await?;
    Ok((handshake::decode(&bytes)?, bytes))
}

fn expected<'a>(
    plan: &'a PeerPlan,
    ids: &'a [PeerId],
    (core, cores): (usize, usize),
    dialled: Option<PeerId>,
) -> Expected<'a> {
    // The hello's fields are u16; the config bounds cores far below.
    let narrow = |count: usize| u16::try_from(count).unwrap_or(u16::MAX);
    Expected {
        cluster_name: &plan.cluster_name,
        me: plan.me,
        members: ids,
        dialled,
        core: narrow(core),
        cores: narrow(cores),
        shards: plan.shards,
        password: plan.secret.is_some(),
    }
}

/// The dialler's side (module doc of [`crate::peer::handshake`]); the
/// peer's client port once it passed.
pub async fn dial_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    plan: &PeerPlan,
    core: (usize, usize),
    peer: PeerId,
) -> Result<u16, PeerError> {
    let mine = handshake::encode(&Message::Hello(plan.hello(peer, core)));
    stream.write_all(&mine).await?;
    let (hello, theirs) = match read_message(stream).await? {
        (Message::Hello(hello), bytes) => (hello, bytes),
        (Message::Refuse(reason), _) => return Err(PeerError::RefusedBy(reason)),
        (Message::Proof(_), _) => return Err(PeerError::OutOfTurn),
    };
    let ids = plan.ids();
    expected(plan, &ids, core, Some(peer))
        .check(&hello)
        .map_err(PeerError::Refused)?;
    let Some(secret) = &plan.secret else {
        return Ok(hello.client_port);
    };
    let tag = handshake::proof(secret, Side::Dialer, &mine, &theirs);
    stream
        .write_all(&handshake::encode(&Message::Proof(tag)))
        .await?;
    match read_message(stream).await? {
        (Message::Proof(tag), _)
            if handshake::verify_proof(secret, Side::Acceptor, &mine, &theirs, &tag) =>
        {
            Ok(hello.client_port)
        }
        (Message::Proof(_), _) => Err(PeerError::Refused(Refusal::BadProof)),
        (Message::Refuse(reason), _) => Err(PeerError::RefusedBy(reason)),
        (Message::Hello(_), _) => Err(PeerError::OutOfTurn),
    }
}

/// The acceptor's side; the peer's id and client port once it passed.
pub async fn accept_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    plan: &PeerPlan,
    core: (usize, usize),
) -> Result<(PeerId, u16), PeerError> {
    let refuse = |reason: Refusal| handshake::encode(&Message::Refuse(reason));
    let (hello, theirs) = match read_message(stream).await {
        Ok((Message::Hello(hello), bytes)) => (hello, bytes),
        Ok(_) => return Err(PeerError::OutOfTurn),
        Err(PeerError::Handshake(HandshakeError::Version { version })) => {
            stream.write_all(&refuse(Refusal::Version)).await?;
            return Err(PeerError::Handshake(HandshakeError::Version { version }));
        }
        Err(error) => return Err(error),
    };
    let ids = plan.ids();
    if let Err(reason) = expected(plan, &ids, core, None).check(&hello) {
        stream.write_all(&refuse(reason)).await?;
        return Err(PeerError::Refused(reason));
    }
    let mine = handshake::encode(&Message::Hello(plan.hello(hello.from, core)));
    stream.write_all(&mine).await?;
    let Some(secret) = &plan.secret else {
        return Ok((hello.from, hello.client_port));
    };
    match read_message(stream).await? {
        (Message::Proof(tag), _)
            if handshake::verify_proof(secret, Side::Dialer, &theirs, &mine, &tag) => {}
        (Message::Proof(_), _) => {
            stream.write_all(&refuse(Refusal::BadProof)).await?;
            return Err(PeerError::Refused(Refusal::BadProof));
        }
        _ => return Err(PeerError::OutOfTurn),
    }
    let tag = handshake::proof(secret, Side::Acceptor, &theirs, &mine);
    stream
        .write_all(&handshake::encode(&Message::Proof(tag)))
        .await?;
    Ok((hello.from, hello.client_port))
}

/// Moves a connection whose handshake passed from glommio's socket to the
/// core's epoll instance ([`crate::readiness`]), where a burst of messages
/// costs one wake-up rather than a reschedule interrupt per socket poll
/// (issue 10's finding, which replication multiplies: every write is an
/// append to each follower and an ack back). The handshake stays on glommio's
/// socket, for its connect and deadline. glommio 0.9 gives no descriptor
/// away, so this takes a duplicate and drops glommio's socket, which closes
/// only its own descriptor (no shutdown) and cancels no pending request: a
/// handshake leaves none.
fn into_polled(io: &GlommioIo, stream: TcpStream) -> io::Result<PolledStream> {
    // SAFETY: the descriptor belongs to `stream`, open for this borrow.
    let descriptor = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let duplicate = descriptor.try_clone_to_owned()?;
    drop(stream);
    io.poller().stream(std::net::TcpStream::from(duplicate))
}

/// Makes `stream` the link's current connection and starts its writer and
/// reader; or, if it cannot be moved to the core's poller (out of
/// descriptors), drops it, which the caller sees as a connection lost at
/// once.
fn run_connection(
    io: &GlommioIo,
    links: &Rc<Links>,
    peer: PeerId,
    stream: TcpStream,
) -> Rc<Connection> {
    let connection = links.attach(peer);
    let stream = match into_polled(io, stream) {
        Ok(stream) => Rc::new(stream),
        Err(error) => {
            tracing::warn!(peer, %error, "cannot watch the peer connection; dropping it");
            links.retire(peer, &connection);
            return connection;
        }
    };
    let end = ConnectionEnd {
        links: Rc::clone(links),
        peer,
        connection: Rc::clone(&connection),
        stream,
    };
    io.spawn(write_loop(end.clone()));
    io.spawn(read_loop(end));
    connection
}

/// What the writer and the reader of one connection share.
#[derive(Clone)]
struct ConnectionEnd {
    links: Rc<Links>,
    peer: PeerId,
    connection: Rc<Connection>,
    stream: Rc<PolledStream>,
}

impl ConnectionEnd {
    /// Retires the connection and shuts both directions of its socket,
    /// which ends a read or a write pending on it in the other task.
    fn close(&self) {
        self.links.retire(self.peer, &self.connection);
        // Errors only if the socket is already shut or reset: nothing to do.
        let _ = self.stream.shutdown();
    }
}

async fn write_loop(end: ConnectionEnd) {
    let metrics = end.links.metrics();
    while !end.connection.is_retired() {
        let (batch, messages) = end.links.take_batch(end.peer);
        if messages == 0 {
            end.connection.writer_wait().await;
            continue;
        }
        if let Err(error) = end.stream.write_all(&batch).await {
            tracing::debug!(peer = end.peer, %error, messages, "peer write failed; the batch is lost");
            break;
        }
        NodeMetrics::add(&metrics.peer_messages_sent, messages);
        NodeMetrics::add(&metrics.peer_bytes_sent, batch.len() as u64);
    }
    end.close();
}

async fn read_loop(end: ConnectionEnd) {
    let mut decoder = FrameDecoder::default();
    let mut buffer = vec![0u8; PEER_READ_BYTES];
    loop {
        let read = match end.stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if end.connection.is_retired() {
            break;
        }
        decoder.push(&buffer[..read]);
        if let Err(error) = deliver_all(&end.links, end.peer, &mut decoder) {
            NodeMetrics::add(&end.links.metrics().peer_protocol_errors, 1);
            tracing::warn!(peer = end.peer, %error, "closing the peer connection: bad transport frame");
            break;
        }
    }
    end.close();
}

/// What a reader refuses in a peer's stream.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("a message for shard {shard}, which is not on this core")]
    ShardElsewhere { shard: u32 },
}

/// Hands every whole frame the decoder holds to the inbox.
fn deliver_all(links: &Links, peer: PeerId, decoder: &mut FrameDecoder) -> Result<(), StreamError> {
    while let Some(message) = decoder.next_message(peer)? {
        if !links.shard_is_here(message.shard) {
            return Err(StreamError::ShardElsewhere {
                shard: message.shard,
            });
        }
        links.deliver(message);
    }
    Ok(())
}
