//! Bugs planted on purpose in the consensus core, so that the cluster
//! simulator can prove its checkers catch real ones.
//!
//! The names always exist; a bug can be switched on only with the
//! `planted-bugs` feature (`Config::plant` exists only then), per group (the
//! simulator runs many clusters on one thread, so the
//! choice travels with the group rather than with the thread, as keel-wal's
//! does). Each bug is a small branch at the real spot that asks
//! `Group::planted`.

/// One planted bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plant {
    CommitWithoutMajority,
    SkipLogMatching,
    VoteBeforePersist,
    CommitPreviousTermByCount,
    ReadIndexWithoutHeartbeat,
    CutBelowCommit,
    ForgetVoteOnRestart,
}

impl Plant {
    pub const ALL: [Plant; 7] = [
        Plant::CommitWithoutMajority,
        Plant::SkipLogMatching,
        Plant::VoteBeforePersist,
        Plant::CommitPreviousTermByCount,
        Plant::ReadIndexWithoutHeartbeat,
        Plant::CutBelowCommit,
        Plant::ForgetVoteOnRestart,
    ];

    /// The name the simulator's command line uses.
    pub fn name(self) -> &'static str {
        match self {
            Plant::CommitWithoutMajority => "commit-without-majority",
            Plant::SkipLogMatching => "skip-log-matching",
            Plant::VoteBeforePersist => "vote-before-persist",
            Plant::CommitPreviousTermByCount => "commit-previous-term-by-count",
            Plant::ReadIndexWithoutHeartbeat => "read-index-without-heartbeat",
            Plant::CutBelowCommit => "cut-below-commit",
            Plant::ForgetVoteOnRestart => "forget-vote-on-restart",
        }
    }

    pub fn from_name(name: &str) -> Option<Plant> {
        Plant::ALL.into_iter().find(|plant| plant.name() == name)
    }

    /// What the bug does, in one line.
    pub fn describe(self) -> &'static str {
        match self {
            Plant::CommitWithoutMajority => {
                "the leader commits the highest index any one voter holds, not a majority's"
            }
            Plant::SkipLogMatching => {
                "a follower appends after `prev` without checking prev's term"
            }
            Plant::VoteBeforePersist => {
                "a vote is sent before the hard state recording it is durable"
            }
            Plant::CommitPreviousTermByCount => {
                "the leader commits an entry of an earlier term by counting replicas (Figure 8)"
            }
            Plant::ReadIndexWithoutHeartbeat => {
                "a leader answers a read at its commit index without confirming it still leads"
            }
            Plant::CutBelowCommit => {
                "a follower drops every entry after an append's last one, even matching, committed ones"
            }
            Plant::ForgetVoteOnRestart => "a restarted node forgets whom it voted for in its term",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_distinct() {
        for plant in Plant::ALL {
            assert_eq!(Plant::from_name(plant.name()), Some(plant));
            assert!(!plant.describe().is_empty());
        }
        assert_eq!(Plant::from_name("no-such-bug"), None);
    }
}
