#!/usr/bin/env bash
# Failover time of a local three-node cluster (scripts/cluster.sh): KILLS
# times, SIGKILL the leader of shard 0 while a writer SETs keys of shard 0,
# and time from the kill to the first write shard 0 acknowledges (the
# writer is a cluster client: READWRITE first, so that it gets -MOVED, not
# forwarding; it follows -MOVED and retries -TRYAGAIN and refused
# connections every few ms). The killed node is restarted, and the cluster is whole again
# (every member up, every shard led), between kills. Prints each time,
# then the median and the worst.
#
# Settings (environment):
#   FAILOVER_KILLS       kills                                [20]
#   FAILOVER_CLIENT      cluster, or plain: no READWRITE, so a member
#                        forwards the write to the leader it knows  [cluster]
#   KEEL_CLUSTER_CORES   --cores of each node                 [1]
#   KEEL_CLUSTER_SHARDS  --shards of the cluster              [3]
#   KEEL_CLUSTER_BASE_PORT  scripts/cluster.sh's ports         [7000]
#   KEEL_BIN             a keel binary (else the release one, built if missing)
#   CARGO_TARGET_DIR     where cargo builds keel              [target]
# Usage: bench/failover.sh [-k KILLS]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kills=${FAILOVER_KILLS:-20}
while getopts "k:" flag; do
    case $flag in
        k) kills=$OPTARG ;;
        *) echo "usage: $0 [-k KILLS]" >&2; exit 64 ;;
    esac
done

bench_name=failover
# How long a server may take to answer its first PING.
ready_deadline_s=60
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
install_tools
find_keel
export KEEL_BIN=$keel KEEL_CLUSTER_DIR=$work/cluster
stop_cluster_on_exit

"$repo/scripts/cluster.sh" start >&2
python3 - "$repo/scripts/cluster.sh" "$work/cluster" "$kills" "${KEEL_CLUSTER_BASE_PORT:-7000}" \
    "${FAILOVER_CLIENT:-cluster}" <<'PY'
import os, signal, socket, statistics, subprocess, sys, time

cluster_sh, cluster_dir, kills, base_port, client = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
if client not in ("cluster", "plain"):
    sys.exit(f"failover: FAILOVER_CLIENT is cluster or plain, not {client}")
# scripts/cluster.sh's client ports.
PORTS = {node: base_port + node for node in (1, 2, 3)}
# One attempt's wait for its reply (a plain client waits for the forwarded
# command's own -UNCERTAIN, at most 2 s); a retry's pause.
ATTEMPT_TIMEOUT_S = 1.0 if client == "cluster" else 5.0
RETRY_PAUSE_S = 0.005
# How long a failover or a rejoin may take before the run fails.
DEADLINE_S = 60


def command(port, *args, cluster_aware=False):
    """One command on a fresh connection: a bulk reply's body, else the reply's
    line. A cluster-aware connection (READWRITE first) gets -MOVED where a
    plain one would have its command forwarded to the leader."""
    requests = [(b"READWRITE",)] if cluster_aware else []
    requests.append(args)
    with socket.create_connection(("127.0.0.1", port), timeout=ATTEMPT_TIMEOUT_S) as connection:
        connection.sendall(b"".join(
            b"".join([b"*%d\r\n" % len(request)] + [b"$%d\r\n%s\r\n" % (len(a), a) for a in request])
            for request in requests
        ))
        buffer = b""

        def line():
            nonlocal buffer
            while b"\r\n" not in buffer:
                data = connection.recv(1 << 16)
                if not data:
                    raise ConnectionError("closed")
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n")
            return head

        if cluster_aware and line() != b"+OK":
            raise ConnectionError("READWRITE refused")
        head = line()
        if not head.startswith(b"$") or head == b"$-1":
            return head.decode()
        body_bytes = int(head[1:])
        while len(buffer) < body_bytes + 2:
            data = connection.recv(1 << 16)
            if not data:
                raise ConnectionError("closed")
            buffer += data
        return buffer[:body_bytes].decode()


def shard0_leader():
    """(term, node) of the node that says it leads shard 0 in the highest term."""
    best = None
    for node, port in PORTS.items():
        try:
            info = command(port, b"INFO", b"replication")
        except OSError:
            continue
        for line in info.splitlines():
            if line.startswith("shard0:role=leader,term="):
                term = int(line.split("term=")[1].split(",")[0])
                best = max(best or (term, node), (term, node))
    return best


def whole():
    """Every node answers and sees every shard led."""
    try:
        return all("cluster_state:ok" in command(port, b"CLUSTER", b"INFO") for port in PORTS.values())
    except OSError:
        return False


def wait(what, predicate):
    started = time.monotonic()
    while not (result := predicate()):
        if time.monotonic() - started > DEADLINE_S:
            sys.exit(f"failover: {what} not within {DEADLINE_S} s")
        time.sleep(0.01)
    return result


# A key of shard 0: shard s of S holds the slots from s * 16384 / S on, so
# shard 0 holds slots 0 to 255 of any cluster of up to 64 shards.
SHARD0_SLOTS = 16384 // 64
tag = next(
    f"t{n}" for n in range(100000)
    if int(command(PORTS[1], b"CLUSTER", b"KEYSLOT", f"{{t{n}}}".encode())[1:]) < SHARD0_SLOTS
)


def set_until_acknowledged(key, preferred):
    """SET key on the leader, following redirects; returns when +OK came."""
    port = preferred
    started = time.monotonic()
    while time.monotonic() - started < DEADLINE_S:
        try:
            reply = command(port, b"SET", key.encode(), b"v", cluster_aware=client == "cluster")
        except OSError:
            reply = "refused"
        if reply.startswith("+OK"):
            return port
        if reply.startswith("-MOVED"):
            port = int(reply.split()[2].rsplit(":", 1)[1])
            continue
        # -TRYAGAIN, -UNCERTAIN, a refused or closed connection, a timeout: next node.
        ports = list(PORTS.values())
        port = ports[(ports.index(port) + 1) % len(ports)] if port in ports else ports[0]
        time.sleep(RETRY_PAUSE_S)
    sys.exit(f"failover: SET {key} not acknowledged within {DEADLINE_S} s")


times_ms = []
for kill in range(kills):
    wait("a whole cluster", whole)
    _, leader = wait("a leader of shard 0", shard0_leader)
    set_until_acknowledged(f"{{{tag}}}:warm:{kill}", PORTS[leader])
    pid = int(open(os.path.join(cluster_dir, f"node{leader}", "keel.pid")).read())
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    set_until_acknowledged(f"{{{tag}}}:after:{kill}", PORTS[leader])
    times_ms.append((time.monotonic() - killed) * 1000)
    print(f"kill {kill + 1}: node {leader}, {times_ms[-1]:.0f} ms to the first acknowledged write", flush=True)
    subprocess.run([cluster_sh, "restart", str(leader)], check=True, stdout=subprocess.DEVNULL)

print(f"failover ({client} client) over {kills} kills: median {statistics.median(times_ms):.0f} ms, worst {max(times_ms):.0f} ms")
PY
