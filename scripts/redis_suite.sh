#!/usr/bin/env bash
# Redis's own test suite as Keel's yardstick (issue 11, docs/REDIS_SUITE.md):
# runs units of the `tests/` of the redis source against `keel serve` and
# against a redis-server started the same way, in the suite's external-server
# mode, and prints passed/failed per unit side by side, then the names of the
# tests Keel fails.
#
# The suite is not in this repository. It comes from Debian's source package
# of the installed redis-server (`apt-get source`, through a private apt
# configuration made of deb-src twins of the machine's Debian sources, so the
# system's own apt state is untouched), with Debian's patches applied: the
# tests match the server they are compared against. It is kept under
# $REDIS_SUITE_DIR and fetched only once.
#
# Both servers skip the same tests, listed in scripts/redis_suite.skip: those
# that need what Keel does not have (lists, sets, hashes, sorted sets, streams,
# scripts, Redis's replication stream, maxmemory), each named in
# docs/REDIS_SUITE.md with its reason. Skipping them, rather than letting them
# fail, matters in unit/multi: a test that fails inside MULTI leaves the
# suite's shared client in it, and every later test fails after it.
#
# Exit status: 0 when the units ran (the figures are the result, failures
# included); non-zero only when the suite or a server could not be set up.
#
# Settings (environment):
#   REDIS_SUITE_UNITS      units to run            [type/string expire keyspace multi protocol]
#   REDIS_SUITE_TIMEOUT_S  wall-clock bound per unit and server [180]
#   REDIS_SUITE_DIR        where the suite is kept [target/redis-suite]
#   CARGO_TARGET_DIR       where cargo builds keel [target]
#   KEEL_BIN               a keel binary to measure instead of building one
# Usage: scripts/redis_suite.sh
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

units=${REDIS_SUITE_UNITS:-type/string expire keyspace multi protocol}
unit_timeout_s=${REDIS_SUITE_TIMEOUT_S:-180}
suite_root=${REDIS_SUITE_DIR:-$repo/target/redis-suite}
# How long a server may take to answer its first PING.
ready_deadline_s=60

bench_name=redis-suite
keel_flags=""
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"

# The deb-src twins of the machine's Debian package sources, one-line and
# deb822 forms, written into the private apt directory $1.
debian_source_lists() {
    local apt_dir=$1 file
    : >"$apt_dir/sources.list"
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $file ]] || continue
        sed -n 's/^deb \(.*debian.*\)$/deb-src \1/p' "$file" >>"$apt_dir/sources.list"
    done
    for file in /etc/apt/sources.list.d/*.sources; do
        [[ -f $file ]] && grep -q '^URIs:.*debian' "$file" || continue
        sed 's/^Types: deb$/Types: deb-src/' "$file" >"$apt_dir/sources.list.d/${file##*/}"
    done
}

