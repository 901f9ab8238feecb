//! Every command Keel knows, sorted by name so [`lookup`] is a binary search
//! that compares bytes case-insensitively without allocating. Flags, ACL
//! categories, groups and versions are Redis 7's, so `COMMAND INFO` and
//! `COMMAND DOCS` answer as a Redis server would.

use std::cmp::Ordering;

use super::{bits, generic, lcs, strings, CommandSpec, KeyRange};

const NO_KEYS: KeyRange = KeyRange {
    first: 0,
    last: 0,
    step: 0,
};
const ONE_KEY: KeyRange = KeyRange {
    first: 1,
    last: 1,
    step: 1,
};
const TWO_KEYS: KeyRange = KeyRange {
    first: 1,
    last: 2,
    step: 1,
};
const ALL_KEYS: KeyRange = KeyRange {
    first: 1,
    last: -1,
    step: 1,
};
/// BITOP's destination and sources: every argument after the operator.
const AFTER_FIRST: KeyRange = KeyRange {
    first: 2,
    last: -1,
    step: 1,
};
/// OBJECT's key, after the subcommand (OBJECT HELP names none).
const SECOND: KeyRange = KeyRange {
    first: 2,
    last: 2,
    step: 1,
};
const KEY_VALUE_PAIRS: KeyRange = KeyRange {
    first: 1,
    last: -1,
    step: 2,
};

const READONLY: &[&str] = &["readonly"];
const READONLY_FAST: &[&str] = &["readonly", "fast"];
const WRITE: &[&str] = &["write"];
const WRITE_FAST: &[&str] = &["write", "fast"];
const WRITE_DENYOOM: &[&str] = &["write", "denyoom"];
const WRITE_DENYOOM_FAST: &[&str] = &["write", "denyoom", "fast"];
const FAST: &[&str] = &["fast"];
const LOADING_STALE: &[&str] = &["loading", "stale"];
const LOADING_STALE_FAST: &[&str] = &["loading", "stale", "fast"];
const NOSCRIPT: &[&str] = &["noscript"];
const TRANSACTION_CONTROL: &[&str] = &["noscript", "loading", "stale", "fast", "allow_busy"];
const TRANSACTION_EXEC: &[&str] = &["noscript", "loading", "stale", "skip_slowlog"];
const ANY_CLIENT_STATE: &[&str] = &[
    "noscript",
    "loading",
    "stale",
    "fast",
    "no_auth",
    "allow_busy",
];

const STRING_READ_FAST: &[&str] = &["@read", "@string", "@fast"];
const STRING_READ_SLOW: &[&str] = &["@read", "@string", "@slow"];
const STRING_WRITE_FAST: &[&str] = &["@write", "@string", "@fast"];
const STRING_WRITE_SLOW: &[&str] = &["@write", "@string", "@slow"];
const KEYSPACE_READ_FAST: &[&str] = &["@keyspace", "@read", "@fast"];
const KEYSPACE_READ_SLOW: &[&str] = &["@keyspace", "@read", "@slow"];
const KEYSPACE_WRITE_FAST: &[&str] = &["@keyspace", "@write", "@fast"];
const KEYSPACE_WRITE_SLOW: &[&str] = &["@keyspace", "@write", "@slow"];
const KEYSPACE_DANGEROUS_READ: &[&str] = &["@keyspace", "@read", "@slow", "@dangerous"];
const KEYSPACE_DANGEROUS_WRITE: &[&str] = &["@keyspace", "@write", "@slow", "@dangerous"];
const CONNECTION_FAST: &[&str] = &["@fast", "@connection"];
const CONNECTION_SLOW: &[&str] = &["@slow", "@connection"];
const BITMAP_READ_FAST: &[&str] = &["@read", "@bitmap", "@fast"];
const BITMAP_READ_SLOW: &[&str] = &["@read", "@bitmap", "@slow"];
const BITMAP_WRITE_SLOW: &[&str] = &["@write", "@bitmap", "@slow"];
const SLOW: &[&str] = &["@slow"];
const FAST_CATEGORY: &[&str] = &["@fast"];
const TRANSACTION_FAST: &[&str] = &["@fast", "@transaction"];
const TRANSACTION_SLOW: &[&str] = &["@slow", "@transaction"];
const SLOW_DANGEROUS: &[&str] = &["@slow", "@dangerous"];

