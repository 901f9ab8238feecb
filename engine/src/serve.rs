//! `keel serve`: settings, the data directory's identity, one glommio
//! executor per core running the node loop, and signals.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use glommio::channels::channel_mesh::MeshBuilder;

use crate::config::{ServeArgs, ServeConfig};
use crate::exit::Exit;
use crate::glommio_disk::executor_builder;
use crate::glommio_io::{GlommioIo, HOP_QUEUE_MESSAGES};
use crate::identity::{self, Identity};
use crate::node::io::Hop;
use crate::node::{recover_core, NodeError, NodeShared, RecoverySummary};

/// How often the main thread looks for signals and finished cores.
const MAIN_POLL_MS: u64 = 20;

/// What a core thread reports to the main thread.
enum CoreEvent {
    Recovered(Vec<RecoverySummary>),
    Failed(NodeError),
    Stopped,
}

fn random_u128() -> u128 {
    let mut bytes = [0u8; 16];
    if let Ok(mut file) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        if file.read_exact(&mut bytes).is_ok() {
            return u128::from_le_bytes(bytes);
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    now.as_nanos() ^ u128::from(std::process::id()) << 64
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// Fails if another process listens on `address`. The cores bind with
/// SO_REUSEPORT (so that each accepts), which would also let a second server
/// share the port and silently take half the connections; a plain bind first
/// refuses that as Redis does.
fn port_is_free(address: SocketAddr) -> std::io::Result<()> {
    std::net::TcpListener::bind(address).map(drop)
}

/// Runs the server until SIGTERM/SIGINT or a fatal error.
pub fn run(args: &ServeArgs) -> Exit {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .try_init();
    let available = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    let config = match ServeConfig::resolve(args, available) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, "bad settings");
            return Exit::Usage;
        }
    };
    let started = Instant::now();
    let fresh = Identity::fresh(
        random_u128(),
        random_u128() as u64,
        config.shards,
        now_unix_ms(),
    );
    let identity = match identity::open_or_init_dir(&config.dir, fresh, None) {
        Ok((identity, created)) => {
            if created {
                tracing::info!(dir = %config.dir.display(), shards = identity.shard_count, "initialised a new data directory");
            } else if identity.shard_count != config.shards && args.shards.is_some() {
                tracing::warn!(
                    stored = identity.shard_count,
                    asked = config.shards,
                    "the data directory keeps its shard count"
                );
            }
            identity
        }
        Err(error) => {
            tracing::error!(dir = %config.dir.display(), %error, "cannot use the data directory");
            return if error.is_io() {
                Exit::Io
            } else {
                Exit::Corrupt
            };
        }
    };
    let _lock = match identity::lock_dir(&config.dir) {
        Ok(lock) => lock,
        Err(error) => {
            tracing::error!(dir = %config.dir.display(), %error, "cannot use the data directory");
            return Exit::Io;
        }
    };
    if let Err(error) = port_is_free(SocketAddr::new(config.bind, config.port)) {
        tracing::error!(port = config.port, bind = %config.bind, %error, "cannot listen");
        return Exit::Io;
    }
    let signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ]) {
        Ok(signals) => signals,
        Err(error) => {
            tracing::error!(%error, "cannot install signal handlers");
            return Exit::Io;
        }
    };
    let node = Arc::new(NodeShared::new(
        config.clone(),
        identity.shard_count,
        format!("{:032x}", random_u128()),
        now_unix_ms(),
        identity.node_id,
    ));
    let mesh = MeshBuilder::<Hop, _>::full(config.cores, HOP_QUEUE_MESSAGES);
    let (events, inbox) = mpsc::channel();
    let mut threads = Vec::new();
    for core in 0..config.cores {
        let (shared, mesh, events) = (Arc::clone(&node), mesh.clone(), events.clone());
        let clients = SocketAddr::new(config.bind, config.port);
        let metrics = config
            .metrics_port
            .map(|port| SocketAddr::new(config.bind, port));
        let spawned = executor_builder(core).spawn(move || async move {
            let event = run_core(core, shared, mesh, clients, metrics, &events).await;
            let _ = events.send(event);
        });
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(error) => {
                tracing::error!(core, %error, "cannot start an executor");
                node.request_stop();
                return Exit::Io;
            }
        }
    }
    drop(events);
    let exit = supervise(&node, &inbox, signals, config.cores, started);
    node.request_stop();
    for thread in threads {
        let _ = thread.join();
    }
    tracing::info!(?exit, "keel stopped");
    exit
}