# Sets $suite to a directory holding the redis source of the installed
# redis-server's Debian version, fetching and unpacking it if needed.
fetch_suite() {
    local version upstream
    version=$(dpkg-query -W -f='${source:Version}' redis-server)
    suite=$suite_root/redis-${version#*:}
    if [[ -f $suite/.unpacked ]]; then
        return
    fi
    log "fetching the source of redis $version (apt-get source)"
    local apt_dir=$suite_root/apt
    rm -rf "$apt_dir" "$suite"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/sources.list.d" "$apt_dir/cache/archives/partial" \
        "$apt_dir/download"
    debian_source_lists "$apt_dir"
    local apt_options=(-qq -o "Dir::Etc::SourceList=$apt_dir/sources.list"
        -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d" -o "Dir::State::Lists=$apt_dir/lists"
        -o "Dir::Cache=$apt_dir/cache" -o "APT::Sandbox::User=root")
    # A source that has no deb-src index only warns; the download below is
    # what must succeed.
    apt-get "${apt_options[@]}" update || log "apt-get update reported errors"
    # The installed version's source; if the mirror no longer has it (a
    # newer update replaced it), the one it has, said aloud.
    (cd "$apt_dir/download" &&
        apt-get "${apt_options[@]}" source --download-only "redis=$version" 2>/dev/null ||
        { log "no source of redis $version on the mirror: taking its newest" &&
            apt-get "${apt_options[@]}" source --download-only redis; })
    local tarball
    tarball=$(echo "$apt_dir"/download/redis_*.orig.tar.gz)
    upstream=${tarball##*/redis_}
    upstream=${upstream%.orig.tar.gz}
    local unpack=$suite_root/unpack
    rm -rf "$unpack"
    mkdir -p "$unpack"
    tar -xzf "$tarball" -C "$unpack"
    tar -xJf "$apt_dir"/download/redis_*.debian.tar.xz -C "$unpack/redis-$upstream"
    (
        cd "$unpack/redis-$upstream"
        local patch
        grep -v '^#' debian/patches/series | while read -r patch; do
            if [[ -n $patch ]]; then
                patch -p1 --forward --quiet <"debian/patches/$patch"
            fi
        done
    )
    mv "$unpack/redis-$upstream" "$suite"
    rm -rf "$unpack" "$apt_dir"
    touch "$suite/.unpacked"
}

# run_unit SERVER PORT UNIT: runs one unit against the server on PORT in the
# mode of issue 11; its output goes to $logs/SERVER-UNIT.out (ANSI colours
# off), and the unit's status (124 on timeout) to $unit_status.
run_unit() {
    local server=$1 port=$2 unit=$3
    local out=$logs/$server-${unit//\//_}.out
    unit_status=0
    (cd "$suite" && TERM=dumb timeout --kill-after=5 "$unit_timeout_s" ./runtest \
        --host 127.0.0.1 --port "$port" --single "unit/$unit" --cluster-mode --durable \
        --tags -needs:debug --clients 1 --timeout "$unit_timeout_s" \
        --skipfile "$repo/scripts/redis_suite.skip") >"$out" 2>&1 ||
        unit_status=$?
}

# count STATUS FILE: how many tests the run in FILE reported with STATUS.
count() {
    grep -c "^\[$1\]: " "$2" || true
}

install_tools tclsh8.6=tcl patch=patch timeout=coreutils
fetch_suite
find_keel
logs=$suite_root/logs
rm -rf "$logs"
mkdir -p "$logs"
log "suite in $suite; logs in $logs"

started_s=$(date +%s)
declare -A status
for server in keel redis; do
    port=$(free_port)
    start_server "$server" "$port"
    for unit in $units; do
        # A unit that kills the server must not fail every later unit.
        if ! kill -0 "$server_pid" 2>/dev/null; then
            log "$server exited during the previous unit; starting it again"
            start_server "$server" "$port"
        fi
        run_unit "$server" "$port" "$unit"
        status[$server-$unit]=$unit_status
    done
    stop_server "$server_pid"
done
elapsed_s=$(($(date +%s) - started_s))

printf '\n%-14s %12s %12s %12s %12s\n' unit keel-passed keel-failed redis-passed redis-failed
for unit in $units; do
    row=()
    for server in keel redis; do
        out=$logs/$server-${unit//\//_}.out
        passed=$(count ok "$out")
        failed=$(count err "$out")
        # runtest exits 1 when a test failed: only an exception (the unit
        # stopped early) or the timeout make the figures partial.
        if grep -q '^\[exception\]: ' "$out"; then
            failed="$failed+aborted"
        elif [[ ${status[$server-$unit]} == 124 || ${status[$server-$unit]} == 137 ]]; then
            failed="$failed+timeout"
        fi
        row+=("$passed" "$failed")
    done
    printf '%-14s %12s %12s %12s %12s\n' "$unit" "${row[@]}"
done
echo "(${elapsed_s}s for both servers; +timeout: the unit ran past ${unit_timeout_s}s," \
    "+aborted: the suite stopped the unit early, see the log)"

# failures FILE UNIT: each failed test of the run in FILE, with the first
# line of its error (an exception's message is the line after its
# truncated copy, followed by "while executing").
failures() {
    awk -v unit="$2" '
        function flush() { if (name != "") print "  " unit ": " name " -- " substr(message, 1, 120) }
        /^\[err\]: / { flush(); name = substr($0, 8); sub(/ in tests\/unit\/.*/, "", name); line = 0; next }
        /^\[exception\]: / { flush(); name = "exception"; message = substr($0, 14); line = 3; next }
        name != "" && line == 0 { message = $0; line = 1; next }
        name != "" && line == 1 { candidate = $0; line = 2; next }
        name != "" && line == 2 { if ($0 ~ /while executing/) message = candidate; flush(); name = ""; next }
        END { flush() }
    ' "$1"
}

for server in keel redis; do
    echo
    echo "Tests $server fails:"
    listed=$(for unit in $units; do failures "$logs/$server-${unit//\//_}.out" "$unit"; done)
    echo "${listed:-  (none)}"
done
