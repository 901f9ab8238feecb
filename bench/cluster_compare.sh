# shellcheck shell=bash disable=SC2154,SC2034 # set by compare.sh, which sources this file
# `bench/compare.sh --cluster`, sourced by compare.sh after its setup (its
# `benchmark`, `start_server`, $keel, $requests, $clients, $doc): single-node
# Keel, redis-server with `appendfsync always`, and a three-node cluster of
# scripts/cluster.sh, each with the same redis-benchmark runs; the cluster
# also in redis-benchmark's --cluster mode, which reads CLUSTER NODES and
# spreads its clients over the nodes that lead shards, one key per node
# (it refuses a cluster with fewer than two such nodes, so it does not
# apply to a single node). The table goes into $doc between
# `<!-- cluster:begin -->` and `<!-- cluster:end -->`.

cluster_png=${COMPARE_CLUSTER_PNG:-$repo/docs/cluster.png}
cluster_cores=${KEEL_CLUSTER_CORES:-1}
cluster_shards=${KEEL_CLUSTER_SHARDS:-3}
# Node 1's client port (scripts/cluster.sh's).
node1_port=$((${KEEL_CLUSTER_BASE_PORT:-7000} + 1))
# The key plain redis-benchmark sets and gets (no -r): one key, so one
# slot, one shard; against the cluster it is sent to that shard's leader.
benchmark_key='key:__rand_int__'

# The client port of the node leading $benchmark_key's shard: node 1 if it
# answers the GET itself, else the node its -MOVED names. The connection
# says READWRITE first, as a cluster client does: a plain connection's
# command is forwarded to the leader, never answered with -MOVED, so
# without it every run would pay a forward through node 1.
cluster_leader_port() {
    local reply
    reply=$(printf 'READWRITE\nGET %s\n' "$benchmark_key" | redis-cli -p "$node1_port" 2>&1 | tail -n +2)
    reply=${reply%%$'\n'*}
    if [[ $reply == MOVED* ]]; then
        echo "${reply##*:}"
    elif [[ $reply == TRYAGAIN* ]]; then
        log "the benchmark key's shard has no leader: $reply"
        exit 1
    else
        echo "$node1_port"
    fi
}

keel_flags="--fsync always --cores $cluster_cores --shards $cluster_shards ${KEEL_ARGS:-}"
port=$(free_port)
start_server keel "$port"
log "single-node keel: $requests requests"
benchmark keel "$port" 1
stop_server "$server_pid"

port=$(free_port)
start_server redis-always "$port"
log "redis-server appendfsync always: $requests requests"
benchmark redis-always "$port" 1
stop_server "$server_pid"

export KEEL_BIN=$keel KEEL_CLUSTER_DIR=$work/cluster
export KEEL_CLUSTER_CORES=$cluster_cores KEEL_CLUSTER_SHARDS=$cluster_shards
stop_cluster_on_exit
"$repo/scripts/cluster.sh" start >&2
leader_port=$(cluster_leader_port)
# A member that does not lead the key's shard: what a plain client gets
# when it picks a node without knowing the slot map.
member_port=$node1_port
[[ $leader_port == "$node1_port" ]] && member_port=$((node1_port + 1))
log "three-node cluster: $requests requests to the leader on port $leader_port, to the member on port $member_port (forwarded), and --cluster mode"
benchmark cluster "$leader_port" 1
benchmark cluster-forwarded "$member_port" 1
if ! benchmark cluster-cluster-mode "$node1_port" 1 --cluster; then
    log "redis-benchmark --cluster refused the cluster (fewer than two nodes lead shards?):"
    redis-cli -p "$node1_port" cluster nodes >&2
fi
"$repo/scripts/cluster.sh" stop

python3 - "$work/bench.csv" "$requests" "$clients" "$value_bytes" \
    "$cluster_cores" "$cluster_shards" "${KEEL_ARGS:-}" "$cluster_png" <<'PY' >"$work/table.md"
import csv, datetime, os, sys
path, requests, clients, value_bytes, cores, shards, keel_args, png = sys.argv[1:]
by = {(row["server"], row["test"]): row for row in csv.DictReader(open(path))}

def rps(server, test):
    return float(by[(server, test)]["rps"])

def cell(server, test):
    row = by.get((server, test))
    if row is None:
        return "n/a | n/a"
    return f"{float(row['rps']):.0f} | {row['p50_ms']}/{row['p99_ms']}"

def ratio(server, test, base):
    if (server, test) not in by:
        return "n/a"
    return f"{rps(server, test) / rps(base, test):.2f}"

flags = f"--fsync always --cores {cores} --shards {shards}" + (f" {keel_args}" if keel_args else "")
lines = [
    f"Measured by `bench/compare.sh --cluster` on {datetime.date.today()}: {os.cpu_count()} cores, "
    f"redis-benchmark -c {clients} -P 1 -d {value_bytes} -n {requests} -t set,get. "
    f"Keel: `{flags}` for the single node and for each of the three nodes "
    "(scripts/cluster.sh, all on this machine); Redis: `--appendonly yes --appendfsync always --save ''`. "
    "Plain mode sends redis-benchmark's one key to the leader of its shard; forwarded mode to a "
    "member that does not lead it, which forwards every command to the leader (what a client "
    "that is not cluster-aware gets from two nodes in three); "
    "redis-benchmark's `--cluster` mode (the 3-node column only) spreads its clients over "
    "the nodes that lead shards, one key per node; its ratios are to the plain runs of the others.",
    "",
    "| test | 3-node mode | 3-node ops/s | 3-node p50/p99 ms | 1-node ops/s | 1-node p50/p99 ms "
    "| Redis always ops/s | Redis always p50/p99 ms | 3-node/1-node | 3-node/Redis always |",
    "|---|---|---|---|---|---|---|---|---|---|",
]
for test in ("SET", "GET"):
    for mode, server in (
        ("plain", "cluster"),
        ("forwarded", "cluster-forwarded"),
        ("--cluster", "cluster-cluster-mode"),
    ):
        lines.append(
            f"| {test} | {mode} | {cell(server, test)} | {cell('keel', test)} | {cell('redis-always', test)} "
            f"| {ratio(server, test, 'keel')} | {ratio(server, test, 'redis-always')} |"
        )
lines += ["", f"![A three-node cluster against one node]({os.path.basename(png)})"]
print("\n".join(lines))

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
bars = [
    ("keel", "Keel, one node"),
    ("cluster", "3 nodes, to the leader"),
    ("cluster-forwarded", "3 nodes, forwarded"),
    ("cluster-cluster-mode", "3 nodes, --cluster mode"),
    ("redis-always", "Redis AOF always"),
]
tests = ("SET", "GET")
width = 0.16
figure, axes = plt.subplots(figsize=(9, 4.5))
for offset, (server, label) in enumerate(bars):
    values = [rps(server, test) if (server, test) in by else 0 for test in tests]
    axes.bar([i + (offset - 2) * width for i in range(len(tests))], values, width, label=label)
axes.set_xticks(range(len(tests)), [f"{test} -P 1" for test in tests])
axes.set_ylabel("ops/s")
axes.set_title(f"redis-benchmark -P 1, {clients} clients, {value_bytes}-byte values, fsync always")
axes.legend()
figure.tight_layout()
figure.savefig(png, dpi=110)
PY
python3 "$repo/bench/doc_section.py" "$doc" cluster "A three-node cluster against one node" <"$work/table.md"
log "wrote $doc and $cluster_png"
