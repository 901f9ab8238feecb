//! `keel serve`: settings, the data directory's identity, one glommio
//! executor per core running the node loop, and signals.

use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{ServeArgs, ServeConfig};
use crate::entropy;
use crate::executor_thread::ExecutorThread;
use crate::exit::Exit;
use crate::glommio_io::{listen_socket, port_is_free, CoreChannels, GlommioIo};
use crate::glommio_peer::PeerPlan;
use crate::identity::{self, Identity};
use crate::node::core::shards_of_core;
use crate::node::{recover_core, NodeError, NodeShared, RecoverySummary};
use crate::peer::links::Links;
use crate::topology::{Member, NodeName, Topology};

/// How often the main thread looks for signals and finished cores.
const MAIN_POLL_MS: u64 = 20;

/// The period of each executor's heartbeat timers. glommio 0.9's executor
/// can go to sleep in `io_uring_enter` with a task ready to run: when its
/// preemption timer has fired (the thread lost its CPU for over
/// `PREEMPT_TIMER_US`) by the time it looks at its task queues, it runs
/// nothing, then parks until the next kernel event, which for a task woken
/// by another task may never come (this hung 2 of 60 starts, in the channel
/// mesh's join; reproduced outside Keel with glommio alone). A timer is such
/// an event: it bounds the stall to one period. Two timers half a period
/// apart, so that one stranded with the task it should rescue leaves the
/// other armed. The main thread's wake signal
/// ([`crate::executor_thread`]) covers what a timer cannot: an executor
/// whose first task, which starts these timers, has not run.
pub const EXECUTOR_HEARTBEAT_MS: u64 = 20;

/// What a core thread reports to the main thread.
enum CoreEvent {
    Recovered(Vec<RecoverySummary>),
    Failed(NodeError),
    Stopped,
}

/// Makes a panic on any thread stop the whole process, as a broken
/// invariant must: the panic's message and location go to the log, then the
/// process aborts (SIGABRT). Without it a panic ends only its executor's
/// thread, and the other cores keep serving while the dead core's shards
/// hang. This is `panic = "abort"` for the server, set at run time because
/// the workspace's release profile must keep unwinding: the simulator
/// reports a simulated node's panic as a failed seed.
fn abort_on_panic() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|text| (*text).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        let location = info
            .location()
            .map_or_else(|| "unknown".into(), ToString::to_string);
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        tracing::error!(%thread, %location, %message, "panic: an invariant is broken; aborting");
        std::process::abort();
    }));
}

/// How long a start waits for its port to be released before refusing it.
/// A process killed while serving leaves its listening sockets open for a
/// while after it is reaped: io_uring holds them through its pending
/// accepts until the kernel tears the ring down (20-35 ms measured here,
/// longer when the ring waits for a blocked request). A restart must wait
/// for that (binding beside the dead listener through SO_REUSEPORT would let
/// the kernel hand it new connections, which it drops), but a port that
/// stays taken belongs to a live server, and is refused.
pub const PORT_RELEASE_WAIT_MS: u64 = 5_000;
/// How often the port is checked while waiting for its release.
const PORT_RELEASE_POLL_MS: u64 = 10;

