#!/bin/bash
# Two daemon builds against no daemon, on one workload loop, in one run: for regressions between
# commits that `make bench` (one build per run) cannot tell from its run-to-run spread on this host.
#
#   tests/bench/ab-daemons.sh OLD_STANCE NEW_STANCE [connect|open|forkexec]
#
# Per triple: the loop without a daemon (A), under OLD's daemon and under NEW's (each started on a
# fresh database and stopped with SIGTERM), in rotating order; the loop runs under `stance launch`
# (NEW's) pinned to CPU 1. Prints each triple's CPU time per operation and the median slowdowns.
# PAIRS (15) and N (30000 operations per run) set the size. Root; removes /sys/fs/bpf/stance after
# each daemon, so neither adopts the other's pins.
set -eu
OLD=$1
NEW=$2
LOOP=${3:-connect}
N=${N:-30000}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
gcc -O2 -Wall -Wextra -Werror -pthread -o "$TMP/loadgen" "$(dirname "$0")/loadgen.c"
W=ab-daemons-$$

run() {
    taskset -c 1 "$NEW" launch --workload "$W" -- "$TMP/loadgen" "$LOOP" "$N" |
        sed -n 's/.*cpu_ns_per_op=\([0-9.]*\).*/\1/p'
}

with() {
    rm -f "$TMP"/db*
    "$1" run --db "$TMP/db" >"$TMP/out" 2>"$TMP/err" &
    local pid=$! i
    for i in $(seq 1 150); do
        grep -q 'stance: writing to' "$TMP/out" && break
        sleep 0.2
    done
    sleep 0.5
    run
    kill -TERM "$pid"
    wait "$pid"
    rm -rf /sys/fs/bpf/stance
}

run >/dev/null
for p in $(seq 1 "${PAIRS:-15}"); do
    case $((p % 3)) in
        0) a=$(run); o=$(with "$OLD"); n=$(with "$NEW") ;;
        1) n=$(with "$NEW"); a=$(run); o=$(with "$OLD") ;;
        2) o=$(with "$OLD"); n=$(with "$NEW"); a=$(run) ;;
    esac
    echo "$p $a $o $n"
done | python3 -c '
import statistics, sys
old, new = [], []
for line in sys.stdin:
    p, a, o, n = line.split()
    a, o, n = float(a), float(o), float(n)
    old.append(o / a - 1)
    new.append(n / a - 1)
    print(f"triple {p}: A {a:.0f} ns, old {o:.0f} ns ({o / a - 1:+.1%}), new {n:.0f} ns ({n / a - 1:+.1%})")
print(f"median slowdown: old {statistics.median(old):+.1%}, new {statistics.median(new):+.1%}")
'
rmdir "$(findmnt -n -t cgroup2 -o TARGET | head -n 1)/stance/$W" 2>/dev/null || true
