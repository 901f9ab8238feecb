//! Linearizable reads (§6.4): ReadIndex, batched into rounds, and optional
//! leases (§6.4.1).
//!
//! A read arriving at the leader waits for (1) the commit of the no-op of the
//! leader's term, since until then the leader may not know the newest commit
//! index, and (2) a majority's acknowledgement of a read round started after
//! it arrived, which proves no newer leader had committed anything when it
//! arrived. Every append carries the newest round; one round serves every
//! read waiting for it. Then the read may be served once the state machine
//! has applied its index.

use crate::group::{Group, PendingRead, Role};
use crate::interface::{NotLeader, Output};
use crate::types::ReadId;

impl Group {
    pub(crate) fn on_read(&mut self, now_ms: u64, read: ReadId, out: &mut Vec<Output>) {
        let unconfirmed = self.planted(crate::Plant::ReadIndexWithoutHeartbeat);
        let Some(lead) = self.lead.as_mut() else {
            let result = Err(NotLeader {
                leader: self.leader,
            });
            out.push(Output::ReadReady { read, result });
            return;
        };
        let commit = self.log.commit();
        let noop_committed = commit >= lead.noop_index;
        let leased = self.config.lease_reads
            && !lead.lease_forfeited
            && now_ms < lead.lease_until_ms
            && noop_committed;
        if leased || unconfirmed {
            out.push(Output::ReadReady {
                read,
                result: Ok(commit),
            });
            return;
        }
        let pending = PendingRead {
            read,
            index: commit.max(lead.noop_index),
            round: lead.read_round + 1,
        };
        lead.reads.push_back(pending);
        if lead.confirmed_round == lead.read_round {
            // No round is outstanding: start one now for this read (and any
            // that join it before it is confirmed).
            self.start_read_round(now_ms);
            self.broadcast_heartbeat(out);
            self.check_reads(now_ms, out);
        }
    }

    /// Starts a new read round; the next appends carry it.
    pub(crate) fn start_read_round(&mut self, now_ms: u64) {
        let lead = self
            .lead
            .as_mut()
            .expect("only a leader starts read rounds");
        lead.read_round += 1;
        lead.round_sent_ms.push_back((lead.read_round, now_ms));
    }

    fn broadcast_heartbeat(&mut self, out: &mut Vec<Output>) {
        let lead = self.lead.as_ref().expect("only a leader sends heartbeats");
        let followers: Vec<_> = lead.progress.keys().copied().collect();
        for follower in followers {
            self.send_heartbeat(follower, out);
        }
    }

    /// The newest read round a majority of voters acknowledged (the leader
    /// acknowledges each of its own rounds as it starts it).
    fn quorum_round(&self) -> u64 {
        let lead = self.lead.as_ref().expect("only a leader counts rounds");
        let mut rounds: Vec<u64> = self
            .membership
            .voters
            .iter()
            .map(|voter| match lead.progress.get(voter) {
                Some(progress) => progress.acked_round,
                None if *voter == self.config.id => lead.read_round,
                None => 0,
            })
            .collect();
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        rounds
            .get(self.membership.voters.len() / 2)
            .copied()
            .unwrap_or(0)
    }

    /// Serves every read whose round a majority acknowledged and whose index
    /// committed; extends the lease; starts the next round if reads wait.
    pub(crate) fn check_reads(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        if self.role != Role::Leader {
            return;
        }
        let confirmed = self.quorum_round();
        let lease_ms = self.config.lease_ms();
        let commit = self.log.commit();
        let lead = self.lead.as_mut().expect("a leader leads");
        if confirmed > lead.confirmed_round {
            lead.confirmed_round = confirmed;
            while let Some(&(round, sent_ms)) = lead.round_sent_ms.front() {
                if round > confirmed {
                    break;
                }
                lead.round_sent_ms.pop_front();
                if !lead.lease_forfeited {
                    lead.lease_until_ms = lead.lease_until_ms.max(sent_ms + lease_ms);
                }
            }
        }
        while let Some(pending) = lead.reads.front() {
            if pending.round > lead.confirmed_round || pending.index > commit {
                break;
            }
            out.push(Output::ReadReady {
                read: pending.read,
                result: Ok(pending.index),
            });
            lead.reads.pop_front();
        }
        let waiting_for_new_round = lead
            .reads
            .back()
            .is_some_and(|pending| pending.round > lead.read_round);
        if waiting_for_new_round && lead.confirmed_round == lead.read_round {
            self.start_read_round(now_ms);
            self.broadcast_heartbeat(out);
            self.check_reads(now_ms, out);
        }
    }

    /// After the leader's commit index moved: reads may be served, and a
    /// leader whose removal committed steps down (§4.2.2).
    pub(crate) fn on_leader_commit(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        self.check_reads(now_ms, out);
        let removed = !self.membership.voters.contains(&self.config.id)
            && self.membership_index <= self.log.commit();
        if removed {
            self.become_follower(now_ms, self.hard.term, None, out);
        }
    }
}
