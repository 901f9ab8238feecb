//! Commands about the connection and the node rather than keys: PING, ECHO,
//! SELECT, AUTH, HELLO, QUIT, RESET, CONFIG, COMMAND, CLIENT, and INFO's text.

use std::fmt::Write as _;

use crate::command::{self, CommandSpec};
use crate::config::FsyncPolicy;
use crate::metrics::NodeMetrics;
use crate::node::auth::{self, ConnectionAuth};
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
}

impl ClientInfo {
    fn line(&self, now_unix_ms: u64) -> String {
        format!(
            "id={} addr={} laddr= fd=0 name={} age={} idle={} flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 watch=0 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=client|list user=default redir=-1 resp={} lib-name={} lib-ver={}",
            self.id,
            self.peer,
            self.name.as_deref().unwrap_or(""),
            now_unix_ms.saturating_sub(self.connected_unix_ms) / 1000,
            now_unix_ms.saturating_sub(self.last_command_unix_ms) / 1000,
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

/// PING, ECHO, SELECT, AUTH, HELLO, QUIT, RESET, CONFIG, COMMAND, CLIENT.
pub fn connection_command(
    node: &NodeShared,
    client: &mut ClientInfo,
    spec: &CommandSpec,
    args: &[Vec<u8>],
    now_unix_ms: u64,
) -> Reply {
    match spec.name {
        "ping" => match args.get(1) {
            Some(message) => Reply::Bulk(message.clone()),
            None => Reply::Simple("PONG".into()),
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
        _ => Reply::Error(format!(
            "ERR unknown subcommand '{}'. Try CLIENT HELP.",
            text(&args[1])
        )),
    }
}

/// CONFIG GET with the settings Keel has; CONFIG SET is refused (settings are
/// fixed at start-up). `requirepass` is never among them: Redis shows it to
/// an authenticated client, Keel to nobody (a client that has it needs no
/// reminder, and one that reads it from a reply can leak it to a log), so
/// `CONFIG GET requirepass` is an empty map, as for a setting Keel lacks.
fn config(node: &NodeShared, args: &[Vec<u8>]) -> Reply {
    let sub = args[1].to_ascii_lowercase();
    match sub.as_slice() {
        b"get" if args.len() >= 3 => {
            let config = &node.config;
            let settings = [
                ("port", config.port.to_string()),
                ("bind", config.bind.to_string()),
                ("dir", config.dir.display().to_string()),
                ("databases", "1".to_string()),
                ("maxclients", config.connections_max.to_string()),
                ("proto-max-bulk-len", config.limits.value_bytes_max.to_string()),
                ("appendonly", "yes".to_string()),
                ("appendfsync", match config.fsync { FsyncPolicy::Always => "always".into(), FsyncPolicy::IntervalMs(ms) => format!("interval-ms={ms}") }),
                ("save", String::new()),
            ];
            let mut pairs = Vec::new();
            for (name, value) in settings {
                if args[2..].iter().any(|pattern| crate::keyspace::glob_match(&pattern.to_ascii_lowercase(), name.as_bytes())) {
                    pairs.push((Reply::Bulk(name.as_bytes().to_vec()), Reply::Bulk(value.into_bytes())));
                }
            }
            Reply::Map(pairs)
        }
        b"get" => Reply::Error("ERR wrong number of arguments for 'config|get' command".into()),
        b"set" | b"resetstat" | b"rewrite" => Reply::Error(format!(
            "ERR CONFIG {} is not supported: Keel's settings are fixed at start-up (flags or --config)",
            text(&args[1]).to_uppercase()
        )),
        _ => Reply::Error(format!("ERR unknown subcommand '{}'. Try CONFIG HELP.", text(&args[1]))),
    }
}

/// INFO [section ...]: server, clients, persistence, stats, keyspace.
pub fn info(
    node: &NodeShared,
    shards: &[ShardStats],
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
            .map(|shard| shard.last_index - shard.durable_index)
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
            shards.iter().map(|shard| shard.last_index - shard.snapshot_index).sum::<u64>(),
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
            "# Stats\r\ntotal_connections_received:{}\r\nrejected_connections:{}\r\ntotal_commands_processed:{}\r\nexpired_keys:{}\r\nprotocol_errors:{}\r\nacl_access_denied_auth:{}\r\n\r\n",
            NodeMetrics::get(&metrics.connections_accepted),
            NodeMetrics::get(&metrics.connections_refused),
            NodeMetrics::get(&metrics.commands),
            NodeMetrics::get(&metrics.expired_keys),
            NodeMetrics::get(&metrics.protocol_errors),
            NodeMetrics::get(&metrics.auth_failures),
        );
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
