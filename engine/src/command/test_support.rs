//! A key space, a clock and limits to run commands against in tests: each
//! write's operation is applied, as the shard would, so later reads see it.

use super::{execute, Outcome};
use crate::keyspace::Keyspace;
use crate::limits::Limits;
use crate::operation::{Operation, SingleOp};
use crate::resp::Reply;

/// The test clock's start: any time far from zero and from overflow.
pub const START_UNIX_MS: u64 = 1_700_000_000_000;

#[derive(Debug)]
pub struct Harness {
    pub keyspace: Keyspace,
    pub now_unix_ms: u64,
    pub limits: Limits,
}

impl Harness {
    pub fn new() -> Harness {
        Harness {
            keyspace: Keyspace::new(),
            now_unix_ms: START_UNIX_MS,
            limits: Limits::default(),
        }
    }

    /// Runs `request` and applies its operation.
    pub fn run(&mut self, request: &[&str]) -> Outcome {
        let outcome = execute(
            &self.keyspace,
            &args(request),
            self.now_unix_ms,
            &self.limits,
        );
        if let Some(op) = &outcome.op {
            self.keyspace.apply(op);
        }
        outcome
    }

    /// Runs `request`, applies its operation and returns only the reply.
    pub fn reply(&mut self, request: &[&str]) -> Reply {
        self.run(request).reply
    }

    /// Stores `key` with `value` and an optional expiry, directly.
    pub fn put(&mut self, key: &str, value: &str, expire_at_unix_ms: Option<u64>) {
        self.keyspace
            .apply(&set(key, value, expire_at_unix_ms).into());
    }

    pub fn advance_ms(&mut self, ms: u64) {
        self.now_unix_ms += ms;
    }
}

pub fn args(request: &[&str]) -> Vec<Vec<u8>> {
    request.iter().map(|arg| arg.as_bytes().to_vec()).collect()
}

pub fn bulk(text: &str) -> Reply {
    Reply::Bulk(text.as_bytes().to_vec())
}

pub fn error(text: &str) -> Reply {
    Reply::Error(text.to_owned())
}

pub fn set(key: &str, value: &str, expire_at_unix_ms: Option<u64>) -> SingleOp {
    SingleOp::Set {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        expire_at_unix_ms,
    }
}

pub fn delete(keys: &[&str]) -> SingleOp {
    SingleOp::Delete {
        keys: keys.iter().map(|key| key.as_bytes().to_vec()).collect(),
    }
}

/// An outcome that changes nothing.
pub fn read(reply: Reply) -> Outcome {
    Outcome { reply, op: None }
}

pub fn write(reply: Reply, op: impl Into<Operation>) -> Outcome {
    Outcome {
        reply,
        op: Some(op.into()),
    }
}
