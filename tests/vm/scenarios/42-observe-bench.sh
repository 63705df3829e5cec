#!/bin/sh
# vmtest-timeout: 3600
# What observing costs a monitored workload, measured in one VM run (issue 2's target: <= 3%), on a
# kernel where opens and network calls are observed through fexit: the three loops of `make bench`
# (tests/bench/loadgen.c: openat+close, fork+exec of /bin/true, TCP connect to loopback), always
# under `stance launch`, without the daemon (A), with only empty programs on the daemon's hooks (F,
# the floor: what the hooks cost before any program does work) and with the daemon running (B).
# Under the host's clock, emulation distorts absolute times and only ratios mean something; under
# `stance-vmtest --icount` (as `make bench` runs it) a guest ns is one executed instruction, and
# the CPU times per operation are instruction counts, the same from run to run.
# Each pair times every loop once in each phase; the daemon and the floor loader are started and
# stopped for the pair; odd pairs run A F B, even pairs B F A, so neither A nor B always runs on a
# warm cache. Prints per pair and loop (per operation)
#   `obs-bench-pair: LOOP PAIR WITHOUT_NS WITHOUT_CPU_NS WITH_NS WITH_CPU_NS FLOOR_NS FLOOR_CPU_NS`,
# then per loop `obs-bench: LOOP with/without MEDIAN CPU_MEDIAN (N pairs)` and
# `obs-bench: LOOP floor/without MEDIAN CPU_MEDIAN (N pairs)` (medians of the per-pair ratios of wall
# and of CPU time), the hooks the daemon used as
# `obs-bench-hooks: file opens=HOOK network=HOOK capabilities=HOOK`, and the guest's clocksource as
# `obs-bench-clock: NAME`. Before the bench it checks that repeats the kernel suppresses are still
# counted in the graph (`ok: 300 files read 5 times each, ...`).
#
# Needs on PATH `stance`, `loadgen` (tests/bench/loadgen.c) and `bench-floor` (tests/bench/floor.c,
# linked with libbpf: --bin with --lib-from-ldd), all compiled on the host, and the floor's programs
# (tests/bench/floor-fexit.bpf.c, compiled with clang) at $STANCE_OBS_BENCH_FLOOR_OBJ; `make vm-tests`
# and tests/bench/run.sh pass all of them. Without them the scenario fails: a bench without its floor
# would read as if the hooks were free.
#   STANCE_OBS_BENCH_PAIRS      pairs (default 5)
#   STANCE_OBS_BENCH_SECONDS    length of one timed run, per loop (default 0.5)
#   STANCE_OBS_BENCH_FLOOR_OBJ  the floor's BPF object (default /opt/stance-bench/floor-fexit.bpf.o)
fail() {
    echo "FAIL: $*"
    [ -f /tmp/ob-stance.out ] && cat /tmp/ob-stance.out /tmp/ob-stance.err
    [ -f /tmp/ob-floor.out ] && cat /tmp/ob-floor.out
    exit 1
}

PAIRS=${STANCE_OBS_BENCH_PAIRS:-5}
SECONDS_PER_RUN=${STANCE_OBS_BENCH_SECONDS:-0.5}
LOOPS="open forkexec connect"
command -v stance >/dev/null || fail "stance is not in the guest (pass --bin)"
# `make vm-tests` runs it with one short pair, `make bench` (tests/bench/run.sh) with its full count.
command -v loadgen >/dev/null || fail "loadgen is not in the guest (pass --bin, as make vm-tests and tests/bench/run.sh do)"
FLOOR_OBJ=${STANCE_OBS_BENCH_FLOOR_OBJ:-/opt/stance-bench/floor-fexit.bpf.o}
command -v bench-floor >/dev/null ||
    fail "bench-floor (tests/bench/floor.c) is not in the guest: pass it with --bin and --lib-from-ldd, as make vm-tests and tests/bench/run.sh do"
[ -f "$FLOOR_OBJ" ] ||
    fail "the floor's programs are not in the guest at $FLOOR_OBJ: pass tests/bench/floor-fexit.bpf.c compiled with --file OBJ:$FLOOR_OBJ, as make vm-tests and tests/bench/run.sh do"
# The files loadgen opens, and the binary it execs, exist on every Debian system but not in the initramfs.
mkdir -p /etc
for f in hostname passwd group hosts; do [ -e /etc/$f ] || echo "vm" >/etc/$f; done
[ -x /bin/true ] || ln -s busybox /bin/true

