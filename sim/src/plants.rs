//! The bugs `keel-sim --plant NAME` can switch on (with the `planted-bugs`
//! feature): the WAL's ([`keel_wal::planted`]), caught by one node's runs;
//! and the replicated node's ([`keel_engine::node::planted::NodePlant`]) and
//! its consensus core's ([`keel_replication::Plant`]), caught only by a
//! cluster's. Each is thread-local: set it on the thread that runs the
//! simulation.

use keel_engine::node::planted::NodePlant;
use keel_replication::Plant as CorePlant;
use keel_wal::planted::Plant as WalPlant;

/// One planted bug, of any layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plant {
    Wal(WalPlant),
    Node(NodePlant),
    Core(CorePlant),
}

/// Nodes of the runs that can catch a node's or a core's plant: a cluster's
/// smallest that keeps a majority through one node's loss.
pub const CLUSTER_NODES: usize = 3;

impl Plant {
    /// Every plant: the WAL's, the node's, the core's.
    pub fn all() -> Vec<Plant> {
        let wal = WalPlant::ALL.into_iter().map(Plant::Wal);
        let node = NodePlant::ALL.into_iter().map(Plant::Node);
        let core = CorePlant::ALL.into_iter().map(Plant::Core);
        wal.chain(node).chain(core).collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Plant::Wal(plant) => plant.name(),
            Plant::Node(plant) => plant.name(),
            Plant::Core(plant) => plant.name(),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Plant::Wal(plant) => plant.describe(),
            Plant::Node(plant) => plant.describe(),
            Plant::Core(plant) => plant.describe(),
        }
    }

    /// The nodes of the runs that catch it: one for the WAL's, a cluster for
    /// the others (they live in replication).
    pub fn nodes(self) -> usize {
        match self {
            Plant::Wal(_) => 1,
            Plant::Node(_) | Plant::Core(_) => CLUSTER_NODES,
        }
    }

    pub fn from_name(name: &str) -> Option<Plant> {
        Plant::all().into_iter().find(|plant| plant.name() == name)
    }
}

/// Switches `plant` on for this thread, every other plant off.
pub fn set(plant: Option<Plant>) {
    keel_wal::planted::set(match plant {
        Some(Plant::Wal(plant)) => Some(plant),
        _ => None,
    });
    keel_engine::node::planted::set(match plant {
        Some(Plant::Node(plant)) => Some(plant),
        _ => None,
    });
    keel_engine::node::planted::set_core(match plant {
        Some(Plant::Core(plant)) => Some(plant),
        _ => None,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plant_has_a_name_of_its_own() {
        let all = Plant::all();
        for plant in &all {
            assert_eq!(Plant::from_name(plant.name()), Some(*plant));
        }
        let mut names: Vec<&str> = all.iter().map(|plant| plant.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len(), "names are unique across layers");
    }
}
