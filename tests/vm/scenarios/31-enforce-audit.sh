#!/bin/sh
# Audit mode: the same policy evaluated, nothing blocked; whatever the policy does not allow is
# reported as a would-deny (file, exec, network, capabilities). Then the same workload is switched to
# enforce by a restarted driver (adopting the pinned policy and applying a new revision), and the
# forbidden read is denied.
. /scenarios/lib/enforce.sh

W=/tmp/aud
mkdir -p $W
echo data >$W/allowed
echo secret >$W/secret
cg=$(mkcg enforce-audit)
enforce-probe serve-tcp 8031 >/tmp/serve-8031.out 2>&1 &
srv=$!

cat >/tmp/audit-policy.json <<JSON
{"executables": [], "network": [], "unix": [], "capabilities": [], "ptrace": "none",
 "files": [ {"path": "$W/allowed", "read": true}, $LIB_RULES ]}
JSON

start_driver --policy /tmp/audit-policy.json --cgroup "$cg" --policy-id 31 \
    --modes file=audit,process=audit,network=audit,capabilities=audit
expect ok "allowed read" in_cg "$cg" enforce-probe open $W/allowed
expect ok "never-read file, not blocked in audit" in_cg "$cg" enforce-probe open $W/secret
wait_verdict "^verdict: would-deny file $W/secret exe=$PROBE "
expect ok "a binary outside the policy, not blocked" in_cg "$cg" enforce-probe exec "$PROBE"
wait_verdict "^verdict: would-deny process $PROBE "
expect ok "a connect outside the policy, not blocked" in_cg "$cg" enforce-probe connect 127.0.0.1 8031
wait_verdict "^verdict: would-deny network 127.0.0.1:8031/tcp "
expect ok "a capability outside the policy, not blocked" in_cg "$cg" enforce-probe raw-socket
wait_verdict "^verdict: would-deny capabilities CAP_NET_RAW "
no_verdict "^verdict: deny "
stop_driver

# Switch the file domain to enforce: a new driver adopts the pinned revision, applies the new modes.
start_driver --policy /tmp/audit-policy.json --cgroup "$cg" --policy-id 31 --modes file=enforce
grep -q '^status: adopted 1' "$DRV_OUT" || fail "the audit policy was not adopted"
ok "the audit policy was adopted by the new driver"
expect EPERM "the same read in enforce" in_cg "$cg" enforce-probe open $W/secret
wait_verdict "^verdict: deny file $W/secret "
expect ok "the allowed read in enforce" in_cg "$cg" enforce-probe open $W/allowed
expect ok "exec, now observe-only" in_cg "$cg" enforce-probe exec "$PROBE"

stop_driver
kill "$srv"
stance-enforce-test purge >/dev/null || fail "purge failed"
rmdir "$cg"
echo "ok: scenario done"
