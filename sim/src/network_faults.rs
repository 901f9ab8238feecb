//! What the simulated peer network does to messages, as data: the faults drawn
//! per message on every link ([`LinkFaults`]), the links a partition cuts
//! ([`Partition`]), and the decision for one message ([`LinkFaults::route`]).
//! Pure: the draws come from a [`SplitMix64`] the caller seeds, so the madsim
//! network (`peer_net`, in madsim builds) and plain tests share the same code.

use std::collections::BTreeSet;

use keel_engine::node::io::PeerId;
use keel_wal::memory::SplitMix64;

/// Faults drawn for each message on every link, each a probability in 0..=1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkFaults {
    /// A message is dropped.
    pub loss: f64,
    /// A message is sent twice (each copy then drawn its own delay).
    pub duplicate: f64,
    /// A message is held back by an extra delay of up to
    /// [`delay_us_max`](Self::delay_us_max), so that later ones overtake it.
    pub delay: f64,
    pub delay_us_max: u64,
}

impl LinkFaults {
    /// A network that only takes madsim's latency.
    pub const NONE: LinkFaults = LinkFaults {
        loss: 0.0,
        duplicate: 0.0,
        delay: 0.0,
        delay_us_max: 0,
    };

    /// Asserts that every rate is a probability and that a delay has a bound.
    pub fn assert_valid(&self) {
        for (name, rate) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("delay", self.delay),
        ] {
            assert!(
                (0.0..=1.0).contains(&rate),
                "{name} rate {rate} is not a probability"
            );
        }
        assert!(
            self.delay == 0.0 || self.delay_us_max > 0,
            "a delay rate needs a delay bound"
        );
    }

    /// What happens to one message: dropped, or sent as one or two copies,
    /// each after its extra delay (0 for none).
    pub fn route(&self, rng: &mut SplitMix64) -> Route {
        if rng.chance(self.loss) {
            return Route::Lost;
        }
        let copies = if rng.chance(self.duplicate) { 2 } else { 1 };
        let mut delays_us = [0; 2];
        for delay_us in &mut delays_us[..copies] {
            if rng.chance(self.delay) {
                *delay_us = 1 + rng.below(self.delay_us_max);
            }
        }
        Route::Sent { copies, delays_us }
    }
}

/// The fate of one message, drawn by [`LinkFaults::route`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Lost,
    /// `copies` (1 or 2) copies leave, copy `i` after `delays_us[i]` µs.
    Sent {
        copies: usize,
        delays_us: [u64; 2],
    },
}

/// Directed links that carry nothing while the partition lasts: a message
/// arriving over a cut link is dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Partition {
    cut: BTreeSet<(PeerId, PeerId)>,
}

impl Partition {
    /// Every link between `side_a` and `side_b`, both ways.
    pub fn halves(side_a: &[PeerId], side_b: &[PeerId]) -> Partition {
        let mut partition = Partition::default();
        for &a in side_a {
            assert!(!side_b.contains(&a), "peer {a} is on both sides");
            for &b in side_b {
                partition.cut_one_way(a, b);
                partition.cut_one_way(b, a);
            }
        }
        partition
    }

    /// `node` alone against the rest of `members`.
    pub fn isolate(node: PeerId, members: &[PeerId]) -> Partition {
        let rest: Vec<PeerId> = members.iter().copied().filter(|&m| m != node).collect();
        Partition::halves(&[node], &rest)
    }

    /// Two sides that cannot reach each other, and `bridge`, which reaches
    /// both (the partition of Raft's leader-on-the-bridge cases).
    pub fn bridge(bridge: PeerId, side_a: &[PeerId], side_b: &[PeerId]) -> Partition {
        assert!(
            !side_a.contains(&bridge) && !side_b.contains(&bridge),
            "the bridge {bridge} is on neither side"
        );
        Partition::halves(side_a, side_b)
    }

    /// Only the link from `from` to `to`: `to` hears nothing from `from`,
    /// `from` still hears `to`.
    pub fn one_way(from: PeerId, to: PeerId) -> Partition {
        let mut partition = Partition::default();
        partition.cut_one_way(from, to);
        partition
    }

    /// The same cuts with nodes `a` and `b` trading places: how a harness
    /// aims a drawn partition at a node it picks (the leader) rather than
    /// the one drawn.
    pub fn swapped(&self, a: PeerId, b: PeerId) -> Partition {
        let swap = |node: PeerId| match node {
            _ if node == a => b,
            _ if node == b => a,
            _ => node,
        };
        Partition {
            cut: self
                .cut
                .iter()
                .map(|&(from, to)| (swap(from), swap(to)))
                .collect(),
        }
    }

