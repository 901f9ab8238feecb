//! `COMMAND` and its subcommands, answered from the command table in Redis
//! 7's shapes (redis-cli reads `COMMAND DOCS` at start-up to build its help).

use super::table::COMMANDS;
use super::{
    arity_fits, check_arity, key_indexes, lookup, unknown_subcommand, wrong_arity, CommandSpec,
    SYNTAX_ERROR,
};
use crate::keyspace::glob_match;
use crate::resp::Reply;

const HELP: &[&str] = &[
    "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "(no subcommand)",
    "    Return details about all Redis commands.",
    "COUNT",
    "    Return the total number of commands in this Redis server.",
    "LIST",
    "    Return a list of all commands in this Redis server.",
    "INFO [<command-name> ...]",
    "    Return details about multiple Redis commands.",
    "    If no command names are given, documentation details for all",
    "    commands are returned.",
    "DOCS [<command-name> ...]",
    "    Return documentation details about multiple Redis commands.",
    "    If no command names are given, documentation details for all",
    "    commands are returned.",
    "GETKEYS <full-command>",
    "    Return the keys from a full Redis command.",
    "HELP",
    "    Print this help.",
];

/// Answers `COMMAND [COUNT | LIST | INFO | DOCS | GETKEYS | HELP ...]`;
/// `args` are those after `COMMAND`.
pub fn command_reply(args: &[Vec<u8>]) -> Reply {
    let Some((subcommand, rest)) = args.split_first() else {
        return Reply::Array(COMMANDS.iter().map(info).collect());
    };
    let lowercase = subcommand.to_ascii_lowercase();
    let (arity, full_name) = match lowercase.as_slice() {
        b"count" => (2, "command|count"),
        b"list" => (-2, "command|list"),
        b"info" => (-2, "command|info"),
        b"docs" => (-2, "command|docs"),
        b"getkeys" => (-3, "command|getkeys"),
        b"help" => (2, "command|help"),
        _ => return unknown_subcommand("COMMAND", subcommand),
    };
    // The subcommand's arity counts COMMAND itself, as Redis's does.
    if !arity_fits(arity, args.len() + 1) {
        return wrong_arity(full_name);
    }
    match lowercase.as_slice() {
        b"count" => Reply::Integer(COMMANDS.len() as i64),
        b"list" => list(rest),
        b"info" if rest.is_empty() => Reply::Array(COMMANDS.iter().map(info).collect()),
        b"info" => Reply::Array(
            rest.iter()
                .map(|name| lookup(name).map_or(Reply::Null, info))
                .collect(),
        ),
        b"docs" if rest.is_empty() => Reply::Map(COMMANDS.iter().map(docs).collect()),
        b"docs" => Reply::Map(
            rest.iter()
                .filter_map(|name| lookup(name))
                .map(docs)
                .collect(),
        ),
        b"getkeys" => getkeys(rest),
        _ => Reply::Array(
            HELP.iter()
                .map(|line| Reply::Simple((*line).to_owned()))
                .collect(),
        ),
    }
}

fn names(specs: &[&CommandSpec]) -> Reply {
    Reply::Array(
        specs
            .iter()
            .map(|spec| Reply::Bulk(spec.name.as_bytes().to_vec()))
            .collect(),
    )
}

/// `COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN pattern]`.
fn list(filter: &[Vec<u8>]) -> Reply {
    let all: Vec<&CommandSpec> = COMMANDS.iter().collect();
    let [filterby, kind, value] = filter else {
        return if filter.is_empty() {
            names(&all)
        } else {
            Reply::error(SYNTAX_ERROR)
        };
    };
    if !filterby.eq_ignore_ascii_case(b"filterby") {
        return Reply::error(SYNTAX_ERROR);
    }
    let kind = kind.to_ascii_lowercase();
    let kept: Vec<&CommandSpec> = match kind.as_slice() {
        b"module" => Vec::new(),
        b"aclcat" => {
            let category = [b"@".as_slice(), value].concat().to_ascii_lowercase();
            all.into_iter()
                .filter(|spec| spec.acl_categories.iter().any(|c| c.as_bytes() == category))
                .collect()
        }
        b"pattern" => all
            .into_iter()
            .filter(|spec| glob_match(value, spec.name.as_bytes()))
            .collect(),
        _ => return Reply::error(SYNTAX_ERROR),
    };
    names(&kept)
}

fn simple_strings(texts: &[&str]) -> Reply {
    Reply::Array(
        texts
            .iter()
            .map(|text| Reply::Simple((*text).to_owned()))
            .collect(),
    )
}

/// One `COMMAND INFO` entry: name, arity, flags, first key, last key, step,
/// ACL categories, tips, key specs and subcommands (the last three empty).
fn info(spec: &CommandSpec) -> Reply {
    Reply::Array(vec![
        Reply::Bulk(spec.name.as_bytes().to_vec()),
        Reply::Integer(i64::from(spec.arity)),
        simple_strings(spec.flags),
        Reply::Integer(i64::from(spec.keys.first)),
        Reply::Integer(i64::from(spec.keys.last)),
        Reply::Integer(i64::from(spec.keys.step)),
        simple_strings(spec.acl_categories),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
    ])
}

/// One `COMMAND DOCS` entry: the name, then a map of bulk strings (redis-cli
/// asserts that they are bulk strings, not simple ones).
fn docs(spec: &CommandSpec) -> (Reply, Reply) {
    let field = |name: &str, value: &str| {
        (
            Reply::Bulk(name.as_bytes().to_vec()),
            Reply::Bulk(value.as_bytes().to_vec()),
        )
    };
    let fields = vec![
        field("summary", spec.summary),
        field("since", spec.since),
        field("group", spec.group),
        field("complexity", spec.complexity),
    ];
    (
        Reply::Bulk(spec.name.as_bytes().to_vec()),
        Reply::Map(fields),
    )
}

/// `COMMAND GETKEYS command args...`: the keys the command would name.
fn getkeys(request: &[Vec<u8>]) -> Reply {
    let Some(spec) = lookup(&request[0]) else {
        return Reply::error("ERR Invalid command specified");
    };
    if check_arity(spec, request.len()).is_err() {
        return Reply::error("ERR Invalid number of arguments specified for command");
    }
    let indexes: Vec<usize> = key_indexes(spec, request).collect();
    if indexes.is_empty() {
        return Reply::error("ERR The command has no key arguments");
    }
    Reply::Array(
        indexes
            .into_iter()
            .map(|index| Reply::Bulk(request[index].clone()))
            .collect(),
    )
}
