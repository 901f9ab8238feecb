#!/usr/bin/env bash
# One MSET of N pairs sent in one write, to Keel and to redis-server side by
# side: the time from the first byte sent to the reply, for each N, and
# Keel's time over Redis's. A request's cost must grow linearly with its
# bytes (issue 9: the parser once re-parsed a request from its start on
# every read, which made this quadratic).
#
# Keel runs the release binary with default flags (`--fsync always`, every
# core). Redis runs twice: as configured by default but without RDB snapshots
# (`--save ''`), and with `--appendonly yes --appendfsync always`, the
# durability Keel gives. Keys share one hash tag, as Keel requires of a
# multi-key command (one slot); Redis does not care.
#
# Settings (environment):
#   MSET_PAIRS        space-separated pair counts   [100000 200000 400000]
#   MSET_RUNS         runs per count (median shown) [3]
#   CARGO_TARGET_DIR  where cargo builds keel       [target]
#   KEEL_BIN          a keel binary to measure instead of building one
# Usage: bench/mset.sh
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

pairs=${MSET_PAIRS:-100000 200000 400000}
runs=${MSET_RUNS:-3}
# How long a server may take to answer its first PING.
ready_deadline_s=60

bench_name=mset
keel_flags=""
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"

# Prints "pairs seconds request_bytes" per pair count: the median of $runs runs, each one
# MSET in one sendall, timed from the send to the whole reply.
measure() {
    python3 - "$1" "$runs" $pairs <<'PY'
import socket, statistics, sys, time
port, runs, *counts = (int(arg) for arg in sys.argv[1:])

def mset(pairs):
    parts = [b"*%d\r\n$4\r\nMSET\r\n" % (1 + 2 * pairs)]
    for index in range(pairs):
        key = b"{bench}:key:%010d" % index
        value = b"value:%010d" % index
        parts.append(b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value))
    return b"".join(parts)

for count in counts:
    request = mset(count)
    times = []
    for _ in range(runs):
        with socket.create_connection(("127.0.0.1", port)) as connection:
            started = time.perf_counter()
            connection.sendall(request)
            reply = b""
            while not reply.endswith(b"\r\n"):
                data = connection.recv(4096)
                if not data:
                    sys.exit("the server closed the connection")
                reply += data
            times.append(time.perf_counter() - started)
        if reply != b"+OK\r\n":
            sys.exit(f"MSET of {count} pairs failed: {reply[:200]!r}")
    print(count, statistics.median(times), len(request))
PY
}

install_tools
find_keel

for name in keel redis redis-always; do
    port=$(free_port)
    start_server "$name" "$port"
    log "$name: MSET of $pairs pairs, $runs runs each"
    measure "$port" >"$work/$name.txt"
    stop_server "$server_pid"
done

python3 - "$work" "$runs" <<'PY'
import sys
work, runs = sys.argv[1], sys.argv[2]
def load(name):
    return {pairs: (seconds, size) for pairs, seconds, size in (line.split() for line in open(f"{work}/{name}.txt"))}
keel, redis, always = load("keel"), load("redis"), load("redis-always")
print(f"One MSET of N pairs in one write; median of {runs} runs, seconds.")
print()
print("| pairs | request MiB | Keel s | Redis s | Redis AOF always s | Keel/Redis | Keel/Redis always |")
print("|---|---|---|---|---|---|---|")
for pairs in keel:
    k, r, a = (float(times[pairs][0]) for times in (keel, redis, always))
    mib = int(keel[pairs][1]) / (1 << 20)
    print(f"| {pairs} | {mib:.1f} | {k:.3f} | {r:.3f} | {a:.3f} | {k / r:.2f} | {k / a:.2f} |")
PY
