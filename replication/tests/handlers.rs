//! Handler tests: a group in a given state, one input, the exact outputs
//! (openraft's style). Each names the rule it guards.

mod common;

use keel_replication::{
    AppendResult, Config, Entry, EntryId, EntryPayload, Envelope, Group, HardState, Input,
    LogIndex, MembershipChange, Message, NodeId, NotLeader, Output, ProposalId, ReadId, Refusal,
    Restored, Role, SnapshotMeta, Term,
};

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);

/// Long after any election timeout of `Config::test_min`.
const LATER_MS: u64 = 10_000;

fn id(term: u64, index: u64) -> EntryId {
    EntryId::new(term, index)
}

fn command(term: u64, index: u64) -> Entry {
    Entry {
        id: id(term, index),
        payload: EntryPayload::Command(format!("c{index}").as_bytes().into()),
    }
}

fn noop(term: u64, index: u64) -> Entry {
    Entry {
        id: id(term, index),
        payload: EntryPayload::Noop,
    }
}

/// Node `own` of {1, 2, 3}, in `term`, with `log` (entries of the given
/// terms), started at time 0.
fn group_with(config: Config, term: u64, voted_for: Option<NodeId>, terms: &[u64]) -> Group {
    let entries = terms
        .iter()
        .enumerate()
        .map(|(position, term)| command(*term, position as u64 + 1))
        .collect();
    let restored = Restored {
        hard_state: HardState {
            term: Term(term),
            voted_for,
        },
        entries,
        ..common::bootstrap(&[1, 2, 3])
    };
    let mut group = Group::new(config, restored);
    step(&mut group, 0, Input::Tick);
    group
}

fn group(own: NodeId, term: u64, terms: &[u64]) -> Group {
    group_with(Config::test_min(own, 1), term, None, terms)
}

fn step(group: &mut Group, now_ms: u64, input: Input) -> Vec<Output> {
    let mut out = Vec::new();
    group.step(now_ms, input, &mut out);
    out
}

fn envelope(from: NodeId, to: NodeId, term: u64, message: Message) -> Envelope {
    Envelope {
        from,
        to,
        term: Term(term),
        message,
    }
}

fn receive(from: NodeId, to: NodeId, term: u64, message: Message) -> Input {
    Input::Receive(envelope(from, to, term, message))
}

fn hard(term: u64, voted_for: Option<NodeId>) -> HardState {
    HardState {
        term: Term(term),
        voted_for,
    }
}

fn persist_hard(term: u64, voted_for: Option<NodeId>) -> Output {
    Output::Persist {
        hard_state: Some(hard(term, voted_for)),
        entries: Vec::new(),
    }
}

fn append(prev: EntryId, entries: Vec<Entry>, commit: u64, read_round: u64) -> Message {
    Message::Append {
        prev,
        entries,
        commit: LogIndex(commit),
        read_round,
    }
}

fn ok(matched: EntryId, read_round: u64) -> Message {
    Message::AppendReply {
        result: AppendResult::Ok { matched },
        read_round,
    }
}

/// n1 wins the election of `term + 1` with n2's votes; every output so far
/// dropped. Its no-op is at `terms.len() + 1`, not yet durable.
fn leader_with(config: Config, term: u64, terms: &[u64]) -> Group {
    let mut group = group_with(config, term, None, terms);
    step(&mut group, LATER_MS, Input::Tick);
    assert_eq!(group.role(), Role::PreCandidate);
    let granted = Message::PreVoteReply { granted: true };
    step(&mut group, LATER_MS, receive(N2, N1, term + 1, granted));
    assert_eq!(group.role(), Role::Candidate);
    let granted = Message::VoteReply { granted: true };
    step(&mut group, LATER_MS, receive(N2, N1, term + 1, granted));
    assert_eq!(group.role(), Role::Leader);
    group
}

fn leader(term: u64, terms: &[u64]) -> Group {
    leader_with(Config::test_min(N1, 1), term, terms)
}

/// A leader of term 2 (log: its no-op at 1) whose no-op is durable on it and
/// on n2, hence committed; n2 and n3 stream (n3 acknowledged nothing).
fn settled_leader(config: Config) -> Group {
    let mut group = leader_with(config, 1, &[]);
    step(&mut group, LATER_MS, Input::Durable { through: id(2, 1) });
    step(&mut group, LATER_MS, receive(N2, N1, 2, ok(id(2, 1), 0)));
    assert_eq!(group.commit(), id(2, 1));
    group
}

