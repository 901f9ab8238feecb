//! `keel-sim --seed N [--ops M]`: one Keel node (the real node loop) on a madsim
//! host, three clients sending SETs and GETs over simulated TCP, and power losses
//! and network partitions of the node at seeded times; then the history is
//! checked for linearizability.
//!
//! Everything random comes from madsim's seeded generator and all time is
//! madsim's virtual time, so a seed replays exactly. Only a `--cfg madsim` build
//! simulates (`scripts/sim.sh`); a normal build says so and exits.

#[cfg(madsim)]
mod simulation {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use keel_engine::config::{FsyncPolicy, ServeConfig};
    use keel_engine::limits::Limits;
    use keel_engine::metrics::NodeMetrics;
    use keel_engine::node::io::NodeIo;
    use keel_engine::node::{recover_core, NodeShared};
    use keel_engine::resp::{Protocol, Reply};
    use keel_sim::history::Recorder;
    use keel_sim::io::{host_disk, SimIo};
    use keel_sim::linearizability::{check, Verdict};
    use keel_sim::models::redis::{Redis, RedisInput, RedisOutput};
    use madsim::rand::{thread_rng, Rng};
    use madsim::runtime::{Handle, Runtime};
    use madsim::time::{sleep, timeout, TimeHandle};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Shards of the simulated node: more than one, so routing is exercised.
    const SHARDS: u32 = 2;
    /// Clients sending commands concurrently.
    const CLIENTS: u64 = 3;
    /// Keys the clients share: few, so operations on one key overlap.
    const KEYS: u64 = 4;
    /// WAL bytes between snapshots: small, so every seed snapshots.
    const SNAPSHOT_WAL_BYTES: u64 = 2 << 10;
    /// Largest key and value the node accepts; the workload stays far below.
    const KEY_BYTES_MAX: usize = 1 << 10;
    const VALUE_BYTES_MAX: usize = 1 << 10;
    const CONNECTIONS_MAX: usize = 64;
    /// How long a client waits for a reply (or a connection) before giving up.
    const REPLY_TIMEOUT_MS: u64 = 1_000;
    /// How long a client waits before reconnecting after a failure.
    const RECONNECT_DELAY_MS: u64 = 100;
    /// Think time between a client's operations, at most.
    const THINK_MS_MAX: u64 = 20;
    /// Time between faults (a power loss or a partition), drawn from this range.
    const UP_MS_MIN: u64 = 200;
    const UP_MS_MAX: u64 = 3_000;
    /// Time the node stays down after a power loss, drawn from this range.
    const DOWN_MS_MIN: u64 = 10;
    const DOWN_MS_MAX: u64 = 1_000;
    /// Time the node is cut off from the clients, drawn from this range: often
    /// longer than a client waits.
    const PARTITION_MS_MIN: u64 = 100;
    const PARTITION_MS_MAX: u64 = 3_000;
    /// Largest reply a client buffers: a GET of the largest value, and headers.
    const REPLY_BYTES_MAX: usize = VALUE_BYTES_MAX + 64;
    /// Virtual time after which a run is declared hung.
    const RUN_TIME_LIMIT_S: u64 = 3_600;
    /// The exit status of a run whose history is not linearizable.
    const EXIT_NOT_LINEARIZABLE: i32 = 1;
    /// The exit status of a run the checker could not decide.
    const EXIT_UNDECIDED: i32 = 2;

    const KEEL_ADDRESS: &str = "10.0.0.1:7379";

    /// Operations the clients send in all unless `--ops` says otherwise.
    const OPS_DEFAULT: u64 = 1_000;
    /// The exit status of a bad command line (sysexits' EX_USAGE).
    const EXIT_USAGE: i32 = 64;
    const USAGE: &str = "usage: keel-sim --seed N [--ops M] [--fsync always|interval-ms=N]";

    #[derive(Clone, Copy, Debug)]
    struct Args {
        /// Seeds madsim: the same seed, the same run.
        seed: u64,
        /// Operations the clients send in all.
        ops: u64,
        /// The node's fsync policy: `interval-ms=N` loses acknowledged writes
        /// in a power loss, which the check must catch.
        fsync: FsyncPolicy,
    }

