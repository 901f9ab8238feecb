#!/usr/bin/env bash
# The life cycle of `keel serve` as a supervisor sees it (issue 9), measured
# with real clients:
#   - STARTS starts with default flags (--cores = all), each on a fresh data
#     directory and a free port: every one must answer PING;
#   - ROUNDS rounds of SIGKILL while clients are connected (idle ones, one in
#     the middle of a request, one not reading its replies, redis-benchmark
#     writing), each followed by a start on the same port and directory;
#   - ROUNDS rounds of SIGTERM with idle clients connected, then the same.
# Each restart must answer PING within RESTART_BOUND_MS of its spawn.
#
# Usage: scripts/restart_loop.sh [STARTS] [ROUNDS]   (defaults 100 and 20)
# KEEL_BIN picks the binary (default: target/release/keel, built if absent).
# Prints one line per phase with the figures; exits 1 if any bound is missed.
set -euo pipefail
cd "$(dirname "$0")/.."

STARTS=${1:-100}
ROUNDS=${2:-20}
RESTART_BOUND_MS=1000
# A first start that has not answered by then is counted as hung.
START_DEADLINE_MS=10000
POLL_S=0.005
BIG_VALUE_BYTES=$((1 << 20))

command -v redis-cli >/dev/null || apt-get install -y redis-tools >/dev/null
KEEL=${KEEL_BIN:-target/release/keel}
if [[ ! -x $KEEL ]]; then
    cargo build --release --locked -p keel-engine --bin keel
fi
WORK=$(mktemp -d)
PID=
cleanup() {
    [[ -n $PID ]] && kill -9 "$PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

now_ms() { echo $(($(date +%s%N) / 1000000)); }

free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 40000))
        ss -Htan "( sport = :$port or dport = :$port )" | grep -q . || { echo "$port"; return; }
    done
}

# spawn DIR PORT LOG: starts keel in the background; sets PID.
spawn() {
    "$KEEL" serve --dir "$1" --bind 127.0.0.1 --port "$2" 2>>"$3" &
    PID=$!
}

# wait_pong PORT DEADLINE_MS: prints the ms until PONG, or fails.
wait_pong() {
    local began
    began=$(now_ms)
    while (($(now_ms) - began < $2)); do
        if [[ $(redis-cli -p "$1" ping 2>/dev/null) == PONG ]]; then
            echo $(($(now_ms) - began))
            return 0
        fi
        kill -0 "$PID" 2>/dev/null || return 1
        sleep "$POLL_S"
    done
    return 1
}

# summary NAME BOUND_MS VALUES...: one line of figures.
summary() {
    local name=$1 bound=$2
    shift 2
    local sorted count
    sorted=$(printf '%s\n' "$@" | sort -n)
    count=$#
    printf '%s: min %s ms, median %s ms, max %s ms (bound %s ms)\n' "$name" \
        "$(head -1 <<<"$sorted")" "$(sed -n "$(((count + 1) / 2))p" <<<"$sorted")" \
        "$(tail -1 <<<"$sorted")" "$bound"
}

failed=0

# 1. Starts with default flags.
times=()
hung=0
for i in $(seq 1 "$STARTS"); do
    dir=$WORK/start-$i
    port=$(free_port)
    spawn "$dir" "$port" "$WORK/start-$i.log"
    if ms=$(wait_pong "$port" "$START_DEADLINE_MS"); then
        times+=("$ms")
    else
        hung=$((hung + 1))
        echo "start $i: no PONG within $START_DEADLINE_MS ms; log:" >&2
        tail -5 "$WORK/start-$i.log" >&2
    fi
    kill -9 "$PID"
    wait "$PID" 2>/dev/null || true
    PID=
    rm -rf "$dir"
done
echo "starts: $((STARTS - hung))/$STARTS answered PING (cores: $(nproc), default flags)"
((${#times[@]})) && summary "  time to PONG" "$START_DEADLINE_MS" "${times[@]}"
((hung == 0)) || failed=1

# Connected clients: 4 idle, 1 half a request, 1 pipelining GETs of a 1 MiB
# value without reading the replies. File descriptors 20-25.
connect_clients() {
    local port=$1 mid_request=$2
    exec 20<>"/dev/tcp/127.0.0.1/$port" 21<>"/dev/tcp/127.0.0.1/$port"
    exec 22<>"/dev/tcp/127.0.0.1/$port" 23<>"/dev/tcp/127.0.0.1/$port"
    if [[ $mid_request == yes ]]; then
        exec 24<>"/dev/tcp/127.0.0.1/$port" 25<>"/dev/tcp/127.0.0.1/$port"
        printf '*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\nonly' >&24
        for _ in $(seq 32); do printf '*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n' >&25; done
    fi
}
disconnect_clients() {
    exec 20>&- 21>&- 22>&- 23>&- 24>&- 25>&- 2>/dev/null || true
}

# rounds SIGNAL: ROUNDS kills with SIGNAL, each restarted on the same port.
rounds() {
    local signal=$1 dir=$WORK/$1 port log=$WORK/$1.log restarts=() late=0
    port=$(free_port)
    spawn "$dir" "$port" "$log"
    wait_pong "$port" "$START_DEADLINE_MS" >/dev/null
    head -c "$BIG_VALUE_BYTES" /dev/zero | tr '\0' x | redis-cli -p "$port" -x set big >/dev/null
    for round in $(seq 1 "$ROUNDS"); do
        local bench=
        if [[ $signal == KILL ]]; then
            connect_clients "$port" yes
            redis-benchmark -p "$port" -t set -n 100000000 -c 4 -q >/dev/null 2>&1 &
            bench=$!
            # Let the writers get going: wait (boundedly) for their keys.
            local began
            began=$(now_ms)
            until [[ $(redis-cli -p "$port" dbsize 2>/dev/null) -gt 1 ]]; do
                (($(now_ms) - began < START_DEADLINE_MS)) || { echo "SIG$signal round $round: redis-benchmark wrote nothing" >&2; break; }
                sleep "$POLL_S"
            done
        else
            connect_clients "$port" no
        fi
        kill -"$signal" "$PID"
        wait "$PID" 2>/dev/null || true
        spawn "$dir" "$port" "$log"
        if ms=$(wait_pong "$port" "$START_DEADLINE_MS"); then
            restarts+=("$ms")
            ((ms <= RESTART_BOUND_MS)) || late=$((late + 1))
        else
            late=$((late + 1))
            echo "SIG$signal round $round: no PONG; log:" >&2
            tail -5 "$log" >&2
        fi
        if [[ -n $bench ]]; then
            kill "$bench" 2>/dev/null || true
            wait "$bench" 2>/dev/null || true
        fi
        disconnect_clients
    done
    kill -9 "$PID"
    wait "$PID" 2>/dev/null || true
    PID=
    echo "SIG$signal with clients connected, restart on the same port: $((ROUNDS - late))/$ROUNDS served within $RESTART_BOUND_MS ms"
    ((${#restarts[@]})) && summary "  time to PONG after the restart" "$RESTART_BOUND_MS" "${restarts[@]}"
    ((late == 0)) || failed=1
}
rounds KILL
rounds TERM
exit "$failed"