// --- Elections (§3.4, §9.6, §4.2.3) ---

#[test]
fn an_election_timeout_asks_for_pre_votes_without_raising_the_term() {
    let mut group = group(N1, 3, &[1, 3]);
    let out = step(&mut group, LATER_MS, Input::Tick);
    let pre_vote = |to| Output::Send(envelope(N1, to, 4, Message::PreVote { last: id(3, 2) }));
    assert_eq!(out, vec![pre_vote(N2), pre_vote(N3)]);
    assert_eq!(group.hard_state(), hard(3, None), "the term is not adopted");
}

#[test]
fn a_pre_vote_majority_starts_a_campaign_whose_requests_wait_for_the_durable_vote() {
    let mut group = group(N1, 3, &[1, 3]);
    step(&mut group, LATER_MS, Input::Tick);
    let granted = Message::PreVoteReply { granted: true };
    let out = step(&mut group, LATER_MS, receive(N2, N1, 4, granted));
    let vote = |to| {
        let message = Message::Vote {
            last: id(3, 2),
            transfer: false,
        };
        Output::SendAfterDurable(envelope(N1, to, 4, message))
    };
    assert_eq!(out, vec![persist_hard(4, Some(N1)), vote(N2), vote(N3)]);
}

#[test]
fn a_vote_is_sent_only_after_it_is_durable() {
    let mut group = group(N1, 3, &[1, 3]);
    let request = Message::Vote {
        last: id(3, 2),
        transfer: false,
    };
    let out = step(&mut group, LATER_MS, receive(N2, N1, 4, request));
    let reply = envelope(N1, N2, 4, Message::VoteReply { granted: true });
    assert_eq!(
        out,
        vec![
            persist_hard(4, None),
            persist_hard(4, Some(N2)),
            Output::SendAfterDurable(reply)
        ]
    );
}

#[test]
fn a_vote_is_refused_to_a_less_up_to_date_log() {
    let mut group = group(N1, 3, &[1, 3]);
    let request = Message::Vote {
        last: id(2, 5),
        transfer: false,
    };
    let out = step(&mut group, LATER_MS, receive(N2, N1, 4, request));
    let reply = envelope(N1, N2, 4, Message::VoteReply { granted: false });
    assert_eq!(out, vec![persist_hard(4, None), Output::Send(reply)]);
}

#[test]
fn one_vote_per_term_even_across_a_restart() {
    let mut group = group_with(Config::test_min(N1, 1), 4, Some(N2), &[1, 3]);
    let request = Message::Vote {
        last: id(3, 2),
        transfer: false,
    };
    let out = step(&mut group, LATER_MS, receive(N3, N1, 4, request));
    let reply = envelope(N1, N3, 4, Message::VoteReply { granted: false });
    assert_eq!(out, vec![Output::Send(reply)]);
}

#[test]
fn a_node_that_hears_a_leader_ignores_vote_requests() {
    let mut group = group(N1, 3, &[1, 3]);
    let heartbeat = append(id(3, 2), Vec::new(), 0, 0);
    step(&mut group, LATER_MS, receive(N2, N1, 3, heartbeat));
    let request = Message::Vote {
        last: id(3, 2),
        transfer: false,
    };
    let out = step(&mut group, LATER_MS + 10, receive(N3, N1, 4, request));
    assert_eq!(out, vec![], "ignored: no term change, no reply");
    assert_eq!(group.term(), Term(3));
    let pre_vote = Message::PreVote { last: id(3, 2) };
    let out = step(&mut group, LATER_MS + 10, receive(N3, N1, 4, pre_vote));
    let refused = envelope(N1, N3, 3, Message::PreVoteReply { granted: false });
    assert_eq!(out, vec![Output::Send(refused)]);
}

#[test]
fn a_transfer_campaign_is_granted_despite_a_live_leader() {
    let mut group = group(N1, 3, &[1, 3]);
    let heartbeat = append(id(3, 2), Vec::new(), 0, 0);
    step(&mut group, LATER_MS, receive(N2, N1, 3, heartbeat));
    let request = Message::Vote {
        last: id(3, 2),
        transfer: true,
    };
    let out = step(&mut group, LATER_MS + 10, receive(N3, N1, 4, request));
    let reply = envelope(N1, N3, 4, Message::VoteReply { granted: true });
    assert_eq!(
        out,
        vec![
            persist_hard(4, None),
            persist_hard(4, Some(N3)),
            Output::SendAfterDurable(reply)
        ]
    );
}

