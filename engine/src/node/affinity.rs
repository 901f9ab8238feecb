//! Which core a connection's keyed commands ran on lately, so that the
//! connection can move there (`Core::client_loop`). A command for a shard
//! of another core hops there and back: two cross-core wake-ups and their
//! syscalls per request, which the core owning the shard does without.
//! Dragonfly moves a connection to the thread its commands run on in the
//! same way (dragonflydb/dragonfly, `Connection::Migrate`).

/// Keyed commands in a row on shards of one other core before a
/// connection moves there: enough that a connection touching keys on
/// every core does not move for a short run of them.
pub const CONNECTION_MOVE_AFTER_COMMANDS: u32 = 16;

/// One connection's recent keyed commands, by the core of their shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Affinity {
    /// The core of the last keyed command's shard.
    core: usize,
    /// How many keyed commands in a row ran on `core`.
    run: u32,
    /// A connection moves at most once, so that keys alternating between
    /// cores cannot bounce it from one to the other.
    moved: bool,
}

impl Affinity {
    /// A keyed command ran on a shard of `core`.
    pub fn note(&mut self, core: usize) {
        if core == self.core {
            self.run = self.run.saturating_add(1);
        } else {
            self.core = core;
            self.run = 1;
        }
    }

    /// The core a connection served on core `here` should move to, if any.
    pub fn target(&self, here: usize) -> Option<usize> {
        (!self.moved && self.core != here && self.run >= CONNECTION_MOVE_AFTER_COMMANDS)
            .then_some(self.core)
    }

    /// The connection moved (or tried to: it does not try again).
    pub fn moved(&mut self) {
        self.moved = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(cores: &[usize]) -> Affinity {
        let mut affinity = Affinity::default();
        for core in cores {
            affinity.note(*core);
        }
        affinity
    }

    #[test]
    fn a_run_of_commands_on_another_core_moves_the_connection_there() {
        let run = CONNECTION_MOVE_AFTER_COMMANDS as usize;
        assert_eq!(after(&vec![1; run - 1]).target(0), None);
        assert_eq!(after(&vec![1; run]).target(0), Some(1));
        assert_eq!(after(&vec![1; run]).target(1), None, "already there");
        let mut interrupted = vec![1; run - 1];
        interrupted.push(0);
        interrupted.extend(vec![1; run - 1]);
        assert_eq!(after(&interrupted).target(0), None, "the run starts over");
        interrupted.push(1);
        assert_eq!(after(&interrupted).target(0), Some(1));
    }

    #[test]
    fn a_connection_moves_at_most_once() {
        let mut affinity = after(&vec![1; CONNECTION_MOVE_AFTER_COMMANDS as usize]);
        affinity.moved();
        assert_eq!(affinity.target(0), None);
        for _ in 0..CONNECTION_MOVE_AFTER_COMMANDS {
            affinity.note(0);
        }
        assert_eq!(affinity.target(1), None);
    }
}
