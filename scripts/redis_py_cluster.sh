#!/usr/bin/env bash
# redis-py's cluster client (`redis.cluster.RedisCluster`) against one Keel
# node: it starts from CLUSTER SLOTS, then SET, GET and MGET with hash tags
# go to the node that leads each slot; MGET across slots gets the server's
# -CROSSSLOT. The script fails unless every check of the Python program
# passes (issue 13). python3-redis is installed with apt-get when missing.
#
# Settings (environment):
#   CARGO_TARGET_DIR  where cargo builds keel   [target]
#   KEEL_BIN          a keel binary to use instead of building one
# Usage: scripts/redis_py_cluster.sh
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# How long a server may take to answer its first PING.
ready_deadline_s=60
bench_name=redis-py-cluster
# Two cores and four shards: four slot ranges, two on each core.
keel_flags="--cores 2 --shards 4"
# shellcheck source=../bench/lib.sh
source "$repo/bench/lib.sh"

install_tools
install_python_redis
find_keel

cat >"$work/check.py" <<'PY'
import logging
import sys

import redis
from redis.cluster import RedisCluster

port = int(sys.argv[1])
cluster = RedisCluster(host="127.0.0.1", port=port)
nodes = cluster.get_nodes()
assert [(node.host, node.port) for node in nodes] == [("127.0.0.1", port)], nodes
assert cluster.cluster_keyslot("foo") == 12182

for tag in range(64):
    a, b = f"{{t{tag}}}a", f"{{t{tag}}}b"
    assert cluster.set(a, tag) is True
    assert cluster.set(b, f"v{tag}") is True
    assert cluster.get(a) == str(tag).encode(), tag
    assert cluster.mget(a, b, f"{{t{tag}}}none") == [str(tag).encode(), f"v{tag}".encode(), None]

# redis-py refuses a cross-slot MGET itself; sent to the node anyway, the
# server answers -CROSSSLOT (which redis-py would log as it raises).
logging.disable(logging.ERROR)
try:
    cluster.execute_command("MGET", "a", "b", target_nodes=cluster.get_default_node())
    raise AssertionError("MGET across slots ran")
except redis.exceptions.ResponseError as error:
    assert str(error) == "Keys in request don't hash to the same slot", str(error)

slot = cluster.cluster_keyslot("{t1}a")
assert cluster.cluster_countkeysinslot(slot) == 2
print("redis-py RedisCluster: SET, GET, MGET with hash tags and -CROSSSLOT as expected")
PY

port=$(free_port)
start_server keel "$port"
log "keel on port $port"
"$python" "$work/check.py" "$port"
stop_server "$server_pid"