# await_start PID OUTPUT PATTERN WHAT: waits until the background job PID prints PATTERN to OUTPUT.
await_start() {
    w=0
    until grep -q "$3" "$2" 2>/dev/null; do
        kill -0 "$1" 2>/dev/null || fail "$4 exited during start"
        w=$((w + 1))
        [ "$w" -gt 600 ] && fail "$4 did not start within 120 s"
        sleep 0.2
    done
    # Let start-up settle before anything is timed.
    sleep 1
}
# stop_job PID WHAT: SIGTERM to the background job PID, which must then exit cleanly.
stop_job() {
    kill -TERM "$1"
    wait "$1" || fail "$2 exited with an error on SIGTERM"
}

db=/tmp/obs-bench.db
DPID=
start_daemon() {
    # The background job truncates its output file some time after `&` returns: without this, the
    # wait below could read the previous daemon's start-up lines.
    rm -f /tmp/ob-stance.out /tmp/ob-stance.err
    # shellcheck disable=SC2086 # CONFIG is empty or "--config FILE"
    STANCE_LOG=${STANCE_LOG:-warn} stance run --db "$db" $CONFIG >/tmp/ob-stance.out 2>/tmp/ob-stance.err &
    DPID=$!
    await_start "$DPID" /tmp/ob-stance.out "stance: writing to" "the daemon"
}
stop_daemon() {
    stop_job "$DPID" "the daemon"
    DPID=
}
# The floor: empty programs on the daemon's hooks, attached by bench-floor until it gets SIGTERM.
FPID=
start_floor() {
    rm -f /tmp/ob-floor.out
    bench-floor "$FLOOR_OBJ" >/tmp/ob-floor.out 2>&1 &
    FPID=$!
    await_start "$FPID" /tmp/ob-floor.out "^attached" "bench-floor (loading and attaching the floor's programs)"
}
# Its programs are detached when its links' fds close, as it exits: by the time `wait` returns.
stop_floor() {
    stop_job "$FPID" bench-floor
    FPID=
}

# run LOOP N: one timed run as a monitored workload; sets NS to its wall time per operation and
# CPU to its CPU time per operation (user + system of the workload; time the kernel spends in the
# probes for it is system time, time it waits while the daemon runs on the VM's one CPU is not).
# (Not in $(...): `fail` must end the scenario, not a subshell.)
run() {
    line=$(stance launch --workload "obs-bench-$1" -- loadgen "$1" "$2" 2>&1) || fail "loadgen $1 $2 failed: $line"
    NS=$(echo "$line" | sed -n 's/.* ns_per_op=\([0-9.]*\) .*/\1/p')
    CPU=$(echo "$line" | sed -n 's/.* cpu_ns_per_op=\([0-9.]*\).*/\1/p')
    [ -n "$NS" ] && [ -n "$CPU" ] || fail "loadgen $1 printed no result: $line"
}

# The counts the bench leans on: repeats the kernel suppresses still reach the graph. 300 files (more
# than the kernel's 256-slot per-CPU dedup cache, so keys push each other out of their slots) are
# each read twice in a row (the second read is suppressed while the key holds its slot, and the next
# file may then take that slot), twice over, then once more after the dedup window: the last read of
# each file is emitted and carries every repeat suppressed before it, so each edge must count 5.
mkdir -p /tmp/oc
i=0
while [ $i -lt 300 ]; do echo $i >/tmp/oc/f$i; i=$((i + 1)); done
echo "dedup_window_ms = 1000" >/tmp/oc.toml
CONFIG="--config /tmp/oc.toml"
start_daemon
CONFIG=
stance launch --workload obs-count -- sh -c 'cd /tmp/oc; l=$(for f in f*; do echo "$f $f"; done)
    cat $l >/dev/null; cat $l >/dev/null; sleep 2; cat f* >/dev/null' || fail "the count workload failed"
stop_daemon
counts=$(stance graph obs-count --db "$db" -o json | tr -d ' \n' |
    grep -o '"target_label":"/tmp/oc/f[0-9]*"[^}]*"count":[0-9]*' | sed 's/.*"count":\([0-9]*\)$/\1/' | sort | uniq -c)
[ "$(echo "$counts" | sed 's/^ *//')" = "300 5" ] || fail "file edges should count 5 opens each, got (how many, count): $counts"
echo "ok: 300 files read 5 times each, every edge counts 5"
rm -rf /tmp/oc /tmp/oc.toml "$db" "$db"-wal "$db"-shm

