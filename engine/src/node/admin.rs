//! Commands about the connection and the node rather than keys: PING, ECHO,
//! SELECT, AUTH, HELLO, QUIT, RESET, CONFIG, FUNCTION, COMMAND, CLIENT, and INFO's
//! text.

use std::fmt::Write as _;

use crate::command::{self, CommandSpec};
use crate::config::{FsyncPolicy, ServeConfig};
use crate::metrics::NodeMetrics;
use crate::node::auth::{self, ConnectionAuth};
use crate::node::cluster::{self, ShardProgress};
use crate::node::shard::ShardStats;
use crate::node::NodeShared;
use crate::resp::{Protocol, Reply};

/// SCAN's COUNT unless given, as Redis.
pub const SCAN_COUNT_DEFAULT: usize = 10;
/// Largest client name or library field, in bytes.
pub const CLIENT_FIELD_BYTES_MAX: usize = 256;

/// One open connection, as CLIENT LIST shows it.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    pub id: u64,
    pub peer: String,
    pub name: Option<String>,
    pub lib_name: Option<String>,
    pub lib_ver: Option<String>,
    pub protocol: Protocol,
    /// Whether the connection has given the password (if one is needed).
    pub auth: ConnectionAuth,
    pub connected_unix_ms: u64,
    pub last_command_unix_ms: u64,
    /// READONLY: the connection's reads may be served from this node's copy
    /// of a shard it follows (stale); READWRITE clears it.
    pub readonly: bool,
    /// Whether the connection spoke Redis Cluster (CLUSTER, READONLY,
    /// READWRITE, ASKING): a command for a shard another member leads is
    /// then answered `-MOVED`, which it follows, rather than forwarded.
    pub cluster_aware: bool,
    /// The shards the connection sent writes to (WAIT counts the followers
    /// holding them); at most the node's shard count.
    pub written: std::collections::BTreeSet<u32>,
    /// Where its keyed commands ran lately (whether to move it there).
    pub affinity: crate::node::affinity::Affinity,
}

impl ClientInfo {
    fn line(&self, now_unix_ms: u64) -> String {
        format!(
            "id={} addr={} laddr= fd=0 name={} age={} idle={} flags={} db=0 sub=0 psub=0 ssub=0 multi=-1 watch=0 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=client|list user=default redir=-1 resp={} lib-name={} lib-ver={}",
            self.id,
            self.peer,
            self.name.as_deref().unwrap_or(""),
            now_unix_ms.saturating_sub(self.connected_unix_ms) / 1000,
            now_unix_ms.saturating_sub(self.last_command_unix_ms) / 1000,
            // Redis's flags: `r` for a READONLY cluster client, else `N`.
            if self.readonly { "r" } else { "N" },
            match self.protocol {
                Protocol::Resp2 => 2,
                Protocol::Resp3 => 3,
            },
            self.lib_name.as_deref().unwrap_or(""),
            self.lib_ver.as_deref().unwrap_or(""),
        )
    }
}

/// SCAN's arguments after the cursor.
#[derive(Debug)]
pub struct ScanArgs {
    pub cursor: u64,
    pub count: usize,
    pub pattern: Option<Vec<u8>>,
}

impl ScanArgs {
    pub fn parse(args: &[Vec<u8>]) -> Result<ScanArgs, Reply> {
        let cursor = std::str::from_utf8(&args[1])
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| Reply::Error("ERR invalid cursor".into()))?;
        let mut scan = ScanArgs {
            cursor,
            count: SCAN_COUNT_DEFAULT,
            pattern: None,
        };
        let mut rest = args[2..].chunks(2);
        for pair in &mut rest {
            let [option, value] = pair else {
                return Err(syntax_error());
            };
            if option.eq_ignore_ascii_case(b"match") {
                scan.pattern = Some(value.clone());
            } else if option.eq_ignore_ascii_case(b"count") {
                scan.count = match std::str::from_utf8(value)
                    .ok()
                    .and_then(|text| text.parse::<i64>().ok())
                {
                    Some(count) if count >= 1 => count as usize,
                    Some(_) => return Err(syntax_error()),
                    None => {
                        return Err(Reply::Error(
                            "ERR value is not an integer or out of range".into(),
                        ))
                    }
                };
            } else if option.eq_ignore_ascii_case(b"type") {
                if !value.eq_ignore_ascii_case(b"string") {
                    scan.pattern = Some(Vec::new());
                    scan.count = 1;
                }
            } else {
                return Err(syntax_error());
            }
        }
        Ok(scan)
    }
}