/// A node command: the node loop runs it, it names no key.
const NODE: CommandSpec = CommandSpec {
    name: "",
    arity: 0,
    keyed: false,
    keys: NO_KEYS,
    flags: &[],
    acl_categories: &[],
    group: "",
    since: "",
    summary: "",
    complexity: "O(1)",
    handler: None,
};

/// Sorted by name (a test checks it): [`lookup`] searches it by halves.
#[rustfmt::skip]
pub(super) static COMMANDS: &[CommandSpec] = &[
    CommandSpec { name: "append", arity: 3, keyed: true, keys: ONE_KEY, flags: WRITE_DENYOOM_FAST, acl_categories: STRING_WRITE_FAST,
        group: "string", since: "2.0.0", complexity: "O(1). The amortized time complexity is O(1) assuming the appended value is small and the already present value is of any size, since the dynamic string library used by Redis will double the free space available on every reallocation.",
        summary: "Appends a string to the value of a key. Creates the key if it doesn't exist.", handler: Some(strings::append) },
    CommandSpec { name: "asking", arity: 1, flags: FAST, acl_categories: CONNECTION_FAST, group: "cluster", since: "3.0.0",
        summary: "Sent by cluster clients after an -ASK redirect", ..NODE },
    CommandSpec { name: "auth", arity: -2, flags: ANY_CLIENT_STATE, acl_categories: CONNECTION_FAST, group: "connection", since: "1.0.0",
        complexity: "O(N) where N is the number of passwords defined for the user",
        summary: "Authenticates the connection.", ..NODE },
    CommandSpec { name: "bitcount", arity: -2, keyed: true, keys: ONE_KEY, flags: READONLY, acl_categories: BITMAP_READ_SLOW, group: "bitmap", since: "2.6.0", complexity: "O(N)",
        summary: "Count set bits in a string", handler: Some(bits::bitcount) },
    CommandSpec { name: "bitop", arity: -4, keyed: true, keys: AFTER_FIRST, flags: WRITE_DENYOOM, acl_categories: BITMAP_WRITE_SLOW, group: "bitmap", since: "2.6.0", complexity: "O(N)",
        summary: "Perform bitwise operations between strings", handler: Some(bits::bitop) },
    CommandSpec { name: "bitpos", arity: -3, keyed: true, keys: ONE_KEY, flags: READONLY, acl_categories: BITMAP_READ_SLOW, group: "bitmap", since: "2.8.7", complexity: "O(N)",
        summary: "Find first bit set or clear in a string", handler: Some(bits::bitpos) },
    CommandSpec { name: "client", arity: -2, acl_categories: SLOW, group: "connection", since: "2.4.0", complexity: "Depends on subcommand.",
        summary: "A container for client connection commands.", ..NODE },
    CommandSpec { name: "cluster", arity: -2, acl_categories: SLOW, group: "cluster", since: "3.0.0", complexity: "Depends on subcommand.",
        summary: "A container for cluster commands", ..NODE },
    CommandSpec { name: "command", arity: -1, flags: LOADING_STALE, acl_categories: CONNECTION_SLOW, group: "server", since: "2.8.13", complexity: "O(N) where N is the total number of Redis commands",
        summary: "Returns detailed information about all commands.", ..NODE },
    CommandSpec { name: "config", arity: -2, acl_categories: SLOW, group: "server", since: "2.0.0", complexity: "Depends on subcommand.",
        summary: "A container for server configuration commands.", ..NODE },
    CommandSpec { name: "copy", arity: -3, keyed: true, keys: TWO_KEYS, flags: WRITE_DENYOOM, acl_categories: KEYSPACE_WRITE_SLOW, group: "generic", since: "6.2.0",
        complexity: "O(N) worst case for collections, where N is the number of nested items. O(1) for string values.",
        summary: "Copy a key", handler: Some(generic::copy) },
    CommandSpec { name: "dbsize", arity: 1, flags: READONLY_FAST, acl_categories: KEYSPACE_READ_FAST, group: "server", since: "1.0.0",
        summary: "Returns the number of keys in the database.", ..NODE },
    CommandSpec { name: "decr", arity: 2, keyed: true, keys: ONE_KEY, flags: WRITE_DENYOOM_FAST, acl_categories: STRING_WRITE_FAST, group: "string", since: "1.0.0", complexity: "O(1)",
        summary: "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", handler: Some(strings::decr) },
    CommandSpec { name: "decrby", arity: 3, keyed: true, keys: ONE_KEY, flags: WRITE_DENYOOM_FAST, acl_categories: STRING_WRITE_FAST, group: "string", since: "1.0.0", complexity: "O(1)",
        summary: "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist.", handler: Some(strings::decrby) },
    CommandSpec { name: "del", arity: -2, keyed: true, keys: ALL_KEYS, flags: WRITE, acl_categories: KEYSPACE_WRITE_SLOW, group: "generic", since: "1.0.0",
        complexity: "O(N) where N is the number of keys that will be removed.",
        summary: "Deletes one or more keys.", handler: Some(generic::del) },
    CommandSpec { name: "discard", arity: 1, flags: TRANSACTION_CONTROL, acl_categories: TRANSACTION_FAST, group: "transactions", since: "2.0.0", complexity: "O(N), when N is the number of queued commands",
        summary: "Discards a transaction.", ..NODE },
    CommandSpec { name: "echo", arity: 2, flags: FAST, acl_categories: CONNECTION_FAST, group: "connection", since: "1.0.0",
        summary: "Returns the given string.", ..NODE },
    CommandSpec { name: "exec", arity: 1, flags: TRANSACTION_EXEC, acl_categories: TRANSACTION_SLOW, group: "transactions", since: "1.2.0", complexity: "Depends on commands in the transaction",
        summary: "Executes all commands in a transaction.", ..NODE },
    CommandSpec { name: "exists", arity: -2, keyed: true, keys: ALL_KEYS, flags: READONLY_FAST, acl_categories: KEYSPACE_READ_FAST, group: "generic", since: "1.0.0",
        complexity: "O(N) where N is the number of keys to check.",
        summary: "Determines whether one or more keys exist.", handler: Some(generic::exists) },
    CommandSpec { name: "expire", arity: -3, keyed: true, keys: ONE_KEY, flags: WRITE_FAST, acl_categories: KEYSPACE_WRITE_FAST, group: "generic", since: "1.0.0", complexity: "O(1)",
        summary: "Sets the expiration time of a key in seconds.", handler: Some(generic::expire) },
    CommandSpec { name: "expireat", arity: -3, keyed: true, keys: ONE_KEY, flags: WRITE_FAST, acl_categories: KEYSPACE_WRITE_FAST, group: "generic", since: "1.2.0", complexity: "O(1)",
        summary: "Sets the expiration time of a key to a Unix timestamp.", handler: Some(generic::expireat) },
    CommandSpec { name: "expiretime", arity: 2, keyed: true, keys: ONE_KEY, flags: READONLY_FAST, acl_categories: KEYSPACE_READ_FAST, group: "generic", since: "7.0.0", complexity: "O(1)",
        summary: "Returns the expiration time of a key as a Unix timestamp.", handler: Some(generic::expiretime) },
    CommandSpec { name: "flushall", arity: -1, flags: WRITE, acl_categories: KEYSPACE_DANGEROUS_WRITE, group: "server", since: "1.0.0", complexity: "O(N) where N is the total number of keys in all databases",
        summary: "Removes all keys from all databases.", ..NODE },
    CommandSpec { name: "flushdb", arity: -1, flags: WRITE, acl_categories: KEYSPACE_DANGEROUS_WRITE, group: "server", since: "1.0.0", complexity: "O(N) where N is the number of keys in the selected database",
        summary: "Remove all keys from the current database.", ..NODE },
    CommandSpec { name: "function", arity: -2, acl_categories: SLOW, group: "scripting", since: "7.0.0", complexity: "Depends on subcommand.",
        summary: "A container for function commands.", ..NODE },
    CommandSpec { name: "get", arity: 2, keyed: true, keys: ONE_KEY, flags: READONLY_FAST, acl_categories: STRING_READ_FAST, group: "string", since: "1.0.0", complexity: "O(1)",
        summary: "Returns the string value of a key.", handler: Some(strings::get) },
    CommandSpec { name: "getbit", arity: 3, keyed: true, keys: ONE_KEY, flags: READONLY_FAST, acl_categories: BITMAP_READ_FAST, group: "bitmap", since: "2.2.0", complexity: "O(1)",
        summary: "Returns the bit value at offset in the string value stored at key", handler: Some(bits::getbit) },
    CommandSpec { name: "getdel", arity: 2, keyed: true, keys: ONE_KEY, flags: WRITE_FAST, acl_categories: STRING_WRITE_FAST, group: "string", since: "6.2.0", complexity: "O(1)",
        summary: "Returns the string value of a key after deleting the key.", handler: Some(strings::getdel) },
    CommandSpec { name: "getex", arity: -2, keyed: true, keys: ONE_KEY, flags: WRITE_FAST, acl_categories: STRING_WRITE_FAST, group: "string", since: "6.2.0", complexity: "O(1)",
        summary: "Returns the string value of a key after setting its expiration time.", handler: Some(strings::getex) },
    CommandSpec { name: "getrange", arity: 4, keyed: true, keys: ONE_KEY, flags: READONLY, acl_categories: STRING_READ_SLOW, group: "string", since: "2.4.0",
        complexity: "O(N) where N is the length of the returned string. The complexity is ultimately determined by the returned length, but because creating a substring from an existing string is very cheap, it can be considered O(1) for small strings.",
        summary: "Returns a substring of the string stored at a key.", handler: Some(strings::getrange) },
    CommandSpec { name: "getset", arity: 3, keyed: true, keys: ONE_KEY, flags: WRITE_DENYOOM_FAST, acl_categories: STRING_WRITE_FAST, group: "string", since: "1.0.0", complexity: "O(1)",
        summary: "Returns the previous string value of a key after setting it to a new value.", handler: Some(strings::getset) },
    CommandSpec { name: "hello", arity: -1, flags: ANY_CLIENT_STATE, acl_categories: CONNECTION_FAST, group: "connection", since: "6.0.0",
        summary: "Handshakes with the Redis server.", ..NODE },
    CommandSpec { name: "incr", arity: 2, keyed: true, keys: ONE_KEY, flags: WRITE_DENYOOM_FAST, acl_categories: STRING_WRITE_FAST, group: "string", since: "1.0.0", complexity: "O(1)",
        summary: "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", handler: Some(strings::incr) },
    CommandSpec { name: "incrby", arity: 3, keyed: true, keys: ONE_KEY, flags: WRITE_DENYOOM_FAST, acl_categories: STRING_WRITE_FAST, group: "string", since: "1.0.0", complexity: "O(1)",
        summary: "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist.", handler: Some(strings::incrby) },
    CommandSpec { name: "incrbyfloat", arity: 3, keyed: true, keys: ONE_KEY, flags: WRITE_DENYOOM_FAST, acl_categories: STRING_WRITE_FAST, group: "string", since: "2.6.0", complexity: "O(1)",
        summary: "Increment the floating point value of a key by a number. Uses 0 as initial value if the key doesn't exist.", handler: Some(strings::incrbyfloat) },
    CommandSpec { name: "info", arity: -1, flags: LOADING_STALE, acl_categories: SLOW_DANGEROUS, group: "server", since: "1.0.0",
        summary: "Returns information and statistics about the server.", ..NODE },
    CommandSpec { name: "keys", arity: 2, flags: READONLY, acl_categories: KEYSPACE_DANGEROUS_READ, group: "generic", since: "1.0.0",
        complexity: "O(N) with N being the number of keys in the database, under the assumption that the key names in the database and the given pattern have limited length.",
        summary: "Returns all key names that match a pattern.", ..NODE },
    CommandSpec { name: "lcs", arity: -3, keyed: true, keys: TWO_KEYS, flags: READONLY, acl_categories: STRING_READ_SLOW, group: "string", since: "7.0.0",
        complexity: "O(N*M) where N and M are the lengths of s1 and s2, respectively",
        summary: "Find longest common substring", handler: Some(lcs::lcs) },
    CommandSpec { name: "mget", arity: -2, keyed: true, keys: ALL_KEYS, flags: READONLY_FAST, acl_categories: STRING_READ_FAST, group: "string", since: "1.0.0",
        complexity: "O(N) where N is the number of keys to retrieve.",
        summary: "Atomically returns the string values of one or more keys.", handler: Some(strings::mget) },
    CommandSpec { name: "mset", arity: -3, keyed: true, keys: KEY_VALUE_PAIRS, flags: WRITE_DENYOOM, acl_categories: STRING_WRITE_SLOW, group: "string", since: "1.0.1",
        complexity: "O(N) where N is the number of keys to set.",
        summary: "Atomically creates or modifies the string values of one or more keys.", handler: Some(strings::mset) },
    CommandSpec { name: "msetnx", arity: -3, keyed: true, keys: KEY_VALUE_PAIRS, flags: WRITE_DENYOOM, acl_categories: STRING_WRITE_SLOW, group: "string", since: "1.0.1",
        complexity: "O(N) where N is the number of keys to set.",
        summary: "Atomically modifies the string values of one or more keys only when all keys don't exist.", handler: Some(strings::msetnx) },
    CommandSpec { name: "multi", arity: 1, flags: TRANSACTION_CONTROL, acl_categories: TRANSACTION_FAST, group: "transactions", since: "1.2.0",
        summary: "Starts a transaction.", ..NODE },
    CommandSpec { name: "object", arity: -2, keyed: true, keys: SECOND, acl_categories: SLOW, group: "generic", since: "2.2.3", complexity: "Depends on subcommand.",
        summary: "A container for object introspection commands", handler: Some(generic::object), ..NODE },
    CommandSpec { name: "persist", arity: 2, keyed: true, keys: ONE_KEY, flags: WRITE_FAST, acl_categories: KEYSPACE_WRITE_FAST, group: "generic", since: "2.2.0", complexity: "O(1)",
        summary: "Removes the expiration time of a key.", handler: Some(generic::persist) },
    CommandSpec { name: "pexpire", arity: -3, keyed: true, keys: ONE_KEY, flags: WRITE_FAST, acl_categories: KEYSPACE_WRITE_FAST, group: "generic", since: "2.6.0", complexity: "O(1)",
        summary: "Sets the expiration time of a key in milliseconds.", handler: Some(generic::pexpire) },
    CommandSpec { name: "pexpireat", arity: -3, keyed: true, keys: ONE_KEY, flags: WRITE_FAST, acl_categories: KEYSPACE_WRITE_FAST, group: "generic", since: "2.6.0", complexity: "O(1)",
        summary: "Sets the expiration time of a key to a Unix milliseconds timestamp.", handler: Some(generic::pexpireat) },
    CommandSpec { name: "pexpiretime", arity: 2, keyed: true, keys: ONE_KEY, flags: READONLY_FAST, acl_categories: KEYSPACE_READ_FAST, group: "generic", since: "7.0.0", complexity: "O(1)",
        summary: "Returns the expiration time of a key as a Unix milliseconds timestamp.", handler: Some(generic::pexpiretime) },
    CommandSpec { name: "ping", arity: -1, flags: FAST, acl_categories: CONNECTION_FAST, group: "connection", since: "1.0.0",
        summary: "Returns the server's liveliness response.", ..NODE },
    CommandSpec { name: "psetex", arity: 4, keyed: true, keys: ONE_KEY, flags: WRITE_DENYOOM, acl_categories: STRING_WRITE_SLOW, group: "string", since: "2.6.0", complexity: "O(1)",
        summary: "Set the value and expiration in milliseconds of a key", handler: Some(strings::psetex) },
    CommandSpec { name: "pttl", arity: 2, keyed: true, keys: ONE_KEY, flags: READONLY_FAST, acl_categories: KEYSPACE_READ_FAST, group: "generic", since: "2.6.0", complexity: "O(1)",
        summary: "Returns the expiration time in milliseconds of a key.", handler: Some(generic::pttl) },
    CommandSpec { name: "quit", arity: -1, flags: ANY_CLIENT_STATE, acl_categories: CONNECTION_FAST, group: "connection", since: "1.0.0",
        summary: "Closes the connection.", ..NODE },
    CommandSpec { name: "randomkey", arity: 1, flags: READONLY, acl_categories: KEYSPACE_READ_SLOW, group: "generic", since: "1.0.0",
        summary: "Return a random key from the keyspace", ..NODE },
    CommandSpec { name: "readonly", arity: 1, flags: LOADING_STALE_FAST, acl_categories: CONNECTION_FAST, group: "cluster", since: "3.0.0",
        summary: "Enables read queries for a connection to a cluster replica node", ..NODE },
    CommandSpec { name: "readwrite", arity: 1, flags: LOADING_STALE_FAST, acl_categories: CONNECTION_FAST, group: "cluster", since: "3.0.0",
        summary: "Disables read queries for a connection to a cluster replica node", ..NODE },
    CommandSpec { name: "rename", arity: 3, keyed: true, keys: TWO_KEYS, flags: WRITE, acl_categories: KEYSPACE_WRITE_SLOW, group: "generic", since: "1.0.0", complexity: "O(1)",
        summary: "Renames a key and overwrites the destination.", handler: Some(generic::rename) },
    CommandSpec { name: "renamenx", arity: 3, keyed: true, keys: TWO_KEYS, flags: WRITE_FAST, acl_categories: KEYSPACE_WRITE_FAST, group: "generic", since: "1.0.0", complexity: "O(1)",
        summary: "Renames a key only when the target key name doesn't exist.", handler: Some(generic::renamenx) },
    CommandSpec { name: "reset", arity: 1, flags: ANY_CLIENT_STATE, acl_categories: CONNECTION_FAST, group: "connection", since: "6.2.0",
        summary: "Resets the connection.", ..NODE },
    CommandSpec { name: "scan", arity: -2, flags: READONLY, acl_categories: KEYSPACE_READ_SLOW, group: "generic", since: "2.8.0",
        complexity: "O(1) for every call. O(N) for a complete iteration, including enough command calls for the cursor to return back to 0. N is the number of elements inside the collection.",
        summary: "Iterates over the key names in the database.", ..NODE },
    CommandSpec { name: "select", arity: 2, flags: LOADING_STALE_FAST, acl_categories: CONNECTION_FAST, group: "connection", since: "1.0.0",
        summary: "Changes the selected database.", ..NODE },
    CommandSpec { name: "set", arity: -3, keyed: true, keys: ONE_KEY, flags: WRITE_DENYOOM, acl_categories: STRING_WRITE_SLOW, group: "string", since: "1.0.0", complexity: "O(1)",
        summary: "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.", handler: Some(strings::set) },
    CommandSpec { name: "setbit", arity: 4, keyed: true, keys: ONE_KEY, flags: WRITE_DENYOOM, acl_categories: BITMAP_WRITE_SLOW, group: "bitmap", since: "2.2.0", complexity: "O(1)",
        summary: "Sets or clears the bit at offset in the string value stored at key", handler: Some(bits::setbit) },
    CommandSpec { name: "setex", arity: 4, keyed: true, keys: ONE_KEY, flags: WRITE_DENYOOM, acl_categories: STRING_WRITE_SLOW, group: "string", since: "2.0.0", complexity: "O(1)",
        summary: "Set the value and expiration of a key", handler: Some(strings::setex) },
    CommandSpec { name: "setnx", arity: 3, keyed: true, keys: ONE_KEY, flags: WRITE_DENYOOM_FAST, acl_categories: STRING_WRITE_FAST, group: "string", since: "1.0.0", complexity: "O(1)",
        summary: "Set the string value of a key only when the key doesn't exist.", handler: Some(strings::setnx) },
    CommandSpec { name: "setrange", arity: 4, keyed: true, keys: ONE_KEY, flags: WRITE_DENYOOM, acl_categories: STRING_WRITE_SLOW, group: "string", since: "2.2.0",
        complexity: "O(1), not counting the time taken to copy the new string in place. Usually, this string is very small so the amortized complexity is O(1). Otherwise, complexity is O(M) with M being the length of the value argument.",
        summary: "Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist.", handler: Some(strings::setrange) },
    CommandSpec { name: "strlen", arity: 2, keyed: true, keys: ONE_KEY, flags: READONLY_FAST, acl_categories: STRING_READ_FAST, group: "string", since: "2.2.0", complexity: "O(1)",
        summary: "Returns the length of a string value.", handler: Some(strings::strlen) },
    CommandSpec { name: "substr", arity: 4, keyed: true, keys: ONE_KEY, flags: READONLY, acl_categories: STRING_READ_SLOW, group: "string", since: "1.0.0",
        complexity: "O(N) where N is the length of the returned string. The complexity is ultimately determined by the returned length, but because creating a substring from an existing string is very cheap, it can be considered O(1) for small strings.",
        summary: "Get a substring of the string stored at a key", handler: Some(strings::getrange) },
    CommandSpec { name: "time", arity: 1, flags: LOADING_STALE_FAST, acl_categories: FAST_CATEGORY, group: "server", since: "2.6.0",
        summary: "Return the current server time", ..NODE },
    CommandSpec { name: "touch", arity: -2, keyed: true, keys: ALL_KEYS, flags: READONLY_FAST, acl_categories: KEYSPACE_READ_FAST, group: "generic", since: "3.2.1",
        complexity: "O(N) where N is the number of keys that will be touched.",
        summary: "Alters the last access time of a key(s). Returns the number of existing keys specified.", handler: Some(generic::exists) },
    CommandSpec { name: "ttl", arity: 2, keyed: true, keys: ONE_KEY, flags: READONLY_FAST, acl_categories: KEYSPACE_READ_FAST, group: "generic", since: "1.0.0", complexity: "O(1)",
        summary: "Returns the expiration time in seconds of a key.", handler: Some(generic::ttl) },
    CommandSpec { name: "type", arity: 2, keyed: true, keys: ONE_KEY, flags: READONLY_FAST, acl_categories: KEYSPACE_READ_FAST, group: "generic", since: "1.0.0", complexity: "O(1)",
        summary: "Determines the type of value stored at a key.", handler: Some(generic::type_of) },
    CommandSpec { name: "unlink", arity: -2, keyed: true, keys: ALL_KEYS, flags: WRITE_FAST, acl_categories: KEYSPACE_WRITE_FAST, group: "generic", since: "4.0.0",
        complexity: "O(1) for each key removed regardless of its size. Then the command does O(N) work in a different thread in order to reclaim memory, where N is the number of allocations the deleted objects were composed of.",
        summary: "Asynchronously deletes one or more keys.", handler: Some(generic::del) },
    CommandSpec { name: "unwatch", arity: 1, flags: TRANSACTION_CONTROL, acl_categories: TRANSACTION_FAST, group: "transactions", since: "2.2.0",
        summary: "Forgets about watched keys of a transaction.", ..NODE },
    CommandSpec { name: "wait", arity: 3, flags: NOSCRIPT, acl_categories: CONNECTION_SLOW, group: "generic", since: "3.0.0",
        summary: "Wait for the synchronous replication of all the write commands sent in the context of the current connection", ..NODE },
    CommandSpec { name: "watch", arity: -2, keys: ALL_KEYS, flags: TRANSACTION_CONTROL, acl_categories: TRANSACTION_FAST, group: "transactions", since: "2.2.0", complexity: "O(1) for every key.",
        summary: "Monitors changes to keys to determine the execution of a transaction.", ..NODE },
];

