//! Protocol scenarios on a tiny hand-driven cluster, each the dissertation's
//! figure or rule it is named for.

mod common;

use common::Cluster;
use keel_replication::{
    EntryId, EntryPayload, Envelope, Input, MembershipChange, Message, NodeId, Output, ProposalId,
    Refusal, Role, Term,
};

/// Lets `id` campaign until it wins (a first campaign may only teach it a
/// newer term that a pre-vote reply carried). A leader cut off from it may
/// still believe it leads an older term.
fn elect(cluster: &mut Cluster, id: u64) {
    for _ in 0..3 {
        cluster.forget_leaders();
        cluster.campaign(id);
        if cluster.group(id).role() == Role::Leader {
            break;
        }
    }
    assert_eq!(cluster.group(id).role(), Role::Leader, "n{id} wins");
    let term = cluster.group(id).term();
    for other in cluster.leaders() {
        if other != NodeId(id) {
            assert!(
                cluster.nodes[&other].group.term() < term,
                "one leader per term"
            );
        }
    }
}

#[test]
fn a_three_node_cluster_elects_one_leader_and_commits() {
    let mut cluster = Cluster::new(3);
    cluster.run_until(1_000);
    let leaders = cluster.leaders();
    assert_eq!(leaders.len(), 1, "one leader: {leaders:?}");
    let leader = leaders[0].0;
    cluster.propose(leader, 1, b"x");
    cluster.deliver_all();
    cluster.run_until(1_100);
    for id in 1..=3 {
        let commit = cluster.group(id).commit();
        assert_eq!(
            commit,
            cluster.group(leader).last(),
            "n{id} committed everything"
        );
        let entry = cluster
            .node(id)
            .disk
            .entry(commit.index.0)
            .expect("on disk");
        assert_eq!(entry.payload, EntryPayload::Command(b"x".as_slice().into()));
    }
}

/// Figure 3.7 (the paper's Figure 8): an entry of an earlier term that
/// reaches a majority must not commit by counting, since a candidate whose
/// log ends in a later term can still win and overwrite it. Here n1 appends
/// X alone; n5 wins a later term and puts its no-op at X's index (nowhere
/// else); n1 wins again and gets X onto n2 and n3, a majority, but not its
/// own no-op; then n5 wins once more and overwrites X on n2. One entry per
/// append, so that X travels without the no-op. Returns X, what n1 reported
/// committed, and what n2 holds at X's index in the end.
fn figure_8(config: fn(NodeId) -> keel_replication::Config) -> (EntryId, Vec<EntryId>, EntryId) {
    let mut cluster = Cluster::with_config(5, config);
    elect(&mut cluster, 1);
    // (a) n1 appends X, which reaches no one.
    cluster.isolate(&[1]);
    cluster.propose(1, 1, b"X");
    cluster.deliver_all();
    let x = cluster.node(1).disk.last();
    // (b) n1 crashes; n5 wins with n3 and n4 and appends its no-op at X's
    // index, which goes nowhere.
    cluster.crash(1);
    cluster.heal();
    cluster.isolate(&[3, 4, 5]);
    let appends_from = |from: u64| {
        move |envelope: &Envelope| {
            envelope.from == NodeId(from) && matches!(envelope.message, Message::Append { .. })
        }
    };
    cluster.drop_if = Some(Box::new(appends_from(5)));
    elect(&mut cluster, 5);
    cluster.drop_if = None;
    cluster.crash(5);
    let y = cluster.node(5).disk.last();
    assert_eq!(y.index, x.index, "n5's no-op sits at X's index");
    assert!(y.term > x.term);
    // (c) n1 returns and wins with n2 and n3, which get X but not its no-op:
    // its first probe (after X, which they lack) is rejected, and every later
    // append carrying the no-op is lost.
    cluster.restart(1);
    cluster.heal();
    cluster.isolate(&[1, 2, 3]);
    let probed = std::cell::RefCell::new(std::collections::BTreeSet::new());
    cluster.drop_if = Some(Box::new(move |envelope: &Envelope| {
        match &envelope.message {
            Message::Append { entries, .. } => {
                let has_noop = entries
                    .iter()
                    .any(|entry| entry.payload == EntryPayload::Noop);
                has_noop && !probed.borrow_mut().insert(envelope.to)
            }
            _ => false,
        }
    }));
    elect(&mut cluster, 1);
    cluster.run_until(cluster.now_ms + 30);
    cluster.drop_if = None;
    for id in [2, 3] {
        assert_eq!(
            cluster.node(id).disk.last(),
            x,
            "n{id} has X and nothing after"
        );
    }
    let n1_commits = cluster.node(1).commits.clone();
    // (d) n1 crashes; n5 returns and wins with n2 and n4, overwriting X.
    cluster.crash(1);
    cluster.restart(5);
    cluster.heal();
    cluster.isolate(&[2, 4, 5]);
    elect(&mut cluster, 5);
    cluster.run_until(cluster.now_ms + 50);
    assert!(cluster.group(5).commit().index >= y.index, "n5 commits");
    let at_x = cluster
        .node(2)
        .disk
        .entry(x.index.0)
        .expect("n2 has the index")
        .id;
    (x, n1_commits, at_x)
}

