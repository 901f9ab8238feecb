//! The group's tunables, each a named constant with its unit, and what a node
//! restarts from.

use crate::types::{Entry, HardState, NodeId, SnapshotMeta};

/// The shortest election timeout. It is also how long a voter that heard from
/// a leader refuses to vote for anyone else (§4.2.3), which is what makes
/// leases safe (see `lease_ms`).
pub const ELECTION_TIMEOUT_MS_MIN: u64 = 1_000;
/// The longest election timeout: each timeout is drawn from
/// `[MIN, MAX]` so that split votes resolve (§3.4).
pub const ELECTION_TIMEOUT_MS_MAX: u64 = 2_000;
/// How often a leader sends heartbeats (a tenth of the shortest election
/// timeout, so a few lost ones do not start an election).
pub const HEARTBEAT_INTERVAL_MS: u64 = 100;
/// The most entry bytes in one `Append` (at least one entry is always sent,
/// whatever its size).
pub const APPEND_BYTES_MAX: u64 = 1 << 20;
/// The most entry bytes sent to one follower and not yet acknowledged: flow
/// control, so a slow follower costs the leader bounded memory and bandwidth.
pub const INFLIGHT_BYTES_MAX: u64 = 8 << 20;
/// The most snapshot bytes in one `Snapshot` message.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1 << 20;
/// The largest snapshot a follower accepts from a peer (peers are untrusted).
pub const SNAPSHOT_BYTES_MAX: u64 = 4 << 30;
/// The bound on how fast or slow any node's clock may run relative to real
/// time, in parts per million. Leases rely on it (see `Config::lease_ms`).
pub const CLOCK_DRIFT_BOUND_PPM: u64 = 50_000;

/// How a group behaves. `Config::new` takes the production constants;
/// `Config::test_min` shrinks them so that small simulations reach every edge
/// (flow control, chunked snapshots, elections) in every seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// Seeds the election-timeout jitter: the core has no randomness of its own.
    pub seed: u64,
    pub election_timeout_ms_min: u64,
    pub election_timeout_ms_max: u64,
    pub heartbeat_interval_ms: u64,
    pub append_bytes_max: u64,
    pub inflight_bytes_max: u64,
    pub snapshot_chunk_bytes: u64,
    pub snapshot_bytes_max: u64,
    pub clock_drift_bound_ppm: u64,
    /// Serve reads under a leader lease instead of a ReadIndex round when the
    /// lease holds (§6.4.1). Off by default: it trusts the clock-drift bound.
    pub lease_reads: bool,
    /// The planted bug this group runs with (the simulator's checkers must
    /// catch each one).
    #[cfg(feature = "planted-bugs")]
    pub plant: Option<crate::planted::Plant>,
}

impl Config {
    pub fn new(id: NodeId, seed: u64) -> Config {
        Config {
            id,
            seed,
            election_timeout_ms_min: ELECTION_TIMEOUT_MS_MIN,
            election_timeout_ms_max: ELECTION_TIMEOUT_MS_MAX,
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
            append_bytes_max: APPEND_BYTES_MAX,
            inflight_bytes_max: INFLIGHT_BYTES_MAX,
            snapshot_chunk_bytes: SNAPSHOT_CHUNK_BYTES,
            snapshot_bytes_max: SNAPSHOT_BYTES_MAX,
            clock_drift_bound_ppm: CLOCK_DRIFT_BOUND_PPM,
            lease_reads: false,
            #[cfg(feature = "planted-bugs")]
            plant: None,
        }
    }

    /// Small limits: a few entries fill an append and a follower's window, a
    /// snapshot takes several chunks.
    pub fn test_min(id: NodeId, seed: u64) -> Config {
        Config {
            election_timeout_ms_min: 100,
            election_timeout_ms_max: 200,
            heartbeat_interval_ms: 10,
            append_bytes_max: 256,
            inflight_bytes_max: 1_024,
            snapshot_chunk_bytes: 64,
            snapshot_bytes_max: 1 << 20,
            ..Config::new(id, seed)
        }
    }

