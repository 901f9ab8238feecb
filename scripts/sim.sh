#!/usr/bin/env bash
# Builds keel-sim for madsim (RUSTFLAGS="--cfg madsim", in a target directory of
# its own so the normal build's cache is untouched) and runs it.
#
#   scripts/sim.sh --seed N [--ops M] [--fsync P]   one run, keel-sim's own output
#   scripts/sim.sh --seeds A..B [--ops M] ...       seeds A to B inclusive; prints
#                                                   each failing seed's replay command
#
# SIM_TARGET_DIR overrides the target directory (default: target/sim).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${SIM_TARGET_DIR:-target/sim}"
RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR="$target" cargo build --release --locked -p keel-sim
sim="$target/release/keel-sim"

if [[ "${1:-}" != "--seeds" ]]; then
    exec "$sim" "$@"
fi
range="${2:?--seeds needs a range A..B}"
shift 2
if [[ ! "$range" =~ ^([0-9]+)\.\.([0-9]+)$ ]]; then
    echo "--seeds takes A..B (inclusive), not $range" >&2
    exit 64
fi
first="${BASH_REMATCH[1]}"
last="${BASH_REMATCH[2]}"
failed=()
for ((seed = first; seed <= last; seed++)); do
    started=$EPOCHREALTIME
    status=0
    "$sim" --seed "$seed" "$@" || status=$?
    awk -v seed="$seed" -v status="$status" -v from="$started" -v to="$EPOCHREALTIME" \
        'BEGIN { printf "seed %d: exit %d in %.2fs\n", seed, status, to - from }'
    if ((status != 0)); then
        failed+=("$seed")
    fi
done
runs=$((last - first + 1))
echo "${#failed[@]} of $runs seeds failed"
for seed in "${failed[@]}"; do
    echo "replay: scripts/sim.sh --seed $seed $*"
done
((${#failed[@]} == 0))