/// One entry per append.
fn one_entry_per_append(id: NodeId) -> keel_replication::Config {
    let mut config = common::test_config(id);
    config.append_bytes_max = 1;
    config
}

#[test]
fn figure_8_an_old_term_entry_on_a_majority_does_not_commit() {
    let (x, n1_commits, at_x) = figure_8(one_entry_per_append);
    assert!(
        n1_commits.iter().all(|commit| commit.index < x.index),
        "X was on a majority (n1, n2, n3) but of an old term: not committed ({n1_commits:?})"
    );
    assert_ne!(
        at_x, x,
        "n5's entry replaced X on n2, safely: X never committed"
    );
}

/// The planted `commit-previous-term-by-count` bug commits X in (c) (and n2
/// learns so from a heartbeat); in (d) n5 then overwrites the committed X on
/// n2, the safety violation Figure 3.7 warns of, which n2's assert refuses.
#[cfg(feature = "planted-bugs")]
#[test]
#[should_panic(expected = "never cut at or below the commit index 2: cut after 1.1")]
fn figure_8_with_the_planted_bug_loses_a_committed_entry() {
    fn planted(id: NodeId) -> keel_replication::Config {
        let mut config = one_entry_per_append(id);
        config.plant = Some(keel_replication::Plant::CommitPreviousTermByCount);
        config
    }
    figure_8(planted);
}

/// §9.6 and §6.2: a node partitioned away keeps failing pre-votes without
/// raising its term, so on rejoining it cannot depose the leader; and the
/// leader, isolated, steps down within an election timeout (check-quorum).
#[test]
fn a_partitioned_node_rejoins_without_deposing_the_leader() {
    let mut cluster = Cluster::new(3);
    elect(&mut cluster, 1);
    let term = cluster.group(1).term();
    cluster.isolate(&[3]);
    cluster.run_until(cluster.now_ms + 2_000);
    assert_eq!(
        cluster.group(3).term(),
        term,
        "pre-votes failed, term unchanged"
    );
    assert_ne!(cluster.group(3).role(), Role::Leader);
    cluster.heal();
    cluster.run_until(cluster.now_ms + 500);
    assert_eq!(cluster.leaders(), vec![NodeId(1)], "n1 still leads");
    assert_eq!(cluster.group(1).term(), term, "in the same term");
    assert_eq!(cluster.group(3).leader(), Some(NodeId(1)));
    // Check-quorum: the leader cut off from everyone steps down.
    cluster.isolate(&[1]);
    cluster.run_until(cluster.now_ms + 250);
    assert_eq!(cluster.group(1).role(), Role::Follower, "n1 stepped down");
}

/// §3.10: the leader brings the target up to date, stops taking proposals,
/// and the target wins at once with `TimeoutNow`.
#[test]
fn leadership_transfer_hands_over_and_refuses_proposals_meanwhile() {
    let mut cluster = Cluster::new(3);
    elect(&mut cluster, 1);
    let term = cluster.group(1).term();
    cluster.isolate(&[1, 3]);
    cluster.step(NodeId(1), Input::TransferLeadership { to: NodeId(2) });
    let refused = cluster.propose(1, 9, b"late");
    assert_eq!(
        refused,
        vec![Output::Resolve {
            proposal: ProposalId(9),
            result: Err(Refusal::Transferring { to: NodeId(2) }),
        }]
    );
    cluster.heal();
    cluster.run_until(cluster.now_ms + 15);
    assert_eq!(cluster.leaders(), vec![NodeId(2)], "n2 took over");
    assert_eq!(cluster.group(2).term(), Term(term.0 + 1));
    assert_eq!(cluster.group(1).leader(), Some(NodeId(2)));
}

