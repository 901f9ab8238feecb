//! The peer transport on real glommio executors and loopback sockets: two
//! nodes of two cores exchange messages both ways, one of them restarts and
//! the other reconnects, a link with no connection drops when its queue is
//! full, and handshakes refuse a node of another cluster, a wrong password
//! and the other refusals, over the real byte exchange. Every wait polls
//! with a deadline; nothing sleeps a fixed time.

use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use keel_engine::glommio_io::{listen_socket, CoreChannels, GlommioIo};
use keel_engine::glommio_peer::{self, accept_handshake, dial_handshake, PeerError, PeerPlan};
use keel_engine::metrics::NodeMetrics;
use keel_engine::node::io::{NodeIo, PeerId, PeerMessage, PeerSendError};
use keel_engine::peer::handshake::Refusal;
use keel_engine::peer::links::{Links, PEER_QUEUE_MESSAGES_MAX};
use keel_engine::secret::Secret;

/// Cores per node: shard s lives on core s % 2.
const CORES: usize = 2;
const SHARDS: u32 = 2;
/// Messages each core of the sending node sends in one round.
const MESSAGES_PER_CORE: usize = 50;
/// Longest any wait of these tests may take (a reconnect waits at most
/// `RECONNECT_BACKOFF_MS_MAX` plus the handshake).
const DEADLINE: Duration = Duration::from_secs(20);
/// How often a waiting test looks again.
const POLL: Duration = Duration::from_millis(5);

/// A port P with P + 1 free too (a node of two cores listens on both).
fn free_port_pair() -> u16 {
    loop {
        let first = StdListener::bind("127.0.0.1:0").expect("a free port");
        let port = first.local_addr().expect("an address").port();
        if port < u16::MAX && StdListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One node: a plan and one IO per core on the current executor, its
/// transport started.
struct Node {
    ios: Vec<GlommioIo>,
    links: Vec<Rc<Links>>,
    metrics: Arc<NodeMetrics>,
}

fn start_node(plan: PeerPlan, port: u16, cores: std::ops::Range<usize>) -> Node {
    let metrics = Arc::new(NodeMetrics::default());
    let channels = CoreChannels::new(CORES);
    let dir = std::env::temp_dir();
    let plan = Rc::new(plan);
    let (ios, links) = cores
        .map(|core| {
            let links = Rc::new(Links::new(
                core,
                CORES,
                SHARDS,
                plan.peers(),
                Arc::clone(&metrics),
            ));
            let io = GlommioIo::new(
                core,
                CORES,
                dir.clone(),
                loopback(0),
                None,
                channels.clone(),
                Some(Rc::clone(&links)),
            )
            .expect("the client listener binds");
            let listener =
                listen_socket(loopback(port + core as u16)).expect("the peer port binds");
            glommio_peer::start(&io, Rc::clone(&links), Rc::clone(&plan), listener);
            (io, links)
        })
        .unzip();
    Node {
        ios,
        links,
        metrics,
    }
}

fn plan(me: PeerId, members: &[(PeerId, u16)], cluster_name: &str) -> PeerPlan {
    PeerPlan {
        me,
        members: members
            .iter()
            .map(|(id, port)| (*id, loopback(*port)))
            .collect(),
        cluster_name: cluster_name.into(),
        shards: SHARDS,
        secret: None,
        client_port: 7000 + me as u16,
        topology: None,
    }
}

/// `work`, or a panic naming `what` after [`DEADLINE`].
async fn before_deadline<T>(io: &GlommioIo, what: &str, work: impl Future<Output = T>) -> T {
    future::or(work, async {
        io.sleep(DEADLINE).await;
        panic!("timed out waiting for {what}");
    })
    .await
}

/// Polls `done` until it holds, or panics after [`DEADLINE`].
async fn wait_until(io: &GlommioIo, what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        io.sleep(POLL).await;
    }
}

/// Sends [`MESSAGES_PER_CORE`] messages tagged `round` from every core of
/// `node` to peer 2, and waits for each one's echo, in order, on its core.
async fn ping_round(node: &Node, round: &str) {
    for (core, io) in node.ios.iter().enumerate() {
        for index in 0..MESSAGES_PER_CORE {
            let frame = format!("{round}-{core}-{index}").into_bytes();
            assert_eq!(io.peer_send(2, core as u32, frame), Ok(()));
        }
    }
    for (core, io) in node.ios.iter().enumerate() {
        for index in 0..MESSAGES_PER_CORE {
            let echo = before_deadline(io, "an echo", io.peer_recv()).await;
            let expected = format!("echo:{round}-{core}-{index}").into_bytes();
            assert_eq!(
                echo,
                PeerMessage {
                    from: 2,
                    shard: core as u32,
                    frame: expected
                }
            );
        }
    }
}

/// Polls until nothing listens on `port` any more (the stopped node's
/// listener is closed), or panics after [`DEADLINE`].
fn wait_until_refused(port: u16) {
    let started = Instant::now();
    while std::net::TcpStream::connect(loopback(port)).is_ok() {
        assert!(started.elapsed() < DEADLINE, "port {port} still accepts");
        std::thread::sleep(POLL);
    }
}

/// Runs `script` on a fresh executor thread and waits for it.
fn on_executor<F, Fut>(script: F) -> std::thread::JoinHandle<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(script)
        .expect("an executor");
    std::thread::spawn(move || executor.join().expect("the executor's script passed"))
}

