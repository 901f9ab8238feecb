//! Histories: what each client asked, what it was told, and when.
//!
//! A history is a list of [`Operation`]s, each an interval from its invocation to
//! its return on one logical clock. The checker only compares times, so any
//! monotonic clock works (the simulator's virtual time, or an event counter as the
//! [`Recorder`] uses).
//!
//! Two kinds of uncertainty are recorded, because real clients meet both:
//! - the output is unknown (`output: None`): the client got no usable answer, so
//!   the checker accepts any output the model allows;
//! - the return is unknown (`return_time: RETURN_TIME_NEVER`): the client gave up
//!   waiting (a timeout, a crash), so the operation may take effect at any time
//!   after its invocation, or never. Such an operation always has an unknown
//!   output too.

use hashbrown::HashMap;

/// The return time of an operation that may still take effect at any later time:
/// later than every real event of the history.
pub const RETURN_TIME_NEVER: u64 = u64::MAX;

/// One client operation: an input, the output the client saw (if it saw one), and
/// the interval in which it took effect, if it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// The client that issued it; a client has at most one operation outstanding.
    pub client: u64,
    pub input: I,
    /// When the client sent it.
    pub invoke_time: u64,
    /// What the client was told; `None` when it was told nothing usable.
    pub output: Option<O>,
    /// When the client heard back; [`RETURN_TIME_NEVER`] when it never did.
    pub return_time: u64,
}

impl<I, O> Operation<I, O> {
    /// An operation that returned `output` at `return_time`.
    pub fn completed(client: u64, input: I, invoke_time: u64, output: O, return_time: u64) -> Self {
        assert!(
            invoke_time <= return_time,
            "an operation returns no earlier than it is invoked"
        );
        Self {
            client,
            input,
            invoke_time,
            output: Some(output),
            return_time,
        }
    }

    /// An operation the client gave up on: it may take effect at any time after
    /// `invoke_time`, or never.
    pub fn abandoned(client: u64, input: I, invoke_time: u64) -> Self {
        Self {
            client,
            input,
            invoke_time,
            output: None,
            return_time: RETURN_TIME_NEVER,
        }
    }
}

/// A client event that does not fit the history recorded so far.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error("client {client} returned with no operation outstanding")]
    NothingOutstanding { client: u64 },
}

/// Builds a history from a stream of invoke and return events, timing each event
/// by its position in the stream.
///
/// A client that invokes again while an earlier operation is outstanding has given
/// up on the earlier one, which then stays open to the end of the history.
#[derive(Debug)]
pub struct Recorder<I, O> {
    /// `None` for an operation discarded after it failed.
    operations: Vec<Option<Operation<I, O>>>,
    /// Index in `operations` of each client's outstanding operation.
    outstanding: HashMap<u64, usize>,
    events: u64,
}

impl<I, O> Default for Recorder<I, O> {
    fn default() -> Self {
        Self {
            operations: Vec::new(),
            outstanding: HashMap::new(),
            events: 0,
        }
    }
}

impl<I, O> Recorder<I, O> {
    pub fn new() -> Self {
        Self::default()
    }

    /// `client` sends `input`, timed by the event count.
    pub fn invoke(&mut self, client: u64, input: I) {
        let time = self.tick();
        self.invoke_at(client, input, time);
    }

    /// `client` sends `input` at `time`, on a clock of the caller's (a
    /// recorder takes all its times from one clock: these or the event count).
    pub fn invoke_at(&mut self, client: u64, input: I, time: u64) {
        assert!(
            time < RETURN_TIME_NEVER,
            "times stay below the never-returned mark"
        );
        let index = self.operations.len();
        self.operations
            .push(Some(Operation::abandoned(client, input, time)));
        // The earlier outstanding operation, if any, is left abandoned.
        self.outstanding.insert(client, index);
    }

    /// The input of `client`'s outstanding operation.
    pub fn outstanding_input(&self, client: u64) -> Option<&I> {
        let index = *self.outstanding.get(&client)?;
        self.operations[index]
            .as_ref()
            .map(|operation| &operation.input)
    }

    /// `client` hears back: `output` is `None` when the answer says nothing about
    /// the operation's result (a timed-out read). Timed by the event count.
    pub fn complete(&mut self, client: u64, output: Option<O>) -> Result<(), RecordError> {
        let index = self.take_outstanding(client)?;
        let time = self.tick();
        self.returned(index, output, time);
        Ok(())
    }

    /// [`Recorder::complete`] at `time` (see [`Recorder::invoke_at`]).
    pub fn complete_at(
        &mut self,
        client: u64,
        output: Option<O>,
        time: u64,
    ) -> Result<(), RecordError> {
        let index = self.take_outstanding(client)?;
        self.returned(index, output, time);
        Ok(())
    }

    fn returned(&mut self, index: usize, output: Option<O>, time: u64) {
        let operation = self.operations[index]
            .as_mut()
            .expect("an outstanding operation has not been discarded");
        assert!(
            operation.invoke_time <= time && time < RETURN_TIME_NEVER,
            "an operation returns after its invocation, before the never-returned mark"
        );
        operation.output = output;
        operation.return_time = time;
    }

    /// `client` gives up waiting: the operation may take effect at any later time.
    pub fn abandon(&mut self, client: u64) -> Result<(), RecordError> {
        self.take_outstanding(client).map(drop)
    }

    /// `client` learns that its operation definitely did not take effect, so it
    /// leaves the history.
    pub fn discard(&mut self, client: u64) -> Result<(), RecordError> {
        let index = self.take_outstanding(client)?;
        self.operations[index] = None;
        Ok(())
    }

    /// The history; operations still outstanding stay open to its end.
    pub fn finish(self) -> Vec<Operation<I, O>> {
        self.operations.into_iter().flatten().collect()
    }

    fn take_outstanding(&mut self, client: u64) -> Result<usize, RecordError> {
        self.outstanding
            .remove(&client)
            .ok_or(RecordError::NothingOutstanding { client })
    }

    fn tick(&mut self) -> u64 {
        let time = self.events;
        self.events += 1;
        assert!(
            self.events < RETURN_TIME_NEVER,
            "event count stays below the never-returned mark"
        );
        time
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reinvoking_abandons_the_earlier_operation() {
        let mut recorder = Recorder::<&str, u32>::new();
        recorder.invoke(1, "first");
        recorder.invoke(1, "second");
        recorder.complete(1, Some(7)).unwrap();
        let history = recorder.finish();
        assert_eq!(
            history,
            vec![
                Operation::abandoned(1, "first", 0),
                Operation::completed(1, "second", 1, 7, 2)
            ]
        );
    }

    #[test]
    fn discarded_operations_leave_the_history() {
        let mut recorder = Recorder::<&str, u32>::new();
        recorder.invoke(1, "failed");
        recorder.invoke(2, "kept");
        recorder.discard(1).unwrap();
        recorder.abandon(2).unwrap();
        assert_eq!(recorder.finish(), vec![Operation::abandoned(2, "kept", 1)]);
    }

    #[test]
    fn a_return_needs_an_outstanding_operation() {
        let mut recorder = Recorder::<&str, u32>::new();
        assert_eq!(
            recorder.complete(3, None),
            Err(RecordError::NothingOutstanding { client: 3 })
        );
    }
}
