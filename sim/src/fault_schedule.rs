//! A cluster's network and node faults over time, drawn from a seed: what the
//! cluster simulation applies to its peer network (`peer_net`, in madsim builds) and
//! its hosts. Pure: [`FaultSchedule::draw`] is a function of the seed and the
//! [`ScheduleConfig`], so a seed names its schedule.
//!
//! Shape of a schedule: the per-message faults ([`LinkFaults`]) hold from 0
//! to [`ScheduleConfig::fault_ms`]; beside them, episodes follow one another,
//! each one partition, pause or kill, begun and ended within its own slot of
//! the fault phase. So at most one node is down (killed or paused) at a time,
//! a minority of any cluster of three or more, and at `fault_ms` the network
//! is whole and every node up: the calm in which a cluster must recover.

use keel_engine::node::io::PeerId;
use keel_wal::memory::SplitMix64;

use crate::network_faults::{LinkFaults, Partition};

/// One change to the cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Every link draws these per-message faults from now on.
    Links(LinkFaults),
    /// These links carry nothing until [`Fault::Heal`].
    Partition(Partition),
    Heal,
    /// The node's tasks stop running (madsim's pause); its sockets stay.
    Pause(PeerId),
    Resume(PeerId),
    /// The node's tasks and sockets are gone (madsim's kill) until restarted;
    /// its peers' messages to it are lost meanwhile.
    Kill(PeerId),
    Restart(PeerId),
}

/// A fault and when it strikes, in ms from the schedule's start.
#[derive(Clone, Debug, PartialEq)]
pub struct TimedFault {
    pub at_ms: u64,
    pub fault: Fault,
}

/// The faults a schedule may draw, each switched on or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultKinds {
    pub loss: bool,
    pub duplicate: bool,
    pub reorder: bool,
    /// Random halves: the members shuffled and split.
    pub halves: bool,
    /// One node cut off from all the others.
    pub isolate: bool,
    /// Two sides and a node that reaches both (three members or more).
    pub bridge: bool,
    /// One direction of one link.
    pub one_way: bool,
    pub pause: bool,
    pub kill: bool,
}

impl FaultKinds {
    pub const ALL: FaultKinds = FaultKinds {
        loss: true,
        duplicate: true,
        reorder: true,
        halves: true,
        isolate: true,
        bridge: true,
        one_way: true,
        pause: true,
        kill: true,
    };
    pub const NONE: FaultKinds = FaultKinds {
        loss: false,
        duplicate: false,
        reorder: false,
        halves: false,
        isolate: false,
        bridge: false,
        one_way: false,
        pause: false,
        kill: false,
    };
}

/// The kinds of episode, in the order [`FaultSchedule::draw`] picks from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Episode {
    Halves,
    Isolate,
    Bridge,
    OneWay,
    Pause,
    Kill,
}

/// What a schedule is drawn within.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleConfig {
    /// The cluster's members (at least two).
    pub members: Vec<PeerId>,
    pub kinds: FaultKinds,
    /// Every fault has ended by then (ms from the start).
    pub fault_ms: u64,
    /// Episodes (partitions, pauses, kills), drawn from this range.
    pub episodes_min: u64,
    pub episodes_max: u64,
    /// The most each switched-on per-message fault may be drawn; each is
    /// drawn between a tenth of it and all of it.
    pub link_faults_max: LinkFaults,
}

impl ScheduleConfig {
    /// Every fault kind over `members`, for `fault_ms`: 2 to 6 episodes, and
    /// up to 10% loss, 5% duplicates and 20% of messages held back up to
    /// 20 ms (a few of Raft's heartbeats).
    pub fn every_fault(members: Vec<PeerId>, fault_ms: u64) -> ScheduleConfig {
        ScheduleConfig {
            members,
            kinds: FaultKinds::ALL,
            fault_ms,
            episodes_min: 2,
            episodes_max: 6,
            link_faults_max: LinkFaults {
                loss: 0.10,
                duplicate: 0.05,
                delay: 0.20,
                delay_us_max: 20_000,
            },
        }
    }

    fn episode_kinds(&self) -> Vec<Episode> {
        let kinds = self.kinds;
        [
            (kinds.halves, Episode::Halves),
            (kinds.isolate, Episode::Isolate),
            (kinds.bridge && self.members.len() >= 3, Episode::Bridge),
            (kinds.one_way, Episode::OneWay),
            (kinds.pause, Episode::Pause),
            (kinds.kill, Episode::Kill),
        ]
        .into_iter()
        .filter_map(|(on, kind)| on.then_some(kind))
        .collect()
    }
}

/// The faults of one run, in time order.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultSchedule {
    faults: Vec<TimedFault>,
}

