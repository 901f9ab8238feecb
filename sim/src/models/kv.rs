//! A map from string keys to strings with get, put and append, a missing key
//! reading as the empty string: the model of the Porcupine kv histories.
//! Partitioned per key.

use crate::linearizability::{Model, Window};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvInput {
    pub key: String,
    pub operation: KvOperation,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOperation {
    Get,
    Put(String),
    Append(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOutput {
    /// What a get read.
    Value(String),
    /// A put or append was applied.
    Done,
}

/// The kv model; a partition's state is its key's string.
#[derive(Debug)]
pub struct Kv;

impl Model for Kv {
    type State = String;
    type Input = KvInput;
    type Output = KvOutput;
    type PartitionKey = String;

    fn init() -> Self::State {
        String::new()
    }

    fn step(
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
        _window: Window,
    ) -> Vec<Self::State> {
        let next = match (&input.operation, output) {
            (KvOperation::Get, None) => Some(state.clone()),
            (KvOperation::Get, Some(KvOutput::Value(value))) => {
                (value == state).then(|| state.clone())
            }
            (KvOperation::Put(value), None | Some(KvOutput::Done)) => Some(value.clone()),
            (KvOperation::Append(suffix), None | Some(KvOutput::Done)) => {
                Some(format!("{state}{suffix}"))
            }
            (KvOperation::Get, Some(KvOutput::Done))
            | (KvOperation::Put(_) | KvOperation::Append(_), Some(KvOutput::Value(_))) => None,
        };
        next.into_iter().collect()
    }

    fn partition_key(input: &Self::Input) -> Self::PartitionKey {
        input.key.clone()
    }
}
