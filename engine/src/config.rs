//! `keel serve`'s settings: flags, the TOML file with the same keys, and the
//! defaults, merged in that order of precedence (flag over file over default).

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::Args;
use serde::Deserialize;

use crate::cluster_config::{ClusterConfig, ClusterSettings};
use crate::limits::Limits;
use crate::secret::Secret;

/// Port of the Redis-protocol listener unless told otherwise (Redis's 6379 + 1000).
pub const PORT_DEFAULT: u16 = 7379;
/// Data directory unless told otherwise, relative to the working directory.
pub const DIR_DEFAULT: &str = "keel-data";
/// Open client connections beyond which new ones are refused (Redis's maxclients).
pub const CONNECTIONS_MAX_DEFAULT: usize = 10_000;
/// WAL bytes written since a shard's last snapshot that trigger the next one,
/// unless the last snapshot is larger (`shard::snapshot_due`). It bounds
/// the consensus group's in-memory log, which holds every entry since the
/// last snapshot: 256 MiB (the default before stop 20) let a node with
/// 100 MB of keys reach 766 MiB RSS after a restart; 64 MiB, 356 MiB
/// (docs/PERFORMANCE.md, "Not done yet").
pub const SNAPSHOT_WAL_BYTES_DEFAULT: u64 = 64 << 20;
/// Largest group-commit interval accepted by `--fsync interval-ms=N`.
pub const FSYNC_INTERVAL_MS_MAX: u64 = 60_000;
/// Most shards a data directory may have.
pub const SHARDS_MAX: u32 = 1024;

/// When a write is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After its WAL frame is fdatasync'ed: nothing acknowledged is ever lost.
    Always,
    /// At once; the WAL is fdatasync'ed every N ms, so a crash may lose the
    /// last N ms of acknowledged writes.
    IntervalMs(u64),
}

impl FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<FsyncPolicy, String> {
        if text == "always" {
            return Ok(FsyncPolicy::Always);
        }
        let invalid = || {
            format!("invalid fsync policy {text:?}: expected `always` or `interval-ms=N` (1..={FSYNC_INTERVAL_MS_MAX})")
        };
        let ms = text.strip_prefix("interval-ms=").ok_or_else(invalid)?;
        match ms.parse::<u64>() {
            Ok(ms) if (1..=FSYNC_INTERVAL_MS_MAX).contains(&ms) => Ok(FsyncPolicy::IntervalMs(ms)),
            _ => Err(invalid()),
        }
    }
}

/// Redis's protected mode: whether `keel serve` refuses an address that
/// other machines can reach while no password is set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProtectedMode {
    /// Refuse to start on a non-loopback address without `requirepass`.
    #[default]
    Yes,
    /// Serve anyone who reaches the port: for a trusted network only.
    No,
}

impl FromStr for ProtectedMode {
    type Err = String;

    fn from_str(text: &str) -> Result<ProtectedMode, String> {
        match text {
            "yes" => Ok(ProtectedMode::Yes),
            "no" => Ok(ProtectedMode::No),
            _ => Err(format!(
                "invalid protected mode {text:?}: expected `yes` or `no`"
            )),
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::IntervalMs(ms) => write!(f, "interval-ms={ms}"),
        }
    }
}