impl FaultSchedule {
    /// The schedule `seed` names under `config` (module doc: its shape).
    pub fn draw(seed: u64, config: &ScheduleConfig) -> FaultSchedule {
        assert!(
            config.members.len() >= 2,
            "a cluster has two members or more"
        );
        assert!(
            config.episodes_min <= config.episodes_max,
            "episodes_min above episodes_max"
        );
        assert!(
            config.fault_ms >= 2 * config.episodes_max,
            "each episode needs a slot of 2 ms or more"
        );
        config.link_faults_max.assert_valid();
        let mut rng = SplitMix64::new(seed);
        let mut faults = Vec::new();
        let links = draw_link_faults(&mut rng, config);
        if links != LinkFaults::NONE {
            faults.push(TimedFault {
                at_ms: 0,
                fault: Fault::Links(links),
            });
        }
        let kinds = config.episode_kinds();
        let episodes = if kinds.is_empty() {
            0
        } else {
            config.episodes_min + rng.below(config.episodes_max - config.episodes_min + 1)
        };
        let slot_ms = config.fault_ms / episodes.max(1);
        for episode in 0..episodes {
            let kind = kinds[rng.below(kinds.len() as u64) as usize];
            let (begin, end) = draw_episode(&mut rng, kind, &config.members);
            // Begins in the slot's first half, ends before the slot does.
            let slot_start_ms = episode * slot_ms;
            let begin_ms = slot_start_ms + rng.below(slot_ms / 2 + 1);
            let end_ms = begin_ms + 1 + rng.below(slot_start_ms + slot_ms - begin_ms);
            faults.push(TimedFault {
                at_ms: begin_ms,
                fault: begin,
            });
            faults.push(TimedFault {
                at_ms: end_ms.min(config.fault_ms),
                fault: end,
            });
        }
        if links != LinkFaults::NONE {
            faults.push(TimedFault {
                at_ms: config.fault_ms,
                fault: Fault::Links(LinkFaults::NONE),
            });
        }
        // Stable: a fault and its end never swap.
        faults.sort_by_key(|fault| fault.at_ms);
        FaultSchedule { faults }
    }

    /// A scripted schedule: `faults` in time order.
    pub fn from_faults(faults: Vec<TimedFault>) -> FaultSchedule {
        assert!(
            faults.windows(2).all(|pair| pair[0].at_ms <= pair[1].at_ms),
            "a schedule's faults are in time order"
        );
        FaultSchedule { faults }
    }

    pub fn faults(&self) -> &[TimedFault] {
        &self.faults
    }
}

/// Each switched-on per-message fault at a rate in a tenth of its maximum to
/// all of it; the others off.
fn draw_link_faults(rng: &mut SplitMix64, config: &ScheduleConfig) -> LinkFaults {
    let max = config.link_faults_max;
    let mut rate = |on: bool, most: f64| {
        let tenths = 1 + rng.below(10);
        if on {
            most * tenths as f64 / 10.0
        } else {
            0.0
        }
    };
    let loss = rate(config.kinds.loss, max.loss);
    let duplicate = rate(config.kinds.duplicate, max.duplicate);
    let delay = rate(config.kinds.reorder, max.delay);
    LinkFaults {
        loss,
        duplicate,
        delay,
        delay_us_max: if delay > 0.0 { max.delay_us_max } else { 0 },
    }
}