#[test]
fn a_new_leader_appends_a_noop_and_ships_it_while_its_own_write_runs() {
    let mut group = group(N1, 3, &[1, 3]);
    step(&mut group, LATER_MS, Input::Tick);
    let granted = Message::PreVoteReply { granted: true };
    step(&mut group, LATER_MS, receive(N2, N1, 4, granted));
    let granted = Message::VoteReply { granted: true };
    let out = step(&mut group, LATER_MS, receive(N2, N1, 4, granted));
    let send = |to| {
        Output::Send(envelope(
            N1,
            to,
            4,
            append(id(3, 2), vec![noop(4, 3)], 0, 0),
        ))
    };
    assert_eq!(
        out,
        vec![
            Output::Persist {
                hard_state: None,
                entries: vec![noop(4, 3)]
            },
            send(N2),
            send(N3)
        ]
    );
}

// --- Commit (§3.6.2, §10.2.1) ---

#[test]
fn the_leader_counts_itself_only_after_its_own_durable() {
    let mut group = leader(1, &[]);
    let out = step(&mut group, LATER_MS, receive(N2, N1, 2, ok(id(2, 1), 0)));
    assert_eq!(out, vec![], "n2 alone is not a majority of three");
    let out = step(&mut group, LATER_MS, Input::Durable { through: id(2, 1) });
    assert_eq!(out, vec![Output::Commit { through: id(2, 1) }]);
}

#[test]
fn figure_8_an_older_terms_entry_does_not_commit_by_count() {
    let mut group = leader(2, &[1, 2]);
    step(&mut group, LATER_MS, Input::Durable { through: id(3, 3) });
    let out = step(&mut group, LATER_MS, receive(N2, N1, 3, ok(id(2, 2), 0)));
    let send = append(id(2, 2), vec![noop(3, 3)], 0, 0);
    assert_eq!(
        out,
        vec![Output::Send(envelope(N1, N2, 3, send))],
        "2.2 is on n1 and n2, a majority, but of term 2: no Commit"
    );
    let out = step(&mut group, LATER_MS, receive(N2, N1, 3, ok(id(3, 3), 0)));
    assert_eq!(out, vec![Output::Commit { through: id(3, 3) }]);
}

// --- Replication (§3.5, §10.2.2) ---

#[test]
fn a_mismatched_prev_is_rejected_with_a_hint_that_skips_a_term() {
    let mut group = group(N1, 3, &[1, 1, 2, 2]);
    let out = step(
        &mut group,
        LATER_MS,
        receive(N2, N1, 3, append(id(3, 6), vec![], 0, 7)),
    );
    let reject = |hint| {
        let message = Message::AppendReply {
            result: AppendResult::Reject { hint },
            read_round: 7,
        };
        Output::Send(envelope(N1, N2, 3, message))
    };
    assert_eq!(out, vec![reject(id(2, 4))], "past the end");
    let out = step(
        &mut group,
        LATER_MS,
        receive(N2, N1, 3, append(id(1, 4), vec![], 0, 7)),
    );
    assert_eq!(out, vec![reject(id(1, 2))], "term 2 conflicts as a whole");
}

#[test]
fn a_conflicting_suffix_is_cut_and_replaced_and_acked_after_durable() {
    let mut group = group(N1, 3, &[1, 2, 2]);
    let message = append(id(1, 1), vec![command(3, 2)], 1, 0);
    let out = step(&mut group, LATER_MS, receive(N2, N1, 3, message));
    assert_eq!(
        out,
        vec![
            Output::Cut { after: id(1, 1) },
            Output::Persist {
                hard_state: None,
                entries: vec![command(3, 2)]
            },
            Output::Commit { through: id(1, 1) },
            Output::SendAfterDurable(envelope(N1, N2, 3, ok(id(3, 2), 0)))
        ]
    );
}

#[test]
fn a_duplicate_append_persists_nothing_but_still_acks_after_durable() {
    let mut group = group(N1, 3, &[1, 2]);
    let message = append(id(1, 1), vec![command(2, 2)], 0, 0);
    let out = step(&mut group, LATER_MS, receive(N2, N1, 3, message));
    assert_eq!(
        out,
        vec![Output::SendAfterDurable(envelope(
            N1,
            N2,
            3,
            ok(id(2, 2), 0)
        ))]
    );
}

