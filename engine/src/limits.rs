//! Limits on what clients may send and hold, each a named constant with its
//! unit. A request over a limit gets an error; the server goes on serving.

/// Largest key unless configured: keys are copied into every log entry and
/// index node that names them, so they are kept far smaller than values.
pub const KEY_BYTES_MAX_DEFAULT: usize = 64 << 10;
/// Largest value unless configured: Redis's `proto-max-bulk-len`.
pub const VALUE_BYTES_MAX_DEFAULT: usize = 512 << 20;
/// Commands parsed from one connection's buffer before their replies are
/// written: bounds the replies held per connection in number.
pub const PIPELINE_COMMANDS_MAX: usize = 1024;
/// Reply bytes one connection holds before writing them: a batch of
/// pipelined commands starts no more commands once the replies it holds
/// pass this, and encoded replies are written whenever they pass it. One
/// write of up to this much amortises the system call, and a batch of small
/// replies still goes out in one write. A single reply may be larger (a
/// value of up to `VALUE_BYTES_MAX_DEFAULT`). Replies from shards of another
/// core are not known before they come back: a batch of those is bounded by
/// `PIPELINE_COMMANDS_MAX` alone.
pub const REPLY_BUFFER_BYTES_MAX: usize = 1 << 20;
/// Bytes one connection may hold of requests not yet complete: the lengths
/// its arguments claim plus input not parsed yet (Redis's
/// client-query-buffer-limit, which also counts a large argument's claimed
/// length).
pub const QUERY_BUFFER_BYTES_MAX: usize = 1 << 30;
/// Bytes read from a socket at a time into a connection's input buffer (a
/// large argument is read straight into place, up to 1 MiB at a time).
pub const READ_CHUNK_BYTES: usize = 64 << 10;

/// The limits a command is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            key_bytes_max: KEY_BYTES_MAX_DEFAULT,
            value_bytes_max: VALUE_BYTES_MAX_DEFAULT,
        }
    }
}
