//! The node's counters and histograms, shared by its cores, and their
//! Prometheus text rendering.
//!
//! Each value is an atomic that cores add to without locking; a scrape or an
//! `INFO` reads them as they are (no snapshot across values is promised).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (microseconds) of the fsync latency histogram's buckets.
pub const FSYNC_BUCKETS_US: [u64; 12] = [
    50, 100, 200, 300, 500, 750, 1_000, 2_000, 5_000, 10_000, 50_000, 250_000,
];
/// Upper bounds (entries) of the group-commit batch size histogram's buckets.
pub const BATCH_BUCKETS_ENTRIES: [u64; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 512, 4096];
/// Upper bounds (microseconds) of the snapshot pause histogram's buckets.
pub const SNAPSHOT_PAUSE_BUCKETS_US: [u64; 8] = [
    1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// A Prometheus histogram with fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// One count per bound, plus one for values above the last.
    counts: Vec<AtomicU64>,
    sum: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Histogram {
        assert!(
            bounds.windows(2).all(|pair| pair[0] < pair[1]),
            "histogram bounds ascend"
        );
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: u64) {
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }

    pub fn sum(&self) -> u64 {
        self.sum.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count());
        let _ = writeln!(
            out,
            "{name}_sum {}\n{name}_count {}",
            self.sum(),
            self.count()
        );
    }
}

/// Everything the node counts.
#[derive(Debug)]
pub struct NodeMetrics {
    pub commands: AtomicU64,
    pub writes: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    pub connections_moved: AtomicU64,
    pub accept_errors: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub auth_failures: AtomicU64,
    pub expired_keys: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub fsync_us: Histogram,
    pub batch_entries: Histogram,
    pub snapshots: AtomicU64,
    pub snapshot_pause_us: Histogram,
    pub peer_messages_sent: AtomicU64,
    pub peer_bytes_sent: AtomicU64,
    pub peer_messages_received: AtomicU64,
    pub peer_send_dropped: AtomicU64,
    pub peer_receive_dropped: AtomicU64,
    pub peer_connections: AtomicU64,
    pub peer_handshake_refusals: AtomicU64,
    pub peer_protocol_errors: AtomicU64,
    pub forwarded_commands: AtomicU64,
    pub forward_copies_dropped: AtomicU64,
}

impl Default for NodeMetrics {
    fn default() -> NodeMetrics {
        NodeMetrics {
            commands: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_moved: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            expired_keys: AtomicU64::new(0),
            wal_bytes: AtomicU64::new(0),
            fsync_us: Histogram::new(&FSYNC_BUCKETS_US),
            batch_entries: Histogram::new(&BATCH_BUCKETS_ENTRIES),
            snapshots: AtomicU64::new(0),
            snapshot_pause_us: Histogram::new(&SNAPSHOT_PAUSE_BUCKETS_US),
            peer_messages_sent: AtomicU64::new(0),
            peer_bytes_sent: AtomicU64::new(0),
            peer_messages_received: AtomicU64::new(0),
            peer_send_dropped: AtomicU64::new(0),
            peer_receive_dropped: AtomicU64::new(0),
            peer_connections: AtomicU64::new(0),
            peer_handshake_refusals: AtomicU64::new(0),
            peer_protocol_errors: AtomicU64::new(0),
            forwarded_commands: AtomicU64::new(0),
            forward_copies_dropped: AtomicU64::new(0),
        }
    }
}

/// Figures that are read from the shards at scrape time, not counted.
#[derive(Debug, Default)]
pub struct Gauges {
    pub connected_clients: u64,
    pub keys: u64,
    /// Entries appended but not yet durable, summed over shards.
    pub durability_lag_entries: u64,
    /// Seconds since the oldest shard's last snapshot (or since start-up).
    pub snapshot_age_seconds: u64,
}

