//! The harness of Keel's black-box tests: it finds the `keel` binary, starts
//! servers on free ports in temporary directories, waits for them to answer
//! PING, kills them (SIGKILL or SIGTERM) and restarts them on the same data
//! and the same ports (as systemd or a container runtime would), and talks to
//! them through the `redis` crate or raw bytes over TCP.
//!
//! `KEEL_TEST_CORES` sets the `--cores` of every server whose options do not
//! set their own (1 when unset), so that a suite can run on several cores.
//!
//! A server that fails a test prints its captured stderr when dropped during
//! the panic, so a failing test shows the server's log.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

pub mod cluster;
pub mod cluster_client;

/// How long a server may take from spawn to answering PING.
pub const READY_DEADLINE_MS: u64 = 30_000;
/// How often readiness is polled.
pub const READY_POLL_MS: u64 = 15;
/// How long a server may take to exit after SIGTERM, or to refuse to start.
pub const EXIT_DEADLINE_MS: u64 = 30_000;
/// How long a client waits for one reply before the test fails.
pub const REPLY_TIMEOUT_MS: u64 = 30_000;
/// Start attempts when the free port was taken between probe and bind.
pub const START_ATTEMPTS_MAX: u32 = 5;
/// The smallest `--snapshot-wal-bytes` the server accepts: tests that need
/// snapshots use it.
pub const SNAPSHOT_WAL_BYTES_MIN: u64 = 1 << 20;

static BUILD: Once = Once::new();

/// The `keel` binary: `$KEEL_BIN` if set, else the one beside the test
/// executable's `deps/` directory (built by `cargo test --workspace`, with the
/// `fault-injection` feature that this crate's dev-dependency switches on),
/// else one built once with `cargo build -p keel-engine --bin keel --features
/// fault-injection`.
pub fn keel_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("KEEL_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test> → target/<profile>/keel
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    let beside = profile_dir.join("keel");
    if beside.exists() {
        return beside;
    }
    // The test executable's target dir is the one cargo was told to use
    // (CARGO_TARGET_DIR or the default), already resolved.
    let target_dir = profile_dir.parent().expect("target/<profile> has a parent");
    BUILD.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "-p",
                "keel-engine",
                "--bin",
                "keel",
                // The test faults (KEEL_FAULT_*), as `cargo test` builds it.
                "--features",
                "fault-injection",
                "--target-dir",
            ])
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build of keel failed: {status}");
    });
    let built = target_dir.join("debug").join("keel");
    assert!(
        built.exists(),
        "keel was built but is not at {}",
        built.display()
    );
    built
}

/// A port nobody listens on right now (the listener is dropped at once, so
/// another process may take it: starts retry on "address in use").
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener
        .local_addr()
        .expect("a bound listener has an address")
        .port()
}

/// How to start a server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Data directory; a fresh temporary one when `None`.
    pub dir: Option<PathBuf>,
    pub cores: usize,
    pub shards: u32,
    /// `--fsync` policy.
    pub fsync: String,
    pub snapshot_wal_bytes: Option<u64>,
    pub max_value_bytes: Option<usize>,
    pub max_key_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    /// Serve Prometheus metrics on a free port.
    pub metrics: bool,
    /// Further flags, passed as they are.
    pub extra_args: Vec<String>,
    /// The client port; a free one when `None`.
    pub port: Option<u16>,
    /// How long a start may take to answer PING before the test fails.
    pub ready_deadline_ms: u64,
    /// RLIMIT_NOFILE of the server process (`ulimit -n`), when set.
    pub open_files_max: Option<u64>,
    /// Further environment variables of the server process.
    pub env: Vec<(String, String)>,
    /// `--requirepass`; [`Server::connection`] then logs in with it.
    pub requirepass: Option<String>,
    /// `--bind`: loopback unless a test of a refused start says otherwise
    /// (tests never listen on another address).
    pub bind: String,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            dir: None,
            cores: default_cores(),
            // Two shards on one core, so that keys are routed between shards.
            shards: 2,
            fsync: "always".into(),
            snapshot_wal_bytes: None,
            max_value_bytes: None,
            max_key_bytes: None,
            max_connections: None,
            metrics: false,
            extra_args: Vec::new(),
            port: None,
            ready_deadline_ms: READY_DEADLINE_MS,
            open_files_max: None,
            env: Vec::new(),
            requirepass: None,
            bind: "127.0.0.1".into(),
        }
    }
}

