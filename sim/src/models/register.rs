//! One register of integers with read, write and compare-and-set, starting empty:
//! the model of the Jepsen etcd histories.

use crate::linearizability::{Model, Window};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterInput {
    Read,
    Write(i64),
    /// Set the register to `to` if it holds `from`.
    Cas {
        from: i64,
        to: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOutput {
    /// The value read; `None` when the register is empty.
    Read(Option<i64>),
    Written,
    Cas {
        swapped: bool,
    },
}

/// The register model: one partition, state `None` while empty.
#[derive(Debug)]
pub struct Register;

impl Model for Register {
    type State = Option<i64>;
    type Input = RegisterInput;
    type Output = RegisterOutput;
    type PartitionKey = ();

    fn init() -> Self::State {
        None
    }

    fn step(
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
        _window: Window,
    ) -> Vec<Self::State> {
        let (next, expected) = match *input {
            RegisterInput::Read => (*state, RegisterOutput::Read(*state)),
            RegisterInput::Write(value) => (Some(value), RegisterOutput::Written),
            RegisterInput::Cas { from, to } => {
                let swapped = *state == Some(from);
                (
                    if swapped { Some(to) } else { *state },
                    RegisterOutput::Cas { swapped },
                )
            }
        };
        output
            .is_none_or(|output| *output == expected)
            .then_some(next)
            .into_iter()
            .collect()
    }

    fn partition_key(_input: &Self::Input) -> Self::PartitionKey {}
}
