//! Keel's consensus core: a pure, synchronous Raft state machine whose log is the
//! write-ahead log of `keel-wal`. Not built yet: see the replication issue.
