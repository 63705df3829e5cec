#!/bin/sh
# Updates and reporting never open a gap: a workload opening an allowed file in a loop while its
# policy is replaced 100 times (each a new revision swapped in, the old one deleted after an RCU
# grace period) never sees EPERM; and with the verdict reader stopped until the ring buffer is full,
# every forbidden open is still denied (the lost reports are counted, the decisions unchanged).
. /scenarios/lib/enforce.sh

W=/tmp/upd
mkdir -p $W
echo data >$W/allowed
echo secret >$W/secret
rm -f /tmp/churn-done
cg=$(mkcg enforce-update)
# The opener loop (busybox sh) execs the probe inside the workload: process=enforce allows both.
cat >/tmp/update-policy.json <<JSON
{"executables": [ {"path": "$PROBE"}, {"path": "/bin/busybox"} ], "network": [], "unix": [], "capabilities": [], "ptrace": "none",
 "files": [ {"path": "$W/allowed", "read": true}, $LIB_RULES ]}
JSON
start_driver --policy /tmp/update-policy.json --cgroup "$cg" --modes file=enforce,process=enforce --policy-id 36 --churn 100

in_cg "$cg" sh -c "while [ ! -e /tmp/churn-done ]; do enforce-probe flood-open $W/allowed 500 || echo 'probe failed'; done" >/tmp/flood.out 2>&1 &
flood=$!
sleep 1
kill -USR1 "$DRV_PID"
wait_line "$DRV_OUT" '^churned:' 120 "the driver did not finish churning"
touch /tmp/churn-done
wait $flood
grep '^churned:' "$DRV_OUT"
batches=$(grep -c 'ok=500 eperm=0 other=0' /tmp/flood.out)
bad=$(grep -vc 'ok=500 eperm=0 other=0' /tmp/flood.out)
[ "$bad" -eq 0 ] || { cat /tmp/flood.out; fail "an allowed open failed while the policy was being replaced"; }
[ "$batches" -ge 2 ] || fail "the opener ran only $batches batches: no overlap with the updates"
ok "$((batches * 500)) allowed opens during 100 policy replacements, none refused"
expect EPERM "the forbidden read after the updates" in_cg "$cg" enforce-probe open $W/secret

# Reporting stalled: the driver stops reading, the 4 MiB ring fills.
kill -STOP "$DRV_PID"
out=$(in_cg "$cg" enforce-probe flood-open $W/secret 40000)
kill -CONT "$DRV_PID"
case "$out" in
    "ok=0 eperm=40000 other=0 ok") ok "40000 forbidden opens with the ring buffer full: all denied" ;;
    *) fail "forbidden opens with the ring buffer full: $out" ;;
esac
stop_driver
lost=$(sed -n 's/^losses: ringbuf \([0-9]*\) .*/\1/p' "$DRV_OUT")
[ "${lost:-0}" -gt 0 ] || fail "the ring buffer never filled (losses: ${lost:-none})"
ok "$lost verdicts lost to the full ring buffer, counted"

stance-enforce-test purge >/dev/null || fail "purge failed"
rmdir "$cg"
echo "ok: scenario done"
