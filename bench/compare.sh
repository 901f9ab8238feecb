#!/usr/bin/env bash
# Keel against Redis on this machine: throughput and latency with
# redis-benchmark (SET/GET, pipeline 1 and 16; durable Keel beside Redis's
# AOF, and Keel with `--fsync interval-ms=100` beside Redis without
# persistence), then start-up time and RSS
# with many keys loaded. Writes the table into docs/PERFORMANCE.md between
# `<!-- compare:begin -->` and `<!-- compare:end -->` and a bar chart to
# docs/compare.png.
#
# Settings (environment):
#   COMPARE_REQUESTS  requests per redis-benchmark run        [200000]
#   COMPARE_KEYS      distinct keys loaded for the restart     [1000000]
#   COMPARE_CLIENTS   redis-benchmark connections              [50]
#   COMPARE_DOC       markdown file to write the table into    [docs/PERFORMANCE.md]
#   COMPARE_PNG       chart to write                           [docs/compare.png]
#   KEEL_ARGS         extra `keel serve` flags, e.g. "--cores 1" [none]
#   CARGO_TARGET_DIR  where cargo builds keel                  [target]
#   KEEL_BIN          a keel binary to measure instead of building one
#
# With --cluster it measures replication instead: the same redis-benchmark
# runs (SET and GET, -P 1) against a three-node cluster of scripts/cluster.sh
# (every write committed on two of three nodes, each fdatasynced), beside
# single-node Keel with the same flags per node and redis-server with
# `appendfsync always`; each Keel also in redis-benchmark's --cluster mode.
# The table goes between `<!-- cluster:begin -->` and `<!-- cluster:end -->`.
# Its settings: KEEL_CLUSTER_CORES [1] and KEEL_CLUSTER_SHARDS [3], the
# --cores and --shards of every node and of the single node, and
# KEEL_CLUSTER_BASE_PORT [7000] (scripts/cluster.sh's ports), and
# COMPARE_CLUSTER_PNG [docs/cluster.png], the chart it writes.
# Usage: bench/compare.sh [--cluster] [-n REQUESTS]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cluster_mode=false
if [[ ${1:-} == --cluster ]]; then
    cluster_mode=true
    shift
fi

requests=${COMPARE_REQUESTS:-200000}
keys=${COMPARE_KEYS:-1000000}
clients=${COMPARE_CLIENTS:-50}
doc=${COMPARE_DOC:-$repo/docs/PERFORMANCE.md}
png=${COMPARE_PNG:-$repo/docs/compare.png}
value_bytes=100
# How long a server may take to answer its first PING.
ready_deadline_s=600
while getopts "n:" flag; do
    case $flag in
        n) requests=$OPTARG ;;
        *) echo "usage: $0 [-n REQUESTS]" >&2; exit 64 ;;
    esac
done

bench_name=compare
keel_flags="--fsync always ${KEEL_ARGS:-}"
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# Appends one CSV row per test to $work/bench.csv:
# server,pipeline,test,rps,p50_ms,p99_ms
# Further arguments go to redis-benchmark (--cluster).
benchmark() {
    local name=$1 port=$2 pipeline=$3
    shift 3
    redis-benchmark -p "$port" -q -c "$clients" -d "$value_bytes" -t set,get -n "$requests" \
        -P "$pipeline" --csv "$@" >"$work/raw.csv" || return
    python3 - "$name" "$pipeline" "$work/raw.csv" >>"$work/bench.csv" <<'PY'
import csv, sys
name, pipeline, path = sys.argv[1:]
# In --cluster mode redis-benchmark first prints the masters it found.
lines = open(path).read().splitlines()
header = next((i for i, line in enumerate(lines) if line.startswith('"test"')), 0)
rows = list(csv.DictReader(lines[header:]))
for column in ("test", "rps", "p50_latency_ms", "p99_latency_ms"):
    if rows and column not in rows[0]:
        sys.exit(f"redis-benchmark CSV has no {column} column: {list(rows[0])}")
for row in rows:
    print(f"{name},{pipeline},{row['test']},{row['rps']},{row['p50_latency_ms']},{row['p99_latency_ms']}")
PY
}