/// Node 2 (which dials node 1, the smaller id) echoes every message on the
/// core it came in on until told to stop; node 1 pings in two lives, its
/// executor ending (every socket closed) between them.
#[test]
fn two_nodes_exchange_both_ways_on_two_cores_and_reconnect_after_a_restart() {
    let (port_1, port_2) = (free_port_pair(), free_port_pair());
    let members = [(1, port_1), (2, port_2)];
    let stop = Arc::new(AtomicBool::new(false));
    let echo_stop = Arc::clone(&stop);
    let echo = on_executor(move || async move {
        let node = start_node(plan(2, &members, "keel"), port_2, 0..CORES);
        for io in &node.ios {
            let io = io.clone();
            io.clone().spawn(async move {
                loop {
                    let message = io.peer_recv().await;
                    let mut frame = b"echo:".to_vec();
                    frame.extend_from_slice(&message.frame);
                    assert_eq!(io.peer_send(message.from, message.shard, frame), Ok(()));
                }
            });
        }
        let started = Instant::now();
        while !echo_stop.load(Ordering::SeqCst) {
            assert!(started.elapsed() < DEADLINE * 4, "the test never ended");
            node.ios[0].sleep(POLL).await;
        }
        assert!(NodeMetrics::get(&node.metrics.peer_connections) >= 2 * CORES as u64);
    });
    for life in ["first", "second"] {
        on_executor(move || async move {
            let node = start_node(plan(1, &members, "keel"), port_1, 0..CORES);
            ping_round(&node, life).await;
            let sent = NodeMetrics::get(&node.metrics.peer_messages_sent);
            assert_eq!(sent, (CORES * MESSAGES_PER_CORE) as u64);
            // A process's exit would close its sockets; an executor's end
            // leaves them open, so the node leaves as `keel serve` does.
            node.links.iter().for_each(|links| links.stop());
        })
        .join()
        .expect("node 1's life passed");
        wait_until_refused(port_1);
    }
    stop.store(true, Ordering::SeqCst);
    echo.join().expect("node 2 passed");
}