#[test]
fn a_follower_commits_no_further_than_what_the_append_proved_matches() {
    let mut group = group(N1, 3, &[1, 1, 1]);
    let message = append(id(1, 1), vec![], 3, 0);
    let out = step(&mut group, LATER_MS, receive(N2, N1, 3, message));
    assert_eq!(
        out,
        vec![
            Output::Commit { through: id(1, 1) },
            Output::SendAfterDurable(envelope(N1, N2, 3, ok(id(1, 1), 0)))
        ],
        "entries 2 and 3 may differ from the leader's"
    );
}

#[test]
#[should_panic(expected = "never cut at or below the commit index")]
fn a_cut_at_or_below_the_commit_index_panics() {
    let mut group = group(N1, 3, &[1, 1, 1]);
    step(
        &mut group,
        LATER_MS,
        receive(N2, N1, 3, append(id(1, 3), vec![], 3, 0)),
    );
    step(
        &mut group,
        LATER_MS,
        receive(N2, N1, 3, append(id(1, 1), vec![command(3, 2)], 3, 0)),
    );
}

#[test]
fn a_rejection_probes_from_the_hint() {
    let mut group = leader(2, &[1, 1, 2, 2]);
    let reject = Message::AppendReply {
        result: AppendResult::Reject { hint: id(1, 3) },
        read_round: 0,
    };
    let out = step(&mut group, LATER_MS, receive(N2, N1, 3, reject));
    let probe = append(
        id(1, 2),
        vec![command(2, 3), command(2, 4), noop(3, 5)],
        0,
        0,
    );
    assert_eq!(out, vec![Output::Send(envelope(N1, N2, 3, probe))]);
}

#[test]
fn flow_control_stops_sending_at_the_in_flight_byte_bound() {
    let mut group = settled_leader(Config::test_min(N1, 1));
    let command: keel_replication::CommandBytes = vec![0u8; 200].into();
    let proposals = (0..20).map(|n| (ProposalId(n), command.clone())).collect();
    let out = step(&mut group, LATER_MS, Input::ProposeBatch { proposals });
    let bytes_to_n2: u64 = out
        .iter()
        .filter_map(|output| match output {
            Output::Send(Envelope {
                to: N2,
                message: Message::Append { entries, .. },
                ..
            }) => Some(
                entries
                    .iter()
                    .map(keel_replication::entry_bytes)
                    .sum::<u64>(),
            ),
            _ => None,
        })
        .sum();
    let entry = keel_replication::ENTRY_OVERHEAD_BYTES + 200;
    assert_eq!(
        bytes_to_n2,
        5 * entry,
        "one entry per append (256 B), 1024 B window"
    );
    let persisted = out
        .iter()
        .filter(|o| matches!(o, Output::Persist { .. }))
        .count();
    assert_eq!(persisted, 1, "one Persist for the batch");
}

// --- Reads (§6.4) ---

fn read(read: u64) -> Input {
    Input::Read { read: ReadId(read) }
}

fn ready(read: u64, index: u64) -> Output {
    Output::ReadReady {
        read: ReadId(read),
        result: Ok(LogIndex(index)),
    }
}

fn heartbeat(to: NodeId, matched: EntryId, round: u64) -> Output {
    Output::Send(envelope(N1, to, 2, append(matched, vec![], 1, round)))
}

#[test]
fn reads_wait_for_a_round_and_one_round_serves_all_that_waited() {
    let mut group = settled_leader(Config::test_min(N1, 1));
    let out = step(&mut group, LATER_MS, read(1));
    assert_eq!(
        out,
        vec![heartbeat(N2, id(2, 1), 1), heartbeat(N3, EntryId::ZERO, 1)],
        "read 1 starts round 1"
    );
    assert_eq!(step(&mut group, LATER_MS, read(2)), vec![]);
    assert_eq!(step(&mut group, LATER_MS, read(3)), vec![]);
    let out = step(&mut group, LATER_MS, receive(N2, N1, 2, ok(id(2, 1), 1)));
    assert_eq!(
        out,
        vec![
            ready(1, 1),
            heartbeat(N2, id(2, 1), 2),
            heartbeat(N3, EntryId::ZERO, 2)
        ],
        "round 1 serves read 1; reads 2 and 3 came after it began: round 2"
    );
    let out = step(&mut group, LATER_MS, receive(N2, N1, 2, ok(id(2, 1), 2)));
    assert_eq!(out, vec![ready(2, 1), ready(3, 1)], "one round, both reads");
}