    fn cut_one_way(&mut self, from: PeerId, to: PeerId) {
        assert_ne!(from, to, "a node's link to itself cannot be cut");
        self.cut.insert((from, to));
    }

    /// Whether a message from `from` to `to` is dropped.
    pub fn is_cut(&self, from: PeerId, to: PeerId) -> bool {
        self.cut.contains(&(from, to))
    }

    /// Whether no link is cut.
    pub fn is_healed(&self) -> bool {
        self.cut.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRAWS: u64 = 100_000;

    fn routes(faults: LinkFaults, seed: u64) -> Vec<Route> {
        let mut rng = SplitMix64::new(seed);
        (0..DRAWS).map(|_| faults.route(&mut rng)).collect()
    }

    fn share(routes: &[Route], pick: impl Fn(&Route) -> bool) -> f64 {
        routes.iter().filter(|route| pick(route)).count() as f64 / routes.len() as f64
    }

    #[test]
    fn each_fault_strikes_at_close_to_its_rate() {
        let faults = LinkFaults {
            loss: 0.2,
            duplicate: 0.1,
            delay: 0.3,
            delay_us_max: 5_000,
        };
        faults.assert_valid();
        let routes = routes(faults, 1);
        let lost = share(&routes, |route| *route == Route::Lost);
        let doubled = share(&routes, |route| {
            matches!(route, Route::Sent { copies: 2, .. })
        });
        let delayed = share(
            &routes,
            |route| matches!(route, Route::Sent { delays_us, .. } if delays_us[0] > 0),
        );
        assert!((lost - 0.2).abs() < 0.01, "lost {lost}");
        // Of the 80% sent, a tenth doubled and 30% delayed.
        assert!((doubled - 0.08).abs() < 0.01, "doubled {doubled}");
        assert!((delayed - 0.24).abs() < 0.01, "delayed {delayed}");
        for route in &routes {
            if let Route::Sent { copies, delays_us } = route {
                assert!(delays_us.iter().all(|&delay| delay <= 5_000));
                assert!(*copies == 2 || delays_us[1] == 0, "{route:?}");
            }
        }
    }

    #[test]
    fn no_faults_send_every_message_once_at_once() {
        let sent_once = Route::Sent {
            copies: 1,
            delays_us: [0, 0],
        };
        assert!(routes(LinkFaults::NONE, 2)
            .iter()
            .all(|route| *route == sent_once));
    }

    #[test]
    fn the_same_seed_draws_the_same_routes() {
        let faults = LinkFaults {
            loss: 0.1,
            duplicate: 0.1,
            delay: 0.1,
            delay_us_max: 100,
        };
        assert_eq!(routes(faults, 3), routes(faults, 3));
        assert_ne!(routes(faults, 3), routes(faults, 4));
    }

    #[test]
    #[should_panic(expected = "not a probability")]
    fn a_rate_above_one_is_refused() {
        LinkFaults {
            loss: 1.5,
            ..LinkFaults::NONE
        }
        .assert_valid();
    }

    #[test]
    fn partitions_cut_the_links_they_name() {
        let members = [1, 2, 3, 4, 5];
        let halves = Partition::halves(&[1, 2], &[3, 4, 5]);
        assert!(halves.is_cut(1, 3) && halves.is_cut(3, 1) && halves.is_cut(2, 5));
        assert!(!halves.is_cut(1, 2) && !halves.is_cut(3, 4));

        let isolated = Partition::isolate(3, &members);
        for other in [1, 2, 4, 5] {
            assert!(isolated.is_cut(3, other) && isolated.is_cut(other, 3));
        }
        assert!(!isolated.is_cut(1, 2));

        let bridged = Partition::bridge(3, &[1, 2], &[4, 5]);
        for side in [1, 2, 4, 5] {
            assert!(!bridged.is_cut(3, side) && !bridged.is_cut(side, 3));
        }
        assert!(bridged.is_cut(1, 4) && bridged.is_cut(5, 2));

        let one_way = Partition::one_way(1, 2);
        assert!(one_way.is_cut(1, 2) && !one_way.is_cut(2, 1));
        let turned = one_way.swapped(1, 3);
        assert!(turned.is_cut(3, 2) && !turned.is_cut(1, 2) && !turned.is_cut(2, 3));
        assert_eq!(isolated.swapped(3, 5), Partition::isolate(5, &members));
        assert!(Partition::default().is_healed() && !one_way.is_healed());
    }
}