fn syntax_error() -> Reply {
    Reply::Error("ERR syntax error".into())
}

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// PING, ECHO, SELECT, AUTH, HELLO, QUIT, RESET, CONFIG, FUNCTION, COMMAND, CLIENT.
pub fn connection_command(
    node: &NodeShared,
    client: &mut ClientInfo,
    spec: &CommandSpec,
    args: &[Vec<u8>],
    now_unix_ms: u64,
) -> Reply {
    match spec.name {
        // PING's arity is -1, and PING itself refuses more than a message.
        "ping" => match args {
            [_] => Reply::Simple("PONG".into()),
            [_, message] => Reply::Bulk(message.clone()),
            _ => command::wrong_arity("ping"),
        },
        "echo" => Reply::Bulk(args[1].clone()),
        "select" => match std::str::from_utf8(&args[1])
            .ok()
            .and_then(|db| db.parse::<i64>().ok())
        {
            Some(0) => ok(),
            Some(_) => Reply::Error("ERR DB index is out of range".into()),
            None => Reply::Error("ERR value is not an integer or out of range".into()),
        },
        "quit" => ok(),
        "auth" => {
            let logged_in = client
                .auth
                .auth_command(node.config.requirepass.as_ref(), args);
            match logged_in {
                Ok(()) => {
                    node.update_client(client);
                    ok()
                }
                Err(refused) => refused_auth(node, refused),
            }
        }
        "reset" => {
            client.protocol = Protocol::Resp2;
            client.name = None;
            // As Redis: RESET logs the connection out when a password is set.
            client.auth = ConnectionAuth::new(node.config.requirepass.as_ref());
            node.update_client(client);
            Reply::Simple("RESET".into())
        }
        "hello" => hello(node, client, args),
        "config" => config(node, args),
        "function" => function(args),
        "command" => command::command_reply(&args[1..]),
        "client" => client_command(node, client, args, now_unix_ms),
        other => unreachable!("{other} is not a connection command"),
    }
}

fn hello(node: &NodeShared, client: &mut ClientInfo, args: &[Vec<u8>]) -> Reply {
    let mut protocol = client.protocol;
    let mut rest = &args[1..];
    if let Some((version, after)) = rest.split_first() {
        protocol = match std::str::from_utf8(version)
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
        {
            Some(2) => Protocol::Resp2,
            Some(3) => Protocol::Resp3,
            Some(_) => return Reply::Error("NOPROTO unsupported protocol version".into()),
            None => {
                return Reply::Error(
                    "ERR Protocol version is not an integer or out of range".into(),
                )
            }
        };
        rest = after;
    }
    // As Redis 7.0: options are taken in order, and an AUTH option logs in
    // (or fails) as soon as it is read, before a later option's syntax error.
    let mut name = None;
    while let Some((option, after)) = rest.split_first() {
        if option.eq_ignore_ascii_case(b"auth") && after.len() >= 2 {
            let required = node.config.requirepass.as_ref();
            if let Err(refused) = client.auth.log_in(required, &after[0], &after[1]) {
                return refused_auth(node, refused);
            }
            rest = &after[2..];
        } else if option.eq_ignore_ascii_case(b"setname") && !after.is_empty() {
            name = Some(after[0].clone());
            rest = &after[1..];
        } else {
            return Reply::Error(format!(
                "ERR Syntax error in HELLO option '{}'",
                text(option)
            ));
        }
    }
    if !client.auth.is_authenticated() {
        return auth::hello_needs_auth();
    }
    if let Some(name) = name {
        if let Err(reply) = set_name(client, &name) {
            // Logged in by an AUTH option all the same, as Redis.
            node.update_client(client);
            return reply;
        }
    }
    client.protocol = protocol;
    node.update_client(client);
    let field = |key: &str, value: Reply| (Reply::Bulk(key.as_bytes().to_vec()), value);
    Reply::Map(vec![
        field("server", Reply::Bulk(b"keel".to_vec())),
        field(
            "version",
            Reply::Bulk(env!("CARGO_PKG_VERSION").as_bytes().to_vec()),
        ),
        field(
            "proto",
            Reply::Integer(if protocol == Protocol::Resp3 { 3 } else { 2 }),
        ),
        field("id", Reply::Integer(client.id as i64)),
        field("mode", Reply::Bulk(b"standalone".to_vec())),
        field("role", Reply::Bulk(b"master".to_vec())),
        field("modules", Reply::Array(Vec::new())),
    ])
}