/// The command named `name`, in any letter case.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    COMMANDS
        .binary_search_by(|spec| compare_ignoring_case(spec.name, name))
        .ok()
        .map(|index| &COMMANDS[index])
}

/// Orders a lowercase table name against a name in any case, as if both
/// were lowercase.
fn compare_ignoring_case(lowercase: &str, name: &[u8]) -> Ordering {
    lowercase
        .bytes()
        .cmp(name.iter().map(u8::to_ascii_lowercase))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Node commands that name keys all the same (the node loop sends them
    /// to the keys' shard itself).
    const NODE_COMMANDS_WITH_KEYS: &[&str] = &["watch"];

    #[test]
    fn table_is_sorted_lowercase_and_consistent() {
        for pair in COMMANDS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} before {}",
                pair[0].name,
                pair[1].name
            );
        }
        for spec in COMMANDS {
            assert!(
                !spec.name.is_empty() && spec.name.bytes().all(|byte| byte.is_ascii_lowercase()),
                "{}",
                spec.name
            );
            assert!(
                !spec.summary.is_empty() && !spec.since.is_empty() && !spec.group.is_empty(),
                "{} lacks docs",
                spec.name
            );
            assert_ne!(spec.arity, 0, "{}", spec.name);
            assert_eq!(
                spec.keyed,
                spec.handler.is_some(),
                "{}: keyed commands, and only they, run on a shard",
                spec.name
            );
            assert_eq!(
                spec.keyed || NODE_COMMANDS_WITH_KEYS.contains(&spec.name),
                spec.keys != NO_KEYS,
                "{}: keyed commands, and only they, name keys (WATCH's the node loop routes)",
                spec.name
            );
            let write = spec.flags.contains(&"write");
            assert_eq!(
                write,
                spec.acl_categories.contains(&"@write"),
                "{}",
                spec.name
            );
            assert!(
                !(write && spec.flags.contains(&"readonly")),
                "{}",
                spec.name
            );
        }
    }

    #[test]
    fn lookup_ignores_case_and_finds_every_command() {
        for spec in COMMANDS {
            assert!(std::ptr::eq(lookup(spec.name.as_bytes()).unwrap(), spec));
            let upper = spec.name.to_ascii_uppercase();
            assert!(std::ptr::eq(lookup(upper.as_bytes()).unwrap(), spec));
        }
        assert_eq!(lookup(b"GeTrAnGe").unwrap().name, "getrange");
        assert!(lookup(b"").is_none());
        assert!(lookup(b"getx").is_none());
        assert!(lookup(b"ge").is_none());
        assert!(lookup(b"zzz").is_none());
        assert!(lookup("gét".as_bytes()).is_none());
    }
}