# Loads $keys distinct keys over one pipelined connection (chunks of SETs,
# each chunk's replies read before the next is sent) and checks DBSIZE.
load_keys() {
    local port=$1
    python3 - "$port" "$keys" "$value_bytes" <<'PY'
import socket, sys
port, keys, value_bytes = (int(arg) for arg in sys.argv[1:])
CHUNK_COMMANDS = 10_000
connection = socket.create_connection(("127.0.0.1", port))
value = b"v" * value_bytes
for first in range(0, keys, CHUNK_COMMANDS):
    last = min(first + CHUNK_COMMANDS, keys)
    request = b"".join(
        b"*3\r\n$3\r\nSET\r\n$14\r\nkey:%010d\r\n$%d\r\n%s\r\n" % (index, len(value), value)
        for index in range(first, last)
    )
    connection.sendall(request)
    replies = b""
    while replies.count(b"\n") < last - first:
        data = connection.recv(1 << 20)
        if not data:
            sys.exit("the server closed the connection during the load")
        replies += data
    if replies != b"+OK\r\n" * (last - first):
        sys.exit(f"a SET failed: {replies[:200]!r}")
PY
    local size
    size=$(redis-cli -p "$port" dbsize)
    if [[ $size != "$keys" ]]; then
        log "DBSIZE is $size after loading $keys keys"
        exit 1
    fi
}

# Appends server,keys,ready_ms,rss_kib to $work/restart.csv.
restart_measure() {
    local name=$1 port
    port=$(free_port)
    start_server "$name" "$port"
    load_keys "$port"
    stop_server "$server_pid"
    start_server "$name" "$port"
    local size
    size=$(redis-cli -p "$port" dbsize)
    if [[ $size != "$keys" ]]; then
        log "$name: DBSIZE is $size after restart, expected $keys"
        exit 1
    fi
    echo "$name,$keys,$server_ready_ms,$(rss_kib "$server_pid")" >>"$work/restart.csv"
    stop_server "$server_pid"
}

install_tools redis-benchmark=redis-tools
if $cluster_mode; then
    find_keel
    echo "server,pipeline,test,rps,p50_ms,p99_ms" >"$work/bench.csv"
    # shellcheck source=bench/cluster_compare.sh
    source "$repo/bench/cluster_compare.sh"
    exit
fi
if ! python3 -c 'import matplotlib' 2>/dev/null; then
    log "installing matplotlib"
    python3 -m pip install --quiet matplotlib
fi
find_keel

echo "server,pipeline,test,rps,p50_ms,p99_ms" >"$work/bench.csv"
echo "server,keys,ready_ms,rss_kib" >"$work/restart.csv"
# keel-interval is Keel with `--fsync interval-ms=100`, measured beside
# redis-server without persistence (the issue's targets for GET and for SET
# without a sync per request).
for name in keel redis-always redis-everysec keel-interval redis; do
    server=$name
    if [[ $name == keel-interval ]]; then
        server=keel
        keel_flags="--fsync interval-ms=100 ${KEEL_ARGS:-}"
    fi
    port=$(free_port)
    start_server "$server" "$port"
    for pipeline in 1 16; do
        log "$name: $requests requests, -P $pipeline"
        benchmark "$name" "$port" "$pipeline"
    done
    stop_server "$server_pid"
    rm -rf "${work:?}/$server"
done
keel_flags="--fsync always ${KEEL_ARGS:-}"
for name in keel redis-always; do
    log "$name: loading $keys keys, restarting"
    restart_measure "$name"
    rm -rf "${work:?}/$name"
done

