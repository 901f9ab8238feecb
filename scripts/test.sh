#!/usr/bin/env bash
# The test command of README.md, and what .ci/run calls: formatting, lints, and
# every test of the workspace (unit, scenario, property, fuzz-corpus replay, CLI),
# then the deterministic simulation (docs/SIMULATION.md).
set -euo pipefail
cd "$(dirname "$0")/.."
# Property tests run the same cases on every machine: a red run is a bug, not luck.
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-20261125}"
export PROPTEST_CASES="${PROPTEST_CASES:-2048}"
# The random differential (tests/tests/differential.rs) runs a redis-server.
command -v redis-server || (apt-get update && apt-get install -y redis-server)
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The planted bugs (compiled only with their feature) must lint clean too.
cargo clippy -p keel-wal -p keel-engine -p keel-replication --all-targets --locked --features planted-bugs -- -D warnings
cargo test --workspace --locked
# The black-box tests that cross cores (hops between cores, start-up, crash
# recovery) again on two cores.
KEEL_TEST_CORES=2 cargo test -p keel-tests --locked --test crash --test commands --test pipeline --test differential --test transactions
cargo test -p keel-wal -p keel-engine --lib --locked --features planted-bugs planted
# The consensus core's planted bugs, each shown caught (scenarios and soak).
cargo test -p keel-replication --locked --features planted-bugs
# The pure-core cluster simulator at speed (docs/REPLICATION.md): 10,000 seeds
# at 3 voters, 2,000 at 5, and every planted bug caught within 1,000 seeds.
cluster_sim() {
    cargo run --release --locked -q -p keel-replication --features planted-bugs --example cluster_sim -- "$@"
}
cluster_sim --seeds 1..10001
cluster_sim --voters 5 --seeds 1..2001
cluster_sim --plants --seeds 1..1001

# The simulation build: --cfg madsim, in a target directory of its own.
sim() { RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim "$@"; }
sim cargo clippy -p keel-sim --all-targets --locked --features planted-bugs -- -D warnings
sim cargo test --release -p keel-sim --locked --features planted-bugs
# 200 random seeds, every planted bug caught within 300 seeds, and a seed
# replayed twice to the same trace.
scripts/sim.sh --ci

# Redis's own test suite against Keel and redis-server, side by side
# (docs/REDIS_SUITE.md): about a minute with the debug keel built above. The
# figures are the result; only a suite that cannot run fails here.
KEEL_BIN="${CARGO_TARGET_DIR:-target}/debug/keel" scripts/redis_suite.sh

# redis-py's default transactional pipeline and WATCH helper, against Keel and
# redis-server, outputs compared (issue 11).
KEEL_BIN="${CARGO_TARGET_DIR:-target}/debug/keel" scripts/redis_py_transactions.sh

# redis-py's cluster client against one node: CLUSTER SLOTS, hash tags,
# -CROSSSLOT (issue 13).
KEEL_BIN="${CARGO_TARGET_DIR:-target}/debug/keel" scripts/redis_py_cluster.sh