/// Waits (up to [`PORT_RELEASE_WAIT_MS`]) until no socket listens on
/// `address`; the last error if one still does.
fn wait_for_port(address: SocketAddr) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_millis(PORT_RELEASE_WAIT_MS);
    let mut logged = false;
    loop {
        match port_is_free(address) {
            Ok(()) => return Ok(()),
            Err(error)
                if error.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
            {
                if !logged {
                    tracing::info!(%address, wait_ms = PORT_RELEASE_WAIT_MS, "the port is in use; waiting for a previous run's sockets to close");
                    logged = true;
                }
                std::thread::sleep(Duration::from_millis(PORT_RELEASE_POLL_MS));
            }
            Err(error) => return Err(error),
        }
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// Turns transparent huge pages off for this process, as Redis does
/// (`disable-thp yes`): mimalloc asks for huge pages on its regions
/// (`MADV_HUGEPAGE`), and with the kernel's usual `defrag=madvise` a fault
/// on such a region may compact memory before it returns. Measured with
/// `redis-benchmark -c 50 -P 1 -t set` under `--fsync interval-ms=100`, four
/// alternated rounds on fresh servers: a run's max latency was 26-54 ms
/// with huge pages and 14-16 ms without (the glommio stall detector put the
/// long task runs in mimalloc's first touch of fresh pages),
/// docs/PERFORMANCE.md. The flag covers every thread and later mapping.
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only.
    let result = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if result != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(%error, "cannot turn transparent huge pages off: expect latency spikes when memory is faulted in");
    }
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
    abort_on_panic();
    disable_transparent_huge_pages();
    let available = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    let config = match ServeConfig::resolve(args, available) {
        Ok(config) => config,
        // Bad settings, protected mode's refusal included, are usage errors
        // (EX_USAGE): the command line or the config file must change, and
        // nothing has been opened or bound yet.
        Err(error) => {
            tracing::error!(%error, "bad settings");
            return Exit::Usage;
        }
    };
    warn_if_others_can_read_the_password(args, &config);
    let started = Instant::now();
    let fresh = Identity::fresh(
        entropy::random_u128(),
        entropy::random_u128() as u64,
        config.shards,
        now_unix_ms(),
    );
    let identity = match identity::open_or_init_dir(&config.dir, fresh, None) {
        Ok((identity, created)) => {
            if created {
                tracing::info!(dir = %config.dir.display(), shards = identity.shard_count, "initialised a new data directory");
            } else {
                tracing::info!(dir = %config.dir.display(), shards = identity.shard_count, "opened the data directory");
            }
            if identity.shard_count != config.shards && args.shards.is_some() {
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
    tracing::info!(dir = %config.dir.display(), "locked the data directory");
    let plan = match peer_plan(&config, identity.shard_count) {
        Ok(plan) => plan,
        Err(error) => {
            tracing::error!(%error, "bad settings");
            return Exit::Usage;
        }
    };
    let peer_ports = config
        .cluster
        .iter()
        .flat_map(|cluster| (0..config.cores).map(|core| cluster.peer_port + core as u16));
    let ports = std::iter::once(config.port)
        .chain(config.metrics_port)
        .chain(peer_ports);
    for port in ports {
        if let Err(error) = wait_for_port(SocketAddr::new(config.bind, port)) {
            tracing::error!(port, bind = %config.bind, %error, "cannot listen");
            return Exit::Io;
        }
    }
    tracing::info!(port = config.port, metrics_port = config.metrics_port, bind = %config.bind, "no other process listens on the ports");
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
    let (topology, hash_seed) = match &config.cluster {
        None => (
            Topology::single_node(
                Member::alone(NodeName::of_identity(&identity), config.bind, config.port),
                identity.shard_count,
            ),
            identity.node_id,
        ),
        Some(cluster) => (
            cluster.topology(config.port, identity.shard_count),
            cluster.hash_seed(),
        ),
    };
    let node = Arc::new(NodeShared::new(
        config.clone(),
        identity.shard_count,
        format!("{:032x}", entropy::random_u128()),
        now_unix_ms(),
        hash_seed,
        topology,
    ));
    let channels = CoreChannels::new(config.cores);
    let (events, inbox) = mpsc::channel();
    let mut threads = Vec::new();
    for core in 0..config.cores {
        let (shared, channels, events) = (Arc::clone(&node), channels.clone(), events.clone());
        let plan = plan.clone().map(|plan| PeerPlan {
            topology: Some(Arc::clone(&node.topology)),
            ..plan
        });
        let clients = SocketAddr::new(config.bind, config.port);
        let metrics = config
            .metrics_port
            .map(|port| SocketAddr::new(config.bind, port));
        let spawned = ExecutorThread::spawn(core, move || async move {
            let event = run_core(core, shared, channels, clients, metrics, plan, &events).await;
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
    tracing::info!(cores = config.cores, "started one executor per core");
    let mut exit = supervise(&node, &inbox, signals, &threads, started);
    node.request_stop();
    for thread in threads {
        if !thread.join() {
            exit = exit.max(Exit::Internal);
        }
    }
    tracing::info!(?exit, "keel stopped");
    exit
}

/// Permission bits that let the file's group or other users read it.
const GROUP_OR_OTHERS_READ_MODE: u32 = 0o044;

/// A config file holding the password should be readable by its owner
/// only: warns (naming the file, never the password) when it is not.
fn warn_if_others_can_read_the_password(args: &ServeArgs, config: &ServeConfig) {
    use std::os::unix::fs::PermissionsExt;
    let (Some(path), None, Some(_)) = (&args.config, &args.requirepass, &config.requirepass) else {
        return;
    };
    let mode = std::fs::metadata(path).map_or(0, |metadata| metadata.permissions().mode());
    if mode & GROUP_OR_OTHERS_READ_MODE != 0 {
        tracing::warn!(file = %path.display(), mode = format!("{:o}", mode & 0o777), "the config file holds requirepass and other users can read it: chmod 600 it");
    }
}

/// Keeps timers armed on this executor for as long as it runs (see
/// [`EXECUTOR_HEARTBEAT_MS`]).
fn start_heartbeats() {
    let period = Duration::from_millis(EXECUTOR_HEARTBEAT_MS);
    for offset in [Duration::ZERO, period / 2] {
        glommio::spawn_local(async move {
            glommio::timer::sleep(offset).await;
            loop {
                glommio::timer::sleep(period).await;
            }
        })
        .detach();
    }
}

async fn run_core(
    core: usize,
    node: Arc<NodeShared>,
    channels: CoreChannels,
    clients: SocketAddr,
    metrics: Option<SocketAddr>,
    plan: Option<PeerPlan>,
    events: &mpsc::Sender<CoreEvent>,
) -> CoreEvent {
    start_heartbeats();
    tracing::info!(core, "core started");
    let peers = match plan.map(|plan| bind_peers(core, &node, plan)).transpose() {
        Ok(peers) => peers,
        Err(error) => return CoreEvent::Failed(error),
    };
    let io = match GlommioIo::new(
        core,
        node.config.cores,
        node.config.dir.clone(),
        clients,
        metrics,
        channels,
        peers.as_ref().map(|(links, ..)| Rc::clone(links)),
    ) {
        Ok(io) => io
            .with_shards_on_core(shards_of_core(node.shard_count, core, node.config.cores).count()),
        Err(source) => {
            return CoreEvent::Failed(NodeError::Listen {
                address: clients.to_string(),
                source,
            })
        }
    };
    let links = peers.map(|(links, plan, listener)| {
        crate::glommio_peer::start(&io, Rc::clone(&links), Rc::new(plan), listener);
        tracing::info!(core, "peer transport started");
        links
    });
    tracing::info!(core, "listeners bound");
    let recovered = match recover_core(io, Arc::clone(&node)).await {
        Ok(recovered) => recovered,
        Err(error) => return CoreEvent::Failed(error),
    };
    tracing::info!(core, shards = recovered.summaries.len(), "shards recovered");
    #[cfg(feature = "fault-injection")]
    panic_if_asked(core);
    let _ = events.send(CoreEvent::Recovered(recovered.summaries.clone()));
    let served = recovered.serve().await;
    // Peers see the node leave now rather than when the process exits.
    if let Some(links) = links {
        links.stop();
    }
    match served {
        Ok(()) => CoreEvent::Stopped,
        Err(error) => CoreEvent::Failed(error),
    }
}

/// The cluster's members with their addresses resolved, `None` for a single
/// node. A host name is resolved once, here: a member that moves needs a
/// restart of the others.
fn peer_plan(config: &ServeConfig, shards: u32) -> Result<Option<PeerPlan>, String> {
    let Some(cluster) = &config.cluster else {
        return Ok(None);
    };
    let mut members = Vec::new();
    for member in &cluster.members {
        let address = (member.host.as_str(), member.port)
            .to_socket_addrs()
            .map_err(|error| {
                format!(
                    "cannot resolve peer {} ({}): {error}",
                    member.id,
                    member.address()
                )
            })?
            .next()
            .ok_or_else(|| {
                format!(
                    "peer {} ({}) resolves to no address",
                    member.id,
                    member.address()
                )
            })?;
        members.push((member.id, address));
    }
    Ok(Some(PeerPlan {
        me: cluster.id,
        members,
        cluster_name: cluster.name.clone(),
        shards,
        secret: config.requirepass.clone(),
        client_port: config.port,
        topology: None,
    }))
}

/// This core's peer listener (`peer_port + core`) and links.
fn bind_peers(
    core: usize,
    node: &NodeShared,
    plan: PeerPlan,
) -> Result<(Rc<Links>, PeerPlan, std::net::TcpListener), NodeError> {
    let cluster = node
        .config
        .cluster
        .as_ref()
        .expect("a plan comes from the cluster settings");
    let address = SocketAddr::new(node.config.bind, cluster.peer_port + core as u16);
    let listener = listen_socket(address).map_err(|source| NodeError::Listen {
        address: address.to_string(),
        source,
    })?;
    let links = Links::new(
        core,
        node.config.cores,
        plan.shards,
        plan.peers(),
        Arc::clone(&node.metrics),
    );
    Ok((Rc::new(links), plan, listener))
}

/// The test fault `KEEL_FAULT_PANIC_CORE=<core>`: that core panics once
/// recovered, as a broken invariant would.
#[cfg(feature = "fault-injection")]
fn panic_if_asked(core: usize) {
    let asked = std::env::var("KEEL_FAULT_PANIC_CORE").ok();
    if asked.and_then(|text| text.parse::<usize>().ok()) == Some(core) {
        panic!("injected fault: core {core} panics (KEEL_FAULT_PANIC_CORE)");
    }
}

fn supervise(
    node: &NodeShared,
    inbox: &mpsc::Receiver<CoreEvent>,
    mut signals: signal_hook::iterator::Signals,
    threads: &[ExecutorThread],
    started: Instant,
) -> Exit {
    let cores = threads.len();
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
            Err(mpsc::RecvTimeoutError::Timeout) => {
                threads.iter().for_each(ExecutorThread::wake);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                tracing::error!("a core ended without saying why; stopping");
                node.request_stop();
                return Exit::Internal;
            }
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
    let password = if node.config.requirepass.is_some() {
        "required"
    } else {
        "none"
    };
    tracing::info!(port = node.config.port, bind = %node.config.bind, cores = node.config.cores, fsync = %node.config.fsync, password, "ready to accept connections");
}

fn report_failure(error: &NodeError, node: &NodeShared) {
    if error.is_corruption() {
        let shard_dir = match error {
            NodeError::Wal { shard, .. }
            | NodeError::Snapshot { shard, .. }
            | NodeError::Entry { shard, .. }
            | NodeError::HardState { shard, .. }
            | NodeError::Gap { shard, .. } => {
                node.config.dir.join(crate::node::shard_dir_name(*shard))
            }
            NodeError::Storage { .. } | NodeError::Listen { .. } => node.config.dir.clone(),
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