/// An episode's first fault and the one that ends it.
fn draw_episode(rng: &mut SplitMix64, kind: Episode, members: &[PeerId]) -> (Fault, Fault) {
    let mut shuffled = members.to_vec();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let first = shuffled[0];
    match kind {
        Episode::Halves => {
            let split = 1 + rng.below(shuffled.len() as u64 - 1) as usize;
            let (side_a, side_b) = shuffled.split_at(split);
            (
                Fault::Partition(Partition::halves(side_a, side_b)),
                Fault::Heal,
            )
        }
        Episode::Isolate => (
            Fault::Partition(Partition::isolate(first, members)),
            Fault::Heal,
        ),
        Episode::Bridge => {
            let others = &shuffled[1..];
            let split = 1 + rng.below(others.len() as u64 - 1) as usize;
            let (side_a, side_b) = others.split_at(split);
            (
                Fault::Partition(Partition::bridge(first, side_a, side_b)),
                Fault::Heal,
            )
        }
        Episode::OneWay => (
            Fault::Partition(Partition::one_way(first, shuffled[1])),
            Fault::Heal,
        ),
        Episode::Pause => (Fault::Pause(first), Fault::Resume(first)),
        Episode::Kill => (Fault::Kill(first), Fault::Restart(first)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEEDS: u64 = 500;

    fn config(kinds: FaultKinds) -> ScheduleConfig {
        ScheduleConfig {
            kinds,
            ..ScheduleConfig::every_fault(vec![1, 2, 3], 10_000)
        }
    }

    /// Whether the faults end as the module doc promises: episodes one at a
    /// time, each ended; everything over by `fault_ms`.
    fn assert_well_formed(schedule: &FaultSchedule, fault_ms: u64) {
        let mut open: Option<&Fault> = None;
        let mut last_ms = 0;
        for timed in schedule.faults() {
            assert!(
                timed.at_ms >= last_ms && timed.at_ms <= fault_ms,
                "{timed:?}"
            );
            last_ms = timed.at_ms;
            match (&timed.fault, open) {
                (Fault::Links(_), _) => {}
                (Fault::Partition(_) | Fault::Pause(_) | Fault::Kill(_), None) => {
                    open = Some(&timed.fault);
                }
                (Fault::Heal, Some(Fault::Partition(_))) => open = None,
                (Fault::Resume(node), Some(Fault::Pause(paused))) if node == paused => open = None,
                (Fault::Restart(node), Some(Fault::Kill(killed))) if node == killed => open = None,
                (fault, open) => panic!("{fault:?} while {open:?}: {schedule:?}"),
            }
        }
        assert!(open.is_none(), "an episode never ends: {schedule:?}");
        if let Some(TimedFault {
            fault: Fault::Links(links),
            at_ms,
        }) = schedule.faults().last()
        {
            assert_eq!((*links, *at_ms), (LinkFaults::NONE, fault_ms));
        }
    }

    #[test]
    fn a_seed_names_its_schedule() {
        let config = config(FaultKinds::ALL);
        assert_eq!(
            FaultSchedule::draw(7, &config),
            FaultSchedule::draw(7, &config)
        );
        assert_ne!(
            FaultSchedule::draw(7, &config),
            FaultSchedule::draw(8, &config)
        );
    }

    #[test]
    fn every_schedule_is_well_formed_and_draws_every_kind() {
        let config = config(FaultKinds::ALL);
        let mut seen = [false; 6];
        for seed in 0..SEEDS {
            let schedule = FaultSchedule::draw(seed, &config);
            assert_well_formed(&schedule, config.fault_ms);
            for timed in schedule.faults() {
                let kind = match &timed.fault {
                    Fault::Partition(partition)
                        if partition.is_cut(1, 2) != partition.is_cut(2, 1) =>
                    {
                        0
                    }
                    Fault::Partition(_) => 1,
                    Fault::Pause(_) => 2,
                    Fault::Kill(_) => 3,
                    Fault::Links(links) if links.loss > 0.0 && links.duplicate > 0.0 => 4,
                    Fault::Links(_) => 5,
                    _ => continue,
                };
                seen[kind] = true;
            }
        }
        assert_eq!(
            seen, [true; 6],
            "one-way, two-way, pause, kill, link faults, their end"
        );
    }

    #[test]
    fn a_switched_off_fault_is_never_drawn() {
        let only_pauses = FaultKinds {
            pause: true,
            ..FaultKinds::NONE
        };
        for seed in 0..SEEDS {
            let schedule = FaultSchedule::draw(seed, &config(only_pauses));
            assert!(!schedule.faults().is_empty());
            for timed in schedule.faults() {
                assert!(
                    matches!(timed.fault, Fault::Pause(_) | Fault::Resume(_)),
                    "{timed:?}"
                );
            }
        }
        let only_loss = FaultKinds {
            loss: true,
            ..FaultKinds::NONE
        };
        let schedule = FaultSchedule::draw(1, &config(only_loss));
        let Fault::Links(links) = schedule.faults()[0].fault else {
            panic!("{schedule:?}");
        };
        assert!(links.loss > 0.0 && links.duplicate == 0.0 && links.delay == 0.0);
        assert_eq!(
            schedule.faults().len(),
            2,
            "loss on, then off: {schedule:?}"
        );
        assert!(FaultSchedule::draw(1, &config(FaultKinds::NONE))
            .faults()
            .is_empty());
    }

    #[test]
    fn two_members_draw_no_bridge() {
        let config = ScheduleConfig {
            kinds: FaultKinds {
                bridge: true,
                isolate: true,
                ..FaultKinds::NONE
            },
            ..ScheduleConfig::every_fault(vec![1, 2], 1_000)
        };
        for seed in 0..SEEDS {
            let schedule = FaultSchedule::draw(seed, &config);
            assert_well_formed(&schedule, config.fault_ms);
            for timed in schedule.faults() {
                if let Fault::Partition(partition) = &timed.fault {
                    // Either node isolated cuts both directions of the one link.
                    assert_eq!(*partition, Partition::isolate(1, &[1, 2]));
                }
            }
        }
    }
}
