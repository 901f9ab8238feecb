#!/usr/bin/env bash
# A local three-node Keel cluster on loopback, with the release binary
# (built when missing). Every node is a voter of every shard.
#
#   node N   client port B+N (7001-7003)    redis-cli -c -p 7001
#            peer port   B+1+100*N (7101, 7201, 7301): core c listens on
#                        peer port + c, so each node has room for 99 cores
#            metrics     B+10+N (7011-7013), Prometheus text
#            where B is KEEL_CLUSTER_BASE_PORT, 7000 unless set
#            data        $KEEL_CLUSTER_DIR/nodeN/data, log nodeN/keel.log,
#                        pid file nodeN/keel.pid
#
# Usage: scripts/cluster.sh start | stop | status | kill N | restart N
#   start      starts every node that is not running, waits until each
#              answers PING, every shard has a leader and leadership is
#              balanced (each node leads its share of the shards)
#   stop       SIGTERM to every node (a clean stop), waits for the exits
#   status     each node up or down, and which shards it leads
#   kill N     SIGKILL node N (a crash)
#   restart N  stops node N if it runs (SIGKILL), starts it on the same
#              ports and data directory; with all three up, waits for
#              leadership to be balanced again
#
# Settings (environment):
#   KEEL_CLUSTER_DIR     where the nodes' directories go   [./keel-cluster]
#   KEEL_CLUSTER_BASE_PORT  B of the ports above           [7000]
#   KEEL_CLUSTER_CORES   --cores of each node              [1]
#   KEEL_CLUSTER_SHARDS  --shards of a new cluster         [3]
#   KEEL_ARGS            further `keel serve` flags        [none]
#   KEEL_BIN             a keel binary to use instead of building one
#   CARGO_TARGET_DIR     where cargo builds keel           [target]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cluster_dir=${KEEL_CLUSTER_DIR:-./keel-cluster}
base_port=${KEEL_CLUSTER_BASE_PORT:-7000}
cores=${KEEL_CLUSTER_CORES:-1}
shards=${KEEL_CLUSTER_SHARDS:-3}
nodes=(1 2 3)
# How long a node may take to answer PING, and the cluster to elect a
# leader for every shard.
ready_deadline_s=60
# How long leadership must stay put before the cluster counts as settled:
# above the nodes' longest election timeout (800 ms).
settle_s=1
# How long a node may take to exit after SIGTERM.
stop_deadline_s=30

log() { echo "cluster: $*" >&2; }

client_port() { echo $((base_port + $1)); }
peer_port() { echo $((base_port + 1 + 100 * $1)); }
metrics_port() { echo $((base_port + 10 + $1)); }
node_dir() { echo "$cluster_dir/node$1"; }
pid_file() { echo "$(node_dir "$1")/keel.pid"; }

peers() {
    local list=() node
    for node in "${nodes[@]}"; do
        list+=("$node=127.0.0.1:$(peer_port "$node")")
    done
    local IFS=,
    echo "${list[*]}"
}

# redis-cli, from redis-tools, installed with apt-get when missing.
install_tools() {
    command -v redis-cli >/dev/null && return
    log "installing redis-tools"
    apt-get install -y redis-tools >/dev/null 2>&1 ||
        { apt-get update >/dev/null && apt-get install -y redis-tools >/dev/null; }
}