/// `keel serve` flags. Each may also be given in the `--config` file under
/// the same name with `_` for `-`.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// Data directory [default: ./keel-data].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Port for Redis-protocol clients [default: 7379].
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<IpAddr>,
    /// Executor threads, one per core [default: all cores].
    #[arg(long, value_name = "N")]
    pub cores: Option<usize>,
    /// `always` (acknowledge after fdatasync) or `interval-ms=N` [default: always].
    #[arg(long, value_name = "POLICY")]
    pub fsync: Option<FsyncPolicy>,
    /// A TOML file with any of these settings; flags win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Port for Prometheus metrics over HTTP [default: none].
    #[arg(long, value_name = "N")]
    pub metrics_port: Option<u16>,
    /// Shards of a new data directory (an existing one keeps its own) [default: --cores].
    #[arg(long, value_name = "N")]
    pub shards: Option<u32>,
    /// Largest value, in bytes [default: 536870912, Redis's proto-max-bulk-len].
    #[arg(long, value_name = "BYTES")]
    pub max_value_bytes: Option<usize>,
    /// Largest key, in bytes [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub max_key_bytes: Option<usize>,
    /// Most open client connections [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// WAL bytes since a shard's last snapshot that start the next, or the last
    /// snapshot's size if larger [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    pub snapshot_wal_bytes: Option<u64>,
    /// Size of each new WAL segment file, a multiple of 4096 [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    pub wal_segment_bytes: Option<u64>,
    /// Password clients must give with AUTH (or HELLO ... AUTH) before any
    /// other command [default: none]. A flag shows in `ps`: prefer the
    /// `--config` file.
    // A password may start with `-`: taken as the value, never reported
    // back by clap as an unknown flag (which would print it).
    #[arg(long, value_name = "PASSWORD", allow_hyphen_values = true)]
    pub requirepass: Option<Secret>,
    /// `no` lets Keel listen on a non-loopback --bind without --requirepass
    /// (a trusted network only) [default: yes].
    #[arg(long, value_name = "yes|no")]
    pub protected_mode: Option<ProtectedMode>,
    /// This node's id in --peers [default: none, a single node].
    #[arg(long, value_name = "N")]
    pub id: Option<u64>,
    /// Every member of the cluster, this node included, as
    /// ID=HOST:PEER_PORT,ID=HOST:PEER_PORT,... (at most 7) [default: none,
    /// a single node].
    #[arg(long, value_name = "LIST")]
    pub peers: Option<String>,
    /// Port peers connect to; core c listens on PEER_PORT + c [default:
    /// this node's port in --peers].
    #[arg(long, value_name = "N")]
    pub peer_port: Option<u16>,
    /// Name peers must share: the handshake refuses a node of another
    /// cluster [default: keel].
    #[arg(long, value_name = "NAME")]
    pub cluster_name: Option<String>,
}

/// The `--config` file: the flags' names, `_` for `-`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    dir: Option<PathBuf>,
    port: Option<u16>,
    bind: Option<IpAddr>,
    cores: Option<usize>,
    fsync: Option<String>,
    metrics_port: Option<u16>,
    shards: Option<u32>,
    max_value_bytes: Option<usize>,
    max_key_bytes: Option<usize>,
    max_connections: Option<usize>,
    snapshot_wal_bytes: Option<u64>,
    wal_segment_bytes: Option<u64>,
    requirepass: Option<Secret>,
    protected_mode: Option<String>,
    id: Option<u64>,
    peers: Option<String>,
    peer_port: Option<u16>,
    cluster_name: Option<String>,
}

/// Settings in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeConfig {
    pub dir: PathBuf,
    pub port: u16,
    pub bind: IpAddr,
    pub cores: usize,
    pub fsync: FsyncPolicy,
    pub metrics_port: Option<u16>,
    /// Shards for a new data directory.
    pub shards: u32,
    pub limits: Limits,
    pub connections_max: usize,
    pub snapshot_wal_bytes: u64,
    /// Size of each new WAL segment file.
    pub wal_segment_bytes: u64,
    /// The password clients must give; `None`: every connection may run
    /// every command. Its `Debug` prints `<redacted>`.
    pub requirepass: Option<Secret>,
    /// The cluster this node belongs to; `None`: a single node.
    pub cluster: Option<ClusterConfig>,
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("refusing to listen on {bind} without a password (protected mode): anyone who reaches the port could read and write every key. Set a password with `--requirepass` (or `requirepass` in the --config file), or listen on loopback only with `--bind 127.0.0.1`, or, on a trusted network only, turn protected mode off with `--protected-mode no`")]
    Unprotected { bind: IpAddr },
}

/// Whether only this machine can reach `bind`: 127.0.0.0/8, `::1`, or
/// either written as an IPv4-mapped IPv6 address.
pub fn is_loopback(bind: IpAddr) -> bool {
    bind.to_canonical().is_loopback()
}