/// The `--cores` of servers started with default options: `$KEEL_TEST_CORES`,
/// else 1.
pub fn default_cores() -> usize {
    std::env::var("KEEL_TEST_CORES")
        .ok()
        .map(|text| {
            text.parse()
                .unwrap_or_else(|_| panic!("KEEL_TEST_CORES={text} is not a number"))
        })
        .unwrap_or(1)
}

/// How a server process ended.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// A running (or stopped, between `kill9`/`terminate` and `restart`) `keel serve`.
///
/// The process is killed when the thread that started (or restarted) it
/// ends, so keep a `Server` on the thread that started it.
#[derive(Debug)]
pub struct Server {
    options: ServerOptions,
    dir: PathBuf,
    /// Kept so the directory lives as long as the server.
    _temp: Option<tempfile::TempDir>,
    /// Holds the stderr captures; separate from `dir`, which may be a file.
    logs: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    metrics_port: Option<u16>,
    starts: u32,
}

impl Server {
    /// Starts a server and waits until it answers PING; panics with its
    /// stderr if it does not.
    pub fn start(options: ServerOptions) -> Server {
        match Server::try_start(options) {
            Ok(server) => server,
            Err(exited) => panic!("keel did not start: {}\n{}", exited.status, exited.stderr),
        }
    }

