#!/usr/bin/env bash
# Builds keel-sim for madsim (RUSTFLAGS="--cfg madsim", in a target directory of
# its own so the normal build's cache is untouched, with the planted bugs
# compiled in but off) and runs it. docs/SIMULATION.md explains the output.
#
#   scripts/sim.sh --seed N [--ops M] [--fsync P] [--plant NAME] [--damage] [--cores C] [--trace]
#                  [--nodes 3|5]           one run: what happened, every verdict
#                                          (--nodes: a cluster of that many nodes)
#   scripts/sim.sh --seed N --check-determinism
#                                          runs it twice, compares the trace hashes
#   scripts/sim.sh --seeds A..B [--jobs J] [--ops M] ...
#                                          a range; non-zero exit on any failure,
#                                          with each failing seed's replay command
#   scripts/sim.sh --list-plants           the planted bugs, one per line: name,
#                                          the nodes that catch it, what it does
#   scripts/sim.sh --check-plants [A..B]   each planted bug must fail a seed in
#                                          A..B (default 1..300), on as many
#                                          nodes as --list-plants says
#   scripts/sim.sh --ci                    what CI runs: 200 seeds, 500 seeds with
#                                          damage to synced data, 50 seeds of a
#                                          one-core node, 100 seeds of five
#                                          nodes, every planted bug, and a
#                                          determinism check
#
# SIM_TARGET_DIR overrides the target directory (default: target/sim).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${SIM_TARGET_DIR:-target/sim}"
RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR="$target" \
    cargo build --release --locked -p keel-sim --features planted-bugs
sim="$target/release/keel-sim"

check_plants() {
    local range="${1:-1..300}" only_nodes="${2:-}"
    local caught=0 total=0 name nodes
    while IFS=$'\t' read -r name nodes _; do
        if [[ -n "$only_nodes" && "$nodes" != "$only_nodes" ]]; then
            continue
        fi
        total=$((total + 1))
        echo "== planted bug $name: the first failing seed in $range on $nodes node(s)"
        if "$sim" --seeds "$range" --nodes "$nodes" --plant "$name" --until-failure |
            grep -v ': ok ('; then
            caught=$((caught + 1))
        else
            echo "NOT CAUGHT: $name"
        fi
    done < <("$sim" --list-plants)
    echo "$caught of $total planted bugs caught within seeds $range"
    ((caught == total))
}

case "${1:-}" in
--check-plants)
    check_plants "${2:-}"
    ;;
--ci)
    "$sim" --seeds 1..200 | grep -v ': ok ('
    "$sim" --seeds 1..500 --damage | grep -v ': ok ('
    "$sim" --seeds 1..50 --cores 1 | grep -v ': ok ('
    # Five nodes (three run in `cargo test`: sim/tests/cluster.rs).
    "$sim" --seeds 1..100 --nodes 5 | grep -v ': ok ('
    # Every planted bug: the WAL's and the engine's on one node, the
    # replicated node's and the consensus core's on three.
    check_plants 1..300
    "$sim" --seed 1 --check-determinism | tail -n 1
    ;;
*)
    exec "$sim" "$@"
    ;;
esac
