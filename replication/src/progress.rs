//! What a leader knows of each follower: how far its log matches, what to send
//! next, and how many bytes are on the way (flow control).

use std::collections::VecDeque;

use crate::types::{EntryId, LogIndex};

/// Heartbeat intervals without an acknowledgement after which a streaming
/// window is taken as lost (the network dropped one of its appends).
pub const STALLED_HEARTBEATS: u32 = 3;

/// How the leader replicates to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Where the follower's log matches is unknown: one append at a time,
    /// resent each heartbeat until a reply says where (§3.5).
    Probe { waiting: bool },
    /// The follower matches through `matched`: appends stream ahead of replies
    /// (pipelining, §10.2.2), bounded by the in-flight byte window.
    Replicate,
    /// The entries the follower needs are compacted: send the snapshot in
    /// chunks from `offset`, one chunk at a time (§5.1, Figure 5.3).
    Snapshot { offset: u64, waiting: bool },
}

#[derive(Debug)]
pub(crate) struct Progress {
    /// The follower's log matches the leader's through here, durably.
    pub matched: EntryId,
    /// The index of the next entry to send.
    pub next: LogIndex,
    pub mode: Mode,
    /// Appends sent and not yet acknowledged: (last index, bytes), oldest first.
    inflight: VecDeque<(LogIndex, u64)>,
    inflight_bytes: u64,
    /// The newest read round the follower acknowledged (§6.4).
    pub acked_round: u64,
    /// Whether the follower replied since the last check-quorum (§6.2).
    pub active: bool,
    /// Heartbeats since the in-flight window last made progress: at
    /// `STALLED_HEARTBEATS` a message of it is taken as lost, and the window is
    /// resent by probing.
    stalled_heartbeats: u32,
}

impl Progress {
    pub fn new(next: LogIndex) -> Progress {
        Progress {
            matched: EntryId::ZERO,
            next,
            mode: Mode::Probe { waiting: false },
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            acked_round: 0,
            active: false,
            stalled_heartbeats: 0,
        }
    }

    /// Whether flow control lets another append go (a probe: only if none is
    /// waiting for its reply; streaming: only within the byte window).
    pub fn can_send(&self, inflight_bytes_max: u64) -> bool {
        match self.mode {
            Mode::Probe { waiting } => !waiting,
            Mode::Replicate => self.inflight_bytes < inflight_bytes_max,
            Mode::Snapshot { .. } => false,
        }
    }

    /// An append of entries through `last` (`bytes` of them) went out.
    pub fn sent(&mut self, last: LogIndex, bytes: u64) {
        match self.mode {
            Mode::Probe { .. } => self.mode = Mode::Probe { waiting: true },
            Mode::Replicate => {
                self.next = last.next();
                self.inflight.push_back((last, bytes));
                self.inflight_bytes += bytes;
            }
            Mode::Snapshot { .. } => unreachable!("appends are not sent while a snapshot is"),
        }
    }

    /// The follower matches through `matched`. Returns whether that is news.
    pub fn on_matched(&mut self, matched: EntryId) -> bool {
        if matched.index <= self.matched.index {
            return false;
        }
        self.matched = matched;
        self.stalled_heartbeats = 0;
        self.next = self.next.max(matched.index.next());
        while let Some(&(last, bytes)) = self.inflight.front() {
            if last > matched.index {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes -= bytes;
        }
        true
    }

    /// Start streaming right after what is known to match.
    pub fn become_replicate(&mut self) {
        self.mode = Mode::Replicate;
        self.next = self.matched.index.next();
        self.clear_inflight();
    }

    /// Back to one probe at a time, from `next`.
    pub fn become_probe(&mut self, next: LogIndex) {
        self.mode = Mode::Probe { waiting: false };
        self.next = next.max(self.matched.index.next());
        self.clear_inflight();
    }

    pub fn become_snapshot(&mut self) {
        self.mode = Mode::Snapshot {
            offset: 0,
            waiting: false,
        };
        self.clear_inflight();
    }

    /// A heartbeat interval passed: allow a resend of a probe or chunk whose
    /// reply never came, and give up on a stream window that made no
    /// progress (a message of it was lost).
    pub fn on_heartbeat(&mut self) {
        match &mut self.mode {
            Mode::Probe { waiting } | Mode::Snapshot { waiting, .. } => *waiting = false,
            Mode::Replicate if self.inflight.is_empty() => self.stalled_heartbeats = 0,
            Mode::Replicate => {
                self.stalled_heartbeats += 1;
                if self.stalled_heartbeats >= STALLED_HEARTBEATS {
                    self.become_probe(self.matched.index.next());
                }
            }
        }
    }

    fn clear_inflight(&mut self) {
        self.stalled_heartbeats = 0;
        self.inflight.clear();
        self.inflight_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_closes_at_its_byte_bound_and_reopens_on_acks() {
        let mut progress = Progress::new(LogIndex(1));
        progress.become_replicate();
        progress.sent(LogIndex(2), 600);
        assert!(progress.can_send(1_000));
        progress.sent(LogIndex(4), 600);
        assert!(!progress.can_send(1_000), "1200 bytes in flight");
        assert_eq!(progress.next, LogIndex(5));
        assert!(progress.on_matched(EntryId::new(1, 2)));
        assert!(progress.can_send(1_000), "600 bytes left in flight");
        assert!(!progress.on_matched(EntryId::new(1, 2)), "no news twice");
    }

    #[test]
    fn a_stalled_window_falls_back_to_probing_after_its_match() {
        let mut progress = Progress::new(LogIndex(1));
        progress.on_matched(EntryId::new(1, 3));
        progress.become_replicate();
        progress.sent(LogIndex(6), 10);
        for _ in 1..STALLED_HEARTBEATS {
            progress.on_heartbeat();
            assert_eq!(progress.mode, Mode::Replicate);
        }
        progress.on_heartbeat();
        assert_eq!(progress.mode, Mode::Probe { waiting: false });
        assert_eq!(progress.next, LogIndex(4));
    }
}