/// Node 1 knows a member 3 that never dials in: its queue fills and then
/// drops, counted; a node of another cluster is refused by both sides and
/// never connects; a frame for an unknown peer or over the bound is refused.
#[test]
fn a_full_queue_drops_and_another_cluster_is_refused() {
    let (port_1, port_3) = (free_port_pair(), free_port_pair());
    on_executor(move || async move {
        let node_1 = start_node(
            plan(1, &[(1, port_1), (3, port_3)], "keel"),
            port_1,
            0..CORES,
        );
        let io = &node_1.ios[0];
        let stranger = start_node(plan(3, &[(1, port_1), (3, port_3)], "other"), port_3, 0..1);
        wait_until(io, "both sides to count the refusal", || {
            NodeMetrics::get(&node_1.metrics.peer_handshake_refusals) >= 1
                && NodeMetrics::get(&stranger.metrics.peer_handshake_refusals) >= 1
        })
        .await;
        assert_eq!(NodeMetrics::get(&node_1.metrics.peer_connections), 0);
        assert_eq!(NodeMetrics::get(&stranger.metrics.peer_connections), 0);
        for index in 0..PEER_QUEUE_MESSAGES_MAX {
            assert_eq!(
                io.peer_send(3, 0, vec![index as u8; 8]),
                Ok(()),
                "message {index}"
            );
        }
        assert_eq!(
            io.peer_send(3, 0, vec![0; 8]),
            Err(PeerSendError::QueueFull)
        );
        assert_eq!(
            io.peer_send(9, 0, vec![0; 8]),
            Err(PeerSendError::UnknownPeer)
        );
        let oversize = vec![0; keel_engine::peer::frame::PEER_FRAME_BYTES_MAX + 1];
        assert_eq!(io.peer_send(3, 0, oversize), Err(PeerSendError::TooLarge));
        assert_eq!(NodeMetrics::get(&node_1.metrics.peer_send_dropped), 3);
    })
    .join()
    .expect("the script passed");
}

/// One handshake over a loopback connection: the dialler's result and the
/// acceptor's.
async fn handshake_pair(
    dialer: PeerPlan,
    acceptor: PeerPlan,
    dialer_core: (usize, usize),
    dialled: PeerId,
) -> (Result<u16, PeerError>, Result<(PeerId, u16), PeerError>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a listener");
    let address = listener.local_addr().expect("an address");
    future::zip(
        async {
            let mut stream = TcpStream::connect(address).await.expect("connect");
            dial_handshake(&mut stream, &dialer, dialer_core, dialled).await
        },
        async {
            let mut stream = listener.accept().await.expect("accept");
            accept_handshake(&mut stream, &acceptor, (0, CORES)).await
        },
    )
    .await
}

#[test]
fn handshakes_pass_with_one_password_and_refuse_each_mismatch_on_the_wire() {
    on_executor(|| async {
        let members = [(1, 1000), (2, 2000)];
        let with_password = |me, password: Option<&str>| PeerPlan {
            secret: password.map(Secret::new),
            ..plan(me, &members, "keel")
        };
        let (dialed, accepted) = handshake_pair(
            with_password(2, Some("pw")),
            with_password(1, Some("pw")),
            (0, CORES),
            1,
        )
        .await;
        // Each side learns the other's client port from its hello.
        assert_eq!(dialed.expect("dialed"), 7001);
        assert_eq!(accepted.expect("accepted"), (2, 7002));
        let (dialed, accepted) = handshake_pair(
            with_password(2, None),
            with_password(1, None),
            (0, CORES),
            1,
        )
        .await;
        assert!(
            dialed.is_ok() && accepted.is_ok(),
            "{dialed:?} {accepted:?}"
        );

        let refused = |dialed: Result<u16, PeerError>,
                       accepted: Result<(PeerId, u16), PeerError>,
                       reason: Refusal| {
            assert!(
                matches!(accepted, Err(PeerError::Refused(r)) if r == reason),
                "{reason:?}: acceptor {accepted:?}"
            );
            assert!(
                matches!(dialed, Err(PeerError::RefusedBy(r)) if r == reason),
                "{reason:?}: dialer {dialed:?}"
            );
        };
        let shards_differ = PeerPlan {
            shards: SHARDS + 1,
            ..plan(2, &members, "keel")
        };
        let outsider = plan(5, &[(1, 1000), (5, 5000)], "keel");
        let keel = |me| plan(me, &members, "keel");
        // (dialer, acceptor, the dialer's core, what both must report)
        let cases = [
            (
                with_password(2, Some("pw")),
                with_password(1, Some("other")),
                0,
                Refusal::BadProof,
            ),
            (
                with_password(2, Some("pw")),
                with_password(1, None),
                0,
                Refusal::PasswordMismatch,
            ),
            (
                plan(2, &members, "other"),
                keel(1),
                0,
                Refusal::WrongCluster,
            ),
            (keel(2), keel(1), 1, Refusal::CoreMismatch),
            (shards_differ, keel(1), 0, Refusal::ShardMismatch),
            (outsider, keel(1), 0, Refusal::UnknownNode),
        ];
        for (dialer, acceptor, core, reason) in cases {
            let (d, a) = handshake_pair(dialer, acceptor, (core, CORES), 1).await;
            refused(d, a, reason);
        }
        let (d, a) = handshake_pair(
            plan(2, &members, "keel"),
            plan(1, &members, "keel"),
            (0, CORES),
            3,
        )
        .await;
        assert!(
            matches!(a, Err(PeerError::Refused(Refusal::WrongNode))),
            "{a:?}"
        );
        assert!(d.is_err());
    })
    .join()
    .expect("the script passed");
}