#[test]
fn a_new_leader_answers_reads_only_after_its_noop_commits() {
    let mut group = leader(1, &[]);
    step(&mut group, LATER_MS, read(1));
    let out = step(&mut group, LATER_MS, receive(N2, N1, 2, ok(id(2, 1), 1)));
    assert_eq!(
        out,
        vec![],
        "round 1 confirmed, but the no-op is not committed"
    );
    let out = step(&mut group, LATER_MS, Input::Durable { through: id(2, 1) });
    assert_eq!(out, vec![Output::Commit { through: id(2, 1) }, ready(1, 1)]);
}

#[test]
fn a_follower_refuses_reads_and_proposals_naming_the_leader() {
    let mut group = group(N1, 3, &[1]);
    step(
        &mut group,
        LATER_MS,
        receive(N2, N1, 3, append(id(1, 1), vec![], 0, 0)),
    );
    let not_leader = NotLeader { leader: Some(N2) };
    assert_eq!(
        step(&mut group, LATER_MS, read(1)),
        vec![Output::ReadReady {
            read: ReadId(1),
            result: Err(not_leader)
        }]
    );
    let propose = Input::Propose {
        proposal: ProposalId(4),
        command: b"x".as_slice().into(),
    };
    assert_eq!(
        step(&mut group, LATER_MS, propose),
        vec![Output::Resolve {
            proposal: ProposalId(4),
            result: Err(Refusal::NotLeader(not_leader))
        }]
    );
}

#[test]
fn a_lease_serves_reads_without_a_round_until_it_expires() {
    let mut config = Config::test_min(N1, 1);
    config.lease_reads = true;
    let mut group = settled_leader(config.clone());
    step(&mut group, LATER_MS, read(1));
    step(&mut group, LATER_MS, receive(N2, N1, 2, ok(id(2, 1), 1)));
    let lease_end_ms = LATER_MS + config.lease_ms();
    assert_eq!(
        step(&mut group, lease_end_ms - 1, read(2)),
        vec![ready(2, 1)]
    );
    let out = step(&mut group, lease_end_ms, read(3));
    assert_eq!(
        out,
        vec![heartbeat(N2, id(2, 1), 2), heartbeat(N3, EntryId::ZERO, 2)],
        "expired: back to a round"
    );
}

// --- Transfer (§3.10), membership (§4.1), stale terms ---

#[test]
fn transfer_sends_timeout_now_once_the_target_is_caught_up() {
    let mut group = settled_leader(Config::test_min(N1, 1));
    let out = step(&mut group, LATER_MS, Input::TransferLeadership { to: N2 });
    assert_eq!(
        out,
        vec![Output::Send(envelope(N1, N2, 2, Message::TimeoutNow))]
    );
}

#[test]
fn timeout_now_starts_a_transfer_campaign_at_once() {
    let mut group = group(N2, 2, &[2]);
    step(
        &mut group,
        LATER_MS,
        receive(N1, N2, 2, append(id(2, 1), vec![], 1, 0)),
    );
    let out = step(
        &mut group,
        LATER_MS,
        receive(N1, N2, 2, Message::TimeoutNow),
    );
    let vote = |to| {
        let message = Message::Vote {
            last: id(2, 1),
            transfer: true,
        };
        Output::SendAfterDurable(envelope(N2, to, 3, message))
    };
    assert_eq!(out, vec![persist_hard(3, Some(N2)), vote(N1), vote(N3)]);
}