impl NodeMetrics {
    pub fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition format, version 0.0.4.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        let counters = [
            ("keel_commands_total", "Commands executed.", &self.commands),
            (
                "keel_writes_total",
                "Entries appended to the WAL.",
                &self.writes,
            ),
            (
                "keel_connections_accepted_total",
                "Client connections accepted.",
                &self.connections_accepted,
            ),
            (
                "keel_connections_refused_total",
                "Client connections refused at the limit.",
                &self.connections_refused,
            ),
            (
                "keel_connections_moved_total",
                "Client connections moved to the core that owns their keys.",
                &self.connections_moved,
            ),
            (
                "keel_accept_errors_total",
                "Failed accepts (each pauses accepting on its core).",
                &self.accept_errors,
            ),
            (
                "keel_protocol_errors_total",
                "Connections closed for a protocol error.",
                &self.protocol_errors,
            ),
            (
                "keel_auth_failures_total",
                "AUTH and HELLO AUTH refused for a wrong user or password.",
                &self.auth_failures,
            ),
            (
                "keel_expired_keys_total",
                "Keys removed by active expiry.",
                &self.expired_keys,
            ),
            (
                "keel_wal_bytes_total",
                "Bytes written to the WAL, padding included.",
                &self.wal_bytes,
            ),
            (
                "keel_snapshots_total",
                "Snapshots written.",
                &self.snapshots,
            ),
            (
                "keel_peer_messages_sent_total",
                "Replication messages written to peer connections.",
                &self.peer_messages_sent,
            ),
            (
                "keel_peer_bytes_sent_total",
                "Bytes written to peer connections, transport headers included.",
                &self.peer_bytes_sent,
            ),
            (
                "keel_peer_messages_received_total",
                "Replication messages received from peers and queued for the shards.",
                &self.peer_messages_received,
            ),
            (
                "keel_peer_send_dropped_total",
                "Messages to peers dropped at the send queue (full, unknown peer, too large).",
                &self.peer_send_dropped,
            ),
            (
                "keel_peer_receive_dropped_total",
                "Messages from peers dropped because the core's inbox was full.",
                &self.peer_receive_dropped,
            ),
            (
                "keel_peer_connections_total",
                "Peer connections established (handshake passed).",
                &self.peer_connections,
            ),
            (
                "keel_peer_handshake_refusals_total",
                "Peer handshakes refused, by either side (wrong cluster, node, shape, password).",
                &self.peer_handshake_refusals,
            ),
            (
                "keel_peer_protocol_errors_total",
                "Peer connections closed for bytes that are not a transport frame, and peer messages dropped that did not decode.",
                &self.peer_protocol_errors,
            ),
            (
                "keel_forwarded_commands_total",
                "Commands this node forwarded to the leader of their shard.",
                &self.forwarded_commands,
            ),
            (
                "keel_forward_copies_dropped_total",
                "Commands forwarded to this node that it dropped as copies of ones it had taken (or as too late to tell).",
                &self.forward_copies_dropped,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                Self::get(counter)
            );
        }
        let gauges = [
            (
                "keel_connected_clients",
                "Open client connections.",
                gauges.connected_clients,
            ),
            (
                "keel_keys",
                "Keys stored, expired ones not yet removed included.",
                gauges.keys,
            ),
            (
                "keel_durability_lag_entries",
                "Entries applied but not yet fdatasync'ed.",
                gauges.durability_lag_entries,
            ),
            (
                "keel_snapshot_age_seconds",
                "Age of the oldest shard's newest snapshot.",
                gauges.snapshot_age_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        self.fsync_us.render(
            &mut out,
            "keel_fsync_duration_us",
            "WAL write + fdatasync time per group commit, microseconds.",
        );
        self.batch_entries.render(
            &mut out,
            "keel_group_commit_entries",
            "Entries per group commit.",
        );
        self.snapshot_pause_us.render(
            &mut out,
            "keel_snapshot_pause_us",
            "Time a shard stops serving to encode a snapshot, microseconds.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_in_the_text_format() {
        let metrics = NodeMetrics::default();
        metrics.fsync_us.observe(40);
        metrics.fsync_us.observe(150);
        metrics.fsync_us.observe(1_000_000);
        let text = metrics.render(&Gauges::default());
        assert!(text.contains("keel_fsync_duration_us_bucket{le=\"50\"} 1\n"));
        assert!(text.contains("keel_fsync_duration_us_bucket{le=\"200\"} 2\n"));
        assert!(text.contains("keel_fsync_duration_us_bucket{le=\"250000\"} 2\n"));
        assert!(text.contains("keel_fsync_duration_us_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("keel_fsync_duration_us_count 3\n"));
        assert!(text.contains("keel_fsync_duration_us_sum 1000190\n"));
    }
}