# Sets $keel: KEEL_BIN, or the release binary, built when missing.
find_keel() {
    if [[ -n ${KEEL_BIN:-} ]]; then
        keel=$KEEL_BIN
        return
    fi
    local target=${CARGO_TARGET_DIR:-target}
    [[ $target == /* ]] || target=$repo/$target
    keel=$target/release/keel
    if [[ ! -x $keel ]]; then
        log "building keel (release)"
        (cd "$repo" && cargo build --release --quiet -p keel-engine --bin keel)
    fi
}

# The pid of node N if it runs, else nothing (a stale pid file is removed).
running_pid() {
    local file pid
    file=$(pid_file "$1")
    [[ -f $file ]] || return 0
    pid=$(<"$file")
    if kill -0 "$pid" 2>/dev/null && grep -q keel "/proc/$pid/cmdline" 2>/dev/null; then
        echo "$pid"
    else
        rm -f "$file"
    fi
}

# Whether process $1 runs (a zombie, an exited child not yet reaped, does not).
alive() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $state != Z* ]]
}

ping_ok() { [[ $(redis-cli -p "$(client_port "$1")" ping 2>/dev/null) == PONG ]]; }

# Starts node N unless it runs; sets $started_pid (empty if it ran).
start_node() {
    local node=$1 dir
    dir=$(node_dir "$node")
    started_pid=
    if [[ -n $(running_pid "$node") ]]; then
        log "node $node already runs"
        return
    fi
    mkdir -p "$dir"
    # shellcheck disable=SC2086 # KEEL_ARGS is a list of flags
    nohup "$keel" serve --dir "$dir/data" --bind 127.0.0.1 --port "$(client_port "$node")" \
        --metrics-port "$(metrics_port "$node")" --cores "$cores" --shards "$shards" \
        --id "$node" --peers "$(peers)" ${KEEL_ARGS:-} \
        </dev/null >>"$dir/keel.log" 2>&1 &
    started_pid=$!
    echo "$started_pid" >"$(pid_file "$node")"
}

# wait_ping N PID: polls node N, started as PID (whose command line may not
# say keel yet: the shell forks before it execs), until it answers PING.
wait_ping() {
    local node=$1 pid=$2 deadline=$((SECONDS + ready_deadline_s))
    until ping_ok "$node"; do
        if ! alive "$pid"; then
            log "node $node exited; the end of $(node_dir "$node")/keel.log:"
            tail -20 "$(node_dir "$node")/keel.log" >&2
            return 1
        fi
        if ((SECONDS > deadline)); then
            log "node $node did not answer PING within ${ready_deadline_s}s"
            return 1
        fi
        sleep 0.05
    done
}

# Polls CLUSTER INFO on node N until every slot's shard has a leader.
wait_leaders() {
    local node=$1 deadline=$((SECONDS + ready_deadline_s))
    until redis-cli -p "$(client_port "$node")" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; do
        if ((SECONDS > deadline)); then
            log "not every shard had a leader within ${ready_deadline_s}s"
            return 1
        fi
        sleep 0.05
    done
}

# How many shards node N says it leads (0 if it does not answer).
led_count() {
    redis-cli -p "$(client_port "$1")" info replication 2>/dev/null |
        grep -c '^shard[0-9]*:role=leader' || true
}

# Every node's claims to lead, with their terms.
leadership() {
    local node
    for node in "${nodes[@]}"; do
        echo "node $node: $(led_shards "$node")"
    done
}

# Whether leadership is balanced: every shard led by exactly one node (no
# deposed leader still claiming one) and no node leading more than its share.
balanced() {
    local share=$(((shards + ${#nodes[@]} - 1) / ${#nodes[@]}))
    local node count total=0 most=0
    for node in "${nodes[@]}"; do
        count=$(led_count "$node")
        total=$((total + count))
        ((count > most)) && most=$count
    done
    ((total == shards && most <= share))
}

# Polls until leadership is balanced and the same over $settle_s (longer
# than an election timeout): the nodes hand each shard to its preferred
# member a few seconds after an election chose another, a slow start may
# set off an election, and meanwhile a client meets -TRYAGAIN.
wait_balanced() {
    local deadline=$((SECONDS + ready_deadline_s)) before
    while :; do
        before=$(leadership)
        sleep "$settle_s"
        balanced && [[ $(leadership) == "$before" ]] && return
        if ((SECONDS > deadline)); then
            log "leadership not balanced within ${ready_deadline_s}s"
            return 1
        fi
    done
}

# The shards node N says it leads, from INFO replication (`shardS:role=leader`).
led_shards() {
    redis-cli -p "$(client_port "$1")" info replication 2>/dev/null |
        tr -d '\r' | sed -n 's/^shard\([0-9]*\):role=leader,term=\([0-9]*\).*/\1 (term \2)/p' |
        paste -sd, - | sed 's/,/, /g'
}

status() {
    local node pid led
    for node in "${nodes[@]}"; do
        pid=$(running_pid "$node")
        if [[ -z $pid ]]; then
            echo "node $node  port $(client_port "$node")  down"
        elif ! ping_ok "$node"; then
            echo "node $node  port $(client_port "$node")  pid $pid  not answering"
        else
            led=$(led_shards "$node")
            echo "node $node  port $(client_port "$node")  pid $pid  up  leads: ${led:-none}"
        fi
    done
}

stop_node() {
    local node=$1 pid deadline=$((SECONDS + stop_deadline_s))
    pid=$(running_pid "$node")
    [[ -n $pid ]] || return 0
    kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS > deadline)); then
            log "node $node (pid $pid) did not exit within ${stop_deadline_s}s: SIGKILL"
            kill -KILL "$pid"
        fi
        sleep 0.05
    done
    rm -f "$(pid_file "$node")"
}

kill_node() {
    local node=$1 pid
    pid=$(running_pid "$node")
    if [[ -z $pid ]]; then
        log "node $node does not run"
        return
    fi
    kill -KILL "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.01; done
    rm -f "$(pid_file "$node")"
}

check_node() {
    [[ ${1:-} =~ ^[123]$ ]] || { echo "usage: $0 $2 1|2|3" >&2; exit 64; }
}

command=${1:-}
case $command in
    start)
        install_tools
        find_keel
        started=()
        for node in "${nodes[@]}"; do
            start_node "$node"
            started+=("${started_pid:-$(running_pid "$node")}")
        done
        for node in "${nodes[@]}"; do wait_ping "$node" "${started[node - 1]}"; done
        wait_leaders 1
        wait_balanced
        status
        log "ready: redis-cli -c -p $(client_port 1)"
        ;;
    stop)
        for node in "${nodes[@]}"; do stop_node "$node"; done
        ;;
    status)
        install_tools
        status
        ;;
    kill)
        check_node "${2:-}" kill
        kill_node "$2"
        ;;
    restart)
        check_node "${2:-}" restart
        install_tools
        find_keel
        [[ -z $(running_pid "$2") ]] || kill_node "$2"
        start_node "$2"
        wait_ping "$2" "$started_pid"
        all_running=true
        for node in "${nodes[@]}"; do
            [[ -n $(running_pid "$node") ]] || all_running=false
        done
        if $all_running; then wait_balanced; fi
        status
        ;;
    *)
        echo "usage: $0 start | stop | status | kill N | restart N" >&2
        exit 64
        ;;
esac