    /// Starts a server and waits until it answers PING, or returns how it
    /// exited instead (for tests of refused starts).
    pub fn try_start(options: ServerOptions) -> Result<Server, Exited> {
        let (temp, dir) = match &options.dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let temp = tempfile::tempdir().expect("create a temp dir");
                let dir = temp.path().join("data");
                (Some(temp), dir)
            }
        };
        let mut server = Server {
            options,
            dir,
            _temp: temp,
            logs: tempfile::tempdir().expect("create a temp dir"),
            child: None,
            port: 0,
            metrics_port: None,
            starts: 0,
        };
        server.boot()?;
        Ok(server)
    }

    /// Starts a server that must refuse to start, and returns how it exited
    /// (it must exit within [`EXIT_DEADLINE_MS`]). Unlike `try_start`, this
    /// never polls its port, which another server may be answering on.
    pub fn refused(options: ServerOptions) -> Exited {
        let temp = tempfile::tempdir().expect("create a temp dir");
        let mut server = Server {
            dir: options
                .dir
                .clone()
                .unwrap_or_else(|| temp.path().join("data")),
            _temp: Some(temp),
            logs: tempfile::tempdir().expect("create a temp dir"),
            child: None,
            port: options.port.unwrap_or_else(free_port),
            metrics_port: options.metrics.then(free_port),
            starts: 0,
            options,
        };
        server.spawn();
        server.wait_exit()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// A `redis` crate connection, logged in when the server has a password.
    pub fn connection(&self) -> redis::Connection {
        let url = match &self.options.requirepass {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        };
        let client = redis::Client::open(url).expect("a valid URL");
        let connection = client.get_connection().expect("connect to keel");
        connection
            .set_read_timeout(Some(Duration::from_millis(REPLY_TIMEOUT_MS)))
            .expect("set a read timeout");
        connection
    }

    /// A raw TCP connection.
    pub fn raw(&self) -> RawConnection {
        RawConnection::connect(self.port).expect("connect to keel")
    }

    /// The whole HTTP response of a scrape of the metrics port.
    pub fn scrape_metrics(&self) -> String {
        let port = self
            .metrics_port
            .expect("the server was started with metrics");
        let mut stream =
            TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
        stream
            .set_read_timeout(Some(Duration::from_millis(REPLY_TIMEOUT_MS)))
            .expect("set a read timeout");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .expect("send the request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("read the response to its end");
        response
    }

    /// The stderr of the current (or last) run.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path(self.starts)).unwrap_or_default()
    }

    /// Whether the process was started and not yet killed or reaped.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends `signal` to the running process (SIGSTOP and SIGCONT pause
    /// and resume it).
    pub fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("the server is running");
        let pid = libc::pid_t::try_from(child.id()).expect("pids fit pid_t");
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            sent,
            0,
            "signal {signal} could not be sent: {}",
            io::Error::last_os_error()
        );
    }

    /// SIGKILL, and reap the process.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait (with a deadline) for the exit.
    pub fn terminate(&mut self) -> Exited {
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }

    /// Waits (with a deadline) for the process to exit by itself.
    pub fn wait_exit(&mut self) -> Exited {
        let mut child = self.child.take().expect("the server is running");
        let deadline = Instant::now() + Duration::from_millis(EXIT_DEADLINE_MS);
        loop {
            if let Some(status) = child.try_wait().expect("wait for keel") {
                return Exited {
                    status,
                    stderr: self.stderr(),
                };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "keel did not exit within {EXIT_DEADLINE_MS} ms\n{}",
                    self.stderr()
                );
            }
            wait_a_moment();
        }
    }

    /// Starts the server again on the same directory and the same ports
    /// (SIGKILLing it first if it still runs) and waits until it answers PING.
    pub fn restart(&mut self) -> Ready {
        match self.try_restart() {
            Ok(ready) => ready,
            Err(exited) => panic!("keel did not restart: {}\n{}", exited.status, exited.stderr),
        }
    }

    /// As `restart`, but returns how it exited when it refuses to start.
    pub fn try_restart(&mut self) -> Result<Ready, Exited> {
        self.kill9();
        self.spawn();
        self.wait_ready()
    }

    fn stderr_path(&self, start: u32) -> PathBuf {
        self.logs.path().join(format!("keel-{start}.stderr"))
    }

    /// The first start: on free ports, retried on other ones if another
    /// process took a port between the probe and the server's bind.
    fn boot(&mut self) -> Result<(), Exited> {
        if let Some(port) = self.options.port {
            self.port = port;
            self.metrics_port = self.options.metrics.then(free_port);
            self.spawn();
            return self.wait_ready().map(drop);
        }
        for _ in 0..START_ATTEMPTS_MAX {
            self.port = free_port();
            self.metrics_port = self.options.metrics.then(free_port);
            self.spawn();
            match self.wait_ready() {
                Ok(_) => return Ok(()),
                Err(exited) if exited.stderr.to_lowercase().contains("address in use") => continue,
                Err(exited) => return Err(exited),
            }
        }
        panic!("no free port after {START_ATTEMPTS_MAX} attempts");
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let options = &self.options;
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--dir".into(),
            self.dir.to_str().expect("UTF-8 temp path").into(),
            "--bind".into(),
            options.bind.clone(),
            "--port".into(),
            self.port.to_string(),
            "--cores".into(),
            options.cores.to_string(),
            "--shards".into(),
            options.shards.to_string(),
            "--fsync".into(),
            options.fsync.clone(),
        ];
        let numbers = [
            ("--metrics-port", self.metrics_port.map(u64::from)),
            ("--snapshot-wal-bytes", options.snapshot_wal_bytes),
            (
                "--max-value-bytes",
                options.max_value_bytes.map(|n| n as u64),
            ),
            ("--max-key-bytes", options.max_key_bytes.map(|n| n as u64)),
            (
                "--max-connections",
                options.max_connections.map(|n| n as u64),
            ),
        ];
        for (flag, value) in numbers {
            if let Some(value) = value {
                args.push(flag.into());
                args.push(value.to_string());
            }
        }
        if let Some(password) = &options.requirepass {
            args.extend(["--requirepass".into(), password.clone()]);
        }
        args.extend(options.extra_args.iter().cloned());
        let stderr =
            File::create(self.stderr_path(self.starts)).expect("create the stderr capture");
        let mut command = Command::new(keel_binary());
        command
            .args(&args)
            .envs(options.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let open_files = options.open_files_max.map(|max| libc::rlimit {
            rlim_cur: max,
            rlim_max: max,
        });
        // SAFETY: the closure runs between fork and exec and only calls
        // prctl and setrlimit, which are async-signal-safe, on values copied
        // before the fork.
        unsafe {
            command.pre_exec(move || {
                // A test run that is killed (timeout, ^C) skips the Drop that
                // kills its servers; this ends them when the spawning thread ends.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(limit) = &open_files {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, limit) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("spawn keel");
        self.child = Some(child);
    }

    /// CPU time (user and system) the running server has used, in ms.
    pub fn cpu_time_ms(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("read the server's /proc stat");
        // Fields after the command name (which is in parentheses and may hold
        // spaces): state is field 3, utime 14 and stime 15.
        let after_name = &stat[stat.rfind(')').expect("a stat line names the command") + 2..];
        let fields: Vec<&str> = after_name.split(' ').collect();
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        // SAFETY: sysconf has no preconditions.
        let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        ticks * 1000 / u64::try_from(ticks_per_second).expect("a positive clock tick rate")
    }

    /// Polls PING until PONG; returns how the process exited if it does.
    fn wait_ready(&mut self) -> Result<Ready, Exited> {
        let deadline_ms = self.options.ready_deadline_ms;
        let spawned = Instant::now();
        let deadline = spawned + Duration::from_millis(deadline_ms);
        let mut listening = None;
        loop {
            let child = self.child.as_mut().expect("just spawned");
            if let Some(status) = child.try_wait().expect("poll keel") {
                self.child = None;
                return Err(Exited {
                    status,
                    stderr: self.stderr(),
                });
            }
            match ping(self.port) {
                Probe::Refused => {}
                Probe::Connected => {
                    listening.get_or_insert(spawned.elapsed());
                }
                Probe::Pong => {
                    let serving = spawned.elapsed();
                    return Ok(Ready {
                        listening: listening.unwrap_or(serving),
                        serving,
                    });
                }
            }
            if Instant::now() > deadline {
                self.kill9();
                panic!(
                    "keel did not answer PING within {deadline_ms} ms\n{}",
                    self.stderr()
                );
            }
            wait_a_moment();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            for start in 1..=self.starts {
                eprintln!(
                    "---- keel stderr (start {start}) ----\n{}",
                    std::fs::read_to_string(self.stderr_path(start)).unwrap_or_default()
                );
            }
        }
    }
}

/// One poll interval between readiness or exit checks: the only waiting the
/// harness does, always bounded by a deadline.
pub fn wait_a_moment() {
    std::thread::park_timeout(Duration::from_millis(READY_POLL_MS));
}

/// How soon a started process took its port and answered, from its spawn.
#[derive(Clone, Copy, Debug)]
pub struct Ready {
    /// Until a connection was accepted by the kernel: the port is bound
    /// (before recovery, which may take long).
    pub listening: Duration,
    /// Until PING was answered.
    pub serving: Duration,
}

/// What one readiness probe found.
enum Probe {
    Refused,
    Connected,
    Pong,
}

fn ping(port: u16) -> Probe {
    let Ok(mut raw) = RawConnection::connect(port) else {
        return Probe::Refused;
    };
    if raw
        .stream
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .is_err()
    {
        return Probe::Connected;
    }
    match raw.command(&[b"PING"]) {
        Ok(Resp::Simple(pong)) if pong == "PONG" => Probe::Pong,
        // The node loop answers (and so serves) but wants a password.
        Ok(Resp::Error(error)) if error.starts_with("NOAUTH") => Probe::Pong,
        _ => Probe::Connected,
    }
}

/// The value of the unlabelled sample `name` in Prometheus text.
pub fn metric_sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
        .parse()
        .expect("a number")
}

/// A decoded RESP2 or RESP3 reply.
#[derive(Clone, Debug, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    /// `$-1`, `*-1` or RESP3 `_`.
    Null,
    Array(Vec<Resp>),
    Map(Vec<(Resp, Resp)>),
    Set(Vec<Resp>),
    Push(Vec<Resp>),
    Double(String),
    Boolean(bool),
    BigNumber(String),
    Verbatim(String),
}

