//! Keel under madsim: the simulated IO, cluster harness, workloads and checkers.
//! Not built yet: see the simulation issue.