/// Writes `bytes` on `stream` and waits for the node to close it.
async fn send_and_expect_close(io: &GlommioIo, stream: &mut TcpStream, bytes: &[u8]) {
    futures_lite::AsyncWriteExt::write_all(stream, bytes)
        .await
        .expect("write");
    let mut buffer = [0u8; 16];
    let read = before_deadline(
        io,
        "the close",
        futures_lite::AsyncReadExt::read(stream, &mut buffer),
    )
    .await;
    assert!(matches!(read, Ok(0) | Err(_)), "still open: {read:?}");
}

/// A peer that passes the handshake and then sends an oversize length, bad
/// header bytes, or a message for a shard another core owns has its
/// connection closed (counted), and the node goes on serving; bytes that
/// are not a handshake are closed before any frame.
#[test]
fn a_peer_sending_bad_frames_is_cut_off() {
    let port_1 = free_port_pair();
    on_executor(move || async move {
        let members = [(1, port_1), (2, 1000)];
        let node_1 = start_node(plan(1, &members, "keel"), port_1, 0..CORES);
        let io = &node_1.ios[0];
        let mut oversize = Vec::new();
        oversize.extend_from_slice(&(64u32 << 20 | 1).to_le_bytes());
        oversize.extend_from_slice(&0u32.to_le_bytes());
        let crc = crc32fast::hash(&oversize);
        oversize.extend_from_slice(&crc.to_le_bytes());
        let mut elsewhere = Vec::new();
        keel_engine::peer::frame::encode_frame(1, b"for core 1", &mut elsewhere);
        let hostile: [&[u8]; 3] = [&oversize, b"GET / HTTP/1.1\r\n\r\n", &elsewhere];
        for (count, bytes) in hostile.into_iter().enumerate() {
            let mut stream = TcpStream::connect(loopback(port_1)).await.expect("connect");
            dial_handshake(&mut stream, &plan(2, &members, "keel"), (0, CORES), 1)
                .await
                .expect("the handshake passes");
            send_and_expect_close(io, &mut stream, bytes).await;
            let errors = NodeMetrics::get(&node_1.metrics.peer_protocol_errors);
            assert_eq!(errors, count as u64 + 1);
        }
        assert_eq!(NodeMetrics::get(&node_1.metrics.peer_messages_received), 0);
        // Bytes that are no handshake at all: closed before any frame.
        let mut stream = TcpStream::connect(loopback(port_1)).await.expect("connect");
        send_and_expect_close(io, &mut stream, b"GET / HTTP/1.1\r\n\r\n").await;
        assert_eq!(NodeMetrics::get(&node_1.metrics.peer_connections), 3);
    })
    .join()
    .expect("the script passed");
}
