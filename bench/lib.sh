# Shared by the benchmark scripts (source it after setting `repo`, the
# repository's root, `bench_name` and `ready_deadline_s`): a scratch directory removed on exit with every server
# started, the tools installed when missing, free ports, servers started and
# polled until they answer PING, the keel binary built or taken from KEEL_BIN.
#
# A server is NAME in start_server: `keel` (with `$keel_flags`), `redis`
# (no persistence), or `redis-always` / `redis-everysec` (AOF with that fsync).

work=$(mktemp -d -t "keel-$bench_name.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# Makes the exit also stop the cluster that scripts/cluster.sh runs in
# $KEEL_CLUSTER_DIR (its nodes are not children of this shell).
stop_cluster_on_exit() {
    trap '"$repo/scripts/cluster.sh" stop || true; cleanup' EXIT
}

log() { echo "$bench_name: $*" >&2; }

# install_tools [COMMAND=PACKAGE ...]: redis-server and redis-cli, and any
# other command given with the Debian package that has it.
install_tools() {
    local missing=() wanted
    for wanted in redis-server=redis-server redis-cli=redis-tools "$@"; do
        command -v "${wanted%%=*}" >/dev/null || missing+=("${wanted#*=}")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        if ! apt-get install -y "${missing[@]}" >/dev/null 2>&1; then
            apt-get update >/dev/null
            apt-get install -y "${missing[@]}" >/dev/null
        fi
    fi
}

# Sets $python to the system's Python, with python3-redis installed by apt
# when missing (a python3 earlier on PATH, from pyenv or a virtualenv, would
# not see it).
install_python_redis() {
    python=/usr/bin/python3
    if ! "$python" -c 'import redis.cluster' 2>/dev/null; then
        log "installing python3-redis"
        apt-get install -y python3-redis >/dev/null 2>&1 ||
            { apt-get update >/dev/null && apt-get install -y python3-redis >/dev/null; }
    fi
}

# Sets $keel: KEEL_BIN, or the release binary built in CARGO_TARGET_DIR.
find_keel() {
    if [[ -n ${KEEL_BIN:-} ]]; then
        keel=$KEEL_BIN
        return
    fi
    log "building keel (release)"
    (cd "$repo" && cargo build --release --quiet -p keel-engine --bin keel)
    keel=${CARGO_TARGET_DIR:-$repo/target}/release/keel
    [[ ${CARGO_TARGET_DIR:-} == /* || -z ${CARGO_TARGET_DIR:-} ]] || keel=$repo/$keel
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

now_ns() { date +%s%N; }

# Polls PING every few ms; prints the milliseconds from $2 (ns) to PONG.
wait_ready() {
    local port=$1 started_ns=$2 pid=$3
    local deadline_ns=$((started_ns + ready_deadline_s * 1000000000))
    until [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "server $pid on port $port exited before answering PING"
            return 1
        fi
        if (($(now_ns) > deadline_ns)); then
            log "server on port $port did not answer PING within ${ready_deadline_s}s"
            return 1
        fi
        sleep 0.002
    done
    echo $((($(now_ns) - started_ns) / 1000000))
}

# start_server NAME PORT: starts it in the background; sets $server_pid and
# $server_ready_ms. The data directory is $work/NAME and is kept across
# restarts.
start_server() {
    local name=$1 port=$2 dir=$work/$1
    mkdir -p "$dir"
    local started_ns
    started_ns=$(now_ns)
    case $name in
        keel)
            # shellcheck disable=SC2086 # keel_flags is a list of flags
            "$keel" serve --dir "$dir/data" --port "$port" --bind 127.0.0.1 ${keel_flags:-} \
                2>>"$work/$name.log" &
            ;;
        redis)
            redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' \
                --daemonize no >>"$work/$name.log" 2>&1 &
            ;;
        redis-*)
            redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' \
                --appendonly yes --appendfsync "${name#redis-}" --daemonize no \
                >>"$work/$name.log" 2>&1 &
            ;;
    esac
    server_pid=$!
    pids+=("$server_pid")
    server_ready_ms=$(wait_ready "$port" "$started_ns" "$server_pid") || {
        tail -20 "$work/$name.log" >&2
        exit 1
    }
}

stop_server() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