/// A transfer to a target that never answers is abandoned after an election
/// timeout, and proposals are taken again.
#[test]
fn a_transfer_to_an_unreachable_node_is_aborted() {
    let mut cluster = Cluster::new(3);
    elect(&mut cluster, 1);
    cluster.isolate(&[2]);
    cluster.step(NodeId(1), Input::TransferLeadership { to: NodeId(2) });
    cluster.run_until(cluster.now_ms + 250);
    assert_eq!(cluster.leaders(), vec![NodeId(1)]);
    let resolved = cluster.propose(1, 1, b"again");
    assert!(matches!(resolved[0], Output::Resolve { result: Ok(_), .. }));
}

/// §4.2.2: the leader removes itself, leads until the change commits without
/// counting itself, then steps down and never campaigns; the others elect a
/// leader among themselves.
#[test]
fn removing_the_leader() {
    let mut cluster = Cluster::new(3);
    elect(&mut cluster, 1);
    let change = Input::ChangeMembership {
        proposal: ProposalId(1),
        change: MembershipChange::Remove(NodeId(1)),
    };
    let out = cluster.step(NodeId(1), change);
    assert!(matches!(out[0], Output::Persist { .. }));
    cluster.deliver_all();
    assert_eq!(
        cluster.group(1).role(),
        Role::Follower,
        "stepped down once committed"
    );
    assert_eq!(
        cluster.group(1).next_deadline_ms(),
        None,
        "no longer a voter"
    );
    assert_eq!(cluster.group(2).membership().voters, common::ids(&[2, 3]));
    cluster.run_until(cluster.now_ms + 1_000);
    let leaders = cluster.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], NodeId(1));
}

/// §4.2.1: a learner gets the log without voting, then is promoted.
#[test]
fn a_learner_catches_up_and_is_promoted() {
    let mut cluster = Cluster::new(3);
    elect(&mut cluster, 1);
    cluster.crash(3);
    let add = |proposal, change| Input::ChangeMembership {
        proposal: ProposalId(proposal),
        change,
    };
    // n3 is made a learner by removing it and adding it back.
    cluster.step(NodeId(1), add(1, MembershipChange::Remove(NodeId(3))));
    cluster.deliver_all();
    cluster.restart(3);
    cluster.step(NodeId(1), add(2, MembershipChange::AddLearner(NodeId(3))));
    cluster.run_until(cluster.now_ms + 50);
    assert_eq!(
        cluster.group(3).last(),
        cluster.group(1).last(),
        "caught up"
    );
    assert_eq!(
        cluster.group(3).next_deadline_ms(),
        None,
        "a learner never campaigns"
    );
    let out = cluster.step(NodeId(1), add(3, MembershipChange::Promote(NodeId(3))));
    assert!(matches!(out.last(), Some(Output::Send(_))));
    cluster.run_until(cluster.now_ms + 50);
    assert_eq!(
        cluster.group(3).membership().voters,
        common::ids(&[1, 2, 3])
    );
    assert!(
        cluster.group(3).next_deadline_ms().is_some(),
        "a voter again"
    );
}