/// A failed AUTH: counted (`acl_access_denied_auth` in INFO, a metric),
/// never logged, as the password tried may be a real one mistyped.
fn refused_auth(node: &NodeShared, refused: auth::AuthRefused) -> Reply {
    if refused == auth::AuthRefused::WrongPass {
        NodeMetrics::add(&node.metrics.auth_failures, 1);
    }
    refused.reply()
}

fn set_name(client: &mut ClientInfo, name: &[u8]) -> Result<(), Reply> {
    if name.len() > CLIENT_FIELD_BYTES_MAX || name.iter().any(|byte| *byte <= b' ' || *byte > b'~')
    {
        return Err(Reply::Error(
            "ERR Client names cannot contain spaces, newlines or special characters.".into(),
        ));
    }
    client.name = (!name.is_empty()).then(|| text(name));
    Ok(())
}

fn client_command(
    node: &NodeShared,
    client: &mut ClientInfo,
    args: &[Vec<u8>],
    now_unix_ms: u64,
) -> Reply {
    let sub = args[1].to_ascii_lowercase();
    let wrong_args = || {
        Reply::Error(format!(
            "ERR wrong number of arguments for 'client|{}' command",
            text(&sub)
        ))
    };
    match (sub.as_slice(), args.len()) {
        (b"id", 2) => Reply::Integer(client.id as i64),
        (b"getname", 2) => client
            .name
            .as_ref()
            .map_or(Reply::Null, |name| Reply::Bulk(name.clone().into_bytes())),
        (b"setname", 3) => match set_name(client, &args[2]) {
            Ok(()) => {
                node.update_client(client);
                ok()
            }
            Err(reply) => reply,
        },
        (b"setinfo", 4) => {
            let value = &args[3];
            if value.len() > CLIENT_FIELD_BYTES_MAX
                || value.iter().any(|byte| *byte < b' ' || *byte > b'~')
            {
                return Reply::Error(format!(
                    "ERR {} cannot contain spaces, newlines or special characters.",
                    text(&args[2])
                ));
            }
            let field = args[2].to_ascii_lowercase();
            match field.as_slice() {
                b"lib-name" => client.lib_name = Some(text(value)),
                b"lib-ver" => client.lib_ver = Some(text(value)),
                _ => return Reply::Error(format!("ERR Unrecognized option '{}'", text(&args[2]))),
            }
            node.update_client(client);
            ok()
        }
        (b"info", 2) => Reply::Bulk(format!("{}\n", client.line(now_unix_ms)).into_bytes()),
        (b"list", 2) => {
            let mut out = String::new();
            for info in node.clients() {
                let _ = writeln!(out, "{}", info.line(now_unix_ms));
            }
            Reply::Bulk(out.into_bytes())
        }
        (b"id" | b"getname" | b"setname" | b"setinfo" | b"info" | b"list", _) => wrong_args(),
        _ => unknown_subcommand("CLIENT", &args[1]),
    }
}

