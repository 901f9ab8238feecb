use crate::keyspace::Keyspace;
use crate::limits::Limits;
use crate::operation::Operation;
use crate::resp::Reply;
#[derive(Debug)]
pub struct CommandSpec {
    pub name: &'static str,
    pub arity: i32,
    pub keyed: bool,
}
static SPECS: &[CommandSpec] = &[
    CommandSpec {
        name: "get",
        arity: 2,
        keyed: true,
    },
    CommandSpec {
        name: "set",
        arity: -3,
        keyed: true,
    },
    CommandSpec {
        name: "ping",
        arity: -1,
        keyed: false,
    },
    CommandSpec {
        name: "dbsize",
        arity: 1,
        keyed: false,
    },
    CommandSpec {
        name: "command",
        arity: -1,
        keyed: false,
    },
    CommandSpec {
        name: "info",
        arity: -1,
        keyed: false,
    },
    CommandSpec {
        name: "flushall",
        arity: -1,
        keyed: false,
    },
    CommandSpec {
        name: "quit",
        arity: 1,
        keyed: false,
    },
    CommandSpec {
        name: "hello",
        arity: -1,
        keyed: false,
    },
    CommandSpec {
        name: "client",
        arity: -2,
        keyed: false,
    },
    CommandSpec {
        name: "config",
        arity: -2,
        keyed: false,
    },
    CommandSpec {
        name: "scan",
        arity: -2,
        keyed: false,
    },
    CommandSpec {
        name: "keys",
        arity: 2,
        keyed: false,
    },
];
pub struct Outcome {
    pub reply: Reply,
    pub op: Option<Operation>,
}
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    SPECS
        .iter()
        .find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
}
pub fn unknown_command(args: &[Vec<u8>]) -> Reply {
    Reply::Error(format!(
        "ERR unknown command '{}'",
        String::from_utf8_lossy(&args[0])
    ))
}
pub fn check_arity(spec: &CommandSpec, argc: usize) -> Result<(), Reply> {
    let ok = if spec.arity >= 0 {
        argc == spec.arity as usize
    } else {
        argc >= (-spec.arity) as usize
    };
    if ok {
        Ok(())
    } else {
        Err(Reply::Error(format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name
        )))
    }
}
pub fn is_keyed(spec: &CommandSpec) -> bool {
    spec.keyed
}
pub fn key_indexes(_spec: &CommandSpec, _args: &[Vec<u8>]) -> Vec<usize> {
    vec![1]
}
pub fn command_reply(_args: &[Vec<u8>]) -> Reply {
    Reply::Array(vec![])
}
pub fn execute(ks: &Keyspace, args: &[Vec<u8>], now: u64, _l: &Limits) -> Outcome {
    if args[0].eq_ignore_ascii_case(b"get") {
        return Outcome {
            reply: ks
                .get(&args[1], now)
                .map_or(Reply::Null, |i| Reply::Bulk(i.value.to_vec())),
            op: None,
        };
    }
    Outcome {
        reply: Reply::Simple("OK".into()),
        op: Some(Operation::Set {
            key: args[1].clone(),
            value: args[2].clone(),
            expire_at_unix_ms: None,
        }),
    }
}
