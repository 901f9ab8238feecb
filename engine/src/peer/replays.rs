//! Which forwarded commands a leader's core has already taken, so that a
//! copy of one is never run twice. Pure: `node::core` asks before it queues
//! a forwarded command.
//!
//! TCP never duplicates, but a link that is torn down and dialled again,
//! or the simulator's network (which duplicates and delays datagrams, and
//! holds a paused host's mail until it resumes), can deliver a request
//! twice, however late. Running it twice would apply a non-idempotent
//! command (INCR, GETSET) twice for one client call.
//!
//! A forwarding core numbers its requests in a stream: an id's high 32
//! bits name the stream (drawn afresh at each boot, see
//! [`stream_start`]), its low 32 bits count within it. Per stream the
//! leader keeps IPsec's anti-replay window (RFC 4303, section 3.4.3): the
//! highest number seen and a bitmap of the [`REPLAY_WINDOW_REQUESTS`]
//! below it. A number seen before, or older than the window, is refused:
//! a refused request that was not a copy had waited so long that its
//! forwarder has answered "may or may not have taken effect" already
//! (the window holds at least [`FORWARDS_IN_FLIGHT_MAX`] numbers).
//! [`REPLAY_STREAMS_MAX`] streams are kept, the least recently used
//! forgotten first.

use crate::node::core::FORWARDS_IN_FLIGHT_MAX;
use crate::node::io::PeerId;

/// Numbers below a stream's highest that its window remembers.
pub const REPLAY_WINDOW_REQUESTS: u32 = 1 << 15;
/// Streams (forwarding member, core and boot) remembered per core.
pub const REPLAY_STREAMS_MAX: usize = 64;

const WINDOW_WORDS: usize = REPLAY_WINDOW_REQUESTS as usize / 64;

const _: () = assert!(REPLAY_WINDOW_REQUESTS as usize >= FORWARDS_IN_FLIGHT_MAX);

/// The first id of a forwarding core's stream for this boot: `boot_nonce`
/// (random per boot) picks the stream, numbering starts at zero.
pub fn stream_start(boot_nonce: u32) -> u64 {
    u64::from(boot_nonce) << 32
}

/// One stream's window.
struct Window {
    highest: u32,
    /// Bit `n % REPLAY_WINDOW_REQUESTS` is set when number `n` of the
    /// window (`highest - REPLAY_WINDOW_REQUESTS < n <= highest`) was seen.
    seen: Box<[u64; WINDOW_WORDS]>,
    last_used: u64,
}

impl Window {
    fn new(first: u32, now: u64) -> Window {
        let mut window = Window {
            highest: first,
            seen: Box::new([0; WINDOW_WORDS]),
            last_used: now,
        };
        window.mark(first);
        window
    }

    fn bit(number: u32) -> (usize, u64) {
        let position = (number % REPLAY_WINDOW_REQUESTS) as usize;
        (position / 64, 1 << (position % 64))
    }

    fn mark(&mut self, number: u32) {
        let (word, bit) = Window::bit(number);
        self.seen[word] |= bit;
    }

    /// Whether `number` is new (and now seen).
    fn admit(&mut self, number: u32) -> bool {
        if number > self.highest {
            let advance = number - self.highest;
            if advance >= REPLAY_WINDOW_REQUESTS {
                self.seen.fill(0);
            } else {
                for passed in self.highest + 1..=number {
                    let (word, bit) = Window::bit(passed);
                    self.seen[word] &= !bit;
                }
            }
            self.highest = number;
            self.mark(number);
            return true;
        }
        if self.highest - number >= REPLAY_WINDOW_REQUESTS {
            return false;
        }
        let (word, bit) = Window::bit(number);
        let fresh = self.seen[word] & bit == 0;
        self.seen[word] |= bit;
        fresh
    }
}

/// The windows of the streams a core has taken requests from.
#[derive(Default)]
pub struct Replays {
    streams: std::collections::HashMap<(PeerId, u32), Window>,
    uses: u64,
}

