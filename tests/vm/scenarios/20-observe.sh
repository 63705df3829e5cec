#!/bin/sh
# The observation probes load on this kernel (CO-RE: one object for 6.1, 6.12 and the host's kernel),
# every family is active (capabilities too: fexit or BPF-LSM load here), and a launched workload's
# behaviour reaches the graph with kernel-resolved paths.
#
# Needs `stance` on PATH (stance-vmtest --bin target/release/stance --lib-from-ldd).
fail() { echo "FAIL: $*"; [ -f /tmp/stance.out ] && cat /tmp/stance.out /tmp/stance.err; exit 1; }

command -v stance >/dev/null || fail "stance is not in the guest (pass --bin)"
db=/tmp/observe.db
STANCE_LOG=${STANCE_LOG:-info} stance run --db "$db" >/tmp/stance.out 2>/tmp/stance.err &
pid=$!
i=0
until grep -q "stance: writing to" /tmp/stance.out; do
    kill -0 "$pid" 2>/dev/null || fail "daemon exited during start"
    i=$((i + 1))
    [ "$i" -gt 600 ] && fail "daemon did not start within 120 s"
    sleep 0.2
done
cat /tmp/stance.out
for fam in "exec: active" "file opens: active" "network: active" "process lifecycle: active" "cgroups: active" "capabilities: active"; do
    grep -q "  $fam" /tmp/stance.out || fail "probe family not active: $fam"
done

mkdir -p /tmp/obs
echo hello >/tmp/obs/data.txt
ln -sf /tmp/obs/data.txt /tmp/obs/link
stance launch --workload vmobs -- sh -c 'cd /tmp/obs && cat data.txt link >/dev/null && chown 65534 /tmp/obs/data.txt; nc 127.0.0.1 9 </dev/null; true' \
    || fail "workload failed"

i=0
while :; do
    g=$(stance graph vmobs --db "$db" -o json 2>&1)
    # The three may land in different flushes: wait for all of them.
    echo "$g" | grep -q '"/tmp/obs/data.txt"' && echo "$g" | grep -q 'CAP_CHOWN' &&
        echo "$g" | grep -q '"127.0.0.1:9/tcp"' && break
    i=$((i + 1))
    [ "$i" -gt 150 ] && { echo "$g"; fail "graph never showed the workload's file, capability and connect"; }
    sleep 0.2
done
echo "$g" | grep -q '"/tmp/obs/link"' && fail "a symlink path became a file node"
echo "ok: graph has /tmp/obs/data.txt, CAP_CHOWN and 127.0.0.1:9/tcp"

kill -TERM "$pid"
wait "$pid"
rc=$?
[ "$rc" -eq 0 ] || fail "daemon exited with $rc on SIGTERM"
echo "ok: daemon stopped cleanly"
