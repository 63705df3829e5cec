#!/usr/bin/env bash
# `make bench` (after `make build`): measures Stance against the targets in BENCHMARKS.md and
# rewrites that file's generated section with the figures of this run.
#
#   1. Overhead: a monitored workload (always under `stance launch`) doing openat+close, fork+exec
#      of /bin/true, and TCP connects to loopback, in alternating phases without (A) and with (B)
#      the daemon: A B A B ..., BENCH_PAIRS pairs, median of the per-pair slowdowns B/A - 1.
#      Each pair also has an F phase between them: empty programs on the daemon's hooks
#      (tests/bench/floor.bpf.c), the floor that no program body can go below on this kernel.
#   2. Where the time goes: one more daemon session with kernel.bpf_stats_enabled, for the run
#      time of each BPF program per invocation (the sysctl is put back as it was).
#   3. Loss: opens paced at 100,000/s for 5 s with in-kernel dedup off, so every open is an event;
#      the workload's stored losses must be zero and its stored open counts must add up.
#   4. Pipeline: `cargo bench --bench pipeline` on one CPU (events/s; SQLite edges/s).
#   5. Daemon RSS (peak, VmHWM) and CPU time, during the B phases and during the loss run.
#   6. Observation with fexit, in a VM (this host's kernel refuses fexit, so here the daemon needs the
#      syscall tracepoints, which put every syscall on the slow path): scenario 42 of tests/vm alone,
#      on one kernel: the loops of 1. without the daemon, with empty programs on its fexit hooks
#      (tests/bench/floor-fexit.bpf.c) and with the daemon, alternating pairs in one VM run, on
#      QEMU's instruction clock (`stance-vmtest --icount`: a guest ns is one executed instruction,
#      so a loop's CPU time per operation is its instruction count, the same in every run).
#   7. Enforcement, in a VM (this host's kernel refuses BPF-LSM): scenario 39 of tests/vm alone, on
#      one kernel, with more pairs than `make test` runs: enforced (1,000 file rules) against observe
#      for openat+close and fork+exec, the two batches of a pair alternating, on the instruction clock
#      too; BPF run time per program.
#
# Environment: BENCH_PAIRS (default 15), BENCH_CPU (the CPU the overhead workloads and the pipeline
# bench are pinned to; default the last one), BENCH_RUN_SECONDS (length of one run, default 0.5),
# BENCH_NO_WRITE=1 to print the section instead of writing BENCHMARKS.md; for the VM: BENCH_VM_KERNEL
# (6.1 or 6.12, default 6.12), BENCH_OBS_VM_PAIRS (scenario 42's pairs, default 5: under icount the
# pairs agree to a fraction of a percent), BENCH_VM_PAIRS (scenario 39's, default 9, on the same clock), BENCH_VM_OPENS (opens per batch, default
# 5000), BENCH_VM_EXECS (fork+execs per batch, default 30). Needs root.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tests/bench
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
STANCE=$TARGET/release/stance
PAIRS=${BENCH_PAIRS:-15}
CPU=${BENCH_CPU:-$(($(nproc) - 1))}
RUN_SECONDS=${BENCH_RUN_SECONDS:-0.5}
MODES=(open forkexec connect)
VM_KERNEL=${BENCH_VM_KERNEL:-6.12}
VM_PAIRS=${BENCH_VM_PAIRS:-9}
VM_OPENS=${BENCH_VM_OPENS:-5000}
VM_EXECS=${BENCH_VM_EXECS:-30}
OBS_VM_PAIRS=${BENCH_OBS_VM_PAIRS:-5}
VMTEST=$TARGET/release/stance-vmtest
LOSS_RATE=100000
LOSS_SECONDS=5
# Operations in a first, uncalibrated run; the real runs are scaled from its time.
declare -A PROBE_N=([open]=100000 [forkexec]=300 [connect]=5000)

