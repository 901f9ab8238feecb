//! The event trace of one run, kept as a running hash: two runs of one seed
//! must produce the same hash (`keel-sim --check-determinism`).
//!
//! Every event is hashed as its text, so an event's type must print the same
//! way each time: no hash maps, addresses or wall-clock times in it.

use std::fmt::Display;

/// FNV-1a's 64-bit offset basis and prime: a stable hash, unlike std's
/// randomly keyed `DefaultHasher`.
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A running hash of events, each stamped with the simulation's time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    hash: u64,
    events: u64,
    /// When set, each event is also printed (`keel-sim --trace`).
    echo: bool,
}

impl Default for Trace {
    fn default() -> Trace {
        Trace::new(false)
    }
}

impl Trace {
    pub fn new(echo: bool) -> Trace {
        Trace {
            hash: FNV_OFFSET_BASIS,
            events: 0,
            echo,
        }
    }

    /// Adds `event`, which happened at `time_us` of simulated time.
    pub fn record(&mut self, time_us: u64, event: impl Display) {
        let line = format!("{time_us} {event}\n");
        if self.echo {
            print!("trace {line}");
        }
        for byte in line.bytes() {
            self.hash = (self.hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
        }
        self.events += 1;
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn events(&self) -> u64 {
        self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_depends_on_every_event_and_its_order() {
        let trace = |events: &[(u64, &str)]| {
            let mut trace = Trace::default();
            for (time, event) in events {
                trace.record(*time, event);
            }
            trace.hash()
        };
        let one = trace(&[(1, "a"), (2, "b")]);
        assert_eq!(one, trace(&[(1, "a"), (2, "b")]));
        assert_ne!(one, trace(&[(2, "b"), (1, "a")]));
        assert_ne!(one, trace(&[(1, "a"), (3, "b")]));
        assert_ne!(one, trace(&[(1, "a")]));
        // FNV-1a of the empty input is the offset basis.
        assert_eq!(trace(&[]), FNV_OFFSET_BASIS);
    }
}
