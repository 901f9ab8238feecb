//! The node's planted bugs, which only a simulation of several nodes can
//! catch (a group of one never meets a competing leader), and the consensus
//! core's, reached through the whole node.
//!
//! Switched on per thread, as keel-wal's are (the simulator runs one
//! simulation, every node of it, per thread): [`set`] and [`set_core`].
//! Each driver copies the choice when it is made, so a plant set before a
//! node recovers holds for its whole life. Without the `planted-bugs`
//! feature nothing here can switch anything on.

#[cfg(feature = "planted-bugs")]
use std::cell::Cell;

/// One planted bug of the node loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodePlant {
    /// Entries are applied to the key space as soon as they are appended.
    ApplyBeforeCommit,
    /// A reply is released when its index commits, whatever entry is there.
    ReplyOnIndexNotEntry,
    /// A follower answers a linearizable read from its own state, unconfirmed.
    FollowerServesLinearizableRead,
}

impl NodePlant {
    pub const ALL: [NodePlant; 3] = [
        NodePlant::ApplyBeforeCommit,
        NodePlant::ReplyOnIndexNotEntry,
        NodePlant::FollowerServesLinearizableRead,
    ];

    /// The name the simulator's command line uses.
    pub fn name(self) -> &'static str {
        match self {
            NodePlant::ApplyBeforeCommit => "apply-before-commit",
            NodePlant::ReplyOnIndexNotEntry => "reply-on-index-not-entry",
            NodePlant::FollowerServesLinearizableRead => "follower-serves-linearizable-read",
        }
    }

    pub fn from_name(name: &str) -> Option<NodePlant> {
        NodePlant::ALL
            .into_iter()
            .find(|plant| plant.name() == name)
    }

    /// What the bug does, in one line.
    pub fn describe(self) -> &'static str {
        match self {
            NodePlant::ApplyBeforeCommit => {
                "a node applies entries to its key space when it appends them, not at commit"
            }
            NodePlant::ReplyOnIndexNotEntry => {
                "a reply is released when its index commits, though another leader's entry committed there"
            }
            NodePlant::FollowerServesLinearizableRead => {
                "a follower answers a read from its own state without the leader confirming it"
            }
        }
    }
}

#[cfg(feature = "planted-bugs")]
thread_local! {
    static NODE: Cell<Option<NodePlant>> = const { Cell::new(None) };
    static CORE: Cell<Option<keel_replication::Plant>> = const { Cell::new(None) };
}

/// Switches a node plant on for this thread (None: off).
#[cfg(feature = "planted-bugs")]
pub fn set(plant: Option<NodePlant>) {
    NODE.with(|cell| cell.set(plant));
}

/// Switches a consensus-core plant on for the groups this thread makes.
#[cfg(feature = "planted-bugs")]
pub fn set_core(plant: Option<keel_replication::Plant>) {
    CORE.with(|cell| cell.set(plant));
}

/// The node plant in force on this thread.
pub fn node() -> Option<NodePlant> {
    #[cfg(feature = "planted-bugs")]
    return NODE.with(Cell::get);
    #[cfg(not(feature = "planted-bugs"))]
    return None;
}

/// Gives `config` the core plant in force on this thread.
#[allow(unused_variables)]
pub fn configure(config: &mut keel_replication::Config) {
    #[cfg(feature = "planted-bugs")]
    {
        config.plant = CORE.with(Cell::get);
    }
}

/// Whether `plant` is in force on this thread.
pub fn active(plant: NodePlant) -> bool {
    node() == Some(plant)
}