/// §5.1: a follower whose missing entries were compacted gets the snapshot in
/// chunks; a lost chunk is resent from what the follower holds.
#[test]
fn a_lagging_follower_gets_the_snapshot_in_chunks() {
    let mut cluster = Cluster::new(3);
    elect(&mut cluster, 1);
    cluster.isolate(&[3]);
    for proposal in 0..20 {
        cluster.propose(1, proposal, &[proposal as u8; 10]);
        cluster.deliver_all();
    }
    let commit = cluster.group(1).commit();
    let meta = keel_replication::SnapshotMeta {
        last: commit,
        membership: cluster.group(1).membership().clone(),
    };
    let data: Vec<u8> = (0..300u32).map(|byte| byte as u8).collect();
    let compacted = Input::Compacted {
        meta: meta.clone(),
        data: data.clone(),
    };
    cluster.step(NodeId(1), compacted);
    cluster.heal();
    // Lose the first chunk sent: the heartbeat after resends it.
    cluster.run_until(cluster.now_ms + 10);
    cluster.drop_queued();
    cluster.run_until(cluster.now_ms + 100);
    let installed: Vec<_> = cluster
        .node(3)
        .events
        .iter()
        .filter_map(|event| match event {
            Output::InstallSnapshot { meta, data } => Some((meta.clone(), data.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(installed, vec![(meta, data)], "the whole snapshot, once");
    assert_eq!(cluster.group(3).last(), cluster.group(1).last());
    assert_eq!(cluster.group(3).commit(), cluster.group(1).commit());
}

/// Two candidates, n2 and n3, campaign in the same term of five nodes; n1
/// votes for n2, crashes and restarts, and is then asked by n3. With
/// `flush_first` n1's vote is durable before the crash. Returns the leaders
/// of that term.
fn rival_candidates(
    config: fn(NodeId) -> keel_replication::Config,
    flush_first: bool,
) -> Vec<NodeId> {
    let mut cluster = Cluster::with_config(5, config);
    cluster.instant_durability = false;
    cluster.forget_leaders();
    for id in [2, 3] {
        let deadline = cluster.group(id).next_deadline_ms().expect("a voter");
        cluster.now_ms = cluster.now_ms.max(deadline);
        cluster.step(NodeId(id), Input::Tick);
    }
    cluster.deliver_all(); // Pre-votes change nothing: both may campaign.
    let term = cluster.group(2).term();
    assert_eq!(cluster.group(3).term(), term, "both campaign in one term");
    cluster.flush(NodeId(2));
    cluster.deliver_one(2, 1);
    cluster.deliver_one(2, 4);
    cluster.flush(NodeId(4));
    if flush_first {
        cluster.flush(NodeId(1));
    }
    cluster.deliver_one(4, 2);
    cluster.deliver_one(1, 2);
    cluster.crash(1);
    cluster.restart(1);
    cluster.forget_leaders();
    cluster.flush(NodeId(3)); // n3's vote requests go out only now.
    cluster.deliver_one(3, 5);
    cluster.flush(NodeId(5));
    cluster.deliver_one(5, 3);
    cluster.deliver_one(3, 1);
    cluster.flush(NodeId(1));
    cluster.deliver_one(1, 3);
    cluster
        .leaders()
        .into_iter()
        .filter(|id| cluster.nodes[id].group.term() == term)
        .collect()
}

/// §3.4 and §3.8: a vote is sent only once durable, and a restarted node
/// remembers it, so two rivals never both win one term.
#[test]
fn a_vote_survives_a_crash_so_rivals_cannot_both_win() {
    for flush_first in [false, true] {
        let leaders = rival_candidates(common::test_config, flush_first);
        assert!(leaders.len() <= 1, "one leader per term: {leaders:?}");
    }
}

#[cfg(feature = "planted-bugs")]
fn planted_config(plant: keel_replication::Plant) -> impl Fn(NodeId) -> keel_replication::Config {
    move |id| {
        let mut config = common::test_config(id);
        config.plant = Some(plant);
        config
    }
}

/// The planted `vote-before-persist` bug: n1's vote reaches n2, is lost in
/// the crash, and n1 votes again for n3: two leaders in one term.
#[cfg(feature = "planted-bugs")]
#[test]
fn a_vote_sent_before_it_is_durable_elects_two_leaders() {
    fn config(id: NodeId) -> keel_replication::Config {
        planted_config(keel_replication::Plant::VoteBeforePersist)(id)
    }
    let leaders = rival_candidates(config, false);
    assert_eq!(leaders, vec![NodeId(2), NodeId(3)]);
}

/// The planted `forget-vote-on-restart` bug: n1's durable vote is forgotten
/// on restart, and it votes again for n3: two leaders in one term.
#[cfg(feature = "planted-bugs")]
#[test]
fn a_vote_forgotten_on_restart_elects_two_leaders() {
    fn config(id: NodeId) -> keel_replication::Config {
        planted_config(keel_replication::Plant::ForgetVoteOnRestart)(id)
    }
    let leaders = rival_candidates(config, true);
    assert_eq!(leaders, vec![NodeId(2), NodeId(3)]);
}

/// §3.5's log-matching check: n1 appended X alone and crashed; n2 led the
/// next term and put its no-op Y at X's index alone and crashed; n1 leads
/// again (with n3) and probes n2 with `prev` = X. Returns n1's and n2's
/// entry ids at X's index and the one after, once n2 has caught up.
fn divergent_prev(config: fn(NodeId) -> keel_replication::Config) -> [[EntryId; 2]; 2] {
    let mut cluster = Cluster::with_config(3, config);
    elect(&mut cluster, 1);
    cluster.isolate(&[1]);
    cluster.propose(1, 1, b"X");
    cluster.crash(1);
    cluster.heal();
    let appends_from_2 = |envelope: &Envelope| {
        envelope.from == NodeId(2) && matches!(envelope.message, Message::Append { .. })
    };
    cluster.drop_if = Some(Box::new(appends_from_2));
    elect(&mut cluster, 2);
    cluster.drop_if = None;
    cluster.crash(2);
    cluster.restart(1);
    elect(&mut cluster, 1);
    cluster.restart(2);
    cluster.run_until(cluster.now_ms + 50);
    let x = cluster.node(3).disk.entry(2).expect("n3 has X").id;
    let at = |id: u64| {
        let disk = &cluster.node(id).disk;
        [
            disk.entry(2).expect("index 2").id,
            disk.entry(3).expect("index 3").id,
        ]
    };
    assert_eq!(at(1)[0], x);
    [at(1), at(2)]
}

#[test]
fn a_follower_whose_prev_differs_rejects_and_is_repaired() {
    let [n1, n2] = divergent_prev(common::test_config);
    assert_eq!(n1, n2, "n2's Y was cut and replaced by n1's entries");
}

/// The planted `skip-log-matching` bug: n2 appends n1's next entry after its
/// own Y; the logs share an entry but differ before it.
#[cfg(feature = "planted-bugs")]
#[test]
fn skipping_the_log_matching_check_breaks_log_matching() {
    fn config(id: NodeId) -> keel_replication::Config {
        planted_config(keel_replication::Plant::SkipLogMatching)(id)
    }
    let [n1, n2] = divergent_prev(config);
    assert_eq!(n1[1], n2[1], "the same entry at index 3");
    assert_ne!(n1[0], n2[0], "but different entries at index 2");
}

/// §6.4: n1, cut off, still believes it leads while n2 and n3 elect n2 and
/// commit W. A read that begins at n1 after W committed must not be served
/// from n1's stale state. Returns n1's answer to it, if any.
fn read_at_a_deposed_leader(config: fn(NodeId) -> keel_replication::Config) -> Vec<Output> {
    let mut cluster = Cluster::with_config(3, config);
    elect(&mut cluster, 1);
    cluster.isolate(&[1]);
    elect(&mut cluster, 2);
    cluster.propose(2, 1, b"W");
    cluster.deliver_all();
    let w = cluster.group(2).last();
    assert_eq!(cluster.group(2).commit(), w, "W committed");
    assert_eq!(
        cluster.group(1).role(),
        Role::Leader,
        "n1 has not noticed yet"
    );
    let answer = cluster.step(
        NodeId(1),
        Input::Read {
            read: keel_replication::ReadId(1),
        },
    );
    answer
        .into_iter()
        .filter(|output| matches!(output, Output::ReadReady { .. }))
        .collect()
}

#[test]
fn a_deposed_leader_cannot_confirm_a_read() {
    assert_eq!(read_at_a_deposed_leader(common::test_config), vec![]);
}

/// The planted `read-index-without-heartbeat` bug answers at once, at a
/// commit index below W: a stale read.
#[cfg(feature = "planted-bugs")]
#[test]
fn a_read_index_without_a_heartbeat_serves_a_stale_read() {
    fn config(id: NodeId) -> keel_replication::Config {
        planted_config(keel_replication::Plant::ReadIndexWithoutHeartbeat)(id)
    }
    let answer = read_at_a_deposed_leader(config);
    assert_eq!(
        answer,
        vec![Output::ReadReady {
            read: keel_replication::ReadId(1),
            result: Ok(keel_replication::LogIndex(1)),
        }],
        "n1's commit index: its no-op, not W"
    );
}
