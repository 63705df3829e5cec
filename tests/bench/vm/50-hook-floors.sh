#!/bin/sh
# vmtest-timeout: 1200
# The price of each hook that can observe an open (tests/bench/hook-floors.sh runs this on QEMU's
# instruction clock): `loadgen open N` without any program, then with one empty program attached
# at a time (bench-floor, holding /opt/stance-bench/hook-N.bpf.o until SIGTERM), two rounds.
# Prints `hook-floor: ROUND NAME CPU_NS_PER_OP` (NAME `none` for the baseline).
fail() { echo "FAIL: $*"; exit 1; }
command -v loadgen >/dev/null || fail "loadgen is not in the guest"
command -v bench-floor >/dev/null || fail "bench-floor is not in the guest"
N=${STANCE_HOOK_FLOOR_OPS:-20000}
mkdir -p /etc
for f in hostname passwd group hosts; do [ -e /etc/$f ] || echo vm >/etc/$f; done
cpu() { loadgen open "$N" | sed -n 's/.* cpu_ns_per_op=\([0-9.]*\).*/\1/p'; }
cpu >/dev/null # warm-up
for round in 1 2; do
    echo "hook-floor: $round none $(cpu)"
    for obj in /opt/stance-bench/hook-*.bpf.o; do
        bench-floor "$obj" >/tmp/hf.out 2>&1 &
        pid=$!
        until grep -q '^attached' /tmp/hf.out; do
            kill -0 "$pid" 2>/dev/null || fail "$obj did not load: $(cat /tmp/hf.out)"
            sleep 0.1
        done
        echo "hook-floor: $round $(basename "$obj" .bpf.o) $(cpu)"
        kill -TERM "$pid"
        wait "$pid" || fail "bench-floor exited with an error"
    done
done
echo "ok: hook floors measured"