    /// Parses the command line by hand: clap builds std `HashMap`s, and the
    /// first one of the process fixes the std hash keys, which madsim can only
    /// make deterministic if its runtime comes first.
    fn parse_args(mut words: impl Iterator<Item = String>) -> Result<Args, String> {
        let (mut seed, mut ops, mut fsync) = (None, OPS_DEFAULT, FsyncPolicy::Always);
        while let Some(flag) = words.next() {
            let value = words
                .next()
                .ok_or_else(|| format!("{flag} needs a value"))?;
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|error| format!("{flag} {value}: {error}"))
            };
            match flag.as_str() {
                "--seed" => seed = Some(number()?),
                "--ops" => ops = number()?,
                "--fsync" => fsync = value.parse()?,
                _ => return Err(format!("unknown argument {flag}")),
            }
        }
        let seed = seed.ok_or("--seed is required")?;
        Ok(Args { seed, ops, fsync })
    }

    /// What the node's boots did, gathered across kills.
    #[derive(Debug, Default)]
    struct Boots {
        /// Each boot's metrics (they die with the host, so are kept here).
        metrics: Mutex<Vec<Arc<NodeMetrics>>>,
        /// Boots that found a snapshot to load.
        from_snapshot: AtomicU64,
        frames_replayed: AtomicU64,
    }

    /// What the clients share: the history, the operation budget and counts.
    #[derive(Debug, Default)]
    struct Workload {
        recorder: Mutex<Recorder<RedisInput, RedisOutput>>,
        /// Operations started or starting, against the budget.
        tickets_taken: AtomicU64,
        invoked: AtomicU64,
        completed: AtomicU64,
        /// Operations without an answer: timed out, cut off by a crash, or
        /// answered with an error.
        timed_out: AtomicU64,
        clients_done: AtomicU64,
    }

    impl Workload {
        /// Whether another operation may start; at most `ops` do.
        fn take_ticket(&self, ops: u64) -> bool {
            self.tickets_taken
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |taken| {
                    (taken < ops).then_some(taken + 1)
                })
                .is_ok()
        }

        /// Gives back a ticket that started no operation.
        fn return_ticket(&self) {
            self.tickets_taken.fetch_sub(1, Ordering::SeqCst);
        }

        fn invoke(&self, client: u64, input: RedisInput) {
            let mut recorder = self.recorder.lock().expect("recorder lock");
            recorder.invoke(client, input);
            self.invoked.fetch_add(1, Ordering::SeqCst);
        }

        /// Records how `client`'s operation ended: `None` when it got no answer.
        fn finish(&self, client: u64, output: Option<RedisOutput>, is_read: bool) {
            let mut recorder = self.recorder.lock().expect("recorder lock");
            let recorded = match output {
                Some(output) => {
                    self.completed.fetch_add(1, Ordering::SeqCst);
                    recorder.complete(client, Some(output))
                }
                None => {
                    self.timed_out.fetch_add(1, Ordering::SeqCst);
                    // A read that never answered changed nothing; a write may
                    // still take effect, at any later time.
                    if is_read {
                        recorder.discard(client)
                    } else {
                        recorder.abandon(client)
                    }
                }
            };
            recorded.expect("the client has an operation outstanding");
        }
    }

    /// What one run did, and the checker's verdict on its history.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Summary {
        seed: u64,
        ops: u64,
        completed: u64,
        timed_out: u64,
        crashes: u64,
        partitions: u64,
        /// Unsynced sectors the crashes dropped or tore.
        sectors_lost: u64,
        boots: u64,
        snapshots: u64,
        boots_from_snapshot: u64,
        frames_replayed: u64,
        virtual_ms: u64,
        verdict: Verdict<Vec<u8>>,
    }

    impl std::fmt::Display for Summary {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "seed {} ops {} completed {} timed_out {} crashes {} partitions {} \
                 sectors_lost {} boots {} snapshots {} boots_from_snapshot {} \
                 frames_replayed {} virtual_s {:.1} verdict ",
                self.seed,
                self.ops,
                self.completed,
                self.timed_out,
                self.crashes,
                self.partitions,
                self.sectors_lost,
                self.boots,
                self.snapshots,
                self.boots_from_snapshot,
                self.frames_replayed,
                self.virtual_ms as f64 / 1e3,
            )?;
            let key = |key: &[u8]| String::from_utf8_lossy(key).into_owned();
            match &self.verdict {
                Verdict::Linearizable => write!(f, "linearizable"),
                Verdict::NotLinearizable {
                    partition,
                    operations,
                    longest_prefix,
                } => write!(
                    f,
                    "NOT linearizable (key {}: {longest_prefix} of its {operations} operations linearize)",
                    key(partition)
                ),
                Verdict::Unknown { partition, steps } => write!(
                    f,
                    "unknown (key {}: no answer in {steps} search steps)",
                    key(partition)
                ),
            }
        }
    }

    pub fn main() -> i32 {
        let args = match parse_args(std::env::args().skip(1)) {
            Ok(args) => args,
            Err(error) => {
                eprintln!("{error}\n{USAGE}");
                return EXIT_USAGE;
            }
        };
        let summary = run(args);
        println!("{summary}");
        match summary.verdict {
            Verdict::Linearizable => 0,
            Verdict::NotLinearizable { .. } => EXIT_NOT_LINEARIZABLE,
            Verdict::Unknown { .. } => EXIT_UNDECIDED,
        }
    }

    /// One simulation. Run at most one per thread: madsim seeds std's hash
    /// keys only if its runtime is the thread's first user of them, and the
    /// hosts' disks ([`host_disk`]) live as long as the thread.
    fn run(args: Args) -> Summary {
        let mut runtime = Runtime::with_seed_and_config(args.seed, madsim::Config::default());
        // RUST_LOG=info shows the node's log. After the runtime: see above.
        madsim::runtime::init_logger();
        runtime.set_time_limit(Duration::from_secs(RUN_TIME_LIMIT_S));
        runtime.block_on(simulate(args))
    }

    async fn simulate(args: Args) -> Summary {
        let handle = Handle::current();
        let boots = Arc::new(Boots::default());
        let keel_boots = Arc::clone(&boots);
        let fsync = args.fsync;
        let keel = handle
            .create_node()
            .name("keel")
            .ip([10, 0, 0, 1].into())
            .init(move || run_keel(fsync, Arc::clone(&keel_boots)))
            .build();
        let workload = Arc::new(Workload::default());
        for client in 0..CLIENTS {
            let workload = Arc::clone(&workload);
            handle
                .create_node()
                .name(format!("client-{client}"))
                .ip([10, 0, 1, client as u8 + 1].into())
                .init(move || run_client(client, args.ops, Arc::clone(&workload)))
                .build();
        }
        let (mut crashes, mut sectors_lost, mut partitions) = (0u64, 0u64, 0u64);
        let mut rng = thread_rng();
        while workload.clients_done.load(Ordering::SeqCst) < CLIENTS {
            sleep(Duration::from_millis(rng.gen_range(UP_MS_MIN..=UP_MS_MAX))).await;
            if workload.clients_done.load(Ordering::SeqCst) == CLIENTS {
                break;
            }
            if rng.gen_bool(0.5) {
                handle.kill(keel.id());
                let report = host_disk(keel.id()).crash(rng.gen());
                sectors_lost += report.dropped_sectors + report.torn_sectors;
                crashes += 1;
                sleep(Duration::from_millis(
                    rng.gen_range(DOWN_MS_MIN..=DOWN_MS_MAX),
                ))
                .await;
                handle.restart(keel.id());
            } else {
                // Packets to and from the node wait (TCP retransmits) until
                // the partition heals: clients time out while the node lives,
                // and their requests may take effect long after.
                let network = madsim::net::NetSim::current();
                network.clog_node(keel.id());
                partitions += 1;
                sleep(Duration::from_millis(
                    rng.gen_range(PARTITION_MS_MIN..=PARTITION_MS_MAX),
                ))
                .await;
                network.unclog_node(keel.id());
            }
        }
        let recorder = std::mem::take(&mut *workload.recorder.lock().expect("recorder lock"));
        let verdict = check::<Redis>(&recorder.finish());
        let metrics = boots.metrics.lock().expect("boots lock");
        Summary {
            seed: args.seed,
            ops: workload.invoked.load(Ordering::SeqCst),
            completed: workload.completed.load(Ordering::SeqCst),
            timed_out: workload.timed_out.load(Ordering::SeqCst),
            crashes,
            partitions,
            sectors_lost,
            boots: metrics.len() as u64,
            snapshots: metrics
                .iter()
                .map(|boot| boot.snapshots.load(Ordering::SeqCst))
                .sum(),
            boots_from_snapshot: boots.from_snapshot.load(Ordering::SeqCst),
            frames_replayed: boots.frames_replayed.load(Ordering::SeqCst),
            virtual_ms: TimeHandle::current().elapsed().as_millis() as u64,
            verdict,
        }
    }

    /// The Keel node: recovers from the host's disk and serves until killed.
    async fn run_keel(fsync: FsyncPolicy, boots: Arc<Boots>) {
        let address: SocketAddr = KEEL_ADDRESS.parse().expect("a valid address");
        let io = SimIo::bind(address)
            .await
            .expect("the node's address is free");
        let config = ServeConfig {
            dir: "keel-data".into(),
            port: address.port(),
            bind: address.ip(),
            cores: 1,
            fsync,
            metrics_port: None,
            shards: SHARDS,
            limits: Limits {
                key_bytes_max: KEY_BYTES_MAX,
                value_bytes_max: VALUE_BYTES_MAX,
            },
            connections_max: CONNECTIONS_MAX,
            snapshot_wal_bytes: SNAPSHOT_WAL_BYTES,
            wal_segment_bytes: keel_wal::SEGMENT_BYTES_DEFAULT,
        };
        let node = Arc::new(NodeShared::new(
            config,
            SHARDS,
            format!("{:040x}", thread_rng().gen::<u128>()),
            io.now_unix_ms(),
            thread_rng().gen(),
        ));
        boots
            .metrics
            .lock()
            .expect("boots lock")
            .push(Arc::clone(&node.metrics));
        // Recovery must succeed after any power loss: a failure is a bug, and
        // the panic stops the simulation with its seed.
        let recovered = recover_core(io, node)
            .await
            .unwrap_or_else(|error| panic!("recovery after a power loss failed: {error}"));
        for summary in &recovered.summaries {
            if summary.snapshot_index > 0 {
                boots.from_snapshot.fetch_add(1, Ordering::SeqCst);
            }
            boots
                .frames_replayed
                .fetch_add(summary.frames_replayed, Ordering::SeqCst);
        }
        if let Err(error) = recovered.serve().await {
            panic!("the node stopped: {error}");
        }
    }

    /// One client: random SETs (each value unique) and GETs until the budget
    /// is spent, reconnecting whenever the node goes away.
    async fn run_client(client: u64, ops: u64, workload: Arc<Workload>) {
        let mut connection: Option<tokio::io::BufStream<madsim::net::TcpStream>> = None;
        let mut sequence = 0u64;
        while workload.take_ticket(ops) {
            let stream = match connection.as_mut() {
                Some(stream) => stream,
                None => match connect().await {
                    Some(stream) => connection.insert(stream),
                    None => {
                        workload.return_ticket();
                        sleep(Duration::from_millis(RECONNECT_DELAY_MS)).await;
                        continue;
                    }
                },
            };
            let key = format!("k{}", thread_rng().gen_range(0..KEYS)).into_bytes();
            let input = if thread_rng().gen_bool(0.5) {
                sequence += 1;
                let value = format!("c{client}-{sequence}").into_bytes();
                RedisInput::Set { key, value }
            } else {
                RedisInput::Get { key }
            };
            let request = encode(&input);
            let is_read = matches!(input, RedisInput::Get { .. });
            workload.invoke(client, input);
            let reply = timeout(
                Duration::from_millis(REPLY_TIMEOUT_MS),
                round_trip(stream, &request),
            )
            .await;
            let output = reply.ok().and_then(Result::ok);
            if output.is_none() {
                connection = None;
            }
            workload.finish(client, output, is_read);
            sleep(Duration::from_millis(
                thread_rng().gen_range(0..=THINK_MS_MAX),
            ))
            .await;
        }
        workload.clients_done.fetch_add(1, Ordering::SeqCst);
    }

    async fn connect() -> Option<tokio::io::BufStream<madsim::net::TcpStream>> {
        let connecting = madsim::net::TcpStream::connect(KEEL_ADDRESS);
        match timeout(Duration::from_millis(REPLY_TIMEOUT_MS), connecting).await {
            Ok(Ok(stream)) => Some(tokio::io::BufStream::new(stream)),
            _ => None,
        }
    }

    /// Sends one request and reads its reply.
    async fn round_trip(
        stream: &mut tokio::io::BufStream<madsim::net::TcpStream>,
        request: &[u8],
    ) -> std::io::Result<RedisOutput> {
        stream.write_all(request).await?;
        stream.flush().await?;
        let mut reply = Vec::new();
        loop {
            if let Some(output) = parse_reply(&reply)? {
                return Ok(output);
            }
            if reply.len() > REPLY_BYTES_MAX {
                return Err(invalid("reply too long"));
            }
            if stream.read_buf(&mut reply).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// The request as a RESP array of bulk strings.
    fn encode(input: &RedisInput) -> Vec<u8> {
        let args: Vec<&[u8]> = match input {
            RedisInput::Set { key, value } => vec![b"SET", key, value],
            RedisInput::Get { key } => vec![b"GET", key],
            other => unreachable!("the workload sends only SET and GET, not {other:?}"),
        };
        let request = Reply::Array(
            args.into_iter()
                .map(|arg| Reply::Bulk(arg.to_vec()))
                .collect(),
        );
        let mut out = Vec::new();
        request.encode(Protocol::Resp2, &mut out);
        out
    }

    /// The reply at the start of `buf`, if it is all there. An error reply is an
    /// error: the client learns nothing certain from it.
    fn parse_reply(buf: &[u8]) -> std::io::Result<Option<RedisOutput>> {
        let Some(line_end) = buf.windows(2).position(|pair| pair == b"\r\n") else {
            return Ok(None);
        };
        let line = &buf[1..line_end];
        match buf[0] {
            b'+' if line == b"OK" => Ok(Some(RedisOutput::Ok)),
            b'$' => {
                let length: i64 = std::str::from_utf8(line)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(|| invalid("bad bulk length"))?;
                let Ok(length) = usize::try_from(length) else {
                    return Ok(Some(RedisOutput::Bulk(None)));
                };
                let start = line_end + 2;
                if buf.len() < start + length + 2 {
                    return Ok(None);
                }
                Ok(Some(RedisOutput::Bulk(Some(
                    buf[start..start + length].to_vec(),
                ))))
            }
            _ => Err(invalid(&String::from_utf8_lossy(&buf[..line_end]))),
        }
    }

    fn invalid(what: &str) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Runs a simulation on a thread of its own (see [`run`]).
        fn run_alone(seed: u64, ops: u64, fsync: FsyncPolicy) -> Summary {
            let args = Args { seed, ops, fsync };
            std::thread::spawn(move || run(args))
                .join()
                .expect("the simulation does not panic")
        }

        #[test]
        fn a_seed_replays_exactly_and_survives_its_crashes() {
            let first = run_alone(7, 1_000, FsyncPolicy::Always);
            assert_eq!(first, run_alone(7, 1_000, FsyncPolicy::Always));
            assert_eq!(first.ops, 1_000);
            assert!(first.crashes > 0, "{first}");
            assert!(first.boots_from_snapshot > 0, "{first}");
            assert_eq!(first.verdict, Verdict::Linearizable, "{first}");
        }

        #[test]
        fn acknowledged_writes_lost_in_a_crash_are_caught() {
            let lossy = run_alone(1, 1_000, FsyncPolicy::IntervalMs(200));
            assert!(
                matches!(lossy.verdict, Verdict::NotLinearizable { .. }),
                "{lossy}"
            );
        }

        #[test]
        fn replies_parse_once_complete() {
            assert_eq!(parse_reply(b"+OK\r\n").unwrap(), Some(RedisOutput::Ok));
            assert_eq!(
                parse_reply(b"$-1\r\n").unwrap(),
                Some(RedisOutput::Bulk(None))
            );
            assert_eq!(parse_reply(b"$3\r\nab").unwrap(), None);
            assert_eq!(
                parse_reply(b"$3\r\nabc\r\n").unwrap(),
                Some(RedisOutput::Bulk(Some(b"abc".to_vec())))
            );
            assert!(parse_reply(b"-ERR no\r\n").is_err());
        }

        #[test]
        fn the_command_line_needs_a_seed() {
            let words = |text: &str| text.split(' ').map(String::from).collect::<Vec<_>>();
            let args = parse_args(words("--seed 3 --fsync interval-ms=5").into_iter()).unwrap();
            assert_eq!((args.seed, args.ops), (3, OPS_DEFAULT));
            assert_eq!(args.fsync, FsyncPolicy::IntervalMs(5));
            assert!(parse_args(words("--ops 3").into_iter()).is_err());
            assert!(parse_args(words("--seed x").into_iter()).is_err());
        }
    }
}

/// The exit status of a build that cannot simulate (sysexits' EX_USAGE).
#[cfg(not(madsim))]
const EXIT_NOT_SIMULATION_BUILD: i32 = 64;

#[cfg(not(madsim))]
fn main() {
    eprintln!("build with RUSTFLAGS=\"--cfg madsim\" (scripts/sim.sh)");
    std::process::exit(EXIT_NOT_SIMULATION_BUILD);
}

#[cfg(madsim)]
fn main() {
    std::process::exit(simulation::main());
}
