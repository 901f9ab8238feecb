#!/usr/bin/env bash
# The network path's profile, per request, for Keel and redis-server under the
# same redis-benchmark load: syscalls and context switches of the server
# process (perf stat on its threads), and reschedule IPIs of the whole machine
# (the RES line of /proc/interrupts, summed over the CPUs), each delta divided
# by the requests. A reschedule IPI is the kernel kicking a running task on
# another CPU, e.g. to run io_uring task work: counted here so that the next
# regression shows as a number, not as a guess from throughput. For the
# durable servers it also prints the requests per fdatasync (the group
# commit's batch).
#
# Settings (environment):
#   IPI_REQUESTS   requests per redis-benchmark run            [100000]
#   IPI_CLIENTS    redis-benchmark connections                 [50]
#   IPI_SERVERS    which servers, space separated               [keel keel-1 keel-interval redis redis-always]
#                  keel: `--fsync always`; keel-1: the same with `--cores 1`;
#                  keel-interval: `--fsync interval-ms=100 --cores 1`;
#                  redis: no persistence; redis-always: AOF, appendfsync always
#   CARGO_TARGET_DIR, KEEL_BIN  as in bench/compare.sh
# Usage: bench/ipi.sh [-n REQUESTS]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
requests=${IPI_REQUESTS:-100000}
clients=${IPI_CLIENTS:-50}
servers=${IPI_SERVERS:-keel keel-1 keel-interval redis redis-always}
value_bytes=100
ready_deadline_s=600
while getopts "n:" flag; do
    case $flag in
        n) requests=$OPTARG ;;
        *) echo "usage: $0 [-n REQUESTS]" >&2; exit 64 ;;
    esac
done

bench_name=ipi
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"

# The machine's reschedule interrupts so far, all CPUs.
reschedule_ipis() {
    awk '$1 == "RES:" { total = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) total += $i; print total }' \
        /proc/interrupts
}

# Keel's group commits so far (one fdatasync each under `--fsync always`),
# from INFO; 0 for redis-server.
group_commits() {
    local port=$1
    redis-cli -p "$port" info | awk -F: '/^wal_group_commits:/ { total += $2 } END { print total + 0 }'
}

# Runs one redis-benchmark test against PORT while perf counts the server
# PID's syscalls, fdatasyncs and context switches; prints
# server,test,requests,rps,p50_ms,p99_ms,syscalls,ipis,context_switches,syncs.
# Keel syncs through io_uring, not the syscall: its syncs are its group
# commits under `--fsync always`, none otherwise.
profile() {
    local name=$1 port=$2 pid=$3 test=$4
    local perf_out=$work/perf.csv
    local ipis_before ipis_after commits_before commits_after
    ipis_before=$(reschedule_ipis)
    commits_before=$(group_commits "$port")
    # With -p and a command, perf counts PID's threads until the command ends.
    perf stat -x, -o "$perf_out" -p "$pid" \
        -e raw_syscalls:sys_enter,context-switches,syscalls:sys_enter_fdatasync -- \
        redis-benchmark -p "$port" -c "$clients" -d "$value_bytes" -P 1 -n "$requests" -t "$test" \
        --csv >"$work/raw.csv"
    ipis_after=$(reschedule_ipis)
    commits_after=$(group_commits "$port")
    python3 - "$name" "$test" "$requests" "$work/raw.csv" "$perf_out" \
        "$((ipis_after - ipis_before))" "$((commits_after - commits_before))" <<'PY'
import csv, sys
name, test, requests, raw, perf_out, ipis, commits = sys.argv[1:]
row = next(csv.DictReader(open(raw)))
counts = {}
for line in open(perf_out):
    fields = line.strip().split(",")
    if len(fields) > 2 and fields[0].replace(".", "").isdigit():
        counts[fields[2]] = float(fields[0])
for event in ("raw_syscalls:sys_enter", "context-switches", "syscalls:sys_enter_fdatasync"):
    if event not in counts:
        sys.exit(f"perf stat did not count {event}: {open(perf_out).read()}")
durable = name == "keel" or name == "keel-1"
syncs = int(commits) if durable else int(counts["syscalls:sys_enter_fdatasync"])
print(f"{name},{test},{requests},{row['rps']},{row['p50_latency_ms']},{row['p99_latency_ms']},"
      f"{counts['raw_syscalls:sys_enter']:.0f},{ipis},{counts['context-switches']:.0f},{syncs}")
PY
}

install_tools redis-benchmark=redis-tools perf=linux-perf
if [[ $servers == *keel* ]]; then
    find_keel
fi

echo "server,test,requests,rps,p50_ms,p99_ms,syscalls,ipis,context_switches,syncs" >"$work/ipi.csv"
for name in $servers; do
    case $name in
        keel) server=keel keel_flags="--fsync always" ;;
        keel-1) server=keel keel_flags="--fsync always --cores 1" ;;
        keel-interval) server=keel keel_flags="--fsync interval-ms=100 --cores 1" ;;
        *) server=$name ;;
    esac
    port=$(free_port)
    start_server "$server" "$port"
    for test in get set; do
        log "$name: $requests $test requests"
        profile "$name" "$port" "$server_pid" "$test" >>"$work/ipi.csv"
    done
    stop_server "$server_pid"
    rm -rf "${work:?}/$server"
done

python3 - "$work/ipi.csv" "$requests" "$clients" <<'PY'
import csv, datetime, os, sys
path, requests, clients = sys.argv[1:]
print(f"bench/ipi.sh on {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
      f"redis-benchmark -c {clients} -P 1 -d 100 -n {requests}; per request:")
print()
print("| server | test | ops/s | p50/p99 ms | syscalls | reschedule IPIs | context switches "
      "| requests per fdatasync |")
print("|---|---|---|---|---|---|---|---|")
for row in csv.DictReader(open(path)):
    n = int(row["requests"])
    syncs = int(row["syncs"])
    per_sync = f"{n / syncs:.1f}" if syncs else "-"
    print(f"| {row['server']} | {row['test'].upper()} | {float(row['rps']):.0f} "
          f"| {row['p50_ms']}/{row['p99_ms']} | {int(row['syscalls']) / n:.2f} "
          f"| {int(row['ipis']) / n:.3f} | {int(row['context_switches']) / n:.3f} | {per_sync} |")
PY