impl Resp {
    /// The text of a simple string, bulk string or verbatim string.
    pub fn text(&self) -> Option<String> {
        match self {
            Resp::Simple(text) | Resp::Verbatim(text) => Some(text.clone()),
            Resp::Bulk(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        }
    }
}

/// A TCP connection that sends arbitrary bytes and decodes replies.
#[derive(Debug)]
pub struct RawConnection {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl RawConnection {
    pub fn connect(port: u16) -> io::Result<RawConnection> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_millis(REPLY_TIMEOUT_MS)))?;
        stream.set_nodelay(true)?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(RawConnection { stream, reader })
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends one command as a RESP array of bulk strings and reads its reply.
    pub fn command(&mut self, args: &[&[u8]]) -> io::Result<Resp> {
        self.send(&encode_command(args))?;
        self.read_reply()
    }

    /// Reads one whole reply.
    pub fn read_reply(&mut self) -> io::Result<Resp> {
        let line = self.read_line()?;
        let (kind, rest) = line.split_at(1);
        let number = || rest.parse::<i64>().map_err(|_| invalid(&line));
        Ok(match kind {
            "+" => Resp::Simple(rest.into()),
            "-" => Resp::Error(rest.into()),
            ":" => Resp::Integer(number()?),
            "_" => Resp::Null,
            "," => Resp::Double(rest.into()),
            "#" => Resp::Boolean(rest == "t"),
            "(" => Resp::BigNumber(rest.into()),
            "$" | "!" | "=" => match number()? {
                -1 => Resp::Null,
                len => {
                    let bytes =
                        self.read_bulk(usize::try_from(len).map_err(|_| invalid(&line))?)?;
                    match kind {
                        "$" => Resp::Bulk(bytes),
                        "!" => Resp::Error(String::from_utf8_lossy(&bytes).into()),
                        // Verbatim strings start with a 3-letter format and ':'.
                        _ => Resp::Verbatim(
                            String::from_utf8_lossy(bytes.get(4..).unwrap_or_default()).into(),
                        ),
                    }
                }
            },
            "*" | "~" | ">" => match number()? {
                -1 => Resp::Null,
                len => {
                    let items = (0..len)
                        .map(|_| self.read_reply())
                        .collect::<io::Result<Vec<_>>>()?;
                    match kind {
                        "*" => Resp::Array(items),
                        "~" => Resp::Set(items),
                        _ => Resp::Push(items),
                    }
                }
            },
            "%" => {
                let mut pairs = Vec::new();
                for _ in 0..number()? {
                    pairs.push((self.read_reply()?, self.read_reply()?));
                }
                Resp::Map(pairs)
            }
            _ => return Err(invalid(&line)),
        })
    }

