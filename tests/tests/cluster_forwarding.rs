//! A plain client (one that never spoke Redis Cluster) on any member of a
//! real three-node cluster: its keyed commands and its MULTI/EXEC
//! transactions are answered as the shard's leader answers them, whichever
//! member it is connected to, and so are DBSIZE, KEYS, SCAN, RANDOMKEY and
//! FLUSHALL over every shard; its WATCHed keys are watched by the leader,
//! so another member's write between WATCH and EXEC aborts the EXEC; and
//! WAIT counts the followers that hold its writes, as their leader knows.
//!
//! Every command here is idempotent (SET of a fixed value, GET), so a try
//! that met a change of leader (`-TRYAGAIN`, or `-UNCERTAIN` for a forward
//! its leader did not answer) is repeated; `-MOVED` to a plain client is a
//! failure.

use std::time::{Duration, Instant};

use keel_tests::cluster::LocalCluster;
use keel_tests::{wait_a_moment, RawConnection, Resp};

const MEMBERS: usize = 3;
/// One core per node: three nodes share this machine's CPUs.
const CORES: usize = 1;
/// Two shards: member 1 prefers to lead shard 0, member 2 shard 1, so
/// member 3 follows both and members 1 and 2 follow one each.
const SHARDS: u32 = 2;
/// How long the first elections and the hand-overs to the preferred
/// leaders may take (three debug processes starting at once).
const LEADERS_DEADLINE: Duration = Duration::from_secs(30);
/// How long one command keeps being tried through changes of leader.
const COMMAND_DEADLINE: Duration = Duration::from_secs(20);
/// WAIT's timeout: far above the heartbeat round in which both followers
/// of a shard acknowledge a write.
const WAIT_TIMEOUT_MS: &[u8] = b"10000";

/// `args` on `connection` until an answer that is not a change of leader.
fn answered(connection: &mut RawConnection, args: &[&[u8]]) -> Resp {
    answered_sequence(connection, &[args])
        .pop()
        .expect("one reply")
}

/// `sequence` (sent one command after another on one connection) until
/// its last reply is not a change of leader; every reply of that try.
fn answered_sequence(connection: &mut RawConnection, sequence: &[&[&[u8]]]) -> Vec<Resp> {
    let started = Instant::now();
    loop {
        let replies: Vec<Resp> = sequence
            .iter()
            .map(|args| connection.command(args).expect("the member answers"))
            .collect();
        let last = replies.last().expect("a command was sent");
        let leader_changed = matches!(last, Resp::Error(text)
            if text.starts_with("TRYAGAIN") || text.starts_with("UNCERTAIN"));
        if !leader_changed {
            return replies;
        }
        assert!(
            started.elapsed() < COMMAND_DEADLINE,
            "{sequence:?} kept meeting a change of leader: {last:?}"
        );
        wait_a_moment();
    }
}

fn bulk(text: &str) -> Resp {
    Resp::Bulk(text.as_bytes().to_vec())
}

fn ok() -> Resp {
    Resp::Simple("OK".into())
}