    /// Panics on settings the protocol cannot work with (programmer errors:
    /// a configuration is code, not input).
    pub fn check(&self) {
        assert!(
            self.election_timeout_ms_min > 0
                && self.election_timeout_ms_min <= self.election_timeout_ms_max,
            "election timeouts: 0 < min {} <= max {}",
            self.election_timeout_ms_min,
            self.election_timeout_ms_max
        );
        assert!(
            self.heartbeat_interval_ms > 0
                && self.heartbeat_interval_ms < self.election_timeout_ms_min,
            "a heartbeat interval of {} ms must be shorter than the shortest election timeout, {} ms",
            self.heartbeat_interval_ms,
            self.election_timeout_ms_min
        );
        assert!(
            self.inflight_bytes_max > 0 && self.snapshot_chunk_bytes > 0,
            "flow control and snapshot chunks need room for something"
        );
        self.lease_ms();
    }

    /// How long a leader may serve reads after the send time of a heartbeat
    /// round a majority acknowledged, by its own clock.
    ///
    /// Safety argument: a voter that received the round at real time `t_r`
    /// grants no (non-transfer) vote until its clock advanced by
    /// `E = election_timeout_ms_min`, i.e. until real time `t_r + E/(1+ρ)` at
    /// the earliest (ρ = drift bound). The leader sent the round at `t_s <= t_r`
    /// and stops serving once its clock advanced by `L`, at real time
    /// `t_s + L/(1-ρ)` at the latest. So no other leader can exist while the
    /// lease holds if `L/(1-ρ) <= E/(1+ρ)`, i.e. `L <= E(1-ρ)/(1+ρ)`, which
    /// `L = E(1-2ρ)` satisfies. A majority acknowledged the round, and every
    /// majority that elects a new leader contains one of its members. A
    /// restarted voter counts its start as contact with a leader, and a leader
    /// that sent `TimeoutNow` (whose campaign voters grant at once) forfeits its
    /// lease for the rest of its term.
    pub fn lease_ms(&self) -> u64 {
        let ppm = 1_000_000u64;
        assert!(
            self.clock_drift_bound_ppm * 2 < ppm,
            "a drift bound of {} ppm leaves no lease",
            self.clock_drift_bound_ppm
        );
        self.election_timeout_ms_min * (ppm - 2 * self.clock_drift_bound_ppm) / ppm
    }
}

/// What survived on disk: the hard state, the newest snapshot (its metadata
/// and bytes) and the WAL's entries, all durable. A new cluster starts from a
/// snapshot at `EntryId::ZERO` whose membership holds the first voters.
/// Entries at or below the snapshot are skipped; the rest are kept only if
/// they follow the snapshot (the WAL holds its last entry, or starts right
/// after it with a term no older), else dropped as superseded (§5.1). So a
/// driver that compacts its WAL keeps the entry at the snapshot's index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub hard_state: HardState,
    pub snapshot: SnapshotMeta,
    pub snapshot_data: Vec<u8>,
    pub entries: Vec<Entry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_presets_pass_the_check_and_leave_a_lease() {
        for config in [Config::new(NodeId(1), 0), Config::test_min(NodeId(1), 0)] {
            config.check();
            assert!(config.lease_ms() < config.election_timeout_ms_min);
            assert!(config.lease_ms() > 0);
        }
        assert_eq!(Config::new(NodeId(1), 0).lease_ms(), 900, "E (1 - 2 * 5%)");
    }

    #[test]
    #[should_panic(expected = "must be shorter than the shortest election timeout")]
    fn a_heartbeat_as_long_as_an_election_timeout_is_refused() {
        let mut config = Config::test_min(NodeId(1), 0);
        config.heartbeat_interval_ms = config.election_timeout_ms_min;
        config.check();
    }
}