#[test]
fn one_uncommitted_membership_change_at_a_time() {
    let mut group = settled_leader(Config::test_min(N1, 1));
    let change = |proposal, node| Input::ChangeMembership {
        proposal: ProposalId(proposal),
        change: MembershipChange::AddLearner(NodeId(node)),
    };
    let out = step(&mut group, LATER_MS, change(1, 4));
    assert!(matches!(
        out[..2],
        [Output::Persist { .. }, Output::MembershipChanged(_)]
    ));
    assert_eq!(
        step(&mut group, LATER_MS, change(2, 5)),
        vec![Output::Resolve {
            proposal: ProposalId(2),
            result: Err(Refusal::MembershipChangePending)
        }]
    );
    let remove_stranger = Input::ChangeMembership {
        proposal: ProposalId(3),
        change: MembershipChange::Remove(NodeId(9)),
    };
    step(&mut group, LATER_MS, Input::Durable { through: id(2, 2) });
    step(&mut group, LATER_MS, receive(N2, N1, 2, ok(id(2, 2), 0)));
    assert_eq!(
        step(&mut group, LATER_MS, remove_stranger),
        vec![Output::Resolve {
            proposal: ProposalId(3),
            result: Err(Refusal::InvalidChange)
        }]
    );
}

#[test]
fn an_append_of_an_older_term_is_answered_with_the_newer_term() {
    let mut group = group(N1, 5, &[1]);
    let out = step(
        &mut group,
        LATER_MS,
        receive(N2, N1, 4, append(id(1, 1), vec![], 0, 0)),
    );
    let reject = Message::AppendReply {
        result: AppendResult::Reject {
            hint: EntryId::ZERO,
        },
        read_round: 0,
    };
    assert_eq!(out, vec![Output::Send(envelope(N1, N2, 5, reject))]);
}

// --- Snapshots (§5.1) ---

fn chunk(offset: u64, data: &[u8], done: bool) -> Input {
    let meta = SnapshotMeta {
        last: id(2, 9),
        membership: common::bootstrap(&[1, 2, 3]).snapshot.membership,
    };
    receive(
        N2,
        N1,
        3,
        Message::Snapshot {
            meta,
            offset,
            data: data.to_vec(),
            done,
        },
    )
}

fn snapshot_reply(received: u64, installed: bool) -> Output {
    let message = Message::SnapshotReply {
        last: id(2, 9),
        received,
        installed,
    };
    Output::SendAfterDurable(envelope(N1, N2, 3, message))
}

#[test]
fn snapshot_chunks_resume_from_what_the_follower_holds() {
    let mut group = group(N1, 3, &[1]);
    assert_eq!(
        step(&mut group, LATER_MS, chunk(0, b"abcd", false)),
        vec![snapshot_reply(4, false)]
    );
    let gap = step(&mut group, LATER_MS, chunk(8, b"ijkl", true));
    assert_eq!(gap, vec![snapshot_reply(4, false)], "a gap: resend from 4");
    let overlap = step(&mut group, LATER_MS, chunk(2, b"cdef", false));
    assert_eq!(
        overlap,
        vec![snapshot_reply(6, false)],
        "overlap: only the new bytes"
    );
    let out = step(&mut group, LATER_MS, chunk(6, b"gh", true));
    let meta = SnapshotMeta {
        last: id(2, 9),
        membership: common::bootstrap(&[1, 2, 3]).snapshot.membership,
    };
    assert_eq!(
        out,
        vec![
            Output::InstallSnapshot {
                meta,
                data: b"abcdefgh".to_vec()
            },
            snapshot_reply(8, true)
        ]
    );
    assert_eq!(group.commit(), id(2, 9));
    assert_eq!(
        group.last(),
        id(2, 9),
        "entry 1.1 conflicted with the snapshot: dropped"
    );
}

#[test]
fn a_malformed_append_is_dropped_without_a_panic() {
    let mut group = group(N1, 3, &[1]);
    let gap = append(id(1, 1), vec![command(3, 3)], 0, 0);
    assert_eq!(step(&mut group, LATER_MS, receive(N2, N1, 3, gap)), vec![]);
    let backwards = append(id(3, 1), vec![command(2, 2)], 0, 0);
    assert_eq!(
        step(&mut group, LATER_MS, receive(N2, N1, 3, backwards)),
        vec![]
    );
    assert_eq!(group.last(), id(1, 1), "nothing appended");
}