/// Redis 7's reply to a subcommand a container command does not have.
fn unknown_subcommand(command: &str, sub: &[u8]) -> Reply {
    Reply::Error(format!(
        "ERR unknown subcommand '{}'. Try {command} HELP.",
        text(sub)
    ))
}

/// The settings CONFIG GET shows, by their Redis names. All are fixed at
/// start-up (flags or `--config`).
fn settings(config: &ServeConfig) -> [(&'static str, String); 9] {
    [
        ("port", config.port.to_string()),
        ("bind", config.bind.to_string()),
        ("dir", config.dir.display().to_string()),
        ("databases", "1".to_string()),
        ("maxclients", config.connections_max.to_string()),
        (
            "proto-max-bulk-len",
            config.limits.value_bytes_max.to_string(),
        ),
        ("appendonly", "yes".to_string()),
        (
            "appendfsync",
            match config.fsync {
                FsyncPolicy::Always => "always".into(),
                FsyncPolicy::IntervalMs(ms) => format!("interval-ms={ms}"),
            },
        ),
        ("save", String::new()),
    ]
}

/// CONFIG GET with the settings Keel has; CONFIG SET refused as Redis
/// refuses a parameter it does not know or cannot change at run time.
/// `requirepass` is never among them: Redis shows it to an authenticated
/// client, Keel to nobody (a client that has it needs no reminder, and one
/// that reads it from a reply can leak it to a log), so `CONFIG GET
/// requirepass` is an empty map, as for a setting Keel lacks.
fn config(node: &NodeShared, args: &[Vec<u8>]) -> Reply {
    let sub = args[1].to_ascii_lowercase();
    match sub.as_slice() {
        b"get" if args.len() >= 3 => {
            let mut pairs = Vec::new();
            for (name, value) in settings(&node.config) {
                if args[2..].iter().any(|pattern| {
                    crate::keyspace::glob_match(&pattern.to_ascii_lowercase(), name.as_bytes())
                }) {
                    pairs.push((
                        Reply::Bulk(name.as_bytes().to_vec()),
                        Reply::Bulk(value.into_bytes()),
                    ));
                }
            }
            Reply::Map(pairs)
        }
        b"get" => command::wrong_arity("config|get"),
        b"set" => config_set(&node.config, &args[2..]),
        b"resetstat" | b"rewrite" => Reply::Error(format!(
            "ERR CONFIG {} is not supported: Keel's settings are fixed at start-up (flags or --config)",
            text(&args[1]).to_uppercase()
        )),
        _ => unknown_subcommand("CONFIG", &args[1]),
    }
}

/// CONFIG SET's answer, always a refusal, with Redis 7's texts: its first
/// parameter is either one Keel does not have (Redis's reply to a parameter
/// it does not know) or one of Keel's settings (Redis's reply to an
/// immutable one). Redis reports the first bad pair, and Keel's first pair
/// is always bad.
fn config_set(config: &ServeConfig, pairs: &[Vec<u8>]) -> Reply {
    let Some(name) = pairs.first().filter(|_| pairs.len() >= 2) else {
        return command::wrong_arity("config|set");
    };
    if pairs.len() % 2 == 1 {
        return syntax_error();
    }
    let known = settings(config)
        .iter()
        .any(|(setting, _)| name.eq_ignore_ascii_case(setting.as_bytes()));
    Reply::Error(if known {
        format!(
            "ERR CONFIG SET failed (possibly related to argument '{}') - can't set immutable config",
            text(name)
        )
    } else {
        format!(
            "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
            text(name)
        )
    })
}

/// FUNCTION, answered as Redis 7 answers it with no library loaded: Keel
/// runs no scripts, so it has no function engine and no library. FLUSH
/// succeeds with nothing to flush (Redis's test harness calls it before
/// every test server block), LIST and STATS show nothing, DELETE finds no
/// library, KILL no running function, and LOAD no engine for the library's
/// `#!<engine>` line. DUMP, RESTORE and HELP are not there.
fn function(args: &[Vec<u8>]) -> Reply {
    let sub = args[1].to_ascii_lowercase();
    let rest = &args[2..];
    let wrong_args = || command::wrong_arity(&format!("function|{}", text(&sub)));
    match (sub.as_slice(), rest) {
        (b"flush", []) => ok(),
        (b"flush", [mode])
            if mode.eq_ignore_ascii_case(b"sync") || mode.eq_ignore_ascii_case(b"async") =>
        {
            ok()
        }
        (b"flush", [_]) => {
            Reply::Error("ERR FUNCTION FLUSH only supports SYNC|ASYNC option".into())
        }
        (b"flush", _) => Reply::Error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try FUNCTION HELP.",
            text(&args[1])
        )),
        (b"list", options) => function_list(options),
        (b"stats", []) => {
            let field = |key: &str, value: Reply| (Reply::Bulk(key.as_bytes().to_vec()), value);
            Reply::Map(vec![
                field("running_script", Reply::Null),
                field("engines", Reply::Map(Vec::new())),
            ])
        }
        (b"delete", [_]) => Reply::Error("ERR Library not found".into()),
        (b"kill", []) => Reply::Error("NOTBUSY No scripts in execution right now.".into()),
        (b"load", [options @ .., code]) => function_load(options, code),
        (b"stats" | b"delete" | b"kill" | b"load", _) => wrong_args(),
        _ => unknown_subcommand("FUNCTION", &args[1]),
    }
}

