#!/usr/bin/env bash
# The test command of README.md, and what .ci/run calls: formatting, lints, and
# every test of the workspace (unit, scenario, property, fuzz-corpus replay, CLI).
set -euo pipefail
cd "$(dirname "$0")/.."
# Property tests run the same cases on every machine: a red run is a bug, not luck.
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-20261125}"
export PROPTEST_CASES="${PROPTEST_CASES:-2048}"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