#[test]
fn a_plain_client_on_any_member_gets_every_command_answered_by_the_leaders() {
    let cluster = LocalCluster::start(MEMBERS, CORES, SHARDS, LEADERS_DEADLINE);
    let started = Instant::now();
    while cluster.leader_of(0) != Some(1) || cluster.leader_of(1) != Some(2) {
        assert!(
            started.elapsed() < LEADERS_DEADLINE,
            "the shards never settled on their preferred leaders (1 and 2): {:?}, {:?}",
            cluster.leader_of(0),
            cluster.leader_of(1)
        );
        wait_a_moment();
    }
    for member in 1..=MEMBERS {
        let mut plain = cluster.node(member).raw();
        for (shard, slots) in cluster.shards.iter().enumerate() {
            let key = format!("{{{}}}:single:{member}", slots.tag);
            let value = format!("from member {member}");
            let set: [&[u8]; 3] = [b"SET", key.as_bytes(), value.as_bytes()];
            assert_eq!(answered(&mut plain, &set), ok(), "SET {key} via {member}");
            // Both followers of every shard this connection wrote to come
            // to hold its writes; the leader counts them, also for a
            // member that forwarded the writes and follows the shard.
            assert_eq!(
                answered(&mut plain, &[b"WAIT", b"2", WAIT_TIMEOUT_MS]),
                Resp::Integer(2),
                "WAIT after SET {key} via {member} (leader {:?})",
                cluster.leader_of(shard)
            );
            let get: [&[u8]; 2] = [b"GET", key.as_bytes()];
            assert_eq!(
                answered(&mut plain, &get),
                bulk(&value),
                "GET {key} via {member}"
            );

            let first = format!("{{{}}}:transaction:{member}:a", slots.tag);
            let second = format!("{{{}}}:transaction:{member}:b", slots.tag);
            let replies = answered_sequence(
                &mut plain,
                &[
                    &[b"MULTI"],
                    &[b"SET", first.as_bytes(), b"1"],
                    &[b"PING"],
                    &[b"GET", key.as_bytes()],
                    &[b"SET", second.as_bytes(), b"2"],
                    &[b"GET", first.as_bytes()],
                    &[b"EXEC"],
                ],
            );
            let queued = Resp::Simple("QUEUED".into());
            assert_eq!(
                replies,
                vec![
                    ok(),
                    queued.clone(),
                    queued.clone(),
                    queued.clone(),
                    queued.clone(),
                    queued,
                    Resp::Array(vec![
                        ok(),
                        Resp::Simple("PONG".into()),
                        bulk(&value),
                        ok(),
                        bulk("1"),
                    ]),
                ],
                "MULTI/EXEC on shard {shard} via member {member} (leader {:?})",
                cluster.leader_of(shard)
            );
            let get_second: [&[u8]; 2] = [b"GET", second.as_bytes()];
            assert_eq!(answered(&mut plain, &get_second), bulk("2"));

            // WATCH: the leader watches the keys; a write from another
            // member's connection between WATCH and EXEC aborts it, and
            // without one it runs.
            let watched = format!("{{{}}}:watched:{member}", slots.tag);
            for (round, interfere) in [(0, false), (1, true), (2, false)] {
                let mine = format!("mine {round}");
                let theirs = format!("theirs {round}");
                let replies = answered_sequence(
                    &mut plain,
                    &[
                        &[b"WATCH", watched.as_bytes()],
                        &[b"GET", watched.as_bytes()],
                    ],
                );
                assert_eq!(
                    replies[0],
                    ok(),
                    "WATCH on shard {shard} via member {member}"
                );
                if interfere {
                    let mut other = cluster.node(member % MEMBERS + 1).raw();
                    let set: [&[u8]; 3] = [b"SET", watched.as_bytes(), theirs.as_bytes()];
                    assert_eq!(answered(&mut other, &set), ok());
                }
                let replies = answered_sequence(
                    &mut plain,
                    &[
                        &[b"MULTI"],
                        &[b"SET", watched.as_bytes(), mine.as_bytes()],
                        &[b"EXEC"],
                    ],
                );
                let (expected_exec, expected_value) = if interfere {
                    (Resp::Null, theirs)
                } else {
                    (Resp::Array(vec![ok()]), mine)
                };
                assert_eq!(
                    replies[2], expected_exec,
                    "EXEC after WATCH on shard {shard} via member {member}, interfered: {interfere}"
                );
                let get: [&[u8]; 2] = [b"GET", watched.as_bytes()];
                assert_eq!(answered(&mut plain, &get), bulk(&expected_value));
            }
        }
    }
    // Four keys per member and shard. Every member answers for the whole
    // key space, asking the leader of each shard it does not lead.
    let written = (MEMBERS * cluster.shards.len() * 4) as i64;
    for member in 1..=MEMBERS {
        let mut plain = cluster.node(member).raw();
        assert_eq!(
            answered(&mut plain, &[b"DBSIZE"]),
            Resp::Integer(written),
            "DBSIZE via member {member}"
        );
        let Resp::Array(keys) = answered(&mut plain, &[b"KEYS", b"*"]) else {
            panic!("KEYS answers an array");
        };
        assert_eq!(keys.len() as i64, written, "KEYS * via member {member}");
        let mut scanned = std::collections::BTreeSet::new();
        let mut cursor = b"0".to_vec();
        loop {
            let reply = answered(&mut plain, &[b"SCAN", &cursor, b"COUNT", b"4"]);
            let Resp::Array(mut parts) = reply else {
                panic!("SCAN answers an array: {reply:?}");
            };
            let Some(Resp::Array(found)) = parts.pop() else {
                panic!("SCAN's keys");
            };
            scanned.extend(found.into_iter().map(|key| format!("{key:?}")));
            let Some(Resp::Bulk(next)) = parts.pop() else {
                panic!("SCAN's cursor");
            };
            if next == b"0" {
                break;
            }
            cursor = next;
        }
        assert_eq!(scanned.len() as i64, written, "SCAN via member {member}");
        assert!(
            matches!(answered(&mut plain, &[b"RANDOMKEY"]), Resp::Bulk(_)),
            "RANDOMKEY via member {member}"
        );
    }
    // A cluster-aware connection counts what this member leads, as a
    // Redis Cluster master counts its own slots: member 3 leads nothing.
    let mut aware = cluster.node(3).raw();
    assert_eq!(answered(&mut aware, &[b"READWRITE"]), ok());
    assert_eq!(answered(&mut aware, &[b"DBSIZE"]), Resp::Integer(0));
    // FLUSHALL from a member that leads no shard empties every shard.
    let mut plain = cluster.node(3).raw();
    assert_eq!(answered(&mut plain, &[b"FLUSHALL"]), ok());
    for member in 1..=MEMBERS {
        let mut plain = cluster.node(member).raw();
        assert_eq!(
            answered(&mut plain, &[b"DBSIZE"]),
            Resp::Integer(0),
            "DBSIZE via member {member} after FLUSHALL"
        );
    }
}