async fn run_core(
    core: usize,
    node: Arc<NodeShared>,
    mesh: MeshBuilder<Hop, glommio::channels::channel_mesh::Full>,
    clients: SocketAddr,
    metrics: Option<SocketAddr>,
    events: &mpsc::Sender<CoreEvent>,
) -> CoreEvent {
    let mesh = match mesh.join().await {
        Ok(mesh) => mesh,
        Err(error) => {
            return CoreEvent::Failed(NodeError::Mesh {
                reason: error.to_string(),
            })
        }
    };
    let io = match GlommioIo::new(
        core,
        node.config.cores,
        node.config.dir.clone(),
        clients,
        metrics,
        mesh,
    ) {
        Ok(io) => io,
        Err(source) => {
            return CoreEvent::Failed(NodeError::Listen {
                address: clients.to_string(),
                source,
            })
        }
    };
    let recovered = match recover_core(io, Arc::clone(&node)).await {
        Ok(recovered) => recovered,
        Err(error) => return CoreEvent::Failed(error),
    };
    let _ = events.send(CoreEvent::Recovered(recovered.summaries.clone()));
    match recovered.serve().await {
        Ok(()) => CoreEvent::Stopped,
        Err(error) => CoreEvent::Failed(error),
    }
}

fn supervise(
    node: &NodeShared,
    inbox: &mpsc::Receiver<CoreEvent>,
    mut signals: signal_hook::iterator::Signals,
    cores: usize,
    started: Instant,
) -> Exit {
    let mut recovered = Vec::new();
    let mut reported = 0;
    let mut stopped = 0;
    loop {
        if let Some(signal) = signals.pending().next() {
            tracing::info!(signal, "stopping: syncing the WAL and closing");
            node.request_stop();
        }
        match inbox.recv_timeout(Duration::from_millis(MAIN_POLL_MS)) {
            Ok(CoreEvent::Recovered(summaries)) => {
                recovered.extend(summaries);
                reported += 1;
                if reported == cores {
                    log_recovery(&recovered, started, node);
                }
            }
            Ok(CoreEvent::Failed(error)) => {
                report_failure(&error, node);
                node.request_stop();
                return if error.is_corruption() {
                    Exit::Corrupt
                } else {
                    Exit::Io
                };
            }
            Ok(CoreEvent::Stopped) => {
                stopped += 1;
                if stopped == cores {
                    return Exit::Success;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Exit::Success,
        }
    }
}

fn log_recovery(summaries: &[RecoverySummary], started: Instant, node: &NodeShared) {
    let frames: u64 = summaries
        .iter()
        .map(|summary| summary.frames_replayed)
        .sum();
    let keys: u64 = summaries.iter().map(|summary| summary.snapshot_keys).sum();
    let snapshot_index = summaries
        .iter()
        .map(|summary| summary.snapshot_index)
        .max()
        .unwrap_or(0);
    tracing::info!(
        shards = summaries.len(),
        snapshot_index,
        snapshot_keys = keys,
        frames_replayed = frames,
        seconds = format!("{:.3}", started.elapsed().as_secs_f64()),
        "recovery complete"
    );
    tracing::info!(port = node.config.port, bind = %node.config.bind, cores = node.config.cores, fsync = %node.config.fsync, "ready to accept connections");
}

fn report_failure(error: &NodeError, node: &NodeShared) {
    if error.is_corruption() {
        let shard_dir = match error {
            NodeError::Wal { shard, .. }
            | NodeError::Snapshot { shard, .. }
            | NodeError::Entry { shard, .. }
            | NodeError::Gap { shard, .. } => {
                node.config.dir.join(crate::node::shard_dir_name(*shard))
            }
            NodeError::Storage { .. } | NodeError::Listen { .. } | NodeError::Mesh { .. } => {
                node.config.dir.clone()
            }
        };
        tracing::error!(
            %error,
            "the data on disk is damaged; refusing to start. Inspect it with `keel wal verify {}` (and `keel wal inspect`); `keel wal repair` can cut a damaged log after you have saved a copy",
            shard_dir.display()
        );
    } else {
        tracing::error!(%error, "stopping");
    }
}