    /// Reads until the server closes the connection; returns what came.
    pub fn read_to_close(&mut self) -> io::Result<Vec<u8>> {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest)?;
        Ok(rest)
    }

    /// Reads one CRLF-terminated line, without the CRLF.
    pub fn read_line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line)?;
        if line.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        if !line.ends_with(b"\r\n") {
            return Err(invalid(&String::from_utf8_lossy(&line)));
        }
        line.truncate(line.len() - 2);
        String::from_utf8(line).map_err(|error| invalid(&error.to_string()))
    }

    fn read_bulk(&mut self, len: usize) -> io::Result<Vec<u8>> {
        let mut bytes = vec![0; len + 2];
        self.reader.read_exact(&mut bytes)?;
        if !bytes.ends_with(b"\r\n") {
            return Err(invalid("a bulk string not ended by CRLF"));
        }
        bytes.truncate(len);
        Ok(bytes)
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("not RESP: {what:?}"))
}

/// `args` as a RESP array of bulk strings.
pub fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A server error reply as Redis sends it: "CODE detail".
pub fn error_text(error: &redis::RedisError) -> String {
    match (error.code(), error.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.into(),
        _ => error.to_string(),
    }
}

/// The seeded generator the WAL's tests use (splitmix64); tests print their
/// seed so a failure can be replayed.
#[derive(Debug)]
pub struct Rng(keel_wal::memory::SplitMix64);

impl Rng {
    /// Seeded from `$KEEL_TEST_SEED`, else from the clock; prints the seed.
    pub fn from_env_or_clock() -> Rng {
        let seed = std::env::var("KEEL_TEST_SEED")
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(|| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                now.as_nanos() as u64
            });
        eprintln!("KEEL_TEST_SEED={seed}");
        Rng(keel_wal::memory::SplitMix64::new(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform enough in `low..high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        assert!(low < high, "an empty range {low}..{high}");
        low + self.0.below(high - low)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}