say() { echo "bench: $*" >&2; }
fail() { echo "bench: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "must run as root (the daemon loads BPF programs)"
for bin in "$STANCE" "$VMTEST" "$TARGET/release/stance-enforce-test" "$TARGET/release/enforce-probe"; do
    [ -x "$bin" ] || fail "$bin not found: run \`make build\` first"
done
for tool in gcc taskset python3 bpftool sysctl qemu-system-x86_64; do
    command -v "$tool" >/dev/null || fail "$tool not found (\`make deps\` installs it)"
done

TMP=$(mktemp -d /tmp/stance-bench.XXXXXX)
RAW=$TMP/raw.tsv
DAEMON_PID=
STATS_WAS=
cleanup() {
    # Only the daemon this script started, by its pid.
    if [ -n "$FLOOR_PID" ] && kill -0 "$FLOOR_PID" 2>/dev/null; then
        kill -TERM "$FLOOR_PID" 2>/dev/null || true
        wait "$FLOOR_PID" 2>/dev/null || true
    fi
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -TERM "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
    fi
    [ -z "$STATS_WAS" ] || sysctl -qw kernel.bpf_stats_enabled="$STATS_WAS" || true
    rm -rf "$TMP"
}
trap cleanup EXIT
: >"$RAW"
record() { (IFS=$'\t'; echo "$*") >>"$RAW"; }

START=$(date +%s)
record meta loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"

# --- build what the run needs before anything is timed (compiling is the noisiest thing here) ---
say "compiling the load generator and the pipeline bench"
LOADGEN=$TMP/loadgen
gcc -O2 -Wall -Wextra -Werror -pthread -o "$LOADGEN" "$HERE/loadgen.c"
PIPELINE_BENCH=$(cd "$ROOT" && cargo bench --locked --bench pipeline --no-run --message-format=json 2>"$TMP/cargo.err" |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "pipeline":
        print(m["executable"])')
[ -x "$PIPELINE_BENCH" ] || { cat "$TMP/cargo.err" >&2; fail "could not build the pipeline bench (cargo bench --bench pipeline --no-run)"; }
# The floor: empty programs on the daemon's hooks (tests/bench/floor.bpf.c), and their loader.
FLOOR=$TMP/floor
clang-19 -O2 -g -target bpf -I/usr/include/$(gcc -dumpmachine) -c "$HERE/floor.bpf.c" -o "$TMP/floor.bpf.o"
gcc -O2 -Wall -Wextra -Werror -o "$FLOOR" "$HERE/floor.c" -lbpf
# The floor of scenario 42 (section 6): empty programs on the daemon's fexit hooks in the VM.
clang-19 -O2 -g -target bpf -I/usr/include/$(gcc -dumpmachine) -c "$HERE/floor-fexit.bpf.c" -o "$TMP/floor-fexit.bpf.o"
FLOOR_PID=

# --- helpers ---

# bpftool's program list as TSV: id, type, name, run_cnt, run_time_ns (counters only while
# kernel.bpf_stats_enabled is 1).
progs() {
    bpftool -j prog show | python3 -c 'import json,sys
for p in json.load(sys.stdin):
    print(p["id"], p.get("type", ""), p.get("name", ""), p.get("run_cnt", 0), p.get("run_time_ns", 0), sep="\t")'
}

# Tracing programs (anyone's) attached now: during an A phase this should be 0, or another observer
# on this machine is slowing the baseline down.
tracing_progs() {
    progs | awk -F'\t' '$2 ~ /^(tracepoint|tracing|raw_tracepoint|kprobe|lsm|perf_event)$/' | wc -l
}

# Filters a program list to the programs the last daemon this script started loaded.
ours() { awk -F'\t' 'NR == FNR { id[$1]; next } $1 in id' "$TMP/ids-ours" -; }

# Daemon CPU time (user + system) so far, in seconds.
daemon_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$DAEMON_PID/stat"
}

# start_daemon TAG [CONFIG]: starts `stance run` on a bench database, waits until it observes.
start_daemon() {
    local tag=$1 cfg=${2:-} out=$TMP/daemon-$1.out
    local args=(run --db "$TMP/bench-$tag.db")
    [ -n "$cfg" ] && args+=(--config "$cfg")
    progs | cut -f1 | sort >"$TMP/ids-before"
    "$STANCE" "${args[@]}" >"$out" 2>"$TMP/daemon-$tag.err" &
    DAEMON_PID=$!
    for _ in $(seq 600); do
        if grep -q "stance: writing to" "$out"; then
            # Let start-up settle (tasks spawned, signal handlers installed) before timing anything.
            sleep 0.5
            # Its programs: the stance_* ones that were not loaded before it started.
            progs | awk -F'\t' '$3 ~ /^stance_/ {print $1}' | sort | comm -13 "$TMP/ids-before" - >"$TMP/ids-ours"
            DAEMON_CPU0=$(daemon_cpu)
            DAEMON_T0=$(date +%s.%N)
            return 0
        fi
        kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$out" "$TMP/daemon-$tag.err" >&2; fail "the daemon exited during start-up"; }
        sleep 0.1
    done
    fail "the daemon did not start within 60 s"
}

# stop_daemon TAG: notes the daemon's peak RSS and the CPU it used since start-up, stops it by its
# pid, and checks that it exited cleanly.
stop_daemon() {
    local tag=$1 rc=0
    STOP_HWM_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$DAEMON_PID/status")
    STOP_CPU=$(python3 -c "print(f'{$(daemon_cpu) - $DAEMON_CPU0:.2f}')")
    STOP_WALL=$(python3 -c "print(f'{$(date +%s.%N) - $DAEMON_T0:.2f}')")
    kill -TERM "$DAEMON_PID"
    wait "$DAEMON_PID" || rc=$?
    DAEMON_PID=
    [ "$rc" -eq 0 ] || { cat "$TMP/daemon-$tag.out" "$TMP/daemon-$tag.err" >&2; fail "the daemon ($tag) exited with status $rc"; }
    # The kernel frees a program some time after its last holder has gone; until then it is listed,
    # and would be counted as another observer before the next A phase.
    for _ in $(seq 100); do
        [ -z "$(progs | ours)" ] && break
        sleep 0.1
    done
    STOP_RECEIVED=$(sed -n 's/.*stopped; \([0-9]*\) events received.*/\1/p' "$TMP/daemon-$tag.out")
}

# run_load MODE ARGS...: the load generator as a monitored workload, pinned; prints its result line.
run_load() {
    local mode=$1
    shift
    taskset -c "$CPU" "$STANCE" launch --workload "bench-$mode" -- "$LOADGEN" "$mode" "$@"
}

field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p"; }

# measure MODE PAIR PHASE: one timed run, recorded (wall and CPU ns per operation).
measure() {
    local line wall cpu
    line=$(run_load "$1" "${N[$1]}")
    wall=$(field ns_per_op <<<"$line")
    cpu=$(field cpu_ns_per_op <<<"$line")
    [ -n "$wall" ] && [ -n "$cpu" ] || fail "$1 run (pair $2, $3) printed no result: $line"
    record run "$1" "$2" "$3" "$wall" "$cpu"
}

# start_floor / stop_floor: the empty programs attached, then detached (by the loader's pid).
start_floor() {
    "$FLOOR" "$TMP/floor.bpf.o" >"$TMP/floor.out" 2>&1 &
    FLOOR_PID=$!
    for _ in $(seq 100); do
        grep -q '^attached' "$TMP/floor.out" && return 0
        kill -0 "$FLOOR_PID" 2>/dev/null || { cat "$TMP/floor.out" >&2; fail "the floor programs did not load"; }
        sleep 0.1
    done
    fail "the floor programs did not attach within 10 s"
}
stop_floor() {
    kill -TERM "$FLOOR_PID"
    wait "$FLOOR_PID" || fail "the floor loader exited with an error"
    FLOOR_PID=
    for _ in $(seq 100); do
        [ -z "$(progs | awk -F'\t' '$3 ~ /^floor_/')" ] && break
        sleep 0.1
    done
}

# --- calibrate: N per mode so that one run takes about RUN_SECONDS ---
declare -A N
for mode in "${MODES[@]}"; do
    ns=$(run_load "$mode" "${PROBE_N[$mode]}" | field ns_per_op)
    [ -n "$ns" ] || fail "the load generator failed in mode $mode"
    N[$mode]=$(python3 -c "print(max(1, round($RUN_SECONDS * 1e9 / $ns)))")
    record meta "n_$mode" "${N[$mode]}"
    say "$mode: ${N[$mode]} operations per run"
done

# --- 1. overhead: A (no daemon) and B (daemon) phases, alternating ---
say "overhead: $PAIRS A/B pairs of ${MODES[*]}, workloads pinned to CPU $CPU"
for mode in "${MODES[@]}"; do run_load "$mode" "${N[$mode]}" >/dev/null; done # warm-up, not recorded
for i in $(seq 1 "$PAIRS"); do
    record foreign "$i" "$(tracing_progs)"
    for mode in "${MODES[@]}"; do measure "$mode" "$i" A; done
    start_floor
    for mode in "${MODES[@]}"; do measure "$mode" "$i" F; done
    stop_floor
    start_daemon "pair$i"
    for mode in "${MODES[@]}"; do measure "$mode" "$i" B; done
    stop_daemon "pair$i"
    record daemon overhead "$i" "$STOP_HWM_KB" "$STOP_CPU" "$STOP_WALL"
    say "pair $i/$PAIRS done (daemon: peak RSS $STOP_HWM_KB kB, ${STOP_CPU} s CPU in ${STOP_WALL} s)"
done

# --- 2. BPF run time per program invocation ---
say "probe cost: one more daemon session with kernel.bpf_stats_enabled = 1"
start_daemon stats
STATS_WAS=$(sysctl -n kernel.bpf_stats_enabled)
sysctl -qw kernel.bpf_stats_enabled=1
progs | ours >"$TMP/stats0"
for mode in "${MODES[@]}"; do run_load "$mode" "${N[$mode]}" >/dev/null; done
progs | ours >"$TMP/stats1"
sysctl -qw kernel.bpf_stats_enabled="$STATS_WAS"
STATS_WAS=
stop_daemon stats
join -t $'\t' <(sort "$TMP/stats0") <(sort "$TMP/stats1") |
    awk -F'\t' '{ if ($8 - $4 > 0) printf "prog\t%s\t%d\t%d\n", $3, $8 - $4, $9 - $5 }' >>"$RAW"

# --- 3. loss: every open an event, at 100,000/s ---
say "loss: $LOSS_RATE opens/s for $LOSS_SECONDS s with dedup_window_ms = 0"
printf 'dedup_window_ms = 0\n' >"$TMP/loss.toml"
start_daemon loss "$TMP/loss.toml"
# Not pinned: this run is about the daemon keeping up, and the generator needs a whole CPU's worth
# of 10 µs slots, which a neighbour on the pinned CPU can take away.
LOSS_LINE=$("$STANCE" launch --workload bench-rate -- "$LOADGEN" rate "$LOSS_RATE" "$LOSS_SECONDS")
sleep 2 # more than one flush interval, so the run's last window is written before the stop
stop_daemon loss
record loss generated "$(field opens <<<"$LOSS_LINE")"
record loss achieved_rate "$(field rate <<<"$LOSS_LINE")"
record loss received "$STOP_RECEIVED"
record daemon loss 1 "$STOP_HWM_KB" "$STOP_CPU" "$STOP_WALL"
"$STANCE" workloads --db "$TMP/bench-loss.db" -o json >"$TMP/loss-workloads.json"
"$STANCE" graph bench-rate --db "$TMP/bench-loss.db" -o json >"$TMP/loss-graph.json"

# --- 4. pipeline and store, one thread on one CPU ---
say "pipeline: replayed stream, pinned to CPU $CPU"
taskset -c "$CPU" "$PIPELINE_BENCH" --bench | tee "$TMP/pipeline.out" >&2

# --- 6. observation with fexit, in a VM: nothing else of this run is measuring while it runs ---
say "observation: scenario 42 alone in a $VM_KERNEL VM on the instruction clock, $OBS_VM_PAIRS pairs"
# The guest finds its helpers by name on its PATH.
mkdir -p "$TMP/vmbin"
cp "$LOADGEN" "$TMP/vmbin/loadgen"
cp "$FLOOR" "$TMP/vmbin/bench-floor"
if ! "$VMTEST" --kernel "$VM_KERNEL" --icount --filter 42-observe-bench --scenarios "$ROOT/tests/vm/scenarios" \
    --bin "$STANCE" --bin "$TMP/vmbin/loadgen" --bin "$TMP/vmbin/bench-floor" --bin "$(command -v bpftool)" \
    --file "$TMP/floor-fexit.bpf.o:/opt/stance-bench/floor-fexit.bpf.o" --lib-from-ldd --scenario-timeout 3600 \
    --env STANCE_OBS_BENCH_PAIRS="$OBS_VM_PAIRS" >"$TMP/obs-vm.out" 2>&1; then
    tail -n 40 "$TMP/obs-vm.out" >&2
    fail "the observation benchmark VM failed (output above)"
fi
grep -E '^\[[0-9.]+\] obs-bench:' "$TMP/obs-vm.out" >&2 || true

# --- 7. enforcement, in a VM: nothing else of this run is measuring while it runs ---
say "enforcement: scenario 39 alone in a $VM_KERNEL VM on the instruction clock, $VM_PAIRS pairs per loop ($VM_OPENS opens, $VM_EXECS execs per batch)"
# The VM's console goes to a file (the harness prints every line); its verdict decides.
if ! "$VMTEST" --kernel "$VM_KERNEL" --icount --filter 39-enforce-bench --scenarios "$ROOT/tests/vm/scenarios" \
    --bin "$TARGET/release/stance-enforce-test" --bin "$TARGET/release/enforce-probe" \
    --bin "$(command -v bpftool)" --lib-from-ldd --scenario-timeout 3600 \
    --env STANCE_BENCH_PAIRS="$VM_PAIRS" --env STANCE_BENCH_OPENS="$VM_OPENS" \
    --env STANCE_BENCH_EXECS="$VM_EXECS" --env STANCE_BENCH_BPF_STATS=1 >"$TMP/vm.out" 2>&1; then
    tail -n 40 "$TMP/vm.out" >&2
    fail "the enforcement benchmark VM failed (output above)"
fi
grep -E '^\[[0-9.]+\] bench:' "$TMP/vm.out" >&2 || true

record meta seconds "$(($(date +%s) - START))"
record meta cpu_pinned "$CPU"
record meta pairs "$PAIRS"
record meta loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"
python3 -B "$HERE/report.py" --raw "$RAW" --pipeline "$TMP/pipeline.out" \
    --loss-workloads "$TMP/loss-workloads.json" --loss-graph "$TMP/loss-graph.json" \
    --vm "$TMP/vm.out" --observe-vm "$TMP/obs-vm.out" --benchmarks "$ROOT/BENCHMARKS.md" ${BENCH_NO_WRITE:+--no-write}