impl std::fmt::Debug for Replays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replays")
            .field("streams", &self.streams.len())
            .finish()
    }
}

impl Replays {
    /// Whether request `id` from `from` is new: `false` for a copy of one
    /// taken before, or one too old to tell.
    pub fn admit(&mut self, from: PeerId, id: u64) -> bool {
        self.uses += 1;
        let now = self.uses;
        let (stream, number) = ((id >> 32) as u32, id as u32);
        if let Some(window) = self.streams.get_mut(&(from, stream)) {
            window.last_used = now;
            return window.admit(number);
        }
        if self.streams.len() >= REPLAY_STREAMS_MAX {
            let oldest = self
                .streams
                .iter()
                .min_by_key(|(_, window)| window.last_used)
                .map(|(key, _)| *key)
                .expect("a full map has a least recently used stream");
            self.streams.remove(&oldest);
        }
        self.streams
            .insert((from, stream), Window::new(number, now));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_refused_and_reordered_requests_are_not() {
        let mut replays = Replays::default();
        let start = stream_start(7);
        assert!(replays.admit(2, start + 1));
        assert!(replays.admit(2, start + 3));
        assert!(replays.admit(2, start));
        assert!(replays.admit(2, start + 2));
        assert!(!replays.admit(2, start + 1));
        assert!(!replays.admit(2, start + 3));
        assert!(!replays.admit(2, start));
    }

    #[test]
    fn members_and_boots_are_separate_streams() {
        let mut replays = Replays::default();
        assert!(replays.admit(2, stream_start(7) + 5));
        assert!(replays.admit(3, stream_start(7) + 5));
        assert!(replays.admit(2, stream_start(8) + 5));
        assert!(!replays.admit(3, stream_start(7) + 5));
    }

    #[test]
    fn a_request_older_than_the_window_is_refused() {
        let mut replays = Replays::default();
        let start = stream_start(1);
        assert!(replays.admit(1, start + 10));
        assert!(replays.admit(1, start + 10 + u64::from(REPLAY_WINDOW_REQUESTS)));
        assert!(!replays.admit(1, start + 10), "older than the window");
        assert!(
            replays.admit(1, start + 11),
            "the oldest number inside the window, never seen"
        );
    }

    #[test]
    fn the_window_forgets_what_it_slides_past() {
        let mut replays = Replays::default();
        let start = stream_start(1);
        for number in 0..3 * u64::from(REPLAY_WINDOW_REQUESTS) {
            assert!(replays.admit(1, start + number), "number {number}");
        }
        let last = 3 * u64::from(REPLAY_WINDOW_REQUESTS) - 1;
        assert!(!replays.admit(1, start + last));
        assert!(!replays.admit(1, start + last - 5));
    }

    #[test]
    fn numbering_carries_into_the_next_stream() {
        let mut replays = Replays::default();
        let last_of_stream = stream_start(1) + u64::from(u32::MAX);
        assert!(replays.admit(1, last_of_stream));
        assert!(replays.admit(1, last_of_stream + 1), "stream 2, number 0");
        assert!(!replays.admit(1, last_of_stream));
    }

    #[test]
    fn the_least_recently_used_stream_is_forgotten_first() {
        let mut replays = Replays::default();
        for stream in 0..REPLAY_STREAMS_MAX as u32 {
            assert!(replays.admit(1, stream_start(stream)));
        }
        assert!(!replays.admit(1, stream_start(0)), "stream 0 used again");
        assert!(replays.admit(1, stream_start(1000)), "evicts stream 1");
        assert!(
            !replays.admit(1, stream_start(0)),
            "stream 0 is still known"
        );
        assert!(
            replays.admit(1, stream_start(1)),
            "stream 1 was forgotten: a copy this late is taken again"
        );
        assert!(replays.streams.len() <= REPLAY_STREAMS_MAX);
    }
}