/// FUNCTION LIST [WITHCODE] [LIBRARYNAME pattern]: its options are checked
/// as Redis checks them (each at most once); the list is empty.
fn function_list(options: &[Vec<u8>]) -> Reply {
    let (mut with_code, mut library_name) = (false, false);
    let mut rest = options;
    while let Some((option, after)) = rest.split_first() {
        rest = after;
        if !with_code && option.eq_ignore_ascii_case(b"withcode") {
            with_code = true;
        } else if !library_name && option.eq_ignore_ascii_case(b"libraryname") {
            let Some((_pattern, after)) = rest.split_first() else {
                return Reply::Error("ERR library name argument was not given".into());
            };
            library_name = true;
            rest = after;
        } else {
            return Reply::Error(format!("ERR Unknown argument {}", text(option)));
        }
    }
    Reply::Array(Vec::new())
}

/// FUNCTION LOAD [REPLACE] code: refused as Redis refuses a library whose
/// engine it does not have. (Redis checks the rest of the `#!` line first;
/// with no engine, no library could load whatever that line says.)
fn function_load(options: &[Vec<u8>], code: &[u8]) -> Reply {
    if let Some(option) = options
        .iter()
        .find(|option| !option.eq_ignore_ascii_case(b"replace"))
    {
        return Reply::Error(format!("ERR Unknown option given: {}", text(option)));
    }
    let Some(metadata) = code.strip_prefix(b"#!") else {
        return Reply::Error("ERR Missing library metadata".into());
    };
    let Some(line_end) = metadata.iter().position(|byte| *byte == b'\n') else {
        return Reply::Error("ERR Invalid library metadata".into());
    };
    let engine = metadata[..line_end]
        .split(|byte| *byte == b' ')
        .next()
        .unwrap_or_default();
    Reply::Error(format!("ERR Engine '{}' not found", text(engine)))
}