/// §4.1: a node that its newest configuration removed still campaigns while
/// that configuration is uncommitted (it may be needed to commit it), without
/// counting its own vote; a learner never campaigns.
#[test]
fn a_node_removed_by_an_uncommitted_configuration_still_campaigns() {
    let config_entry = |voters: &[u64], learners: &[u64]| Entry {
        id: id(1, 2),
        payload: EntryPayload::Membership(Box::new(keel_replication::Membership {
            voters: common::ids(voters),
            learners: common::ids(learners),
        })),
    };
    let restored = |entry| Restored {
        hard_state: hard(1, None),
        entries: vec![command(1, 1), entry],
        ..common::bootstrap(&[1, 2, 3])
    };
    let mut removed = Group::new(
        Config::test_min(N1, 1),
        restored(config_entry(&[2, 3], &[])),
    );
    step(&mut removed, 0, Input::Tick);
    let out = step(&mut removed, LATER_MS, Input::Tick);
    let pre_vote = |to| Output::Send(envelope(N1, to, 2, Message::PreVote { last: id(1, 2) }));
    assert_eq!(out, vec![pre_vote(N2), pre_vote(N3)]);
    let mut learner = Group::new(
        Config::test_min(N1, 1),
        restored(config_entry(&[2, 3], &[1])),
    );
    step(&mut learner, 0, Input::Tick);
    assert_eq!(learner.next_deadline_ms(), None);
    assert_eq!(step(&mut learner, LATER_MS, Input::Tick), vec![]);
}

/// §4.2.1: a learner is promoted only once it holds everything committed.
#[test]
fn a_learner_that_lags_is_not_promoted() {
    let mut group = settled_leader(Config::test_min(N1, 1));
    let n4 = NodeId(4);
    let change = |proposal, change| Input::ChangeMembership {
        proposal: ProposalId(proposal),
        change,
    };
    step(
        &mut group,
        LATER_MS,
        change(1, MembershipChange::AddLearner(n4)),
    );
    step(&mut group, LATER_MS, Input::Durable { through: id(2, 2) });
    step(&mut group, LATER_MS, receive(N2, N1, 2, ok(id(2, 2), 0)));
    assert_eq!(group.commit(), id(2, 2), "n4 is a learner");
    let refused = step(
        &mut group,
        LATER_MS,
        change(2, MembershipChange::Promote(n4)),
    );
    assert_eq!(
        refused,
        vec![Output::Resolve {
            proposal: ProposalId(2),
            result: Err(Refusal::LearnerBehind)
        }]
    );
    step(&mut group, LATER_MS, receive(n4, N1, 2, ok(id(2, 2), 0)));
    let promoted = step(
        &mut group,
        LATER_MS,
        change(3, MembershipChange::Promote(n4)),
    );
    assert!(matches!(
        promoted[..],
        [
            Output::Persist { .. },
            Output::MembershipChanged(_),
            Output::Resolve { result: Ok(_), .. },
            ..
        ]
    ));
}

/// A leader that steps down fails the reads waiting for a round, naming the
/// new leader.
#[test]
fn a_deposed_leader_fails_its_waiting_reads() {
    let mut group = settled_leader(Config::test_min(N1, 1));
    step(&mut group, LATER_MS, read(1));
    let newer = append(id(2, 1), vec![], 1, 0);
    let out = step(&mut group, LATER_MS, receive(N2, N1, 3, newer));
    assert_eq!(
        out[..2],
        [
            persist_hard(3, None),
            Output::ReadReady {
                read: ReadId(1),
                result: Err(NotLeader { leader: Some(N2) })
            }
        ]
    );
    assert_eq!(group.role(), Role::Follower);
}

/// A sole voter has nobody to wait for: it campaigns at its first tick (so a
/// restarted single node serves at once) and, with its own vote a majority,
/// leads in that same step, its no-op appended.
#[test]
fn a_sole_voter_elects_itself_at_its_first_tick() {
    let restored = Restored {
        hard_state: HardState {
            term: Term(4),
            voted_for: Some(N1),
        },
        entries: vec![command(4, 1)],
        ..common::bootstrap(&[1])
    };
    let mut group = Group::new(Config::new(N1, 1), restored);
    let out = step(&mut group, 7, Input::Tick);
    assert_eq!(
        out,
        vec![
            Output::Persist {
                hard_state: Some(HardState {
                    term: Term(5),
                    voted_for: Some(N1)
                }),
                entries: Vec::new(),
            },
            Output::Persist {
                hard_state: None,
                entries: vec![noop(5, 2)],
            },
        ]
    );
    assert_eq!(group.role(), Role::Leader);
    let mut voters = group_with(Config::new(N1, 1), 4, None, &[4]);
    assert_eq!(
        voters.role(),
        Role::Follower,
        "one of three waits out its timeout"
    );
    assert!(step(&mut voters, 7, Input::Tick).is_empty());
}