/// Protected mode's decision: an address other machines can reach (the
/// unspecified `0.0.0.0` and `::` included) needs a password unless
/// protected mode is off. Redis in protected mode starts and then refuses
/// non-loopback clients; Keel refuses to start, so the mistake shows at once.
pub fn check_exposure(
    bind: IpAddr,
    has_password: bool,
    protected_mode: ProtectedMode,
) -> Result<(), ConfigError> {
    if is_loopback(bind) || has_password || protected_mode == ProtectedMode::No {
        Ok(())
    } else {
        Err(ConfigError::Unprotected { bind })
    }
}

impl ServeConfig {
    /// Merges flags, the config file they name, and the defaults.
    /// `cores_available` is the machine's core count.
    pub fn resolve(args: &ServeArgs, cores_available: usize) -> Result<ServeConfig, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let fsync = match (&args.fsync, &file.fsync) {
            (Some(policy), _) => *policy,
            (None, Some(text)) => text.parse().map_err(|reason| ConfigError::Invalid {
                key: "fsync",
                reason,
            })?,
            (None, None) => FsyncPolicy::Always,
        };
        let protected_mode = match (&args.protected_mode, &file.protected_mode) {
            (Some(mode), _) => *mode,
            (None, Some(text)) => text.parse().map_err(|reason| ConfigError::Invalid {
                key: "protected_mode",
                reason,
            })?,
            (None, None) => ProtectedMode::default(),
        };
        let cores = args.cores.or(file.cores).unwrap_or(cores_available);
        let port = args.port.or(file.port).unwrap_or(PORT_DEFAULT);
        let metrics_port = args.metrics_port.or(file.metrics_port);
        let cluster = ClusterSettings {
            id: args.id.or(file.id),
            peers: args.peers.clone().or(file.peers),
            peer_port: args.peer_port.or(file.peer_port),
            name: args.cluster_name.clone().or(file.cluster_name),
        }
        .resolve(cores, port, metrics_port)?;
        if let (Some(_), FsyncPolicy::IntervalMs(_)) = (&cluster, fsync) {
            // A majority must hold a write durably before it is acknowledged:
            // a member that acknowledges before its fsync could let a power
            // loss of a majority take an acknowledged write.
            return Err(ConfigError::Invalid {
                key: "fsync",
                reason: "interval-ms is a single-node option: a cluster member acknowledges only what is on its disk (use `always` with --peers)".into(),
            });
        }
        let defaults = Limits::default();
        let config = ServeConfig {
            dir: args
                .dir
                .clone()
                .or(file.dir)
                .unwrap_or_else(|| PathBuf::from(DIR_DEFAULT)),
            port,
            bind: args
                .bind
                .or(file.bind)
                .unwrap_or(IpAddr::from([127, 0, 0, 1])),
            cores,
            fsync,
            metrics_port,
            shards: args
                .shards
                .or(file.shards)
                .unwrap_or(u32::try_from(cores).unwrap_or(u32::MAX)),
            limits: Limits {
                key_bytes_max: args
                    .max_key_bytes
                    .or(file.max_key_bytes)
                    .unwrap_or(defaults.key_bytes_max),
                value_bytes_max: args
                    .max_value_bytes
                    .or(file.max_value_bytes)
                    .unwrap_or(defaults.value_bytes_max),
            },
            connections_max: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(CONNECTIONS_MAX_DEFAULT),
            snapshot_wal_bytes: args
                .snapshot_wal_bytes
                .or(file.snapshot_wal_bytes)
                .unwrap_or(SNAPSHOT_WAL_BYTES_DEFAULT),
            wal_segment_bytes: args
                .wal_segment_bytes
                .or(file.wal_segment_bytes)
                .unwrap_or(keel_wal::SEGMENT_BYTES_DEFAULT),
            requirepass: args.requirepass.clone().or(file.requirepass),
            cluster,
        };
        config.validate(cores_available)?;
        check_exposure(config.bind, config.requirepass.is_some(), protected_mode)?;
        Ok(config)
    }

    fn validate(&self, cores_available: usize) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        if self.cores == 0 || self.cores > cores_available.max(1) * 4 {
            return invalid(
                "cores",
                format!(
                    "{} is not between 1 and {} (4 per available core)",
                    self.cores,
                    cores_available.max(1) * 4
                ),
            );
        }
        if self.shards == 0 || self.shards > SHARDS_MAX {
            return invalid(
                "shards",
                format!("{} is not between 1 and {SHARDS_MAX}", self.shards),
            );
        }
        if self.limits.value_bytes_max == 0
            || self.limits.value_bytes_max > crate::limits::VALUE_BYTES_MAX_DEFAULT
        {
            return invalid(
                "max_value_bytes",
                format!(
                    "{} is not between 1 and {}",
                    self.limits.value_bytes_max,
                    crate::limits::VALUE_BYTES_MAX_DEFAULT
                ),
            );
        }
        if self.limits.key_bytes_max == 0 || self.limits.key_bytes_max > self.limits.value_bytes_max
        {
            return invalid(
                "max_key_bytes",
                format!(
                    "{} is not between 1 and max_value_bytes",
                    self.limits.key_bytes_max
                ),
            );
        }
        if self.connections_max == 0 {
            return invalid("max_connections", "must be at least 1".into());
        }
        if self.snapshot_wal_bytes < 1 << 20 {
            return invalid("snapshot_wal_bytes", "must be at least 1 MiB".into());
        }
        if let Err(error) = crate::node::wal_options(self.wal_segment_bytes).validate() {
            let reason = match error {
                keel_wal::WalError::InvalidOptions { reason } => reason.to_owned(),
                other => other.to_string(),
            };
            return invalid("wal_segment_bytes", reason);
        }
        if let Some(Err(error)) = self.requirepass.as_ref().map(Secret::check) {
            return invalid("requirepass", error.to_string());
        }
        if Some(self.port) == self.metrics_port {
            return invalid("metrics_port", "must differ from port".into());
        }
        Ok(())
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|error| ConfigError::Parse {
        path: path.to_owned(),
        message: error.message().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policies_parse_and_print_back() {
        assert_eq!("always".parse(), Ok(FsyncPolicy::Always));
        assert_eq!("interval-ms=10".parse(), Ok(FsyncPolicy::IntervalMs(10)));
        for bad in [
            "",
            "never",
            "interval-ms=0",
            "interval-ms=x",
            "interval-ms=60001",
        ] {
            assert!(bad.parse::<FsyncPolicy>().is_err(), "{bad}");
        }
        assert_eq!(FsyncPolicy::IntervalMs(5).to_string(), "interval-ms=5");
    }

    /// A cluster member acknowledges only what is on its disk.
    #[test]
    fn interval_fsync_is_refused_in_a_cluster() {
        let args = |fsync| ServeArgs {
            id: Some(1),
            peers: Some("1=127.0.0.1:7101,2=127.0.0.1:7201,3=127.0.0.1:7301".into()),
            peer_port: Some(7101),
            fsync: Some(fsync),
            ..ServeArgs::default()
        };
        assert!(ServeConfig::resolve(&args(FsyncPolicy::Always), 2).is_ok());
        assert!(matches!(
            ServeConfig::resolve(&args(FsyncPolicy::IntervalMs(10)), 2),
            Err(ConfigError::Invalid { key: "fsync", .. })
        ));
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel.toml");
        std::fs::write(
            &path,
            "port = 9000\ncores = 1\nfsync = \"interval-ms=5\"\ndir = \"/data\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            port: Some(9100),
            ..ServeArgs::default()
        };
        let config = ServeConfig::resolve(&args, 2).unwrap();
        assert_eq!(config.port, 9100);
        assert_eq!(config.cores, 1);
        assert_eq!(config.shards, 1);
        assert_eq!(config.fsync, FsyncPolicy::IntervalMs(5));
        assert_eq!(config.dir, PathBuf::from("/data"));
        assert_eq!(config.bind, IpAddr::from([127, 0, 0, 1]));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel.toml");
        std::fs::write(&path, "prot = 1\n").unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let error = ServeConfig::resolve(&args, 2).unwrap_err().to_string();
        assert!(error.contains("prot"), "{error}");
        std::fs::write(&path, "fsync = \"sometimes\"\n").unwrap();
        let error = ServeConfig::resolve(&args, 2).unwrap_err().to_string();
        assert!(error.contains("fsync"), "{error}");
        let args = ServeArgs {
            cores: Some(0),
            ..ServeArgs::default()
        };
        assert!(ServeConfig::resolve(&args, 2).is_err());
    }

    #[test]
    fn wal_segment_bytes_defaults_and_must_be_whole_blocks_above_the_minimum() {
        let config = ServeConfig::resolve(&ServeArgs::default(), 2).unwrap();
        assert_eq!(config.wal_segment_bytes, keel_wal::SEGMENT_BYTES_DEFAULT);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel.toml");
        std::fs::write(&path, "wal_segment_bytes = 32768\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        assert_eq!(
            ServeConfig::resolve(&args, 2).unwrap().wal_segment_bytes,
            32768
        );
        let block = keel_wal::BLOCK_BYTES as u64;
        for bad in [
            keel_wal::SEGMENT_BYTES_MIN + 1,
            keel_wal::SEGMENT_BYTES_MIN - block,
            0,
        ] {
            let args = ServeArgs {
                wal_segment_bytes: Some(bad),
                ..ServeArgs::default()
            };
            let error = ServeConfig::resolve(&args, 2).unwrap_err();
            assert!(
                matches!(
                    error,
                    ConfigError::Invalid {
                        key: "wal_segment_bytes",
                        ..
                    }
                ),
                "{bad}: {error}"
            );
        }
        let args = ServeArgs {
            wal_segment_bytes: Some(keel_wal::SEGMENT_BYTES_MIN),
            ..ServeArgs::default()
        };
        assert!(ServeConfig::resolve(&args, 2).is_ok());
    }

    #[test]
    fn requirepass_comes_from_the_flag_or_the_file_and_never_prints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel.toml");
        std::fs::write(&path, "requirepass = \"from-the-file\"\n").unwrap();
        let from_file = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let config = ServeConfig::resolve(&from_file, 2).unwrap();
        let secret = config.requirepass.clone().expect("a password");
        assert!(secret.verify(b"from-the-file"));
        let printed = format!("{config:?} {from_file:?}");
        assert!(!printed.contains("from-the-file"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
        let flag_wins = ServeArgs {
            config: Some(path),
            requirepass: Some("from-the-flag".parse().unwrap()),
            ..ServeArgs::default()
        };
        let config = ServeConfig::resolve(&flag_wins, 2).unwrap();
        assert!(config.requirepass.unwrap().verify(b"from-the-flag"));
        assert_eq!(
            ServeConfig::resolve(&ServeArgs::default(), 2)
                .unwrap()
                .requirepass,
            None
        );
    }

    #[test]
    fn an_empty_or_overlong_requirepass_is_refused_without_being_quoted() {
        for bad in [
            String::new(),
            "p".repeat(crate::secret::SECRET_BYTES_MAX + 1),
        ] {
            let args = ServeArgs {
                requirepass: Some(bad.parse().unwrap()),
                ..ServeArgs::default()
            };
            let error = ServeConfig::resolve(&args, 2).unwrap_err();
            assert!(
                matches!(
                    error,
                    ConfigError::Invalid {
                        key: "requirepass",
                        ..
                    }
                ),
                "{error}"
            );
            assert!(!error.to_string().contains("ppp"), "{error}");
        }
    }

    #[test]
    fn protected_mode_needs_a_password_or_loopback_or_an_explicit_no() {
        let loopbacks = ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"];
        let exposed = [
            "0.0.0.0",
            "::",
            "10.0.0.1",
            "192.168.1.20",
            "::ffff:10.0.0.1",
            "fe80::1",
        ];
        for text in loopbacks {
            let bind: IpAddr = text.parse().unwrap();
            assert!(is_loopback(bind), "{text}");
            assert!(
                check_exposure(bind, false, ProtectedMode::Yes).is_ok(),
                "{text}"
            );
        }
        for text in exposed {
            let bind: IpAddr = text.parse().unwrap();
            assert!(!is_loopback(bind), "{text}");
            let refused = check_exposure(bind, false, ProtectedMode::Yes).unwrap_err();
            assert!(matches!(refused, ConfigError::Unprotected { .. }), "{text}");
            assert!(
                check_exposure(bind, true, ProtectedMode::Yes).is_ok(),
                "{text}"
            );
            assert!(
                check_exposure(bind, false, ProtectedMode::No).is_ok(),
                "{text}"
            );
        }
    }

    #[test]
    fn resolve_refuses_an_exposed_bind_without_a_password_and_names_the_fixes() {
        let exposed = ServeArgs {
            bind: Some(IpAddr::from([0, 0, 0, 0])),
            ..ServeArgs::default()
        };
        let message = ServeConfig::resolve(&exposed, 2).unwrap_err().to_string();
        for fix in ["--requirepass", "--bind 127.0.0.1", "--protected-mode no"] {
            assert!(message.contains(fix), "{message}");
        }
        let with_password = ServeArgs {
            requirepass: Some("pw".parse().unwrap()),
            ..exposed
        };
        assert!(ServeConfig::resolve(&with_password, 2).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel.toml");
        std::fs::write(&path, "bind = \"0.0.0.0\"\nprotected_mode = \"no\"\n").unwrap();
        let file_says_no = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        assert!(ServeConfig::resolve(&file_says_no, 2).is_ok());
        std::fs::write(&path, "protected_mode = \"off\"\n").unwrap();
        let error = ServeConfig::resolve(&file_says_no, 2).unwrap_err();
        assert!(
            matches!(
                error,
                ConfigError::Invalid {
                    key: "protected_mode",
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!("no".parse(), Ok(ProtectedMode::No));
        assert_eq!("yes".parse(), Ok(ProtectedMode::Yes));
        assert!("NO".parse::<ProtectedMode>().is_err());
    }

    #[test]
    fn the_cluster_comes_from_the_flags_or_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel.toml");
        std::fs::write(
            &path,
            "id = 2\npeers = \"1=127.0.0.1:7400,2=127.0.0.1:7500\"\ncluster_name = \"prod\"\n",
        )
        .unwrap();
        let from_file = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        let cluster = ServeConfig::resolve(&from_file, 2)
            .unwrap()
            .cluster
            .expect("a cluster");
        assert_eq!((cluster.id, cluster.peer_port), (2, 7500));
        assert_eq!(cluster.name, "prod");
        let flag_wins = ServeArgs {
            id: Some(1),
            ..from_file
        };
        let cluster = ServeConfig::resolve(&flag_wins, 2)
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!((cluster.id, cluster.peer_port), (1, 7400));
        assert_eq!(
            ServeConfig::resolve(&ServeArgs::default(), 2)
                .unwrap()
                .cluster,
            None
        );
        let clash = ServeArgs {
            id: Some(1),
            peers: Some("1=127.0.0.1:7379".into()),
            ..ServeArgs::default()
        };
        let error = ServeConfig::resolve(&clash, 2).unwrap_err();
        assert!(
            matches!(
                error,
                ConfigError::Invalid {
                    key: "peer_port",
                    ..
                }
            ),
            "{error}"
        );
    }

    /// A password that starts with `-` is the flag's value: clap would
    /// otherwise report it as an unknown argument, printing it.
    #[test]
    fn a_requirepass_starting_with_a_dash_is_taken_as_the_value() {
        #[derive(clap::Parser)]
        struct Command {
            #[command(flatten)]
            serve: ServeArgs,
        }
        for password in ["-pw", "--pw", "-"] {
            let parsed =
                <Command as clap::Parser>::try_parse_from(["keel", "--requirepass", password])
                    .unwrap_or_else(|error| panic!("{password}: {error}"));
            let secret = parsed.serve.requirepass.expect("a password");
            assert!(secret.verify(password.as_bytes()), "{password}");
        }
    }
}