python3 - "$work" "$png" "$requests" "$clients" "$value_bytes" "${KEEL_ARGS:-}" <<'PY'
import csv, datetime, os, sys
work, png, requests, clients, value_bytes, keel_args = sys.argv[1:]
bench = list(csv.DictReader(open(os.path.join(work, "bench.csv"))))
restart = list(csv.DictReader(open(os.path.join(work, "restart.csv"))))
by = {(row["server"], row["pipeline"], row["test"]): row for row in bench}
cases = sorted({(row["test"], row["pipeline"]) for row in bench}, key=lambda case: (case[0] != "SET", int(case[1])))

def ratio(a, b):
    return f"{float(a) / float(b):.2f}" if float(b) else "n/a"

lines = [
    f"Measured by `bench/compare.sh` on {datetime.date.today()}: {os.cpu_count()} cores, "
    f"redis-benchmark -c {clients} -d {value_bytes} -n {requests}. Keel: `--fsync always{(' ' + keel_args) if keel_args else ''}`. "
    "Redis: `--appendonly yes --save ''` with `appendfsync always` and `everysec`.",
    "",
    "| test | pipeline | Keel ops/s | Keel p50/p99 ms | Redis always ops/s | Redis always p50/p99 ms "
    "| Redis everysec ops/s | Redis everysec p50/p99 ms | Keel/Redis always | Keel/Redis everysec |",
    "|---|---|---|---|---|---|---|---|---|---|",
]
for test, pipeline in cases:
    k, a, e = (by[(server, pipeline, test)] for server in ("keel", "redis-always", "redis-everysec"))
    lines.append(
        f"| {test} | {pipeline} | {float(k['rps']):.0f} | {k['p50_ms']}/{k['p99_ms']} "
        f"| {float(a['rps']):.0f} | {a['p50_ms']}/{a['p99_ms']} "
        f"| {float(e['rps']):.0f} | {e['p50_ms']}/{e['p99_ms']} "
        f"| {ratio(k['rps'], a['rps'])} | {ratio(k['rps'], e['rps'])} |"
    )
lines += [
    "",
    f"Keel `--fsync interval-ms=100{(' ' + keel_args) if keel_args else ''}` against redis-server without persistence:",
    "",
    "| test | pipeline | Keel ops/s | Keel p50/p99 ms | Redis ops/s | Redis p50/p99 ms | Keel/Redis ops | Keel/Redis p99 |",
    "|---|---|---|---|---|---|---|---|",
]
for test, pipeline in cases:
    k, r = (by[(server, pipeline, test)] for server in ("keel-interval", "redis"))
    lines.append(
        f"| {test} | {pipeline} | {float(k['rps']):.0f} | {k['p50_ms']}/{k['p99_ms']} "
        f"| {float(r['rps']):.0f} | {r['p50_ms']}/{r['p99_ms']} "
        f"| {ratio(k['rps'], r['rps'])} | {ratio(k['p99_ms'], r['p99_ms'])} |"
    )
lines += ["", "| server | keys | start to first PING, ms | RSS, MiB |", "|---|---|---|---|"]
for row in restart:
    lines.append(f"| {row['server']} | {row['keys']} | {row['ready_ms']} | {int(row['rss_kib']) / 1024:.0f} |")
open(os.path.join(work, "table.md"), "w").write("\n".join(lines))

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
servers = [("keel", "Keel (fsync always)"), ("redis-always", "Redis AOF always"), ("redis-everysec", "Redis AOF everysec")]
width = 0.27
figure, axes = plt.subplots(figsize=(9, 4.5))
for offset, (server, label) in enumerate(servers):
    values = [float(by[(server, pipeline, test)]["rps"]) for test, pipeline in cases]
    axes.bar([i + (offset - 1) * width for i in range(len(cases))], values, width, label=label)
axes.set_xticks(range(len(cases)), [f"{test} -P {pipeline}" for test, pipeline in cases])
axes.set_ylabel("ops/s")
axes.set_title(f"redis-benchmark, {clients} clients, {value_bytes}-byte values")
axes.legend()
figure.tight_layout()
figure.savefig(png, dpi=110)
PY
python3 "$repo/bench/doc_section.py" "$doc" compare "Keel against Redis" <"$work/table.md"
log "wrote $doc and $png"
