#!/usr/bin/env bash
# redis-py's default pipeline (`redis.Redis().pipeline()`, which sends MULTI
# ... EXEC in one write) and its WATCH helper (`Redis.transaction`) against
# Keel and against redis-server: the same Python program runs against each
# and prints what it got; the script fails unless both printed the same and
# the program's own checks passed (issue 11). python3-redis is installed with
# apt-get when missing.
#
# Settings (environment):
#   CARGO_TARGET_DIR  where cargo builds keel   [target]
#   KEEL_BIN          a keel binary to use instead of building one
# Usage: scripts/redis_py_transactions.sh
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# How long a server may take to answer its first PING.
ready_deadline_s=60
bench_name=redis-py
# Two cores and four shards: EXEC hops to the core owning the slot.
keel_flags="--cores 2 --shards 4"
# shellcheck source=../bench/lib.sh
source "$repo/bench/lib.sh"

install_tools
install_python_redis
find_keel

cat >"$work/check.py" <<'PY'
import sys
import threading

import redis

port = int(sys.argv[1])
r = redis.Redis(port=port)
r.flushall()
out = []

# The default pipeline is a transaction: one write, one EXEC.
pipe = r.pipeline()
pipe.set("{u}a", "1").incr("{u}b", 5).get("{u}a").mget("{u}a", "{u}b")
out.append(pipe.execute())

# A runtime error is one reply of the array; the rest ran.
pipe = r.pipeline()
pipe.set("{u}s", "text").incr("{u}s").get("{u}s")
out.append(pipe.execute(raise_on_error=False))

# WATCH, another connection writes, EXEC answers nil: redis-py raises.
other = redis.Redis(port=port)
with r.pipeline() as pipe:
    pipe.watch("{u}w")
    other.set("{u}w", "theirs")
    pipe.multi()
    pipe.set("{u}w", "mine")
    try:
        pipe.execute()
        out.append("exec ran")
    except redis.WatchError:
        out.append("watch error")
out.append(r.get("{u}w"))

# Optimistic increments from several threads: none is lost.
def increment(pipe):
    value = int(pipe.get("{u}counter") or 0)
    pipe.multi()
    pipe.set("{u}counter", value + 1)

def work():
    client = redis.Redis(port=port)
    for _ in range(50):
        client.transaction(increment, "{u}counter")

threads = [threading.Thread(target=work) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
out.append(r.get("{u}counter"))

expected_counter = b"200"
assert out[-1] == expected_counter, out
assert out[0] == [True, 5, b"1", [b"1", b"5"]], out
assert out[2] == "watch error", out
for item in out:
    print(repr(item))
PY

for name in keel redis; do
    port=$(free_port)
    start_server "$name" "$port"
    log "$name on port $port"
    "$python" "$work/check.py" "$port" >"$work/$name.out"
    stop_server "$server_pid"
done
cat "$work/keel.out"
if ! diff -u "$work/redis.out" "$work/keel.out"; then
    log "Keel's replies differ from redis-server's"
    exit 1
fi
log "Keel and redis-server agree"