/// INFO [section ...]: server, clients, memory, persistence, stats,
/// replication, cluster, keyspace.
pub fn info(
    node: &NodeShared,
    shards: &[ShardStats],
    progress: &[ShardProgress],
    sections: &[Vec<u8>],
    now_unix_ms: u64,
) -> Reply {
    let wanted = |name: &str| {
        sections.is_empty()
            || sections.iter().any(|section| {
                let section = section.to_ascii_lowercase();
                section == name.as_bytes()
                    || section == b"all"
                    || section == b"everything"
                    || section == b"default"
            })
    };
    let metrics = &node.metrics;
    let config = &node.config;
    let mut out = String::new();
    if wanted("server") {
        let uptime = now_unix_ms.saturating_sub(node.started_unix_ms) / 1000;
        let _ = write!(
            out,
            "# Server\r\nredis_version:7.0.0\r\nkeel_version:{}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:64\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\nexecutor_cores:{}\r\nshards:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            node.run_id,
            config.port,
            uptime / 86_400,
            config.cores,
            node.shard_count,
        );
    }
    if wanted("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n\r\n",
            node.clients().len(),
            config.connections_max
        );
    }
    if wanted("memory") {
        let used: u64 = shards.iter().map(|shard| shard.data_bytes).sum();
        let _ = write!(
            out,
            "# Memory\r\nused_memory:{used}\r\nused_memory_dataset:{used}\r\n\r\n"
        );
    }
    if wanted("persistence") {
        let lag: u64 = shards
            .iter()
            .map(|shard| shard.last_index.saturating_sub(shard.durable_index))
            .sum();
        let oldest = shards
            .iter()
            .map(|shard| shard.snapshot_unix_ms.unwrap_or(node.started_unix_ms))
            .min()
            .unwrap_or(now_unix_ms);
        let pause = shards
            .iter()
            .map(|shard| shard.snapshot_pause_us_last)
            .max()
            .unwrap_or(0);
        let failed = shards.iter().find_map(|shard| shard.failure.clone());
        let _ = write!(
            out,
            "# Persistence\r\nloading:0\r\naof_enabled:1\r\nwal_fsync:{}\r\nwal_bytes_written:{}\r\nwal_group_commits:{}\r\nwal_entries_written:{}\r\nwal_fsync_avg_us:{}\r\nwal_durability_lag_entries:{lag}\r\nwal_failed:{}\r\nsnapshots_written:{}\r\nsnapshot_age_seconds:{}\r\nsnapshot_last_pause_us:{pause}\r\nrdb_changes_since_last_save:{}\r\n",
            config.fsync,
            NodeMetrics::get(&metrics.wal_bytes),
            metrics.fsync_us.count(),
            NodeMetrics::get(&metrics.writes),
            metrics.fsync_us.sum().checked_div(metrics.fsync_us.count()).unwrap_or(0),
            failed.as_deref().unwrap_or("no"),
            NodeMetrics::get(&metrics.snapshots),
            now_unix_ms.saturating_sub(oldest) / 1000,
            shards.iter().map(|shard| shard.last_index.saturating_sub(shard.snapshot_index)).sum::<u64>(),
        );
        for shard in shards {
            let _ = write!(
                out,
                "shard{}:last_index={},durable_index={},snapshot_index={},snapshot_bytes={},wal_bytes_since_snapshot={}\r\n",
                shard.shard, shard.last_index, shard.durable_index, shard.snapshot_index, shard.snapshot_bytes, shard.wal_bytes_since_snapshot
            );
        }
        out.push_str("\r\n");
    }
    if wanted("stats") {
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\nrejected_connections:{}\r\nconnections_moved:{}\r\ntotal_commands_processed:{}\r\nexpired_keys:{}\r\nprotocol_errors:{}\r\nacl_access_denied_auth:{}\r\n\r\n",
            NodeMetrics::get(&metrics.connections_accepted),
            NodeMetrics::get(&metrics.connections_refused),
            NodeMetrics::get(&metrics.connections_moved),
            NodeMetrics::get(&metrics.commands),
            NodeMetrics::get(&metrics.expired_keys),
            NodeMetrics::get(&metrics.protocol_errors),
            NodeMetrics::get(&metrics.auth_failures),
        );
    }
    if wanted("replication") {
        cluster::replication_section(&node.topology.get(), progress, &mut out);
    }
    if wanted("cluster") {
        cluster::cluster_section(&mut out);
    }
    if wanted("keyspace") {
        out.push_str("# Keyspace\r\n");
        let keys: u64 = shards.iter().map(|shard| shard.keys).sum();
        let expires: u64 = shards.iter().map(|shard| shard.expires).sum();
        if keys > 0 {
            let _ = write!(out, "db0:keys={keys},expires={expires},avg_ttl=0\r\n");
        }
        out.push_str("\r\n");
    }
    // Redis ends INFO with one line end, not the blank line between sections.
    let end = out.trim_end_matches("\r\n").len();
    out.truncate(end);
    out.push_str("\r\n");
    Reply::Bulk(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{Member, NodeName, Topology};

    fn args(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|word| word.as_bytes().to_vec()).collect()
    }

    fn error(text: &str) -> Reply {
        Reply::Error(text.into())
    }

    /// Runs a connection command as the node loop does, on a node with the
    /// default settings.
    fn run(words: &[&str]) -> Reply {
        let config = ServeConfig::resolve(&Default::default(), 1).expect("the defaults are valid");
        let myself = Member::alone(NodeName::of_ids(0, 0), config.bind, config.port);
        let topology = Topology::single_node(myself, 1);
        let node = NodeShared::new(config, 1, String::new(), 0, 0, topology);
        let mut client = ClientInfo {
            id: 1,
            peer: "test".into(),
            name: None,
            lib_name: None,
            lib_ver: None,
            protocol: Protocol::Resp2,
            connected_unix_ms: 0,
            last_command_unix_ms: 0,
            readonly: false,
            written: Default::default(),
            cluster_aware: false,
            auth: ConnectionAuth::new(node.config.requirepass.as_ref()),
            affinity: Default::default(),
        };
        let args = args(words);
        let spec = command::lookup(&args[0]).expect("a command of the table");
        command::check_arity(spec, args.len()).map_or_else(
            |reply| reply,
            |()| connection_command(&node, &mut client, spec, &args, 0),
        )
    }

    /// Redis's unit/protocol "Generic wrong number of args".
    #[test]
    fn ping_takes_at_most_a_message() {
        assert_eq!(run(&["PING"]), Reply::Simple("PONG".into()));
        assert_eq!(run(&["ping", "hi"]), Reply::Bulk(b"hi".to_vec()));
        for extra in [&["PING", "a", "b"][..], &["ping", "x", "y", "z"]] {
            assert_eq!(
                run(extra),
                error("ERR wrong number of arguments for 'ping' command")
            );
        }
    }

    /// Redis's test harness runs FUNCTION FLUSH before every server block:
    /// Keel answers FUNCTION as Redis 7 does with no library loaded.
    #[test]
    fn function_answers_as_a_server_without_libraries() {
        for flush in [
            &["FUNCTION", "FLUSH"][..],
            &["function", "flush", "async"],
            &["FUNCTION", "FLUSH", "SYNC"],
        ] {
            assert_eq!(run(flush), Reply::ok(), "{flush:?}");
        }
        assert_eq!(
            run(&["FUNCTION", "FLUSH", "later"]),
            error("ERR FUNCTION FLUSH only supports SYNC|ASYNC option")
        );
        assert_eq!(
            run(&["FUNCTION", "FLUSH", "SYNC", "ASYNC"]),
            error("ERR unknown subcommand or wrong number of arguments for 'FLUSH'. Try FUNCTION HELP.")
        );
        assert_eq!(run(&["FUNCTION", "LIST"]), Reply::Array(Vec::new()));
        assert_eq!(
            run(&["FUNCTION", "LIST", "WITHCODE", "LIBRARYNAME", "lib*"]),
            Reply::Array(Vec::new())
        );
        assert_eq!(
            run(&["FUNCTION", "LIST", "LIBRARYNAME"]),
            error("ERR library name argument was not given")
        );
        assert_eq!(
            run(&["FUNCTION", "LIST", "WITHCODE", "withcode"]),
            error("ERR Unknown argument withcode")
        );
        let Reply::Map(stats) = run(&["FUNCTION", "STATS"]) else {
            panic!("FUNCTION STATS is a map");
        };
        assert_eq!(
            stats,
            vec![
                (Reply::Bulk(b"running_script".to_vec()), Reply::Null),
                (Reply::Bulk(b"engines".to_vec()), Reply::Map(Vec::new())),
            ]
        );
        assert_eq!(
            run(&["FUNCTION", "DELETE", "lib"]),
            error("ERR Library not found")
        );
        assert_eq!(
            run(&["FUNCTION", "KILL"]),
            error("NOTBUSY No scripts in execution right now.")
        );
        assert_eq!(
            run(&["FUNCTION", "DUMP"]),
            error("ERR unknown subcommand 'DUMP'. Try FUNCTION HELP.")
        );
        assert_eq!(
            run(&["FUNCTION", "STATS", "x"]),
            error("ERR wrong number of arguments for 'function|stats' command")
        );
        assert_eq!(
            run(&["FUNCTION"]),
            error("ERR wrong number of arguments for 'function' command")
        );
    }

    #[test]
    fn function_load_finds_no_engine() {
        let library = "#!lua name=mylib\nredis.register_function('f', function() return 1 end)";
        assert_eq!(
            run(&["FUNCTION", "LOAD", library]),
            error("ERR Engine 'lua' not found")
        );
        assert_eq!(
            run(&["FUNCTION", "LOAD", "REPLACE", library]),
            error("ERR Engine 'lua' not found")
        );
        assert_eq!(
            run(&["FUNCTION", "LOAD", "AGAIN", library]),
            error("ERR Unknown option given: AGAIN")
        );
        assert_eq!(
            run(&["FUNCTION", "LOAD", "return 1"]),
            error("ERR Missing library metadata")
        );
        assert_eq!(
            run(&["FUNCTION", "LOAD", "#!lua name=x"]),
            error("ERR Invalid library metadata")
        );
        assert_eq!(
            run(&["FUNCTION", "LOAD"]),
            error("ERR wrong number of arguments for 'function|load' command")
        );
    }

    #[test]
    fn config_set_is_refused_with_redis_texts() {
        assert_eq!(
            run(&["CONFIG", "SET", "maxmemory", "1"]),
            error("ERR Unknown option or number of arguments for CONFIG SET - 'maxmemory'")
        );
        assert_eq!(
            run(&["CONFIG", "SET", "Port", "1", "maxmemory", "1"]),
            error("ERR CONFIG SET failed (possibly related to argument 'Port') - can't set immutable config")
        );
        assert_eq!(
            run(&["CONFIG", "SET", "port", "1", "appendonly"]),
            error("ERR syntax error")
        );
        assert_eq!(
            run(&["CONFIG", "SET", "port"]),
            error("ERR wrong number of arguments for 'config|set' command")
        );
        // What CONFIG GET shows is what CONFIG SET calls immutable.
        let Reply::Map(shown) = run(&["CONFIG", "GET", "*"]) else {
            panic!("CONFIG GET is a map");
        };
        assert_eq!(shown.len(), 9);
        for (name, _) in shown {
            let Reply::Bulk(name) = name else {
                panic!("a name is a bulk string");
            };
            let name = String::from_utf8(name).unwrap();
            let Reply::Error(refusal) = run(&["CONFIG", "SET", &name, "x"]) else {
                panic!("CONFIG SET {name} is refused");
            };
            assert!(refusal.ends_with("can't set immutable config"), "{refusal}");
        }
        assert_eq!(
            run(&["CONFIG", "REWRITE"]),
            error("ERR CONFIG REWRITE is not supported: Keel's settings are fixed at start-up (flags or --config)")
        );
        assert_eq!(
            run(&["CONFIG", "NOPE"]),
            error("ERR unknown subcommand 'NOPE'. Try CONFIG HELP.")
        );
    }
}