# The hooks in use, from the daemon's start-up report.
start_daemon
hook() { sed -n "s/^  $1: active (\([^;)]*\).*/\1/p" /tmp/ob-stance.out; }
fo=$(hook "file opens")
nw=$(hook "network")
cap=$(hook "capabilities")
echo "obs-bench-hooks: file opens=${fo:-none} network=${nw:-none} capabilities=${cap:-none}"
# What a clock read costs here depends on it (under emulation, anything but the TSC is a trap).
echo "obs-bench-clock: $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null)"
stop_daemon

# Calibrate without the daemon: N per loop so that one run takes about SECONDS_PER_RUN.
for loop in $LOOPS; do
    case $loop in open) n=20000 ;; forkexec) n=50 ;; connect) n=1000 ;; esac
    run $loop $n
    n=$(awk -v s="$SECONDS_PER_RUN" -v ns="$NS" 'BEGIN { n = int(s * 1e9 / ns); print (n < 1) ? 1 : n }')
    eval "N_$loop=$n"
    run $loop $n # warm-up, not recorded
    : >"/tmp/obs-bench-$loop"
done
echo "obs-bench-setup: pairs=$PAIRS open=$N_open forkexec=$N_forkexec connect=$N_connect"

# phase A|F|B: every loop once; the times go to /tmp/obs-bench-PHASE-LOOP.
phase() {
    for loop in $LOOPS; do
        eval "n=\$N_$loop"
        run $loop "$n"
        echo "$NS $CPU" >"/tmp/obs-bench-$1-$loop"
    done
}
i=1
while [ $i -le "$PAIRS" ]; do
    if [ $((i % 2)) -eq 1 ]; then
        phase A
    else
        start_daemon
        phase B
        stop_daemon
    fi
    start_floor
    phase F
    stop_floor
    if [ $((i % 2)) -eq 1 ]; then
        start_daemon
        phase B
        stop_daemon
    else
        phase A
    fi
    for loop in $LOOPS; do
        echo "obs-bench-pair: $loop $i $(cat /tmp/obs-bench-A-$loop) $(cat /tmp/obs-bench-B-$loop) $(cat /tmp/obs-bench-F-$loop)" |
            tee -a "/tmp/obs-bench-$loop"
    done
    i=$((i + 1))
done

# median FIELD_WITH FIELD_WITHOUT LOOP: the median of the per-pair ratios.
median() {
    awk -v a="$1" -v b="$2" '{print $a / $b}' "/tmp/obs-bench-$3" | sort -n |
        awk '{r[NR] = $1} END {print (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2}'
}
for loop in $LOOPS; do
    echo "obs-bench: $loop with/without $(median 6 4 $loop) $(median 7 5 $loop) ($PAIRS pairs)"
    echo "obs-bench: $loop floor/without $(median 8 4 $loop) $(median 9 5 $loop) ($PAIRS pairs)"
done
# Where the time goes, when bpftool is in the guest: one more run of each loop with the daemon and
# kernel.bpf_stats_enabled, printing `obs-bench-op: LOOP NS_PER_OP` and, per program of the daemon
# that ran, `obs-bench-bpf: LOOP PROGRAM RUNS RUN_TIME_NS` (its share of an operation is less at the
# mercy of a busy host than the ratios above: both are measured in the same second).
if command -v bpftool >/dev/null; then
    . /scenarios/lib/bpfstats.sh
    start_daemon
    echo 1 >/proc/sys/kernel/bpf_stats_enabled || fail "cannot enable kernel.bpf_stats_enabled"
    snap >/tmp/obs-bpf-before
    for loop in $LOOPS; do
        eval "n=\$N_$loop"
        run $loop "$n"
        echo "obs-bench-op: $loop $NS"
        snap >/tmp/obs-bpf-after
        awk -v loop="$loop" 'NR == FNR { c[$1] = $3; t[$1] = $4; next }
            ($1 in c) && $3 > c[$1] && $2 ~ /^stance_/ { print "obs-bench-bpf:", loop, $2, $3 - c[$1], $4 - t[$1] }' \
            /tmp/obs-bpf-before /tmp/obs-bpf-after
        mv /tmp/obs-bpf-after /tmp/obs-bpf-before
    done
    echo 0 >/proc/sys/kernel/bpf_stats_enabled
    stop_daemon
fi
rm -f "$db" "$db"-wal "$db"-shm /tmp/obs-bench-* /tmp/obs-bpf-*
echo "ok: scenario done"
